//! Configuration: the TOML shape (`RawConfig`, serde, every field defaulted), validation that
//! reports every problem at once, and the validated `Config` the topology is built from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vigil_core::Redactor;
use vigil_core::redact::RedactionConfig;
use vigil_detector::DetectorConfig;

use crate::auth::AuthConfig;
use crate::limits::RateLimitConfig;
use crate::sinks::AlertsConfig;
use crate::tls::TlsConfig;

/// The only config version this build understands.
pub const CONFIG_VERSION: u32 = 1;

/// The config as written in TOML. Every section and field has a default, so an empty file
/// (or none) gives the embedded defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub version: u32,
    pub server: ServerConfig,
    pub ingest: IngestConfig,
    pub storage: StorageConfig,
    pub retention: RetentionConfig,
    pub query: QueryConfig,
    pub redaction: RedactionConfig,
    pub detector: DetectorConfig,
    pub alerts: AlertsConfig,
    pub auth: AuthConfig,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            server: ServerConfig::default(),
            ingest: IngestConfig::default(),
            storage: StorageConfig::default(),
            retention: RetentionConfig::default(),
            query: QueryConfig::default(),
            redaction: RedactionConfig::default(),
            detector: DetectorConfig::default(),
            alerts: AlertsConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// OTLP/gRPC listener.
    pub grpc_addr: SocketAddr,
    /// OTLP/HTTP listener.
    pub http_addr: SocketAddr,
    /// Query API, metrics and health listener.
    pub api_addr: SocketAddr,
    /// How long shutdown waits for in-flight requests before giving up on them.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// TLS (and mutual TLS) on the listeners.
    pub tls: TlsConfig,
    /// Lets a listener bind a non-loopback address without TLS and authentication. Logged
    /// loudly at start; for a network that is protected some other way.
    pub allow_insecure: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 4318)),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_timeout: Duration::from_secs(30),
            tls: TlsConfig::default(),
            allow_insecure: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest accepted request body, in bytes, measured after decompression.
    pub max_body_bytes: usize,
    /// Requests decoded and waiting for the WAL at once, across all receivers; more get
    /// UNAVAILABLE / 503 with Retry-After.
    pub max_in_flight_requests: usize,
    /// Retry-After advice given to throttled clients.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Token-bucket limits per API key and per service.
    pub rate_limits: RateLimitConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_in_flight_requests: 256,
            retry_after: Duration::from_secs(1),
            rate_limits: RateLimitConfig::default(),
        }
    }
}

/// When the WAL is fsynced relative to acknowledging a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalSync {
    /// fsync before acknowledging (group commit: concurrent requests share one fsync).
    Always,
    /// Acknowledge after the write; fsync every `sync_interval`. Faster, may lose the last
    /// interval's acknowledged records if the machine (not just Vigil) crashes.
    Interval,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where the WAL and Parquet files live.
    pub data_dir: PathBuf,
    pub wal_sync: WalSync,
    /// fsync period for `wal_sync = "interval"`.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// A WAL segment is closed and compacted once it holds this many bytes...
    pub segment_max_bytes: u64,
    /// ...or once it is this old, whichever comes first.
    #[serde(with = "humantime_serde")]
    pub segment_max_age: Duration,
    /// Closed segments waiting for compaction before ingest is throttled.
    pub max_pending_segments: usize,
    /// Rows per Parquet row group.
    pub parquet_row_group_rows: usize,
    /// zstd level for Parquet pages.
    pub parquet_zstd_level: i32,
    /// Encryption at rest of the WAL and Parquet files (off unless a keyring is configured).
    pub encryption: crate::storage::crypto::EncryptionConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("vigil-data"),
            wal_sync: WalSync::Always,
            sync_interval: Duration::from_millis(200),
            segment_max_bytes: 64 * 1024 * 1024,
            segment_max_age: Duration::from_secs(60),
            max_pending_segments: 2,
            parquet_row_group_rows: 128 * 1024,
            parquet_zstd_level: 1,
            encryption: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Data whose newest record is older than this is deleted.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Oldest Parquet files are deleted while the total exceeds this many bytes.
    pub max_bytes: u64,
    /// How often retention runs.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 50 * 1024 * 1024 * 1024,
            check_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A query running longer is cancelled.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Memory one query may use for joins, sorts and aggregations.
    pub memory_limit_bytes: usize,
    /// Rows one answer may hold; larger results are refused with a clear error.
    pub max_result_rows: usize,
    /// Threads queries run on, apart from ingest's: a heavy query slows other queries, never
    /// the acknowledgement of incoming telemetry. Also the partitions one query is split into.
    pub threads: usize,
    /// Memory for the `trace_id` bloom filters of Parquet files, kept after a lookup by trace
    /// id reads them so the next lookup plans only the files that may hold its trace. 0 reads
    /// them from the files on every lookup.
    pub trace_filter_cache_bytes: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_limit_bytes: 1024 * 1024 * 1024,
            max_result_rows: 100_000,
            threads: 2,
            trace_filter_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A config that has passed validation. Only [`RawConfig::validate`] makes one.
#[derive(Debug, Clone)]
pub struct Config(RawConfig);

impl std::ops::Deref for Config {
    type Target = RawConfig;
    fn deref(&self) -> &RawConfig {
        &self.0
    }
}

/// Everything wrong with a config, each problem on its own line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl RawConfig {
    /// Step one: parse TOML.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Step two: check every rule, collect every problem.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        if self.version != CONFIG_VERSION {
            problems.push(format!(
                "version = {} is not supported; this build reads version {CONFIG_VERSION}",
                self.version
            ));
        }
        let listeners = [
            ("server.grpc_addr", self.server.grpc_addr),
            ("server.http_addr", self.server.http_addr),
            ("server.api_addr", self.server.api_addr),
        ];
        let secured = self.server.tls.enabled() && self.auth.enabled();
        for (name, addr) in listeners {
            if !addr.ip().is_loopback() && !secured && !self.server.allow_insecure {
                problems.push(format!(
                    "{name} = {addr} is not a loopback address, and TLS (server.tls) and \
                     authentication (auth.keys_file) are not both configured: refusing to \
                     expose telemetry endpoints without them (server.allow_insecure = true \
                     overrides this)"
                ));
            }
        }
        problems.extend(self.server.tls.validate());
        if self.auth.client_certs.is_some() && self.server.tls.mtls.is_empty() {
            problems.push(
                "auth.client_certs identifies callers by their client certificates, but no \
                 listener asks for one: list listeners in server.tls.mtls"
                    .to_owned(),
            );
        }
        for (i, (a_name, a)) in listeners.iter().enumerate() {
            for (b_name, b) in listeners.iter().skip(i + 1) {
                if a == b && a.port() != 0 {
                    problems.push(format!("{a_name} and {b_name} both use {a}"));
                }
            }
        }
        let positive = [
            ("ingest.max_body_bytes", self.ingest.max_body_bytes as u64),
            (
                "ingest.max_in_flight_requests",
                self.ingest.max_in_flight_requests as u64,
            ),
            ("storage.segment_max_bytes", self.storage.segment_max_bytes),
            (
                "storage.max_pending_segments",
                self.storage.max_pending_segments as u64,
            ),
            (
                "storage.parquet_row_group_rows",
                self.storage.parquet_row_group_rows as u64,
            ),
            ("retention.max_bytes", self.retention.max_bytes),
            (
                "query.memory_limit_bytes",
                self.query.memory_limit_bytes as u64,
            ),
            ("query.max_result_rows", self.query.max_result_rows as u64),
            ("query.threads", self.query.threads as u64),
        ];
        for (name, v) in positive {
            if v == 0 {
                problems.push(format!("{name} must be greater than 0"));
            }
        }
        let durations = [
            ("storage.sync_interval", self.storage.sync_interval),
            ("storage.segment_max_age", self.storage.segment_max_age),
            ("retention.max_age", self.retention.max_age),
            ("retention.check_interval", self.retention.check_interval),
            ("query.timeout", self.query.timeout),
        ];
        for (name, d) in durations {
            if d.is_zero() {
                problems.push(format!("{name} must be longer than 0s"));
            }
        }
        if !(1..=22).contains(&self.storage.parquet_zstd_level) {
            problems.push(format!(
                "storage.parquet_zstd_level = {} must be between 1 and 22",
                self.storage.parquet_zstd_level
            ));
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            problems.push("storage.data_dir must not be empty".into());
        }
        let redaction = &self.redaction;
        if redaction.hash_key_env.is_some() && redaction.hash_key_file.is_some() {
            problems.push("redaction: set hash_key_env or hash_key_file, not both".into());
        }
        if let Err(e) = Redactor::check(redaction) {
            problems.extend(e.0);
        }
        problems.extend(self.detector.validate());
        problems.extend(self.alerts.validate());
        problems.extend(self.auth.validate());
        if problems.is_empty() {
            Ok(Config(self))
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

impl Config {
    /// The embedded defaults (what `vigil serve` runs without `--config`).
    pub fn embedded_default() -> Result<Self, ConfigError> {
        RawConfig::default().validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> RawConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/vigil.toml");
        RawConfig::load(&path).expect("shipped config parses")
    }

    #[test]
    fn shipped_config_is_valid_and_matches_the_embedded_defaults() {
        let file = shipped();
        let defaults = RawConfig::default();
        // The shipped file documents the defaults: they must not drift apart.
        assert_eq!(format!("{file:?}"), format!("{defaults:?}"));
        file.validate().expect("shipped config validates");
    }

    #[test]
    fn empty_file_gives_embedded_defaults() {
        let c = RawConfig::parse("", Path::new("empty.toml")).unwrap();
        assert_eq!(format!("{c:?}"), format!("{:?}", RawConfig::default()));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            RawConfig::parse("[storage]\ndata_dri = \"x\"\n", Path::new("t.toml")).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `data_dri`"),
            "{err}"
        );
    }

    #[test]
    fn validation_reports_every_problem() {
        let text = r#"
            version = 2
            [server]
            grpc_addr = "0.0.0.0:4317"
            http_addr = "127.0.0.1:9000"
            api_addr = "127.0.0.1:9000"
            [ingest]
            max_body_bytes = 0
            [storage]
            parquet_zstd_level = 40
            [query]
            timeout = "0s"
        "#;
        let err = RawConfig::parse(text, Path::new("t.toml"))
            .unwrap()
            .validate()
            .unwrap_err();
        let msg = err.to_string();
        for needle in [
            "version = 2",
            "server.grpc_addr = 0.0.0.0:4317 is not a loopback address",
            "server.http_addr and server.api_addr both use 127.0.0.1:9000",
            "ingest.max_body_bytes must be greater than 0",
            "parquet_zstd_level = 40",
            "query.timeout must be longer than 0s",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
        }
    }
}
