//! keygate's integration tests: one binary, one module per area, linked once.
//!
//! `tests/allocations.rs` stays a binary of its own: it installs a counting global allocator,
//! which would count every other test's allocations too.

mod common;

#[cfg(all(feature = "sqlite", feature = "axum"))]
mod cache;
#[cfg(all(feature = "postgres", feature = "sqlite", feature = "axum"))]
mod cache_postgres;

#[cfg(feature = "axum")]
mod api;
#[cfg(feature = "axum")]
mod axum_tcp;
#[cfg(all(feature = "cli", feature = "axum"))]
mod cli;
#[cfg(feature = "axum")]
mod credentials;
#[cfg(all(feature = "dev-mode", feature = "axum"))]
mod dev_mode;
mod fuzzish;
mod grpc;
#[cfg(feature = "axum")]
mod late_writes;
mod layer_contract;
mod lifecycle;
mod limits;
#[cfg(all(feature = "metrics", feature = "axum"))]
mod metrics;
mod model;
#[cfg(feature = "openapi")]
mod openapi;
mod properties;
#[cfg(all(feature = "sqlite", feature = "axum", unix))]
mod quickstart;
#[cfg(all(feature = "sqlite", feature = "axum"))]
mod quota_leased;
#[cfg(all(feature = "redis", feature = "axum"))]
mod redis_limiter;
#[cfg(feature = "axum")]
mod restriction;
#[cfg(feature = "axum")]
mod secrets;
#[cfg(all(feature = "sqlite", feature = "axum"))]
mod setup;
mod store_memory;
#[cfg(feature = "postgres")]
mod store_postgres;
mod store_record_serde;
#[cfg(all(feature = "sqlite", feature = "axum"))]
mod store_rotation;
#[cfg(feature = "sqlite")]
mod store_sqlite;
