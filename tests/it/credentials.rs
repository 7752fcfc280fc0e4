//! Every credential case through the public layer, with exact statuses, bodies and headers.

use crate::common::*;
use axum::{Router, body::Body, routing::get};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use keygate::scope::ScopePolicy;
use keygate::{AuthLayer, Tenant, Verifier};
use tower::ServiceExt;

fn app(fixture: &Fixture, calls: Calls, verifier: Verifier) -> Router {
    let handler = move |tenant: Tenant, req: Request<Body>| {
        let calls = calls.clone();
        async move {
            calls.hit();
            let saw_key = req.headers().contains_key("x-api-key")
                || req.headers().contains_key("authorization");
            axum::Json(serde_json::json!({
                "tenant_id": tenant.tenant_id(),
                "key_id": tenant.key_id(),
                "saw_credential": saw_key,
            }))
        }
    };
    let _ = fixture;
    Router::new()
        .route("/v1/things", get(handler.clone()).post(handler))
        .layer(AuthLayer::new(verifier).scope_policy(ScopePolicy::by_method()))
}

async fn send(
    app: &Router,
    req: Request<Body>,
) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

struct Case {
    name: &'static str,
    headers: Vec<(&'static str, HeaderValue)>,
    method: &'static str,
    uri: String,
    status: StatusCode,
    message: Option<&'static str>,
    www_authenticate: Option<&'static str>,
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap()
}

fn cases(f: &Fixture) -> Vec<Case> {
    let w = f.writer.expose_secret();
    let r = f.reader.expose_secret();
    let mut bad_checksum = w.to_owned();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == '0' { '1' } else { '0' });
    let other_prefix = w.replacen("sk_", "ak_", 1);
    let mut non_utf8 = w.as_bytes().to_vec();
    non_utf8[10] = 0xff;
    let unauthorized = |name, headers, message, www| Case {
        name,
        headers,
        method: "GET",
        uri: "/v1/things".into(),
        status: StatusCode::UNAUTHORIZED,
        message: Some(message),
        www_authenticate: Some(www),
    };
    vec![
        unauthorized("missing", vec![], MISSING, WWW_MISSING),
        unauthorized(
            "empty x-api-key",
            vec![("x-api-key", hv(""))],
            MALFORMED,
            WWW_INVALID,
        ),
        unauthorized(
            "empty bearer",
            vec![("authorization", hv("Bearer "))],
            MALFORMED,
            WWW_INVALID,
        ),
        unauthorized(
            "bare scheme",
            vec![("authorization", hv("Bearer"))],
            MALFORMED,
            WWW_INVALID,
        ),
        unauthorized(
            "x-api-key twice",
            vec![("x-api-key", hv(w)), ("x-api-key", hv(w))],
            MULTIPLE,
            WWW_INVALID,
        ),
        unauthorized(
            "authorization twice",
            vec![
                ("authorization", hv(&format!("Bearer {w}"))),
                ("authorization", hv(&format!("Bearer {w}"))),
            ],
            MULTIPLE,
            WWW_INVALID,
        ),
        unauthorized(
            "both headers, same key",
            vec![
                ("x-api-key", hv(w)),
                ("authorization", hv(&format!("Bearer {w}"))),
            ],
            MULTIPLE,
            WWW_INVALID,
        ),
        unauthorized(
            "both headers, different keys",
            vec![
                ("x-api-key", hv(r)),
                ("authorization", hv(&format!("Bearer {w}"))),
            ],
            MULTIPLE,
            WWW_INVALID,
        ),
        unauthorized(
            "x-api-key with Basic authorization",
            vec![
                ("x-api-key", hv(w)),
                ("authorization", hv("Basic dXNlcjpwYXNz")),
            ],
            MULTIPLE,
            WWW_INVALID,
        ),
        unauthorized(
            "Basic scheme",
            vec![("authorization", hv("Basic dXNlcjpwYXNz"))],
            UNSUPPORTED,
            WWW_INVALID,
        ),
        unauthorized(
            "non-UTF-8 bytes",
            vec![("x-api-key", HeaderValue::from_bytes(&non_utf8).unwrap())],
            MALFORMED,
            WWW_INVALID,
        ),
        unauthorized(
            "16 KB value",
            vec![("x-api-key", hv(&"a".repeat(16 * 1024)))],
            MALFORMED,
            WWW_INVALID,
        ),
        unauthorized(
            "wrong checksum",
            vec![("x-api-key", hv(&bad_checksum))],
            MALFORMED,
            WWW_INVALID,
        ),
        unauthorized(
            "wrong prefix",
            vec![("x-api-key", hv(&other_prefix))],
            MALFORMED,
            WWW_INVALID,
        ),
        unauthorized(
            "uppercase body",
            vec![("x-api-key", hv(&w.to_uppercase()))],
            MALFORMED,
            WWW_INVALID,
        ),
        unauthorized(
            "unknown key",
            vec![("x-api-key", hv(f.unknown.expose_secret()))],
            INVALID,
            WWW_INVALID,
        ),
        unauthorized(
            "revoked key",
            vec![("x-api-key", hv(f.revoked.expose_secret()))],
            REVOKED,
            WWW_INVALID,
        ),
        unauthorized(
            "expired key",
            vec![("x-api-key", hv(f.expired.expose_secret()))],
            EXPIRED,
            WWW_INVALID,
        ),
        Case {
            uri: format!("/v1/things?api_key={w}&key={w}"),
            ..unauthorized("key only in the query string", vec![], MISSING, WWW_MISSING)
        },
        Case {
            name: "missing scope",
            headers: vec![("x-api-key", hv(r))],
            method: "POST",
            uri: "/v1/things".into(),
            status: StatusCode::FORBIDDEN,
            message: Some("API key lacks the required scope: write"),
            www_authenticate: Some(
                "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"write\"",
            ),
        },
        Case {
            name: "x-api-key",
            headers: vec![("x-api-key", hv(w))],
            method: "POST",
            uri: "/v1/things".into(),
            status: StatusCode::OK,
            message: None,
            www_authenticate: None,
        },
        Case {
            name: "lowercase bearer",
            headers: vec![("authorization", hv(&format!("bearer {w}")))],
            method: "GET",
            uri: "/v1/things".into(),
            status: StatusCode::OK,
            message: None,
            www_authenticate: None,
        },
        Case {
            name: "uppercase BEARER with extra spaces",
            headers: vec![("authorization", hv(&format!("BEARER   {w}  ")))],
            method: "GET",
            uri: "/v1/things".into(),
            status: StatusCode::OK,
            message: None,
            www_authenticate: None,
        },
        Case {
            name: "write grants read",
            headers: vec![("x-api-key", hv(w))],
            method: "GET",
            uri: "/v1/things".into(),
            status: StatusCode::OK,
            message: None,
            www_authenticate: None,
        },
    ]
}

#[tokio::test]
async fn every_credential_case() {
    let fixture = Fixture::new();
    let calls = Calls::default();
    let app = app(
        &fixture,
        calls.clone(),
        Verifier::builder(fixture.store.clone()).build(),
    );
    let mut expected_calls = 0;
    for case in cases(&fixture) {
        let mut req = Request::builder().method(case.method).uri(&case.uri);
        for (name, value) in &case.headers {
            req = req.header(*name, value.clone());
        }
        let (status, headers, body) = send(&app, req.body(Body::empty()).unwrap()).await;
        assert_eq!(status, case.status, "{}: status", case.name);
        match case.message {
            Some(message) => {
                assert_eq!(
                    body,
                    envelope(status_code(status), message),
                    "{}: body",
                    case.name
                );
                assert_eq!(headers["content-type"], "application/json", "{}", case.name);
            }
            None => {
                expected_calls += 1;
                assert_eq!(body["tenant_id"], "acme", "{}", case.name);
                assert_eq!(body["key_id"], "key_writer", "{}", case.name);
                assert_eq!(
                    body["saw_credential"], false,
                    "{}: credential stripped",
                    case.name
                );
            }
        }
        assert_eq!(
            headers.get("www-authenticate").map(|v| v.to_str().unwrap()),
            case.www_authenticate,
            "{}: WWW-Authenticate",
            case.name
        );
        assert_eq!(
            calls.count(),
            expected_calls,
            "{}: inner service calls",
            case.name
        );
    }
}

fn status_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        429 => "RATE_LIMITED",
        _ => "SERVICE_UNAVAILABLE",
    }
}

#[tokio::test]
async fn test_keys_refused_when_the_server_only_accepts_live_keys() {
    let fixture = Fixture::new();
    let calls = Calls::default();
    let verifier = Verifier::builder(fixture.store.clone())
        .accept_test_keys(false)
        .build();
    let app = app(&fixture, calls.clone(), verifier);
    let req = Request::get("/v1/things")
        .header("x-api-key", fixture.test_admin.expose_secret())
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&app, req).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        envelope(
            "UNAUTHORIZED",
            "Test keys are not accepted here: use a live key"
        )
    );
    assert_eq!(headers["www-authenticate"], WWW_INVALID);
    assert_eq!(calls.count(), 0);

    // The same key passes where test keys are accepted.
    let app = app_accepting_all(&fixture, calls.clone());
    let req = Request::get("/v1/things")
        .header("x-api-key", fixture.test_admin.expose_secret())
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.0, 200);
}

fn app_accepting_all(fixture: &Fixture, calls: Calls) -> Router {
    app(
        fixture,
        calls,
        Verifier::builder(fixture.store.clone()).build(),
    )
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request() {
    use keygate::store::ManagedKeyStore;
    let fixture = Fixture::new();
    let app = app_accepting_all(&fixture, Calls::default());
    let get = || {
        Request::get("/v1/things")
            .header("x-api-key", fixture.writer.expose_secret())
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(send(&app, get()).await.0, 200);
    let revoked = fixture
        .store
        .revoke("acme", "key_writer", time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(revoked.is_some());
    let (status, _, body) = send(&app, get()).await;
    assert_eq!(status, 401);
    assert_eq!(body, envelope("UNAUTHORIZED", REVOKED));
}

#[tokio::test]
async fn keys_imported_by_hash_and_custom_formats_work() {
    use keygate::hash::{KeyDigest, KeyHasher};
    use keygate::key::{Environment, KeyFormat, KeyScheme};
    // A key from another system in the plain `ak_live_<64 hex>` format, known only by its
    // SHA-256 hex digest.
    let format = KeyFormat::new("ak").unwrap().with_checksum(false);
    let legacy = format.generate(Environment::Live);
    let exported_hash = KeyHasher::sha256().hash(legacy.expose_secret()).to_hex();
    let store = keygate::store::MemoryStore::new();
    let mut imported = record(&legacy, "key_legacy", "globex", &["read"]);
    imported.digest = KeyDigest::from_hex(&exported_hash).unwrap();
    store.put(imported);
    let verifier = Verifier::builder(store)
        .scheme(KeyScheme::new(format, KeyHasher::sha256()))
        .build();
    let app = Router::new()
        .route(
            "/",
            get(|t: Tenant| async move { t.tenant_id().to_owned() }),
        )
        .layer(AuthLayer::new(verifier));
    let response = app
        .oneshot(
            Request::get("/")
                .header(
                    "authorization",
                    format!("Bearer {}", legacy.expose_secret()),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        &response.into_body().collect().await.unwrap().to_bytes()[..],
        b"globex"
    );
}

#[tokio::test]
async fn peppered_keys_need_the_same_pepper() {
    use keygate::hash::KeyHasher;
    use keygate::key::{Environment, KeyFormat, KeyScheme};
    let key = KeyFormat::default().generate(Environment::Live);
    let pepper = KeyHasher::hmac_sha256(b"server-side pepper");
    let store = keygate::store::MemoryStore::new();
    let mut rec = record(&key, "key_p", "acme", &["read"]);
    rec.digest = pepper.hash(key.expose_secret());
    store.put(rec);
    let req = || {
        Request::get("/")
            .header("x-api-key", key.expose_secret())
            .body(Body::empty())
            .unwrap()
    };
    let with = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(AuthLayer::new(
            Verifier::builder(store.clone())
                .scheme(KeyScheme::new(KeyFormat::default(), pepper))
                .build(),
        ));
    assert_eq!(with.oneshot(req()).await.unwrap().status(), 200);
    let without = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(AuthLayer::new(Verifier::builder(store).build()));
    assert_eq!(without.oneshot(req()).await.unwrap().status(), 401);
}

#[tokio::test]
async fn public_routes_and_custom_header_names() {
    use keygate::verify::CredentialSource;
    let fixture = Fixture::new();
    let verifier = Verifier::builder(fixture.store.clone())
        .credential_source(
            CredentialSource::default()
                .with_api_key_header(http::HeaderName::from_static("x-acme-key"))
                .with_bearer(false),
        )
        .build();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/private",
            get(|t: Tenant| async move { t.key_id().to_owned() }),
        )
        .layer(AuthLayer::new(verifier).public_when(|head| head.uri.path() == "/health"));
    let call = |uri: &str, header: Option<(&'static str, String)>| {
        let mut req = Request::get(uri);
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        app.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    assert_eq!(call("/health", None).await.unwrap().status(), 200);
    assert_eq!(call("/private", None).await.unwrap().status(), 401);
    let w = fixture.writer.expose_secret().to_owned();
    assert_eq!(
        call("/private", Some(("x-acme-key", w.clone())))
            .await
            .unwrap()
            .status(),
        200
    );
    // Bearer is turned off: an Authorization header is not a credential here.
    assert_eq!(
        call("/private", Some(("authorization", format!("Bearer {w}"))))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        call("/private", Some(("x-api-key", w)))
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn credentials_kept_when_stripping_is_off() {
    let fixture = Fixture::new();
    let app =
        Router::new()
            .route(
                "/",
                get(|req: Request<Body>| async move {
                    req.headers().contains_key("x-api-key").to_string()
                }),
            )
            .layer(
                AuthLayer::new(Verifier::builder(fixture.store.clone()).build())
                    .strip_credentials(false),
            );
    let response = app
        .oneshot(
            Request::get("/")
                .header("x-api-key", fixture.reader.expose_secret())
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        &response.into_body().collect().await.unwrap().to_bytes()[..],
        b"true"
    );
}

/// A store that counts lookups, answering from a memory store.
#[derive(Clone)]
struct CountingStore {
    inner: keygate::store::MemoryStore,
    finds: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl keygate::store::KeyStore for CountingStore {
    async fn find(&self, digest: &keygate::hash::KeyDigest) -> keygate::store::Lookup {
        self.finds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.find(digest).await
    }
}

#[tokio::test]
async fn malformed_keys_never_reach_the_store() {
    let fixture = Fixture::new();
    let store = CountingStore {
        inner: fixture.store.clone(),
        finds: Default::default(),
    };
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(AuthLayer::new(Verifier::builder(store.clone()).build()));
    let good = fixture.reader.expose_secret().to_owned();
    let mut bad_checksum = good.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == '0' { '1' } else { '0' });
    let cases = [
        bad_checksum,
        good.replacen("sk_", "ak_", 1),
        good.replacen("_live_", "_prod_", 1),
        good[..good.len() - 1].to_owned(),
        format!("{good}0"),
        good.to_uppercase(),
    ];
    for key in &cases {
        let req = Request::get("/")
            .header("x-api-key", key.as_str())
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{key:?}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, envelope("UNAUTHORIZED", MALFORMED));
    }
    assert_eq!(store.finds.load(std::sync::atomic::Ordering::SeqCst), 0);
    // The same store is consulted for a well-formed key.
    let req = Request::get("/")
        .header("x-api-key", good.as_str())
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
    assert_eq!(store.finds.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Every refusal, whatever its status and whoever renders it, carries `Cache-Control: no-store`;
/// an accepted request's response is the service's own.
#[tokio::test]
async fn every_refusal_is_no_store() {
    use bytes::Bytes;
    use keygate::error::{AuthError, RenderError};
    use keygate::limit::RateLimit;
    use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
    use keygate::scope::Scope;

    struct PlainText;
    impl RenderError for PlainText {
        fn render(&self, error: &AuthError) -> http::Response<Bytes> {
            let mut response = http::Response::new(Bytes::from(error.message().into_owned()));
            *response.status_mut() = error.status();
            response
        }
    }
    let fixture = Fixture::new();
    let auth = AuthLayer::new(Verifier::builder(fixture.store.clone()).build());
    let plans = MemoryEntitlements::with_default(TenantEntitlements::active(Plan {
        rate_limit: Some(RateLimit::per_minute(1)),
        ..Plan::default()
    }));
    let limited = AuthLayer::new(
        Verifier::builder(fixture.store.clone())
            .entitlements(plans)
            .build(),
    );
    let down = AuthLayer::new(Verifier::builder(FailingStore).build());
    let ok = || async { "ok" };
    let app = Router::new()
        .route("/any", get(ok).route_layer(auth.clone()))
        .route(
            "/admin",
            get(ok).route_layer(auth.require_scope(Scope::ADMIN)),
        )
        .route("/limited", get(ok).route_layer(limited))
        .route("/down", get(ok).route_layer(down))
        .route(
            "/text",
            get(ok).route_layer(auth.clone().renderer(PlainText)),
        )
        // No layer: the extractor refuses with `AuthError`'s own response.
        .route("/unguarded", get(|_: Tenant| async { "never" }));
    let addr = serve(app).await;
    let reader = fixture.reader.expose_secret();
    let send = |path: &str, key: Option<&str>| {
        let mut req = Request::get(path);
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        send_tcp(addr, req.body(String::new()).unwrap())
    };

    let accepted = send("/any", Some(reader)).await;
    assert_eq!(accepted.status, 200);
    assert!(accepted.headers.get("cache-control").is_none());
    assert_eq!(send("/limited", Some(reader)).await.status, 200);

    let refusals = [
        ("missing", send("/any", None).await, 401, MISSING),
        (
            "unknown",
            send("/any", Some(fixture.unknown.expose_secret())).await,
            401,
            INVALID,
        ),
        (
            "scope",
            send("/admin", Some(reader)).await,
            403,
            "API key lacks the required scope: admin",
        ),
        (
            "rate",
            send("/limited", Some(reader)).await,
            429,
            "Rate limit exceeded: retry later",
        ),
        (
            "store down",
            send("/down", Some(reader)).await,
            503,
            UNAVAILABLE,
        ),
        ("extractor", send("/unguarded", None).await, 401, MISSING),
    ];
    for (name, reply, status, message) in refusals {
        assert_eq!(reply.status, status, "{name}");
        assert_eq!(
            reply.json(),
            envelope(status_code(reply.status), message),
            "{name}"
        );
        assert_eq!(reply.headers["cache-control"], "no-store", "{name}");
    }
    let custom = send("/text", None).await;
    assert_eq!(
        (custom.status.as_u16(), &custom.body[..]),
        (401, MISSING.as_bytes())
    );
    assert_eq!(
        custom.headers["cache-control"], "no-store",
        "a custom renderer's refusal"
    );
}
