use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use zeroize::Zeroizing;

use super::error::ApiError;
use super::request_body::{CreateKey, GraceSeconds, JsonBody, OptionalJsonBody, Rename, Rotate};
use crate::lifecycle::{IssuedKey, KeyManager, MAX_GRACE_SECONDS, ManageError, NewKey, may_manage};
use crate::scope::Scope;
use crate::store::KeyInfo;
use crate::{AuthError, Tenant};

pub(super) const SHOWN_ONCE: &str = "Store this key securely — it cannot be retrieved again.";

#[derive(Serialize)]
struct Success<T> {
    success: bool,
    data: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
}

#[derive(Serialize)]
struct WithSecret<'a> {
    #[serde(flatten)]
    info: &'a KeyInfo,
    key: &'a str,
}

fn ok<T: Serialize>(status: StatusCode, data: T, message: Option<&'static str>) -> Response {
    (
        status,
        Json(Success {
            success: true,
            data,
            message,
        }),
    )
        .into_response()
}

/// The answer that carries a new secret. Its JSON goes into a buffer sized beforehand (so that
/// no reallocation leaves a copy of the secret behind) and wiped when the response body is
/// dropped. Copies made on the way out (hyper's write buffer, the kernel, TLS) are beyond
/// keygate's reach.
fn issued(key: &IssuedKey) -> Response {
    let answer = Success {
        success: true,
        data: WithSecret {
            info: &key.info,
            key: key.key.expose_secret(),
        },
        message: Some(SHOWN_ONCE),
    };
    let mut size = ByteCount(0);
    let mut json = Zeroizing::new(Vec::new());
    let written = serde_json::to_writer(&mut size, &answer).and_then(|()| {
        json.reserve_exact(size.0);
        serde_json::to_writer(&mut *json, &answer)
    });
    if let Err(error) = written {
        tracing::error!(target: "keygate", %error, "issued key could not be serialized");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut response = Response::new(Body::from(Bytes::from_owner(json)));
    *response.status_mut() = StatusCode::CREATED;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The answer holds the secret: no cache between keygate and the caller may keep it.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The caller, who must be granted `admin` (by its key and its plan) and must not be a key
/// in its rotation grace period.
fn admin(tenant: Option<Tenant>) -> Result<Tenant, ApiError> {
    let tenant = tenant.ok_or(ApiError::Auth(AuthError::MissingCredential))?;
    // Keys issued by a tenant that only named itself would outlive development mode.
    if tenant.is_development() {
        return Err(ApiError::Auth(AuthError::DevelopmentMode));
    }
    tenant.require(&Scope::ADMIN).map_err(ApiError::Auth)?;
    may_manage(&tenant)?;
    Ok(tenant)
}

type Caller = Option<axum::Extension<Tenant>>;

fn caller(c: Caller) -> Result<Tenant, ApiError> {
    admin(c.map(|axum::Extension(t)| t))
}

pub(super) async fn create(
    State(manager): State<KeyManager>,
    tenant: Caller,
    body: Result<JsonBody<CreateKey>, ApiError>,
) -> Result<Response, ApiError> {
    let tenant = caller(tenant)?;
    let JsonBody(body) = body?;
    let mut new = NewKey::new(body.name, body.scopes);
    new.environment = body.environment.unwrap_or(tenant.environment());
    new.expires_at = body.expires_at;
    new.metadata = body.metadata.unwrap_or_default();
    new.restrictions = body.restrictions.unwrap_or_default();
    let key = manager.issue_as(&tenant, new).await?;
    Ok(issued(&key))
}

/// The key id in the path. One that does not decode (not UTF-8) names no key: 404 in the
/// envelope of every refusal, judged after the caller, like any other id.
fn key_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|Path(id)| id).map_err(|_| ApiError::NotFound)
}

pub(super) async fn list(
    State(manager): State<KeyManager>,
    tenant: Caller,
) -> Result<Response, ApiError> {
    let tenant = caller(tenant)?;
    let keys = manager.list(tenant.tenant_id()).await?;
    Ok(ok(StatusCode::OK, keys, None))
}

pub(super) async fn get_one(
    State(manager): State<KeyManager>,
    tenant: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let tenant = caller(tenant)?;
    let id = key_id(id)?;
    let key = manager.get(tenant.tenant_id(), &id).await?;
    Ok(ok(StatusCode::OK, key, None))
}

pub(super) async fn rename(
    State(manager): State<KeyManager>,
    tenant: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<JsonBody<Rename>, ApiError>,
) -> Result<Response, ApiError> {
    let tenant = caller(tenant)?;
    let id = key_id(id)?;
    let JsonBody(body) = body?;
    let key = manager.rename_as(&tenant, &id, &body.name).await?;
    Ok(ok(StatusCode::OK, key, None))
}

pub(super) async fn rotate(
    State(manager): State<KeyManager>,
    tenant: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<OptionalJsonBody<Rotate>, ApiError>,
) -> Result<Response, ApiError> {
    let tenant = caller(tenant)?;
    let id = key_id(id)?;
    let OptionalJsonBody(body) = body?;
    let grace = match body.and_then(|b| b.grace_period_seconds) {
        None => None,
        Some(GraceSeconds::Seconds(s)) => Some(std::time::Duration::from_secs(s)),
        Some(GraceSeconds::Invalid) => {
            let max = MAX_GRACE_SECONDS;
            return Err(ManageError::InvalidGracePeriod { max }.into());
        }
    };
    let key = manager.rotate_as(&tenant, &id, grace).await?;
    Ok(issued(&key))
}

pub(super) async fn revoke(
    State(manager): State<KeyManager>,
    tenant: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let tenant = caller(tenant)?;
    let id = key_id(id)?;
    manager.revoke_as(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
