//! `vigil rules test`: replays the test events embedded in rules (`rsigma.exemplars`) through
//! the same path live traffic takes — OTLP decode, redaction, field mapping, evaluation.

use std::sync::Arc;

pub use rsigma_parser::Expect;
use rsigma_parser::{Exemplar, ExemplarPayload, ExemplarShapeError};
use vigil_core::Redactor;

use crate::fields::FieldMap;
use crate::sigma::{RuleSet, SigmaEngine, rule_key};
use crate::synthetic::{self, EventSpec};
use crate::view::BatchView;

/// 2026-01-01T00:00:00Z: test events are placed at this time plus their offset.
const BASE_NS: i64 = 1_767_225_600_000_000_000;

/// The outcome of one test event (or event sequence).
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub rule: String,
    pub origin: String,
    pub name: String,
    pub expect: Expect,
    /// `None` when it passed; otherwise what went wrong.
    pub failure: Option<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// Runs every embedded test case of `rules`. Rules without cases are not reported here (see
/// [`rules_without`]).
pub fn run(rules: &Arc<RuleSet>, fields: &FieldMap, redactor: &Redactor) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for (key, cases) in cases_by_rule(rules) {
        let origin = rules.origin(&key).unwrap_or_default().to_owned();
        let cases = match cases {
            Ok(cases) => cases,
            Err(errors) => {
                let message = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                results.push(CaseResult {
                    rule: key.clone(),
                    origin,
                    name: "(test events)".into(),
                    expect: Expect::Match,
                    failure: Some(format!("invalid test events: {message}")),
                });
                continue;
            }
        };
        for case in cases {
            let failure = run_case(rules, fields, redactor, &key, &case).err();
            results.push(CaseResult {
                rule: key.clone(),
                origin: origin.clone(),
                name: case.name.clone(),
                expect: case.expect,
                failure,
            });
        }
    }
    results
}

/// A rule's test cases, or why they cannot be read.
type Cases = Result<Vec<Exemplar>, Vec<ExemplarShapeError>>;

/// Every rule's id with its test cases, detection rules first.
fn cases_by_rule(rules: &RuleSet) -> Vec<(String, Cases)> {
    let collection = rules.collection();
    let detections = collection.rules.iter().map(|r| {
        (
            rule_key(r.id.as_deref(), r.name.as_deref(), &r.title),
            rsigma_parser::exemplars(r),
        )
    });
    let correlations = collection.correlations.iter().map(|r| {
        (
            rule_key(r.id.as_deref(), r.name.as_deref(), &r.title),
            rsigma_parser::correlation_exemplars(r),
        )
    });
    detections.chain(correlations).collect()
}

/// Ids of the rules in `rules` that have no test case expecting `expect`, sorted.
pub fn rules_without(rules: &RuleSet, expect: Expect) -> Vec<String> {
    let mut without: Vec<String> = cases_by_rule(rules)
        .into_iter()
        .filter(|(_, cases)| {
            !cases
                .as_ref()
                .is_ok_and(|list| list.iter().any(|e| e.expect == expect))
        })
        .map(|(key, _)| key)
        .collect();
    without.sort();
    without
}

fn run_case(
    rules: &Arc<RuleSet>,
    fields: &FieldMap,
    redactor: &Redactor,
    key: &str,
    case: &Exemplar,
) -> Result<(), String> {
    let mut engine = SigmaEngine::new(rules.clone(), fields.clone())?;
    let timed: Vec<(i64, &yaml_serde::Value)> = match &case.payload {
        ExemplarPayload::Event(event) => vec![(0, event)],
        ExemplarPayload::Sequence(events) => events
            .iter()
            .map(|t| {
                let secs = i64::try_from(t.offset.seconds).unwrap_or(i64::MAX / 2);
                (secs.saturating_mul(1_000_000_000), &t.event)
            })
            .collect(),
    };
    let detection_only = matches!(case.payload, ExemplarPayload::Event(_));
    let mut matched = false;
    for (offset_ns, value) in timed {
        let spec: EventSpec = yaml_serde::from_value(value.clone())
            .map_err(|e| format!("test event is not a Vigil event: {e}"))?;
        let batch = synthetic::batch(&[spec], BASE_NS.saturating_add(offset_ns))
            .map_err(|e| format!("test event cannot be built: {e}"))?;
        let redacted = redactor
            .apply(batch)
            .map_err(|e| format!("test event cannot be redacted: {e}"))?;
        let view = BatchView::new(&redacted).map_err(|e| e.to_string())?;
        matched |= if detection_only {
            engine.detections(&view).iter().any(|r| r == key)
        } else {
            engine.process(&view).iter().any(|o| match o {
                crate::Observation::Fire(c) => c.key.rule_id == key,
                crate::Observation::Clear(_) => false,
            })
        };
    }
    match (case.expect, matched) {
        (Expect::Match, true) | (Expect::NoMatch, false) => Ok(()),
        (Expect::Match, false) => Err("expected a match, got none".into()),
        (Expect::NoMatch, true) => Err("expected no match, but the rule matched".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigma::RuleSource;
    use vigil_core::redact::RedactionConfig;
    use vigil_core::{HashKey, Redactor};

    fn default_redactor() -> Redactor {
        Redactor::new(
            &RedactionConfig::default(),
            HashKey::new(b"vigil rule test events key").expect("key"),
        )
        .expect("default redaction config")
    }

    #[test]
    fn shipped_rules_load_and_pass_their_test_events() {
        let rules = Arc::new(
            RuleSet::load(&crate::shipped::sources()).unwrap_or_else(|p| {
                panic!(
                    "shipped rules refused:\n{}",
                    p.iter().map(|p| format!("  {p}\n")).collect::<String>()
                )
            }),
        );
        assert!(rules.len() >= 2, "{} rules", rules.len());
        let results = run(&rules, &FieldMap::default(), &default_redactor());
        let failed: Vec<String> = results
            .iter()
            .filter(|r| !r.passed())
            .map(|r| {
                format!(
                    "{} [{}] {}: {}",
                    r.origin,
                    r.rule,
                    r.name,
                    r.failure.as_deref().unwrap_or("")
                )
            })
            .collect();
        assert!(
            failed.is_empty(),
            "failing rule tests:\n{}",
            failed.join("\n")
        );
        for expect in [Expect::Match, Expect::NoMatch] {
            let missing = rules_without(&rules, expect);
            assert!(
                missing.is_empty(),
                "rules without a {expect} test event: {missing:?}"
            );
        }
    }

    /// The test events of the rules in `yaml`, run with the default redaction.
    fn run_yaml(yaml: &str) -> Vec<CaseResult> {
        let source = RuleSource {
            origin: "t.yml".into(),
            text: yaml.into(),
        };
        let rules = Arc::new(RuleSet::load(&[source]).expect("load"));
        run(&rules, &FieldMap::default(), &default_redactor())
    }

    #[test]
    fn a_wrong_expectation_fails_and_says_so() {
        let yaml = "title: t\nid: t\nlogsource:\n  product: opentelemetry\ndetection:\n  s:\n    body|contains: boom\n  condition: s\nrsigma.exemplars:\n  - name: says match but does not\n    expect: match\n    event: { service: a, body: calm }\n  - name: bad event\n    expect: match\n    event: { service: a, colour: red }\n";
        let results = run_yaml(yaml);
        assert_eq!(results.len(), 2);
        assert_eq!(
            results[0].failure.as_deref(),
            Some("expected a match, got none")
        );
        assert!(
            results[1]
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("colour")),
            "{:?}",
            results[1]
        );
    }

    #[test]
    fn test_events_pass_through_redaction_like_live_traffic() {
        // An email in the body is replaced before rules see it: a rule matching the raw
        // address cannot fire, one matching the redaction marker can.
        let yaml = "title: raw\nid: raw\nlogsource:\n  product: opentelemetry\ndetection:\n  s:\n    body|contains: alice@example.com\n  condition: s\nrsigma.exemplars:\n  - expect: no-match\n    event: { service: a, body: mail alice@example.com }\n---\ntitle: marker\nid: marker\nlogsource:\n  product: opentelemetry\ndetection:\n  s:\n    body|contains:\n      - 'email:'\n      - '[REDACTED:EMAIL'\n  condition: s\nrsigma.exemplars:\n  - expect: match\n    event: { service: a, body: mail alice@example.com }\n";
        let results = run_yaml(yaml);
        assert!(results.iter().all(CaseResult::passed), "{results:?}");
    }
}
