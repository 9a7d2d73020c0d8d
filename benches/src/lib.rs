//! Vigil's benchmark support: a deterministic OTLP corpus ([`corpus`]) and the closed-loop OTLP
//! load generator behind `vigil-loadgen` ([`run`]), usable from tests and criterion benches.
//!
//! A run pre-builds its requests, opens the connections, sends one unmeasured warm-up request,
//! then lets `concurrency` tasks each send a request, await the answer and repeat until the
//! duration or request budget is used up.

pub mod corpus;
pub mod procstat;
pub mod report;
mod transport;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::corpus::CorpusConfig;
use crate::procstat::Process;
use crate::report::{Latency, Report, RequestCounts, ServerUsage};
use crate::transport::{Connect, Outcome, Payload, Sender};

/// Default OTLP/gRPC endpoint.
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://127.0.0.1:4317";
/// Default OTLP/HTTP endpoint (the `/v1/logs` or `/v1/traces` path is appended).
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://127.0.0.1:4318";

/// Which OTLP signal to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Logs,
    Traces,
}

/// Which OTLP transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// OTLP/gRPC (tonic).
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (reqwest).
    Http,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Logs => "logs",
            Self::Traces => "traces",
        })
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
        })
    }
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Start no new request after this much time (requests in flight are awaited).
    After(Duration),
    /// Send exactly this many measured requests.
    Requests(u64),
}

/// What to send, where, and how hard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub signal: Signal,
    pub transport: Transport,
    /// Base URL; `None` means the transport's default loopback endpoint.
    pub endpoint: Option<String>,
    /// Closed-loop client tasks, each with one request in flight.
    pub concurrency: usize,
    pub stop: Stop,
    pub records_per_request: usize,
    pub services: usize,
    /// Requests pre-built before the clock starts and sent round-robin.
    pub distinct_requests: usize,
    /// gzip request bodies (HTTP: pre-compressed; gRPC: per-message compression).
    pub gzip: bool,
    /// gRPC channels (HTTP/2 connections) the tasks share; ignored for HTTP, which pools.
    pub connections: usize,
    /// Per-request timeout; a request that takes longer counts as an error.
    pub request_timeout: Duration,
    /// Server process to account CPU time and peak memory for.
    pub server_pid: Option<u32>,
    pub seed: u64,
    /// Timestamp of the corpus's first record, Unix nanoseconds; `None` means the start of
    /// the run.
    pub base_time_ns: Option<u64>,
    /// Wall-clock time the corpus's timestamps are spread over (see
    /// [`CorpusConfig::time_spread_ns`]). Every request is pre-built, so a request sent twice
    /// repeats its timestamps.
    pub time_spread: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            signal: Signal::Logs,
            transport: Transport::Grpc,
            endpoint: None,
            concurrency: 8,
            stop: Stop::After(Duration::from_secs(30)),
            records_per_request: 512,
            services: 8,
            distinct_requests: 64,
            gzip: false,
            connections: 1,
            request_timeout: Duration::from_secs(10),
            server_pid: None,
            seed: CorpusConfig::default().seed,
            base_time_ns: None,
            time_spread: Duration::from_nanos(CorpusConfig::default().time_spread_ns),
        }
    }
}

impl Options {
    /// The endpoint to use: the given one or the transport's default.
    pub fn endpoint(&self) -> &str {
        match (&self.endpoint, self.transport) {
            (Some(endpoint), _) => endpoint,
            (None, Transport::Grpc) => DEFAULT_GRPC_ENDPOINT,
            (None, Transport::Http) => DEFAULT_HTTP_ENDPOINT,
        }
    }

    /// Every problem with the options, or nothing.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, value) in [
            ("concurrency", self.concurrency),
            ("records-per-request", self.records_per_request),
            ("services", self.services),
            ("distinct-requests", self.distinct_requests),
            ("connections", self.connections),
        ] {
            if value == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        match self.stop {
            Stop::After(duration) if duration.is_zero() => {
                problems.push("duration must be positive".to_owned());
            }
            Stop::Requests(0) => problems.push("requests must be at least 1".to_owned()),
            _ => {}
        }
        if self.time_spread.is_zero() {
            problems.push("time spread must be positive".to_owned());
        }
        if self.request_timeout.is_zero() {
            problems.push("request timeout must be positive".to_owned());
        }
        let endpoint = self.endpoint();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            problems.push(format!(
                "endpoint {endpoint:?} must be an http:// or https:// URL"
            ));
        }
        problems
    }
}

/// What can stop a load run from producing a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid options: {}", .0.join("; "))]
    InvalidOptions(Vec<String>),
    #[error("invalid grpc endpoint {endpoint}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connect to {endpoint} (is the server running?)")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("build the http client")]
    HttpClient(#[source] reqwest::Error),
    #[error("warm-up request to {endpoint} failed (is the server running?): {message}")]
    Unreachable { endpoint: String, message: String },
    #[error("read /proc/{pid} of the server process")]
    ServerProcess {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("gzip a request body")]
    Compress(#[source] std::io::Error),
    #[error("create a latency histogram")]
    Histogram(#[source] hdrhistogram::CreationError),
    #[error("merge latency histograms")]
    HistogramMerge(#[source] hdrhistogram::AdditionError),
    #[error("load task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Runs one load test and reports what it measured. Returns an error only when the run cannot
/// start (bad options, server unreachable, unreadable server pid); a run where every request
/// failed still yields a report, see [`Report::any_acked`].
pub async fn run(options: &Options) -> Result<Report, Error> {
    let problems = options.problems();
    if !problems.is_empty() {
        return Err(Error::InvalidOptions(problems));
    }
    let endpoint = options.endpoint().to_owned();

    let corpus = CorpusConfig {
        services: options.services,
        records_per_request: options.records_per_request,
        requests: options.distinct_requests,
        seed: options.seed,
        time_spread_ns: u64::try_from(options.time_spread.as_nanos()).unwrap_or(u64::MAX),
    };
    let (signal, transport, gzip) = (options.signal, options.transport, options.gzip);
    let base_time_ns = options.base_time_ns.unwrap_or_else(now_unix_nanos);
    let payloads = tokio::task::spawn_blocking(move || {
        transport::encode_payloads(signal, transport, gzip, &corpus, base_time_ns)
    })
    .await
    .map_err(Error::Task)??;
    let mean_request_bytes =
        payloads.iter().map(|p| p.body.len() as u64).sum::<u64>() / (payloads.len().max(1) as u64);
    let payloads: Arc<[Payload]> = payloads.into();

    let senders = Sender::connect(&Connect {
        signal,
        transport,
        endpoint: &endpoint,
        gzip,
        timeout: options.request_timeout,
        connections: options.connections,
        concurrency: options.concurrency,
    })
    .await?;

    let warmup_records_acked = warm_up(&senders, &payloads, &endpoint).await?;

    let ticks_per_second = tokio::task::spawn_blocking(procstat::clock_ticks_per_second)
        .await
        .map_err(Error::Task)?;
    let server_start = match options.server_pid {
        Some(pid) => Some((
            pid,
            procstat::cpu_ticks(Process::Pid(pid))
                .map_err(|source| Error::ServerProcess { pid, source })?,
        )),
        None => None,
    };
    let client_start = procstat::cpu_ticks(Process::Current).ok();

    let started = Instant::now();
    let budget = Arc::new(Budget {
        next: AtomicU64::new(0),
        stop: options.stop,
        deadline: match options.stop {
            Stop::After(duration) => Some(started + duration),
            Stop::Requests(_) => None,
        },
    });
    let mut tasks = Vec::with_capacity(options.concurrency);
    for index in 0..options.concurrency {
        let sender = senders
            .get(index % senders.len().max(1))
            .cloned()
            .ok_or_else(|| Error::InvalidOptions(vec!["no connection".to_owned()]))?;
        let stats = WorkerStats::new()?;
        tasks.push(tokio::spawn(worker(
            sender,
            Arc::clone(&payloads),
            Arc::clone(&budget),
            stats,
        )));
    }
    let mut stats = WorkerStats::new()?;
    for task in tasks {
        stats.merge(task.await.map_err(Error::Task)?)?;
    }
    let elapsed = started.elapsed().as_secs_f64();

    let ticks = ticks_per_second as f64;
    let client_cpu_seconds = client_start.and_then(|start| {
        let end = procstat::cpu_ticks(Process::Current).ok()?;
        Some(end.saturating_sub(start) as f64 / ticks)
    });
    let server = server_start.map(|(pid, start)| {
        let cpu_seconds = procstat::cpu_ticks(Process::Pid(pid))
            .ok()
            .map(|end| end.saturating_sub(start) as f64 / ticks);
        ServerUsage {
            pid,
            cpu_seconds,
            records_per_cpu_second: cpu_seconds
                .filter(|cpu| *cpu > 0.0)
                .map(|cpu| stats.records_acked as f64 / cpu),
            peak_rss_mib: procstat::peak_rss_kib(Process::Pid(pid))
                .ok()
                .map(|kib| kib as f64 / 1024.0),
        }
    });

    let ack_latency_ms = (!stats.latency_us.is_empty()).then(|| Latency {
        p50: stats.latency_us.value_at_quantile(0.50) as f64 / 1000.0,
        p90: stats.latency_us.value_at_quantile(0.90) as f64 / 1000.0,
        p99: stats.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        max: stats.latency_us.max() as f64 / 1000.0,
        mean: stats.latency_us.mean() / 1000.0,
    });
    let per_second = |count: u64| {
        if elapsed > 0.0 {
            count as f64 / elapsed
        } else {
            0.0
        }
    };
    Ok(Report {
        signal,
        transport,
        endpoint,
        gzip,
        concurrency: options.concurrency,
        records_per_request: options.records_per_request,
        distinct_requests: options.distinct_requests,
        mean_request_bytes,
        duration_seconds: elapsed,
        records_per_second: per_second(stats.records_acked),
        requests_per_second: per_second(stats.counts.total),
        requests: stats.counts,
        records_sent: stats.records_sent,
        records_acked: stats.records_acked,
        records_rejected: stats.records_rejected,
        ack_latency_ms,
        warmup_records_acked,
        server,
        client_cpu_seconds,
        first_error: stats.first_error,
    })
}

/// Sends the first payload once, unmeasured: opens pooled connections and fails fast, with the
/// server's own words, when nothing is listening or the endpoint is wrong. A throttled answer
/// is fine (the server is there, just busy). Returns the records the server accepted.
async fn warm_up(senders: &[Sender], payloads: &[Payload], endpoint: &str) -> Result<u64, Error> {
    let (Some(sender), Some(payload)) = (senders.first(), payloads.first()) else {
        return Ok(0);
    };
    match sender.clone().send(payload.body.clone()).await {
        Outcome::Ok => Ok(payload.records),
        Outcome::Partial { rejected } => Ok(payload.records.saturating_sub(rejected)),
        Outcome::Throttled => Ok(0),
        Outcome::Error { message, .. } => Err(Error::Unreachable {
            endpoint: endpoint.to_owned(),
            message,
        }),
    }
}

/// Shared stop condition: a request counter (also used to pick payloads round-robin) and a
/// deadline.
struct Budget {
    next: AtomicU64,
    stop: Stop,
    deadline: Option<Instant>,
}

impl Budget {
    /// The sequence number of the next request to send, or `None` when the run is over.
    fn take(&self) -> Option<u64> {
        if let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        match self.stop {
            Stop::Requests(max) if n >= max => None,
            _ => Some(n),
        }
    }
}

/// After a transport error (no answer at all), wait this long before the next request so a
/// dead server does not turn the client into a busy loop.
const TRANSPORT_ERROR_PAUSE: Duration = Duration::from_millis(50);

async fn worker(
    mut sender: Sender,
    payloads: Arc<[Payload]>,
    budget: Arc<Budget>,
    mut stats: WorkerStats,
) -> WorkerStats {
    let count = payloads.len() as u64;
    while let Some(n) = budget.take() {
        let index = usize::try_from(n % count.max(1)).unwrap_or(0);
        let Some(payload) = payloads.get(index) else {
            break;
        };
        let started = Instant::now();
        let outcome = sender.send(payload.body.clone()).await;
        let latency = started.elapsed();
        let pause = matches!(
            outcome,
            Outcome::Error {
                transport: true,
                ..
            }
        );
        stats.record(outcome, latency, payload.records);
        if pause {
            tokio::time::sleep(TRANSPORT_ERROR_PAUSE).await;
        }
    }
    stats
}

/// One task's tally; merged after the run so the hot loop shares nothing but the budget.
struct WorkerStats {
    counts: RequestCounts,
    records_sent: u64,
    records_acked: u64,
    records_rejected: u64,
    latency_us: Histogram<u64>,
    first_error: Option<String>,
}

impl WorkerStats {
    fn new() -> Result<Self, Error> {
        Ok(Self {
            counts: RequestCounts::default(),
            records_sent: 0,
            records_acked: 0,
            records_rejected: 0,
            // 1 µs to 1 hour at 3 significant digits.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .map_err(Error::Histogram)?,
            first_error: None,
        })
    }

    fn record(&mut self, outcome: Outcome, latency: Duration, records: u64) {
        self.counts.total += 1;
        self.records_sent += records;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        match outcome {
            Outcome::Ok => {
                self.counts.ok += 1;
                self.records_acked += records;
                self.latency_us.saturating_record(micros);
            }
            Outcome::Partial { rejected } => {
                self.counts.partial += 1;
                let rejected = rejected.min(records);
                self.records_rejected += rejected;
                self.records_acked += records - rejected;
                self.latency_us.saturating_record(micros);
            }
            Outcome::Throttled => self.counts.throttled += 1,
            Outcome::Error { message, .. } => {
                self.counts.error += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(message);
                }
            }
        }
    }

    fn merge(&mut self, other: Self) -> Result<(), Error> {
        self.counts.total += other.counts.total;
        self.counts.ok += other.counts.ok;
        self.counts.partial += other.counts.partial;
        self.counts.throttled += other.counts.throttled;
        self.counts.error += other.counts.error;
        self.records_sent += other.records_sent;
        self.records_acked += other.records_acked;
        self.records_rejected += other.records_rejected;
        self.latency_us
            .add(&other.latency_us)
            .map_err(Error::HistogramMerge)?;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Parses a duration such as `30s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 30s, 500ms, 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds)
        .map_err(|error| format!("invalid duration {text:?}: {error}"))
}

#[cfg(test)]
mod tests;
