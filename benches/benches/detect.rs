//! Detector throughput: Sigma rules over realistic redacted batches (the target is 50 rules at
//! 1M records/s per core), and the whole detector (rules, baselines, service graph, alerts).
//! Each iteration is the next second of the same traffic, as a live stream delivers it, so
//! correlation windows hold what they would hold in production. Numbers: BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::TimestampNanosecondType;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vigil_core::schema::col;
use vigil_core::{Batch, RedactedBatch, Redactor};
use vigil_detector::fields::FieldMap;
use vigil_detector::sigma::{RuleSet, SigmaEngine};
use vigil_detector::synthetic::{self, EventSpec};
use vigil_detector::view::BatchView;
use vigil_detector::{Detector, DetectorConfig};

const ROWS: usize = 1024;
const T0: i64 = 1_767_225_600_000_000_000;

/// The shipped rules, topped up to `n` with rules of the same shapes (substring lists on
/// URLs and bodies, status codes, CIDRs, user agents).
fn rules(n: usize) -> Arc<RuleSet> {
    let sources = synthetic::topped_up_rules(n);
    Arc::new(RuleSet::load(&sources).unwrap_or_else(|p| panic!("bench rules refused: {p:?}")))
}

/// Web traffic as services export it: server spans with HTTP attributes, and app logs.
fn batches() -> (RedactedBatch, RedactedBatch) {
    let paths = ["/cart", "/api/v1/items", "/checkout", "/login", "/search"];
    let spans: Vec<EventSpec> = (0..ROWS)
        .map(|i| {
            let path = paths[i % paths.len()];
            let mut e = EventSpec::span("shop", &format!("GET {path}"), "SERVER")
                .attr("url.path", path)
                .attr("url.query", format!("page={}&sort=price", i % 7).as_str())
                .attr("http.request.method", "GET")
                .attr(
                    "http.response.status_code",
                    if i % 20 == 0 { 404 } else { 200 },
                )
                .attr(
                    "client.address",
                    format!("10.1.{}.{}", i % 8, i % 200).as_str(),
                )
                .attr(
                    "user_agent.original",
                    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                )
                .at(i as i64 * 1_000_000);
            e.duration_ms = Some(3.0 + (i % 11) as f64);
            e
        })
        .collect();
    let logs: Vec<EventSpec> = (0..ROWS)
        .map(|i| {
            EventSpec::log(
                ["auth", "cart", "billing"][i % 3],
                &format!("request {i} handled for user u{} in {} ms", i % 50, i % 30),
            )
            .attr("client.address", format!("10.2.0.{}", i % 200).as_str())
            .at(i as i64 * 1_000_000)
        })
        .collect();
    let redact = |events: &[EventSpec]| {
        Redactor::disabled()
            .apply(synthetic::batch(events, T0).expect("batch"))
            .expect("redact")
    };
    (redact(&spans), redact(&logs))
}

/// A stream of `batch` repeated, each copy `ROWS` ms (one batch span) after the previous.
struct Stream<'a> {
    batch: &'a RedactedBatch,
    copies: i64,
}

impl<'a> Stream<'a> {
    fn new(batch: &'a RedactedBatch) -> Self {
        Self { batch, copies: 0 }
    }

    fn next(&mut self) -> RedactedBatch {
        self.copies += 1;
        let shift = self.copies * ROWS as i64 * 1_000_000;
        let records = self.batch.records();
        let schema = records.schema();
        let columns = records
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| {
                if field.name() != col::TIME {
                    return column.clone();
                }
                let time = column.as_primitive::<TimestampNanosecondType>();
                let later: TimestampNanosecondArray = time.unary(|t| t + shift);
                Arc::new(later.with_timezone_opt(time.timezone())) as Arc<dyn Array>
            })
            .collect();
        let records = RecordBatch::try_new(schema, columns).expect("records");
        let batch = Batch::new(self.batch.signal(), records).expect("batch");
        Redactor::disabled().apply(batch).expect("redact")
    }
}

fn sigma(c: &mut Criterion) {
    let (spans, logs) = batches();
    let mut group = c.benchmark_group("detect_sigma");
    group.throughput(Throughput::Elements(ROWS as u64));
    for n in [20, 50] {
        let set = rules(n);
        for (name, batch) in [("spans", &spans), ("logs", &logs)] {
            let mut engine = SigmaEngine::new(set.clone(), FieldMap::default()).expect("engine");
            let mut stream = Stream::new(batch);
            group.bench_function(format!("{n}_rules/{name}"), |b| {
                b.iter_batched(
                    || stream.next(),
                    |batch| {
                        let view = BatchView::new(&batch).expect("view");
                        black_box(engine.process(&view))
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

fn detector(c: &mut Criterion) {
    let (spans, logs) = batches();
    let mut group = c.benchmark_group("detect_all");
    group.throughput(Throughput::Elements(ROWS as u64));
    let set = rules(50);
    for (name, batch) in [("spans", &spans), ("logs", &logs)] {
        let mut detector =
            Detector::new(&DetectorConfig::default(), set.clone()).expect("detector");
        let mut now = T0;
        let mut stream = Stream::new(batch);
        group.bench_function(format!("50_rules/{name}"), |b| {
            b.iter_batched(
                || stream.next(),
                |batch| {
                    now += ROWS as i64 * 1_000_000;
                    black_box(detector.process(&batch, now).expect("process"))
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, sigma, detector);
criterion_main!(benches);
