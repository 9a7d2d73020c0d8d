//! Criterion benchmarks of redaction: text throughput on log lines with and without PII, the
//! scanning strategy it rests on (one multi-pattern automaton vs a `RegexSet` vs one regex per
//! detector), and whole decoded batches. Numbers: BENCHMARKS.md.
//!
//! Times are the benchmark thread's CPU time, not wall-clock time: the targets are per core,
//! and on a machine shared with other work the wall clock also counts time the thread spent
//! waiting for a core.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use nix::time::{ClockId, clock_gettime};
use vigil_benches::corpus::{CorpusConfig, logs_requests, trace_requests};
use vigil_core::decode::{decode_logs, decode_traces};
use vigil_core::redact::{RedactionConfig, builtin_patterns, corpus};
use vigil_core::{HashKey, Redactor};

/// CPU time of the calling thread, measured like criterion's wall time and shown the same way.
struct ThreadCpuTime;

impl ThreadCpuTime {
    fn now() -> Duration {
        clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
            .map(Duration::from)
            .expect("Linux has a per-thread CPU clock")
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        Self::now()
    }
    fn end(&self, start: Duration) -> Duration {
        Self::now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds either way, so wall time's units and throughputs apply as they are.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn redactor() -> Redactor {
    Redactor::new(&RedactionConfig::default(), HashKey::new(&[7; 32]).unwrap()).unwrap()
}

fn bytes(lines: &[String]) -> u64 {
    lines.iter().map(|l| l.len() as u64).sum()
}

/// Log lines with no PII at all, and lines that each carry one planted value.
fn corpora() -> (Vec<String>, Vec<String>) {
    let clean = corpus::clean_log_lines(1, 4000);
    let pii = corpus::pii_values(2, 100)
        .iter()
        .enumerate()
        .map(|(i, p)| corpus::log_line(i as u64, p))
        .collect();
    (clean, pii)
}

fn text(c: &mut Criterion<ThreadCpuTime>) {
    let r = redactor();
    let (clean, pii) = corpora();
    let mut g = c.benchmark_group("redact_text");
    for (name, lines) in [("clean_lines", &clean), ("pii_lines", &pii)] {
        g.throughput(Throughput::Bytes(bytes(lines)));
        g.bench_function(name, |b| {
            b.iter(|| {
                lines
                    .iter()
                    .map(|l| r.redact_str("svc", l).len())
                    .sum::<usize>()
            })
        });
    }
    // What ingest does with the same text: a log body column, gated several values at a time.
    g.throughput(Throughput::Bytes(bytes(&clean)));
    let column = body_column(&clean);
    g.bench_function("clean_lines_as_a_body_column", |b| {
        b.iter_batched(
            || column.clone(),
            |batch| r.apply(batch).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A decoded logs batch whose bodies are `lines`, with nothing else to redact.
fn body_column(lines: &[String]) -> vigil_core::Batch {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let string = |s: &str| AnyValue {
        value: Some(Value::StringValue(s.to_owned())),
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(string("checkout")),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: lines
                    .iter()
                    .map(|l| LogRecord {
                        time_unix_nano: now_ns(),
                        body: Some(string(l)),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    decode_logs(&request, 1).unwrap().batch
}

/// Why one automaton: the same question ("does this line need a closer look?") asked three ways.
fn strategy(c: &mut Criterion<ThreadCpuTime>) {
    let (clean, _) = corpora();
    let patterns: Vec<&str> = builtin_patterns().map(|(_, p)| p).collect();
    let multi = regex_automata::meta::Regex::new_many(&patterns).unwrap();
    let set = regex::RegexSet::new(&patterns).unwrap();
    let each: Vec<regex::Regex> = patterns
        .iter()
        .map(|p| regex::Regex::new(p).unwrap())
        .collect();
    let mut g = c.benchmark_group("redact_scan_strategy");
    g.throughput(Throughput::Bytes(bytes(&clean)));
    g.bench_function("meta_multi_pattern", |b| {
        b.iter(|| clean.iter().filter(|l| multi.is_match(l.as_str())).count())
    });
    g.bench_function("meta_find_every_candidate", |b| {
        b.iter(|| {
            clean
                .iter()
                .map(|l| multi.find_iter(l.as_str()).count())
                .sum::<usize>()
        })
    });
    g.bench_function("regex_set", |b| {
        b.iter(|| clean.iter().filter(|l| set.is_match(l)).count())
    });
    g.bench_function("regex_per_detector", |b| {
        b.iter(|| {
            clean
                .iter()
                .filter(|l| each.iter().any(|re| re.is_match(l)))
                .count()
        })
    });
    g.finish();
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Decoded 512-record batches from the load generator's corpus (realistic attributes, some
/// client addresses and user agents), redacted whole.
fn batches(c: &mut Criterion<ThreadCpuTime>) {
    let r = redactor();
    let cfg = CorpusConfig {
        requests: 16,
        ..CorpusConfig::default()
    };
    let logs: Vec<_> = logs_requests(&cfg, now_ns())
        .iter()
        .map(|q| decode_logs(q, 1).unwrap().batch)
        .collect();
    let spans: Vec<_> = trace_requests(&cfg, now_ns())
        .iter()
        .map(|q| decode_traces(q, 1).unwrap().batch)
        .collect();
    let mut g = c.benchmark_group("redact_batch");
    g.throughput(Throughput::Elements(cfg.records_per_request as u64));
    // The decode step it follows, for scale: redaction cost as a share of decode+redact.
    let requests = logs_requests(&cfg, now_ns());
    let mut n = 0;
    g.bench_function("decode_only_logs_512", |b| {
        b.iter(|| {
            n = (n + 1) % requests.len();
            decode_logs(&requests[n], 1).unwrap()
        })
    });
    for (name, input) in [("logs_512", &logs), ("spans_512", &spans)] {
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    i = (i + 1) % input.len();
                    input[i].clone()
                },
                |batch| r.apply(batch).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = text, strategy, batches
}
criterion_main!(benches);
