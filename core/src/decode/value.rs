//! String and JSON forms of OTLP values: what an attribute becomes in a `map<string,string>`
//! column, what a non-string log body becomes, and the small text helpers the decoders share.

use std::collections::HashMap;
use std::fmt::{self, Write};
use std::io::Write as _;

use arrow::array::{BinaryBuilder, StringBuilder};
use arrow::error::ArrowError;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

use super::wire::ValueRef;

/// Lists up to this long are de-duplicated by comparing keys pairwise; longer ones use a map.
const PAIRWISE_DEDUP_MAX: usize = 12;

/// String form of an attribute value as stored in the map columns (None for an empty AnyValue).
///
/// Strings are kept as is, booleans are `true`/`false`, integers decimal, doubles as serde_json
/// prints them (`NaN`, `inf`, `-inf` when not finite), bytes standard padded base64, arrays and
/// key-value lists compact JSON. A `string_value_strindex` (a profiles-only reference into a
/// string table that logs and traces do not have) counts as empty.
pub fn any_value_to_string(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::StringValueStrindex(_) => None,
        other => {
            let mut out = String::new();
            // Writing into a `String` cannot fail.
            write_string_form(&mut out, other).ok()?;
            Some(out)
        }
    }
}

/// Appends the string form of `value` to `builder`, or a null for an empty value.
pub(super) fn append_string_form(
    builder: &mut BinaryBuilder,
    value: &ValueRef<'_>,
) -> Result<(), ArrowError> {
    match value {
        ValueRef::Empty => builder.append_null(),
        ValueRef::Str(s) => builder.append_value(s),
        ValueRef::Bool(b) => builder.append_value(if *b { "true" } else { "false" }),
        other => {
            with_value(other, |v| write_string_form(&mut TextWriter(builder), v))
                .map_err(fmt_error)?;
            builder.append_value("");
        }
    }
    Ok(())
}

/// Appends a log body: a string body as is, any other value as compact JSON, null when empty.
pub(super) fn append_body(
    builder: &mut BinaryBuilder,
    body: &ValueRef<'_>,
) -> Result<(), ArrowError> {
    match body {
        ValueRef::Empty => builder.append_null(),
        ValueRef::Str(s) => builder.append_value(s),
        other => {
            with_value(other, |v| {
                write_json_value(&mut TextWriter(builder), Some(v))
            })
            .map_err(fmt_error)?;
            builder.append_value("");
        }
    }
    Ok(())
}

/// Text written into a binary builder's next value (which `append_value("")` then ends).
struct TextWriter<'b>(&'b mut BinaryBuilder);

impl Write for TextWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_all(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Calls `f` with `value` as a prost value: numbers and nested values without allocating, the
/// rarer strings and bytes copied. The string forms and JSON are written by one set of functions.
fn with_value(value: &ValueRef<'_>, f: impl FnOnce(&Value) -> fmt::Result) -> fmt::Result {
    match value {
        ValueRef::Nested(v) => f(v),
        ValueRef::Int(i) => f(&Value::IntValue(*i)),
        ValueRef::Double(d) => f(&Value::DoubleValue(*d)),
        ValueRef::Bool(b) => f(&Value::BoolValue(*b)),
        ValueRef::Str(s) => {
            let s = std::str::from_utf8(s).map_err(|_| fmt::Error)?;
            f(&Value::StringValue(s.to_owned()))
        }
        ValueRef::Bytes(b) => f(&Value::BytesValue(b.to_vec())),
        ValueRef::Empty => f(&Value::StringValueStrindex(0)),
    }
}

/// Writes the string form of a non-empty value (see [`any_value_to_string`]).
fn write_string_form<W: Write>(w: &mut W, value: &Value) -> fmt::Result {
    match value {
        Value::StringValue(s) => w.write_str(s),
        Value::StringValueStrindex(_) => Ok(()),
        Value::BoolValue(b) => w.write_str(if *b { "true" } else { "false" }),
        Value::IntValue(i) => write!(w, "{i}"),
        Value::DoubleValue(d) => match serde_json::Number::from_f64(*d) {
            Some(n) => write!(w, "{n}"),
            None => w.write_str(non_finite_name(*d)),
        },
        Value::BytesValue(b) => write!(w, "{}", Base64Display::new(b, &STANDARD)),
        Value::ArrayValue(_) | Value::KvlistValue(_) => write_json_value(w, Some(value)),
    }
}

/// `NaN`, `inf` or `-inf`.
fn non_finite_name(d: f64) -> &'static str {
    if d.is_nan() {
        "NaN"
    } else if d.is_sign_positive() {
        "inf"
    } else {
        "-inf"
    }
}

/// Writes a value as compact JSON with native JSON types. Empty values are `null`, bytes a
/// base64 string, non-finite doubles the strings `"NaN"`, `"inf"`, `"-inf"` (JSON has no
/// number for them), key-value lists objects whose duplicate keys keep the last value.
pub(super) fn write_json_value<W: Write>(w: &mut W, value: Option<&Value>) -> fmt::Result {
    match value {
        None | Some(Value::StringValueStrindex(_)) => w.write_str("null"),
        Some(Value::StringValue(s)) => write_json_str(w, s),
        Some(Value::BoolValue(b)) => w.write_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => write!(w, "{i}"),
        Some(Value::DoubleValue(d)) => match serde_json::Number::from_f64(*d) {
            Some(n) => write!(w, "{n}"),
            None => {
                w.write_str("\"")?;
                w.write_str(non_finite_name(*d))?;
                w.write_str("\"")
            }
        },
        Some(Value::BytesValue(b)) => write!(w, "\"{}\"", Base64Display::new(b, &STANDARD)),
        Some(Value::ArrayValue(array)) => {
            w.write_str("[")?;
            for (i, item) in array.values.iter().enumerate() {
                if i > 0 {
                    w.write_str(",")?;
                }
                write_json_value(w, item.value.as_ref())?;
            }
            w.write_str("]")
        }
        Some(Value::KvlistValue(list)) => write_json_object(w, &list.values, write_json_value),
    }
}

/// Writes attributes as a JSON object of string forms (the JSON twin of a map column):
/// `{"key":"string form", "empty":null}`, duplicate keys keeping the last value.
pub(super) fn write_json_string_map<W: Write>(w: &mut W, attributes: &[KeyValue]) -> fmt::Result {
    write_json_object(w, attributes, |w, value| match value {
        None | Some(Value::StringValueStrindex(_)) => w.write_str("null"),
        Some(Value::StringValue(s)) => write_json_str(w, s),
        Some(other) => {
            // The string form of arrays and lists is JSON, so it has to go through a buffer
            // to be escaped; everything else is escape-free and is quoted in place.
            if matches!(other, Value::ArrayValue(_) | Value::KvlistValue(_)) {
                let mut form = String::new();
                write_string_form(&mut form, other)?;
                write_json_str(w, &form)
            } else {
                w.write_str("\"")?;
                write_string_form(w, other)?;
                w.write_str("\"")
            }
        }
    })
}

fn write_json_object<W: Write>(
    w: &mut W,
    entries: &[KeyValue],
    mut write_value: impl FnMut(&mut W, Option<&Value>) -> fmt::Result,
) -> fmt::Result {
    w.write_str("{")?;
    let mut first = true;
    for_each_last(entries, |kv| {
        if !first {
            w.write_str(",")?;
        }
        first = false;
        write_json_str(w, &kv.key)?;
        w.write_str(":")?;
        write_value(w, kv.value.as_ref().and_then(|v| v.value.as_ref()))
    })?;
    w.write_str("}")
}

/// Writes `s` as a JSON string literal, escaped exactly as serde_json escapes it.
pub(super) fn write_json_str<W: Write>(w: &mut W, s: &str) -> fmt::Result {
    w.write_str("\"")?;
    let mut start = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `start..i` always lies on character boundaries.
        if let Some(run) = s.get(start..i) {
            w.write_str(run)?;
        }
        if escape.is_empty() {
            write!(w, "\\u{byte:04x}")?;
        } else {
            w.write_str(escape)?;
        }
        start = i + 1;
    }
    if let Some(rest) = s.get(start..) {
        w.write_str(rest)?;
    }
    w.write_str("\"")
}

/// Calls `f` on each entry whose key does not occur again later in `entries`, in order:
/// for duplicate keys the last one wins, so the keys passed to `f` are unique.
pub(super) fn for_each_last<'a, T: Keyed, E>(
    entries: &'a [T],
    f: impl FnMut(&'a T) -> Result<(), E>,
) -> Result<(), E> {
    for_each_last_and_dropped(entries, f, |_| {})
}

/// [`for_each_last`], and `dropped` on each entry a later one with the same key replaces.
pub(super) fn for_each_last_and_dropped<'a, T: Keyed, E>(
    entries: &'a [T],
    mut f: impl FnMut(&'a T) -> Result<(), E>,
    mut dropped: impl FnMut(&'a T),
) -> Result<(), E> {
    if entries.len() <= PAIRWISE_DEDUP_MAX {
        for (i, kv) in entries.iter().enumerate() {
            if entries
                .iter()
                .skip(i + 1)
                .any(|later| later.key() == kv.key())
            {
                dropped(kv);
            } else {
                f(kv)?;
            }
        }
    } else {
        let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(entries.len());
        for (i, kv) in entries.iter().enumerate() {
            last.insert(kv.key(), i);
        }
        for (i, kv) in entries.iter().enumerate() {
            if last.get(kv.key()) == Some(&i) {
                f(kv)?;
            } else {
                dropped(kv);
            }
        }
    }
    Ok(())
}

/// An attribute's key, whether prost decoded it or it was read in place.
pub(super) trait Keyed {
    fn key(&self) -> &[u8];
}

impl Keyed for KeyValue {
    fn key(&self) -> &[u8] {
        self.key.as_bytes()
    }
}

impl Keyed for super::wire::KeyValueRef<'_> {
    fn key(&self) -> &[u8] {
        self.key
    }
}

/// Lower-case hex digit of a nibble (0..16).
fn hex_digit(nibble: u8) -> u8 {
    if nibble < 10 {
        b'0' + nibble
    } else {
        b'a' - 10 + nibble
    }
}

/// Appends `bytes` (at most 16) as lower-case hex, without allocating.
pub(super) fn append_hex_id(builder: &mut StringBuilder, bytes: &[u8]) -> Result<(), ArrowError> {
    let mut buf = [[0u8; 2]; 16];
    let out = buf.get_mut(..bytes.len()).ok_or_else(|| {
        ArrowError::InvalidArgumentError(format!("id of {} bytes is too long", bytes.len()))
    })?;
    for (pair, &byte) in out.iter_mut().zip(bytes) {
        *pair = [hex_digit(byte >> 4), hex_digit(byte & 0x0f)];
    }
    builder.append_value(std::str::from_utf8(out.as_flattened())?);
    Ok(())
}

/// Writes `bytes` of any length as a quoted lower-case hex JSON string.
pub(super) fn write_json_hex<W: Write>(w: &mut W, bytes: &[u8]) -> fmt::Result {
    w.write_str("\"")?;
    for byte in bytes {
        write!(w, "{byte:02x}")?;
    }
    w.write_str("\"")
}

/// Writes nanoseconds since the Unix epoch as RFC 3339 UTC with nine fractional digits,
/// e.g. `2018-12-13T14:51:00.300000000Z`.
pub(super) fn write_rfc3339_nanos<W: Write>(w: &mut W, unix_nanos: u64) -> fmt::Result {
    let secs = unix_nanos / 1_000_000_000;
    let second_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(secs / 86_400);
    // u64 nanoseconds end in 2554, so the year always has four digits.
    let [y0, y1, y2, y3] = ascii_digits(year);
    let [mo0, mo1] = ascii_digits(month);
    let [d0, d1] = ascii_digits(day);
    let [h0, h1] = ascii_digits(second_of_day / 3600);
    let [mi0, mi1] = ascii_digits(second_of_day / 60 % 60);
    let [s0, s1] = ascii_digits(second_of_day % 60);
    let [n0, n1, n2, n3, n4, n5, n6, n7, n8] = ascii_digits(unix_nanos % 1_000_000_000);
    let text = [
        y0, y1, y2, y3, b'-', mo0, mo1, b'-', d0, d1, b'T', h0, h1, b':', mi0, mi1, b':', s0, s1,
        b'.', n0, n1, n2, n3, n4, n5, n6, n7, n8, b'Z',
    ];
    w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
}

/// The last `N` decimal digits of `value`, zero-padded, as ASCII.
fn ascii_digits<const N: usize>(mut value: u64) -> [u8; N] {
    let mut out = [b'0'; N];
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for non-negative days only).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Formatting into Arrow string builders and `String`s cannot fail; if it ever did, it is an
/// internal error of the batch being built.
pub(super) fn fmt_error(e: fmt::Error) -> ArrowError {
    ArrowError::ExternalError(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn v(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }
    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(v(value)),
            key_strindex: 0,
        }
    }
    fn s(x: &str) -> Value {
        Value::StringValue(x.into())
    }
    fn form(value: Value) -> Option<String> {
        any_value_to_string(&v(value))
    }

    #[test]
    fn string_form_of_scalars() {
        assert_eq!(form(s("héllo \"x\"")).as_deref(), Some("héllo \"x\""));
        assert_eq!(form(s("")).as_deref(), Some(""));
        assert_eq!(form(Value::BoolValue(true)).as_deref(), Some("true"));
        assert_eq!(form(Value::BoolValue(false)).as_deref(), Some("false"));
        assert_eq!(form(Value::IntValue(-42)).as_deref(), Some("-42"));
        assert_eq!(
            form(Value::IntValue(i64::MIN)).as_deref(),
            Some("-9223372036854775808")
        );
        assert_eq!(
            form(Value::BytesValue(vec![0xde, 0xad, 0xbe, 0xef])).as_deref(),
            Some("3q2+7w==")
        );
        assert_eq!(form(Value::BytesValue(vec![])).as_deref(), Some(""));
        assert_eq!(any_value_to_string(&AnyValue { value: None }), None);
        assert_eq!(form(Value::StringValueStrindex(3)), None);
    }

    #[test]
    fn double_string_form_matches_serde_json() {
        for d in [
            0.0,
            -0.0,
            1.0,
            1.5,
            637.704,
            1e20,
            1e21,
            1.5e-7,
            f64::MAX,
            f64::MIN_POSITIVE,
            -3.25,
        ] {
            assert_eq!(
                form(Value::DoubleValue(d)),
                Some(serde_json::to_string(&d).unwrap()),
                "{d}"
            );
        }
        assert_eq!(form(Value::DoubleValue(1.0)).as_deref(), Some("1.0"));
        assert_eq!(form(Value::DoubleValue(f64::NAN)).as_deref(), Some("NaN"));
        assert_eq!(
            form(Value::DoubleValue(f64::INFINITY)).as_deref(),
            Some("inf")
        );
        assert_eq!(
            form(Value::DoubleValue(f64::NEG_INFINITY)).as_deref(),
            Some("-inf")
        );
    }

    #[test]
    fn array_and_kvlist_are_compact_json_with_native_types() {
        let array = Value::ArrayValue(ArrayValue {
            values: vec![
                v(s("a\"b\n")),
                v(Value::IntValue(7)),
                v(Value::DoubleValue(2.5)),
                v(Value::DoubleValue(f64::NAN)),
                v(Value::BoolValue(false)),
                v(Value::BytesValue(b"hi".to_vec())),
                AnyValue { value: None },
                v(Value::ArrayValue(ArrayValue { values: vec![] })),
            ],
        });
        assert_eq!(
            form(array).as_deref(),
            Some(r#"["a\"b\n",7,2.5,"NaN",false,"aGk=",null,[]]"#)
        );
        let list = Value::KvlistValue(KeyValueList {
            values: vec![
                kv("k", s("first")),
                kv(
                    "n",
                    Value::KvlistValue(KeyValueList {
                        values: vec![kv("x", Value::IntValue(1))],
                    }),
                ),
                KeyValue {
                    key: "e".into(),
                    value: None,
                    key_strindex: 0,
                },
                kv("k", s("last")),
            ],
        });
        let text = form(list).unwrap();
        assert_eq!(text, r#"{"n":{"x":1},"e":null,"k":"last"}"#);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["k"], "last");
    }

    #[test]
    fn json_strings_are_escaped_like_serde_json() {
        let nasty = "q\"b\\s/\u{0}\u{1f}\u{7f}\u{8}\u{c}\t\r\né€😀";
        let mut out = String::new();
        write_json_str(&mut out, nasty).unwrap();
        assert_eq!(out, serde_json::to_string(nasty).unwrap());
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_short_and_long_lists() {
        for len in [3usize, PAIRWISE_DEDUP_MAX + 5] {
            let mut entries: Vec<KeyValue> = (0..len)
                .map(|i| kv(&format!("k{i}"), Value::IntValue(i as i64)))
                .collect();
            entries.push(kv("k0", s("again")));
            let mut seen = Vec::new();
            for_each_last::<_, ()>(&entries, |kv| {
                seen.push(kv.key.clone());
                Ok(())
            })
            .unwrap();
            assert_eq!(seen.len(), len, "keys unique");
            assert_eq!(seen.last().map(String::as_str), Some("k0"));
        }
    }

    #[test]
    fn json_string_map_uses_string_forms() {
        let mut out = String::new();
        write_json_string_map(
            &mut out,
            &[
                kv("s", s("x")),
                kv("i", Value::IntValue(3)),
                kv("d", Value::DoubleValue(f64::NEG_INFINITY)),
                kv(
                    "a",
                    Value::ArrayValue(ArrayValue {
                        values: vec![v(s("q"))],
                    }),
                ),
                KeyValue {
                    key: "e".into(),
                    value: Some(AnyValue { value: None }),
                    key_strindex: 0,
                },
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"s":"x","i":"3","d":"-inf","a":"[\"q\"]","e":null}"#
        );
    }

    #[test]
    fn rfc3339_with_nanoseconds() {
        let mut out = String::new();
        write_rfc3339_nanos(&mut out, 1_544_712_660_300_000_000).unwrap();
        assert_eq!(out, "2018-12-13T14:51:00.300000000Z");
        for (nanos, want) in [
            (0, "1970-01-01T00:00:00.000000000Z"),
            (951_782_400_000_000_001, "2000-02-29T00:00:00.000000001Z"),
            (u64::MAX, "2554-07-21T23:34:33.709551615Z"),
        ] {
            out.clear();
            write_rfc3339_nanos(&mut out, nanos).unwrap();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn hex_ids_are_lower_case() {
        let mut b = StringBuilder::new();
        append_hex_id(&mut b, &[0xAB, 0x01, 0xff]).unwrap();
        append_hex_id(&mut b, &[]).unwrap();
        assert!(append_hex_id(&mut b, &[0; 17]).is_err());
        let a = b.finish();
        assert_eq!(a.value(0), "ab01ff");
        assert_eq!(a.value(1), "");
        let mut out = String::new();
        write_json_hex(&mut out, &[0xAB; 20]).unwrap();
        assert_eq!(out.len(), 42);
    }
}
