//! Support code shared by the end-to-end suite lives in `tests/e2e/`; this crate has no library API.
