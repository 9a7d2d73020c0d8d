//! The redaction stage: the only place a [`RedactedBatch`] is made. Today it passes batches
//! through unchanged; PII and secret detectors plug in here without touching any other stage.

use crate::batch::{Batch, RedactedBatch};

/// Applies the configured redaction policy to decoded batches.
#[derive(Debug, Clone, Default)]
pub struct Redactor {}

impl Redactor {
    pub fn new() -> Self {
        Self {}
    }

    /// Redacts one batch. Pure: no I/O, safe to call from a blocking worker.
    pub fn apply(&self, batch: Batch) -> RedactedBatch {
        RedactedBatch::from_redacted(batch)
    }
}
