//! OTLP/HTTP body decompression (`Content-Encoding: gzip`, `zstd`, `identity`) under the body
//! size limit. The first byte picks the coding and one of a few limits; the output must never
//! be larger than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_collector::receiver::fuzzing::{Coding, decompress};

/// Small limits so that compression bombs reach them in a few microseconds.
const LIMITS: [usize; 4] = [1, 1024, 64 * 1024, 1024 * 1024];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let coding = match selector % 3 {
        0 => Coding::Gzip,
        1 => Coding::Zstd,
        _ => Coding::Identity,
    };
    let limit = LIMITS[usize::from(selector >> 2) % LIMITS.len()];
    if let Ok(out) = decompress(coding, body, limit) {
        assert!(
            out.len() <= limit,
            "{coding:?}: {} bytes over a limit of {limit}",
            out.len()
        );
        if coding == Coding::Identity {
            assert_eq!(out.as_ref(), body);
        }
    }
});
