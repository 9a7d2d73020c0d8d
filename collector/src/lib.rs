//! Vigil's collector: OTLP receivers, the ingest pipeline, durable storage (WAL + Parquet),
//! the DataFusion SQL engine, the HTTP API and the webhook sinks. `topology` wires them; `main.rs` is the CLI.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod demo;
pub mod detection;
pub mod detector_state;
mod durable;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod query;
pub mod receiver;
pub mod reload;
pub mod secrets;
pub mod sinks;
pub mod storage;
pub mod tls;
pub mod topology;
