use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;

use super::*;
use crate::decode::test_support::map_entries;
use crate::decode::{decode_logs, decode_traces};

fn key() -> HashKey {
    HashKey::new(b"0123456789abcdef0123456789abcdef").unwrap()
}

fn redactor(config: &RedactionConfig) -> Redactor {
    Redactor::new(config, key()).unwrap()
}

/// Compiled once: building the automaton for every proptest case would dominate the run.
fn default_redactor() -> Redactor {
    static DEFAULT: std::sync::LazyLock<Redactor> =
        std::sync::LazyLock::new(|| redactor(&RedactionConfig::default()));
    DEFAULT.clone()
}

fn redact(text: &str) -> String {
    default_redactor().redact_str("svc", text).into_owned()
}

#[track_caller]
fn assert_redacted(text: &str, secret: &str, marker: &str) {
    let out = redact(text);
    assert!(!out.contains(secret), "{secret:?} survived in {out:?}");
    assert!(out.contains(marker), "{marker:?} missing from {out:?}");
}

#[track_caller]
fn assert_untouched(text: &str) {
    assert_eq!(redact(text), text);
}

#[test]
fn every_builtin_finds_its_entity() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "mail alice.smith+tag@example.co.uk now",
            "alice.smith+tag@example.co.uk",
            "email:",
        ),
        (
            "card 4111 1111 1111 1111 ok",
            "4111 1111 1111 1111",
            "[REDACTED:CREDIT_CARD:****1111]",
        ),
        (
            "card 378282246310005",
            "378282246310005",
            "[REDACTED:CREDIT_CARD:****0005]",
        ),
        ("ssn 123-45-6789", "123-45-6789", "[REDACTED:US_SSN]"),
        ("SSN: 123456789", "123456789", "[REDACTED:US_SSN]"),
        ("call +1 415 555 0123", "415 555 0123", "[REDACTED:PHONE]"),
        ("call (415) 555-0123", "555-0123", "[REDACTED:PHONE]"),
        ("call 020 7946 0958", "7946 0958", "[REDACTED:PHONE]"),
        ("from 203.0.113.77:443", "203.0.113.77", "ipv4:"),
        (
            "from 2001:db8::8a2e:370:7334 x",
            "2001:db8::8a2e:370:7334",
            "ipv6:",
        ),
        (
            "iban DE89 3704 0044 0532 0130 00",
            "3704 0044 0532",
            "[REDACTED:IBAN:****3000]",
        ),
        (
            "jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "dozjgNryP4J3jVmNHl0w5N",
            "[REDACTED:JWT]",
        ),
        (
            "Authorization: Bearer abcDEF123456ghiJKL789",
            "abcDEF123456ghiJKL789",
            "Bearer [REDACTED:AUTH_CREDENTIAL]",
        ),
        (
            "Authorization: Basic dXNlcjpwYXNz",
            "dXNlcjpwYXNz",
            "Basic [REDACTED:AUTH_CREDENTIAL]",
        ),
        (
            "key AKIAIOSFODNN7EXAMPLE used",
            "AKIAIOSFODNN7EXAMPLE",
            "[REDACTED:AWS_ACCESS_KEY_ID]",
        ),
        (
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG",
            "[REDACTED:AWS_SECRET_ACCESS_KEY]",
        ),
        (
            "k=AIzaSyA1234567890abcdefghijklmnopqrstuv",
            "AIzaSyA1234567890",
            "[REDACTED:GCP_API_KEY]",
        ),
        (
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "ghp_abcdefghij",
            "[REDACTED:GITHUB_TOKEN]",
        ),
        (
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
            "xoxb-1234",
            "[REDACTED:SLACK_TOKEN]",
        ),
        (
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "sk_live_4eC39",
            "[REDACTED:STRIPE_KEY]",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA75\nabc+/=\n-----END RSA PRIVATE KEY-----",
            "MIIEpAIBAAKCAQEA75",
            "[REDACTED:PRIVATE_KEY]",
        ),
        (
            "postgres://app:s3cr3t!pw@db.internal:5432/x",
            "s3cr3t!pw",
            "app:[REDACTED:URL_CREDENTIALS]@db",
        ),
        (
            "GET /export?format=csv&token=Zx81kq0PLmN2 200",
            "Zx81kq0PLmN2",
            "token=[REDACTED:URL_SECRET_PARAM]",
        ),
        (
            "login with password=hunter2 failed",
            "hunter2",
            "password=[REDACTED:PASSWORD_ASSIGNMENT]",
        ),
        (
            r#"{"user":"bob","password":"hunter2"}"#,
            "hunter2",
            "[REDACTED:",
        ),
        (
            "api_key: Q8xZ2LmN4vB7pR1sT6wY",
            "Q8xZ2LmN4vB7pR1sT6wY",
            "[REDACTED:SECRET_ASSIGNMENT]",
        ),
    ];
    for (text, secret, marker) in cases {
        assert_redacted(text, secret, marker);
    }
}

#[test]
fn look_alikes_survive() {
    for text in [
        "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
        "request 123e4567-e89b-12d3-a456-426614174000 took 153ms",
        "at 2026-11-22T08:01:02.123456789Z epoch 1763798462 ms 1763798462123 ns 1763798462123456789",
        "version 1.24.3 (go1.22.4) build v2.0.0-rc.1",
        "order 4111111111111112 shipped",
        "user id 84736251 item 9912",
        "GET /api/v1/orders/123456 HTTP/1.1 200 OK",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 commit 3f9a1c0",
        "pod checkout-7d9f8b6c4-x2lqp at 12:30:45 on 2026-11-22 connecting to db.internal:5432",
        "total 1234.56 EUR, 99.5% done, token expired, password reset requested",
        "std::vec::Vec::new failed; Basic authentication failed",
        "mac 00:1a:2b:3c:4d:5e",
    ] {
        assert_untouched(text);
    }
}

#[test]
fn hash_pseudonyms_are_stable_keyed_and_normalised() {
    let r = default_redactor();
    let a = r.redact_str("x", "from Alice@Example.com").into_owned();
    let b = r.redact_str("y", "to alice@example.com").into_owned();
    let pseudonym = a.trim_start_matches("from ");
    assert!(
        pseudonym.starts_with("email:") && pseudonym.len() == "email:".len() + 16,
        "{a}"
    );
    assert_eq!(
        b.trim_start_matches("to "),
        pseudonym,
        "same value, same pseudonym"
    );
    let other_key =
        Redactor::new(&RedactionConfig::default(), HashKey::new(&[9; 32]).unwrap()).unwrap();
    assert_ne!(other_key.redact_str("x", "from alice@example.com"), a);
    let ip1 = r.redact_str("x", "2001:db8:0:0:0:0:0:1 ").into_owned();
    let ip2 = r.redact_str("x", "2001:db8::1 ").into_owned();
    assert_eq!(ip1, ip2, "IPv6 is normalised before hashing");
}

proptest! {
    /// IPv4 pseudonyms hash the address as written: any text the standard parser reads as an
    /// address is already in its canonical form, so normalising it would change nothing.
    #[test]
    fn a_parsed_ipv4_address_is_written_as_it_was_read(
        text in "[0-9]{1,4}(\\.[0-9]{1,4}){3}"
    ) {
        if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
            prop_assert_eq!(ip.to_string(), text);
        }
    }
}

#[test]
fn actions_are_configurable_per_detector_and_per_service() {
    let mut config = RedactionConfig::default();
    config.detectors.insert(
        "email".into(),
        DetectorSettings {
            action: Some(ActionKind::Mask),
            ..Default::default()
        },
    );
    config.detectors.insert(
        "phone".into(),
        DetectorSettings {
            enabled: Some(false),
            ..Default::default()
        },
    );
    let mut payments = ServiceOverride::default();
    payments.detectors.insert(
        "phone".into(),
        DetectorSettings {
            enabled: Some(true),
            action: Some(ActionKind::Partial),
            keep_last: Some(2),
        },
    );
    config.services.insert("payments".into(), payments);
    let r = redactor(&config);
    assert_eq!(r.redact_str("shop", "a@b.io"), "[REDACTED:EMAIL]");
    assert_eq!(
        r.redact_str("shop", "call 415-555-0123"),
        "call 415-555-0123"
    );
    assert_eq!(
        r.redact_str("payments", "call 415-555-0123"),
        "call [REDACTED:PHONE:****23]"
    );
    assert_eq!(
        r.redact_str("payments", "a@b.io"),
        "[REDACTED:EMAIL]",
        "global settings still apply"
    );
}

#[test]
fn custom_detectors_run_with_validators() {
    let config = RedactionConfig {
        custom: vec![CustomDetector {
            name: "employee_card".into(),
            pattern: r"\bEMP-(?P<value>[0-9]{16})\b".into(),
            validator: Some("luhn".into()),
            action: ActionKind::Hash,
            keep_last: None,
            category: Category::Pii,
        }],
        ..RedactionConfig::default()
    };
    let r = redactor(&config);
    let out = r.redact_str("x", "badge EMP-1234567812345670 seen");
    assert!(out.starts_with("badge EMP-employee_card:"), "{out}");
    assert_eq!(
        r.redact_str("x", "badge EMP-1234567812345671 seen"),
        "badge EMP-1234567812345671 seen"
    );
}

#[test]
fn bad_config_reports_every_problem() {
    let config = RedactionConfig {
        custom: vec![
            CustomDetector {
                name: "broken".into(),
                pattern: "(unclosed".into(),
                validator: Some("checksum9000".into()),
                action: ActionKind::Mask,
                keep_last: None,
                category: Category::Pii,
            },
            CustomDetector {
                name: "email".into(),
                pattern: "x*".into(),
                validator: None,
                action: ActionKind::Mask,
                keep_last: None,
                category: Category::Pii,
            },
        ],
        detectors: BTreeMap::from([("emial".to_owned(), DetectorSettings::default())]),
        ..RedactionConfig::default()
    };
    let err = Redactor::check(&config).unwrap_err().to_string();
    for needle in [
        "\"broken\": bad pattern",
        "unknown validator \"checksum9000\"",
        "\"email\": a detector with this name already exists",
        "can match an empty string",
        "no detector named \"emial\"",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
}

#[test]
fn json_bodies_are_walked_and_stay_valid_json() {
    let body = r#"{"user":{"email":"bob@example.com","Password":"hunter2","age":41},"card":4111111111111111,"note":"ok"}"#;
    let out = redact(body);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["user"]["email"].as_str().unwrap().starts_with("email:"));
    assert_eq!(v["user"]["Password"], "[REDACTED:SENSITIVE_KEY]");
    assert_eq!(v["user"]["age"], 41);
    assert_eq!(v["card"], "[REDACTED:SENSITIVE_KEY]");
    assert_eq!(v["note"], "ok");
    assert!(
        out.starts_with(r#"{"user":{"email":"email:"#),
        "key order is kept: {out}"
    );
    assert!(
        out.ends_with(r#","note":"ok"}"#),
        "key order is kept: {out}"
    );
}

#[test]
fn json_escapes_do_not_hide_values() {
    let out = redact(r#"{"contact":"alice\u0040example.com"}"#);
    assert!(out.starts_with(r#"{"contact":"email:"#), "{out}");
}

fn kv(key: &str, value: &str) -> KeyValue {
    crate::decode::test_support::kv(key, Value::StringValue(value.into()))
}

fn logs_request(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service), kv("host.ip", "10.1.2.3")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app".into(),
                    attributes: vec![kv("owner", "ops@example.com")],
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn batches_are_redacted_everywhere_and_findings_are_counted() {
    let records = vec![
        LogRecord {
            time_unix_nano: 1,
            body: Some(AnyValue {
                value: Some(Value::StringValue(
                    "login alice@example.com from 203.0.113.9".into(),
                )),
            }),
            attributes: vec![
                kv("http.request.header.authorization", "Bearer whatever"),
                kv("user.phone", "+14155550123"),
                kv("http.method", "GET"),
            ],
            ..Default::default()
        },
        LogRecord {
            time_unix_nano: 2,
            body: Some(AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("card_number", "4111111111111111"),
                        kv("msg", "AKIAIOSFODNN7EXAMPLE"),
                    ],
                })),
            }),
            ..Default::default()
        },
        LogRecord {
            time_unix_nano: 3,
            body: Some(AnyValue {
                value: Some(Value::StringValue("nothing to see".into())),
            }),
            ..Default::default()
        },
    ];
    let batch = decode_logs(&logs_request("checkout", records), 0)
        .unwrap()
        .batch;
    let redacted = default_redactor().apply(batch).unwrap();
    let rb = redacted.records();
    let body = rb.column_by_name("body").unwrap().as_string::<i32>();
    assert!(
        body.value(0).starts_with("login email:"),
        "{}",
        body.value(0)
    );
    assert!(body.value(0).contains(" from ipv4:"), "{}", body.value(0));
    let structured: serde_json::Value = serde_json::from_str(body.value(1)).unwrap();
    assert_eq!(structured["card_number"], "[REDACTED:SENSITIVE_KEY]");
    assert_eq!(structured["msg"], "[REDACTED:AWS_ACCESS_KEY_ID]");
    assert_eq!(body.value(2), "nothing to see");

    let attributes = rb.column_by_name("attributes").unwrap().as_map();
    let first = map_entries(attributes, 0);
    assert_eq!(first[0].1.as_deref(), Some("[REDACTED:SENSITIVE_KEY]"));
    assert_eq!(first[1].1.as_deref(), Some("[REDACTED:PHONE]"));
    assert_eq!(first[2].1.as_deref(), Some("GET"));
    let resource = rb.column_by_name("resource").unwrap().as_map();
    assert!(
        map_entries(resource, 0)[1]
            .1
            .as_deref()
            .unwrap()
            .starts_with("ipv4:")
    );
    let scope = rb.column_by_name("scope_attributes").unwrap().as_map();
    assert!(
        map_entries(scope, 2)[0]
            .1
            .as_deref()
            .unwrap()
            .starts_with("email:")
    );

    let findings = redacted.findings();
    assert!(findings.iter().all(|f| f.service == "checkout"));
    assert_eq!(
        findings.count("email"),
        4,
        "body + scope attribute on 3 rows"
    );
    assert_eq!(findings.count("ipv4"), 4, "body + resource on 3 rows");
    assert_eq!(findings.count("sensitive_key"), 2);
    assert_eq!(findings.count("aws_access_key_id"), 1);
    let aws = findings
        .iter()
        .find(|f| &*f.entity == "aws_access_key_id")
        .unwrap();
    assert_eq!(
        (aws.category, aws.field.as_str(), aws.first_row),
        (Category::Secret, "body", 1)
    );
}

#[test]
fn spans_names_status_events_and_links_are_redacted() {
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "GET /users/bob@example.com".into(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        status: Some(Status {
            message: "db auth failed for postgres://svc:pa55word@db:5432".into(),
            code: 2,
        }),
        events: vec![Event {
            time_unix_nano: 1,
            name: "exception".into(),
            attributes: vec![
                kv("exception.message", "card 5555555555554444 declined"),
                kv("api_key", "x"),
            ],
            dropped_attributes_count: 0,
        }],
        links: vec![Link {
            trace_id: vec![3; 16],
            span_id: vec![4; 8],
            attributes: vec![kv("peer.ip", "198.51.100.4")],
            ..Default::default()
        }],
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "api")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let batch = decode_traces(&req, 0).unwrap().batch;
    let rb = default_redactor().apply(batch).unwrap().into_records();
    let col = |name: &str| {
        rb.column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_owned()
    };
    assert!(col("name").starts_with("GET /users/email:"));
    assert!(col("status_message").contains("svc:[REDACTED:URL_CREDENTIALS]@db"));
    let events: serde_json::Value = serde_json::from_str(&col("events")).unwrap();
    assert_eq!(
        events[0]["attributes"]["exception.message"],
        "card [REDACTED:CREDIT_CARD:****4444] declined"
    );
    assert_eq!(
        events[0]["attributes"]["api_key"],
        "[REDACTED:SENSITIVE_KEY]"
    );
    let links: serde_json::Value = serde_json::from_str(&col("links")).unwrap();
    assert!(
        links[0]["attributes"]["peer.ip"]
            .as_str()
            .unwrap()
            .starts_with("ipv4:")
    );
    assert_eq!(links[0]["trace_id"], "03030303030303030303030303030303");
}

#[test]
fn allow_list_and_drop_remove_attributes() {
    let config = RedactionConfig {
        keys: KeysConfig {
            allow: vec!["http.method".into(), "user.phone".into()],
            ..KeysConfig::default()
        },
        detectors: BTreeMap::from([(
            "phone".to_owned(),
            DetectorSettings {
                action: Some(ActionKind::Drop),
                ..Default::default()
            },
        )]),
        ..RedactionConfig::default()
    };
    let records = vec![LogRecord {
        time_unix_nano: 1,
        attributes: vec![
            kv("user.phone", "+14155550123"),
            kv("http.method", "GET"),
            kv("user.id", "42"),
        ],
        ..Default::default()
    }];
    let batch = decode_logs(&logs_request("checkout", records), 0)
        .unwrap()
        .batch;
    let redacted = redactor(&config).apply(batch).unwrap();
    let attributes = redacted
        .records()
        .column_by_name("attributes")
        .unwrap()
        .as_map();
    assert_eq!(
        map_entries(attributes, 0),
        [("http.method".to_owned(), Some("GET".to_owned()))]
    );
    let resource = redacted
        .records()
        .column_by_name("resource")
        .unwrap()
        .as_map();
    let kept: Vec<String> = map_entries(resource, 0)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        kept,
        ["service.name"],
        "service.name survives the allow-list"
    );
    assert_eq!(redacted.findings().count("not_allowed"), 3);
    assert_eq!(redacted.findings().count("phone"), 1);
}

#[test]
fn untouched_columns_are_not_copied() {
    let records = vec![LogRecord {
        time_unix_nano: 1,
        body: Some(AnyValue {
            value: Some(Value::StringValue("plain".into())),
        }),
        ..Default::default()
    }];
    let mut req = logs_request("svc", records);
    if let Some(r) = req.resource_logs.first_mut() {
        r.resource = None;
        if let Some(s) = r.scope_logs.first_mut() {
            s.scope = None;
        }
    }
    let batch = decode_logs(&req, 0).unwrap().batch;
    let before = batch.records().column_by_name("body").unwrap().to_data();
    let redacted = default_redactor().apply(batch).unwrap();
    let after = redacted.records().column_by_name("body").unwrap().to_data();
    assert!(before.ptr_eq(&after));
    assert!(redacted.findings().is_empty());
}

#[test]
fn disabled_redactor_passes_through() {
    let r = Redactor::disabled();
    assert!(!r.is_enabled());
    assert_eq!(r.redact_str("x", "alice@example.com"), "alice@example.com");
}

/// Recall per entity over the seeded corpus (every planted value in a realistic log line, and
/// credited to the right entity) and precision over look-alikes and clean log lines. The table
/// is printed for the record (`cargo test -p vigil-core corpus_recall -- --nocapture`).
#[test]
fn corpus_recall_and_precision() {
    let r = default_redactor();
    let mut table = String::from("entity                  found  credited  total  recall\n");
    for (i, entity) in corpus::ENTITIES.iter().enumerate() {
        let planted: Vec<corpus::Planted> = corpus::pii_values(7 + i as u64, 200)
            .into_iter()
            .filter(|p| p.entity == *entity)
            .collect();
        assert!(!planted.is_empty(), "{entity}");
        let (mut found, mut credited) = (0, 0);
        for (n, p) in planted.iter().enumerate() {
            let line = corpus::log_line(n as u64, p);
            let (out, findings) = r.redact_str_findings("svc", &line);
            if !out.contains(&p.value) {
                found += 1;
            }
            if findings.count(entity) > 0 {
                credited += 1;
            }
        }
        let recall = found as f64 / planted.len() as f64;
        table += &format!(
            "{entity:<22} {found:>6} {credited:>9} {:>6}  {recall:.4}\n",
            planted.len()
        );
        assert!(recall >= 0.99, "recall of {entity} is {recall}\n{table}");
        assert!(
            credited as f64 / planted.len() as f64 >= 0.99,
            "{entity} credited elsewhere\n{table}"
        );
    }
    let near = corpus::near_misses(11, 4000);
    let clean = corpus::clean_log_lines(13, 2000);
    let kept = near
        .iter()
        .chain(&clean)
        .filter(|t| r.redact_str("svc", t) == t.as_str())
        .count();
    let precision = kept as f64 / (near.len() + clean.len()) as f64;
    table += &format!(
        "look-alikes and clean lines kept: {kept}/{}  ({precision:.4})\n",
        near.len() + clean.len()
    );
    println!("{table}");
    for t in near.iter().chain(&clean) {
        let out = r.redact_str("svc", t);
        if out != t.as_str() {
            println!("changed: {t:?} -> {out:?}");
        }
    }
    assert!(precision >= 0.99, "{table}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn redaction_is_idempotent_bounded_and_total(text in "\\PC{0,200}") {
        let r = default_redactor();
        let once = r.redact_str("svc", &text).into_owned();
        let twice = r.redact_str("svc", &once).into_owned();
        prop_assert_eq!(&twice, &once);
        prop_assert!(once.len() <= text.len() * 8 + 64, "{} -> {}", text.len(), once.len());
    }

    #[test]
    fn pii_shaped_text_is_idempotent(
        parts in prop::collection::vec(prop_oneof![
            Just("alice@example.com".to_owned()),
            Just("4111 1111 1111 1111".to_owned()),
            Just("10.0.0.1".to_owned()),
            Just("fe80::1".to_owned()),
            Just("password=".to_owned()),
            Just("token: ".to_owned()),
            Just("Bearer ".to_owned()),
            Just("?api_key=".to_owned()),
            Just("https://u:".to_owned()),
            Just("@".to_owned()),
            Just(":".to_owned()),
            "[a-zA-Z0-9]{1,24}",
            "[ .:=/@\"'{}\\[\\],-]{1,3}",
        ], 0..12)
    ) {
        let text: String = parts.concat();
        let r = default_redactor();
        let once = r.redact_str("svc", &text).into_owned();
        let twice = r.redact_str("svc", &once).into_owned();
        prop_assert_eq!(twice, once);
    }
}

/// Regression: sudo's `PWD=/home/x` was masked as a password (and then raised a credential
/// exposure alert), and Chrome's reduced user agent `Chrome/120.0.0.0` was hashed as an IPv4
/// address.
#[test]
fn working_directories_and_browser_versions_are_not_secrets() {
    for line in [
        "sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id",
        "OLDPWD=~/src PWD=/srv/app ./start.sh",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    ] {
        assert_eq!(redact(line), line);
    }
    assert_redacted(
        "login with PWD=hunter2x",
        "hunter2x",
        "[REDACTED:PASSWORD_ASSIGNMENT]",
    );
    assert_redacted(
        "db password=/weird/but/real",
        "/weird/but/real",
        "[REDACTED:PASSWORD_ASSIGNMENT]",
    );
    assert!(redact("upstream http://10.0.0.0/health").contains("ipv4:"));
}

/// Regression: a card number followed by a space and more digits ("... 1111 10.0.0.1") was
/// one greedy 18-digit candidate that failed Luhn, and the card was stored in clear.
#[test]
fn a_card_followed_by_more_digits_is_still_found() {
    for (line, rest) in [
        ("4111 1111 1111 1111 10.0.0.1", " ipv4:"),
        ("paid 4111 1111 1111 1111 42 EUR", " 42 EUR"),
        ("card 5500 0000 0000 0004 7 items", " 7 items"),
    ] {
        let out = redact(line);
        assert!(
            !out.contains("1111 1111") && !out.contains("1111-1111") && !out.contains("0000 0000"),
            "{line} -> {out}"
        );
        assert!(out.contains("[REDACTED:CREDIT_CARD:"), "{line} -> {out}");
        assert!(
            out.contains(rest),
            "what follows the card is kept: {line} -> {out}"
        );
    }
    // A Luhn-failing number followed by digits stays as it is.
    assert_eq!(
        redact("order 4111 1111 1111 1112 3"),
        "order 4111 1111 1111 1112 3"
    );
}

/// A redactor for `config` whose gate is built from `entries` (given the detectors' patterns in
/// scan order) instead of derived from the detectors.
fn with_gate(
    config: &RedactionConfig,
    entries: impl FnOnce(&[&str]) -> Vec<gate::Entry>,
) -> Redactor {
    let mut engine = Engine::new(config, key()).unwrap();
    let patterns: Vec<&str> = engine.scanner.patterns().collect();
    let entries = entries(&patterns);
    let keys = std::iter::once(&engine.default_policy.keys)
        .chain(engine.services.values().map(|p| &p.keys));
    let hint = json_key_hint(keys);
    engine.scanner.gate = gate::Gate::new(&entries, hint.as_deref()).unwrap();
    Redactor {
        engine: Some(Arc::new(engine)),
    }
}

/// The reference: a gate made of every detector's whole pattern passes exactly the strings the
/// full automaton has a candidate in, as if there were no gate.
fn ungated(config: &RedactionConfig) -> Redactor {
    with_gate(config, |patterns| {
        patterns
            .iter()
            .map(|p| gate::Entry::Pattern((*p).to_owned()))
            .collect()
    })
}

/// Every input `a` and `b` redact differently (output or findings), described.
fn differences(a: &Redactor, b: &Redactor, inputs: &[String]) -> Vec<String> {
    inputs
        .iter()
        .filter_map(|text| {
            let left = a.redact_str_findings("svc", text);
            let right = b.redact_str_findings("svc", text);
            (left != right).then(|| format!("{text:?}: {left:?} vs {right:?}"))
        })
        .collect()
}

/// Log lines with planted values (each also alone and inside a JSON body), values of the
/// detectors the corpus has no generator for, look-alikes and clean lines.
fn gate_corpus() -> Vec<String> {
    let mut inputs = Vec::new();
    for (n, p) in corpus::pii_values(21, 40).iter().enumerate() {
        inputs.push(corpus::log_line(n as u64, p));
        inputs.push(p.text.clone());
        inputs.push(serde_json::json!({ "msg": p.text, "n": n }).to_string());
    }
    let storage_key = format!(
        "AccountKey={}==",
        "Zm9vYmFyYmF6cXV4".repeat(6).get(..86).unwrap()
    );
    for value in [
        "refreshed ya29.a0AfH6SMBx3kQ9vLmN0pQrStUvWxYz12345 for the job".to_owned(),
        format!("conn {storage_key};EndpointSuffix=core.windows.net"),
        "app client abc8Q~Zx9.yW_v-u7T6s5R4q3P2o1N0m~LkJiH set".to_owned(),
    ] {
        inputs.push(serde_json::json!({ "msg": value }).to_string());
        inputs.push(value);
    }
    inputs.extend(corpus::near_misses(22, 1000));
    inputs.extend(corpus::clean_log_lines(23, 1000));
    inputs
}

/// The gate only skips work: over the corpus, gated and ungated redaction agree byte for byte
/// (and on what they found), for the default detectors and with an operator detector whose
/// pattern has a literal and one whose pattern has none.
#[test]
fn the_gate_changes_no_output() {
    let custom = |name: &str, pattern: &str| CustomDetector {
        name: name.into(),
        pattern: pattern.into(),
        validator: None,
        action: ActionKind::Mask,
        keep_last: None,
        category: Category::Pii,
    };
    let with_custom = RedactionConfig {
        custom: vec![
            custom("employee_id", r"\bEMP-[0-9]{6}\b"),
            custom("ticket", r"\b[A-Z]{3}[0-9]{5}\b"),
        ],
        ..RedactionConfig::default()
    };
    let mut inputs = gate_corpus();
    inputs.extend(["by EMP-123456 on", "ticket ABC12345 reopened"].map(String::from));
    for config in [RedactionConfig::default(), with_custom] {
        let diff = differences(&redactor(&config), &ungated(&config), &inputs);
        assert!(
            diff.is_empty(),
            "{} differences:\n{}",
            diff.len(),
            diff.join("\n")
        );
    }
}

/// A column is gated many values at a time; it must come out as if each value had been
/// redacted alone: the same output row by row, and the same findings per entity. Each record
/// carries its text as the body and, unless it looks like JSON (which a body walks and an
/// attribute does not), as an attribute value too, next to a denied key and a value that
/// repeats on every row.
#[test]
fn a_column_is_redacted_like_each_of_its_values() {
    let mut inputs = gate_corpus();
    inputs.extend(
        [
            r#"{"contact":"alice\u0040example.com"}"#,
            r#"  [{"password": "hunter2"}, 1]"#,
            "{ not json but alice@example.com",
            "",
        ]
        .map(String::from),
    );
    let is_json = |t: &str| t.trim_start().starts_with(['{', '[']);
    let records = inputs
        .iter()
        .map(|text| LogRecord {
            time_unix_nano: 1,
            body: Some(AnyValue {
                value: Some(Value::StringValue(text.clone())),
            }),
            attributes: if is_json(text) {
                vec![]
            } else {
                vec![
                    kv("note", text),
                    kv("password", "x"),
                    kv("peer", "10.9.8.7"),
                ]
            },
            ..Default::default()
        })
        .collect();
    // Nothing to find outside the records: the findings compared are theirs alone.
    let mut request = logs_request("checkout", records);
    for resource in &mut request.resource_logs {
        if let Some(r) = resource.resource.as_mut() {
            r.attributes.retain(|kv| kv.key == "service.name");
        }
        for scope in &mut resource.scope_logs {
            scope.scope = None;
        }
    }
    let batch = decode_logs(&request, 0).unwrap().batch;
    let r = default_redactor();
    let redacted = r.apply(batch).unwrap();
    let rb = redacted.records();
    let body = rb.column_by_name("body").unwrap().as_string::<i32>();
    let attributes = rb.column_by_name("attributes").unwrap().as_map();
    let mut alone = std::collections::BTreeMap::<String, u64>::new();
    let tally = |alone: &mut std::collections::BTreeMap<String, u64>, findings: &Findings| {
        for f in findings.iter() {
            *alone.entry(f.entity.to_string()).or_default() += f.count;
        }
    };
    let (peer, peer_findings) = r.redact_str_findings("checkout", "10.9.8.7");
    for (row, text) in inputs.iter().enumerate() {
        let (out, findings) = r.redact_str_findings("checkout", text);
        assert_eq!(body.value(row), out, "row {row}: {text:?}");
        tally(&mut alone, &findings);
        let entries = map_entries(attributes, row);
        if is_json(text) {
            assert!(entries.is_empty());
            continue;
        }
        assert_eq!(
            entries[0],
            ("note".to_owned(), Some(out.into_owned())),
            "row {row}"
        );
        tally(&mut alone, &findings);
        let masked = Some("[REDACTED:SENSITIVE_KEY]".to_owned());
        assert_eq!(entries[1], ("password".to_owned(), masked));
        *alone.entry("sensitive_key".into()).or_default() += 1;
        assert_eq!(entries[2], ("peer".to_owned(), Some(peer.to_string())));
        tally(&mut alone, &peer_findings);
    }
    let mut together = std::collections::BTreeMap::<String, u64>::new();
    for f in redacted.findings().iter() {
        *together.entry(f.entity.to_string()).or_default() += f.count;
    }
    assert!(alone.len() > 15, "{alone:?}");
    assert_eq!(together, alone);
}

/// Each detector's gate entry on its own passes every corpus string its pattern matches; the
/// corpus has strings for every detector, so an entry that loses matches is caught here even
/// when another detector's entry would have covered for it end to end.
#[test]
fn each_gate_entry_passes_what_its_detector_matches() {
    let inputs = gate_corpus();
    for (name, pattern) in builtin_patterns() {
        let gate = gate::Gate::new(&[gate::Entry::for_pattern(pattern)], None).unwrap();
        let re = regex::Regex::new(pattern).unwrap();
        let matched: Vec<&String> = inputs.iter().filter(|t| re.is_match(t)).collect();
        assert!(!matched.is_empty(), "the corpus has nothing for {name}");
        for t in matched {
            assert!(gate.passes(t), "{name}: the gate turned away {t:?}");
        }
    }
}

/// The end-to-end check can fail: a gate that forgets a detector is caught by the corpus,
/// except where another detector's literals cover the same strings (`aws_secret_access_key`
/// and `url_secret_param` values come with a `secret` or `token` keyword).
#[test]
fn a_gate_missing_a_detector_is_caught() {
    let config = RedactionConfig::default();
    let reference = ungated(&config);
    let inputs = gate_corpus();
    let unnoticed: Vec<&str> = builtin_names()
        .enumerate()
        .filter(|&(skip, _)| {
            let broken = with_gate(&config, |patterns| {
                patterns
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != skip)
                    .map(|(_, p)| gate::Entry::for_pattern(p))
                    .collect()
            });
            differences(&broken, &reference, &inputs).is_empty()
        })
        .map(|(_, name)| name)
        .collect();
    assert_eq!(unnoticed, ["aws_secret_access_key", "url_secret_param"]);
}

/// The gate turns away most clean log lines (or it would not be worth having).
#[test]
fn the_gate_turns_away_clean_lines() {
    let r = default_redactor();
    let Some(engine) = &r.engine else {
        unreachable!("the default redactor is enabled")
    };
    let clean = corpus::clean_log_lines(24, 1000);
    let passed = clean
        .iter()
        .filter(|l| engine.scanner.is_candidate(l))
        .count();
    assert!(passed < 200, "{passed} of 1000 clean lines passed the gate");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn the_gate_changes_no_output_on_random_text(
        text in prop_oneof![
            "\\PC{0,200}",
            prop::collection::vec(prop_oneof![
                Just("alice@example.com".to_owned()),
                Just("4111 1111 1111 1111".to_owned()),
                Just("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig".to_owned()),
                Just("AKIA".to_owned()),
                Just("PassWord".to_owned()),
                Just("sk_live_".to_owned()),
                Just("Bearer ".to_owned()),
                Just("&token=".to_owned()),
                Just("::".to_owned()),
                "[a-zA-Z0-9]{1,24}",
                "[ .:=/@\"'{}\\[\\],_-]{1,3}",
            ], 0..12).prop_map(|parts| parts.concat()),
        ]
    ) {
        static UNGATED: std::sync::LazyLock<Redactor> =
            std::sync::LazyLock::new(|| ungated(&RedactionConfig::default()));
        let gated = default_redactor().redact_str_findings("svc", &text);
        prop_assert_eq!(gated, UNGATED.redact_str_findings("svc", &text));
    }
}

/// Attribute entries that look alike in every way a neighbouring row can differ: the same key
/// with another value of the same length (PII or not), another key of the same length with
/// the same value (denied or not), a value missing or empty.
const LOOK_ALIKE_ENTRIES: [(&str, Option<&str>); 11] = [
    ("peer", Some("10.9.8.7")),
    ("peer", Some("10.9.8.8")),
    ("peer", Some("okokokok")),
    ("peer", Some("")),
    ("peer", None),
    ("pear", Some("10.9.8.7")),
    ("password", Some("hunter22")),
    ("username", Some("hunter22")),
    ("note", Some("mail bob@example.com")),
    ("note", Some("mail bob@example.org")),
    ("note", Some("mail bob@exampleXorg")),
];

fn look_alike_records(rows: &[Vec<usize>]) -> Vec<LogRecord> {
    rows.iter()
        .map(|entries| LogRecord {
            time_unix_nano: 1,
            attributes: entries
                .iter()
                .filter_map(|&i| LOOK_ALIKE_ENTRIES.get(i))
                .map(|&(key, value)| KeyValue {
                    key: key.into(),
                    value: value.map(|v| AnyValue {
                        value: Some(Value::StringValue(v.into())),
                    }),
                    key_strindex: 0,
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

/// Two services: `billing` also denies `peer` and masks email, so rows with equal
/// attributes on either side of the service boundary are redacted differently.
fn two_service_redactor() -> Redactor {
    static TWO: std::sync::LazyLock<Redactor> = std::sync::LazyLock::new(|| {
        let mut config = RedactionConfig::default();
        let mut billing = ServiceOverride {
            deny_keys: vec!["peer".into()],
            ..Default::default()
        };
        billing.detectors.insert(
            "email".into(),
            DetectorSettings {
                action: Some(ActionKind::Mask),
                ..Default::default()
            },
        );
        config.services.insert("billing".into(), billing);
        redactor(&config)
    });
    TWO.clone()
}

fn entity_counts(findings: &Findings) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for f in findings.iter() {
        *counts
            .entry((f.service.clone(), f.entity.to_string()))
            .or_default() += f.count;
    }
    counts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// A map column is redacted row by row exactly as each row alone would be, whatever
    /// repeats between neighbouring rows (all rows of one resource share their entries) and
    /// across a change of service.
    #[test]
    fn map_rows_are_redacted_as_each_row_alone(
        templates in proptest::collection::vec(
            proptest::collection::vec(0..LOOK_ALIKE_ENTRIES.len(), 0..4), 1..4),
        picks in proptest::collection::vec((0usize..3, any::<bool>()), 1..16),
    ) {
        let rows: Vec<(Vec<usize>, bool)> = picks
            .iter()
            .map(|&(t, billing)| (templates[t % templates.len()].clone(), billing))
            .collect();
        // Consecutive rows of one service share a resource, as an export request groups them.
        let mut request = ExportLogsServiceRequest::default();
        for group in rows.chunk_by(|a, b| a.1 == b.1) {
            let service = if group[0].1 { "billing" } else { "shop" };
            let entries: Vec<Vec<usize>> = group.iter().map(|(e, _)| e.clone()).collect();
            request
                .resource_logs
                .extend(logs_request(service, look_alike_records(&entries)).resource_logs);
        }
        let r = two_service_redactor();
        let together = r.apply(decode_logs(&request, 0).unwrap().batch).unwrap();
        let attributes = together.records().column_by_name("attributes").unwrap().as_map();
        let mut alone_findings = BTreeMap::<(String, String), u64>::new();
        for (row, (entries, billing)) in rows.iter().enumerate() {
            let service = if *billing { "billing" } else { "shop" };
            let one = logs_request(service, look_alike_records(std::slice::from_ref(entries)));
            let alone = r.apply(decode_logs(&one, 0).unwrap().batch).unwrap();
            let alone_attributes = alone.records().column_by_name("attributes").unwrap().as_map();
            prop_assert_eq!(
                map_entries(attributes, row),
                map_entries(alone_attributes, 0),
                "row {} of {:?}", row, rows
            );
            for (k, v) in entity_counts(alone.findings()) {
                *alone_findings.entry(k).or_default() += v;
            }
        }
        prop_assert_eq!(entity_counts(together.findings()), alone_findings);
    }
}
