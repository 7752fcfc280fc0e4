//! The layer in a real axum server over TCP, with a real HTTP client.

use std::time::Duration;

use crate::common::*;
use axum::{Router, routing::get};
use http::Request;
use keygate::scope::Scope;
use keygate::store::KeyStore;
use keygate::verify::VerifierBuilder;
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

/// A verifier whose backend is down, behind a real server: the key is refused with 503 (the
/// envelope, `Cache-Control: no-store`, no challenge), the inner service never runs, the failure
/// is logged as `logged` with no key in the logs, and requests refused before any backend call
/// are unaffected.
async fn assert_fails_closed(
    fixture: &Fixture,
    build: impl FnOnce(VerifierBuilder) -> VerifierBuilder,
    store: impl KeyStore,
    logged: &str,
) {
    let logs = LogCapture::start();
    let calls = Calls::default();
    let verifier = build(Verifier::builder(store))
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
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert!(reply.headers.get("www-authenticate").is_none());
    assert_eq!(calls.count(), 0, "the inner service must not run");
    let text = logs.text();
    assert!(text.contains(logged), "{text}");
    assert!(
        !text.contains(&fixture.writer.expose_secret()[8..]),
        "{text}"
    );
    // Requests refused before any backend call are unaffected by the outage.
    let missing = send_tcp(addr, get_with("/v1/whoami", None)).await;
    assert_eq!(missing.status, 401);
}

const STORE_FAILED: &str = "key store failed; request refused";

#[tokio::test]
async fn failing_store_fails_closed() {
    assert_fails_closed(&Fixture::new(), |b| b, FailingStore, STORE_FAILED).await;
}

#[tokio::test]
async fn hanging_store_times_out_and_fails_closed() {
    assert_fails_closed(&Fixture::new(), |b| b, DownStore::Hangs, STORE_FAILED).await;
}

/// An entitlement source that is down: it fails at once, or never answers.
#[derive(Clone, Copy)]
enum DownPlans {
    Fails,
    Hangs,
}

#[async_trait::async_trait]
impl keygate::plan::EntitlementSource for DownPlans {
    async fn entitlements(&self, _: &str) -> keygate::plan::EntitlementLookup {
        match self {
            DownPlans::Fails => Err(keygate::backend::BackendError::backend(
                std::io::Error::other("connection refused"),
            )),
            DownPlans::Hangs => std::future::pending().await,
        }
    }
}

#[tokio::test]
async fn entitlement_source_that_fails_or_hangs_fails_closed() {
    for plans in [DownPlans::Fails, DownPlans::Hangs] {
        let fixture = Fixture::new();
        let store = fixture.store.clone();
        assert_fails_closed(
            &fixture,
            |b| b.entitlements(plans),
            store,
            "entitlement source failed; request refused",
        )
        .await;
    }
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

/// Two servers, one with the default body and one with `inner_body()`, answer the same
/// requests with the same status, headers and body: admitted (with the five limit headers),
/// refused by the rate limit, refused for a missing or unknown key. The handler sees every
/// header the client sent but the one the key came in.
#[tokio::test]
async fn inner_body_answers_exactly_as_the_default_body() {
    use keygate::limit::{ManualClock, MemoryLimiter, Quota, QuotaPeriod, RateLimit};
    use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};

    const T0: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
    let fixture = Fixture::new();
    let calls = Calls::default();
    let app = |inner_body: bool| {
        let plans = MemoryEntitlements::new();
        plans.set(
            "acme",
            TenantEntitlements::active(Plan {
                name: "pro".into(),
                rate_limit: Some(RateLimit::per_minute(2)),
                quota: Some(Quota {
                    limit: 10,
                    period: QuotaPeriod::Day,
                }),
                ..Plan::default()
            }),
        );
        let verifier = Verifier::builder(fixture.store.clone())
            .entitlements(plans)
            .limiter(MemoryLimiter::with_clock(ManualClock::at_unix_secs(T0)))
            .build();
        let calls = calls.clone();
        // The names of the headers the handler received, sorted.
        let seen = move |headers: http::HeaderMap| {
            let calls = calls.clone();
            async move {
                calls.hit();
                let mut names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
                names.sort_unstable();
                names.join(",")
            }
        };
        let routes = Router::new().route("/v1/seen", get(seen));
        let auth = AuthLayer::new(verifier);
        if inner_body {
            routes.layer(auth.inner_body())
        } else {
            routes.layer(auth)
        }
    };
    let (wrapped, inner) = (serve(app(false)).await, serve(app(true)).await);
    let reader = fixture.reader.expose_secret();
    let requests = [
        Request::get("/v1/seen")
            .header("x-api-key", reader)
            .header("x-other", "1")
            .header("accept", "text/plain"),
        Request::get("/v1/seen")
            .header("authorization", format!("Bearer {reader}"))
            .header("x-other", "2"),
        Request::get("/v1/seen").header("x-api-key", reader),
        Request::get("/v1/seen"),
        Request::get("/v1/seen").header("x-api-key", "sk_live_nope"),
    ];
    let mut replies = Vec::new();
    for request in requests {
        let request = request.body(String::new()).unwrap();
        let (parts, body) = request.into_parts();
        let again = Request::from_parts(parts.clone(), body.clone());
        let from_wrapped = send_tcp(wrapped, Request::from_parts(parts, body)).await;
        let from_inner = send_tcp(inner, again).await;
        let without_date = |h: &http::HeaderMap| {
            let mut h = h.clone();
            h.remove("date");
            h
        };
        assert_eq!(from_inner.status, from_wrapped.status);
        assert_eq!(
            without_date(&from_inner.headers),
            without_date(&from_wrapped.headers)
        );
        assert_eq!(from_inner.body, from_wrapped.body);
        replies.push(from_inner);
    }

    let limit_headers = |reply: &Reply| -> Vec<String> {
        [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "ratelimit-policy",
            "ratelimit",
        ]
        .iter()
        .map(|name| reply.headers[*name].to_str().unwrap().to_owned())
        .collect()
    };
    let policy = "\"tenant\";q=2;w=60, \"quota\";q=10;w=86400";
    // Admitted by the API-key header: only that header is gone.
    let [by_header, by_bearer, limited, missing, unknown] = &replies[..] else {
        unreachable!()
    };
    assert_eq!(by_header.status, 200);
    assert_eq!(&by_header.body[..], b"accept,host,x-other");
    assert_eq!(
        limit_headers(by_header),
        [
            "2",
            "1",
            &(T0 + 30).to_string(),
            policy,
            "\"tenant\";r=1;t=30, \"quota\";r=9;t=86400"
        ]
    );
    // Admitted by `Authorization: Bearer`: only that header is gone.
    assert_eq!(by_bearer.status, 200);
    assert_eq!(&by_bearer.body[..], b"host,x-other");
    assert_eq!(
        limit_headers(by_bearer),
        [
            "2",
            "0",
            &(T0 + 60).to_string(),
            policy,
            "\"tenant\";r=0;t=60, \"quota\";r=8;t=86400"
        ]
    );
    // Refused by the rate limit: the envelope, `Retry-After` and the limit headers.
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers["retry-after"], "30");
    assert_eq!(limited.headers["cache-control"], "no-store");
    assert_eq!(limited.json()["error"]["code"], "RATE_LIMITED");
    assert_eq!(
        limit_headers(limited),
        [
            "2",
            "0",
            &(T0 + 60).to_string(),
            policy,
            "\"tenant\";r=0;t=60, \"quota\";r=8;t=86400"
        ]
    );
    assert_eq!(missing.status, 401);
    assert_eq!(missing.headers["www-authenticate"], WWW_MISSING);
    assert_eq!(missing.json(), envelope("UNAUTHORIZED", MISSING));
    assert_eq!(unknown.status, 401);
    assert!(unknown.headers.get("x-ratelimit-limit").is_none());
    // Two admitted requests on each server reached a handler; no refusal did.
    assert_eq!(calls.count(), 4);
}

/// Two `AuthLayer`s on one route (`write` inside, `read` outside): the outer one verifies the
/// key and counts it against the limits once; the inner one reuses its tenant (the credential
/// is stripped by then) and checks only its own scope.
#[tokio::test]
async fn nested_layers_verify_once_and_each_checks_its_scope() {
    use keygate::key::{Environment, KeyFormat};
    use keygate::limit::{ManualClock, MemoryLimiter, Quota, QuotaPeriod};
    use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};

    let fixture = Fixture::new();
    let other = KeyFormat::default().generate(Environment::Live);
    fixture
        .store
        .put(record(&other, "key_other", "acme", &["billing"]));
    let plans = MemoryEntitlements::new();
    plans.set(
        "acme",
        TenantEntitlements::active(Plan {
            name: "pro".into(),
            quota: Some(Quota {
                limit: 100,
                period: QuotaPeriod::Day,
            }),
            ..Plan::default()
        }),
    );
    let limiter = MemoryLimiter::with_clock(ManualClock::at_unix_secs(1_767_225_600));
    let verifier = Verifier::builder(fixture.store.clone())
        .entitlements(plans)
        .limiter(limiter.clone())
        .build();
    let auth = AuthLayer::new(verifier);
    let calls = Calls::default();
    let counted = calls.clone();
    let handler = move |tenant: Tenant| {
        let calls = counted.clone();
        async move {
            calls.hit();
            tenant.key_id().to_owned()
        }
    };
    let app = Router::new().route(
        "/v1/docs",
        get(handler)
            .route_layer(auth.require_scope(Scope::WRITE))
            .route_layer(auth.require_scope(Scope::READ)),
    );
    let addr = serve(app).await;

    // `write` (which implies `read`): through both.
    let ok = send_tcp(
        addr,
        get_with("/v1/docs", Some(fixture.writer.expose_secret())),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(&ok.body[..], b"key_writer");
    assert_eq!(ok.headers["ratelimit"], "\"quota\";r=99;t=86400");
    assert_eq!(limiter.quota_used("acme"), 1);

    // `read` only: the outer layer admits (and counts), the inner one refuses `write`.
    let inner_refuses = send_tcp(
        addr,
        get_with("/v1/docs", Some(fixture.reader.expose_secret())),
    )
    .await;
    assert_eq!(inner_refuses.status, 403);
    assert_eq!(
        inner_refuses.headers["www-authenticate"],
        "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"write\""
    );
    assert_eq!(
        inner_refuses.json(),
        envelope("FORBIDDEN", "API key lacks the required scope: write")
    );
    assert_eq!(inner_refuses.headers["ratelimit"], "\"quota\";r=98;t=86400");
    assert_eq!(limiter.quota_used("acme"), 2);

    // Neither: the outer layer refuses `read`, before any count.
    let outer_refuses = send_tcp(addr, get_with("/v1/docs", Some(other.expose_secret()))).await;
    assert_eq!(outer_refuses.status, 403);
    assert_eq!(
        outer_refuses.json(),
        envelope("FORBIDDEN", "API key lacks the required scope: read")
    );
    assert_eq!(limiter.quota_used("acme"), 2);

    let missing = send_tcp(addr, get_with("/v1/docs", None)).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json(), envelope("UNAUTHORIZED", MISSING));
    assert_eq!(calls.count(), 1);
}

/// A `Tenant` that other code put into the request authenticates nothing: only one an
/// `AuthLayer` admitted is reused by a nested layer.
#[tokio::test]
async fn a_tenant_put_in_the_request_by_other_code_is_not_trusted() {
    let fixture = Fixture::new();
    let forged = Tenant::new(std::sync::Arc::new(record(
        &fixture.unknown,
        "key_forged",
        "acme",
        &["admin"],
    )));
    let calls = Calls::default();
    let auth = AuthLayer::new(Verifier::builder(fixture.store.clone()).build());
    let app = routes(calls.clone(), auth).layer(tower::util::MapRequestLayer::new(
        move |mut req: Request<axum::body::Body>| {
            req.extensions_mut().insert(forged.clone());
            req
        },
    ));
    let addr = serve(app).await;
    let missing = send_tcp(addr, get_with("/v1/admin", None)).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json(), envelope("UNAUTHORIZED", MISSING));
    let reader = send_tcp(
        addr,
        get_with("/v1/admin", Some(fixture.reader.expose_secret())),
    )
    .await;
    assert_eq!(reader.status, 403);
    assert_eq!(calls.count(), 0);
}

/// `ScopePolicy::per_method` over TCP: each method needs its own scope, unlisted methods the
/// fallback; `write` still grants `read`.
#[tokio::test]
async fn per_method_scopes_over_tcp() {
    use http::Method;
    use keygate::scope::ScopePolicy;

    let fixture = Fixture::new();
    let policy = ScopePolicy::per_method(
        [
            (Method::GET, Scope::READ),
            (Method::POST, Scope::WRITE),
            (Method::DELETE, Scope::ADMIN),
        ],
        Some(Scope::ADMIN),
    );
    let auth =
        AuthLayer::new(Verifier::builder(fixture.store.clone()).build()).scope_policy(policy);
    let handler = |tenant: Tenant| async move { tenant.key_id().to_owned() };
    let app = Router::new().route(
        "/v1/documents",
        get(handler)
            .post(handler)
            .delete(handler)
            .patch(handler)
            .route_layer(auth),
    );
    let addr = serve(app).await;
    let send = |method: Method, key: &keygate::key::ApiKey| {
        send_tcp(
            addr,
            Request::builder()
                .method(method)
                .uri("/v1/documents")
                .header("x-api-key", key.expose_secret())
                .body(String::new())
                .unwrap(),
        )
    };
    for (method, key, id) in [
        (Method::GET, &fixture.reader, "key_reader"),
        (Method::GET, &fixture.writer, "key_writer"),
        (Method::POST, &fixture.writer, "key_writer"),
        (Method::DELETE, &fixture.test_admin, "key_test_admin"),
        (Method::PATCH, &fixture.test_admin, "key_test_admin"),
    ] {
        let reply = send(method.clone(), key).await;
        assert_eq!(reply.status, 200, "{method} {id}");
        assert_eq!(reply.body, id, "{method} {id}");
    }
    for (method, key, needed) in [
        (Method::POST, &fixture.reader, "write"),
        (Method::DELETE, &fixture.writer, "admin"),
        (Method::PATCH, &fixture.writer, "admin"),
    ] {
        let reply = send(method.clone(), key).await;
        assert_eq!(reply.status, 403, "{method} needs {needed}");
        assert_eq!(
            reply.json(),
            envelope(
                "FORBIDDEN",
                &format!("API key lacks the required scope: {needed}")
            ),
            "{method}"
        );
        assert_eq!(
            reply.headers["www-authenticate"],
            format!("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"{needed}\""),
            "{method}"
        );
    }
}
