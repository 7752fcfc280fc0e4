//! The layer in a real axum server over TCP, with a real HTTP client.

use std::time::Duration;

use crate::common::*;
use axum::{Router, routing::get};
use http::Request;
use keygate::scope::Scope;
use keygate::store::KeyStore;
use keygate::{AuthLayer, Tenant, Verifier};

fn routes(calls: Calls, auth: AuthLayer) -> Router {
    let whoami = move |tenant: Tenant| {
        let calls = calls.clone();
        async move {
            calls.hit();
            axum::Json(serde_json::json!({
                "success": true,
                "data": {
                    "tenant_id": tenant.tenant_id(),
                    "key_id": tenant.key_id(),
                    "scopes": tenant.scopes(),
                    "environment": tenant.environment(),
                    "name": tenant.key_name(),
                    "metadata": tenant.metadata(),
                }
            }))
        }
    };
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/whoami", get(whoami.clone()).route_layer(auth.clone()))
        .route(
            "/v1/admin",
            get(whoami).route_layer(auth.require_scope(Scope::ADMIN)),
        )
}

fn get_with(path: &str, key: Option<&str>) -> Request<String> {
    let mut req = Request::get(path);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    req.body(String::new()).unwrap()
}

#[tokio::test]
async fn authenticated_tenant_reaches_the_handler() {
    let fixture = Fixture::new();
    let calls = Calls::default();
    let auth = AuthLayer::new(Verifier::builder(fixture.store.clone()).build());
    let addr = serve(routes(calls.clone(), auth)).await;

    let ok = send_tcp(
        addr,
        get_with("/v1/whoami", Some(fixture.writer.expose_secret())),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.json(),
        serde_json::json!({"success": true, "data": {
            "tenant_id": "acme", "key_id": "key_writer", "scopes": ["write"],
            "environment": "live", "name": "key_writer name", "metadata": {"team": "core"},
        }})
    );

    let health = send_tcp(addr, get_with("/health", None)).await;
    assert_eq!(
        (health.status, &health.body[..]),
        (http::StatusCode::OK, &b"ok"[..])
    );

    let missing = send_tcp(addr, get_with("/v1/whoami", None)).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.headers["www-authenticate"], WWW_MISSING);
    assert_eq!(missing.headers["content-type"], "application/json");
    assert_eq!(missing.json(), envelope("UNAUTHORIZED", MISSING));

    let forbidden = send_tcp(
        addr,
        get_with("/v1/admin", Some(fixture.writer.expose_secret())),
    )
    .await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(
        forbidden.headers["www-authenticate"],
        "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"admin\""
    );
    assert_eq!(
        forbidden.json(),
        envelope("FORBIDDEN", "API key lacks the required scope: admin")
    );

    let admin = send_tcp(
        addr,
        get_with("/v1/admin", Some(fixture.test_admin.expose_secret())),
    )
    .await;
    assert_eq!(admin.status, 200);
    assert_eq!(calls.count(), 2);
}

async fn assert_fails_closed(store: impl KeyStore) {
    let fixture = Fixture::new();
    let calls = Calls::default();
    let verifier = Verifier::builder(store)
        .store_timeout(Duration::from_millis(100))
        .build();
    let addr = serve(routes(calls.clone(), AuthLayer::new(verifier))).await;
    let reply = send_tcp(
        addr,
        get_with("/v1/whoami", Some(fixture.writer.expose_secret())),
    )
    .await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json(), envelope("SERVICE_UNAVAILABLE", UNAVAILABLE));
    assert!(reply.headers.get("www-authenticate").is_none());
    assert_eq!(calls.count(), 0, "the inner service must not run");
    // Requests refused before any store call are unaffected by the outage.
    let missing = send_tcp(addr, get_with("/v1/whoami", None)).await;
    assert_eq!(missing.status, 401);
}

#[tokio::test]
async fn failing_store_fails_closed() {
    assert_fails_closed(FailingStore).await;
}

#[tokio::test]
async fn hanging_store_times_out_and_fails_closed() {
    assert_fails_closed(HangingStore).await;
}

#[tokio::test]
async fn a_slow_store_that_answers_in_time_is_fine() {
    struct SlowStore(keygate::store::MemoryStore);
    #[async_trait::async_trait]
    impl KeyStore for SlowStore {
        async fn find(&self, digest: &keygate::hash::KeyDigest) -> keygate::store::Lookup {
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.0.find(digest).await
        }
    }
    let fixture = Fixture::new();
    let calls = Calls::default();
    let verifier = Verifier::builder(SlowStore(fixture.store.clone())).build();
    let addr = serve(routes(calls.clone(), AuthLayer::new(verifier))).await;
    let ok = send_tcp(
        addr,
        get_with("/v1/whoami", Some(fixture.reader.expose_secret())),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["data"]["key_id"], "key_reader");
    let revoked = send_tcp(
        addr,
        get_with("/v1/whoami", Some(fixture.revoked.expose_secret())),
    )
    .await;
    assert_eq!(revoked.status, 401);
    assert_eq!(revoked.json(), envelope("UNAUTHORIZED", REVOKED));
    let forbidden = send_tcp(
        addr,
        get_with("/v1/admin", Some(fixture.reader.expose_secret())),
    )
    .await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(calls.count(), 1);
}

#[tokio::test]
async fn tenant_extractor_without_the_layer_fails_closed() {
    let app = Router::new().route(
        "/",
        get(|t: Tenant| async move { t.tenant_id().to_owned() }),
    );
    let addr = serve(app).await;
    let reply = send_tcp(addr, get_with("/", None)).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json(), envelope("UNAUTHORIZED", MISSING));
}
