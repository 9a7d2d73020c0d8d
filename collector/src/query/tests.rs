//! Tests of the query engine over real Parquet files plus WAL batches, its limits, its
//! read-only rules, the wire formats and the HTTP API.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, MapArray, StringArray, StructArray, TimestampNanosecondArray,
    UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::{TimeZone, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::{Value, json};
use vigil_core::Signal;
use vigil_core::schema::map_entries_field;

use super::*;
use crate::metrics::Metrics;
use crate::storage::catalog::{Catalog, ParquetFile};

const HOUR_NS: i64 = 3_600_000_000_000;
const MINUTE_NS: i64 = 60_000_000_000;

/// One telemetry record; every other column gets a plausible fixed value.
#[derive(Clone)]
struct Row {
    time_ns: i64,
    service: &'static str,
    attributes: Vec<(&'static str, &'static str)>,
}

fn row(time_ns: i64, service: &'static str, attributes: &[(&'static str, &'static str)]) -> Row {
    Row {
        time_ns,
        service,
        attributes: attributes.to_vec(),
    }
}

fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap()
}

fn string_map(maps: Vec<Vec<(String, String)>>) -> ArrayRef {
    let mut offsets = vec![0i32];
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for map in maps {
        for (k, v) in map {
            keys.push(k);
            values.push(Some(v));
        }
        offsets.push(i32::try_from(keys.len()).unwrap());
    }
    let DataType::Struct(fields) = map_entries_field().data_type().clone() else {
        panic!("map entries are a struct")
    };
    let entries = StructArray::new(
        fields,
        vec![
            Arc::new(StringArray::from(keys)) as ArrayRef,
            Arc::new(StringArray::from(values)) as ArrayRef,
        ],
        None,
    );
    Arc::new(
        MapArray::try_new(
            map_entries_field(),
            OffsetBuffer::new(offsets.into()),
            entries,
            None,
            false,
        )
        .unwrap(),
    )
}

/// A batch of `signal`'s full schema: every column filled.
fn batch(signal: Signal, rows: &[Row]) -> RecordBatch {
    let schema = signal.schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| -> ArrayRef {
            let name = field.name().as_str();
            match field.data_type() {
                DataType::Timestamp(..) => {
                    let offset = if name == "time" { 0 } else { 1_000 };
                    Arc::new(
                        TimestampNanosecondArray::from_iter_values(
                            rows.iter().map(|r| r.time_ns + offset),
                        )
                        .with_timezone("UTC"),
                    )
                }
                DataType::Int32 => Arc::new(Int32Array::from_iter_values(rows.iter().map(|_| 9))),
                DataType::Int64 => {
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|_| 1_000)))
                }
                DataType::UInt32 => Arc::new(UInt32Array::from_iter_values(rows.iter().map(|_| 0))),
                DataType::Map(..) => string_map(
                    rows.iter()
                        .map(|r| match name {
                            "attributes" => r
                                .attributes
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect(),
                            "resource" => vec![("service.name".to_string(), r.service.to_string())],
                            _ => Vec::new(),
                        })
                        .collect(),
                ),
                DataType::Utf8 => {
                    let values: Vec<String> = rows
                        .iter()
                        .enumerate()
                        .map(|(i, r)| match name {
                            "service" => r.service.to_string(),
                            "severity_text" => "INFO".to_string(),
                            "body" => format!("request {i} done"),
                            "trace_id" => format!("{:032x}", i + 1),
                            "span_id" | "parent_span_id" => format!("{:016x}", i + 1),
                            "kind" => "SERVER".to_string(),
                            "status_code" => "OK".to_string(),
                            "name" => "GET /checkout".to_string(),
                            "events" | "links" => "[]".to_string(),
                            _ => format!("{name}-value"),
                        })
                        .collect();
                    Arc::new(StringArray::from(values))
                }
                other => panic!("test helper does not fill {name} of type {other}"),
            }
        })
        .collect();
    assert_eq!(columns.len(), schema.fields().len());
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Writes `rows` as a zstd Parquet file in the Hive layout and describes it for the catalog.
fn write_parquet(root: &Path, signal: Signal, file_name: &str, rows: &[Row]) -> ParquetFile {
    let min = rows.iter().map(|r| r.time_ns).min().unwrap();
    let max = rows.iter().map(|r| r.time_ns).max().unwrap();
    let start = Utc.timestamp_nanos(min);
    let dir = root
        .join(format!("signal={}", signal.as_str()))
        .join(format!("date={}", start.format("%Y-%m-%d")))
        .join(format!("hour={}", start.format("%H")));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file_name);
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let records = batch(signal, rows);
    let mut writer =
        ArrowWriter::try_new(File::create(&path).unwrap(), records.schema(), Some(props)).unwrap();
    writer.write(&records).unwrap();
    writer.close().unwrap();
    ParquetFile {
        size_bytes: std::fs::metadata(&path).unwrap().len(),
        path,
        rows: rows.len() as u64,
        min_time_ns: min,
        max_time_ns: max,
    }
}

/// `batch` with `trace_id` replaced by `ids`, one per row.
fn with_trace_ids(batch: RecordBatch, ids: &[String]) -> RecordBatch {
    let schema = batch.schema();
    let index = schema.index_of("trace_id").unwrap();
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(StringArray::from(ids.to_vec()));
    RecordBatch::try_new(schema, columns).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    catalog: Arc<Catalog>,
    /// The time the rows are placed relative to.
    now: i64,
}

/// Logs: a file from three days ago (2 rows), a recent file (3 rows), 4 rows only in the WAL.
/// Spans: one file (2 rows) and 1 row in memory.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::new());
    let now = now_ns();
    let old = now - 72 * HOUR_NS;
    let old_file = write_parquet(
        dir.path(),
        Signal::Logs,
        "old-logs.parquet",
        &[
            row(old, "checkout", &[("http.status_code", "200")]),
            row(old + MINUTE_NS, "auth", &[("http.status_code", "500")]),
        ],
    );
    let recent_file = write_parquet(
        dir.path(),
        Signal::Logs,
        "recent-logs.parquet",
        &[
            row(
                now - 20 * MINUTE_NS,
                "checkout",
                &[("http.status_code", "500"), ("user", "u1")],
            ),
            row(
                now - 19 * MINUTE_NS,
                "checkout",
                &[("http.status_code", "200")],
            ),
            row(now - 18 * MINUTE_NS, "auth", &[]),
        ],
    );
    catalog.add_files(Signal::Logs, [old_file, recent_file]);
    catalog.add_memory(
        Signal::Logs,
        7,
        batch(
            Signal::Logs,
            &[
                row(
                    now - 5 * MINUTE_NS,
                    "checkout",
                    &[("http.status_code", "500")],
                ),
                row(
                    now - 4 * MINUTE_NS,
                    "payments",
                    &[("http.status_code", "503")],
                ),
            ],
        ),
    );
    catalog.add_memory(
        Signal::Logs,
        8,
        batch(
            Signal::Logs,
            &[
                row(now - 3 * MINUTE_NS, "payments", &[]),
                row(
                    now - 2 * MINUTE_NS,
                    "checkout",
                    &[("http.status_code", "200")],
                ),
            ],
        ),
    );
    let spans_file = write_parquet(
        dir.path(),
        Signal::Spans,
        "spans.parquet",
        &[
            row(now - 30 * MINUTE_NS, "checkout", &[]),
            row(now - 29 * MINUTE_NS, "auth", &[]),
        ],
    );
    catalog.add_files(Signal::Spans, [spans_file]);
    catalog.add_memory(
        Signal::Spans,
        3,
        batch(Signal::Spans, &[row(now - MINUTE_NS, "checkout", &[])]),
    );
    Fixture {
        _dir: dir,
        catalog,
        now,
    }
}

fn config() -> QueryConfig {
    QueryConfig {
        timeout: Duration::from_secs(30),
        memory_limit_bytes: 256 * 1024 * 1024,
        max_result_rows: 10_000,
        threads: 2,
        trace_filter_cache_bytes: 16 * 1024 * 1024,
    }
}

fn engine(fixture: &Fixture) -> QueryEngine {
    QueryEngine::new(Arc::clone(&fixture.catalog), config()).unwrap()
}

/// The answer as JSON rows (via the `json` wire format).
async fn rows(engine: &QueryEngine, sql: &str) -> Vec<Value> {
    let result = engine
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    json_of(&result)["rows"].as_array().unwrap().clone()
}

fn json_of(result: &QueryResult) -> Value {
    let (content_type, body) = encode(result, OutputFormat::Json).unwrap();
    assert_eq!(content_type, "application/json");
    serde_json::from_slice(&body).unwrap()
}

async fn explain(engine: &QueryEngine, sql: &str) -> String {
    let result = engine.execute(&format!("EXPLAIN {sql}")).await.unwrap();
    render_table(&result)
}

/// The plan of `sql` with the metrics of running it, as one string.
async fn explain_analyze(engine: &QueryEngine, sql: &str) -> String {
    rows(engine, &format!("EXPLAIN ANALYZE {sql}"))
        .await
        .iter()
        .map(|row| row[1].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_files_and_memory_together_without_gaps_or_duplicates() {
    let fx = fixture();
    let engine = engine(&fx);
    assert_eq!(
        rows(&engine, "SELECT count(*) FROM logs").await,
        vec![json!([9])]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT service, count(*) AS n FROM logs GROUP BY service ORDER BY service"
        )
        .await,
        vec![
            json!(["auth", 2]),
            json!(["checkout", 5]),
            json!(["payments", 2])
        ]
    );
    assert_eq!(
        rows(&engine, "SELECT count(*), count(DISTINCT name) FROM spans").await,
        vec![json!([3, 1])]
    );
    // Every column of the schema reads back, from files and memory alike.
    let all = engine.execute("SELECT * FROM logs").await.unwrap();
    assert_eq!(all.row_count(), 9);
    // An answer has the stored types, though strings are views inside the engine (files and
    // memory alike): a scan hands out views of what it read instead of copying every value.
    let types = |schema: &SchemaRef| -> Vec<DataType> {
        schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect()
    };
    assert_eq!(
        types(&all.schema),
        types(&vigil_core::schema::logs_schema())
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT arrow_typeof(service), count(*) FROM logs GROUP BY 1"
        )
        .await,
        vec![json!(["Utf8View", 9])]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_map_indexing_filters_and_projects() {
    let fx = fixture();
    let engine = engine(&fx);
    assert_eq!(
        rows(
            &engine,
            "SELECT count(*) FROM logs WHERE attributes['http.status_code'] = '500'"
        )
        .await,
        vec![json!([3])]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT attributes['http.status_code'] AS status, count(*) FROM logs \
             GROUP BY status ORDER BY status NULLS LAST"
        )
        .await,
        vec![
            json!(["200", 3]),
            json!(["500", 3]),
            json!(["503", 1]),
            json!([null, 2])
        ]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT resource['service.name'] FROM spans ORDER BY time LIMIT 1"
        )
        .await,
        vec![json!(["checkout"])]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_of_costly_columns_or_by_id_filter_rows_before_decoding_the_others() {
    let fx = fixture();
    let engine = engine(&fx);
    // The second row of each file and of each WAL batch.
    let sql = format!(
        "SELECT service, body FROM logs WHERE trace_id = '{:032x}' ORDER BY time",
        2
    );
    assert_eq!(
        rows(&engine, &sql).await,
        vec![
            json!(["auth", "request 1 done"]),
            json!(["checkout", "request 1 done"]),
            json!(["payments", "request 1 done"]),
            json!(["checkout", "request 1 done"]),
        ]
    );
    // The other three file rows were dropped by the Parquet reader itself, before their
    // `service` and `body` were decoded.
    let analyzed = explain_analyze(&engine, &sql).await;
    assert!(analyzed.contains("pushdown_rows_pruned=3,"), "{analyzed}");

    // A lookup by id keeps few rows: filtered inside the reader though it reads cheap columns.
    let by_id = format!(
        "SELECT service, span_id FROM logs WHERE trace_id = '{:032x}' ORDER BY time",
        2
    );
    assert_eq!(rows(&engine, &by_id).await.len(), 4);
    let analyzed = explain_analyze(&engine, &by_id).await;
    assert!(analyzed.contains("pushdown_rows_pruned=3,"), "{analyzed}");

    // Cheap columns under a filter on anything else: every row is decoded and the filter
    // applied after, with the same answer.
    let cheap = "SELECT time, severity_number FROM logs WHERE service = 'auth' ORDER BY time";
    let answer = rows(&engine, cheap).await;
    assert_eq!(answer.len(), 2, "{answer:?}");
    let analyzed = explain_analyze(&engine, cheap).await;
    assert!(analyzed.contains("pushdown_rows_pruned=0,"), "{analyzed}");
    assert!(analyzed.contains("FilterExec"), "{analyzed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_range_over_the_last_hour_skips_the_old_file() {
    let fx = fixture();
    let engine = engine(&fx);
    let sql = "SELECT count(*) FROM logs WHERE time > now() - interval '1 hour'";
    assert_eq!(rows(&engine, sql).await, vec![json!([7])]);

    let pruned = explain(&engine, sql).await;
    assert!(pruned.contains("recent-logs.parquet"), "{pruned}");
    assert!(
        !pruned.contains("old-logs.parquet"),
        "old file is planned: {pruned}"
    );

    // Without a time filter both files are read: the check above is not vacuous.
    let unpruned = explain(&engine, "SELECT count(*) FROM logs WHERE service <> 'x'").await;
    assert!(
        unpruned.contains("old-logs.parquet") && unpruned.contains("recent-logs.parquet"),
        "{unpruned}"
    );

    // A range entirely in the past reads only the old file.
    let old = "SELECT service FROM logs WHERE time < now() - interval '2 days' ORDER BY time";
    assert_eq!(
        rows(&engine, old).await,
        vec![json!(["checkout"]), json!(["auth"])]
    );
    assert!(!explain(&engine, old).await.contains("recent-logs.parquet"));

    // Literal bounds and BETWEEN prune the same way.
    let day_ago = (Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let literal = format!("SELECT count(*) FROM logs WHERE time BETWEEN '{day_ago}' AND now()");
    assert_eq!(rows(&engine, &literal).await, vec![json!([7])]);
    assert!(
        !explain(&engine, &literal)
            .await
            .contains("old-logs.parquet")
    );
}

/// Filters on `time` alone are applied by the scan, and skipped for files whose whole range
/// satisfies them. Every case is checked against counts worked out from the fixture's rows: at
/// the files' exact bounds, strict and not, negated, disjoint, and not decidable from a range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_filters_are_exact_and_skipped_for_files_they_cover() {
    let fx = fixture();
    let engine = engine(&fx);
    let at = |offset_ns: i64| {
        format!(
            "'{}'",
            Utc.timestamp_nanos(fx.now + offset_ns)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        )
    };
    // Logs: old file at -72h and -72h+1m; recent file at -20m, -19m, -18m; WAL at -5m..-2m.
    let cases: Vec<(String, i64)> = vec![
        (format!("time >= {}", at(-HOUR_NS)), 7),
        (format!("time > {}", at(-19 * MINUTE_NS)), 5),
        (
            format!(
                "time >= {} AND time <= {}",
                at(-20 * MINUTE_NS),
                at(-18 * MINUTE_NS)
            ),
            3,
        ),
        (
            format!(
                "time BETWEEN {} AND {}",
                at(-73 * HOUR_NS),
                at(-19 * MINUTE_NS)
            ),
            4,
        ),
        (format!("time <> {}", at(-19 * MINUTE_NS)), 8),
        ("date_part('second', time) >= 0".to_string(), 9),
        (format!("NOT (time < {})", at(-4 * MINUTE_NS)), 3),
        (
            format!(
                "(time < {} OR time > {})",
                at(-72 * HOUR_NS + 30_000_000_000),
                at(-3 * MINUTE_NS)
            ),
            2,
        ),
        ("time > now()".to_string(), 0),
    ];
    for (filter, expected) in &cases {
        let count = format!("SELECT count(*) FROM logs WHERE {filter}");
        assert_eq!(
            rows(&engine, &count).await,
            vec![json!([expected])],
            "{filter}"
        );
        // A projection without `time`, cut by a limit.
        let limited = format!("SELECT service, body FROM logs WHERE {filter} LIMIT 2");
        let got = rows(&engine, &limited).await.len() as i64;
        assert_eq!(got, (*expected).min(2), "{limited}");
        // Together with a filter the scan does not apply itself.
        let mixed = format!("SELECT count(*) FROM logs WHERE {filter} AND service <> 'nobody'");
        assert_eq!(
            rows(&engine, &mixed).await,
            vec![json!([expected])],
            "{mixed}"
        );
    }

    let scan_of = |plan: &str, file: &str| -> String {
        plan.lines()
            .filter(|line| line.contains(file))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // A range that covers the recent file whole reads it without the filter...
    let covering = format!(
        "SELECT service FROM logs WHERE time >= {} AND time <= {}",
        at(-20 * MINUTE_NS),
        at(-18 * MINUTE_NS)
    );
    let plan = explain(&engine, &covering).await;
    let recent = scan_of(&plan, "recent-logs.parquet");
    assert!(!recent.is_empty(), "{plan}");
    assert!(!recent.contains("predicate"), "{plan}");
    // ...and one that cuts through it filters its rows.
    let cutting = format!(
        "SELECT service FROM logs WHERE time > {}",
        at(-19 * MINUTE_NS)
    );
    let plan = explain(&engine, &cutting).await;
    assert!(
        scan_of(&plan, "recent-logs.parquet").contains("predicate=time"),
        "{plan}"
    );
}

/// A lookup by trace id plans only the files whose bloom filters may hold the id (a file
/// without filters always), answers as a full scan would, and reads each file's filters once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_lookups_plan_only_the_files_that_may_hold_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::new());
    let now = now_ns();
    let records: Vec<Row> = (0..5)
        .map(|i| row(now - (30 - i) * MINUTE_NS, "checkout", &[]))
        .collect();
    let ids =
        |prefix: &str| -> Vec<String> { (0..5).map(|i| format!("{prefix}{i:030x}")).collect() };
    let (a, b, wal) = (ids("aa"), ids("bb"), ids("cc"));
    // Compacted as segments 1 and 2 (a bloom filter on `trace_id` in every row group, two rows
    // a row group), into one file each per hour the records span.
    let options = crate::storage::parquet::ParquetOptions {
        row_group_rows: 2,
        zstd_level: 1,
        encryption: None,
    };
    let compact = |segment: u64, ids: &[String]| {
        let with_ids = with_trace_ids(batch(Signal::Logs, &records), ids);
        crate::storage::parquet::write_segment(
            dir.path(),
            Signal::Logs,
            segment,
            &[with_ids],
            &options,
        )
        .unwrap()
    };
    let (files_a, files_b) = (compact(1, &a), compact(2, &b));
    let (name_a, name_b) = (format!("{:020}.parquet", 1), format!("{:020}.parquet", 2));
    // Written without bloom filters: its trace ids are 1..=2 in hex.
    let unfiltered = write_parquet(
        dir.path(),
        Signal::Logs,
        "unfiltered.parquet",
        &records[..2],
    );
    let compacted: Vec<PathBuf> = files_a
        .iter()
        .chain(&files_b)
        .map(|f| f.path.clone())
        .collect();
    catalog.add_files(
        Signal::Logs,
        files_a.into_iter().chain(files_b).chain([unfiltered]),
    );
    catalog.add_memory(
        Signal::Logs,
        1,
        with_trace_ids(batch(Signal::Logs, &records), &wal),
    );
    let engine = QueryEngine::new(Arc::clone(&catalog), config()).unwrap();

    let count = |id_filter: String| format!("SELECT count(*) FROM logs WHERE {id_filter}");
    let planned = |plan: &str| {
        [name_a.as_str(), name_b.as_str(), "unfiltered.parquet"]
            .into_iter()
            .filter(|name| plan.contains(&format!("/{name}")))
            .collect::<Vec<_>>()
    };
    let cases = [
        (
            format!("trace_id = '{}'", a[3]),
            1,
            vec![name_a.as_str(), "unfiltered.parquet"],
        ),
        (
            format!("trace_id = '{}'", b[0]),
            1,
            vec![name_b.as_str(), "unfiltered.parquet"],
        ),
        (
            format!("trace_id IN ('{}', '{}')", a[1], b[4]),
            2,
            vec![name_a.as_str(), name_b.as_str(), "unfiltered.parquet"],
        ),
        (
            format!("trace_id = '{}'", wal[2]),
            1,
            vec!["unfiltered.parquet"],
        ),
        (
            format!("trace_id = '{:032x}'", 2),
            1,
            vec!["unfiltered.parquet"],
        ),
        (
            format!("trace_id = '{}' AND service = 'checkout'", a[0]),
            1,
            vec![name_a.as_str(), "unfiltered.parquet"],
        ),
        // Not a lookup: nothing to rule out.
        (
            format!("trace_id <> '{}'", a[0]),
            16,
            vec![name_a.as_str(), name_b.as_str(), "unfiltered.parquet"],
        ),
    ];
    for (filter, expected, files) in cases {
        let sql = count(filter);
        assert_eq!(rows(&engine, &sql).await, vec![json!([expected])], "{sql}");
        assert_eq!(planned(&explain(&engine, &sql).await), files, "{sql}");
    }

    // The filters stay in memory: with the files gone, a lookup that rules both out plans
    // neither and is still answered. An engine that keeps none has to read them again.
    for path in &compacted {
        std::fs::remove_file(path).unwrap();
    }
    let sql = count(format!("trace_id = '{}'", wal[0]));
    assert_eq!(rows(&engine, &sql).await, vec![json!([1])]);
    let uncached = QueryEngine::new(
        catalog,
        QueryConfig {
            trace_filter_cache_bytes: 0,
            ..config()
        },
    )
    .unwrap();
    assert!(uncached.execute(&sql).await.is_err(), "{sql} read no file");
}

/// `ORDER BY time DESC LIMIT n` reads the newest files first and rules out the older ones once
/// it has its n rows; `ASC` the other way round. The older files are the larger ones here, so
/// an order by size, or the newest-first order for `ASC`, would rule out nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_rows_by_time_end_the_scan_early() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::new());
    let now = now_ns();
    const FILES: i64 = 12;
    // A file per hour, `hours + 2` rows each, every other one of user u1.
    let mut u1_times = Vec::new();
    let files: Vec<ParquetFile> = (1..=FILES)
        .map(|hours| {
            let rows: Vec<Row> = (0..hours + 2)
                .map(|k| {
                    let time_ns = now - hours * HOUR_NS + k * MINUTE_NS;
                    let user = if k % 2 == 0 { "u1" } else { "u2" };
                    if user == "u1" {
                        u1_times.push(time_ns);
                    }
                    row(time_ns, "checkout", &[("user", user)])
                })
                .collect();
            write_parquet(
                dir.path(),
                Signal::Logs,
                &format!("{hours:02}h.parquet"),
                &rows,
            )
        })
        .collect();
    catalog.add_files(Signal::Logs, files);
    // The newest rows are still in the WAL: one of u1 among them.
    let wal = [now - 2 * MINUTE_NS, now - MINUTE_NS];
    u1_times.push(wal[0]);
    catalog.add_memory(
        Signal::Logs,
        1,
        batch(
            Signal::Logs,
            &[
                row(wal[0], "checkout", &[("user", "u1")]),
                row(wal[1], "checkout", &[("user", "u2")]),
            ],
        ),
    );
    let engine = QueryEngine::new(Arc::clone(&catalog), config()).unwrap();
    let time_text = |ns: &i64| {
        Utc.timestamp_nanos(*ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    };
    let metric =
        regex::Regex::new(r"files_ranges_pruned_statistics=(\d+) total → (\d+) matched").unwrap();
    u1_times.sort_unstable();

    for order in ["DESC", "ASC"] {
        let sql = format!(
            "SELECT time FROM logs WHERE attributes['user'] = 'u1' ORDER BY time {order} LIMIT 3"
        );
        let mut expected = u1_times.clone();
        if order == "DESC" {
            expected.reverse();
        }
        let expected: Vec<Value> = expected[..3]
            .iter()
            .map(|t| json!([time_text(t)]))
            .collect();
        assert_eq!(rows(&engine, &sql).await, expected, "{sql}");

        // Two scan streams, each a file ahead at most, before the first rows rule out the rest.
        let analyzed = explain_analyze(&engine, &sql).await;
        let counts = metric
            .captures(&analyzed)
            .unwrap_or_else(|| panic!("no file pruning metric in {analyzed}"));
        assert_eq!(&counts[1], FILES.to_string(), "{analyzed}");
        let opened: i64 = counts[2].parse().unwrap();
        assert!(
            opened <= 4,
            "{sql}: {opened} of {FILES} files read: {analyzed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_pruning_keeps_files_whose_range_overlaps() {
    let schema: SchemaRef = vigil_core::schema::logs_schema();
    let file = |name: &str, min: i64, max: i64| {
        Arc::new(ParquetFile {
            path: format!("/data/{name}").into(),
            size_bytes: 1,
            rows: 1,
            min_time_ns: min,
            max_time_ns: max,
        })
    };
    let files = vec![file("a", 0, 10), file("b", 10, 20), file("c", 30, 40)];
    let ctx = datafusion::prelude::SessionContext::new();
    let df_schema = datafusion::common::DFSchema::try_from(Arc::clone(&schema)).unwrap();
    let ts = |v: i64| {
        datafusion::logical_expr::lit(datafusion::common::ScalarValue::TimestampNanosecond(
            Some(v),
            Some("UTC".into()),
        ))
    };
    let time = || datafusion::logical_expr::col("time");
    let keep = |expr: datafusion::logical_expr::Expr| {
        let predicate = ctx.create_physical_expr(expr, &df_schema).unwrap();
        provider::prune_files(files.clone(), Some(&predicate), &schema, None)
            .unwrap()
            .iter()
            .map(|f| f.path.file_name().unwrap().to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(keep(time().gt(ts(10))), ["b", "c"]);
    assert_eq!(
        keep(time().gt_eq(ts(10)).and(time().lt(ts(30)))),
        ["a", "b"]
    );
    assert_eq!(keep(time().lt(ts(0))), Vec::<String>::new());
    // Predicates on columns without file statistics keep every file.
    assert_eq!(
        keep(datafusion::logical_expr::col("service").eq(datafusion::logical_expr::lit("x"))),
        ["a", "b", "c"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_everything_that_is_not_a_read_only_query() {
    let fx = fixture();
    let engine = engine(&fx);
    let refused = [
        "CREATE TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT * FROM logs",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp/'",
        "COPY (SELECT * FROM logs) TO '/tmp/vigil-copy.parquet'",
        "COPY logs TO '/tmp/vigil-copy.csv'",
        "INSERT INTO logs SELECT * FROM logs",
        "DELETE FROM logs",
        "UPDATE logs SET service = 'x'",
        "DROP TABLE logs",
        "SET datafusion.execution.target_partitions = 1",
        "RESET datafusion.execution.target_partitions",
        "EXPLAIN ANALYZE INSERT INTO logs SELECT * FROM logs",
        "EXPLAIN COPY (SELECT 1) TO '/tmp/vigil-copy.csv'",
        "SELECT * INTO t2 FROM logs",
    ];
    for sql in refused {
        match engine.execute(sql).await {
            Err(QueryError::Refused(message)) => {
                assert!(message.contains("not allowed"), "{sql}: {message}")
            }
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        }
    }
    assert!(!Path::new("/tmp/vigil-copy.parquet").exists());
    // Files cannot be read through the SQL surface either.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM read_csv('/etc/passwd')",
    ] {
        let err = engine.execute(sql).await.unwrap_err();
        assert!(
            matches!(err, QueryError::Invalid(_) | QueryError::Refused(_)),
            "{sql}: {err:?}"
        );
    }
    assert!(matches!(
        engine.execute("SELECT 1; SELECT 2").await,
        Err(QueryError::Invalid(_))
    ));
    // The tables are intact.
    assert_eq!(
        rows(&engine, "SELECT count(*) FROM logs").await,
        vec![json!([9])]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_ctes_show_and_information_schema_work() {
    let fx = fixture();
    let engine = engine(&fx);
    assert_eq!(
        rows(
            &engine,
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) \
             SELECT sum(n) FROM r"
        )
        .await,
        vec![json!([6])]
    );
    assert_eq!(
        rows(
            &engine,
            "WITH c AS (SELECT service FROM spans) SELECT count(*) FROM c"
        )
        .await,
        vec![json!([3])]
    );
    let plan = explain(&engine, "SELECT service FROM logs").await;
    assert!(plan.contains("DataSourceExec"), "{plan}");
    let analyzed = engine
        .execute("EXPLAIN ANALYZE SELECT count(*) FROM logs")
        .await
        .unwrap();
    assert!(render_table(&analyzed).contains("output_rows"));

    let tables = rows(&engine, "SHOW TABLES").await;
    let names: Vec<&str> = tables.iter().filter_map(|r| r[2].as_str()).collect();
    assert!(
        names.contains(&"logs") && names.contains(&"spans"),
        "{names:?}"
    );

    let columns = rows(
        &engine,
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_name = 'logs' ORDER BY ordinal_position LIMIT 3",
    )
    .await;
    assert_eq!(columns[0], json!(["time", "Timestamp(ns, \"UTC\")"]));
    assert_eq!(columns[2][0], json!("service"));
    assert!(engine.execute("DESCRIBE spans").await.unwrap().row_count() > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sql_is_invalid() {
    let fx = fixture();
    let engine = engine(&fx);
    for sql in [
        "SELEC 1",
        "SELECT nope FROM logs",
        "SELECT * FROM nowhere",
        "SELECT attributes['a'] + 1 FROM logs WHERE service = 1 + 'x'",
    ] {
        let err = engine.execute(sql).await.unwrap_err();
        assert!(matches!(err, QueryError::Invalid(_)), "{sql}: {err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_time_limit_is_cancelled() {
    let fx = fixture();
    let engine = QueryEngine::new(
        Arc::clone(&fx.catalog),
        QueryConfig {
            timeout: Duration::from_millis(200),
            ..config()
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = engine
        .execute(
            "SELECT sum(a.value * b.value) FROM generate_series(1, 200000) a \
             CROSS JOIN generate_series(1, 200000) b",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, QueryError::Timeout(d) if d == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The engine answers again once the cancelled query has let go of the CPU. On a loaded
    // machine that may take longer than this engine's 200 ms limit, so the check retries
    // timeouts for a while; any other failure, or never answering, fails the test.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match engine.execute("SELECT count(*) FROM logs").await {
            Ok(result) => break json_of(&result)["rows"].clone(),
            Err(QueryError::Timeout(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the engine did not survive a cancelled query: {e}"),
        }
    };
    assert_eq!(answer, json!([[9]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_memory_limit_fails_and_the_engine_survives() {
    let fx = fixture();
    let engine = QueryEngine::new(
        Arc::clone(&fx.catalog),
        QueryConfig {
            memory_limit_bytes: 1024 * 1024,
            ..config()
        },
    )
    .unwrap();
    let err = engine
        .execute("SELECT value % 1000000 AS k, count(*) FROM generate_series(1, 3000000) GROUP BY k ORDER BY k")
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::ResourcesExhausted(_)), "{err:?}");
    assert_eq!(
        rows(&engine, "SELECT count(*) FROM logs").await,
        vec![json!([9])]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_over_the_row_cap_are_refused() {
    let fx = fixture();
    let engine = QueryEngine::new(
        Arc::clone(&fx.catalog),
        QueryConfig {
            max_result_rows: 5,
            ..config()
        },
    )
    .unwrap();
    let err = engine.execute("SELECT * FROM logs").await.unwrap_err();
    assert!(matches!(err, QueryError::TooLarge { limit: 5 }), "{err:?}");
    assert!(err.to_string().contains("add LIMIT"));
    assert_eq!(
        engine
            .execute("SELECT * FROM logs LIMIT 5")
            .await
            .unwrap()
            .row_count(),
        5
    );
    // The cap stops a stream that would never end on its own accord within the test.
    let err = engine
        .execute("SELECT * FROM generate_series(1, 1000000000)")
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::TooLarge { .. }));
}

const SAMPLE_SQL: &str = "SELECT service, severity_number, time, attributes FROM logs \
     WHERE attributes['user'] = 'u1'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answer_has_columns_rows_and_rfc3339_timestamps() {
    let catalog = Arc::new(Catalog::new());
    // 2023-11-14T22:13:20.123Z
    let t = 1_700_000_000_123_000_000;
    catalog.add_memory(
        Signal::Logs,
        1,
        batch(
            Signal::Logs,
            &[row(
                t,
                "checkout",
                &[("http.status_code", "500"), ("user", "u1")],
            )],
        ),
    );
    let engine = QueryEngine::new(catalog, config()).unwrap();
    let result = engine.execute(SAMPLE_SQL).await.unwrap();
    let answer = json_of(&result);
    assert_eq!(
        answer["columns"],
        json!([
            {"name": "service", "type": "Utf8"},
            {"name": "severity_number", "type": "Int32"},
            {"name": "time", "type": "Timestamp(ns, \"UTC\")"},
            {"name": "attributes", "type": answer["columns"][3]["type"]},
        ])
    );
    assert!(
        answer["columns"][3]["type"]
            .as_str()
            .unwrap()
            .starts_with("Map(")
    );
    assert_eq!(
        answer["rows"],
        json!([["checkout", 9, "2023-11-14T22:13:20.123Z", {"http.status_code": "500", "user": "u1"}]])
    );
    assert_eq!(answer["row_count"], json!(1));
    assert!(answer["elapsed_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(answer.as_object().unwrap().len(), 4);

    let scalars = engine
        .execute(
            "SELECT 1 AS n, 1.5 AS f, 'a' AS s, true AS b, NULL AS z, CAST('NaN' AS DOUBLE) AS nan, \
             [1, 2] AS l, named_struct('k', 'v') AS st, to_timestamp(1700000000) AS whole, \
             to_timestamp_nanos(1700000000000000001) AS nanos",
        )
        .await
        .unwrap();
    assert_eq!(
        json_of(&scalars)["rows"],
        json!([[1, 1.5, "a", true, null, null, [1, 2], {"k": "v"}, "2023-11-14T22:13:20Z", "2023-11-14T22:13:20.000000001Z"]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_column_names_survive_every_format() {
    let fx = fixture();
    let engine = engine(&fx);
    let result = engine
        .execute(
            "SELECT a.service, b.service FROM logs a JOIN logs b ON a.time = b.time \
             WHERE a.attributes['user'] = 'u1'",
        )
        .await
        .unwrap();
    assert_eq!(json_of(&result)["rows"], json!([["checkout", "checkout"]]));
    let (_, ndjson) = encode(&result, OutputFormat::Ndjson).unwrap();
    assert_eq!(
        String::from_utf8(ndjson).unwrap(),
        "{\"service\":\"checkout\",\"service_2\":\"checkout\"}\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_ndjson_and_arrow_answers() {
    let catalog = Arc::new(Catalog::new());
    let t = 1_700_000_000_123_000_000;
    catalog.add_memory(
        Signal::Logs,
        1,
        batch(
            Signal::Logs,
            &[
                row(
                    t,
                    "checkout",
                    &[("http.status_code", "500"), ("user", "u1")],
                ),
                row(t + 1_000_000_000, "auth, \"eu\"", &[]),
            ],
        ),
    );
    let engine = QueryEngine::new(catalog, config()).unwrap();
    let result = engine
        .execute("SELECT service, severity_number, time, attributes, trace_id IS NULL AS missing FROM logs ORDER BY time")
        .await
        .unwrap();

    let (content_type, csv) = encode(&result, OutputFormat::Csv).unwrap();
    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "service,severity_number,time,attributes,missing\n\
         checkout,9,2023-11-14T22:13:20.123Z,\"{\"\"http.status_code\"\":\"\"500\"\",\"\"user\"\":\"\"u1\"\"}\",false\n\
         \"auth, \"\"eu\"\"\",9,2023-11-14T22:13:21.123Z,{},false\n"
    );

    let (content_type, ndjson) = encode(&result, OutputFormat::Ndjson).unwrap();
    assert_eq!(content_type, "application/x-ndjson");
    let lines: Vec<Value> = String::from_utf8(ndjson)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            json!({"service": "checkout", "severity_number": 9, "time": "2023-11-14T22:13:20.123Z",
                   "attributes": {"http.status_code": "500", "user": "u1"}, "missing": false}),
            json!({"service": "auth, \"eu\"", "severity_number": 9, "time": "2023-11-14T22:13:21.123Z",
                   "attributes": {}, "missing": false}),
        ]
    );

    let (content_type, ipc) = encode(&result, OutputFormat::Arrow).unwrap();
    assert_eq!(content_type, "application/vnd.apache.arrow.stream");
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    assert_eq!(reader.schema(), result.schema);
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(batches, result.batches);

    // An empty answer still names its columns.
    let empty = engine
        .execute("SELECT service, time FROM logs WHERE false")
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(encode(&empty, OutputFormat::Csv).unwrap().1).unwrap(),
        "service,time\n"
    );
    assert_eq!(json_of(&empty)["rows"], json!([]));
    assert_eq!(encode(&empty, OutputFormat::Ndjson).unwrap().1, b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_rendering_for_the_cli() {
    let catalog = Arc::new(Catalog::new());
    catalog.add_memory(
        Signal::Logs,
        1,
        batch(
            Signal::Logs,
            &[row(
                1_700_000_000_123_000_000,
                "checkout",
                &[("user", "u1")],
            )],
        ),
    );
    let engine = QueryEngine::new(catalog, config()).unwrap();
    let result = engine
        .execute("SELECT service, time, attributes FROM logs")
        .await
        .unwrap();
    let table = render_table(&result);
    assert!(
        table.contains("| service  | time                     | attributes    |"),
        "{table}"
    );
    assert!(
        table.contains("| checkout | 2023-11-14T22:13:20.123Z | {\"user\":\"u1\"} |"),
        "{table}"
    );
    assert!(table.ends_with("(1 row)"), "{table}");
}

/// Serves the router on an ephemeral port; returns its base URL.
async fn serve(engine: QueryEngine, metrics: Metrics) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // As the API listener's auth layer does with auth off.
    let app = router(Arc::new(engine), metrics)
        .layer(axum::Extension(crate::auth::Principal::anonymous()));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_answers_and_maps_errors_to_statuses() {
    let fx = fixture();
    let metrics = Metrics::new().unwrap();
    let base = serve(engine(&fx), metrics.clone()).await;
    let url = format!("{base}/api/v1/query");
    let client = reqwest::Client::new();

    let ok = client
        .post(&url)
        .json(&json!({"sql": "SELECT service, count(*) AS n FROM logs GROUP BY service ORDER BY n DESC LIMIT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], "application/json");
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["rows"], json!([["checkout", 5]]));
    assert_eq!(body["columns"][1], json!({"name": "n", "type": "Int64"}));

    let csv = client
        .post(&url)
        .json(&json!({"sql": "SELECT count(*) AS n FROM spans", "format": "csv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(csv.text().await.unwrap(), "n\n3\n");

    let cases = [
        (r#"{"sql": "SELECT nope FROM logs"}"#, 400, "invalid query"),
        (r#"{"sql": "DROP TABLE logs"}"#, 400, "not allowed"),
        // Backtracks exponentially in the SQL parser: refused within its step budget.
        (
            r#"{"sql": "SELECT a0.a1.a2.a3.a4.a5.a6.a7.a8.a9[b0.b1.b2.b3.b4.b5.b6.b7.b8.b9[c0.c1.c2.c3.c4.c5.c6.c7.c8.c9"}"#,
            400,
            "too complex to parse",
        ),
        (
            r#"{"sql": "SELECT 1", "format": "xml"}"#,
            400,
            "malformed request body",
        ),
        (r#"{"query": "SELECT 1"}"#, 400, "malformed request body"),
        ("not json", 400, "malformed request body"),
    ];
    for (body, status, message) in cases {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let error: Value = response.json().await.unwrap();
        let text = error["error"].as_str().unwrap();
        assert!(text.contains(message), "{body}: {text}");
    }

    assert_eq!(metrics.queries.with_label_values(&["ok"]).get(), 2);
    assert_eq!(metrics.queries.with_label_values(&["invalid"]).get(), 5);
    assert_eq!(metrics.queries.with_label_values(&["refused"]).get(), 1);
    assert_eq!(
        metrics
            .query_duration
            .with_label_values(&["ok"])
            .get_sample_count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_statuses_for_limits() {
    let fx = fixture();
    let metrics = Metrics::new().unwrap();
    let engine = QueryEngine::new(
        Arc::clone(&fx.catalog),
        QueryConfig {
            max_result_rows: 2,
            timeout: Duration::from_millis(200),
            ..config()
        },
    )
    .unwrap();
    let base = serve(engine, metrics.clone()).await;
    let client = reqwest::Client::new();
    let post = |sql: &str| {
        client
            .post(format!("{base}/api/v1/query"))
            .json(&json!({ "sql": sql }))
            .send()
    };
    let too_large = post("SELECT * FROM logs").await.unwrap();
    assert_eq!(too_large.status(), 422);
    let timeout = post("SELECT sum(a.value * b.value) FROM generate_series(1, 200000) a CROSS JOIN generate_series(1, 200000) b")
        .await
        .unwrap();
    assert_eq!(timeout.status(), 504);
    assert_eq!(metrics.queries.with_label_values(&["too_large"]).get(), 1);
    assert_eq!(metrics.queries.with_label_values(&["timeout"]).get(), 1);
}

#[test]
fn error_outcome_labels_and_messages() {
    let error = QueryError::Internal("object store at /secret/path failed".into());
    assert_eq!(error.outcome(), "error");
    assert_eq!(
        QueryError::ResourcesExhausted("x".into()).outcome(),
        "error"
    );
    assert_eq!(
        QueryError::Timeout(Duration::from_secs(30)).to_string(),
        "query cancelled after the time limit of 30s"
    );
}
