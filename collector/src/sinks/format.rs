//! Payloads: one notification rendered for each receiver kind. Bodies are rendered once, when
//! the notification is queued, and sent byte for byte on every retry (the signature covers
//! them).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use vigil_detector::{Alert, Severity, Status};

use super::config::{Format, SinkConfig};
use super::group::Notification;

pub fn rfc3339(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ms(ns: i64) -> i64 {
    ns / 1_000_000
}

/// Link to the alert's rows in Vigil's API.
fn alert_url(external_url: &str, a: &Alert) -> String {
    format!("{external_url}/api/v1/alerts/{}", a.fingerprint)
}

/// The body `sink` sends for `n`; `external_url` (no trailing slash) is where links to
/// Vigil point.
pub fn render(sink: &SinkConfig, external_url: &str, n: &Notification) -> String {
    let value = match sink.format {
        Format::Alertmanager => alertmanager(sink, external_url, n),
        Format::Ocsf => Value::Array(n.alerts.iter().map(|a| ocsf(external_url, a)).collect()),
        Format::Json => own(sink, n),
        // HEC takes several events as concatenated JSON objects.
        Format::SplunkHec => {
            let events: Vec<String> = n
                .alerts
                .iter()
                .map(|a| splunk_event(sink, a).to_string())
                .collect();
            return events.join("\n");
        }
    };
    value.to_string()
}

/// Vigil's JSON view of one alert: RFC 3339 times, details as an object.
pub fn alert_json(a: &Alert) -> Value {
    json!({
        "fingerprint": a.fingerprint,
        "status": a.status.as_str(),
        "rule_id": a.rule_id,
        "rule_title": a.rule_title,
        "severity": a.severity.as_str(),
        "service": a.service,
        "summary": a.summary,
        "started_at": rfc3339(a.started_ns),
        "last_seen_at": rfc3339(a.last_seen_ns),
        "resolved_at": a.resolved_ns.map(rfc3339),
        "count": a.count,
        "details": a.details,
    })
}

fn own(sink: &SinkConfig, n: &Notification) -> Value {
    json!({
        "version": "1",
        "id": n.id,
        "sink": sink.name,
        "status": group_status(n),
        "group_key": n.group_key,
        "group_labels": labels_object(&n.group_labels),
        "alerts": n.alerts.iter().map(alert_json).collect::<Vec<_>>(),
    })
}

fn group_status(n: &Notification) -> &'static str {
    if n.alerts.iter().any(|a| a.status == Status::Firing) {
        "firing"
    } else {
        "resolved"
    }
}

fn labels_object(labels: &[(String, String)]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect(),
    )
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, other characters as `_`.
fn label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

fn am_labels(a: &Alert) -> Map<String, Value> {
    let mut labels = Map::new();
    if let Some(Value::Object(group)) = a.details.get("group") {
        for (k, v) in group {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            labels.insert(label_name(k), Value::from(v));
        }
    }
    // The fixed labels win over group values of the same name.
    labels.insert("alertname".into(), Value::from(a.rule_title.as_str()));
    labels.insert("rule_id".into(), Value::from(a.rule_id.as_str()));
    labels.insert("severity".into(), Value::from(a.severity.as_str()));
    labels.insert("service".into(), Value::from(a.service.as_str()));
    labels
}

/// Alertmanager's "zero" time for `endsAt` of a firing alert.
const AM_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn alertmanager(sink: &SinkConfig, external_url: &str, n: &Notification) -> Value {
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            json!({
                "status": a.status.as_str(),
                "labels": am_labels(a),
                "annotations": {
                    "summary": a.summary,
                    "details": a.details.to_string(),
                },
                "startsAt": rfc3339(a.started_ns),
                "endsAt": a.resolved_ns.map_or_else(|| AM_ZERO_TIME.to_owned(), rfc3339),
                "generatorURL": alert_url(external_url, a),
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    let common = |field: &str| -> Map<String, Value> {
        let mut maps = alerts.iter().filter_map(|a| a.get(field)?.as_object());
        let Some(first) = maps.next() else {
            return Map::new();
        };
        let mut common = first.clone();
        for m in maps {
            common.retain(|k, v| m.get(k) == Some(v));
        }
        common
    };
    let group_labels: Map<String, Value> = n
        .group_labels
        .iter()
        .map(|(k, v)| (label_name(k), Value::from(v.as_str())))
        .collect();
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": group_status(n),
        "receiver": sink.name,
        "groupLabels": group_labels,
        "commonLabels": common("labels"),
        "commonAnnotations": common("annotations"),
        "externalURL": external_url,
        "alerts": alerts,
    })
}

fn ocsf_severity(s: Severity) -> (u8, &'static str) {
    match s {
        Severity::Info => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

/// The OCSF schema version the findings follow.
pub const OCSF_VERSION: &str = "1.4.0";

/// An OCSF Detection Finding (class 2004) for one alert. Statistical alerts (baselines) carry
/// the observed value against the baseline in `evidences[].data` and as analytic type
/// "Statistical".
fn ocsf(external_url: &str, a: &Alert) -> Value {
    let (severity_id, severity) = ocsf_severity(a.severity);
    let (activity_id, activity, status_id, status) = match a.status {
        Status::Firing => (1, "Create", 1, "New"),
        Status::Resolved => (3, "Close", 4, "Resolved"),
    };
    let statistical = a.details.get("expected").is_some();
    let (analytic_type_id, analytic_type) = if statistical {
        (3, "Statistical")
    } else {
        (1, "Rule")
    };
    let first_seen = a
        .details
        .get("first_evidence_ns")
        .and_then(Value::as_i64)
        .unwrap_or(a.started_ns);
    let mut observables = vec![json!({
        "name": "service.name", "type_id": 99, "type": "Other", "value": a.service,
    })];
    if let Some(Value::Object(group)) = a.details.get("group") {
        for (k, v) in group {
            let value = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            let (type_id, type_name) = if value.parse::<std::net::IpAddr>().is_ok() {
                (2, "IP Address")
            } else if k.contains("user") {
                (4, "User Name")
            } else {
                (99, "Other")
            };
            observables.push(json!({
                "name": k, "type_id": type_id, "type": type_name, "value": value,
            }));
        }
    }
    let mut finding = json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": 2004 * 100 + activity_id,
        "type_name": format!("Detection Finding: {activity}"),
        "time": ms(a.resolved_ns.unwrap_or(a.last_seen_ns)),
        "start_time": ms(a.started_ns),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "is_alert": true,
        "count": a.count,
        "message": a.summary,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {
                "name": "Vigil",
                "vendor_name": "Vigil",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "uid": format!("{}:{}", a.fingerprint, a.status.as_str()),
            "correlation_uid": a.fingerprint,
        },
        "finding_info": {
            "uid": a.fingerprint,
            "title": a.rule_title,
            "desc": a.summary,
            "created_time": ms(a.started_ns),
            "first_seen_time": ms(first_seen),
            "last_seen_time": ms(a.last_seen_ns),
            "src_url": alert_url(external_url, a),
            "analytic": {
                "uid": a.rule_id,
                "name": a.rule_title,
                "type_id": analytic_type_id,
                "type": analytic_type,
            },
        },
        "resources": [{ "type": "service", "name": a.service, "uid": a.service }],
        "observables": observables,
        "evidences": [{ "data": a.details }],
    });
    if let (Some(end), Some(obj)) = (a.resolved_ns, finding.as_object_mut()) {
        obj.insert("end_time".into(), Value::from(ms(end)));
    }
    finding
}

fn splunk_event(sink: &SinkConfig, a: &Alert) -> Value {
    let time = a.resolved_ns.unwrap_or(a.last_seen_ns);
    let mut event = json!({
        // HEC takes epoch seconds with a millisecond fraction.
        "time": ms(time) as f64 / 1000.0,
        "host": "vigil",
        "source": format!("vigil:{}", sink.name),
        "sourcetype": sink.hec_sourcetype,
        "event": alert_json(a),
    });
    if let (Some(index), Some(obj)) = (&sink.hec_index, event.as_object_mut()) {
        obj.insert("index".into(), Value::from(index.as_str()));
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification() -> Notification {
        let details = json!({
            "group": {"client.address": "203.0.113.9"},
            "count": 7,
            "samples": [],
            "first_evidence_ns": 1_700_000_000_000_000_000_i64,
        });
        let firing = Alert {
            fingerprint: "0123456789abcdef".into(),
            rule_id: "vigil.auth.bruteforce".into(),
            rule_title: "Brute force against login".into(),
            severity: Severity::High,
            service: "auth".into(),
            status: Status::Firing,
            summary: "30 failed logins from 203.0.113.9".into(),
            details: details.clone(),
            started_ns: 1_700_000_001_000_000_000,
            last_seen_ns: 1_700_000_002_500_000_000,
            resolved_ns: None,
            count: 7,
        };
        let resolved = Alert {
            fingerprint: "fedcba9876543210".into(),
            status: Status::Resolved,
            resolved_ns: Some(1_700_000_300_000_000_000),
            details: json!({"group": {}, "observed": 80.0, "expected": 2.5, "spread": 1.2, "score": 9.1, "metric": "error_rate"}),
            rule_id: "baseline.error_rate".into(),
            rule_title: "Error rate above baseline".into(),
            summary: "error rate 80 vs 2.5".into(),
            ..firing.clone()
        };
        Notification {
            id: "msg_0123456789abcdef01234567".into(),
            group_key: r#"{service="auth"}"#.into(),
            group_labels: vec![("service".into(), "auth".into())],
            alerts: vec![firing, resolved],
            created_ns: 1_700_000_010_000_000_000,
        }
    }

    const EXTERNAL_URL: &str = "https://vigil.example.com";

    fn sink(format: &str) -> SinkConfig {
        toml::from_str(&format!(
            "name = \"siem\"\nformat = \"{format}\"\nurl = \"https://siem.example.com/\"\n\
             hec_index = \"security\""
        ))
        .unwrap()
    }

    fn render_with(format: &str, n: &Notification) -> String {
        render(&sink(format), EXTERNAL_URL, n)
    }

    /// The golden file `name`; with `VIGIL_BLESS=1` in the environment, `got` is written as
    /// the new golden file first (review the diff before committing it).
    fn golden(name: &str, got: &Value) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/webhooks")
            .join(name);
        if std::env::var_os("VIGIL_BLESS").is_some() {
            let text = serde_json::to_string_pretty(got).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
        }
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// Each format against its golden file (the same files the end-to-end receiver checks
    /// shapes against).
    #[test]
    fn payloads_match_golden_files() {
        for (format, file) in [
            ("alertmanager", "alertmanager.json"),
            ("ocsf", "ocsf.json"),
            ("json", "json.json"),
        ] {
            let got: Value = serde_json::from_str(&render_with(format, &notification())).unwrap();
            assert_eq!(
                got,
                golden(file, &got),
                "{file}:\n{}",
                serde_json::to_string_pretty(&got).unwrap()
            );
        }
        let body = render_with("splunk_hec", &notification());
        let events: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let got = Value::Array(events);
        assert_eq!(got, golden("splunk_hec.json", &got));
    }

    #[test]
    fn alertmanager_labels_are_valid_names_and_fixed_labels_win() {
        let mut n = notification();
        n.alerts.truncate(1);
        n.alerts[0].details = json!({"group": {"9 odd.key": "v", "service": "spoof"}});
        let v: Value = serde_json::from_str(&render_with("alertmanager", &n)).unwrap();
        let labels = &v["alerts"][0]["labels"];
        assert_eq!(labels["_9_odd_key"], "v");
        assert_eq!(labels["service"], "auth");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["alerts"][0]["endsAt"], AM_ZERO_TIME);
    }
}
