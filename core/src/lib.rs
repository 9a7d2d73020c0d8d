//! Vigil's data model: the Arrow schemas of the `logs` and `spans` tables, OTLP decoding into
//! them (done once, at ingest), and the batch types that carry the redaction guarantee.

pub mod batch;
pub mod decode;
pub mod literals;
pub mod redact;
pub mod schema;
pub mod time;

pub use batch::{Batch, RedactedBatch, Signal};
pub use redact::{HashKey, Redactor};
