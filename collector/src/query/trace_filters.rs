//! The `trace_id` bloom filters of compacted Parquet files, read once and kept in memory within
//! a byte budget, so that a lookup by trace id plans only the files that may hold the trace.
//!
//! Compaction writes a bloom filter for `trace_id` in every row group of an unencrypted file
//! (see `storage::parquet`). DataFusion consults them too, but per query and per file: it opens
//! each file the plan names and reads its filters before skipping it, so a lookup over a day of
//! files cost as much as opening all of them. With the filters at hand, the scan leaves those
//! files out of the plan.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::common::ScalarValue;
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::ParquetMetaDataReader;
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use vigil_core::schema::col;

use crate::storage::catalog::ParquetFile;

/// A split-block bloom filter block: eight 32-bit words.
const SBBF_BLOCK_BYTES: usize = 32;

/// What is known about the trace ids of one file.
#[derive(Debug)]
pub struct FileTraceIds {
    /// One filter per row group, an id none of them may hold is not in the file; `None` when
    /// there is no usable filter (an encrypted file, a row group written without one, a file
    /// that could not be read) and the file may hold any id.
    filters: Option<Vec<Sbbf>>,
    /// Memory the filters take.
    bytes: u64,
}

impl FileTraceIds {
    fn new(filters: Option<Vec<Sbbf>>) -> Self {
        let bytes = filters
            .iter()
            .flatten()
            .map(|f| (f.num_blocks() * SBBF_BLOCK_BYTES) as u64)
            .sum();
        Self { filters, bytes }
    }

    /// Whether the file may hold any of `values`; `None` when it cannot be told (a value that
    /// is not a string, or no filter).
    pub fn may_hold_any<'a>(&self, values: impl Iterator<Item = &'a ScalarValue>) -> Option<bool> {
        let row_groups = self.filters.as_ref()?;
        let mut strings = Vec::new();
        for value in values {
            match value {
                ScalarValue::Utf8(Some(s))
                | ScalarValue::Utf8View(Some(s))
                | ScalarValue::LargeUtf8(Some(s)) => strings.push(s.as_str()),
                // `trace_id = NULL` matches no row; any other type is not what the filter
                // hashed.
                ScalarValue::Utf8(None)
                | ScalarValue::Utf8View(None)
                | ScalarValue::LargeUtf8(None) => {}
                _ => return None,
            }
        }
        Some(
            row_groups
                .iter()
                .any(|filter| strings.iter().any(|s| filter.check(*s))),
        )
    }
}

/// A file's identity in the cache: files are written once under a name of their own, and the
/// size and row count guard against a path reused for other contents.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileKey {
    path: PathBuf,
    size_bytes: u64,
    rows: u64,
}

impl FileKey {
    fn of(file: &ParquetFile) -> Self {
        Self {
            path: file.path.clone(),
            size_bytes: file.size_bytes,
            rows: file.rows,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ByBytes;

impl Weighter<FileKey, Arc<FileTraceIds>> for ByBytes {
    fn weight(&self, key: &FileKey, value: &Arc<FileTraceIds>) -> u64 {
        // The entry itself counts too, so that files without filters are bounded as well.
        value.bytes + key.path.as_os_str().len() as u64 + 64
    }
}

/// The filters of the files queries looked up most recently, within a byte budget. Shared by
/// every query of an engine.
pub struct TraceFilters {
    cache: Option<Cache<FileKey, Arc<FileTraceIds>, ByBytes>>,
}

impl std::fmt::Debug for TraceFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceFilters")
            .field("bytes", &self.cache.as_ref().map(|c| c.weight()))
            .field("files", &self.cache.as_ref().map(|c| c.len()))
            .finish()
    }
}

/// The filters of a file compacted from a 64 MiB logs segment (about 50k records) take up to
/// 64 KiB (measured: 242 files of a 10M-record store, 11 MiB).
const TYPICAL_FILTER_BYTES: u64 = 64 * 1024;

impl TraceFilters {
    /// Keeps up to `budget_bytes` of filters; with 0, every lookup reads them from the files.
    pub fn new(budget_bytes: u64) -> Self {
        let cache = (budget_bytes > 0).then(|| {
            let files = usize::try_from(budget_bytes / TYPICAL_FILTER_BYTES)
                .unwrap_or(usize::MAX)
                .max(16);
            Cache::with_weighter(files, budget_bytes, ByBytes)
        });
        Self { cache }
    }

    /// The trace ids known of each of `files`, in order, reading the filters of those not in
    /// memory (once: concurrent lookups of a file wait for the one reading it). Blocking: file
    /// reads.
    pub fn of(&self, files: &[Arc<ParquetFile>]) -> Vec<Arc<FileTraceIds>> {
        let load = |file: &ParquetFile| Arc::new(read(&file.path));
        files
            .iter()
            .map(|file| match &self.cache {
                Some(cache) => cache
                    .get_or_insert_with(&FileKey::of(file), || {
                        Ok::<_, std::convert::Infallible>(load(file))
                    })
                    .unwrap_or_else(|never| match never {}),
                None => load(file),
            })
            .collect()
    }
}

/// Reads the `trace_id` filter of every row group of the file at `path`.
fn read(path: &Path) -> FileTraceIds {
    match try_read(path) {
        Ok(filters) => FileTraceIds::new(filters),
        Err(e) => {
            // An encrypted footer cannot be parsed without the keys, and encrypted files have no
            // filters anyway; the scan reads such a file as it would without this.
            tracing::debug!(path = %path.display(), error = %e, "no trace id filters for file");
            FileTraceIds::new(None)
        }
    }
}

fn try_read(path: &Path) -> Result<Option<Vec<Sbbf>>, Box<dyn std::error::Error>> {
    let file = File::open(path)?;
    let meta = ParquetMetaDataReader::new().parse_and_finish(&file)?;
    let Some(column) = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().parts().len() == 1 && c.name() == col::TRACE_ID)
    else {
        return Ok(None);
    };
    let mut filters = Vec::with_capacity(meta.num_row_groups());
    for row_group in meta.row_groups() {
        let Some(chunk) = row_group.columns().get(column) else {
            return Ok(None);
        };
        match Sbbf::read_from_column_chunk(chunk, &file)? {
            Some(filter) => filters.push(filter),
            None => return Ok(None),
        }
    }
    Ok(Some(filters))
}
