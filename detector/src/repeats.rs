//! Repeated `value_count` inputs, kept from rsigma's correlation engine.
//!
//! rsigma 0.23 (and 0.26) answers a `value_count` condition by hashing every entry of the
//! group's window on every event it is fed: the cost of one event grows with the window, up to
//! the per-group cap. A flood of matching events that repeat one value (a client hammering one
//! missing page, a loop retrying one account) made that quadratic: the shipped `value_count`
//! rules took a fifth of the server's CPU under load. Worse, the repeats filled the capped
//! window and pushed the distinct values out, hiding a sweep behind noise.
//!
//! rsigma's timestamps are whole seconds, so an event repeating the correlation, group, value
//! and second of one already fed would add an identical `(second, value)` entry. It changes no
//! distinct count, and the condition checked after it gives the answer the previous check of
//! that window gave. Dropping it changes what fires only in how many times one group re-fires
//! within one second, which alert deduplication folds away. The filter applies only where that
//! argument holds: detection rules whose every correlation is a sliding-window `value_count`
//! that keeps its window after firing and feeds no other correlation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rsigma_eval::correlation::{CompiledCorrelation, GroupKey, compile_correlation};
use rsigma_eval::{CorrelationAction, EvaluationResult, Event};
use rsigma_parser::{CorrelationType, SigmaCollection, WindowMode};

/// Entries remembered before the set is emptied (emptying only means feeding repeats again).
const MAX_SEEN: usize = 100_000;

pub(crate) struct Repeats {
    /// Detection rule id → how rsigma refers to it and the correlations it feeds, for rules
    /// whose repeats may be dropped.
    rules: HashMap<String, Fed>,
    seen: HashSet<Seen>,
    newest_second: i64,
    /// Detections kept from rsigma so far.
    dropped: u64,
}

struct Fed {
    /// The rule's id and name: what a correlation's `rules` and aliases refer to.
    refs: Vec<String>,
    /// The correlations, each with its index in the collection.
    correlations: Vec<(usize, Arc<CompiledCorrelation>)>,
}

#[derive(Hash, PartialEq, Eq)]
struct Seen {
    correlation: usize,
    group: GroupKey,
    /// The counted field values, rendered; `None` when the event lacks one.
    value: Option<String>,
    second: i64,
}

impl Repeats {
    pub(crate) fn new(collection: &SigmaCollection, default_action: CorrelationAction) -> Self {
        let compiled: Vec<Option<CompiledCorrelation>> = collection
            .correlations
            .iter()
            .map(|c| compile_correlation(c).ok())
            .collect();
        let refers_to =
            |c: &CompiledCorrelation, refs: &[String]| c.rule_refs.iter().any(|r| refs.contains(r));
        // A correlation another one builds on must see every firing of it.
        let chained = |c: &CompiledCorrelation| {
            let refs: Vec<String> = c.id.iter().chain(&c.name).cloned().collect();
            compiled
                .iter()
                .flatten()
                .any(|other| refers_to(other, &refs))
        };
        let qualifies = |c: &CompiledCorrelation| {
            c.correlation_type == CorrelationType::ValueCount
                && c.window_mode == WindowMode::Sliding
                && c.action.unwrap_or(default_action) == CorrelationAction::Alert
                && !chained(c)
        };
        // Index in `collection.correlations` → the correlation, for those that qualify.
        let kept: HashMap<usize, Arc<CompiledCorrelation>> = compiled
            .iter()
            .enumerate()
            .filter_map(|(index, c)| {
                c.as_ref()
                    .filter(|c| qualifies(c))
                    .map(|c| (index, Arc::new(c.clone())))
            })
            .collect();
        let mut rules = HashMap::new();
        for rule in &collection.rules {
            let Some(id) = &rule.id else { continue };
            let refs: Vec<String> = rule.id.iter().chain(&rule.name).cloned().collect();
            let mut feeds = Vec::new();
            let mut droppable = true;
            for (index, correlation) in compiled.iter().enumerate() {
                match correlation {
                    Some(c) if refers_to(c, &refs) => match kept.get(&index) {
                        Some(c) => feeds.push((index, Arc::clone(c))),
                        None => droppable = false,
                    },
                    Some(_) => {}
                    // Not compiled here, so not understood here: never drop.
                    None => droppable = false,
                }
            }
            if droppable && !feeds.is_empty() {
                rules.insert(
                    id.clone(),
                    Fed {
                        refs,
                        correlations: feeds,
                    },
                );
            }
        }
        Self {
            rules,
            seen: HashSet::new(),
            newest_second: i64::MIN,
            dropped: 0,
        }
    }

    /// A filter that drops nothing.
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        Self {
            rules: HashMap::new(),
            seen: HashSet::new(),
            newest_second: i64::MIN,
            dropped: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Splits one event's detections into those rsigma must be fed and repeats it need not
    /// see. `second` is the timestamp rsigma is given for the event.
    pub(crate) fn split(
        &mut self,
        event: &impl Event,
        detections: Vec<EvaluationResult>,
        second: i64,
    ) -> (Vec<EvaluationResult>, Vec<EvaluationResult>) {
        if self.rules.is_empty() {
            return (detections, Vec::new());
        }
        if second > self.newest_second {
            self.newest_second = second;
            // Entries of earlier seconds only catch out-of-order events; keep one second back.
            self.seen.retain(|s| s.second >= second - 1);
        }
        if self.seen.len() >= MAX_SEEN {
            self.seen.clear();
        }
        let mut fed = Vec::with_capacity(detections.len());
        let mut repeats = Vec::new();
        for detection in detections {
            let Some(rule) = detection
                .header
                .rule_id
                .as_ref()
                .and_then(|id| self.rules.get(id))
            else {
                fed.push(detection);
                continue;
            };
            let refs: Vec<&str> = rule.refs.iter().map(String::as_str).collect();
            let mut repeated = true;
            for (index, correlation) in &rule.correlations {
                let seen = Seen {
                    correlation: *index,
                    group: GroupKey::extract(event, &correlation.group_by, &refs),
                    value: counted_value(event, correlation),
                    second,
                };
                repeated &= !self.seen.insert(seen);
            }
            if repeated {
                self.dropped += 1;
                repeats.push(detection);
            } else {
                fed.push(detection);
            }
        }
        (fed, repeats)
    }
}

/// The values a `value_count` correlation counts, rendered so that equal renderings mean
/// equal values (rsigma's own rendering of them is then equal too).
fn counted_value(event: &impl Event, correlation: &CompiledCorrelation) -> Option<String> {
    let fields = correlation.condition.field.as_ref()?;
    let values: Vec<_> = fields.iter().map(|f| event.get_field(f)).collect();
    Some(format!("{values:?}"))
}
