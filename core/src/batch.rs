//! The batch types that flow through the pipeline. `Batch` is decoded telemetry; a
//! `RedactedBatch` can only be made by the redactor, and is all that storage and the detector take.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::redact::Findings;
use crate::schema::{
    alert_actions_schema, alerts_schema, audit_schema, dead_letters_schema, logs_schema,
    redactions_schema, spans_schema,
};

/// Which table a batch belongs to: the two telemetry signals Vigil ingests, and the records
/// Vigil derives from them (alerts, analysts' actions on alerts, undeliverable webhooks, what
/// redaction replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Logs,
    Spans,
    Alerts,
    DeadLetters,
    Redactions,
    AlertActions,
    Audit,
}

impl Signal {
    /// Every table storage keeps.
    pub const ALL: [Signal; 7] = [
        Signal::Logs,
        Signal::Spans,
        Signal::Alerts,
        Signal::DeadLetters,
        Signal::Redactions,
        Signal::AlertActions,
        Signal::Audit,
    ];
    /// The signals that arrive over OTLP.
    pub const TELEMETRY: [Signal; 2] = [Signal::Logs, Signal::Spans];

    /// Table name, also the `signal=` partition value and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Spans => "spans",
            Signal::Alerts => "alerts",
            Signal::DeadLetters => "dead_letters",
            Signal::Redactions => "redactions",
            Signal::AlertActions => "alert_actions",
            Signal::Audit => "audit",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Signal::Logs => logs_schema(),
            Signal::Spans => spans_schema(),
            Signal::Alerts => alerts_schema(),
            Signal::DeadLetters => dead_letters_schema(),
            Signal::Redactions => redactions_schema(),
            Signal::AlertActions => alert_actions_schema(),
            Signal::Audit => audit_schema(),
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        match s {
            "logs" => Some(Signal::Logs),
            "spans" => Some(Signal::Spans),
            "alerts" => Some(Signal::Alerts),
            "dead_letters" => Some(Signal::DeadLetters),
            "redactions" => Some(Signal::Redactions),
            "alert_actions" => Some(Signal::AlertActions),
            "audit" => Some(Signal::Audit),
            _ => None,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decoded telemetry of one signal, in that signal's schema. May still hold raw PII.
#[derive(Debug, Clone)]
pub struct Batch {
    signal: Signal,
    records: RecordBatch,
}

impl Batch {
    /// Wraps records that must already be in `signal`'s schema.
    pub fn new(signal: Signal, records: RecordBatch) -> Result<Self, SchemaMismatch> {
        if records.schema() != signal.schema() {
            return Err(SchemaMismatch { signal });
        }
        Ok(Self { signal, records })
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }
    pub fn records(&self) -> &RecordBatch {
        &self.records
    }
    pub fn num_rows(&self) -> usize {
        self.records.num_rows()
    }
    pub fn into_records(self) -> RecordBatch {
        self.records
    }
}

#[derive(Debug, thiserror::Error)]
#[error("record batch does not match the {signal} schema")]
pub struct SchemaMismatch {
    pub signal: Signal,
}

/// A batch that has passed the redactor. Constructed only in [`crate::redact`]: holding one
/// is the proof that no raw PII is inside, so storage and the detector accept nothing else.
/// It carries what the redactor found, for metrics and the detector.
#[derive(Debug, Clone)]
pub struct RedactedBatch {
    batch: Batch,
    findings: Findings,
}

impl RedactedBatch {
    /// Only the redaction stage may call this.
    pub(crate) fn from_redacted(batch: Batch, findings: Findings) -> Self {
        Self { batch, findings }
    }
    pub fn signal(&self) -> Signal {
        self.batch.signal
    }
    pub fn records(&self) -> &RecordBatch {
        &self.batch.records
    }
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }
    /// What redaction replaced in this batch, per service and entity.
    pub fn findings(&self) -> &Findings {
        &self.findings
    }
    pub fn into_records(self) -> RecordBatch {
        self.batch.records
    }
}
