//! Encryption at rest end to end: with a storage keyring, no byte of the WAL, of a Parquet
//! file, of a webhook outbox or of the detector's saved state holds what was sent; queries still read everything; a rotated key encrypts new files
//! while the old key still reads old ones; a keyring missing a key in use stops start-up with
//! a clear reason instead of hiding data.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prost::Message;

use crate::harness::{Vigil, config_text, eventually, vigil_binary};
use crate::otlp::{logs_request, now_ns};
use crate::redaction::all_files;

fn with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect()
}

/// Files (WAL or Parquet) holding `needle` in their raw bytes.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wal" || e == "parquet"))
        .filter(|p| {
            std::fs::read(p)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .collect()
}

/// `vigil keys storage --id <id>`: a keyring entry.
fn new_storage_key(id: &str) -> String {
    let out = Command::new(vigil_binary())
        .args(["keys", "storage", "--id", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let entry = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(entry.starts_with(&format!("{id}:")), "{entry}");
    entry
}

/// Sends `n` log records carrying `marker` in their bodies, an attribute and the service name.
/// Parquet pages are compressed, so in an unencrypted file the marker is found in the clear
/// through the `service` column's statistics in the footer.
async fn send(vigil: &Vigil, marker: &str, n: usize) {
    let status = reqwest::Client::new()
        .post(format!("{}/v1/logs", vigil.http_endpoint()))
        .header("content-type", "application/x-protobuf")
        .body(logs_request(marker, marker, n, now_ns()).encode_to_vec())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

async fn compacted(vigil: &Vigil) {
    eventually(Duration::from_secs(30), "the WAL compacted", || async {
        vigil.metric("vigil_wal_bytes", &[]).await == 0.0
    })
    .await;
}

/// Runs `vigil serve` on `data_dir`, which must fail at start-up; returns its log.
fn serve_until_exit(data_dir: &Path, keyring: &Path, scratch: &Path) -> String {
    let config_file = scratch.join("refused.toml");
    std::fs::write(&config_file, config_text(data_dir, &config(keyring))).unwrap();
    let log = scratch.join("refused.log");
    let mut child = Command::new(vigil_binary())
        .args(["serve", "--config"])
        .arg(&config_file)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("vigil started with a key missing from its keyring");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    std::fs::read_to_string(&log).unwrap()
}

fn config(keyring: &Path) -> String {
    format!(
        "[storage]\nsegment_max_age = \"300ms\"\n[storage.encryption]\nkeys_file = {:?}\n",
        keyring.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_keyring_what_was_sent_is_on_disk_in_the_clear() {
    // The control for the test below: the same search finds the marker when nothing is
    // encrypted, so "not found" there means encrypted, not "searched wrongly".
    let vigil = Vigil::start("[storage]\nsegment_max_age = \"300ms\"\n");
    let marker = format!("plainmarker{:x}", now_ns());
    send(&vigil, &marker, 50).await;
    assert!(!files_containing(&vigil.data_dir, marker.as_bytes()).is_empty());
    compacted(&vigil).await;
    let parquet = files_containing(&vigil.data_dir, marker.as_bytes());
    assert!(
        parquet
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "parquet")),
        "marker not found in plain parquet files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_storage_holds_no_plaintext_and_rotates_keys() {
    let scratch = tempfile::tempdir().unwrap();
    let keyring = scratch.path().join("storage.keys");
    let first = new_storage_key("k2026-10");
    std::fs::write(&keyring, format!("{first}\n")).unwrap();
    let mut vigil = Vigil::start(&config(&keyring));

    // In the WAL: encrypted before the ack.
    let old_marker = format!("oldmarker{:x}", now_ns());
    send(&vigil, &old_marker, 200).await;
    let wal = with_extension(&vigil.data_dir, "wal");
    assert!(!wal.is_empty());
    assert_eq!(
        files_containing(&vigil.data_dir, old_marker.as_bytes()),
        Vec::<PathBuf>::new()
    );
    // In Parquet: every file encrypted (footer included), and still queryable.
    compacted(&vigil).await;
    let old_files = with_extension(&vigil.data_dir, "parquet");
    assert!(!old_files.is_empty());
    for f in &old_files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            bytes.ends_with(b"PARE"),
            "{} has a plaintext footer",
            f.display()
        );
        let plain_reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap());
        assert!(
            plain_reader.is_err(),
            "{} opened without a key",
            f.display()
        );
    }
    assert_eq!(
        files_containing(&vigil.data_dir, old_marker.as_bytes()),
        Vec::<PathBuf>::new()
    );
    let sql = format!("SELECT count(*) FROM logs WHERE body LIKE '%{old_marker}%'");
    assert_eq!(vigil.scalar_i64(&sql).await, 200);

    // Rotation: the new key first, the old one kept; reload without a restart.
    let second = new_storage_key("k2026-11");
    std::fs::write(&keyring, format!("{second}\n{first}\n")).unwrap();
    nix::sys::signal::kill(vigil.pid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    eventually(Duration::from_secs(10), "the keyring reloaded", || async {
        vigil.log_text().contains("storage keyring reloaded")
    })
    .await;
    let new_marker = format!("newmarker{:x}", now_ns());
    send(&vigil, &new_marker, 100).await;
    compacted(&vigil).await;
    let new_files: Vec<PathBuf> = with_extension(&vigil.data_dir, "parquet")
        .into_iter()
        .filter(|f| !old_files.contains(f))
        .collect();
    assert!(!new_files.is_empty());
    for f in &new_files {
        // The footer key metadata (plaintext by design) names the key that encrypted it.
        let bytes = std::fs::read(f).unwrap();
        let names = |id: &str| {
            let tag = format!("vigil-storage-key:{id}");
            bytes.windows(tag.len()).any(|w| w == tag.as_bytes())
        };
        assert!(names("k2026-11") && !names("k2026-10"), "{}", f.display());
    }
    assert_eq!(
        files_containing(&vigil.data_dir, new_marker.as_bytes()),
        Vec::<PathBuf>::new()
    );
    assert_eq!(vigil.scalar_i64("SELECT count(*) FROM logs").await, 300);

    // The admin endpoint reloads the keyring too, and a broken keyring is refused whole.
    let reload = || async {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/admin/reload", vigil.api_endpoint()))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!(
        reload().await,
        (200, serde_json::json!({"storage_key": "k2026-11"}))
    );
    std::fs::write(&keyring, "k2026-12:not-hex\n").unwrap();
    let (status, body) = reload().await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("k2026-12"),
        "{body}"
    );
    std::fs::write(&keyring, format!("{second}\n{first}\n")).unwrap();

    // A restart with a keyring that lost the old key refuses to start, naming the key.
    vigil.stop_term();
    std::fs::write(&keyring, format!("{second}\n")).unwrap();
    let refused = serve_until_exit(&vigil.data_dir, &keyring, scratch.path());
    assert!(refused.contains("k2026-10"), "{refused}");
    let check = Command::new(vigil_binary())
        .args(["query", "--data-dir"])
        .arg(&vigil.data_dir)
        .arg("--storage-keys-file")
        .arg(&keyring)
        .arg("SELECT count(*) FROM logs")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success());
    assert!(stderr.contains("k2026-10"), "{stderr}");

    // With both keys, the offline CLI and a restarted server read every row.
    std::fs::write(&keyring, format!("{second}\n{first}\n")).unwrap();
    let offline = Command::new(vigil_binary())
        .args(["query", "--format", "csv", "--data-dir"])
        .arg(&vigil.data_dir)
        .arg("--storage-keys-file")
        .arg(&keyring)
        .arg("SELECT count(*) AS n FROM logs")
        .output()
        .unwrap();
    assert!(offline.status.success(), "{offline:?}");
    assert_eq!(String::from_utf8_lossy(&offline.stdout).trim(), "n\n300");
    let no_keys = Command::new(vigil_binary())
        .args(["query", "--data-dir"])
        .arg(&vigil.data_dir)
        .arg("SELECT count(*) FROM logs")
        .output()
        .unwrap();
    assert!(
        !no_keys.status.success(),
        "read encrypted files without keys"
    );

    let vigil = vigil.restart(&config(&keyring));
    assert_eq!(vigil.scalar_i64("SELECT count(*) FROM logs").await, 300);
}

/// Leaks a key in the logs of a service named `marker` with a webhook sink whose receiver is
/// down, then stops Vigil gracefully: the alert waits in the sink's outbox and in the
/// detector's saved state. Returns the files holding `marker`, outside WAL and Parquet.
async fn side_files_naming(extra_config: &str, marker: &str) -> Vec<PathBuf> {
    let config = format!(
        "{extra_config}\n[alerts]\negress_allow = [\"127.0.0.1\"]\n\n[[alerts.sinks]]\n\
         name = \"siem\"\nformat = \"alertmanager\"\nurl = \"http://127.0.0.1:9/hook\"\n\
         group_wait = \"0s\"\ninitial_backoff = \"30s\"\n"
    );
    let mut vigil = Vigil::start(&config);
    let leak = format!("AWS_ACCESS_KEY_ID={}", crate::detection::AWS_KEY);
    let status = reqwest::Client::new()
        .post(format!("{}/v1/logs", vigil.http_endpoint()))
        .header("content-type", "application/x-protobuf")
        .body(logs_request(marker, &leak, 1, now_ns()).encode_to_vec())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let pending = vigil.data_dir.join("outbox/siem/pending");
    eventually(
        Duration::from_secs(30),
        "the notification waits in the outbox",
        || async { std::fs::read_dir(&pending).is_ok_and(|mut d| d.next().is_some()) },
    )
    .await;
    vigil.stop_term();
    assert!(vigil.data_dir.join("detector/state").is_file());
    all_files(&vigil.data_dir)
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "wal" && e != "parquet"))
        .filter(|p| {
            std::fs::read(p)
                .unwrap_or_default()
                .windows(marker.len())
                .any(|w| w == marker.as_bytes())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outboxes_and_the_detector_state_are_sealed_too() {
    // Control: without a keyring the service name is in the outbox and the saved state.
    let marker = format!("plainsvc{:x}", now_ns());
    let plain = side_files_naming("", &marker).await;
    let in_dir = |dir: &str| plain.iter().any(|p| p.to_string_lossy().contains(dir));
    assert!(
        in_dir("/outbox/") && in_dir("/detector/"),
        "control found the marker only in {plain:?}"
    );

    let scratch = tempfile::tempdir().unwrap();
    let keyring = scratch.path().join("storage.keys");
    std::fs::write(&keyring, format!("{}\n", new_storage_key("k1"))).unwrap();
    let marker = format!("sealedsvc{:x}", now_ns());
    let sealed = side_files_naming(&config(&keyring), &marker).await;
    assert_eq!(
        sealed,
        Vec::<PathBuf>::new(),
        "plaintext outside WAL and Parquet"
    );
}
