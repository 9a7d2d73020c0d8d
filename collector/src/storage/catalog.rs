//! The catalog: which data each table consists of right now, as compacted Parquet files plus
//! batches still only in the WAL. Queries take a snapshot; compaction swaps data in one step.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use parking_lot::RwLock;
use vigil_core::Signal;

/// One compacted Parquet file and the facts the query planner prunes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetFile {
    /// Absolute path.
    pub path: PathBuf,
    pub size_bytes: u64,
    pub rows: u64,
    /// Smallest and largest `time` in the file, ns since the epoch (UTC).
    pub min_time_ns: i64,
    pub max_time_ns: i64,
}

/// What one query sees of one table: a consistent cut, never showing a WAL segment both as
/// memory batches and as the Parquet files compacted from it.
#[derive(Debug, Clone, Default)]
pub struct TableSnapshot {
    pub files: Vec<Arc<ParquetFile>>,
    pub memory: Vec<RecordBatch>,
}

impl TableSnapshot {
    pub fn rows(&self) -> u64 {
        let mem: usize = self.memory.iter().map(RecordBatch::num_rows).sum();
        self.files.iter().map(|f| f.rows).sum::<u64>() + mem as u64
    }
}

#[derive(Debug, Default)]
struct TableState {
    files: BTreeMap<PathBuf, Arc<ParquetFile>>,
    /// Uncompacted batches keyed by the WAL segment that holds them.
    memory: BTreeMap<u64, Vec<RecordBatch>>,
}

/// Shared, lock-protected table contents. Cheap to snapshot (clones `Arc`s and batch handles).
#[derive(Debug, Default)]
pub struct Catalog {
    tables: RwLock<HashMap<Signal, TableState>>,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self, signal: Signal) -> TableSnapshot {
        let tables = self.tables.read();
        let Some(t) = tables.get(&signal) else {
            return TableSnapshot::default();
        };
        TableSnapshot {
            files: t.files.values().cloned().collect(),
            memory: t.memory.values().flatten().cloned().collect(),
        }
    }

    /// Makes durable WAL records of `segment` visible to queries.
    pub fn add_memory(&self, signal: Signal, segment: u64, batch: RecordBatch) {
        let mut tables = self.tables.write();
        let t = tables.entry(signal).or_default();
        t.memory.entry(segment).or_default().push(batch);
    }

    /// Registers Parquet files found at start-up or written by compaction.
    pub fn add_files(&self, signal: Signal, files: impl IntoIterator<Item = ParquetFile>) {
        let mut tables = self.tables.write();
        let t = tables.entry(signal).or_default();
        for f in files {
            t.files.insert(f.path.clone(), Arc::new(f));
        }
    }

    /// The uncompacted batches of one WAL segment (what compaction writes out).
    pub fn segment_batches(&self, signal: Signal, segment: u64) -> Vec<RecordBatch> {
        let tables = self.tables.read();
        tables
            .get(&signal)
            .and_then(|t| t.memory.get(&segment))
            .cloned()
            .unwrap_or_default()
    }

    /// Atomically replaces the memory batches of `segment` with the files compacted from them.
    pub fn replace_segment(&self, signal: Signal, segment: u64, files: Vec<ParquetFile>) {
        let mut tables = self.tables.write();
        let t = tables.entry(signal).or_default();
        t.memory.remove(&segment);
        for f in files {
            t.files.insert(f.path.clone(), Arc::new(f));
        }
    }

    /// Drops files (retention). Returns the ones that were known.
    pub fn remove_files(&self, signal: Signal, paths: &[PathBuf]) -> Vec<Arc<ParquetFile>> {
        let mut tables = self.tables.write();
        let Some(t) = tables.get_mut(&signal) else {
            return Vec::new();
        };
        paths.iter().filter_map(|p| t.files.remove(p)).collect()
    }

    /// All files of all tables, for retention decisions.
    pub fn all_files(&self) -> Vec<(Signal, Arc<ParquetFile>)> {
        let tables = self.tables.read();
        tables
            .iter()
            .flat_map(|(s, t)| t.files.values().map(move |f| (*s, f.clone())))
            .collect()
    }

    /// Rows held only in memory (uncompacted), per table.
    pub fn memory_rows(&self, signal: Signal) -> usize {
        let tables = self.tables.read();
        tables.get(&signal).map_or(0, |t| {
            t.memory.values().flatten().map(RecordBatch::num_rows).sum()
        })
    }
}
