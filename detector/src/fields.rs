//! How Sigma field names reach Vigil's data: a configurable mapping from rule fields to columns
//! and attributes, and `RowEvent`, one batch row seen through it as an rsigma `Event`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, Int32Array, Int64Array, StringArray};
use rsigma_eval::{Event, EventValue};
use serde_json::{Map, Value};
use vigil_core::Signal;

use crate::view::BatchView;

/// Where a Sigma field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRef {
    /// A string or integer column of the row's table (`body`, `severity_number`, ...).
    Column(String),
    /// `attributes[key]`.
    Attribute(String),
    /// `resource[key]`.
    Resource(String),
    /// The table name, `logs` or `spans`.
    Signal,
}

impl FieldRef {
    /// Parses a mapping target: `body`, `attributes.http.route`, `resource.host.name`,
    /// `attributes['url.path']`, `signal`.
    pub fn parse(target: &str) -> Result<Self, String> {
        let target = target.trim();
        let keyed = |prefix: &str| -> Option<String> {
            let rest = target.strip_prefix(prefix)?;
            if let Some(key) = rest.strip_prefix('.') {
                return Some(key.to_owned());
            }
            let key = rest.strip_prefix("['")?.strip_suffix("']")?;
            Some(key.to_owned())
        };
        if let Some(key) = keyed("attributes") {
            return non_empty(key, target).map(FieldRef::Attribute);
        }
        if let Some(key) = keyed("resource") {
            return non_empty(key, target).map(FieldRef::Resource);
        }
        if target == "signal" {
            return Ok(FieldRef::Signal);
        }
        if COLUMNS.contains(&target) {
            return Ok(FieldRef::Column(target.to_owned()));
        }
        Err(format!(
            "`{target}` is not a column; use one of {} or `attributes.<key>` / `resource.<key>`",
            COLUMNS.join(", ")
        ))
    }
}

fn non_empty(key: String, target: &str) -> Result<String, String> {
    if key.is_empty() {
        Err(format!("`{target}` names no key"))
    } else {
        Ok(key)
    }
}

/// Columns a rule may read (both tables; a column the row's table lacks reads as absent).
const COLUMNS: &[&str] = &[
    "time",
    "service",
    "severity_number",
    "severity_text",
    "body",
    "event_name",
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "status_code",
    "status_message",
    "duration_ns",
    "scope_name",
];

/// Text columns searched by keyword (field-less) selections, besides attribute values.
const KEYWORD_COLUMNS: &[&str] = &["body", "event_name", "name", "status_message"];

/// Sigma field names that mean something in OpenTelemetry already, so common community
/// rules (web server logs, proxies) work without configuration. Each tries its targets in
/// order; the first present wins. Config entries replace these per field.
const DEFAULT_MAPPING: &[(&str, &[&str])] = &[
    (
        "cs-method",
        &["attributes.http.request.method", "attributes.http.method"],
    ),
    (
        "c-uri",
        &[
            "attributes.url.path",
            "attributes.http.target",
            "attributes.url.full",
        ],
    ),
    (
        "cs-uri-stem",
        &["attributes.url.path", "attributes.http.target"],
    ),
    ("cs-uri-query", &["attributes.url.query"]),
    (
        "cs-uri",
        &[
            "attributes.url.full",
            "attributes.http.url",
            "attributes.http.target",
        ],
    ),
    (
        "c-useragent",
        &[
            "attributes.user_agent.original",
            "attributes.http.user_agent",
        ],
    ),
    (
        "cs-user-agent",
        &[
            "attributes.user_agent.original",
            "attributes.http.user_agent",
        ],
    ),
    (
        "sc-status",
        &[
            "attributes.http.response.status_code",
            "attributes.http.status_code",
        ],
    ),
    (
        "c-ip",
        &[
            "attributes.client.address",
            "attributes.net.peer.ip",
            "attributes.source.address",
        ],
    ),
    (
        "src_ip",
        &[
            "attributes.client.address",
            "attributes.source.address",
            "attributes.net.peer.ip",
        ],
    ),
    (
        "dst_ip",
        &[
            "attributes.server.address",
            "attributes.destination.address",
        ],
    ),
    (
        "cs-host",
        &["attributes.server.address", "attributes.http.host"],
    ),
    ("cs-referrer", &["attributes.http.request.header.referer"]),
    (
        "User",
        &[
            "attributes.enduser.id",
            "attributes.user.name",
            "attributes.user.id",
        ],
    ),
    ("message", &["body"]),
];

/// The configured mapping, resolved. Unmapped names fall back to a column of that name, then
/// `attributes[name]`, then `resource[name]`.
#[derive(Debug, Clone)]
pub struct FieldMap {
    mapped: HashMap<String, Arc<[FieldRef]>>,
}

impl Default for FieldMap {
    fn default() -> Self {
        Self::new(&BTreeMap::new()).unwrap_or_else(|_| Self {
            mapped: HashMap::new(),
        })
    }
}

impl FieldMap {
    /// Builds the mapping from config (`sigma field → [targets]`), on top of the defaults.
    /// Reports every bad target.
    pub fn new(config: &BTreeMap<String, Vec<String>>) -> Result<Self, Vec<String>> {
        let mut mapped = HashMap::new();
        for (name, targets) in DEFAULT_MAPPING {
            let refs: Vec<FieldRef> = targets
                .iter()
                .filter_map(|t| FieldRef::parse(t).ok())
                .collect();
            mapped.insert((*name).to_owned(), Arc::from(refs));
        }
        let mut problems = Vec::new();
        for (name, targets) in config {
            if targets.is_empty() {
                problems.push(format!("detector.fields.{name}: maps to nothing"));
                continue;
            }
            let mut refs = Vec::with_capacity(targets.len());
            for t in targets {
                match FieldRef::parse(t) {
                    Ok(r) => refs.push(r),
                    Err(e) => problems.push(format!("detector.fields.{name}: {e}")),
                }
            }
            mapped.insert(name.clone(), Arc::from(refs));
        }
        if problems.is_empty() {
            Ok(Self { mapped })
        } else {
            Err(problems)
        }
    }

    /// The targets of Sigma field `name`, in the order they are tried.
    pub(crate) fn resolve(&self, name: &str) -> Arc<[FieldRef]> {
        if let Some(refs) = self.mapped.get(name) {
            return refs.clone();
        }
        let mut refs = Vec::with_capacity(3);
        if let Ok(r) = FieldRef::parse(name) {
            let explicit = !matches!(r, FieldRef::Column(_));
            refs.push(r);
            if explicit {
                return Arc::from(refs);
            }
        }
        refs.push(FieldRef::Attribute(name.to_owned()));
        refs.push(FieldRef::Resource(name.to_owned()));
        Arc::from(refs)
    }
}

/// A field reference bound to one batch: columns are looked up once per batch, not per row.
/// Integer columns are handed to rules as numbers so `gt`/`lt` compare numerically.
#[derive(Clone)]
pub(crate) enum Bound<'a> {
    Time,
    Int64(&'a Int64Array),
    Int32(&'a Int32Array),
    Str(&'a StringArray),
    Attribute(Box<str>),
    Resource(Box<str>),
    Signal,
}

/// One batch seen by rules: the view, its keyword columns, and field names resolved and bound
/// to this batch's columns on first use.
pub struct BatchEvents<'a> {
    view: &'a BatchView<'a>,
    fields: &'a FieldMap,
    keyword_columns: Vec<&'a StringArray>,
    resolved: RefCell<HashMap<String, Arc<[Bound<'a>]>>>,
}

impl<'a> BatchEvents<'a> {
    pub fn new(view: &'a BatchView<'a>, fields: &'a FieldMap) -> Self {
        Self {
            view,
            fields,
            keyword_columns: KEYWORD_COLUMNS
                .iter()
                .filter_map(|name| view.str_column(name))
                .collect(),
            resolved: RefCell::new(HashMap::new()),
        }
    }

    pub fn view(&self) -> &'a BatchView<'a> {
        self.view
    }

    /// The text columns keyword (field-less) selections search, besides attribute values.
    pub(crate) fn keyword_columns(&self) -> &[&'a StringArray] {
        &self.keyword_columns
    }

    pub fn row(&self, row: usize) -> RowEvent<'_, 'a> {
        RowEvent { batch: self, row }
    }

    /// Field `name` bound to this batch: its targets present in the batch's table, in order.
    /// A row's value is the first target that has one.
    pub(crate) fn refs(&self, name: &str) -> Arc<[Bound<'a>]> {
        if let Some(r) = self.resolved.borrow().get(name) {
            return r.clone();
        }
        let bound: Arc<[Bound<'a>]> = self
            .fields
            .resolve(name)
            .iter()
            .filter_map(|r| self.bind(r))
            .collect();
        self.resolved
            .borrow_mut()
            .insert(name.to_owned(), bound.clone());
        bound
    }

    /// `None` when this batch's table has no such column.
    fn bind(&self, r: &FieldRef) -> Option<Bound<'a>> {
        let records = self.view.records();
        Some(match r {
            FieldRef::Column(name) if name == "time" => Bound::Time,
            FieldRef::Column(name) => {
                let column = records.column_by_name(name)?;
                let any = column.as_any();
                if let Some(c) = any.downcast_ref::<Int64Array>() {
                    Bound::Int64(c)
                } else if let Some(c) = any.downcast_ref::<Int32Array>() {
                    Bound::Int32(c)
                } else {
                    Bound::Str(any.downcast_ref::<StringArray>()?)
                }
            }
            FieldRef::Attribute(key) => Bound::Attribute(key.as_str().into()),
            FieldRef::Resource(key) => Bound::Resource(key.as_str().into()),
            FieldRef::Signal => Bound::Signal,
        })
    }
}

/// One row of a batch as an rsigma event.
pub struct RowEvent<'b, 'a> {
    batch: &'b BatchEvents<'a>,
    row: usize,
}

impl<'a> RowEvent<'_, 'a> {
    fn value(&self, b: &Bound<'a>) -> Option<EventValue<'a>> {
        let row = self.row;
        let view = self.batch.view;
        Some(match b {
            Bound::Time => EventValue::Int(view.time_ns(row)),
            Bound::Int64(c) if c.is_valid(row) => EventValue::Int(c.value(row)),
            Bound::Int32(c) if c.is_valid(row) => EventValue::Int(i64::from(c.value(row))),
            Bound::Str(c) if c.is_valid(row) => EventValue::Str(Cow::Borrowed(c.value(row))),
            Bound::Int64(_) | Bound::Int32(_) | Bound::Str(_) => EventValue::Null,
            Bound::Attribute(key) => EventValue::Str(Cow::Borrowed(view.attribute(row, key)?)),
            Bound::Resource(key) => EventValue::Str(Cow::Borrowed(view.resource(row, key)?)),
            Bound::Signal => EventValue::Str(Cow::Borrowed(view.signal().as_str())),
        })
    }

    fn each_text(&self, mut visit: impl FnMut(&'a str) -> bool) -> bool {
        let row = self.row;
        for column in &self.batch.keyword_columns {
            if column.is_valid(row) && visit(column.value(row)) {
                return true;
            }
        }
        self.batch
            .view
            .attributes()
            .entries(row)
            .any(|(_, v)| visit(v))
    }
}

impl Event for RowEvent<'_, '_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        let refs = self.batch.refs(path);
        refs.iter().find_map(|r| self.value(r))
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.each_text(pred)
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        let mut out = Vec::new();
        self.each_text(|v| {
            out.push(Cow::Borrowed(v));
            false
        });
        out
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        self.each_text(|v| {
            visit(v);
            false
        });
    }

    fn to_json(&self) -> Value {
        let view = self.batch.view;
        let mut out = Map::new();
        out.insert("signal".into(), Value::from(view.signal().as_str()));
        out.insert("time".into(), Value::from(view.time_ns(self.row)));
        for name in COLUMNS {
            if *name == "time" {
                continue;
            }
            let bound = self.batch.bind(&FieldRef::Column((*name).to_owned()));
            let value = match bound.and_then(|b| self.value(&b)) {
                Some(EventValue::Str(s)) => Value::from(s.into_owned()),
                Some(EventValue::Int(i)) => Value::from(i),
                _ => continue,
            };
            out.insert((*name).to_owned(), value);
        }
        for (map_name, map) in [
            ("attributes", view.attributes()),
            ("resource", view.resources()),
        ] {
            let entries: Map<String, Value> = map
                .entries(self.row)
                .map(|(k, v)| (k.to_owned(), Value::from(v)))
                .collect();
            out.insert(map_name.into(), Value::Object(entries));
        }
        Value::Object(out)
    }
}

/// The logsource an event of `signal` from `service` presents to rules.
pub fn event_logsource(signal: Signal, service: &str) -> rsigma_parser::LogSource {
    rsigma_parser::LogSource {
        category: Some(signal.as_str().to_owned()),
        product: Some(PRODUCT.to_owned()),
        service: Some(service.to_owned()),
        ..Default::default()
    }
}

/// The `logsource.product` of rules written for Vigil.
pub const PRODUCT: &str = "opentelemetry";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{self, EventSpec};
    use vigil_core::Redactor;

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        assert_eq!(FieldRef::parse("body"), Ok(FieldRef::Column("body".into())));
        assert_eq!(
            FieldRef::parse("attributes.http.route"),
            Ok(FieldRef::Attribute("http.route".into()))
        );
        assert_eq!(
            FieldRef::parse("resource['host.name']"),
            Ok(FieldRef::Resource("host.name".into()))
        );
        assert!(
            FieldRef::parse("bodyy")
                .unwrap_err()
                .contains("not a column")
        );
        assert!(
            FieldRef::parse("attributes.")
                .unwrap_err()
                .contains("names no key")
        );
        let problems = FieldMap::new(&BTreeMap::from([
            ("a".to_string(), vec!["nope".to_string()]),
            ("b".to_string(), vec![]),
        ]))
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn rows_resolve_columns_mapped_names_and_attributes() {
        let batch = synthetic::batch(
            &[EventSpec::log("web", "GET /admin")
                .attr("url.path", "/admin")
                .attr("http.response.status_code", 403)
                .attr("custom.key", "v")],
            0,
        )
        .expect("batch");
        let redacted = Redactor::disabled().apply(batch).expect("redact");
        let view = BatchView::new(&redacted).expect("view");
        let fields = FieldMap::new(&BTreeMap::from([(
            "Route".to_string(),
            vec![
                "attributes.http.route".to_string(),
                "attributes.url.path".to_string(),
            ],
        )]))
        .expect("map");
        let events = BatchEvents::new(&view, &fields);
        let row = events.row(0);
        let s = |name: &str| {
            row.get_field(name)
                .and_then(|v| v.as_str().map(|s| s.into_owned()))
        };
        assert_eq!(s("body").as_deref(), Some("GET /admin"));
        assert_eq!(s("c-uri").as_deref(), Some("/admin"), "default mapping");
        assert_eq!(s("Route").as_deref(), Some("/admin"), "second target");
        assert_eq!(s("sc-status").as_deref(), Some("403"));
        assert_eq!(
            s("custom.key").as_deref(),
            Some("v"),
            "bare names fall back to attributes"
        );
        assert_eq!(s("service").as_deref(), Some("web"));
        assert_eq!(s("signal").as_deref(), Some("logs"));
        assert!(matches!(
            row.get_field("severity_number"),
            Some(EventValue::Int(9))
        ));
        assert!(
            row.get_field("kind").is_none(),
            "spans column on a log row is absent"
        );
        assert!(row.get_field("missing").is_none());
        assert!(row.any_string_value(&|v| v == "v"));
        assert_eq!(row.to_json()["attributes"]["custom.key"], "v");
    }
}
