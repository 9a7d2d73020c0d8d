//! `vigil demo` as a newcomer runs it: within a minute of start, the generated attacks are
//! alerts an analyst can query, and the generated PII is not stored.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Addrs, eventually, post_query, vigil_binary};

/// Kills the demo when the test ends, however it ends.
pub(crate) struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `vigil demo` on ephemeral loopback ports with its data in `dir`; answers once it
/// listens.
pub(crate) async fn start_demo(dir: &Path) -> (Demo, Addrs) {
    let addr_file = dir.join("addrs.json");
    let demo = Demo(
        Command::new(vigil_binary())
            .arg("demo")
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            // Relative, as the demo's own default (`vigil-demo-data`) is.
            .args(["--api-addr", "127.0.0.1:0", "--data-dir", "data"])
            .arg("--addr-file")
            .arg(&addr_file)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually(Duration::from_secs(30), "demo listening", || async {
        addr_file.exists()
    })
    .await;
    let addrs: Addrs = serde_json::from_slice(&std::fs::read(&addr_file).unwrap()).unwrap();
    (demo, addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_attacks_as_alerts_within_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let (_demo, addrs) = start_demo(dir.path()).await;
    let query = |sql: &'static str| async move {
        let (_, body) = post_query(addrs.api, sql, "json").await;
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        answer["rows"].as_array().cloned().unwrap_or_default()
    };
    let wanted = [
        "exposure.secret_in_telemetry",
        // Shipped Sigma rules: SQL injection, brute force, scanner user agent.
        "4f7c1d52-8a3e-4c0b-9d6e-1b2a3c4d5e01",
        "7b1e2c3d-4f5a-4b6c-8d9e-0f1a2b3c4d03",
        "974e237b-6e3e-468b-ad18-acb6b340ef26",
        "graph.new_edge",
    ];
    eventually(
        Duration::from_secs(60),
        "every scripted attack is an alert",
        || async {
            let rules: Vec<String> = query("SELECT DISTINCT rule_id FROM alerts")
                .await
                .iter()
                .map(|r| r[0].as_str().unwrap_or_default().to_owned())
                .collect();
            wanted.iter().all(|w| rules.iter().any(|r| r == w))
        },
    )
    .await;
    let leaked = query(
        "SELECT count(*) FROM logs WHERE body LIKE '%@example.com%' OR body LIKE '%4111 1111%'",
    )
    .await;
    assert_eq!(leaked[0][0], 0, "demo PII reached storage");
    let redacted =
        query("SELECT count(*) FROM logs WHERE body LIKE '%[REDACTED:%' OR body LIKE '%email:%'")
            .await;
    assert!(
        redacted[0][0].as_i64().unwrap() > 0,
        "the demo sends PII to redact"
    );
}
