//! The management HTTP API: an axum router over a [`KeyManager`].
//!
//! | call | success |
//! |---|---|
//! | `POST /v1/api-keys` `{"name","scopes",["environment","expires_at","metadata","restrictions"]}` | 201, the key with its secret, once |
//! | `GET /v1/api-keys` | 200, the caller's active keys, oldest first |
//! | `GET /v1/api-keys/{id}` | 200 |
//! | `PATCH /v1/api-keys/{id}` `{"name"}` | 200 |
//! | `POST /v1/api-keys/{id}/rotate` `[{"grace_period_seconds"}]` | 201, the new key with its secret, once |
//! | `DELETE /v1/api-keys/{id}` | 204 |
//!
//! The two answers that hold a secret carry `Cache-Control: no-store`, like every refusal.
//!
//! Every call acts on the caller's own tenant and needs the `admin` scope, granted by the
//! caller's key and allowed by its plan. Mount the router behind
//! [`AuthLayer::management`](crate::AuthLayer::management): it requires `admin` and applies
//! neither the tenant's rate limits nor its quota (they are neither checked nor counted), so
//! that a leaked key that uses them up cannot block its own revocation. Suspension, key
//! restrictions and the plan's scopes still apply. The handlers check `admin` again, so a
//! router mounted without any layer refuses everything with 401.
//!
//! What a caller issues stays inside its own key's bounds ([`KeyBounds`](crate::lifecycle::KeyBounds)):
//! same environment, restrictions at least as tight, expiry no later, scopes its key and plan
//! grant; this holds for `POST /v1/api-keys` and for the successor made by a rotation. A caller
//! changes (renames, rotates, revokes) only keys it could have issued, itself included, so that
//! a sandbox or restricted admin key cannot revoke the tenant's live admin key. Listing and
//! getting are not bound: every admin key sees all the tenant's active keys, metadata only. A
//! key in its rotation grace period still authenticates but may not manage keys.
//!
//! Another tenant's key id answers 404, exactly like an unknown id. Refusals use the error
//! envelope `{"success":false,"error":{"code","message"}}`:
//!
//! | case | status | code | message |
//! |---|---|---|---|
//! | malformed JSON, wrong content type, unknown field at any level, missing field, an array where an object belongs (at any level) | 400 | `BAD_REQUEST` | `Invalid JSON body: …` naming the field, or `Content-Type must be application/json` |
//! | bad name (checked after trimming surrounding whitespace) | 400 | `BAD_REQUEST` | `Name must be 1 to 128 characters without control or formatting characters` |
//! | no scopes, more than 64, unknown scope | 400 | `BAD_REQUEST` | `Scopes must not be empty`, `Too many scopes: at most 64`, `Unknown scope: …` |
//! | metadata over 4096 bytes of JSON | 400 | `BAD_REQUEST` | `metadata must be at most 4096 bytes of JSON` |
//! | a restriction list over 64 entries | 400 | `BAD_REQUEST` | `restrictions.ip_ranges must have at most 64 entries` (likewise `referrers`, `endpoints`) |
//! | a referrer nothing could match (not http or https, no host, a user name before the host), an endpoint path without its leading `/`, an endpoint method that is not an HTTP method name | 400 | `BAD_REQUEST` | `Invalid referrer "…": use an origin such as https://app.example.com, optionally followed by a path, or a prefix ending in *`, `Invalid endpoint path "…": it must start with /`, `Invalid endpoint method "…": use an HTTP method such as GET or POST, or leave it out to allow every method` |
//! | past expiry, expiry after 2262-01-01T00:00:00Z | 400 | `BAD_REQUEST` | `expires_at must be in the future`, `expires_at must not be after 2262-01-01T00:00:00Z` |
//! | bad grace period | 400 | `BAD_REQUEST` | `grace_period_seconds must be between 0 and 2592000` |
//! | body over 65536 bytes | 413 | `PAYLOAD_TOO_LARGE` | `Request body too large: at most 65536 bytes` |
//! | no `admin` | 403 (+ `WWW-Authenticate`) | `FORBIDDEN` | `API key lacks the required scope: admin` |
//! | the key to issue, or the key to rename, rotate or revoke, reaches beyond the caller's | 403 | `FORBIDDEN` | `Cannot issue a key beyond your own: environment` (or `scopes`, `restrictions`, `expiry`) |
//! | the caller's key is in its rotation grace period | 403 | `FORBIDDEN` | `API key has been rotated: use its successor to manage keys` |
//! | no such key for this tenant | 404 | `NOT_FOUND` | `API key not found` |
//! | the tenant has the maximum number of active keys (a rotation with a grace period counts: the old key stays active) | 409 | `KEY_LIMIT_REACHED` | |
//! | rotating a key in its rotation grace period (already replaced) | 409 | `KEY_ALREADY_ROTATED` | `API key has already been rotated: rotate its successor instead` |
//! | the store fails or does not answer within the manager's store timeout (an issue or a rotation it commits later is undone: see [`KeyManager`]) | 503 | `SERVICE_UNAVAILABLE` | |
//!
//! Nothing is written when a call is refused. Each change and its audit event are written
//! together even if the client disconnects mid-call (see [`KeyManager`]).
//!
//! With the `openapi` feature (on by default), [`openapi()`] is the OpenAPI 3.1 document of these
//! calls, refusals and envelopes.
//!
//! ```
//! use axum::Router;
//! use keygate::{AuthLayer, Verifier, api, key::KeyScheme, lifecycle::KeyManager, store::MemoryStore};
//!
//! let store = MemoryStore::new();
//! // One key scheme (format and hasher) for the verifier and the manager.
//! let scheme = KeyScheme::default();
//! let verifier = Verifier::builder(store.clone()).scheme(scheme.clone()).build();
//! let manager = KeyManager::builder(store).scheme(scheme).build();
//! let auth = AuthLayer::new(verifier);
//! let app: Router = api::router(manager).route_layer(auth.management());
//! # let _ = app;
//! ```

mod error;
mod handlers;
#[cfg(feature = "openapi")]
mod openapi;
mod request_body;

pub use error::ApiError;
#[cfg(feature = "openapi")]
pub use openapi::openapi;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::lifecycle::KeyManager;

/// The largest request body the management API reads: 64 KiB. Larger bodies are refused with
/// 413 `PAYLOAD_TOO_LARGE` before they are parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The management API's routes, with the manager as state and a body limit of
/// [`MAX_BODY_BYTES`]. Mount it behind [`AuthLayer::management`](crate::AuthLayer::management).
pub fn router(manager: KeyManager) -> Router {
    Router::new()
        .route("/v1/api-keys", post(handlers::create).get(handlers::list))
        .route(
            "/v1/api-keys/{id}",
            get(handlers::get_one)
                .patch(handlers::rename)
                .delete(handlers::revoke),
        )
        .route("/v1/api-keys/{id}/rotate", post(handlers::rotate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(manager)
}
