//! Arrow schemas of every table: `logs` and `spans`, the one in-memory and on-disk shape of
//! telemetry in Vigil fixed at ingest, and the tables Vigil derives from them.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Value of the `service` column when a resource carries no `service.name`.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Column names shared by both tables.
pub mod col {
    pub const TIME: &str = "time";
    pub const SERVICE: &str = "service";
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const ATTRIBUTES: &str = "attributes";
    pub const RESOURCE: &str = "resource";
}

/// `timestamp(ns, UTC)`, the type of every time column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// The entries field of a `map<string,string>` column (key non-null, value nullable).
pub fn map_entries_field() -> Arc<Field> {
    Arc::new(Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    ))
}

/// `map<string,string>`: attributes, with non-string values in their string form.
pub fn string_map_type() -> DataType {
    DataType::Map(map_entries_field(), false)
}

fn ts(name: &str) -> Field {
    Field::new(name, timestamp_type(), false)
}
fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}
fn map(name: &str) -> Field {
    Field::new(name, string_map_type(), false)
}
fn u32_col(name: &str) -> Field {
    Field::new(name, DataType::UInt32, false)
}

static LOGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        ts("time"),
        ts("observed_time"),
        utf8("service", false),
        Field::new("severity_number", DataType::Int32, false),
        utf8("severity_text", true),
        utf8("body", true),
        utf8("trace_id", true),
        utf8("span_id", true),
        u32_col("flags"),
        utf8("event_name", true),
        map("attributes"),
        u32_col("dropped_attributes_count"),
        map("resource"),
        u32_col("resource_dropped_attributes_count"),
        utf8("resource_schema_url", true),
        utf8("scope_name", true),
        utf8("scope_version", true),
        map("scope_attributes"),
        u32_col("scope_dropped_attributes_count"),
        utf8("scope_schema_url", true),
    ]))
});

static SPANS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        ts("time"),
        ts("end_time"),
        Field::new("duration_ns", DataType::Int64, false),
        utf8("trace_id", false),
        utf8("span_id", false),
        utf8("parent_span_id", true),
        utf8("trace_state", true),
        u32_col("flags"),
        utf8("service", false),
        utf8("name", false),
        utf8("kind", false),
        utf8("status_code", false),
        utf8("status_message", true),
        map("attributes"),
        u32_col("dropped_attributes_count"),
        // JSON arrays: [{"time","name","attributes","dropped_attributes_count"}]
        utf8("events", false),
        u32_col("dropped_events_count"),
        // JSON arrays: [{"trace_id","span_id","trace_state","flags","attributes","dropped_attributes_count"}]
        utf8("links", false),
        u32_col("dropped_links_count"),
        map("resource"),
        u32_col("resource_dropped_attributes_count"),
        utf8("resource_schema_url", true),
        utf8("scope_name", true),
        utf8("scope_version", true),
        map("scope_attributes"),
        u32_col("scope_dropped_attributes_count"),
        utf8("scope_schema_url", true),
    ]))
});

static ALERTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // When the alert first fired; the partitioning time, so every row of one alert lands
        // in the hour it started.
        ts("time"),
        ts("last_seen"),
        Field::new("resolved_time", timestamp_type(), true),
        utf8("status", false),
        utf8("rule_id", false),
        utf8("rule_title", false),
        utf8("severity", false),
        utf8("service", false),
        utf8("fingerprint", false),
        utf8("summary", false),
        // JSON object: group values, observed vs baseline, sample ids.
        utf8("details", false),
        Field::new("count", DataType::UInt64, false),
    ]))
});

static DEAD_LETTERS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // When delivery was given up.
        ts("time"),
        // When the notification was first queued.
        ts("queued_time"),
        utf8("sink", false),
        utf8("format", false),
        utf8("url", false),
        // The Standard Webhooks `webhook-id` the receiver would have seen.
        utf8("message_id", false),
        // The alerts' service, or `mixed` when a notification grouped several.
        utf8("service", false),
        // Comma-separated fingerprints of the alerts in the notification.
        utf8("fingerprints", false),
        // rejected | gone | retries_exhausted | outbox_full | egress_denied
        utf8("reason", false),
        Field::new("attempts", DataType::UInt32, false),
        Field::new("last_status", DataType::UInt16, true),
        utf8("last_error", false),
        // The exact body that was (or would have been) sent.
        utf8("payload", false),
    ]))
});

static REDACTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // When the batch arrived.
        ts("time"),
        utf8("service", false),
        // The table the values were in: `logs` or `spans`.
        utf8("signal", false),
        // Detector name (`email`, `aws_access_key_id`, ...), `sensitive_key` or `not_allowed`.
        utf8("entity", false),
        // `pii`, `secret`, ...: the entity's category.
        utf8("category", false),
        // Column of the first occurrence (`body`, `attributes`, ...).
        utf8("field", false),
        // Values replaced in this batch.
        Field::new("count", DataType::UInt64, false),
    ]))
});

static ALERT_ACTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // When the analyst acted.
        ts("time"),
        utf8("fingerprint", false),
        // `acknowledge` | `resolve`
        utf8("action", false),
        // Who: the authenticated principal, or `anonymous`.
        utf8("principal", false),
        utf8("comment", true),
        // The alert's rule, service and severity, so the table reads on its own.
        utf8("rule_id", false),
        utf8("service", false),
        utf8("severity", false),
    ]))
});

static AUDIT: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // When the request arrived.
        ts("time"),
        // Who: the key's or token's id, or `anonymous` with auth off.
        utf8("principal", false),
        // What, in a word: `query`, `alert_detail`, `acknowledge`, `reload`, ...
        utf8("action", false),
        utf8("method", false),
        utf8("path", false),
        // The HTTP status answered.
        Field::new("status", DataType::UInt16, false),
        // The SQL of a query or the comment of a triage action, redacted like everything.
        utf8("detail", true),
        // Rows answered, for queries.
        Field::new("rows", DataType::UInt64, true),
        Field::new("elapsed_ms", DataType::UInt64, false),
    ]))
});

/// Schema of the `audit` table: every API request an authenticated caller made (queries,
/// triage and admin actions), readable by admins only.
pub fn audit_schema() -> SchemaRef {
    AUDIT.clone()
}

/// Schema of the `logs` table.
pub fn logs_schema() -> SchemaRef {
    LOGS.clone()
}

/// Schema of the `spans` table.
pub fn spans_schema() -> SchemaRef {
    SPANS.clone()
}

/// Schema of the `alerts` table: one row per alert state change (fired, resolved).
pub fn alerts_schema() -> SchemaRef {
    ALERTS.clone()
}

/// Schema of the `dead_letters` table: webhook notifications Vigil gave up delivering.
pub fn dead_letters_schema() -> SchemaRef {
    DEAD_LETTERS.clone()
}

/// Schema of the `redactions` table: what redaction replaced, one row per batch, service and
/// entity.
pub fn redactions_schema() -> SchemaRef {
    REDACTIONS.clone()
}

/// Schema of the `alert_actions` table: analysts' acknowledgements and manual resolutions.
pub fn alert_actions_schema() -> SchemaRef {
    ALERT_ACTIONS.clone()
}
