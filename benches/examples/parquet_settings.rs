//! Compaction's Parquet writer settings compared on one segment of realistic logs: CPU time to
//! write 32k decoded records into an in-memory file, and the bytes per record it makes. The
//! numbers behind the settings in `collector/src/storage/parquet.rs` (BENCHMARKS.md,
//! Compaction). The "in force" row is compaction's own settings; the others are built here.
//!
//! ```sh
//! cargo run --release -p vigil-benches --features collector --example parquet_settings
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;
use vigil_benches::corpus::{CorpusConfig, logs_requests};
use vigil_collector::config::StorageConfig;
use vigil_collector::storage::parquet::ParquetOptions;
use vigil_core::Signal;
use vigil_core::decode::decode_logs;

const ROUNDS: usize = 9;
const ROW_GROUP_ROWS: usize = 128 * 1024;
const MAPS: [&str; 3] = ["attributes", "resource", "scope_attributes"];

fn cpu_seconds() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).unwrap();
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

fn zstd(level: i32) -> WriterPropertiesBuilder {
    let mut b = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(level).unwrap()));
    for id in ["trace_id", "span_id"] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(id), false);
    }
    b
}

fn bloom(b: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
    b.set_column_bloom_filter_enabled(ColumnPath::from("trace_id"), true)
}

/// Applies `f` to `body` (with `body`) and to the key and value leaves of every map.
fn plain(
    b: WriterPropertiesBuilder,
    with_body: bool,
    f: fn(WriterPropertiesBuilder, ColumnPath) -> WriterPropertiesBuilder,
) -> WriterPropertiesBuilder {
    let mut b = if with_body {
        f(b, ColumnPath::from("body"))
    } else {
        b
    };
    for map in MAPS {
        for leaf in ["key", "value"] {
            b = f(
                b,
                ColumnPath::new(vec![map.into(), "entries".into(), leaf.into()]),
            );
        }
    }
    b
}

fn no_dictionary(b: WriterPropertiesBuilder, c: ColumnPath) -> WriterPropertiesBuilder {
    b.set_column_dictionary_enabled(c, false)
}

/// The dictionaries compaction leaves off the maps that repeat on every row of a request.
fn repeated_maps_with_dictionary(mut b: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
    for map in ["resource", "scope_attributes"] {
        for leaf in ["key", "value"] {
            let path = ColumnPath::new(vec![map.into(), "entries".into(), leaf.into()]);
            b = b.set_column_dictionary_enabled(path, true);
        }
    }
    b
}

fn no_dictionary_no_statistics(
    b: WriterPropertiesBuilder,
    c: ColumnPath,
) -> WriterPropertiesBuilder {
    b.set_column_dictionary_enabled(c.clone(), false)
        .set_column_statistics_enabled(c, EnabledStatistics::None)
}

fn main() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let cfg = CorpusConfig {
        requests: 64,
        ..CorpusConfig::default()
    };
    let batches: Vec<_> = logs_requests(&cfg, now)
        .iter()
        .map(|r| decode_logs(r, 1).unwrap().batch.into_records())
        .collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let schema = Signal::Logs.schema();
    let in_force = ParquetOptions {
        row_group_rows: ROW_GROUP_ROWS,
        zstd_level: StorageConfig::default().parquet_zstd_level,
        encryption: None,
    }
    .writer_properties(Signal::Logs)
    .unwrap();
    let configs: Vec<(&str, WriterProperties)> = vec![
        ("zstd 3, dictionaries, bloom", bloom(zstd(3)).build()),
        ("zstd 1, dictionaries, bloom", bloom(zstd(1)).build()),
        (
            "uncompressed, dictionaries",
            zstd(1).set_compression(Compression::UNCOMPRESSED).build(),
        ),
        (
            "zstd 1, no dictionary at all",
            zstd(1).set_dictionary_enabled(false).build(),
        ),
        (
            "zstd 1, maps plain",
            plain(zstd(1), false, no_dictionary).build(),
        ),
        (
            "zstd 1, maps+body plain",
            plain(zstd(1), true, no_dictionary).build(),
        ),
        (
            "in force, but resource and scope maps with dictionaries",
            repeated_maps_with_dictionary(in_force.clone().into_builder()).build(),
        ),
        ("in force: resource and scope maps plain", in_force),
        (
            "zstd 1, maps+body plain, no stats, bloom",
            bloom(plain(zstd(1), true, no_dictionary_no_statistics)).build(),
        ),
    ];
    let mut cpu_ms: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut bytes = vec![0usize; configs.len()];
    // Rounds alternate the settings so a slow spell of a shared machine hits all of them.
    for _ in 0..ROUNDS {
        for (i, (_, props)) in configs.iter().enumerate() {
            let start = cpu_seconds();
            let mut out = Vec::new();
            let mut w =
                ArrowWriter::try_new(&mut out, schema.clone(), Some(props.clone())).unwrap();
            for b in &batches {
                w.write(b).unwrap();
            }
            w.close().unwrap();
            cpu_ms[i].push((cpu_seconds() - start) * 1e3);
            bytes[i] = out.len();
        }
    }
    println!("{rows} records, {ROUNDS} rounds; CPU ms to write them: median (min-max)");
    for (i, (name, _)) in configs.iter().enumerate() {
        let v = &mut cpu_ms[i];
        v.sort_by(f64::total_cmp);
        println!(
            "{name:52} {:6.1} ({:5.1}-{:5.1}) ms  {:7.0} records/CPU-s  {:5.1} B/record",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1],
            rows as f64 / (v[v.len() / 2] / 1e3),
            bytes[i] as f64 / rows as f64
        );
    }
}
