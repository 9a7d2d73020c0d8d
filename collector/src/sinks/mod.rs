//! The sink stage: alert state changes go to webhooks (Alertmanager, OCSF, Splunk HEC, Vigil
//! JSON), at least once, signed, through a durable outbox.
//!
//! ```text
//! detector ─ accept() ─▶ route + group ─▶ groups.json ─ due ─▶ render ─▶ pending/ ─▶ HTTP
//!                                                                         │  retry (backoff)
//!                                                                         └▶ dead/ ─▶ `dead_letters`
//! ```
//! An alert counts as accepted once the grouping state that holds it is on disk; from then on
//! it is delivered after receiver outages and Vigil restarts, or kept as a dead letter.
//! Receivers deduplicate on `webhook-id`, which stays the same on every retry.

pub mod config;
mod deliver;
pub mod egress;
pub mod format;
mod group;
mod outbox;
pub mod sign;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arrow::array::{
    ArrayRef, RecordBatch, StringBuilder, TimestampNanosecondBuilder, UInt16Builder, UInt32Builder,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use vigil_core::schema::dead_letters_schema;
use vigil_core::time::duration_ns;
use vigil_core::{Batch, Redactor, Signal};
use vigil_detector::AlertEvent;

pub use config::{AlertsConfig, Format, SinkConfig};
use deliver::{Attempt, Sender, backoff};
use egress::EgressPolicy;
use group::Groups;
use outbox::{Message, Outbox};
use sign::SigningKey;

use crate::metrics::Metrics;
use crate::secrets::read_secret;
use crate::storage::Appender;
use crate::storage::crypto::FileSealer;
use vigil_core::time::now_ns;

/// Why a notification became a dead letter (the `reason` column and metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeadReason {
    Rejected,
    Gone,
    RetriesExhausted,
    OutboxFull,
    EgressDenied,
}

impl DeadReason {
    fn as_str(self) -> &'static str {
        match self {
            DeadReason::Rejected => "rejected",
            DeadReason::Gone => "gone",
            DeadReason::RetriesExhausted => "retries_exhausted",
            DeadReason::OutboxFull => "outbox_full",
            DeadReason::EgressDenied => "egress_denied",
        }
    }
}

/// What becomes of a notification after an attempt.
#[derive(Debug, Clone, Copy)]
enum Next {
    Delivered,
    /// Try again at this time (ns).
    RetryAt(i64),
    Dead(DeadReason),
}

/// Cheap to clone; what the detector hands alert events to.
#[derive(Clone)]
pub struct Sinks {
    sinks: Arc<Vec<Arc<Sink>>>,
}

/// The running stage.
pub struct SinkStage {
    sinks: Sinks,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

struct Sink {
    config: SinkConfig,
    /// Base URL of links back to Vigil in payloads, without a trailing slash.
    external_url: String,
    sender: Sender,
    outbox: Outbox,
    state: Mutex<State>,
    wake: Notify,
    metrics: Metrics,
    /// For dead letters, which are stored like everything else.
    redactor: Redactor,
    appender: Appender,
}

struct State {
    groups: Groups,
    /// Pending notifications, oldest first.
    queue: Vec<Message>,
    /// Groups with a request in flight (one at a time per group keeps their order).
    in_flight: HashSet<String>,
    /// Cleared when the receiver answers 410 Gone.
    up: bool,
}

impl Sinks {
    /// Hands alert state changes to every sink whose route takes them. Returns once each
    /// sink's grouping state holding them is on disk.
    pub fn accept(&self, events: &[AlertEvent]) {
        let now = now_ns();
        for sink in self.sinks.iter() {
            let mut state = sink.state.lock();
            let mut changed = false;
            for e in events {
                changed |= state.groups.accept(&sink.config, &e.alert, now);
            }
            if changed {
                if let Err(e) = sink.outbox.save_groups(&state.groups) {
                    tracing::error!(sink = %sink.config.name, error = %e,
                        "cannot save the sink's grouping state; alerts are held in memory only");
                }
                drop(state);
                sink.wake.notify_one();
            }
        }
    }
}

impl SinkStage {
    /// Opens each sink's outbox under `<data_dir>/outbox/<name>`, reads its secrets and starts
    /// its delivery task. Dead letters left by a crash are written to the table first.
    pub fn start(
        config: &AlertsConfig,
        external_url: &str,
        data_dir: &Path,
        redactor: Redactor,
        appender: Appender,
        metrics: Metrics,
        sealer: FileSealer,
    ) -> anyhow::Result<Self> {
        let egress = Arc::new(
            EgressPolicy::parse(&config.egress_allow)
                .map_err(|p| anyhow::anyhow!("alerts.egress_allow: {}", p.join("; ")))?,
        );
        let external_url = config
            .external_url
            .as_deref()
            .unwrap_or(external_url)
            .trim_end_matches('/')
            .to_owned();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut sinks = Vec::new();
        for c in &config.sinks {
            let at = || format!("sink `{}`", c.name);
            let key = read_secret(c.secret_env.as_deref(), c.secret_file.as_deref())
                .with_context(|| format!("{}: signing secret", at()))?
                .map(|s| SigningKey::parse(&s))
                .transpose()
                .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
            let token = read_secret(c.token_env.as_deref(), c.token_file.as_deref())
                .with_context(|| format!("{}: HEC token", at()))?;
            let sender = Sender::new(c, &egress, key, token).with_context(at)?;
            let dir = data_dir.join("outbox").join(&c.name);
            let (outbox, recovered) = Outbox::open(&dir, sealer.clone())
                .with_context(|| format!("{}: cannot open outbox {}", at(), dir.display()))?;
            if !recovered.pending.is_empty() {
                tracing::info!(sink = %c.name, pending = recovered.pending.len(),
                    "resuming delivery of queued notifications");
            }
            let sink = Arc::new(Sink {
                config: c.clone(),
                external_url: external_url.clone(),
                sender,
                outbox,
                state: Mutex::new(State {
                    groups: recovered.groups,
                    queue: recovered.pending,
                    in_flight: HashSet::new(),
                    up: true,
                }),
                wake: Notify::new(),
                metrics: metrics.clone(),
                redactor: redactor.clone(),
                appender: appender.clone(),
            });
            metrics.webhook_sink_up.with_label_values(&[&c.name]).set(1);
            tracing::info!(sink = %c.name, format = c.format.as_str(), sender = ?sink.sender,
                "webhook sink started");
            let recovered_dead = recovered.dead;
            let task_sink = sink.clone();
            let stopped = stopped.clone();
            tasks.spawn(async move {
                for m in recovered_dead {
                    task_sink.record_dead(m).await;
                }
                task_sink.run(stopped).await;
            });
            sinks.push(sink);
        }
        Ok(Self {
            sinks: Sinks {
                sinks: Arc::new(sinks),
            },
            stop,
            tasks,
        })
    }

    pub fn sinks(&self) -> Sinks {
        self.sinks.clone()
    }

    /// Stops starting deliveries and waits (up to `timeout`) for requests in flight. What is
    /// still queued stays in the outbox for the next start.
    pub async fn close(mut self, timeout: Duration) {
        let _ = self.stop.send(true);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(timeout, drain).await.is_err() {
            tracing::warn!(
                "webhook deliveries still in flight at shutdown; they resume on restart"
            );
            self.tasks.abort_all();
        }
    }
}

impl Sink {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut requests: JoinSet<(Message, Attempt)> = JoinSet::new();
        loop {
            if *stopped.borrow() {
                break;
            }
            let now = now_ns();
            let dead = self.make_due(now);
            for m in dead {
                self.record_dead(m).await;
            }
            for m in self.start_due(now) {
                let sink = self.clone();
                requests.spawn(async move {
                    let started = std::time::Instant::now();
                    let outcome = sink
                        .sender
                        .send(&m.id, &m.body, now_ns() / 1_000_000_000)
                        .await;
                    sink.metrics
                        .webhook_duration
                        .with_label_values(&[sink.name()])
                        .observe(started.elapsed().as_secs_f64());
                    (m, outcome)
                });
            }
            let wait = self.next_wake(now);
            tokio::select! {
                Some(done) = requests.join_next() => {
                    match done {
                        Ok((m, outcome)) => self.finish(m, outcome).await,
                        Err(e) => tracing::error!(sink = %self.name(), error = %e, "delivery task failed"),
                    }
                }
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = stopped.changed() => {}
            }
        }
        // Let requests in flight finish so their outcome is recorded.
        while let Some(done) = requests.join_next().await {
            if let Ok((m, outcome)) = done {
                self.finish(m, outcome).await;
            }
        }
    }

    /// Turns due groups into rendered, stored notifications. Returns those refused because
    /// the outbox is full.
    fn make_due(&self, now: i64) -> Vec<Message> {
        let mut state = self.state.lock();
        let notes = state.groups.due(&self.config, now);
        if notes.is_empty() {
            return Vec::new();
        }
        let mut refused = Vec::new();
        for n in notes {
            let services: HashSet<&str> = n.alerts.iter().map(|a| a.service.as_str()).collect();
            let mut m = Message {
                id: n.id.clone(),
                group_key: n.group_key.clone(),
                created_ns: n.created_ns,
                service: match services.iter().next() {
                    Some(s) if services.len() == 1 => (*s).to_owned(),
                    _ => "mixed".into(),
                },
                fingerprints: n.alerts.iter().map(|a| a.fingerprint.clone()).collect(),
                body: format::render(&self.config, &self.external_url, &n),
                attempts: 0,
                next_attempt_ns: now,
                last_status: None,
                last_error: String::new(),
                dead_reason: None,
            };
            if state.queue.len() >= self.config.max_outbox {
                m.last_error = format!("outbox holds {} notifications", state.queue.len());
                m.dead_reason = Some(DeadReason::OutboxFull.as_str().into());
                refused.push(m);
                continue;
            }
            if let Err(e) = self.outbox.put(&m) {
                tracing::error!(sink = %self.name(), error = %e,
                    "cannot store notification in the outbox; it is held in memory only");
            }
            state.queue.push(m);
        }
        // Written after the notifications: a crash in between re-makes them under the same
        // ids, which replaces the same files.
        if let Err(e) = self.outbox.save_groups(&state.groups) {
            tracing::error!(sink = %self.name(), error = %e, "cannot save the sink's grouping state");
        }
        self.set_outbox_gauge(&state);
        refused
    }

    /// Picks notifications to send now: due, the oldest of their group, their group not in
    /// flight, up to `concurrency` requests.
    fn start_due(&self, now: i64) -> Vec<Message> {
        let mut state = self.state.lock();
        if !state.up {
            return Vec::new();
        }
        let State {
            queue, in_flight, ..
        } = &mut *state;
        let mut seen: HashSet<&str> = HashSet::new();
        let mut start = Vec::new();
        for m in queue.iter() {
            if in_flight.len() + start.len() >= self.config.concurrency {
                break;
            }
            let first_of_group = seen.insert(m.group_key.as_str());
            if first_of_group && m.next_attempt_ns <= now && !in_flight.contains(&m.group_key) {
                start.push(m.clone());
            }
        }
        for m in &start {
            in_flight.insert(m.group_key.clone());
        }
        start
    }

    /// How long the loop may sleep: until the next retry or group notification is due.
    fn next_wake(&self, now: i64) -> Duration {
        let state = self.state.lock();
        let retry = state
            .up
            .then(|| {
                state
                    .queue
                    .iter()
                    .filter(|m| !state.in_flight.contains(&m.group_key))
                    .map(|m| m.next_attempt_ns)
                    .min()
            })
            .flatten();
        let next = [retry, state.groups.next_due_ns(&self.config)]
            .into_iter()
            .flatten()
            .min();
        let ns = next.map_or(60_000_000_000, |t| {
            t.saturating_sub(now).clamp(0, 60_000_000_000)
        });
        Duration::from_nanos(u64::try_from(ns).unwrap_or(0)).max(Duration::from_millis(5))
    }

    /// Records how an attempt ended: done, retried later, or given up as a dead letter.
    async fn finish(&self, mut m: Message, attempt: Attempt) {
        m.attempts += 1;
        let next = match attempt {
            Attempt::Delivered => Next::Delivered,
            Attempt::Retry {
                status,
                error,
                after,
            } => {
                m.last_status = status;
                m.last_error = error;
                let delay = backoff(
                    self.config.initial_backoff,
                    self.config.max_backoff,
                    m.attempts,
                    after,
                );
                let at = now_ns().saturating_add(duration_ns(delay));
                if at
                    > m.created_ns
                        .saturating_add(duration_ns(self.config.retry_for))
                {
                    Next::Dead(DeadReason::RetriesExhausted)
                } else {
                    tracing::warn!(sink = %self.name(), id = %m.id, attempts = m.attempts,
                        status = ?status, error = %m.last_error, retry_in = ?delay, "webhook delivery failed; will retry");
                    Next::RetryAt(at)
                }
            }
            Attempt::Rejected { status, error } => {
                m.last_status = status;
                m.last_error = error;
                Next::Dead(DeadReason::Rejected)
            }
            Attempt::Gone => {
                m.last_status = Some(410);
                m.last_error = "receiver answered 410 Gone".into();
                tracing::error!(sink = %self.name(), destination = %self.sender.origin(),
                    "WEBHOOK SINK DISABLED: the receiver answered 410 Gone. Notifications stay \
                     in the outbox and are retried after the sink is fixed and Vigil restarts");
                self.metrics
                    .webhook_sink_up
                    .with_label_values(&[self.name()])
                    .set(0);
                Next::Dead(DeadReason::Gone)
            }
            Attempt::Denied { error } => {
                m.last_error = error;
                Next::Dead(DeadReason::EgressDenied)
            }
        };
        let outcome = match next {
            Next::Delivered => "delivered",
            Next::RetryAt(_) => "retry",
            Next::Dead(_) => "dead",
        };
        self.metrics
            .webhook_deliveries
            .with_label_values(&[self.name(), outcome])
            .inc();
        if let Next::RetryAt(at) = next {
            m.next_attempt_ns = at;
        }
        {
            let mut state = self.state.lock();
            state.in_flight.remove(&m.group_key);
            if matches!(next, Next::Dead(DeadReason::Gone)) {
                state.up = false;
            }
            let pos = state.queue.iter().position(|q| q.id == m.id);
            match (pos, next) {
                (Some(i), Next::RetryAt(_)) => {
                    if let Some(slot) = state.queue.get_mut(i) {
                        slot.clone_from(&m);
                    }
                }
                (Some(i), _) => {
                    state.queue.remove(i);
                }
                (None, _) => {}
            }
            self.set_outbox_gauge(&state);
        }
        let stored = match next {
            Next::Delivered => self.outbox.remove(&m),
            Next::RetryAt(_) => self.outbox.put(&m),
            Next::Dead(reason) => {
                m.dead_reason = Some(reason.as_str().into());
                tracing::error!(sink = %self.name(), id = %m.id, reason = reason.as_str(), attempts = m.attempts,
                    status = ?m.last_status, error = %m.last_error, "webhook notification given up; kept in dead_letters");
                let buried = self.outbox.bury(&m);
                self.record_dead(m).await;
                buried
            }
        };
        if let Err(e) = stored {
            tracing::error!(sink = %self.name(), error = %e,
                "cannot update the outbox; the notification may be sent again after a restart");
        }
    }

    /// Appends a dead letter to its table, through the redactor like everything stored.
    async fn write_dead_letter(&self, m: &Message) -> anyhow::Result<()> {
        let records = dead_letter_batch(&self.config, &self.sender.origin(), m)?;
        let batch = Batch::new(Signal::DeadLetters, records)
            .context("dead letter batch has the wrong schema")?;
        let batch = self
            .redactor
            .apply(batch)
            .context("cannot redact dead letter")?;
        Ok(self.appender.append_waiting(batch).await?)
    }

    fn set_outbox_gauge(&self, state: &State) {
        self.metrics
            .webhook_outbox
            .with_label_values(&[self.name()])
            .set(i64::try_from(state.queue.len()).unwrap_or(i64::MAX));
    }

    /// Writes a dead letter to the `dead_letters` table, then forgets its file. If the table
    /// cannot take it, the file stays and is written on the next start.
    async fn record_dead(&self, m: Message) {
        let reason = m.dead_reason.clone().unwrap_or_default();
        self.metrics
            .webhook_dead_letters
            .with_label_values(&[self.name(), &reason])
            .inc();
        match self.write_dead_letter(&m).await {
            Ok(()) => {
                if let Err(e) = self.outbox.forget_dead(&m)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(sink = %self.name(), error = %e, "cannot remove recorded dead letter file");
                }
            }
            Err(e) => tracing::error!(sink = %self.name(), error = %e,
                "cannot write the dead_letters table; the dead letter stays in the outbox"),
        }
    }
}

/// The `dead_letters` row of `m` (the destination as its origin only).
fn dead_letter_batch(sink: &SinkConfig, origin: &str, m: &Message) -> anyhow::Result<RecordBatch> {
    let ts = |v: i64| {
        let mut b = TimestampNanosecondBuilder::with_capacity(1).with_timezone("UTC");
        b.append_value(v);
        Arc::new(b.finish()) as ArrayRef
    };
    let text = |v: &str| {
        let mut b = StringBuilder::new();
        b.append_value(v);
        Arc::new(b.finish()) as ArrayRef
    };
    let mut attempts = UInt32Builder::new();
    attempts.append_value(m.attempts);
    let mut status = UInt16Builder::new();
    status.append_option(m.last_status);
    let columns = vec![
        ts(now_ns()),
        ts(m.created_ns),
        text(&sink.name),
        text(sink.format.as_str()),
        text(origin),
        text(&m.id),
        text(&m.service),
        text(&m.fingerprints.join(",")),
        text(m.dead_reason.as_deref().unwrap_or_default()),
        Arc::new(attempts.finish()),
        Arc::new(status.finish()),
        text(&m.last_error),
        text(&m.body),
    ];
    Ok(RecordBatch::try_new(dead_letters_schema(), columns)?)
}
