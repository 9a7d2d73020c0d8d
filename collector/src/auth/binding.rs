//! Service binding at ingest: a key bound to `checkout` cannot store records as `payments`.
//! Applied to the decoded Arrow batch, before redaction and storage.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use arrow::compute::filter_record_batch;
use vigil_core::Batch;
use vigil_core::schema::col;

use super::MismatchAction;

/// The services one ingest key may send for, and what happens to other records.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The key's id, for metrics and the refusal message.
    pub key: String,
    pub services: Arc<[String]>,
    pub action: MismatchAction,
}

/// The batch to store and how many records claimed a service the key is not bound to.
#[derive(Debug)]
pub struct BindingOutcome {
    pub batch: Batch,
    pub mismatched: u64,
    /// Whether the mismatched records were relabelled (kept) rather than refused. Relabelling
    /// needs exactly one service, so a `relabel` binding to several (or none) still refuses.
    pub relabelled: bool,
}

impl Binding {
    /// Rejects or relabels the records whose `service` is not one of the key's services.
    pub fn apply(&self, batch: Batch) -> Result<BindingOutcome, arrow::error::ArrowError> {
        let records = batch.records();
        let Some((index, _)) = records.schema().column_with_name(col::SERVICE) else {
            return Err(arrow::error::ArrowError::SchemaError(format!(
                "{} batch has no `{}` column",
                batch.signal(),
                col::SERVICE
            )));
        };
        let Some(service) = records.column(index).as_string_opt::<i32>() else {
            return Err(arrow::error::ArrowError::SchemaError(
                "`service` is not a string column".to_owned(),
            ));
        };
        let allowed: BooleanArray = service
            .iter()
            .map(|s| Some(s.is_some_and(|s| self.services.iter().any(|b| b == s))))
            .collect();
        let mismatched = (allowed.len() - allowed.true_count()) as u64;
        if mismatched == 0 {
            return Ok(BindingOutcome {
                batch,
                mismatched,
                relabelled: false,
            });
        }
        let signal = batch.signal();
        let relabel = self.action == MismatchAction::Relabel && self.services.len() == 1;
        let records = match self.services.first() {
            Some(own) if relabel => {
                let relabelled: ArrayRef = Arc::new(StringArray::from_iter_values(
                    std::iter::repeat_n(own.as_str(), service.len()),
                ));
                let mut columns = records.columns().to_vec();
                if let Some(slot) = columns.get_mut(index) {
                    *slot = relabelled;
                }
                arrow::record_batch::RecordBatch::try_new(records.schema(), columns)?
            }
            _ => filter_record_batch(records, &allowed)?,
        };
        let batch = Batch::new(signal, records).map_err(|e| {
            arrow::error::ArrowError::SchemaError(format!("binding changed the schema: {e}"))
        })?;
        Ok(BindingOutcome {
            batch,
            mismatched,
            relabelled: relabel,
        })
    }

    /// The partial-success message for records refused by this binding.
    pub fn refusal_message(&self, mismatched: u64) -> String {
        format!(
            "{mismatched} records claim a service.name that key {:?} may not send for ({})",
            self.key,
            self.services.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use vigil_core::decode::decode_logs;

    use super::*;

    fn logs_from(services: &[&str]) -> Batch {
        let resource_logs = services
            .iter()
            .map(|s| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue((*s).into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        decode_logs(&ExportLogsServiceRequest { resource_logs }, 1)
            .unwrap()
            .batch
    }

    fn services_of(batch: &Batch) -> Vec<String> {
        let (i, _) = batch
            .records()
            .schema()
            .column_with_name("service")
            .unwrap();
        batch
            .records()
            .column(i)
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap().to_owned())
            .collect()
    }

    fn binding(action: MismatchAction) -> Binding {
        Binding {
            key: "checkout-ingest".into(),
            services: vec!["checkout".to_owned()].into(),
            action,
        }
    }

    #[test]
    fn other_services_records_are_rejected() {
        let out = binding(MismatchAction::Reject)
            .apply(logs_from(&["checkout", "payments", "checkout"]))
            .unwrap();
        assert_eq!(out.mismatched, 1);
        assert_eq!(services_of(&out.batch), ["checkout", "checkout"]);
    }

    #[test]
    fn relabel_with_several_services_refuses_and_says_so() {
        // A token's service claim or a key narrowed by a certificate may name several
        // services: there is no one service to relabel to, so the records are refused.
        let several = Binding {
            services: vec!["checkout".to_owned(), "cart".to_owned()].into(),
            ..binding(MismatchAction::Relabel)
        };
        let out = several.apply(logs_from(&["payments", "checkout"])).unwrap();
        assert_eq!((out.mismatched, out.relabelled), (1, false));
        assert_eq!(services_of(&out.batch), ["checkout"]);
    }

    #[test]
    fn or_relabelled_keeping_the_claim_in_the_resource() {
        let out = binding(MismatchAction::Relabel)
            .apply(logs_from(&["payments", "checkout"]))
            .unwrap();
        assert_eq!(out.mismatched, 1);
        assert_eq!(services_of(&out.batch), ["checkout", "checkout"]);
        let (i, _) = out
            .batch
            .records()
            .schema()
            .column_with_name("resource")
            .unwrap();
        let resource =
            arrow::util::display::array_value_to_string(out.batch.records().column(i), 0).unwrap();
        assert!(resource.contains("payments"), "{resource}");
    }

    #[test]
    fn matching_batches_pass_untouched() {
        let out = binding(MismatchAction::Reject)
            .apply(logs_from(&["checkout"]))
            .unwrap();
        assert_eq!(out.mismatched, 0);
        assert_eq!(out.batch.num_rows(), 1);
    }
}
