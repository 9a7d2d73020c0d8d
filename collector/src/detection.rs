//! The detector stage: one thread runs the detector over every stored batch and ticks it once
//! a second; alert state changes are logged, counted and written to the `alerts` table. The
//! API reaches the thread through a small command queue (snapshots, manual resolution) that it
//! serves between batches, so no request ever holds the detector.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded, select};
use tokio::sync::oneshot;
use vigil_core::{Batch, RedactedBatch, Redactor, Signal};
use vigil_detector::baseline::BaselinesSnapshot;
use vigil_detector::config::SqlRule;
use vigil_detector::graph::GraphSnapshot;
use vigil_detector::sigma::RuleSource;
use vigil_detector::{
    Alert, AlertEvent, AlertKey, Candidate, Detector, DetectorConfig, ManualResolution,
    Observation, RuleSet, Status, alerts_batch,
};

use crate::detector_state::StateFile;
use crate::metrics::Metrics;
use crate::query::{QueryEngine, QueryResult};
use crate::sinks::Sinks;
use crate::storage::Appender;
use arrow::array::{Array, ArrayRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use vigil_core::time::now_ns;

const TICK: Duration = Duration::from_secs(1);
/// How often the detector's state is saved for the next start (and at shutdown).
const SAVE_EVERY: Duration = Duration::from_secs(60);
/// Commands waiting for the detector thread; more are refused (the API answers 503).
const COMMAND_QUEUE: usize = 64;

/// Reads the shipped rules and every `*.yml`/`*.yaml` in the configured directories, then
/// validates them all. Every problem is reported.
pub fn load_rules(config: &DetectorConfig) -> Result<RuleSet, Vec<String>> {
    let mut sources = Vec::new();
    if config.shipped_rules {
        sources.extend(vigil_detector::shipped::sources());
    }
    let mut problems = Vec::new();
    for dir in &config.rule_dirs {
        match read_rule_dir(dir) {
            Ok(mut s) => sources.append(&mut s),
            Err(e) => problems.push(format!("detector.rule_dirs: {}: {e}", dir.display())),
        }
    }
    match RuleSet::load(&sources) {
        Ok(rules) if problems.is_empty() => Ok(rules),
        Ok(_) => Err(problems),
        Err(rule_problems) => {
            problems.extend(rule_problems.iter().map(ToString::to_string));
            Err(problems)
        }
    }
}

/// Rule files of one directory (not recursive), sorted by name.
pub fn read_rule_dir(dir: &Path) -> std::io::Result<Vec<RuleSource>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)?;
            Ok(RuleSource {
                origin: path.display().to_string(),
                text,
            })
        })
        .collect()
}

/// What the detector thread takes in.
enum Input {
    /// A stored batch.
    Batch(RedactedBatch),
    /// What a scheduled SQL rule found.
    Observed(Vec<Observation>),
}

/// What the API asks of the detector thread. Each carries where to send the answer; the
/// thread answers without waiting for the asker.
enum Command {
    Graph(oneshot::Sender<GraphSnapshot>),
    Baselines {
        service: Option<String>,
        reply: oneshot::Sender<BaselinesSnapshot>,
    },
    Resolve {
        fingerprint: String,
        by: ManualResolution,
        /// The alert's last state in the `alerts` table, resolved instead when the detector
        /// does not hold it (it fired before a restart).
        stale: Option<Box<Alert>>,
        reply: oneshot::Sender<Option<Arc<Alert>>>,
    },
}

/// Why the detector could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DetectorUnavailable {
    #[error("the detector is disabled (detector.enabled = false)")]
    Disabled,
    #[error("the detector is busy; retry shortly")]
    Busy,
    #[error("the detector is shutting down")]
    Stopped,
}

/// Hands stored batches to the detector without ever waiting for it, and asks it for
/// snapshots and manual resolutions.
#[derive(Clone)]
pub struct DetectorHandle {
    tx: Option<Sender<Input>>,
    commands: Option<Sender<Command>>,
    metrics: Metrics,
}

impl DetectorHandle {
    pub fn disabled(metrics: Metrics) -> Self {
        Self {
            tx: None,
            commands: None,
            metrics,
        }
    }

    /// The learned service graph.
    pub async fn graph(&self) -> Result<GraphSnapshot, DetectorUnavailable> {
        self.ask(Command::Graph).await
    }

    /// Every service's baselines, or one service's with its recent buckets.
    pub async fn baselines(
        &self,
        service: Option<String>,
    ) -> Result<BaselinesSnapshot, DetectorUnavailable> {
        self.ask(|reply| Command::Baselines { service, reply })
            .await
    }

    /// Resolves alert `fingerprint` now, as `by`: the detector's firing alert, else `stale`
    /// (its last state as stored). The resolution is written to the `alerts` table and given
    /// to the sinks before this returns. `None` when there was nothing to resolve.
    pub async fn resolve(
        &self,
        fingerprint: String,
        by: ManualResolution,
        stale: Option<Alert>,
    ) -> Result<Option<Arc<Alert>>, DetectorUnavailable> {
        self.ask(|reply| Command::Resolve {
            fingerprint,
            by,
            stale: stale.map(Box::new),
            reply,
        })
        .await
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DetectorUnavailable> {
        let commands = self
            .commands
            .as_ref()
            .ok_or(DetectorUnavailable::Disabled)?;
        let (reply, answer) = oneshot::channel();
        match commands.try_send(command(reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(DetectorUnavailable::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(DetectorUnavailable::Stopped),
        }
        answer.await.map_err(|_| DetectorUnavailable::Stopped)
    }

    /// Queues `batch` for detection; when the detector is behind the batch skips detection
    /// (counted in `vigil_detector_skipped_batches_total`) — it is stored either way.
    pub fn offer(&self, batch: RedactedBatch) {
        let Some(tx) = &self.tx else { return };
        let signal = batch.signal();
        match tx.try_send(Input::Batch(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics
                    .detector_skipped_batches
                    .with_label_values(&[signal.as_str()])
                    .inc();
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Hands over what a scheduled SQL rule found; `false` when the detector is behind (the
    /// rule tries again on its next run).
    fn observed(&self, observations: Vec<Observation>) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.try_send(Input::Observed(observations)).is_ok())
    }
}

/// The running stage.
pub struct DetectorStage {
    handle: DetectorHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DetectorStage {
    pub fn start(
        config: &DetectorConfig,
        rules: RuleSet,
        redactor: Redactor,
        appender: Appender,
        sinks: Sinks,
        metrics: Metrics,
        state: StateFile,
    ) -> anyhow::Result<Self> {
        if !config.enabled {
            tracing::warn!("detector disabled: no rules, baselines or service-graph checks run");
            return Ok(Self {
                handle: DetectorHandle::disabled(metrics),
                stop: Arc::default(),
                thread: None,
            });
        }
        let rule_count = rules.len();
        metrics
            .detector_rules
            .with_label_values(&["sigma"])
            .set(i64::try_from(rule_count).unwrap_or(i64::MAX));
        metrics
            .detector_rules
            .with_label_values(&["sql"])
            .set(i64::try_from(config.sql.len()).unwrap_or(i64::MAX));
        let detector = Detector::new(config, Arc::new(rules))
            .map_err(|p| anyhow::anyhow!("invalid detector config: {}", p.join("; ")))?;
        let (tx, rx) = bounded(config.queue_batches);
        let (commands, command_rx) = bounded(COMMAND_QUEUE);
        let runtime = tokio::runtime::Handle::current();
        let writer = AlertWriter {
            redactor,
            appender,
            sinks,
            metrics: metrics.clone(),
            runtime,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vigil-detector".into())
            .spawn(move || run(detector, rx, command_rx, writer, &stopped, &state))
            .context("cannot start the detector thread")?;
        tracing::info!(rules = rule_count, "detector started");
        Ok(Self {
            handle: DetectorHandle {
                tx: Some(tx),
                commands: Some(commands),
                metrics,
            },
            stop,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> DetectorHandle {
        self.handle.clone()
    }

    /// Stops taking batches, finishes the queued ones and writes their alerts. Call before
    /// storage closes.
    pub fn close(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("detector thread panicked");
        }
    }
}

fn run(
    mut detector: Detector,
    rx: Receiver<Input>,
    commands: Receiver<Command>,
    writer: AlertWriter,
    stop: &AtomicBool,
    state: &StateFile,
) {
    restore(&mut detector, state);
    let mut last_tick = Instant::now();
    let mut last_save = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let mut events = Vec::new();
        let mut replies = Vec::new();
        // Someone waits for each command, and each is quick: they go before batches.
        while let Ok(command) = commands.try_recv() {
            serve(&mut detector, command, &mut events, &mut replies);
        }
        let next = if stopping {
            // Finish what is queued, then exit.
            rx.try_recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            let wait = TICK.saturating_sub(last_tick.elapsed());
            select! {
                recv(rx) -> input => input.map_err(|_| RecvTimeoutError::Disconnected),
                recv(commands) -> command => {
                    if let Ok(command) = command {
                        serve(&mut detector, command, &mut events, &mut replies);
                    }
                    Err(RecvTimeoutError::Timeout)
                }
                default(wait) => Err(RecvTimeoutError::Timeout),
            }
        };
        match next {
            Ok(Input::Observed(observations)) => {
                events.extend(detector.observe(observations, now_ns()));
            }
            Ok(Input::Batch(batch)) => {
                let started = Instant::now();
                match detector.process(&batch, now_ns()) {
                    Ok(mut e) => events.append(&mut e),
                    Err(e) => tracing::error!(error = %e, "detector cannot read batch"),
                }
                let signal = batch.signal().as_str();
                writer
                    .metrics
                    .detector_duration
                    .with_label_values(&[signal])
                    .observe(started.elapsed().as_secs_f64());
                writer
                    .metrics
                    .detector_records
                    .with_label_values(&[signal])
                    .inc_by(batch.num_rows() as u64);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) if stopping => break,
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(TICK / 10),
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            events.extend(detector.tick(now_ns()));
            writer.metrics.record_detector_stats(&detector.stats());
            for (rule, reason, n) in detector.take_suppressed() {
                writer
                    .metrics
                    .alerts_suppressed
                    .with_label_values(&[rule.as_str(), reason.as_str()])
                    .inc_by(n);
            }
        }
        writer
            .metrics
            .alerts_firing
            .set(i64::try_from(detector.firing_count()).unwrap_or(i64::MAX));
        writer.write(&events);
        // After the write: whoever resolved an alert finds it resolved in the table.
        for reply in replies {
            reply.send();
        }
        if last_save.elapsed() >= SAVE_EVERY {
            last_save = Instant::now();
            save(&detector, state);
        }
    }
    save(&detector, state);
}

/// Takes over the state the last run saved. A file that cannot be used is set aside (kept for
/// inspection, not overwritten) and the detector starts afresh.
fn restore(detector: &mut Detector, state: &StateFile) {
    let path = state.path();
    let saved = match state.load() {
        Ok(Some(saved)) => saved,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(path = %path.display(), error = format!("{e:#}"),
                "cannot read the saved detector state; starting without it");
            state.set_aside();
            return;
        }
    };
    let (firing, edges) = (saved.alerts.firing(), saved.graph.edges());
    match detector.restore(saved) {
        Ok(()) => tracing::info!(firing, edges, "detector state restored"),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e,
                "cannot use the saved detector state; starting without it");
            state.set_aside();
        }
    }
}

fn save(detector: &Detector, state: &StateFile) {
    if let Err(e) = state.save(&detector.save(now_ns())) {
        tracing::error!(error = format!("{e:#}"), "cannot save the detector state");
    }
}

/// An answer to send once this round's alert events are written.
struct PendingReply {
    reply: oneshot::Sender<Option<Arc<Alert>>>,
    alert: Option<Arc<Alert>>,
}

impl PendingReply {
    fn send(self) {
        // The asker may have gone (client disconnected); the resolution stands regardless.
        let _ = self.reply.send(self.alert);
    }
}

fn serve(
    detector: &mut Detector,
    command: Command,
    events: &mut Vec<AlertEvent>,
    replies: &mut Vec<PendingReply>,
) {
    match command {
        Command::Graph(reply) => {
            let _ = reply.send(detector.graph());
        }
        Command::Baselines { service, reply } => {
            let _ = reply.send(detector.baselines(service.as_deref()));
        }
        Command::Resolve {
            fingerprint,
            by,
            stale,
            reply,
        } => {
            let now = now_ns();
            // A stale alert is resolved only if the detector did not just resolve it itself
            // (its resolved row may have landed after the caller read the table).
            let event = match detector.resolve(&fingerprint, &by, now) {
                Some(event) => Some(event),
                None if detector.resolved_recently(&fingerprint) => None,
                None => stale
                    .filter(|a| a.fingerprint == fingerprint && a.status == Status::Firing)
                    .map(|a| by.resolve_stale(*a, now)),
            };
            if let Some(e) = &event {
                tracing::info!(fingerprint = %fingerprint, principal = %by.principal, "alert resolved by hand");
                events.push(e.clone());
            }
            replies.push(PendingReply {
                reply,
                alert: event.map(|e| e.alert),
            });
        }
    }
}

/// Where alert state changes go: the log, metrics, the `alerts` table and the webhook sinks.
struct AlertWriter {
    redactor: Redactor,
    appender: Appender,
    sinks: Sinks,
    metrics: Metrics,
    runtime: tokio::runtime::Handle,
}

impl AlertWriter {
    fn write(&self, events: &[AlertEvent]) {
        if events.is_empty() {
            return;
        }
        for e in events {
            let a = &e.alert;
            match a.status {
                Status::Firing => {
                    self.metrics
                        .alerts
                        .with_label_values(&[a.rule_id.as_str(), a.severity.as_str()])
                        .inc();
                    tracing::warn!(rule_id = %a.rule_id, severity = %a.severity, service = %a.service, fingerprint = %a.fingerprint, "alert firing");
                }
                Status::Resolved => {
                    tracing::info!(rule_id = %a.rule_id, service = %a.service, fingerprint = %a.fingerprint, count = a.count, "alert resolved");
                }
            }
        }
        if let Err(e) = self.store(events) {
            self.metrics
                .alert_write_failures
                .inc_by(events.len() as u64);
            tracing::error!(error = %e, alerts = events.len(), "cannot write alerts table");
        }
        // Sinks get the alerts whether or not the table took them: on-call still hears of it.
        self.sinks.accept(events);
    }

    fn store(&self, events: &[AlertEvent]) -> anyhow::Result<()> {
        let records = alerts_batch(events).context("cannot build alerts batch")?;
        let batch =
            Batch::new(Signal::Alerts, records).context("alerts batch has the wrong schema")?;
        // Alerts are made from redacted data; they still pass the redactor, like everything
        // else that reaches disk.
        let batch = self.redactor.apply(batch).context("cannot redact alerts")?;
        Ok(self.runtime.block_on(self.appender.append_waiting(batch))?)
    }
}

/// Plans every scheduled SQL rule's query (without running it); reports each one that would
/// be refused.
pub async fn check_sql_rules(rules: &[SqlRule], engine: &QueryEngine) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for rule in rules {
        if let Err(e) = engine.check(&rule.query).await {
            problems.push(format!("detector.sql `{}`: {e}", rule.id));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Runs each scheduled SQL rule every `every` until `stopped` flips. Rows become observations;
/// a group returned last time but not now is cleared.
pub fn spawn_sql_rules(
    rules: &[SqlRule],
    engine: Arc<QueryEngine>,
    detector: DetectorHandle,
    stopped: tokio::sync::watch::Receiver<bool>,
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) {
    for rule in rules.iter().cloned() {
        let (engine, detector, mut stopped) = (engine.clone(), detector.clone(), stopped.clone());
        tasks.spawn(async move {
            let mut interval = tokio::time::interval(rule.every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut previous: Vec<AlertKey> = Vec::new();
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stopped.changed() => return Ok(()),
                }
                let result = match engine.execute(&rule.query).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(rule_id = %rule.id, error = %e, "scheduled sql rule failed");
                        continue;
                    }
                };
                let found = sql_observations(&rule, &result, now_ns());
                let keys: Vec<AlertKey> = found
                    .iter()
                    .filter_map(|o| match o {
                        Observation::Fire(c) => Some(c.key.clone()),
                        Observation::Clear(_) => None,
                    })
                    .collect();
                let mut observations = found;
                observations.extend(
                    previous
                        .iter()
                        .filter(|k| !keys.contains(k))
                        .cloned()
                        .map(Observation::Clear),
                );
                if detector.observed(observations) {
                    previous = keys;
                } else {
                    tracing::warn!(rule_id = %rule.id, "detector is behind; scheduled sql result dropped");
                }
            }
        });
    }
}

/// One observation per row of `result`.
pub fn sql_observations(rule: &SqlRule, result: &QueryResult, now_ns: i64) -> Vec<Observation> {
    let options = FormatOptions::default();
    let mut out = Vec::new();
    for batch in &result.batches {
        let schema = batch.schema();
        let formatters: Vec<(String, ArrayFormatter<'_>, &ArrayRef)> = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .filter_map(|(f, c)| {
                ArrayFormatter::try_new(c.as_ref(), &options)
                    .ok()
                    .map(|fmt| (f.name().clone(), fmt, c))
            })
            .collect();
        for row in 0..batch.num_rows() {
            let value = |name: &str| {
                formatters
                    .iter()
                    .find(|(n, _, _)| n == name)
                    .filter(|(_, _, c)| c.is_valid(row))
                    .map(|(_, f, _)| f.value(row).to_string())
            };
            let service = value(&rule.service_column).unwrap_or_else(|| "vigil".into());
            let mut key = AlertKey::new(&rule.id, &service);
            for column in &rule.group_by {
                key = key.with_group(column, value(column).unwrap_or_default());
            }
            let row_json: serde_json::Map<String, serde_json::Value> = formatters
                .iter()
                .filter(|(_, _, c)| c.is_valid(row))
                .map(|(n, f, _)| (n.clone(), serde_json::Value::from(f.value(row).to_string())))
                .collect();
            let mut details = serde_json::Map::new();
            details.insert("source".into(), "sql".into());
            details.insert("row".into(), serde_json::Value::Object(row_json));
            let group = key.group_text();
            out.push(Observation::Fire(Candidate {
                summary: if group.is_empty() {
                    format!("{} ({service})", rule.title)
                } else {
                    format!("{} ({service}: {group})", rule.title)
                },
                key,
                rule_title: rule.title.clone(),
                severity: rule.severity,
                details,
                time_ns: now_ns,
                sample: None,
            }));
        }
    }
    out
}
