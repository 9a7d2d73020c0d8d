//! End-to-end suite: the real `vigil` binary, real OTLP clients, real files. One test binary
//! so the workspace links it once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod api;
mod auth;
mod console;
mod demo;
mod detection;
mod durability;
mod encryption;
mod harness;
mod oidc;
mod otlp;
mod prometheus;
mod redaction;
mod sdk;
mod storage;
mod tls;
mod webhooks;
