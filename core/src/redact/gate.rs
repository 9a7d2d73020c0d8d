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
//!
//! The gate walks its lazy DFA itself rather than through a regex API, so that it can walk
//! several strings at once ([`Gate::passes_each`]): each step of a DFA is a table load that
//! depends on the one before, and one string at a time leaves the core waiting on those loads.
//! Interleaving independent strings fills the wait; a column of log bodies is gated at about
//! twice the speed of one string at a time (BENCHMARKS.md, "Redaction").

use std::panic::{RefUnwindSafe, UnwindSafe};

use regex_automata::hybrid::LazyStateID;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson;
use regex_automata::util::pool::{Pool, PoolGuard};
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind, meta};

use super::scan::{PATTERN_SIZE_LIMIT, ScannerError, build};
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
    text: Automaton,
    json: Option<Automaton>,
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
            Some(hint) => Some(Automaton::new(&[text.as_slice(), &[hint]].concat())?),
            None => None,
        };
        Ok(Self {
            text: Automaton::new(&text)?,
            json,
        })
    }

    /// Whether some detector could match in `text`.
    pub fn passes(&self, text: &str) -> bool {
        self.text.passes(text)
    }

    /// [`Self::passes`] for JSON text, where a denied key also counts.
    pub fn passes_json(&self, text: &str) -> bool {
        self.json_automaton().passes(text)
    }

    /// [`Self::passes`] (or, with `json`, [`Self::passes_json`]) for each of `texts`, walking
    /// several at once.
    pub fn passes_each(&self, texts: &[&str], json: bool) -> Vec<bool> {
        let automaton = if json {
            self.json_automaton()
        } else {
            &self.text
        };
        let mut answers = vec![false; texts.len()];
        automaton.passes_each(texts, &mut answers);
        answers
    }

    fn json_automaton(&self) -> &Automaton {
        self.json.as_ref().unwrap_or(&self.text)
    }

    /// Whether the interleaved lazy DFA is in use (it is for every pattern set it can
    /// compile; the meta regex answers alone otherwise).
    #[cfg(test)]
    pub fn walks_lazily(&self) -> bool {
        self.text.lazy.is_some() && self.json.as_ref().is_none_or(|j| j.lazy.is_some())
    }
}

/// How many strings one loop walks together. Measured on the clean log lines of the redaction
/// bench: 2 lanes ran at 1.7x one lane, 3 at 2.1x, 4 slower than 2 (the lanes' states no longer
/// fit in registers).
const LANES: usize = 3;

/// Lazy-DFA cache per thread walking the gate; the meta regex keeps its own.
const CACHE_CAPACITY: usize = 8 << 20;

type NewCache = Box<dyn Fn() -> Cache + Send + Sync + UnwindSafe + RefUnwindSafe>;

/// The gate's patterns as a lazy DFA walked by [`Lanes`], with the meta regex answering what
/// the DFA cannot: a pattern set it does not compile, or a text it gives up on (a non-ASCII
/// byte next to a Unicode word boundary in an operator's pattern).
struct Automaton {
    meta: meta::Regex,
    lazy: Option<Lazy>,
}

struct Lazy {
    dfa: DFA,
    caches: Pool<Cache, NewCache>,
}

impl Automaton {
    fn new(patterns: &[&str]) -> Result<Self, ScannerError> {
        let meta = build(patterns)?;
        let lazy = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .unicode_word_boundary(true)
                    .cache_capacity(CACHE_CAPACITY),
            )
            .syntax(syntax::Config::new())
            .thompson(
                thompson::Config::new()
                    .nfa_size_limit(Some(PATTERN_SIZE_LIMIT * patterns.len().max(1))),
            )
            .build_many(patterns)
            .ok()
            .map(|dfa| {
                let for_caches = dfa.clone();
                let new_cache: NewCache = Box::new(move || for_caches.create_cache());
                Lazy {
                    dfa,
                    caches: Pool::new(new_cache),
                }
            });
        Ok(Self { meta, lazy })
    }

    /// One string: the meta regex's own search loop, which measured a little faster than one
    /// lane of [`Lanes`] (no lanes to set up).
    fn passes(&self, text: &str) -> bool {
        self.meta.is_match(text)
    }

    fn passes_each(&self, texts: &[&str], answers: &mut [bool]) {
        let Some(lazy) = &self.lazy else {
            for (text, answer) in texts.iter().zip(answers) {
                *answer = self.meta.is_match(*text);
            }
            return;
        };
        let mut lanes = Lanes {
            dfa: &lazy.dfa,
            cache: lazy.caches.get(),
            meta: &self.meta,
        };
        lanes.run(texts, answers);
    }
}

/// One string being walked: its bytes from `at` on are still to come, `sid` is the state
/// before them. A lane that has `decided` has its answer already.
struct Lane<'t, 'a> {
    text: &'t str,
    at: usize,
    sid: LazyStateID,
    decided: bool,
    answer: &'a mut bool,
}

impl Lane<'_, '_> {
    fn rest(&self) -> &[u8] {
        self.text.as_bytes().get(self.at..).unwrap_or_default()
    }
}

/// What one DFA step decided.
enum Step {
    Continue(LazyStateID),
    /// The text has a match (`Some(true)`), cannot have one (`Some(false)`), or the DFA gave up
    /// on it (`None`).
    Done(Option<bool>),
}

struct Lanes<'d> {
    dfa: &'d DFA,
    cache: PoolGuard<'d, Cache, NewCache>,
    meta: &'d meta::Regex,
}

impl Lanes<'_> {
    /// Answers every text: [`LANES`] at a time while there are that many left, then one by one.
    fn run<'t, 'a>(&mut self, texts: &[&'t str], answers: &'a mut [bool]) {
        let mut queue = texts.iter().copied().zip(answers.iter_mut());
        let mut lanes: [Option<Lane<'t, 'a>>; LANES] = std::array::from_fn(|_| None);
        loop {
            for slot in &mut lanes {
                while slot.is_none() {
                    let Some((text, answer)) = queue.next() else {
                        break;
                    };
                    *slot = self.start(text, answer);
                }
            }
            if lanes.iter().any(Option::is_none) {
                for lane in lanes.iter_mut().filter_map(Option::take) {
                    self.walk_alone(lane);
                }
                return;
            }
            self.walk_together(&mut lanes);
            for slot in &mut lanes {
                if slot.as_ref().is_some_and(|l| l.at == l.text.len())
                    && let Some(lane) = slot.take()
                {
                    self.finish(lane);
                }
            }
        }
    }

    /// A lane for `text`, or `None` when the text was answered at once (it is empty, or the
    /// DFA cannot start on it).
    fn start<'t, 'a>(&mut self, text: &'t str, answer: &'a mut bool) -> Option<Lane<'t, 'a>> {
        match self
            .dfa
            .start_state_forward(&mut self.cache, &Input::new(text))
        {
            Ok(sid) => {
                let lane = Lane {
                    text,
                    at: 0,
                    sid,
                    decided: false,
                    answer,
                };
                if text.is_empty() {
                    self.finish(lane);
                    return None;
                }
                Some(lane)
            }
            Err(_) => {
                *answer = self.meta.is_match(text);
                None
            }
        }
    }

    /// Advances every lane (all are full) by the bytes all of them still have, or until one
    /// of them needs more than a cached transition. A lane that decides is answered.
    fn walk_together(&mut self, lanes: &mut [Option<Lane<'_, '_>>; LANES]) {
        let len = lanes
            .iter()
            .flatten()
            .map(|l| l.rest().len())
            .min()
            .unwrap_or(0);
        let rests: [&[u8]; LANES] = lanes.each_ref().map(|l| {
            l.as_ref()
                .and_then(|l| l.rest().get(..len))
                .unwrap_or_default()
        });
        let mut sids: [LazyStateID; LANES] = lanes
            .each_ref()
            .map(|l| l.as_ref().map(|l| l.sid).unwrap_or_default());
        let mut k = 0;
        while k < len {
            // `k < len`, the length of every lane's rest: the lookups cannot miss.
            let next: [LazyStateID; LANES] = std::array::from_fn(|j| {
                let byte = rests.get(j).and_then(|r| r.get(k)).copied().unwrap_or(0);
                let sid = sids.get(j).copied().unwrap_or_default();
                self.dfa.next_state_untagged(&self.cache, sid, byte)
            });
            if next.iter().any(|s| s.is_tagged()) {
                break;
            }
            sids = next;
            k += 1;
        }
        for (lane, sid) in lanes.iter_mut().flatten().zip(sids) {
            lane.at += k;
            lane.sid = sid;
        }
        if k < len {
            // Some lane needs a transition computed, or has decided: one careful step each.
            for lane in lanes.iter_mut().flatten() {
                let byte = lane.rest().first().copied().unwrap_or(0);
                match self.step(lane.sid, byte) {
                    Step::Continue(sid) => {
                        lane.sid = sid;
                        lane.at += 1;
                    }
                    Step::Done(answer) => {
                        *lane.answer = answer.unwrap_or_else(|| self.meta.is_match(lane.text));
                        lane.decided = true;
                        // Nothing left to walk: `run` takes the lane out.
                        lane.at = lane.text.len();
                    }
                }
            }
        }
    }

    fn walk_alone(&mut self, mut lane: Lane<'_, '_>) {
        let mut sid = lane.sid;
        for &byte in lane.rest() {
            let next = self.dfa.next_state_untagged(&self.cache, sid, byte);
            if !next.is_tagged() {
                sid = next;
                continue;
            }
            match self.step(sid, byte) {
                Step::Continue(s) => sid = s,
                Step::Done(answer) => {
                    *lane.answer = answer.unwrap_or_else(|| self.meta.is_match(lane.text));
                    return;
                }
            }
        }
        lane.at = lane.text.len();
        lane.sid = sid;
        self.finish(lane);
    }

    /// The transition from `sid` on `byte`, computed if it is not cached.
    fn step(&mut self, sid: LazyStateID, byte: u8) -> Step {
        match self.dfa.next_state(&mut self.cache, sid, byte) {
            Ok(next) if next.is_match() => Step::Done(Some(true)),
            Ok(next) if next.is_dead() => Step::Done(Some(false)),
            Ok(next) if next.is_quit() => Step::Done(None),
            Ok(next) => Step::Continue(next),
            Err(_) => Step::Done(None),
        }
    }

    /// Answers a lane that has walked all of its text (or decided already).
    fn finish(&mut self, lane: Lane<'_, '_>) {
        if lane.decided {
            return;
        }
        *lane.answer = match self.dfa.next_eoi_state(&mut self.cache, lane.sid) {
            Ok(sid) if sid.is_quit() => self.meta.is_match(lane.text),
            Ok(sid) => sid.is_match(),
            Err(_) => self.meta.is_match(lane.text),
        };
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
    use proptest::prelude::*;

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

    /// The default detectors' gate, as the engine builds it (with a JSON key hint).
    fn default_gate() -> Gate {
        let entries: Vec<Entry> = crate::redact::builtin_patterns()
            .map(|(_, p)| Entry::for_pattern(p))
            .collect();
        Gate::new(&entries, Some(r#""(?i:password|secret)""#)).unwrap()
    }

    /// What the meta regex says of each text: the reference for the DFA walk.
    fn reference(automaton: &Automaton, texts: &[&str]) -> Vec<bool> {
        texts.iter().map(|t| automaton.meta.is_match(*t)).collect()
    }

    fn assert_agrees(gate: &Gate, texts: &[&str]) {
        for (json, automaton) in [(false, &gate.text), (true, gate.json_automaton())] {
            let expected = reference(automaton, texts);
            assert_eq!(gate.passes_each(texts, json), expected, "json: {json}");
        }
    }

    /// Walking several strings at once answers exactly what the meta regex answers, whatever
    /// the order and lengths of the strings (lanes end, decide and refill at different times).
    #[test]
    fn walking_strings_together_answers_like_the_meta_regex() {
        use crate::redact::corpus;
        let gate = default_gate();
        assert!(gate.walks_lazily());
        let mut texts: Vec<String> = corpus::pii_values(31, 20)
            .iter()
            .enumerate()
            .flat_map(|(n, p)| [corpus::log_line(n as u64, p), p.text.clone()])
            .collect();
        texts.extend(corpus::near_misses(32, 300));
        texts.extend(corpus::clean_log_lines(33, 300));
        texts.extend(
            [
                "",
                "x",
                "é",
                "token",
                "naïve café ünïcode 10.0.0.1",
                "ends with a key AKIAIOSFODNN7EXAMPLE",
                "\u{1F600} alice@example.com",
                r#"{"password": 1}"#,
            ]
            .map(String::from),
        );
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        assert_agrees(&gate, &refs);
        // Interleaved by length, shortest first, and in reverse: other lanes finish first.
        let mut by_length = refs.clone();
        by_length.sort_by_key(|t| t.len());
        assert_agrees(&gate, &by_length);
        by_length.reverse();
        assert_agrees(&gate, &by_length);
        // Every count below, at and just above the number of lanes.
        for n in 0..=LANES + 1 {
            assert_agrees(&gate, refs.get(..n).unwrap());
        }
    }

    /// A pattern with a Unicode word boundary: the DFA gives up on non-ASCII text next to it,
    /// and the meta regex answers those strings instead.
    #[test]
    fn strings_the_dfa_gives_up_on_are_answered_by_the_meta_regex() {
        let gate = Gate::new(&[Entry::Pattern(r"\b\w+ing\b".into())], None).unwrap();
        assert!(gate.walks_lazily());
        let texts = [
            "running fast",
            "naïve testing",
            "testingé",
            "éting",
            "no match here",
            "ünïcöde only",
            "sing",
            "",
        ];
        let expected = reference(&gate.text, &texts);
        assert_eq!(
            expected,
            [true, true, false, true, false, false, true, false]
        );
        assert_agrees(&gate, &texts);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn walking_strings_together_agrees_on_random_text(
            texts in prop::collection::vec(
                prop_oneof![
                    "\\PC{0,40}",
                    "[0-9 .:@-]{0,30}",
                    prop::collection::vec(prop_oneof![
                        Just("alice@example.com"),
                        Just("4111 1111 1111 1111"),
                        Just("AKIA"),
                        Just("PassWord"),
                        Just("::"),
                        Just("10.0"),
                        Just(" "),
                        Just("é"),
                    ], 0..8).prop_map(|parts| parts.concat()),
                ],
                0..12,
            )
        ) {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            static GATE: std::sync::LazyLock<Gate> = std::sync::LazyLock::new(default_gate);
            assert_agrees(&GATE, &refs);
        }
    }
}
