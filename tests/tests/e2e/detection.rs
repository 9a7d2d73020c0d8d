//! The detector end to end: benign traffic from several services and injected attacks, all
//! through the real OpenTelemetry SDK over OTLP; the analyst's view is the `alerts` table.

use std::time::Duration;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{LogExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::harness::{Vigil, eventually};

const SQLI_RULE: &str = "4f7c1d52-8a3e-4c0b-9d6e-1b2a3c4d5e01";
const BRUTE_FORCE_RULE: &str = "7b1e2c3d-4f5a-4b6c-8d9e-0f1a2b3c4d03";
/// A made-up key of the real AWS access key id shape.
pub(crate) const AWS_KEY: &str = "AKIAZ7Q3X5LMN2P4R6T7";

fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .build()
}

fn tracer_provider(vigil: &Vigil, service: &str) -> SdkTracerProvider {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(vigil.grpc_endpoint())
        .build()
        .unwrap();
    SdkTracerProvider::builder()
        .with_resource(resource(service))
        .with_simple_exporter(exporter)
        .build()
}

fn logger_provider(vigil: &Vigil, service: &str) -> SdkLoggerProvider {
    let exporter = LogExporter::builder()
        .with_tonic()
        .with_endpoint(vigil.grpc_endpoint())
        .build()
        .unwrap();
    SdkLoggerProvider::builder()
        .with_resource(resource(service))
        .with_simple_exporter(exporter)
        .build()
}

/// One user request: frontend calls cart (CLIENT → SERVER across services), cart logs it.
#[derive(Clone)]
pub(crate) struct Request {
    pub(crate) path: &'static str,
    pub(crate) query: String,
    pub(crate) status: i64,
    pub(crate) client: String,
    pub(crate) user_agent: &'static str,
    /// The service frontend calls.
    pub(crate) callee: &'static str,
}

impl Request {
    pub(crate) fn benign(i: usize) -> Self {
        Request {
            path: ["/cart", "/cart/items", "/checkout"][i % 3],
            query: format!("page={}&sort=price", i % 5),
            status: if i.is_multiple_of(17) { 404 } else { 200 },
            client: format!("10.0.0.{}", 10 + i % 4),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            callee: "cart",
        }
    }
}

/// Sends `requests` as traces: a frontend CLIENT span and the callee's SERVER span as its
/// child, exported by two SDK providers as two services would.
pub(crate) async fn send_requests(vigil: &Vigil, requests: Vec<Request>) {
    let frontend = tracer_provider(vigil, "frontend");
    let callees: Vec<(&'static str, SdkTracerProvider)> = ["cart", "payments-admin", "ledger"]
        .into_iter()
        .map(|s| (s, tracer_provider(vigil, s)))
        .collect();
    tokio::task::spawn_blocking(move || {
        let tracer = frontend.tracer("shop");
        for r in requests {
            let mut client = tracer
                .span_builder(format!("GET {}", r.path))
                .with_kind(SpanKind::Client)
                .with_attributes([KeyValue::new("peer.service", r.callee)])
                .start(&tracer);
            client.set_attribute(KeyValue::new("url.path", r.path));
            let cx = Context::current_with_span(client);
            let (_, provider) = callees.iter().find(|(s, _)| *s == r.callee).unwrap();
            let callee = provider.tracer("shop");
            let mut server = callee
                .span_builder(format!("GET {}", r.path))
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("url.path", r.path),
                    KeyValue::new("url.query", r.query.clone()),
                    KeyValue::new("http.request.method", "GET"),
                    KeyValue::new("http.response.status_code", r.status),
                    KeyValue::new("client.address", r.client.clone()),
                    KeyValue::new("user_agent.original", r.user_agent),
                ])
                .start_with_context(&callee, &cx);
            server.end();
            cx.span().end();
        }
        frontend.shutdown().unwrap();
        for (_, p) in callees {
            p.shutdown().unwrap();
        }
    })
    .await
    .unwrap();
}

/// Sends log lines of `service`, each with a client address.
pub(crate) async fn send_logs(
    vigil: &Vigil,
    service: &str,
    lines: Vec<(String, String, Severity)>,
) {
    let provider = logger_provider(vigil, service);
    tokio::task::spawn_blocking(move || {
        let logger = provider.logger("app");
        for (body, client, severity) in lines {
            let mut rec = logger.create_log_record();
            rec.set_severity_number(severity);
            rec.set_body(AnyValue::from(body));
            rec.add_attribute("client.address", client);
            logger.emit(rec);
        }
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();
}

/// Leaks a cloud key in `service`'s logs: the exposure alert fires for that service.
pub(crate) async fn leak_key(vigil: &Vigil, service: &str) {
    send_logs(
        vigil,
        service,
        vec![(
            format!("starting export with AWS_ACCESS_KEY_ID={AWS_KEY}"),
            "10.0.9.1".into(),
            Severity::Info,
        )],
    )
    .await;
}

async fn benign_traffic(vigil: &Vigil, from: usize, n: usize) {
    send_requests(vigil, (from..from + n).map(Request::benign).collect()).await;
    let lines = (from..from + n)
        .map(|i| {
            let body = match i % 4 {
                0 => format!("order {i} placed"),
                1 => "cache refreshed".to_string(),
                // Occasional failed logins, spread over users and addresses: normal life.
                2 if i % 8 == 2 => format!("login failed for user u{i}"),
                _ => format!("user u{} logged in", i % 9),
            };
            (body, format!("10.0.1.{}", i % 50), Severity::Info)
        })
        .collect();
    send_logs(vigil, "auth", lines).await;
}

/// Waits until the detector has looked at every stored batch.
async fn detector_caught_up(vigil: &Vigil) {
    eventually(
        Duration::from_secs(30),
        "detector has processed every batch",
        || async {
            let seen = vigil
                .metric("vigil_detector_batch_duration_seconds_count", &[])
                .await;
            let skipped = vigil
                .metric("vigil_detector_skipped_batches_total", &[])
                .await;
            // Every acknowledged export is one stored batch offered to the detector.
            let batches = vigil
                .metric("vigil_ingest_duration_seconds_count", &[])
                .await;
            batches > 0.0 && seen + skipped >= batches
        },
    )
    .await;
}

async fn alerts(vigil: &Vigil) -> Vec<(String, String, String, String)> {
    vigil
        .rows("SELECT rule_id, service, status, details FROM alerts ORDER BY rule_id, service")
        .await
        .into_iter()
        .map(|r| {
            let s = |i: usize| r[i].as_str().unwrap_or_default().to_owned();
            (s(0), s(1), s(2), s(3))
        })
        .collect()
}

/// Waits up to `secs` for an alerts row of `rule` whose service (or, with `Status`, status)
/// is `value`.
async fn until_alert(
    vigil: &Vigil,
    secs: u64,
    what: &str,
    rule: &str,
    field: AlertField,
    value: &str,
) {
    eventually(Duration::from_secs(secs), what, || async {
        alerts(vigil).await.iter().any(|a| {
            a.0 == rule
                && match field {
                    AlertField::Service => a.1 == value,
                    AlertField::Status => a.2 == value,
                }
        })
    })
    .await;
}

#[derive(Clone, Copy)]
enum AlertField {
    Service,
    Status,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_raise_alerts_and_benign_traffic_raises_none() {
    let vigil = Vigil::start(
        r#"
        [detector.graph]
        learning = "4s"
        "#,
    );

    // Learning: the normal shape of the system.
    benign_traffic(&vigil, 0, 60).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // After learning, more of the same traffic raises nothing.
    benign_traffic(&vigil, 60, 120).await;
    detector_caught_up(&vigil).await;
    let after_benign = alerts(&vigil).await;
    assert!(
        after_benign.is_empty(),
        "benign traffic raised alerts: {after_benign:#?}"
    );
    assert_eq!(vigil.metric("vigil_alerts_firing", &[]).await, 0.0);

    // Attacks.
    let mut attacks = vec![Request {
        query: "id=1' OR 1=1 --".into(),
        ..Request::benign(1)
    }];
    // The frontend calls a service it never called while learning.
    attacks.push(Request {
        path: "/admin/refunds",
        callee: "payments-admin",
        ..Request::benign(2)
    });
    // A caller cart has never seen.
    attacks.push(Request {
        client: "203.0.113.50".into(),
        ..Request::benign(3)
    });
    send_requests(&vigil, attacks).await;
    let brute_force: Vec<_> = (0..12)
        .map(|i| {
            (
                format!("login failed for user admin (attempt {i})"),
                "198.51.100.23".to_string(),
                Severity::Warn,
            )
        })
        .collect();
    send_logs(&vigil, "auth", brute_force).await;
    send_logs(
        &vigil,
        "billing",
        vec![(
            format!("starting export with AWS_ACCESS_KEY_ID={AWS_KEY}"),
            "10.0.2.1".into(),
            Severity::Info,
        )],
    )
    .await;
    detector_caught_up(&vigil).await;

    let expected = [
        (SQLI_RULE, "cart"),
        (BRUTE_FORCE_RULE, "auth"),
        ("exposure.secret_in_telemetry", "billing"),
        ("graph.new_edge", "payments-admin"),
        ("graph.new_source", "cart"),
    ];
    eventually(
        Duration::from_secs(20),
        "every attack has an alert",
        || async {
            let got = alerts(&vigil).await;
            expected
                .iter()
                .all(|(rule, service)| got.iter().any(|a| a.0 == *rule && a.1 == *service))
        },
    )
    .await;
    let got = alerts(&vigil).await;
    for a in &got {
        assert!(
            expected.contains(&(a.0.as_str(), a.1.as_str())),
            "unexpected alert (a false positive on benign traffic?): {a:?}\nall: {got:#?}"
        );
        assert_eq!(a.2, "firing", "{a:?}");
    }
    assert_eq!(got.len(), expected.len(), "one alert per attack: {got:#?}");

    // Evidence an analyst can act on, without the secret itself.
    let brute = got.iter().find(|a| a.0 == BRUTE_FORCE_RULE).unwrap();
    let details: serde_json::Value = serde_json::from_str(&brute.3).unwrap();
    // Addresses are pseudonymised by the default redaction: the group is stable per
    // address without storing it.
    let address = details["group"]["client.address"]
        .as_str()
        .unwrap_or_default();
    assert!(address.starts_with("ipv4:"), "{details}");
    let exposure = got
        .iter()
        .find(|a| a.0 == "exposure.secret_in_telemetry")
        .unwrap();
    assert!(exposure.3.contains("aws_access_key_id"), "{}", exposure.3);
    let everything = vigil.query("SELECT * FROM alerts").await.to_string();
    assert!(
        !everything.contains(AWS_KEY),
        "the key leaked into the alerts table"
    );
    assert!(
        !everything.contains("198.51.100.23"),
        "a raw address is in the alerts table"
    );
    let edge = got.iter().find(|a| a.0 == "graph.new_edge").unwrap();
    let details: serde_json::Value = serde_json::from_str(&edge.3).unwrap();
    assert_eq!(details["group"]["caller"], "frontend");
    assert_eq!(details["group"]["callee"], "payments-admin");

    assert_eq!(
        vigil.metric("vigil_alerts_firing", &[]).await,
        expected.len() as f64
    );
    assert_eq!(
        vigil
            .metric(
                "vigil_alerts_total",
                &[("rule_id", SQLI_RULE), ("severity", "high")]
            )
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_sql_rule_turns_rows_into_alerts_and_resolves_when_they_stop() {
    let vigil = Vigil::start(
        r#"
        [[detector.sql]]
        id = "sql.error_logs"
        title = "Error logs in the last 5 seconds"
        severity = "high"
        every = "1s"
        query = "SELECT service, count(*) AS errors FROM logs WHERE severity_number >= 17 AND time > now() - INTERVAL '5 seconds' GROUP BY service HAVING count(*) >= 3"
        "#,
    );
    let errors = |n: usize| {
        (0..n)
            .map(|i| {
                (
                    format!("payment failed {i}"),
                    "10.0.3.1".to_string(),
                    Severity::Error,
                )
            })
            .collect::<Vec<_>>()
    };
    send_logs(&vigil, "payments", errors(2)).await;
    send_logs(&vigil, "cart", errors(3)).await;
    until_alert(
        &vigil,
        20,
        "the sql rule fires for cart",
        "sql.error_logs",
        AlertField::Service,
        "cart",
    )
    .await;
    let got = alerts(&vigil).await;
    assert!(
        got.iter().all(|a| a.1 == "cart"),
        "payments has only two errors: {got:#?}"
    );
    let details: serde_json::Value = serde_json::from_str(&got[0].3).unwrap();
    assert_eq!(details["row"]["errors"], "3", "{details}");

    // Once the errors are older than the query's window, the group is no longer returned and
    // the alert resolves (a second row, same fingerprint).
    until_alert(
        &vigil,
        30,
        "the sql alert resolves",
        "sql.error_logs",
        AlertField::Status,
        "resolved",
    )
    .await;
    let rows = vigil
        .rows("SELECT count(DISTINCT fingerprint), count(*) FROM alerts WHERE rule_id = 'sql.error_logs'")
        .await;
    assert_eq!(rows[0][0].as_i64(), Some(1), "{rows:?}");
    assert_eq!(rows[0][1].as_i64(), Some(2), "fired and resolved: {rows:?}");
}

/// Steady traffic for `services` every 250 ms until `stop`, with `errors` of the first
/// service's records at ERROR severity while `burst` is set.
async fn steady_logs(
    vigil: &Vigil,
    services: [&'static str; 2],
    burst: &std::sync::atomic::AtomicBool,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut i = 0usize;
    while !stop.load(Relaxed) {
        tick.tick().await;
        for (s, service) in services.iter().enumerate() {
            let mut lines: Vec<_> = (0..3)
                .map(|k| {
                    (
                        format!("order {} shipped", i * 3 + k),
                        format!("10.0.4.{}", 10 + k),
                        Severity::Info,
                    )
                })
                .collect();
            if s == 0 && burst.load(Relaxed) {
                lines.extend((0..15).map(|k| {
                    (
                        format!("payment provider timed out for order {}", i * 15 + k),
                        "10.0.4.10".to_string(),
                        Severity::Error,
                    )
                }));
            }
            send_logs(vigil, service, lines).await;
        }
        i += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_burst_fires_the_services_baseline_and_resolves_after_it() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    // Buckets of one second so the test runs in seconds; the mechanics are the defaults'.
    // `min_delta` above the steady rate keeps a stalled sender (on a loaded machine) from
    // reading as a rate drop or spike.
    let vigil = Vigil::start(
        r#"
        [detector.baselines]
        bucket = "1s"
        warmup_buckets = 4
        min_delta = 15
        sustain_k = 2
        sustain_n = 3
        recover_buckets = 2
        "#,
    );
    let burst = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let traffic = steady_logs(&vigil, ["orders", "search"], &burst, &stop);
    let script = async {
        // Warm-up and then some: the steady level is learned and raises nothing.
        tokio::time::sleep(Duration::from_secs(8)).await;
        detector_caught_up(&vigil).await;
        let quiet = alerts(&vigil).await;
        assert!(quiet.is_empty(), "steady traffic raised alerts: {quiet:#?}");

        burst.store(true, Relaxed);
        until_alert(
            &vigil,
            20,
            "the error burst fires orders' error-rate baseline",
            "baseline.error_rate",
            AlertField::Service,
            "orders",
        )
        .await;
        burst.store(false, Relaxed);
        until_alert(
            &vigil,
            30,
            "the error-rate alert resolves once errors are back to normal",
            "baseline.error_rate",
            AlertField::Status,
            "resolved",
        )
        .await;
        stop.store(true, Relaxed);
    };
    tokio::join!(traffic, script);

    let got = alerts(&vigil).await;
    for a in &got {
        // The burst also raises orders' record rate; nothing else may fire, and search,
        // steady throughout, must stay silent.
        assert_eq!(
            a.1, "orders",
            "a baseline fired for steady traffic: {got:#?}"
        );
        assert!(
            ["baseline.error_rate", "baseline.request_rate"].contains(&a.0.as_str()),
            "unexpected alert: {a:?}\nall: {got:#?}"
        );
    }
    let fired = got
        .iter()
        .find(|a| a.0 == "baseline.error_rate" && a.2 == "firing")
        .expect("the firing row stays in the table");
    let details: serde_json::Value = serde_json::from_str(&fired.3).unwrap();
    let expected = details["expected"].as_f64().unwrap_or(f64::NAN);
    let observed = details["observed"].as_f64().unwrap_or(f64::NAN);
    assert!(
        expected < 5.0 && observed >= expected + 15.0,
        "scored against the learned level, not the burst: {details}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_alerts_and_the_learned_graph_survive_a_restart() {
    let config = r#"
        [detector.graph]
        learning = "3s"
    "#;
    let mut vigil = Vigil::start(config);
    benign_traffic(&vigil, 0, 30).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let new_edge = |callee: &'static str| Request {
        path: "/admin/refunds",
        callee,
        ..Request::benign(2)
    };
    send_requests(&vigil, vec![new_edge("payments-admin")]).await;
    until_alert(
        &vigil,
        20,
        "the new edge fires",
        "graph.new_edge",
        AlertField::Service,
        "payments-admin",
    )
    .await;

    // A graceful stop saves the state; the next start takes it over.
    vigil.stop_term();
    assert!(vigil.data_dir.join("detector/state").is_file());
    let vigil = vigil.restart(config);
    // The detector thread restores the state as it starts, beside the listeners coming up,
    // and before it takes its first batch.
    eventually(
        Duration::from_secs(10),
        "the detector state restored",
        || async { vigil.log_text().contains("detector state restored") },
    )
    .await;
    // Known traffic and the edge already firing raise nothing new; an edge never seen alerts
    // at once: the restart opened no new learning period.
    benign_traffic(&vigil, 30, 10).await;
    send_requests(&vigil, vec![new_edge("payments-admin"), new_edge("ledger")]).await;
    until_alert(
        &vigil,
        20,
        "an edge first seen after the restart fires",
        "graph.new_edge",
        AlertField::Service,
        "ledger",
    )
    .await;
    detector_caught_up(&vigil).await;
    let got = alerts(&vigil).await;
    let rows: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|a| (a.0.as_str(), a.1.as_str(), a.2.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("graph.new_edge", "ledger", "firing"),
            ("graph.new_edge", "payments-admin", "firing"),
        ],
        "one row per alert, no duplicate after the restart"
    );
    assert_eq!(vigil.metric("vigil_alerts_firing", &[]).await, 2.0);
}
