//! Literal gates in front of the rules' regular expressions. Every match of `(?i)(?:^|/)
//! (?:admin|actuator|…)(?:/|$)` contains one of `admin`, `actuator`, …; one automaton pass over
//! a column's bytes finds the few values holding any of them, and only those run the regex.
//! Most values of `url.path` or `body` hold none, so most regex calls disappear.

use std::collections::HashMap;

use aho_corasick::AhoCorasick;
use rsigma_eval::CompiledMatcher;
use rsigma_eval::matcher::GroupMode;
use vigil_core::literals;

/// Per regular expression (by pattern), the automaton of literals one of which every match
/// contains; a regex without such a set has no gate and runs on every value.
#[derive(Default)]
pub(crate) struct RegexGates {
    by_pattern: HashMap<String, AhoCorasick>,
}

impl RegexGates {
    /// Adds a gate for every regex in `matcher` that has one.
    pub(crate) fn add(&mut self, matcher: &CompiledMatcher) {
        match matcher {
            CompiledMatcher::Regex(re) => self.insert(re.as_str(), &[re.as_str()], GroupMode::Any),
            CompiledMatcher::RegexSetMatch { set, mode } => {
                let key = set_key(set.patterns());
                let patterns: Vec<&str> = set.patterns().iter().map(String::as_str).collect();
                self.insert(&key, &patterns, *mode);
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
        let Some(needles) = needles.filter(|n| !n.is_empty() && n.iter().all(|l| !l.is_empty()))
        else {
            return;
        };
        // Folding every literal in ASCII case passes a superset of what the exact and folded
        // literals pass: still conservative, and one automaton.
        if let Ok(automaton) = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&needles)
        {
            self.by_pattern.insert(key.to_owned(), automaton);
        }
    }

    /// The gate of a single regex.
    pub(crate) fn regex(&self, pattern: &str) -> Option<&AhoCorasick> {
        self.by_pattern.get(pattern)
    }

    /// The gate of a regex set.
    pub(crate) fn set(&self, patterns: &[String]) -> Option<&AhoCorasick> {
        self.by_pattern.get(&set_key(patterns))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_pattern.len()
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
