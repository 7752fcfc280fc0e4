use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Version};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::auth_error::AuthError;
use super::render::no_store;
use crate::request::RequestHead;

/// Characters the gRPC spec requires to be percent-encoded in `grpc-message`.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// A trailers-only gRPC answer for `error`: HTTP 200, `grpc-status` and `grpc-message`
/// ([`AuthError::grpc_message`], percent-encoded) (and
/// `Cache-Control: no-store`, like every refusal).
///
/// ```
/// use keygate::error::{AuthError, grpc_response};
///
/// let response = grpc_response(&AuthError::RateLimited { retry_after_secs: 3 });
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.headers()["grpc-status"], "8");
/// assert_eq!(response.headers()["cache-control"], "no-store");
/// ```
pub fn grpc_response(error: &AuthError) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(CACHE_CONTROL, no_store());
    headers.insert(
        "grpc-status",
        HeaderValue::from(u16::from(error.grpc_code())),
    );
    let message = error.grpc_message();
    let encoded = utf8_percent_encode(&message, GRPC_MESSAGE).to_string();
    if let Ok(value) = HeaderValue::try_from(encoded) {
        headers.insert("grpc-message", value);
    }
    if let AuthError::RateLimited { retry_after_secs } = error {
        headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
    }
    response
}

/// Whether the request is a gRPC call: an HTTP/2 `POST` whose content type is
/// `application/grpc`, optionally followed by `+proto`, `+json` or parameters. Anything else,
/// such as an HTTP/1.1 `GET` that claims a gRPC content type, is plain HTTP and is refused with
/// a real 4xx/5xx status, which monitoring sees as the failure it is.
///
/// ```
/// use keygate::error::is_grpc;
/// use keygate::request::RequestHead;
///
/// let call = http::Request::post("/grpc.health.v1.Health/Check")
///     .version(http::Version::HTTP_2)
///     .header("content-type", "application/grpc+proto")
///     .body(())
///     .unwrap();
/// assert!(is_grpc(&RequestHead::from(&call)));
///
/// let get = http::Request::get("/").header("content-type", "application/grpc").body(()).unwrap();
/// assert!(!is_grpc(&RequestHead::from(&get)));
/// ```
pub fn is_grpc(head: &RequestHead<'_>) -> bool {
    head.version == Version::HTTP_2
        && *head.method == Method::POST
        && grpc_content_type(head.headers)
}

fn grpc_content_type(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(b"application/grpc")
            && matches!(v.get(b"application/grpc".len()), None | Some(b'+' | b';'))
    })
}
