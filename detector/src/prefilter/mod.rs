//! A columnar prefilter in front of per-row Sigma evaluation.
//!
//! At load, each compiled rule's logsource and condition become a [`Plan`]: a tree of row
//! masks over the batch's columns. Per batch the plans run column at a time (string kernels,
//! automata and regexes over a field's whole column, cheap tests first, each test asked only
//! about the rows still in play) and yield, per rule, the rows it may match. Only those rows
//! go through rsigma, and each only through the rules that kept it.
//!
//! A mask is always a superset of the rows the rule matches: parts with no columnar form
//! (`not`, array matches, integers mixed with attribute values) keep every row, and the
//! matchers themselves are evaluated exactly as rsigma evaluates them.

mod columns;
mod gates;
mod matchers;
mod needles;
mod plan;

use std::collections::HashMap;

use arrow::buffer::BooleanBuffer;
use rsigma_eval::{CompiledMatcher, CompiledRule};
use rsigma_parser::LogSource;

use crate::fields::{BatchEvents, FieldMap, PRODUCT};
use crate::view::BatchView;
pub(crate) use columns::lowercase;
use columns::{BatchColumns, KeySet};
use gates::RegexGates;
use needles::NeedleGates;
use plan::{Plan, Searched};

/// Every rule of an rsigma engine, compiled to row masks.
pub(crate) struct Prefilter {
    rules: Vec<RulePlan>,
    /// Field id → Sigma field name.
    fields: Vec<String>,
    attribute_keys: KeySet,
    resource_keys: KeySet,
    gates: RegexGates,
    needles: NeedleGates,
}

struct RulePlan {
    logsource: LogSource,
    condition: Plan,
}

impl Prefilter {
    /// Plans for `rules`, in the engine's order; `fields` maps rule fields to columns.
    pub(crate) fn new(rules: &[CompiledRule], fields: &FieldMap) -> Self {
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut names = Vec::new();
        let mut field_id = |name: &str| {
            *ids.entry(name.to_owned()).or_insert_with(|| {
                names.push(name.to_owned());
                names.len() - 1
            })
        };
        let plans: Vec<RulePlan> = rules
            .iter()
            .map(|rule| RulePlan {
                logsource: rule.logsource.clone(),
                condition: Plan::of_rule(&rule.conditions, &rule.detections, &mut field_id),
            })
            .collect();
        let mut matchers = Vec::new();
        let mut by_field: Vec<Vec<CompiledMatcher>> = vec![Vec::new(); names.len()];
        let mut keywords = Vec::new();
        for plan in &plans {
            plan.condition.for_each_test(&mut |searched, m| {
                matchers.push(m.clone());
                match searched {
                    Searched::Field(id) => {
                        if let Some(tests) = by_field.get_mut(id) {
                            tests.push(m.clone());
                        }
                    }
                    Searched::Keywords => keywords.push(m.clone()),
                }
            });
        }
        let gates = RegexGates::new(&matchers);
        let needles = NeedleGates::new(&by_field, &keywords);
        let mut attribute_keys = KeySet::default();
        let mut resource_keys = KeySet::default();
        for name in &names {
            columns::collect_keys(
                &fields.resolve(name),
                &mut attribute_keys,
                &mut resource_keys,
            );
        }
        Self {
            rules: plans,
            fields: names,
            attribute_keys,
            resource_keys,
            gates,
            needles,
        }
    }

    /// How many regexes (or regex sets) have a literal gate.
    #[cfg(test)]
    pub(crate) fn regex_gates(&self) -> usize {
        self.gates.len()
    }

    /// The rows of the batch each rule may match.
    pub(crate) fn candidates(&self, events: &BatchEvents<'_>) -> Candidates {
        let view = events.view();
        let batch = BatchColumns::new(
            events,
            &self.fields,
            &self.attribute_keys,
            &self.resource_keys,
            &self.gates,
            &self.needles,
        );
        let mut any = BooleanBuffer::new_unset(view.len());
        let mut rules = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let Some(rows) = logsource_rows(&rule.logsource, view) else {
                continue;
            };
            let rows = rule.condition.rows(&rows, &batch);
            if rows.has_true() {
                any |= &rows;
                rules.push((index, rows));
            }
        }
        Candidates { rules, any }
    }
}

/// The rows whose logsource (`event_logsource`: the batch's signal, Vigil's product, the
/// row's service) satisfies `rule`'s, as rsigma's `logsource_matches` decides; `None` when no
/// row can.
fn logsource_rows(rule: &LogSource, view: &BatchView<'_>) -> Option<BooleanBuffer> {
    let same = |wanted: &Option<String>, actual: &str| {
        wanted
            .as_deref()
            .is_none_or(|w| w.eq_ignore_ascii_case(actual))
    };
    if !same(&rule.category, view.signal().as_str()) || !same(&rule.product, PRODUCT) {
        return None;
    }
    let rows = match &rule.service {
        None => BooleanBuffer::new_set(view.len()),
        Some(service) => BooleanBuffer::collect_bool(view.len(), |row| {
            view.service(row).eq_ignore_ascii_case(service)
        }),
    };
    rows.has_true().then_some(rows)
}

/// Per rule, the rows of one batch it may match.
pub(crate) struct Candidates {
    /// Rule index → its rows, for rules keeping at least one row, in rule order.
    rules: Vec<(usize, BooleanBuffer)>,
    /// Rows any rule keeps.
    any: BooleanBuffer,
}

impl Candidates {
    /// Whether any rule may match `row`.
    pub(crate) fn any(&self, row: usize) -> bool {
        self.any.value(row)
    }

    /// Indices of the rules that may match `row`, ascending.
    pub(crate) fn rules(&self, row: usize) -> impl Iterator<Item = usize> + '_ {
        self.rules
            .iter()
            .filter(move |(_, rows)| rows.value(row))
            .map(|(index, _)| *index)
    }
}

#[cfg(test)]
mod tests;
