//! Sigma support as a rule author sees it: each modifier and condition form on real decoded
//! rows, logsource matching, correlations over batches, and refusals with their reasons.

use std::sync::Arc;

use vigil_core::Redactor;

use super::*;
use crate::synthetic::{self, EventSpec};

const T0: i64 = 1_767_225_600_000_000_000;
const SEC: i64 = 1_000_000_000;

fn rules(yaml: &str) -> Arc<RuleSet> {
    let set = RuleSet::load(&[RuleSource {
        origin: "test.yml".into(),
        text: yaml.into(),
    }])
    .unwrap_or_else(|p| panic!("rules refused: {p:?}"));
    Arc::new(set)
}

fn refused(yaml: &str) -> Vec<String> {
    RuleSet::load(&[RuleSource {
        origin: "test.yml".into(),
        text: yaml.into(),
    }])
    .expect_err("rule should be refused")
    .iter()
    .map(ToString::to_string)
    .collect()
}

fn rule(detection: &str) -> String {
    format!(
        "title: t\nid: r\nlogsource:\n  product: opentelemetry\ndetection:\n{detection}\nlevel: high\n"
    )
}

/// Rule ids firing on each event, each event in its own batch.
fn fired(set: &Arc<RuleSet>, events: &[EventSpec]) -> Vec<Vec<String>> {
    let mut engine = SigmaEngine::new(set.clone(), FieldMap::default()).expect("engine");
    events
        .iter()
        .map(|e| {
            let batch = synthetic::batch(std::slice::from_ref(e), T0).expect("batch");
            let redacted = Redactor::disabled().apply(batch).expect("redact");
            let view = BatchView::new(&redacted).expect("view");
            engine
                .process(&view)
                .into_iter()
                .map(|o| match o {
                    Observation::Fire(c) => c.key.rule_id,
                    Observation::Clear(k) => format!("clear {}", k.rule_id),
                })
                .collect()
        })
        .collect()
}

/// Whether the single rule `r` matches each event.
fn matches(detection: &str, events: &[EventSpec]) -> Vec<bool> {
    let set = rules(&rule(detection));
    fired(&set, events)
        .iter()
        .map(|ids| ids.iter().any(|i| i == "r"))
        .collect()
}

fn log(body: &str) -> EventSpec {
    EventSpec::log("web", body)
}

#[test]
fn string_modifiers_and_wildcards() {
    let events = [
        log("GET /admin/users HTTP/1.1"),
        log("get /Admin"),
        log("POST /login"),
    ];
    assert_eq!(
        matches("  s:\n    body|contains: /admin\n  condition: s", &events),
        [true, true, false],
        "contains is case-insensitive"
    );
    assert_eq!(
        matches(
            "  s:\n    body|contains|cased: /admin\n  condition: s",
            &events
        ),
        [true, false, false]
    );
    assert_eq!(
        matches("  s:\n    body|startswith: POST\n  condition: s", &events),
        [false, false, true]
    );
    assert_eq!(
        matches("  s:\n    body|endswith: HTTP/1.1\n  condition: s", &events),
        [true, false, false]
    );
    assert_eq!(
        matches("  s:\n    body: 'GET /a?min*'\n  condition: s", &events),
        [true, true, false],
        "? and * wildcards"
    );
    assert_eq!(
        matches(
            "  s:\n    body|contains|all:\n      - GET\n      - users\n  condition: s",
            &events
        ),
        [true, false, false]
    );
}

#[test]
fn regex_with_flags() {
    let events = [log("user=Admin\nrole=root"), log("user=bob")];
    assert_eq!(
        matches("  s:\n    body|re: 'user=admin'\n  condition: s", &events),
        [false, false]
    );
    assert_eq!(
        matches("  s:\n    body|re|i: 'user=admin'\n  condition: s", &events),
        [true, false]
    );
    assert_eq!(
        matches(
            "  s:\n    body|re|m: '^role=root$'\n  condition: s",
            &events
        ),
        [true, false]
    );
    assert_eq!(
        matches("  s:\n    body|re|s: 'Admin.role'\n  condition: s", &events),
        [true, false]
    );
}

#[test]
fn cidr_exists_numeric_fieldref_and_null() {
    let e = |ip: &str, status: i64| {
        log("x")
            .attr("client.address", ip)
            .attr("http.response.status_code", status)
    };
    let events = [
        e("10.1.2.3", 500),
        e("192.168.0.1", 404),
        log("no attrs"),
        e("2001:db8::1", 200),
    ];
    assert_eq!(
        matches(
            "  s:\n    client.address|cidr: 10.0.0.0/8\n  condition: s",
            &events
        ),
        [true, false, false, false]
    );
    assert_eq!(
        matches(
            "  s:\n    client.address|cidr: '2001:db8::/32'\n  condition: s",
            &events
        ),
        [false, false, false, true]
    );
    assert_eq!(
        matches(
            "  s:\n    client.address|exists: true\n  condition: s",
            &events
        ),
        [true, true, false, true]
    );
    assert_eq!(
        matches(
            "  s:\n    client.address|exists: false\n  condition: s",
            &events
        ),
        [false, false, true, false]
    );
    assert_eq!(
        matches("  s:\n    sc-status|gte: 500\n  condition: s", &events),
        [true, false, false, false]
    );
    assert_eq!(
        matches("  s:\n    sc-status|gt: 200\n  condition: s", &events),
        [true, true, false, false]
    );
    assert_eq!(
        matches("  s:\n    sc-status|lt: 404\n  condition: s", &events),
        [false, false, false, true]
    );
    assert_eq!(
        matches("  s:\n    sc-status|lte: 404\n  condition: s", &events),
        [false, true, false, true]
    );
    assert_eq!(
        matches("  s:\n    severity_number|gte: 9\n  condition: s", &events),
        [true; 4],
        "integer column"
    );
    let same = [
        log("x").attr("user.name", "bob").attr("enduser.id", "bob"),
        log("x").attr("user.name", "bob").attr("enduser.id", "eve"),
    ];
    assert_eq!(
        matches(
            "  s:\n    user.name|fieldref: enduser.id\n  condition: s",
            &same
        ),
        [true, false]
    );
    let nulls = [log("x").attr("tenant", ""), log("x")];
    assert_eq!(
        matches("  s:\n    tenant: ''\n  condition: s", &nulls),
        [true, false],
        "empty value"
    );
    assert_eq!(
        matches("  s:\n    tenant: null\n  condition: s", &nulls),
        [false, true],
        "null means absent"
    );
}

#[test]
fn keywords_search_every_text_field() {
    let events = [
        log("nothing here").attr("http.user_agent", "sqlmap/1.7"),
        log("Nikto scan"),
        log("fine"),
    ];
    assert_eq!(
        matches("  k:\n    - sqlmap\n    - nikto\n  condition: k", &events),
        [true, true, false]
    );
}

#[test]
fn full_condition_grammar() {
    let d = "  sel_a:\n    body|contains: alpha\n  sel_b:\n    body|contains: beta\n  _helper:\n    body|contains: gamma\n  filter:\n    body|contains: ignore\n";
    let events = [
        log("alpha"),
        log("alpha beta"),
        log("alpha ignore"),
        log("gamma"),
        log("beta gamma"),
    ];
    let m = |cond: &str| matches(&format!("{d}  condition: {cond}"), &events);
    assert_eq!(m("sel_a and not filter"), [true, true, false, false, false]);
    assert_eq!(
        m("(sel_a or sel_b) and not filter"),
        [true, true, false, false, true]
    );
    assert_eq!(m("all of sel_*"), [false, true, false, false, false]);
    assert_eq!(m("1 of sel_*"), [true, true, true, false, true]);
    assert_eq!(
        m("1 of them"),
        [true, true, true, false, true],
        "`them` leaves out _helper"
    );
    assert_eq!(m("all of them"), [false, false, false, false, false]);
    assert_eq!(m("_helper and sel_b"), [false, false, false, false, true]);
}

#[test]
fn logsource_matches_signal_and_service() {
    let set = rules(
        "title: spans only\nid: s\nlogsource:\n  category: spans\ndetection:\n  s:\n    name|contains: admin\n  condition: s\n---\n\
         title: billing only\nid: b\nlogsource:\n  product: opentelemetry\n  service: billing\ndetection:\n  s:\n    body|contains: admin\n  condition: s\n",
    );
    let events = [
        EventSpec::span("api", "GET /admin", "SERVER"),
        EventSpec::log("api", "admin"),
        EventSpec::log("billing", "admin"),
    ];
    assert_eq!(
        fired(&set, &events),
        [vec!["s".to_string()], vec![], vec!["b".to_string()]]
    );
}

#[test]
fn correlations_count_distinct_values_and_order_over_batches() {
    let set = rules(
        "title: fail\nid: fail-id\nname: fail\nlogsource:\n  product: opentelemetry\ndetection:\n  s:\n    body|contains: login failed\n  condition: s\n---\n\
         title: admin\nid: admin-id\nname: admin\nlogsource:\n  product: opentelemetry\ndetection:\n  s:\n    body|contains: admin granted\n  condition: s\n---\n\
         title: many\nid: many\ncorrelation:\n  type: event_count\n  rules: [fail]\n  group-by: [client.address]\n  timespan: 1m\n  condition:\n    gte: 3\n---\n\
         title: spray\nid: spray\ncorrelation:\n  type: value_count\n  rules: [fail]\n  group-by: [client.address]\n  timespan: 1m\n  condition:\n    field: user.name\n    gte: 3\n---\n\
         title: then\nid: then\ncorrelation:\n  type: temporal_ordered\n  rules: [fail, admin]\n  group-by: [client.address]\n  timespan: 1m\n",
    );
    let fail = |ip: &str, user: &str, at: i64| {
        log("login failed")
            .attr("client.address", ip)
            .attr("user.name", user)
            .at(at * SEC)
    };
    let events = [
        fail("1.1.1.1", "a", 0),
        fail("2.2.2.2", "a", 1),
        fail("1.1.1.1", "a", 2),
        fail("1.1.1.1", "b", 3),
        log("admin granted")
            .attr("client.address", "1.1.1.1")
            .at(4 * SEC),
        fail("1.1.1.1", "c", 5),
        fail("2.2.2.2", "a", 200),
    ];
    let got = fired(&set, &events);
    let has = |i: usize, id: &str| got.get(i).is_some_and(|ids| ids.iter().any(|x| x == id));
    assert!(
        !has(2, "many") && has(3, "many"),
        "third failure from 1.1.1.1: {got:?}"
    );
    assert!(!has(1, "many"), "2.2.2.2 has one failure");
    assert!(
        !has(3, "spray") && has(5, "spray"),
        "third distinct user: {got:?}"
    );
    assert!(has(4, "then"), "failure then admin: {got:?}");
    assert!(!has(6, "many"), "window expired for 2.2.2.2");
    assert!(
        got.iter().flatten().all(|id| id != "fail-id"),
        "rules feeding correlations do not alert on their own: {got:?}"
    );
}

#[test]
fn temporal_needs_both_rules_in_the_window() {
    let set = rules(
        "title: a\nid: a-id\nname: a\nlogsource:\n  product: opentelemetry\ndetection:\n  s:\n    body: a\n  condition: s\n---\n\
         title: b\nid: b-id\nname: b\nlogsource:\n  product: opentelemetry\ndetection:\n  s:\n    body: b\n  condition: s\n---\n\
         title: both\nid: both\ncorrelation:\n  type: temporal\n  rules: [a, b]\n  group-by: [service]\n  timespan: 10s\n",
    );
    let got = fired(&set, &[log("b"), log("a").at(5 * SEC)]);
    assert!(
        got.get(1)
            .is_some_and(|ids| ids.contains(&"both".to_string())),
        "{got:?}"
    );
    let late = fired(&set, &[log("a"), log("b").at(30 * SEC)]);
    assert!(late.iter().flatten().all(|id| id != "both"), "{late:?}");
}

#[test]
fn unsupported_rules_are_refused_with_a_reason() {
    let cases = [
        (
            "title: w\nlogsource:\n  product: windows\ndetection:\n  s:\n    a: b\n  condition: s\n",
            "not produced by Vigil",
        ),
        (
            "title: w\nlogsource:\n  category: process_creation\ndetection:\n  s:\n    a: b\n  condition: s\n",
            "not a Vigil signal",
        ),
        (
            "title: w\nlogsource:\n  category: logs\n  definition_x: y\n  custom: z\ndetection:\n  s:\n    a: b\n  condition: s\n",
            "not supported",
        ),
        (
            "title: w\nlogsource:\n  category: logs\ndetection:\n  s:\n    a|expand: '%p%'\n  condition: s\n",
            "expand",
        ),
        (
            "title: w\nlogsource:\n  category: logs\ndetection:\n  s:\n    a|bogus: x\n  condition: s\n",
            "bogus",
        ),
        (
            "title: w\nlogsource:\n  category: logs\ndetection:\n  s:\n    a|re: '(['\n  condition: s\n",
            "regex",
        ),
        (
            "title: w\nlogsource:\n  category: logs\ndetection:\n  s:\n    a: b\n  condition: s and nope\n",
            "nope",
        ),
        (
            "title: w\nlogsource:\n  category: logs\ndetection:\n  s:\n    a: b\n  timeframe: 5m\n  condition: s\n",
            "timeframe",
        ),
        (
            "title: c\ncorrelation:\n  type: event_count\n  rules: [missing]\n  timespan: 1m\n  condition:\n    gte: 1\n",
            "missing",
        ),
        (": not yaml [", "yaml"),
        (
            "title: f\nname: f\nlogsource:\n  category: logs\ndetection:\n  s:\n    a: b\n  condition: s\n---\ntitle: c\ncorrelation:\n  type: event_count\n  rules: [f]\n  timespan: 1m\n  condition:\n    gte: 1\n",
            "has no `id`",
        ),
    ];
    for (yaml, reason) in cases {
        let problems = refused(yaml);
        assert!(
            problems
                .iter()
                .any(|p| p.to_lowercase().contains(&reason.to_lowercase())),
            "{yaml:?}: expected a problem mentioning {reason:?}, got {problems:?}"
        );
    }
}

#[test]
fn every_problem_is_reported_and_duplicates_are_caught() {
    let sources = [
        RuleSource { origin: "a.yml".into(), text: rule("  s:\n    body: x\n  condition: s") },
        RuleSource { origin: "b.yml".into(), text: rule("  s:\n    body: y\n  condition: s") },
        RuleSource { origin: "c.yml".into(), text: "title: w\nlogsource:\n  product: windows\ndetection:\n  s:\n    a: b\n  condition: s\n".into() },
    ];
    let problems = RuleSet::load(&sources).expect_err("refused");
    assert!(
        problems
            .iter()
            .any(|p| p.origin == "b.yml" && p.message.contains("duplicate")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| p.origin == "c.yml"), "{problems:?}");
}

#[test]
fn detections_carry_evidence_for_the_alert() {
    let set = rules(&rule(
        "  s:\n    url.query|contains: union select\n  condition: s",
    ));
    let mut engine = SigmaEngine::new(set, FieldMap::default()).expect("engine");
    let mut e =
        EventSpec::span("catalog", "GET /p", "SERVER").attr("url.query", "x union select 1");
    e.trace_id = Some("0af7651916cd43dd8448eb211c80319c".into());
    let redacted = Redactor::disabled()
        .apply(synthetic::batch(&[e], T0).expect("batch"))
        .expect("redact");
    let view = BatchView::new(&redacted).expect("view");
    let obs = engine.process(&view);
    let Some(Observation::Fire(c)) = obs.first() else {
        panic!("no match: {obs:?}")
    };
    assert_eq!(c.key.service, "catalog");
    assert_eq!(c.severity, Severity::High);
    assert_eq!(c.details["matched_fields"]["url.query"], "x union select 1");
    let sample = c.sample.as_ref().expect("sample");
    assert_eq!(
        sample.trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
}

/// A 404 sweep: ten distinct paths from one address within five minutes.
const SWEEP: &str = "title: miss\nid: miss\nlogsource:\n  product: opentelemetry\ndetection:\n  s:\n    body|contains: not found\n  condition: s\n---\n\
     title: sweep\nid: sweep\ncorrelation:\n  type: value_count\n  rules: [miss]\n  group-by: [client.address]\n  timespan: 5m\n  condition:\n    field: url.path\n    gte: 10\n";

fn miss(ip: &str, path: &str, at_ns: i64) -> EventSpec {
    log("not found")
        .attr("client.address", ip)
        .attr("url.path", path)
        .at(at_ns)
}

/// `(rule, group, second)` of every firing, the events going in batches of `batch` rows.
fn firings(
    engine: &mut SigmaEngine,
    events: &[EventSpec],
    batch: usize,
) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for chunk in events.chunks(batch) {
        let built = synthetic::batch(chunk, T0).expect("batch");
        let redacted = Redactor::disabled().apply(built).expect("redact");
        let view = BatchView::new(&redacted).expect("view");
        for o in engine.process(&view) {
            if let Observation::Fire(c) = o {
                out.push((
                    c.key.rule_id,
                    format!("{:?}", c.key.group),
                    c.time_ns.div_euclid(SEC),
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn a_flood_of_one_value_does_not_push_distinct_values_out_of_the_window() {
    // Nine distinct paths, then more repeats of the first than a window holds (10 000 entries
    // per group), then a tenth path: ten distinct paths within five minutes.
    let mut events: Vec<EventSpec> = (0..9)
        .map(|i| miss("198.51.100.7", &format!("/p{i}"), i64::from(i) * SEC))
        .collect();
    for i in 0..12_000_i64 {
        events.push(miss("198.51.100.7", "/p0", 10 * SEC + i * 1_000_000));
    }
    events.push(miss("198.51.100.7", "/admin", 30 * SEC));
    let mut engine = SigmaEngine::new(rules(SWEEP), FieldMap::default()).expect("engine");
    let fired = firings(&mut engine, &events, 4096);
    assert!(
        fired
            .iter()
            .any(|(rule, _, at)| rule == "sweep" && *at == T0 / SEC + 30),
        "the tenth distinct path fires the sweep: {fired:?}"
    );
}

#[test]
fn value_count_windows_fire_as_rsigma_does() {
    // Random traffic over three addresses and six paths; seconds advance, with events up to
    // one second late (as in a batch from several services). Thresholds are low and windows
    // short so that windows fill, fire and expire many times.
    let set = rules(
        &SWEEP
            .replace("timespan: 5m", "timespan: 4s")
            .replace("gte: 10", "gte: 4"),
    );
    let mut rng = synthetic::Rng::new(7);
    for round in 0..20 {
        let mut second = 0_i64;
        let mut events = Vec::new();
        for _ in 0..600 {
            if rng.chance(8) {
                second += 1 + rng.below(3) as i64;
            }
            let late = i64::from(round % 2 == 1 && rng.chance(4));
            let ip = format!("203.0.113.{}", rng.below(3));
            let path = format!("/p{}", rng.below(6));
            let at = (second - late).max(0) * SEC + rng.below(1000) as i64;
            events.push(miss(&ip, &path, at));
        }
        let batch = 1 + rng.below(50);
        let mut engine = SigmaEngine::new(set.clone(), FieldMap::default()).expect("engine");
        let filtered = firings(&mut engine, &events, batch);
        let mut reference_engine = SigmaEngine::new(set.clone(), FieldMap::default())
            .expect("engine")
            .counted_by_rsigma();
        let reference = firings(&mut reference_engine, &events, batch);
        assert!(!reference.is_empty(), "round {round}: the traffic fires");
        assert!(
            engine.repeats_dropped() > 50,
            "round {round}: repeats were dropped ({})",
            engine.repeats_dropped()
        );
        // Every firing is one rsigma gives when it counts every event itself...
        for f in &filtered {
            assert!(
                reference.contains(f),
                "round {round}: {f:?} not in the reference"
            );
        }
        // ...and every reference firing has one for the same group at most a second apart
        // (exactly the same second when no event is late).
        for (rule, group, at) in &reference {
            let slack = if round % 2 == 1 { 1 } else { 0 };
            assert!(
                filtered
                    .iter()
                    .any(|(r, g, a)| r == rule && g == group && (a - at).abs() <= slack),
                "round {round}: {rule} {group} at {at}s missing: {filtered:?}"
            );
        }
    }
}
