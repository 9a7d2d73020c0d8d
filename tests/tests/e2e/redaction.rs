//! Redaction, end to end: thousands of planted PII values and secrets, sent over every OTLP
//! transport into every place a record can carry a string, must never be found again – not in
//! the WAL, not in the compacted Parquet (decompressed), not in query answers, not in Vigil's
//! own log – while look-alikes that are not sensitive come back untouched.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aho_corasick::AhoCorasick;
use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prost::Message;
use serde_json::Value;
use tonic::transport::Channel;
use vigil_core::redact::corpus::{ENTITIES, Planted, log_line, near_misses, pii_values};

use crate::harness::{Vigil, eventually};
use crate::otlp::{kv, now_ns, s};

const SEED: u64 = 0x5EC_2026;
/// 20 entities × 120 = 2400 planted values.
const PER_ENTITY: usize = 120;
const NEAR_MISSES: usize = 600;
/// Records per export request.
const BATCH: usize = 100;
/// Shorter values would match unrelated bytes by chance; the corpus makes none (asserted).
const MIN_VALUE_LEN: usize = 6;

// ---------------------------------------------------------------------------------------------
// Where values go
// ---------------------------------------------------------------------------------------------

/// Every place a record can carry a string that Vigil keeps, plus attribute keys that are on the
/// deny-list (redacted by key, whatever the value looks like).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Location {
    LogBody,
    LogBodyKvlist,
    LogAttribute,
    ResourceAttribute,
    ScopeAttribute,
    SpanName,
    SpanStatusMessage,
    SpanAttribute,
    SpanEventAttribute,
    SpanLinkAttribute,
    LogPasswordKey,
    SpanAuthorizationHeaderKey,
    SpanResourceDbPasswordKey,
}

/// 13 locations against 20 entities (coprime): every entity lands in every location.
const LOCATIONS: [Location; 13] = [
    Location::LogBody,
    Location::LogBodyKvlist,
    Location::LogAttribute,
    Location::ResourceAttribute,
    Location::ScopeAttribute,
    Location::SpanName,
    Location::SpanStatusMessage,
    Location::SpanAttribute,
    Location::SpanEventAttribute,
    Location::SpanLinkAttribute,
    Location::LogPasswordKey,
    Location::SpanAuthorizationHeaderKey,
    Location::SpanResourceDbPasswordKey,
];

/// Where near misses go: free text and attributes of both signals.
const NEAR_MISS_LOCATIONS: [Location; 6] = [
    Location::LogBody,
    Location::LogAttribute,
    Location::ResourceAttribute,
    Location::SpanName,
    Location::SpanAttribute,
    Location::SpanEventAttribute,
];

impl Location {
    fn is_log(self) -> bool {
        matches!(
            self,
            Location::LogBody
                | Location::LogBodyKvlist
                | Location::LogAttribute
                | Location::ResourceAttribute
                | Location::ScopeAttribute
                | Location::LogPasswordKey
        )
    }

    /// The strings of one record, with `text` in this location and nothing sensitive elsewhere.
    fn slots(self, text: &str) -> Slots {
        let mut slots = Slots::default();
        let text = text.to_owned();
        match self {
            Location::LogBody => slots.body = Some(s(&text)),
            Location::LogBodyKvlist => {
                slots.body = Some(any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("event", s("signup")), kv("detail", s(&text))],
                }));
            }
            Location::LogAttribute | Location::SpanAttribute => {
                slots.attributes.push(kv("detail", s(&text)));
            }
            Location::ResourceAttribute => slots.resource.push(kv("deployment.note", s(&text))),
            Location::ScopeAttribute => slots.scope.push(kv("scope.note", s(&text))),
            Location::SpanName => slots.name = Some(text),
            Location::SpanStatusMessage => slots.status_message = Some(text),
            Location::SpanEventAttribute => slots.event.push(kv("detail", s(&text))),
            Location::SpanLinkAttribute => slots.link.push(kv("detail", s(&text))),
            Location::LogPasswordKey => slots.attributes.push(kv("password", s(&text))),
            Location::SpanAuthorizationHeaderKey => {
                slots
                    .attributes
                    .push(kv("http.request.header.authorization", s(&text)));
            }
            Location::SpanResourceDbPasswordKey => {
                slots.resource.push(kv("db.password", s(&text)));
            }
        }
        slots
    }
}

/// The variable strings of one record; everything else is fixed and neutral.
#[derive(Default)]
struct Slots {
    body: Option<any_value::Value>,
    name: Option<String>,
    status_message: Option<String>,
    attributes: Vec<KeyValue>,
    resource: Vec<KeyValue>,
    scope: Vec<KeyValue>,
    event: Vec<KeyValue>,
    link: Vec<KeyValue>,
}

const LOG_SERVICE: &str = "signup-api";
const SPAN_SERVICE: &str = "checkout-api";

fn resource(service: &str, mut extra: Vec<KeyValue>) -> Option<Resource> {
    extra.insert(0, kv("service.name", s(service)));
    Some(Resource {
        attributes: extra,
        ..Default::default()
    })
}

fn scope(attributes: Vec<KeyValue>) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "redaction-e2e".into(),
        version: "1.0.0".into(),
        attributes,
        ..Default::default()
    })
}

/// One log record in its own resource and scope (so resource and scope attributes can differ
/// per record), tagged with `tag`.
fn log_record(tag: KeyValue, slots: Slots) -> ResourceLogs {
    let mut attributes = vec![tag];
    attributes.extend(slots.attributes);
    let record = LogRecord {
        time_unix_nano: now_ns(),
        observed_time_unix_nano: now_ns(),
        severity_number: 9,
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(slots.body.unwrap_or_else(|| s("user signed up"))),
        }),
        attributes,
        ..Default::default()
    };
    ResourceLogs {
        resource: resource(LOG_SERVICE, slots.resource),
        scope_logs: vec![ScopeLogs {
            scope: scope(slots.scope),
            log_records: vec![record],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Distinct, valid (non-zero) ids for span number `n`.
fn trace_id(n: u64) -> Vec<u8> {
    (0x7e57_0000_0000_0000_0000_0000_0000_0000_u128 + u128::from(n))
        .to_be_bytes()
        .to_vec()
}
fn span_id(n: u64) -> Vec<u8> {
    (0x5a00_0000_0000_0000_u64 + n).to_be_bytes().to_vec()
}

/// One server span with one event and one link, in its own resource and scope.
fn span_record(n: u64, tag: KeyValue, slots: Slots) -> ResourceSpans {
    let start = now_ns();
    let mut attributes = vec![tag, kv("http.route", s("/api/v1/checkout"))];
    attributes.extend(slots.attributes);
    let span = Span {
        trace_id: trace_id(n),
        span_id: span_id(n),
        name: slots.name.unwrap_or_else(|| "POST /api/v1/checkout".into()),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_500_000,
        attributes,
        events: vec![span::Event {
            time_unix_nano: start + 500_000,
            name: "audit".into(),
            attributes: slots.event,
            ..Default::default()
        }],
        links: vec![span::Link {
            trace_id: trace_id(n + 1_000_000),
            span_id: span_id(n + 1_000_000),
            attributes: slots.link,
            ..Default::default()
        }],
        status: Some(Status {
            message: slots.status_message.unwrap_or_default(),
            code: 2, // STATUS_CODE_ERROR: a status message is only meaningful on errors
        }),
        ..Default::default()
    };
    ResourceSpans {
        resource: resource(SPAN_SERVICE, slots.resource),
        scope_spans: vec![ScopeSpans {
            scope: scope(slots.scope),
            spans: vec![span],
            ..Default::default()
        }],
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
    HttpProtobufGzip,
}

const TRANSPORTS: [Transport; 4] = [
    Transport::Grpc,
    Transport::HttpProtobuf,
    Transport::HttpJson,
    Transport::HttpProtobufGzip,
];

/// Sends export requests and insists every one is fully accepted (no partial success).
struct Sender {
    http: reqwest::Client,
    http_endpoint: String,
    logs: LogsServiceClient<Channel>,
    traces: TraceServiceClient<Channel>,
    /// Records sent per transport.
    sent: BTreeMap<Transport, usize>,
}

impl Sender {
    async fn new(v: &Vigil) -> Sender {
        Sender {
            http: reqwest::Client::new(),
            http_endpoint: v.http_endpoint(),
            logs: LogsServiceClient::connect(v.grpc_endpoint()).await.unwrap(),
            traces: TraceServiceClient::connect(v.grpc_endpoint())
                .await
                .unwrap(),
            sent: BTreeMap::new(),
        }
    }

    async fn logs(&mut self, transport: Transport, records: Vec<ResourceLogs>) {
        *self.sent.entry(transport).or_default() += records.len();
        let req = ExportLogsServiceRequest {
            resource_logs: records,
        };
        if transport == Transport::Grpc {
            let resp = self.logs.export(req).await.expect("gRPC logs export");
            let partial = resp.into_inner().partial_success;
            assert!(partial.is_none(), "gRPC logs partial success: {partial:?}");
            return;
        }
        let (status, body) = self.post(transport, "/v1/logs", &req).await;
        assert_eq!(status, 200, "{transport:?} logs: {body}");
        if transport != Transport::HttpJson {
            let partial = ExportLogsServiceResponse::decode(&body[..])
                .unwrap()
                .partial_success;
            assert!(partial.is_none(), "{transport:?} logs: {partial:?}");
        }
    }

    async fn traces(&mut self, transport: Transport, records: Vec<ResourceSpans>) {
        *self.sent.entry(transport).or_default() += records.len();
        let req = ExportTraceServiceRequest {
            resource_spans: records,
        };
        if transport == Transport::Grpc {
            let resp = self.traces.export(req).await.expect("gRPC trace export");
            let partial = resp.into_inner().partial_success;
            assert!(partial.is_none(), "gRPC trace partial success: {partial:?}");
            return;
        }
        let (status, body) = self.post(transport, "/v1/traces", &req).await;
        assert_eq!(status, 200, "{transport:?} traces: {body}");
        if transport != Transport::HttpJson {
            let partial = ExportTraceServiceResponse::decode(&body[..])
                .unwrap()
                .partial_success;
            assert!(partial.is_none(), "{transport:?} traces: {partial:?}");
        }
    }

    /// POSTs in the transport's encoding; JSON answers are checked here for partial success.
    async fn post<M: Message + serde::Serialize>(
        &self,
        transport: Transport,
        path: &str,
        req: &M,
    ) -> (u16, ResponseBody) {
        let mut builder = self.http.post(format!("{}{path}", self.http_endpoint));
        let body = match transport {
            Transport::HttpJson => {
                // opentelemetry-proto's serde gives the OTLP/JSON encoding (lowerCamelCase,
                // hex ids, `{"stringValue": ..}`); make sure it really is that.
                let json = serde_json::to_vec(req).unwrap();
                let text = String::from_utf8_lossy(&json);
                assert!(
                    text.contains("\"stringValue\"") && text.contains("\"timeUnixNano\""),
                    "not OTLP/JSON: {}",
                    &text[..text.len().min(300)]
                );
                builder = builder.header("content-type", "application/json");
                json
            }
            Transport::HttpProtobufGzip => {
                let mut gz =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(&req.encode_to_vec()).unwrap();
                builder = builder
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "gzip");
                gz.finish().unwrap()
            }
            Transport::HttpProtobuf => {
                builder = builder.header("content-type", "application/x-protobuf");
                req.encode_to_vec()
            }
            Transport::Grpc => unreachable!("gRPC goes through the tonic clients"),
        };
        let resp = builder.body(body).send().await.expect("OTLP/HTTP request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap().to_vec();
        if transport == Transport::HttpJson && status == 200 {
            let answer: Value = serde_json::from_slice(&bytes).unwrap();
            let partial = answer.get("partialSuccess");
            assert!(
                partial.is_none_or(|p| p.as_object().is_some_and(|o| o.is_empty())),
                "JSON export partial success: {answer}"
            );
        }
        (status, ResponseBody(bytes))
    }
}

/// An HTTP answer body, shown as text in assertion messages.
struct ResponseBody(Vec<u8>);

impl std::ops::Deref for ResponseBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

// ---------------------------------------------------------------------------------------------
// Searching for leaks
// ---------------------------------------------------------------------------------------------

/// One multi-pattern search for every form in which a planted value could be stored.
struct Needles {
    matcher: AhoCorasick,
    /// Per pattern: the planted value it belongs to and which form it is.
    owners: Vec<(usize, &'static str)>,
}

impl Needles {
    /// Each value raw; JSON-escaped too when that differs (private keys' newlines are `\n` in
    /// span events, kvlist bodies and JSON answers); and each base64 line of a multi-line value
    /// alone, which catches it however the line breaks were escaped (even twice, as in a JSON
    /// string inside a JSON answer).
    fn new(values: &[&str]) -> Needles {
        let mut patterns = Vec::new();
        let mut owners = Vec::new();
        for (i, value) in values.iter().enumerate() {
            patterns.push((*value).to_owned());
            owners.push((i, "raw"));
            let json = serde_json::to_string(value).unwrap();
            let json = &json[1..json.len() - 1];
            if json != *value {
                patterns.push(json.to_owned());
                owners.push((i, "json-escaped"));
            }
            if value.contains('\n') {
                for line in value.lines().filter(|l| !l.starts_with("-----")) {
                    assert!(line.len() >= 16, "fragment too short to search: {line:?}");
                    patterns.push(line.to_owned());
                    owners.push((i, "line"));
                }
            }
        }
        Needles {
            matcher: AhoCorasick::new(&patterns).unwrap(),
            owners,
        }
    }

    /// Every (planted value, form) found in `haystack`.
    fn find(&self, haystack: &[u8]) -> Vec<(usize, &'static str)> {
        let mut hits: Vec<(usize, &'static str)> = self
            .matcher
            .find_overlapping_iter(haystack)
            .map(|m| self.owners[m.pattern().as_usize()])
            .collect();
        hits.sort();
        hits.dedup();
        hits
    }
}

/// Everything planted, and where each value went.
struct Corpus {
    planted: Vec<Planted>,
    locations: Vec<Location>,
    needles: Needles,
}

/// Raw values found somewhere they must not be.
#[derive(Default)]
struct Leaks(Vec<String>);

impl Leaks {
    fn check(&mut self, corpus: &Corpus, place: &str, haystack: &[u8]) {
        for (i, form) in corpus.needles.find(haystack) {
            let p = &corpus.planted[i];
            let loc = corpus
                .locations
                .get(i)
                .map_or("pseudonym check".to_owned(), |l| format!("{l:?}"));
            let shown: String = p.value.chars().take(80).collect();
            self.0.push(format!(
                "{} value {shown:?} (sent in {loc}, found {form}) in {place}",
                p.entity
            ));
        }
    }

    fn assert_none(&self, stage: &str) {
        assert!(
            self.0.is_empty(),
            "{stage}: {} raw values found:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// Bytes read per kind of file.
#[derive(Default, Debug)]
struct ScanStats {
    /// kind (extension) → (files, bytes)
    kinds: BTreeMap<String, (usize, u64)>,
    /// Size of the largest `.wal` file seen.
    largest_wal: u64,
}

/// Every file below `dir`.
pub(crate) fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Reads every file under `dir` as raw bytes and searches it.
fn scan_files(dir: &Path, corpus: &Corpus, leaks: &mut Leaks) -> ScanStats {
    let mut stats = ScanStats::default();
    for path in all_files(dir) {
        // Compaction may delete a WAL segment between listing and reading: nothing to check.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let kind = path
            .extension()
            .map_or("other".to_owned(), |e| e.to_string_lossy().into_owned());
        if kind == "wal" {
            stats.largest_wal = stats.largest_wal.max(bytes.len() as u64);
        }
        let entry = stats.kinds.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += bytes.len() as u64;
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        leaks.check(corpus, &format!("file {rel}"), &bytes);
    }
    stats
}

/// Appends every string of an Arrow array (map keys and values, struct fields, list items,
/// dictionary values included), each followed by a NUL no pattern contains.
fn push_strings(array: &dyn Array, out: &mut Vec<u8>) {
    fn push<'a>(strings: impl Iterator<Item = Option<&'a str>>, out: &mut Vec<u8>) {
        for s in strings.flatten() {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
    }
    match array.data_type() {
        DataType::Utf8 => push(array.as_string::<i32>().iter(), out),
        DataType::LargeUtf8 => push(array.as_string::<i64>().iter(), out),
        DataType::Utf8View => push(array.as_string_view().iter(), out),
        DataType::Map(..) => {
            let map = array.as_map();
            push_strings(map.keys().as_ref(), out);
            push_strings(map.values().as_ref(), out);
        }
        DataType::Struct(_) => {
            for column in array.as_struct().columns() {
                push_strings(column.as_ref(), out);
            }
        }
        DataType::List(_) => push_strings(array.as_list::<i32>().values().as_ref(), out),
        DataType::LargeList(_) => push_strings(array.as_list::<i64>().values().as_ref(), out),
        DataType::Dictionary(..) => push_strings(array.as_any_dictionary().values().as_ref(), out),
        _ => {}
    }
}

/// Decompressed Parquet contents of one signal.
#[derive(Default, Debug)]
struct ParquetScan {
    files: usize,
    rows: usize,
    string_bytes: usize,
}

/// Opens every Parquet file with the Arrow reader, searches every string it holds.
fn scan_parquet(
    data_dir: &Path,
    corpus: &Corpus,
    leaks: &mut Leaks,
) -> BTreeMap<String, ParquetScan> {
    let mut out: BTreeMap<String, ParquetScan> = BTreeMap::new();
    for path in all_files(data_dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
    {
        let rel = path.strip_prefix(data_dir).unwrap().display().to_string();
        // Every table is searched: planted credentials raise exposure alerts, and what was
        // redacted is counted in `redactions`; neither may hold a planted value.
        let signal = rel
            .split('/')
            .find_map(|part| part.strip_prefix("signal="))
            .and_then(vigil_core::Signal::parse)
            .unwrap_or_else(|| panic!("Parquet file outside a signal partition: {rel}"))
            .as_str();
        let file = std::fs::File::open(&path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .build()
            .unwrap();
        let mut text = Vec::new();
        let scan = out.entry(signal.to_owned()).or_default();
        scan.files += 1;
        for batch in reader {
            let batch = batch.unwrap_or_else(|e| panic!("{rel}: {e}"));
            scan.rows += batch.num_rows();
            for column in batch.columns() {
                push_strings(column.as_ref(), &mut text);
            }
        }
        scan.string_bytes += text.len();
        leaks.check(corpus, &format!("decompressed Parquet {rel}"), &text);
    }
    out
}

/// Every string in a JSON document, JSON text inside strings (span events and links, kvlist
/// bodies) unpacked too, NUL-separated.
fn json_strings(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::String(s) => {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
            if (s.starts_with('[') || s.starts_with('{'))
                && let Ok(inner) = serde_json::from_str::<Value>(s)
            {
                json_strings(&inner, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.extend_from_slice(k.as_bytes());
                out.push(0);
                json_strings(v, out);
            }
        }
        _ => {}
    }
}

/// A JSON query answer, with cells addressed by column name.
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl Table {
    fn parse(body: &[u8]) -> Table {
        let v: Value = serde_json::from_slice(body).unwrap();
        let columns = v["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        let rows = serde_json::from_value(v["rows"].clone()).unwrap();
        Table { columns, rows }
    }

    fn cell<'a>(&self, row: &'a [Value], column: &str) -> &'a Value {
        let i = self
            .columns
            .iter()
            .position(|c| c == column)
            .unwrap_or_else(|| panic!("no column {column} in {:?}", self.columns));
        &row[i]
    }

    /// The row tagged `attributes[key] = value`.
    fn row_tagged(&self, key: &str, value: &str) -> Option<&[Value]> {
        self.rows
            .iter()
            .find(|r| self.cell(r, "attributes")[key] == value)
            .map(Vec::as_slice)
    }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_leaves_no_raw_pii_anywhere() {
    let started = Instant::now();
    // Short segments, so part of the data is compacted to Parquet while the test runs.
    let v = Vigil::start("[storage]\nsegment_max_age = \"2s\"\n");

    // --- corpus ---------------------------------------------------------------------------
    let mut planted = pii_values(SEED, PER_ENTITY);
    assert_eq!(planted.len(), ENTITIES.len() * PER_ENTITY);
    let locations: Vec<Location> = (0..planted.len())
        .map(|i| LOCATIONS[i % LOCATIONS.len()])
        .collect();
    // Two more emails for the pseudonym check (not part of the rotation above).
    let (email_a, email_b) = {
        let emails: Vec<Planted> = pii_values(SEED ^ 0xE3A1, 3)
            .into_iter()
            .filter(|p| p.entity == "email")
            .collect();
        assert!(emails[0].value != emails[1].value);
        (emails[0].clone(), emails[1].clone())
    };
    planted.push(email_a.clone());
    planted.push(email_b.clone());
    for p in &planted {
        assert!(
            p.value.len() >= MIN_VALUE_LEN,
            "{} value {:?} is too short to search for raw",
            p.entity,
            p.value
        );
    }
    let misses = near_misses(SEED, NEAR_MISSES);
    let values: Vec<&str> = planted.iter().map(|p| p.value.as_str()).collect();
    let corpus = Corpus {
        needles: Needles::new(&values),
        planted: planted.clone(),
        locations,
    };
    // The near misses and the neutral texts must not contain a planted value, or the test
    // would contradict itself.
    for m in &misses {
        assert!(corpus.needles.find(m.as_bytes()).is_empty(), "{m}");
    }

    // --- records --------------------------------------------------------------------------
    let mut logs: Vec<ResourceLogs> = Vec::new();
    let mut spans: Vec<ResourceSpans> = Vec::new();
    let mut span_n = 0_u64;
    let mut add = |loc: Location, tag: KeyValue, slots: Slots| {
        if loc.is_log() {
            logs.push(log_record(tag, slots));
        } else {
            span_n += 1;
            spans.push(span_record(span_n, tag, slots));
        }
    };
    for (i, (p, &loc)) in corpus.planted.iter().zip(&corpus.locations).enumerate() {
        let text = match loc {
            Location::LogBody => log_line(SEED, p),
            // Deny-listed keys hold the bare secret, as a password field would.
            Location::LogPasswordKey | Location::SpanResourceDbPasswordKey => p.value.clone(),
            _ => p.text.clone(),
        };
        add(loc, kv("e2e.seq", s(&format!("p{i}"))), loc.slots(&text));
    }
    for (i, m) in misses.iter().enumerate() {
        let loc = NEAR_MISS_LOCATIONS[i % NEAR_MISS_LOCATIONS.len()];
        let slots = match loc {
            // Not a span attribute `detail` like the planted ones: a distinct key to look up.
            Location::LogAttribute | Location::SpanAttribute => Slots {
                attributes: vec![kv("ref", s(m))],
                ..Default::default()
            },
            _ => loc.slots(m),
        };
        add(loc, kv("nm.id", s(&i.to_string())), slots);
    }
    let (log_count, span_count) = (logs.len(), spans.len());
    // Control: the search does find every planted value in what is about to be sent, so zero
    // hits later means the values are gone, not that the search is blind.
    let mut outgoing = Vec::new();
    logs.iter().for_each(|r| outgoing.extend(r.encode_to_vec()));
    spans
        .iter()
        .for_each(|r| outgoing.extend(r.encode_to_vec()));
    let mut found: Vec<usize> = corpus
        .needles
        .find(&outgoing)
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    found.dedup();
    assert_eq!(
        found,
        (0..corpus.locations.len()).collect::<Vec<_>>(),
        "the search misses planted values in the requests themselves"
    );

    // --- send -----------------------------------------------------------------------------
    let mut sender = Sender::new(&v).await;
    let mut requests = 0;
    for (k, chunk) in logs.chunks(BATCH).enumerate() {
        sender
            .logs(TRANSPORTS[k % TRANSPORTS.len()], chunk.to_vec())
            .await;
        requests += 1;
    }
    for (k, chunk) in spans.chunks(BATCH).enumerate() {
        // Offset so spans do not use the same transport for the same chunk numbers as logs.
        sender
            .traces(TRANSPORTS[(k + 1) % TRANSPORTS.len()], chunk.to_vec())
            .await;
        requests += 1;
    }
    // The pseudonym check: one email over gRPC and over HTTP/JSON, another over HTTP/protobuf.
    let contact = |case: &str, email: &Planted| {
        vec![log_record(
            kv("pseudo.case", s(case)),
            Slots {
                attributes: vec![kv("contact", s(&email.text))],
                ..Default::default()
            },
        )]
    };
    sender
        .logs(Transport::Grpc, contact("grpc", &email_a))
        .await;
    sender
        .logs(Transport::HttpJson, contact("json", &email_a))
        .await;
    sender
        .logs(Transport::HttpProtobuf, contact("other", &email_b))
        .await;
    let log_count = log_count + 3;
    let send_time = started.elapsed();

    // --- files right after the last ack: the WAL -----------------------------------------
    let mut leaks = Leaks::default();
    let first = scan_files(&v.data_dir, &corpus, &mut leaks);
    leaks.assert_none("data dir right after the last ack");
    assert!(
        first.largest_wal >= 4096,
        "no WAL segment with data seen right after the last ack: {first:?}"
    );

    // --- after compaction: Parquet, raw and decompressed ---------------------------------
    eventually(
        Duration::from_secs(60),
        "WAL compacted into Parquet for both signals and the redactions table",
        || async {
            v.metric("vigil_wal_bytes", &[]).await == 0.0
                && v.metric("vigil_parquet_files", &[("signal", "logs")]).await > 0.0
                && v.metric("vigil_parquet_files", &[("signal", "spans")])
                    .await
                    > 0.0
                && v.metric("vigil_parquet_files", &[("signal", "redactions")])
                    .await
                    > 0.0
        },
    )
    .await;
    let second = scan_files(&v.data_dir, &corpus, &mut leaks);
    leaks.assert_none("data dir after compaction");
    let parquet = scan_parquet(&v.data_dir, &corpus, &mut leaks);
    leaks.assert_none("decompressed Parquet");
    // The WAL is empty, so Parquet holds every record sent.
    assert_eq!(parquet.get("logs").map_or(0, |p| p.rows), log_count);
    assert_eq!(parquet.get("spans").map_or(0, |p| p.rows), span_count);
    assert!(
        parquet.get("redactions").is_some_and(|p| p.rows > 0),
        "what was redacted is on record (and was searched for planted values above)"
    );

    // --- query answers --------------------------------------------------------------------
    assert_eq!(
        v.scalar_i64("SELECT count(*) FROM logs").await,
        log_count as i64
    );
    assert_eq!(
        v.scalar_i64("SELECT count(*) FROM spans").await,
        span_count as i64
    );
    let mut answer_bytes = 0;
    let mut tables = BTreeMap::new();
    for table in ["logs", "spans"] {
        for format in ["json", "csv"] {
            let sql = format!("SELECT * FROM {table}");
            let (status, body) = v.query_raw(&sql, format).await;
            assert_eq!(status, 200, "{sql}: {}", String::from_utf8_lossy(&body));
            answer_bytes += body.len();
            leaks.check(&corpus, &format!("{format} answer of {sql}"), &body);
            if format == "json" {
                let parsed = Table::parse(&body);
                let expected = if table == "logs" {
                    log_count
                } else {
                    span_count
                };
                assert_eq!(parsed.rows.len(), expected, "{sql}");
                let mut unpacked = Vec::new();
                json_strings(&serde_json::from_slice(&body).unwrap(), &mut unpacked);
                leaks.check(
                    &corpus,
                    &format!("unpacked JSON answer of {sql}"),
                    &unpacked,
                );
                tables.insert(table, parsed);
            }
        }
    }
    leaks.assert_none("query answers");

    // --- near misses come back untouched ---------------------------------------------------
    let (logs_t, spans_t) = (&tables["logs"], &tables["spans"]);
    let mut damaged = Vec::new();
    for (i, m) in misses.iter().enumerate() {
        let loc = NEAR_MISS_LOCATIONS[i % NEAR_MISS_LOCATIONS.len()];
        let id = i.to_string();
        let table = if loc.is_log() { logs_t } else { spans_t };
        let row = table
            .row_tagged("nm.id", &id)
            .unwrap_or_else(|| panic!("near miss {i} ({loc:?}) not stored"));
        let got = match loc {
            Location::LogBody => table.cell(row, "body").clone(),
            Location::LogAttribute | Location::SpanAttribute => {
                table.cell(row, "attributes")["ref"].clone()
            }
            Location::ResourceAttribute => table.cell(row, "resource")["deployment.note"].clone(),
            Location::SpanName => table.cell(row, "name").clone(),
            Location::SpanEventAttribute => {
                let events: Value =
                    serde_json::from_str(table.cell(row, "events").as_str().unwrap()).unwrap();
                events[0]["attributes"]["detail"].clone()
            }
            other => unreachable!("{other:?}"),
        };
        if got.as_str() != Some(m.as_str()) {
            damaged.push(format!("{loc:?}: sent {m:?}, stored {got}"));
        }
    }
    let survived = misses.len() - damaged.len();
    assert!(
        damaged.is_empty(),
        "{} of {} near misses were changed:\n{}",
        damaged.len(),
        misses.len(),
        damaged.join("\n")
    );

    // --- pseudonyms are stable across transports -----------------------------------------
    let pseudonyms: BTreeMap<String, String> = v
        .rows(
            "SELECT attributes['pseudo.case'], attributes['contact'] FROM logs \
             WHERE attributes['pseudo.case'] IS NOT NULL",
        )
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(pseudonyms.len(), 3, "{pseudonyms:?}");
    let is_pseudonym = |p: &str| {
        p.strip_prefix("email:").is_some_and(|hex| {
            hex.len() == 16
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    };
    assert!(is_pseudonym(&pseudonyms["grpc"]), "{pseudonyms:?}");
    assert_eq!(
        pseudonyms["grpc"], pseudonyms["json"],
        "same email, different pseudonyms"
    );
    assert!(is_pseudonym(&pseudonyms["other"]), "{pseudonyms:?}");
    assert_ne!(
        pseudonyms["grpc"], pseudonyms["other"],
        "different emails, same pseudonym"
    );

    // --- metrics --------------------------------------------------------------------------
    let mut redactions = BTreeMap::new();
    for entity in ENTITIES {
        let n = v
            .metric("vigil_redactions_total", &[("entity", entity)])
            .await;
        assert!(
            n > 0.0,
            "vigil_redactions_total{{entity=\"{entity}\"}} is {n}"
        );
        redactions.insert(*entity, n);
    }
    let by_key = v
        .metric("vigil_redactions_total", &[("entity", "sensitive_key")])
        .await;

    // --- Vigil's own log ------------------------------------------------------------------
    let log = v.log_text();
    leaks.check(&corpus, "vigil's log", log.as_bytes());
    leaks.assert_none("vigil's log");

    // --- summary --------------------------------------------------------------------------
    let mut per_entity: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &corpus.planted {
        *per_entity.entry(p.entity).or_default() += 1;
    }
    let mut per_location: BTreeMap<Location, usize> = BTreeMap::new();
    for l in &corpus.locations {
        *per_location.entry(*l).or_default() += 1;
    }
    println!(
        "planted {} values ({} search patterns) in {log_count} log records and {span_count} \
         spans, {requests} + 3 requests in {send_time:.1?}",
        corpus.planted.len(),
        corpus.needles.owners.len()
    );
    println!("  per entity: {per_entity:?}");
    println!("  per location: {per_location:?}");
    println!("  records per transport: {:?}", sender.sent);
    println!("  files after last ack: {:?}", first.kinds);
    println!("  files after compaction: {:?}", second.kinds);
    println!("  decompressed Parquet: {parquet:?}");
    println!(
        "  query answers searched: {answer_bytes} bytes; vigil log {} bytes",
        log.len()
    );
    println!("  near misses survived: {survived}/{}", misses.len());
    println!("  pseudonyms: {pseudonyms:?}");
    println!("  vigil_redactions_total by entity: {redactions:?}; by key: {by_key}");
    println!("  took {:.1?}", started.elapsed());
}

/// The `redactions` table counts, per service and entity, what the redactor replaced: the
/// same numbers as `vigil_redactions_total`, queryable over any time range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redactions_table_counts_what_was_redacted_by_service_and_entity() {
    use crate::detection::{AWS_KEY, send_logs};
    use opentelemetry::logs::Severity;

    let v = Vigil::start("");
    let line = |body: String| (body, "10.0.9.1".to_owned(), Severity::Info);
    send_logs(
        &v,
        "checkout",
        vec![
            line("receipt to ann@example.com, copy to bob@example.com".into()),
            line("charged card 4111 1111 1111 1111".into()),
        ],
    )
    .await;
    send_logs(&v, "billing", vec![line(format!("export with {AWS_KEY}"))]).await;

    let sql = "SELECT service, entity, category, sum(count) AS n FROM redactions \
               GROUP BY service, entity, category ORDER BY service, entity";
    let expected = vec![
        vec!["billing", "aws_access_key_id", "secret", "1"],
        vec!["billing", "ipv4", "pii", "1"],
        vec!["checkout", "credit_card", "pii", "1"],
        vec!["checkout", "email", "pii", "2"],
        vec!["checkout", "ipv4", "pii", "2"],
    ];
    let rows = || async {
        v.rows(sql)
            .await
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(30), "redactions rows", || async {
        rows().await == expected
    })
    .await;
    for (entity, n) in [("email", 2.0), ("ipv4", 3.0), ("aws_access_key_id", 1.0)] {
        assert_eq!(
            v.metric("vigil_redactions_total", &[("entity", entity)])
                .await,
            n,
            "{entity}"
        );
    }
    let signals = v.rows("SELECT DISTINCT signal FROM redactions").await;
    assert_eq!(signals, [[Value::from("logs")]]);
}
