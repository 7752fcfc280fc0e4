//! Key restrictions: client IP (over real TCP, with and without a trusted proxy), referrer and
//! endpoint; set at issue time and shown by the management API.

use crate::common::*;
use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode};
use keygate::key::{ApiKey, Environment, KeyFormat};
use keygate::request::{ClientAddr, ForwardedHeader};
use keygate::restriction::{EndpointRule, Restrictions};
use keygate::store::{KeyRecord, MemoryStore};
use keygate::{AuthLayer, Verifier};
use tower::ServiceExt;

fn restricted(store: &MemoryStore, id: &str, restrictions: Restrictions) -> ApiKey {
    let key = KeyFormat::default().generate(Environment::Live);
    store.put(KeyRecord {
        restrictions,
        ..record(&key, id, "acme", &["admin"])
    });
    key
}

fn ips(ranges: &[&str]) -> Restrictions {
    Restrictions {
        ip_ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
        ..Restrictions::default()
    }
}

fn app(store: &MemoryStore, trusted: &[&str]) -> Router {
    behind(store, ForwardedHeader::XForwardedFor, trusted)
}

/// The app behind proxies at `trusted` that set `header`.
fn behind(store: &MemoryStore, header: ForwardedHeader, trusted: &[&str]) -> Router {
    let verifier = Verifier::builder(store.clone())
        .trusted_proxies(header, trusted.iter().map(|t| t.parse().unwrap()))
        .build();
    Router::new()
        .route(
            "/{*path}",
            get(|| async { "ok" }).post(|| async { "posted" }),
        )
        .layer(AuthLayer::new(verifier))
}

fn req(key: &ApiKey, headers: &[(&str, &str)]) -> Request<String> {
    let mut r = Request::get("/v1/documents").header("x-api-key", key.expose_secret());
    for (n, v) in headers {
        r = r.header(*n, *v);
    }
    r.body(String::new()).unwrap()
}

const IP_REFUSED: &str = "API key restriction violated: IP address not allowed";

#[tokio::test]
async fn ip_ranges_over_tcp_without_a_trusted_proxy() {
    let store = MemoryStore::new();
    let office = restricted(&store, "key_office", ips(&["10.0.0.0/8"]));
    let local = restricted(&store, "key_local", ips(&["127.0.0.0/8", "2001:db8::/32"]));
    let addr = serve(app(&store, &[])).await;

    let refused = send_tcp(addr, req(&office, &[])).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json(), envelope("FORBIDDEN", IP_REFUSED));
    assert_eq!(
        send_tcp(addr, req(&local, &[])).await.status,
        StatusCode::OK
    );
    // Forwarding headers from an untrusted peer are ignored, whatever they claim.
    let spoofed = send_tcp(addr, req(&office, &[("x-forwarded-for", "10.1.2.3")])).await;
    assert_eq!(spoofed.status, StatusCode::FORBIDDEN);
    let spoofed = send_tcp(addr, req(&office, &[("forwarded", "for=10.1.2.3")])).await;
    assert_eq!(spoofed.status, StatusCode::FORBIDDEN);
    let unaffected = send_tcp(addr, req(&local, &[("x-forwarded-for", "203.0.113.9")])).await;
    assert_eq!(unaffected.status, StatusCode::OK, "the peer address counts");
}

#[tokio::test]
async fn ip_ranges_over_tcp_behind_a_trusted_proxy() {
    let store = MemoryStore::new();
    let office = restricted(&store, "key_office", ips(&["10.0.0.0/8"]));
    let local = restricted(&store, "key_local", ips(&["127.0.0.0/8"]));
    let addr = serve(app(&store, &["127.0.0.1/32"])).await;

    assert_eq!(
        send_tcp(addr, req(&office, &[("x-forwarded-for", "10.1.2.3")]))
            .await
            .status,
        StatusCode::OK
    );
    // The right-most untrusted hop is the client: a client-supplied prefix cannot help.
    let chained = send_tcp(
        addr,
        req(&office, &[("x-forwarded-for", "10.1.2.3, 203.0.113.5")]),
    )
    .await;
    assert_eq!(chained.status, StatusCode::FORBIDDEN);
    // Behind the proxy, the proxy itself is not the client.
    let proxied = send_tcp(addr, req(&local, &[("x-forwarded-for", "203.0.113.5")])).await;
    assert_eq!(proxied.status, StatusCode::FORBIDDEN);
    // No forwarding header: the proxy's own address.
    assert_eq!(
        send_tcp(addr, req(&local, &[])).await.status,
        StatusCode::OK
    );
    // A malformed chain leaves the client unknown: refused.
    let garbage = send_tcp(
        addr,
        req(&office, &[("x-forwarded-for", "10.1.2.3, nonsense")]),
    )
    .await;
    assert_eq!(garbage.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn ipv6_and_unknown_peers() {
    let store = MemoryStore::new();
    let v6 = restricted(&store, "key_v6", ips(&["2001:db8::/32"]));
    let app = app(&store, &[]);
    let with_peer = |peer: Option<&str>| {
        let mut r = Request::get("/v1/documents").header("x-api-key", v6.expose_secret());
        if let Some(p) = peer {
            r = r.extension(ClientAddr(p.parse().unwrap()));
        }
        app.clone().oneshot(r.body(Body::empty()).unwrap())
    };
    assert_eq!(
        with_peer(Some("[2001:db8::7]:443")).await.unwrap().status(),
        200
    );
    assert_eq!(
        with_peer(Some("[2001:db9::7]:443")).await.unwrap().status(),
        403
    );
    assert_eq!(
        with_peer(None).await.unwrap().status(),
        403,
        "no known peer: fail closed"
    );
}

#[tokio::test]
async fn referrer_and_endpoint_restrictions() {
    let store = MemoryStore::new();
    let web = restricted(
        &store,
        "key_web",
        Restrictions {
            referrers: vec!["https://app.example.com".into()],
            ..Restrictions::default()
        },
    );
    let docs = restricted(
        &store,
        "key_docs",
        Restrictions {
            endpoints: vec![EndpointRule {
                method: Some("GET".into()),
                path: "/v1/documents/*".into(),
            }],
            ..Restrictions::default()
        },
    );
    let app = app(&store, &[]);
    let call = |key: &ApiKey, method: &str, path: &str, headers: &[(&str, &str)]| {
        let mut r = Request::builder()
            .method(method)
            .uri(path)
            .header("x-api-key", key.expose_secret());
        for (n, v) in headers {
            r = r.header(*n, *v);
        }
        app.clone().oneshot(r.body(Body::empty()).unwrap())
    };
    assert_eq!(
        call(
            &web,
            "GET",
            "/x",
            &[("referer", "https://app.example.com/page")]
        )
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(
        call(&web, "GET", "/x", &[("origin", "https://app.example.com")])
            .await
            .unwrap()
            .status(),
        200
    );
    let evil = call(
        &web,
        "GET",
        "/x",
        &[("referer", "https://app.example.com.evil.io/")],
    )
    .await
    .unwrap();
    assert_eq!(evil.status(), 403);
    let body = http_body_util::BodyExt::collect(evil.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        envelope(
            "FORBIDDEN",
            "API key restriction violated: referrer not allowed"
        )
    );
    assert_eq!(call(&web, "GET", "/x", &[]).await.unwrap().status(), 403);

    assert_eq!(
        call(&docs, "GET", "/v1/documents/42", &[])
            .await
            .unwrap()
            .status(),
        200
    );
    let post = call(&docs, "POST", "/v1/documents/42", &[]).await.unwrap();
    assert_eq!(post.status(), 403);
    let body = http_body_util::BodyExt::collect(post.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        envelope(
            "FORBIDDEN",
            "API key restriction violated: endpoint not allowed"
        )
    );
    assert_eq!(
        call(&docs, "GET", "/v1/users", &[]).await.unwrap().status(),
        403
    );
}

#[tokio::test]
async fn restrictions_are_set_at_issue_time_and_shown() {
    use keygate::lifecycle::KeyManager;
    use keygate::scope::Scope;
    let store = MemoryStore::new();
    let verifier = Verifier::builder(store.clone()).build();
    let manager = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .build();
    let admin = manager
        .issue(
            "t",
            "acme",
            keygate::lifecycle::NewKey::new("admin", ["admin"]),
        )
        .await
        .unwrap();
    let api = keygate::api::router(manager)
        .route_layer(AuthLayer::new(verifier.clone()).require_scope(Scope::ADMIN));
    let body = serde_json::json!({"name": "office", "scopes": ["read"],
        "restrictions": {"ip_ranges": ["10.0.0.0/8", "2001:db8::/32"], "referrers": [], "endpoints": [{"method": "GET", "path": "/v1/*"}]}});
    let created = api
        .clone()
        .oneshot(
            Request::post("/v1/api-keys")
                .header("x-api-key", admin.key.expose_secret())
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let list = api
        .oneshot(
            Request::get("/v1/api-keys")
                .header("x-api-key", admin.key.expose_secret())
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let bytes = http_body_util::BodyExt::collect(list.into_body())
        .await
        .unwrap()
        .to_bytes();
    let listed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        listed["data"][1]["restrictions"],
        serde_json::json!({"ip_ranges": ["10.0.0.0/8", "2001:db8::/32"], "referrers": [], "endpoints": [{"method": "GET", "path": "/v1/*"}]})
    );
    let bad = serde_json::json!({"name": "x", "scopes": ["read"], "restrictions": {"ip_ranges": ["10.0.0.0/33"]}});
    let app = keygate::api::router(KeyManager::builder(store).build())
        .route_layer(AuthLayer::new(verifier));
    let refused = app
        .oneshot(
            Request::post("/v1/api-keys")
                .header("x-api-key", admin.key.expose_secret())
                .header("content-type", "application/json")
                .body(Body::from(bad.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}

/// Behind a proxy that appends only `X-Forwarded-For`, a `Forwarded` header is whatever the
/// client wrote, and the reverse: only the header the proxy sets is read.
#[tokio::test]
async fn only_the_proxys_own_header_is_read() {
    let store = MemoryStore::new();
    let office = restricted(&store, "key_office", ips(&["10.0.0.0/8"]));
    let xff = serve(behind(
        &store,
        ForwardedHeader::XForwardedFor,
        &["127.0.0.1/32"],
    ))
    .await;
    let fwd = serve(behind(
        &store,
        ForwardedHeader::Forwarded,
        &["127.0.0.1/32"],
    ))
    .await;
    let refused = |reply: Reply| {
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.json(), envelope("FORBIDDEN", IP_REFUSED));
    };

    // X-Forwarded-For configured: the client's own `Forwarded` never counts, with or without
    // the hop the proxy appended.
    refused(send_tcp(xff, req(&office, &[("forwarded", "for=10.1.2.3")])).await);
    refused(
        send_tcp(
            xff,
            req(
                &office,
                &[
                    ("forwarded", "for=10.1.2.3"),
                    ("x-forwarded-for", "203.0.113.5"),
                ],
            ),
        )
        .await,
    );
    assert_eq!(
        send_tcp(
            xff,
            req(
                &office,
                &[
                    ("forwarded", "for=203.0.113.5"),
                    ("x-forwarded-for", "10.1.2.3")
                ]
            )
        )
        .await
        .status,
        StatusCode::OK
    );

    // Forwarded configured: the client's own `X-Forwarded-For` never counts.
    refused(send_tcp(fwd, req(&office, &[("x-forwarded-for", "10.1.2.3")])).await);
    refused(
        send_tcp(
            fwd,
            req(
                &office,
                &[
                    ("x-forwarded-for", "10.1.2.3"),
                    ("forwarded", "for=203.0.113.5;proto=https"),
                ],
            ),
        )
        .await,
    );
    assert_eq!(
        send_tcp(
            fwd,
            req(
                &office,
                &[
                    ("x-forwarded-for", "203.0.113.5"),
                    ("forwarded", "for=10.1.2.3;proto=https"),
                ]
            )
        )
        .await
        .status,
        StatusCode::OK
    );
    // The right-most untrusted `for=` is the client; a malformed one leaves it unknown.
    refused(
        send_tcp(
            fwd,
            req(&office, &[("forwarded", "for=10.1.2.3, for=203.0.113.5")]),
        )
        .await,
    );
    refused(
        send_tcp(
            fwd,
            req(&office, &[("forwarded", "for=10.1.2.3, for=nonsense")]),
        )
        .await,
    );
}

/// An IPv4 client on a `[::]` listener is seen as `::ffff:127.0.0.1`: it is still the IPv4
/// client for IPv4 ranges and trusted proxies, and mapped hops and ranges are IPv4 too.
#[tokio::test]
async fn ipv4_mapped_addresses_count_as_ipv4() {
    let store = MemoryStore::new();
    let local = restricted(&store, "key_local", ips(&["127.0.0.0/8"]));
    let office = restricted(&store, "key_office", ips(&["10.0.0.0/8"]));
    let mapped_range = restricted(&store, "key_mapped", ips(&["::ffff:127.0.0.0/104"]));

    let dual = serve_dual_stack(app(&store, &[])).await;
    assert_eq!(
        send_tcp(dual, req(&local, &[])).await.status,
        StatusCode::OK
    );
    let refused = send_tcp(dual, req(&office, &[])).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json(), envelope("FORBIDDEN", IP_REFUSED));

    // The trusted proxy 127.0.0.1, seen as ::ffff:127.0.0.1, is still trusted.
    let proxied = serve_dual_stack(app(&store, &["127.0.0.1/32"])).await;
    let via_proxy = req(&office, &[("x-forwarded-for", "10.1.2.3")]);
    assert_eq!(send_tcp(proxied, via_proxy).await.status, StatusCode::OK);

    // On an IPv4 listener: a mapped hop is the IPv4 client, a mapped range the IPv4 range.
    let v4 = serve(app(&store, &["127.0.0.1/32"])).await;
    let mapped_hop = req(&office, &[("x-forwarded-for", "::ffff:10.1.2.3")]);
    assert_eq!(send_tcp(v4, mapped_hop).await.status, StatusCode::OK);
    assert_eq!(
        send_tcp(v4, req(&mapped_range, &[])).await.status,
        StatusCode::OK
    );

    // In process, with the peer set by the server as a mapped address.
    let app = app(&store, &[]);
    let from = |key: &ApiKey, peer: &str| {
        let r = Request::get("/v1/documents")
            .header("x-api-key", key.expose_secret())
            .extension(ClientAddr(peer.parse().unwrap()));
        app.clone().oneshot(r.body(Body::empty()).unwrap())
    };
    assert_eq!(
        from(&office, "[::ffff:10.1.2.3]:5000")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        from(&office, "[::ffff:11.1.2.3]:5000")
            .await
            .unwrap()
            .status(),
        403
    );
}

const ENDPOINT_REFUSED: &str = "API key restriction violated: endpoint not allowed";

fn endpoints(rules: &[(Option<&str>, &str)]) -> Restrictions {
    Restrictions {
        endpoints: rules
            .iter()
            .map(|(method, path)| EndpointRule {
                method: method.map(str::to_owned),
                path: (*path).to_owned(),
            })
            .collect(),
        ..Restrictions::default()
    }
}

fn call(key: &ApiKey, method: &str, path: &str) -> Request<String> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", key.expose_secret())
        .body(String::new())
        .unwrap()
}

/// A path a service behind the layer could resolve to another one (`..`, `.`, encoded slashes)
/// is under no endpoint rule: `/v1/public/../admin` is `/v1/admin` to a file server or a
/// proxy, and the key may call `/v1/public/*` only.
#[tokio::test]
async fn paths_that_resolve_elsewhere_match_no_endpoint_rule() {
    let store = MemoryStore::new();
    let public = restricted(&store, "key_public", endpoints(&[(None, "/v1/public/*")]));
    let open = restricted(&store, "key_open", Restrictions::default());
    let addr = serve(app(&store, &[])).await;
    for path in [
        "/v1/admin",
        "/v1/public/../admin",
        "/v1/public/%2e%2e/admin",
        "/v1/public/%2E./admin",
        "/v1/public/..%2fadmin",
        "/v1/public/..%5Cadmin",
        "/v1/public/a%2Fb",
        "/v1/public/./docs",
        "/v1/public/docs/..",
    ] {
        let reply = send_tcp(addr, call(&public, "GET", path)).await;
        assert_eq!(
            (reply.status, reply.json()),
            (
                StatusCode::FORBIDDEN,
                envelope("FORBIDDEN", ENDPOINT_REFUSED)
            ),
            "{path}"
        );
        // A key without endpoint rules is not affected.
        let reply = send_tcp(addr, call(&open, "GET", path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}, unrestricted key");
    }
    for path in [
        "/v1/public/docs",
        "/v1/public/.well-known",
        "/v1/public/a..b/c",
    ] {
        let reply = send_tcp(addr, call(&public, "GET", path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
}

/// A `GET` rule lets `HEAD` through, as axum answers `HEAD` with the `GET` handler; it lets
/// nothing else through.
#[tokio::test]
async fn a_get_rule_allows_head() {
    let store = MemoryStore::new();
    let docs = restricted(
        &store,
        "key_docs",
        endpoints(&[(Some("GET"), "/v1/documents")]),
    );
    let addr = serve(app(&store, &[])).await;
    for (method, status) in [
        ("GET", StatusCode::OK),
        ("HEAD", StatusCode::OK),
        ("POST", StatusCode::FORBIDDEN),
    ] {
        let reply = send_tcp(addr, call(&docs, method, "/v1/documents")).await;
        assert_eq!(reply.status, status, "{method}");
    }
}

/// Under `Router::nest`, endpoint rules match the path the client asked for, not the nested
/// router's: a rule for `/v1/documents` works there, and does not cover the same router
/// mounted elsewhere.
#[tokio::test]
async fn endpoint_rules_match_the_path_asked_for_under_nest() {
    let store = MemoryStore::new();
    let v1 = restricted(
        &store,
        "key_v1",
        endpoints(&[(Some("GET"), "/v1/documents")]),
    );
    let bare = restricted(
        &store,
        "key_bare",
        endpoints(&[(Some("GET"), "/documents")]),
    );
    let inner = Router::new()
        .route("/documents", get(|| async { "ok" }))
        .layer(AuthLayer::new(Verifier::builder(store.clone()).build()));
    let app = Router::new()
        .nest("/v1", inner.clone())
        .nest("/internal", inner);
    let addr = serve(app).await;
    for (key, path, status) in [
        (&v1, "/v1/documents", StatusCode::OK),
        (&v1, "/internal/documents", StatusCode::FORBIDDEN),
        (&bare, "/v1/documents", StatusCode::FORBIDDEN),
        (&bare, "/internal/documents", StatusCode::FORBIDDEN),
    ] {
        let reply = send_tcp(addr, call(key, "GET", path)).await;
        assert_eq!(reply.status, status, "{path}");
    }
}

/// Referrers are stored in the form browsers send `Origin` and `Referer` (lowercase scheme
/// and host, no default port), so that a key issued with `HTTPS://App.Example.com:443` works
/// from that origin; one nothing could match, and an endpoint path without its leading `/`,
/// are refused at issue time with what to write instead.
#[tokio::test]
async fn referrers_and_endpoint_paths_are_checked_at_issue_time() {
    use keygate::lifecycle::{KeyManager, NewKey};
    use keygate::scope::Scope;
    let store = MemoryStore::new();
    let verifier = Verifier::builder(store.clone()).build();
    let manager = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .build();
    let admin = manager
        .issue("t", "acme", NewKey::new("admin", ["admin"]))
        .await
        .unwrap();
    let admin = admin.key.expose_secret().to_owned();
    let app = keygate::api::router(manager)
        .route_layer(AuthLayer::new(verifier.clone()).require_scope(Scope::ADMIN))
        .merge(
            Router::new()
                .route("/v1/documents", get(|| async { "ok" }))
                .route_layer(AuthLayer::new(verifier)),
        );
    let addr = serve(app).await;
    let create = |restrictions: serde_json::Value| {
        let body =
            serde_json::json!({"name": "web", "scopes": ["read"], "restrictions": restrictions});
        Request::post("/v1/api-keys")
            .header("x-api-key", &admin)
            .header("content-type", "application/json")
            .body(body.to_string())
            .unwrap()
    };

    let created = send_tcp(
        addr,
        create(serde_json::json!({"referrers": ["HTTPS://App.Example.com:443"]})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let data = &created.json()["data"];
    assert_eq!(
        data["restrictions"]["referrers"],
        serde_json::json!(["https://app.example.com"])
    );
    let key = data["key"].as_str().unwrap().to_owned();
    let from = |origin: &str| {
        Request::get("/v1/documents")
            .header("x-api-key", &key)
            .header("origin", origin)
            .body(String::new())
            .unwrap()
    };
    assert_eq!(
        send_tcp(addr, from("https://app.example.com")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send_tcp(addr, from("https://evil.example.com"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    for (restrictions, message) in [
        (
            serde_json::json!({"referrers": ["app.example.com"]}),
            "Invalid referrer \"app.example.com\": use an origin such as https://app.example.com, optionally followed by a path, or a prefix ending in *",
        ),
        (
            serde_json::json!({"referrers": ["https://user@app.example.com"]}),
            "Invalid referrer \"https://user@app.example.com\": use an origin such as https://app.example.com, optionally followed by a path, or a prefix ending in *",
        ),
        (
            serde_json::json!({"endpoints": [{"path": "v1/documents"}]}),
            "Invalid endpoint path \"v1/documents\": it must start with /",
        ),
        (
            serde_json::json!({"endpoints": [{"method": "GET /v1", "path": "/v1/documents"}]}),
            "Invalid endpoint method \"GET /v1\": use an HTTP method such as GET or POST, or leave it out to allow every method",
        ),
        (
            serde_json::json!({"endpoints": [{"method": "", "path": "/v1/documents"}]}),
            "Invalid endpoint method \"\": use an HTTP method such as GET or POST, or leave it out to allow every method",
        ),
    ] {
        let refused = send_tcp(addr, create(restrictions.clone())).await;
        assert_eq!(
            (refused.status, refused.json()),
            (StatusCode::BAD_REQUEST, envelope("BAD_REQUEST", message)),
            "{restrictions}"
        );
    }
}
