//! Every way a request can be refused, and how the refusal is rendered.
//!
//! | error | HTTP | code | gRPC |
//! |---|---|---|---|
//! | missing, malformed, unknown, revoked, expired key, environment refused, invalid development-mode tenant id | 401 + `WWW-Authenticate` | `UNAUTHORIZED` | 16 `UNAUTHENTICATED` |
//! | scope missing, tenant suspended, quota exhausted, restriction violated, management call in development mode | 403 | `FORBIDDEN` | 7 `PERMISSION_DENIED` |
//! | rate limit exceeded | 429 + `Retry-After` | `RATE_LIMITED` | 8 `RESOURCE_EXHAUSTED` |
//! | key store or limit backend failing | 503 | `SERVICE_UNAVAILABLE` | 14 `UNAVAILABLE` |
//!
//! HTTP bodies are `{"success":false,"error":{"code":"…","message":"…"}}`. gRPC calls (HTTP/2
//! `POST` with content type `application/grpc` or `application/grpc+…`) and grpc-web calls
//! (`POST` of any HTTP version with content type `application/grpc-web…`), see [`is_grpc`], get
//! a trailers-only gRPC answer: HTTP 200 with `grpc-status` and a percent-encoded
//! `grpc-message`, in the content type of their protocol.
//! Every refusal carries `Cache-Control: no-store`.
//!
//! The rendering is pluggable through [`RenderError`]; see its docs for an RFC 9457 example.

mod auth_error;
mod grpc;
mod render;

pub use auth_error::AuthError;
pub(crate) use grpc::grpc_refusal;
pub use grpc::{grpc_response, is_grpc};
// The management API (feature `axum`) answers its own refusals in the same envelope.
#[cfg(feature = "axum")]
pub(crate) use render::envelope;
pub use render::{InvalidRealm, JsonErrors, RenderError};
pub(crate) use render::{no_store, retry_after};
