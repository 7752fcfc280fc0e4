//! # keygate
//!
//! API-key authentication for tower services: axum, tonic, anything built on `http`.
//!
//! A [`AuthLayer`] takes the key from `x-api-key` or `Authorization: Bearer`, checks its format
//! and checksum, hashes it, asks a [`KeyStore`](store::KeyStore) for the record (constant-time
//! digest comparison), checks revocation, expiry, environment and scopes, and hands the service
//! an authenticated [`Tenant`] in the request extensions. Every refusal is one [`AuthError`]
//! with one status and one error code; gRPC requests get gRPC statuses.
//!
//! ```
//! use axum::{Extension, Router, routing::get};
//! use keygate::{AuthLayer, Tenant, Verifier, key::{Environment, KeyFormat}, store::MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::new();
//! let verifier = Verifier::builder(store.clone()).build();
//!
//! let app: Router = Router::new()
//!     .route("/v1/whoami", get(|Extension(t): Extension<Tenant>| async move { t.tenant_id().to_owned() }))
//!     .layer(AuthLayer::new(verifier));
//! # let _ = app;
//! # }
//! ```
//!
//! ## Modules
//! - [`key`]: key format, generation, parsing; [`hash`]: digests.
//! - [`store`]: the [`KeyStore`](store::KeyStore) trait and the in-memory store.
//! - [`verify`]: the framework-free pipeline; [`layer`]: the tower middleware.
//! - [`scope`]: scopes and scope policies; [`error`]: refusals and their rendering.
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "axum")]
pub mod api;
pub mod audit;
#[cfg(feature = "axum")]
mod axum;
pub mod backend;
pub mod error;
pub mod hash;
pub mod key;
pub mod last_used;
pub mod layer;
pub mod lifecycle;
pub mod limit;
pub mod plan;
pub mod request;
pub mod restriction;
pub mod scope;
pub mod store;
mod tenant;
pub mod verify;

pub use error::AuthError;
pub use layer::AuthLayer;
pub use tenant::Tenant;
pub use verify::Verifier;

// The README's Rust examples compile as doctests, so that they cannot drift from the API.
#[cfg(all(doctest, feature = "axum", feature = "sqlite"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
