//! The prefilter may only save work: over varied batches (random rows, and every test event
//! the shipped rules carry), the detector with it reports exactly what evaluating every rule
//! on every row reports, detection by detection and correlation by correlation.

use std::collections::BTreeSet;
use std::sync::Arc;

use rsigma_parser::ExemplarPayload;
use vigil_core::{RedactedBatch, Redactor};

use crate::alert::Observation;
use crate::fields::FieldMap;
use crate::sigma::{RuleSet, RuleSource, SigmaEngine};
use crate::synthetic::{self, EventSpec, Rng, Scalar};
use crate::view::BatchView;

const T0: i64 = 1_767_225_600_000_000_000;
const SEC: i64 = 1_000_000_000;

/// Rules using every condition form and matcher kind the prefilter treats differently.
const FORMS: &str = r#"
title: keywords with wildcards and numbers
id: f-keywords
logsource: { product: opentelemetry }
detection:
  keywords:
    - 'panic*boom'
    - 'deadbeef'
    - 'stra?e'
    - 42
  condition: keywords
---
title: case and anchors
id: f-case
logsource: { product: opentelemetry, category: logs }
detection:
  cased:
    body|contains|cased: 'Token'
  prefix:
    body|startswith: 'get '
  suffix:
    body|endswith|cased: 'DONE'
  exact:
    severity_text: error
  wildcard:
    body: '*needle?x*'
  condition: 1 of them
---
title: numbers, nulls and negation
id: f-values
logsource: { product: opentelemetry }
detection:
  severe:
    severity_number|gte: 17
  slow:
    duration_ns|gt: 5000000
  anonymous:
    user.name: null
  odd_method:
    http.request.method|neq: GET
  no_query:
    url.query|exists: false
  no_body:
    body: null
  condition: (severe or slow) and not no_query or (anonymous and odd_method) or no_body
---
title: service logsource and selectors
id: f-service
logsource: { product: opentelemetry, service: Auth }
detection:
  selection_net:
    client.address|cidr: 203.0.113.0/24
  selection_agent:
    user_agent.original|contains|all:
      - curl
      - '/8'
  filter_health:
    url.path|startswith: /health
  condition: 1 of selection_* and not filter_health
---
title: all of them on spans
id: f-all
logsource: { category: spans }
detection:
  server:
    kind: server
  failed:
    status_code: ERROR
  condition: all of them
---
title: two of three
id: f-count
logsource: { product: opentelemetry }
detection:
  sel_a:
    url.path|contains: admin
  sel_b:
    http.response.status_code: 200
  sel_c:
    client.address|startswith: '10.'
  condition: 2 of sel_*
---
title: field reference
id: f-fieldref
logsource: { product: opentelemetry }
detection:
  same:
    server.address|fieldref: client.address
  condition: same
---
title: encodings
id: f-encodings
logsource: { product: opentelemetry }
detection:
  encoded:
    body|base64offset|contains: 'secret'
  dashes:
    body|windash|contains: ' -enc '
  condition: encoded or dashes
---
title: mapped names
id: f-mapped
logsource: { product: opentelemetry }
detection:
  web:
    cs-method: POST
    c-uri|endswith: .php
  status:
    sc-status:
      - 500
      - 503
  host:
    host.name|startswith: web-
  spans_of_shop:
    signal: spans
    service: shop
  condition: web or (status and spans_of_shop) or host
---
title: unicode and regex flags
id: f-unicode
logsource: { product: opentelemetry }
detection:
  german:
    body|contains: 'STRASSE'
  kelvin:
    url.path|contains: '/kelvin'
  multiline:
    body|re|m: '^second line$'
  dotall:
    body|re|s|i: 'first.+LINE'
  paths:
    url.path|re:
      - '^/a[0-9]+$'
      - '^/b/'
      - 'z$'
  agents:
    user_agent.original|contains:
      - one
      - two
      - three
      - four
      - five
      - six
      - seven
      - eight
      - nine
  condition: 1 of them
---
title: many failures from one service
id: f-burst
correlation:
  type: event_count
  generate: true
  rules:
    - f-service
  group-by:
    - client.address
  timespan: 1m
  condition:
    gte: 3
---
title: a scan then an admin hit
id: f-sequence
correlation:
  type: temporal
  generate: true
  rules:
    - f-count
    - f-mapped
  group-by:
    - client.address
  timespan: 2m
"#;

fn rule_sets() -> Vec<(&'static str, Arc<RuleSet>)> {
    let load = |sources: &[RuleSource]| {
        Arc::new(RuleSet::load(sources).unwrap_or_else(|p| panic!("rules refused: {p:?}")))
    };
    let forms = RuleSource {
        origin: "forms.yml".into(),
        text: FORMS.into(),
    };
    vec![
        ("shipped", load(&crate::shipped::sources())),
        ("bench", load(&crate::synthetic::topped_up_rules(50))),
        ("forms", load(&[forms])),
    ]
}

const SERVICES: &[&str] = &["auth", "Auth", "shop", "gateway", "journald", "media"];

const BODIES: &[&str] = &[
    "request handled in 3 ms",
    "login failed for user admin",
    "Authentication FAILED: bad credentials",
    "sudo: www-data : user NOT in sudoers ; COMMAND=/bin/bash",
    "exec: chmod -R 777 /srv/uploads",
    "rejected token: header {\"alg\":\"none\"}",
    "lookup ${jndi:ldap://x/a}",
    "GET /index 200",
    "get /Admin",
    "issued Token to client",
    "job DONE",
    "job done",
    "panic: it went boom",
    "crc deadbeef mismatch",
    "Straße 5",
    "STRASSE 5",
    "first line\nsecond line",
    "FIRST\nline two",
    "c2VjcmV0IGRhdGE=",
    "powershell \u{2013}enc abc",
    "bench-3 failed",
    "bench-7 FAILED twice",
    "value 42 seen",
    "a needle-x here",
    "systemctl stop auditd",
    "eventName=StopLogging",
    "",
];

const PATHS: &[&str] = &[
    "/cart",
    "/login",
    "/api/v1/auth/",
    "/admin/users",
    "/actuator/health",
    "/actuator/env",
    "/debug/pprof/",
    "/../../etc/passwd",
    "/.git/config",
    "/.env",
    "/health/live",
    "/a12",
    "/b/x",
    "/xyz",
    "/\u{212a}elvin/page",
    "/KELVIN",
    "/index.PHP",
    "/bench-4/a",
    "/bench-8/B",
    "/search?q=union select",
];

const QUERIES: &[&str] = &[
    "page=1&sort=price",
    "id=1' or '1'='1",
    "u=http://169.254.169.254/latest/meta-data",
    "q=<script>alert(1)</script>",
    "a=;cat /etc/passwd",
    "bench3=12;",
    "bench7=x;",
    "next=file:///etc/passwd",
    "x=%0acurl+evil",
];

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    "sqlmap/1.7",
    "curl/8.4.0",
    "Curl/7.1",
    "kube-probe/1.29",
    "bench-scanner-2",
    "BENCH-SCANNER-6",
    "agent-one",
    "NINE lives",
];

const ADDRESSES: &[&str] = &[
    "10.1.2.3",
    "203.0.113.7",
    "203.0.113.9",
    "198.51.100.10",
    "::1",
    "fe80::1",
    "not-an-ip",
];

const SERVERS: &[&str] = &[
    "api.example.com",
    "orders.svc.cluster.local",
    "10.0.0.1",
    "ocsp.digicert.com",
    "203.0.113.7",
    "localhost",
];

/// One random row of `signal`.
fn random_event(rng: &mut Rng, spans: bool) -> EventSpec {
    let service = rng.pick(SERVICES);
    let mut e = if spans {
        let mut e = EventSpec::span(
            service,
            rng.pick(&["GET /x", "POST /login", "query"]),
            rng.pick(&["SERVER", "CLIENT", "PRODUCER", "INTERNAL"]),
        );
        e.status_code = Some(rng.pick(&["OK", "ERROR", "UNSET"]).into());
        e.status_message = Some(
            rng.pick(&["", "token is unverifiable: 'none'", "boom"])
                .into(),
        );
        e.duration_ms = Some(rng.below(12) as f64);
        e
    } else {
        let mut e = EventSpec::log(service, rng.pick(BODIES));
        if rng.chance(8) {
            e.body = None;
        }
        e.severity_text = Some(rng.pick(&["INFO", "ERROR", "error", "warn"]).into());
        e.severity_number = Some(rng.pick(&["9", "17", "21"]).parse().unwrap_or(9));
        e
    };
    let mut attr = |rng: &mut Rng, key: &str, pool: &[&str], one_in: usize| {
        if rng.chance(one_in) {
            e.attributes
                .insert(key.into(), Scalar::Str(rng.pick(pool).into()));
        }
    };
    attr(rng, "url.path", PATHS, 2);
    attr(rng, "url.query", QUERIES, 3);
    attr(rng, "user_agent.original", AGENTS, 3);
    attr(rng, "client.address", ADDRESSES, 2);
    attr(rng, "server.address", SERVERS, 4);
    attr(
        rng,
        "http.request.method",
        &["GET", "POST", "TRACE", "connect"],
        3,
    );
    attr(rng, "user.name", &["admin", "alice"], 4);
    attr(rng, "url.scheme", &["http", "https"], 4);
    attr(
        rng,
        "url.full",
        &["http://api.example.com/x", "https://a.b/c"],
        5,
    );
    attr(rng, "http.request.header.x-forwarded-for", &["1.2.3.4"], 6);
    attr(
        rng,
        "http.response.header.content-type",
        &["video/mp4", "application/json"],
        6,
    );
    attr(
        rng,
        "db.statement",
        &["TRUNCATE TABLE audit_log", "select 1"],
        8,
    );
    attr(
        rng,
        "jwt.header",
        &["eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", "x"],
        8,
    );
    attr(rng, "note", &["deadbeef", "42", "Panic then BOOM"], 6);
    if rng.chance(2) {
        let code = [200, 401, 403, 404, 500, 503][rng.below(6)];
        e.attributes
            .insert("http.response.status_code".into(), Scalar::Int(code));
    }
    if rng.chance(5) {
        e.attributes.insert(
            "http.response.body.size".into(),
            Scalar::Int([100, 60_000_000][rng.below(2)]),
        );
    }
    if rng.chance(4) {
        bench_values(rng, &mut e);
    }
    if rng.chance(4) {
        e.resource.insert(
            "host.name".into(),
            Scalar::Str(rng.pick(&["web-1", "db-2"]).into()),
        );
    }
    e
}

/// Values the benchmark's generated rules look for.
fn bench_values(rng: &mut Rng, e: &mut EventSpec) {
    let i = rng.below(30);
    let mut attr = |key: &str, value: String| {
        e.attributes.insert(key.into(), Scalar::Str(value));
    };
    match rng.below(4) {
        0 => {
            attr("url.path", format!("/bench-{i}/a"));
            e.attributes
                .insert("http.response.status_code".into(), Scalar::Int(403));
        }
        1 if e.body.is_some() => e.body = Some(format!("bench-{i} failed")),
        1 | 2 => attr("user_agent.original", format!("bench-scanner-{i}")),
        _ => attr("url.query", format!("bench{i}=7;")),
    }
}

/// The test events embedded in the shipped rules, as event sequences.
fn exemplar_sequences() -> Vec<Vec<EventSpec>> {
    let rules = RuleSet::load(&crate::shipped::sources()).expect("shipped rules");
    let collection = rules.collection();
    let detection = collection.rules.iter().map(rsigma_parser::exemplars);
    let correlation = collection
        .correlations
        .iter()
        .map(rsigma_parser::correlation_exemplars);
    let mut out = Vec::new();
    for cases in detection.chain(correlation) {
        for case in cases.expect("exemplars parse") {
            let timed = match case.payload {
                ExemplarPayload::Event(event) => vec![(0, event)],
                ExemplarPayload::Sequence(events) => events
                    .into_iter()
                    .map(|t| (t.offset.seconds as i64 * SEC, t.event))
                    .collect(),
            };
            let specs = timed
                .into_iter()
                .map(|(offset, value)| {
                    let spec: EventSpec = yaml_serde::from_value(value).expect("event spec");
                    spec.at(offset)
                })
                .collect();
            out.push(specs);
        }
    }
    out
}

fn redacted(events: &[EventSpec], base_ns: i64) -> RedactedBatch {
    Redactor::disabled()
        .apply(synthetic::batch(events, base_ns).expect("batch"))
        .expect("redact")
}

/// Random batches, each of one signal, some carrying a rule's test events among random rows.
fn batches(seed: u64, count: usize) -> Vec<RedactedBatch> {
    let mut rng = Rng::new(seed);
    let exemplars = exemplar_sequences();
    let mut out = Vec::new();
    for sequence in &exemplars {
        out.push(redacted(sequence, T0));
    }
    for b in 0..count {
        let spans = rng.chance(2);
        let rows = 1 + rng.below(48);
        let mut events: Vec<EventSpec> = (0..rows)
            .map(|i| random_event(&mut rng, spans).at(i as i64 * 700_000_000))
            .collect();
        let sequence = &exemplars[rng.below(exemplars.len())];
        if sequence
            .iter()
            .all(|e| e.signal().ok() == events[0].signal().ok())
        {
            events.extend(sequence.iter().cloned());
        }
        let base = T0 + b as i64 * 20 * SEC;
        out.push(redacted(&events, base));
    }
    out
}

/// `observations` as text, selection names sorted: rsigma lists the selections a `1 of` or
/// `all of` matched in the order of its detection map, which differs between two engines
/// compiled from the same rules.
fn normalized(mut observations: Vec<Observation>) -> String {
    for observation in &mut observations {
        if let Observation::Fire(candidate) = observation
            && let Some(serde_json::Value::Array(names)) =
                candidate.details.get_mut("matched_selections")
        {
            names.sort_by_key(ToString::to_string);
        }
    }
    format!("{observations:#?}")
}

fn rule_ids(observations: &[Observation]) -> impl Iterator<Item = String> + '_ {
    observations.iter().map(|o| match o {
        Observation::Fire(c) => c.key.rule_id.clone(),
        Observation::Clear(k) => k.rule_id.clone(),
    })
}

#[test]
fn prefiltered_detection_reports_what_evaluating_every_row_reports() {
    for (name, rules) in rule_sets() {
        let mut prefiltered = SigmaEngine::new(rules.clone(), FieldMap::default()).expect("engine");
        let mut reference = SigmaEngine::new(rules.clone(), FieldMap::default()).expect("engine");
        let mut fired = BTreeSet::new();
        let mut total = 0;
        for (i, batch) in batches(0x5eed ^ name.len() as u64, 150).iter().enumerate() {
            let view = BatchView::new(batch).expect("view");
            let expected = reference.process_every_row(&view);
            let got = prefiltered.process(&view);
            total += expected.len();
            fired.extend(rule_ids(&expected));
            assert_eq!(
                normalized(got),
                normalized(expected),
                "rule set `{name}`, batch {i}"
            );
        }
        // The batches must make every rule that reports on its own fire, or equality would
        // prove little.
        let collection = rules.collection();
        let feeding_only: BTreeSet<&String> = collection
            .correlations
            .iter()
            .filter(|c| !c.generate)
            .flat_map(|c| &c.rules)
            .collect();
        let feeds_only = |id: &Option<String>, name: &Option<String>| {
            [id, name]
                .into_iter()
                .flatten()
                .any(|key| feeding_only.contains(key))
        };
        let silent: Vec<&String> = collection
            .rules
            .iter()
            .filter(|r| !feeds_only(&r.id, &r.name))
            .filter_map(|r| r.id.as_ref())
            .chain(collection.correlations.iter().filter_map(|c| c.id.as_ref()))
            .filter(|id| !fired.contains(*id))
            .collect();
        assert!(
            silent.is_empty(),
            "rule set `{name}`: {total} observations, rules never firing: {silent:?}"
        );
    }
}

#[test]
fn a_needle_spanning_two_values_hides_no_match_in_the_second() {
    // Values are searched back to back ("xa" "bc" reads "xabc"): the first match found, "ab",
    // belongs to no value, and "bc" in the second must still be found.
    let rules = Arc::new(
        RuleSet::load(&[RuleSource {
            origin: "t.yml".into(),
            text: "title: t\nid: t\nlogsource: { product: opentelemetry }\ndetection:\n  s:\n    url.path|contains: [ab, bc, n3, n4, n5, n6, n7, n8]\n  condition: s\n".into(),
        }])
        .expect("rule"),
    );
    let events: Vec<EventSpec> = ["xa", "bc", "none"]
        .iter()
        .map(|path| EventSpec::log("web", "hello").attr("url.path", *path))
        .collect();
    let batch = redacted(&events, T0);
    let view = BatchView::new(&batch).expect("view");
    let mut engine = SigmaEngine::new(rules, FieldMap::default()).expect("engine");
    let fired: Vec<String> = engine
        .process(&view)
        .into_iter()
        .map(|o| match o {
            Observation::Fire(c) => c.summary,
            Observation::Clear(k) => k.rule_id,
        })
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
}

#[test]
fn regexes_behind_literal_gates_still_match_in_any_case() {
    let rules = Arc::new(
        RuleSet::load(&[RuleSource {
            origin: "t.yml".into(),
            text: r#"
title: gated regexes
id: g
logsource: { product: opentelemetry }
detection:
  admin:
    url.path|re|i: '(?:^|/)(?:admin|actuator)(?:/|$)'
  kelvin:
    url.path|re|i: 'kelvin-[0-9]+'
  either:
    url.query|re:
      - 'id=[0-9]+;'
      - 'cmd=(?:ls|id)'
  shape:
    url.query|re: '^[0-9]+$'
  condition: 1 of them
"#
            .into(),
        }])
        .expect("rule"),
    );
    let engine = SigmaEngine::new(rules.clone(), FieldMap::default()).expect("engine");
    // `shape` has no literal to gate on: it runs on every value.
    assert_eq!(engine.prefilter().regex_gates(), 4);

    let cases = [
        ("/ADMIN/x", "", true),
        ("/api/Actuator", "", true),
        // `(?i)k` matches the Kelvin sign, which no ASCII folding of "kelvin" finds.
        ("/\u{212A}ELVIN-7", "", true),
        ("/cart", "123", true),
        ("/cart", "id=7;", true),
        ("/cart", "x=1&cmd=ls", true),
        ("/administrators", "", false),
        ("/cart", "id=x;", false),
    ];
    let events: Vec<EventSpec> = cases
        .iter()
        .map(|(path, query, _)| {
            EventSpec::log("web", "hello")
                .attr("url.path", *path)
                .attr("url.query", *query)
        })
        .collect();
    let batch = redacted(&events, T0);
    let view = BatchView::new(&batch).expect("view");
    let mut gated = SigmaEngine::new(rules.clone(), FieldMap::default()).expect("engine");
    let mut reference = SigmaEngine::new(rules, FieldMap::default()).expect("engine");
    let got = gated.process(&view);
    assert_eq!(
        normalized(got.clone()),
        normalized(reference.process_every_row(&view))
    );
    let expected = cases.iter().filter(|c| c.2).count();
    assert_eq!(got.len(), expected, "{}", normalized(got));
}
