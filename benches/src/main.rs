//! `vigil-loadgen`: closed-loop OTLP load generator for Vigil (or any OTLP receiver).
//! A thin command-line wrapper around [`vigil_benches::run`].

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use vigil_benches::{Options, Signal, Stop, Transport, parse_duration};

/// Send OTLP logs or traces to a receiver from N concurrent closed-loop clients and report
/// throughput, ack latency and the server's CPU and memory cost.
#[derive(Debug, Parser)]
#[command(name = "vigil-loadgen", version)]
struct Args {
    /// Signal to send.
    #[arg(long, value_enum, default_value_t = Signal::Logs)]
    signal: Signal,
    /// OTLP transport.
    #[arg(long, value_enum, default_value_t = Transport::Grpc)]
    transport: Transport,
    /// Base URL of the receiver [default: http://127.0.0.1:4317 for grpc,
    /// http://127.0.0.1:4318 for http, which gets /v1/logs or /v1/traces appended].
    #[arg(long)]
    endpoint: Option<String>,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Run this long (e.g. 30s, 500ms, 2m) [default: 30s].
    #[arg(long, value_parser = parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Send exactly this many requests instead of running for a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Log records (or spans) per request.
    #[arg(long, default_value_t = 512)]
    records_per_request: usize,
    /// Distinct services (resources) in the corpus.
    #[arg(long, default_value_t = 8)]
    services: usize,
    /// Distinct requests built before the run and sent round-robin.
    #[arg(long, default_value_t = 64)]
    distinct_requests: usize,
    /// Compress requests with gzip.
    #[arg(long)]
    gzip: bool,
    /// gRPC connections shared by the clients (HTTP uses a connection pool).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Per-request timeout.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    request_timeout: Duration,
    /// Pid of the server, to report its CPU time and peak RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Corpus seed.
    #[arg(long, default_value_t = Options::default().seed)]
    seed: u64,
    /// Timestamp of the first record, in Unix seconds [default: now].
    #[arg(long, value_name = "UNIX_SECONDS")]
    start_time: Option<u64>,
    /// Wall-clock time the records' timestamps are spread over, in request order (e.g. 1h for
    /// a store covering an hour; requests sent more than once repeat their timestamps).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    time_spread: Duration,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Tokio worker threads for the clients [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
}

impl Args {
    fn options(&self) -> Options {
        let stop = match (self.requests, self.duration) {
            (Some(requests), _) => Stop::Requests(requests),
            (None, Some(duration)) => Stop::After(duration),
            (None, None) => Stop::After(Duration::from_secs(30)),
        };
        Options {
            signal: self.signal,
            transport: self.transport,
            endpoint: self.endpoint.clone(),
            concurrency: self.concurrency,
            stop,
            records_per_request: self.records_per_request,
            services: self.services,
            distinct_requests: self.distinct_requests,
            gzip: self.gzip,
            connections: self.connections,
            request_timeout: self.request_timeout,
            server_pid: self.server_pid,
            seed: self.seed,
            base_time_ns: self
                .start_time
                .map(|seconds| seconds.saturating_mul(1_000_000_000)),
            time_spread: self.time_spread,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("vigil-loadgen: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.build().context("start the tokio runtime")?;
    let report = runtime.block_on(vigil_benches::run(&args.options()))?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    if report.any_acked() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "vigil-loadgen: error: every request failed ({} throttled, {} errors){}",
            report.requests.throttled,
            report.requests.error,
            report
                .first_error
                .as_deref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        );
        Ok(ExitCode::FAILURE)
    }
}
