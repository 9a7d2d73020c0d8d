//! One pass over a string for every detector: all patterns are compiled into a single
//! multi-pattern automaton (regex-automata's meta engine, lazy DFA), which reports the leftmost
//! candidate and which detector it belongs to. Only a candidate pays for captures and validation.
//! Most strings have none, and are turned away earlier by the smaller automaton of [`Gate`].

use regex_automata::meta;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind};

use super::gate::{Entry, Gate};
use super::validate::Validator;

/// A validated finding in one string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hit {
    pub detector: usize,
    /// The whole match.
    pub start: usize,
    pub end: usize,
    /// The part to replace: the `value` group when the pattern has one, else the match.
    pub value_start: usize,
    pub value_end: usize,
}

pub(super) struct Scanner {
    multi: meta::Regex,
    /// Per detector: its own regex, used only on a candidate (to find the `value` group, or
    /// to try a shorter match), and whether it has a `value` group.
    own: Vec<(regex::Regex, bool)>,
    validators: Vec<Option<Validator>>,
    /// Turns away strings no detector can match. Its JSON side also passes JSON worth a
    /// structural look without a detector candidate (a denied key): kept out of `multi`, which
    /// it would slow for every other string.
    pub(super) gate: Gate,
}

/// Every pattern must compile on its own first, so errors name the detector; this only fails
/// if the combined automaton exceeds its size limits.
#[derive(Debug, thiserror::Error)]
#[error("the combined redaction patterns do not compile: {0}")]
pub struct ScannerError(pub(super) String);

/// Size limit for one compiled pattern (and for the combined automaton, times the count).
pub(super) const PATTERN_SIZE_LIMIT: usize = 2 << 20;

impl Scanner {
    /// `patterns`: one per detector, with its validator; `json_hint`: see the field.
    pub fn new(
        patterns: &[(String, Option<Validator>)],
        json_hint: Option<&str>,
    ) -> Result<Self, ScannerError> {
        let all: Vec<&str> = patterns.iter().map(|(p, _)| p.as_str()).collect();
        let multi = build(&all)?;
        let entries: Vec<Entry> = all.iter().map(|p| Entry::for_pattern(p)).collect();
        let gate = Gate::new(&entries, json_hint)?;
        let mut own = Vec::with_capacity(patterns.len());
        for (pattern, _) in patterns {
            let re = regex::RegexBuilder::new(pattern)
                .size_limit(PATTERN_SIZE_LIMIT)
                .build()
                .map_err(|e| ScannerError(e.to_string()))?;
            let has_value = re.capture_names().flatten().any(|n| n == "value");
            own.push((re, has_value));
        }
        Ok(Self {
            multi,
            own,
            validators: patterns.iter().map(|(_, v)| *v).collect(),
            gate,
        })
    }

    /// Whether anything in `text` is worth a closer look. Most strings stop here.
    pub fn is_candidate(&self, text: &str) -> bool {
        self.gate.passes(text)
    }

    /// [`Self::is_candidate`] for JSON text, where a denied key also counts.
    pub fn is_json_candidate(&self, text: &str) -> bool {
        self.gate.passes_json(text)
    }

    /// [`Self::is_candidate`] (or, with `json`, [`Self::is_json_candidate`]) for each of
    /// `texts`: faster than one at a time.
    pub fn candidates(&self, texts: &[&str], json: bool) -> Vec<bool> {
        self.gate.passes_each(texts, json)
    }

    /// The detectors' patterns, in scan order.
    #[cfg(test)]
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.own.iter().map(|(re, _)| re.as_str())
    }

    /// The next validated hit at or after `from` from a detector that `enabled` accepts.
    pub fn next(
        &self,
        text: &str,
        mut from: usize,
        enabled: impl Fn(usize) -> bool,
    ) -> Option<Hit> {
        while from <= text.len() {
            let m = self.multi.search(&Input::new(text).range(from..))?;
            let detector = m.pattern().as_usize();
            let (start, end) = (m.start(), m.end());
            if enabled(detector)
                && let Some(hit) = self.hit(text, detector, start, end)
            {
                return Some(hit);
            }
            // Not a finding here; lower-priority patterns may still match further on.
            from = next_char(text, start);
        }
        None
    }

    fn hit(&self, text: &str, detector: usize, start: usize, end: usize) -> Option<Hit> {
        let (re, has_value) = self.own.get(detector)?;
        let (value_start, value_end) = if *has_value {
            let caps = re.captures_at(text, start)?;
            match caps.name("value") {
                Some(v) if caps.get(0).is_some_and(|m| m.start() == start) => (v.start(), v.end()),
                _ => (start, end),
            }
        } else {
            (start, end)
        };
        if value_start == value_end {
            return None;
        }
        let Some(validator) = self.validators.get(detector).copied().flatten() else {
            return Some(Hit::new(detector, start, end, value_start, value_end));
        };
        if validator.check(text, value_start, value_end) {
            return Some(Hit::new(detector, start, end, value_start, value_end));
        }
        if *has_value {
            return None;
        }
        // A greedy match can swallow what follows a valid value: "4111 1111 1111 1111 10.0.0.1"
        // matches the card pattern with 18 digits and fails Luhn, while the first 16 are a
        // card. Try the shorter matches that end at a separator, longest first.
        (start + 1..end)
            .rev()
            .filter(|&p| {
                matches!(text.as_bytes().get(p), Some(b' ' | b'-'))
                    && text
                        .as_bytes()
                        .get(p - 1)
                        .is_some_and(u8::is_ascii_alphanumeric)
            })
            .find(|&p| {
                let whole = text
                    .get(..p)
                    .and_then(|prefix| re.find_at(prefix, start))
                    .is_some_and(|m| m.start() == start && m.end() == p);
                whole && validator.check(text, start, p)
            })
            .map(|p| Hit::new(detector, start, p, start, p))
    }
}

impl Hit {
    fn new(
        detector: usize,
        start: usize,
        end: usize,
        value_start: usize,
        value_end: usize,
    ) -> Self {
        Self {
            detector,
            start,
            end,
            value_start,
            value_end,
        }
    }
}

/// One leftmost-first automaton over `patterns` (lazy DFA with a generous cache, so scans stay
/// in the DFA rather than falling back to slower engines).
pub(super) fn build(patterns: &[&str]) -> Result<meta::Regex, ScannerError> {
    meta::Regex::builder()
        .configure(
            meta::Config::new()
                .match_kind(MatchKind::LeftmostFirst)
                .nfa_size_limit(Some(PATTERN_SIZE_LIMIT * patterns.len().max(1)))
                .hybrid_cache_capacity(8 << 20),
        )
        .syntax(syntax::Config::new())
        .build_many(patterns)
        .map_err(|e| {
            let detail = std::error::Error::source(&e).map(|s| format!(": {s}"));
            ScannerError(format!("{e}{}", detail.unwrap_or_default()))
        })
}

/// The byte offset of the character after the one at `at`.
pub(super) fn next_char(text: &str, at: usize) -> usize {
    at + text
        .get(at..)
        .and_then(|rest| rest.chars().next())
        .map_or(1, char::len_utf8)
}
