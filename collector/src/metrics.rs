//! Vigil's own Prometheus metrics. Every name and label set lives here; labels come from small
//! closed sets so cardinality stays bounded. One `Metrics` is built per topology and passed in.

use std::cell::RefCell;
use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Why records or requests were refused (the `reason` label).
#[derive(Debug, Clone, Copy)]
pub enum RejectReason {
    /// Record failed validation (bad ids, timestamps); reported as partial success.
    InvalidRecord,
    /// Whole request could not be decoded.
    Undecodable,
    PayloadTooLarge,
    UnsupportedMediaType,
    Overloaded,
    RateLimited,
    Unavailable,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidRecord => "invalid_record",
            RejectReason::Undecodable => "undecodable",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::UnsupportedMediaType => "unsupported_media_type",
            RejectReason::Overloaded => "overloaded",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Records accepted into the WAL, by signal and transport.
    pub received_records: IntCounterVec,
    /// Bytes of request bodies received (after decompression), by signal and transport.
    pub received_bytes: IntCounterVec,
    /// Records (or whole requests, counted as requests) refused, by signal and reason.
    pub rejected_records: IntCounterVec,
    pub rejected_requests: IntCounterVec,
    /// Time from request arrival to durable acknowledgement.
    pub ingest_duration: HistogramVec,
    /// Requests waiting in a stage.
    pub queue_depth: IntGaugeVec,
    pub wal_bytes: IntGauge,
    pub wal_fsyncs: IntCounterVec,
    pub parquet_bytes: IntGaugeVec,
    pub parquet_files: IntGaugeVec,
    pub compactions: IntCounterVec,
    pub retention_deleted_files: IntCounterVec,
    pub queries: IntCounterVec,
    pub query_duration: HistogramVec,
    /// Values redacted, by entity, category and (capped) service.
    pub redactions: IntCounterVec,
    /// Alerts that started firing, by rule and severity (rule ids come from the loaded rule
    /// set and Vigil's fixed detectors, so the label set is bounded).
    pub alerts: IntCounterVec,
    pub alerts_firing: IntGauge,
    /// Observations that did not open an alert, by rule and reason.
    pub alerts_suppressed: IntCounterVec,
    /// Batches that skipped detection because the detector was behind.
    pub detector_skipped_batches: IntCounterVec,
    pub detector_duration: HistogramVec,
    /// Alert state changes that could not be written to the `alerts` table.
    pub alert_write_failures: prometheus::IntCounter,
    /// Rows of the `redactions` table that could not be written (storage busy or failing).
    pub redaction_rows_dropped: prometheus::IntCounter,
    /// Detection rules loaded (Sigma rules and correlations, scheduled SQL rules).
    pub detector_rules: IntGaugeVec,
    /// Records run through the detector, by signal.
    pub detector_records: IntCounterVec,
    /// What the detector has learned now, by kind (`baseline_services`, `graph_edges`,
    /// `graph_pending_spans`).
    pub detector_tracked: IntGaugeVec,
    /// What the detector's bounds turned away, by kind.
    pub detector_over_limit: IntCounterVec,
    /// Webhook delivery attempts by sink and outcome (`delivered`, `retry`, `dead`).
    pub webhook_deliveries: IntCounterVec,
    /// Notifications given up on and kept as dead letters, by sink and reason.
    pub webhook_dead_letters: IntCounterVec,
    /// Notifications waiting in a sink's outbox.
    pub webhook_outbox: IntGaugeVec,
    /// 1 while a sink delivers, 0 once a receiver answered 410 Gone and it was disabled.
    pub webhook_sink_up: IntGaugeVec,
    pub webhook_duration: HistogramVec,
    /// Records stored per service (capped label set, overflow in `other`) and signal.
    pub service_records: IntCounterVec,
    /// Requests refused by authentication, by reason (`missing`, `invalid`, `forbidden`)
    /// and the scope they needed.
    pub auth_refusals: IntCounterVec,
    /// API keys valid now.
    pub auth_keys: IntGauge,
    /// Records a service-bound key sent under another service's name, by key id and what
    /// was done (`reject`, `relabel`). Key ids come from the key file: a bounded set.
    pub service_mismatch_records: IntCounterVec,
    /// Export requests refused by a rate limit, by key id and limit.
    pub rate_limited: IntCounterVec,
    services: ServiceLabels,
    /// Caller ids used as labels: keys come from the key file, but token subjects from the
    /// identity provider, so they are capped like services.
    callers: ServiceLabels,
    /// Every series name registered, sorted (see [`Metrics::metric_names`]).
    names: Arc<[String]>,
}

/// The series names `collector` exposes in the text format.
fn series_names(collector: &dyn Collector) -> Vec<String> {
    let mut names = Vec::new();
    for family in collector.collect() {
        let suffixes: &[&str] = match family.get_field_type() {
            MetricType::HISTOGRAM => &["_bucket", "_sum", "_count"],
            MetricType::SUMMARY => &["", "_sum", "_count"],
            MetricType::COUNTER | MetricType::GAUGE | MetricType::UNTYPED => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{}{s}", family.name())));
    }
    names
}

/// Services seen get their own label value up to a cap; the rest share `other`, so a flood of
/// made-up `service.name`s cannot blow up the metric series count.
#[derive(Clone)]
struct ServiceLabels {
    seen: std::sync::Arc<parking_lot::RwLock<std::collections::HashSet<String>>>,
}

/// Distinct `service` label values per metric before overflow goes to `other`.
pub const MAX_SERVICE_LABELS: usize = 200;

impl ServiceLabels {
    fn label<'a>(&self, service: &'a str) -> &'a str {
        if self.seen.read().contains(service) {
            return service;
        }
        let mut seen = self.seen.write();
        if seen.len() < MAX_SERVICE_LABELS {
            seen.insert(service.to_owned());
            service
        } else {
            "other"
        }
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        // Series names are noted as each metric is registered: `Registry::gather` leaves out
        // labelled metrics that have no series yet, so it cannot list them all.
        let names = RefCell::new(Vec::new());
        let register = |collector: Box<dyn Collector>| -> Result<(), prometheus::Error> {
            names.borrow_mut().extend(series_names(collector.as_ref()));
            registry.register(collector)
        };
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                register(Box::new(g.clone()))?;
                Ok(g)
            };
        let histogram = |name: &str,
                         help: &str,
                         labels: &[&str],
                         buckets: Vec<f64>|
         -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
            register(Box::new(h.clone()))?;
            Ok(h)
        };
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let wal_bytes =
            IntGauge::new("vigil_wal_bytes", "Bytes in WAL segments not yet compacted")?;
        register(Box::new(wal_bytes.clone()))?;
        let alerts_firing = IntGauge::new("vigil_alerts_firing", "Alerts firing now")?;
        let auth_keys = IntGauge::new("vigil_auth_keys", "API keys valid now")?;
        register(Box::new(auth_keys.clone()))?;
        register(Box::new(alerts_firing.clone()))?;
        let alert_write_failures = prometheus::IntCounter::new(
            "vigil_alert_write_failures_total",
            "Alert state changes that could not be written to the alerts table",
        )?;
        register(Box::new(alert_write_failures.clone()))?;
        let redaction_rows_dropped = prometheus::IntCounter::new(
            "vigil_redaction_rows_dropped_total",
            "Rows of the redactions table not written because storage was busy or failing \
             (the values were redacted and counted all the same)",
        )?;
        register(Box::new(redaction_rows_dropped.clone()))?;
        Ok(Self {
            received_records: counter(
                "vigil_received_records_total",
                "Records durably accepted",
                &["signal", "transport"],
            )?,
            received_bytes: counter(
                "vigil_received_bytes_total",
                "Request body bytes received, after decompression",
                &["signal", "transport"],
            )?,
            rejected_records: counter(
                "vigil_rejected_records_total",
                "Records refused individually (partial success)",
                &["signal", "reason"],
            )?,
            rejected_requests: counter(
                "vigil_rejected_requests_total",
                "Export requests refused as a whole",
                &["signal", "reason"],
            )?,
            ingest_duration: histogram(
                "vigil_ingest_duration_seconds",
                "Time from request arrival to durable acknowledgement",
                &["signal", "transport"],
                latency_buckets.clone(),
            )?,
            queue_depth: gauge_vec(
                "vigil_queue_depth",
                "Items waiting in a pipeline stage",
                &["stage"],
            )?,
            wal_bytes,
            wal_fsyncs: counter("vigil_wal_fsyncs_total", "WAL fsync calls", &["signal"])?,
            parquet_bytes: gauge_vec(
                "vigil_parquet_bytes",
                "Bytes of compacted Parquet files",
                &["signal"],
            )?,
            parquet_files: gauge_vec(
                "vigil_parquet_files",
                "Compacted Parquet files",
                &["signal"],
            )?,
            compactions: counter(
                "vigil_compactions_total",
                "WAL segments compacted into Parquet",
                &["signal", "outcome"],
            )?,
            retention_deleted_files: counter(
                "vigil_retention_deleted_files_total",
                "Parquet files deleted by retention",
                &["signal", "reason"],
            )?,
            queries: counter("vigil_queries_total", "SQL queries run", &["outcome"])?,
            query_duration: histogram(
                "vigil_query_duration_seconds",
                "SQL query wall time",
                &["outcome"],
                latency_buckets.clone(),
            )?,
            redactions: counter(
                "vigil_redactions_total",
                "Values redacted before storage, by entity, category and service",
                &["entity", "category", "service"],
            )?,
            alerts: counter(
                "vigil_alerts_total",
                "Alerts that started firing",
                &["rule_id", "severity"],
            )?,
            alerts_firing,
            alerts_suppressed: counter(
                "vigil_alerts_suppressed_total",
                "Detections that did not open an alert (flapping, rate cap, capacity)",
                &["rule_id", "reason"],
            )?,
            detector_skipped_batches: counter(
                "vigil_detector_skipped_batches_total",
                "Stored batches that skipped detection because the detector queue was full",
                &["signal"],
            )?,
            detector_duration: histogram(
                "vigil_detector_batch_duration_seconds",
                "Time to run every detector over one batch",
                &["signal"],
                vec![
                    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ],
            )?,
            alert_write_failures,
            redaction_rows_dropped,
            detector_rules: gauge_vec("vigil_detector_rules", "Detection rules loaded", &["kind"])?,
            detector_records: counter(
                "vigil_detector_records_total",
                "Records run through the detector",
                &["signal"],
            )?,
            detector_tracked: gauge_vec(
                "vigil_detector_tracked",
                "What the detector has learned now: services with a baseline, service-graph \
                 edges, spans waiting for their parent or child",
                &["kind"],
            )?,
            detector_over_limit: counter(
                "vigil_detector_over_limit_total",
                "What the detector's bounds left unwatched: records of services past \
                 baselines.max_services, edges past graph.max_edges, sources past \
                 graph.max_sources_per_service, spans evicted past graph.max_pending",
                &["kind"],
            )?,
            webhook_deliveries: counter(
                "vigil_webhook_deliveries_total",
                "Webhook delivery attempts, by outcome (delivered, retry, dead)",
                &["sink", "outcome"],
            )?,
            webhook_dead_letters: counter(
                "vigil_webhook_dead_letters_total",
                "Notifications given up on and kept in the dead_letters table",
                &["sink", "reason"],
            )?,
            webhook_outbox: gauge_vec(
                "vigil_webhook_outbox_messages",
                "Notifications waiting in a sink's durable outbox",
                &["sink"],
            )?,
            webhook_sink_up: gauge_vec(
                "vigil_webhook_sink_up",
                "1 while a sink delivers; 0 after its receiver answered 410 Gone",
                &["sink"],
            )?,
            webhook_duration: histogram(
                "vigil_webhook_request_duration_seconds",
                "Time of one webhook HTTP request, until the receiver answered or failed",
                &["sink"],
                latency_buckets,
            )?,
            service_records: counter(
                "vigil_service_records_total",
                "Records stored, by service (at most 200 services, the rest as `other`) and signal",
                &["service", "signal"],
            )?,
            auth_refusals: counter(
                "vigil_auth_refusals_total",
                "Requests refused by authentication, by reason and the scope they needed",
                &["reason", "scope"],
            )?,
            auth_keys,
            service_mismatch_records: counter(
                "vigil_service_mismatch_records_total",
                "Records a service-bound key sent as another service, by key and action",
                &["key", "action"],
            )?,
            rate_limited: counter(
                "vigil_rate_limited_requests_total",
                "Export requests refused by a rate limit, by key and limit",
                &["key", "limit"],
            )?,
            services: ServiceLabels {
                seen: Default::default(),
            },
            callers: ServiceLabels {
                seen: Default::default(),
            },
            // Fields are built in the order written: every metric is registered by now.
            names: {
                let mut names = names.take();
                names.sort();
                names.into()
            },
            registry,
        })
    }

    /// Every series name Vigil exports, whether or not it has a value yet: what a dashboard
    /// or alert rule may select. A histogram contributes its `_bucket`, `_sum` and `_count`
    /// series (not its base name, which no series carries). Sorted.
    pub fn metric_names(&self) -> Vec<String> {
        self.names.to_vec()
    }

    /// Counts what the redactor found in one batch.
    pub fn record_findings(&self, findings: &vigil_core::redact::Findings) {
        for f in findings.iter() {
            self.redactions
                .with_label_values(&[
                    &*f.entity,
                    f.category.as_str(),
                    self.services.label(&f.service),
                ])
                .inc_by(f.count);
        }
    }

    /// The label value for a caller id (a key's id or `jwt:<subject>`): itself for the first
    /// 200 callers seen, `other` after that.
    pub fn caller_label<'a>(&self, caller: &'a str) -> &'a str {
        self.callers.label(caller)
    }

    /// Counts the records of one stored batch per service.
    pub fn record_services(&self, batch: &vigil_core::RedactedBatch) {
        use arrow::array::AsArray;
        let Some(column) = batch
            .records()
            .column_by_name(vigil_core::schema::col::SERVICE)
            .and_then(|c| c.as_string_opt::<i32>())
        else {
            return;
        };
        let mut counts: Vec<(&str, u64)> = Vec::new();
        for service in column.iter().flatten() {
            // Batches hold one or a few services: a short list beats a map.
            match counts.iter_mut().find(|(s, _)| *s == service) {
                Some((_, n)) => *n += 1,
                None => counts.push((service, 1)),
            }
        }
        let signal = batch.signal().as_str();
        for (service, n) in counts {
            self.service_records
                .with_label_values(&[self.services.label(service), signal])
                .inc_by(n);
        }
    }

    /// Publishes the detector's sizes and what its bounds turned away.
    pub fn record_detector_stats(&self, stats: &vigil_detector::detect::DetectorStats) {
        let tracked = [
            ("baseline_services", stats.baseline_services),
            ("graph_edges", stats.graph.edges),
            ("graph_pending_spans", stats.graph.pending),
        ];
        for (kind, n) in tracked {
            self.detector_tracked
                .with_label_values(&[kind])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let over_limit = [
            ("baseline_records", stats.baseline_untracked_records),
            ("graph_edges", stats.graph.edges_over_limit),
            ("graph_sources", stats.graph.sources_over_limit),
            ("graph_pending_spans", stats.graph.pending_evicted),
        ];
        for (kind, total) in over_limit {
            // The detector keeps totals; the counter follows them (one writer).
            let counter = self.detector_over_limit.with_label_values(&[kind]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_labels_are_capped() {
        let metrics = Metrics::new().unwrap();
        let callers: Vec<String> = (0..MAX_SERVICE_LABELS + 5)
            .map(|i| format!("jwt:user-{i}"))
            .collect();
        for c in &callers[..MAX_SERVICE_LABELS] {
            assert_eq!(metrics.caller_label(c), c);
        }
        assert_eq!(metrics.caller_label(&callers[MAX_SERVICE_LABELS]), "other");
        assert_eq!(metrics.caller_label(&callers[0]), callers[0]);
    }
}
