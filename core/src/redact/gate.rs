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
use regex_syntax::hir::{Class, Hir, HirKind};

use super::scan::{ScannerError, build};

/// A string a match must contain; `fold` when it may appear in any ASCII case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Lit {
    bytes: Vec<u8>,
    fold: bool,
}

/// Most literals one set may grow to while sequences are combined.
const MAX_SET: usize = 128;
/// Largest class turned into one literal per member.
const MAX_CLASS: usize = 8;
/// Longest repetition of an exact piece that is expanded.
const MAX_REPEAT: u32 = 4;
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
        regex_automata::util::syntax::parse(pattern)
            .ok()
            .and_then(|hir| required(&hir))
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

/// A set of literals one of which every match of `hir` contains; `None` when there is no
/// small set of non-empty ones.
fn required(hir: &Hir) -> Option<Vec<Lit>> {
    if let Some(set) = exact(hir)
        && set.iter().all(|l| !l.bytes.is_empty())
    {
        return Some(set);
    }
    match hir.kind() {
        HirKind::Capture(c) => required(&c.sub),
        HirKind::Repetition(r) if r.min > 0 => required(&r.sub),
        HirKind::Alternation(alternatives) => {
            let mut union = Vec::new();
            for a in alternatives {
                union.extend(required(a)?);
            }
            union.sort();
            union.dedup();
            Some(union)
        }
        HirKind::Concat(items) => concat_required(items),
        _ => None,
    }
}

/// The best requirement of a sequence: exact neighbours joined into longer literals (`?` `&`
/// `;` then a keyword then `=`), or the requirement of one inexact item.
fn concat_required(items: &[Hir]) -> Option<Vec<Lit>> {
    let mut candidates: Vec<Vec<Lit>> = Vec::new();
    let mut run: Option<Vec<Lit>> = None;
    for item in items {
        match exact(item) {
            Some(set) => {
                let joined = match &run {
                    Some(r) => cross(r, &set),
                    None => Some(set.clone()),
                };
                run = match joined {
                    Some(j) => Some(j),
                    None => {
                        candidates.extend(run.take());
                        Some(set)
                    }
                };
            }
            None => {
                candidates.extend(run.take());
                candidates.extend(required(item));
            }
        }
    }
    candidates.extend(run);
    candidates
        .into_iter()
        .filter(|set| !set.is_empty() && set.iter().all(|l| !l.bytes.is_empty()))
        .max_by_key(|set| {
            let shortest = set.iter().map(|l| l.bytes.len()).min().unwrap_or(0);
            (shortest, std::cmp::Reverse(set.len()))
        })
}

/// Every string `hir` matches, when there are few (look-arounds match the empty string).
fn exact(hir: &Hir) -> Option<Vec<Lit>> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(vec![Lit::empty()]),
        HirKind::Literal(l) => Some(vec![Lit {
            bytes: l.0.to_vec(),
            fold: false,
        }]),
        HirKind::Class(c) => class(c),
        HirKind::Capture(c) => exact(&c.sub),
        HirKind::Repetition(r) => {
            let max = r.max.filter(|&m| m <= MAX_REPEAT)?;
            let sub = exact(&r.sub)?;
            let mut all = Vec::new();
            let mut power = vec![Lit::empty()];
            for n in 0..=max {
                if n >= r.min {
                    all.extend(power.iter().cloned());
                }
                if n < max {
                    power = cross(&power, &sub)?;
                }
            }
            bounded(all)
        }
        HirKind::Concat(items) => items
            .iter()
            .try_fold(vec![Lit::empty()], |acc, item| cross(&acc, &exact(item)?)),
        HirKind::Alternation(alternatives) => {
            let mut union = Vec::new();
            for a in alternatives {
                union.extend(exact(a)?);
            }
            bounded(union)
        }
    }
}

/// The members of a small class: an ASCII letter in both cases is one folded literal.
fn class(class: &Class) -> Option<Vec<Lit>> {
    let chars: Vec<char> = match class {
        Class::Unicode(u) => {
            let count: u32 = u
                .ranges()
                .iter()
                .map(|r| u32::from(r.end()) - u32::from(r.start()) + 1)
                .sum();
            if count as usize > MAX_CLASS {
                return None;
            }
            u.iter()
                .flat_map(|r| r.start()..=r.end())
                .collect::<Vec<char>>()
        }
        Class::Bytes(b) => {
            let count: usize = b
                .ranges()
                .iter()
                .map(|r| usize::from(r.end()) - usize::from(r.start()) + 1)
                .sum();
            if count > MAX_CLASS || !b.is_ascii() {
                return None;
            }
            b.iter()
                .flat_map(|r| r.start()..=r.end())
                .map(char::from)
                .collect()
        }
    };
    if let [a, b] = chars[..]
        && a.is_ascii_alphabetic()
        && a.eq_ignore_ascii_case(&b)
        && a != b
    {
        return Some(vec![Lit {
            bytes: vec![a.to_ascii_lowercase() as u8],
            fold: true,
        }]);
    }
    Some(
        chars
            .into_iter()
            .map(|c| Lit {
                bytes: c.to_string().into_bytes(),
                fold: false,
            })
            .collect(),
    )
}

/// Every `a` followed by every `b`; `None` past [`MAX_SET`].
fn cross(a: &[Lit], b: &[Lit]) -> Option<Vec<Lit>> {
    if a.len().saturating_mul(b.len()) > MAX_SET {
        return None;
    }
    let joined = a
        .iter()
        .flat_map(|x| {
            b.iter().map(move |y| Lit {
                bytes: [x.bytes.as_slice(), y.bytes.as_slice()].concat(),
                fold: x.fold || y.fold,
            })
        })
        .collect();
    bounded(joined)
}

fn bounded(mut set: Vec<Lit>) -> Option<Vec<Lit>> {
    set.sort();
    set.dedup();
    (set.len() <= MAX_SET).then_some(set)
}

impl Lit {
    fn empty() -> Self {
        Self {
            bytes: Vec::new(),
            fold: false,
        }
    }
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

    fn exact_lits(list: &[&str]) -> Vec<(String, bool)> {
        list.iter().map(|s| ((*s).to_owned(), false)).collect()
    }

    #[test]
    fn literals_are_found_inside_patterns() {
        assert_eq!(
            literals(r"\bAKIA[A-Z2-7]{16}\b"),
            Some(exact_lits(&["AKIA"]))
        );
        assert_eq!(
            literals(r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),
            Some(exact_lits(&[
                "rk_live_", "rk_test_", "sk_live_", "sk_test_"
            ]))
        );
        // The longest requirement wins: `.eyJ` over `eyJ`.
        assert_eq!(
            literals(r"\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{2,}"),
            Some(exact_lits(&[".eyJ"]))
        );
        assert_eq!(
            literals(r"(?-u)(?i:bearer|basic)[ \t]+(?P<value>[A-Za-z0-9]{8,})"),
            Some(vec![("basic".into(), true), ("bearer".into(), true)])
        );
        // An optional piece gives both spellings.
        assert_eq!(
            literals(r"(?-u)[?&](?i:api_?key)="),
            Some(vec![
                ("&api_key=".into(), true),
                ("&apikey=".into(), true),
                ("?api_key=".into(), true),
                ("?apikey=".into(), true),
            ])
        );
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
    fn unicode_case_folding_keeps_every_variant() {
        // `(?i)k` also matches the Kelvin sign, which ASCII folding would miss.
        let set = literals("(?i)ok").unwrap();
        assert!(set.contains(&("o\u{212A}".into(), true)), "{set:?}");
        assert!(set.contains(&("ok".into(), true)), "{set:?}");
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
