//! The tower middleware: [`AuthLayer`] and [`AuthService`].
//!
//! The layer wraps any `http` service (an axum `Router`, a tonic server, a hyper service).
//! For each request it runs the [`Verifier`](crate::Verifier); on success it removes the
//! credential headers, inserts the [`Tenant`](crate::Tenant) into the request extensions and
//! calls the inner service, on failure it answers itself (JSON envelope, or a gRPC status for
//! gRPC requests) and the inner service is never called.
//!
//! ```
//! use axum::{Router, routing::get};
//! use keygate::{AuthLayer, Tenant, Verifier, store::MemoryStore};
//!
//! async fn whoami(tenant: Tenant) -> String {
//!     tenant.tenant_id().to_owned()
//! }
//!
//! let auth = AuthLayer::new(Verifier::builder(MemoryStore::new()).build());
//! let app: Router = Router::new()
//!     // `require_scope` gives a per-route layer: key checks, scope, then the handler.
//!     .route("/v1/documents", get(|| async { "docs" }).route_layer(auth.require_scope(keygate::scope::Scope::READ)))
//!     .route("/v1/whoami", get(whoami).route_layer(auth.clone()))
//!     // No layer: public.
//!     .route("/health", get(|| async { "ok" }));
//! # let _ = app;
//! ```

mod config;
mod future;
#[allow(clippy::module_inception)]
mod layer;
mod response_body;
mod service;

pub use future::ResponseFuture;
pub use layer::AuthLayer;
pub use response_body::{AuthBody, BodyMode, InnerBody, Wrapped};
pub use service::AuthService;
