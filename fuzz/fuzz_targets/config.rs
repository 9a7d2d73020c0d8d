//! `vigil.toml` text through the config loader: TOML parsing, then validation of every section,
//! as `vigil serve --config` and a reload run it.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vigil_collector::config::RawConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(raw) = RawConfig::parse(text, Path::new("vigil.toml")) {
        let _ = raw.validate();
    }
});
