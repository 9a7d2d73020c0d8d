//! The ingest path shared by every receiver: decode OTLP to Arrow once, redact, append to the
//! WAL and wait until durable. Receivers only translate their transport to and from this.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vigil_core::decode::Decoded;
use vigil_core::{RedactedBatch, Redactor, Signal};

use crate::auth::{Binding, BindingOutcome};
use crate::config::IngestConfig;
use crate::detection::DetectorHandle;
use crate::error::IngestError;
use crate::limits::RateLimits;
use crate::metrics::{Metrics, RejectReason};
use crate::storage::{AppendError, Appender};

/// Which receiver a request came through (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// Result of an accepted export: records rejected one by one are reported as partial success.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    pub rejected: u64,
    /// Set when `rejected > 0`; describes why without echoing payload values.
    pub error_message: Option<String>,
}

/// A slot in the bounded set of requests being received, decoded or waiting for the WAL.
/// Released when dropped.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    arrived: Instant,
    /// The caller's key id (`anonymous` with auth off), whose rate limits apply.
    caller: String,
    /// The services the caller may send for, when its key is bound to some.
    binding: Option<Binding>,
}

/// See [`IngestHandle::byte_budget`].
pub struct ByteBudget {
    ingest: IngestHandle,
    signal: Signal,
    caller: String,
}

impl ByteBudget {
    pub fn charge(&self, bytes: usize) -> Result<(), IngestError> {
        self.ingest
            .inner
            .limits
            .charge_bytes(&self.caller, bytes)
            .inspect_err(|_| self.ingest.count_rate_limited(self.signal))
    }
}

/// Cheap to clone; shared by all receivers.
#[derive(Clone)]
pub struct IngestHandle {
    inner: Arc<Inner>,
}

struct Inner {
    appender: Appender,
    detector: DetectorHandle,
    redactor: Redactor,
    metrics: Metrics,
    /// Requests between arrival and acknowledgement; bounds the memory ingest can hold.
    in_flight: Arc<Semaphore>,
    retry_after: Duration,
    limits: Arc<RateLimits>,
}

impl IngestHandle {
    pub fn new(
        appender: Appender,
        detector: DetectorHandle,
        redactor: Redactor,
        metrics: Metrics,
        config: &IngestConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                appender,
                detector,
                redactor,
                limits: Arc::new(RateLimits::new(&config.rate_limits, metrics.clone())),
                metrics,
                in_flight: Arc::new(Semaphore::new(config.max_in_flight_requests)),
                retry_after: config.retry_after,
            }),
        }
    }

    /// Takes one of the bounded in-flight slots. Receivers call this when a request arrives,
    /// after authenticating it and before reading its body, so an overloaded Vigil refuses
    /// work without buffering it: when every slot is taken, and when storage would refuse the
    /// records anyway (behind or unwritable), which would otherwise be learnt only after
    /// decoding and redacting them, the work a Vigil behind can least afford. `caller` is the
    /// key id whose rate limits apply; `binding` limits the services the records may claim.
    pub fn admit(
        &self,
        signal: Signal,
        caller: &str,
        binding: Option<Binding>,
    ) -> Result<Admission, IngestError> {
        let inner = &self.inner;
        inner
            .appender
            .accepting()
            .map_err(|e| self.storage_refusal(signal, e))?;
        match inner.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Ok(Admission {
                _permit: permit,
                arrived: Instant::now(),
                caller: caller.to_owned(),
                binding,
            }),
            Err(_) => {
                inner
                    .metrics
                    .rejected_requests
                    .with_label_values(&[signal.as_str(), RejectReason::Overloaded.as_str()])
                    .inc();
                Err(IngestError::overloaded(
                    "too many export requests in flight; retry later",
                    inner.retry_after,
                ))
            }
        }
    }

    /// The caller's byte budget, which receivers charge with a request's decompressed size
    /// before decoding it (on whatever thread does the decompression).
    pub fn byte_budget(&self, signal: Signal, admission: &Admission) -> ByteBudget {
        ByteBudget {
            ingest: self.clone(),
            signal,
            caller: admission.caller.clone(),
        }
    }

    /// The answer to a request storage does not take, counted.
    fn storage_refusal(&self, signal: Signal, err: AppendError) -> IngestError {
        let inner = &self.inner;
        let (reason, err) = match err {
            AppendError::Overloaded => (
                RejectReason::Overloaded,
                IngestError::overloaded("storage is behind; retry later", inner.retry_after),
            ),
            AppendError::Unavailable(msg) => (
                RejectReason::Unavailable,
                IngestError::unavailable(msg, inner.retry_after),
            ),
        };
        inner
            .metrics
            .rejected_requests
            .with_label_values(&[signal.as_str(), reason.as_str()])
            .inc();
        err
    }

    fn count_rate_limited(&self, signal: Signal) {
        self.inner
            .metrics
            .rejected_requests
            .with_label_values(&[signal.as_str(), RejectReason::RateLimited.as_str()])
            .inc();
    }

    /// Appends the `redactions` rows of a stored batch without holding up its acknowledgement:
    /// they are a record of what was redacted, not data a client would retry.
    fn store_redactions(&self, batch: RedactedBatch) {
        let (appender, metrics) = (self.inner.appender.clone(), self.inner.metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = appender.append(batch).await {
                metrics.redaction_rows_dropped.inc();
                tracing::debug!(error = %e, "cannot write redactions rows");
            }
        });
    }

    /// Ready to accept: storage writable and not behind.
    pub fn is_ready(&self) -> bool {
        self.inner.appender.is_ready()
    }

    /// Checks the service binding of, redacts and durably stores an export decoded at
    /// `received_at` (ns). Returns once the records are in the WAL.
    pub async fn export(
        &self,
        admission: Admission,
        decoded: Decoded,
        received_at: i64,
        transport: Transport,
    ) -> Result<ExportOutcome, IngestError> {
        let signal = decoded.batch.signal();
        let inner = &self.inner;
        let metrics = &inner.metrics;
        // Redaction is CPU work on whole batches: keep it off the runtime.
        let redactor = inner.redactor.clone();
        let binding = admission.binding.clone();
        let bind_metrics = metrics.clone();
        let (limits, caller) = (Arc::clone(&inner.limits), admission.caller.clone());
        let (batch, redactions, rejected, error_message) = tokio::task::spawn_blocking(move || {
            let (mut rejected, mut error_message) = (decoded.rejected, decoded.error_message);
            let batch = match &binding {
                Some(binding) => {
                    let bound = binding.apply(decoded.batch).map_err(|e| {
                        tracing::error!(error = %e, signal = %signal, "cannot check service binding");
                        IngestError::internal()
                    })?;
                    if bound.mismatched > 0 {
                        record_mismatch(&bind_metrics, binding, &bound);
                        if !bound.relabelled {
                            rejected += bound.mismatched;
                            let message = binding.refusal_message(bound.mismatched);
                            error_message = Some(match error_message {
                                Some(m) => format!("{m}; {message}"),
                                None => message,
                            });
                        }
                    }
                    bound.batch
                }
                None => decoded.batch,
            };
            limits.charge_records(&caller, batch.records())?;
            // A batch that cannot be redacted is refused, never stored as is.
            let batch = redactor.apply(batch).map_err(|e| {
                tracing::error!(error = %e, signal = %signal, "cannot redact batch");
                IngestError::internal()
            })?;
            let redactions = redactions_batch(&redactor, &batch, received_at);
            Ok::<_, IngestError>((batch, redactions, rejected, error_message))
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "redaction task failed");
            IngestError::internal()
        })?
        .inspect_err(|e| {
            if matches!(e.kind, crate::error::ErrorKind::RateLimited { .. }) {
                self.count_rate_limited(signal);
            }
        })?;
        metrics.record_findings(batch.findings());

        let rows = batch.num_rows();
        if rows > 0 {
            // Detection sees what was stored, and never holds up the acknowledgement.
            let for_detector = batch.clone();
            inner
                .appender
                .append(batch)
                .await
                .map_err(|e| self.storage_refusal(signal, e))?;
            metrics.record_services(&for_detector);
            inner.detector.offer(for_detector);
            if let Some(redactions) = redactions {
                self.store_redactions(redactions);
            }
        }
        let labels = [signal.as_str(), transport.as_str()];
        metrics
            .received_records
            .with_label_values(&labels)
            .inc_by(rows as u64);
        if rejected > 0 {
            metrics
                .rejected_records
                .with_label_values(&[signal.as_str(), RejectReason::InvalidRecord.as_str()])
                .inc_by(rejected);
        }
        metrics
            .ingest_duration
            .with_label_values(&labels)
            .observe(admission.arrived.elapsed().as_secs_f64());
        Ok(ExportOutcome {
            rejected,
            error_message,
        })
    }
}

/// Counts and logs records a bound key sent as another service: someone may be
/// impersonating a service, or a deployment uses the wrong key.
fn record_mismatch(metrics: &Metrics, binding: &Binding, outcome: &BindingOutcome) {
    let records = outcome.mismatched;
    let action = if outcome.relabelled {
        "relabel"
    } else {
        "reject"
    };
    metrics
        .service_mismatch_records
        .with_label_values(&[metrics.caller_label(&binding.key), action])
        .inc_by(records);
    tracing::warn!(key = %binding.key, records, action,
        "records claim a service their key is not bound to");
}

/// The `redactions` rows of `batch` (arrived at `received_at`), if anything was redacted. They
/// hold names and counts only; like every stored batch they pass the redactor.
fn redactions_batch(
    redactor: &Redactor,
    batch: &RedactedBatch,
    received_at: i64,
) -> Option<RedactedBatch> {
    if batch.findings().is_empty() {
        return None;
    }
    let rows = batch
        .findings()
        .to_batch(batch.signal(), received_at)
        .map_err(|e| e.to_string())
        .and_then(|rows| redactor.apply(rows).map_err(|e| e.to_string()));
    match rows {
        Ok(rows) => Some(rows),
        Err(e) => {
            tracing::error!(error = %e, "cannot build redactions rows");
            None
        }
    }
}
