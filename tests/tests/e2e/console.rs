//! The analyst console and the API behind it: alert triage (acknowledge, resolve) recorded
//! durably and reaching the detector and the sinks, the detector's graph and baseline
//! snapshots, the console's assets and headers, and the console itself in headless Chromium.
//!
//! The browser test needs Node.js, Debian's `chromium` and `npm ci` in `tests/browser`, which
//! `scripts/test` installs; without them it fails rather than skips.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use crate::demo::start_demo;
use crate::detection::{Request, leak_key, send_requests};
use crate::harness::{Vigil, eventually, post_query};

const EXPOSURE: &str = "exposure.secret_in_telemetry";

/// Every webhook body a `json` sink delivered.
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<Value>>>);

impl Inbox {
    async fn start() -> (Inbox, SocketAddr) {
        let inbox = Inbox::default();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (inbox, addr)
    }

    /// Statuses delivered for alert `fingerprint`, in order.
    fn statuses(&self, fingerprint: &str) -> Vec<String> {
        let mut out = Vec::new();
        for body in self.0.lock().unwrap().iter() {
            let alerts = body["alerts"].as_array().cloned().unwrap_or_default();
            for a in alerts.iter().filter(|a| a["fingerprint"] == fingerprint) {
                out.push(a["status"].as_str().unwrap_or_default().to_owned());
            }
        }
        out
    }
}

async fn receive(State(inbox): State<Inbox>, body: Bytes) -> &'static str {
    inbox
        .0
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    "ok"
}

fn json_sink(addr: SocketAddr) -> String {
    format!(
        "[alerts]\negress_allow = [\"127.0.0.1\"]\n\n[[alerts.sinks]]\nname = \"triage\"\n\
         format = \"json\"\nurl = \"http://{addr}/hook\"\ngroup_wait = \"0s\"\ngroup_interval = \"1s\"\n\
         initial_backoff = \"200ms\"\nmax_backoff = \"1s\"\n"
    )
}

/// The fingerprint of the firing exposure alert of `service`, once it is in the table.
async fn exposure_fingerprint(vigil: &Vigil, service: &str) -> String {
    let sql = format!(
        "SELECT fingerprint FROM alerts WHERE rule_id = '{EXPOSURE}' AND service = '{service}' \
         AND status = 'firing'"
    );
    eventually(Duration::from_secs(30), "the exposure alert", || async {
        !vigil.rows(&sql).await.is_empty()
    })
    .await;
    vigil.rows(&sql).await[0][0].as_str().unwrap().to_owned()
}

async fn call(method: &str, url: String, body: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    let request = match body {
        Some(b) => request
            .header("content-type", "application/json")
            .body(b.to_owned()),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Rows of an answer in the query API's JSON shape, as objects.
fn records(answer: &Value) -> Vec<serde_json::Map<String, Value>> {
    let names: Vec<String> = answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            names
                .iter()
                .cloned()
                .zip(row.as_array().unwrap().iter().cloned())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_is_recorded_durably_and_a_manual_resolve_reaches_table_and_sinks() {
    let (inbox, hook) = Inbox::start().await;
    let vigil = Vigil::start(&json_sink(hook));
    let api = vigil.api_endpoint();
    leak_key(&vigil, "billing").await;
    leak_key(&vigil, "ledger").await;
    let fp = exposure_fingerprint(&vigil, "billing").await;
    let other = exposure_fingerprint(&vigil, "ledger").await;
    eventually(
        Duration::from_secs(30),
        "the fired notification",
        || async { inbox.statuses(&fp) == ["firing"] },
    )
    .await;

    let list = |query: &'static str| {
        let api = api.clone();
        async move {
            let (status, body) = call("GET", format!("{api}/api/v1/alerts?{query}"), None).await;
            assert_eq!(status, 200, "{query}: {body}");
            records(&body)
        }
    };
    let firing = list("status=unacknowledged&rule=exposure.secret_in_telemetry").await;
    assert_eq!(firing.len(), 2, "{firing:?}");
    assert!(firing.iter().all(|a| a["acknowledged_by"].is_null()));

    // Acknowledge, with a comment holding an address: stored redacted like everything else.
    let (status, ack) = call(
        "POST",
        format!("{api}/api/v1/alerts/{fp}/acknowledge"),
        Some(r#"{"comment":"asked alice@example.com to rotate it"}"#),
    )
    .await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["action"], "acknowledge");
    assert_eq!(ack["principal"], "anonymous");
    assert_eq!(ack["status"], "firing");
    let acked = list("status=acknowledged").await;
    assert_eq!(acked.len(), 1, "{acked:?}");
    assert_eq!(acked[0]["fingerprint"], fp.as_str());
    assert_eq!(acked[0]["acknowledged_by"], "anonymous");
    let unacked = list("status=unacknowledged&service=ledger").await;
    assert_eq!(unacked.len(), 1);
    assert_eq!(unacked[0]["fingerprint"], other.as_str());
    assert!(list("service=nobody").await.is_empty());

    // Resolve: the detector resolves it now; the table and the sink hear of it.
    let (status, resolved) = call(
        "POST",
        format!("{api}/api/v1/alerts/{fp}/resolve"),
        Some(r#"{"comment":"key rotated"}"#),
    )
    .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["status"], "resolved");
    assert!(resolved["resolved_time"].as_str().unwrap().ends_with('Z'));
    let (_, changes) = call("GET", format!("{api}/api/v1/alerts/{fp}"), None).await;
    let changes = records(&changes);
    assert_eq!(
        changes
            .iter()
            .map(|c| c["status"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["firing", "resolved"],
        "the resolved row is written before the answer"
    );
    let details: Value = serde_json::from_str(changes[1]["details"].as_str().unwrap()).unwrap();
    assert_eq!(
        details["resolution"],
        json!({"manual": true, "by": "anonymous"})
    );
    eventually(
        Duration::from_secs(30),
        "the resolved notification",
        || async { inbox.statuses(&fp) == ["firing", "resolved"] },
    )
    .await;
    assert_eq!(
        vigil.metric("vigil_alerts_firing", &[]).await,
        1.0,
        "only ledger's alert still fires"
    );

    // Nothing left to act on; bad requests are refused with a reason.
    for action in ["resolve", "acknowledge"] {
        let (status, body) = call("POST", format!("{api}/api/v1/alerts/{fp}/{action}"), None).await;
        assert_eq!(status, 409, "{action}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("resolved"),
            "{body}"
        );
    }
    for (url, body, want) in [
        (
            format!("{api}/api/v1/alerts/0000000000000000/resolve"),
            None,
            404,
        ),
        (
            format!("{api}/api/v1/alerts/NOT-A-FINGERPRINT/resolve"),
            None,
            400,
        ),
        (
            format!("{api}/api/v1/alerts/{other}/acknowledge"),
            Some("{\"comment\":"),
            400,
        ),
        (
            format!("{api}/api/v1/alerts/{other}/acknowledge"),
            Some("{\"who\":\"x\"}"),
            400,
        ),
    ] {
        let (status, answer) = call("POST", url.clone(), body).await;
        assert_eq!(status, want, "{url}: {answer}");
        assert!(answer["error"].is_string(), "{url}: {answer}");
    }
    for query in [
        "status=open",
        "severity=urgent",
        "since=forever",
        "limit=0",
        "colour=red",
    ] {
        let (status, answer) = call("GET", format!("{api}/api/v1/alerts?{query}"), None).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert!(answer["error"].is_string(), "{query}: {answer}");
    }
    let (status, _) = call(
        "GET",
        format!("{api}/api/v1/alerts?service=x%27%20OR%201%3D1%20--"),
        None,
    )
    .await;
    assert_eq!(status, 200, "a quote in a filter is a literal, not SQL");

    // The actions are durable: they survive a crash, with the comment redacted.
    let vigil = vigil.restart(&json_sink(hook));
    let actions = vigil
        .rows(&format!(
            "SELECT action, principal, comment, rule_id, service, severity FROM alert_actions \
             WHERE fingerprint = '{fp}' ORDER BY time"
        ))
        .await;
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(actions[0][0], "acknowledge");
    assert_eq!(actions[1][0], "resolve");
    assert!(actions.iter().all(|a| a[1] == "anonymous"));
    assert!(
        actions
            .iter()
            .all(|a| a[3] == EXPOSURE && a[4] == "billing")
    );
    let comment = actions[0][2].as_str().unwrap();
    assert!(
        !comment.contains("alice@example.com") && comment.contains("email:"),
        "{comment}"
    );
    assert_eq!(actions[1][2], "key rotated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_left_firing_by_a_restart_can_still_be_resolved() {
    let vigil = Vigil::start("");
    leak_key(&vigil, "billing").await;
    let fp = exposure_fingerprint(&vigil, "billing").await;
    // The detector's state is gone after the restart; the table still says firing.
    let vigil = vigil.restart("");
    let api = vigil.api_endpoint();
    let (status, body) = call("POST", format!("{api}/api/v1/alerts/{fp}/resolve"), None).await;
    assert_eq!(status, 200, "{body}");
    let rows = vigil
        .rows(&format!(
            "SELECT status FROM alerts WHERE fingerprint = '{fp}' ORDER BY time, resolved_time NULLS FIRST"
        ))
        .await;
    assert_eq!(rows, [[json!("firing")], [json!("resolved")]]);
    let (status, _) = call("POST", format!("{api}/api/v1/alerts/{fp}/resolve"), None).await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detector_shows_its_graph_and_baselines() {
    let vigil = Vigil::start(
        r#"
        [detector.graph]
        learning = "3s"
        [detector.baselines]
        bucket = "1s"
        warmup_buckets = 2
        "#,
    );
    let api = vigil.api_endpoint();
    let graph = || {
        let api = api.clone();
        async move {
            let (status, body) = call("GET", format!("{api}/api/v1/detector/graph"), None).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let before = graph().await;
    assert_eq!(before["learning"], true);
    assert_eq!(before["edges"], json!([]));

    send_requests(&vigil, (0..6).map(Request::benign).collect()).await;
    eventually(Duration::from_secs(30), "the learned edge", || async {
        graph().await["edges"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    })
    .await;
    let learned = graph().await;
    let edge = &learned["edges"][0];
    assert_eq!(
        (&edge["caller"], &edge["callee"]),
        (&json!("frontend"), &json!("cart"))
    );
    assert_eq!(
        (&edge["new"], &edge["alerted"]),
        (&json!(false), &json!(false))
    );
    assert!(learned["learning_until"].as_str().unwrap().ends_with('Z'));
    let services: Vec<&str> = learned["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["cart", "frontend"]);

    // After learning, a call to a service frontend never called is a new, alerted edge.
    eventually(Duration::from_secs(30), "learning to end", || async {
        graph().await["learning"] == false
    })
    .await;
    let lateral = Request {
        callee: "payments-admin",
        ..Request::benign(1)
    };
    send_requests(&vigil, vec![lateral]).await;
    eventually(Duration::from_secs(30), "the new edge", || async {
        graph().await["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["callee"] == "payments-admin" && e["new"] == true && e["alerted"] == true)
    })
    .await;

    // Baselines: every service, then one with its recent buckets.
    let baselines = |query: String| {
        let api = api.clone();
        async move {
            call(
                "GET",
                format!("{api}/api/v1/detector/baselines{query}"),
                None,
            )
            .await
        }
    };
    let (status, all) = baselines(String::new()).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["bucket_seconds"], 1.0);
    assert_eq!(all["warmup_buckets"], 2);
    let names: Vec<&str> = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"cart") && names.contains(&"frontend"),
        "{names:?}"
    );
    let served = || async {
        let (_, one) = baselines("?service=cart".into()).await;
        let observed: f64 = one["services"][0]["metrics"][0]["history"]
            .as_array()
            .map(|h| h.iter().filter_map(|p| p["observed"].as_f64()).sum())
            .unwrap_or_default();
        (one, observed)
    };
    // The six requests cart served, bucket by bucket, once their buckets closed.
    eventually(Duration::from_secs(30), "cart's closed buckets", || async {
        served().await.1 == 6.0
    })
    .await;
    let (one, _) = served().await;
    let cart = &one["services"][0];
    assert_eq!(cart["service"], "cart");
    let metrics: Vec<&str> = cart["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["metric"].as_str().unwrap())
        .collect();
    assert_eq!(
        metrics,
        [
            "request_rate",
            "error_rate",
            "auth_failures",
            "latency_p95",
            "bytes",
            "source_addresses"
        ]
    );
    let requests = &cart["metrics"][0];
    assert_eq!(requests["unit"], "requests");
    assert!(
        requests["history"][0]["time"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    for (query, want) in [
        ("?service=nobody".to_owned(), 404),
        ("?service=".to_owned(), 400),
        (format!("?service={}", "x".repeat(300)), 400),
        ("?services=cart".to_owned(), 400),
    ] {
        let (status, body) = baselines(query.clone()).await;
        assert_eq!(status, want, "{query}: {body}");
        assert!(body["error"].is_string(), "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_strict_security_headers() {
    let vigil = Vigil::start("");
    let api = vigil.api_endpoint();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/console"] {
        let response = client.get(format!("{api}{path}")).send().await.unwrap();
        assert!(response.status().is_redirection(), "{path}");
        assert_eq!(response.headers()["location"], "/console/");
    }
    let index = client.get(format!("{api}/console/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    let headers = index.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    for want in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(want), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = index.text().await.unwrap();
    assert!(html.contains("/console/app.js"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );

    let script = client
        .get(format!("{api}/console/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(script.headers()["x-content-type-options"], "nosniff");
    let missing = client
        .get(format!("{api}/console/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("content-security-policy"));
}

/// Where the browser test writes screenshots: `VIGIL_SCREENSHOTS` (relative to the
/// workspace root), else a temporary directory.
fn screenshot_dir(scratch: &Path) -> PathBuf {
    match std::env::var_os("VIGIL_SCREENSHOTS") {
        Some(dir) => workspace_root().join(dir),
        None => scratch.join("screenshots"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn browser_tests_ready(dir: &Path) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success())
            && Path::new(&chromium).exists()
            && dir.join("node_modules/playwright-core").exists(),
        "the console browser test needs node, chromium ({chromium}) and `npm ci` in {}: \
         run scripts/test, which installs them",
        dir.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_headless_chromium() {
    let browser_dir = workspace_root().join("tests/browser");
    browser_tests_ready(&browser_dir);
    let scratch = tempfile::tempdir().unwrap();
    let (_demo, addrs) = start_demo(scratch.path()).await;
    // What the pages show: a firing credential alert to triage and the demo's new edge.
    let rules = |addrs: SocketAddr| async move {
        let (_, body) = post_query(
            addrs,
            "SELECT DISTINCT rule_id FROM alerts WHERE status = 'firing'",
            "json",
        )
        .await;
        let answer: Value = serde_json::from_slice(&body).unwrap();
        answer["rows"].to_string()
    };
    eventually(
        Duration::from_secs(90),
        "the demo's exposure and new-edge alerts",
        || async {
            let rules = rules(addrs.api).await;
            rules.contains(EXPOSURE) && rules.contains("graph.new_edge")
        },
    )
    .await;

    let out = screenshot_dir(scratch.path());
    if std::env::var_os("VIGIL_SCREENSHOTS").is_some() {
        // Screenshots for the README: let the demo play its scripted cycle (a request burst,
        // baselines past their warm-up) so the pages show more than its first seconds.
        tokio::time::sleep(Duration::from_secs(150)).await;
    }
    let mut child = Command::new("node")
        .arg(browser_dir.join("console.mjs"))
        .arg("--url")
        .arg(format!("http://{}", addrs.api))
        .arg("--out")
        .arg(&out)
        .current_dir(&browser_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a hung browser fails the test instead of holding the suite.
    let deadline = Instant::now() + Duration::from_secs(150);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("0 failed"), "{stdout}");
    for page in ["overview", "alerts", "alert", "sql", "graph", "service"] {
        assert!(
            out.join(format!("{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }

    // What the browser did is on record.
    let (_, body) = post_query(
        addrs.api,
        "SELECT action, principal, comment FROM alert_actions ORDER BY time",
        "json",
    )
    .await;
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        answer["rows"],
        json!([
            [
                "acknowledge",
                "anonymous",
                "Rotating the key now; ticket SEC-1234"
            ],
            ["resolve", "anonymous", "Key rotated"]
        ])
    );
}
