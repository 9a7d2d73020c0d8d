//! Flood protection: token buckets (GCRA, `governor`) per API key on records and bytes, and per
//! service on records. Each key and service has its own bucket, so one flooding client is
//! refused while every other keeps its full rate. Buckets hold two seconds' worth, so normal
//! batching bursts pass.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::record_batch::RecordBatch;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::Deserialize;
use vigil_core::schema::col;

use crate::error::IngestError;
use crate::metrics::Metrics;

/// Seconds of traffic a bucket holds.
const BURST_SECONDS: u32 = 2;
/// Buckets one limiter tracks before idle ones are dropped: services come from the data and
/// callers include token subjects, so neither set is bounded by the config.
const MAX_TRACKED_KEYS: usize = 10_000;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Records per second one API key may send (with auth off, all clients share the
    /// `anonymous` key). 0: no limit.
    pub key_records_per_second: u32,
    /// Request bytes (after decompression) per second one API key may send. 0: no limit.
    pub key_bytes_per_second: u32,
    /// Records per second stored for one service, whichever key sends them. 0: no limit.
    pub service_records_per_second: u32,
}

/// Which bucket refused a request (the `limit` label of `vigil_rate_limited_requests_total`).
#[derive(Debug, Clone, Copy)]
enum Limit {
    KeyRecords,
    KeyBytes,
    ServiceRecords,
}

impl Limit {
    fn as_str(self) -> &'static str {
        match self {
            Limit::KeyRecords => "key_records",
            Limit::KeyBytes => "key_bytes",
            Limit::ServiceRecords => "service_records",
        }
    }
}

/// The ingest rate limits; cheap to share behind the ingest handle.
pub struct RateLimits {
    key_records: Option<DefaultKeyedRateLimiter<String>>,
    key_bytes: Option<DefaultKeyedRateLimiter<String>>,
    service_records: Option<DefaultKeyedRateLimiter<String>>,
    metrics: Metrics,
}

fn limiter(per_second: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(BURST_SECONDS)).unwrap_or(rate);
    Some(DefaultKeyedRateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig, metrics: Metrics) -> Self {
        Self {
            key_records: limiter(config.key_records_per_second),
            key_bytes: limiter(config.key_bytes_per_second),
            service_records: limiter(config.service_records_per_second),
            metrics,
        }
    }

    /// Takes `bytes` from the caller's byte bucket.
    pub fn charge_bytes(&self, caller: &str, bytes: usize) -> Result<(), IngestError> {
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.charge(self.key_bytes.as_ref(), Limit::KeyBytes, caller, caller, n)
    }

    /// Takes the batch's records from the caller's bucket and from each service's.
    pub fn charge_records(&self, caller: &str, records: &RecordBatch) -> Result<(), IngestError> {
        let rows = u32::try_from(records.num_rows()).unwrap_or(u32::MAX);
        self.charge(
            self.key_records.as_ref(),
            Limit::KeyRecords,
            caller,
            caller,
            rows,
        )?;
        let Some(services) = &self.service_records else {
            return Ok(());
        };
        let Some(service) = records
            .column_by_name(col::SERVICE)
            .and_then(|c| c.as_string_opt::<i32>())
        else {
            return Ok(());
        };
        let mut per_service: HashMap<&str, u32> = HashMap::new();
        for s in service.iter().flatten() {
            *per_service.entry(s).or_default() += 1;
        }
        for (name, n) in per_service {
            self.charge(Some(services), Limit::ServiceRecords, caller, name, n)?;
        }
        Ok(())
    }

    fn charge(
        &self,
        limiter: Option<&DefaultKeyedRateLimiter<String>>,
        limit: Limit,
        caller: &str,
        key: &str,
        n: u32,
    ) -> Result<(), IngestError> {
        let (Some(limiter), Some(n)) = (limiter, NonZeroU32::new(n)) else {
            return Ok(());
        };
        if limiter.len() > MAX_TRACKED_KEYS {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let refused = match limiter.check_key_n(&key.to_owned(), n) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                IngestError::rate_limited(
                    format!(
                        "rate limit exceeded ({}); retry later",
                        describe(limit, key)
                    ),
                    wait.max(Duration::from_secs(1)),
                )
            }
            // Larger than a whole bucket: waiting will not help, smaller batches will.
            Err(_) => IngestError::invalid(format!(
                "one request carries more than the rate limit allows in a burst ({}); send \
                 smaller batches",
                describe(limit, key)
            )),
        };
        self.metrics
            .rate_limited
            .with_label_values(&[self.metrics.caller_label(caller), limit.as_str()])
            .inc();
        Err(refused)
    }
}

fn describe(limit: Limit, key: &str) -> String {
    match limit {
        Limit::KeyRecords => "records per second for this key".to_owned(),
        Limit::KeyBytes => "bytes per second for this key".to_owned(),
        Limit::ServiceRecords => format!("records per second for service {key:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_bucket_and_waits_are_advised() {
        let limits = RateLimits::new(
            &RateLimitConfig {
                key_bytes_per_second: 1000,
                ..RateLimitConfig::default()
            },
            Metrics::new().unwrap(),
        );
        // Two seconds' burst, then refused with a retry delay.
        assert!(limits.charge_bytes("flood", 1500).is_ok());
        assert!(limits.charge_bytes("flood", 500).is_ok());
        let err = limits.charge_bytes("flood", 500).unwrap_err();
        assert!(
            matches!(err.kind, crate::error::ErrorKind::RateLimited { retry_after } if retry_after >= Duration::from_secs(1)),
            "{err:?}"
        );
        // Another key is untouched by the flood.
        assert!(limits.charge_bytes("quiet", 2000).is_ok());
        // More than a bucket can ever hold is not worth retrying.
        let err = limits.charge_bytes("quiet-2", 5000).unwrap_err();
        assert_eq!(err.kind, crate::error::ErrorKind::InvalidInput);
        // No limit configured: nothing is counted.
        assert!(
            limits
                .charge_records(
                    "flood",
                    &RecordBatch::new_empty(vigil_core::Signal::Logs.schema())
                )
                .is_ok()
        );
    }
}
