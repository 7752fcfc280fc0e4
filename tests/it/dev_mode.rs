//! The development-mode tenant header, over TCP: only with the feature and the runtime switch;
//! a `test` tenant that names itself, validated, stripped before the service runs, refused by
//! servers that refuse test keys and by the management API.

use std::net::SocketAddr;

use crate::common::*;
use axum::{Router, routing::get};
use http::{HeaderName, Request, StatusCode};
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::limit::{Quota, QuotaPeriod};
use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
use keygate::scope::Scope;
use keygate::store::ManagedKeyStore;
use keygate::{AuthLayer, Tenant, Verifier};

const INVALID_TENANT: &str = "Invalid tenant id in development mode: use 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-'";
const TEST_REFUSED: &str = "Test keys are not accepted here: use a live key";
const NO_MANAGEMENT: &str = "Management calls are not available in development mode";

fn dev(builder: keygate::verify::VerifierBuilder) -> Verifier {
    builder
        .dev_tenant_header(Some(HeaderName::from_static("x-tenant-id")))
        .build()
}

/// `/` answers who the caller is and whether the service saw the tenant header;
/// `/v1/api-keys` is the management API.
async fn serve_app(verifier: Verifier, manager: KeyManager) -> SocketAddr {
    let whoami = |t: Tenant, req: Request<axum::body::Body>| async move {
        axum::Json(serde_json::json!({
            "tenant_id": t.tenant_id(),
            "key_id": t.key_id(),
            "environment": t.environment(),
            "development": t.is_development(),
            "saw_tenant_header": req.headers().contains_key("x-tenant-id"),
        }))
    };
    let auth = AuthLayer::new(verifier);
    let app = Router::new()
        .route("/", get(whoami).route_layer(auth.clone()))
        .merge(keygate::api::router(manager).route_layer(auth.require_scope(Scope::ADMIN)));
    serve(app).await
}

async fn get_as(addr: SocketAddr, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get("/");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    send_tcp(addr, req.body(String::new()).unwrap()).await
}

fn whoami(tenant: &str, key: &str, environment: &str, development: bool) -> serde_json::Value {
    serde_json::json!({
        "tenant_id": tenant, "key_id": key, "environment": environment,
        "development": development, "saw_tenant_header": false,
    })
}

// One test function: the log capture is per thread, and a test running beside it on another
// thread can make tracing miss events on this one.
#[tokio::test]
async fn development_mode() {
    tenant_header_only_when_switched_on_and_no_key_present().await;
    tenant_ids_are_validated().await;
    refused_where_test_keys_are_refused().await;
    management_calls_are_refused().await;
    public_routes_never_see_the_header().await;
    the_tenants_plan_and_limits_apply().await;
}

/// The quota's remaining requests, from the `RateLimit` header (`"quota";r=<n>;t=<secs>`).
fn quota_left(reply: &Reply) -> u64 {
    let value = reply.headers["ratelimit"].to_str().unwrap();
    let rest = value
        .strip_prefix("\"quota\";r=")
        .unwrap_or_else(|| panic!("{value:?}"));
    let (left, secs) = rest
        .split_once(";t=")
        .unwrap_or_else(|| panic!("{value:?}"));
    assert!(secs.parse::<u64>().is_ok_and(|s| s > 0), "{value:?}");
    left.parse().unwrap()
}

/// The header stands in for a key of the tenant it names: that tenant's status, plan and
/// limits apply, and its requests count against them with the tenant's keys' requests.
async fn the_tenants_plan_and_limits_apply() {
    let fixture = Fixture::new();
    let plans = MemoryEntitlements::new();
    let quota = Quota {
        limit: 3,
        period: QuotaPeriod::Month,
    };
    plans.set(
        "acme",
        TenantEntitlements::active(Plan {
            name: "small".into(),
            quota: Some(quota),
            ..Plan::default()
        }),
    );
    let verifier = dev(Verifier::builder(fixture.store.clone()).entitlements(plans.clone()));
    let addr = serve_app(verifier, KeyManager::builder(fixture.store.clone()).build()).await;

    let keyed = get_as(addr, &[("x-api-key", fixture.writer.expose_secret())]).await;
    assert_eq!(keyed.status, StatusCode::OK);
    assert_eq!(quota_left(&keyed), 2);
    for left in [1, 0] {
        let named = get_as(addr, &[("x-tenant-id", "acme")]).await;
        assert_eq!(named.status, StatusCode::OK);
        assert_eq!(named.json(), whoami("acme", "dev", "test", true));
        assert_eq!(quota_left(&named), left);
    }
    // The quota is used up: by the header as by the key.
    let exhausted = envelope("FORBIDDEN", "Quota exhausted for the current period");
    let named = get_as(addr, &[("x-tenant-id", "acme")]).await;
    assert_eq!(named.status, StatusCode::FORBIDDEN);
    assert_eq!(named.json(), exhausted);
    let keyed = get_as(addr, &[("x-api-key", fixture.writer.expose_secret())]).await;
    assert_eq!(keyed.status, StatusCode::FORBIDDEN);
    assert_eq!(keyed.json(), exhausted);

    // A tenant with no plan, and a suspended one, are refused as their keys would be.
    let unknown = get_as(addr, &[("x-tenant-id", "demo")]).await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);
    assert_eq!(
        unknown.json(),
        envelope("FORBIDDEN", "Tenant has no active plan")
    );
    plans.set("demo", TenantEntitlements::active(Plan::default()));
    assert_eq!(
        get_as(addr, &[("x-tenant-id", "demo")]).await.status,
        StatusCode::OK
    );
    plans.suspend("demo");
    let suspended = get_as(addr, &[("x-tenant-id", "demo")]).await;
    assert_eq!(suspended.status, StatusCode::FORBIDDEN);
    assert_eq!(suspended.json(), envelope("FORBIDDEN", "Tenant suspended"));
}

/// A public route authenticates nothing, so it must not read a tenant from the header either:
/// the header is stripped there too, in development mode.
async fn public_routes_never_see_the_header() {
    let fixture = Fixture::new();
    let saw = |req: Request<axum::body::Body>| async move {
        req.headers().contains_key("x-tenant-id").to_string()
    };
    let auth = AuthLayer::new(dev(Verifier::builder(fixture.store.clone())))
        .public_when(|head| head.uri.path() == "/public");
    let app = Router::new().route("/public", get(saw)).layer(auth);
    let addr = serve(app).await;
    let req = Request::get("/public")
        .header("x-tenant-id", "demo")
        .body(String::new())
        .unwrap();
    let reply = send_tcp(addr, req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "false");
}

async fn tenant_header_only_when_switched_on_and_no_key_present() {
    let fixture = Fixture::new();
    let manager = KeyManager::builder(fixture.store.clone()).build();
    let off = serve_app(
        Verifier::builder(fixture.store.clone()).build(),
        manager.clone(),
    )
    .await;
    let refused = get_as(off, &[("x-tenant-id", "demo")]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json(), envelope("UNAUTHORIZED", MISSING));

    let logs = LogCapture::start();
    let on = serve_app(dev(Verifier::builder(fixture.store.clone())), manager).await;
    assert!(
        logs.text().contains("DEVELOPMENT MODE"),
        "a warning at start"
    );
    // A `test` tenant marked as development; the service never sees the header.
    let named = get_as(on, &[("x-tenant-id", "demo")]).await;
    assert_eq!(named.status, StatusCode::OK);
    assert_eq!(named.json(), whoami("demo", "dev", "test", true));

    let missing = get_as(on, &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.json(), envelope("UNAUTHORIZED", MISSING));

    // A key present is always verified normally and wins over the header, which is stripped.
    let w = fixture.writer.expose_secret();
    let keyed = get_as(on, &[("x-tenant-id", "demo"), ("x-api-key", w)]).await;
    assert_eq!(keyed.status, StatusCode::OK);
    assert_eq!(keyed.json(), whoami("acme", "key_writer", "live", false));
    let r = fixture.revoked.expose_secret();
    let revoked = get_as(on, &[("x-tenant-id", "demo"), ("x-api-key", r)]).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(revoked.json(), envelope("UNAUTHORIZED", REVOKED));
}

async fn tenant_ids_are_validated() {
    let fixture = Fixture::new();
    let addr = serve_app(
        dev(Verifier::builder(fixture.store.clone())),
        KeyManager::builder(fixture.store.clone()).build(),
    )
    .await;
    let longest = "a".repeat(64);
    for valid in ["demo", "Acme_Corp-2.eu", "7", longest.as_str()] {
        let reply = get_as(addr, &[("x-tenant-id", valid)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{valid:?}");
        assert_eq!(reply.json(), whoami(valid, "dev", "test", true));
    }
    let too_long = "a".repeat(65);
    // (Leading and trailing spaces never arrive: HTTP strips them, so " " arrives empty.)
    for invalid in ["", " ", "acme corp", "a/b", "a:b", "*", too_long.as_str()] {
        let reply = get_as(addr, &[("x-tenant-id", invalid)]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{invalid:?}");
        assert_eq!(
            reply.json(),
            envelope("UNAUTHORIZED", INVALID_TENANT),
            "{invalid:?}"
        );
        assert_eq!(
            reply.headers["www-authenticate"], WWW_INVALID,
            "{invalid:?}"
        );
    }
    // Not UTF-8.
    let req = Request::get("/")
        .header(
            "x-tenant-id",
            http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        )
        .body(String::new())
        .unwrap();
    let reply = send_tcp(addr, req).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json(), envelope("UNAUTHORIZED", INVALID_TENANT));
    // Two tenants are ambiguous, like two keys.
    let twice = get_as(addr, &[("x-tenant-id", "demo"), ("x-tenant-id", "demo")]).await;
    assert_eq!(twice.status, StatusCode::UNAUTHORIZED);
    assert_eq!(twice.json(), envelope("UNAUTHORIZED", MULTIPLE));
}

async fn refused_where_test_keys_are_refused() {
    let fixture = Fixture::new();
    let addr = serve_app(
        dev(Verifier::builder(fixture.store.clone()).accept_test_keys(false)),
        KeyManager::builder(fixture.store.clone()).build(),
    )
    .await;
    let refused = get_as(addr, &[("x-tenant-id", "demo")]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json(), envelope("UNAUTHORIZED", TEST_REFUSED));
    // Live keys still pass.
    let live = get_as(addr, &[("x-api-key", fixture.writer.expose_secret())]).await;
    assert_eq!(live.status, StatusCode::OK);
}

async fn management_calls_are_refused() {
    let fixture = Fixture::new();
    let manager = KeyManager::builder(fixture.store.clone()).build();
    let admin = manager
        .issue("setup", "demo", NewKey::new("admin", ["admin"]))
        .await
        .unwrap();
    let addr = serve_app(dev(Verifier::builder(fixture.store.clone())), manager).await;
    let body = serde_json::json!({"name": "ci", "scopes": ["read"]}).to_string();
    let calls = [
        Request::post("/v1/api-keys")
            .header("content-type", "application/json")
            .body(body.clone()),
        Request::get("/v1/api-keys").body(String::new()),
        Request::post(format!("/v1/api-keys/{}/rotate", admin.info.id)).body(String::new()),
        Request::delete(format!("/v1/api-keys/{}", admin.info.id)).body(String::new()),
    ];
    for call in calls {
        let mut call = call.unwrap();
        call.headers_mut()
            .insert("x-tenant-id", http::HeaderValue::from_static("demo"));
        let (method, path) = (call.method().clone(), call.uri().path().to_owned());
        let reply = send_tcp(addr, call).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(
            reply.json(),
            envelope("FORBIDDEN", NO_MANAGEMENT),
            "{method} {path}"
        );
        assert_eq!(reply.headers["cache-control"], "no-store");
    }
    // Nothing was written: the tenant still has just its admin key, unrotated.
    let keys = fixture
        .store
        .list("demo", time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, admin.info.id);
    // A real admin key of the same tenant still manages keys.
    let req = Request::get("/v1/api-keys")
        .header("x-api-key", admin.key.expose_secret())
        .body(String::new())
        .unwrap();
    assert_eq!(send_tcp(addr, req).await.status, StatusCode::OK);
}
