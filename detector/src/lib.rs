//! Vigil's streaming detector: Sigma rules and correlations, per-service baselines and
//! service-graph checks over `RedactedBatch`es. Pure: no sockets or files; time is passed in.

pub mod alert;
pub mod baseline;
pub mod config;
pub mod detect;
pub mod fields;
pub mod graph;
mod prefilter;
pub mod ruletest;
pub mod shipped;
pub mod sigma;
pub mod synthetic;
mod value_count;
pub mod view;

pub use alert::{
    Alert, AlertEvent, AlertKey, AlertState, AlertStateConfig, Candidate, ManualResolution,
    Observation, Sample, Severity, Status, Suppressed, alerts_batch, is_fingerprint,
};
pub use config::DetectorConfig;
pub use detect::Detector;
pub use sigma::{RuleProblem, RuleSet, RuleSource};
