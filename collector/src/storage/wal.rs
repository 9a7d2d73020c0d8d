//! The write-ahead log: one directory of numbered segment files per signal. A segment is a
//! header followed by frames; each frame is one group commit, holding an Arrow IPC stream.
//!
//! Frame layout: `len: u32 LE | crc32: u32 LE | payload[len]`. A torn or corrupt frame ends
//! the readable part of a segment: it was never acknowledged, because acks wait for the write.
//!
//! Header: `VIGILWAL | version: u32 LE`. Version 1 segments hold plain payloads. Version 2
//! segments are encrypted: the header goes on with `segment id: u64 LE | key id length: u8 |
//! key id`, and each payload is sealed with that storage key (AES-256-GCM), bound to the
//! segment id and the frame's offset so frames cannot be moved within or between segments.
//! A frame whose checksum holds but whose seal does not open is never dropped as a torn
//! tail: it means a wrong key or tampering, and replay stops with an error.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use super::crypto::{CryptoError, KeySet};

const MAGIC: &[u8; 8] = b"VIGILWAL";
const VERSION_PLAIN: u32 = 1;
const VERSION_ENCRYPTED: u32 = 2;
/// Magic and version: the header of a plain segment, the start of an encrypted one's.
const HEADER_PREFIX_LEN: usize = 12;
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
    #[error("wal segment {path}")]
    Crypto {
        path: PathBuf,
        #[source]
        source: CryptoError,
    },
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

/// Room for an IPC stream's schema message and end marker, beyond its batches' buffers.
const STREAM_OVERHEAD: usize = 16 * 1024;

/// Encodes batches (all of `schema`) as one frame payload: a complete Arrow IPC stream.
pub fn encode_payload(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, WalError> {
    // The stream is about as long as the bytes the batches' arrays use (plus the schema and a
    // header per batch); allocated once at that size, it is not copied over and over as it
    // grows. Used bytes, not the buffers' capacities, which can be far larger.
    let used: usize = batches
        .iter()
        .flat_map(RecordBatch::columns)
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum();
    let out = Vec::with_capacity(used.saturating_add(STREAM_OVERHEAD));
    let mut writer = StreamWriter::try_new(out, schema).map_err(WalError::Encode)?;
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
    /// The keys in force when the segment was created; their active key seals every frame.
    keys: Option<Arc<KeySet>>,
}

impl SegmentWriter {
    /// Creates segment `id` in `dir` (which must exist) and makes its header durable. With
    /// `keys`, every frame is encrypted with their active key.
    pub fn create(dir: &Path, id: u64, keys: Option<Arc<KeySet>>) -> Result<Self, WalError> {
        let path = dir.join(segment_file_name(id));
        let header = header(id, keys.as_deref());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.write_all(&header).map_err(io_err(&path))?;
        file.flush().map_err(io_err(&path))?;
        file.get_ref().sync_all().map_err(io_err(&path))?;
        sync_dir(dir)?;
        Ok(Self {
            id,
            path,
            file,
            bytes: header.len() as u64,
            keys,
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
        let sealed;
        let payload = match &self.keys {
            Some(keys) => {
                sealed = keys
                    .active()
                    .seal(&frame_aad(self.id, self.bytes), payload)
                    .map_err(|source| WalError::Crypto {
                        path: self.path.clone(),
                        source,
                    })?;
                &sealed
            }
            None => payload,
        };
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
    crate::durable::sync_dir(dir).map_err(io_err(dir))
}

fn header(segment: u64, keys: Option<&KeySet>) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    match keys {
        None => header.extend_from_slice(&VERSION_PLAIN.to_le_bytes()),
        Some(keys) => {
            let key_id = keys.active().id().as_bytes();
            header.extend_from_slice(&VERSION_ENCRYPTED.to_le_bytes());
            header.extend_from_slice(&segment.to_le_bytes());
            // Key ids are at most 64 bytes (checked when the keyring is parsed).
            header.push(u8::try_from(key_id.len()).unwrap_or(u8::MAX));
            header.extend_from_slice(key_id);
        }
    }
    header
}

/// What a sealed frame is bound to: its segment and its offset in the segment.
fn frame_aad(segment: u64, offset: u64) -> [u8; 16] {
    let mut aad = [0u8; 16];
    aad[..8].copy_from_slice(&segment.to_le_bytes());
    aad[8..].copy_from_slice(&offset.to_le_bytes());
    aad
}

/// A parsed segment header.
enum Header<'a> {
    Plain,
    Encrypted {
        segment: u64,
        key_id: &'a str,
    },
    /// Shorter than a complete header: a crash before the header was synced.
    Incomplete,
}

fn parse_header<'a>(data: &'a [u8], path: &Path) -> Result<(Header<'a>, usize), WalError> {
    let bad = || WalError::BadHeader {
        path: path.to_owned(),
    };
    let Some((magic, rest)) = data.split_first_chunk::<8>() else {
        return Ok((Header::Incomplete, 0));
    };
    if magic != MAGIC {
        return Err(bad());
    }
    let Some((version, rest)) = rest.split_first_chunk::<4>() else {
        return Ok((Header::Incomplete, 0));
    };
    match u32::from_le_bytes(*version) {
        VERSION_PLAIN => Ok((Header::Plain, HEADER_PREFIX_LEN)),
        VERSION_ENCRYPTED => {
            let Some((segment, rest)) = rest.split_first_chunk::<8>() else {
                return Ok((Header::Incomplete, 0));
            };
            let Some((id_len, rest)) = rest.split_first() else {
                return Ok((Header::Incomplete, 0));
            };
            let Some(id) = rest.get(..usize::from(*id_len)) else {
                return Ok((Header::Incomplete, 0));
            };
            let segment = u64::from_le_bytes(*segment);
            let end = HEADER_PREFIX_LEN + 9 + id.len();
            let key_id = std::str::from_utf8(id).map_err(|_| bad())?;
            Ok((Header::Encrypted { segment, key_id }, end))
        }
        _ => Err(bad()),
    }
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

/// Reads every intact frame of a segment. Stops at the first torn or corrupt frame. An
/// encrypted segment needs its key in `keys`; without it this is an error, never data loss.
pub fn read_segment(path: &Path, keys: Option<&KeySet>) -> Result<Replayed, WalError> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    let crypto_err = |source| WalError::Crypto {
        path: path.to_owned(),
        source,
    };
    let (header, header_len) = parse_header(&data, path)?;
    let (key, segment) = match header {
        // A crash between creating the file and syncing its header: nothing in it was acked.
        Header::Incomplete => {
            return Ok(Replayed {
                batches: Vec::new(),
                valid_len: 0,
                discarded_bytes: data.len() as u64,
            });
        }
        Header::Plain => (None, 0),
        Header::Encrypted { segment, key_id } => {
            let key = keys.and_then(|k| k.get(key_id)).ok_or_else(|| {
                crypto_err(CryptoError::UnknownKey {
                    what: "it".into(),
                    id: key_id.to_owned(),
                })
            })?;
            (Some(key), segment)
        }
    };
    let mut pos = header_len;
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
        let opened;
        let payload = match key {
            Some(key) => {
                let what = format!("frame at offset {pos}");
                opened = key
                    .open(&frame_aad(segment, pos as u64), payload, &what)
                    .map_err(crypto_err)?;
                &opened
            }
            None => payload,
        };
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
        let mut w = SegmentWriter::create(dir.path(), 7, None).unwrap();
        let schema = batch(1).schema();
        w.append(&encode_payload(&schema, &[batch(3), batch(2)]).unwrap())
            .unwrap();
        w.append(&encode_payload(&schema, &[batch(5)]).unwrap())
            .unwrap();
        w.sync().unwrap();
        let r = read_segment(w.path(), None).unwrap();
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
        let mut w = SegmentWriter::create(dir.path(), 1, None).unwrap();
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
        let r = read_segment(&path, None).unwrap();
        assert_eq!(r.batches.len(), 1);
        assert_eq!(r.batches[0].num_rows(), 4);
        assert_eq!(r.valid_len, good);
        truncate_segment(&path, r.valid_len).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    }

    #[test]
    fn corrupt_frame_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 1, None).unwrap();
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
        let r = read_segment(&path, None).unwrap();
        assert_eq!(r.batches.len(), 1);
        assert_eq!(r.valid_len, good);
    }

    fn keys(text: &str) -> Arc<KeySet> {
        Arc::new(KeySet::parse(text).unwrap())
    }

    const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn encrypted_segments_hold_no_plaintext_and_need_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let old = keys(&format!("old:{K1}"));
        let mut w = SegmentWriter::create(dir.path(), 4, Some(old)).unwrap();
        let schema = batch(1).schema();
        w.append(&encode_payload(&schema, &[batch(40)]).unwrap())
            .unwrap();
        w.append(&encode_payload(&schema, &[batch(2)]).unwrap())
            .unwrap();
        w.sync().unwrap();
        let raw = std::fs::read(w.path()).unwrap();
        assert!(!raw.windows(3).any(|win| win == b"v39"), "value in clear");

        // Rotated keyring: the old key is still listed, so the old segment reads.
        let rotated = keys(&format!("new:{K2}\nold:{K1}"));
        let r = read_segment(w.path(), Some(&rotated)).unwrap();
        let rows: Vec<usize> = r.batches.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(rows, [40, 2]);
        assert_eq!((r.valid_len, r.discarded_bytes), (w.bytes(), 0));

        for missing in [None, Some(keys(&format!("new:{K2}")))] {
            let err = read_segment(w.path(), missing.as_deref()).unwrap_err();
            let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
            assert!(chain.contains("storage key `old`"), "{chain}");
        }
        // The same id with other key bytes is a failure, not a torn tail to cut off.
        let impostor = keys(&format!("old:{K2}"));
        assert!(matches!(
            read_segment(w.path(), Some(&impostor)),
            Err(WalError::Crypto {
                source: CryptoError::Tampered(_),
                ..
            })
        ));
    }

    #[test]
    fn moved_encrypted_frames_do_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let ring = keys(&format!("k:{K1}"));
        let schema = batch(1).schema();
        let mut a = SegmentWriter::create(dir.path(), 1, Some(Arc::clone(&ring))).unwrap();
        a.append(&encode_payload(&schema, &[batch(3)]).unwrap())
            .unwrap();
        a.sync().unwrap();
        let mut b = SegmentWriter::create(dir.path(), 2, Some(Arc::clone(&ring))).unwrap();
        b.append(&encode_payload(&schema, &[batch(5)]).unwrap())
            .unwrap();
        b.sync().unwrap();
        // Splice segment 2's frame into segment 1 (same key, same offset, valid checksum).
        let (ra, rb) = (
            std::fs::read(a.path()).unwrap(),
            std::fs::read(b.path()).unwrap(),
        );
        let hdr_len = HEADER_PREFIX_LEN + 9 + "k".len();
        let mut spliced = ra[..hdr_len].to_vec();
        spliced.extend_from_slice(&rb[hdr_len..]);
        std::fs::write(a.path(), &spliced).unwrap();
        assert!(matches!(
            read_segment(a.path(), Some(&ring)),
            Err(WalError::Crypto {
                source: CryptoError::Tampered(_),
                ..
            })
        ));
    }

    #[test]
    fn plain_segments_stay_readable_once_encryption_is_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 9, None).unwrap();
        w.append(&encode_payload(&batch(1).schema(), &[batch(6)]).unwrap())
            .unwrap();
        w.sync().unwrap();
        let r = read_segment(w.path(), Some(&keys(&format!("k:{K1}")))).unwrap();
        assert_eq!(r.batches[0].num_rows(), 6);
    }

    #[test]
    fn foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_file_name(3));
        std::fs::write(&path, b"definitely not a wal segment").unwrap();
        assert!(matches!(
            read_segment(&path, None),
            Err(WalError::BadHeader { .. })
        ));
    }
}
