//! OTLP/HTTP body decompression: `Content-Encoding` negotiation and streaming gzip/zstd decoding
//! that stops as soon as the output passes the body limit, so a compression bomb costs ~limit bytes.

use std::io::{self, Read};

use axum::http::HeaderMap;
use axum::http::header::CONTENT_ENCODING;
use bytes::Bytes;

use super::ReceiveError;

/// A request body's content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    /// The value for the `Accept-Encoding` header of a 415 answer (RFC 9110 §15.5.16).
    pub(crate) const ACCEPTED: &'static str = "gzip, zstd, identity";

    /// Reads `Content-Encoding`. Absent means identity; a list of codings (stacked compression)
    /// is refused like any other unsupported coding.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, ReceiveError> {
        let mut values = headers.get_all(CONTENT_ENCODING).iter();
        let Some(value) = values.next() else {
            return Ok(Encoding::Identity);
        };
        let unsupported = || {
            let shown = String::from_utf8_lossy(value.as_bytes());
            ReceiveError::UnsupportedEncoding(format!("{:?}", truncate(&shown, 64)))
        };
        if values.next().is_some() {
            return Err(ReceiveError::UnsupportedEncoding(
                "with several codings".into(),
            ));
        }
        let coding = value.to_str().map_err(|_| unsupported())?.trim();
        if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
            Ok(Encoding::Identity)
        } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            Ok(Encoding::Gzip)
        } else if coding.eq_ignore_ascii_case("zstd") {
            Ok(Encoding::Zstd)
        } else {
            Err(unsupported())
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Zstd => "zstd",
        }
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// Decodes `body` into at most `limit` bytes. Fails with [`ReceiveError::PayloadTooLarge`] as
/// soon as the output would pass `limit`; never holds more than `limit` bytes of output.
pub(crate) fn decompress(
    encoding: Encoding,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, ReceiveError> {
    if body.is_empty() {
        return Ok(body);
    }
    let corrupt = |e: io::Error| {
        ReceiveError::Undecodable(format!("cannot decompress {} body: {e}", encoding.name()))
    };
    let out = match encoding {
        Encoding::Identity => {
            if body.len() > limit {
                return Err(ReceiveError::PayloadTooLarge { limit });
            }
            return Ok(body);
        }
        // Several gzip members in a row form one valid stream (RFC 1952 §2.2).
        Encoding::Gzip => read_bounded(
            flate2::read::MultiGzDecoder::new(body.as_ref()),
            body.len(),
            limit,
        ),
        Encoding::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(body.as_ref()).map_err(corrupt)?;
            // The decoder allocates the window a frame asks for (up to 128 MiB by default) before
            // producing any output; bound it by the body limit too.
            decoder
                .window_log_max(zstd_window_log_max(limit))
                .map_err(corrupt)?;
            read_bounded(decoder, body.len(), limit)
        }
    };
    match out {
        Ok(out) => Ok(Bytes::from(out)),
        Err(BoundedReadError::TooLarge) => Err(ReceiveError::PayloadTooLarge { limit }),
        Err(BoundedReadError::Io(e)) => Err(corrupt(e)),
    }
}

/// Largest zstd window (log2 bytes) accepted for a body `limit`: a frame of at most `limit`
/// bytes never needs a larger one. 8 MiB is always allowed, since RFC 8878 §3.1.1.1.2 asks
/// decoders to support it and streaming encoders (which do not know the size) use up to that;
/// 128 MiB (zstd's default cap) is never exceeded.
fn zstd_window_log_max(limit: usize) -> u32 {
    let log = limit
        .checked_next_power_of_two()
        .map_or(usize::BITS, usize::trailing_zeros);
    log.clamp(23, 27)
}

#[derive(Debug)]
enum BoundedReadError {
    TooLarge,
    Io(io::Error),
}

/// Reads `reader` to the end into a buffer whose capacity never exceeds `limit`.
fn read_bounded(
    mut reader: impl Read,
    size_hint: usize,
    limit: usize,
) -> Result<Vec<u8>, BoundedReadError> {
    const CHUNK: usize = 64 * 1024;
    let mut out = Vec::with_capacity(size_hint.saturating_mul(4).min(limit));
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BoundedReadError::Io(e)),
        };
        let Some(data) = chunk.get(..n) else {
            return Err(BoundedReadError::Io(io::Error::other(
                "reader returned more than asked",
            )));
        };
        let needed = out.len().saturating_add(n);
        if needed > limit {
            return Err(BoundedReadError::TooLarge);
        }
        if out.capacity() < needed {
            // Grow geometrically like Vec would, but never past `limit`.
            let target = out.capacity().saturating_mul(2).max(needed).min(limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(data);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// `total` zero bytes, gzip'd chunk by chunk: never holds the uncompressed data.
    pub(crate) fn gzip_bomb(total: usize) -> Vec<u8> {
        let zeros = vec![0u8; 1024 * 1024];
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut written = 0;
        while written < total {
            let n = zeros.len().min(total - written);
            enc.write_all(&zeros[..n]).unwrap();
            written += n;
        }
        enc.finish().unwrap()
    }

    #[test]
    fn content_encoding_negotiation() {
        assert_eq!(
            Encoding::from_headers(&headers(&[])).unwrap(),
            Encoding::Identity
        );
        assert_eq!(
            Encoding::from_headers(&headers(&["identity"])).unwrap(),
            Encoding::Identity
        );
        assert_eq!(
            Encoding::from_headers(&headers(&["gzip"])).unwrap(),
            Encoding::Gzip
        );
        assert_eq!(
            Encoding::from_headers(&headers(&[" GZIP "])).unwrap(),
            Encoding::Gzip
        );
        assert_eq!(
            Encoding::from_headers(&headers(&["x-gzip"])).unwrap(),
            Encoding::Gzip
        );
        assert_eq!(
            Encoding::from_headers(&headers(&["zstd"])).unwrap(),
            Encoding::Zstd
        );
        for bad in ["br", "deflate", "gzip, zstd", "compress"] {
            let err = Encoding::from_headers(&headers(&[bad])).unwrap_err();
            assert!(
                matches!(err, ReceiveError::UnsupportedEncoding(_)),
                "{bad}: {err:?}"
            );
        }
        let err = Encoding::from_headers(&headers(&["br"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported content encoding \"br\"; use gzip, zstd or identity"
        );
        assert!(Encoding::from_headers(&headers(&["gzip", "gzip"])).is_err());
    }

    #[test]
    fn gzip_and_zstd_round_trip() {
        let data = b"hello otlp ".repeat(1000);
        let out = decompress(Encoding::Gzip, Bytes::from(gzip(&data)), data.len()).unwrap();
        assert_eq!(out, data);
        let z = zstd::encode_all(data.as_slice(), 3).unwrap();
        let out = decompress(Encoding::Zstd, Bytes::from(z), data.len()).unwrap();
        assert_eq!(out, data);
        let out = decompress(Encoding::Identity, Bytes::from(data.clone()), data.len()).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn concatenated_gzip_members_are_one_body() {
        let mut body = gzip(b"first ");
        body.extend(gzip(b"second"));
        let out = decompress(Encoding::Gzip, Bytes::from(body), 1024).unwrap();
        assert_eq!(out, &b"first second"[..]);
    }

    #[test]
    fn one_byte_over_the_limit_is_too_large() {
        let data = vec![7u8; 1000];
        assert!(decompress(Encoding::Gzip, Bytes::from(gzip(&data)), 1000).is_ok());
        let err = decompress(Encoding::Gzip, Bytes::from(gzip(&data)), 999).unwrap_err();
        assert!(
            matches!(err, ReceiveError::PayloadTooLarge { limit: 999 }),
            "{err:?}"
        );
        let err = decompress(Encoding::Identity, Bytes::from(data), 999).unwrap_err();
        assert!(
            matches!(err, ReceiveError::PayloadTooLarge { limit: 999 }),
            "{err:?}"
        );
    }

    /// Regression guard: a 200 MB gzip bomb must stop at the limit, not inflate in memory.
    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let bomb = gzip_bomb(200 * 1024 * 1024);
        assert!(bomb.len() < 1024 * 1024, "bomb is {} bytes", bomb.len());
        let limit = 4 * 1024 * 1024;
        let started = Instant::now();
        let err = decompress(Encoding::Gzip, Bytes::from(bomb), limit).unwrap_err();
        assert!(
            matches!(err, ReceiveError::PayloadTooLarge { .. }),
            "{err:?}"
        );
        // Inflating all 200 MB takes seconds; stopping at 4 MB takes milliseconds.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn zstd_bomb_stops_at_the_limit() {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        let err = decompress(Encoding::Zstd, Bytes::from(bomb), 1024 * 1024).unwrap_err();
        assert!(
            matches!(err, ReceiveError::PayloadTooLarge { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn bounded_read_never_grows_past_the_limit() {
        let limit = 3 * 64 * 1024 + 17;
        let data = vec![1u8; limit];
        let out = read_bounded(data.as_slice(), 10, limit).unwrap();
        assert_eq!(out.len(), limit);
        assert!(out.capacity() <= limit, "capacity {}", out.capacity());
    }

    #[test]
    fn corrupt_streams_are_undecodable() {
        for encoding in [Encoding::Gzip, Encoding::Zstd] {
            let err = decompress(
                encoding,
                Bytes::from_static(b"definitely not compressed"),
                1024,
            )
            .unwrap_err();
            assert!(
                matches!(err, ReceiveError::Undecodable(_)),
                "{encoding:?}: {err:?}"
            );
        }
        let mut truncated = gzip(&[5u8; 10_000]);
        truncated.truncate(truncated.len() / 2);
        let err = decompress(Encoding::Gzip, Bytes::from(truncated), 1 << 20).unwrap_err();
        assert!(matches!(err, ReceiveError::Undecodable(_)), "{err:?}");
    }

    #[test]
    fn zstd_frames_wanting_huge_windows_are_refused() {
        // windowLog 27 (128 MiB) with a 1 MiB limit: refused before allocating the window.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.window_log(27).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.write_all(&[9u8; 100]).unwrap();
        let frame = enc.finish().unwrap();
        assert!(decompress(Encoding::Zstd, Bytes::from(frame), 1024 * 1024).is_err());
    }

    #[test]
    fn window_log_follows_the_limit() {
        assert_eq!(zstd_window_log_max(1), 23);
        assert_eq!(zstd_window_log_max(8 * 1024 * 1024), 23);
        assert_eq!(zstd_window_log_max(16 * 1024 * 1024), 24);
        assert_eq!(zstd_window_log_max(16 * 1024 * 1024 + 1), 25);
        assert_eq!(zstd_window_log_max(usize::MAX), 27);
    }
}
