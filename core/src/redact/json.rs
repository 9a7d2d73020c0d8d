//! Structured values: log bodies that are JSON (kvlist bodies, or apps logging JSON strings) and
//! the span `events`/`links` columns. Parsed only when the raw text holds a candidate, then
//! walked so that object keys get the deny-list and strings get the detectors, and written back
//! as valid JSON in the original key order.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::keys::KeyDecision;
use super::{Engine, NOT_ALLOWED, Outcome, Policy, SENSITIVE_KEY, Site};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Any JSON: denied keys apply at every depth.
    Plain,
    /// An array of span events or links: their `attributes` member is an attribute map.
    Records,
    /// An attribute map: denied keys and the allow-list apply.
    Attributes,
}

enum Change {
    None,
    Changed,
    /// The value must go: removed from its object, masked in an array.
    Drop(usize),
}

/// How a string is tested before it is redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GateKind {
    /// The text gate.
    Text,
    /// The JSON gate, which also passes a denied object key.
    Json,
    /// None: the string is always walked.
    Walk,
}

/// How a log body is gated: JSON (an object or array) by the JSON gate, except JSON with
/// escapes, which is always walked (`\u0040` hides an `@` from the raw scan); other text by
/// the text gate.
pub(super) fn body_gate(text: &str) -> GateKind {
    if !is_json_like(text) {
        GateKind::Text
    } else if text.contains("\\u") {
        GateKind::Walk
    } else {
        GateKind::Json
    }
}

fn is_json_like(text: &str) -> bool {
    let trimmed = text.trim_start();
    trimmed.starts_with('{') || trimmed.starts_with('[')
}

impl Engine {
    /// A log body: JSON when it parses as an object or array, else text.
    pub(super) fn redact_body(
        &self,
        text: &str,
        policy: &Policy,
        site: &mut Site<'_, '_>,
    ) -> Option<String> {
        if !self.passes(body_gate(text), text) {
            return None;
        }
        self.redact_body_candidate(text, policy, site)
    }

    /// [`Self::redact_body`] for a body that already passed its gate.
    pub(super) fn redact_body_candidate(
        &self,
        text: &str,
        policy: &Policy,
        site: &mut Site<'_, '_>,
    ) -> Option<String> {
        if is_json_like(text)
            && let Ok(mut value) = serde_json::from_str::<Value>(text)
        {
            return self
                .redact_json(&mut value, Scope::Plain, policy, site)
                .then(|| value.to_json());
        }
        self.redact_field_candidate(text, policy, site)
    }

    /// Whether `text` passes the gate of `kind`.
    pub(super) fn passes(&self, kind: GateKind, text: &str) -> bool {
        match kind {
            GateKind::Text => self.scanner.is_candidate(text),
            GateKind::Json => self.scanner.is_json_candidate(text),
            GateKind::Walk => true,
        }
    }

    /// The `events` or `links` column of a span, once it passed the JSON gate.
    pub(super) fn redact_records_candidate(
        &self,
        text: &str,
        policy: &Policy,
        site: &mut Site<'_, '_>,
    ) -> Option<String> {
        match serde_json::from_str::<Value>(text) {
            Ok(mut value) => self
                .redact_json(&mut value, Scope::Records, policy, site)
                .then(|| value.to_json()),
            // Vigil wrote this column itself, so this does not happen; if it did, the text
            // is still redacted rather than stored as is.
            Err(_) => self.redact_field_candidate(text, policy, site),
        }
    }

    fn redact_json(
        &self,
        value: &mut Value,
        scope: Scope,
        policy: &Policy,
        site: &mut Site<'_, '_>,
    ) -> bool {
        match self.redact_value(value, scope, policy, site) {
            Change::None => false,
            Change::Changed => true,
            Change::Drop(entity) => {
                *value = Value::String(self.marker(entity).to_owned());
                true
            }
        }
    }

    fn redact_value(
        &self,
        value: &mut Value,
        scope: Scope,
        policy: &Policy,
        site: &mut Site<'_, '_>,
    ) -> Change {
        match value {
            Value::String(s) => {
                self.redact_if_candidate(s, policy, site)
                    .map_or(Change::None, |o| {
                        match o {
                            Outcome::Replaced(r) => *s = r,
                            Outcome::Drop(entity) => return Change::Drop(entity),
                        }
                        Change::Changed
                    })
            }
            Value::Number(n) => {
                let text = n.to_string();
                match self.redact_if_candidate(&text, policy, site) {
                    None => Change::None,
                    Some(Outcome::Replaced(r)) => {
                        *value = Value::String(r);
                        Change::Changed
                    }
                    Some(Outcome::Drop(entity)) => Change::Drop(entity),
                }
            }
            Value::Array(items) => {
                let inner = if scope == Scope::Records {
                    Scope::Records
                } else {
                    Scope::Plain
                };
                let mut changed = false;
                for item in items.iter_mut() {
                    changed |= self.redact_json(item, inner, policy, site);
                }
                if changed {
                    Change::Changed
                } else {
                    Change::None
                }
            }
            Value::Object(members) => {
                let mut changed = false;
                let old = std::mem::take(members);
                for (key, mut member) in old {
                    let decision = match scope {
                        Scope::Records => KeyDecision::Keep,
                        Scope::Plain => policy.keys.decide_deny_only(&key),
                        Scope::Attributes => policy.keys.decide(&key),
                    };
                    let inner = match (scope, key.as_str()) {
                        (Scope::Records, "attributes") => Scope::Attributes,
                        _ => Scope::Plain,
                    };
                    match decision {
                        KeyDecision::NotAllowed => {
                            site.record(NOT_ALLOWED);
                            changed = true;
                            continue;
                        }
                        KeyDecision::Deny if !is_blank(&member) => {
                            changed = true;
                            site.record(SENSITIVE_KEY);
                            let text = match &member {
                                Value::String(s) => s.clone(),
                                other => other.to_json(),
                            };
                            match self.key_replacement(policy, &text, site) {
                                Some(r) => member = Value::String(r),
                                None => continue,
                            }
                        }
                        KeyDecision::Deny | KeyDecision::Keep => {
                            match self.redact_value(&mut member, inner, policy, site) {
                                Change::None => {}
                                Change::Changed => changed = true,
                                Change::Drop(_) => {
                                    changed = true;
                                    continue;
                                }
                            }
                        }
                    }
                    members.push((key, member));
                }
                if changed {
                    Change::Changed
                } else {
                    Change::None
                }
            }
            Value::Bool(_) | Value::Null => Change::None,
        }
    }
}

fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// JSON as parsed, with object members in document order (and duplicates kept), so a
/// redacted body differs from the original only where something was replaced.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    fn to_json(&self) -> String {
        // Serialising strings, numbers and containers to a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => n.serialize(s),
            Value::String(v) => s.serialize_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            members.push((k, v));
        }
        Ok(Value::Object(members))
    }
}
