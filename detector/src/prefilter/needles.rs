//! Needle gates in front of the rules' substring tests. Every value `contains`, `startswith`,
//! `endswith`, an exact value or an Aho-Corasick set can match holds one of its needles; one
//! search for the needles of every such test on a field, run once over the field's column,
//! marks the values holding any of them, and each test then runs only on those. Benign traffic
//! holds almost none, so a field read by dozens of tests costs about one pass over its bytes.
//!
//! The search is leftmost-first, which lets the automaton hand the scan to a SIMD searcher
//! (Teddy); standard (overlapping) semantics would walk the automaton over every byte.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, Input, Match, MatchKind, Span, packed};
use arrow::array::{Array, BooleanBufferBuilder, StringArray};
use arrow::buffer::BooleanBuffer;
use rsigma_eval::CompiledMatcher;

/// The needle gate of each field rules read, and of keyword selections.
pub(crate) struct NeedleGates {
    /// By field id.
    fields: Vec<Option<NeedleGate>>,
    keywords: Option<NeedleGate>,
}

impl NeedleGates {
    /// `by_field[id]`: the matchers tested on the field with that id; `keywords`: those of
    /// keyword selections.
    pub(crate) fn new(by_field: &[Vec<CompiledMatcher>], keywords: &[CompiledMatcher]) -> Self {
        Self {
            fields: by_field.iter().map(NeedleGate::new).collect(),
            keywords: NeedleGate::new(keywords),
        }
    }

    /// The gate of the field with id `id`.
    pub(crate) fn field(&self, id: usize) -> Option<&NeedleGate> {
        self.fields.get(id).and_then(Option::as_ref)
    }

    /// The gate of the keyword columns and attribute values.
    pub(crate) fn keywords(&self) -> Option<&NeedleGate> {
        self.keywords.as_ref()
    }
}

/// The needles of the tests on one field (or of the keyword selections), ASCII-lowercased.
pub(crate) struct NeedleGate {
    needles: HashSet<Vec<u8>>,
    search: Search,
}

/// Teddy when the needles suit it (up to 128 of them), else an automaton.
enum Search {
    Packed(packed::Searcher),
    Automaton(AhoCorasick),
}

impl Search {
    /// The leftmost-first match in `haystack[from..end]`.
    fn find(&self, haystack: &[u8], from: usize, end: usize) -> Option<Match> {
        match self {
            Search::Packed(searcher) => searcher.find_in(haystack, Span { start: from, end }),
            Search::Automaton(automaton) => automaton.find(Input::new(haystack).span(from..end)),
        }
    }
}

impl NeedleGate {
    /// A gate over the needles of every substring-shaped test in `matchers`; `None` when they
    /// have none.
    pub(crate) fn new<'m>(matchers: impl IntoIterator<Item = &'m CompiledMatcher>) -> Option<Self> {
        let mut needles = HashSet::new();
        for matcher in matchers {
            collect(matcher, &mut needles);
        }
        if needles.is_empty() {
            return None;
        }
        // Shortest first: of the needles starting where the search stops, the one reported is
        // then the shortest, so when it runs past the end of its value every other one does too.
        let mut ordered: Vec<&Vec<u8>> = needles.iter().collect();
        ordered.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        let packed = packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostFirst)
            .heuristic_pattern_limits(false)
            .builder()
            .extend(&ordered)
            .build();
        let search = match packed {
            Some(searcher) => Search::Packed(searcher),
            // The automaton picks its own prefilter.
            None => Search::Automaton(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(&ordered)
                    .ok()?,
            ),
        };
        Some(Self { needles, search })
    }

    /// Whether every value holding a match of a test with `needles` holds one of the gate's.
    /// The gate of a column holds the needles of every test asked about it that has only
    /// gateable ones (`Prefilter::new` collects them from the same plans that ask), so only
    /// gateability is checked here, once per test and batch; debug builds (the tests) also
    /// check membership.
    pub(crate) fn covers<'n>(&self, needles: impl IntoIterator<Item = &'n str>) -> bool {
        needles.into_iter().all(|n| {
            let ok = n.is_ascii() && !n.is_empty();
            debug_assert!(
                !ok || gateable(n).is_some_and(|n| self.needles.contains(&n)),
                "needle {n:?} is tested on a column whose gate lacks it"
            );
            ok
        })
    }

    /// The values of `lowered` (a column lowercased as rsigma lowercases a haystack) holding
    /// one of the needles. The values are searched back to back; a match running past the end
    /// of the value it starts in belongs to none.
    pub(crate) fn scan(&self, lowered: &StringArray) -> BooleanBuffer {
        let values = lowered.len();
        let mut out = BooleanBufferBuilder::new(values);
        out.append_n(values, false);
        let offsets = lowered.value_offsets();
        let bound = |i: usize| offsets.get(i).map_or(0, |&o| o as usize);
        let bytes = lowered.value_data();
        let end = bound(values);
        let mut value = 0;
        let mut from = bound(0);
        while from < end
            && let Some(found) = self.search.find(bytes, from, end)
        {
            while bound(value + 1) <= found.start() {
                value += 1;
            }
            let value_end = bound(value + 1);
            if found.end() <= value_end {
                if lowered.is_valid(value) {
                    out.set_bit(value, true);
                }
                from = value_end;
            } else {
                // No needle starting here fits in the value; one starting later may.
                from = found.start() + 1;
            }
        }
        out.finish()
    }
}

/// The needles a matcher's leaves test for, as in [`leaf_needles`].
fn collect(matcher: &CompiledMatcher, into: &mut HashSet<Vec<u8>>) {
    match matcher {
        CompiledMatcher::Not(inner) | CompiledMatcher::TimestampPart { inner, .. } => {
            collect(inner, into);
        }
        CompiledMatcher::AnyOf(children)
        | CompiledMatcher::AllOf(children)
        | CompiledMatcher::CaseInsensitiveGroup { children, .. } => {
            for child in children {
                collect(child, into);
            }
        }
        leaf => {
            if let Some(needles) = leaf_needles(leaf)
                && needles.iter().all(|n| gateable(n).is_some())
            {
                into.extend(needles.iter().filter_map(|n| gateable(n)));
            }
        }
    }
}

/// The needles of a substring-shaped leaf: every string it matches contains one of them.
/// `None` for any other matcher.
pub(crate) fn leaf_needles(matcher: &CompiledMatcher) -> Option<Vec<&str>> {
    match matcher {
        CompiledMatcher::Exact { value, .. }
        | CompiledMatcher::Contains { value, .. }
        | CompiledMatcher::StartsWith { value, .. }
        | CompiledMatcher::EndsWith { value, .. } => Some(vec![value.as_str()]),
        CompiledMatcher::AhoCorasickSet { needles, .. } => {
            Some(needles.iter().map(String::as_str).collect())
        }
        _ => None,
    }
}

/// A needle as the gate searches for it, lowercased: a value holding `needle` (in any case
/// when the test ignores case) holds its ASCII lowercasing once lowercased, since lowercasing
/// maps each ASCII character to one ASCII character in place. Empty and non-ASCII needles
/// cannot be gated on (Unicode lowercasing of a needle alone can differ from its lowercasing
/// inside a value).
fn gateable(needle: &str) -> Option<Vec<u8>> {
    (!needle.is_empty() && needle.is_ascii()).then(|| needle.as_bytes().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(needles: &[&str]) -> NeedleGate {
        let matchers: Vec<CompiledMatcher> = needles
            .iter()
            .map(|n| CompiledMatcher::Contains {
                value: (*n).to_owned(),
                case_insensitive: true,
            })
            .collect();
        NeedleGate::new(&matchers).expect("gate")
    }

    fn hits(gate: &NeedleGate, values: &[Option<&str>]) -> Vec<bool> {
        let column = StringArray::from(values.to_vec());
        gate.scan(&column).iter().collect()
    }

    #[test]
    fn a_needle_running_into_the_next_value_hides_no_shorter_one() {
        // Back to back the column reads "xabcd": "abcd" starts where "ab" does but belongs to
        // no value; "ab" lies in the first.
        let g = gate(&["abcd", "ab", "zz"]);
        assert_eq!(
            hits(&g, &[Some("xab"), Some("cd"), Some("q")]),
            [true, false, false]
        );
        // "ab" runs from the first value into the second; "bc" lies in the second.
        let g = gate(&["ab", "bc"]);
        assert_eq!(hits(&g, &[Some("xa"), Some("bc")]), [false, true]);
    }

    #[test]
    fn more_needles_than_the_simd_searcher_takes_go_through_an_automaton() {
        let many: Vec<String> = (0..200).map(|i| format!("needle-{i:03}")).collect();
        let mut needles: Vec<&str> = many.iter().map(String::as_str).collect();
        needles.extend(["abcd", "ab"]);
        let g = gate(&needles);
        assert!(matches!(g.search, Search::Automaton(_)));
        assert!(matches!(gate(&["abcd", "ab"]).search, Search::Packed(_)));
        assert_eq!(
            hits(
                &g,
                &[
                    Some("xab"),
                    Some("cd"),
                    Some("a needle-199!"),
                    Some("needle-2")
                ]
            ),
            [true, false, true, false]
        );
    }

    #[test]
    fn empty_null_and_last_values() {
        let g = gate(&["needle", "pin"]);
        assert_eq!(
            hits(
                &g,
                &[Some(""), None, Some("a needle"), Some(""), Some("pin")]
            ),
            [false, false, true, false, true]
        );
        assert_eq!(hits(&g, &[]), Vec::<bool>::new());
    }

    #[test]
    fn only_ascii_non_empty_needles_are_covered() {
        let g = gate(&["Admin", "straße", ""]);
        assert!(g.covers(["admin"]));
        assert!(g.covers(["ADMIN"]));
        assert!(!g.covers(["straße"]));
        assert!(!g.covers([""]));
        assert!(!g.covers(["admin", ""]));
        assert_eq!(g.needles, HashSet::from([b"admin".to_vec()]));
    }

    #[test]
    fn a_matcher_with_an_ungateable_needle_adds_none_of_its_needles() {
        let set = CompiledMatcher::AnyOf(vec![
            CompiledMatcher::Contains {
                value: "root".into(),
                case_insensitive: true,
            },
            CompiledMatcher::AhoCorasickSet {
                automaton: AhoCorasick::new(["sudo", "ß"]).expect("automaton"),
                case_insensitive: true,
                needles: vec!["sudo".into(), "ß".into()],
            },
        ]);
        let g = NeedleGate::new([&set]).expect("gate");
        assert_eq!(g.needles, HashSet::from([b"root".to_vec()]));
    }
}
