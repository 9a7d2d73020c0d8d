//! Per-service baselines learned from the traffic itself: request, error and auth-failure counts,
//! p95 latency, bytes and distinct sources per time bucket, scored against the service's own past.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;
use std::time::Duration;

use aho_corasick::{AhoCorasick, MatchKind};
use arrow::array::{Array, StringArray};
use arrow::buffer::BooleanBuffer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use vigil_core::Signal;
use vigil_core::time::duration_ns;

use crate::alert::{AlertKey, Candidate, Observation, Severity};
use crate::prefilter::lowercase;
use crate::view::{BatchView, IntColumn};

/// Tuning of the baselines (`[detector.baselines]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// When false, baselines observe nothing and never alert.
    pub enabled: bool,
    /// Width of one bucket of arrival time; every metric is one number per service per bucket.
    #[serde(with = "humantime_serde")]
    pub bucket: Duration,
    /// Weight of the newest bucket in the moving mean and variance, in (0, 1].
    pub alpha: f64,
    /// A bucket is anomalous at this many standard deviations (robust ones for latency).
    pub z_threshold: f64,
    /// A firing metric counts a bucket as normal again below this score.
    pub z_recover: f64,
    /// Counts must also exceed the baseline by at least this many (records, addresses).
    pub min_delta: u64,
    /// Bytes must also exceed the baseline by at least this many.
    pub min_delta_bytes: u64,
    /// Closed buckets a metric learns from before it may alert.
    pub warmup_buckets: u32,
    /// A metric fires when `sustain_k` of the last `sustain_n` buckets were anomalous.
    pub sustain_k: u32,
    pub sustain_n: u32,
    /// A firing metric clears after this many consecutive normal buckets.
    pub recover_buckets: u32,
    /// Buckets of p95 latency the median and MAD are taken over.
    pub latency_window: u32,
    /// A bucket's p95 latency counts only when it has at least this many SERVER spans.
    pub min_latency_samples: u32,
    /// Services tracked at most; records of further services are ignored and counted.
    pub max_services: usize,
    /// Distinct source addresses counted per service and bucket; beyond this the count saturates.
    pub max_source_addresses: usize,
    /// After firing this many buckets in a row, a metric accepts the new level as normal: it
    /// clears, forgets its model and warms up again. 0 keeps firing for as long as it lasts.
    pub relearn_after_buckets: u32,
    /// A service that sent nothing for this long is forgotten (its firing metrics clear).
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bucket: Duration::from_secs(60),
            alpha: 0.1,
            z_threshold: 4.0,
            z_recover: 2.0,
            min_delta: 20,
            min_delta_bytes: 1 << 20,
            warmup_buckets: 10,
            sustain_k: 2,
            sustain_n: 3,
            recover_buckets: 3,
            latency_window: 30,
            min_latency_samples: 20,
            max_services: 1000,
            max_source_addresses: 10_000,
            relearn_after_buckets: 60,
            forget_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl BaselineConfig {
    /// Every problem with the values, one message each.
    pub fn validate(&self) -> Vec<String> {
        const P: &str = "detector.baselines";
        let mut problems = Vec::new();
        let mut check = |ok: bool, message: String| {
            if !ok {
                problems.push(message);
            }
        };
        check(
            !self.bucket.is_zero(),
            format!("{P}.bucket must be greater than zero"),
        );
        check(
            self.alpha > 0.0 && self.alpha <= 1.0,
            format!("{P}.alpha must be in (0, 1], got {}", self.alpha),
        );
        check(
            self.z_threshold.is_finite() && self.z_threshold > 0.0,
            format!(
                "{P}.z_threshold must be a positive number, got {}",
                self.z_threshold
            ),
        );
        check(
            self.z_recover.is_finite() && self.z_recover > 0.0,
            format!(
                "{P}.z_recover must be a positive number, got {}",
                self.z_recover
            ),
        );
        check(
            self.z_recover <= self.z_threshold,
            format!(
                "{P}.z_recover ({}) must not exceed {P}.z_threshold ({})",
                self.z_recover, self.z_threshold
            ),
        );
        check(
            self.sustain_n >= 1,
            format!("{P}.sustain_n must be at least 1"),
        );
        check(
            self.sustain_k >= 1,
            format!("{P}.sustain_k must be at least 1"),
        );
        check(
            self.sustain_k <= self.sustain_n,
            format!(
                "{P}.sustain_k ({}) must not exceed {P}.sustain_n ({})",
                self.sustain_k, self.sustain_n
            ),
        );
        check(
            self.recover_buckets >= 1,
            format!("{P}.recover_buckets must be at least 1"),
        );
        check(
            self.latency_window >= 3,
            format!(
                "{P}.latency_window must be at least 3, got {}",
                self.latency_window
            ),
        );
        check(
            self.min_latency_samples >= 1,
            format!("{P}.min_latency_samples must be at least 1"),
        );
        check(
            self.max_services >= 1,
            format!("{P}.max_services must be at least 1"),
        );
        check(
            self.max_source_addresses >= 1,
            format!("{P}.max_source_addresses must be at least 1"),
        );
        check(
            self.forget_after >= self.bucket,
            format!("{P}.forget_after must be at least one bucket"),
        );
        problems
    }
}

/// Per-service baselines: counts records into buckets of arrival time and, as buckets close,
/// compares each service's numbers with what it usually does.
pub struct Baselines {
    config: BaselineConfig,
    bucket_ns: i64,
    forget_after_ns: i64,
    services: BTreeMap<String, ServiceState>,
    /// Start of the bucket records are counted into; `None` until the first call.
    open_start: Option<i64>,
    /// Observations of buckets closed by `observe`, handed out by the next `tick`.
    pending: Vec<Observation>,
    untracked_records: u64,
    warned_full: bool,
}

impl Baselines {
    pub fn new(config: BaselineConfig) -> Self {
        Self {
            bucket_ns: duration_ns(config.bucket).max(1),
            forget_after_ns: duration_ns(config.forget_after).max(1),
            config,
            services: BTreeMap::new(),
            open_start: None,
            pending: Vec::new(),
            untracked_records: 0,
            warned_full: false,
        }
    }

    /// Adds a batch's records to the current bucket of each service (bucketed by arrival time
    /// `now_ns`, not event time). Buckets that ended by `now_ns` are closed first; what they
    /// raise is returned by the next `tick`.
    pub fn observe(&mut self, view: &BatchView<'_>, now_ns: i64) {
        if !self.config.enabled {
            return;
        }
        self.advance(now_ns);
        let signal = view.signal();
        if !matches!(signal, Signal::Logs | Signal::Spans) {
            return;
        }
        let rows = view.len();
        let columns = Columns::new(view);
        let mut row = 0;
        // Rows of one resource share a service; look the service up once per run.
        while row < rows {
            let name = view.service(row);
            let mut end = row + 1;
            while end < rows && view.service(end) == name {
                end += 1;
            }
            let config = &self.config;
            match service_entry(&mut self.services, config, &mut self.warned_full, name) {
                Some(state) => {
                    state.last_seen_ns = now_ns;
                    for r in row..end {
                        state.open.add(&columns, r, config);
                    }
                }
                None => self.untracked_records += (end - row) as u64,
            }
            row = end;
        }
    }

    /// Closes every bucket that ended at or before `now_ns` (also empty buckets for known
    /// services: a service going silent is a zero count), updates the models and returns Fire /
    /// Clear observations.
    pub fn tick(&mut self, now_ns: i64) -> Vec<Observation> {
        if !self.config.enabled {
            return Vec::new();
        }
        self.advance(now_ns);
        std::mem::take(&mut self.pending)
    }

    /// Records ignored because `max_services` services were already tracked.
    pub fn untracked_records(&self) -> u64 {
        self.untracked_records
    }

    /// Services with a baseline now.
    pub fn services(&self) -> usize {
        self.services.len()
    }

    fn align(&self, now_ns: i64) -> i64 {
        now_ns
            .div_euclid(self.bucket_ns)
            .saturating_mul(self.bucket_ns)
    }

    /// Closes the buckets that ended by `now_ns`. After a long gap only the first few are
    /// closed one by one (enough for a silent service to fire and for alerts to clear); the
    /// rest are skipped and bucketing realigns to `now_ns`.
    fn advance(&mut self, now_ns: i64) {
        let Some(start) = self.open_start else {
            self.open_start = Some(self.align(now_ns));
            return;
        };
        let due = now_ns.saturating_sub(start).div_euclid(self.bucket_ns);
        if due <= 0 {
            return;
        }
        let cap = 1 + i64::from(self.config.sustain_n) + i64::from(self.config.recover_buckets);
        if due > cap {
            tracing::debug!(
                skipped_buckets = due - cap,
                "baseline clock jumped, skipping empty buckets"
            );
        }
        for i in 0..due.min(cap) {
            let end = start.saturating_add((i + 1).saturating_mul(self.bucket_ns));
            self.close_bucket(end);
        }
        self.open_start = Some(self.align(now_ns));
        self.forget_idle(now_ns);
    }

    fn close_bucket(&mut self, end_ns: i64) {
        let config = &self.config;
        for (name, state) in &mut self.services {
            let bucket = std::mem::take(&mut state.open);
            let values = bucket.values(config);
            for (metric, value) in state.metrics.iter_mut().zip(values) {
                metric.close(value, config, name, end_ns, &mut self.pending);
            }
        }
    }

    fn forget_idle(&mut self, now_ns: i64) {
        let forget_after = self.forget_after_ns;
        let pending = &mut self.pending;
        self.services.retain(|name, state| {
            let idle = now_ns.saturating_sub(state.last_seen_ns) >= forget_after;
            if idle {
                for m in &state.metrics {
                    if m.firing.is_some() {
                        pending.push(Observation::Clear(m.metric.key(name)));
                    }
                }
            }
            !idle
        });
    }

    /// What every service's metrics expect and last saw. With `service` set, only that
    /// service (none when unknown), with each metric's recent buckets.
    pub fn snapshot(&self, service: Option<&str>) -> BaselinesSnapshot {
        let services = match service {
            Some(name) => self
                .services
                .get_key_value(name)
                .map(|(name, state)| state.snapshot(name, &self.config, true))
                .into_iter()
                .collect(),
            None => self
                .services
                .iter()
                .map(|(name, state)| state.snapshot(name, &self.config, false))
                .collect(),
        };
        BaselinesSnapshot {
            enabled: self.config.enabled,
            bucket_seconds: self.config.bucket.as_secs_f64(),
            warmup_buckets: self.config.warmup_buckets,
            z_threshold: self.config.z_threshold,
            services,
        }
    }

    /// The learned expectation of `metric` (`error_rate`, `latency_p95`, ...) for `service`.
    #[cfg(test)]
    fn expected(&self, service: &str, metric: &str) -> Option<f64> {
        let state = self.services.get(service)?;
        let m = state.metrics.iter().find(|m| m.metric.name() == metric)?;
        Some(m.model.expected())
    }
}

/// What the baselines hold, for display (the console's per-service view).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselinesSnapshot {
    pub enabled: bool,
    /// Width of a bucket: every value is a count (or p95, or sum) per bucket.
    pub bucket_seconds: f64,
    pub warmup_buckets: u32,
    pub z_threshold: f64,
    pub services: Vec<ServiceBaseline>,
}

/// One service's metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceBaseline {
    pub service: String,
    /// Arrival time of its last record.
    pub last_seen_ns: i64,
    pub metrics: Vec<MetricBaseline>,
}

/// One metric of one service: its model now and its recent buckets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricBaseline {
    /// `request_rate`, `error_rate`, `auth_failures`, `latency_p95`, `bytes`, `source_addresses`.
    pub metric: &'static str,
    /// What a value counts: `requests`, `errors`, `failures`, `ns`, `bytes`, `addresses`.
    pub unit: &'static str,
    /// Buckets learned since the model (re)started.
    pub learned_buckets: u32,
    /// Still learning: it cannot alert yet.
    pub warming_up: bool,
    /// The model's expectation and spread now; `None` before it learned anything.
    pub expected: Option<f64>,
    pub spread: Option<f64>,
    /// `spike` or `drop` while firing.
    pub firing: Option<&'static str>,
    /// The last closed bucket with a value.
    pub last: Option<BucketPoint>,
    /// Recent closed buckets, oldest first (only in a one-service snapshot).
    pub history: Vec<BucketPoint>,
}

/// One closed bucket of a metric, as it was scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BucketPoint {
    pub end_ns: i64,
    pub observed: f64,
    /// The expectation and spread the bucket was scored against (before learning from it);
    /// `None` when the model had nothing yet.
    pub expected: Option<f64>,
    pub spread: Option<f64>,
    /// Standard (or robust) deviations from the expectation.
    pub score: Option<f64>,
    /// `spike` or `drop` when the bucket was anomalous.
    pub anomaly: Option<&'static str>,
    /// Learned from during warm-up, not scored.
    pub warmup: bool,
}

/// Closed buckets of history kept per metric for display.
const HISTORY_BUCKETS: usize = 60;

/// The state of service `name`, created if fewer than `max_services` are tracked.
fn service_entry<'s>(
    services: &'s mut BTreeMap<String, ServiceState>,
    config: &BaselineConfig,
    warned_full: &mut bool,
    name: &str,
) -> Option<&'s mut ServiceState> {
    if !services.contains_key(name) {
        if services.len() >= config.max_services {
            if !*warned_full {
                *warned_full = true;
                tracing::warn!(
                    max_services = config.max_services,
                    "baseline service limit reached, ignoring records of new services"
                );
            }
            return None;
        }
        services.insert(name.to_owned(), ServiceState::new(config));
    }
    services.get_mut(name)
}

/// The metrics, one model each per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    RequestRate,
    ErrorRate,
    AuthFailures,
    LatencyP95,
    Bytes,
    SourceAddresses,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Spike,
    Drop,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Spike => "spike",
            Direction::Drop => "drop",
        }
    }
}

impl Metric {
    const ALL: [Metric; 6] = [
        Metric::RequestRate,
        Metric::ErrorRate,
        Metric::AuthFailures,
        Metric::LatencyP95,
        Metric::Bytes,
        Metric::SourceAddresses,
    ];

    fn name(self) -> &'static str {
        match self {
            Metric::RequestRate => "request_rate",
            Metric::ErrorRate => "error_rate",
            Metric::AuthFailures => "auth_failures",
            Metric::LatencyP95 => "latency_p95",
            Metric::Bytes => "bytes",
            Metric::SourceAddresses => "source_addresses",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::RequestRate => "requests",
            Metric::ErrorRate => "errors",
            Metric::AuthFailures => "failures",
            Metric::LatencyP95 => "ns",
            Metric::Bytes => "bytes",
            Metric::SourceAddresses => "addresses",
        }
    }

    fn key(self, service: &str) -> AlertKey {
        AlertKey::new(format!("baseline.{}", self.name()), service)
    }

    fn title(self, direction: Direction) -> &'static str {
        match (self, direction) {
            (Metric::RequestRate, Direction::Drop) => "Request rate below baseline",
            (Metric::RequestRate, Direction::Spike) => "Request rate above baseline",
            (Metric::ErrorRate, _) => "Error rate above baseline",
            (Metric::AuthFailures, _) => "Authentication failures above baseline",
            (Metric::LatencyP95, _) => "Latency p95 above baseline",
            (Metric::Bytes, _) => "Transferred bytes above baseline",
            (Metric::SourceAddresses, _) => "Distinct source addresses above baseline",
        }
    }

    fn severity(self, direction: Direction) -> Severity {
        match (self, direction) {
            (Metric::ErrorRate | Metric::AuthFailures, Direction::Spike) => Severity::High,
            _ => Severity::Medium,
        }
    }

    fn detects_drops(self) -> bool {
        self == Metric::RequestRate
    }

    /// The smallest excess over the baseline worth an alert.
    fn min_delta(self, config: &BaselineConfig) -> f64 {
        match self {
            Metric::LatencyP95 => 0.0,
            Metric::Bytes => config.min_delta_bytes as f64,
            _ => config.min_delta as f64,
        }
    }

    fn new_model(self, config: &BaselineConfig) -> Model {
        match self {
            Metric::LatencyP95 => Model::Robust(Window {
                values: VecDeque::new(),
                cap: (config.latency_window as usize).max(1),
            }),
            Metric::Bytes => Model::Ewma(Ewma::new(Floor::Sum)),
            _ => Model::Ewma(Ewma::new(Floor::Count)),
        }
    }

    /// Where `x` lies against `score`, with thresholds scaled down by `scale` for recovery.
    fn anomaly(
        self,
        x: f64,
        score: &Score,
        z: f64,
        scale: f64,
        config: &BaselineConfig,
    ) -> Option<Direction> {
        let min_delta = self.min_delta(config) * scale;
        if score.z >= z && x - score.expected >= min_delta {
            Some(Direction::Spike)
        } else if self.detects_drops() && score.z <= -z && score.expected >= min_delta {
            Some(Direction::Drop)
        } else {
            None
        }
    }

    fn describe(self, service: &str, x: f64, score: &Score, bucket_seconds: f64) -> String {
        let (observed, expected) = match self {
            Metric::LatencyP95 => (
                format!("p95 latency {:.1} ms", x / 1e6),
                format!("{:.1} ms", score.expected / 1e6),
            ),
            Metric::Bytes => (
                format!("{:.2} MiB transferred", x / MIB),
                format!("{:.2} MiB", score.expected / MIB),
            ),
            _ => {
                let noun = match self {
                    Metric::RequestRate => "requests",
                    Metric::ErrorRate => "errors",
                    Metric::AuthFailures => "authentication failures",
                    _ => "distinct source addresses",
                };
                (format!("{x:.0} {noun}"), format!("{:.1}", score.expected))
            }
        };
        format!(
            "{service}: {observed} in {bucket_seconds}s, expected about {expected} (score {:.1})",
            score.z
        )
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// How a bucket's value compares with the model.
#[derive(Debug, Clone, Copy)]
struct Score {
    /// Mean (EWMA) or median (latency).
    expected: f64,
    /// Standard deviation or scaled MAD, after its floor.
    spread: f64,
    z: f64,
}

/// Lower bound on the variance a count or sum is scored with, so that quiet metrics with
/// almost no variance do not alarm on noise.
#[derive(Debug, Clone, Copy)]
enum Floor {
    /// Poisson: variance at least the mean.
    Count,
    /// Sums of sizes: standard deviation at least 5% of the mean.
    Sum,
}

/// Exponentially weighted mean and variance; the first buckets are averaged evenly.
#[derive(Debug, Clone)]
struct Ewma {
    floor: Floor,
    n: u64,
    mean: f64,
    var: f64,
}

impl Ewma {
    fn new(floor: Floor) -> Self {
        Self {
            floor,
            n: 0,
            mean: 0.0,
            var: 0.0,
        }
    }

    fn learn(&mut self, x: f64, alpha: f64) {
        self.n = self.n.saturating_add(1);
        // 1/n while that is larger: the plain mean and variance of the first buckets.
        let a = alpha.max(1.0 / self.n as f64);
        let d = x - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
    }

    fn score(&self, x: f64) -> Score {
        let floor = match self.floor {
            Floor::Count => self.mean,
            Floor::Sum => self.mean.max((0.05 * self.mean).powi(2)),
        };
        let spread = self.var.max(floor).max(1.0).sqrt();
        Score {
            expected: self.mean,
            spread,
            z: (x - self.mean) / spread,
        }
    }
}

/// The last bucket values, scored by median and MAD.
#[derive(Debug, Clone)]
struct Window {
    values: VecDeque<f64>,
    cap: usize,
}

/// Scaled MAD floor: 5% of the median, and at least 1 ms.
const MIN_RELATIVE_SPREAD: f64 = 0.05;
const MIN_LATENCY_SPREAD_NS: f64 = 1e6;

impl Window {
    fn learn(&mut self, x: f64) {
        self.values.push_back(x);
        while self.values.len() > self.cap {
            self.values.pop_front();
        }
    }

    fn score(&self, x: f64) -> Score {
        let mut sorted: Vec<f64> = self.values.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let median = median_of(&sorted);
        let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - median).abs()).collect();
        deviations.sort_by(f64::total_cmp);
        let mad = median_of(&deviations);
        let spread = (1.4826 * mad)
            .max(MIN_RELATIVE_SPREAD * median)
            .max(MIN_LATENCY_SPREAD_NS);
        Score {
            expected: median,
            spread,
            z: (x - median) / spread,
        }
    }
}

/// Median of sorted values; 0 when empty.
fn median_of(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    let upper = sorted.get(n / 2).copied().unwrap_or(0.0);
    if n % 2 == 1 {
        return upper;
    }
    match (n / 2).checked_sub(1).and_then(|i| sorted.get(i)) {
        Some(lower) => (lower + upper) / 2.0,
        None => upper,
    }
}

#[derive(Debug, Clone)]
enum Model {
    Ewma(Ewma),
    Robust(Window),
}

impl Model {
    fn learn(&mut self, x: f64, alpha: f64) {
        match self {
            Model::Ewma(m) => m.learn(x, alpha),
            Model::Robust(w) => w.learn(x),
        }
    }

    fn score(&self, x: f64) -> Score {
        match self {
            Model::Ewma(m) => m.score(x),
            Model::Robust(w) => w.score(x),
        }
    }

    #[cfg(test)]
    fn expected(&self) -> f64 {
        self.score(0.0).expected
    }
}

/// A metric that is firing.
#[derive(Debug, Clone, Copy)]
struct Firing {
    direction: Direction,
    /// Consecutive buckets below the recovery threshold.
    normal_streak: u32,
    /// Buckets since it started firing.
    buckets: u32,
}

/// One metric of one service: its model, recent anomalies and firing state.
#[derive(Debug, Clone)]
struct MetricState {
    metric: Metric,
    model: Model,
    /// Buckets learned from since the model was (re)started.
    learned: u32,
    /// Anomalies of the last `sustain_n` scored buckets.
    recent: VecDeque<Option<Direction>>,
    firing: Option<Firing>,
    /// The last `HISTORY_BUCKETS` closed buckets with a value, for display.
    history: VecDeque<BucketPoint>,
}

impl MetricState {
    fn new(metric: Metric, config: &BaselineConfig) -> Self {
        Self {
            metric,
            model: metric.new_model(config),
            learned: 0,
            recent: VecDeque::new(),
            firing: None,
            history: VecDeque::new(),
        }
    }

    /// Forgets the model and its anomalies; the displayed history stays.
    fn restart(&mut self, config: &BaselineConfig) {
        let history = std::mem::take(&mut self.history);
        *self = Self::new(self.metric, config);
        self.history = history;
    }

    fn remember(&mut self, point: BucketPoint) {
        self.history.push_back(point);
        while self.history.len() > HISTORY_BUCKETS {
            self.history.pop_front();
        }
    }

    fn snapshot(&self, config: &BaselineConfig, with_history: bool) -> MetricBaseline {
        let model = (self.learned > 0).then(|| self.model.score(0.0));
        MetricBaseline {
            metric: self.metric.name(),
            unit: self.metric.unit(),
            learned_buckets: self.learned,
            warming_up: self.learned < config.warmup_buckets,
            expected: model.map(|s| round3(s.expected)),
            spread: model.map(|s| round3(s.spread)),
            firing: self.firing.map(|f| f.direction.as_str()),
            last: self.history.back().copied(),
            history: if with_history {
                self.history.iter().copied().collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Scores a closed bucket's value (`None`: no data, e.g. too few spans for a p95), then
    /// learns from it unless it was anomalous or the metric is firing.
    fn close(
        &mut self,
        value: Option<f64>,
        config: &BaselineConfig,
        service: &str,
        end_ns: i64,
        out: &mut Vec<Observation>,
    ) {
        let Some(x) = value else {
            return;
        };
        if self.learned < config.warmup_buckets {
            let before = (self.learned > 0).then(|| self.model.score(x));
            self.remember(BucketPoint {
                end_ns,
                observed: round3(x),
                expected: before.map(|s| round3(s.expected)),
                spread: before.map(|s| round3(s.spread)),
                score: before.map(|s| round3(s.z)),
                anomaly: None,
                warmup: true,
            });
            self.model.learn(x, config.alpha);
            self.learned += 1;
            return;
        }
        let score = self.model.score(x);
        let anomaly = self
            .metric
            .anomaly(x, &score, config.z_threshold, 1.0, config);
        self.remember(BucketPoint {
            end_ns,
            observed: round3(x),
            expected: Some(round3(score.expected)),
            spread: Some(round3(score.spread)),
            score: Some(round3(score.z)),
            anomaly: anomaly.map(Direction::as_str),
            warmup: false,
        });
        self.recent.push_back(anomaly);
        while self.recent.len() > (config.sustain_n as usize).max(1) {
            self.recent.pop_front();
        }

        if let Some(firing) = &mut self.firing {
            firing.buckets = firing.buckets.saturating_add(1);
            let scale = if config.z_threshold > 0.0 {
                config.z_recover / config.z_threshold
            } else {
                1.0
            };
            let still = self
                .metric
                .anomaly(x, &score, config.z_recover, scale, config)
                == Some(firing.direction);
            firing.normal_streak = if still {
                0
            } else {
                firing.normal_streak.saturating_add(1)
            };
            let direction = firing.direction;
            if firing.normal_streak >= config.recover_buckets {
                self.firing = None;
                self.recent.clear();
                out.push(Observation::Clear(self.metric.key(service)));
            } else if config.relearn_after_buckets > 0
                && firing.buckets >= config.relearn_after_buckets
            {
                self.restart(config);
                out.push(Observation::Clear(self.metric.key(service)));
            } else {
                out.push(self.fire(direction, x, &score, config, service, end_ns));
            }
            return;
        }

        match anomaly {
            Some(direction) => {
                let seen = self
                    .recent
                    .iter()
                    .filter(|a| **a == Some(direction))
                    .count();
                if seen >= config.sustain_k as usize {
                    self.firing = Some(Firing {
                        direction,
                        normal_streak: 0,
                        buckets: 1,
                    });
                    out.push(self.fire(direction, x, &score, config, service, end_ns));
                }
            }
            None => self.model.learn(x, config.alpha),
        }
    }

    fn fire(
        &self,
        direction: Direction,
        x: f64,
        score: &Score,
        config: &BaselineConfig,
        service: &str,
        end_ns: i64,
    ) -> Observation {
        let bucket_seconds = config.bucket.as_secs_f64();
        let mut details = Map::new();
        details.insert("metric".into(), Value::from(self.metric.name()));
        details.insert("observed".into(), Value::from(round3(x)));
        details.insert("expected".into(), Value::from(round3(score.expected)));
        details.insert("spread".into(), Value::from(round3(score.spread)));
        details.insert("score".into(), Value::from(round3(score.z)));
        details.insert("bucket_seconds".into(), Value::from(bucket_seconds));
        details.insert("direction".into(), Value::from(direction.as_str()));
        Observation::Fire(Candidate {
            key: self.metric.key(service),
            rule_title: self.metric.title(direction).to_owned(),
            severity: self.metric.severity(direction),
            summary: self.metric.describe(service, x, score, bucket_seconds),
            details,
            time_ns: end_ns,
            sample: None,
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Everything tracked for one service.
struct ServiceState {
    open: Bucket,
    /// In `Metric::ALL` order.
    metrics: [MetricState; 6],
    /// Arrival time of its last record.
    last_seen_ns: i64,
}

impl ServiceState {
    fn new(config: &BaselineConfig) -> Self {
        Self {
            open: Bucket::default(),
            metrics: Metric::ALL.map(|m| MetricState::new(m, config)),
            last_seen_ns: 0,
        }
    }

    fn snapshot(&self, name: &str, config: &BaselineConfig, with_history: bool) -> ServiceBaseline {
        ServiceBaseline {
            service: name.to_owned(),
            last_seen_ns: self.last_seen_ns,
            metrics: self
                .metrics
                .iter()
                .map(|m| m.snapshot(config, with_history))
                .collect(),
        }
    }
}

/// The counts of one service in the open bucket.
#[derive(Default)]
struct Bucket {
    requests: u64,
    errors: u64,
    auth_failures: u64,
    bytes: u64,
    latency: Histogram,
    /// Hashes of distinct source addresses, at most `max_source_addresses`.
    sources: HashSet<u64>,
}

/// The attributes a bucket reads, each under the semantic-convention names it has had (e.g.
/// `http.response.status_code`, formerly `http.status_code`), preferred first.
#[derive(Clone, Copy)]
enum Field {
    StatusCode,
    RequestSize,
    ResponseSize,
    SourceAddress,
}

impl Field {
    const COUNT: usize = 4;

    /// The field `key` names and its preference among that field's names (0 first).
    fn of(key: &str) -> Option<(Self, u8)> {
        Some(match key {
            "http.response.status_code" => (Self::StatusCode, 0),
            "http.status_code" => (Self::StatusCode, 1),
            "http.request.body.size" => (Self::RequestSize, 0),
            "http.request_content_length" => (Self::RequestSize, 1),
            "http.response.body.size" => (Self::ResponseSize, 0),
            "http.response_content_length" => (Self::ResponseSize, 1),
            "client.address" => (Self::SourceAddress, 0),
            "source.address" => (Self::SourceAddress, 1),
            "net.peer.ip" => (Self::SourceAddress, 2),
            "network.peer.address" => (Self::SourceAddress, 3),
            _ => return None,
        })
    }
}

/// The columns a bucket reads, found once per batch rather than by name on every row.
struct Columns<'v, 'a> {
    view: &'v BatchView<'a>,
    severity: Option<IntColumn<'a>>,
    /// Rows whose free text (`body` or `event_name` of logs) says an authentication failed.
    auth_failure: Option<BooleanBuffer>,
    kind: Option<&'a StringArray>,
    status: Option<&'a StringArray>,
    duration: Option<IntColumn<'a>>,
}

impl<'v, 'a> Columns<'v, 'a> {
    fn new(view: &'v BatchView<'a>) -> Self {
        Self {
            view,
            severity: view.int_column("severity_number"),
            auth_failure: match view.signal() {
                Signal::Logs => ["body", "event_name"]
                    .iter()
                    .filter_map(|name| view.str_column(name))
                    .map(rows_mentioning_auth_failure)
                    .reduce(|a, b| &a | &b),
                _ => None,
            },
            kind: view.str_column("kind"),
            status: view.str_column("status_code"),
            duration: view.int_column("duration_ns"),
        }
    }

    /// Each [`Field`]'s value in `row`, in one pass over the row's attributes.
    fn fields(&self, row: usize) -> [Option<&'a str>; Field::COUNT] {
        let mut found: [Option<(u8, &'a str)>; Field::COUNT] = [None; Field::COUNT];
        for (key, value) in self.view.attributes().entries(row) {
            if let Some((field, rank)) = Field::of(key)
                && let Some(slot) = found.get_mut(field as usize)
                && slot.is_none_or(|(best, _)| rank < best)
            {
                *slot = Some((rank, value));
            }
        }
        found.map(|f| f.map(|(_, value)| value))
    }
}

fn str_at(column: Option<&StringArray>, row: usize) -> Option<&str> {
    column.filter(|c| c.is_valid(row)).map(|c| c.value(row))
}

/// Log wording of a failed authentication, matched case-insensitively in `body` and `event_name`.
const AUTH_FAILURE_WORDS: [&str; 7] = [
    "authentication failed",
    "login failed",
    "invalid password",
    "invalid credentials",
    "unauthorized",
    "access denied",
    "permission denied",
];
/// All of [`AUTH_FAILURE_WORDS`] in one pass over lowercased text. Case-sensitive and
/// leftmost-first, so the search skips through text with a SIMD prefilter (Teddy); with
/// `ascii_case_insensitive` it would step an automaton through every byte, about twice as
/// slow with the lowercasing counted.
static AUTH_FAILURE: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostFirst)
        .build(AUTH_FAILURE_WORDS)
        .ok()
});
/// OTel `SeverityNumber` of `ERROR` and above.
const SEVERITY_ERROR: i64 = 17;

impl Bucket {
    fn add(&mut self, columns: &Columns<'_, '_>, row: usize, config: &BaselineConfig) {
        let [status, request_size, response_size, source_address] = columns.fields(row);
        let status = status.and_then(parse_int);
        let mut error = status.is_some_and(|s| s >= 500);
        let mut auth_failure = matches!(status, Some(401 | 403));
        let mut source = false;
        match columns.view.signal() {
            Signal::Logs => {
                self.requests += 1;
                error |= columns
                    .severity
                    .and_then(|c| c.get(row))
                    .is_some_and(|s| s >= SEVERITY_ERROR);
                auth_failure |= columns
                    .auth_failure
                    .as_ref()
                    .is_some_and(|rows| row < rows.len() && rows.value(row));
                source = true;
            }
            Signal::Spans => {
                let kind = str_at(columns.kind, row);
                let server = kind == Some("SERVER");
                if server || kind == Some("CONSUMER") {
                    self.requests += 1;
                }
                error |= str_at(columns.status, row) == Some("ERROR");
                if server {
                    if let Some(d) = columns.duration.and_then(|c| c.get(row)) {
                        self.latency.add(d);
                    }
                    source = true;
                }
            }
            Signal::Alerts
            | Signal::DeadLetters
            | Signal::Redactions
            | Signal::AlertActions
            | Signal::Audit => {
                return;
            }
        }
        self.errors += u64::from(error);
        self.auth_failures += u64::from(auth_failure);
        for size in [request_size, response_size] {
            self.bytes = self.bytes.saturating_add(
                size.and_then(parse_int)
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(0),
            );
        }
        if source
            && self.sources.len() < config.max_source_addresses
            && let Some(address) = source_address
        {
            let mut h = DefaultHasher::new();
            address.hash(&mut h);
            self.sources.insert(h.finish());
        }
    }

    /// Each metric's value for the bucket, in `Metric::ALL` order.
    fn values(&self, config: &BaselineConfig) -> [Option<f64>; 6] {
        Metric::ALL.map(|m| match m {
            Metric::RequestRate => Some(self.requests as f64),
            Metric::ErrorRate => Some(self.errors as f64),
            Metric::AuthFailures => Some(self.auth_failures as f64),
            Metric::LatencyP95 => (self.latency.count >= u64::from(config.min_latency_samples))
                .then(|| self.latency.quantile(0.95)),
            Metric::Bytes => Some(self.bytes as f64),
            Metric::SourceAddresses => Some(self.sources.len() as f64),
        })
    }
}

/// Integer attribute values arrive as strings; doubles (`500.0`) are accepted too.
fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim();
    s.parse::<i64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| f as i64)
    })
}

/// Whether lowercased `text` holds one of [`AUTH_FAILURE_WORDS`].
fn mentions_auth_failure(lowered: &str) -> bool {
    match &*AUTH_FAILURE {
        Some(automaton) => automaton.is_match(lowered),
        // Seven short words always build; were they refused, each is searched on its own.
        None => AUTH_FAILURE_WORDS.iter().any(|word| lowered.contains(word)),
    }
}

/// The rows of `column` that mention a failed authentication, case-insensitively: the
/// column is lowercased as the Sigma prefilter lowercases it (ASCII text in one pass over its
/// bytes), then each value is searched.
fn rows_mentioning_auth_failure(column: &StringArray) -> BooleanBuffer {
    let lowered = lowercase(column);
    BooleanBuffer::collect_bool(lowered.len(), |row| {
        lowered.is_valid(row) && mentions_auth_failure(lowered.value(row))
    })
}

/// Durations in logarithmic bins 2% wide: bounded memory, quantiles within about 1%.
#[derive(Default)]
struct Histogram {
    bins: BTreeMap<u32, u64>,
    count: u64,
}

const BIN_GROWTH: f64 = 1.02;

impl Histogram {
    fn add(&mut self, duration_ns: i64) {
        let bin = if duration_ns <= 0 {
            0
        } else {
            (duration_ns as f64).ln().div_euclid(BIN_GROWTH.ln()) as u32 + 1
        };
        *self.bins.entry(bin).or_default() += 1;
        self.count += 1;
    }

    /// The `q` quantile (nearest rank), as the geometric middle of its bin.
    fn quantile(&self, q: f64) -> f64 {
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&bin, &n) in &self.bins {
            seen += n;
            if seen >= rank {
                return if bin == 0 {
                    0.0
                } else {
                    BIN_GROWTH.powf(f64::from(bin) - 0.5)
                };
            }
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use vigil_core::{RedactedBatch, Redactor};

    use super::*;
    use crate::synthetic::{self, EventSpec, Rng};

    const SEC: i64 = 1_000_000_000;
    const BUCKET: i64 = 60 * SEC;
    /// A bucket boundary in late 2023.
    const T0: i64 = 28_333_333 * BUCKET;

    fn bucket_start(i: i64) -> i64 {
        T0 + i * BUCKET
    }

    /// Real decoded batches of 1, 2, 4, ... 128 records, so that any count is fed as a few
    /// whole batches. `make` gets the record's index across all of them (0..255).
    struct Traffic {
        batches: Vec<RedactedBatch>,
    }

    impl Traffic {
        fn new(make: impl Fn(usize) -> EventSpec) -> Self {
            let mut index = 0;
            let batches = (0..8)
                .map(|p| {
                    let specs: Vec<EventSpec> = (0..1usize << p)
                        .map(|_| {
                            index += 1;
                            make(index - 1)
                        })
                        .collect();
                    Redactor::disabled()
                        .apply(synthetic::batch(&specs, T0).expect("batch"))
                        .expect("redact")
                })
                .collect();
            Self { batches }
        }

        fn feed(&self, b: &mut Baselines, count: u64, now: i64) {
            let mut left = count;
            while left > 0 {
                let n = left.min(255);
                for (p, batch) in self.batches.iter().enumerate() {
                    if (n >> p) & 1 == 1 {
                        b.observe(&BatchView::new(batch).expect("view"), now);
                    }
                }
                left -= n;
            }
        }
    }

    fn log(service: &str, body: &str) -> EventSpec {
        EventSpec::log(service, body)
    }

    fn error_log(service: &str) -> EventSpec {
        let mut e = EventSpec::log(service, "payment provider timed out");
        e.severity_number = Some(17);
        e
    }

    fn server_span(service: &str, duration_ms: f64) -> EventSpec {
        let mut e = EventSpec::span(service, "GET /orders", "SERVER");
        e.duration_ms = Some(duration_ms);
        e.status_code = Some("OK".into());
        e
    }

    fn rules(observations: &[Observation]) -> Vec<(String, String, bool)> {
        observations
            .iter()
            .map(|o| match o {
                Observation::Fire(c) => (c.key.rule_id.clone(), c.key.service.clone(), true),
                Observation::Clear(k) => (k.rule_id.clone(), k.service.clone(), false),
            })
            .collect()
    }

    fn fired(rule: &str, service: &str) -> (String, String, bool) {
        (rule.to_owned(), service.to_owned(), true)
    }

    fn cleared(rule: &str, service: &str) -> (String, String, bool) {
        (rule.to_owned(), service.to_owned(), false)
    }

    fn fires(observations: &[Observation]) -> Vec<&Candidate> {
        observations
            .iter()
            .filter_map(|o| match o {
                Observation::Fire(c) => Some(c),
                Observation::Clear(_) => None,
            })
            .collect()
    }

    /// A mixed workload of three services with Poisson noise.
    struct Workload {
        checkout: Traffic,
        checkout_errors: Traffic,
        api: Traffic,
        auth: Traffic,
        auth_failures: Traffic,
        rng: Rng,
    }

    impl Workload {
        fn new() -> Self {
            Self {
                checkout: Traffic::new(|i| {
                    log("checkout", "order placed")
                        .attr("client.address", format!("10.1.0.{}", i % 7).as_str())
                }),
                checkout_errors: Traffic::new(|_| error_log("checkout")),
                api: Traffic::new(|i| {
                    server_span("api", 20.0 + (i * 7 % 20) as f64)
                        .attr("client.address", format!("10.0.0.{}", i % 5).as_str())
                        .attr("http.response.status_code", 200)
                        .attr("http.response.body.size", 2000)
                }),
                auth: Traffic::new(|_| log("auth", "session refreshed")),
                auth_failures: Traffic::new(|_| {
                    log("auth", "Login failed for user").attr("http.response.status_code", 401)
                }),
                rng: Rng::new(7),
            }
        }

        /// One bucket of ordinary traffic.
        fn normal(&mut self, b: &mut Baselines, now: i64) {
            let n = self.rng.poisson(100.0);
            self.checkout.feed(b, n, now);
            let n = self.rng.poisson(2.0);
            self.checkout_errors.feed(b, n, now);
            let n = self.rng.poisson(80.0);
            self.api.feed(b, n, now);
            let n = self.rng.poisson(50.0);
            self.auth.feed(b, n, now);
            let n = self.rng.poisson(2.0);
            self.auth_failures.feed(b, n, now);
        }
    }

    /// Runs `buckets` buckets from bucket `from`; `traffic` feeds bucket `i` at its start + 1 s.
    fn run(
        b: &mut Baselines,
        from: i64,
        buckets: i64,
        mut traffic: impl FnMut(&mut Baselines, i64, i64),
    ) -> Vec<Vec<Observation>> {
        (from..from + buckets)
            .map(|i| {
                traffic(b, i, bucket_start(i) + SEC);
                b.tick(bucket_start(i + 1))
            })
            .collect()
    }

    #[test]
    fn steady_noisy_traffic_of_several_services_raises_nothing() {
        let mut b = Baselines::new(BaselineConfig::default());
        let mut w = Workload::new();
        let out = run(&mut b, 0, 100, |b, _, now| w.normal(b, now));
        let all: Vec<_> = out.into_iter().flatten().collect();
        assert!(all.is_empty(), "{:?}", rules(&all));
        assert_eq!(b.services.len(), 3);
        let requests = b.expected("checkout", "request_rate").expect("checkout");
        assert!((90.0..110.0).contains(&(requests - 2.0)), "{requests}");
        let p95 = b.expected("api", "latency_p95").expect("api");
        assert!((35e6..42e6).contains(&p95), "{p95}");
    }

    #[test]
    fn error_burst_fires_for_that_service_after_k_of_n_and_clears_after_recovery() {
        let mut b = Baselines::new(BaselineConfig::default());
        let mut w = Workload::new();
        let warm = run(&mut b, 0, 20, |b, _, now| w.normal(b, now));
        assert!(warm.iter().all(Vec::is_empty));
        let before = b.expected("checkout", "error_rate").expect("learned");

        // Three buckets where 80 of checkout's ~100 logs are errors: the request count stays.
        let burst = run(&mut b, 20, 3, |b, _, now| {
            w.checkout.feed(b, 20, now);
            w.checkout_errors.feed(b, 80, now);
            w.api.feed(b, 80, now);
            w.auth.feed(b, 50, now);
        });
        assert!(burst[0].is_empty(), "one anomalous bucket is not enough");
        for out in &burst[1..] {
            assert_eq!(rules(out), vec![fired("baseline.error_rate", "checkout")]);
        }
        let c = fires(&burst[1])[0];
        assert_eq!(c.severity, Severity::High);
        assert_eq!(c.rule_title, "Error rate above baseline");
        assert_eq!(c.details["direction"], "spike");
        assert_eq!(c.details["observed"], 80.0);
        assert_eq!(c.details["bucket_seconds"], 60.0);
        assert!(
            c.summary.starts_with("checkout: 80 errors"),
            "{}",
            c.summary
        );
        assert_eq!(c.time_ns, bucket_start(22));

        // Normal again: still firing for two buckets, cleared on the third.
        let after = run(&mut b, 23, 3, |b, _, now| w.normal(b, now));
        for out in &after[..2] {
            assert_eq!(rules(out), vec![fired("baseline.error_rate", "checkout")]);
        }
        assert_eq!(
            rules(&after[2]),
            vec![cleared("baseline.error_rate", "checkout")]
        );
        let after_burst = b.expected("checkout", "error_rate").expect("learned");
        assert_eq!(
            before, after_burst,
            "the burst and recovery were not learned"
        );
        assert!(after_burst < 5.0);

        let later = run(&mut b, 26, 20, |b, _, now| w.normal(b, now));
        assert!(later.iter().all(Vec::is_empty));
    }

    #[test]
    fn snapshot_shows_expected_against_observed_and_the_anomalous_buckets() {
        let config = BaselineConfig::default();
        let mut b = Baselines::new(config.clone());
        let mut w = Workload::new();
        run(&mut b, 0, 20, |b, _, now| w.normal(b, now));
        run(&mut b, 20, 2, |b, _, now| {
            w.checkout.feed(b, 20, now);
            w.checkout_errors.feed(b, 80, now);
        });

        let all = b.snapshot(None);
        assert!(all.enabled);
        assert_eq!(all.bucket_seconds, 60.0);
        assert_eq!(all.warmup_buckets, config.warmup_buckets);
        let names: Vec<_> = all.services.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(names, ["api", "auth", "checkout"]);
        assert!(
            all.services
                .iter()
                .all(|s| s.metrics.len() == 6 && s.metrics.iter().all(|m| m.history.is_empty())),
            "the overview carries no history"
        );

        let one = b.snapshot(Some("checkout"));
        assert_eq!(one.services.len(), 1);
        let checkout = &one.services[0];
        assert_eq!(checkout.last_seen_ns, bucket_start(21) + SEC);
        let errors = checkout
            .metrics
            .iter()
            .find(|m| m.metric == "error_rate")
            .expect("error_rate");
        assert_eq!(errors.unit, "errors");
        assert!(!errors.warming_up);
        assert_eq!(errors.firing, Some("spike"));
        assert_eq!(errors.history.len(), 22);
        let first = errors.history[0];
        assert!(first.warmup && first.expected.is_none(), "{first:?}");
        let last = errors.last.expect("last bucket");
        assert_eq!(last, errors.history[21]);
        assert_eq!(last.end_ns, bucket_start(22));
        assert_eq!(last.observed, 80.0);
        assert_eq!(last.anomaly, Some("spike"));
        let expected = last.expected.expect("scored");
        assert!(expected < 5.0, "{expected}");
        assert!(last.score.is_some_and(|z| z > config.z_threshold));
        assert_eq!(errors.expected, Some(expected), "anomalies are not learned");

        assert!(b.snapshot(Some("nobody")).services.is_empty());
    }

    #[test]
    fn nothing_fires_during_warmup_even_with_a_burst() {
        let mut b = Baselines::new(BaselineConfig::default());
        let mut w = Workload::new();
        let out = run(&mut b, 0, 30, |b, i, now| {
            if (3..6).contains(&i) {
                w.checkout_errors.feed(b, 150, now);
                w.auth_failures.feed(b, 100, now);
            }
            w.normal(b, now);
        });
        let all: Vec<_> = out.into_iter().flatten().collect();
        assert!(all.is_empty(), "{:?}", rules(&all));
    }

    #[test]
    fn a_spike_of_401s_fires_auth_failures() {
        let mut b = Baselines::new(BaselineConfig::default());
        let mut w = Workload::new();
        let unauthorized = Traffic::new(|i| {
            server_span("auth", 5.0).attr(
                "http.response.status_code",
                if i % 2 == 0 { 401 } else { 403 },
            )
        });
        run(&mut b, 0, 15, |b, _, now| w.normal(b, now));
        let out = run(&mut b, 15, 2, |b, _, now| {
            w.normal(b, now);
            unauthorized.feed(b, 60, now);
        });
        assert!(out[0].is_empty());
        let fired = fires(&out[1]);
        let auth: Vec<_> = fired
            .iter()
            .filter(|c| c.key.rule_id == "baseline.auth_failures")
            .collect();
        assert_eq!(auth.len(), 1, "{:?}", rules(&out[1]));
        assert_eq!(auth[0].key, AlertKey::new("baseline.auth_failures", "auth"));
        assert_eq!(auth[0].severity, Severity::High);
        assert!(fired.iter().all(|c| c.key.service == "auth"));
    }

    #[test]
    fn records_are_classified_once_each() {
        let mut error_span = EventSpec::span("svc", "POST /login", "SERVER")
            .attr("http.response.status_code", 503)
            .attr("http.request.body.size", 1000)
            .attr("http.response_content_length", 24)
            .attr("source.address", "192.0.2.1");
        error_span.status_code = Some("ERROR".into());
        let client = EventSpec::span("svc", "GET /auth", "CLIENT")
            .attr("http.status_code", 401)
            .attr("client.address", "192.0.2.9");
        let consumer = EventSpec::span("svc", "orders process", "CONSUMER");
        let spans = Redactor::disabled()
            .apply(synthetic::batch(&[error_span, client, consumer], T0).expect("batch"))
            .expect("redact");
        let event = log("svc", "user signed in");
        let mut denied = log("svc", "ACCESS DENIED for /admin").attr("net.peer.ip", "192.0.2.1");
        denied.severity_number = Some(17);
        let logs = Redactor::disabled()
            .apply(
                synthetic::batch(&[event, denied, log("svc", "invalid  password")], T0)
                    .expect("batch"),
            )
            .expect("redact");

        let mut b = Baselines::new(BaselineConfig::default());
        b.observe(&BatchView::new(&spans).expect("view"), T0);
        b.observe(&BatchView::new(&logs).expect("view"), T0);
        let open = &b.services.get("svc").expect("tracked").open;
        assert_eq!(open.requests, 2 + 3, "SERVER, CONSUMER and every log");
        assert_eq!(
            open.errors, 2,
            "the 503 ERROR span once, the severity 17 log"
        );
        assert_eq!(open.auth_failures, 2, "the 401 and `access denied`");
        assert_eq!(open.bytes, 1024);
        assert_eq!(
            open.sources.len(),
            1,
            "client span ignored, one address twice"
        );
        assert_eq!(open.latency.count, 1);
    }

    /// Where a record carries an attribute under both its current and its former name, the
    /// current one counts, whichever comes first in the record.
    #[test]
    fn current_attribute_names_win_over_former_ones() {
        let both = EventSpec::span("svc", "POST /upload", "SERVER")
            .attr("http.status_code", 200)
            .attr("http.request_content_length", 5)
            .attr("http.response.status_code", 503)
            .attr("http.request.body.size", 700)
            .attr("network.peer.address", "192.0.2.7")
            .attr("client.address", "198.51.100.1");
        let former_only = EventSpec::span("svc", "POST /upload", "SERVER")
            .attr("http.status_code", 401)
            .attr("http.response_content_length", 11)
            .attr("network.peer.address", "192.0.2.7");
        let spans = Redactor::disabled()
            .apply(synthetic::batch(&[both, former_only], T0).expect("batch"))
            .expect("redact");
        let mut b = Baselines::new(BaselineConfig::default());
        b.observe(&BatchView::new(&spans).expect("view"), T0);
        let open = &b.services.get("svc").expect("tracked").open;
        assert_eq!((open.errors, open.auth_failures), (1, 1), "503 and 401");
        assert_eq!(open.bytes, 711);
        assert_eq!(open.sources.len(), 2, "198.51.100.1 and 192.0.2.7");
    }

    #[test]
    fn higher_latency_fires_latency_p95() {
        let mut b = Baselines::new(BaselineConfig::default());
        let normal = Traffic::new(|i| server_span("api", 20.0 + (i * 7 % 20) as f64));
        let slow = Traffic::new(|i| server_span("api", 200.0 + (i % 50) as f64));
        let mut rng = Rng::new(3);
        let warm = run(&mut b, 0, 15, |b, _, now| {
            let n = rng.poisson(60.0);
            normal.feed(b, n, now)
        });
        assert!(warm.iter().all(Vec::is_empty));
        let out = run(&mut b, 15, 3, |b, _, now| {
            normal.feed(b, 40, now);
            slow.feed(b, 20, now);
        });
        assert!(out[0].is_empty());
        for o in &out[1..] {
            assert_eq!(rules(o), vec![fired("baseline.latency_p95", "api")]);
        }
        let c = fires(&out[1])[0];
        assert_eq!(c.severity, Severity::Medium);
        assert!(c.details["observed"].as_f64().expect("number") > 200e6);
        assert!(c.details["expected"].as_f64().expect("number") < 45e6);

        // Too few spans for a p95: no opinion either way.
        let quiet = run(&mut b, 18, 2, |b, _, now| slow.feed(b, 5, now));
        assert!(quiet.iter().flatten().all(
            |o| !matches!(o, Observation::Fire(c) if c.key.rule_id == "baseline.latency_p95")
        ));
    }

    #[test]
    fn a_flood_fires_request_rate_and_silence_fires_a_drop() {
        let web = Traffic::new(|_| log("web", "GET / 200"));
        let mut rng = Rng::new(11);
        let mut b = Baselines::new(BaselineConfig::default());
        run(&mut b, 0, 15, |b, _, now| {
            let n = rng.poisson(60.0);
            web.feed(b, n, now)
        });
        let flood = run(&mut b, 15, 2, |b, _, now| web.feed(b, 600, now));
        assert!(flood[0].is_empty());
        let c = fires(&flood[1]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].key, AlertKey::new("baseline.request_rate", "web"));
        assert_eq!(c[0].details["direction"], "spike");
        assert_eq!(c[0].rule_title, "Request rate above baseline");

        let mut b = Baselines::new(BaselineConfig::default());
        run(&mut b, 0, 15, |b, _, now| {
            let n = rng.poisson(60.0);
            web.feed(b, n, now)
        });
        // The service goes silent: only ticks.
        assert!(b.tick(bucket_start(16)).is_empty());
        let out = b.tick(bucket_start(17));
        let c = fires(&out);
        assert_eq!(c.len(), 1, "{:?}", rules(&out));
        assert_eq!(c[0].key, AlertKey::new("baseline.request_rate", "web"));
        assert_eq!(c[0].details["direction"], "drop");
        assert_eq!(c[0].details["observed"], 0.0);
        assert_eq!(c[0].severity, Severity::Medium);
        assert_eq!(c[0].rule_title, "Request rate below baseline");
    }

    #[test]
    fn a_flood_of_new_source_addresses_fires() {
        let few = Traffic::new(|i| {
            server_span("edge", 3.0)
                .attr("client.address", format!("198.51.100.{}", i % 4).as_str())
        });
        let many = Traffic::new(|i| {
            server_span("edge", 3.0).attr(
                "client.address",
                format!("203.0.{}.{}", i / 250, i % 250).as_str(),
            )
        });
        let mut b = Baselines::new(BaselineConfig::default());
        let mut rng = Rng::new(5);
        run(&mut b, 0, 15, |b, _, now| {
            let n = rng.poisson(50.0);
            few.feed(b, n, now)
        });
        // About as many requests, but each from its own address.
        let out = run(&mut b, 15, 2, |b, _, now| many.feed(b, 50, now));
        assert!(out[0].is_empty());
        assert_eq!(
            rules(&out[1]),
            vec![fired("baseline.source_addresses", "edge")]
        );
        assert_eq!(fires(&out[1])[0].details["observed"], 50.0);
    }

    #[test]
    fn source_addresses_saturate_at_the_cap() {
        let many = Traffic::new(|i| {
            server_span("edge", 3.0).attr("client.address", format!("a{i}").as_str())
        });
        let mut b = Baselines::new(BaselineConfig {
            max_source_addresses: 10,
            ..BaselineConfig::default()
        });
        many.feed(&mut b, 200, T0);
        assert_eq!(b.services.get("edge").expect("edge").open.sources.len(), 10);
    }

    #[test]
    fn large_transfers_fire_bytes() {
        let api = Traffic::new(|_| server_span("api", 10.0).attr("http.response.body.size", 4000));
        let dump = Traffic::new(|_| {
            server_span("api", 10.0).attr("http.response.body.size", 50 * 1024 * 1024)
        });
        let mut b = Baselines::new(BaselineConfig::default());
        let mut rng = Rng::new(9);
        run(&mut b, 0, 15, |b, _, now| {
            let n = rng.poisson(50.0);
            api.feed(b, n, now)
        });
        let out = run(&mut b, 15, 2, |b, _, now| {
            api.feed(b, 49, now);
            dump.feed(b, 1, now);
        });
        assert!(out[0].is_empty());
        assert_eq!(rules(&out[1]), vec![fired("baseline.bytes", "api")]);
    }

    #[test]
    fn services_beyond_max_services_are_ignored_and_counted() {
        let mut b = Baselines::new(BaselineConfig {
            max_services: 2,
            ..BaselineConfig::default()
        });
        let three: Vec<Traffic> = ["a", "b", "c"]
            .iter()
            .map(|s| Traffic::new(|_| log(s, "hello")))
            .collect();
        for t in &three {
            t.feed(&mut b, 7, T0);
        }
        assert_eq!(b.services.len(), 2);
        assert!(b.services.contains_key("a") && b.services.contains_key("b"));
        assert_eq!(b.untracked_records(), 7);
        // Known services still count.
        three[0].feed(&mut b, 3, T0);
        assert_eq!(b.services.get("a").expect("a").open.requests, 10);
    }

    #[test]
    fn a_long_clock_jump_closes_a_few_buckets_and_realigns() {
        let web = Traffic::new(|_| log("web", "GET / 200"));
        let mut b = Baselines::new(BaselineConfig::default());
        run(&mut b, 0, 15, |b, _, now| web.feed(b, 60, now));
        let jump = bucket_start(15) + 10 * 3600 * SEC + 5 * SEC;
        let out = b.tick(jump);
        // 1 + sustain_n + recover_buckets buckets closed: the silence fired a drop.
        assert!(
            fires(&out).iter().any(|c| c.details["direction"] == "drop"),
            "{:?}",
            rules(&out)
        );
        assert_eq!(b.open_start, Some(jump - 5 * SEC));
        assert_eq!(
            b.expected("web", "request_rate"),
            Some(60.0),
            "silence not learned"
        );
        // Back to one bucket per tick.
        web.feed(&mut b, 60, jump);
        assert_eq!(b.tick(jump + 30 * SEC).len(), 0);
        assert_eq!(b.tick(jump - 5 * SEC + BUCKET).len(), 1);
    }

    #[test]
    fn idle_services_are_forgotten_and_their_alerts_cleared() {
        let web = Traffic::new(|_| log("web", "GET / 200"));
        let mut b = Baselines::new(BaselineConfig {
            forget_after: Duration::from_secs(600),
            relearn_after_buckets: 0,
            ..BaselineConfig::default()
        });
        run(&mut b, 0, 15, |b, _, now| web.feed(b, 60, now));
        let out: Vec<_> = run(&mut b, 15, 12, |_, _, _| {})
            .into_iter()
            .flatten()
            .collect();
        assert!(
            matches!(out.last(), Some(Observation::Clear(k)) if k.rule_id == "baseline.request_rate")
        );
        assert!(b.services.is_empty());
    }

    #[test]
    fn a_lasting_new_level_is_learned_after_relearn_after_buckets() {
        let web = Traffic::new(|_| log("web", "GET / 200"));
        let mut b = Baselines::new(BaselineConfig {
            relearn_after_buckets: 5,
            ..BaselineConfig::default()
        });
        run(&mut b, 0, 15, |b, _, now| web.feed(b, 60, now));
        let out = run(&mut b, 15, 40, |b, _, now| web.feed(b, 300, now));
        let all: Vec<_> = out.iter().flat_map(|o| rules(o)).collect();
        assert_eq!(all.iter().filter(|r| r.2).count(), 4, "{all:?}");
        assert_eq!(all.iter().filter(|r| !r.2).count(), 1);
        assert!(out[20..].iter().all(Vec::is_empty));
        assert_eq!(b.expected("web", "request_rate"), Some(300.0));
    }

    #[test]
    fn disabled_baselines_do_nothing() {
        let web = Traffic::new(|_| log("web", "GET / 200"));
        let mut b = Baselines::new(BaselineConfig {
            enabled: false,
            ..BaselineConfig::default()
        });
        let out = run(&mut b, 0, 20, |b, i, now| {
            web.feed(b, if i < 15 { 50 } else { 900 }, now)
        });
        assert!(out.iter().all(Vec::is_empty));
        assert!(b.services.is_empty());
    }

    #[test]
    fn validate_reports_every_bad_value() {
        assert!(BaselineConfig::default().validate().is_empty());
        let bad = BaselineConfig {
            bucket: Duration::ZERO,
            alpha: 1.5,
            sustain_k: 4,
            sustain_n: 3,
            z_recover: 5.0,
            ..BaselineConfig::default()
        };
        let problems = bad.validate();
        for field in ["bucket", "alpha", "sustain_k", "z_recover"] {
            let name = format!("detector.baselines.{field}");
            assert!(
                problems.iter().any(|p| p.contains(&name)),
                "{field}: {problems:?}"
            );
        }
        assert_eq!(problems.len(), 4, "{problems:?}");
        for alpha in [0.0, -0.1, f64::NAN] {
            let c = BaselineConfig {
                alpha,
                ..BaselineConfig::default()
            };
            assert_eq!(c.validate().len(), 1, "alpha {alpha}");
        }
        assert!(problems.iter().all(|p| p == &p.to_lowercase()));
    }

    #[test]
    fn config_reads_humantime_and_refuses_unknown_fields() {
        let c: BaselineConfig =
            serde_json::from_str(r#"{"bucket": "30s", "alpha": 0.2}"#).expect("config");
        assert_eq!(c.bucket, Duration::from_secs(30));
        assert_eq!(c.alpha, 0.2);
        assert_eq!(c.z_threshold, BaselineConfig::default().z_threshold);
        assert!(serde_json::from_str::<BaselineConfig>(r#"{"buckets": "30s"}"#).is_err());
    }

    #[test]
    fn median_and_quantiles() {
        assert_eq!(median_of(&[]), 0.0);
        assert_eq!(median_of(&[3.0]), 3.0);
        assert_eq!(median_of(&[1.0, 3.0]), 2.0);
        assert_eq!(median_of(&[1.0, 2.0, 9.0]), 2.0);
        let mut h = Histogram::default();
        for d in 1..=100 {
            h.add(d * 1_000_000);
        }
        let p95 = h.quantile(0.95);
        assert!((p95 / 95e6 - 1.0).abs() < 0.02, "{p95}");
        let texts = StringArray::from(vec![
            Some("HTTP 401: Unauthorized"),
            Some("authorized"),
            None,
            Some("LOGIN FAILED for bob"),
            Some("login"),
        ]);
        let found = rows_mentioning_auth_failure(&texts.slice(1, 4));
        assert_eq!(
            found.iter().collect::<Vec<_>>(),
            [false, false, true, false]
        );
        let found = rows_mentioning_auth_failure(&texts);
        assert_eq!(
            found.iter().collect::<Vec<_>>(),
            [true, false, false, true, false]
        );
    }

    static NOISE: LazyLock<(Traffic, Traffic)> = LazyLock::new(|| {
        (
            Traffic::new(|_| log("svc", "GET / 200")),
            Traffic::new(|_| error_log("svc")),
        )
    });

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]

        #[test]
        fn stationary_poisson_noise_never_fires(seed in any::<u64>(), mean in 50.0f64..200.0) {
            let (requests, errors) = &*NOISE;
            let mut rng = Rng::new(seed);
            let mut b = Baselines::new(BaselineConfig::default());
            let out = run(&mut b, 0, 200, |b, _, now| {
                let n = rng.poisson(mean);
                requests.feed(b, n, now);
                let n = rng.poisson(mean / 20.0);
                errors.feed(b, n, now);
            });
            let all: Vec<_> = out.into_iter().flatten().collect();
            prop_assert!(all.is_empty(), "{:?}", rules(&all));
        }
    }
}
