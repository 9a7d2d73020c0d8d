//! The query API, the `vigil query` command against a server, health probes and backpressure.

use std::time::Duration;

use crate::harness::{Vigil, eventually, vigil_binary};
use crate::otlp::{logs_request, now_ns, post_logs};

async fn seed(vigil: &Vigil) {
    let client = reqwest::Client::new();
    for (service, n) in [("checkout", 30), ("payments", 12)] {
        let status = post_logs(
            &client,
            &vigil.http_endpoint(),
            &logs_request(service, service, n, now_ns()),
        )
        .await;
        assert_eq!(status, Some(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_api_answers_in_every_format_and_refuses_bad_sql() {
    let vigil = Vigil::start("");
    seed(&vigil).await;
    let sql = "SELECT service, count(*) AS n, max(time) AS last FROM logs GROUP BY service ORDER BY service";

    let json = vigil.query(sql).await;
    assert_eq!(json["row_count"], 2);
    assert_eq!(json["columns"][0]["name"], "service");
    assert_eq!(json["columns"][1]["name"], "n");
    assert_eq!(json["rows"][0][0], "checkout");
    assert_eq!(json["rows"][0][1], 30);
    assert_eq!(json["rows"][1][1], 12);
    let last = json["rows"][0][2].as_str().unwrap();
    assert!(
        last.ends_with('Z') && last.contains('T'),
        "RFC 3339 timestamp, got {last}"
    );
    assert!(json["elapsed_ms"].is_number());

    let (status, csv) = vigil.query_raw(sql, "csv").await;
    assert_eq!(status, 200);
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.starts_with("service,n,last\n"), "{csv}");
    assert!(csv.contains("checkout,30,"));

    let (status, ndjson) = vigil.query_raw(sql, "ndjson").await;
    assert_eq!(status, 200);
    let lines: Vec<serde_json::Value> = String::from_utf8(ndjson)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["service"], "payments");
    assert_eq!(lines[1]["n"], 12);

    let (status, arrow) = vigil.query_raw(sql, "arrow").await;
    assert_eq!(status, 200);
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow), None).unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 2);

    for bad in [
        "SELEC nonsense",
        "SELECT no_such_column FROM logs",
        "SELECT * FROM no_such_table",
    ] {
        let (status, body) = vigil.query_raw(bad, "json").await;
        assert_eq!(status, 400, "{bad}");
        let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {err}"
        );
    }
    for write in [
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO logs SELECT * FROM logs",
        "DROP TABLE logs",
        "COPY (SELECT 1) TO '/tmp/vigil-e2e-copy.csv'",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
    ] {
        let (status, body) = vigil.query_raw(write, "json").await;
        assert_eq!(
            status,
            400,
            "{write} must be refused: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert!(!std::path::Path::new("/tmp/vigil-e2e-copy.csv").exists());
    // Analysts' arithmetic: math functions are part of the engine.
    let math = vigil.rows("SELECT round(2.345, 2), abs(-3), ln(1.0)").await;
    assert_eq!(math[0][1], 3);
    assert_eq!(math[0][2], 0.0);
    // Nothing was changed by the refused statements.
    assert_eq!(vigil.scalar_i64("SELECT count(*) FROM logs").await, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigil_query_cli_reads_a_server_and_a_data_directory() {
    // Short segments, so what the offline query reads is compacted Parquet.
    let mut vigil = Vigil::start("[storage]\nsegment_max_age = \"300ms\"\n");
    seed(&vigil).await;
    eventually(Duration::from_secs(30), "the WAL compacted", || async {
        vigil.metric("vigil_wal_bytes", &[]).await == 0.0
    })
    .await;
    let data_parent = vigil.data_dir.parent().unwrap().to_owned();
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(vigil_binary())
            .current_dir(&data_parent)
            .arg("query")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let sql =
        "SELECT service, count(*) AS n FROM logs GROUP BY service ORDER BY service".to_owned();
    let table = run(vec!["--url".into(), vigil.api_endpoint(), sql.clone()]);
    assert!(
        table.contains("checkout") && table.contains("| 30"),
        "{table}"
    );
    let csv = run(vec![
        "--url".into(),
        vigil.api_endpoint(),
        "--format".into(),
        "csv".into(),
        sql.clone(),
    ]);
    assert_eq!(csv, "service,n\ncheckout,30\npayments,12\n");

    // Offline: stop the server, read its directory directly, by absolute path and by a path
    // relative to the working directory (as an analyst types it).
    vigil.stop_term();
    let data_dir = vigil.data_dir.display().to_string();
    let relative = vigil
        .data_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for dir in [&data_dir, &relative] {
        let offline = run(vec![
            "--data-dir".into(),
            dir.clone(),
            "--format".into(),
            "csv".into(),
            sql.clone(),
        ]);
        assert_eq!(offline, csv, "{dir}");
    }
    let bad = std::process::Command::new(vigil_binary())
        .args(["query", "--data-dir", &data_dir, "SELECT nope FROM logs"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_probes() {
    let vigil = Vigil::start("");
    for path in ["/healthz", "/readyz"] {
        let r = reqwest::get(format!("{}{path}", vigil.api_endpoint()))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let metrics = reqwest::get(format!("{}/metrics", vigil.api_endpoint()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("vigil_wal_bytes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_answers_429_with_retry_after_and_loses_nothing_acknowledged() {
    // One request in flight at a time: concurrent exporters must be pushed back, not queued
    // without bound.
    let vigil = Vigil::start("[ingest]\nmax_in_flight_requests = 1\nretry_after = \"2s\"\n");
    let client = reqwest::Client::new();
    let endpoint = vigil.http_endpoint();
    let mut throttled = None;
    let mut acked = 0;
    for burst in 0..20 {
        let sends = (0..16).map(|i| {
            let (client, endpoint) = (client.clone(), endpoint.clone());
            let req = logs_request("burst", &format!("b{burst}-{i}"), 200, now_ns());
            async move {
                let r = client
                    .post(format!("{endpoint}/v1/logs"))
                    .header("content-type", "application/x-protobuf")
                    .body(prost::Message::encode_to_vec(&req))
                    .send()
                    .await
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_owned()),
                )
            }
        });
        for (status, retry_after) in futures::future::join_all(sends).await {
            match status {
                200 => acked += 1,
                429 | 503 => throttled = Some((status, retry_after)),
                other => panic!("unexpected status {other}"),
            }
        }
        if throttled.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, retry_after) =
        throttled.expect("16 concurrent exports against 1 slot were never throttled");
    assert_eq!(status, 429);
    assert_eq!(retry_after.as_deref(), Some("2"));
    assert_eq!(
        vigil.scalar_i64("SELECT count(*) FROM logs").await,
        acked * 200
    );
    assert!(
        vigil
            .metric("vigil_rejected_requests_total", &[("reason", "overloaded")])
            .await
            >= 1.0
    );
}
