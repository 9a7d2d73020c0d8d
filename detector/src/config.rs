//! The `[detector]` config section: which rules run, how Sigma fields map to Vigil's data,
//! and the tuning of alerts, baselines, the service graph and exposure findings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::alert::{AlertStateConfig, Severity};
use crate::baseline::BaselineConfig;
use crate::graph::GraphConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Run the detector at all.
    pub enabled: bool,
    /// Load the rules shipped inside the binary (the repository's `config/rules/`).
    pub shipped_rules: bool,
    /// More directories of Sigma rules (`*.yml`, `*.yaml`), read at start.
    pub rule_dirs: Vec<PathBuf>,
    /// Sigma field name → Vigil targets, first present wins: a column (`body`), or
    /// `attributes.<key>` / `resource.<key>`.
    pub fields: BTreeMap<String, Vec<String>>,
    /// Batches waiting for the detector; when full, batches skip detection (counted) rather
    /// than slow ingest.
    pub queue_batches: usize,
    pub alerts: AlertStateConfig,
    pub baselines: BaselineConfig,
    pub graph: GraphConfig,
    pub exposure: ExposureConfig,
    /// Scheduled SQL alerts: `[[detector.sql]]`.
    pub sql: Vec<SqlRule>,
}

/// A query run every `every` against the store; each row it returns is an alert condition,
/// identified by the rule, the row's service and its `group_by` columns. A group that stops
/// being returned resolves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRule {
    pub id: String,
    pub title: String,
    #[serde(default = "default_sql_severity")]
    pub severity: Severity,
    /// A read-only query (SELECT / WITH); the same limits as analysts' queries apply.
    pub query: String,
    #[serde(with = "humantime_serde", default = "default_sql_every")]
    pub every: std::time::Duration,
    /// Column holding the service an alert is about (missing or null: `vigil`).
    #[serde(default = "default_service_column")]
    pub service_column: String,
    /// Columns whose values, with the service, tell alerts of this rule apart.
    #[serde(default)]
    pub group_by: Vec<String>,
}

fn default_sql_severity() -> Severity {
    Severity::Medium
}
fn default_sql_every() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}
fn default_service_column() -> String {
    "service".into()
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            shipped_rules: true,
            rule_dirs: Vec::new(),
            fields: BTreeMap::new(),
            queue_batches: 256,
            alerts: AlertStateConfig::default(),
            baselines: BaselineConfig::default(),
            graph: GraphConfig::default(),
            exposure: ExposureConfig::default(),
            sql: Vec::new(),
        }
    }
}

/// Alerts raised when redaction finds a credential in a service's telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExposureConfig {
    pub enabled: bool,
    /// Redaction entity categories that raise an alert: `secret`, `pii`.
    pub categories: Vec<String>,
    pub severity: Severity,
}

impl Default for ExposureConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            categories: vec!["secret".into()],
            severity: Severity::High,
        }
    }
}

impl DetectorConfig {
    /// Every problem with the section, as `detector.<path>: message`.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.queue_batches == 0 {
            problems.push("detector.queue_batches: must be at least 1".into());
        }
        if let Err(mut p) = crate::fields::FieldMap::new(&self.fields) {
            problems.append(&mut p);
        }
        for c in &self.exposure.categories {
            if !matches!(c.as_str(), "secret" | "pii") {
                problems.push(format!(
                    "detector.exposure.categories: unknown category `{c}` (expected `secret` or `pii`)"
                ));
            }
        }
        let a = &self.alerts;
        if a.resolve_after.is_zero() {
            problems.push("detector.alerts.resolve_after: must be more than zero".into());
        }
        if a.max_new_per_rule_per_minute == 0 || a.max_firing == 0 {
            problems.push(
                "detector.alerts: max_new_per_rule_per_minute and max_firing must be at least 1"
                    .into(),
            );
        }
        let mut ids = std::collections::HashSet::new();
        for (i, rule) in self.sql.iter().enumerate() {
            let at = format!("detector.sql[{i}]");
            if rule.id.trim().is_empty() || rule.title.trim().is_empty() {
                problems.push(format!("{at}: id and title must not be empty"));
            }
            if !ids.insert(rule.id.as_str()) {
                problems.push(format!("{at}: duplicate id `{}`", rule.id));
            }
            if rule.query.trim().is_empty() {
                problems.push(format!("{at}: query must not be empty"));
            }
            if rule.every < std::time::Duration::from_secs(1) {
                problems.push(format!("{at}: every must be at least 1s"));
            }
        }
        problems.extend(self.baselines.validate());
        problems.extend(self.graph.validate());
        problems
    }
}
