//! Literals every match of a regular expression must contain (`AKIA`, `.eyJ`, `password` in
//! any case, one of `admin`/`actuator`/…), found by walking the pattern's syntax tree. A
//! string that contains none of them cannot match, so a cheap multi-literal search can stand
//! in front of the expression: the redaction gate and the detector's regex prefilter both do.

use regex_syntax::hir::{Class, Hir, HirKind};

/// A string a match must contain; `fold` when it may appear in any ASCII case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lit {
    pub bytes: Vec<u8>,
    pub fold: bool,
}

/// Most literals one set may grow to while sequences are combined.
const MAX_SET: usize = 128;
/// Largest class turned into one literal per member.
const MAX_CLASS: usize = 8;
/// Longest repetition of an exact piece that is expanded.
const MAX_REPEAT: u32 = 4;

/// A set of literals one of which every match of `pattern` (regex crate syntax) contains;
/// `None` when there is no small set of non-empty ones, or the pattern does not parse.
pub fn required(pattern: &str) -> Option<Vec<Lit>> {
    regex_automata::util::syntax::parse(pattern)
        .ok()
        .and_then(|hir| required_of(&hir))
}

fn required_of(hir: &Hir) -> Option<Vec<Lit>> {
    if let Some(set) = exact(hir)
        && set.iter().all(|l| !l.bytes.is_empty())
    {
        return Some(set);
    }
    match hir.kind() {
        HirKind::Capture(c) => required_of(&c.sub),
        HirKind::Repetition(r) if r.min > 0 => required_of(&r.sub),
        HirKind::Alternation(alternatives) => {
            let mut union = Vec::new();
            for a in alternatives {
                union.extend(required_of(a)?);
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
                candidates.extend(required_of(item));
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
        required(pattern).map(|set| {
            set.into_iter()
                .map(|l| (String::from_utf8(l.bytes).unwrap(), l.fold))
                .collect()
        })
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
    fn unicode_case_folding_keeps_every_variant() {
        // `(?i)k` also matches the Kelvin sign, which ASCII folding would miss.
        let set = literals("(?i)ok").unwrap();
        assert!(set.contains(&("o\u{212A}".into(), true)), "{set:?}");
        assert!(set.contains(&("ok".into(), true)), "{set:?}");
    }
}
