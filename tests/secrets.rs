//! No secret leaves: not in logs at TRACE, not in Debug output, not in error bodies.
#![cfg(feature = "axum")]

mod common;

use axum::{Router, body::Body, routing::get};
use common::*;
use http::Request;
use http_body_util::BodyExt;
use keygate::scope::ScopePolicy;
use keygate::{AuthLayer, Tenant, Verifier};
use tower::ServiceExt;

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
}
