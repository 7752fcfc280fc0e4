use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};

use crate::AuthError;
use crate::error::envelope;
use crate::lifecycle::ManageError;
use crate::store::StoreError;

/// A refused management call. Each variant has one status and one code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The caller is not authenticated or lacks `admin`.
    #[error(transparent)]
    Auth(AuthError),
    /// The request is malformed; the message says what is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The caller may not do this: the key to issue, or the key to rename, rotate or revoke,
    /// reaches beyond the caller's own, or the caller's key is in its rotation grace period.
    /// The message says which.
    #[error("{0}")]
    Forbidden(String),
    /// The body is larger than [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES).
    #[error("Request body too large: at most {max} bytes")]
    PayloadTooLarge {
        /// The largest body accepted, in bytes.
        max: usize,
    },
    /// No such key for the caller's tenant.
    #[error("API key not found")]
    NotFound,
    /// The tenant has the maximum number of active keys.
    #[error("{0}")]
    KeyLimit(String),
    /// The key is in a rotation grace period: it has already been rotated.
    #[error("API key has already been rotated: rotate its successor instead")]
    AlreadyRotated,
    /// The store failed.
    #[error("key store unavailable")]
    Unavailable,
}

impl From<ManageError> for ApiError {
    fn from(e: ManageError) -> Self {
        match e {
            ManageError::NotFound => ApiError::NotFound,
            ManageError::TooManyKeys(_) => ApiError::KeyLimit(e.to_string()),
            ManageError::AlreadyRotated => ApiError::AlreadyRotated,
            ManageError::BeyondBounds(_) | ManageError::CallerRotated => {
                ApiError::Forbidden(e.to_string())
            }
            ManageError::Store(error) => {
                tracing::error!(target: "keygate", %error, "key store failed in a management call");
                ApiError::Unavailable
            }
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(ManageError::from(e))
    }
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Auth(e) => e.status(),
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::KeyLimit(_) | ApiError::AlreadyRotated => StatusCode::CONFLICT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code of the error envelope.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Auth(e) => e.code(),
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::KeyLimit(_) => "KEY_LIMIT_REACHED",
            ApiError::AlreadyRotated => "KEY_ALREADY_ROTATED",
            ApiError::Unavailable => "SERVICE_UNAVAILABLE",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Auth(e) => e.into_response(),
            ApiError::Unavailable => AuthError::Unavailable.into_response(),
            other => {
                let body = envelope(other.code(), &other.to_string());
                // Like every refusal of keygate's: never stored by a cache on the way.
                (
                    other.status(),
                    [
                        (CONTENT_TYPE, "application/json"),
                        (CACHE_CONTROL, "no-store"),
                    ],
                    body,
                )
                    .into_response()
            }
        }
    }
}
