//! Sigma detection and correlation rules: loading with every problem reported (a rule Vigil
//! cannot evaluate faithfully is refused, never half-run), and evaluation over batch rows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rsigma_eval::{
    CorrelationConfig, CorrelationEngine, EvaluationResult, ResultBody, evaluate_rule,
};
use rsigma_parser::{
    ConditionOperator, CorrelationCondition, CorrelationRule, CorrelationType, Detection, Level,
    LogSource, Modifier, SigmaCollection, SigmaRule, parse_sigma_yaml,
};
use serde_json::{Map, Value};
use vigil_core::Signal;

use crate::alert::{AlertKey, Candidate, Observation, Sample, Severity};
use crate::fields::{BatchEvents, FieldMap, PRODUCT, RowEvent, event_logsource};
use crate::prefilter::Prefilter;
use crate::value_count::{self, ValueCounts};
use crate::view::BatchView;

/// Rule text and where it came from (a path, or `shipped:<file>`).
#[derive(Debug, Clone)]
pub struct RuleSource {
    pub origin: String,
    pub text: String,
}

/// Why a rule file or rule was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProblem {
    pub origin: String,
    /// Rule title or id, when the problem is with one rule.
    pub rule: Option<String>,
    pub message: String,
}

impl std::fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.rule {
            Some(rule) => write!(f, "{}: rule `{rule}`: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// A validated set of rules: parses, passes Vigil's checks and compiles.
#[derive(Debug, Clone)]
pub struct RuleSet {
    collection: SigmaCollection,
    /// Rule id (Sigma `id`, else `name`, else title) → the source it came from.
    origins: HashMap<String, String>,
}

/// Correlation limits.
const MAX_STATE_ENTRIES: usize = 100_000;
const MAX_GROUP_ENTRIES: usize = 10_000;

impl RuleSet {
    /// Parses and checks every source; returns every problem found, or the rules.
    pub fn load(sources: &[RuleSource]) -> Result<Self, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let mut collection = SigmaCollection::new();
        let mut origins = HashMap::new();
        for source in sources {
            let problem = |rule: Option<&str>, message: String| RuleProblem {
                origin: source.origin.clone(),
                rule: rule.map(str::to_owned),
                message,
            };
            let parsed = match parse_sigma_yaml(&source.text) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(problem(None, format!("not valid Sigma: {e}")));
                    continue;
                }
            };
            problems.extend(parsed.errors.iter().map(|e| problem(None, e.clone())));
            if !parsed.filters.is_empty() {
                problems.push(problem(
                    None,
                    "filter documents are not supported; put exclusions in the rule's condition"
                        .into(),
                ));
            }
            for rule in &parsed.rules {
                let key = rule_key(rule.id.as_deref(), rule.name.as_deref(), &rule.title);
                for message in check_rule(rule) {
                    problems.push(problem(Some(&key), message));
                }
                if let Err(e) = compile_alone(rule) {
                    problems.push(problem(Some(&key), e));
                }
                register(&mut origins, &mut problems, key, &source.origin);
            }
            for corr in &parsed.correlations {
                let key = rule_key(corr.id.as_deref(), corr.name.as_deref(), &corr.title);
                register(&mut origins, &mut problems, key, &source.origin);
            }
            collection.rules.extend(parsed.rules);
            collection
                .correlations
                .extend(parsed.correlations.into_iter().map(all_rules_for_temporal));
        }
        // rsigma links a detection to its correlations through the detection's `id`; a rule
        // referenced by name alone would silently never feed the correlation.
        for corr in &collection.correlations {
            for reference in &corr.rules {
                let unlinkable = collection
                    .rules
                    .iter()
                    .any(|r| r.id.is_none() && r.name.as_deref() == Some(reference.as_str()));
                if unlinkable {
                    problems.push(RuleProblem {
                        origin: "rules".into(),
                        rule: Some(rule_key(corr.id.as_deref(), corr.name.as_deref(), &corr.title)),
                        message: format!(
                            "references rule `{reference}`, which has no `id`; correlated rules need one"
                        ),
                    });
                }
            }
        }
        // Correlations reference rules across files: compile the whole set once.
        if problems.is_empty()
            && let Err(e) = build_engine(&collection)
        {
            problems.push(RuleProblem {
                origin: "rules".into(),
                rule: None,
                message: e,
            });
        }
        if problems.is_empty() {
            Ok(Self {
                collection,
                origins,
            })
        } else {
            Err(problems)
        }
    }

    pub fn len(&self) -> usize {
        self.origins.len()
    }
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }
    pub fn collection(&self) -> &SigmaCollection {
        &self.collection
    }
    /// Where rule `key` was loaded from.
    pub fn origin(&self, key: &str) -> Option<&str> {
        self.origins.get(key).map(String::as_str)
    }
}

/// Sigma says a temporal correlation without a condition needs every referenced rule within
/// the timespan; rsigma 0.23 parses the missing condition as "at least one rule", which would
/// fire on any single match. Spell the spec's meaning out.
fn all_rules_for_temporal(mut corr: CorrelationRule) -> CorrelationRule {
    let temporal = matches!(
        corr.correlation_type,
        CorrelationType::Temporal | CorrelationType::TemporalOrdered
    );
    if let CorrelationCondition::Threshold {
        predicates,
        field: None,
        ..
    } = &mut corr.condition
        && temporal
        && predicates.as_slice() == [(ConditionOperator::Gte, 1)]
    {
        let all = u64::try_from(corr.rules.len()).unwrap_or(u64::MAX);
        *predicates = vec![(ConditionOperator::Gte, all)];
    }
    corr
}

fn register(
    origins: &mut HashMap<String, String>,
    problems: &mut Vec<RuleProblem>,
    key: String,
    origin: &str,
) {
    if let Some(first) = origins.insert(key.clone(), origin.to_owned()) {
        problems.push(RuleProblem {
            origin: origin.to_owned(),
            rule: Some(key),
            message: format!("duplicate rule id, also defined in {first}"),
        });
    }
}

/// The id alerts carry: the Sigma `id`, else `name`, else the title.
pub(crate) fn rule_key(id: Option<&str>, name: Option<&str>, title: &str) -> String {
    id.or(name).unwrap_or(title).to_owned()
}

fn severity(level: Option<Level>) -> Severity {
    match level {
        Some(Level::Informational) => Severity::Info,
        Some(Level::Low) => Severity::Low,
        None | Some(Level::Medium) => Severity::Medium,
        Some(Level::High) => Severity::High,
        Some(Level::Critical) => Severity::Critical,
    }
}

/// Vigil's own checks: the logsource must be one Vigil produces, and features whose meaning
/// depends on a backend pipeline Vigil does not have are refused.
fn check_rule(rule: &SigmaRule) -> Vec<String> {
    let mut problems = Vec::new();
    let ls: &LogSource = &rule.logsource;
    if let Some(product) = &ls.product
        && !product.eq_ignore_ascii_case(PRODUCT)
    {
        problems.push(format!(
            "logsource product `{product}` is not produced by Vigil (use `{PRODUCT}` or leave it out)"
        ));
    }
    if let Some(category) = &ls.category
        && Signal::TELEMETRY
            .iter()
            .all(|s| !s.as_str().eq_ignore_ascii_case(category))
    {
        problems.push(format!(
            "logsource category `{category}` is not a Vigil signal (use `logs` or `spans`)"
        ));
    }
    for custom in ls.custom.keys() {
        problems.push(format!(
            "logsource field `{custom}` is not supported (only product, category, service)"
        ));
    }
    let mut modifiers = HashSet::new();
    for detection in rule.detection.named.values() {
        collect_modifiers(detection, &mut modifiers);
    }
    if modifiers.contains(&Modifier::Expand) {
        problems.push(
            "the `expand` modifier needs placeholder values, which Vigil does not define".into(),
        );
    }
    if rule.detection.timeframe.is_some() {
        problems.push(
            "`timeframe` is the deprecated Sigma v1 aggregation; write a correlation rule".into(),
        );
    }
    problems
}

fn collect_modifiers(detection: &Detection, out: &mut HashSet<Modifier>) {
    match detection {
        Detection::AllOf(items) => {
            for item in items {
                out.extend(item.field.modifiers.iter().copied());
            }
        }
        Detection::AnyOf(inner) | Detection::And(inner) => {
            for d in inner {
                collect_modifiers(d, out);
            }
        }
        Detection::ArrayMatch { body, .. } => collect_modifiers(body, out),
        Detection::Conditional { named, .. } => {
            for d in named.values() {
                collect_modifiers(d, out);
            }
        }
        Detection::Keywords(_) => {}
    }
}

/// Compiles one rule on its own, to attribute compile errors to the right rule.
fn compile_alone(rule: &SigmaRule) -> Result<(), String> {
    let mut engine = rsigma_eval::Engine::new();
    engine.add_rule(rule).map_err(|e| e.to_string())
}

fn correlation_config() -> CorrelationConfig {
    CorrelationConfig {
        max_state_entries: MAX_STATE_ENTRIES,
        max_group_entries: Some(MAX_GROUP_ENTRIES),
        // Rules that only feed correlations do not alert on their own (Sigma `generate`).
        emit_detections: false,
        ..CorrelationConfig::default()
    }
}

fn value_count_limits() -> value_count::Limits {
    let config = correlation_config();
    value_count::Limits {
        max_windows: config.max_state_entries,
        max_window_entries: config.max_group_entries.unwrap_or(MAX_GROUP_ENTRIES),
        default_action: config.action_on_match,
        default_suppress_secs: config.suppress,
    }
}

fn build_engine(collection: &SigmaCollection) -> Result<CorrelationEngine, String> {
    let mut engine = CorrelationEngine::new(correlation_config());
    engine
        .add_collection(collection)
        .map_err(|e| e.to_string())?;
    Ok(engine)
}

/// Evaluates a rule set over batches, keeping correlation windows between them.
pub struct SigmaEngine {
    rules: Arc<RuleSet>,
    fields: FieldMap,
    /// The engine's detection rules as row masks: which rows each may match.
    prefilter: Prefilter,
    correlations: Correlations,
}

/// rsigma's engine and what Vigil does with its results.
struct Correlations {
    engine: CorrelationEngine,
    /// Ids of detection rules that only feed correlations (Sigma `generate: false`). rsigma
    /// 0.23 filters these only when referenced by id, so Vigil filters them itself.
    correlation_only: HashSet<String>,
    /// `value_count` correlations Vigil counts itself (see [`crate::value_count`]).
    value_counts: ValueCounts,
}

impl SigmaEngine {
    pub fn new(rules: Arc<RuleSet>, fields: FieldMap) -> Result<Self, String> {
        let value_counts = ValueCounts::new(&rules.collection, value_count_limits());
        // rsigma evaluates every correlation Vigil does not count itself.
        let mut for_rsigma = rules.collection.clone();
        for_rsigma
            .correlations
            .retain(|c| !value_counts.counts(c.id.as_deref(), &c.title));
        let engine = build_engine(&for_rsigma)?;
        let prefilter = Prefilter::new(engine.engine().rules(), &fields);
        let collection = &rules.collection;
        let correlation_only = collection
            .rules
            .iter()
            .filter(|r| {
                collection.correlations.iter().any(|c| {
                    !c.generate
                        && c.rules.iter().any(|reference| {
                            r.id.as_deref() == Some(reference.as_str())
                                || r.name.as_deref() == Some(reference.as_str())
                        })
                })
            })
            .map(|r| rule_key(r.id.as_deref(), r.name.as_deref(), &r.title))
            .collect();
        Ok(Self {
            rules,
            fields,
            prefilter,
            correlations: Correlations {
                engine,
                correlation_only,
                value_counts,
            },
        })
    }

    /// The same engine with every correlation left to rsigma: the reference Vigil's
    /// `value_count` windows are tested against.
    #[cfg(test)]
    pub(crate) fn counted_by_rsigma(mut self) -> Self {
        self.correlations.engine = build_engine(&self.rules.collection).expect("engine");
        self.correlations.value_counts = ValueCounts::none(value_count_limits());
        self
    }

    /// `value_count` entries not made because they repeated one already counted.
    #[cfg(test)]
    pub(crate) fn repeats_dropped(&self) -> u64 {
        self.correlations.value_counts.dropped()
    }

    #[cfg(test)]
    pub(crate) fn prefilter(&self) -> &Prefilter {
        &self.prefilter
    }

    /// Runs every rule over every row; returns what matched, one observation per match.
    ///
    /// The prefilter picks, per row, the rules that may match it; rsigma evaluates only those,
    /// in rule order, so detections and their order are what evaluating every rule would
    /// give. Rows no rule may match skip rsigma.
    pub fn process(&mut self, view: &BatchView<'_>) -> Vec<Observation> {
        let mut out = Vec::new();
        if self.rules.is_empty() {
            return out;
        }
        let events = BatchEvents::new(view, &self.fields);
        let candidates = self.prefilter.candidates(&events);
        for row in 0..view.len() {
            let event = events.row(row);
            if !candidates.any(row) {
                self.correlations.skip(&event, view, row);
                continue;
            }
            let compiled = self.correlations.engine.engine().rules();
            let detections = candidates
                .rules(row)
                .filter_map(|index| compiled.get(index))
                .filter_map(|rule| evaluate_rule(rule, &event))
                .collect();
            self.correlations
                .observe(&event, detections, view, row, &mut out);
        }
        out
    }

    /// [`Self::process`] without the prefilter: every rule through rsigma's own rule
    /// selection, on every row. The reference the prefilter is tested against.
    #[cfg(test)]
    pub(crate) fn process_every_row(&mut self, view: &BatchView<'_>) -> Vec<Observation> {
        let mut out = Vec::new();
        if self.rules.is_empty() {
            return out;
        }
        let events = BatchEvents::new(view, &self.fields);
        for row in 0..view.len() {
            let event = events.row(row);
            let logsource = event_logsource(view.signal(), view.service(row));
            let detections = self
                .correlations
                .engine
                .engine()
                .evaluate_with_logsource(&event, &logsource);
            self.correlations
                .observe(&event, detections, view, row, &mut out);
        }
        out
    }

    /// Ids of the detection rules matching any row, without correlation (test events use
    /// this: a rule that only feeds a correlation emits nothing on its own).
    pub fn detections(&self, view: &BatchView<'_>) -> Vec<String> {
        let events = BatchEvents::new(view, &self.fields);
        let mut out = Vec::new();
        for row in 0..view.len() {
            let logsource = event_logsource(view.signal(), view.service(row));
            for result in self
                .correlations
                .engine
                .engine()
                .evaluate_with_logsource(&events.row(row), &logsource)
            {
                let header = &result.header;
                out.push(rule_key(
                    header.rule_id.as_deref(),
                    None,
                    &header.rule_title,
                ));
            }
        }
        out
    }
}

impl Correlations {
    /// A row no rule matches. rsigma's correlation engine, handed an event without
    /// detections, only evicts expired windows when its state is full; do the same.
    fn skip(&mut self, event: &RowEvent<'_, '_>, view: &BatchView<'_>, row: usize) {
        if self.engine.correlation_rule_count() > 0
            && self.engine.state_count() >= MAX_STATE_ENTRIES
        {
            self.engine
                .process_with_detections(event, Vec::new(), event_secs(view, row));
        }
    }

    /// Feeds one row's detections to the correlations and records what fires.
    fn observe(
        &mut self,
        event: &RowEvent<'_, '_>,
        detections: Vec<EvaluationResult>,
        view: &BatchView<'_>,
        row: usize,
        out: &mut Vec<Observation>,
    ) {
        // The event's second as rsigma takes it (it clamps timestamps so).
        let second = event_secs(view, row).clamp(0, i64::MAX / 2);
        let counted = self.value_counts.observe(event, &detections, second);
        let mut results = if self.engine.correlation_rule_count() > 0 {
            self.engine
                .process_with_detections(event, detections, second)
        } else {
            detections
        };
        results.extend(counted);
        for result in results {
            if result.is_detection()
                && result
                    .header
                    .rule_id
                    .as_ref()
                    .is_some_and(|id| self.correlation_only.contains(id))
            {
                continue;
            }
            out.push(Observation::Fire(candidate(&result, view, row)));
        }
    }
}

fn candidate(result: &EvaluationResult, view: &BatchView<'_>, row: usize) -> Candidate {
    let header = &result.header;
    let key = rule_key(header.rule_id.as_deref(), None, &header.rule_title);
    let service = view.service(row);
    let mut details = Map::new();
    details.insert("source".into(), Value::from("sigma"));
    if !header.tags.is_empty() {
        details.insert("tags".into(), Value::from(header.tags.clone()));
    }
    let mut alert_key = AlertKey::new(&key, service);
    let summary = match &result.body {
        ResultBody::Detection(d) => {
            details.insert(
                "matched_selections".into(),
                Value::from(d.matched_selections.clone()),
            );
            let matched: Map<String, Value> = d
                .matched_fields
                .iter()
                .map(|m| (m.field.clone(), m.value.clone()))
                .collect();
            details.insert("matched_fields".into(), Value::Object(matched));
            format!("{} ({} in {service})", header.rule_title, view.signal())
        }
        ResultBody::Correlation(c) => {
            for (name, value) in &c.group_key {
                alert_key = alert_key.with_group(name, value);
            }
            details.insert(
                "correlation_type".into(),
                Value::from(format!("{:?}", c.correlation_type)),
            );
            details.insert("aggregated_value".into(), Value::from(c.aggregated_value));
            details.insert("timespan_seconds".into(), Value::from(c.timespan_secs));
            let group = alert_key.group_text();
            format!(
                "{}: {} within {}s{}",
                header.rule_title,
                c.aggregated_value,
                c.timespan_secs,
                if group.is_empty() {
                    String::new()
                } else {
                    format!(" ({group})")
                }
            )
        }
    };
    Candidate {
        key: alert_key,
        rule_title: header.rule_title.clone(),
        severity: severity(header.level),
        summary,
        details,
        time_ns: view.time_ns(row),
        sample: Some(Sample::of(view, row)),
    }
}

/// The event time of `row` in whole seconds, as correlation windows count it.
fn event_secs(view: &BatchView<'_>, row: usize) -> i64 {
    view.time_ns(row).div_euclid(1_000_000_000)
}

#[cfg(test)]
#[path = "sigma_tests.rs"]
mod tests;
