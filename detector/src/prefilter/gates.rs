//! Literal gates in front of the rules' regular expressions. Every match of `(?i)(?:^|/)
//! (?:admin|actuator|…)(?:/|$)` contains one of `admin`, `actuator`, …; a value holding none of
//! them cannot match, and most values of `url.path` or `body` hold none. One automaton over the
//! literals of every gated regex runs once over a column's bytes and tells, per regex, the
//! values worth running it on; the regexes of a field then cost one pass over its bytes
//! instead of one search per regex and value.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use arrow::array::{Array, BooleanBufferBuilder, StringArray};
use arrow::buffer::BooleanBuffer;
use rsigma_eval::CompiledMatcher;
use rsigma_eval::matcher::GroupMode;
use vigil_core::literals;

/// Shortest literal worth gating on: single bytes (`/`, `.`, `:`) are in most values, and a
/// gate on them passes everything while its matches cost a step each.
const MIN_LITERAL: usize = 2;

/// Per regular expression (by pattern), a gate: the literals one of which every match
/// contains. A regex without such a set has no gate and runs on every value.
#[derive(Default)]
pub(crate) struct RegexGates {
    /// Regex (or regex set) key → gate index.
    by_pattern: HashMap<String, usize>,
    /// Literals of every gate, and the gate each belongs to.
    literals: Vec<Vec<u8>>,
    gate_of: Vec<usize>,
    automaton: Option<AhoCorasick>,
}

impl RegexGates {
    /// Gates for every regex in `matchers` that has a literal set.
    pub(crate) fn new<'m>(matchers: impl IntoIterator<Item = &'m CompiledMatcher>) -> Self {
        let mut gates = Self::default();
        for matcher in matchers {
            gates.add(matcher);
        }
        // A DFA without a prefilter: the automaton reads every byte of a column, and the
        // prefilter's rare byte of short case-folded words (`id`, `ls`, `sh`) is in most
        // values, so it would stop at nearly every byte.
        gates.automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .prefilter(false)
            .build(&gates.literals)
            .ok()
            .filter(|_| !gates.literals.is_empty());
        if gates.automaton.is_none() {
            gates.by_pattern.clear();
        }
        gates
    }

    fn add(&mut self, matcher: &CompiledMatcher) {
        match matcher {
            CompiledMatcher::Regex(re) => self.insert(re.as_str(), &[re.as_str()], GroupMode::Any),
            CompiledMatcher::RegexSetMatch { set, mode } => {
                let patterns: Vec<&str> = set.patterns().iter().map(String::as_str).collect();
                self.insert(&set_key(set.patterns()), &patterns, *mode);
            }
            CompiledMatcher::Not(inner) | CompiledMatcher::TimestampPart { inner, .. } => {
                self.add(inner);
            }
            CompiledMatcher::AnyOf(children)
            | CompiledMatcher::AllOf(children)
            | CompiledMatcher::CaseInsensitiveGroup { children, .. } => {
                for child in children {
                    self.add(child);
                }
            }
            _ => {}
        }
    }

    /// A gate for `key` over `patterns`: with `Any`, a match of any pattern passes (so every
    /// pattern needs a literal set, and the gate is their union); with `All`, every pattern
    /// must match, so one pattern's set is enough.
    fn insert(&mut self, key: &str, patterns: &[&str], mode: GroupMode) {
        if self.by_pattern.contains_key(key) {
            return;
        }
        let sets = patterns.iter().map(|p| literals::required(p));
        let needles: Option<Vec<Vec<u8>>> = match mode {
            GroupMode::Any => sets
                .map(|set| set.map(|s| s.into_iter().map(|l| l.bytes).collect::<Vec<_>>()))
                .collect::<Option<Vec<_>>>()
                .map(|sets| sets.concat()),
            GroupMode::All => sets
                .flatten()
                .next()
                .map(|s| s.into_iter().map(|l| l.bytes).collect()),
        };
        let Some(needles) =
            needles.filter(|n| !n.is_empty() && n.iter().all(|l| l.len() >= MIN_LITERAL))
        else {
            return;
        };
        // Folding every literal in ASCII case passes a superset of what the exact and folded
        // literals pass: still conservative.
        let gate = self.by_pattern.len();
        self.by_pattern.insert(key.to_owned(), gate);
        self.gate_of
            .extend(std::iter::repeat_n(gate, needles.len()));
        self.literals.extend(needles);
    }

    /// The gate of a single regex.
    pub(crate) fn regex(&self, pattern: &str) -> Option<usize> {
        self.by_pattern.get(pattern).copied()
    }

    /// The gate of a regex set.
    pub(crate) fn set(&self, patterns: &[String]) -> Option<usize> {
        self.by_pattern.get(&set_key(patterns)).copied()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_pattern.len()
    }

    /// Per gate, the values of `haystack` holding one of its literals: one pass over the
    /// column's bytes, values back to back (a literal spanning two values counts for neither).
    pub(crate) fn scan(&self, haystack: &StringArray) -> Vec<BooleanBuffer> {
        let values = haystack.len();
        let mut hits: Vec<BooleanBufferBuilder> = (0..self.by_pattern.len())
            .map(|_| {
                let mut b = BooleanBufferBuilder::new(values);
                b.append_n(values, false);
                b
            })
            .collect();
        if let Some(automaton) = &self.automaton {
            let offsets = haystack.value_offsets();
            let bound = |i: usize| offsets.get(i).map_or(0, |&o| o as usize);
            let start = bound(0);
            let end = bound(values);
            let bytes = haystack.value_data().get(..end).unwrap_or_default();
            let mut value = 0;
            for found in automaton.find_overlapping_iter(bytes) {
                if found.start() < start {
                    continue;
                }
                // Matches come by end position: the value holding the end only moves forward.
                while value + 1 < values && bound(value + 1) < found.end() {
                    value += 1;
                }
                let gate = self.gate_of.get(found.pattern().as_usize());
                if found.start() >= bound(value)
                    && haystack.is_valid(value)
                    && let Some(hit) = gate.and_then(|g| hits.get_mut(*g))
                {
                    hit.set_bit(value, true);
                }
            }
        }
        hits.into_iter().map(|mut b| b.finish()).collect()
    }
}

/// A set's patterns as one key (NUL cannot appear in a pattern's text unescaped).
fn set_key(patterns: &[String]) -> String {
    let mut key = String::from("\0set");
    for p in patterns {
        key.push('\0');
        key.push_str(p);
    }
    key
}
