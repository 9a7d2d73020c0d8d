//! Rewriting Arrow columns. A column with nothing to redact is passed on as is (no copy); one
//! with findings is rebuilt once, with only the changed values replaced.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, MapArray, StringArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use foldhash::HashMap;

use super::findings::Collector;
use super::json::{GateKind, body_gate};
use super::keys::KeyDecision;
use super::{Engine, NOT_ALLOWED, Outcome, Policy, SENSITIVE_KEY, Site};
use crate::batch::{Batch, Signal};
use crate::schema::col;

/// How a column is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Free text, scanned.
    Text,
    /// A log body: text, or JSON walked structurally.
    Body,
    /// JSON arrays of span events or links.
    Records,
    /// `map<string,string>` attributes.
    Map,
    /// Ids, times, enums, counts, schema urls: nothing personal.
    Keep,
}

/// The column whose value findings are counted under: the service, or for the audit trail
/// (which is about callers, not services) the caller.
fn owner_column(signal: Signal) -> &'static str {
    match signal {
        Signal::Audit => "principal",
        _ => col::SERVICE,
    }
}

fn role(signal: Signal, column: &str) -> Role {
    match (signal, column) {
        (_, "attributes" | "resource" | "scope_attributes") => Role::Map,
        (Signal::Logs, "body") => Role::Body,
        (Signal::Logs, "event_name") | (Signal::Spans, "name" | "status_message") => Role::Text,
        (Signal::Spans, "events" | "links") => Role::Records,
        // Alerts are built from redacted data; they pass the redactor again before storage so
        // that nothing reaches disk without it.
        (Signal::Alerts, "summary" | "rule_title") => Role::Text,
        (Signal::Alerts, "details") => Role::Body,
        // `url` is the sink's configured destination (origin only), not telemetry.
        (Signal::DeadLetters, "last_error") => Role::Text,
        (Signal::DeadLetters, "payload") => Role::Body,
        // An analyst's free text; the principal is an API key's configured name.
        (Signal::AlertActions, "comment") => Role::Text,
        // SQL an analyst ran may quote an address or an email in a filter.
        (Signal::Audit, "detail") => Role::Text,
        _ => Role::Keep,
    }
}

/// Distinct values gated once per map column of a batch; beyond this, values are gated each
/// time they occur.
const MAX_DISTINCT_VALUES: usize = 8192;

/// A change to one value of a string array.
enum Edit {
    Replace(String),
    Remove,
}

impl Engine {
    pub(super) fn redact_batch(
        &self,
        batch: Batch,
    ) -> Result<(Batch, super::Findings), ArrowError> {
        let signal = batch.signal();
        let records = batch.into_records();
        let schema = records.schema();
        let owner = owner_column(signal);
        let service = records
            .column_by_name(owner)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| ArrowError::SchemaError(format!("batch has no {owner} column")))?;
        let mut collector = Collector::default();
        let mut columns: Vec<ArrayRef> = records.columns().to_vec();
        for (i, field) in schema.fields().iter().enumerate() {
            let role = role(signal, field.name());
            if role == Role::Keep {
                continue;
            }
            // Read from `records` (which outlives the findings' borrowed service names);
            // write into `columns`.
            let column = records.column(i);
            let ctx = Ctx {
                engine: self,
                service,
                field: field.name(),
            };
            let rewritten: Option<ArrayRef> = match role {
                Role::Map => {
                    let map = column.as_map_opt().ok_or_else(|| {
                        ArrowError::SchemaError(format!("{} is not a map", field.name()))
                    })?;
                    ctx.map(map, &mut collector)?
                        .map(|a| Arc::new(a) as ArrayRef)
                }
                Role::Text | Role::Body | Role::Records => {
                    let strings = column.as_string_opt::<i32>().ok_or_else(|| {
                        ArrowError::SchemaError(format!("{} is not a string", field.name()))
                    })?;
                    ctx.strings(strings, role, &mut collector)
                        .map(|a| Arc::new(a) as ArrayRef)
                }
                Role::Keep => None,
            };
            if let (Some(new), Some(slot)) = (rewritten, columns.get_mut(i)) {
                *slot = new;
            }
        }
        let findings = collector.finish(|e| self.entities.get(self.entity_index(e)));
        let records = RecordBatch::try_new(schema.clone(), columns)?;
        let batch =
            Batch::new(signal, records).map_err(|e| ArrowError::SchemaError(e.to_string()))?;
        Ok((batch, findings))
    }
}

/// One column of one batch being redacted.
struct Ctx<'a> {
    engine: &'a Engine,
    service: &'a StringArray,
    field: &'a str,
}

impl<'a> Ctx<'a> {
    fn site<'c>(&self, collector: &'c mut Collector<'a>, row: usize) -> (Site<'c, 'a>, &'a Policy) {
        let service = self.service_of(row);
        let site = Site {
            collector,
            service,
            field: self.field,
            row,
        };
        (site, self.engine.policy(service))
    }

    fn service_of(&self, row: usize) -> &'a str {
        if self.service.is_valid(row) {
            self.service.value(row)
        } else {
            ""
        }
    }

    fn strings(
        &self,
        array: &'a StringArray,
        role: Role,
        collector: &mut Collector<'a>,
    ) -> Option<StringArray> {
        let candidates = self.candidates(array, role);
        let mut edits: Vec<(usize, Edit)> = Vec::new();
        for (row, &candidate) in candidates.iter().enumerate() {
            if !candidate {
                continue;
            }
            let text = array.value(row);
            let (mut site, policy) = self.site(collector, row);
            let redacted = match role {
                Role::Body => self.engine.redact_body_candidate(text, policy, &mut site),
                Role::Records => self
                    .engine
                    .redact_records_candidate(text, policy, &mut site),
                _ => self.engine.redact_field_candidate(text, policy, &mut site),
            };
            if let Some(r) = redacted {
                edits.push((row, Edit::Replace(r)));
            }
        }
        (!edits.is_empty()).then(|| apply_edits(array, 0..array.len(), &edits))
    }

    /// Per row, whether the value passes its gate. The whole column goes through the gate
    /// together, several strings at a time; null and empty values never pass.
    fn candidates(&self, array: &StringArray, role: Role) -> Vec<bool> {
        let mut candidates = vec![false; array.len()];
        let mut text: (Vec<usize>, Vec<&str>) = Default::default();
        let mut json: (Vec<usize>, Vec<&str>) = Default::default();
        for (row, value) in array.iter().enumerate() {
            let Some(value) = value.filter(|v| !v.is_empty()) else {
                continue;
            };
            let kind = match role {
                Role::Body => body_gate(value),
                Role::Records => GateKind::Json,
                _ => GateKind::Text,
            };
            let group = match kind {
                GateKind::Text => &mut text,
                GateKind::Json => &mut json,
                GateKind::Walk => {
                    if let Some(c) = candidates.get_mut(row) {
                        *c = true;
                    }
                    continue;
                }
            };
            group.0.push(row);
            group.1.push(value);
        }
        for ((rows, values), is_json) in [(text, false), (json, true)] {
            let passed = self.engine.scanner.candidates(&values, is_json);
            for (row, passed) in rows.into_iter().zip(passed) {
                if let Some(c) = candidates.get_mut(row) {
                    *c = passed;
                }
            }
        }
        candidates
    }

    fn map(
        &self,
        map: &'a MapArray,
        collector: &mut Collector<'a>,
    ) -> Result<Option<MapArray>, ArrowError> {
        let keys = map
            .keys()
            .as_string_opt::<i32>()
            .ok_or_else(|| ArrowError::SchemaError("map keys are not strings".into()))?;
        let values = map
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| ArrowError::SchemaError("map values are not strings".into()))?;
        let offsets = map.value_offsets();
        let rows = || {
            (0..map.len()).filter_map(|row| {
                let (&start, &end) = offsets.get(row).zip(offsets.get(row + 1))?;
                Some((row, start.max(0) as usize..end.max(0) as usize))
            })
        };
        // Key decisions repeat across rows: decide each (policy, key) once per batch.
        let mut decisions: HashMap<(*const Policy, &str), KeyDecision> = HashMap::default();
        // Values repeat too (every row of a resource carries the same resource attributes,
        // methods and routes recur): each distinct kept value goes through the gate once, and
        // all of them together, several at a time.
        let mut distinct: HashMap<&str, usize> = HashMap::default();
        let mut to_gate: Vec<&str> = Vec::new();
        // Per entry: its key decision, and for a kept value its place in `to_gate`.
        let mut plan: Vec<(KeyDecision, Option<usize>)> = Vec::with_capacity(keys.len());
        let first = offsets.first().map_or(0, |&o| o.max(0) as usize);
        // The row before, when its entries were planned: a row with the same entries under
        // the same policy (each row of one resource) copies its plan instead of hashing again.
        let mut previous: Option<(std::ops::Range<usize>, *const Policy)> = None;
        for (row, entries) in rows() {
            let policy = self.engine.policy(self.service_of(row));
            let policy_ptr = std::ptr::from_ref(policy);
            if let Some((before, _)) = previous.as_ref().filter(|(before, p)| {
                *p == policy_ptr && same_entries(keys, values, before.clone(), entries.clone())
            }) && plan.len() == entries.start - first
            {
                plan.extend_from_within(before.start - first..before.end - first);
                continue;
            }
            // Rows of one kind of record mostly have their keys in the same order: a key equal
            // to the one at the same place in the row before takes its decision.
            let before = previous
                .replace((entries.clone(), policy_ptr))
                .filter(|(_, p)| *p == policy_ptr)
                .map(|(before, _)| before);
            for (place, entry) in entries.enumerate() {
                let key = keys.value(entry);
                let same_place = before.as_ref().and_then(|b| {
                    let e = b.start + place;
                    (e < b.end && keys.value(e) == key)
                        .then(|| plan.get(e - first))
                        .flatten()
                });
                let decision = match same_place {
                    Some(&(decision, _)) => decision,
                    None => *decisions
                        .entry((policy_ptr, key))
                        .or_insert_with(|| policy.keys.decide(key)),
                };
                let gated = match (decision, value_at(values, entry)) {
                    (KeyDecision::Keep, Some(v)) => Some(match distinct.get(v) {
                        Some(&at) => at,
                        None => {
                            if distinct.len() < MAX_DISTINCT_VALUES {
                                distinct.insert(v, to_gate.len());
                            }
                            to_gate.push(v);
                            to_gate.len() - 1
                        }
                    }),
                    _ => None,
                };
                plan.push((decision, gated));
            }
        }
        let passed = self.engine.scanner.candidates(&to_gate, false);
        let mut edits: Vec<(usize, Edit)> = Vec::new();
        for (row, entries) in rows() {
            let (mut site, policy) = self.site(collector, row);
            for entry in entries {
                let Some(&(decision, gated)) = plan.get(entry - first) else {
                    continue;
                };
                let value = value_at(values, entry);
                let edit = match (decision, value) {
                    (KeyDecision::NotAllowed, _) => {
                        site.record(NOT_ALLOWED);
                        Some(Edit::Remove)
                    }
                    (_, None) => None,
                    (KeyDecision::Deny, Some(v)) => {
                        site.record(SENSITIVE_KEY);
                        Some(
                            self.engine
                                .key_replacement(policy, v, &mut site)
                                .map_or(Edit::Remove, Edit::Replace),
                        )
                    }
                    (KeyDecision::Keep, Some(v)) => {
                        // A value the plan has no gate answer for is scanned (never skipped).
                        let candidate = gated.and_then(|i| passed.get(i)).is_none_or(|&p| p);
                        if candidate {
                            match self.engine.redact_text(v, policy, &mut site) {
                                None => None,
                                Some(Outcome::Replaced(r)) => Some(Edit::Replace(r)),
                                Some(Outcome::Drop(_)) => Some(Edit::Remove),
                            }
                        } else {
                            None
                        }
                    }
                };
                if let Some(edit) = edit {
                    edits.push((entry, edit));
                }
            }
        }
        if edits.is_empty() {
            return Ok(None);
        }
        rebuild_map(map, keys, values, &edits).map(Some)
    }
}

/// Whether map entries `a` and `b` hold the same keys and values in the same order.
fn same_entries(
    keys: &StringArray,
    values: &StringArray,
    a: std::ops::Range<usize>,
    b: std::ops::Range<usize>,
) -> bool {
    a.len() == b.len() && same_strings(keys, a.clone(), b.clone()) && same_strings(values, a, b)
}

/// Whether `array[a]` and `array[b]` (ranges of equal length) are equal value by value: the
/// same lengths, nulls and bytes. (A null may still cover bytes in an Arrow array, so equal
/// bytes alone do not make equal values.)
fn same_strings(array: &StringArray, a: std::ops::Range<usize>, b: std::ops::Range<usize>) -> bool {
    let offsets = array.value_offsets();
    let (Some(oa), Some(ob)) = (offsets.get(a.start..=a.end), offsets.get(b.start..=b.end)) else {
        return false;
    };
    let span = |o: &[i32]| {
        let (start, end) = (o.first().copied()?, o.last().copied()?);
        array
            .value_data()
            .get(start.max(0) as usize..end.max(0) as usize)
    };
    let lengths = oa
        .windows(2)
        .zip(ob.windows(2))
        .all(|pair| matches!(pair, ([s1, e1], [s2, e2]) if e1 - s1 == e2 - s2));
    let nulls = match array.nulls() {
        None => true,
        Some(n) => a.zip(b).all(|(i, j)| n.is_valid(i) == n.is_valid(j)),
    };
    nulls && lengths && span(oa).is_some_and(|x| Some(x) == span(ob))
}

/// The value of a map entry, unless it is null or empty.
fn value_at(values: &StringArray, entry: usize) -> Option<&str> {
    values
        .is_valid(entry)
        .then(|| values.value(entry))
        .filter(|v| !v.is_empty())
}

/// `array[range]` with `edits` (sorted by index) applied.
fn apply_edits(
    array: &StringArray,
    range: std::ops::Range<usize>,
    edits: &[(usize, Edit)],
) -> StringArray {
    let mut pending = edits.iter().peekable();
    let mut out = Vec::with_capacity(range.len());
    for i in range {
        let edit = match pending.peek() {
            Some((at, edit)) if *at == i => {
                pending.next();
                Some(edit)
            }
            _ => None,
        };
        match edit {
            Some(Edit::Replace(s)) => out.push(Some(s.as_str())),
            Some(Edit::Remove) => {}
            None => out.push(array.is_valid(i).then(|| array.value(i))),
        }
    }
    StringArray::from(out)
}

fn rebuild_map(
    map: &MapArray,
    keys: &StringArray,
    values: &StringArray,
    edits: &[(usize, Edit)],
) -> Result<MapArray, ArrowError> {
    let DataType::Map(entries_field, sorted) = map.data_type() else {
        return Err(ArrowError::SchemaError("not a map".into()));
    };
    let DataType::Struct(entry_fields) = entries_field.data_type() else {
        return Err(ArrowError::SchemaError(
            "map entries are not a struct".into(),
        ));
    };
    let offsets = map.value_offsets();
    let first = offsets.first().copied().unwrap_or(0).max(0) as usize;
    let last = offsets.last().copied().unwrap_or(0).max(0) as usize;
    // Keys only lose entries; values are also replaced. Both are sorted like `edits`.
    let key_edits: Vec<(usize, Edit)> = edits
        .iter()
        .filter(|(_, e)| matches!(e, Edit::Remove))
        .map(|(i, _)| (*i, Edit::Remove))
        .collect();
    let mut removed = key_edits.iter().map(|(i, _)| *i).peekable();
    let mut lengths = Vec::with_capacity(map.len());
    for w in offsets.windows(2) {
        let (s, e) = match w {
            [s, e] => ((*s).max(0) as usize, (*e).max(0) as usize),
            _ => (0, 0),
        };
        let mut kept = e - s;
        while removed.next_if(|&i| i < e).is_some() {
            kept -= 1;
        }
        lengths.push(kept);
    }
    let new_values = apply_edits(values, first..last, edits);
    // Most edits replace values (a hashed address on every row): the keys are then kept as
    // they are, without a copy.
    let new_keys = if key_edits.is_empty() {
        keys.slice(first, last - first)
    } else {
        apply_edits(keys, first..last, &key_edits)
    };
    let entries = StructArray::try_new(
        entry_fields.clone(),
        vec![
            Arc::new(new_keys) as ArrayRef,
            Arc::new(new_values) as ArrayRef,
        ],
        None,
    )?;
    MapArray::try_new(
        entries_field.clone(),
        OffsetBuffer::from_lengths(lengths),
        entries,
        map.nulls().cloned(),
        *sorted,
    )
}
