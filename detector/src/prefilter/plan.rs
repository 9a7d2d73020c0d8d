//! A rule's condition as a row-mask plan: `and`, `or` and the selectors become mask
//! intersections and unions over detection items; whatever has no columnar form (`not`,
//! array matches) keeps every row, so a plan never drops a row the rule could match.

use std::collections::HashMap;

use arrow::buffer::BooleanBuffer;
use rsigma_eval::{CompiledDetection, CompiledDetectionItem, CompiledMatcher};
use rsigma_parser::{ConditionExpr, Quantifier};

use super::columns::BatchColumns;
use super::matchers;

/// What a matcher of a plan is tested on.
#[derive(Clone, Copy)]
pub(super) enum Searched {
    /// The column of the field with this id.
    Field(usize),
    /// The keyword columns and every attribute value (a keyword selection).
    Keywords,
}

/// Rows a rule may match, as a tree of row masks.
pub(super) enum Plan {
    /// Every row asked about.
    True,
    /// No row.
    False,
    /// Children cheapest first, each asked only about the rows the previous ones kept.
    And(Vec<Plan>),
    /// Children cheapest first, each asked only about the rows not matched yet.
    Or(Vec<Plan>),
    /// A detection item on the field with id `field` (`None`: a field-less keyword item).
    Item {
        field: Option<usize>,
        item: CompiledDetectionItem,
    },
    /// A keyword selection.
    Keywords(CompiledMatcher),
}

impl Plan {
    /// The plan of a rule's conditions (any of them may match); `field_id` names fields.
    pub(super) fn of_rule(
        conditions: &[ConditionExpr],
        detections: &HashMap<String, CompiledDetection>,
        field_id: &mut impl FnMut(&str) -> usize,
    ) -> Self {
        Self::or(
            conditions
                .iter()
                .map(|c| condition(c, detections, field_id))
                .collect(),
        )
    }

    fn and(children: Vec<Plan>) -> Self {
        let mut kept = Vec::with_capacity(children.len());
        for child in children {
            match child {
                Plan::True => {}
                Plan::False => return Plan::False,
                Plan::And(grandchildren) => kept.extend(grandchildren),
                other => kept.push(other),
            }
        }
        kept.sort_by_key(Plan::cost);
        match kept.len() {
            0 => Plan::True,
            1 => kept.pop().unwrap_or(Plan::True),
            _ => Plan::And(kept),
        }
    }

    fn or(children: Vec<Plan>) -> Self {
        let mut kept = Vec::with_capacity(children.len());
        for child in children {
            match child {
                Plan::True => return Plan::True,
                Plan::False => {}
                Plan::Or(grandchildren) => kept.extend(grandchildren),
                other => kept.push(other),
            }
        }
        kept.sort_by_key(Plan::cost);
        match kept.len() {
            0 => Plan::False,
            1 => kept.pop().unwrap_or(Plan::False),
            _ => Plan::Or(kept),
        }
    }

    /// Rough cost per row, to test cheap conditions first.
    fn cost(&self) -> u32 {
        match self {
            Plan::True | Plan::False => 0,
            Plan::And(children) | Plan::Or(children) => children.iter().map(Plan::cost).sum(),
            Plan::Item { item, .. } if item.exists.is_some() => 1,
            Plan::Item { item, .. } => matcher_cost(&item.matcher),
            Plan::Keywords(matcher) => 8 * matcher_cost(matcher),
        }
    }

    /// Calls `f` with every matcher the plan tests, and what it is tested on.
    pub(super) fn for_each_test(&self, f: &mut impl FnMut(Searched, &CompiledMatcher)) {
        match self {
            Plan::True | Plan::False => {}
            Plan::And(children) | Plan::Or(children) => {
                for child in children {
                    child.for_each_test(f);
                }
            }
            // An `exists` item tests presence, not its matcher.
            Plan::Item { item, .. } if item.exists.is_some() => {}
            Plan::Item {
                field: Some(id),
                item,
            } => f(Searched::Field(*id), &item.matcher),
            Plan::Item { field: None, item } => f(Searched::Keywords, &item.matcher),
            Plan::Keywords(matcher) => f(Searched::Keywords, matcher),
        }
    }

    /// The rows of `rows` the plan keeps.
    pub(super) fn rows(&self, rows: &BooleanBuffer, batch: &BatchColumns<'_, '_>) -> BooleanBuffer {
        if !rows.has_true() {
            return rows.clone();
        }
        match self {
            Plan::True => rows.clone(),
            Plan::False => BooleanBuffer::new_unset(rows.len()),
            Plan::And(children) => {
                let mut left = rows.clone();
                for child in children {
                    if !left.has_true() {
                        break;
                    }
                    left = child.rows(&left, batch);
                }
                left
            }
            Plan::Or(children) => {
                let mut out = BooleanBuffer::new_unset(rows.len());
                let mut left = rows.clone();
                for child in children {
                    if !left.has_true() {
                        break;
                    }
                    let hits = child.rows(&left, batch);
                    left = &left & &!&hits;
                    out |= &hits;
                }
                out
            }
            Plan::Item { field, item } => {
                let column = match field {
                    Some(id) => match batch.field(*id) {
                        Some(column) => Some(column),
                        None => return rows.clone(),
                    },
                    None => None,
                };
                matchers::item(item, column, rows, batch)
            }
            Plan::Keywords(matcher) => matchers::keywords(matcher, rows, batch),
        }
    }
}

fn matcher_cost(matcher: &CompiledMatcher) -> u32 {
    match matcher {
        CompiledMatcher::Exact { .. }
        | CompiledMatcher::StartsWith { .. }
        | CompiledMatcher::EndsWith { .. }
        | CompiledMatcher::Exists(_)
        | CompiledMatcher::Null
        | CompiledMatcher::BoolEq(_) => 2,
        CompiledMatcher::Contains { .. }
        | CompiledMatcher::NumericEq(_)
        | CompiledMatcher::NumericGt(_)
        | CompiledMatcher::NumericGte(_)
        | CompiledMatcher::NumericLt(_)
        | CompiledMatcher::NumericLte(_) => 3,
        CompiledMatcher::AhoCorasickSet { .. } | CompiledMatcher::Cidr(_) => 4,
        CompiledMatcher::Not(inner) | CompiledMatcher::TimestampPart { inner, .. } => {
            matcher_cost(inner)
        }
        CompiledMatcher::AnyOf(children)
        | CompiledMatcher::AllOf(children)
        | CompiledMatcher::CaseInsensitiveGroup { children, .. } => {
            children.iter().map(matcher_cost).sum()
        }
        CompiledMatcher::Regex(_)
        | CompiledMatcher::RegexSetMatch { .. }
        | CompiledMatcher::FieldRef { .. }
        | CompiledMatcher::Expand { .. } => 10,
    }
}

fn condition(
    expr: &ConditionExpr,
    detections: &HashMap<String, CompiledDetection>,
    field_id: &mut impl FnMut(&str) -> usize,
) -> Plan {
    match expr {
        ConditionExpr::Identifier(name) => match detections.get(name) {
            Some(d) => detection(d, field_id),
            None => Plan::False,
        },
        ConditionExpr::And(exprs) => Plan::and(
            exprs
                .iter()
                .map(|e| condition(e, detections, field_id))
                .collect(),
        ),
        ConditionExpr::Or(exprs) => Plan::or(
            exprs
                .iter()
                .map(|e| condition(e, detections, field_id))
                .collect(),
        ),
        // A row failing the inner condition may match: no mask narrows `not`.
        ConditionExpr::Not(_) => Plan::True,
        ConditionExpr::Selector {
            quantifier,
            pattern,
        } => {
            let chosen: Vec<Plan> = detections
                .iter()
                .filter(|(name, _)| pattern.matches_detection_name(name))
                .map(|(_, d)| detection(d, field_id))
                .collect();
            match quantifier {
                Quantifier::All => Plan::and(chosen),
                Quantifier::Count(0) => Plan::True,
                // `N of` needs at least one to match.
                Quantifier::Any | Quantifier::Count(_) => Plan::or(chosen),
            }
        }
    }
}

fn detection(detection: &CompiledDetection, field_id: &mut impl FnMut(&str) -> usize) -> Plan {
    match detection {
        CompiledDetection::AllOf(items) => Plan::and(
            items
                .iter()
                .map(|item| Plan::Item {
                    field: item.field.as_deref().map(&mut *field_id),
                    item: item.clone(),
                })
                .collect(),
        ),
        CompiledDetection::AnyOf(children) => Plan::or(
            children
                .iter()
                .map(|d| self::detection(d, field_id))
                .collect(),
        ),
        CompiledDetection::And(children) => Plan::and(
            children
                .iter()
                .map(|d| self::detection(d, field_id))
                .collect(),
        ),
        CompiledDetection::Keywords(matcher) => Plan::Keywords(matcher.clone()),
        CompiledDetection::Conditional { named, condition } => {
            self::condition(condition, named, field_id)
        }
        // Array members are not columns.
        CompiledDetection::ArrayMatch { .. } => Plan::True,
    }
}
