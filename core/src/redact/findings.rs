//! What a batch had redacted, per service and entity: counted in metrics, and handed to the
//! detector so a credential in a service's telemetry can raise an alert.

use std::collections::HashMap;
use std::sync::Arc;

use super::config::Category;

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
