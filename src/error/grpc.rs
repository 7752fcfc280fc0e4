use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, TE};
use http::{HeaderValue, Method, Response, StatusCode, Version};
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
    super::retry_after(headers, error);
    response
}

/// Whether the request is a gRPC call, refused the gRPC way: an HTTP/2 `POST` whose content
/// type is `application/grpc`, optionally followed by `+proto`, `+json` or parameters, or a
/// grpc-web call: a `POST` of any HTTP version (browsers and tonic-web's clients use HTTP/1.1)
/// whose content type is `application/grpc-web` or `application/grpc-web-text`, likewise
/// followed or not. An HTTP/1.1 `POST` of `application/grpc` that asks for trailers
/// (`TE: trailers`) is a gRPC call too: it is what a grpc-web call becomes behind a layer that
/// translates it (tonic-web's `GrpcWebLayer`), which turns the gRPC refusal back into grpc-web.
/// Anything else, such as an HTTP/1.1 `GET` that claims a gRPC content type, is plain HTTP and
/// is refused with a real 4xx/5xx status, which monitoring sees as the failure it is.
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
/// let web = http::Request::post("/grpc.health.v1.Health/Check")
///     .header("content-type", "application/grpc-web+proto")
///     .body(())
///     .unwrap();
/// assert!(is_grpc(&RequestHead::from(&web)));
///
/// // A grpc-web call as tonic-web hands it on: HTTP/1.1, `application/grpc`, `TE: trailers`.
/// let translated = http::Request::post("/grpc.health.v1.Health/Check")
///     .header("content-type", "application/grpc")
///     .header("te", "trailers")
///     .body(())
///     .unwrap();
/// assert!(is_grpc(&RequestHead::from(&translated)));
///
/// let get = http::Request::get("/").header("content-type", "application/grpc").body(()).unwrap();
/// assert!(!is_grpc(&RequestHead::from(&get)));
/// ```
pub fn is_grpc(head: &RequestHead<'_>) -> bool {
    protocol(head).is_some()
}

/// The refusal of a gRPC or grpc-web call ([`is_grpc`]): [`grpc_response`], with the content
/// type of the protocol the call was made in. `None` for plain HTTP.
pub(crate) fn grpc_refusal(head: &RequestHead<'_>, error: &AuthError) -> Option<Response<Bytes>> {
    let content_type = protocol(head)?;
    let mut response = grpc_response(error);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Some(response)
}

/// The content type a refusal of this call answers in, if it is a gRPC or grpc-web call.
fn protocol(head: &RequestHead<'_>) -> Option<&'static str> {
    if *head.method != Method::POST {
        return None;
    }
    let content_type = head.headers.get(CONTENT_TYPE)?.as_bytes();
    // grpc-web's trailers-only answer is HTTP 200 with the status in the headers, as gRPC's:
    // its clients read it there, over HTTP/1.1 too.
    if media_type_is(content_type, b"application/grpc-web-text") {
        Some("application/grpc-web-text")
    } else if media_type_is(content_type, b"application/grpc-web") {
        Some("application/grpc-web")
    } else if media_type_is(content_type, b"application/grpc")
        && (head.version == Version::HTTP_2 || asks_for_trailers(head.headers))
    {
        Some("application/grpc")
    } else {
        None
    }
}

/// Whether a `TE` field lists `trailers`, which gRPC calls send and plain HTTP/1.1 clients have
/// no use for (RFC 9110, section 10.1.4: a comma-separated list, case-insensitive).
fn asks_for_trailers(headers: &http::HeaderMap) -> bool {
    headers.get_all(TE).iter().any(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    })
}

/// Whether `value` is `media_type`, alone or followed by a `+suffix` or parameters.
fn media_type_is(value: &[u8], media_type: &[u8]) -> bool {
    value.starts_with(media_type) && matches!(value.get(media_type.len()), None | Some(b'+' | b';'))
}
