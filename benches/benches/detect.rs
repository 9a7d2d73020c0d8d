//! Detector throughput: Sigma rules over realistic redacted batches (the target is 50 rules at
//! 1M records/s per core), and the whole detector (rules, baselines, service graph, alerts).
//! Numbers: BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_core::{RedactedBatch, Redactor};
use vigil_detector::fields::FieldMap;
use vigil_detector::sigma::{RuleSet, RuleSource, SigmaEngine};
use vigil_detector::synthetic::{self, EventSpec};
use vigil_detector::view::BatchView;
use vigil_detector::{Detector, DetectorConfig};

const ROWS: usize = 1024;
const T0: i64 = 1_767_225_600_000_000_000;

/// The shipped rules, topped up to `n` with rules of the same shapes (substring lists on
/// URLs and bodies, status codes, CIDRs, user agents).
fn rules(n: usize) -> Arc<RuleSet> {
    let mut sources = vigil_detector::shipped::sources();
    let shipped = RuleSet::load(&sources).map(|r| r.len()).unwrap_or(0);
    for i in 0..n.saturating_sub(shipped) {
        let detection = match i % 4 {
            0 => format!(
                "  s:\n    url.path|contains:\n      - /bench-{i}/a\n      - /bench-{i}/b\n    http.response.status_code: 403\n  condition: s"
            ),
            1 => format!(
                "  s:\n    body|contains|all:\n      - bench-{i}\n      - failed\n  condition: s"
            ),
            2 => format!(
                "  s:\n    user_agent.original|contains: bench-scanner-{i}\n  f:\n    client.address|cidr: 10.0.0.0/8\n  condition: s and not f"
            ),
            _ => format!("  s:\n    url.query|re: 'bench{i}=[0-9]+;'\n  condition: s"),
        };
        sources.push(RuleSource {
            origin: format!("bench-{i}.yml"),
            text: format!(
                "title: bench {i}\nid: bench-{i}\nlogsource:\n  product: opentelemetry\ndetection:\n{detection}\nlevel: low\n"
            ),
        });
    }
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

fn sigma(c: &mut Criterion) {
    let (spans, logs) = batches();
    let mut group = c.benchmark_group("detect_sigma");
    group.throughput(Throughput::Elements(ROWS as u64));
    for n in [20, 50] {
        let set = rules(n);
        for (name, batch) in [("spans", &spans), ("logs", &logs)] {
            let mut engine = SigmaEngine::new(set.clone(), FieldMap::default()).expect("engine");
            group.bench_function(format!("{n}_rules/{name}"), |b| {
                b.iter(|| {
                    let view = BatchView::new(batch).expect("view");
                    black_box(engine.process(&view))
                })
            });
        }
    }
    group.finish();
}

fn detector(c: &mut Criterion) {
    let (spans, logs) = batches();
    let mut group = c.benchmark_group("detect_all");
    group.throughput(Throughput::Elements(ROWS as u64));
    let mut detector = Detector::new(&DetectorConfig::default(), rules(50)).expect("detector");
    let mut now = T0;
    for (name, batch) in [("spans", &spans), ("logs", &logs)] {
        group.bench_function(format!("50_rules/{name}"), |b| {
            b.iter(|| {
                now += 1_000_000;
                black_box(detector.process(batch, now).expect("process"))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sigma, detector);
criterion_main!(benches);
