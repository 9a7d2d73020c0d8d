//! Vigil's `/metrics` as Prometheus and Grafana see it: a real Prometheus server scrapes a real
//! Vigil that received OpenTelemetry traffic (PII, a secret, an attack), loads the shipped
//! alerting rules, and runs every query of the shipped Grafana dashboards. `promtool` checks the
//! exposition format and the rules. Separately, every metric the dashboards and rules name must
//! be one Vigil registers, so a renamed metric cannot silently blank a panel or an alert.
//!
//! Needs the `prometheus` and `promtool` binaries (Debian package `prometheus`), which
//! `scripts/test` installs; without them the tests fail rather than skip, so a CI machine that
//! lacks them cannot pass by testing less.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{LogExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;

use crate::harness::{Vigil, eventually};

/// The shipped Sigma rule for SQL injection in a request URL.
const SQLI_RULE: &str = "4f7c1d52-8a3e-4c0b-9d6e-1b2a3c4d5e01";
/// A made-up key of the real AWS access key id shape.
const AWS_KEY: &str = "AKIAZ7Q3X5LMN2P4R6T7";
const LOGS: usize = 40;
const SPANS: usize = 25;

// ---------------------------------------------------------------------------------------------
// The shipped dashboards and rules

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository root")
        .to_owned()
}

fn rules_file() -> PathBuf {
    repo_root().join("dashboards/prometheus/vigil-alerts.yml")
}

/// Every Grafana dashboard under `dashboards/grafana`, parsed.
fn dashboards() -> Vec<(String, Value)> {
    let dir = repo_root().join("dashboards/grafana");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 2, "no dashboards found in {}", dir.display());
    out
}

/// Every panel, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The PromQL of every panel target.
fn panel_queries(dashboard: &Value) -> Vec<String> {
    panels(dashboard)
        .into_iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a target without a PromQL expr: {t}"))
                .to_owned()
        })
        .collect()
}

/// The queries of the dashboard's query variables, as written (`label_values(...)`).
fn variable_queries(dashboard: &Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = &v["query"];
            q.as_str()
                .or_else(|| q["query"].as_str())
                .unwrap_or_else(|| panic!("variable without a query: {v}"))
                .to_owned()
        })
        .collect()
}

/// The PromQL inside a Grafana variable query: `label_values(SELECTOR, label)` selects
/// SELECTOR; `query_result(EXPR)` runs EXPR.
fn variable_promql(query: &str) -> &str {
    let query = query.trim();
    if let Some(args) = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return args
            .rsplit_once(',')
            .map_or(args, |(selector, _label)| selector);
    }
    if let Some(expr) = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return expr;
    }
    query
}

/// A Prometheus rules file, as far as these tests read it.
#[derive(serde::Deserialize)]
struct RulesFile {
    groups: Vec<RuleGroup>,
}

#[derive(serde::Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(serde::Deserialize)]
struct Rule {
    expr: String,
}

/// The `expr` of every rule in a Prometheus rules file.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let file: RulesFile = yaml_serde::from_str(yaml).expect("rules file is YAML");
    file.groups
        .into_iter()
        .flat_map(|g| g.rules)
        .map(|r| r.expr.trim().to_owned())
        .collect()
}

fn rule_count(yaml: &str) -> usize {
    rule_exprs(yaml).len()
}

/// The metric names a PromQL expression selects: every bare identifier that is not a keyword,
/// an aggregation or function (followed by `(`), a label (inside `{}` or a `by (...)`-style
/// list), a duration or a Grafana variable.
fn selected_metrics(promql: &str) -> BTreeSet<String> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

    let chars: Vec<char> = promql.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    // Index just past the `close` that ends the group opened at `open`, skipping strings.
    let skip_group = |mut i: usize, close: char| {
        i += 1;
        while i < chars.len() && chars[i] != close {
            i = if matches!(chars[i], '"' | '\'' | '`') {
                skip_string(&chars, i)
            } else {
                i + 1
            };
        }
        i + 1
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_group(i, '}'),
            '[' => i = skip_group(i, ']'),
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '$' => {
                // A Grafana variable: `$name` or `${name}` (or `${name:format}`).
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_group(i, '}');
                } else {
                    while i < chars.len() && ident(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers and durations: 0.99, 1e3, 5m, 1h30m.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let followed_by_paren = chars.get(next) == Some(&'(');
                if LABEL_LISTS.contains(&lower.as_str()) {
                    if followed_by_paren {
                        i = skip_group(next, ')');
                    }
                } else if !(KEYWORDS.contains(&lower.as_str())
                    || AGGREGATIONS.contains(&lower.as_str())
                    || followed_by_paren)
                {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Index just past the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        // Backslash escapes exist in double- and single-quoted strings, not raw ones.
        i += if chars[i] == '\\' && quote != '`' {
            2
        } else {
            1
        };
    }
    i + 1
}

/// Grafana's variables replaced by values Prometheus accepts, as Grafana would before sending.
fn as_grafana_sends(query: &str) -> String {
    let q = query
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
        .replace("${service}", ".*")
        .replace("$service", ".*");
    assert!(!q.contains('$'), "a Grafana variable left unreplaced: {q}");
    q
}

/// Series Prometheus writes itself for each target; not Vigil's to register.
const PROMETHEUS_SERIES: &[&str] = &["up"];

#[test]
fn promql_metric_extraction_sees_only_metric_names() {
    let names = |q: &str| selected_metrics(q).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, signal) (rate(vigil_a_bucket{instance=~"$instance", x="vigil_not_this}"}[$__rate_interval])))"#
        ),
        ["vigil_a_bucket"]
    );
    assert_eq!(
        names(
            "sum by (instance) (rate(a_total[5m])) / on (instance) group_left (x) b offset 5m > bool 0.5 or c"
        ),
        ["a_total", "b", "c"]
    );
    assert_eq!(
        names("vigil_outbox > 100\nand\nderiv(vigil_outbox[15m:1m]) > 0"),
        ["vigil_outbox"]
    );
    assert_eq!(
        names("max without(sink) (up == 0) # up, said the comment"),
        ["up"]
    );
    assert_eq!(
        variable_promql(r#"label_values(vigil_x{instance=~"$instance"}, service)"#),
        r#"vigil_x{instance=~"$instance"}"#
    );
    assert_eq!(
        rule_exprs(
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 1m\n  - alert: B\n    expr: >-\n      a\n      or b\n    for: 2m\n"
        ),
        ["up == 0", "a or b"]
    );
}

/// Every metric a dashboard panel, dashboard variable or alert rule selects is one Vigil
/// registers (with no traffic needed: labelled metrics without series are included). Runs
/// without Prometheus.
#[test]
fn dashboards_and_alert_rules_use_only_exported_metrics() {
    let exported: BTreeSet<String> = vigil_collector::metrics::Metrics::new()
        .unwrap()
        .metric_names()
        .into_iter()
        .chain(PROMETHEUS_SERIES.iter().map(|s| (*s).to_owned()))
        .collect();
    let mut problems = Vec::new();
    let mut check = |origin: &str, promql: &str| {
        let selected = selected_metrics(promql);
        if selected.is_empty() {
            problems.push(format!("{origin}: selects no metric: {promql}"));
        }
        for name in selected.difference(&exported) {
            problems.push(format!(
                "{origin}: `{name}` is not a metric Vigil exports: {promql}"
            ));
        }
    };

    for (file, dashboard) in dashboards() {
        for q in panel_queries(&dashboard) {
            check(&file, &q);
        }
        for q in variable_queries(&dashboard) {
            check(&format!("{file} variable"), variable_promql(&q));
        }
    }
    let rules = std::fs::read_to_string(rules_file()).unwrap();
    let exprs = rule_exprs(&rules);
    assert!(!exprs.is_empty(), "the rules file has no rules");
    for e in &exprs {
        check("vigil-alerts.yml", e);
    }
    assert!(
        problems.is_empty(),
        "dashboards or rules use metrics Vigil does not export (exported: {exported:?}):\n{}",
        problems.join("\n")
    );
}

/// What Grafana needs to import the dashboards and what makes them usable across setups: a
/// data source variable every panel uses, unique panel ids, defined variables only, and the
/// security dashboard filterable by service.
#[test]
fn dashboards_are_importable_grafana_dashboards() {
    for (file, d) in dashboards() {
        assert!(
            d["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{file}: uid"
        );
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: title"
        );
        assert!(
            d["schemaVersion"].as_i64().is_some_and(|v| v >= 36),
            "{file}: schemaVersion"
        );
        let variables: Vec<&Value> = d["templating"]["list"].as_array().unwrap().iter().collect();
        let names: BTreeSet<&str> = variables
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(
            variables.iter().any(|v| v["name"] == "DS_PROMETHEUS"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{file}: a DS_PROMETHEUS data source variable"
        );
        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{file}: a panel without a title: {p}");
            assert!(
                ids.insert(p["id"].as_i64().unwrap()),
                "{file}: duplicate panel id {}",
                p["id"]
            );
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{file}: {title}"
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file}: {title} has no query");
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"], "${DS_PROMETHEUS}",
                    "{file}: {title}"
                );
                let expr = t["expr"].as_str().unwrap();
                // Every `$var` used is defined (Grafana's own `$__...` aside).
                for (at, _) in expr.match_indices('$') {
                    let var: String = expr[at + 1..]
                        .chars()
                        .skip_while(|c| *c == '{')
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        var.starts_with("__") || names.contains(var.as_str()),
                        "{file}: {title} uses undefined variable ${var}"
                    );
                }
            }
        }
    }
    let (_, security) = dashboards()
        .into_iter()
        .find(|(f, _)| f == "vigil-security-overview.json")
        .expect("the security overview dashboard");
    assert!(
        variable_queries(&security).iter().any(|q| q
            .starts_with("label_values(vigil_service_records_total")
            && q.ends_with(", service)")),
        "the security dashboard has a service variable"
    );
    assert!(
        panel_queries(&security)
            .iter()
            .any(|q| q.contains(r#"service=~"$service""#)),
        "the security dashboard's panels filter by the service variable"
    );
}

// ---------------------------------------------------------------------------------------------
// The real Prometheus

/// A Prometheus tool from the Debian package: on PATH or in /usr/bin. Missing is a failure.
fn tool(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    on_path
        .chain([Path::new("/usr/bin").join(name)])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed (looked on PATH and in /usr/bin). Run the suite \
                 with scripts/test, which installs the Debian package `prometheus`, or \
                 install it yourself: apt-get install --no-install-recommends prometheus"
            )
        })
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let out = Command::new(tool("promtool"))
        .arg("check")
        .arg("rules")
        .arg(rules_file())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules failed:\n{text}");
    let rules = std::fs::read_to_string(rules_file()).unwrap();
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", rule_count(&rules))),
        "{text}"
    );
}

/// A `prometheus` server on a loopback port with its own storage. Killed on drop; its log is
/// printed if the test failed.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`, path `/metrics`) every second as job
    /// `vigil`, with the shipped alerting rules evaluated every second; returns once it is
    /// ready to answer queries.
    async fn start(target: std::net::SocketAddr) -> Prometheus {
        let binary = tool("prometheus");
        // The port is found by binding and releasing it; another process may take it in
        // between, so a start that loses that race is retried on a new port.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = dir.path().join("prometheus.yml");
            std::fs::write(
                &config,
                format!(
                    "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                     rule_files:\n  - {rules:?}\n\
                     scrape_configs:\n  - job_name: vigil\n    metrics_path: /metrics\n    \
                     static_configs:\n      - targets: [\"{target}\"]\n",
                    rules = rules_file().display().to_string(),
                ),
            )
            .unwrap();
            let log = dir.path().join("prometheus.log");
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut p = Prometheus {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log,
                _dir: dir,
            };
            match p.wait_ready().await {
                Ok(()) => return p,
                Err(log) if log.contains("address already in use") => continue,
                Err(log) => panic!("prometheus did not start:\n{log}"),
            }
        }
        panic!("prometheus found no free port in 3 tries");
    }

    /// Waits until `/-/ready` answers 200; on exit or after 60 s, returns why and the log.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("exited with {status}:\n{}", self.log_text()));
            }
            let ready = client
                .get(format!("{}/-/ready", self.url))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 60s:\n{}", self.log_text()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/<path>` of Prometheus' HTTP API, as JSON.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        reqwest::Client::new()
            .get(format!("{}/api/v1/{path}", self.url))
            .query(params)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// An instant query; panics unless Prometheus answers `success`.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let answer = self.api("query", &[("query", promql)]).await;
        assert_eq!(answer["status"], "success", "{promql}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of an instant query that answers one series.
    async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await;
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- prometheus log ({}) ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic

fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .build()
}

/// `LOGS` logs from `checkout` over OTLP/gRPC, the first carrying an email address and an AWS
/// key (redacted, and the key raises the secret-exposure alert); `SPANS` server spans from
/// `frontend` over OTLP/HTTP, the first a SQL injection attempt (the shipped Sigma rule).
async fn send_traffic(vigil: &Vigil) {
    let logs = SdkLoggerProvider::builder()
        .with_resource(resource("checkout"))
        .with_batch_exporter(
            LogExporter::builder()
                .with_tonic()
                .with_endpoint(vigil.grpc_endpoint())
                .build()
                .unwrap(),
        )
        .build();
    let spans = SdkTracerProvider::builder()
        .with_resource(resource("frontend"))
        .with_batch_exporter(
            SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/traces", vigil.http_endpoint()))
                .build()
                .unwrap(),
        )
        .build();
    // The SDK's processors block: run them off the async runtime.
    tokio::task::spawn_blocking(move || {
        let logger = logs.logger("shop");
        for i in 0..LOGS {
            let mut rec = logger.create_log_record();
            rec.set_severity_number(Severity::Info);
            rec.set_body(AnyValue::from(if i == 0 {
                format!("refund for jane.doe@example.com exported with AWS_ACCESS_KEY_ID={AWS_KEY}")
            } else {
                format!("order {i} placed")
            }));
            logger.emit(rec);
        }
        logs.shutdown().unwrap();

        let tracer = spans.tracer("shop");
        for i in 0..SPANS {
            let query = if i == 0 {
                "id=1' OR 1=1 --".to_owned()
            } else {
                format!("page={i}")
            };
            tracer
                .span_builder("GET /products")
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("url.path", "/products"),
                    KeyValue::new("url.query", query),
                    KeyValue::new("http.request.method", "GET"),
                    KeyValue::new("http.response.status_code", 200),
                ])
                .start(&tracer)
                .end();
        }
        spans.shutdown().unwrap();
    })
    .await
    .unwrap();
}

/// The metric names in a text exposition that have at least one series.
fn names_with_series(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Real traffic into Vigil, a real Prometheus scraping it: the exposition passes `promtool`,
/// the series Vigil promises reach Prometheus with the right values, every dashboard query
/// runs (and answers wherever Vigil has the series it asks for), and every alerting rule
/// evaluates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_vigil_and_runs_every_dashboard_query_and_rule() {
    // Fail early, before any traffic, if the tools are missing.
    let promtool = tool("promtool");
    tool("prometheus");
    let vigil = Vigil::start("");
    send_traffic(&vigil).await;
    // One SQL query, so the query metrics have series too.
    assert_eq!(
        vigil.scalar_i64("SELECT count(*) FROM logs").await,
        LOGS as i64
    );
    eventually(
        Duration::from_secs(30),
        "the detector raised the SQL injection and secret exposure alerts",
        || async { vigil.metric("vigil_alerts_firing", &[]).await >= 2.0 },
    )
    .await;

    // The exposition format, linted by Prometheus' own checker.
    let exposition = reqwest::get(format!("{}/metrics", vigil.api_endpoint()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics found problems ({}):\n{}{}\n---- exposition ----\n{exposition}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let with_series = names_with_series(&exposition);

    let prometheus = Prometheus::start(vigil.addrs.api).await;
    eventually(
        Duration::from_secs(60),
        "prometheus scraped vigil (up == 1)",
        || async { prometheus.value(r#"up{job="vigil"}"#).await == Some(1.0) },
    )
    .await;

    // Series that the traffic must have produced, with the values Vigil counted.
    let sqli_alerts =
        format!(r#"sum(vigil_alerts_total{{rule_id="{SQLI_RULE}",severity="high"}})"#);
    let expect = [
        (
            r#"sum(vigil_received_records_total{signal="logs",transport="grpc"})"#,
            Some(LOGS),
        ),
        (
            r#"sum(vigil_received_records_total{signal="spans",transport="http"})"#,
            Some(SPANS),
        ),
        (
            r#"sum(vigil_service_records_total{service="checkout",signal="logs"})"#,
            Some(LOGS),
        ),
        (
            r#"sum(vigil_service_records_total{service="frontend",signal="spans"})"#,
            Some(SPANS),
        ),
        (sqli_alerts.as_str(), Some(1)),
        (
            r#"sum(vigil_alerts_total{rule_id="exposure.secret_in_telemetry"})"#,
            Some(1),
        ),
        (
            r#"sum(vigil_redactions_total{entity="email",category="pii",service="checkout"})"#,
            None,
        ),
        (
            r#"sum(vigil_redactions_total{category="secret",service="checkout"})"#,
            None,
        ),
        (
            r#"sum(vigil_ingest_duration_seconds_bucket{signal="logs",transport="grpc",le="+Inf"})"#,
            None,
        ),
        (r#"sum(vigil_received_bytes_total)"#, None),
        (r#"sum(vigil_detector_records_total{signal="logs"})"#, None),
        (r#"sum(vigil_detector_records_total{signal="spans"})"#, None),
        (r#"sum(vigil_detector_batch_duration_seconds_count)"#, None),
        (r#"sum(vigil_queries_total{outcome="ok"})"#, None),
        (r#"vigil_alerts_firing"#, None),
        (r#"vigil_wal_bytes"#, None),
        (r#"sum(vigil_detector_rules{kind="sigma"})"#, None),
        (r#"vigil_detector_tracked{kind="baseline_services"}"#, None),
        (
            r#"vigil_detector_over_limit_total{kind="graph_edges"}"#,
            Some(0),
        ),
    ];
    for (promql, want) in expect {
        let got = prometheus.value(promql).await;
        match want {
            Some(n) => assert_eq!(got, Some(n as f64), "{promql}"),
            None => assert!(got.is_some_and(|v| v > 0.0), "{promql} = {got:?}"),
        }
    }
    assert_eq!(
        prometheus.value("vigil_alerts_firing").await,
        Some(vigil.metric("vigil_alerts_firing", &[]).await)
    );

    // Every dashboard query is valid PromQL that Prometheus evaluates. One whose metrics all
    // have series must answer something, or it is filtering on a label value Vigil never
    // writes; a trailing `> 0` hides zero rows by design and is exempt.
    let mut must_answer = Vec::new();
    for (file, dashboard) in dashboards() {
        let variables: Vec<String> = variable_queries(&dashboard)
            .iter()
            .map(|q| variable_promql(q).to_owned())
            .collect();
        for q in panel_queries(&dashboard).into_iter().chain(variables) {
            let sent = as_grafana_sends(&q);
            prometheus.query(&sent).await;
            if selected_metrics(&q).is_subset(&with_series) && !q.trim_end().ends_with("> 0") {
                must_answer.push((file.clone(), sent));
            }
        }
    }
    assert!(must_answer.len() > 20, "{must_answer:#?}");
    // rate() needs two samples in its window: give Prometheus a few scrapes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut empty = Vec::new();
        for (file, q) in &must_answer {
            if prometheus.query(q).await.is_empty() {
                empty.push(format!("{file}: {q}"));
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dashboard queries answer nothing although Vigil exports their metrics:\n{}",
            empty.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Prometheus loaded every shipped rule and evaluates each without error.
    let rules_text = std::fs::read_to_string(rules_file()).unwrap();
    eventually(
        Duration::from_secs(30),
        "every alerting rule evaluated",
        || async {
            let answer = prometheus.api("rules", &[]).await;
            let rules: Vec<Value> = answer["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            assert_eq!(rules.len(), rule_count(&rules_text), "{answer}");
            for r in &rules {
                assert_ne!(
                    r["health"], "err",
                    "rule {} fails: {}",
                    r["name"], r["lastError"]
                );
            }
            rules.iter().all(|r| r["health"] == "ok")
        },
    )
    .await;
    // Nothing is wrong with this Vigil: no health alert is even pending.
    let alerts = prometheus.query("ALERTS").await;
    assert!(alerts.is_empty(), "{alerts:#?}");
}
