//! One batch's Sigma fields as whole columns: each field name a rule reads becomes, once per
//! batch, the column of values `RowEvent::get_field` would return row by row. Attribute keys
//! are located with one pass over each map column rather than one scan per key and row.

use std::cell::OnceCell;

use arrow::array::{Array, BooleanBufferBuilder, Int32Array, Int64Array, StringArray};
use arrow::buffer::{BooleanBuffer, Buffer};
use rsigma_eval::EventValue;
use rsigma_eval::matcher::ascii_lowercase_cow;

use super::gates::RegexGates;
use super::needles::{NeedleGate, NeedleGates};
use crate::fields::{BatchEvents, Bound, FieldRef};
use crate::view::{BatchView, MapColumn};

/// Strings, one per row (or per map entry), with their lowercased form made on first use.
pub(crate) struct Text<'g> {
    values: StringArray,
    lowered: OnceCell<StringArray>,
    numbers: OnceCell<Vec<Option<f64>>>,
    /// Per regex gate, the raw and the lowercased values holding one of its literals.
    gate_hits: [OnceCell<Vec<BooleanBuffer>>; 2],
    /// The needles of the substring tests on these values, and the values holding one.
    needles: Option<&'g NeedleGate>,
    needle_hits: OnceCell<BooleanBuffer>,
}

impl<'g> Text<'g> {
    /// `needles`: the gate of the tests asked about these values.
    pub(crate) fn new(values: StringArray, needles: Option<&'g NeedleGate>) -> Self {
        Self {
            values,
            lowered: OnceCell::new(),
            numbers: OnceCell::new(),
            gate_hits: [OnceCell::new(), OnceCell::new()],
            needles,
            needle_hits: OnceCell::new(),
        }
    }

    /// The positions of `rows` where a substring-shaped test with `needles` may match: the
    /// values holding one of them when the needle gate covers them all, else `rows` itself.
    pub(crate) fn narrowed<'n>(
        &self,
        needles: impl IntoIterator<Item = &'n str>,
        rows: &BooleanBuffer,
    ) -> BooleanBuffer {
        match self.needles {
            Some(gate) if gate.covers(needles) => {
                let hits = self.needle_hits.get_or_init(|| gate.scan(self.lowered()));
                hits & rows
            }
            _ => rows.clone(),
        }
    }

    /// The values (lowercased or not) where regex gate `gate` passes; computed for every gate
    /// at once on first use.
    pub(crate) fn gate_hits(
        &self,
        lowered: bool,
        gates: &RegexGates,
        gate: usize,
    ) -> Option<&BooleanBuffer> {
        let cell = self.gate_hits.get(usize::from(lowered))?;
        let haystack = if lowered { self.lowered() } else { self.raw() };
        cell.get_or_init(|| gates.scan(haystack)).get(gate)
    }

    /// The values as they are.
    pub(crate) fn raw(&self) -> &StringArray {
        &self.values
    }

    /// The values lowercased exactly as rsigma lowercases a haystack (`ascii_lowercase_cow`:
    /// ASCII folding, full Unicode lowercasing for other text).
    pub(crate) fn lowered(&self) -> &StringArray {
        self.lowered.get_or_init(|| lowercase(&self.values))
    }

    /// The values parsed as numbers, as rsigma's numeric matchers parse a string
    /// (`str::parse::<f64>`). Integers, the common case (status codes, sizes), take the
    /// cheaper integer parse: both round the same exact value to the nearest `f64`. Zero is
    /// left to the float parse, which keeps the sign of `-0`.
    pub(crate) fn numbers(&self) -> &[Option<f64>] {
        self.numbers.get_or_init(|| {
            self.values
                .iter()
                .map(|v| {
                    v.and_then(|s| match s.parse::<i64>() {
                        Ok(int) if int != 0 => Some(int as f64),
                        _ => s.parse::<f64>().ok(),
                    })
                })
                .collect()
        })
    }

    /// Positions holding a string.
    pub(crate) fn valid(&self) -> BooleanBuffer {
        validity(&self.values)
    }
}

fn validity(array: &dyn Array) -> BooleanBuffer {
    match array.logical_nulls() {
        Some(nulls) => nulls.inner().clone(),
        None => BooleanBuffer::new_set(array.len()),
    }
}

/// ASCII text (the common case) is folded in one pass over the value bytes, keeping the
/// offsets; anything else value by value.
pub(crate) fn lowercase(values: &StringArray) -> StringArray {
    let bytes = values.value_data();
    if bytes.is_ascii() {
        let folded = Buffer::from_vec(bytes.to_ascii_lowercase());
        if let Ok(array) =
            StringArray::try_new(values.offsets().clone(), folded, values.nulls().cloned())
        {
            return array;
        }
    }
    values.iter().map(|v| v.map(ascii_lowercase_cow)).collect()
}

/// A field's values over the batch's rows.
pub(crate) enum FieldColumn<'a> {
    /// Strings: `present` marks rows where the field exists (its value may still be null, for a
    /// null cell of a text column); `None` when every row has it.
    Text {
        text: Box<Text<'a>>,
        present: Option<BooleanBuffer>,
    },
    /// An integer column (or the event time): rules see numbers.
    Int(Ints<'a>),
    /// Integers behind attribute targets, a mix no single column holds: not tested by column.
    Mixed,
}

/// The integer sources a field can bind to.
pub(crate) enum Ints<'a> {
    Time(&'a BatchView<'a>),
    Int64(&'a Int64Array),
    Int32(&'a Int32Array),
}

impl<'a> Ints<'a> {
    /// The value rules see in `row`.
    pub(crate) fn value(&self, row: usize) -> EventValue<'a> {
        match self {
            Ints::Time(view) => EventValue::Int(view.time_ns(row)),
            Ints::Int64(c) if c.is_valid(row) => EventValue::Int(c.value(row)),
            Ints::Int32(c) if c.is_valid(row) => EventValue::Int(i64::from(c.value(row))),
            Ints::Int64(_) | Ints::Int32(_) => EventValue::Null,
        }
    }
}

/// Attribute (or resource) keys the rules read, looked up by length first so most map
/// entries cost one comparison of lengths.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    by_len: Vec<Vec<(String, usize)>>,
    count: usize,
}

impl KeySet {
    pub(crate) fn insert(&mut self, key: &str) {
        if self.slot(key).is_some() {
            return;
        }
        if self.by_len.len() <= key.len() {
            self.by_len.resize_with(key.len() + 1, Vec::new);
        }
        if let Some(bucket) = self.by_len.get_mut(key.len()) {
            bucket.push((key.to_owned(), self.count));
            self.count += 1;
        }
    }

    fn slot(&self, key: &str) -> Option<usize> {
        self.by_len
            .get(key.len())?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, slot)| *slot)
    }
}

/// For every key of a [`KeySet`] some row has, and every row, the row's first entry with that
/// key: what `MapColumn::get` finds. Rules declare many keys a batch never holds; only the
/// keys present get a column of positions.
struct KeyPositions {
    rows: usize,
    /// Per slot, the start in `first` of its positions; `None` when no row has the key.
    start: Vec<Option<usize>>,
    /// Per present key, `rows` positions: the entry index plus one, zero when the row lacks
    /// the key.
    first: Vec<u32>,
}

impl KeyPositions {
    fn new(map: &MapColumn<'_>, keys: &KeySet, rows: usize) -> Self {
        let mut start = vec![None; keys.count];
        let mut first = Vec::new();
        let names = map.keys();
        for row in 0..rows {
            for entry in map.range(row) {
                let Some(slot) = keys.slot(names.value(entry)) else {
                    continue;
                };
                let Some(block) = start.get_mut(slot) else {
                    continue;
                };
                let base = *block.get_or_insert_with(|| {
                    first.resize(first.len() + rows, 0);
                    first.len() - rows
                });
                let position = u32::try_from(entry + 1).unwrap_or(u32::MAX);
                if let Some(cell) = first.get_mut(base + row)
                    && *cell == 0
                {
                    *cell = position;
                }
            }
        }
        Self { rows, start, first }
    }

    fn seen(&self, slot: usize) -> bool {
        matches!(self.start.get(slot), Some(Some(_)))
    }

    fn entry(&self, slot: usize, row: usize) -> Option<usize> {
        let base = (*self.start.get(slot)?)?;
        match self.first.get(base + row) {
            Some(&position) if position > 0 && row < self.rows => Some(position as usize - 1),
            _ => None,
        }
    }
}

/// A map column with its key index, built on first use.
struct IndexedMap<'e, 'a> {
    map: &'e MapColumn<'a>,
    keys: &'e KeySet,
    rows: usize,
    positions: OnceCell<KeyPositions>,
}

impl<'e, 'a> IndexedMap<'e, 'a> {
    fn new(map: &'e MapColumn<'a>, keys: &'e KeySet, rows: usize) -> Self {
        Self {
            map,
            keys,
            rows,
            positions: OnceCell::new(),
        }
    }

    /// `key` located in this batch: through the index when the rules declared it.
    fn key<'k>(&self, key: &'k str) -> MapKey<'_, 'k> {
        match self.keys.slot(key) {
            Some(slot) => MapKey::Indexed {
                positions: self
                    .positions
                    .get_or_init(|| KeyPositions::new(self.map, self.keys, self.rows)),
                slot,
            },
            None => MapKey::Scanned(key),
        }
    }

    /// `map[key]` in `row`: the first entry with `key`, `None` if absent or its value is null.
    fn get(&self, row: usize, key: &MapKey<'_, '_>) -> Option<&'a str> {
        let entry = match key {
            MapKey::Indexed { positions, slot } => positions.entry(*slot, row)?,
            MapKey::Scanned(key) => return self.map.get(row, key),
        };
        let values = self.map.values();
        values.is_valid(entry).then(|| values.value(entry))
    }
}

impl MapKey<'_, '_> {
    /// Whether no row of the batch has the key.
    fn absent(&self) -> bool {
        match self {
            MapKey::Indexed { positions, slot } => !positions.seen(*slot),
            MapKey::Scanned(_) => false,
        }
    }
}

/// A key of a map column, ready for per-row lookups.
enum MapKey<'p, 'k> {
    Indexed {
        positions: &'p KeyPositions,
        slot: usize,
    },
    /// A key no rule declared (not expected): found by scanning each row's entries.
    Scanned(&'k str),
}

/// The fields rules read, resolved against one batch on first use.
pub(crate) struct BatchColumns<'e, 'a> {
    events: &'e BatchEvents<'a>,
    names: &'e [String],
    columns: Vec<OnceCell<FieldColumn<'e>>>,
    attributes: IndexedMap<'e, 'a>,
    resource: IndexedMap<'e, 'a>,
    keywords: OnceCell<Keywords<'e>>,
    gates: &'e RegexGates,
    needles: &'e NeedleGates,
}

/// What keyword selections search: the keyword columns, and every attribute value.
pub(crate) struct Keywords<'e> {
    pub(crate) columns: Vec<Text<'e>>,
    pub(crate) attribute_values: Text<'e>,
    /// The row of each attribute entry; [`NO_ROW`] for entries outside every row.
    entry_rows: Vec<u32>,
    /// The entries holding a value, of any row.
    every_row: OnceCell<BooleanBuffer>,
}

/// An attribute entry no row of the batch holds.
const NO_ROW: u32 = u32::MAX;

impl<'e> Keywords<'e> {
    fn new(
        columns: Vec<Text<'e>>,
        attribute_values: Text<'e>,
        attributes: &MapColumn<'_>,
        rows: usize,
    ) -> Self {
        let mut entry_rows = vec![NO_ROW; attribute_values.raw().len()];
        for row in 0..rows {
            let row_id = u32::try_from(row).unwrap_or(NO_ROW);
            for entry in attributes.range(row) {
                if let Some(slot) = entry_rows.get_mut(entry) {
                    *slot = row_id;
                }
            }
        }
        Self {
            columns,
            attribute_values,
            entry_rows,
            every_row: OnceCell::new(),
        }
    }

    fn row_of(&self, entry: usize) -> Option<usize> {
        match self.entry_rows.get(entry) {
            Some(&row) if row != NO_ROW => Some(row as usize),
            _ => None,
        }
    }

    /// The attribute entries, holding a value, of the rows in `rows`.
    pub(crate) fn entries_of(&self, rows: &BooleanBuffer) -> BooleanBuffer {
        let of = |rows: &BooleanBuffer| {
            let in_rows = BooleanBuffer::collect_bool(self.entry_rows.len(), |entry| {
                self.row_of(entry).is_some_and(|row| rows.value(row))
            });
            &in_rows & &self.attribute_values.valid()
        };
        // Most keyword selections are asked about every row.
        if rows.count_set_bits() == rows.len() {
            self.every_row.get_or_init(|| of(rows)).clone()
        } else {
            of(rows)
        }
    }

    /// The rows of `rows` with at least one entry in `entries`.
    pub(crate) fn rows_with_any(
        &self,
        entries: &BooleanBuffer,
        rows: &BooleanBuffer,
    ) -> BooleanBuffer {
        let mut out = BooleanBufferBuilder::new(rows.len());
        out.append_n(rows.len(), false);
        for entry in entries.set_indices() {
            if let Some(row) = self.row_of(entry)
                && rows.value(row)
            {
                out.set_bit(row, true);
            }
        }
        out.finish()
    }
}

/// Where one row's value of a field may come from, in order.
enum Source<'s, 'k, 'a> {
    Map(&'s IndexedMap<'s, 'a>, MapKey<'s, 'k>),
    Str(&'a StringArray),
    Signal(&'static str),
}

impl<'e, 'a> BatchColumns<'e, 'a> {
    /// `names[i]` is the Sigma field with id `i`.
    pub(crate) fn new(
        events: &'e BatchEvents<'a>,
        names: &'e [String],
        attribute_keys: &'e KeySet,
        resource_keys: &'e KeySet,
        gates: &'e RegexGates,
        needles: &'e NeedleGates,
    ) -> Self {
        let view = events.view();
        Self {
            events,
            names,
            columns: names.iter().map(|_| OnceCell::new()).collect(),
            attributes: IndexedMap::new(view.attributes(), attribute_keys, view.len()),
            resource: IndexedMap::new(view.resources(), resource_keys, view.len()),
            keywords: OnceCell::new(),
            gates,
            needles,
        }
    }

    pub(crate) fn events(&self) -> &'e BatchEvents<'a> {
        self.events
    }

    /// The literal gates of the rules' regexes.
    pub(crate) fn gates(&self) -> &'e RegexGates {
        self.gates
    }

    pub(crate) fn rows(&self) -> usize {
        self.events.view().len()
    }

    /// The column of field `id`; `None` for an unknown id.
    pub(crate) fn field(&self, id: usize) -> Option<&FieldColumn<'e>> {
        let name = self.names.get(id)?;
        let cell = self.columns.get(id)?;
        Some(cell.get_or_init(|| self.resolve(name, self.needles.field(id))))
    }

    pub(crate) fn keywords(&self) -> &Keywords<'e> {
        self.keywords.get_or_init(|| {
            let view = self.events.view();
            Keywords::new(
                self.events
                    .keyword_columns()
                    .iter()
                    .map(|c| Text::new((*c).clone(), self.needles.keywords()))
                    .collect(),
                Text::new(view.attributes().values().clone(), self.needles.keywords()),
                view.attributes(),
                view.len(),
            )
        })
    }

    fn resolve(&self, name: &str, needles: Option<&'e NeedleGate>) -> FieldColumn<'e> {
        let view = self.events.view();
        let bound = self.events.refs(name);
        let mut sources = Vec::new();
        for target in bound.iter() {
            let ints = match target {
                Bound::Attribute(key) => {
                    sources.push(Source::Map(&self.attributes, self.attributes.key(key)));
                    continue;
                }
                Bound::Resource(key) => {
                    sources.push(Source::Map(&self.resource, self.resource.key(key)));
                    continue;
                }
                Bound::Str(c) => {
                    sources.push(Source::Str(c));
                    break;
                }
                Bound::Signal => {
                    sources.push(Source::Signal(view.signal().as_str()));
                    break;
                }
                Bound::Time => Ints::Time(view),
                Bound::Int64(c) => Ints::Int64(c),
                Bound::Int32(c) => Ints::Int32(c),
            };
            return if sources.is_empty() {
                FieldColumn::Int(ints)
            } else {
                FieldColumn::Mixed
            };
        }
        self.text(&sources, needles)
    }

    fn text(
        &self,
        sources: &[Source<'_, '_, 'a>],
        needles: Option<&'e NeedleGate>,
    ) -> FieldColumn<'e> {
        if let [Source::Str(column)] = sources {
            return FieldColumn::Text {
                text: Box::new(Text::new((*column).clone(), needles)),
                present: None,
            };
        }
        let rows = self.rows();
        if sources
            .iter()
            .all(|s| matches!(s, Source::Map(_, key) if key.absent()))
        {
            return FieldColumn::Text {
                text: Box::new(Text::new(StringArray::new_null(rows), None)),
                present: Some(BooleanBuffer::new_unset(rows)),
            };
        }
        let mut values = arrow::array::StringBuilder::with_capacity(rows, rows * 16);
        let mut present = BooleanBufferBuilder::new(rows);
        for row in 0..rows {
            let value = Self::first_value(sources, row);
            match value {
                Some(Some(text)) => values.append_value(text),
                Some(None) | None => values.append_null(),
            }
            present.append(value.is_some());
        }
        FieldColumn::Text {
            text: Box::new(Text::new(values.finish(), needles)),
            present: Some(present.finish()),
        }
    }

    /// `None` when no source has a value in `row`; `Some(None)` for a null text cell.
    fn first_value(sources: &[Source<'_, '_, 'a>], row: usize) -> Option<Option<&'a str>> {
        sources.iter().find_map(|source| match source {
            Source::Map(map, key) => map.get(row, key).map(Some),
            Source::Str(c) => Some(c.is_valid(row).then(|| c.value(row))),
            Source::Signal(signal) => Some(Some(*signal)),
        })
    }
}

/// Collects the attribute and resource keys field `name` may read.
pub(crate) fn collect_keys(targets: &[FieldRef], attributes: &mut KeySet, resource: &mut KeySet) {
    for target in targets {
        match target {
            FieldRef::Attribute(key) => attributes.insert(key),
            FieldRef::Resource(key) => resource.insert(key),
            FieldRef::Column(_) | FieldRef::Signal => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn numbers(values: &[&str]) -> Vec<Option<f64>> {
        Text::new(StringArray::from(values.to_vec()), None)
            .numbers()
            .to_vec()
    }

    fn as_f64(values: &[&str]) -> Vec<Option<f64>> {
        values.iter().map(|s| s.parse::<f64>().ok()).collect()
    }

    #[test]
    fn numbers_parse_as_f64_parses() {
        let values = [
            "200",
            "-0",
            "+5",
            "007",
            "9007199254740993",
            "-9223372036854775808",
            "99999999999999999999",
            "1e3",
            "2.5",
            "0x10",
            " 5",
            "",
            "NaN",
            "inf",
        ];
        let got = numbers(&values);
        let want = as_f64(&values);
        for ((value, got), want) in values.iter().zip(&got).zip(&want) {
            assert_eq!(
                got.map(f64::to_bits),
                want.map(f64::to_bits),
                "{value:?}: {got:?} vs {want:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_integer_parses_as_f64_parses(int in any::<i64>(), sign in "[+]?", zeros in "0{0,3}") {
            let text = if int < 0 {
                format!("-{zeros}{}", int.unsigned_abs())
            } else {
                format!("{sign}{zeros}{int}")
            };
            let got = numbers(&[&text]);
            let want = as_f64(&[&text]);
            prop_assert_eq!(got[0].map(f64::to_bits), want[0].map(f64::to_bits));
        }
    }
}
