//! Alert webhooks end to end: a real HTTP receiver in the test, alerts raised by real OTLP
//! traffic (a cloud key leaked in a service's logs), and Vigil's sinks delivering to it
//! through outages, crashes, refusals and `410 Gone`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::detection::{AWS_KEY, leak_key};
use crate::harness::{Vigil, eventually};

/// How the receiver answers on one path.
#[derive(Debug, Clone)]
enum Answer {
    Ok,
    Status(u16, Option<&'static str>),
    Redirect(String),
    /// Holds the request open until the test releases the path, then answers 200.
    Hold,
}

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    answered: u16,
    at: std::time::Instant,
}

#[derive(Clone, Default)]
struct Receiver {
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Requests being held open per path, now and at most.
    held: Arc<Mutex<HashMap<String, (usize, usize)>>>,
    released: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// Counts a held request out when its handler ends, answered or dropped by a client that
/// gave up.
struct Holding(Receiver, String);

impl Drop for Holding {
    fn drop(&mut self) {
        if let Some(h) = self.0.held.lock().unwrap().get_mut(&self.1) {
            h.0 -= 1;
        }
    }
}

impl Receiver {
    /// Serves on an ephemeral loopback port until the test ends.
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let app = Router::new()
            .route("/{path}", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    fn answer(&self, path: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(path.into(), answer);
    }

    fn on(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Requests held open on `path` right now, and the most ever held at once.
    fn held(&self, path: &str) -> (usize, usize) {
        self.held
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or_default()
    }

    fn release(&self, path: &str) {
        self.released.lock().unwrap().insert(path.into());
    }

    fn delivered(&self, path: &str) -> Vec<Received> {
        self.on(path)
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }
}

async fn receive(
    State(r): State<Receiver>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = r
        .answers
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or(Answer::Ok);
    if let Answer::Hold = answer {
        {
            let mut held = r.held.lock().unwrap();
            let h = held.entry(path.clone()).or_default();
            h.0 += 1;
            h.1 = h.1.max(h.0);
        }
        let _holding = Holding(r.clone(), path.clone());
        while !r.released.lock().unwrap().contains(&path) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let response = match &answer {
        Answer::Ok | Answer::Hold => StatusCode::OK.into_response(),
        Answer::Status(code, retry_after) => {
            let status = StatusCode::from_u16(*code).unwrap();
            match retry_after {
                Some(ra) => (status, [(header::RETRY_AFTER, *ra)]).into_response(),
                None => status.into_response(),
            }
        }
        Answer::Redirect(to) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, to.clone())],
        )
            .into_response(),
    };
    r.received.lock().unwrap().push(Received {
        path,
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: body.to_vec(),
        answered: response.status().as_u16(),
        at: std::time::Instant::now(),
    });
    response
}

/// The receiver's own Standard Webhooks check (written from the specification, independent
/// of Vigil's signing code): HMAC-SHA256 over `id.timestamp.body` with the base64-decoded
/// `whsec_` secret, timestamp within five minutes.
fn verify_signature(secret: &str, r: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let (id, ts) = (&r.headers["webhook-id"], &r.headers["webhook-timestamp"]);
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap();
    if !(-300..=300).contains(&age) {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    r.headers
        .get("webhook-signature")
        .is_some_and(|h| h.split(' ').any(|s| s == format!("v1,{expected}")))
}

/// Objects whose keys depend on the alert (labels, group values, rule evidence).
const OPEN_OBJECTS: [&str; 10] = [
    "labels",
    "annotations",
    "commonLabels",
    "commonAnnotations",
    "groupLabels",
    "group_labels",
    "details",
    "data",
    "group",
    "row",
];

/// The structure of a JSON document: object keys and value types; arrays by their first
/// element; open objects as just "object".
fn shape(v: &Value, key: &str) -> Value {
    match v {
        Value::Object(_) if OPEN_OBJECTS.contains(&key) => "object".into(),
        Value::Object(m) => Value::Object(
            m.iter()
                // Set only on resolved alerts / when configured.
                .filter(|(k, _)| !matches!(k.as_str(), "end_time" | "resolved_at"))
                .map(|(k, v)| (k.clone(), shape(v, k)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.first().map(|x| shape(x, key)).into_iter().collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

fn golden(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/webhooks")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HEC_TOKEN: &str = "3f6d1a52-0c4e-4b7a-9e21-5d8c7b6a4f10";

/// Writes the secret files a config refers to; returns the config text for one sink.
fn sink(dir: &Path, name: &str, format: &str, url: String, extra: &str) -> String {
    let secret = dir.join(format!("{name}.secret"));
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    format!(
        "[[alerts.sinks]]\nname = \"{name}\"\nformat = \"{format}\"\nurl = \"{url}\"\n\
         secret_file = {secret:?}\ngroup_wait = \"0s\"\ninitial_backoff = \"200ms\"\n\
         max_backoff = \"1s\"\n{extra}\n",
        secret = secret.display().to_string()
    )
}

fn alerts_config(sinks: &[String]) -> String {
    format!(
        "[alerts]\negress_allow = [\"127.0.0.1\"]\n\n{}",
        sinks.join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_is_delivered_signed_and_shaped_like_its_golden_file() {
    let (receiver, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("hec.token");
    std::fs::write(&token, HEC_TOKEN).unwrap();
    let url = |p: &str| format!("http://{addr}/{p}");
    let config = alerts_config(&[
        sink(dir.path(), "am", "alertmanager", url("am"), ""),
        sink(dir.path(), "ocsf", "ocsf", url("ocsf"), ""),
        sink(dir.path(), "own", "json", url("own"), ""),
        sink(
            dir.path(),
            "splunk",
            "splunk_hec",
            url("splunk"),
            &format!(
                "token_file = {:?}\nhec_index = \"security\"",
                token.display().to_string()
            ),
        ),
    ]);
    let vigil = Vigil::start(&config);
    leak_key(&vigil, "billing").await;

    eventually(
        Duration::from_secs(30),
        "all four sinks delivered",
        || async {
            ["am", "ocsf", "own", "splunk"]
                .iter()
                .all(|p| !receiver.delivered(p).is_empty())
        },
    )
    .await;

    let mut ids = std::collections::HashSet::new();
    for (path, file) in [
        ("am", "alertmanager.json"),
        ("ocsf", "ocsf.json"),
        ("own", "json.json"),
        ("splunk", "splunk_hec.json"),
    ] {
        let got = &receiver.delivered(path)[0];
        assert!(
            verify_signature(SECRET, got),
            "{path}: signature does not verify: {:?}",
            got.headers
        );
        assert_eq!(got.headers["content-type"], "application/json");
        assert!(ids.insert(got.headers["webhook-id"].clone()));
        let body: Value = if path == "splunk" {
            // HEC: one JSON event per line.
            let events: Vec<Value> = std::str::from_utf8(&got.body)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            Value::Array(events)
        } else {
            serde_json::from_slice(&got.body).unwrap()
        };
        assert_eq!(
            shape(&body, ""),
            shape(&golden(file), ""),
            "{path}: payload shape differs from {file}:\n{}",
            serde_json::to_string_pretty(&body).unwrap()
        );
        let text = String::from_utf8_lossy(&got.body);
        assert!(text.contains("exposure.secret_in_telemetry"), "{text}");
        assert!(text.contains("billing"), "{text}");
        assert!(
            !text.contains(AWS_KEY),
            "the leaked key itself is never sent"
        );
    }
    let am: Value = serde_json::from_slice(&receiver.delivered("am")[0].body).unwrap();
    assert_eq!(am["version"], "4");
    assert_eq!(am["status"], "firing");
    let labels = &am["alerts"][0]["labels"];
    for label in ["alertname", "rule_id", "severity", "service"] {
        assert!(labels[label].is_string(), "label {label} missing: {labels}");
    }
    assert_eq!(labels["service"], "billing");
    // The link back resolves to the alert's rows.
    let link = am["alerts"][0]["generatorURL"].as_str().unwrap();
    let rows: Value = reqwest::get(link).await.unwrap().json().await.unwrap();
    assert_eq!(rows["row_count"], 1, "{rows}");

    let ocsf: Value = serde_json::from_slice(&receiver.delivered("ocsf")[0].body).unwrap();
    assert_eq!(ocsf[0]["class_uid"], 2004);
    assert_eq!(ocsf[0]["severity_id"], 4);
    assert_eq!(
        receiver.delivered("splunk")[0].headers["authorization"],
        format!("Splunk {HEC_TOKEN}")
    );
    assert_eq!(
        vigil
            .metric(
                "vigil_webhook_deliveries_total",
                &[("outcome", "delivered")]
            )
            .await,
        4.0
    );
    let log = vigil.log_text();
    for secret in [SECRET, HEC_TOKEN, &SECRET[6..]] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_survive_a_receiver_outage_and_a_vigil_crash() {
    let (receiver, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    receiver.answer("soc", Answer::Status(503, Some("1")));
    let config = alerts_config(&[sink(
        dir.path(),
        "soc",
        "alertmanager",
        format!("http://{addr}/soc"),
        "",
    )]);
    let mut vigil = Vigil::start(&config);
    leak_key(&vigil, "billing").await;
    leak_key(&vigil, "payments").await;
    eventually(
        Duration::from_secs(30),
        "both notifications tried and refused at least twice",
        || async {
            let tried: HashMap<String, usize> =
                receiver.on("soc").iter().fold(HashMap::new(), |mut m, r| {
                    *m.entry(r.headers["webhook-id"].clone()).or_default() += 1;
                    m
                });
            tried.len() == 2 && tried.values().all(|n| *n >= 2)
        },
    )
    .await;
    let tried = receiver.on("soc");
    let ids: Vec<String> = tried
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    // `Retry-After: 1` is honoured: no message is retried sooner than that after its last try
    // (the backoff alone would allow 100 ms).
    for id in &ids {
        let times: Vec<_> = tried
            .iter()
            .filter(|r| &r.headers["webhook-id"] == id)
            .map(|r| r.at)
            .collect();
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
        }
    }

    // Crash while the receiver is still down, then bring both back.
    vigil.stop_kill();
    receiver.answer("soc", Answer::Ok);
    let vigil = vigil.restart(&config);
    eventually(
        Duration::from_secs(30),
        "both notifications delivered after the restart",
        || async { receiver.delivered("soc").len() >= 2 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = receiver.delivered("soc");
    assert_eq!(delivered.len(), 2, "each notification delivered once");
    let mut delivered_ids: Vec<_> = delivered
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    delivered_ids.sort();
    delivered_ids.dedup();
    assert_eq!(delivered_ids.len(), 2);
    for id in &delivered_ids {
        assert!(ids.contains(id), "delivered under the id first tried: {id}");
    }
    let services: Vec<String> = delivered
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["alerts"][0]["labels"]["service"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(services.contains(&"billing".to_owned()) && services.contains(&"payments".to_owned()));
    assert!(delivered.iter().all(|r| verify_signature(SECRET, r)));
    assert_eq!(
        vigil
            .metric("vigil_webhook_outbox_messages", &[("sink", "soc")])
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_gone_and_exhausted_retries_end_as_queryable_dead_letters() {
    let (receiver, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    receiver.answer("gone", Answer::Status(410, None));
    receiver.answer("bad", Answer::Status(400, None));
    receiver.answer("flaky", Answer::Status(503, None));
    // Same port, another host name: not followed.
    receiver.answer(
        "moved",
        Answer::Redirect(format!("http://localhost:{}/elsewhere", addr.port())),
    );
    let url = |p: &str| format!("http://{addr}/{p}");
    let config = alerts_config(&[
        sink(dir.path(), "gone", "json", url("gone"), ""),
        sink(dir.path(), "bad", "json", url("bad"), ""),
        sink(
            dir.path(),
            "flaky",
            "json",
            url("flaky"),
            "retry_for = \"3s\"",
        ),
        sink(dir.path(), "moved", "json", url("moved"), ""),
    ]);
    let vigil = Vigil::start(&config);
    leak_key(&vigil, "billing").await;

    let sql = "SELECT sink, reason, attempts, last_status, service, payload, url \
               FROM dead_letters ORDER BY sink";
    eventually(Duration::from_secs(30), "four dead letters", || async {
        vigil.rows(sql).await.len() == 4
    })
    .await;
    let rows = vigil.rows(sql).await;
    let row = |sink: &str| rows.iter().find(|r| r[0] == sink).unwrap().clone();
    assert_eq!(row("bad")[1], "rejected");
    assert_eq!(row("bad")[2], 1, "400 is not retried");
    assert_eq!(row("bad")[3], 400);
    assert_eq!(row("gone")[1], "gone");
    assert_eq!(row("gone")[3], 410);
    assert_eq!(row("flaky")[1], "retries_exhausted");
    assert!(row("flaky")[2].as_u64().unwrap() >= 2, "503 is retried");
    assert_eq!(row("moved")[1], "rejected");
    for r in &rows {
        assert_eq!(r[4], "billing");
        let payload: Value = serde_json::from_str(r[5].as_str().unwrap()).unwrap();
        assert_eq!(
            payload["alerts"][0]["rule_id"],
            "exposure.secret_in_telemetry"
        );
        // Only the origin of the destination is kept.
        assert_eq!(r[6], format!("http://{addr}"));
    }
    assert!(receiver.on("elsewhere").is_empty(), "redirect was followed");
    assert_eq!(receiver.on("bad").len(), 1);

    // The sink that got 410 is down and stays quiet; the others keep working.
    assert_eq!(
        vigil
            .metric("vigil_webhook_sink_up", &[("sink", "gone")])
            .await,
        0.0
    );
    assert!(vigil.log_text().contains("WEBHOOK SINK DISABLED"));
    receiver.answer("bad", Answer::Ok);
    leak_key(&vigil, "payments").await;
    eventually(
        Duration::from_secs(30),
        "the healthy sink delivers",
        || async { !receiver.delivered("bad").is_empty() },
    )
    .await;
    assert_eq!(
        receiver.on("gone").len(),
        1,
        "a disabled sink sends nothing"
    );
    assert_eq!(
        vigil
            .metric("vigil_webhook_dead_letters_total", &[("sink", "flaky")])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_times_out_without_holding_up_other_sinks() {
    let (receiver, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    receiver.answer("hangs", Answer::Hold);
    let config = alerts_config(&[
        sink(
            dir.path(),
            "hangs",
            "json",
            format!("http://{addr}/hangs"),
            "timeout = \"300ms\"\nretry_for = \"2s\"",
        ),
        sink(
            dir.path(),
            "fine",
            "json",
            format!("http://{addr}/fine"),
            "",
        ),
    ]);
    let vigil = Vigil::start(&config);
    leak_key(&vigil, "billing").await;
    eventually(
        Duration::from_secs(30),
        "the healthy sink delivers while the other one's receiver hangs",
        || async { !receiver.delivered("fine").is_empty() },
    )
    .await;
    // Each attempt is cut off after the sink's own timeout; when the retry budget is spent
    // the notification is a dead letter that says why.
    let sql = "SELECT reason, attempts, last_status, last_error FROM dead_letters \
               WHERE sink = 'hangs'";
    eventually(
        Duration::from_secs(30),
        "the hanging sink's notification ends as a dead letter",
        || async { vigil.rows(sql).await.len() == 1 },
    )
    .await;
    let row = &vigil.rows(sql).await[0];
    assert_eq!(row[0], "retries_exhausted");
    assert!(
        row[1].as_u64().unwrap() >= 2,
        "timed-out attempts are retried: {row:?}"
    );
    assert!(row[2].is_null(), "no answer, so no status: {row:?}");
    assert!(
        row[3].as_str().unwrap().contains("timed out"),
        "the dead letter says the receiver timed out: {row:?}"
    );
    // The attempts reached the hanging receiver (the timeouts are its hangs, not refused
    // connections); it never answers, so it never records a delivery.
    assert!(
        receiver.held("hangs").1 >= 1,
        "the hanging receiver was never reached"
    );
    assert_eq!(receiver.delivered("fine").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_destination_has_its_own_request_concurrency() {
    let (receiver, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    receiver.answer("one", Answer::Hold);
    receiver.answer("four", Answer::Hold);
    // One notification per service: four messages ready at once for each sink.
    let extra = |n: usize| format!("concurrency = {n}\ngroup_by = [\"service\"]");
    let config = alerts_config(&[
        sink(
            dir.path(),
            "one",
            "json",
            format!("http://{addr}/one"),
            &extra(1),
        ),
        sink(
            dir.path(),
            "four",
            "json",
            format!("http://{addr}/four"),
            &extra(4),
        ),
    ]);
    let vigil = Vigil::start(&config);
    let services = ["billing", "payments", "checkout", "search"];
    for service in services {
        leak_key(&vigil, service).await;
    }
    eventually(
        Duration::from_secs(30),
        "four requests in flight at once to the sink allowed four",
        || async { receiver.held("four").0 == 4 },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "all four notifications queued for the sink allowed one",
        || async {
            vigil
                .metric("vigil_webhook_outbox_messages", &[("sink", "one")])
                .await
                == 4.0
        },
    )
    .await;
    // Three notifications are due and waiting; the sink still has only one request open.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.held("one"), (1, 1));
    receiver.release("four");
    receiver.release("one");
    eventually(
        Duration::from_secs(30),
        "every notification delivered to both sinks",
        || async { receiver.delivered("one").len() == 4 && receiver.delivered("four").len() == 4 },
    )
    .await;
    assert_eq!(
        receiver.held("one").1,
        1,
        "never more than one request open"
    );
    assert_eq!(receiver.held("four").1, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_still_inside_group_wait_survive_a_crash() {
    let (receiver, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Long enough that the crash comes well before the group is due.
    let config = alerts_config(&[sink(
        dir.path(),
        "soc",
        "json",
        format!("http://{addr}/soc"),
        "group_wait = \"10s\"",
    )
    .replace("group_wait = \"0s\"\n", "")]);
    let mut vigil = Vigil::start(&config);
    leak_key(&vigil, "billing").await;
    let groups = vigil.data_dir.join("outbox/soc/groups.json");
    eventually(
        Duration::from_secs(30),
        "the alert is held in the sink's saved grouping state",
        || async {
            std::fs::read_to_string(&groups)
                .is_ok_and(|t| t.contains("exposure.secret_in_telemetry"))
        },
    )
    .await;
    vigil.stop_kill();
    assert!(
        receiver.on("soc").is_empty(),
        "the notification went out before the crash; the test did not exercise group_wait"
    );
    let vigil = vigil.restart(&config);
    eventually(
        Duration::from_secs(40),
        "the waiting alert is delivered after the restart",
        || async { !receiver.delivered("soc").is_empty() },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = receiver.delivered("soc");
    assert_eq!(delivered.len(), 1, "delivered once");
    let body: Value = serde_json::from_slice(&delivered[0].body).unwrap();
    assert_eq!(body["alerts"][0]["service"], "billing", "{body}");
    assert_eq!(
        vigil
            .metric("vigil_webhook_outbox_messages", &[("sink", "soc")])
            .await,
        0.0
    );
}
