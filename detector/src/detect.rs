//! The detector: every redacted batch goes through Sigma rules, baselines, the service graph
//! and exposure findings; their observations go through the alert state into `AlertEvent`s.

use std::sync::Arc;

use serde_json::{Map, Value};
use vigil_core::RedactedBatch;
use vigil_core::redact::Category;

use crate::alert::{
    AlertEvent, AlertKey, AlertState, Candidate, ManualResolution, Observation, Sample,
    SavedAlerts, Suppressed,
};
use crate::baseline::{Baselines, BaselinesSnapshot};
use crate::config::{DetectorConfig, ExposureConfig};
use crate::fields::FieldMap;
use crate::graph::{GraphSnapshot, GraphStats, SavedGraph, ServiceGraph};
use crate::sigma::{RuleSet, SigmaEngine};
use crate::view::{BatchView, ViewError};

/// Rule id of alerts raised for credentials found in telemetry.
pub const EXPOSURE_RULE: &str = "exposure.secret_in_telemetry";

/// How much the detector has learned, and what its bounds turned away (all counts since
/// start), for operators: a non-zero count means a limit in `[detector]` is too small for the
/// deployment, and part of the traffic goes unwatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectorStats {
    /// Services with a baseline.
    pub baseline_services: usize,
    /// Records of services beyond `baselines.max_services`, not baselined.
    pub baseline_untracked_records: u64,
    pub graph: GraphStats,
}

/// Version of [`SavedState`]'s layout; a file of another version is not read.
pub const SAVED_STATE_VERSION: u32 = 1;

/// What the detector carries across a restart: firing alerts and recent resolutions, and the
/// learned service graph. Baselines warm up again, and Sigma correlation windows start empty.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SavedState {
    pub version: u32,
    /// When it was saved (ns).
    pub saved_ns: i64,
    pub alerts: SavedAlerts,
    pub graph: SavedGraph,
}

/// What the detector holds between batches. Pure: `now_ns` is always passed in.
pub struct Detector {
    sigma: SigmaEngine,
    baselines: Baselines,
    graph: ServiceGraph,
    exposure: ExposureConfig,
    state: AlertState,
}

impl Detector {
    /// A detector for `rules`; `config` must have passed [`DetectorConfig::validate`].
    pub fn new(config: &DetectorConfig, rules: Arc<RuleSet>) -> Result<Self, Vec<String>> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(problems);
        }
        let fields = FieldMap::new(&config.fields)?;
        let sigma = SigmaEngine::new(rules, fields).map_err(|e| vec![e])?;
        Ok(Self {
            sigma,
            baselines: Baselines::new(config.baselines.clone()),
            graph: ServiceGraph::new(config.graph.clone()),
            exposure: config.exposure.clone(),
            state: AlertState::new(config.alerts.clone()),
        })
    }

    /// Runs every detector over `batch`, received at `now_ns`.
    pub fn process(
        &mut self,
        batch: &RedactedBatch,
        now_ns: i64,
    ) -> Result<Vec<AlertEvent>, ViewError> {
        let view = BatchView::new(batch)?;
        let mut observations = self.sigma.process(&view);
        self.baselines.observe(&view, now_ns);
        observations.extend(self.graph.observe(&view, now_ns));
        if self.exposure.enabled {
            observations.extend(exposures(&self.exposure, batch, &view));
        }
        Ok(self.state.observe(observations, now_ns))
    }

    /// Observations from outside the batch flow (scheduled SQL rules).
    pub fn observe(&mut self, observations: Vec<Observation>, now_ns: i64) -> Vec<AlertEvent> {
        self.state.observe(observations, now_ns)
    }

    /// Closes baseline buckets, expires graph joins, resolves quiet alerts. Call about once a
    /// second.
    pub fn tick(&mut self, now_ns: i64) -> Vec<AlertEvent> {
        let mut observations = self.baselines.tick(now_ns);
        observations.extend(self.graph.tick(now_ns));
        let mut events = self.state.observe(observations, now_ns);
        events.extend(self.state.tick(now_ns));
        events
    }

    pub fn firing_count(&self) -> usize {
        self.state.firing_count()
    }

    /// Resolves a firing alert by hand; `None` when `fingerprint` is not firing.
    pub fn resolve(
        &mut self,
        fingerprint: &str,
        by: &ManualResolution,
        now_ns: i64,
    ) -> Option<AlertEvent> {
        self.state.resolve_manually(fingerprint, by, now_ns)
    }

    /// Whether `fingerprint` resolved lately (within the flap-suppression window).
    pub fn resolved_recently(&self, fingerprint: &str) -> bool {
        self.state.resolved_recently(fingerprint)
    }

    /// The learned service graph.
    pub fn graph(&self) -> GraphSnapshot {
        self.graph.snapshot()
    }

    /// The baselines of every service, or of one with its recent buckets.
    pub fn baselines(&self, service: Option<&str>) -> BaselinesSnapshot {
        self.baselines.snapshot(service)
    }

    pub fn save(&self, now_ns: i64) -> SavedState {
        SavedState {
            version: SAVED_STATE_VERSION,
            saved_ns: now_ns,
            alerts: self.state.save(),
            graph: self.graph.save(),
        }
    }

    /// Takes over the state an earlier run saved; refuses a layout of another version.
    pub fn restore(&mut self, saved: SavedState) -> Result<(), String> {
        if saved.version != SAVED_STATE_VERSION {
            return Err(format!(
                "saved detector state has version {}, this build reads {SAVED_STATE_VERSION}",
                saved.version
            ));
        }
        self.state.restore(saved.alerts);
        if self.graph.enabled() {
            self.graph.restore(saved.graph);
        }
        Ok(())
    }

    pub fn stats(&self) -> DetectorStats {
        DetectorStats {
            baseline_services: self.baselines.services(),
            baseline_untracked_records: self.baselines.untracked_records(),
            graph: self.graph.stats(),
        }
    }

    /// Observations dropped since the last call, per rule and reason.
    pub fn take_suppressed(&mut self) -> Vec<(String, Suppressed, u64)> {
        self.state.take_suppressed()
    }
}

fn exposures(
    config: &ExposureConfig,
    batch: &RedactedBatch,
    view: &BatchView<'_>,
) -> Vec<Observation> {
    let wanted = |c: Category| config.categories.iter().any(|w| w == c.as_str());
    batch
        .findings()
        .iter()
        .filter(|f| wanted(f.category))
        .map(|f| {
            let row = f.first_row.min(view.len().saturating_sub(1));
            let mut details = Map::new();
            details.insert("source".into(), Value::from("redaction"));
            details.insert("entity".into(), Value::from(f.entity.as_ref()));
            details.insert("category".into(), Value::from(f.category.as_str()));
            details.insert("field".into(), Value::from(f.field.as_str()));
            details.insert("values_in_batch".into(), Value::from(f.count));
            let sample = (!view.is_empty()).then(|| Sample::of(view, row));
            Observation::Fire(Candidate {
                key: AlertKey::new(EXPOSURE_RULE, &f.service)
                    .with_group("entity", f.entity.as_ref()),
                rule_title: "Credential exposed in telemetry".into(),
                severity: config.severity,
                summary: format!(
                    "{} found in {} of {} {} (redacted before storage; rotate it)",
                    f.entity,
                    f.field,
                    f.service,
                    view.signal()
                ),
                details,
                time_ns: sample.as_ref().map_or(0, |s| s.time_ns),
                sample,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{self, EventSpec};
    use vigil_core::HashKey;
    use vigil_core::redact::RedactionConfig;

    const T0: i64 = 1_767_225_600_000_000_000;

    fn redacted(events: &[EventSpec]) -> RedactedBatch {
        let redactor = vigil_core::Redactor::new(
            &RedactionConfig::default(),
            HashKey::new(b"detector unit tests key").expect("key"),
        )
        .expect("redactor");
        redactor
            .apply(synthetic::batch(events, T0).expect("batch"))
            .expect("redact")
    }

    fn detector() -> Detector {
        let rules = Arc::new(RuleSet::load(&[]).expect("no rules"));
        Detector::new(&DetectorConfig::default(), rules).expect("detector")
    }

    #[test]
    fn a_credential_found_by_redaction_raises_one_alert_per_service_and_entity() {
        let mut d = detector();
        let batch = redacted(&[
            EventSpec::log(
                "billing",
                "export with AWS_ACCESS_KEY_ID=AKIAZ7Q3X5LMN2P4R6T7",
            ),
            EventSpec::log("billing", "retry with AKIAZ7Q3X5LMN2P4R6T6"),
            EventSpec::log("billing", "mail alice@example.com"),
        ]);
        let events = d.process(&batch, T0).expect("process");
        let fired: Vec<_> = events
            .iter()
            .map(|e| (e.alert.rule_id.as_str(), e.alert.service.as_str()))
            .collect();
        assert_eq!(fired, [(EXPOSURE_RULE, "billing")], "{events:#?}");
        let alert = &events[0].alert;
        assert_eq!(alert.details["group"]["entity"], "aws_access_key_id");
        assert!(!alert.details.to_string().contains("AKIAZ7Q3X5LMN2P4R6T7"));
        assert!(
            alert
                .summary
                .contains("aws_access_key_id found in body of billing logs"),
            "{}",
            alert.summary
        );
    }
}
