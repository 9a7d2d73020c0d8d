//! Sigma rule files (YAML text, as read from `detector.rules_dir`) through the rule loader and,
//! when they load, the detector built from them, run over a small logs batch and a small spans
//! batch.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use vigil_core::RedactedBatch;
use vigil_detector::synthetic::{self, EventSpec};
use vigil_detector::{Detector, DetectorConfig, RuleSet, RuleSource};
use vigil_fuzz::ingest::REDACTOR;

const T0: i64 = 1_767_225_600_000_000_000;

static BATCHES: LazyLock<Vec<RedactedBatch>> = LazyLock::new(|| {
    let logs = [
        EventSpec::log("web", "GET /../../etc/passwd HTTP/1.1")
            .attr("http.request.method", "GET")
            .attr("url.path", "/admin/../etc/passwd")
            .attr("http.response.status_code", 404i64)
            .attr("user_agent.original", "sqlmap/1.7"),
        EventSpec::log("auth", "login failed for alice from 203.0.113.9")
            .attr("event.outcome", "failure")
            .attr("user.name", "alice")
            .attr("client.address", "203.0.113.9")
            .at(1_000_000),
    ];
    let spans = [EventSpec::span("web", "GET /api/export", "SERVER")
        .attr("http.response.status_code", 500i64)
        .attr(
            "db.statement",
            "SELECT * FROM users WHERE id = '1' OR '1'='1'",
        )];
    [&logs[..], &spans[..]]
        .iter()
        .map(|events| {
            let batch = synthetic::batch(events, T0).expect("synthetic batch");
            REDACTOR.apply(batch).expect("redact")
        })
        .collect()
});

static CONFIG: LazyLock<DetectorConfig> = LazyLock::new(DetectorConfig::default);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = RuleSource {
        origin: "fuzz.yml".into(),
        text: text.into(),
    };
    let Ok(rules) = RuleSet::load(&[source]) else {
        return;
    };
    let Ok(mut detector) = Detector::new(&CONFIG, Arc::new(rules)) else {
        return;
    };
    for batch in BATCHES.iter() {
        let _ = detector.process(batch, T0 + 1_000_000_000);
    }
    let _ = detector.tick(T0 + 600_000_000_000);
});
