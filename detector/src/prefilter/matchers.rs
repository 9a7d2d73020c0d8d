//! rsigma's compiled matchers evaluated over whole columns. Every function here returns
//! exactly the rows (among those asked about) where rsigma's own per-row evaluation would
//! say yes: substring and equality tests run as Arrow string kernels on the raw or
//! lowercased column, automata and regexes run value by value, and any other matcher is
//! asked through rsigma itself, row by row.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, Input, MatchKind};
use arrow::array::{Array, BooleanArray, BooleanBufferBuilder, Datum, Scalar, StringArray};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::cmp::eq;
use arrow::compute::kernels::comparison::{contains, ends_with, starts_with};
use arrow::error::ArrowError;
use rsigma_eval::matcher::GroupMode;
use rsigma_eval::{CompiledDetectionItem, CompiledMatcher, EventValue};

use super::columns::{BatchColumns, FieldColumn, Ints, Text};
use super::gates::RegexGates;
use crate::fields::BatchEvents;

/// How a matcher sees a string, mirroring rsigma's three entry points.
#[derive(Clone, Copy)]
enum Mode<'e, 'a> {
    /// `CompiledMatcher::matches` on a field's value of the row.
    Value(&'e BatchEvents<'a>),
    /// `matches_str`, for keyword selections: non-string matchers never match.
    Keyword,
    /// `matches_pre_lowered`, inside a case-insensitive group: the haystack is lowercased
    /// and only case-insensitive string matchers match.
    Lowered,
}

/// Rows of `rows` where detection item `item`, on the field with column `column` (`None`
/// for a field-less keyword item), holds.
pub(super) fn item(
    item: &CompiledDetectionItem,
    column: Option<&FieldColumn<'_>>,
    rows: &BooleanBuffer,
    batch: &BatchColumns<'_, '_>,
) -> BooleanBuffer {
    let Some(column) = column else {
        return match item.exists {
            Some(expect) if !expect => rows.clone(),
            Some(_) => BooleanBuffer::new_unset(rows.len()),
            None => keywords(&item.matcher, rows, batch),
        };
    };
    match column {
        FieldColumn::Text { text, present } => text_item(item, text, present.as_ref(), rows, batch),
        FieldColumn::Int(ints) => int_item(item, ints, rows, batch.events()),
        FieldColumn::Mixed => rows.clone(),
    }
}

fn text_item(
    item: &CompiledDetectionItem,
    text: &Text,
    present: Option<&BooleanBuffer>,
    rows: &BooleanBuffer,
    batch: &BatchColumns<'_, '_>,
) -> BooleanBuffer {
    let strings = &text.valid() & rows;
    if let Some(expect) = item.exists {
        return if expect { strings } else { rows & &!&strings };
    }
    let events = batch.events();
    let mut out = values(
        &item.matcher,
        text,
        &strings,
        Mode::Value(events),
        batch.gates(),
    );
    let present_rows = present.map_or_else(|| rows.clone(), |p| p & rows);
    let nulls = &present_rows & &!&strings;
    if nulls.has_true() {
        out |= &each_row(&nulls, |row| {
            item.matcher.matches(&EventValue::Null, &events.row(row))
        });
    }
    if matches!(item.matcher, CompiledMatcher::Null) {
        out |= &(rows & &!&present_rows);
    }
    out
}

fn int_item(
    item: &CompiledDetectionItem,
    ints: &Ints<'_>,
    rows: &BooleanBuffer,
    events: &BatchEvents<'_>,
) -> BooleanBuffer {
    each_row(rows, |row| {
        let value = ints.value(row);
        match item.exists {
            Some(expect) => value.is_null() != expect,
            None => item.matcher.matches(&value, &events.row(row)),
        }
    })
}

/// Rows of `rows` where keyword matcher `matcher` matches a keyword column or an attribute
/// value (`CompiledMatcher::matches_keyword`).
pub(super) fn keywords(
    matcher: &CompiledMatcher,
    rows: &BooleanBuffer,
    batch: &BatchColumns<'_, '_>,
) -> BooleanBuffer {
    let searched = batch.keywords();
    let mut out = BooleanBuffer::new_unset(rows.len());
    for column in &searched.columns {
        let left = rows & &!&out;
        let strings = &column.valid() & &left;
        out |= &values(matcher, column, &strings, Mode::Keyword, batch.gates());
    }
    let left = rows & &!&out;
    if left.has_true() {
        let entries = searched.entries_of(&left);
        let hits = values(
            matcher,
            &searched.attribute_values,
            &entries,
            Mode::Keyword,
            batch.gates(),
        );
        out |= &searched.rows_with_any(&hits, &left);
    }
    out
}

/// Positions of `rows` (all holding a string in `text`) where `matcher` matches.
fn values(
    matcher: &CompiledMatcher,
    text: &Text,
    rows: &BooleanBuffer,
    mode: Mode<'_, '_>,
    gates: &RegexGates,
) -> BooleanBuffer {
    if !rows.has_true() {
        return rows.clone();
    }
    let lowered = matches!(mode, Mode::Lowered);
    let value = matches!(mode, Mode::Value(_));
    match matcher {
        CompiledMatcher::Exact {
            value,
            case_insensitive,
        } => kernel(Op::Eq, value, text, *case_insensitive, rows, mode),
        CompiledMatcher::Contains {
            value,
            case_insensitive,
        } => kernel(Op::Contains, value, text, *case_insensitive, rows, mode),
        CompiledMatcher::StartsWith {
            value,
            case_insensitive,
        } => kernel(Op::StartsWith, value, text, *case_insensitive, rows, mode),
        CompiledMatcher::EndsWith {
            value,
            case_insensitive,
        } => kernel(Op::EndsWith, value, text, *case_insensitive, rows, mode),
        CompiledMatcher::Regex(re) => {
            let rows = gated(gates.regex(re.as_str()), gates, text, lowered, rows);
            each_value(haystack(text, lowered), &rows, |s| re.is_match(s))
        }
        CompiledMatcher::AhoCorasickSet {
            automaton,
            case_insensitive,
            needles,
        } => match folded(*case_insensitive, mode) {
            Some(fold) => {
                let rows = text.narrowed(needles.iter().map(String::as_str), rows);
                automaton_matches(automaton, haystack(text, fold), &rows)
            }
            None => BooleanBuffer::new_unset(rows.len()),
        },
        CompiledMatcher::NumericEq(n) if value => {
            numbers(text, rows, |v| (v - n).abs() < f64::EPSILON)
        }
        CompiledMatcher::NumericGt(n) if value => numbers(text, rows, |v| v > *n),
        CompiledMatcher::NumericGte(n) if value => numbers(text, rows, |v| v >= *n),
        CompiledMatcher::NumericLt(n) if value => numbers(text, rows, |v| v < *n),
        CompiledMatcher::NumericLte(n) if value => numbers(text, rows, |v| v <= *n),
        CompiledMatcher::RegexSetMatch { set, mode: group } => {
            let rows = gated(gates.set(set.patterns()), gates, text, lowered, rows);
            each_value(haystack(text, lowered), &rows, |s| match group {
                GroupMode::Any => set.is_match(s),
                GroupMode::All => set.matches(s).iter().count() == set.len(),
            })
        }
        CompiledMatcher::Not(inner) => rows & &!&values(inner, text, rows, mode, gates),
        CompiledMatcher::AnyOf(children) => any(children, text, rows, mode, gates),
        CompiledMatcher::AllOf(children) => all(children, text, rows, mode, gates),
        CompiledMatcher::CaseInsensitiveGroup { children, mode } => match mode {
            GroupMode::Any => any(children, text, rows, Mode::Lowered, gates),
            GroupMode::All => all(children, text, rows, Mode::Lowered, gates),
        },
        other => match mode {
            Mode::Value(events) => {
                let raw = text.raw();
                each_row(rows, |row| {
                    let value = EventValue::Str(Cow::Borrowed(raw.value(row)));
                    other.matches(&value, &events.row(row))
                })
            }
            Mode::Keyword | Mode::Lowered => BooleanBuffer::new_unset(rows.len()),
        },
    }
}

fn any(
    children: &[CompiledMatcher],
    text: &Text,
    rows: &BooleanBuffer,
    mode: Mode<'_, '_>,
    gates: &RegexGates,
) -> BooleanBuffer {
    let mut out = BooleanBuffer::new_unset(rows.len());
    let mut left = rows.clone();
    for child in children {
        if !left.has_true() {
            break;
        }
        let hits = values(child, text, &left, mode, gates);
        left = &left & &!&hits;
        out |= &hits;
    }
    out
}

fn all(
    children: &[CompiledMatcher],
    text: &Text,
    rows: &BooleanBuffer,
    mode: Mode<'_, '_>,
    gates: &RegexGates,
) -> BooleanBuffer {
    let mut left = rows.clone();
    for child in children {
        if !left.has_true() {
            break;
        }
        left = values(child, text, &left, mode, gates);
    }
    left
}

/// A numeric comparison of the values that parse as numbers (others never match).
fn numbers(text: &Text, rows: &BooleanBuffer, test: impl Fn(f64) -> bool) -> BooleanBuffer {
    let numbers = text.numbers();
    each_row(rows, |i| {
        numbers.get(i).copied().flatten().is_some_and(&test)
    })
}

/// Positions of `rows` whose value the automaton finds a needle in. With many positions asked
/// about, the automaton runs once over the column's bytes (all values back to back) rather
/// than once per value.
fn automaton_matches(
    automaton: &AhoCorasick,
    haystack: &StringArray,
    rows: &BooleanBuffer,
) -> BooleanBuffer {
    let whole_column = automaton.match_kind() == MatchKind::Standard
        && automaton.min_pattern_len() > 0
        && rows.count_set_bits() * SPARSE >= rows.len();
    if !whole_column {
        return each_value(haystack, rows, |s| automaton.is_match(s));
    }
    let offsets = haystack.value_offsets();
    let bytes = haystack.value_data();
    let bound = |i: usize| offsets.get(i).map_or(0, |&o| o as usize);
    let end = bound(haystack.len());
    let mut out = BooleanBufferBuilder::new(rows.len());
    out.append_n(rows.len(), false);
    let mut value = 0;
    let mut from = bound(0);
    // Standard semantics report the match ending first: when it runs past the end of the value
    // it starts in, no match lies within that value, so the search moves on to the next one.
    while from < end
        && let Some(found) = automaton.find(Input::new(bytes).span(from..end))
    {
        while bound(value + 1) <= found.start() {
            value += 1;
        }
        let value_end = bound(value + 1);
        if found.end() <= value_end && rows.value(value) {
            out.set_bit(value, true);
        }
        from = value_end;
    }
    out.finish()
}

/// The positions of `rows` a regex can match in: those whose value holds one of its gate's
/// literals, or all of them without a gate.
fn gated(
    gate: Option<usize>,
    gates: &RegexGates,
    text: &Text,
    lowered: bool,
    rows: &BooleanBuffer,
) -> BooleanBuffer {
    match gate.and_then(|g| text.gate_hits(lowered, gates, g)) {
        Some(hits) => hits & rows,
        None => rows.clone(),
    }
}

/// Whether a string matcher with `case_insensitive` reads the lowercased text in `mode`;
/// `None` when it cannot match at all (a case-sensitive matcher in a lowercased group).
fn folded(case_insensitive: bool, mode: Mode<'_, '_>) -> Option<bool> {
    match mode {
        Mode::Lowered => case_insensitive.then_some(true),
        Mode::Value(_) | Mode::Keyword => Some(case_insensitive),
    }
}

fn haystack<'t>(text: &'t Text<'_>, lowered: bool) -> &'t StringArray {
    if lowered { text.lowered() } else { text.raw() }
}

#[derive(Clone, Copy)]
enum Op {
    Eq,
    Contains,
    StartsWith,
    EndsWith,
}

impl Op {
    fn test(self, haystack: &str, needle: &str) -> bool {
        match self {
            Op::Eq => haystack == needle,
            Op::Contains => haystack.contains(needle),
            Op::StartsWith => haystack.starts_with(needle),
            Op::EndsWith => haystack.ends_with(needle),
        }
    }

    fn kernel(self, haystack: &dyn Datum, needle: &dyn Datum) -> Result<BooleanArray, ArrowError> {
        match self {
            Op::Eq => eq(haystack, needle),
            Op::Contains => contains(haystack, needle),
            Op::StartsWith => starts_with(haystack, needle),
            Op::EndsWith => ends_with(haystack, needle),
        }
    }
}

/// Below one row in this many, testing the asked rows one by one beats a kernel over the
/// whole column.
const SPARSE: usize = 8;

/// A string comparison against `needle` (already lowercased by rsigma when case-insensitive).
fn kernel(
    op: Op,
    needle: &str,
    text: &Text,
    case_insensitive: bool,
    rows: &BooleanBuffer,
    mode: Mode<'_, '_>,
) -> BooleanBuffer {
    let Some(fold) = folded(case_insensitive, mode) else {
        return BooleanBuffer::new_unset(rows.len());
    };
    let rows = &text.narrowed([needle], rows);
    if !rows.has_true() {
        return rows.clone();
    }
    let haystack = haystack(text, fold);
    if rows.count_set_bits() * SPARSE >= rows.len() {
        let needle = Scalar::new(StringArray::from_iter_values([needle]));
        if let Ok(result) = op.kernel(haystack, &needle) {
            return &true_bits(&result) & rows;
        }
    }
    each_value(haystack, rows, |s| op.test(s, needle))
}

fn true_bits(result: &BooleanArray) -> BooleanBuffer {
    match result.nulls() {
        Some(nulls) => result.values() & nulls.inner(),
        None => result.values().clone(),
    }
}

/// `test` on the value of every position of `rows`.
fn each_value(
    haystack: &StringArray,
    rows: &BooleanBuffer,
    test: impl Fn(&str) -> bool,
) -> BooleanBuffer {
    each_row(rows, |i| test(haystack.value(i)))
}

/// `test` on every position of `rows`; false elsewhere.
pub(super) fn each_row(rows: &BooleanBuffer, mut test: impl FnMut(usize) -> bool) -> BooleanBuffer {
    let mut out = BooleanBufferBuilder::new(rows.len());
    out.append_n(rows.len(), false);
    for i in rows.set_indices() {
        if test(i) {
            out.set_bit(i, true);
        }
    }
    out.finish()
}
