//! Routing and grouping, the way Alertmanager does it: a sink takes the alerts its filters
//! match, groups them by `group_by`, and turns each group into notifications — the first
//! after `group_wait`, changes at most every `group_interval`, and an unchanged firing group
//! again every `repeat_interval`. Pure: time is passed in. The state is serialisable so the
//! outbox can keep it across restarts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigil_core::time::duration_ns;
use vigil_detector::{Alert, Status};

use super::config::{SinkConfig, glob_match};

/// One notification: what a sink sends in one request.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Unique and stable: the Standard Webhooks `webhook-id`, the same on every retry.
    pub id: String,
    pub group_key: String,
    pub group_labels: Vec<(String, String)>,
    pub alerts: Vec<Alert>,
    pub created_ns: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Group {
    labels: Vec<(String, String)>,
    /// Fingerprint → latest state. Resolved alerts stay until they have been notified.
    alerts: BTreeMap<String, Alert>,
    created_ns: i64,
    last_sent_ns: Option<i64>,
    /// Changed since the last notification.
    changed: bool,
    /// Notifications made from this group so far.
    sent: u64,
}

/// Which alerts a sink takes and how it groups them.
impl SinkConfig {
    pub fn matches(&self, alert: &Alert) -> bool {
        let any = |patterns: &[String], value: &str| {
            patterns.is_empty() || patterns.iter().any(|p| glob_match(p, value))
        };
        alert.severity >= self.min_severity
            && any(&self.rules, &alert.rule_id)
            && any(&self.services, &alert.service)
    }

    fn labels(&self, alert: &Alert) -> Vec<(String, String)> {
        self.group_by
            .iter()
            .map(|field| {
                let value = match field.as_str() {
                    "rule_id" => alert.rule_id.clone(),
                    "service" => alert.service.clone(),
                    "severity" => alert.severity.as_str().to_owned(),
                    _ => alert.fingerprint.clone(),
                };
                (field.clone(), value)
            })
            .collect()
    }
}

/// A sink's groups.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Groups {
    groups: BTreeMap<String, Group>,
}

/// `{rule_id="x", service="y"}`, Alertmanager's group key form.
fn group_key(labels: &[(String, String)]) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

impl Groups {
    /// Takes `alert` if the route matches it; `true` when the state changed.
    pub fn accept(&mut self, sink: &SinkConfig, alert: &Alert, now_ns: i64) -> bool {
        if !sink.matches(alert) {
            return false;
        }
        let labels = sink.labels(alert);
        let key = group_key(&labels);
        if alert.status == Status::Resolved && !self.groups.contains_key(&key) {
            // It resolved before it was ever notified here: nothing to retract.
            return false;
        }
        let group = self.groups.entry(key).or_insert_with(|| Group {
            labels,
            alerts: BTreeMap::new(),
            created_ns: now_ns,
            last_sent_ns: None,
            changed: false,
            sent: 0,
        });
        group
            .alerts
            .insert(alert.fingerprint.clone(), alert.clone());
        group.changed = true;
        true
    }

    /// The notifications due at `now_ns`; each group that produced one is updated as sent.
    pub fn due(&mut self, sink: &SinkConfig, now_ns: i64) -> Vec<Notification> {
        let mut out = Vec::new();
        let mut emptied = Vec::new();
        for (key, group) in &mut self.groups {
            if group.due_ns(sink) > now_ns {
                continue;
            }
            let alerts: Vec<Alert> = group
                .alerts
                .values()
                .filter(|a| sink.send_resolved || a.status == Status::Firing)
                .cloned()
                .collect();
            group.alerts.retain(|_, a| a.status == Status::Firing);
            group.changed = false;
            group.last_sent_ns = Some(now_ns);
            if !alerts.is_empty() {
                out.push(Notification {
                    id: message_id(&sink.name, key, group.created_ns, group.sent),
                    group_key: key.clone(),
                    group_labels: group.labels.clone(),
                    alerts,
                    created_ns: now_ns,
                });
                group.sent += 1;
            }
            if group.alerts.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.groups.remove(&key);
        }
        out
    }

    /// When the next notification could become due (for the sink's timer).
    pub fn next_due_ns(&self, sink: &SinkConfig) -> Option<i64> {
        self.groups.values().map(|g| g.due_ns(sink)).min()
    }
}

impl Group {
    /// When this group's next notification is due: `group_wait` after it was created, then
    /// `group_interval` after a change, or `repeat_interval` when nothing changed.
    fn due_ns(&self, sink: &SinkConfig) -> i64 {
        match self.last_sent_ns {
            None => self.created_ns.saturating_add(duration_ns(sink.group_wait)),
            Some(last) if self.changed => last.saturating_add(duration_ns(sink.group_interval)),
            Some(last) => last.saturating_add(duration_ns(sink.repeat_interval)),
        }
    }
}

/// `msg_` + 24 hex digits of SHA-256 over sink, group and the group's notification number:
/// the same notification always gets the same id (a crash between writing it and recording
/// that it was made re-creates it under the same name), different ones never share one.
fn message_id(sink: &str, group_key: &str, created_ns: i64, n: u64) -> String {
    let mut h = Sha256::new();
    h.update(sink.as_bytes());
    h.update([0]);
    h.update(group_key.as_bytes());
    h.update([0]);
    h.update(created_ns.to_be_bytes());
    h.update(n.to_be_bytes());
    format!(
        "msg_{}",
        hex::encode(h.finalize().get(..12).unwrap_or_default())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_detector::Severity;

    const SEC: i64 = 1_000_000_000;

    fn alert(rule: &str, service: &str, fp: &str, status: Status) -> Alert {
        Alert {
            fingerprint: fp.into(),
            rule_id: rule.into(),
            rule_title: format!("{rule} title"),
            severity: Severity::High,
            service: service.into(),
            status,
            summary: format!("{rule} on {service}"),
            details: serde_json::json!({}),
            started_ns: 0,
            last_seen_ns: 0,
            resolved_ns: (status == Status::Resolved).then_some(5 * SEC),
            count: 1,
        }
    }

    fn route(extra: &str) -> SinkConfig {
        toml::from_str(&format!(
            "name = \"s\"\nformat = \"json\"\nurl = \"http://127.0.0.1/\"\n\
             group_wait = \"10s\"\ngroup_interval = \"60s\"\nrepeat_interval = \"1h\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn groups_wait_then_batch_changes_then_repeat() {
        let r = route("");
        let mut g = Groups::default();
        assert!(g.accept(&r, &alert("brute", "auth", "a1", Status::Firing), 0));
        assert!(g.accept(&r, &alert("brute", "auth", "a2", Status::Firing), 3 * SEC));
        assert!(g.accept(&r, &alert("scan", "auth", "b1", Status::Firing), 3 * SEC));
        assert!(g.due(&r, 9 * SEC).is_empty(), "group_wait not over");
        assert_eq!(g.next_due_ns(&r), Some(10 * SEC));
        let mut sent = g.due(&r, 13 * SEC);
        sent.sort_by(|a, b| a.group_key.cmp(&b.group_key));
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].group_key, r#"{rule_id="brute", service="auth"}"#);
        assert_eq!(sent[0].alerts.len(), 2);
        assert_eq!(sent[1].alerts.len(), 1);

        // A change waits for group_interval; the resolved alert goes out once, then leaves.
        g.accept(
            &r,
            &alert("brute", "auth", "a1", Status::Resolved),
            20 * SEC,
        );
        assert!(g.due(&r, 60 * SEC).is_empty());
        let sent = g.due(&r, 73 * SEC);
        assert_eq!(sent.len(), 1);
        let statuses: Vec<_> = sent[0].alerts.iter().map(|a| a.status).collect();
        assert_eq!(statuses, [Status::Resolved, Status::Firing]);

        // Unchanged and firing: repeated after repeat_interval, with a new id.
        assert!(g.due(&r, 1000 * SEC).is_empty());
        let again = g.due(&r, 3700 * SEC);
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|n| n.id != sent[0].id));
        assert!(
            again
                .iter()
                .all(|n| n.alerts.iter().all(|a| a.fingerprint != "a1"))
        );
    }

    #[test]
    fn fully_resolved_groups_are_dropped_and_ids_are_unique() {
        let r = route("group_by = [\"fingerprint\"]");
        let mut g = Groups::default();
        g.accept(&r, &alert("x", "s", "f", Status::Firing), 0);
        let first = g.due(&r, 10 * SEC);
        g.accept(&r, &alert("x", "s", "f", Status::Resolved), 11 * SEC);
        let second = g.due(&r, 70 * SEC);
        assert_eq!(second.len(), 1);
        assert_eq!(g.next_due_ns(&r), None, "group gone once all resolved");
        // The same alert firing again later starts a new group: still a fresh id.
        g.accept(&r, &alert("x", "s", "f", Status::Firing), 100 * SEC);
        let third = g.due(&r, 110 * SEC);
        let ids: std::collections::HashSet<_> = [&first[0].id, &second[0].id, &third[0].id]
            .into_iter()
            .collect();
        assert_eq!(ids.len(), 3);
        assert!(first[0].id.starts_with("msg_") && first[0].id.len() == 28);
    }

    #[test]
    fn routes_filter_by_severity_rule_and_service() {
        let r = route(
            "min_severity = \"critical\"\nrules = [\"sigma.*\"]\nservices = [\"pay*\"]\nsend_resolved = false",
        );
        let mut g = Groups::default();
        assert!(!g.accept(&r, &alert("sigma.x", "payments", "1", Status::Firing), 0));
        let mut critical = alert("sigma.x", "payments", "2", Status::Firing);
        critical.severity = Severity::Critical;
        assert!(g.accept(&r, &critical, 0));
        let mut other = critical.clone();
        other.service = "checkout".into();
        assert!(!g.accept(&r, &other, 0));
        // Resolved alerts are not sent when send_resolved is off, but still end the group.
        g.due(&r, 10 * SEC);
        critical.status = Status::Resolved;
        assert!(g.accept(&r, &critical, 20 * SEC));
        assert!(g.due(&r, 100 * SEC).is_empty());
        assert_eq!(g.next_due_ns(&r), None);
    }

    #[test]
    fn resolved_before_first_notification_is_sent_once_resolved() {
        let r = route("");
        let mut g = Groups::default();
        g.accept(&r, &alert("x", "s", "f", Status::Firing), 0);
        g.accept(&r, &alert("x", "s", "f", Status::Resolved), SEC);
        let sent = g.due(&r, 10 * SEC);
        assert_eq!(sent[0].alerts[0].status, Status::Resolved);
        // A resolve for an alert this sink never took is ignored.
        assert!(!g.accept(&r, &alert("y", "s", "g", Status::Resolved), 20 * SEC));
    }

    #[test]
    fn state_round_trips_through_json() {
        let r = route("");
        let mut g = Groups::default();
        g.accept(&r, &alert("x", "s", "f", Status::Firing), 0);
        let copy: Groups = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        let a = g.clone().due(&r, 10 * SEC);
        let b = copy.clone().due(&r, 10 * SEC);
        assert_eq!(a[0].id, b[0].id);
    }
}
