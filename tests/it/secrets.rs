//! No secret leaves: not in logs at TRACE, not in Debug output, not in error bodies.

use crate::common::*;
use axum::{Router, body::Body, routing::get};
use http::Request;
use http_body_util::BodyExt;
use keygate::scope::ScopePolicy;
use keygate::{AuthLayer, Tenant, Verifier};
use tower::ServiceExt;

// One test function in this file: the log capture is per thread, and a test running beside it
// on another thread can make tracing miss events on this one.
#[tokio::test]
async fn no_secret_in_logs_debug_or_bodies() {
    let logs = LogCapture::start();
    let fixture = Fixture::new();
    let verifier = Verifier::builder(fixture.store.clone())
        .accept_test_keys(false)
        .build();
    let app = Router::new()
        .route(
            "/",
            get(|t: Tenant| async move { format!("{t:?}") }).post(|| async { "posted" }),
        )
        .layer(AuthLayer::new(verifier.clone()).scope_policy(ScopePolicy::by_method()));

    let mut bodies = String::new();
    let mut variants = Vec::new();
    for key in fixture.secrets() {
        let mut truncated = key.clone();
        truncated.pop();
        variants.extend([
            ("x-api-key", key.clone()),
            ("authorization", format!("Bearer {key}")),
            ("authorization", format!("Basic {key}")),
            ("x-api-key", truncated),
        ]);
    }
    for (header, value) in &variants {
        for method in ["GET", "POST"] {
            let req = Request::builder()
                .method(method)
                .uri("/")
                .header(*header, value)
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(req).await.unwrap();
            bodies.push_str(&format!("{:?}", response.headers()));
            let body = response.into_body().collect().await.unwrap().to_bytes();
            bodies.push_str(&String::from_utf8_lossy(&body));
        }
    }
    let debug = format!(
        "{verifier:?} {:?} {:?} {:?}",
        fixture.writer,
        fixture.store,
        keygate::key::KeyFormat::default()
            .parse(fixture.reader.expose_secret())
            .unwrap()
    );
    let text = logs.text();
    // The capture works: refusals and acceptances were logged with key ids and prefixes.
    assert!(text.contains("key refused"), "{text}");
    assert!(text.contains("key accepted"), "{text}");
    assert!(text.contains("key_revoked"), "{text}");
    assert!(text.contains("credential refused"), "{text}");
    for secret in fixture.secrets() {
        // The body of the key (after the visible prefix) is what must never appear.
        let body = &secret[8..];
        assert!(!text.contains(body), "secret in logs");
        assert!(!bodies.contains(body), "secret in a response");
        assert!(!debug.contains(body), "secret in Debug output");
        // Not even a long fragment.
        assert!(!text.contains(&body[..16]) && !bodies.contains(&body[..16]));
    }
    request_head_debug_redacts_the_key().await;
}

/// The request head that `public_when` and `ScopePolicy::custom` receive prints no credential.
async fn request_head_debug_redacts_the_key() {
    use std::sync::{Arc, Mutex};
    let fixture = Fixture::new();
    let shown = Arc::new(Mutex::new(String::new()));
    let (in_public, in_policy) = (shown.clone(), shown.clone());
    let layer = AuthLayer::new(Verifier::builder(fixture.store.clone()).build())
        .public_when(move |head| {
            in_public.lock().unwrap().push_str(&format!("{head:?}\n"));
            false
        })
        .scope_policy(ScopePolicy::custom(move |head| {
            in_policy.lock().unwrap().push_str(&format!("{head:?}\n"));
            None
        }));
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer);
    let key = fixture.writer.expose_secret();
    for (name, value) in [
        ("x-api-key", key.to_owned()),
        ("authorization", format!("Bearer {key}")),
    ] {
        let req = Request::get("/")
            .header(name, value)
            .header("accept", "text/plain")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 200);
    }
    let shown = shown.lock().unwrap().clone();
    assert_eq!(shown.lines().count(), 4, "{shown}");
    assert!(!shown.contains(&key[8..]), "{shown}");
    assert_eq!(shown.matches("\"x-api-key\": \"<redacted>\"").count(), 2);
    assert_eq!(
        shown.matches("\"authorization\": \"<redacted>\"").count(),
        2
    );
    assert_eq!(shown.matches("\"accept\": \"text/plain\"").count(), 4);
}
