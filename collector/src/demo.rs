//! `vigil demo`: the pipeline on embedded defaults (tuned to learn in seconds, not hours) plus
//! a traffic generator that exports real OTLP over gRPC to it — a small shop of services with
//! benign traffic, PII in some records, and a scripted attack every few seconds.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::sync::watch;

use crate::config::RawConfig;
use vigil_core::time::now_ns;

/// The demo's config: embedded defaults, with the service graph and baselines learning in
/// seconds so that their alerts show within a minute.
pub fn config() -> RawConfig {
    let mut c = RawConfig::default();
    c.detector.graph.learning = Duration::from_secs(20);
    c.detector.baselines.bucket = Duration::from_secs(5);
    c.detector.baselines.warmup_buckets = 6;
    c
}

/// What happens at each second of a [`CYCLE`]-long loop.
const CYCLE: u64 = 60;

/// An attack the generator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    LeakedKey,
    SqlInjection,
    BruteForce,
    Scan,
    LateralEdge,
    NewSource,
    DosBurst,
}

/// The script: second of the cycle → attack. Graph attacks come after the 20 s learning.
const SCRIPT: [(u64, Attack); 7] = [
    (5, Attack::LeakedKey),
    (10, Attack::SqlInjection),
    (15, Attack::BruteForce),
    (20, Attack::Scan),
    (25, Attack::LateralEdge),
    (30, Attack::NewSource),
    (45, Attack::DosBurst),
];

/// Sends traffic to Vigil's gRPC listener until `stopped` flips.
pub async fn generate(grpc: SocketAddr, mut stopped: watch::Receiver<bool>) -> anyhow::Result<()> {
    let endpoint = format!("http://{grpc}");
    let channel = tonic::transport::Endpoint::from_shared(endpoint)?
        .connect()
        .await
        .context("demo traffic cannot connect to vigil's gRPC listener")?;
    let mut traces = TraceServiceClient::new(channel.clone());
    let mut logs = LogsServiceClient::new(channel);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let started = std::time::Instant::now();
    let mut n: u64 = 0;
    let mut burst_until = 0u64;
    let mut played: Option<(u64, Attack)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => return Ok(()),
        }
        let elapsed = started.elapsed().as_secs();
        let (cycle, second) = (elapsed / CYCLE, elapsed % CYCLE);
        let mut shop = Shop::default();
        let rate = if elapsed < burst_until { 60 } else { 6 };
        for _ in 0..rate {
            n += 1;
            shop.benign(n);
        }
        if let Some(&(_, attack)) = SCRIPT.iter().find(|(at, _)| *at == second)
            && played != Some((cycle, attack))
        {
            played = Some((cycle, attack));
            tracing::info!(attack = ?attack, "demo: playing an attack");
            if attack == Attack::DosBurst {
                burst_until = elapsed + 10;
            }
            shop.attack(attack, cycle);
        }
        // A refused export (Vigil busy) is simply dropped: it is demo traffic.
        if let Err(e) = traces.export(shop.traces()).await {
            tracing::debug!(error = %e, "demo trace export refused");
        }
        if let Err(e) = logs.export(shop.logs()).await {
            tracing::debug!(error = %e, "demo log export refused");
        }
    }
}

fn attribute(key: &str, value: AnyValueKind) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, AnyValueKind::StringValue(value.into()))
}

/// One HTTP request from the frontend to a backend service.
struct Request {
    callee: &'static str,
    path: &'static str,
    query: String,
    method: &'static str,
    status: i64,
    client: String,
    user_agent: &'static str,
}

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

impl Request {
    fn benign(n: u64) -> Self {
        let (callee, path) = match n % 4 {
            0 => ("cart", "/cart"),
            1 => ("cart", "/cart/items"),
            2 => ("checkout", "/checkout"),
            _ => ("catalog", "/products"),
        };
        Request {
            callee,
            path,
            query: format!("page={}&sort=price", n % 5),
            method: "GET",
            status: if n.is_multiple_of(23) { 404 } else { 200 },
            client: format!("10.0.0.{}", 10 + n % 20),
            user_agent: BROWSER,
        }
    }
}

/// The telemetry of one tick, by service.
#[derive(Default)]
struct Shop {
    spans: Vec<(&'static str, Span)>,
    logs: Vec<(&'static str, LogRecord)>,
}

fn id<const N: usize>() -> Vec<u8> {
    let mut b = [0u8; N];
    // Without randomness ids collide; the demo still runs.
    let _ = getrandom::fill(&mut b);
    b.to_vec()
}

impl Shop {
    fn request(&mut self, r: &Request) {
        let now = u64::try_from(now_ns()).unwrap_or_default();
        let trace_id = id::<16>();
        let client_id = id::<8>();
        let name = format!("{} {}", r.method, r.path);
        self.spans.push((
            "frontend",
            Span {
                trace_id: trace_id.clone(),
                span_id: client_id.clone(),
                name: name.clone(),
                kind: SpanKind::Client as i32,
                start_time_unix_nano: now,
                end_time_unix_nano: now + 4_000_000,
                attributes: vec![kv("peer.service", r.callee), kv("url.path", r.path)],
                ..Default::default()
            },
        ));
        self.spans.push((
            r.callee,
            Span {
                trace_id,
                span_id: id::<8>(),
                parent_span_id: client_id,
                name,
                kind: SpanKind::Server as i32,
                start_time_unix_nano: now + 500_000,
                end_time_unix_nano: now + 3_500_000,
                attributes: vec![
                    kv("url.path", r.path),
                    kv("url.query", r.query.clone()),
                    kv("http.request.method", r.method),
                    attribute(
                        "http.response.status_code",
                        AnyValueKind::IntValue(r.status),
                    ),
                    kv("client.address", r.client.clone()),
                    kv("user_agent.original", r.user_agent),
                ],
                ..Default::default()
            },
        ));
    }

    fn log(&mut self, service: &'static str, severity: SeverityNumber, body: String, client: &str) {
        self.logs.push((
            service,
            LogRecord {
                time_unix_nano: u64::try_from(now_ns()).unwrap_or_default(),
                severity_number: severity as i32,
                severity_text: severity
                    .as_str_name()
                    .trim_start_matches("SEVERITY_NUMBER_")
                    .into(),
                body: Some(AnyValue {
                    value: Some(AnyValueKind::StringValue(body)),
                }),
                attributes: vec![kv("client.address", client.to_owned())],
                ..Default::default()
            },
        ));
    }

    fn benign(&mut self, n: u64) {
        let r = Request::benign(n);
        self.request(&r);
        let client = r.client.clone();
        match n % 6 {
            0 => self.log(
                "auth",
                SeverityNumber::Info,
                format!("user u{} logged in", n % 40),
                &client,
            ),
            // PII the redactor removes before storage.
            1 => self.log(
                "checkout",
                SeverityNumber::Info,
                format!(
                    "receipt for order {n} sent to customer{}@example.com",
                    n % 50
                ),
                &client,
            ),
            2 => self.log(
                "payments",
                SeverityNumber::Info,
                "charged card 4111 1111 1111 1111 for order".into(),
                &client,
            ),
            3 if n.is_multiple_of(12) => self.log(
                "auth",
                SeverityNumber::Warn,
                format!("login failed for user u{}", n % 40),
                &client,
            ),
            _ => {}
        }
    }

    fn attack(&mut self, attack: Attack, cycle: u64) {
        match attack {
            Attack::LeakedKey => self.log(
                "billing",
                SeverityNumber::Info,
                // The shape of an AWS access key id; not a real one.
                "starting export with AWS_ACCESS_KEY_ID=AKIAZ7Q3X5LMN2P4R6T7".into(),
                "10.0.2.1",
            ),
            Attack::SqlInjection => self.request(&Request {
                query: "id=1' OR 1=1 --".into(),
                ..Request::benign(1)
            }),
            Attack::BruteForce => {
                for i in 0..15 {
                    self.log(
                        "auth",
                        SeverityNumber::Warn,
                        format!("login failed for user admin (attempt {i})"),
                        "198.51.100.23",
                    );
                }
            }
            Attack::Scan => {
                for path in [
                    "/.env",
                    "/.git/config",
                    "/wp-login.php",
                    "/admin",
                    "/backup.zip",
                ] {
                    self.request(&Request {
                        path,
                        status: 404,
                        client: "192.0.2.66".into(),
                        user_agent: "sqlmap/1.8#stable (https://sqlmap.org)",
                        ..Request::benign(1)
                    });
                }
            }
            Attack::LateralEdge => self.request(&Request {
                callee: "payments-admin",
                path: "/admin/refunds",
                ..Request::benign(2)
            }),
            Attack::NewSource => self.request(&Request {
                client: format!("203.0.113.{}", 10 + cycle % 200),
                ..Request::benign(3)
            }),
            // The burst itself is the raised request rate in `generate`.
            Attack::DosBurst => {}
        }
    }

    fn traces(&mut self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: by_service(self.spans.drain(..))
                .into_iter()
                .map(|(service, spans)| ResourceSpans {
                    resource: Some(resource(service)),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn logs(&mut self) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: by_service(self.logs.drain(..))
                .into_iter()
                .map(|(service, log_records)| ResourceLogs {
                    resource: Some(resource(service)),
                    scope_logs: vec![ScopeLogs {
                        log_records,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }
}

/// Items grouped by service, in order of first appearance (one resource per service).
fn by_service<T>(items: impl Iterator<Item = (&'static str, T)>) -> Vec<(&'static str, Vec<T>)> {
    let mut out: Vec<(&'static str, Vec<T>)> = Vec::new();
    for (service, item) in items {
        match out.iter_mut().find(|(s, _)| *s == service) {
            Some((_, items)) => items.push(item),
            None => out.push((service, vec![item])),
        }
    }
    out
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", service.to_owned()),
            kv("deployment.environment", "demo"),
        ],
        ..Default::default()
    }
}
