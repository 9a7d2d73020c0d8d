//! Alerts and their life cycle: every detector reports `Observation`s; `AlertState` folds them
//! into alerts keyed by fingerprint (deduplicated while firing, resolved when quiet or cleared,
//! suppressed when flapping or over a rule's rate cap) and reports each state change once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, RecordBatch, StringBuilder, TimestampNanosecondBuilder, UInt64Builder,
};
use arrow::error::ArrowError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use vigil_core::schema::alerts_schema;
use vigil_core::time::duration_ns;

/// How bad an alert is; the Sigma `level` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What identifies one alert: the rule, the service and the rule's group values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AlertKey {
    pub rule_id: String,
    pub service: String,
    /// Group-by values, in the rule's order (empty for rules that group by service only).
    pub group: Vec<(String, String)>,
}

/// Whether `s` has the shape of a fingerprint ([`AlertKey::fingerprint`]): 16 lower-case hex
/// digits. Checking it also makes a fingerprint safe inside a SQL string literal.
pub fn is_fingerprint(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl AlertKey {
    pub fn new(rule_id: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            rule_id: rule_id.into(),
            service: service.into(),
            group: Vec::new(),
        }
    }

    pub fn with_group(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.group.push((name.into(), value.into()));
        self
    }

    /// The group values as `name=value, ...` (empty when there are none), for summaries.
    pub fn group_text(&self) -> String {
        self.group
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Stable id of the alert: 16 hex digits of SHA-256 over rule, service and group values.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [self.rule_id.as_str(), self.service.as_str()] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for (name, value) in &self.group {
            h.update(name.as_bytes());
            h.update([b'=']);
            h.update(value.as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        hex::encode(digest.get(..8).unwrap_or_default())
    }
}

/// One detector's report that an alert condition holds now.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub key: AlertKey,
    pub rule_title: String,
    pub severity: Severity,
    pub summary: String,
    /// Rule-specific evidence (observed vs baseline, matched fields, ...). `group`, `count`,
    /// `samples` and `first_evidence_ns` are added by the alert state.
    pub details: Map<String, Value>,
    /// Event time of the evidence, ns (the alert's own times are detection times).
    pub time_ns: i64,
    /// Ids of a record that triggered it (`trace_id`/`span_id`), kept as samples.
    pub sample: Option<Sample>,
}

/// Where to find one triggering record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub signal: &'static str,
    pub time_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

/// A saved sample (detector state across restarts); its signal becomes the static name the
/// live one carries.
impl<'de> Deserialize<'de> for Sample {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Saved {
            signal: String,
            time_ns: i64,
            trace_id: Option<String>,
            span_id: Option<String>,
        }
        let saved = Saved::deserialize(d)?;
        let signal = vigil_core::Signal::parse(&saved.signal)
            .map(vigil_core::Signal::as_str)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("unknown signal `{}`", saved.signal))
            })?;
        Ok(Self {
            signal,
            time_ns: saved.time_ns,
            trace_id: saved.trace_id,
            span_id: saved.span_id,
        })
    }
}

impl Sample {
    /// Row `row` of `view`: its time and, when set, its trace and span ids.
    pub fn of(view: &crate::view::BatchView<'_>, row: usize) -> Self {
        let id = |column| {
            view.str(row, column)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Sample {
            signal: view.signal().as_str(),
            time_ns: view.time_ns(row),
            trace_id: id("trace_id"),
            span_id: id("span_id"),
        }
    }
}

/// What a detector reports.
#[derive(Debug, Clone)]
pub enum Observation {
    /// The condition holds.
    Fire(Candidate),
    /// The condition has cleared (baselines with hysteresis); the alert resolves now instead
    /// of after `resolve_after`.
    Clear(AlertKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// An alert as the `alerts` table and the sinks see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    pub fingerprint: String,
    pub rule_id: String,
    pub rule_title: String,
    pub severity: Severity,
    pub service: String,
    pub status: Status,
    pub summary: String,
    pub details: Value,
    /// When it first fired (ns, wall clock of the detector).
    pub started_ns: i64,
    pub last_seen_ns: i64,
    pub resolved_ns: Option<i64>,
    /// Observations folded into it.
    pub count: u64,
}

/// Who resolved an alert by hand (the console's or API's resolve action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualResolution {
    /// The authenticated principal, or `anonymous`.
    pub principal: String,
}

impl ManualResolution {
    /// Marks `alert` as resolved by hand: `details.resolution = {"manual": true, "by": ...}`.
    /// The analyst's comment is not copied here: it is kept in the `alert_actions` table.
    pub fn annotate(&self, alert: &mut Alert) {
        if let Value::Object(details) = &mut alert.details {
            let mut resolution = Map::new();
            resolution.insert("manual".into(), Value::Bool(true));
            resolution.insert("by".into(), Value::from(self.principal.as_str()));
            details.insert("resolution".into(), Value::Object(resolution));
        }
    }

    /// A resolved copy of an alert the state does not hold (it fired before a restart, so
    /// only the `alerts` table remembers it).
    pub fn resolve_stale(&self, mut alert: Alert, now_ns: i64) -> AlertEvent {
        self.annotate(&mut alert);
        alert.status = Status::Resolved;
        alert.resolved_ns = Some(now_ns);
        AlertEvent {
            alert: Arc::new(alert),
        }
    }
}

/// A state change of an alert. Each is written to the `alerts` table and given to the sinks.
#[derive(Debug, Clone)]
pub struct AlertEvent {
    pub alert: Arc<Alert>,
}

/// Tuning of the alert life cycle. All durations are wall-clock time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertStateConfig {
    /// A firing alert with no new evidence for this long resolves.
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
    /// After an alert resolves, the same fingerprint firing again within this window is
    /// suppressed (flapping).
    #[serde(with = "humantime_serde")]
    pub suppress_for: Duration,
    /// At most this many new alerts per rule per minute; more are suppressed and counted.
    pub max_new_per_rule_per_minute: u32,
    /// At most this many alerts firing at once; more are suppressed and counted.
    pub max_firing: usize,
    /// Trigger samples kept per alert.
    pub max_samples: usize,
}

impl Default for AlertStateConfig {
    fn default() -> Self {
        Self {
            resolve_after: Duration::from_secs(300),
            suppress_for: Duration::from_secs(60),
            max_new_per_rule_per_minute: 20,
            max_firing: 10_000,
            max_samples: 5,
        }
    }
}

/// Why an observation did not open an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suppressed {
    Flapping,
    RateCap,
    Capacity,
}

impl Suppressed {
    pub fn as_str(self) -> &'static str {
        match self {
            Suppressed::Flapping => "flapping",
            Suppressed::RateCap => "rate_cap",
            Suppressed::Capacity => "capacity",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Firing {
    alert: Alert,
    group: Vec<(String, String)>,
    samples: Vec<Sample>,
}

/// The alert state machine. Pure: time is passed in.
pub struct AlertState {
    config: AlertStateConfig,
    firing: HashMap<String, Firing>,
    /// Fingerprint → when it resolved, for flap suppression.
    recently_resolved: HashMap<String, i64>,
    /// Rule id → times of its recent new alerts.
    opened: HashMap<String, VecDeque<i64>>,
    suppressed: HashMap<(String, Suppressed), u64>,
}

const MINUTE_NS: i64 = 60_000_000_000;

/// What of the alert state outlives a restart: the firing alerts (so they are neither raised
/// twice nor left firing forever in the `alerts` table) and recent resolutions (so flapping
/// stays suppressed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SavedAlerts {
    firing: Vec<Firing>,
    recently_resolved: Vec<(String, i64)>,
}

impl SavedAlerts {
    pub fn firing(&self) -> usize {
        self.firing.len()
    }
}

impl AlertState {
    pub fn new(config: AlertStateConfig) -> Self {
        Self {
            config,
            firing: HashMap::new(),
            recently_resolved: HashMap::new(),
            opened: HashMap::new(),
            suppressed: HashMap::new(),
        }
    }

    /// Folds observations made at `now_ns` into the state; returns the alerts that fired or
    /// resolved.
    pub fn observe(
        &mut self,
        observations: impl IntoIterator<Item = Observation>,
        now_ns: i64,
    ) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        for observation in observations {
            match observation {
                Observation::Fire(c) => {
                    if let Some(e) = self.fire(c, now_ns) {
                        events.push(e);
                    }
                }
                Observation::Clear(key) => {
                    if let Some(f) = self.firing.remove(&key.fingerprint()) {
                        events.push(self.resolve(f, now_ns));
                    }
                }
            }
        }
        events
    }

    /// Resolves alerts that have been quiet for `resolve_after`; forgets old suppression state.
    pub fn tick(&mut self, now_ns: i64) -> Vec<AlertEvent> {
        let quiet = duration_ns(self.config.resolve_after);
        let stale: Vec<String> = self
            .firing
            .iter()
            .filter(|(_, f)| now_ns.saturating_sub(f.alert.last_seen_ns) >= quiet)
            .map(|(fp, _)| fp.clone())
            .collect();
        let mut events = Vec::with_capacity(stale.len());
        for fp in stale {
            if let Some(f) = self.firing.remove(&fp) {
                events.push(self.resolve(f, now_ns));
            }
        }
        let window = duration_ns(self.config.suppress_for);
        self.recently_resolved
            .retain(|_, at| now_ns.saturating_sub(*at) < window);
        self.opened.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now_ns.saturating_sub(*t) >= MINUTE_NS)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
        events
    }

    fn fire(&mut self, c: Candidate, now_ns: i64) -> Option<AlertEvent> {
        let fingerprint = c.key.fingerprint();
        if let Some(f) = self.firing.get_mut(&fingerprint) {
            f.alert.count += 1;
            f.alert.last_seen_ns = now_ns;
            if let Some(s) = c.sample
                && f.samples.len() < self.config.max_samples
            {
                f.samples.push(s);
            }
            return None;
        }
        if let Some(reason) = self.refusal(&c.key.rule_id, &fingerprint, now_ns) {
            *self
                .suppressed
                .entry((c.key.rule_id.clone(), reason))
                .or_default() += 1;
            return None;
        }
        self.opened
            .entry(c.key.rule_id.clone())
            .or_default()
            .push_back(now_ns);
        let samples: Vec<Sample> = c.sample.into_iter().collect();
        let mut details = c.details;
        details.insert("first_evidence_ns".into(), Value::from(c.time_ns));
        let alert = Alert {
            fingerprint: fingerprint.clone(),
            rule_id: c.key.rule_id,
            rule_title: c.rule_title,
            severity: c.severity,
            service: c.key.service,
            status: Status::Firing,
            summary: c.summary,
            details: Value::Object(details),
            started_ns: now_ns,
            last_seen_ns: now_ns,
            resolved_ns: None,
            count: 1,
        };
        let mut firing = Firing {
            alert,
            group: c.key.group,
            samples,
        };
        let snapshot = snapshot(&mut firing);
        self.firing.insert(fingerprint, firing);
        Some(AlertEvent { alert: snapshot })
    }

    fn refusal(&self, rule_id: &str, fingerprint: &str, now_ns: i64) -> Option<Suppressed> {
        if self
            .recently_resolved
            .get(fingerprint)
            .is_some_and(|at| now_ns.saturating_sub(*at) < duration_ns(self.config.suppress_for))
        {
            return Some(Suppressed::Flapping);
        }
        let recent = self.opened.get(rule_id).map_or(0, |times| {
            times
                .iter()
                .filter(|t| now_ns.saturating_sub(**t) < MINUTE_NS)
                .count()
        });
        if recent >= self.config.max_new_per_rule_per_minute as usize {
            return Some(Suppressed::RateCap);
        }
        if self.firing.len() >= self.config.max_firing {
            return Some(Suppressed::Capacity);
        }
        None
    }

    fn resolve(&mut self, mut f: Firing, now_ns: i64) -> AlertEvent {
        f.alert.status = Status::Resolved;
        f.alert.resolved_ns = Some(now_ns);
        self.recently_resolved
            .insert(f.alert.fingerprint.clone(), now_ns);
        AlertEvent {
            alert: snapshot(&mut f),
        }
    }

    pub fn firing_count(&self) -> usize {
        self.firing.len()
    }

    pub fn save(&self) -> SavedAlerts {
        SavedAlerts {
            firing: self.firing.values().cloned().collect(),
            recently_resolved: self
                .recently_resolved
                .iter()
                .map(|(f, t)| (f.clone(), *t))
                .collect(),
        }
    }

    /// Takes over what an earlier run saved, up to `max_firing` alerts. Alerts quiet for
    /// `resolve_after` by now resolve on the next `tick`, as they would have without the
    /// restart.
    pub fn restore(&mut self, saved: SavedAlerts) {
        for firing in saved.firing {
            if self.firing.len() >= self.config.max_firing {
                break;
            }
            self.firing.insert(firing.alert.fingerprint.clone(), firing);
        }
        self.recently_resolved.extend(saved.recently_resolved);
    }

    /// Whether `fingerprint` resolved within the last `suppress_for`.
    pub fn resolved_recently(&self, fingerprint: &str) -> bool {
        self.recently_resolved.contains_key(fingerprint)
    }

    /// Resolves the firing alert `fingerprint` now because an analyst said so; `None` when no
    /// such alert is firing. Like any resolution, the same alert firing again within
    /// `suppress_for` is suppressed. Its details record who resolved it.
    pub fn resolve_manually(
        &mut self,
        fingerprint: &str,
        by: &ManualResolution,
        now_ns: i64,
    ) -> Option<AlertEvent> {
        let mut f = self.firing.remove(fingerprint)?;
        by.annotate(&mut f.alert);
        Some(self.resolve(f, now_ns))
    }

    /// Observations dropped since the last call, per rule and reason.
    pub fn take_suppressed(&mut self) -> Vec<(String, Suppressed, u64)> {
        self.suppressed
            .drain()
            .map(|((rule, reason), n)| (rule, reason, n))
            .collect()
    }
}

/// The alert with `group`, `count` and `samples` merged into its details.
fn snapshot(f: &mut Firing) -> Arc<Alert> {
    let mut alert = f.alert.clone();
    if let Value::Object(details) = &mut alert.details {
        let group: Map<String, Value> = f
            .group
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        details.insert("group".into(), Value::Object(group));
        details.insert("count".into(), Value::from(alert.count));
        details.insert(
            "samples".into(),
            serde_json::to_value(&f.samples).unwrap_or(Value::Null),
        );
    }
    Arc::new(alert)
}

/// The `alerts` table rows for `events`, in order.
pub fn alerts_batch(events: &[AlertEvent]) -> Result<RecordBatch, ArrowError> {
    let n = events.len();
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut last_seen = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut resolved = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut strings: [StringBuilder; 8] = std::array::from_fn(|_| StringBuilder::new());
    let mut count = UInt64Builder::with_capacity(n);
    for e in events {
        let a = &e.alert;
        time.append_value(a.started_ns);
        last_seen.append_value(a.last_seen_ns);
        resolved.append_option(a.resolved_ns);
        let details = a.details.to_string();
        let values = [
            a.status.as_str(),
            &a.rule_id,
            &a.rule_title,
            a.severity.as_str(),
            &a.service,
            &a.fingerprint,
            &a.summary,
            &details,
        ];
        for (builder, value) in strings.iter_mut().zip(values) {
            builder.append_value(value);
        }
        count.append_value(a.count);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(last_seen.finish()),
        Arc::new(resolved.finish()),
    ];
    columns.extend(strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(count.finish()));
    RecordBatch::try_new(alerts_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    fn candidate(rule: &str, service: &str, user: &str) -> Observation {
        Observation::Fire(Candidate {
            key: AlertKey::new(rule, service).with_group("user", user),
            rule_title: format!("{rule} title"),
            severity: Severity::High,
            summary: format!("{rule} on {service}"),
            details: Map::new(),
            time_ns: 0,
            sample: Some(Sample {
                signal: "logs",
                time_ns: 0,
                trace_id: Some("ab".into()),
                span_id: None,
            }),
        })
    }

    fn state() -> AlertState {
        AlertState::new(AlertStateConfig {
            resolve_after: Duration::from_secs(10),
            suppress_for: Duration::from_secs(30),
            max_new_per_rule_per_minute: 3,
            max_firing: 100,
            max_samples: 2,
        })
    }

    #[test]
    fn repeated_evidence_is_one_alert_until_it_goes_quiet() {
        let mut s = state();
        let fired = s.observe([candidate("r", "a", "bob"), candidate("r", "a", "bob")], 0);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].alert.status, Status::Firing);
        assert!(s.observe([candidate("r", "a", "bob")], 5 * SEC).is_empty());
        assert!(s.tick(14 * SEC).is_empty(), "seen at 5s, quiet for only 9s");
        let resolved = s.tick(15 * SEC);
        assert_eq!(resolved.len(), 1);
        let a = &resolved[0].alert;
        assert_eq!(
            (a.status, a.count, a.resolved_ns),
            (Status::Resolved, 3, Some(15 * SEC))
        );
        assert_eq!(a.started_ns, 0);
        assert_eq!(a.details["count"], 3);
        assert_eq!(a.details["group"]["user"], "bob");
        assert_eq!(
            a.details["samples"].as_array().map(Vec::len),
            Some(2),
            "capped at max_samples"
        );
    }

    #[test]
    fn group_values_and_service_separate_alerts() {
        let mut s = state();
        let events = s.observe(
            [
                candidate("r", "a", "bob"),
                candidate("r", "a", "eve"),
                candidate("r", "b", "bob"),
            ],
            0,
        );
        let fps: std::collections::HashSet<_> =
            events.iter().map(|e| e.alert.fingerprint.clone()).collect();
        assert_eq!(fps.len(), 3);
    }

    #[test]
    fn clear_resolves_at_once_and_refiring_soon_after_is_suppressed() {
        let mut s = state();
        s.observe([candidate("r", "a", "bob")], 0);
        let key = AlertKey::new("r", "a").with_group("user", "bob");
        let resolved = s.observe([Observation::Clear(key)], SEC);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].alert.status, Status::Resolved);
        assert!(s.observe([candidate("r", "a", "bob")], 2 * SEC).is_empty());
        assert_eq!(
            s.take_suppressed(),
            vec![("r".to_string(), Suppressed::Flapping, 1)]
        );
        s.tick(40 * SEC);
        assert_eq!(s.observe([candidate("r", "a", "bob")], 40 * SEC).len(), 1);
    }

    #[test]
    fn a_manual_resolution_resolves_now_records_who_and_suppresses_refiring() {
        let mut s = state();
        let fired = s.observe([candidate("r", "a", "bob")], 0);
        let fp = fired[0].alert.fingerprint.clone();
        let by = ManualResolution {
            principal: "alice".into(),
        };
        assert!(s.resolve_manually("0000000000000000", &by, SEC).is_none());
        let resolved = s.resolve_manually(&fp, &by, 2 * SEC).expect("firing");
        let a = &resolved.alert;
        assert_eq!(
            (a.status, a.resolved_ns, a.started_ns),
            (Status::Resolved, Some(2 * SEC), 0)
        );
        assert_eq!(a.details["resolution"]["manual"], true);
        assert_eq!(a.details["resolution"]["by"], "alice");
        assert_eq!(a.details["group"]["user"], "bob", "the usual details stay");
        assert_eq!(s.firing_count(), 0);
        assert!(s.resolved_recently(&fp));
        assert!(
            s.resolve_manually(&fp, &by, 3 * SEC).is_none(),
            "already resolved"
        );
        assert!(s.observe([candidate("r", "a", "bob")], 4 * SEC).is_empty());
        assert_eq!(
            s.take_suppressed(),
            vec![("r".to_string(), Suppressed::Flapping, 1)]
        );
        assert!(s.tick(20 * SEC).is_empty(), "nothing left to resolve");
    }

    #[test]
    fn a_stale_alert_resolves_from_its_last_known_state() {
        let mut s = state();
        let fired = s.observe([candidate("r", "a", "bob")], 0);
        let stale = (*fired[0].alert).clone();
        let by = ManualResolution {
            principal: "anonymous".into(),
        };
        let event = by.resolve_stale(stale, 9 * SEC);
        let a = &event.alert;
        assert_eq!((a.status, a.resolved_ns), (Status::Resolved, Some(9 * SEC)));
        assert_eq!(a.details["resolution"]["by"], "anonymous");
        assert_eq!(a.fingerprint, fired[0].alert.fingerprint);
    }

    #[test]
    fn new_alerts_per_rule_are_rate_capped_per_minute() {
        let mut s = state();
        let users = ["u1", "u2", "u3", "u4", "u5"];
        let fired = s.observe(users.iter().map(|u| candidate("r", "a", u)), 0);
        assert_eq!(fired.len(), 3);
        assert_eq!(
            s.observe([candidate("other", "a", "u9")], 0).len(),
            1,
            "cap is per rule"
        );
        assert_eq!(
            s.take_suppressed(),
            vec![("r".to_string(), Suppressed::RateCap, 2)]
        );
        s.tick(61 * SEC);
        assert_eq!(s.observe([candidate("r", "a", "u6")], 61 * SEC).len(), 1);
    }

    #[test]
    fn fingerprint_is_stable_and_depends_on_every_part() {
        let k = AlertKey::new("r", "a").with_group("user", "bob");
        assert_eq!(k.fingerprint(), k.clone().fingerprint());
        assert_eq!(k.fingerprint().len(), 16);
        for other in [
            AlertKey::new("r2", "a").with_group("user", "bob"),
            AlertKey::new("r", "b").with_group("user", "bob"),
            AlertKey::new("r", "a").with_group("user", "bo"),
            AlertKey::new("r", "a").with_group("use", "rbob"),
            AlertKey::new("r", "a"),
        ] {
            assert_ne!(k.fingerprint(), other.fingerprint(), "{other:?}");
        }
    }

    #[test]
    fn alerts_batch_has_the_table_schema_and_one_row_per_change() {
        let mut s = state();
        let mut events = s.observe([candidate("r", "a", "bob")], SEC);
        events.extend(s.tick(20 * SEC));
        let batch = alerts_batch(&events).expect("batch");
        assert_eq!(batch.schema(), alerts_schema());
        assert_eq!(batch.num_rows(), 2);
        let status = batch
            .column_by_name("status")
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>())
            .expect("status");
        assert_eq!((status.value(0), status.value(1)), ("firing", "resolved"));
    }
}
