//! Compacted storage: zstd Parquet files in a Hive-style layout
//! (`signal=logs/date=YYYY-MM-DD/hour=HH/<segment>.parquet`) that other engines read as is.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use arrow::array::{Array, TimestampNanosecondArray};
use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use vigil_core::Signal;
use vigil_core::schema::col;

use super::catalog::ParquetFile;
use super::crypto::Keyring;
use super::wal::sync_dir;

const NS_PER_HOUR: i64 = 3_600_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ParquetStoreError {
    #[error("parquet i/o on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write parquet file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("cannot read parquet footer of {path}")]
    Footer {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    /// An encrypted file that cannot be decrypted: a key missing from the keyring (or no
    /// keyring configured), or a file altered on disk. Never skipped silently.
    #[error(
        "cannot decrypt {path}; if its key was removed from the storage keyring, add it back \
         (or move the file out of the data directory to start without it)"
    )]
    Encrypted {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("cannot prepare batches for compaction")]
    Arrow(#[source] ArrowError),
    #[error("{path} has no `time` column statistics")]
    NoTimeStats { path: PathBuf },
    #[error(transparent)]
    Wal(#[from] super::wal::WalError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ParquetStoreError + '_ {
    move |source| ParquetStoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How compacted files are encoded.
#[derive(Debug, Clone)]
pub struct ParquetOptions {
    pub row_group_rows: usize,
    pub zstd_level: i32,
    /// With a keyring, files are encrypted (footer and every column) with its active key.
    pub encryption: Option<Keyring>,
}

impl ParquetOptions {
    fn writer_properties(&self) -> Result<WriterProperties, ParquetError> {
        let mut builder = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(self.zstd_level)?))
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)));
        if let Some(keyring) = &self.encryption {
            builder = builder
                .with_file_encryption_properties(keyring.keys().active().parquet_encryption()?);
        }
        Ok(builder.build())
    }
}

/// Magic at the end of a Parquet file whose footer is encrypted.
const ENCRYPTED_FOOTER_MAGIC: &[u8; 4] = b"PARE";

/// `root/signal=<s>`: every file of one table lives below it.
pub fn table_dir(root: &Path, signal: Signal) -> PathBuf {
    root.join(format!("signal={}", signal.as_str()))
}

/// The partition directory for the UTC hour that starts at `hour_start_ns`.
pub fn partition_dir(root: &Path, signal: Signal, hour_start_ns: i64) -> PathBuf {
    let t: DateTime<Utc> = DateTime::from_timestamp_nanos(hour_start_ns);
    table_dir(root, signal)
        .join(format!("date={}", t.format("%Y-%m-%d")))
        .join(format!("hour={}", t.format("%H")))
}

fn file_name(segment: u64) -> String {
    format!("{segment:020}.parquet")
}

/// Writes the rows of one WAL segment as one file per hour partition, sorted by time.
/// Each file is written under a temporary name, synced and renamed, so a crash never leaves
/// a half-written file under a final name.
pub fn write_segment(
    root: &Path,
    signal: Signal,
    segment: u64,
    batches: &[RecordBatch],
    options: &ParquetOptions,
) -> Result<Vec<ParquetFile>, ParquetStoreError> {
    let schema = signal.schema();
    let all = concat_batches(&schema, batches).map_err(ParquetStoreError::Arrow)?;
    if all.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let time = time_column(&all)?;
    let order = sort_to_indices(time, None, None).map_err(ParquetStoreError::Arrow)?;
    let sorted = take_record_batch(&all, &order).map_err(ParquetStoreError::Arrow)?;
    let times = time_column(&sorted)?;
    let props = options
        .writer_properties()
        .map_err(|source| ParquetStoreError::Write {
            path: root.to_owned(),
            source,
        })?;

    let mut files = Vec::new();
    let mut start = 0;
    while start < sorted.num_rows() {
        let hour = times.value(start).div_euclid(NS_PER_HOUR);
        let mut end = start + 1;
        while end < sorted.num_rows() && times.value(end).div_euclid(NS_PER_HOUR) == hour {
            end += 1;
        }
        let part = sorted.slice(start, end - start);
        let dir = partition_dir(root, signal, hour * NS_PER_HOUR);
        files.push(write_file(&dir, &file_name(segment), &part, props.clone())?);
        start = end;
    }
    Ok(files)
}

fn time_column(batch: &RecordBatch) -> Result<&TimestampNanosecondArray, ParquetStoreError> {
    batch
        .column_by_name(col::TIME)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| {
            ParquetStoreError::Arrow(ArrowError::SchemaError(
                "batch has no timestamp `time` column".into(),
            ))
        })
}

fn write_file(
    dir: &Path,
    name: &str,
    batch: &RecordBatch,
    props: WriterProperties,
) -> Result<ParquetFile, ParquetStoreError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let write_err = |source| ParquetStoreError::Write {
        path: tmp.clone(),
        source,
    };
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(write_err)?;
    writer.write(batch).map_err(write_err)?;
    let file = writer.into_inner().map_err(write_err)?;
    file.sync_all().map_err(io_err(&tmp))?;
    let size_bytes = file.metadata().map_err(io_err(&tmp))?.len();
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    let times = time_column(batch)?;
    let (min, max) = (arrow::compute::min(times), arrow::compute::max(times));
    Ok(ParquetFile {
        path,
        size_bytes,
        rows: batch.num_rows() as u64,
        min_time_ns: min.unwrap_or_default(),
        max_time_ns: max.unwrap_or_default(),
    })
}

/// Reads row count and `time` range from a file's footer, decrypting it with `keyring`
/// when the file is encrypted.
pub fn read_file_meta(
    path: &Path,
    keyring: Option<&Keyring>,
) -> Result<ParquetFile, ParquetStoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let size_bytes = file.metadata().map_err(io_err(path))?.len();
    let meta = ParquetMetaDataReader::new()
        .with_decryption_properties(keyring.map(Keyring::parquet_decryption))
        .parse_and_finish(&file)
        .map_err(|source| {
            if has_encrypted_footer(&file) {
                ParquetStoreError::Encrypted {
                    path: path.to_owned(),
                    source,
                }
            } else {
                ParquetStoreError::Footer {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    let time_idx = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == col::TIME)
        .ok_or_else(|| ParquetStoreError::NoTimeStats {
            path: path.to_owned(),
        })?;
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    for rg in meta.row_groups() {
        match rg.columns().get(time_idx).and_then(|c| c.statistics()) {
            Some(Statistics::Int64(s)) => {
                let (Some(lo), Some(hi)) = (s.min_opt(), s.max_opt()) else {
                    return Err(ParquetStoreError::NoTimeStats {
                        path: path.to_owned(),
                    });
                };
                min = min.min(*lo);
                max = max.max(*hi);
            }
            _ => {
                return Err(ParquetStoreError::NoTimeStats {
                    path: path.to_owned(),
                });
            }
        }
    }
    Ok(ParquetFile {
        path: path.to_owned(),
        size_bytes,
        rows: u64::try_from(meta.file_metadata().num_rows()).unwrap_or(0),
        min_time_ns: if min == i64::MAX { 0 } else { min },
        max_time_ns: if max == i64::MIN { 0 } else { max },
    })
}

fn has_encrypted_footer(file: &File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut tail = [0u8; 4];
    file.metadata()
        .ok()
        .and_then(|m| m.len().checked_sub(4))
        .is_some_and(|at| {
            file.read_exact_at(&mut tail, at).is_ok() && &tail == ENCRYPTED_FOOTER_MAGIC
        })
}

/// Every file below a table directory: final `.parquet` files and leftover `.tmp` files.
#[derive(Debug, Default)]
pub struct TableListing {
    pub files: Vec<PathBuf>,
    pub temporary: Vec<PathBuf>,
}

pub fn list_table(root: &Path, signal: Signal) -> Result<TableListing, ParquetStoreError> {
    let mut listing = TableListing::default();
    let mut stack = vec![table_dir(root, signal)];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io_err(&path))?;
            if kind.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "tmp") {
                listing.temporary.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                listing.files.push(path);
            }
        }
    }
    listing.files.sort();
    Ok(listing)
}

/// The WAL segment a compacted file came from, read from its name.
pub fn segment_of(path: &Path) -> Option<u64> {
    path.file_stem()?.to_str()?.parse().ok()
}

/// Removes a file and, when they become empty, its hour and date directories.
pub fn remove_file(root: &Path, signal: Signal, path: &Path) -> Result<(), ParquetStoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    let stop = table_dir(root, signal);
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == stop || !d.starts_with(&stop) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_path_is_hive_style_utc() {
        // 2026-11-22T05:00:00Z
        let ns = 1_795_323_600_000_000_000;
        let p = partition_dir(Path::new("/d"), Signal::Logs, ns);
        assert_eq!(p, PathBuf::from("/d/signal=logs/date=2026-11-22/hour=05"));
        assert_eq!(
            segment_of(Path::new("/x/00000000000000000042.parquet")),
            Some(42)
        );
    }
}
