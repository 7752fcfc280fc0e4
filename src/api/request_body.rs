//! Request bodies, parsed strictly: JSON content type, no unknown fields at any level (the
//! nested [`Restrictions`] and its endpoint rules refuse them too), clear messages.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::json_object::{self, Object};
use crate::key::Environment;
use crate::restriction::Restrictions;

/// A JSON body.
pub(super) struct JsonBody<T>(pub(super) T);

/// A JSON body that may be left empty.
pub(super) struct OptionalJsonBody<T>(pub(super) Option<T>);

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn read(req: Request) -> Result<(bool, Bytes), ApiError> {
    let json = is_json(&req);
    // The router's `DefaultBodyLimit` bounds this read; past it, axum's rejection is a 413.
    let bytes = Bytes::from_request(req, &()).await.map_err(|e| {
        if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                max: super::MAX_BODY_BYTES,
            }
        } else {
            ApiError::BadRequest(format!("Could not read the request body: {e}"))
        }
    })?;
    Ok((json, bytes))
}

/// The body as `T`, from a JSON object only (a derived struct would also take an array).
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice::<Object<T>>(bytes)
        .map(|object| object.0)
        .map_err(|e| ApiError::BadRequest(format!("Invalid JSON body: {e}")))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (json, bytes) = read(req).await?;
        if !json {
            return Err(ApiError::BadRequest(
                "Content-Type must be application/json".into(),
            ));
        }
        parse(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (json, bytes) = read(req).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        if !json {
            return Err(ApiError::BadRequest(
                "Content-Type must be application/json".into(),
            ));
        }
        parse(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// `POST /v1/api-keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(as = CreateKeyRequest, description = "A key to issue for the caller's tenant.")
)]
pub(super) struct CreateKey {
    /// 1 to 128 characters once surrounding whitespace is trimmed, without control or
    /// formatting characters (invisible ones, bidirectional controls).
    pub(super) name: String,
    /// 1 to 64 scope names, each known to the server and granted to the caller.
    pub(super) scopes: Vec<String>,
    /// The environment of the caller's key, the only one allowed (the default).
    #[serde(default)]
    pub(super) environment: Option<Environment>,
    /// When the key stops working (RFC 3339), default never: in the future, no later than
    /// 2262-01-01T00:00:00Z nor than the caller's key's expiry.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub(super) expires_at: Option<time::OffsetDateTime>,
    /// Free-form data handed to the service with the tenant: at most 4096 bytes of JSON.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub(super) metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Default none; at least as tight as the caller's key's.
    #[serde(default, deserialize_with = "json_object::optional")]
    pub(super) restrictions: Option<Restrictions>,
}

/// `PATCH /v1/api-keys/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(as = RenameKeyRequest, description = "The key's new name.")
)]
pub(super) struct Rename {
    /// 1 to 128 characters once surrounding whitespace is trimmed, without control or
    /// formatting characters (invisible ones, bidirectional controls).
    pub(super) name: String,
}

/// `POST /v1/api-keys/{id}/rotate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(as = RotateKeyRequest, description = "How long the old key keeps working.")
)]
pub(super) struct Rotate {
    /// Seconds the old key keeps working beside its successor, 0 to 2592000 (30 days).
    /// Default: 0, the old key stops at once.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub(super) grace_period_seconds: Option<GraceSeconds>,
}

/// `grace_period_seconds` as sent: a whole number of seconds (`60`, or `60.0`: JSON Schema's
/// `integer`, which the OpenAPI document declares, takes a number with a zero fraction), or
/// anything else (a negative number, a fraction, a string), which the handler refuses with the
/// message of a grace period out of range rather than the parser's.
#[derive(Debug)]
pub(super) enum GraceSeconds {
    Seconds(u64),
    Invalid,
}

impl<'de> Deserialize<'de> for GraceSeconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let whole = value.as_u64().or_else(|| {
            // Exact up to 2^53; anything that large is out of range anyway.
            let f = value.as_f64()?;
            (f >= 0.0 && f.fract() == 0.0 && f <= 9_007_199_254_740_992.0).then_some(f as u64)
        });
        Ok(whole.map_or(GraceSeconds::Invalid, GraceSeconds::Seconds))
    }
}
