//! Property tests: hostile input never panics and never authenticates; custom rendering.

use crate::common::*;
use axum::{Router, body::Body, routing::get};
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use keygate::key::{Environment, KeyFormat};
use keygate::request::RequestHead;
use keygate::{AuthLayer, Verifier};
use proptest::prelude::*;
use tower::ServiceExt;

proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,200}") {
        let _ = KeyFormat::default().parse(&s);
        let _ = KeyFormat::default().with_checksum(false).parse(&s);
    }

    #[test]
    fn mutated_keys_never_parse(pos in 8usize..80, byte in any::<u8>()) {
        let format = KeyFormat::default();
        let key = format.generate(Environment::Live);
        let mut bytes = key.expose_secret().as_bytes().to_vec();
        prop_assume!(bytes[pos] != byte);
        bytes[pos] = byte;
        if let Ok(s) = std::str::from_utf8(&bytes) {
            prop_assert!(format.parse(s).is_err());
        }
    }

    #[test]
    fn arbitrary_header_bytes_are_refused_cleanly(value in proptest::collection::vec(any::<u8>(), 0..300), bearer in any::<bool>()) {
        let Ok(value) = HeaderValue::from_bytes(&value) else { return Ok(()) };
        let fixture = Fixture::new();
        let verifier = Verifier::builder(fixture.store.clone()).build();
        let (name, value) = if bearer {
            let mut v = b"Bearer ".to_vec();
            v.extend_from_slice(value.as_bytes());
            ("authorization", HeaderValue::from_bytes(&v).unwrap())
        } else {
            ("x-api-key", value)
        };
        let req = Request::get("/").header(name, value).body(()).unwrap();
        // The memory store answers at once, so the verdict comes without a future.
        let rejection = verifier.check_now(&RequestHead::from(&req), None).unwrap().unwrap_err();
        prop_assert_eq!(rejection.error.status(), 401);
    }
}

#[tokio::test]
async fn custom_renderer_for_plain_http_grpc_untouched() {
    use bytes::Bytes;
    use keygate::error::{AuthError, RenderError};
    struct ProblemJson;
    impl RenderError for ProblemJson {
        fn render(&self, error: &AuthError) -> http::Response<Bytes> {
            let body = serde_json::json!({"title": error.code(), "status": error.status().as_u16(), "detail": error.message()});
            let mut r = http::Response::new(Bytes::from(body.to_string()));
            *r.status_mut() = error.status();
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("application/problem+json"),
            );
            r
        }
    }
    let fixture = Fixture::new();
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        AuthLayer::new(Verifier::builder(fixture.store.clone()).build()).renderer(ProblemJson),
    );
    let response = app
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"title": "UNAUTHORIZED", "status": 401, "detail": MISSING})
    );

    let grpc = Request::post("/")
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(grpc).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "16");
}
