//! Typed, per-row access to a redacted batch's columns: what every detector reads (time,
//! service, attributes) without each one re-checking Arrow downcasts.

use arrow::array::{
    Array, AsArray, Int32Array, Int64Array, MapArray, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use vigil_core::schema::col;
use vigil_core::{RedactedBatch, Signal};

/// The batch did not have the columns its signal's schema promises.
#[derive(Debug, thiserror::Error)]
#[error("{signal} batch has no usable `{column}` column")]
pub struct ViewError {
    pub signal: Signal,
    pub column: &'static str,
}

/// Read access to the rows of one telemetry batch.
pub struct BatchView<'a> {
    signal: Signal,
    records: &'a RecordBatch,
    time: &'a TimestampNanosecondArray,
    service: &'a StringArray,
    attributes: MapColumn<'a>,
    resource: MapColumn<'a>,
}

impl<'a> BatchView<'a> {
    /// Views a `logs` or `spans` batch.
    pub fn new(batch: &'a RedactedBatch) -> Result<Self, ViewError> {
        let (signal, records) = (batch.signal(), batch.records());
        let missing = |column| ViewError { signal, column };
        let time = records
            .column_by_name(col::TIME)
            .and_then(|c| c.as_primitive_opt())
            .ok_or_else(|| missing(col::TIME))?;
        let service = records
            .column_by_name(col::SERVICE)
            .and_then(|c| c.as_string_opt())
            .ok_or_else(|| missing(col::SERVICE))?;
        let attributes =
            MapColumn::new(records, col::ATTRIBUTES).ok_or_else(|| missing(col::ATTRIBUTES))?;
        let resource =
            MapColumn::new(records, col::RESOURCE).ok_or_else(|| missing(col::RESOURCE))?;
        Ok(Self {
            signal,
            records,
            time,
            service,
            attributes,
            resource,
        })
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }
    pub fn len(&self) -> usize {
        self.records.num_rows()
    }
    pub fn is_empty(&self) -> bool {
        self.records.num_rows() == 0
    }
    /// Event time (span start for spans), ns since the Unix epoch.
    pub fn time_ns(&self, row: usize) -> i64 {
        self.time.value(row)
    }
    pub fn service(&self, row: usize) -> &'a str {
        self.service.value(row)
    }
    /// A string column by name (`body`, `name`, `kind`, `status_code`, ...), `None` if the
    /// signal has no such column.
    pub fn str_column(&self, name: &str) -> Option<&'a StringArray> {
        self.records.column_by_name(name)?.as_string_opt()
    }
    /// The value of string column `name` in `row`; `None` when absent or null.
    pub fn str(&self, row: usize, name: &str) -> Option<&'a str> {
        let column = self.str_column(name)?;
        column.is_valid(row).then(|| column.value(row))
    }
    /// An integer column (`severity_number`, `duration_ns`) widened to i64.
    pub fn int(&self, row: usize, name: &str) -> Option<i64> {
        self.int_column(name)?.get(row)
    }
    /// An integer column by name, `None` if the signal has no such column. For per-row
    /// reads in a loop: the name is looked up once.
    pub fn int_column(&self, name: &str) -> Option<IntColumn<'a>> {
        let column = self.records.column_by_name(name)?.as_any();
        if let Some(c) = column.downcast_ref::<Int64Array>() {
            return Some(IntColumn::I64(c));
        }
        column.downcast_ref::<Int32Array>().map(IntColumn::I32)
    }
    /// `attributes[key]` of `row`.
    pub fn attribute(&self, row: usize, key: &str) -> Option<&'a str> {
        self.attributes.get(row, key)
    }
    /// `resource[key]` of `row`.
    pub fn resource(&self, row: usize, key: &str) -> Option<&'a str> {
        self.resource.get(row, key)
    }
    pub fn attributes(&self) -> &MapColumn<'a> {
        &self.attributes
    }
    pub fn resources(&self) -> &MapColumn<'a> {
        &self.resource
    }
    pub fn records(&self) -> &'a RecordBatch {
        self.records
    }
}

/// An `int32` or `int64` column, read as i64.
#[derive(Clone, Copy)]
pub enum IntColumn<'a> {
    I32(&'a Int32Array),
    I64(&'a Int64Array),
}

impl IntColumn<'_> {
    /// The value of `row`; `None` when null.
    pub fn get(self, row: usize) -> Option<i64> {
        match self {
            Self::I32(c) => c.is_valid(row).then(|| i64::from(c.value(row))),
            Self::I64(c) => c.is_valid(row).then(|| c.value(row)),
        }
    }
}

/// A `map<string,string>` column.
pub struct MapColumn<'a> {
    map: &'a MapArray,
    keys: &'a StringArray,
    values: &'a StringArray,
}

impl<'a> MapColumn<'a> {
    fn new(records: &'a RecordBatch, name: &str) -> Option<Self> {
        let map = records.column_by_name(name)?.as_map_opt()?;
        Some(Self {
            map,
            keys: map.keys().as_string_opt()?,
            values: map.values().as_string_opt()?,
        })
    }

    /// Entry positions of `row` in the flattened key/value arrays.
    pub(crate) fn range(&self, row: usize) -> std::ops::Range<usize> {
        let offsets = self.map.value_offsets();
        match (offsets.get(row), offsets.get(row + 1)) {
            (Some(&start), Some(&end)) => start as usize..end as usize,
            _ => 0..0,
        }
    }

    /// The flattened keys of every row.
    pub(crate) fn keys(&self) -> &'a StringArray {
        self.keys
    }

    /// The flattened values of every row, aligned with [`Self::keys`].
    pub(crate) fn values(&self) -> &'a StringArray {
        self.values
    }

    pub fn get(&self, row: usize, key: &str) -> Option<&'a str> {
        self.range(row)
            .find(|&i| self.keys.value(i) == key)
            .and_then(|i| self.values.is_valid(i).then(|| self.values.value(i)))
    }

    /// Every `(key, value)` of `row`; null values are skipped.
    pub fn entries(&self, row: usize) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.range(row)
            .filter(|&i| self.values.is_valid(i))
            .map(|i| (self.keys.value(i), self.values.value(i)))
    }
}
