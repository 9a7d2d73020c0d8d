//! Criterion benchmarks of the ingest hot path, without servers: OTLP→Arrow decoding, WAL
//! frame encoding + append, and compaction of a WAL segment into Parquet. Numbers: BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use vigil_benches::corpus::{CorpusConfig, logs_requests, trace_requests};
use vigil_collector::config::StorageConfig;
use vigil_collector::storage::parquet::{ParquetOptions, write_segment};
use vigil_collector::storage::wal::{SegmentWriter, encode_payload};
use vigil_core::Signal;
use vigil_core::decode::{decode_logs, decode_logs_protobuf, decode_traces};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn corpus() -> CorpusConfig {
    CorpusConfig {
        requests: 16,
        ..CorpusConfig::default()
    }
}

fn decode(c: &mut Criterion) {
    let cfg = corpus();
    let logs = logs_requests(&cfg, now_ns());
    let traces = trace_requests(&cfg, now_ns());
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(cfg.records_per_request as u64));
    let mut i = 0;
    g.bench_function("logs_512", |b| {
        b.iter(|| {
            i = (i + 1) % logs.len();
            decode_logs(&logs[i], 1).unwrap()
        })
    });
    // What the receivers do with an OTLP/HTTP or gRPC body: protobuf bytes to an Arrow batch.
    let log_bodies: Vec<Vec<u8>> = logs.iter().map(Message::encode_to_vec).collect();
    g.bench_function("logs_512_from_protobuf", |b| {
        b.iter(|| {
            i = (i + 1) % log_bodies.len();
            decode_logs_protobuf(&log_bodies[i], 1).unwrap()
        })
    });
    g.bench_function("spans_512", |b| {
        b.iter(|| {
            i = (i + 1) % traces.len();
            decode_traces(&traces[i], 1).unwrap()
        })
    });
    g.finish();
}

fn wal(c: &mut Criterion) {
    let cfg = corpus();
    let batches: Vec<_> = logs_requests(&cfg, now_ns())
        .iter()
        .map(|r| decode_logs(r, 1).unwrap().batch.into_records())
        .collect();
    let schema = Signal::Logs.schema();
    let dir = tempfile::tempdir().unwrap();
    let mut writer = SegmentWriter::create(dir.path(), 1, None).unwrap();
    let mut g = c.benchmark_group("wal");
    // A group commit of 8 concurrent 512-record requests: one frame, one write.
    g.throughput(Throughput::Elements(8 * cfg.records_per_request as u64));
    let mut i = 0;
    g.bench_function("encode_append_group_of_8x512", |b| {
        b.iter(|| {
            i = (i + 8) % batches.len();
            let group = &batches[i..(i + 8).min(batches.len())];
            let payload = encode_payload(&schema, group).unwrap();
            writer.append(&payload).unwrap();
        })
    });
    g.bench_function("encode_append_fsync_group_of_8x512", |b| {
        b.iter(|| {
            i = (i + 8) % batches.len();
            let group = &batches[i..(i + 8).min(batches.len())];
            writer
                .append(&encode_payload(&schema, group).unwrap())
                .unwrap();
            writer.sync().unwrap();
        })
    });
    g.finish();
}

fn compaction(c: &mut Criterion) {
    let cfg = CorpusConfig {
        requests: 64,
        ..CorpusConfig::default()
    };
    let batches: Vec<_> = logs_requests(&cfg, now_ns())
        .iter()
        .map(|r| decode_logs(r, 1).unwrap().batch.into_records())
        .collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let options = ParquetOptions {
        row_group_rows: 128 * 1024,
        zstd_level: StorageConfig::default().parquet_zstd_level,
        encryption: None,
    };
    let mut g = c.benchmark_group("compaction");
    g.sample_size(10);
    g.throughput(Throughput::Elements(rows as u64));
    g.bench_function("segment_32k_logs_to_zstd_parquet", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                write_segment(dir.path(), Signal::Logs, 1, &batches, &options).unwrap();
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, decode, wal, compaction);
criterion_main!(benches);
