//! Where a log record's server CPU goes, stage by stage, on the load generator's corpus: the
//! 64 pre-built 512-record requests `vigil-loadgen` replays, each taken through the stages
//! `vigil serve` runs with its defaults (protobuf → Arrow, redaction, detection with the
//! shipped rules, the WAL's IPC encoding, compaction to Parquet with compaction's own
//! settings). The requests are replayed in rounds, as the load generator does, so the
//! detector's windows and alert state fill as they do under load. CPU time of this thread
//! per stage, median over the rounds, in µs a record.
//!
//! ```sh
//! cargo run --release -p vigil-benches --features collector --example stages
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use parquet::arrow::ArrowWriter;
use prost::Message;
use vigil_benches::corpus::{CorpusConfig, logs_requests};
use vigil_collector::config::StorageConfig;
use vigil_collector::storage::parquet::ParquetOptions;
use vigil_collector::storage::wal::encode_payload;
use vigil_core::decode::decode_logs_protobuf;
use vigil_core::redact::RedactionConfig;
use vigil_core::{HashKey, Redactor, Signal};
use vigil_detector::sigma::RuleSet;
use vigil_detector::{Detector, DetectorConfig};

const ROUNDS: usize = 7;
const STAGES: [&str; 5] = ["decode", "redact", "detect", "wal encode", "compact"];

fn cpu_seconds() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

fn main() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let now = i64::try_from(now).unwrap();
    let bodies: Vec<Vec<u8>> = logs_requests(&CorpusConfig::default(), now as u64)
        .iter()
        .map(Message::encode_to_vec)
        .collect();
    let redactor = Redactor::new(
        &RedactionConfig::default(),
        HashKey::new(&[7u8; 32]).unwrap(),
    )
    .unwrap();
    let rules = RuleSet::load(&vigil_detector::shipped::sources()).unwrap();
    let mut detector = Detector::new(&DetectorConfig::default(), Arc::new(rules)).unwrap();
    let props = ParquetOptions {
        row_group_rows: 128 * 1024,
        zstd_level: StorageConfig::default().parquet_zstd_level,
        encryption: None,
    }
    .writer_properties(Signal::Logs)
    .unwrap();
    let schema = Signal::Logs.schema();

    let mut spent: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    let mut records = 0;
    for round in 0..ROUNDS {
        let mut round_cpu = [0.0; STAGES.len()];
        let mut stored = Vec::new();
        records = 0;
        for body in &bodies {
            let mut t = cpu_seconds();
            let mut lap = |stage: usize| {
                let now = cpu_seconds();
                round_cpu[stage] += now - t;
                t = now;
            };
            let batch = decode_logs_protobuf(body, now).unwrap().batch;
            lap(0);
            let batch = redactor.apply(batch).unwrap();
            lap(1);
            detector.process(&batch, now).unwrap();
            lap(2);
            let payload = encode_payload(&schema, std::slice::from_ref(batch.records())).unwrap();
            std::hint::black_box(payload);
            lap(3);
            records += batch.records().num_rows();
            stored.push(batch);
        }
        let t = cpu_seconds();
        let mut file = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut file, schema.clone(), Some(props.clone())).unwrap();
        for batch in &stored {
            writer.write(batch.records()).unwrap();
        }
        writer.close().unwrap();
        round_cpu[4] += cpu_seconds() - t;
        if round > 0 {
            // The first round warms the detector's state up.
            for (stage, cpu) in round_cpu.iter().enumerate() {
                spent[stage].push(cpu * 1e6 / records as f64);
            }
        }
    }
    println!(
        "{records} records a round, {} rounds measured; CPU µs a record: median (min-max)",
        ROUNDS - 1
    );
    let mut total = 0.0;
    for (stage, name) in STAGES.iter().enumerate() {
        let v = &mut spent[stage];
        v.sort_by(f64::total_cmp);
        let median = v[v.len() / 2];
        total += median;
        println!(
            "{name:12} {median:6.2} ({:5.2}-{:5.2})",
            v[0],
            v[v.len() - 1]
        );
    }
    println!(
        "{:12} {total:6.2}  ({:.0} records per CPU-second)",
        "all",
        1e6 / total
    );
}
