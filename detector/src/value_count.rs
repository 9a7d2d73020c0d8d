//! Sigma `value_count` correlations with sliding windows, counted by Vigil.
//!
//! rsigma 0.23 (and 0.26) answers a `value_count` condition by hashing every entry of the
//! group's window on every event: the cost of one event grows with the window, up to the
//! per-group cap. Under the load generator the shipped `value_count` rules took a fifth of the
//! server's CPU. Here each window keeps a count per value next to its entries, so an event
//! costs the same whatever the window holds. Everything else follows rsigma's own evaluation
//! (its compiled correlation, group keys, value rendering, eviction, per-group cap,
//! suppression and result), and a test compares the two on random traffic.
//!
//! Repeats are not entered at all: rsigma's timestamps are whole seconds, so an event repeating
//! the correlation, group, value and second of one already counted adds an identical
//! `(second, value)` entry. It changes no distinct count, and the condition checked after it
//! gives the answer the previous check of that window gave; dropping it changes what fires only
//! in how many times one group re-fires within one second, which alert deduplication folds
//! away. Without this, a flood of one value (a client hammering one missing page) filled the
//! capped window and pushed the distinct values out, hiding a sweep behind noise.
//!
//! Counted here: sliding-window `value_count` correlations that keep their window after firing,
//! count at least one field, refer only to detection rules and feed no other correlation.
//! rsigma evaluates every other correlation.

use std::collections::{HashMap, HashSet, VecDeque};

use rsigma_eval::correlation::{CompiledCorrelation, GroupKey, compile_correlation};
use rsigma_eval::result::{CorrelationBody, RuleHeader};
use rsigma_eval::{CorrelationAction, EvaluationResult, Event, EventValue, ResultBody};
use rsigma_parser::{CorrelationType, SigmaCollection, WindowMode};

/// Entries remembered for dropping repeats before the set is emptied (emptying only means
/// counting repeats again).
const MAX_SEEN: usize = 100_000;

/// Limits, as rsigma's engine is configured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Windows (groups) over all counted correlations.
    pub max_windows: usize,
    /// Entries in one window; the oldest go first.
    pub max_window_entries: usize,
    pub default_action: CorrelationAction,
    pub default_suppress_secs: Option<u64>,
}

pub(crate) struct ValueCounts {
    limits: Limits,
    correlations: Vec<Counted>,
    /// Detection rule id → how correlations refer to it (its id and name) and which counted
    /// correlations it feeds.
    rules: HashMap<String, Fed>,
    windows: usize,
    seen: HashSet<Seen>,
    newest_second: i64,
    /// Entries not made because they repeated one already counted.
    dropped: u64,
}

struct Fed {
    refs: Vec<String>,
    correlations: Vec<usize>,
}

struct Counted {
    rule: CompiledCorrelation,
    windows: HashMap<GroupKey, Window>,
    last_alert: HashMap<GroupKey, i64>,
}

/// One group's window: rsigma's `(second, value)` entries, in arrival order, and how many of
/// them hold each value.
#[derive(Default)]
struct Window {
    entries: VecDeque<(i64, String)>,
    counts: HashMap<String, u32>,
}

#[derive(Hash, PartialEq, Eq)]
struct Seen {
    correlation: usize,
    group: GroupKey,
    value: Option<String>,
    second: i64,
}

impl ValueCounts {
    pub(crate) fn new(collection: &SigmaCollection, limits: Limits) -> Self {
        let compiled: Vec<Option<CompiledCorrelation>> = collection
            .correlations
            .iter()
            .map(|c| compile_correlation(c).ok())
            .collect();
        let detection_refs: HashSet<&str> = collection
            .rules
            .iter()
            .flat_map(|r| r.id.iter().chain(&r.name))
            .map(String::as_str)
            .collect();
        // A correlation another one builds on must see every firing of it.
        let chained = |c: &CompiledCorrelation| {
            compiled.iter().flatten().any(|other| {
                other
                    .rule_refs
                    .iter()
                    .any(|r| c.id.as_ref() == Some(r) || c.name.as_ref() == Some(r))
            })
        };
        let counted: Vec<CompiledCorrelation> = compiled
            .iter()
            .flatten()
            .filter(|c| {
                c.correlation_type == CorrelationType::ValueCount
                    && c.window_mode == WindowMode::Sliding
                    && c.action.unwrap_or(limits.default_action) == CorrelationAction::Alert
                    && c.condition.field.as_ref().is_some_and(|f| !f.is_empty())
                    && c.extended_expr.is_none()
                    && c.rule_refs
                        .iter()
                        .all(|r| detection_refs.contains(r.as_str()))
                    && !chained(c)
            })
            .cloned()
            .collect();
        let mut rules = HashMap::new();
        for rule in &collection.rules {
            let Some(id) = &rule.id else { continue };
            let refs: Vec<String> = rule.id.iter().chain(&rule.name).cloned().collect();
            let feeds: Vec<usize> = counted
                .iter()
                .enumerate()
                .filter(|(_, c)| c.rule_refs.iter().any(|r| refs.contains(r)))
                .map(|(index, _)| index)
                .collect();
            if !feeds.is_empty() {
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
            limits,
            correlations: counted
                .into_iter()
                .map(|rule| Counted {
                    rule,
                    windows: HashMap::new(),
                    last_alert: HashMap::new(),
                })
                .collect(),
            rules,
            windows: 0,
            seen: HashSet::new(),
            newest_second: i64::MIN,
            dropped: 0,
        }
    }

    /// Counts nothing: every correlation is left to rsigma.
    #[cfg(test)]
    pub(crate) fn none(limits: Limits) -> Self {
        Self::new(&SigmaCollection::default(), limits)
    }

    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether the correlation (as written in the collection) is counted here, so rsigma must
    /// not see it.
    pub(crate) fn counts(&self, id: Option<&str>, title: &str) -> bool {
        self.correlations
            .iter()
            .any(|c| c.rule.id.as_deref() == id && c.rule.title == title)
    }

    /// Enters one event's detections into the windows of the correlations they feed; returns
    /// the correlations that fire. `second` is the event time rsigma would be given.
    pub(crate) fn observe(
        &mut self,
        event: &impl Event,
        detections: &[EvaluationResult],
        second: i64,
    ) -> Vec<EvaluationResult> {
        let mut out = Vec::new();
        if self.rules.is_empty() {
            return out;
        }
        if second > self.newest_second {
            self.newest_second = second;
            // Entries of earlier seconds only catch out-of-order events; keep one second back.
            self.seen.retain(|s| s.second >= second - 1);
        }
        if self.seen.len() >= MAX_SEEN {
            self.seen.clear();
        }
        for detection in detections {
            let Some(fed) = detection
                .header
                .rule_id
                .as_ref()
                .and_then(|id| self.rules.get(id))
            else {
                continue;
            };
            let refs: Vec<&str> = fed.refs.iter().map(String::as_str).collect();
            for &index in &fed.correlations {
                let Some(counted) = self.correlations.get(index) else {
                    continue;
                };
                let group = GroupKey::extract(event, &counted.rule.group_by, &refs);
                let value = counted
                    .rule
                    .condition
                    .field
                    .as_deref()
                    .and_then(|fields| counted_value(event, fields));
                let new_window = !counted.windows.contains_key(&group);
                let fresh = self.seen.insert(Seen {
                    correlation: index,
                    group: group.clone(),
                    value: value.clone(),
                    second,
                });
                if !fresh {
                    self.dropped += 1;
                    continue;
                }
                if new_window && self.windows >= self.limits.max_windows {
                    self.windows -= evict(&mut self.correlations, self.newest_second);
                }
                let Some(counted) = self.correlations.get_mut(index) else {
                    continue;
                };
                if let Some(fired) =
                    counted.enter(group, value, second, &self.limits, &mut self.windows)
                {
                    out.push(fired);
                }
            }
        }
        out
    }
}

impl Counted {
    fn enter(
        &mut self,
        group: GroupKey,
        value: Option<String>,
        second: i64,
        limits: &Limits,
        windows: &mut usize,
    ) -> Option<EvaluationResult> {
        let rule = &self.rule;
        let window = self.windows.entry(group.clone()).or_insert_with(|| {
            *windows += 1;
            Window::default()
        });
        window.evict_before(second - rule.timespan_secs as i64);
        if let Some(value) = value {
            window.push(second, value);
        }
        while window.entries.len() > limits.max_window_entries {
            window.pop_front();
        }
        let distinct = window.counts.len() as f64;
        if !rule.condition.check(distinct) {
            return None;
        }
        if let Some(suppress) = rule.suppress_secs.or(limits.default_suppress_secs)
            && self
                .last_alert
                .get(&group)
                .is_some_and(|&last| second - last < suppress as i64)
        {
            return None;
        }
        let result = EvaluationResult {
            header: RuleHeader {
                rule_title: rule.title.clone(),
                rule_id: rule.id.clone(),
                level: rule.level,
                tags: rule.tags.clone(),
                custom_attributes: rule.custom_attributes.clone(),
                enrichments: None,
            },
            body: ResultBody::Correlation(CorrelationBody {
                correlation_type: CorrelationType::ValueCount,
                group_key: group.to_pairs(&rule.group_by),
                aggregated_value: distinct,
                timespan_secs: rule.timespan_secs,
                events: None,
                event_refs: None,
            }),
        };
        self.last_alert.insert(group, second);
        Some(result)
    }
}

impl Window {
    fn push(&mut self, second: i64, value: String) {
        *self.counts.entry(value.clone()).or_default() += 1;
        self.entries.push_back((second, value));
    }

    fn pop_front(&mut self) {
        let Some((_, value)) = self.entries.pop_front() else {
            return;
        };
        if let Some(n) = self.counts.get_mut(&value) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&value);
            }
        }
    }

    /// rsigma's sliding eviction: entries older than `cutoff` leave from the front, up to the
    /// first that is not (a late arrival behind it stays until it reaches the front).
    fn evict_before(&mut self, cutoff: i64) {
        while self.entries.front().is_some_and(|(t, _)| *t < cutoff) {
            self.pop_front();
        }
    }

    fn newest(&self) -> Option<i64> {
        self.entries.back().map(|(t, _)| *t)
    }
}

/// Makes room when the windows are at their limit: first the windows whose entries have all
/// left their timespan, then, if that frees less than a tenth, the least recently entered.
/// Returns how many windows went.
fn evict(correlations: &mut [Counted], now: i64) -> usize {
    let before: usize = correlations.iter().map(|c| c.windows.len()).sum();
    for counted in correlations.iter_mut() {
        let cutoff = now - counted.rule.timespan_secs as i64;
        counted
            .windows
            .retain(|_, w| w.newest().is_some_and(|t| t >= cutoff));
        let Counted {
            windows,
            last_alert,
            ..
        } = counted;
        last_alert.retain(|group, _| windows.contains_key(group));
    }
    let mut after: usize = correlations.iter().map(|c| c.windows.len()).sum();
    if before - after < before / 10 {
        let mut newest: Vec<i64> = correlations
            .iter()
            .flat_map(|c| c.windows.values().map(|w| w.newest().unwrap_or(i64::MIN)))
            .collect();
        newest.sort_unstable();
        let threshold = newest.get(before / 10).copied().unwrap_or(i64::MIN);
        for counted in correlations.iter_mut() {
            counted
                .windows
                .retain(|_, w| w.newest().unwrap_or(i64::MIN) >= threshold);
        }
        after = correlations.iter().map(|c| c.windows.len()).sum();
    }
    before - after
}

/// The value rsigma counts: each field rendered as rsigma renders it, joined by U+001F; `None`
/// when a field is missing or not a scalar (rsigma then counts nothing for the event).
fn counted_value(event: &impl Event, fields: &[String]) -> Option<String> {
    let mut parts = Vec::with_capacity(fields.len());
    for field in fields {
        let rendered = match event.get_field(field)? {
            EventValue::Str(s) => s.into_owned(),
            EventValue::Int(n) => n.to_string(),
            EventValue::Float(f) => f.to_string(),
            EventValue::Bool(b) => b.to_string(),
            EventValue::Null => "null".to_owned(),
            EventValue::Array(_) | EventValue::Map(_) => return None,
        };
        parts.push(rendered);
    }
    Some(parts.join("\u{1f}"))
}
