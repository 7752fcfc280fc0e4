//! axum glue: [`Tenant`] as an extractor, [`AuthError`] as a response.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::error::{JsonErrors, RenderError};
use crate::{AuthError, Tenant};

/// Extracts the authenticated tenant. Without [`AuthLayer`](crate::AuthLayer) in front of the
/// route there is none, and the request is refused with 401 (fail closed) and an error event.
///
/// ```
/// use keygate::{Tenant, scope::Scope};
///
/// async fn create_document(tenant: Tenant) -> Result<&'static str, keygate::AuthError> {
///     tenant.require(&Scope::WRITE)?;
///     Ok("created")
/// }
/// # let _ = axum::routing::post::<_, _, ()>(create_document);
/// ```
impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Tenant>().cloned().ok_or_else(|| {
            tracing::error!(target: "keygate", path = %parts.uri.path(), "no Tenant in the request: is AuthLayer applied to this route?");
            AuthError::MissingCredential
        })
    }
}

/// Renders with [`JsonErrors`] and its default realm.
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        JsonErrors::default()
            .render(&self)
            .map(axum::body::Body::from)
    }
}
