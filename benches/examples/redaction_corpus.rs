//! Vigil's half of the redaction comparison with Presidio (`benches/redaction_side_by_side.py`).
//!
//! Two subcommands, so that both redactors see exactly the same texts:
//!
//! - `dump` writes the seeded redaction corpus (`vigil_core::redact::corpus`) as JSON lines:
//!   log lines that each carry one planted value, with the value's span in code points (what a
//!   Python `str` slice uses), near misses that must survive untouched, and clean log lines.
//! - `measure` reads such a file back and runs Vigil's default redactor over it: recall per
//!   entity, precision on the near misses and clean lines, and throughput in the calling
//!   thread's CPU time (per core, and not inflated or deflated by other work on a shared
//!   machine), as one JSON object on stdout.
//!
//! Recall and precision are defined as in the redaction tests (`corpus_recall_and_precision`):
//! a planted value is *found* when it no longer appears in `redact_str_findings` output, and
//! *credited* when a finding of its own entity was reported; a near miss or clean line is *kept*
//! when `redact_str` returns it unchanged.
//!
//! A corpus file may also hold `probe` records (added by the comparison script, not by `dump`):
//! shapes outside Vigil's corpus, each reported with what the redactor made of it, and left out
//! of every figure above.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};
use serde_json::json;
use vigil_core::redact::{RedactionConfig, corpus};
use vigil_core::{HashKey, Redactor};

#[derive(Debug, Parser)]
#[command(name = "redaction_corpus")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the seeded corpus as JSON lines.
    Dump {
        /// Output file (JSON lines).
        #[arg(long)]
        out: PathBuf,
        /// Corpus seed: the same seed gives the same file on every machine.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Planted values per entity (every entity of `corpus::ENTITIES`).
        #[arg(long, default_value_t = 200)]
        per_entity: usize,
        /// Near misses (UUIDs, trace ids, timestamps, Luhn-failing numbers, …).
        #[arg(long, default_value_t = 4000)]
        near_misses: usize,
        /// Log lines without any personal data or secret.
        #[arg(long, default_value_t = 2000)]
        clean: usize,
    },
    /// Run Vigil's default redactor over a dumped corpus and print the results as JSON.
    Measure {
        /// A file written by `dump`.
        #[arg(long)]
        corpus: PathBuf,
        /// Timed passes over the texts: at least this many, and then more until each
        /// measurement has used at least --min-cpu-seconds of CPU.
        #[arg(long, default_value_t = 3)]
        repeat: u32,
        /// CPU time each throughput measurement must reach.
        #[arg(long, default_value_t = 1.0)]
        min_cpu_seconds: f64,
    },
}

/// One line of the corpus file.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// `pii`, `near_miss`, `clean` or `probe`.
    kind: String,
    /// For `pii`: the entity planted (a name of `corpus::ENTITIES`); for `probe`, a label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entity: Option<String>,
    /// Only for `pii`: the sensitive part that must not survive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    /// The whole text as a redactor sees it (a log line, or a bare near miss).
    text: String,
    /// Only for `pii`: `value`'s span in `text`, in code points (Python string indices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Dump {
            out,
            seed,
            per_entity,
            near_misses,
            clean,
        } => dump(&out, seed, per_entity, near_misses, clean),
        Command::Measure {
            corpus,
            repeat,
            min_cpu_seconds,
        } => {
            let report = measure(&read_corpus(&corpus)?, repeat, min_cpu_seconds)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

fn dump(
    out: &PathBuf,
    seed: u64,
    per_entity: usize,
    near_misses: usize,
    clean: usize,
) -> anyhow::Result<()> {
    let mut w = BufWriter::new(File::create(out).with_context(|| format!("{}", out.display()))?);
    for (i, planted) in corpus::pii_values(seed, per_entity).iter().enumerate() {
        let line = corpus::log_line(seed.wrapping_add(i as u64), planted);
        let byte_start = value_offset(&line, planted)?;
        // Code points, not bytes: the other side slices Python strings.
        let start = line
            .get(..byte_start)
            .map(|s| s.chars().count())
            .context("value offset inside a character")?;
        let record = Record {
            kind: "pii".into(),
            entity: Some(planted.entity.into()),
            value: Some(planted.value.clone()),
            start: Some(start),
            end: Some(start + planted.value.chars().count()),
            text: line,
        };
        serde_json::to_writer(&mut w, &record)?;
        w.write_all(b"\n")?;
    }
    let plain = corpus::near_misses(seed.wrapping_add(1), near_misses)
        .into_iter()
        .map(|t| ("near_miss", t))
        .chain(
            corpus::clean_log_lines(seed.wrapping_add(2), clean)
                .into_iter()
                .map(|t| ("clean", t)),
        );
    for (kind, text) in plain {
        let record = Record {
            kind: kind.into(),
            entity: None,
            value: None,
            text,
            start: None,
            end: None,
        };
        serde_json::to_writer(&mut w, &record)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// Byte offset of the planted value in its log line: inside the planted text, which the line
/// embeds once (found first, so a value that also occurs elsewhere in the line by chance is
/// still located where it was planted).
fn value_offset(line: &str, planted: &corpus::Planted) -> anyhow::Result<usize> {
    let Some(text_at) = line.find(&planted.text) else {
        bail!("planted text not in its log line: {:?}", planted.text);
    };
    let Some(value_at) = planted.text.find(&planted.value) else {
        bail!("value not in its planted text: {:?}", planted.text);
    };
    Ok(text_at + value_at)
}

fn read_corpus(path: &PathBuf) -> anyhow::Result<Vec<Record>> {
    let file = File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut records = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record =
            serde_json::from_str(&line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        records.push(record);
    }
    Ok(records)
}

/// Found, credited and total planted values of one entity.
#[derive(Debug, Default, Serialize)]
struct EntityScore {
    found: u64,
    credited: u64,
    total: u64,
    /// A few values that survived, to look at.
    missed: Vec<String>,
}

/// Texts returned unchanged, of those that must be.
#[derive(Debug, Default, Serialize)]
struct Kept {
    kept: u64,
    total: u64,
    /// A few that were changed, with what they became.
    changed: Vec<(String, String)>,
}

/// What the redactor made of one probe.
#[derive(Debug, Serialize)]
struct Probe {
    label: Option<String>,
    text: String,
    redacted: String,
    /// Entities reported, in the order of the findings.
    findings: Vec<String>,
}

/// Examples kept per entity or kind in the report: enough to see a pattern, few enough to read.
const EXAMPLES: usize = 5;

fn measure(
    records: &[Record],
    repeat: u32,
    min_cpu_seconds: f64,
) -> anyhow::Result<serde_json::Value> {
    let key = HashKey::new(&[7; 32]).map_err(anyhow::Error::msg)?;
    let redactor = Redactor::new(&RedactionConfig::default(), key)
        .map_err(|e| anyhow::anyhow!("default redaction config: {e:?}"))?;

    let mut entities: BTreeMap<&str, EntityScore> = corpus::ENTITIES
        .iter()
        .map(|e| (*e, EntityScore::default()))
        .collect();
    let mut kept: BTreeMap<&str, Kept> = BTreeMap::new();
    let mut probes = Vec::new();
    for record in records {
        match (record.kind.as_str(), &record.entity, &record.value) {
            ("pii", Some(entity), Some(value)) => {
                let score = entities.entry(entity.as_str()).or_default();
                let (out, findings) = redactor.redact_str_findings("svc", &record.text);
                score.total += 1;
                if out.contains(value.as_str()) {
                    if score.missed.len() < EXAMPLES {
                        score.missed.push(value.clone());
                    }
                } else {
                    score.found += 1;
                }
                if findings.count(entity) > 0 {
                    score.credited += 1;
                }
            }
            ("pii", _, _) => bail!("a pii record without entity or value: {:?}", record.text),
            (kind @ ("near_miss" | "clean"), _, _) => {
                let tally = kept.entry(kind).or_default();
                tally.total += 1;
                let out = redactor.redact_str("svc", &record.text);
                if out == record.text.as_str() {
                    tally.kept += 1;
                } else if tally.changed.len() < EXAMPLES {
                    tally.changed.push((record.text.clone(), out.into_owned()));
                }
            }
            ("probe", label, _) => {
                let (out, findings) = redactor.redact_str_findings("svc", &record.text);
                probes.push(Probe {
                    label: label.clone(),
                    text: record.text.clone(),
                    redacted: out.into_owned(),
                    findings: findings.iter().map(|f| f.entity.to_string()).collect(),
                });
            }
            (other, _, _) => bail!("unknown record kind {other:?}"),
        }
    }

    let all: Vec<&str> = records
        .iter()
        .filter(|r| r.kind != "probe")
        .map(|r| r.text.as_str())
        .collect();
    let clean: Vec<&str> = records
        .iter()
        .filter(|r| r.kind == "clean")
        .map(|r| r.text.as_str())
        .collect();
    let throughput = json!({
        "all": throughput(&redactor, &all, repeat, min_cpu_seconds)?,
        "clean": throughput(&redactor, &clean, repeat, min_cpu_seconds)?,
    });

    Ok(json!({
        "redactor": "vigil",
        "config": "RedactionConfig::default()",
        "version": env!("CARGO_PKG_VERSION"),
        "entities": entities,
        "kept": kept,
        "probes": probes,
        "throughput": throughput,
    }))
}

/// CPU time of the calling thread: the redactor runs on this thread alone, so this is its cost
/// on one core whatever else the machine is doing.
fn thread_cpu() -> anyhow::Result<Duration> {
    Ok(Duration::from(
        clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).context("thread CPU clock")?,
    ))
}

/// Redacts every text once untimed (the lazy DFA builds its states), then in timed passes until
/// at least `repeat` passes and `min_cpu_seconds` of CPU time.
fn throughput(
    redactor: &Redactor,
    texts: &[&str],
    repeat: u32,
    min_cpu_seconds: f64,
) -> anyhow::Result<serde_json::Value> {
    let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    if bytes == 0 {
        return Ok(serde_json::Value::Null);
    }
    let pass = || {
        texts
            .iter()
            .map(|t| redactor.redact_str("svc", t).len())
            .sum::<usize>()
    };
    std::hint::black_box(pass());
    let mut passes = 0u32;
    let mut cpu = Duration::ZERO;
    while passes < repeat || cpu.as_secs_f64() < min_cpu_seconds {
        let start = thread_cpu()?;
        std::hint::black_box(pass());
        cpu += thread_cpu()?.saturating_sub(start);
        passes += 1;
    }
    let seconds = cpu.as_secs_f64();
    Ok(json!({
        "texts": texts.len(),
        "bytes": bytes,
        "passes": passes,
        "cpu_seconds": seconds,
        "mb_per_s": (bytes as f64 * f64::from(passes)) / seconds / 1e6,
    }))
}
