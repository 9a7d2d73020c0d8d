//! Authentication end to end: API keys with scopes on every listener, keys bound to services
//! at ingest and at query time, and key rotation without a restart. Clients are the real
//! OpenTelemetry SDK exporters, a raw OTLP/gRPC client and plain HTTP.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry_otlp::{LogExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use prost::Message;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{Vigil, eventually, post_query_as};
use crate::otlp::{logs_request, now_ns};

const INGEST: &str = "vgl_e2e_ingest_any_service_000000000000000000";
const CHECKOUT: &str = "vgl_e2e_ingest_checkout_only_00000000000000000";
const ANALYST: &str = "vgl_e2e_query_every_service_0000000000000000";
const PAYMENTS_TEAM: &str = "vgl_e2e_query_payments_only_0000000000000000";
const ADMIN: &str = "vgl_e2e_admin_and_query_000000000000000000000";
const UNKNOWN: &str = "vgl_e2e_not_in_the_key_file_00000000000000000";

/// A key file entry, hashed here with SHA-256 independently of Vigil's code.
pub(crate) fn entry(id: &str, key: &str, scopes: &[&str], services: Option<&[&str]>) -> String {
    let hash = hex_sha256(key);
    let mut text =
        format!("[[keys]]\nid = {id:?}\nhash = \"sha256:{hash}\"\nscopes = {scopes:?}\n");
    if let Some(services) = services {
        text.push_str(&format!("services = {services:?}\n"));
    }
    text
}

fn hex_sha256(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn standard_keys() -> Vec<String> {
    vec![
        entry("ingest", INGEST, &["ingest"], None),
        entry(
            "checkout-ingest",
            CHECKOUT,
            &["ingest"],
            Some(&["checkout"]),
        ),
        entry("analyst", ANALYST, &["query"], None),
        entry(
            "payments-team",
            PAYMENTS_TEAM,
            &["query"],
            Some(&["payments"]),
        ),
        entry("ops", ADMIN, &["admin", "query"], None),
    ]
}

/// Writes the key file and returns the `[auth]` config that uses it.
fn auth_config(dir: &Path, keys: &[String], extra: &str) -> (PathBuf, String) {
    let path = dir.join("keys.toml");
    std::fs::write(&path, keys.concat()).unwrap();
    let config = format!(
        "[auth]\nkeys_file = {:?}\n{extra}\n",
        path.display().to_string()
    );
    (path, config)
}

fn start(config: &str) -> Vigil {
    let mut vigil = Vigil::start(config);
    vigil.api_key = Some(ADMIN.to_owned());
    vigil
}

/// POSTs a protobuf logs export with an optional key: status, and the body as the OTLP
/// response (2xx) or `google.rpc.Status` code (errors).
async fn post_logs(vigil: &Vigil, key: Option<&str>, service: &str, n: usize) -> (u16, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/logs", vigil.http_endpoint()))
        .header("content-type", "application/x-protobuf")
        .body(logs_request(service, "auth", n, now_ns()).encode_to_vec());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// `google.rpc.Status.code` (field 1) of a protobuf error body.
fn rpc_code(body: &[u8]) -> i32 {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    RpcStatus::decode(body).unwrap().code
}

async fn grpc_export(vigil: &Vigil, key: Option<&str>, service: &str) -> Result<(), tonic::Status> {
    grpc_export_n(vigil, key, service, 3).await
}

async fn grpc_export_n(
    vigil: &Vigil,
    key: Option<&str>,
    service: &str,
    n: usize,
) -> Result<(), tonic::Status> {
    let mut client = LogsServiceClient::connect(vigil.grpc_endpoint())
        .await
        .unwrap();
    let mut request = tonic::Request::new(logs_request(service, "auth-grpc", n, now_ns()));
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    client.export(request).await.map(drop)
}

async fn api_get(vigil: &Vigil, path: &str, key: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().get(format!("{}{path}", vigil.api_endpoint()));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn query_status(vigil: &Vigil, key: Option<&str>) -> u16 {
    post_query_as(vigil.addrs.api, key, "SELECT 1", "json")
        .await
        .0
}

/// Logs through the OpenTelemetry SDK's OTLP/HTTP exporter, authenticated with `key`.
async fn sdk_logs(vigil: &Vigil, key: &str, service: &str, n: usize) {
    let exporter = LogExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/logs", vigil.http_endpoint()))
        .with_headers(HashMap::from([(
            "authorization".to_owned(),
            format!("Bearer {key}"),
        )]))
        .build()
        .unwrap();
    let provider = SdkLoggerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .with_simple_exporter(exporter)
        .build();
    tokio::task::spawn_blocking(move || {
        let logger = provider.logger("e2e-auth");
        for i in 0..n {
            let mut record = logger.create_log_record();
            record.set_body(AnyValue::from(format!("checkout step {i}")));
            logger.emit(record);
        }
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_refuses_missing_unknown_and_underprivileged_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = auth_config(dir.path(), &standard_keys(), "");
    let vigil = start(&config);

    // OTLP/HTTP: 401 with a challenge and a google.rpc.Status, 403 for the wrong scope.
    let (status, body) = post_logs(&vigil, None, "checkout", 2).await;
    assert_eq!(
        (status, rpc_code(&body)),
        (401, 16),
        "no key: UNAUTHENTICATED"
    );
    assert_eq!(post_logs(&vigil, Some(UNKNOWN), "checkout", 2).await.0, 401);
    let (status, body) = post_logs(&vigil, Some(ANALYST), "checkout", 2).await;
    assert_eq!(
        (status, rpc_code(&body)),
        (403, 7),
        "query key: PERMISSION_DENIED"
    );
    assert_eq!(post_logs(&vigil, Some(INGEST), "checkout", 2).await.0, 200);
    let challenge = reqwest::Client::new()
        .post(format!("{}/v1/logs", vigil.http_endpoint()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        challenge.headers()["www-authenticate"],
        "Bearer realm=\"vigil\""
    );

    // OTLP/gRPC: the key travels as metadata.
    let code = |r: Result<(), tonic::Status>| r.err().map(|s| s.code());
    assert_eq!(
        code(grpc_export(&vigil, None, "checkout").await),
        Some(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        code(grpc_export(&vigil, Some(UNKNOWN), "checkout").await),
        Some(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        code(grpc_export(&vigil, Some(ADMIN), "checkout").await),
        Some(tonic::Code::PermissionDenied),
        "an admin key is not an ingest key"
    );
    assert_eq!(
        code(grpc_export(&vigil, Some(INGEST), "checkout").await),
        None
    );

    // The API: queries need the query scope, /metrics the admin scope; probes are open.
    assert_eq!(query_status(&vigil, None).await, 401);
    assert_eq!(query_status(&vigil, Some(UNKNOWN)).await, 401);
    assert_eq!(
        query_status(&vigil, Some(INGEST)).await,
        403,
        "ingest keys cannot query"
    );
    assert_eq!(query_status(&vigil, Some(ANALYST)).await, 200);
    assert_eq!(api_get(&vigil, "/metrics", None).await, 401);
    assert_eq!(api_get(&vigil, "/metrics", Some(ANALYST)).await, 403);
    assert_eq!(api_get(&vigil, "/metrics", Some(ADMIN)).await, 200);
    assert_eq!(api_get(&vigil, "/healthz", None).await, 200);
    // The console's pages load without a key (they ask for one); its data does not.
    assert_eq!(api_get(&vigil, "/console/", None).await, 200);
    assert_eq!(api_get(&vigil, "/api/v1/alerts", None).await, 401);
    assert_eq!(
        api_get(&vigil, "/api/v1/detector/graph", Some(INGEST)).await,
        403
    );
    assert_eq!(
        api_get(&vigil, "/api/v1/detector/graph", Some(ANALYST)).await,
        200
    );
    assert_eq!(
        api_get(&vigil, "/api/v1/alerts/0123456789abcdef", None).await,
        401
    );
    assert_eq!(
        api_get(&vigil, "/api/v1/no-such-endpoint", None).await,
        401,
        "unknown API paths do not tell strangers what exists"
    );

    // Only the accepted exports were stored (2 over HTTP, 3 over gRPC), and every refusal
    // was counted by reason.
    assert_eq!(vigil.scalar_i64("SELECT count(*) FROM logs").await, 5);
    for (reason, at_least) in [("missing", 8.0), ("invalid", 3.0), ("forbidden", 5.0)] {
        let refused = vigil
            .metric("vigil_auth_refusals_total", &[("reason", reason)])
            .await;
        assert!(refused >= at_least, "{reason}: {refused}");
    }
    assert_eq!(vigil.metric("vigil_auth_keys", &[]).await, 5.0);
    let log = vigil.log_text();
    for key in [INGEST, CHECKOUT, ANALYST, ADMIN, UNKNOWN] {
        assert!(!log.contains(key), "a key reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_bound_to_a_service_cannot_send_as_another() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = auth_config(dir.path(), &standard_keys(), "");
    let vigil = start(&config);

    // The SDK sends as the key's own service: stored.
    sdk_logs(&vigil, CHECKOUT, "checkout", 4).await;
    // A raw export claiming another service: acknowledged, every record refused as partial
    // success with the reason.
    let (status, body) = post_logs(&vigil, Some(CHECKOUT), "payments", 3).await;
    assert_eq!(status, 200);
    let response = ExportLogsServiceResponse::decode(body.as_slice()).unwrap();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_log_records, 3);
    assert!(
        partial.error_message.contains("checkout-ingest")
            && partial.error_message.contains("checkout"),
        "{}",
        partial.error_message
    );
    eventually(
        Duration::from_secs(10),
        "the checkout logs are stored",
        || async { vigil.scalar_i64("SELECT count(*) FROM logs").await == 4 },
    )
    .await;
    assert_eq!(
        vigil.rows("SELECT DISTINCT service FROM logs").await,
        vec![vec![Value::from("checkout")]]
    );
    assert_eq!(
        vigil
            .metric(
                "vigil_service_mismatch_records_total",
                &[("key", "checkout-ingest"), ("action", "reject")]
            )
            .await,
        3.0
    );

    // With `relabel`, the records are kept under the key's service and the claim stays in
    // the resource as evidence.
    let (_, relabel) = auth_config(
        dir.path(),
        &standard_keys(),
        "service_mismatch = \"relabel\"",
    );
    let vigil = vigil.restart(&relabel);
    let (status, body) = post_logs(&vigil, Some(CHECKOUT), "payments", 2).await;
    assert_eq!(status, 200);
    let response = ExportLogsServiceResponse::decode(body.as_slice()).unwrap();
    assert!(response.partial_success.is_none(), "{response:?}");
    assert_eq!(
        vigil
            .rows(
                "SELECT service, resource['service.name'], count(*) FROM logs \
                 WHERE resource['service.name'] = 'payments' GROUP BY 1, 2"
            )
            .await,
        vec![vec![
            Value::from("checkout"),
            Value::from("payments"),
            Value::from(2)
        ]]
    );
    // An unbound ingest key may send for any service.
    assert_eq!(post_logs(&vigil, Some(INGEST), "payments", 1).await.0, 200);
    assert_eq!(
        vigil
            .scalar_i64("SELECT count(*) FROM logs WHERE service = 'payments'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_key_limited_to_services_sees_only_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = auth_config(dir.path(), &standard_keys(), "");
    let vigil = start(&config);
    for (service, n) in [("payments", 3), ("checkout", 5), ("search", 7)] {
        assert_eq!(post_logs(&vigil, Some(INGEST), service, n).await.0, 200);
    }
    let as_team = |sql: &'static str| async move {
        let (status, body) = post_query_as(vigil.addrs.api, Some(PAYMENTS_TEAM), sql, "json").await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<Value>(&body).unwrap()["rows"].clone()
    };
    // Everyone else's rows are invisible however the SQL is written.
    for (sql, expected) in [
        (
            "SELECT service, count(*) FROM logs GROUP BY service",
            serde_json::json!([["payments", 3]]),
        ),
        (
            "SELECT count(*) FROM logs WHERE service = 'checkout'",
            serde_json::json!([[0]]),
        ),
        (
            "SELECT count(*) FROM (SELECT * FROM logs) t WHERE t.service <> 'payments'",
            serde_json::json!([[0]]),
        ),
        (
            "SELECT count(*) FROM logs a JOIN logs b ON a.service = b.service",
            serde_json::json!([[9]]),
        ),
        (
            "SELECT count(*) FROM logs WHERE service IN (SELECT service FROM logs)",
            serde_json::json!([[3]]),
        ),
        (
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('logs', 'spans', 'alerts', 'dead_letters')",
            serde_json::json!([[4]]),
        ),
    ] {
        assert_eq!(as_team(sql).await, expected, "{sql}");
    }
    // An unrestricted analyst sees all three services.
    let (status, body) = post_query_as(
        vigil.addrs.api,
        Some(ANALYST),
        "SELECT count(DISTINCT service) FROM logs",
        "json",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["rows"],
        serde_json::json!([[3]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    const OLD: &str = "vgl_e2e_rotation_old_000000000000000000000000";
    const NEW: &str = "vgl_e2e_rotation_new_000000000000000000000000";
    const LATER: &str = "vgl_e2e_rotation_later_0000000000000000000000";
    let admin = entry("ops", ADMIN, &["admin", "query"], None);
    let (path, config) = auth_config(
        dir.path(),
        &[admin.clone(), entry("old", OLD, &["ingest"], None)],
        "",
    );
    let vigil = start(&config);
    assert_eq!(post_logs(&vigil, Some(OLD), "checkout", 1).await.0, 200);

    // Both keys valid during the switch-over, then the old one revoked: refused right after
    // the reload, through the admin API.
    let reload = |key: &'static str| {
        let url = format!("{}/api/v1/admin/reload", vigil.api_endpoint());
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    std::fs::write(
        &path,
        [
            admin.clone(),
            entry("old", OLD, &["ingest"], None),
            entry("new", NEW, &["ingest"], None),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(reload(ADMIN).await, (200, serde_json::json!({"keys": 3})));
    assert_eq!(post_logs(&vigil, Some(OLD), "checkout", 1).await.0, 200);
    assert_eq!(post_logs(&vigil, Some(NEW), "checkout", 1).await.0, 200);
    std::fs::write(
        &path,
        [admin.clone(), entry("new", NEW, &["ingest"], None)].concat(),
    )
    .unwrap();
    assert_eq!(reload(ADMIN).await.0, 200);
    assert_eq!(post_logs(&vigil, Some(OLD), "checkout", 1).await.0, 401);
    assert_eq!(post_logs(&vigil, Some(NEW), "checkout", 1).await.0, 200);

    // Only admins reload; a broken file is refused and the keys in use stay valid.
    assert_eq!(reload(NEW).await.0, 403);
    std::fs::write(&path, "[[keys]]\nid = \"x\"\nhash = \"plain-text-key\"\n").unwrap();
    let (status, body) = reload(ADMIN).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("keys.toml"),
        "{body}"
    );
    assert_eq!(post_logs(&vigil, Some(NEW), "checkout", 1).await.0, 200);

    // SIGHUP reloads too.
    std::fs::write(
        &path,
        [admin, entry("later", LATER, &["ingest"], None)].concat(),
    )
    .unwrap();
    nix::sys::signal::kill(vigil.pid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    eventually(
        Duration::from_secs(10),
        "the key added before SIGHUP works",
        || async { post_logs(&vigil, Some(LATER), "checkout", 1).await.0 == 200 },
    )
    .await;
    assert_eq!(post_logs(&vigil, Some(NEW), "checkout", 1).await.0, 401);
    assert_eq!(vigil.scalar_i64("SELECT count(*) FROM logs").await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_key_is_rate_limited_without_slowing_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    const FLOOD: &str = "vgl_e2e_rate_flood_00000000000000000000000000";
    let keys = [
        entry("flood", FLOOD, &["ingest"], None),
        entry("ingest", INGEST, &["ingest"], None),
        entry("ops", ADMIN, &["admin", "query"], None),
    ];
    // 50 records/s per key, bursts of 100.
    let (_, config) = auth_config(
        dir.path(),
        &keys,
        "[ingest.rate_limits]\nkey_records_per_second = 50\n",
    );
    let vigil = start(&config);

    // 30 requests of 60 records: far over 100 + 50/s however slowly they go out.
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..30 {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/logs", vigil.http_endpoint()))
            .header("content-type", "application/x-protobuf")
            .bearer_auth(FLOOD)
            .body(logs_request("batch", "flood", 60, now_ns()).encode_to_vec())
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response.headers().get("retry-after").cloned();
        }
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited > 0, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let retry_after: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    // Over gRPC the same key gets RESOURCE_EXHAUSTED. Each accepted export of a whole
    // burst drains the bucket, so a refusal comes at once unless the machine stalls.
    let mut grpc_accepted = 0;
    let mut grpc_code = None;
    for _ in 0..5 {
        match grpc_export_n(&vigil, Some(FLOOD), "batch", 100).await {
            Ok(()) => grpc_accepted += 100,
            Err(status) => {
                grpc_code = Some(status.code());
                break;
            }
        }
    }
    assert_eq!(grpc_code, Some(tonic::Code::ResourceExhausted));

    // Another key keeps its whole budget while the flood is refused.
    for _ in 0..3 {
        assert_eq!(post_logs(&vigil, Some(INGEST), "checkout", 30).await.0, 200);
    }
    let accepted_flood = 60 * (statuses.len() - limited) as i64 + grpc_accepted;
    assert_eq!(
        vigil
            .scalar_i64("SELECT count(*) FROM logs WHERE service = 'batch'")
            .await,
        accepted_flood,
        "refused requests stored nothing"
    );
    assert_eq!(
        vigil
            .scalar_i64("SELECT count(*) FROM logs WHERE service = 'checkout'")
            .await,
        90
    );
    assert!(
        vigil
            .metric(
                "vigil_rate_limited_requests_total",
                &[("key", "flood"), ("limit", "key_records")]
            )
            .await
            >= limited as f64 + 1.0
    );
    assert_eq!(
        vigil
            .metric("vigil_rate_limited_requests_total", &[("key", "ingest")])
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_admin_actions_are_audited_and_only_admins_read_the_trail() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = auth_config(dir.path(), &standard_keys(), "");
    let vigil = start(&config);
    let as_key = |key: &'static str, sql: &'static str| async move {
        post_query_as(vigil.addrs.api, Some(key), sql, "json")
            .await
            .0
    };
    assert_eq!(
        as_key(
            ANALYST,
            "SELECT count(*) FROM logs WHERE attributes['user.email'] = 'alice@example.com'"
        )
        .await,
        200
    );
    assert_eq!(as_key(PAYMENTS_TEAM, "SELECT 1").await, 200);
    // The trail is not there for non-admins: not readable, not even listed.
    assert_eq!(as_key(ANALYST, "SELECT * FROM audit").await, 400);
    let (status, body) = post_query_as(
        vigil.addrs.api,
        Some(ANALYST),
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'audit'",
        "json",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["rows"],
        serde_json::json!([[0]])
    );
    let reload = reqwest::Client::new()
        .post(format!("{}/api/v1/admin/reload", vigil.api_endpoint()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);

    let sql = "SELECT principal, action, method, path, status, detail, rows FROM audit \
               WHERE principal <> 'ops' OR action = 'reload' ORDER BY time";
    eventually(
        Duration::from_secs(10),
        "the audit rows are stored",
        || async { vigil.rows(sql).await.len() >= 5 },
    )
    .await;
    let rows = vigil.rows(sql).await;
    let find = |principal: &str, status: u64, needle: &str| {
        rows.iter()
            .find(|r| {
                r[0] == principal
                    && r[4] == status
                    && r[5].as_str().unwrap_or_default().contains(needle)
            })
            .unwrap_or_else(|| panic!("no audit row for {principal} {status} {needle}: {rows:?}"))
            .clone()
    };
    let filtered = find("analyst", 200, "user.email");
    assert_eq!(filtered[1], "query");
    assert_eq!(filtered[2], "POST");
    assert_eq!(filtered[3], "/api/v1/query");
    assert_eq!(filtered[6], 1, "rows answered");
    assert_eq!(find("analyst", 400, "FROM audit")[1], "query");
    assert_eq!(find("payments-team", 200, "SELECT 1")[6], 1);
    assert_eq!(find("ops", 200, "keys valid")[1], "reload");
    // SQL is redacted like every stored text.
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.contains("alice@example.com"), "{text}");
}
