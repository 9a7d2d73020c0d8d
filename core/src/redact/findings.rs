//! What a batch had redacted, per service and entity: counted in metrics, and handed to the
//! detector so a credential in a service's telemetry can raise an alert.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder, TimestampNanosecondBuilder, UInt64Builder};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use foldhash::HashMap;

use super::config::Category;
use crate::batch::{Batch, Signal};
use crate::schema::redactions_schema;

/// One entity found in one service's records of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub service: String,
    /// Detector name (`email`, `aws_access_key_id`, …), `sensitive_key` for a denied
    /// attribute key, `not_allowed` for an attribute outside the allow-list.
    pub entity: Arc<str>,
    pub category: Category,
    /// Values redacted.
    pub count: u64,
    /// Column of the first occurrence (`body`, `attributes`, `events`, …).
    pub field: String,
    /// Row of the first occurrence in the batch, for evidence (trace id, time).
    pub first_row: usize,
}

/// Every finding of one batch, ordered by service then entity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings(Vec<Finding>);

impl Findings {
    pub fn iter(&self) -> impl Iterator<Item = &Finding> {
        self.0.iter()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Values of `entity` redacted, over all services.
    pub fn count(&self, entity: &str) -> u64 {
        self.0
            .iter()
            .filter(|f| &*f.entity == entity)
            .map(|f| f.count)
            .sum()
    }

    /// The `redactions` table rows of a batch of `signal` that arrived at `time_ns`: one per
    /// service and entity. Counts and names only; never a redacted value.
    pub fn to_batch(&self, signal: Signal, time_ns: i64) -> Result<Batch, ArrowError> {
        let n = self.0.len();
        let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut strings: [StringBuilder; 5] = std::array::from_fn(|_| StringBuilder::new());
        let mut count = UInt64Builder::with_capacity(n);
        for f in &self.0 {
            time.append_value(time_ns);
            let values = [
                f.service.as_str(),
                signal.as_str(),
                &f.entity,
                f.category.as_str(),
                &f.field,
            ];
            for (builder, value) in strings.iter_mut().zip(values) {
                builder.append_value(value);
            }
            count.append_value(f.count);
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(time.finish())];
        columns.extend(strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(count.finish()));
        let records = RecordBatch::try_new(redactions_schema(), columns)?;
        Batch::new(Signal::Redactions, records).map_err(|e| ArrowError::SchemaError(e.to_string()))
    }
}

/// An entity as the engine knows it.
#[derive(Debug, Clone)]
pub(super) struct Entity {
    pub name: Arc<str>,
    pub category: Category,
}

struct Tally<'a> {
    count: u64,
    field: &'a str,
    first_row: usize,
}

/// Collects findings while a batch is rewritten (borrowing service names from the batch), and
/// holds the batch's pseudonyms so each distinct value is hashed once. Dropped with the batch:
/// raw values never outlive it.
#[derive(Default)]
pub(super) struct Collector<'a> {
    tallies: HashMap<(&'a str, usize), Tally<'a>>,
    /// Per entity: value → pseudonym.
    pseudonyms: HashMap<usize, HashMap<Box<str>, Box<str>>>,
    remembered: usize,
}

/// Distinct pseudonyms remembered per batch; beyond this they are recomputed.
const MAX_REMEMBERED: usize = 4096;

impl<'a> Collector<'a> {
    pub fn pseudonym(&self, entity: usize, value: &str) -> Option<&str> {
        self.pseudonyms.get(&entity)?.get(value).map(|p| &**p)
    }

    pub fn remember_pseudonym(&mut self, entity: usize, value: &str, pseudonym: &str) {
        if self.remembered < MAX_REMEMBERED {
            self.remembered += 1;
            self.pseudonyms
                .entry(entity)
                .or_default()
                .insert(Box::from(value), Box::from(pseudonym));
        }
    }

    pub fn record(&mut self, service: &'a str, entity: usize, field: &'a str, row: usize) {
        self.tallies
            .entry((service, entity))
            .and_modify(|t| t.count += 1)
            .or_insert(Tally {
                count: 1,
                field,
                first_row: row,
            });
    }

    pub fn finish<'e>(self, entity_of: impl Fn(usize) -> Option<&'e Entity>) -> Findings {
        let mut out: Vec<Finding> = self
            .tallies
            .into_iter()
            .filter_map(|((service, entity), t)| {
                let e = entity_of(entity)?;
                Some(Finding {
                    service: service.to_owned(),
                    entity: e.name.clone(),
                    category: e.category,
                    count: t.count,
                    field: t.field.to_owned(),
                    first_row: t.first_row,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.service, &a.entity).cmp(&(&b.service, &b.entity)));
        Findings(out)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{TimestampNanosecondType, UInt64Type};

    use super::*;

    fn finding(service: &str, entity: &str, category: Category, count: u64) -> Finding {
        Finding {
            service: service.into(),
            entity: Arc::from(entity),
            category,
            count,
            field: "body".into(),
            first_row: 0,
        }
    }

    #[test]
    fn to_batch_has_one_row_per_service_and_entity_in_the_table_schema() {
        let findings = Findings(vec![
            finding("billing", "aws_access_key_id", Category::Secret, 1),
            finding("checkout", "email", Category::Pii, 7),
        ]);
        let batch = findings.to_batch(Signal::Logs, 42).unwrap();
        assert_eq!(batch.signal(), Signal::Redactions);
        let rb = batch.records();
        assert_eq!(rb.schema(), redactions_schema());
        assert_eq!(rb.num_rows(), 2);
        let text = |name: &str, row: usize| {
            rb.column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .value(row)
                .to_owned()
        };
        assert_eq!(
            [
                text("service", 1),
                text("signal", 1),
                text("entity", 1),
                text("category", 1),
                text("field", 1)
            ],
            ["checkout", "logs", "email", "pii", "body"]
        );
        assert_eq!(text("category", 0), "secret");
        let count = rb.column_by_name("count").unwrap();
        assert_eq!(count.as_primitive::<UInt64Type>().value(1), 7);
        let time = rb.column_by_name("time").unwrap();
        assert_eq!(time.as_primitive::<TimestampNanosecondType>().value(0), 42);
        assert_eq!(time.null_count(), 0);
    }

    #[test]
    fn no_findings_make_an_empty_batch() {
        let batch = Findings::default().to_batch(Signal::Spans, 1).unwrap();
        assert_eq!(batch.num_rows(), 0);
    }
}
