//! The development-mode tenant header: only with the feature and the runtime switch.
#![cfg(all(feature = "dev-mode", feature = "axum"))]

mod common;

use axum::{Router, body::Body, routing::get};
use common::*;
use http::{HeaderName, Request};
use http_body_util::BodyExt;
use keygate::{AuthLayer, Tenant, Verifier};
use tower::ServiceExt;

fn app(verifier: Verifier) -> Router {
    Router::new()
        .route(
            "/",
            get(|t: Tenant| async move { format!("{}/{}", t.tenant_id(), t.key_id()) }),
        )
        .layer(AuthLayer::new(verifier))
}

async fn call(app: &Router, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = Request::get("/");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let response = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn tenant_header_only_when_switched_on_and_no_key_present() {
    let fixture = Fixture::new();
    let off = app(Verifier::builder(fixture.store.clone()).build());
    assert_eq!(call(&off, &[("x-tenant-id", "demo")]).await.0, 401);

    let logs = LogCapture::start();
    let on = app(Verifier::builder(fixture.store.clone())
        .dev_tenant_header(Some(HeaderName::from_static("x-tenant-id")))
        .build());
    assert!(
        logs.text().contains("DEVELOPMENT MODE"),
        "a warning at start"
    );
    assert_eq!(
        call(&on, &[("x-tenant-id", "demo")]).await,
        (200, "demo/dev".into())
    );
    assert_eq!(call(&on, &[]).await.0, 401);
    // A key present is always verified normally, and wins over the header.
    let w = fixture.writer.expose_secret();
    assert_eq!(
        call(&on, &[("x-tenant-id", "demo"), ("x-api-key", w)]).await,
        (200, "acme/key_writer".into())
    );
    let r = fixture.revoked.expose_secret();
    assert_eq!(
        call(&on, &[("x-tenant-id", "demo"), ("x-api-key", r)])
            .await
            .0,
        401
    );
}
