//! The OTLP/HTTP body handling for the fuzz targets in `fuzz/`: the decompression and the
//! protobuf and JSON decoders the receivers call, unchanged. Errors are returned as the text a
//! client would get.

use bytes::Bytes;
use vigil_core::decode::Decoded;

use super::decompress::{self, Encoding};
use super::{Logs, ReceiveError, Traces, decode_json, decode_protobuf};

/// A `Content-Encoding` the receiver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Zstd,
}

/// Decodes `body` as the receiver does with `ingest.max_body_bytes = limit`.
pub fn decompress(coding: Coding, body: &[u8], limit: usize) -> Result<Bytes, String> {
    let encoding = match coding {
        Coding::Identity => Encoding::Identity,
        Coding::Gzip => Encoding::Gzip,
        Coding::Zstd => Encoding::Zstd,
    };
    decompress::decompress(encoding, Bytes::copy_from_slice(body), limit).map_err(|e| e.to_string())
}

/// An `application/x-protobuf` body of `POST /v1/logs` (and `LogsService/Export`).
pub fn logs_from_protobuf(body: &[u8]) -> Result<Decoded, String> {
    decode_protobuf::<Logs>(body)
        .map(|received| received.decoded)
        .map_err(client_error)
}

/// An `application/x-protobuf` body of `POST /v1/traces` (and `TraceService/Export`).
pub fn traces_from_protobuf(body: &[u8]) -> Result<Decoded, String> {
    decode_protobuf::<Traces>(body)
        .map(|received| received.decoded)
        .map_err(client_error)
}

/// An `application/json` body of `POST /v1/logs`.
pub fn logs_from_json(body: &[u8]) -> Result<Decoded, String> {
    decode_json::<Logs>(body)
        .map(|received| received.decoded)
        .map_err(client_error)
}

/// An `application/json` body of `POST /v1/traces`.
pub fn traces_from_json(body: &[u8]) -> Result<Decoded, String> {
    decode_json::<Traces>(body)
        .map(|received| received.decoded)
        .map_err(client_error)
}

/// The text a client gets for a body it got wrong. Any other failure is Vigil's own, which a
/// fuzzer must report: it panics.
fn client_error(e: ReceiveError) -> String {
    match e {
        ReceiveError::Undecodable(message) => message,
        other => panic!("decoding failed inside Vigil: {other}"),
    }
}
