use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response};

use super::auth_error::AuthError;

/// Turns an [`AuthError`] into the HTTP response a client sees.
///
/// keygate renders gRPC requests itself (see [`grpc_response`](super::grpc_response)); this trait decides what plain
/// HTTP clients get. The default is [`JsonErrors`]. [`AuthLayer`](crate::AuthLayer) adds
/// `Cache-Control: no-store` to whatever a renderer returns, so that no cache keeps a refusal,
/// and `Retry-After` to a rate limit's refusal that has none.
/// Here is an RFC 9457 problem+json renderer:
///
/// ```
/// use bytes::Bytes;
/// use http::{Response, header};
/// use keygate::error::{AuthError, RenderError};
///
/// struct ProblemJson;
///
/// impl RenderError for ProblemJson {
///     fn render(&self, error: &AuthError) -> Response<Bytes> {
///         let body = serde_json::json!({
///             "type": "about:blank",
///             "title": error.code(),
///             "status": error.status().as_u16(),
///             "detail": error.message(),
///         });
///         let mut response = Response::new(Bytes::from(body.to_string()));
///         *response.status_mut() = error.status();
///         response.headers_mut().insert(
///             header::CONTENT_TYPE,
///             header::HeaderValue::from_static("application/problem+json"),
///         );
///         response
///     }
/// }
///
/// let response = ProblemJson.render(&AuthError::QuotaExhausted);
/// assert_eq!(response.status(), 403);
/// ```
pub trait RenderError: Send + Sync + 'static {
    /// The response for a refused plain HTTP request.
    fn render(&self, error: &AuthError) -> Response<Bytes>;
}

/// The default renderer: keygate's JSON error envelope with `WWW-Authenticate` on 401 and
/// scope-related 403, `Retry-After` on 429, and `Cache-Control: no-store` on every refusal.
///
/// ```
/// use keygate::error::{AuthError, JsonErrors, RenderError};
///
/// let response = JsonErrors::new().with_realm("docs-api").unwrap().render(&AuthError::UnknownKey);
/// assert_eq!(response.status(), 401);
/// assert_eq!(
///     response.headers()["www-authenticate"],
///     "Bearer realm=\"docs-api\", error=\"invalid_token\""
/// );
/// assert_eq!(response.headers()["cache-control"], "no-store");
/// assert_eq!(
///     response.body().as_ref(),
///     br#"{"success":false,"error":{"code":"UNAUTHORIZED","message":"Invalid API key"}}"#
/// );
/// ```
#[derive(Debug, Clone)]
pub struct JsonErrors {
    realm: String,
}

impl Default for JsonErrors {
    fn default() -> Self {
        JsonErrors {
            realm: "api".into(),
        }
    }
}

/// A realm must be visible ASCII without `"` or `\`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("realm must be 1 to 64 visible ASCII characters without `\"` or `\\`")]
pub struct InvalidRealm;

impl JsonErrors {
    /// The default renderer with realm `api`.
    pub fn new() -> Self {
        JsonErrors::default()
    }

    /// Sets the realm of `WWW-Authenticate`.
    pub fn with_realm(mut self, realm: &str) -> Result<Self, InvalidRealm> {
        let ok = (1..=64).contains(&realm.len())
            && realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        if !ok {
            return Err(InvalidRealm);
        }
        self.realm = realm.to_owned();
        Ok(self)
    }

    fn www_authenticate(&self, error: &AuthError) -> Option<String> {
        let mut value = format!("Bearer realm=\"{}\"", self.realm);
        match error {
            AuthError::MissingCredential => {}
            AuthError::InsufficientScope(scope) => {
                value.push_str(&format!(
                    ", error=\"insufficient_scope\", scope=\"{scope}\""
                ));
            }
            e => value.push_str(&format!(", error=\"{}\"", e.bearer_error()?)),
        }
        Some(value)
    }
}

impl RenderError for JsonErrors {
    fn render(&self, error: &AuthError) -> Response<Bytes> {
        let mut response = Response::new(envelope(error.code(), &error.message()));
        *response.status_mut() = error.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, no_store());
        if let Some(value) = self.www_authenticate(error)
            && let Ok(value) = HeaderValue::try_from(value)
        {
            headers.insert(WWW_AUTHENTICATE, value);
        }
        retry_after(headers, error);
        response
    }
}

/// The error envelope `{"success":false,"error":{"code":…,"message":…}}`, fields in that order.
pub(crate) fn envelope(code: &str, message: &str) -> Bytes {
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        success: bool,
        error: Detail<'a>,
    }
    #[derive(serde::Serialize)]
    struct Detail<'a> {
        code: &'a str,
        message: &'a str,
    }
    let envelope = Envelope {
        success: false,
        error: Detail { code, message },
    };
    // Serializing two strings and a bool into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// Adds `Retry-After` (whole seconds) to the headers of a rate limit's refusal, unless they
/// carry one already: every 429 has it, whoever rendered it.
pub(crate) fn retry_after(headers: &mut HeaderMap, error: &AuthError) {
    if let AuthError::RateLimited { retry_after_secs } = error {
        headers
            .entry(RETRY_AFTER)
            .or_insert_with(|| HeaderValue::from(*retry_after_secs));
    }
}

/// `Cache-Control: no-store`, which every refusal carries: a refusal is about one request and
/// one credential, and no cache may answer another request with it.
pub(crate) fn no_store() -> HeaderValue {
    HeaderValue::from_static("no-store")
}
