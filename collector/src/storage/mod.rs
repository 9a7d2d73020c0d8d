//! Durable storage: the WAL (group commit, replay), compaction of closed WAL segments into
//! Parquet, retention, and the catalog that queries read.
//!
//! Three threads do the disk work so the async runtime never blocks on it:
//! - the **WAL writer** takes appends from a bounded channel, writes each group as one frame per
//!   signal, fsyncs once per group (per the sync policy), publishes the batches to the catalog
//!   and only then acknowledges; it rotates segments by size and age;
//! - the **compactor** turns each closed segment into hour-partitioned Parquet, swaps it into
//!   the catalog in one step and deletes the segment;
//! - **retention** deletes Parquet files by age and total size.
//!
//! Exactly-once across crashes: a compacted file is named after its segment. At start, files
//! whose segment is still in the WAL are leftovers of an interrupted compaction and are deleted
//! before the segment is replayed, so no record is ever both in the WAL and in Parquet.

pub mod catalog;
pub mod crypto;
pub mod parquet;
pub mod wal;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;
use vigil_core::time::{duration_ns, now_ns};
use vigil_core::{RedactedBatch, Signal};

use crate::config::{RetentionConfig, StorageConfig, WalSync};
use crate::metrics::Metrics;
use catalog::Catalog;
use crypto::Keyring;
use parquet::{ParquetOptions, ParquetStoreError};
use wal::{SegmentWriter, WalError};

/// Most bytes of batches one group commit takes before writing.
const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;
/// Delay before a failed compaction is tried again (doubles up to the maximum).
const COMPACTION_RETRY_MIN: Duration = Duration::from_secs(1);
const COMPACTION_RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resolve the data directory {path} against the working directory")]
    Resolve {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another vigil process")]
    Locked(PathBuf),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Parquet(#[from] ParquetStoreError),
    #[error("cannot start storage thread")]
    Thread(#[source] std::io::Error),
}

/// Why an append was not accepted or not made durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Compaction or the WAL writer is behind; retry soon.
    #[error("storage is busy")]
    Overloaded,
    /// Shutting down, or the data directory cannot be written (disk full, i/o error): the WAL
    /// failed, or closed segments are waiting on a compaction that keeps failing.
    #[error("{0}")]
    Unavailable(String),
}

/// Where data lives inside the data directory.
struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The data directory, made absolute once: queries name Parquet files by `file://` URL,
    /// which a relative path (the default `vigil-data`) does not have, and a later change of
    /// the working directory must not move the data.
    fn new(data_dir: &Path) -> Result<Self, StorageError> {
        let root = std::path::absolute(data_dir).map_err(|source| StorageError::Resolve {
            path: data_dir.to_owned(),
            source,
        })?;
        Ok(Self { root })
    }
    fn wal_dir(&self, signal: Signal) -> PathBuf {
        self.root.join("wal").join(signal.as_str())
    }
    fn parquet_root(&self) -> PathBuf {
        self.root.join("parquet")
    }
}

struct AppendRequest {
    batch: RedactedBatch,
    done: oneshot::Sender<Result<(), AppendError>>,
}

struct Shared {
    catalog: Arc<Catalog>,
    metrics: Metrics,
    pending_segments: AtomicUsize,
    max_pending_segments: usize,
    /// When the last WAL write failed (ms since `started`, 0 = healthy). For a short while
    /// after a failure appends fail fast; then one is let through to probe the disk again.
    wal_failed_at_ms: AtomicU64,
    /// The last compaction attempt failed (and is being retried). Segments waiting on it are
    /// not load to wait out but a fault, typically a full disk: appends refused because of
    /// them are `Unavailable`, not `Overloaded`.
    compaction_failing: AtomicBool,
    started: Instant,
    closing: AtomicBool,
}

/// The running storage: owns the data directory (exclusively) and its three threads.
pub struct Storage {
    shared: Arc<Shared>,
    appends: Sender<AppendRequest>,
    stop_retention: Sender<()>,
    threads: Vec<JoinHandle<()>>,
    _lock: File,
}

/// How long appends fail fast after a WAL write failure before one probes the disk again.
const WAL_FAILURE_BACKOFF_MS: u64 = 1000;

impl Shared {
    fn wal_failing(&self) -> bool {
        let failed_at = self.wal_failed_at_ms.load(Ordering::Acquire);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        failed_at != 0 && now.saturating_sub(failed_at) < WAL_FAILURE_BACKOFF_MS
    }
}

/// Cheap handle for appending from async code.
#[derive(Clone)]
pub struct Appender {
    shared: Arc<Shared>,
    appends: Sender<AppendRequest>,
}

impl Appender {
    /// Queues a batch for the WAL. Fails fast when storage is behind or unwritable; otherwise
    /// resolves once the batch is durable (per the sync policy) and visible to queries.
    pub async fn append(&self, batch: RedactedBatch) -> Result<(), AppendError> {
        self.accepting()?;
        let (done, wait) = oneshot::channel();
        match self.appends.try_send(AppendRequest { batch, done }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(AppendError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                return Err(AppendError::Unavailable("vigil is shutting down".into()));
            }
        }
        wait.await
            .unwrap_or_else(|_| Err(AppendError::Unavailable("vigil is shutting down".into())))
    }

    /// Whether an append made now would be taken: not shutting down, the WAL writable and
    /// compaction keeping up. Receivers ask before reading a request, so that a request storage
    /// would refuse costs no decoding; [`Self::append`] asks again.
    pub fn accepting(&self) -> Result<(), AppendError> {
        let s = &self.shared;
        if s.closing.load(Ordering::Acquire) {
            return Err(AppendError::Unavailable("vigil is shutting down".into()));
        }
        if s.wal_failing() {
            return Err(AppendError::Unavailable(
                "the write-ahead log cannot be written".into(),
            ));
        }
        if s.pending_segments.load(Ordering::Acquire) >= s.max_pending_segments {
            if s.compaction_failing.load(Ordering::Acquire) {
                return Err(AppendError::Unavailable(
                    "the data directory cannot be written (compaction is failing)".into(),
                ));
            }
            return Err(AppendError::Overloaded);
        }
        Ok(())
    }

    /// [`Self::append`] for Vigil's own records (alerts, dead letters), which have no client
    /// to retry for them: while storage is busy, tries again every 100 ms for up to 5 s.
    pub async fn append_waiting(&self, batch: RedactedBatch) -> Result<(), AppendError> {
        for _ in 1..50 {
            match self.append(batch.clone()).await {
                Err(AppendError::Overloaded) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                done => return done,
            }
        }
        self.append(batch).await
    }

    /// Accepting and able to write: what `/readyz` reports.
    ///
    /// Unlike [`Self::accepting`], a WAL failure counts until a write succeeds again, not only
    /// for the back-off that lets appends probe it.
    pub fn is_ready(&self) -> bool {
        self.accepting().is_ok() && self.shared.wal_failed_at_ms.load(Ordering::Acquire) == 0
    }

    pub fn queue_depth(&self) -> usize {
        self.appends.len()
    }
}

/// What start-up found on disk for one signal.
struct Recovered {
    /// Replayed WAL segments, in order, to be compacted.
    segments: Vec<u64>,
    next_segment: u64,
    wal_bytes: u64,
}

impl Storage {
    /// Opens (or creates) the data directory, recovers it and starts the storage threads.
    /// `queue_capacity` bounds appends waiting for the WAL writer. With `keyring`, everything
    /// written is encrypted with its active key (what is on disk is read with any of its keys).
    pub fn open(
        config: &StorageConfig,
        retention: &RetentionConfig,
        queue_capacity: usize,
        keyring: Option<Keyring>,
        metrics: Metrics,
    ) -> Result<Self, StorageError> {
        let layout = Layout::new(&config.data_dir)?;
        for signal in Signal::ALL {
            create_dir(&layout.wal_dir(signal))?;
        }
        create_dir(&layout.parquet_root())?;
        let lock = lock_data_dir(&layout.root)?;

        let catalog = Arc::new(Catalog::new());
        let mut recovered = HashMap::new();
        for signal in Signal::ALL {
            let r = recover(&layout, signal, &catalog, keyring.as_ref(), Mode::ReadWrite)?;
            recovered.insert(signal, r);
        }
        let wal_bytes: u64 = recovered.values().map(|r| r.wal_bytes).sum();
        metrics
            .wal_bytes
            .set(i64::try_from(wal_bytes).unwrap_or(i64::MAX));
        let pending: usize = recovered.values().map(|r| r.segments.len()).sum();

        let shared = Arc::new(Shared {
            catalog: catalog.clone(),
            metrics: metrics.clone(),
            pending_segments: AtomicUsize::new(pending),
            // Replayed segments count: ingest waits (429, not ready) until they are compacted.
            max_pending_segments: config.max_pending_segments,
            wal_failed_at_ms: AtomicU64::new(0),
            compaction_failing: AtomicBool::new(false),
            started: Instant::now(),
            closing: AtomicBool::new(false),
        });
        update_file_gauges(&catalog, &metrics);

        let parquet_options = ParquetOptions {
            row_group_rows: config.parquet_row_group_rows,
            zstd_level: config.parquet_zstd_level,
            encryption: keyring.clone(),
        };
        let (compact_tx, compact_rx) = crossbeam_channel::unbounded();
        for signal in Signal::ALL {
            for seg in recovered
                .get(&signal)
                .map(|r| r.segments.clone())
                .unwrap_or_default()
            {
                // The receiver is alive: it is in scope right here.
                let _ = compact_tx.send((signal, seg));
            }
        }
        let compactor = Compactor {
            shared: shared.clone(),
            parquet_root: layout.parquet_root(),
            wal_dirs: Signal::ALL
                .map(|s| (s, layout.wal_dir(s)))
                .into_iter()
                .collect(),
            options: parquet_options,
        };
        let mut threads = vec![spawn("vigil-compactor", move || compactor.run(compact_rx))?];

        let (append_tx, append_rx) = crossbeam_channel::bounded(queue_capacity.max(1));
        let writer = WalWriter {
            shared: shared.clone(),
            dirs: Signal::ALL
                .map(|s| (s, layout.wal_dir(s)))
                .into_iter()
                .collect(),
            next_segment: Signal::ALL
                .map(|s| (s, recovered.get(&s).map_or(1, |r| r.next_segment)))
                .into_iter()
                .collect(),
            open: BTreeMap::new(),
            sync: config.wal_sync,
            sync_interval: config.sync_interval,
            segment_max_bytes: config.segment_max_bytes,
            segment_max_age: config.segment_max_age,
            compact: compact_tx,
            last_sync: Instant::now(),
            keyring,
        };
        threads.push(spawn("vigil-wal", move || writer.run(append_rx))?);

        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let retention = Retention {
            shared: shared.clone(),
            parquet_root: layout.parquet_root(),
            config: retention.clone(),
        };
        threads.push(spawn("vigil-retention", move || retention.run(stop_rx))?);

        Ok(Self {
            shared,
            appends: append_tx,
            stop_retention: stop_tx,
            threads,
            _lock: lock,
        })
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.shared.catalog.clone()
    }

    pub fn appender(&self) -> Appender {
        Appender {
            shared: self.shared.clone(),
            appends: self.appends.clone(),
        }
    }

    /// Stops taking appends, writes and syncs everything already queued, finishes queued
    /// compactions and stops the threads. Appenders still alive get `Unavailable` afterwards.
    pub fn close(self) {
        self.shared.closing.store(true, Ordering::Release);
        let Storage {
            appends,
            stop_retention,
            threads,
            ..
        } = self;
        drop(appends);
        let _ = stop_retention.send(());
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a storage thread panicked during shutdown");
            }
        }
    }
}

/// Loads a data directory for reading only (`vigil query --data-dir`): nothing is written,
/// truncated or deleted, and no lock is taken. Encrypted files need their keys in `keyring`.
pub fn open_read_only(
    data_dir: &Path,
    keyring: Option<&Keyring>,
) -> Result<Arc<Catalog>, StorageError> {
    let layout = Layout::new(data_dir)?;
    let catalog = Arc::new(Catalog::new());
    for signal in Signal::ALL {
        recover(&layout, signal, &catalog, keyring, Mode::ReadOnly)?;
    }
    Ok(catalog)
}

fn create_dir(path: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(path).map_err(|source| StorageError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

fn lock_data_dir(root: &Path) -> Result<File, StorageError> {
    let path = root.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StorageError::CreateDir {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(StorageError::Locked(root.to_owned())),
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StorageError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(StorageError::Thread)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    ReadWrite,
    ReadOnly,
}

/// Brings one table's catalog entries back from disk: Parquet files first, then the WAL.
fn recover(
    layout: &Layout,
    signal: Signal,
    catalog: &Catalog,
    keyring: Option<&Keyring>,
    mode: Mode,
) -> Result<Recovered, StorageError> {
    let wal_dir = layout.wal_dir(signal);
    let segments = wal::list_segments(&wal_dir)?;
    let in_wal: HashSet<u64> = segments.iter().map(|(id, _)| *id).collect();
    let root = layout.parquet_root();
    let listing = parquet::list_table(&root, signal)?;

    let mut max_id = 0;
    let mut files = Vec::new();
    for path in listing.files {
        let seg = parquet::segment_of(&path);
        max_id = max_id.max(seg.unwrap_or(0));
        if seg.is_some_and(|s| in_wal.contains(&s)) {
            // Output of a compaction that did not finish: the segment is replayed instead.
            if mode == Mode::ReadWrite {
                tracing::info!(path = %path.display(), "removing output of interrupted compaction");
                parquet::remove_file(&root, signal, &path)?;
            }
            continue;
        }
        match parquet::read_file_meta(&path, keyring) {
            Ok(f) => files.push(f),
            Err(e @ ParquetStoreError::Encrypted { .. }) => return Err(e.into()),
            Err(e) => tracing::error!(error = %causes(&e), "skipping unreadable parquet file"),
        }
    }
    if mode == Mode::ReadWrite {
        for tmp in listing.temporary {
            parquet::remove_file(&root, signal, &tmp)?;
        }
    }
    catalog.add_files(signal, files);

    let mut replayed = Vec::new();
    let mut wal_bytes = 0;
    let keys = keyring.map(Keyring::keys);
    for (id, path) in segments {
        max_id = max_id.max(id);
        let r = wal::read_segment(&path, keys.as_deref())?;
        if r.discarded_bytes > 0 {
            tracing::warn!(
                segment = %path.display(),
                discarded_bytes = r.discarded_bytes,
                "wal segment ends in a torn or corrupt frame; keeping its intact prefix"
            );
            if mode == Mode::ReadWrite && r.valid_len > 0 {
                wal::truncate_segment(&path, r.valid_len)?;
            }
        }
        if r.batches.is_empty() {
            if mode == Mode::ReadWrite {
                std::fs::remove_file(&path).map_err(|source| WalError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            continue;
        }
        let rows: usize = r.batches.iter().map(RecordBatch::num_rows).sum();
        tracing::info!(signal = %signal, segment = id, rows, "replayed wal segment");
        for b in r.batches {
            catalog.add_memory(signal, id, b);
        }
        wal_bytes += r.valid_len;
        replayed.push(id);
    }
    Ok(Recovered {
        segments: replayed,
        next_segment: max_id + 1,
        wal_bytes,
    })
}

struct OpenSegment {
    writer: SegmentWriter,
    opened: Instant,
    /// Length after the last successful group commit; a failed write or sync cuts back to it,
    /// so frames of a failed (unacknowledged) group never survive.
    committed_len: u64,
}

struct WalWriter {
    shared: Arc<Shared>,
    dirs: HashMap<Signal, PathBuf>,
    next_segment: HashMap<Signal, u64>,
    open: BTreeMap<Signal, OpenSegment>,
    sync: WalSync,
    sync_interval: Duration,
    segment_max_bytes: u64,
    segment_max_age: Duration,
    compact: Sender<(Signal, u64)>,
    last_sync: Instant,
    /// With a keyring, each new segment is encrypted with its active key.
    keyring: Option<Keyring>,
}

impl WalWriter {
    fn run(mut self, appends: Receiver<AppendRequest>) {
        loop {
            let first = match appends.recv_timeout(self.next_wakeup()) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    self.on_timer();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut group = vec![first];
            let mut bytes = group
                .iter()
                .map(|r| r.batch.records().get_array_memory_size())
                .sum::<usize>();
            while bytes < MAX_GROUP_BYTES {
                match appends.try_recv() {
                    Ok(r) => {
                        bytes += r.batch.records().get_array_memory_size();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.shared
                .metrics
                .queue_depth
                .with_label_values(&["wal"])
                .set(appends.len() as i64);
            self.commit(group);
            self.on_timer();
        }
        // Every sender is gone: everything queued has been written. Make it durable.
        for signal in self.open.keys().copied().collect::<Vec<_>>() {
            if let Some(seg) = self.open.get_mut(&signal)
                && let Err(e) = seg.writer.sync()
            {
                tracing::error!(error = %causes(&e), "final wal sync failed");
            }
        }
        tracing::info!("wal writer stopped");
    }

    fn next_wakeup(&self) -> Duration {
        let mut wake = self.segment_max_age;
        for seg in self.open.values() {
            wake = wake.min(self.segment_max_age.saturating_sub(seg.opened.elapsed()));
        }
        if self.sync == WalSync::Interval && !self.open.is_empty() {
            wake = wake.min(self.sync_interval.saturating_sub(self.last_sync.elapsed()));
        }
        wake.max(Duration::from_millis(1))
    }

    /// Periodic work: interval fsync and age-based rotation.
    fn on_timer(&mut self) {
        if self.sync == WalSync::Interval && self.last_sync.elapsed() >= self.sync_interval {
            for signal in self.open.keys().copied().collect::<Vec<_>>() {
                if let Err(e) = self.sync_segment(signal) {
                    tracing::error!(error = %causes(&e), "wal interval sync failed");
                }
            }
            self.last_sync = Instant::now();
        }
        let expired: Vec<Signal> = self
            .open
            .iter()
            .filter(|(_, s)| {
                s.opened.elapsed() >= self.segment_max_age
                    || s.writer.bytes() >= self.segment_max_bytes
            })
            .map(|(sig, _)| *sig)
            .collect();
        for signal in expired {
            self.rotate(signal);
        }
    }

    /// Writes one group: a frame per signal, one fsync per written segment, then publishes
    /// and acknowledges. On failure nobody in the group is acknowledged.
    fn commit(&mut self, group: Vec<AppendRequest>) {
        let mut by_signal: BTreeMap<Signal, Vec<usize>> = BTreeMap::new();
        for (i, r) in group.iter().enumerate() {
            by_signal.entry(r.batch.signal()).or_default().push(i);
        }
        let mut result = Ok(());
        for (signal, idx) in &by_signal {
            let batches: Vec<RecordBatch> = idx
                .iter()
                .filter_map(|i| group.get(*i))
                .map(|r| r.batch.records().clone())
                .collect();
            if let Err(e) = self.write_frame(*signal, &batches) {
                tracing::error!(error = %causes(&e), signal = %signal, "wal write failed");
                result = Err(AppendError::Unavailable(
                    "the write-ahead log cannot be written".into(),
                ));
                break;
            }
        }
        if result.is_ok() && self.sync == WalSync::Always {
            for signal in by_signal.keys() {
                if let Err(e) = self.sync_segment(*signal) {
                    tracing::error!(error = %causes(&e), signal = %signal, "wal fsync failed");
                    result = Err(AppendError::Unavailable(
                        "the write-ahead log cannot be synced".into(),
                    ));
                    break;
                }
            }
        }
        if result.is_err() {
            self.recover_from_failure();
        } else {
            for signal in by_signal.keys() {
                if let Some(seg) = self.open.get_mut(signal) {
                    seg.committed_len = seg.writer.bytes();
                }
            }
            self.shared.wal_failed_at_ms.store(0, Ordering::Release);
        }
        for r in group {
            if result.is_ok() {
                let signal = r.batch.signal();
                if let Some(seg) = self.open.get(&signal) {
                    self.shared
                        .catalog
                        .add_memory(signal, seg.writer.id(), r.batch.into_records());
                }
            }
            // The requester may have given up (client went away): nothing to do then.
            let _ = r.done.send(result.clone());
        }
    }

    fn write_frame(&mut self, signal: Signal, batches: &[RecordBatch]) -> Result<(), WalError> {
        let payload = wal::encode_payload(&signal.schema(), batches)?;
        let seg = self.segment(signal)?;
        let before = seg.writer.bytes();
        seg.writer.append(&payload)?;
        let written = seg.writer.bytes() - before;
        self.shared
            .metrics
            .wal_bytes
            .add(i64::try_from(written).unwrap_or(i64::MAX));
        Ok(())
    }

    fn sync_segment(&mut self, signal: Signal) -> Result<(), WalError> {
        if let Some(seg) = self.open.get_mut(&signal) {
            seg.writer.sync()?;
            self.shared
                .metrics
                .wal_fsyncs
                .with_label_values(&[signal.as_str()])
                .inc();
        }
        Ok(())
    }

    /// The open segment for `signal`, creating it on first use.
    fn segment(&mut self, signal: Signal) -> Result<&mut OpenSegment, WalError> {
        if !self.open.contains_key(&signal) {
            let id = self.next_segment.get(&signal).copied().unwrap_or(1);
            let dir = self.dirs.get(&signal).cloned().unwrap_or_default();
            let keys = self.keyring.as_ref().map(Keyring::keys);
            let writer = SegmentWriter::create(&dir, id, keys)?;
            self.next_segment.insert(signal, id + 1);
            let committed_len = writer.bytes();
            // The header counts too: compaction subtracts whole segment files.
            self.shared
                .metrics
                .wal_bytes
                .add(i64::try_from(committed_len).unwrap_or(0));
            self.open.insert(
                signal,
                OpenSegment {
                    writer,
                    opened: Instant::now(),
                    committed_len,
                },
            );
        }
        self.open.get_mut(&signal).ok_or_else(|| WalError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other("segment vanished"),
        })
    }

    /// After a failed write or fsync: cut every open segment back to its last committed group,
    /// close it, and start fresh segments on the next append (a new file may succeed where the
    /// old one failed, e.g. once disk space returns).
    fn recover_from_failure(&mut self) {
        let since_start =
            u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.shared
            .wal_failed_at_ms
            .store(since_start.max(1), Ordering::Release);
        for (signal, seg) in std::mem::take(&mut self.open) {
            let (path, id, committed) = (
                seg.writer.path().to_owned(),
                seg.writer.id(),
                seg.committed_len,
            );
            let cut = seg.writer.bytes().saturating_sub(committed);
            self.shared
                .metrics
                .wal_bytes
                .sub(i64::try_from(cut).unwrap_or(0));
            drop(seg);
            if let Err(e) = wal::truncate_segment(&path, committed) {
                tracing::error!(error = %causes(&e), "cannot truncate wal segment after a failed write");
            }
            self.hand_to_compactor(signal, id);
        }
    }

    fn rotate(&mut self, signal: Signal) {
        let Some(mut seg) = self.open.remove(&signal) else {
            return;
        };
        if let Err(e) = seg.writer.sync() {
            tracing::error!(error = %causes(&e), "wal sync at rotation failed");
            let path = seg.writer.path().to_owned();
            let _ = wal::truncate_segment(&path, seg.committed_len);
        }
        let id = seg.writer.id();
        drop(seg);
        self.hand_to_compactor(signal, id);
    }

    fn hand_to_compactor(&self, signal: Signal, id: u64) {
        self.shared.pending_segments.fetch_add(1, Ordering::AcqRel);
        if self.compact.send((signal, id)).is_err() {
            tracing::error!("compactor is gone; segment stays in the wal until restart");
        }
    }
}

struct Compactor {
    shared: Arc<Shared>,
    parquet_root: PathBuf,
    wal_dirs: HashMap<Signal, PathBuf>,
    options: ParquetOptions,
}

impl Compactor {
    fn run(self, segments: Receiver<(Signal, u64)>) {
        // Ends when the WAL writer (the only sender) is gone and the queue is drained.
        for (signal, id) in segments.iter() {
            let mut delay = COMPACTION_RETRY_MIN;
            loop {
                match self.compact(signal, id) {
                    Ok(()) => {
                        self.shared
                            .compaction_failing
                            .store(false, Ordering::Release);
                        self.shared
                            .metrics
                            .compactions
                            .with_label_values(&[signal.as_str(), "ok"])
                            .inc();
                        break;
                    }
                    Err(e) => {
                        self.shared
                            .compaction_failing
                            .store(true, Ordering::Release);
                        self.shared
                            .metrics
                            .compactions
                            .with_label_values(&[signal.as_str(), "error"])
                            .inc();
                        tracing::error!(error = %causes(&e), signal = %signal, segment = id, "compaction failed; retrying");
                        if self.shared.closing.load(Ordering::Acquire) {
                            // Leave it in the WAL; the next start replays and compacts it.
                            break;
                        }
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(COMPACTION_RETRY_MAX);
                    }
                }
            }
            self.shared.pending_segments.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn compact(&self, signal: Signal, id: u64) -> Result<(), StorageError> {
        let batches = self.shared.catalog.segment_batches(signal, id);
        let files =
            parquet::write_segment(&self.parquet_root, signal, id, &batches, &self.options)?;
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        let nfiles = files.len();
        self.shared.catalog.replace_segment(signal, id, files);
        let wal_dir = self.wal_dirs.get(&signal).cloned().unwrap_or_default();
        let path = wal_dir.join(wal::segment_file_name(id));
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(&path).map_err(|source| WalError::Io {
            path: path.clone(),
            source,
        })?;
        wal::sync_dir(&wal_dir)?;
        self.shared
            .metrics
            .wal_bytes
            .sub(i64::try_from(size).unwrap_or(0));
        update_file_gauges(&self.shared.catalog, &self.shared.metrics);
        tracing::debug!(signal = %signal, segment = id, rows, files = nfiles, "compacted wal segment");
        Ok(())
    }
}

struct Retention {
    shared: Arc<Shared>,
    parquet_root: PathBuf,
    config: RetentionConfig,
}

impl Retention {
    fn run(self, stop: Receiver<()>) {
        loop {
            self.enforce();
            match stop.recv_timeout(self.config.check_interval) {
                Err(RecvTimeoutError::Timeout) => continue,
                _ => break,
            }
        }
    }

    /// Deletes files whose newest record is older than `max_age`, then the oldest files while
    /// the total exceeds `max_bytes`.
    fn enforce(&self) {
        let cutoff = now_ns().saturating_sub(duration_ns(self.config.max_age));
        let mut files = self.shared.catalog.all_files();
        files.sort_by_key(|(_, f)| (f.max_time_ns, f.path.clone()));
        let mut total: u64 = files.iter().map(|(_, f)| f.size_bytes).sum();
        let mut doomed: Vec<(Signal, PathBuf, &'static str)> = Vec::new();
        for (signal, f) in &files {
            let reason = if f.max_time_ns < cutoff {
                "max_age"
            } else if total > self.config.max_bytes {
                "max_bytes"
            } else {
                continue;
            };
            total = total.saturating_sub(f.size_bytes);
            doomed.push((*signal, f.path.clone(), reason));
        }
        for (signal, path, reason) in doomed {
            self.shared
                .catalog
                .remove_files(signal, std::slice::from_ref(&path));
            match parquet::remove_file(&self.parquet_root, signal, &path) {
                Ok(()) => {
                    self.shared
                        .metrics
                        .retention_deleted_files
                        .with_label_values(&[signal.as_str(), reason])
                        .inc();
                    tracing::info!(path = %path.display(), reason, "retention deleted file");
                }
                Err(e) => tracing::error!(error = %causes(&e), "retention cannot delete file"),
            }
        }
        update_file_gauges(&self.shared.catalog, &self.shared.metrics);
    }
}

/// An error and its sources, `outer: inner: ...`: storage errors name the file at the top and
/// keep the operating system's reason (`No space left on device`) in a source, which a log of
/// the top error alone would hide.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        // Some errors (Parquet's `External`) already print their source.
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

fn update_file_gauges(catalog: &Catalog, metrics: &Metrics) {
    for signal in Signal::ALL {
        let snap = catalog.snapshot(signal);
        let bytes: u64 = snap.files.iter().map(|f| f.size_bytes).sum();
        metrics
            .parquet_bytes
            .with_label_values(&[signal.as_str()])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        metrics
            .parquet_files
            .with_label_values(&[signal.as_str()])
            .set(snap.files.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use vigil_core::Redactor;
    use vigil_core::decode::decode_logs;

    use super::*;

    fn batch(n: usize, time_ns: u64) -> RedactedBatch {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: (0..n)
                        .map(|i| LogRecord {
                            time_unix_nano: time_ns + i as u64,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Redactor::disabled()
            .apply(decode_logs(&req, 1).unwrap().batch)
            .unwrap()
    }

    fn now() -> u64 {
        vigil_core::time::now_ns() as u64
    }

    fn config(dir: &Path) -> StorageConfig {
        StorageConfig {
            data_dir: dir.to_owned(),
            segment_max_age: Duration::from_secs(3600),
            ..Default::default()
        }
    }

    fn open(cfg: &StorageConfig) -> Storage {
        Storage::open(
            cfg,
            &RetentionConfig::default(),
            16,
            None,
            Metrics::new().unwrap(),
        )
        .unwrap()
    }

    fn rows(catalog: &Catalog) -> u64 {
        catalog.snapshot(Signal::Logs).rows()
    }

    async fn append_all(storage: &Storage, batches: Vec<RedactedBatch>) {
        let appender = storage.appender();
        for b in batches {
            appender.append(b).await.unwrap();
        }
    }

    #[tokio::test]
    async fn appended_batches_are_visible_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let storage = open(&cfg);
        append_all(&storage, vec![batch(10, now()), batch(5, now())]).await;
        assert_eq!(rows(&storage.catalog()), 15);
        storage.close();
        let storage = open(&cfg);
        assert_eq!(rows(&storage.catalog()), 15);
        storage.close();
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&config(dir.path()));
        let err = Storage::open(
            &config(dir.path()),
            &RetentionConfig::default(),
            16,
            None,
            Metrics::new().unwrap(),
        );
        assert!(matches!(err, Err(StorageError::Locked(_))));
        storage.close();
    }

    #[tokio::test]
    async fn interrupted_compaction_is_redone_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let storage = open(&cfg);
        let b = batch(20, now());
        append_all(&storage, vec![b.clone()]).await;
        storage.close();
        // Simulate a crash after compaction wrote its file but before it deleted the segment.
        let layout = Layout {
            root: dir.path().to_owned(),
        };
        let segs = wal::list_segments(&layout.wal_dir(Signal::Logs)).unwrap();
        assert_eq!(segs.len(), 1);
        let options = ParquetOptions {
            row_group_rows: 1024,
            zstd_level: 1,
            encryption: None,
        };
        parquet::write_segment(
            &layout.parquet_root(),
            Signal::Logs,
            segs[0].0,
            &[b.into_records()],
            &options,
        )
        .unwrap();
        assert_eq!(
            rows(&open_read_only(dir.path(), None).unwrap()),
            20,
            "read-only view must not double count"
        );

        let storage = open(&cfg);
        assert_eq!(rows(&storage.catalog()), 20);
        storage.close();
    }

    #[tokio::test]
    async fn compaction_never_reuses_a_segment_id_of_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StorageConfig {
            segment_max_age: Duration::from_millis(50),
            ..config(dir.path())
        };
        for round in 1..=3u64 {
            let storage = open(&cfg);
            append_all(&storage, vec![batch(7, now())]).await;
            let catalog = storage.catalog();
            let deadline = Instant::now() + Duration::from_secs(20);
            while catalog.memory_rows(Signal::Logs) > 0 {
                assert!(Instant::now() < deadline, "compaction did not run");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(rows(&catalog), 7 * round);
            storage.close();
        }
        let files = parquet::list_table(&dir.path().join("parquet"), Signal::Logs)
            .unwrap()
            .files;
        assert_eq!(files.len(), 3);
    }

    /// A compaction that keeps failing (here the Parquet directory is a file; in life, a full
    /// disk) holds its segment back. Appends refused because of it are `Unavailable` (a fault:
    /// 503), not `Overloaded` (load: 429), and go through again once the segment compacts.
    #[tokio::test]
    async fn appends_are_unavailable_while_compaction_fails_and_resume_after() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StorageConfig {
            // Every group closes its segment, and one waiting segment stops appends.
            segment_max_bytes: 1,
            max_pending_segments: 1,
            ..config(dir.path())
        };
        let storage = open(&cfg);
        let parquet_root = dir.path().join("parquet");
        std::fs::remove_dir_all(&parquet_root).unwrap();
        std::fs::write(&parquet_root, b"not a directory").unwrap();
        let appender = storage.appender();
        appender.append(batch(5, now())).await.unwrap();
        let mut rows_appended = 5;

        let deadline = Instant::now() + Duration::from_secs(20);
        let refused = loop {
            match appender.append(batch(1, now())).await {
                // Its segment was not closed yet, or the compactor has not tried yet.
                Ok(()) => rows_appended += 1,
                Err(AppendError::Overloaded) => {}
                other => break other,
            }
            assert!(
                Instant::now() < deadline,
                "appends never refused as unavailable"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(
            matches!(&refused, Err(AppendError::Unavailable(m)) if m.contains("compaction")),
            "{refused:?}"
        );
        assert!(!appender.is_ready());

        std::fs::remove_file(&parquet_root).unwrap();
        std::fs::create_dir(&parquet_root).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match appender.append(batch(1, now())).await {
                Ok(()) => break,
                Err(e) => {
                    assert!(matches!(
                        e,
                        AppendError::Unavailable(_) | AppendError::Overloaded
                    ));
                    assert!(Instant::now() < deadline, "appends did not resume: {e:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        assert_eq!(rows(&storage.catalog()), rows_appended + 1);
        drop(appender);
        storage.close();
    }

    #[test]
    fn logged_errors_keep_their_cause() {
        let e = StorageError::Wal(WalError::Io {
            path: PathBuf::from("/data/wal/logs/7.wal"),
            source: std::io::Error::from_raw_os_error(28),
        });
        let text = causes(&e);
        assert!(
            text.starts_with("wal i/o on /data/wal/logs/7.wal: "),
            "{text}"
        );
        assert!(text.contains("No space left on device"), "{text}");
        assert_eq!(text.matches("No space left").count(), 1, "{text}");

        let e = StorageError::Parquet(ParquetStoreError::Write {
            path: PathBuf::from("/data/parquet/x.parquet.tmp"),
            source: ::parquet::errors::ParquetError::External(Box::new(
                std::io::Error::from_raw_os_error(28),
            )),
        });
        let text = causes(&e);
        assert!(text.starts_with("cannot write parquet file /data/parquet/x.parquet.tmp: "));
        assert_eq!(text.matches("No space left").count(), 1, "{text}");
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_later_appends_replay() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let storage = open(&cfg);
        append_all(&storage, vec![batch(3, now())]).await;
        storage.close();
        let wal_dir = dir.path().join("wal").join("logs");
        let (_, path) = wal::list_segments(&wal_dir).unwrap().remove(0);
        // Half a frame header: what a crash in the middle of a write leaves.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &[7, 0, 0]))
            .unwrap();
        let storage = open(&cfg);
        append_all(&storage, vec![batch(4, now())]).await;
        storage.close();
        let storage = open(&cfg);
        assert_eq!(rows(&storage.catalog()), 7);
        storage.close();
    }
}
