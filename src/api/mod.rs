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
//! Every call acts on the caller's own tenant and needs the `admin` scope: mount the router
//! behind [`AuthLayer`](crate::AuthLayer) (the handlers check the scope again, so a router
//! mounted without it refuses everything with 401). Another tenant's key id answers 404, exactly
//! like an unknown id. Refusals use the error envelope:
//!
//! | case | status | code |
//! |---|---|---|
//! | malformed JSON, wrong content type, unknown field, missing or invalid name, unknown scope, past expiry, bad grace period | 400 | `BAD_REQUEST` |
//! | no such key for this tenant | 404 | `NOT_FOUND` |
//! | the tenant has the maximum number of active keys (a rotation with a grace period counts: the old key stays active) | 409 | `KEY_LIMIT_REACHED` |
//! | rotating a key in its rotation grace period (already replaced: rotate its successor) | 409 | `KEY_ALREADY_ROTATED` |
//! | the store fails | 503 | `SERVICE_UNAVAILABLE` |
//!
//! ```
//! use axum::Router;
//! use keygate::{AuthLayer, Verifier, api, manage::KeyManager, scope::Scope, store::MemoryStore};
//!
//! let store = MemoryStore::new();
//! let verifier = Verifier::builder(store.clone()).build();
//! let manager = KeyManager::builder(store).for_verifier(&verifier).build();
//! let auth = AuthLayer::new(verifier);
//! let app: Router = api::router(manager).route_layer(auth.require_scope(Scope::ADMIN));
//! # let _ = app;
//! ```

mod body;
mod error;
mod handlers;

pub use error::ApiError;

use axum::Router;
use axum::routing::{get, post};

use crate::manage::KeyManager;

/// The management API's routes, with the manager as state.
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
        .with_state(manager)
}
