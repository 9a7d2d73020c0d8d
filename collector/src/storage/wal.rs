//! The write-ahead log: one directory of numbered segment files per signal. A segment is a
//! header followed by frames; each frame is one group commit, holding an Arrow IPC stream.
//!
//! Frame layout: `len: u32 LE | crc32: u32 LE | payload[len]`. A torn or corrupt frame ends
//! the readable part of a segment: it was never acknowledged, because acks wait for the write.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

const MAGIC: &[u8; 8] = b"VIGILWAL";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 12;
const FRAME_HEADER_LEN: usize = 8;
/// A frame larger than this is treated as corruption, not allocated.
const MAX_FRAME_BYTES: u32 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal i/o on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode wal frame")]
    Encode(#[source] ArrowError),
    #[error("{path} is not a vigil wal segment (bad header)")]
    BadHeader { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// File name of segment `id`: zero-padded so lexical order is numeric order.
pub fn segment_file_name(id: u64) -> String {
    format!("{id:020}.wal")
}

/// Segment ids present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            out.push((id, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Encodes batches (all of `schema`) as one frame payload: a complete Arrow IPC stream.
pub fn encode_payload(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, WalError> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema).map_err(WalError::Encode)?;
    for b in batches {
        writer.write(b).map_err(WalError::Encode)?;
    }
    writer.into_inner().map_err(WalError::Encode)
}

/// An open segment being appended to.
pub struct SegmentWriter {
    id: u64,
    path: PathBuf,
    file: BufWriter<File>,
    bytes: u64,
}

impl SegmentWriter {
    /// Creates segment `id` in `dir` (which must exist) and makes its header durable.
    pub fn create(dir: &Path, id: u64) -> Result<Self, WalError> {
        let path = dir.join(segment_file_name(id));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.write_all(MAGIC).map_err(io_err(&path))?;
        file.write_all(&VERSION.to_le_bytes())
            .map_err(io_err(&path))?;
        file.flush().map_err(io_err(&path))?;
        file.get_ref().sync_all().map_err(io_err(&path))?;
        sync_dir(dir)?;
        Ok(Self {
            id,
            path,
            file,
            bytes: HEADER_LEN,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends one frame and hands it to the OS (not yet durable: see [`Self::sync`]).
    pub fn append(&mut self, payload: &[u8]) -> Result<(), WalError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_FRAME_BYTES)
            .ok_or_else(|| WalError::Io {
                path: self.path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "wal frame too large"),
            })?;
        let crc = crc32fast::hash(payload);
        let path = &self.path;
        self.file
            .write_all(&len.to_le_bytes())
            .map_err(io_err(path))?;
        self.file
            .write_all(&crc.to_le_bytes())
            .map_err(io_err(path))?;
        self.file.write_all(payload).map_err(io_err(path))?;
        self.file.flush().map_err(io_err(path))?;
        self.bytes += FRAME_HEADER_LEN as u64 + u64::from(len);
        Ok(())
    }

    /// Makes every appended frame durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.file.get_ref().sync_data().map_err(io_err(&self.path))
    }
}

/// fsyncs a directory so a created, renamed or removed entry survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// What replaying one segment found.
#[derive(Debug)]
pub struct Replayed {
    pub batches: Vec<RecordBatch>,
    /// Length of the valid prefix: header plus every intact frame.
    pub valid_len: u64,
    /// Bytes after the valid prefix (a torn last write, or corruption).
    pub discarded_bytes: u64,
}

/// Reads every intact frame of a segment. Stops at the first torn or corrupt frame.
pub fn read_segment(path: &Path) -> Result<Replayed, WalError> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    if data.len() < HEADER_LEN as usize {
        // A crash between creating the file and syncing its header: nothing in it was acked.
        return Ok(Replayed {
            batches: Vec::new(),
            valid_len: 0,
            discarded_bytes: data.len() as u64,
        });
    }
    let header_ok = data.get(..8) == Some(MAGIC.as_slice())
        && data.get(8..12).is_some_and(|v| v == VERSION.to_le_bytes());
    if !header_ok {
        return Err(WalError::BadHeader {
            path: path.to_owned(),
        });
    }
    let mut pos = HEADER_LEN as usize;
    let mut batches = Vec::new();
    while let Some(frame_header) = data.get(pos..pos + FRAME_HEADER_LEN) {
        let (len_bytes, crc_bytes) = frame_header.split_at(4);
        let len = u32::from_le_bytes(len_bytes.try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(crc_bytes.try_into().unwrap_or_default());
        if len > MAX_FRAME_BYTES {
            break;
        }
        let start = pos + FRAME_HEADER_LEN;
        let Some(payload) = data.get(start..start + len as usize) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match decode_payload(payload) {
            Ok(mut b) => batches.append(&mut b),
            Err(_) => break,
        }
        pos = start + len as usize;
    }
    Ok(Replayed {
        batches,
        valid_len: pos as u64,
        discarded_bytes: (data.len() - pos) as u64,
    })
}

fn decode_payload(payload: &[u8]) -> Result<Vec<RecordBatch>, ArrowError> {
    StreamReader::try_new(Cursor::new(payload), None)?.collect()
}

/// Cuts a segment back to its valid prefix so later appends never follow garbage.
pub fn truncate_segment(path: &Path, valid_len: u64) -> Result<(), WalError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    f.set_len(valid_len).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("v{i}")),
                )),
            ],
        )
        .unwrap()
    }

    #[test]
    fn frames_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 7).unwrap();
        let schema = batch(1).schema();
        w.append(&encode_payload(&schema, &[batch(3), batch(2)]).unwrap())
            .unwrap();
        w.append(&encode_payload(&schema, &[batch(5)]).unwrap())
            .unwrap();
        w.sync().unwrap();
        let r = read_segment(w.path()).unwrap();
        assert_eq!(
            r.batches
                .iter()
                .map(RecordBatch::num_rows)
                .collect::<Vec<_>>(),
            vec![3, 2, 5]
        );
        assert_eq!(r.discarded_bytes, 0);
        assert_eq!(r.valid_len, w.bytes());
        assert_eq!(
            list_segments(dir.path()).unwrap(),
            vec![(7, w.path().to_owned())]
        );
    }

    #[test]
    fn torn_tail_is_dropped_and_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 1).unwrap();
        let schema = batch(1).schema();
        w.append(&encode_payload(&schema, &[batch(4)]).unwrap())
            .unwrap();
        let good = w.bytes();
        w.append(&encode_payload(&schema, &[batch(9)]).unwrap())
            .unwrap();
        w.sync().unwrap();
        let path = w.path().to_owned();
        drop(w);
        // Simulate a crash mid-write: cut the second frame in half.
        let full = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(good + (full - good) / 2).unwrap();
        let r = read_segment(&path).unwrap();
        assert_eq!(r.batches.len(), 1);
        assert_eq!(r.batches[0].num_rows(), 4);
        assert_eq!(r.valid_len, good);
        truncate_segment(&path, r.valid_len).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    }

    #[test]
    fn corrupt_frame_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 1).unwrap();
        let schema = batch(1).schema();
        w.append(&encode_payload(&schema, &[batch(2)]).unwrap())
            .unwrap();
        let good = w.bytes();
        w.append(&encode_payload(&schema, &[batch(3)]).unwrap())
            .unwrap();
        w.sync().unwrap();
        let path = w.path().to_owned();
        drop(w);
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 3;
        data[last] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let r = read_segment(&path).unwrap();
        assert_eq!(r.batches.len(), 1);
        assert_eq!(r.valid_len, good);
    }

    #[test]
    fn foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(3));
        std::fs::write(&path, b"definitely not a wal segment").unwrap();
        assert!(matches!(
            read_segment(&path),
            Err(WalError::BadHeader { .. })
        ));
    }
}
