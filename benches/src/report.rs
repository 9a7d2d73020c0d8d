//! The result of one load run: request outcomes, throughput, ack latency percentiles and the
//! server's CPU and memory cost, printable for people or as one JSON object.

use std::fmt;

use serde::Serialize;

use crate::{Signal, Transport};

/// Everything a load run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub signal: Signal,
    pub transport: Transport,
    pub endpoint: String,
    pub gzip: bool,
    pub concurrency: usize,
    pub records_per_request: usize,
    pub distinct_requests: usize,
    /// Mean size of a request body as built before the run (after gzip for HTTP).
    pub mean_request_bytes: u64,
    /// Wall-clock time from the first request sent to the last answer received.
    pub duration_seconds: f64,
    pub requests: RequestCounts,
    /// Records in every request sent, whatever the outcome.
    pub records_sent: u64,
    /// Records the server accepted (full successes plus the accepted part of partial ones).
    pub records_acked: u64,
    /// Records refused through `partial_success`.
    pub records_rejected: u64,
    pub records_per_second: f64,
    pub requests_per_second: f64,
    /// Send-to-answer latency of accepted requests (ok or partial); `None` if none was.
    pub ack_latency_ms: Option<Latency>,
    /// The one unmeasured request sent before the clock started (its records reached the
    /// server too).
    pub warmup_records_acked: u64,
    pub server: Option<ServerUsage>,
    /// CPU time the load generator itself used during the run (user + system).
    pub client_cpu_seconds: Option<f64>,
    /// The first error seen, to explain a failing run.
    pub first_error: Option<String>,
}

/// Requests by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    pub total: u64,
    pub ok: u64,
    pub partial: u64,
    pub throttled: u64,
    pub error: u64,
}

impl RequestCounts {
    /// Requests the server accepted at least in part.
    pub fn acked(&self) -> u64 {
        self.ok + self.partial
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// What the server process spent during the run, from `/proc/PID`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerUsage {
    pub pid: u32,
    /// User + system CPU time between the start and the end of the run; `None` if the process
    /// could no longer be read at the end.
    pub cpu_seconds: Option<f64>,
    /// Acked records per server CPU-second.
    pub records_per_cpu_second: Option<f64>,
    /// `VmHWM` at the end of the run: the peak since the server started.
    pub peak_rss_mib: Option<f64>,
}

impl Report {
    /// Did the server accept anything? A run where nothing was accepted is a failed run.
    pub fn any_acked(&self) -> bool {
        self.requests.acked() > 0
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }
}

fn opt(value: Option<f64>, precision: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.precision$}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "vigil-loadgen: {} over {} to {} (gzip {})",
            self.signal,
            self.transport,
            self.endpoint,
            if self.gzip { "on" } else { "off" }
        )?;
        writeln!(
            f,
            "  concurrency {}, {} records/request, {} distinct requests of {:.1} KiB on average",
            self.concurrency,
            self.records_per_request,
            self.distinct_requests,
            self.mean_request_bytes as f64 / 1024.0
        )?;
        let r = &self.requests;
        writeln!(
            f,
            "  ran {:.2} s: {} requests (ok {}, partial {}, throttled {}, error {}), {:.1} requests/s",
            self.duration_seconds,
            r.total,
            r.ok,
            r.partial,
            r.throttled,
            r.error,
            self.requests_per_second
        )?;
        writeln!(
            f,
            "  records: {} sent, {} acked, {} rejected; {:.0} records/s acked",
            self.records_sent, self.records_acked, self.records_rejected, self.records_per_second
        )?;
        match &self.ack_latency_ms {
            Some(l) => writeln!(
                f,
                "  ack latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
                l.p50, l.p90, l.p99, l.max, l.mean
            )?,
            None => writeln!(f, "  ack latency ms: n/a (nothing acked)")?,
        }
        if let Some(server) = &self.server {
            writeln!(
                f,
                "  server pid {}: {} cpu-s, {} records per cpu-s, peak rss {} MiB",
                server.pid,
                opt(server.cpu_seconds, 2),
                opt(server.records_per_cpu_second, 0),
                opt(server.peak_rss_mib, 1)
            )?;
        }
        writeln!(
            f,
            "  load generator: {} cpu-s",
            opt(self.client_cpu_seconds, 2)
        )?;
        if let Some(error) = &self.first_error {
            writeln!(f, "  first error: {error}")?;
        }
        Ok(())
    }
}
