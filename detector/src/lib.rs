//! Vigil's streaming detector: Sigma rules and correlations, per-service baselines and
//! service-graph checks over `RedactedBatch`es. Not yet wired in: the topology has no detector stage.
