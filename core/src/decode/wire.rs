//! Protobuf wire format read in place: the fields of a message as borrowed slices, and the
//! OTLP common messages (`KeyValue`, `AnyValue`) as views into the request body.
//!
//! Decoding a request with prost allocates a `String` or `Vec` for every key, value, body and
//! id, only for the Arrow builders to copy them once more and drop them. Reading the wire
//! format directly lets the builders copy straight out of the request body.
//!
//! This reader takes the canonical encoding every protobuf encoder writes: each singular field
//! at most once, no groups. Anything else (a repeated singular message, which protobuf merges;
//! a group; or input it cannot parse) is a [`WireError`], and the caller hands the body to
//! prost instead, which either decodes it or says exactly what is wrong with it. So prost stays
//! the judge of what a valid request is, and this reader is only the fast path.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use prost::Message;

/// This reader does not take the input; prost must decode it (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum WireError {
    #[error("not a valid protobuf encoding")]
    Malformed,
    #[error("a valid but not canonical protobuf encoding")]
    NotCanonical,
}

pub(super) type WireResult<T> = Result<T, WireError>;

/// The bytes of a protobuf `string` field, not yet checked to be UTF-8.
///
/// A request holds thousands of short strings (attribute keys and values, bodies), and checking
/// each on its own took about a fifth of decoding. A record's text goes into binary column
/// builders as it is read, and each column's bytes are checked in one pass when the column is
/// finished ([`super::columns::utf8`]). Text that is read but not stored (a replaced field, a
/// refused record, an attribute a later one with the same key replaces, the attributes of a
/// resource or scope) is checked too, as prost checks every string: on its own where it is
/// rare, in a column of unstored text otherwise. Text that is not UTF-8 makes the request
/// [`WireError::Malformed`], which hands it to prost, as a string checked on its own would.
pub(super) type Text<'a> = &'a [u8];

/// Checks text now (see [`Text`]).
pub(super) fn check_text(text: Text<'_>) -> WireResult<()> {
    std::str::from_utf8(text)
        .map(|_| ())
        .map_err(|_| WireError::Malformed)
}

/// Checks every key and string value of `attributes` now: for a resource's or scope's, which
/// are read once per group and may go unstored (a group without records, a replaced key).
pub(super) fn check_attributes(attributes: &[KeyValueRef<'_>]) -> WireResult<()> {
    attributes.iter().try_for_each(|kv| {
        check_text(kv.key)?;
        kv.value.as_text().map_or(Ok(()), check_text)
    })
}

/// Sets a `string` field, checking the text it replaces (see [`Text`]).
pub(super) fn replace_text<'a>(slot: &mut Text<'a>, text: Text<'a>) -> WireResult<()> {
    check_text(slot)?;
    *slot = text;
    Ok(())
}

/// One field's value as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Field<'a> {
    #[inline]
    pub(super) fn varint(self) -> WireResult<u64> {
        match self {
            Field::Varint(v) => Ok(v),
            _ => Err(WireError::Malformed),
        }
    }

    #[inline]
    pub(super) fn fixed64(self) -> WireResult<u64> {
        match self {
            Field::Fixed64(v) => Ok(v),
            _ => Err(WireError::Malformed),
        }
    }

    #[inline]
    pub(super) fn fixed32(self) -> WireResult<u32> {
        match self {
            Field::Fixed32(v) => Ok(v),
            _ => Err(WireError::Malformed),
        }
    }

    #[inline]
    pub(super) fn bytes(self) -> WireResult<&'a [u8]> {
        match self {
            Field::Bytes(v) => Ok(v),
            _ => Err(WireError::Malformed),
        }
    }

    /// A `string` field: UTF-8, as prost requires.
    #[inline]
    pub(super) fn string(self) -> WireResult<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError::Malformed)
    }

    /// A `string` field whose UTF-8 is checked later, with the rest of its column (see
    /// [`Text`]).
    #[inline]
    pub(super) fn text(self) -> WireResult<Text<'a>> {
        self.bytes()
    }

    /// An `int32` or enum field: the low 32 bits of the varint, as prost reads it.
    #[inline]
    pub(super) fn int32(self) -> WireResult<i32> {
        Ok(self.varint()? as i32)
    }

    /// A `uint32` field: the low 32 bits of the varint, as prost reads it.
    #[inline]
    pub(super) fn uint32(self) -> WireResult<u32> {
        Ok(self.varint()? as u32)
    }
}

/// The fields of one message, in wire order.
#[derive(Debug, Clone)]
pub(super) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(super) fn new(message: &'a [u8]) -> Self {
        Self { rest: message }
    }

    #[inline]
    fn take(&mut self, n: usize) -> WireResult<&'a [u8]> {
        if n > self.rest.len() {
            return Err(WireError::Malformed);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    /// A base-128 varint of at most ten bytes whose tenth byte is 0 or 1, as prost reads it.
    #[inline]
    fn varint(&mut self) -> WireResult<u64> {
        // Tags, lengths of short strings and small numbers: one byte.
        if let Some((&byte, rest)) = self.rest.split_first()
            && byte < 0x80
        {
            self.rest = rest;
            return Ok(u64::from(byte));
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> WireResult<u64> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == 9 && byte > 1 {
                    return Err(WireError::Malformed);
                }
                self.rest = self.rest.get(i + 1..).unwrap_or_default();
                return Ok(value);
            }
        }
        Err(WireError::Malformed)
    }

    /// The next field number and value, or `None` at the end of the message.
    #[inline]
    pub(super) fn next_field(&mut self) -> WireResult<Option<(u32, Field<'a>)>> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| WireError::Malformed)?;
        if number == 0 || number > MAX_FIELD_NUMBER {
            return Err(WireError::Malformed);
        }
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(array(self.take(8)?)?)),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Malformed)?;
                Field::Bytes(self.take(len)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(array(self.take(4)?)?)),
            // Groups are valid protobuf that no OTLP encoder writes: prost skips them.
            3 | 4 => return Err(WireError::NotCanonical),
            _ => return Err(WireError::Malformed),
        };
        Ok(Some((number, field)))
    }
}

/// Largest field number protobuf allows.
const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

fn array<const N: usize>(bytes: &[u8]) -> WireResult<[u8; N]> {
    bytes.try_into().map_err(|_| WireError::Malformed)
}

/// Most levels of messages an array or list value may nest, counting each `ArrayValue`,
/// `KeyValueList`, `KeyValue` and `AnyValue`. prost allows 100 levels counted from the request
/// message; a value sits at most 8 levels below it, so values decoded here on their own are
/// held to less than what prost allows in the request. Deeper ones are left to prost.
const MAX_NESTING: usize = 90;

/// An array or list value, if it nests no deeper than [`MAX_NESTING`].
fn nested(value: Value) -> WireResult<ValueRef<'static>> {
    /// Message levels below `value`, `None` past `limit`.
    fn depth(value: &Value, limit: usize) -> Option<usize> {
        let (levels, children): (usize, Vec<&AnyValue>) = match value {
            Value::ArrayValue(array) => (2, array.values.iter().collect()),
            Value::KvlistValue(list) => (
                3,
                list.values
                    .iter()
                    .filter_map(|kv| kv.value.as_ref())
                    .collect(),
            ),
            _ => return Some(0),
        };
        let limit = limit.checked_sub(levels)?;
        let mut deepest = 0;
        for child in children.iter().filter_map(|v| v.value.as_ref()) {
            deepest = deepest.max(depth(child, limit)?);
        }
        Some(deepest + levels)
    }
    match depth(&value, MAX_NESTING) {
        Some(_) => Ok(ValueRef::Nested(value)),
        None => Err(WireError::NotCanonical),
    }
}

/// Sets a singular field once; a second occurrence is valid protobuf (merged or replaced) that
/// this reader leaves to prost.
pub(super) fn set_once<T>(slot: &mut Option<T>, value: T) -> WireResult<()> {
    if slot.is_some() {
        return Err(WireError::NotCanonical);
    }
    *slot = Some(value);
    Ok(())
}

/// An `AnyValue` read in place. Arrays and key-value lists, rare in attributes and bodies, are
/// decoded by prost and rendered by the same code as prost-decoded values.
///
/// Equality compares doubles by their bits, so that a NaN read twice is the same value.
#[derive(Debug, Clone)]
pub(super) enum ValueRef<'a> {
    /// No value set, or a `string_value_strindex` (profiles only).
    Empty,
    Str(Text<'a>),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Nested(Value),
}

impl<'a> ValueRef<'a> {
    /// Reads an `AnyValue` message. As in prost, the last member of the `oneof` on the wire wins.
    pub(super) fn read(message: &'a [u8]) -> WireResult<Self> {
        let mut value = ValueRef::Empty;
        let mut fields = Fields::new(message);
        while let Some((number, field)) = fields.next_field()? {
            if let ValueRef::Str(replaced) = value
                && matches!(number, 1..=8)
            {
                check_text(replaced)?;
            }
            value = match number {
                1 => ValueRef::Str(field.text()?),
                2 => ValueRef::Bool(field.varint()? != 0),
                3 => ValueRef::Int(field.varint()? as i64),
                4 => ValueRef::Double(f64::from_bits(field.fixed64()?)),
                // prost merges a repeated message member into the one before it.
                5 | 6 if matches!(value, ValueRef::Nested(_)) => {
                    return Err(WireError::NotCanonical);
                }
                5 => nested(Value::ArrayValue(
                    ArrayValue::decode(field.bytes()?).map_err(|_| WireError::Malformed)?,
                ))?,
                6 => nested(Value::KvlistValue(
                    KeyValueList::decode(field.bytes()?).map_err(|_| WireError::Malformed)?,
                ))?,
                7 => ValueRef::Bytes(field.bytes()?),
                8 => {
                    field.int32()?;
                    ValueRef::Empty
                }
                _ => continue,
            };
        }
        Ok(value)
    }

    /// The value of a prost-decoded `AnyValue`, borrowed.
    pub(super) fn of(value: Option<&'a AnyValue>) -> Self {
        match value.and_then(|v| v.value.as_ref()) {
            None | Some(Value::StringValueStrindex(_)) => ValueRef::Empty,
            Some(Value::StringValue(s)) => ValueRef::Str(s.as_bytes()),
            Some(Value::BoolValue(b)) => ValueRef::Bool(*b),
            Some(Value::IntValue(i)) => ValueRef::Int(*i),
            Some(Value::DoubleValue(d)) => ValueRef::Double(*d),
            Some(Value::BytesValue(b)) => ValueRef::Bytes(b),
            Some(nested @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => {
                ValueRef::Nested(nested.clone())
            }
        }
    }

    /// The text, if this is a string value.
    pub(super) fn as_text(&self) -> Option<Text<'a>> {
        match self {
            ValueRef::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl PartialEq for ValueRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ValueRef::Double(a), ValueRef::Double(b)) => a.to_bits() == b.to_bits(),
            (ValueRef::Empty, ValueRef::Empty) => true,
            (ValueRef::Str(a), ValueRef::Str(b)) => a == b,
            (ValueRef::Bool(a), ValueRef::Bool(b)) => a == b,
            (ValueRef::Int(a), ValueRef::Int(b)) => a == b,
            (ValueRef::Bytes(a), ValueRef::Bytes(b)) => a == b,
            (ValueRef::Nested(a), ValueRef::Nested(b)) => a == b,
            _ => false,
        }
    }
}

/// A `KeyValue` read in place.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct KeyValueRef<'a> {
    pub(super) key: Text<'a>,
    pub(super) value: ValueRef<'a>,
}

impl<'a> KeyValueRef<'a> {
    pub(super) fn read(message: &'a [u8]) -> WireResult<Self> {
        let (mut key, mut value) = (&[][..], None);
        let mut fields = Fields::new(message);
        while let Some((number, field)) = fields.next_field()? {
            match number {
                1 => replace_text(&mut key, field.text()?)?,
                2 => set_once(&mut value, ValueRef::read(field.bytes()?)?)?,
                3 => {
                    field.int32()?;
                }
                _ => {}
            }
        }
        Ok(Self {
            key,
            value: value.unwrap_or(ValueRef::Empty),
        })
    }

    /// A prost-decoded `KeyValue`, borrowed.
    pub(super) fn of(kv: &'a KeyValue) -> Self {
        Self {
            key: kv.key.as_bytes(),
            value: ValueRef::of(kv.value.as_ref()),
        }
    }
}

/// Appends the `KeyValue` in `message` to `out`.
pub(super) fn read_attribute<'a>(
    out: &mut Vec<KeyValueRef<'a>>,
    message: &'a [u8],
) -> WireResult<()> {
    out.push(KeyValueRef::read(message)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn anyv(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    #[test]
    fn varints_are_read_as_prost_reads_them() {
        let read = |bytes: &[u8]| Fields::new(bytes).varint();
        assert_eq!(read(&[0x00]), Ok(0));
        assert_eq!(read(&[0x96, 0x01]), Ok(150));
        assert_eq!(
            read(&[0xff; 9].iter().copied().chain([0x01]).collect::<Vec<_>>()),
            Ok(u64::MAX)
        );
        // A tenth byte above 1 overflows 64 bits; eleven bytes never end.
        assert_eq!(
            read(&[0xff; 9].iter().copied().chain([0x02]).collect::<Vec<_>>()),
            Err(WireError::Malformed)
        );
        assert_eq!(read(&[0x80; 11]), Err(WireError::Malformed));
        assert_eq!(read(&[0x80]), Err(WireError::Malformed));
    }

    #[test]
    fn fields_reject_bad_keys_and_truncation() {
        fn next(bytes: &[u8]) -> WireResult<Option<(u32, Field<'_>)>> {
            Fields::new(bytes).next_field()
        }
        assert_eq!(next(&[]), Ok(None));
        // Field number 0, wire types 6 and 7, a length past the end, a short fixed64.
        assert_eq!(next(&[0x00, 0x00]), Err(WireError::Malformed));
        assert_eq!(next(&[0x0e]), Err(WireError::Malformed));
        assert_eq!(next(&[0x0f]), Err(WireError::Malformed));
        assert_eq!(next(&[0x0a, 0x05, b'a']), Err(WireError::Malformed));
        assert_eq!(next(&[0x09, 1, 2, 3]), Err(WireError::Malformed));
        // A group is left to prost.
        assert_eq!(next(&[0x0b, 0x0c]), Err(WireError::NotCanonical));
        assert_eq!(next(&[0x0a, 0x01, b'a']), Ok(Some((1, Field::Bytes(b"a")))));
    }

    #[test]
    fn values_read_in_place_match_prost() {
        let values = [
            Value::StringValue("héllo".into()),
            Value::BoolValue(true),
            Value::BoolValue(false),
            Value::IntValue(-7),
            Value::DoubleValue(-0.5),
            Value::BytesValue(vec![0, 1, 255]),
            Value::StringValueStrindex(3),
            Value::ArrayValue(ArrayValue {
                values: vec![anyv(Value::IntValue(1))],
            }),
            Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(anyv(Value::StringValue("v".into()))),
                    key_strindex: 0,
                }],
            }),
        ];
        for value in values {
            let message = anyv(value).encode_to_vec();
            let prost = AnyValue::decode(message.as_slice()).unwrap();
            assert_eq!(ValueRef::read(&message), Ok(ValueRef::of(Some(&prost))));
        }
        assert_eq!(ValueRef::read(&[]), Ok(ValueRef::Empty));
        // A string's UTF-8 is checked with its column (`columns::utf8`), not here.
        assert_eq!(
            ValueRef::read(&[0x0a, 0x01, 0xff]),
            Ok(ValueRef::Str(&[0xff]))
        );
        // Two members of the oneof: the last one wins, as in prost.
        let mut two = anyv(Value::IntValue(1)).encode_to_vec();
        two.extend(anyv(Value::StringValue("x".into())).encode_to_vec());
        let prost = AnyValue::decode(two.as_slice()).unwrap();
        assert_eq!(ValueRef::read(&two), Ok(ValueRef::of(Some(&prost))));
    }

    #[test]
    fn deeply_nested_values_are_left_to_prost() {
        let mut value = anyv(Value::IntValue(1));
        // 44 arrays: 88 levels of messages.
        for _ in 0..44 {
            value = anyv(Value::ArrayValue(ArrayValue {
                values: vec![value],
            }));
        }
        assert!(matches!(
            ValueRef::read(&value.encode_to_vec()),
            Ok(ValueRef::Nested(_))
        ));
        let deeper = anyv(Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "k".into(),
                value: Some(value),
                key_strindex: 0,
            }],
        }));
        assert_eq!(
            ValueRef::read(&deeper.encode_to_vec()),
            Err(WireError::NotCanonical)
        );
    }

    #[test]
    fn a_key_value_with_two_values_is_left_to_prost() {
        let kv = KeyValue {
            key: "k".into(),
            value: Some(anyv(Value::IntValue(1))),
            key_strindex: 0,
        };
        let mut twice = kv.encode_to_vec();
        // Field 2 again: an AnyValue holding int_value 2.
        twice.extend([0x12, 0x02, 0x18, 0x02]);
        assert_eq!(KeyValueRef::read(&twice), Err(WireError::NotCanonical));
        assert!(KeyValue::decode(twice.as_slice()).is_ok());
    }

    proptest! {
        /// Whatever the bytes, the reader never panics, and what it takes prost takes too,
        /// with the same key and value.
        #[test]
        fn what_the_reader_takes_prost_reads_the_same(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(view) = KeyValueRef::read(&bytes) {
                let kv = KeyValue::decode(bytes.as_slice()).expect("prost takes it too");
                // Debug forms, so that a NaN nested in an array equals itself.
                prop_assert_eq!(format!("{view:?}"), format!("{:?}", KeyValueRef::of(&kv)));
            }
        }
    }
}
