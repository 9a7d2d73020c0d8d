//! Deterministic synthetic OTLP corpus: seeded, pre-built log and trace export requests that look
//! like a small microservice shop (access logs, auth events, errors, cross-service traces).
//!
//! The same [`CorpusConfig`] and base time always produce byte-identical requests, so load runs and
//! criterion benches are comparable across commits.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// The first service names; services past these are called `svc-N`.
pub const SERVICE_NAMES: [&str; 8] = [
    "checkout",
    "payments",
    "auth",
    "catalog",
    "cart",
    "shipping",
    "frontend",
    "recommendation",
];

/// How much wall-clock time the whole corpus's timestamps span by default, starting at the base
/// time (see [`CorpusConfig::time_spread_ns`]).
pub const TIME_SPREAD_NS: u64 = 5_000_000_000;

/// Shape of a generated corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusConfig {
    /// Number of distinct services (resources) the records are spread over.
    pub services: usize,
    /// Log records (or spans) in each request.
    pub records_per_request: usize,
    /// Number of distinct requests to build.
    pub requests: usize,
    /// Seed of the generator: equal configs give equal requests.
    pub seed: u64,
    /// Wall-clock time the records' timestamps are spread over, in order: request `n` of `N`
    /// covers the `n`-th `1/N` of it. The default, [`TIME_SPREAD_NS`], keeps a load run's
    /// records near "now"; a longer spread gives a store covering hours or days.
    pub time_spread_ns: u64,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        Self {
            services: 8,
            records_per_request: 512,
            requests: 64,
            seed: 0x5EED_F00D,
            time_spread_ns: TIME_SPREAD_NS,
        }
    }
}

/// The name of service number `index`: the well-known names first, then `svc-N`.
pub fn service_name(index: usize) -> String {
    SERVICE_NAMES
        .get(index)
        .map_or_else(|| format!("svc-{index}"), |name| (*name).to_owned())
}

/// Number of log records in a request.
pub fn count_log_records(request: &ExportLogsServiceRequest) -> usize {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}

/// Number of spans in a request.
pub fn count_spans(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// Builds `config.requests` log export requests of exactly `config.records_per_request` records,
/// timestamped from `base_time_ns` over `config.time_spread_ns`.
pub fn logs_requests(config: &CorpusConfig, base_time_ns: u64) -> Vec<ExportLogsServiceRequest> {
    let mut generator = Generator::new(config, base_time_ns, 0x4C4F_4753);
    (0..config.requests)
        .map(|request| generator.logs_request(request))
        .collect()
}

/// Builds `config.requests` trace export requests of exactly `config.records_per_request` spans,
/// forming small cross-service traces timestamped from `base_time_ns`.
pub fn trace_requests(config: &CorpusConfig, base_time_ns: u64) -> Vec<ExportTraceServiceRequest> {
    let mut generator = Generator::new(config, base_time_ns, 0x5452_4143);
    (0..config.requests)
        .map(|request| generator.trace_request(request))
        .collect()
}

/// SplitMix64: tiny, fast, and good enough for synthetic data; no dependency, stable forever.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    fn below_usize(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap_or(0)
    }

    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low))
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<T: Copy + Default>(&mut self, items: &[T]) -> T {
        items
            .get(self.below_usize(items.len()))
            .copied()
            .unwrap_or_default()
    }

    fn weighted<T: Copy + Default>(&mut self, items: &[(T, u64)]) -> T {
        let total: u64 = items.iter().map(|(_, w)| w).sum();
        let mut roll = self.below(total);
        for (item, weight) in items {
            if roll < *weight {
                return *item;
            }
            roll -= weight;
        }
        T::default()
    }

    fn id<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            for (dst, src) in chunk.iter_mut().zip(bytes) {
                *dst = src;
            }
        }
        if out.iter().all(|b| *b == 0) {
            // All-zero ids are invalid in OTLP.
            if let Some(first) = out.first_mut() {
                *first = 1;
            }
        }
        out
    }

    fn hex(&mut self, len: usize) -> String {
        const DIGITS: &[u8] = b"0123456789abcdef";
        (0..len).map(|_| char::from(self.pick(DIGITS))).collect()
    }

    fn alnum(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..len).map(|_| char::from(self.pick(CHARS))).collect()
    }
}

/// Language flavour of a service: picks instrumentation scope names and stack-trace style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Java,
    Go,
    Python,
    Node,
}

impl Flavor {
    fn of(index: usize) -> Self {
        match index % 4 {
            0 => Self::Go,
            1 => Self::Java,
            2 => Self::Python,
            _ => Self::Node,
        }
    }

    fn sdk_language(self) -> &'static str {
        match self {
            Self::Java => "java",
            Self::Go => "go",
            Self::Python => "python",
            Self::Node => "nodejs",
        }
    }

    fn sdk_version(self) -> &'static str {
        match self {
            Self::Java => "1.44.1",
            Self::Go => "1.33.0",
            Self::Python => "1.28.2",
            Self::Node => "1.29.0",
        }
    }
}

/// Which instrumentation produced a record; one `Scope*` group per kind per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ScopeKind {
    Http,
    Db,
    Auth,
    App,
}

#[derive(Debug, Clone)]
struct Pod {
    pod_name: String,
    host_name: String,
    ip: String,
}

#[derive(Debug, Clone)]
struct Service {
    name: String,
    version: String,
    flavor: Flavor,
    pods: Vec<Pod>,
    routes: &'static [(&'static str, &'static str)],
}

impl Service {
    fn scope(&self, kind: ScopeKind) -> InstrumentationScope {
        let (name, version) = match (self.flavor, kind) {
            (Flavor::Java, ScopeKind::Http) => {
                ("io.opentelemetry.tomcat-10.0".to_owned(), "2.9.0-alpha")
            }
            (Flavor::Java, ScopeKind::Db) => ("io.opentelemetry.jdbc".to_owned(), "2.9.0-alpha"),
            (Flavor::Go, ScopeKind::Http) => (
                "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp".to_owned(),
                "0.58.0",
            ),
            (Flavor::Go, ScopeKind::Db) => ("github.com/XSAM/otelsql".to_owned(), "0.36.0"),
            (Flavor::Python, ScopeKind::Http) => {
                ("opentelemetry.instrumentation.flask".to_owned(), "0.49b0")
            }
            (Flavor::Python, ScopeKind::Db) => (
                "opentelemetry.instrumentation.psycopg2".to_owned(),
                "0.49b0",
            ),
            (Flavor::Node, ScopeKind::Http) => {
                ("@opentelemetry/instrumentation-http".to_owned(), "0.57.0")
            }
            (Flavor::Node, ScopeKind::Db) => {
                ("@opentelemetry/instrumentation-pg".to_owned(), "0.50.0")
            }
            (_, ScopeKind::Auth) => (format!("{}.security.audit", self.name), "1.4.2"),
            (_, ScopeKind::App) => (format!("{}.app", self.name), ""),
        };
        InstrumentationScope {
            name,
            version: version.to_owned(),
            ..Default::default()
        }
    }

    fn resource(&self, pod: &Pod) -> Resource {
        Resource {
            attributes: vec![
                kv_str("service.name", &self.name),
                kv_str("service.namespace", "shop"),
                kv_str("service.version", &self.version),
                kv_str("service.instance.id", &pod.pod_name),
                kv_str("deployment.environment", "production"),
                kv_str("host.name", &pod.host_name),
                kv_str("k8s.namespace.name", "shop"),
                kv_str("k8s.pod.name", &pod.pod_name),
                kv_str("telemetry.sdk.name", "opentelemetry"),
                kv_str("telemetry.sdk.language", self.flavor.sdk_language()),
                kv_str("telemetry.sdk.version", self.flavor.sdk_version()),
            ],
            ..Default::default()
        }
    }
}

fn routes_for(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "checkout" => &[("POST", "/api/checkout"), ("GET", "/api/checkout/{id}")],
        "payments" => &[
            ("POST", "/api/payments/charge"),
            ("POST", "/api/payments/refund"),
            ("GET", "/api/payments/{id}"),
        ],
        "auth" => &[
            ("POST", "/api/login"),
            ("POST", "/api/logout"),
            ("POST", "/api/token/refresh"),
            ("GET", "/api/session"),
        ],
        "catalog" => &[
            ("GET", "/api/products"),
            ("GET", "/api/products/{id}"),
            ("GET", "/api/categories"),
        ],
        "cart" => &[
            ("GET", "/api/cart"),
            ("POST", "/api/cart/items"),
            ("DELETE", "/api/cart/items/{id}"),
        ],
        "shipping" => &[
            ("POST", "/api/shipping/quote"),
            ("GET", "/api/shipping/track/{id}"),
        ],
        "frontend" => &[
            ("GET", "/"),
            ("GET", "/product/{id}"),
            ("GET", "/cart"),
            ("POST", "/checkout"),
            ("GET", "/static/{file}"),
        ],
        "recommendation" => &[
            ("GET", "/api/recommendations"),
            ("GET", "/api/recommendations/{id}"),
        ],
        _ => &[
            ("GET", "/api/items"),
            ("GET", "/api/items/{id}"),
            ("POST", "/api/items"),
            ("GET", "/healthz"),
        ],
    }
}

/// Which services a service calls, by name; unknown services call their successor.
fn callee_names(name: &str) -> &'static [&'static str] {
    match name {
        "frontend" => &["checkout", "cart", "catalog", "recommendation", "auth"],
        "checkout" => &["payments", "shipping", "cart"],
        "cart" => &["catalog"],
        "recommendation" => &["catalog"],
        "payments" => &["auth"],
        _ => &[],
    }
}

const USER_AGENTS: [&str; 9] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "okhttp/4.12.0",
    "Go-http-client/1.1",
    "sqlmap/1.8.2#stable (https://sqlmap.org)",
];

const USER_NAMES: [&str; 16] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "oscar", "peggy", "trent", "walter",
];

const STATUS_CODES: [(i64, u64); 12] = [
    (200, 700),
    (201, 50),
    (204, 30),
    (304, 40),
    (400, 30),
    (401, 30),
    (403, 20),
    (404, 50),
    (429, 10),
    (500, 20),
    (502, 10),
    (503, 10),
];

/// Attacker-ish address used for brute-force-looking login failures.
const BRUTE_FORCE_ADDRESS: &str = "203.0.113.66";

struct Generator {
    rng: Rng,
    services: Vec<Service>,
    records_per_request: usize,
    base_time_ns: u64,
    /// Nanoseconds between consecutive records over the whole corpus.
    step_ns: u64,
}

impl Generator {
    fn new(config: &CorpusConfig, base_time_ns: u64, stream: u64) -> Self {
        let mut rng = Rng::new(config.seed ^ stream.rotate_left(32));
        let services = (0..config.services.max(1))
            .map(|index| {
                let name = service_name(index);
                let version = format!("{}.{}.{}", rng.range(1, 4), rng.below(20), rng.below(10));
                let replica_set = rng.hex(10);
                let pods = (0..3)
                    .map(|_| Pod {
                        pod_name: format!("{name}-{replica_set}-{}", rng.alnum(5)),
                        host_name: format!(
                            "ip-10-42-{}-{}.ec2.internal",
                            rng.below(8),
                            rng.range(1, 255)
                        ),
                        ip: format!("10.42.{}.{}", rng.below(64), rng.range(2, 255)),
                    })
                    .collect();
                Service {
                    routes: routes_for(&name),
                    flavor: Flavor::of(index),
                    name,
                    version,
                    pods,
                }
            })
            .collect();
        let total_records = (config.requests.max(1) as u64)
            .saturating_mul(config.records_per_request.max(1) as u64);
        Self {
            rng,
            services,
            records_per_request: config.records_per_request,
            base_time_ns,
            step_ns: (config.time_spread_ns / total_records).max(1),
        }
    }

    fn record_time(&mut self, request: usize, index: usize) -> u64 {
        let global = (request as u64)
            .saturating_mul(self.records_per_request as u64)
            .saturating_add(index as u64);
        self.base_time_ns
            .saturating_add(global.saturating_mul(self.step_ns))
            .saturating_add(self.rng.below(self.step_ns))
    }

    fn service_index_named(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name == name)
    }

    fn client_address(&mut self) -> String {
        let prefix = self.rng.pick(&["192.0.2", "198.51.100", "203.0.113"]);
        format!("{prefix}.{}", self.rng.range(1, 255))
    }

    fn user_id(&mut self) -> String {
        format!("user-{}", self.rng.range(1, 5000))
    }

    fn route(&mut self, service: usize) -> (&'static str, &'static str, String) {
        let routes = self.services.get(service).map_or(&[][..], |s| s.routes);
        let (method, route) = self.rng.pick(routes);
        let path = if route.contains("{id}") {
            route.replace("{id}", &self.rng.range(1, 100_000).to_string())
        } else if route.contains("{file}") {
            route.replace("{file}", &format!("app.{}.js", self.rng.hex(8)))
        } else {
            route.to_owned()
        };
        (method, route, path)
    }

    /// One pod per service per request: a request holds one resource per service.
    fn pick_pods(&mut self) -> Vec<usize> {
        (0..self.services.len())
            .map(|_| self.rng.below_usize(3))
            .collect()
    }

    fn logs_request(&mut self, request: usize) -> ExportLogsServiceRequest {
        let pods = self.pick_pods();
        let auth_service = self.service_index_named("auth");
        let mut records = Vec::with_capacity(self.records_per_request);
        for index in 0..self.records_per_request {
            let time = self.record_time(request, index);
            let roll = self.rng.below(100);
            let (service, kind, record) = if roll < 65 {
                let service = self.rng.below_usize(self.services.len());
                (service, ScopeKind::Http, self.access_log(service, time))
            } else if roll < 80 {
                let service = match auth_service {
                    Some(auth) if self.rng.percent(80) => auth,
                    _ => self.rng.below_usize(self.services.len()),
                };
                (service, ScopeKind::Auth, self.auth_event(time))
            } else if roll < 88 {
                let service = self.rng.below_usize(self.services.len());
                (service, ScopeKind::App, self.error_log(service, time))
            } else {
                let service = self.rng.below_usize(self.services.len());
                (service, ScopeKind::App, self.app_log(time))
            };
            let record = self.with_trace_context(record);
            records.push((service, kind, record));
        }
        let mut grouped: BTreeMap<usize, BTreeMap<ScopeKind, Vec<LogRecord>>> = BTreeMap::new();
        for (service, kind, record) in records {
            grouped
                .entry(service)
                .or_default()
                .entry(kind)
                .or_default()
                .push(record);
        }
        let resource_logs = grouped
            .into_iter()
            .filter_map(|(service_index, scopes)| {
                let service = self.services.get(service_index)?;
                let pod = service
                    .pods
                    .get(pods.get(service_index).copied().unwrap_or(0))?;
                Some(ResourceLogs {
                    resource: Some(service.resource(pod)),
                    scope_logs: scopes
                        .into_iter()
                        .map(|(kind, log_records)| ScopeLogs {
                            scope: Some(service.scope(kind)),
                            log_records,
                            schema_url: "https://opentelemetry.io/schemas/1.26.0".to_owned(),
                        })
                        .collect(),
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".to_owned(),
                })
            })
            .collect();
        ExportLogsServiceRequest { resource_logs }
    }

    /// Most logs are emitted inside a span: attach trace and span ids to nine in ten.
    fn with_trace_context(&mut self, mut record: LogRecord) -> LogRecord {
        if self.rng.percent(90) {
            record.trace_id = self.rng.id::<16>().to_vec();
            record.span_id = self.rng.id::<8>().to_vec();
            record.flags = 1;
        }
        record
    }

    fn access_log(&mut self, service: usize, time: u64) -> LogRecord {
        let (method, route, path) = self.route(service);
        let status = self.rng.weighted(&STATUS_CODES);
        let client = self.client_address();
        let user_agent = self.rng.pick(&USER_AGENTS);
        let duration_ms = self.rng.range(1, 40)
            + if self.rng.percent(5) {
                self.rng.range(100, 3000)
            } else {
                0
            };
        let bytes = self.rng.range(0, 64_000);
        let logged_in = self.rng.percent(70);
        let user = if logged_in {
            self.user_id()
        } else {
            "-".to_owned()
        };
        let (severity, severity_text) = match status {
            500.. => (SeverityNumber::Error, "ERROR"),
            400.. => (SeverityNumber::Warn, "WARN"),
            _ => (SeverityNumber::Info, "INFO"),
        };
        let mut attributes = vec![
            kv_str("http.request.method", method),
            kv_str("url.path", &path),
            kv_str("http.route", route),
            kv_int("http.response.status_code", status),
            kv_str("client.address", &client),
            kv_str("user_agent.original", user_agent),
            kv_str("network.protocol.version", "1.1"),
            kv_int("http.response.body.size", i64::try_from(bytes).unwrap_or(0)),
            kv_double("http.server.request.duration", duration_ms as f64 / 1000.0),
        ];
        if logged_in {
            attributes.push(kv_str("user.id", &user));
        }
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time + self.rng.range(100_000, 50_000_000),
            severity_number: severity as i32,
            severity_text: severity_text.to_owned(),
            body: Some(any_str(format!(
                "{client} - {user} \"{method} {path} HTTP/1.1\" {status} {bytes} \"-\" \"{user_agent}\" {duration_ms}ms"
            ))),
            attributes,
            ..Default::default()
        }
    }

    fn auth_event(&mut self, time: u64) -> LogRecord {
        let client = self.client_address();
        let user_agent = self.rng.pick(&USER_AGENTS);
        let method = self
            .rng
            .weighted(&[("password", 6), ("sso", 3), ("mfa", 1)]);
        if self.rng.percent(5) {
            let user = self.rng.pick(&USER_NAMES);
            return LogRecord {
                time_unix_nano: time,
                observed_time_unix_nano: time + self.rng.range(100_000, 20_000_000),
                severity_number: SeverityNumber::Info as i32,
                severity_text: "INFO".to_owned(),
                event_name: "password_reset".to_owned(),
                body: Some(any_str(format!(
                    "password reset requested for {user}@example.com from {client}"
                ))),
                attributes: vec![
                    kv_str("event.name", "password_reset"),
                    kv_str("user.name", user),
                    kv_str("user.email", &format!("{user}@example.com")),
                    kv_str("client.address", &client),
                ],
                ..Default::default()
            };
        }
        let success = self.rng.percent(75);
        let (user, client) = if !success && self.rng.percent(25) {
            (
                self.rng.pick(&["admin", "root", "administrator"]),
                BRUTE_FORCE_ADDRESS.to_owned(),
            )
        } else {
            (self.rng.pick(&USER_NAMES), client)
        };
        let mut attributes = vec![
            kv_str("event.name", "login"),
            kv_str("event.outcome", if success { "success" } else { "failure" }),
            kv_str("user.name", user),
            kv_str("client.address", &client),
            kv_str("user_agent.original", user_agent),
            kv_str("auth.method", method),
        ];
        let (severity, severity_text, body) = if success {
            (
                SeverityNumber::Info,
                "INFO",
                format!("user {user} logged in via {method} from {client}"),
            )
        } else {
            let reason = self.rng.weighted(&[
                ("invalid_password", 6),
                ("unknown_user", 2),
                ("mfa_failed", 1),
                ("account_locked", 1),
            ]);
            attributes.push(kv_str("failure.reason", reason));
            (
                SeverityNumber::Warn,
                "WARN",
                format!("login failed for user {user} from {client}: {reason}"),
            )
        };
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time + self.rng.range(100_000, 20_000_000),
            severity_number: severity as i32,
            severity_text: severity_text.to_owned(),
            event_name: "login".to_owned(),
            body: Some(any_str(body)),
            attributes,
            ..Default::default()
        }
    }

    fn error_log(&mut self, service: usize, time: u64) -> LogRecord {
        let Some(svc) = self.services.get(service) else {
            return LogRecord::default();
        };
        let name = svc.name.clone();
        let flavor = svc.flavor;
        let id = self.rng.range(1, 100_000);
        let millis = self.rng.pick(&[1000, 2000, 3000, 5000]);
        let (exception_type, message, body) = match flavor {
            Flavor::Java => {
                let message =
                    format!("upstream timeout after {millis} ms while processing order {id}");
                let body = format!(
                    "java.lang.IllegalStateException: {message}\n\
                     \tat com.example.{name}.client.UpstreamClient.call(UpstreamClient.java:214)\n\
                     \tat com.example.{name}.service.OrderService.process(OrderService.java:88)\n\
                     \tat com.example.{name}.api.OrderController.handle(OrderController.java:57)\n\
                     \tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885)\n\
                     \tat org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:166)\n\
                     Caused by: java.net.SocketTimeoutException: Read timed out\n\
                     \tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)\n\
                     \t... 42 more"
                );
                ("java.lang.IllegalStateException", message, body)
            }
            Flavor::Python => {
                let message = format!("catalog returned 503 for item {id}");
                let body = format!(
                    "Traceback (most recent call last):\n  \
                     File \"/app/{name}/handlers.py\", line 142, in add_item\n    \
                     item = catalog.get(item_id)\n  \
                     File \"/app/{name}/catalog_client.py\", line 58, in get\n    \
                     raise UpstreamUnavailable(f\"catalog returned {{resp.status}} for item {{item_id}}\")\n\
                     {name}.errors.UpstreamUnavailable: {message}"
                );
                ("UpstreamUnavailable", message, body)
            }
            Flavor::Go => {
                let message = format!("context deadline exceeded after {millis}ms (order {id})");
                let body = format!(
                    "handler error: {message}\n\
                     goroutine 1337 [running]:\n\
                     github.com/example/{name}/internal/server.(*Handler).ServeHTTP(0xc000124000, {{0x1a2b3c0, 0xc0004a6000}}, 0xc000532100)\n\
                     \t/src/internal/server/handler.go:97 +0x3c5\n\
                     net/http.serverHandler.ServeHTTP({{0xc0001ac0f0?}}, {{0x1a2b3c0?, 0xc0004a6000?}}, 0x6?)\n\
                     \t/usr/local/go/src/net/http/server.go:3142 +0x8e"
                );
                ("context.DeadlineExceeded", message, body)
            }
            Flavor::Node => {
                let message = format!(
                    "Cannot read properties of undefined (reading 'price') for product {id}"
                );
                let body = format!(
                    "TypeError: {message}\n    \
                     at computeTotal (/app/{name}/src/cart.js:88:31)\n    \
                     at Array.reduce (<anonymous>)\n    \
                     at CartController.summary (/app/{name}/src/controllers/cart.js:41:22)\n    \
                     at process.processTicksAndRejections (node:internal/process/task_queues:95:5)"
                );
                ("TypeError", message, body)
            }
        };
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time + self.rng.range(100_000, 20_000_000),
            severity_number: SeverityNumber::Error as i32,
            severity_text: "ERROR".to_owned(),
            body: Some(any_str(body)),
            attributes: vec![
                kv_str("exception.type", exception_type),
                kv_str("exception.message", &message),
                kv_str("code.function", "process"),
            ],
            ..Default::default()
        }
    }

    fn app_log(&mut self, time: u64) -> LogRecord {
        let template = self.rng.below(7);
        let id = self.rng.range(10_000, 1_000_000);
        let (severity, text, body, attributes) = match template {
            0 => {
                let items = self.rng.range(1, 9);
                let cents = self.rng.range(500, 50_000);
                (
                    SeverityNumber::Info,
                    "INFO",
                    format!(
                        "order {id} placed: {items} items, total {}.{:02} USD",
                        cents / 100,
                        cents % 100
                    ),
                    vec![
                        kv_int("order.id", i64::try_from(id).unwrap_or(0)),
                        kv_int("order.items", i64::try_from(items).unwrap_or(0)),
                    ],
                )
            }
            1 => {
                let ms = self.rng.range(500, 5000);
                (
                    SeverityNumber::Warn,
                    "WARN",
                    format!("slow query on table orders took {ms} ms"),
                    vec![
                        kv_str("db.system", "postgresql"),
                        kv_str("db.operation.name", "SELECT"),
                        kv_int("db.duration_ms", i64::try_from(ms).unwrap_or(0)),
                    ],
                )
            }
            2 => (
                SeverityNumber::Info,
                "INFO",
                format!(
                    "cache refresh completed: {} keys",
                    self.rng.range(100, 50_000)
                ),
                vec![kv_str("cache.name", "products")],
            ),
            3 => {
                let attempt = self.rng.range(2, 4);
                (
                    SeverityNumber::Warn,
                    "WARN",
                    format!("retrying request to payments (attempt {attempt}/3)"),
                    vec![
                        kv_str("peer.service", "payments"),
                        kv_int("retry.attempt", i64::try_from(attempt).unwrap_or(0)),
                    ],
                )
            }
            4 => {
                let user = self.rng.pick(&USER_NAMES);
                (
                    SeverityNumber::Info,
                    "INFO",
                    format!("receipt for order {id} emailed to {user}@example.com"),
                    vec![kv_int("order.id", i64::try_from(id).unwrap_or(0))],
                )
            }
            5 => {
                let user = self.user_id();
                (
                    SeverityNumber::Debug,
                    "DEBUG",
                    format!("feature flag new-checkout evaluated to true for {user}"),
                    vec![
                        kv_str("feature_flag.key", "new-checkout"),
                        kv_str("user.id", &user),
                    ],
                )
            }
            _ => {
                let last4 = self.rng.pick(&["4242", "0005", "1881", "9424"]);
                (
                    SeverityNumber::Warn,
                    "WARN",
                    format!("card ending {last4} declined: insufficient funds (order {id})"),
                    vec![kv_str("payment.outcome", "declined")],
                )
            }
        };
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time + self.rng.range(100_000, 20_000_000),
            severity_number: severity as i32,
            severity_text: text.to_owned(),
            body: Some(any_str(body)),
            attributes,
            ..Default::default()
        }
    }

    fn trace_request(&mut self, request: usize) -> ExportTraceServiceRequest {
        let pods = self.pick_pods();
        let frontend = self.service_index_named("frontend");
        let target = self.records_per_request;
        let mut spans: Vec<(usize, ScopeKind, Span)> = Vec::with_capacity(target);
        while spans.len() < target {
            let start = self.record_time(request, spans.len());
            let root = match frontend {
                Some(frontend) if self.rng.percent(60) => frontend,
                _ => self.rng.below_usize(self.services.len()),
            };
            let trace_id = self.rng.id::<16>();
            let status = self.rng.weighted(&STATUS_CODES);
            let call = Call {
                trace_id,
                parent: None,
                service: root,
                start,
                duration: self.rng.range(20_000_000, 400_000_000),
                status,
                depth: 0,
            };
            self.server_span(&call, &pods, target, &mut spans);
        }
        let mut grouped: BTreeMap<usize, BTreeMap<ScopeKind, Vec<Span>>> = BTreeMap::new();
        for (service, kind, span) in spans {
            grouped
                .entry(service)
                .or_default()
                .entry(kind)
                .or_default()
                .push(span);
        }
        let resource_spans = grouped
            .into_iter()
            .filter_map(|(service_index, scopes)| {
                let service = self.services.get(service_index)?;
                let pod = service
                    .pods
                    .get(pods.get(service_index).copied().unwrap_or(0))?;
                Some(ResourceSpans {
                    resource: Some(service.resource(pod)),
                    scope_spans: scopes
                        .into_iter()
                        .map(|(kind, spans)| ScopeSpans {
                            scope: Some(service.scope(kind)),
                            spans,
                            schema_url: "https://opentelemetry.io/schemas/1.26.0".to_owned(),
                        })
                        .collect(),
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".to_owned(),
                })
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
    }

    /// Emits a SERVER span for `call` and, recursively, its outgoing CLIENT calls, parents
    /// first, stopping once `out` holds `target` spans (so a cut trace never has orphans).
    fn server_span(
        &mut self,
        call: &Call,
        pods: &[usize],
        target: usize,
        out: &mut Vec<(usize, ScopeKind, Span)>,
    ) {
        if out.len() >= target {
            return;
        }
        let Some(service) = self.services.get(call.service) else {
            return;
        };
        let service_name = service.name.clone();
        let pod_ip = service
            .pods
            .get(pods.get(call.service).copied().unwrap_or(0))
            .map(|p| p.ip.clone())
            .unwrap_or_default();
        let callees: Vec<usize> = callee_names(&service_name)
            .iter()
            .filter_map(|name| self.service_index_named(name))
            .collect();
        let (method, route, path) = self.route(call.service);
        let span_id = self.rng.id::<8>();
        let end = call.start + call.duration;

        let mut attributes = vec![
            kv_str("http.request.method", method),
            kv_str("http.route", route),
            kv_str("url.path", &path),
            kv_str("url.scheme", "http"),
            kv_int("http.response.status_code", call.status),
            kv_str("server.address", &service_name),
            kv_int("server.port", 8080),
            kv_str("network.protocol.version", "1.1"),
        ];
        if call.parent.is_none() {
            let client = self.client_address();
            attributes.push(kv_str("client.address", &client));
            attributes.push(kv_str("user_agent.original", self.rng.pick(&USER_AGENTS)));
            if self.rng.percent(70) {
                let user = self.user_id();
                attributes.push(kv_str("user.id", &user));
            }
        } else {
            attributes.push(kv_str("client.address", &pod_ip));
        }
        let mut events = Vec::new();
        let status = if call.status >= 500 {
            events.push(Event {
                time_unix_nano: end.saturating_sub(self.rng.range(10_000, 1_000_000)),
                name: "exception".to_owned(),
                attributes: vec![
                    kv_str("exception.type", "UpstreamError"),
                    kv_str(
                        "exception.message",
                        &format!("{method} {path} failed with {}", call.status),
                    ),
                ],
                dropped_attributes_count: 0,
            });
            Some(Status {
                message: format!("HTTP {}", call.status),
                code: StatusCode::Error as i32,
            })
        } else {
            Some(Status::default())
        };
        if self.rng.percent(10) {
            events.push(Event {
                time_unix_nano: call.start + self.rng.below(call.duration),
                name: "cache.miss".to_owned(),
                attributes: vec![kv_str("cache.key", &format!("{route}:{}", self.rng.hex(6)))],
                dropped_attributes_count: 0,
            });
        }
        out.push((
            call.service,
            ScopeKind::Http,
            Span {
                trace_id: call.trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: call.parent.map(|p| p.to_vec()).unwrap_or_default(),
                flags: 1,
                name: format!("{method} {route}"),
                kind: SpanKind::Server as i32,
                start_time_unix_nano: call.start,
                end_time_unix_nano: end,
                attributes,
                events,
                status,
                ..Default::default()
            },
        ));

        // Outgoing calls: up to two downstream services plus maybe one database query.
        let mut children: Vec<Option<usize>> = Vec::new();
        if call.depth < 3 && !callees.is_empty() {
            for _ in 0..self.rng.below(3) {
                children.push(Some(self.rng.pick(&callees)));
            }
        }
        if self.rng.percent(30) {
            children.push(None);
        }
        if children.is_empty() {
            return;
        }
        let slot = call.duration * 8 / 10 / children.len() as u64;
        let mut cursor = call.start + call.duration / 10;
        for child in children {
            if out.len() >= target {
                return;
            }
            let client_start = cursor;
            let client_duration = (slot * self.rng.range(50, 95) / 100).max(1_000);
            cursor += slot;
            match child {
                Some(callee) => {
                    let status = self.rng.weighted(&STATUS_CODES);
                    let client_id = self.rng.id::<8>();
                    let (callee_method, _, callee_path) = self.route(callee);
                    let callee_name = service_name_of(&self.services, callee);
                    let span = Span {
                        trace_id: call.trace_id.to_vec(),
                        span_id: client_id.to_vec(),
                        parent_span_id: span_id.to_vec(),
                        flags: 1,
                        name: callee_method.to_owned(),
                        kind: SpanKind::Client as i32,
                        start_time_unix_nano: client_start,
                        end_time_unix_nano: client_start + client_duration,
                        attributes: vec![
                            kv_str("http.request.method", callee_method),
                            kv_str("server.address", &callee_name),
                            kv_int("server.port", 8080),
                            kv_str(
                                "url.full",
                                &format!("http://{callee_name}:8080{callee_path}"),
                            ),
                            kv_str("peer.service", &callee_name),
                            kv_int("http.response.status_code", status),
                        ],
                        status: Some(if status >= 500 {
                            Status {
                                message: format!("HTTP {status}"),
                                code: StatusCode::Error as i32,
                            }
                        } else {
                            Status::default()
                        }),
                        ..Default::default()
                    };
                    out.push((call.service, ScopeKind::Http, span));
                    // The callee's SERVER span sits inside the CLIENT span, a network hop in.
                    let inset = (client_duration / 10).min(200_000);
                    let nested = Call {
                        trace_id: call.trace_id,
                        parent: Some(client_id),
                        service: callee,
                        start: client_start + inset,
                        duration: (client_duration - 2 * inset).max(1),
                        status,
                        depth: call.depth + 1,
                    };
                    self.server_span(&nested, pods, target, out);
                }
                None => {
                    let (operation, table) = self.rng.pick(&[
                        ("SELECT", "orders"),
                        ("SELECT", "products"),
                        ("INSERT", "orders"),
                        ("UPDATE", "inventory"),
                        ("SELECT", "users"),
                    ]);
                    let statement = match operation {
                        "SELECT" => format!("SELECT * FROM {table} WHERE id = $1"),
                        "INSERT" => {
                            format!("INSERT INTO {table} (id, user_id, total) VALUES ($1, $2, $3)")
                        }
                        _ => format!("UPDATE {table} SET quantity = quantity - $1 WHERE sku = $2"),
                    };
                    let span = Span {
                        trace_id: call.trace_id.to_vec(),
                        span_id: self.rng.id::<8>().to_vec(),
                        parent_span_id: span_id.to_vec(),
                        flags: 1,
                        name: format!("{operation} shop.{table}"),
                        kind: SpanKind::Client as i32,
                        start_time_unix_nano: client_start,
                        end_time_unix_nano: client_start + client_duration,
                        attributes: vec![
                            kv_str("db.system", "postgresql"),
                            kv_str("db.namespace", "shop"),
                            kv_str("db.operation.name", operation),
                            kv_str("db.collection.name", table),
                            kv_str("db.query.text", &statement),
                            kv_str("server.address", "postgres-primary"),
                            kv_int("server.port", 5432),
                            kv_str("peer.service", "postgres"),
                        ],
                        status: Some(Status::default()),
                        ..Default::default()
                    };
                    out.push((call.service, ScopeKind::Db, span));
                }
            }
        }
    }
}

/// One incoming request to a service, as seen by its SERVER span.
struct Call {
    trace_id: [u8; 16],
    parent: Option<[u8; 8]>,
    service: usize,
    start: u64,
    duration: u64,
    status: i64,
    depth: u32,
}

fn service_name_of(services: &[Service], index: usize) -> String {
    services
        .get(index)
        .map(|s| s.name.clone())
        .unwrap_or_default()
}

fn any_str(value: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(value.into())),
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.to_owned()))
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    kv(key, Value::IntValue(value))
}

fn kv_double(key: &str, value: f64) -> KeyValue {
    kv(key, Value::DoubleValue(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn small() -> CorpusConfig {
        CorpusConfig {
            services: 8,
            records_per_request: 200,
            requests: 6,
            seed: 42,
            time_spread_ns: TIME_SPREAD_NS,
        }
    }

    const BASE: u64 = 1_700_000_000_000_000_000;

    #[test]
    fn same_seed_same_corpus_different_seed_different_corpus() {
        let config = small();
        assert_eq!(logs_requests(&config, BASE), logs_requests(&config, BASE));
        assert_eq!(trace_requests(&config, BASE), trace_requests(&config, BASE));
        let other = CorpusConfig {
            seed: 43,
            ..small()
        };
        assert_ne!(logs_requests(&config, BASE), logs_requests(&other, BASE));
        assert_ne!(trace_requests(&config, BASE), trace_requests(&other, BASE));
    }

    #[test]
    fn every_request_holds_exactly_the_configured_record_count() {
        for records_per_request in [1, 7, 200, 512] {
            for services in [1, 3, 8, 12] {
                let config = CorpusConfig {
                    services,
                    records_per_request,
                    requests: 3,
                    seed: 7,
                    ..CorpusConfig::default()
                };
                let logs = logs_requests(&config, BASE);
                let traces = trace_requests(&config, BASE);
                assert_eq!(logs.len(), 3);
                assert_eq!(traces.len(), 3);
                for request in &logs {
                    assert_eq!(count_log_records(request), records_per_request);
                    assert!(request.resource_logs.len() <= services);
                }
                for request in &traces {
                    assert_eq!(count_spans(request), records_per_request);
                    assert!(request.resource_spans.len() <= services);
                }
            }
        }
    }

    #[test]
    fn timestamps_cover_the_configured_spread_in_request_order() {
        const HOUR: u64 = 3_600_000_000_000;
        let config = CorpusConfig {
            time_spread_ns: HOUR,
            ..small()
        };
        let times: Vec<Vec<u64>> = logs_requests(&config, BASE)
            .iter()
            .map(|request| {
                request
                    .resource_logs
                    .iter()
                    .flat_map(|r| &r.scope_logs)
                    .flat_map(|s| &s.log_records)
                    .map(|r| r.time_unix_nano)
                    .collect()
            })
            .collect();
        let all = || times.iter().flatten().copied();
        assert!(all().all(|t| (BASE..BASE + HOUR).contains(&t)));
        // The whole hour is used, not just its first seconds.
        assert!(all().max().unwrap() > BASE + HOUR / 10 * 9);
        // Request n holds the n-th slice of the hour: later requests, later records.
        for pair in times.windows(2) {
            assert!(pair[0].iter().max() < pair[1].iter().min());
        }
        for span in trace_requests(&config, BASE)
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            assert!(span.start_time_unix_nano >= BASE);
            assert!(span.start_time_unix_nano < BASE + HOUR);
        }
    }

    #[test]
    fn requests_survive_a_protobuf_round_trip() {
        let config = small();
        for request in logs_requests(&config, BASE) {
            let bytes = request.encode_to_vec();
            assert_eq!(
                ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap(),
                request
            );
        }
        for request in trace_requests(&config, BASE) {
            let bytes = request.encode_to_vec();
            assert_eq!(
                ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap(),
                request
            );
        }
    }

    fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    #[test]
    fn logs_look_like_a_microservice_shop() {
        let requests = logs_requests(&small(), BASE);
        let mut severities = std::collections::BTreeSet::new();
        let (mut logins, mut failures, mut with_trace, mut total, mut stack_traces) =
            (0, 0, 0, 0, 0);
        let mut services = std::collections::BTreeSet::new();
        for resource in requests.iter().flat_map(|r| &r.resource_logs) {
            let attributes = &resource.resource.as_ref().unwrap().attributes;
            for key in [
                "service.name",
                "service.version",
                "deployment.environment",
                "host.name",
                "k8s.pod.name",
            ] {
                assert!(
                    attr(attributes, key).is_some(),
                    "missing resource attribute {key}"
                );
            }
            if let Some(Value::StringValue(name)) = attr(attributes, "service.name") {
                services.insert(name.clone());
            }
            for scope in &resource.scope_logs {
                assert!(!scope.scope.as_ref().unwrap().name.is_empty());
                for record in &scope.log_records {
                    total += 1;
                    severities.insert(record.severity_text.clone());
                    assert!(record.time_unix_nano >= BASE);
                    assert!(record.time_unix_nano < BASE + TIME_SPREAD_NS + 1_000_000_000);
                    if record.trace_id.len() == 16 && record.span_id.len() == 8 {
                        with_trace += 1;
                    }
                    if let Some(Value::IntValue(status)) =
                        attr(&record.attributes, "http.response.status_code")
                    {
                        assert!((200..600).contains(status));
                        assert!(matches!(
                            attr(&record.attributes, "client.address"),
                            Some(Value::StringValue(_))
                        ));
                    }
                    if record.event_name == "login" {
                        logins += 1;
                        if attr(&record.attributes, "event.outcome")
                            == Some(&Value::StringValue("failure".into()))
                        {
                            failures += 1;
                        }
                    }
                    if let Some(Value::StringValue(body)) =
                        record.body.as_ref().and_then(|b| b.value.as_ref())
                        && body.lines().count() > 3
                    {
                        stack_traces += 1;
                    }
                }
            }
        }
        assert_eq!(services.len(), 8);
        assert!(services.contains("checkout") && services.contains("recommendation"));
        for severity in ["INFO", "WARN", "ERROR"] {
            assert!(severities.contains(severity), "no {severity} records");
        }
        assert!(logins > 0 && failures > 0 && failures < logins);
        assert!(stack_traces > 0);
        assert!(
            with_trace * 10 > total * 8,
            "{with_trace} of {total} logs carry trace context"
        );
    }

    #[test]
    fn spans_form_well_linked_cross_service_traces() {
        let requests = trace_requests(&small(), BASE);
        for request in &requests {
            let mut by_id = std::collections::HashMap::new();
            let mut service_of_span = std::collections::HashMap::new();
            for resource in &request.resource_spans {
                let name = match attr(
                    &resource.resource.as_ref().unwrap().attributes,
                    "service.name",
                ) {
                    Some(Value::StringValue(name)) => name.clone(),
                    other => panic!("service.name missing: {other:?}"),
                };
                for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                    assert_eq!(span.trace_id.len(), 16);
                    assert_eq!(span.span_id.len(), 8);
                    assert!(span.end_time_unix_nano > span.start_time_unix_nano);
                    assert!(
                        by_id.insert(span.span_id.clone(), span.clone()).is_none(),
                        "duplicate span id"
                    );
                    service_of_span.insert(span.span_id.clone(), name.clone());
                }
            }
            let mut cross_service = 0;
            let mut errors = 0;
            for span in by_id.values() {
                if span
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code == StatusCode::Error as i32)
                {
                    errors += 1;
                }
                if span.parent_span_id.is_empty() {
                    assert_eq!(span.kind, SpanKind::Server as i32, "roots are SERVER spans");
                    continue;
                }
                let parent = by_id
                    .get(&span.parent_span_id)
                    .expect("parent in the same request");
                assert_eq!(parent.trace_id, span.trace_id);
                assert!(span.start_time_unix_nano >= parent.start_time_unix_nano);
                assert!(span.end_time_unix_nano <= parent.end_time_unix_nano);
                if span.kind == SpanKind::Server as i32 {
                    assert_eq!(parent.kind, SpanKind::Client as i32);
                    let peer = attr(&parent.attributes, "peer.service");
                    let callee = service_of_span.get(&span.span_id).unwrap();
                    assert_eq!(peer, Some(&Value::StringValue(callee.clone())));
                    assert_ne!(service_of_span.get(&parent.span_id), Some(callee));
                    cross_service += 1;
                }
            }
            assert!(cross_service > 0, "no cross-service calls");
            assert!(errors > 0, "no error spans");
        }
    }
}
