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
//! use axum::{Router, routing::get};
//! use keygate::{AuthLayer, Tenant, Verifier, store::MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::new();
//! let verifier = Verifier::builder(store.clone()).build();
//!
//! let app: Router = Router::new()
//!     // `Tenant` is an axum extractor: the handler runs only for an authenticated request.
//!     .route("/v1/whoami", get(|tenant: Tenant| async move { tenant.tenant_id().to_owned() }))
//!     .layer(AuthLayer::new(verifier));
//! # let _ = app;
//! # }
//! ```
//!
//! ## Architecture
//!
//! Modules are rooms on floors: each imports only modules on lower floors, none imports back
//! up, and no two import each other. Read it bottom up, or open the room a task names.
//!
//! ```text
//!  8   setup ──► layer lifecycle verify cache plan limit last_used audit store scope key api
//!      request path                                  management path
//!  7   layer ──► verify last_used tenant error       api ──► lifecycle tenant store error
//!                limit scope request                         scope restriction key
//!      axum ──► tenant error
//!  6   verify ──► tenant store plan limit error      lifecycle ──► tenant store audit plan
//!                 scope restriction request key                    scope restriction key
//!                 hash backend metrics                             backend limit
//!  5   tenant ──► store plan error scope key         last_used ──► store
//!      cache ──► store plan hash metrics
//!  4   store ──► plan audit restriction scope key hash limit backend
//!      metrics ──► error
//!  3   error ──► restriction scope key request       plan ──► limit scope backend
//!  2   key ──► hash   scope ──► request   restriction ──► request   limit ──► backend
//!      audit ──► backend
//!  1   hash   request   backend
//! ```
//!
//! Each arrow lists every module the one on its left imports (`verify` also calls the check of
//! the key record's restrictions). `axum` is a private module of glue (feature `axum`): the
//! [`Tenant`] as an extractor and the [`AuthError`] as a response.
//!
//! **The request path**, top down: [`layer`]'s `AuthService` reads the request through
//! [`request::RequestHead`] and asks the layer's [`scope::ScopePolicy`] which scope the route
//! needs. The [`Verifier`] ([`verify`]) then takes the one credential
//! ([`verify::CredentialSource`]), checks its format and checksum and hashes it
//! ([`key::KeyScheme`], [`hash`]), looks the digest up in the [`store::KeyStore`], checks
//! revocation, expiry and environment, asks the [`plan::EntitlementSource`] for the tenant's
//! status and plan, checks the key's [`restriction`]s (with the client address from
//! [`request`]) and the scope (the [`Tenant`]'s rule), and checks and consumes the rate limits
//! and quota ([`limit`]). With a [`cache::CachedStore`] as the store, a key seen within the
//! TTL is answered from memory, and changes reach the cache from its own writes and, on
//! PostgreSQL, from every instance's ([`cache`]). Admitted, the layer strips the credential, notes the use
//! ([`last_used`]), hands the [`Tenant`] to the service and writes the limit headers. Refused,
//! it answers the one [`AuthError`] ([`error`]): a JSON envelope, or a gRPC status for gRPC
//! calls. Backends that fail answer a [`backend::BackendError`] or a [`store::StoreError`],
//! and the request is refused with 503.
//!
//! **The management path**: [`api`] (axum) checks the caller and parses strict bodies; the
//! [`lifecycle::KeyManager`] validates the caps, keeps what a caller issues, and the keys it
//! changes, within its [`lifecycle::KeyBounds`], makes keys with the same [`key::KeyScheme`]
//! as the verifier, and writes each change to a [`store::ManagedKeyStore`] with its event to
//! an [`audit::AuditSink`].
//!
//! | backend trait | shipped implementations |
//! |---|---|
//! | [`store::KeyStore`] | [`store::MemoryStore`], [`store::SqliteStore`], [`store::PostgresStore`] (both [`store::sql::SqlStore`]), and `Arc` of any store |
//! | [`store::ManagedKeyStore`] | [`store::MemoryStore`], [`store::SqliteStore`], [`store::PostgresStore`] |
//! | [`store::KeyStore`] (cached) | [`cache::CachedStore`] over any store; a [`store::ManagedKeyStore`] when its store is |
//! | [`cache::Invalidate`] | [`cache::CachedStore`], [`plan::CachedEntitlements`], [`cache::ChangeFeed`]; fed by `cache::ChangeListener` (PostgreSQL notifications) |
//! | [`plan::EntitlementSource`] | [`plan::MemoryEntitlements`], [`plan::CachedEntitlements`] (over any source), [`store::SqliteStore`], [`store::PostgresStore`] |
//! | [`limit::Limiter`] | [`limit::MemoryLimiter`], [`limit::LeasedQuotaLimiter`] (quotas leased from a [`limit::QuotaLedger`]), `limit::RedisLimiter` (feature `redis`) |
//! | [`limit::QuotaLedger`] | [`store::SqliteStore`], [`store::PostgresStore`] |
//! | [`limit::Clock`] | [`limit::SystemClock`], [`limit::ManualClock`] |
//! | [`audit::AuditSink`] | [`audit::TracingAudit`], [`store::SqliteStore`], [`store::PostgresStore`] |
//! | [`error::RenderError`] | [`error::JsonErrors`] |
//!
//! [`store::conformance`] is the suite every [`store::ManagedKeyStore`] runs, yours included.
//!
//! ## Modules
//!
//! | floor | module | what it holds |
//! |---|---|---|
//! | 1 | [`backend`] | [`BackendError`](backend::BackendError): what entitlement sources, limiters and audit sinks return when they fail |
//! | 1 | [`hash`] | the digest stores keep ([`KeyDigest`](hash::KeyDigest)) and the hasher that makes it |
//! | 1 | [`request`] | the request as keygate reads it: [`RequestHead`](request::RequestHead), the client address, trusted proxies |
//! | 2 | [`key`] | key format, generation, parsing; the [`KeyScheme`](key::KeyScheme) the verifier and the manager share |
//! | 2 | [`scope`] | scopes, their grants, and scope policies |
//! | 2 | [`restriction`] | where and for what a key may be used, and the check |
//! | 2 | [`limit`] | rate limits and quotas, the [`Limiter`](limit::Limiter)s (in memory, quotas leased from a [`QuotaLedger`](limit::QuotaLedger), on Redis), the limit headers |
//! | 2 | [`audit`] | lifecycle events and where they go |
//! | 3 | [`error`] | [`AuthError`], its rendering as JSON or a gRPC status |
//! | 3 | [`plan`] | tenants' status and plans, and where they come from |
//! | 4 | [`metrics`] | what keygate records through the `metrics` facade, and when (feature `metrics`) |
//! | 4 | [`store`] | key records and the stores that keep them; [`store::sql`] for SQLite and PostgreSQL; the conformance suite |
//! | 5 | [`last_used`] | last-used times, noted in memory and written in the background |
//! | 5 | [`cache`] | the key cache ([`CachedStore`](cache::CachedStore)), change notifications and their listener; the staleness table and the outage policy |
//! | 6 | [`verify`] | the framework-free pipeline: [`Verifier`], its builder and its outcomes |
//! | 6 | [`lifecycle`] | issuing, rotating and revoking keys: [`KeyManager`](lifecycle::KeyManager) |
//! | 7 | [`layer`] | the tower middleware: [`AuthLayer`] |
//! | 7 | [`api`] | the management HTTP API, an axum router (feature `axum`) |
//! | 8 | [`setup`] | one-call setup: [`Keygate`] wires the layer and the manager on one SQLite or PostgreSQL database (features `sqlite`, `postgres`) |
//!
//! [`Tenant`] (private module `tenant`, floor 5) is re-exported at the root with [`AuthError`],
//! [`AuthLayer`], [`Verifier`] and `Keygate`.
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The docs link to the items of every feature. With all of them on (docs.rs, and CI with
// warnings denied) every link resolves and is checked; with fewer, a link to an item left out
// stays plain text instead of warning.
#![cfg_attr(
    not(all(
        feature = "axum",
        feature = "sqlite",
        feature = "postgres",
        feature = "redis",
        feature = "openapi",
        feature = "metrics",
        feature = "dev-mode"
    )),
    allow(rustdoc::broken_intra_doc_links, rustdoc::private_intra_doc_links)
)]

#[cfg(feature = "axum")]
pub mod api;
pub mod audit;
#[cfg(feature = "axum")]
mod axum;
pub mod backend;
pub mod cache;
pub mod error;
pub mod hash;
mod json_object;
pub mod key;
pub mod last_used;
pub mod layer;
pub mod lifecycle;
pub mod limit;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
// Without the feature: the same handles, empty.
#[cfg(not(feature = "metrics"))]
mod metrics;
pub mod plan;
pub mod request;
pub mod restriction;
pub mod scope;
#[cfg(feature = "sql")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub mod setup;
mod single_flight;
pub mod store;
mod tenant;
pub mod verify;

pub use error::AuthError;
pub use layer::AuthLayer;
#[cfg(feature = "sql")]
pub use setup::Keygate;
pub use tenant::Tenant;
pub use verify::Verifier;

/// The attribute macro the store and backend traits are written with, re-exported so that a
/// crate implementing [`KeyStore`](store::KeyStore) or
/// [`ManagedKeyStore`](store::ManagedKeyStore) needs no `async-trait` dependency of its own.
///
/// ```
/// use keygate::hash::KeyDigest;
/// use keygate::store::{KeyStore, Lookup};
///
/// struct NoKeys;
///
/// #[keygate::async_trait]
/// impl KeyStore for NoKeys {
///     async fn find(&self, _digest: &KeyDigest) -> Lookup {
///         Ok(None)
///     }
/// }
/// ```
pub use async_trait::async_trait;

/// The `http` crate, at the version keygate's public API uses (requests, headers and status
/// codes in [`request`], [`error`] and [`layer`]), re-exported so that a custom store or
/// integration names the same types without depending on `http` itself.
///
/// ```
/// let status = keygate::http::StatusCode::SERVICE_UNAVAILABLE;
/// assert_eq!(status.as_u16(), 503);
/// ```
pub use http;

// The README's Rust examples compile as doctests, so that they cannot drift from the API.
#[cfg(all(doctest, feature = "axum", feature = "sqlite"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
