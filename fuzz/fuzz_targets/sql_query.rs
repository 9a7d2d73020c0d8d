//! `POST /api/v1/query` bodies through the handler's request parsing, then the statement
//! through the engine's checks: SQL parsing, the read-only statement check, planning against
//! Vigil's tables and the plan check. Nothing is executed.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vigil_collector::query::QueryEngine;
use vigil_collector::query::fuzzing::{engine, parse_request};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
});

static ENGINE: LazyLock<QueryEngine> = LazyLock::new(|| {
    let _guard = RUNTIME.enter();
    engine().expect("query engine")
});

fuzz_target!(|data: &[u8]| {
    let Ok((sql, _format)) = parse_request(data) else {
        return;
    };
    let _ = RUNTIME.block_on(ENGINE.check(&sql));
});
