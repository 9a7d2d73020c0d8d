//! The cheap test most strings stop at, in front of the multi-pattern automaton.
//!
//! Each detector's pattern is analysed for literals that every match must contain (`AKIA`,
//! `eyJ`, `-----BEGIN`, `password` in any case, `?token=`, …). The gate is one automaton over
//! those literal sets, plus the whole pattern of every detector without such a set (the shapes
//! of card numbers, addresses and phone numbers, and any operator pattern the analysis cannot
//! reduce). It matches whenever some detector could match, so a string it rejects has no
//! candidate; a string it accepts is scanned by the full automaton.
//!
//! The gain is the size of the automaton: most states of the full one come from the free-form
//! prefixes of the keyword detectors (`db.user_password=`, `X-Api-Key:`), which a literal
//! stands in for here, and a smaller lazy DFA stays in cache.

use regex_automata::meta;

use super::scan::{ScannerError, build};
use crate::literals::{self, Lit};

/// Shortest literal worth gating on: single bytes (`.`, `:`, `@`) are in most log lines, and
/// a detector they stand for is cheaper to run whole.
const MIN_GATE_LEN: usize = 2;

/// How one detector passes the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    /// Any of these literals (at least one is in every match).
    Literals(Vec<Lit>),
    /// The detector's whole pattern.
    Pattern(String),
}

impl Entry {
    /// The cheapest conservative entry for `pattern`.
    pub fn for_pattern(pattern: &str) -> Self {
        literals::required(pattern)
            .filter(|set| set.iter().all(|l| l.bytes.len() >= MIN_GATE_LEN))
            .filter(|set| set.iter().all(|l| std::str::from_utf8(&l.bytes).is_ok()))
            .map_or_else(|| Self::Pattern(pattern.to_owned()), Self::Literals)
    }
}

/// One automaton for text and, when there are denied keys, one for JSON that also passes a
/// denied object key.
pub(super) struct Gate {
    text: meta::Regex,
    json: Option<meta::Regex>,
}

impl Gate {
    pub fn new(entries: &[Entry], json_hint: Option<&str>) -> Result<Self, ScannerError> {
        let mut patterns: Vec<String> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Pattern(p) => Some(p.clone()),
                Entry::Literals(_) => None,
            })
            .collect();
        let mut literals: Vec<&Lit> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Literals(set) => Some(set),
                Entry::Pattern(_) => None,
            })
            .flatten()
            .collect();
        literals.sort();
        literals.dedup();
        if !literals.is_empty() {
            patterns.push(alternation(&literals));
        }
        let text: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let json = match json_hint {
            Some(hint) => Some(build(&[text.as_slice(), &[hint]].concat())?),
            None => None,
        };
        Ok(Self {
            text: build(&text)?,
            json,
        })
    }

    /// Whether some detector could match in `text`.
    pub fn passes(&self, text: &str) -> bool {
        self.text.is_match(text)
    }

    /// [`Self::passes`] for JSON text, where a denied key also counts.
    pub fn passes_json(&self, text: &str) -> bool {
        self.json.as_ref().unwrap_or(&self.text).is_match(text)
    }
}

/// `literals` as one pattern; folded ones match in any case (Unicode folding: a superset of
/// the ASCII folding they came from, which keeps the gate conservative).
fn alternation(literals: &[&Lit]) -> String {
    let alternatives: Vec<String> = literals
        .iter()
        .map(|l| {
            let text = String::from_utf8_lossy(&l.bytes);
            let escaped = regex_syntax::escape(&text);
            if l.fold {
                format!("(?i:{escaped})")
            } else {
                escaped
            }
        })
        .collect();
    format!("(?:{})", alternatives.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literals(pattern: &str) -> Option<Vec<(String, bool)>> {
        match Entry::for_pattern(pattern) {
            Entry::Literals(set) => Some(
                set.into_iter()
                    .map(|l| (String::from_utf8(l.bytes).unwrap(), l.fold))
                    .collect(),
            ),
            Entry::Pattern(p) => {
                assert_eq!(p, pattern);
                None
            }
        }
    }

    #[test]
    fn patterns_without_a_literal_pass_whole() {
        for pattern in [
            r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
            r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}",
            // `@` alone is too short to gate on.
            r"[a-z]+@[a-z]+",
            // One alternative without a literal lets everything through.
            r"AKIA[0-9]{4}|[0-9]{12}",
            r"(?:token)?[0-9]{8}",
            r"[A-Z][a-z]{3,}",
        ] {
            assert_eq!(literals(pattern), None, "{pattern}");
        }
    }

    #[test]
    fn the_gate_passes_what_a_detector_matches() {
        let entries = [
            Entry::for_pattern(r"(?-u)(?i:password)[:=][a-z]+"),
            Entry::for_pattern(r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b"),
        ];
        assert!(matches!(entries[0], Entry::Literals(_)));
        let gate = Gate::new(&entries, Some(r#""secret""#)).unwrap();
        assert!(gate.passes("db PassWord=x"));
        assert!(gate.passes("ssn 123-45-6789"));
        assert!(!gate.passes("nothing to see 12-34"));
        assert!(!gate.passes(r#"{"secret": 1}"#));
        assert!(gate.passes_json(r#"{"secret": 1}"#));
    }
}
