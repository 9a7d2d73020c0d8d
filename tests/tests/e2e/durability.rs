//! Acknowledged means durable: SIGKILL during ingest and graceful restarts lose nothing that
//! was acknowledged and duplicate nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::Vigil;
use crate::otlp::{logs_request, now_ns, post_logs};

const RECORDS_PER_REQUEST: usize = 50;

/// Sends requests from `clients` concurrent senders until `stop` fires; returns the ids of
/// acknowledged (HTTP 200) requests.
async fn load(vigil: &Vigil, round: usize, clients: usize, run_for: Duration) -> BTreeSet<String> {
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let endpoint = vigil.http_endpoint();
    let deadline = tokio::time::Instant::now() + run_for;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (acked, endpoint) = (acked.clone(), endpoint.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0.. {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let id = format!("r{round}-c{c}-{i}");
                let req = logs_request("crash-test", &id, RECORDS_PER_REQUEST, now_ns());
                match post_logs(&client, &endpoint, &req).await {
                    Some(200) => {
                        acked.lock().unwrap().insert(id);
                    }
                    Some(_) => {}
                    None => break, // server gone
                }
            }
        }));
    }
    futures::future::join_all(tasks).await;
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

/// Records per request id as stored.
async fn stored(vigil: &Vigil) -> HashMap<String, i64> {
    vigil
        .rows("SELECT attributes['test.req'] AS req, count(*) AS n FROM logs GROUP BY 1")
        .await
        .into_iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_i64().unwrap()))
        .collect()
}

fn assert_exactly_once(acked: &BTreeSet<String>, stored: &HashMap<String, i64>) {
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged requests missing after restart, e.g. {missing:?}"
    );
    // Every stored request is whole (all-or-nothing) and stored once.
    let wrong: Vec<_> = stored
        .iter()
        .filter(|(_, n)| **n != RECORDS_PER_REQUEST as i64)
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "requests stored partially or more than once: {wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_ingest_loses_no_acknowledged_record() {
    // Short segments so compactions run (and get interrupted) during the test too.
    let config = "[storage]\nsegment_max_age = \"700ms\"\n";
    let mut vigil = Vigil::start(config);
    let mut acked = BTreeSet::new();
    for round in 0..3 {
        let killer = {
            let pid = vigil.pid();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1200 + 500 * round as u64)).await;
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            })
        };
        let got = load(&vigil, round, 8, Duration::from_secs(10)).await;
        killer.await.unwrap();
        assert!(!got.is_empty(), "round {round}: nothing was acknowledged");
        acked.extend(got);
        vigil = vigil.restart(config);
        assert_exactly_once(&acked, &stored(&vigil).await);
    }
    assert!(
        vigil.log_text().contains("replayed wal segment"),
        "restart did not replay the WAL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_and_restart_keeps_every_acknowledged_record() {
    let mut vigil = Vigil::start("");
    let sender = {
        let endpoint = vigil.http_endpoint();
        tokio::spawn(async move {
            // Keep sending until the server stops answering.
            let client = reqwest::Client::new();
            let mut acked = BTreeSet::new();
            for i in 0..100_000 {
                let id = format!("term-{i}");
                match post_logs(
                    &client,
                    &endpoint,
                    &logs_request("term-test", &id, RECORDS_PER_REQUEST, now_ns()),
                )
                .await
                {
                    Some(200) => {
                        acked.insert(id);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = vigil.stop_term();
    assert!(
        status.success(),
        "graceful shutdown exited with {status}:\n{}",
        vigil.log_text()
    );
    let acked = sender.await.unwrap();
    assert!(!acked.is_empty());
    assert!(vigil.log_text().contains("shutdown complete"));
    let vigil = vigil.restart("");
    assert_exactly_once(&acked, &stored(&vigil).await);
}
