//! Compaction, retention and partition pruning, observed from outside: SQL answers, files on
//! disk, metrics.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Vigil, eventually};
use crate::otlp::{logs_request, now_ns, post_logs};

const HOUR_NS: u64 = 3_600_000_000_000;

fn parquet_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.join("parquet")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

async fn send(vigil: &Vigil, req_id: &str, n: usize, time_ns: u64) {
    let client = reqwest::Client::new();
    let status = post_logs(
        &client,
        &vigil.http_endpoint(),
        &logs_request("store-test", req_id, n, time_ns),
    )
    .await;
    assert_eq!(status, Some(200), "export of {req_id} failed");
}

async fn wal_empty(vigil: &Vigil) -> bool {
    vigil.metric("vigil_wal_bytes", &[]).await == 0.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_moves_wal_to_parquet_without_gap_or_duplicate() {
    let vigil = Vigil::start("[storage]\nsegment_max_age = \"300ms\"\n");
    let mut sent = 0;
    for i in 0..20 {
        send(&vigil, &format!("c{i}"), 100, now_ns()).await;
        sent += 100;
        // While segments are being compacted, every answer is complete: no gap, no double count.
        assert_eq!(vigil.scalar_i64("SELECT count(*) FROM logs").await, sent);
    }
    eventually(Duration::from_secs(30), "all segments compacted", || {
        wal_empty(&vigil)
    })
    .await;
    assert_eq!(vigil.scalar_i64("SELECT count(*) FROM logs").await, 2000);
    assert_eq!(vigil.scalar_i64("SELECT count(DISTINCT concat(attributes['test.req'], '/', attributes['test.seq'])) FROM logs").await, 2000);
    let files = parquet_files(&vigil.data_dir);
    assert!(!files.is_empty());
    for f in &files {
        let rel = f
            .strip_prefix(vigil.data_dir.join("parquet"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            regex_like_partition(&rel),
            "file {rel} is not in signal=logs/date=YYYY-MM-DD/hour=HH/"
        );
        // zstd: the footer names the codec.
        let bytes = std::fs::read(f).unwrap();
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
    }
    assert!(
        vigil
            .metric("vigil_compactions_total", &[("outcome", "ok")])
            .await
            >= 1.0
    );
}

fn regex_like_partition(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    parts.len() == 4
        && parts[0] == "signal=logs"
        && parts[1].len() == "date=2026-01-01".len()
        && parts[1].starts_with("date=")
        && parts[2].len() == "hour=00".len()
        && parts[2].starts_with("hour=")
        && parts[3].ends_with(".parquet")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_data_older_than_max_age() {
    let config = "[storage]\nsegment_max_age = \"300ms\"\n[retention]\nmax_age = \"1day\"\ncheck_interval = \"200ms\"\n";
    let vigil = Vigil::start(config);
    send(&vigil, "old", 50, now_ns() - 72 * HOUR_NS).await;
    send(&vigil, "new", 50, now_ns()).await;
    eventually(
        Duration::from_secs(30),
        "old data removed by retention",
        || async {
            vigil
                .scalar_i64("SELECT count(*) FROM logs WHERE attributes['test.req'] = 'old'")
                .await
                == 0
        },
    )
    .await;
    eventually(Duration::from_secs(30), "new data compacted", || {
        wal_empty(&vigil)
    })
    .await;
    assert_eq!(vigil.scalar_i64("SELECT count(*) FROM logs").await, 50);
    // Retention takes a file out of the catalog (queries stop seeing it) just before it
    // unlinks it, so the file may still be there for a moment.
    eventually(
        Duration::from_secs(10),
        "only the recent partition's file is left",
        || async { parquet_files(&vigil.data_dir).len() == 1 },
    )
    .await;
    assert!(
        vigil
            .metric(
                "vigil_retention_deleted_files_total",
                &[("reason", "max_age")]
            )
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_oldest_files_to_max_bytes() {
    let fast = "[storage]\nsegment_max_age = \"200ms\"\n";
    let vigil = Vigil::start(fast);
    send(&vigil, "older", 400, now_ns() - 5 * HOUR_NS).await;
    eventually(Duration::from_secs(30), "first compaction", || {
        wal_empty(&vigil)
    })
    .await;
    send(&vigil, "newer", 400, now_ns()).await;
    eventually(Duration::from_secs(30), "second compaction", || {
        wal_empty(&vigil)
    })
    .await;
    let files = parquet_files(&vigil.data_dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let newest = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .max()
        .unwrap();
    // Room for one file only: the one holding older data must go.
    let vigil = vigil.restart(&format!(
        "{fast}[retention]\nmax_bytes = {}\ncheck_interval = \"200ms\"\n",
        newest + 10
    ));
    eventually(Duration::from_secs(30), "older file trimmed", || async {
        vigil
            .scalar_i64("SELECT count(*) FROM logs WHERE attributes['test.req'] = 'older'")
            .await
            == 0
    })
    .await;
    assert_eq!(
        vigil
            .scalar_i64("SELECT count(*) FROM logs WHERE attributes['test.req'] = 'newer'")
            .await,
        400
    );
    assert_eq!(parquet_files(&vigil.data_dir).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_hour_query_does_not_read_older_partitions() {
    let vigil = Vigil::start("[storage]\nsegment_max_age = \"200ms\"\n");
    send(&vigil, "three-days-ago", 30, now_ns() - 72 * HOUR_NS).await;
    send(&vigil, "just-now", 20, now_ns()).await;
    eventually(Duration::from_secs(30), "compaction", || wal_empty(&vigil)).await;
    let files = parquet_files(&vigil.data_dir);
    assert_eq!(files.len(), 2, "one partition per hour: {files:?}");

    let sql = "SELECT count(*) FROM logs WHERE time > now() - interval '1 hour'";
    assert_eq!(vigil.scalar_i64(sql).await, 20);
    let plan = vigil.query(&format!("EXPLAIN {sql}")).await.to_string();
    let old_date = chrono_date(now_ns() - 72 * HOUR_NS);
    let new_date = chrono_date(now_ns());
    assert!(
        !plan.contains(&format!("date={old_date}")),
        "old partition is in the plan:\n{plan}"
    );
    assert!(
        plan.contains(&format!("date={new_date}")),
        "recent partition missing from the plan:\n{plan}"
    );
    // Without a time predicate both files are read.
    let all = vigil
        .query("EXPLAIN SELECT count(*) FROM logs")
        .await
        .to_string();
    assert!(all.contains(&format!("date={old_date}")));
}

/// `YYYY-MM-DD` (UTC) of a timestamp.
fn chrono_date(ns: u64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns as i64)
        .format("%Y-%m-%d")
        .to_string()
}
