//! Compacted storage: zstd Parquet files in a Hive-style layout
//! (`signal=logs/date=YYYY-MM-DD/hour=HH/<segment>.parquet`) that other engines read as is.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use arrow::array::{BooleanArray, TimestampNanosecondArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use vigil_core::Signal;
use vigil_core::schema::col;

use super::catalog::ParquetFile;
use super::crypto::Keyring;
use super::wal::sync_dir;

const NS_PER_HOUR: i64 = 3_600_000_000_000;

/// Columns whose values are (nearly) all distinct.
const UNIQUE_COLUMNS: &[&str] = &["trace_id", "span_id", "parent_span_id"];

/// Free text: values seldom repeat within a row group.
const TEXT_COLUMNS: &[&str] = &["body"];

/// The Parquet leaf columns (`<map>.entries.key`, `<map>.entries.value`) of every map column
/// `keep` accepts by name.
fn map_leaves(schema: &SchemaRef, keep: impl Fn(&str) -> bool) -> Vec<ColumnPath> {
    let mut leaves = Vec::new();
    for field in schema.fields() {
        if let DataType::Map(entries, _) = field.data_type()
            && let DataType::Struct(key_value) = entries.data_type()
            && keep(field.name())
        {
            for leaf in key_value {
                leaves.push(ColumnPath::new(vec![
                    field.name().clone(),
                    entries.name().clone(),
                    leaf.name().clone(),
                ]));
            }
        }
    }
    leaves
}

/// Maps that repeat whole on every row of a request: the resource's and the scope's attributes.
/// Each is one run of identical bytes per request, which zstd takes as long matches for little
/// CPU, where a dictionary hashes and looks up every key and value of every row.
fn repeated_map(name: &str) -> bool {
    matches!(name, col::RESOURCE | "scope_attributes")
}

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
    /// The writer settings compaction uses for `signal`'s files.
    pub fn writer_properties(&self, signal: Signal) -> Result<WriterProperties, ParquetError> {
        let mut builder = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(self.zstd_level)?))
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)));
        let schema = signal.schema();
        let present = |columns: &'static [&'static str]| {
            columns
                .iter()
                .filter(|c| schema.column_with_name(c).is_some())
                .map(|c| ColumnPath::from(*c))
        };
        // Ids are unique per record and free text seldom repeats: a dictionary never pays, and
        // building one until it overflows costs a hash of every value. Repeated maps do better
        // as runs (see `repeated_map`).
        for column in present(UNIQUE_COLUMNS)
            .chain(present(TEXT_COLUMNS))
            .chain(map_leaves(&schema, repeated_map))
        {
            builder = builder.set_column_dictionary_enabled(column, false);
        }
        // Statistics: the writer compares every value of a column against its page's min/max,
        // and a resource map repeats on every row of its request. Min/max over all of a map's
        // entries or over free text prune no file (queries filter on one key's value, or
        // search the text), so those columns go without. The record attributes keep their
        // dictionaries: with no map dictionary at all compaction took about 13% less CPU, but
        // files were 7% larger and queries filtering on a map 6-13% slower (BENCHMARKS.md,
        // Compaction).
        for column in present(TEXT_COLUMNS).chain(map_leaves(&schema, |_| true)) {
            builder = builder.set_column_statistics_enabled(column, EnabledStatistics::None);
        }
        match &self.encryption {
            Some(keyring) => {
                builder = builder
                    .with_file_encryption_properties(keyring.keys().active().parquet_encryption()?);
            }
            // A trace id is what an analyst pivots on, and ids are random, so a file's min/max
            // statistics cannot rule it out: a bloom filter per row group (sized for a full
            // row group of distinct ids, 5% false positives, about 6 bits an id) lets a lookup
            // by id skip nearly every file. Not in encrypted files: the Parquet writer stores
            // bloom filters in the clear, and one would answer "is this trace here?" without
            // the key.
            None => {
                builder =
                    builder.set_column_bloom_filter_enabled(ColumnPath::from(col::TRACE_ID), true);
            }
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

/// Writes the rows of one WAL segment as one file per hour partition, in the order the WAL
/// holds them (arrival order, close to time order; each file's time range is in the catalog
/// and in its row-group statistics). Each file is written under a temporary name, synced and
/// renamed, so a crash never leaves a half-written file under a final name.
///
/// Batches go to the writer as they are: no concatenation, sort or copy of the segment, which
/// cost as much CPU as the encoding itself. Hours are written one after the other, so a
/// segment whose records span many hours holds one file open at a time.
pub fn write_segment(
    root: &Path,
    signal: Signal,
    segment: u64,
    batches: &[RecordBatch],
    options: &ParquetOptions,
) -> Result<Vec<ParquetFile>, ParquetStoreError> {
    let props = options
        .writer_properties(signal)
        .map_err(|source| ParquetStoreError::Write {
            path: root.to_owned(),
            source,
        })?;
    // Each batch's hours, and every hour of the segment in order.
    let mut spans = Vec::with_capacity(batches.len());
    let mut hours = std::collections::BTreeSet::new();
    for batch in batches {
        let times = time_column(batch)?;
        let batch_hours: std::collections::BTreeSet<i64> = times
            .values()
            .iter()
            .map(|t| t.div_euclid(NS_PER_HOUR))
            .collect();
        hours.extend(batch_hours.iter().copied());
        spans.push(batch_hours);
    }
    let mut files = Vec::with_capacity(hours.len());
    for hour in hours {
        let dir = partition_dir(root, signal, hour * NS_PER_HOUR);
        let mut file = HourFile::create(&dir, &file_name(segment), &signal.schema(), &props)?;
        for (batch, batch_hours) in batches.iter().zip(&spans) {
            if !batch_hours.contains(&hour) {
                continue;
            }
            if batch_hours.len() == 1 {
                file.write(batch)?;
            } else {
                let times = time_column(batch)?;
                let in_hour: BooleanArray = times
                    .values()
                    .iter()
                    .map(|t| Some(t.div_euclid(NS_PER_HOUR) == hour))
                    .collect();
                let rows =
                    filter_record_batch(batch, &in_hour).map_err(ParquetStoreError::Arrow)?;
                file.write(&rows)?;
            }
        }
        files.push(file.finish()?);
    }
    Ok(files)
}

/// One partition's file while it is written.
struct HourFile {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<File>,
    rows: u64,
    min_time_ns: i64,
    max_time_ns: i64,
}

impl HourFile {
    fn create(
        dir: &Path,
        name: &str,
        schema: &SchemaRef,
        props: &WriterProperties,
    ) -> Result<Self, ParquetStoreError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let tmp = dir.join(format!("{name}.tmp"));
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let writer =
            ArrowWriter::try_new(file, schema.clone(), Some(props.clone())).map_err(|source| {
                ParquetStoreError::Write {
                    path: tmp.clone(),
                    source,
                }
            })?;
        Ok(Self {
            dir: dir.to_owned(),
            path: dir.join(name),
            tmp,
            writer,
            rows: 0,
            min_time_ns: i64::MAX,
            max_time_ns: i64::MIN,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetStoreError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = time_column(batch)?;
        if let (Some(min), Some(max)) = (arrow::compute::min(times), arrow::compute::max(times)) {
            self.min_time_ns = self.min_time_ns.min(min);
            self.max_time_ns = self.max_time_ns.max(max);
        }
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .map_err(|source| ParquetStoreError::Write {
                path: self.tmp.clone(),
                source,
            })
    }

    fn finish(self) -> Result<ParquetFile, ParquetStoreError> {
        let file = self
            .writer
            .into_inner()
            .map_err(|source| ParquetStoreError::Write {
                path: self.tmp.clone(),
                source,
            })?;
        file.sync_all().map_err(io_err(&self.tmp))?;
        let size_bytes = file.metadata().map_err(io_err(&self.tmp))?.len();
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))?;
        sync_dir(&self.dir)?;
        Ok(ParquetFile {
            path: self.path,
            size_bytes,
            rows: self.rows,
            min_time_ns: self.min_time_ns,
            max_time_ns: self.max_time_ns,
        })
    }
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
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use vigil_core::decode::decode_logs;

    use super::*;

    /// A decoded logs batch with one record per time.
    fn logs(times: &[i64]) -> RecordBatch {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: times
                        .iter()
                        .map(|&t| LogRecord {
                            time_unix_nano: t as u64,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        decode_logs(&req, 1).expect("decode").batch.into_records()
    }

    /// Compacts `batch` (all in one hour) as segment 1 of `dir`: one file.
    fn write_one_file(dir: &Path, batch: RecordBatch, options: &ParquetOptions) -> ParquetFile {
        let files = write_segment(dir, Signal::Logs, 1, &[batch], options).expect("write");
        let [file] = files.as_slice() else {
            panic!("one file: {files:?}")
        };
        file.clone()
    }

    fn times_in(path: &Path) -> Vec<i64> {
        let file = File::open(path).expect("open");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("reader")
            .build()
            .expect("build");
        reader
            .flat_map(|b| {
                time_column(&b.expect("batch"))
                    .expect("time")
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn a_segment_spanning_hours_is_split_per_hour_in_wal_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 05:xx and 06:xx, one batch mixing both hours (out of time order), one of each alone.
        let h5 = 1_795_323_600_000_000_000;
        let h6 = h5 + NS_PER_HOUR;
        let batches = [
            logs(&[h5 + 30, h6 + 5, h5 + 10, h6 + 1]),
            logs(&[h5 + 20]),
            logs(&[h6 + 9, h6 + 2]),
        ];
        let options = ParquetOptions {
            row_group_rows: 2,
            zstd_level: 3,
            encryption: None,
        };
        let files = write_segment(dir.path(), Signal::Logs, 7, &batches, &options).expect("write");
        assert_eq!(files.len(), 2, "{files:?}");
        let in_hour = |hour: i64| {
            let dir = partition_dir(dir.path(), Signal::Logs, hour);
            files
                .iter()
                .find(|f| f.path.starts_with(&dir))
                .expect("a file in the hour")
        };
        let (five, six) = (in_hour(h5), in_hour(h6));
        assert_eq!(
            (five.rows, five.min_time_ns, five.max_time_ns),
            (3, h5 + 10, h5 + 30)
        );
        assert_eq!(
            (six.rows, six.min_time_ns, six.max_time_ns),
            (4, h6 + 1, h6 + 9)
        );
        assert_eq!(times_in(&five.path), [h5 + 30, h5 + 10, h5 + 20]);
        assert_eq!(times_in(&six.path), [h6 + 5, h6 + 1, h6 + 9, h6 + 2]);
        for f in &files {
            assert_eq!(segment_of(&f.path), Some(7));
            assert_eq!(
                std::fs::metadata(&f.path).expect("stat").len(),
                f.size_bytes
            );
        }
        // Nothing half-written is left behind.
        let leftovers: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    /// The trace ids of a compacted file are in its bloom filter, and ids that are not there are
    /// (with this few ids, in practice always) ruled out; encrypted files get no filter.
    #[test]
    fn trace_ids_get_a_bloom_filter_unless_the_file_is_encrypted() {
        use parquet::file::properties::ReaderProperties;
        use parquet::file::reader::FileReader;
        use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};

        let dir = tempfile::tempdir().expect("tempdir");
        let hour = 1_795_323_600_000_000_000u64;
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: (1..=3u8)
                        .map(|i| LogRecord {
                            time_unix_nano: hour + u64::from(i),
                            trace_id: vec![i.wrapping_mul(37); 16],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let batch = decode_logs(&req, 1).expect("decode").batch.into_records();
        let ids = batch
            .column_by_name(col::TRACE_ID)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>())
            .expect("trace ids")
            .clone();
        let options = ParquetOptions {
            row_group_rows: 1024,
            zstd_level: 3,
            encryption: None,
        };
        let file = write_one_file(dir.path(), batch, &options);
        let reader = SerializedFileReader::new_with_options(
            File::open(&file.path).expect("open"),
            ReadOptionsBuilder::new()
                .with_reader_properties(
                    ReaderProperties::builder()
                        .set_read_bloom_filter(true)
                        .build(),
                )
                .build(),
        )
        .expect("reader");
        let row_group = reader.get_row_group(0).expect("row group");
        let column = row_group
            .metadata()
            .columns()
            .iter()
            .position(|c| c.column_path().string() == col::TRACE_ID)
            .expect("trace_id column");
        let bloom = row_group
            .get_column_bloom_filter(column)
            .expect("a bloom filter on trace_id");
        assert_eq!(ids.iter().flatten().count(), 3);
        for id in ids.iter().flatten() {
            assert!(bloom.check(&id), "{id}");
        }
        assert!(!bloom.check(&"00000000000000000000000000000000"));
        assert!(!bloom.check(&"4bf92f3577b34da6a3ce929d0e0e4736"));
        // No other column pays for one.
        let with_filters = row_group
            .metadata()
            .columns()
            .iter()
            .filter(|c| c.bloom_filter_offset().is_some())
            .count();
        assert_eq!(with_filters, 1);

        let keys = dir.path().join("storage.keys");
        std::fs::write(&keys, format!("k1:{}\n", "01".repeat(32))).expect("write keys");
        std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let keyring = Keyring::load(&super::super::crypto::EncryptionConfig {
            keys_env: None,
            keys_file: Some(keys),
        })
        .expect("keyring")
        .expect("configured");
        let encrypted = ParquetOptions {
            encryption: Some(keyring),
            ..options.clone()
        };
        let trace_id = ColumnPath::from(col::TRACE_ID);
        let bloom_on = |options: &ParquetOptions| {
            options
                .writer_properties(Signal::Logs)
                .expect("properties")
                .bloom_filter_properties(&trace_id)
                .is_some()
        };
        assert!(bloom_on(&options));
        assert!(!bloom_on(&encrypted));
    }

    /// Maps and free text are written without statistics, free text and the maps repeated on
    /// every row of a request (resource, scope) without a dictionary; the record attributes
    /// keep their dictionaries, and the short, repeating columns keep both.
    #[test]
    fn maps_and_text_skip_statistics_and_repeated_ones_the_dictionary() {
        use opentelemetry_proto::tonic::common::v1::{
            AnyValue, InstrumentationScope, KeyValue, any_value::Value,
        };
        use opentelemetry_proto::tonic::resource::v1::Resource;
        let text = |s: &str| {
            Some(AnyValue {
                value: Some(Value::StringValue(s.into())),
            })
        };
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: text(v),
            ..Default::default()
        };
        let h5 = 1_795_323_600_000_000_000u64;
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "checkout"), kv("host.name", "h1")],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "checkout.orders".into(),
                        attributes: vec![kv("library.language", "rust")],
                        ..Default::default()
                    }),
                    log_records: (0..3)
                        .map(|i| LogRecord {
                            time_unix_nano: h5 + i,
                            severity_text: "INFO".into(),
                            body: text(&format!("order {i} shipped")),
                            attributes: vec![kv("http.route", "/orders")],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let batch = decode_logs(&req, 1).expect("decode").batch.into_records();
        let dir = tempfile::tempdir().expect("tempdir");
        let options = ParquetOptions {
            row_group_rows: 1024,
            zstd_level: 1,
            encryption: None,
        };
        let file = write_one_file(dir.path(), batch, &options);
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&File::open(&file.path).expect("open"))
            .expect("footer");
        let chunks = meta.row_group(0).columns();
        let chunk = |path: &str| {
            chunks
                .iter()
                .find(|c| c.column_path().string() == path)
                .unwrap_or_else(|| panic!("no column {path}"))
        };
        let body = chunk("body");
        assert_eq!(body.dictionary_page_offset(), None);
        assert!(body.statistics().is_none());
        for leaf in ["attributes.entries.key", "attributes.entries.value"] {
            let c = chunk(leaf);
            assert!(c.statistics().is_none(), "{leaf}");
            assert!(c.dictionary_page_offset().is_some(), "{leaf}");
        }
        for leaf in [
            "resource.entries.key",
            "resource.entries.value",
            "scope_attributes.entries.key",
            "scope_attributes.entries.value",
        ] {
            let c = chunk(leaf);
            assert!(c.statistics().is_none(), "{leaf}");
            assert_eq!(c.dictionary_page_offset(), None, "{leaf}");
        }
        for dictionary in ["service", "severity_text"] {
            let c = chunk(dictionary);
            assert!(c.dictionary_page_offset().is_some(), "{dictionary}");
            assert!(c.statistics().is_some(), "{dictionary}");
        }
        // Readers get the same values back.
        let read = ParquetRecordBatchReaderBuilder::try_new(File::open(&file.path).expect("open"))
            .expect("reader")
            .build()
            .expect("build")
            .next()
            .expect("a batch")
            .expect("batch");
        let bodies = read
            .column_by_name("body")
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>())
            .expect("body");
        assert_eq!(bodies.value(2), "order 2 shipped");
    }

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
