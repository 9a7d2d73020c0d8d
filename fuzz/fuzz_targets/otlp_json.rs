//! OTLP/JSON bodies (`application/json` on `/v1/logs` and `/v1/traces`) through the receiver's
//! decoder, Arrow decoding and redaction, as the ingest path runs them. The first byte picks
//! the signal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_collector::receiver::fuzzing::{logs_from_json, traces_from_json};
use vigil_fuzz::ingest;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        if let Ok(decoded) = logs_from_json(body) {
            ingest::redact(decoded);
        }
    } else if let Ok(decoded) = traces_from_json(body) {
        ingest::redact(decoded);
    }
});
