//! The layer around a tonic server (tonic-health) over TCP, with a real tonic client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use keygate::scope::Scope;
use keygate::store::KeyStore;
use keygate::{AuthLayer, Tenant, Verifier};
use tonic::Code;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Records the tenant each request carried when it reached the gRPC service.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

async fn serve_grpc(auth: AuthLayer, seen: Seen) -> std::net::SocketAddr {
    serve_grpc_with(auth, seen, false).await
}

/// The server of `serve_grpc`; with `copy_peer`, a layer in front of keygate's copies tonic's
/// peer address into `ClientAddr`, as `examples/tonic.rs` does.
async fn serve_grpc_with(auth: AuthLayer, seen: Seen, copy_peer: bool) -> std::net::SocketAddr {
    use keygate::request::ClientAddr;
    use tonic::transport::server::TcpConnectInfo;
    let (reporter, health, listener) = serving_health().await;
    let addr = listener.local_addr().unwrap();
    let probe = tower::layer::layer_fn(move |inner| {
        let seen = seen.clone();
        tower::service_fn(move |req: http::Request<tonic::body::Body>| {
            let mut inner = Clone::clone(&inner);
            if let Some(t) = req.extensions().get::<Tenant>() {
                seen.0.lock().unwrap().push(t.tenant_id().to_owned());
            }
            async move { tower::Service::call(&mut inner, req).await }
        })
    });
    let peer = tower::util::MapRequestLayer::new(|mut req: http::Request<tonic::body::Body>| {
        let remote = req.extensions().get::<TcpConnectInfo>();
        if let Some(remote) = remote.and_then(TcpConnectInfo::remote_addr) {
            req.extensions_mut().insert(ClientAddr(remote));
        }
        req
    });
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .layer(tower::util::option_layer(copy_peer.then_some(peer)))
            .layer(auth)
            .layer(probe)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    addr
}

async fn check(addr: std::net::SocketAddr, key: Option<&str>) -> Result<i32, tonic::Status> {
    let metadata: Vec<(&'static str, String)> = key
        .map(|key| vec![("x-api-key", key.to_owned())])
        .unwrap_or_default();
    check_with(addr, &metadata).await
}

/// A health check carrying exactly the given metadata entries.
async fn check_with(
    addr: std::net::SocketAddr,
    metadata: &[(&'static str, String)],
) -> Result<i32, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    for (name, value) in metadata {
        req.metadata_mut().append(*name, value.parse().unwrap());
    }
    client.check(req).await.map(|r| r.into_inner().status)
}

/// The refusals that tell a client how to send its key speak of metadata to a gRPC client, and
/// a key sent as `authorization: Bearer` metadata is accepted like `x-api-key`.
#[tokio::test]
async fn grpc_messages_name_metadata() {
    let fixture = Fixture::new();
    let auth = AuthLayer::new(Verifier::builder(fixture.store.clone()).build());
    let addr = serve_grpc(auth, Seen::default()).await;
    let key = fixture.reader.expose_secret().to_owned();

    let bearer = check_with(addr, &[("authorization", format!("Bearer {key}"))]).await;
    assert_eq!(bearer.unwrap(), 1, "authorization: Bearer metadata");

    let missing = check_with(addr, &[]).await.unwrap_err();
    assert_eq!(
        (missing.code(), missing.message()),
        (Code::Unauthenticated, GRPC_MISSING)
    );
    let both = [
        ("x-api-key", key.clone()),
        ("authorization", format!("Bearer {key}")),
    ];
    let multiple = check_with(addr, &both).await.unwrap_err();
    assert_eq!(
        (multiple.code(), multiple.message()),
        (Code::Unauthenticated, GRPC_MULTIPLE)
    );
    let basic = check_with(addr, &[("authorization", "Basic dXNlcjpwdw==".to_owned())])
        .await
        .unwrap_err();
    assert_eq!(
        (basic.code(), basic.message()),
        (Code::Unauthenticated, GRPC_UNSUPPORTED)
    );
}

#[tokio::test]
async fn grpc_statuses_for_every_outcome() {
    let fixture = Fixture::new();
    let seen = Seen::default();
    let auth = AuthLayer::new(Verifier::builder(fixture.store.clone()).build()).scope_policy(
        keygate::scope::ScopePolicy::Require(Scope::from_static("read")),
    );
    let addr = serve_grpc(auth, seen.clone()).await;

    assert_eq!(
        check(addr, Some(fixture.reader.expose_secret()))
            .await
            .unwrap(),
        1,
        "SERVING"
    );
    assert_eq!(
        check(addr, Some(fixture.writer.expose_secret()))
            .await
            .unwrap(),
        1,
        "write grants read"
    );

    let missing = check(addr, None).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert_eq!(missing.message(), GRPC_MISSING);

    let unknown = check(addr, Some(fixture.unknown.expose_secret()))
        .await
        .unwrap_err();
    assert_eq!(
        (unknown.code(), unknown.message()),
        (Code::Unauthenticated, INVALID)
    );

    let revoked = check(addr, Some(fixture.revoked.expose_secret()))
        .await
        .unwrap_err();
    assert_eq!(
        (revoked.code(), revoked.message()),
        (Code::Unauthenticated, REVOKED)
    );

    let malformed = check(addr, Some("sk_live_short")).await.unwrap_err();
    assert_eq!(
        (malformed.code(), malformed.message()),
        (Code::Unauthenticated, MALFORMED)
    );

    assert_eq!(seen.0.lock().unwrap().as_slice(), ["acme", "acme"]);
}

#[tokio::test]
async fn grpc_permission_denied_for_missing_scope() {
    let fixture = Fixture::new();
    let seen = Seen::default();
    let auth = AuthLayer::new(Verifier::builder(fixture.store.clone()).build())
        .require_scope(Scope::ADMIN);
    let addr = serve_grpc(auth, seen.clone()).await;
    let denied = check(addr, Some(fixture.reader.expose_secret()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), "API key lacks the required scope: admin");
    assert!(seen.0.lock().unwrap().is_empty());
}

async fn assert_unavailable(store: impl KeyStore) {
    let fixture = Fixture::new();
    let seen = Seen::default();
    let verifier = Verifier::builder(store)
        .store_timeout(Duration::from_millis(100))
        .build();
    let addr = serve_grpc(AuthLayer::new(verifier), seen.clone()).await;
    let status = check(addr, Some(fixture.reader.expose_secret()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), UNAVAILABLE);
    assert!(
        seen.0.lock().unwrap().is_empty(),
        "the inner service must not run"
    );
}

#[tokio::test]
async fn grpc_unavailable_when_the_store_fails() {
    assert_unavailable(FailingStore).await;
}

#[tokio::test]
async fn grpc_unavailable_when_the_store_hangs() {
    assert_unavailable(DownStore::Hangs).await;
}

/// The raw shape of a refusal: HTTP 200, trailers-only, percent-encoded message.
#[tokio::test]
async fn grpc_refusal_is_trailers_only_http_200() {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let fixture = Fixture::new();
    let addr = serve_grpc(
        AuthLayer::new(Verifier::builder(fixture.store.clone()).build()),
        Seen::default(),
    )
    .await;
    let client: Client<_, String> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for content_type in [
        "application/grpc",
        "application/grpc+proto",
        "application/grpc+json",
    ] {
        let req = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(String::new())
            .unwrap();
        let response = client.request(req).await.unwrap();
        assert_eq!(response.status(), 200, "{content_type}");
        assert_eq!(response.headers()["content-type"], "application/grpc");
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(
            response.headers()["grpc-message"],
            "Missing API key: send it in the x-api-key metadata or as authorization: Bearer <key>"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
    }
}

/// Only a POST with a gRPC content type, over HTTP/2 or asking for trailers, is answered
/// gRPC-style (HTTP 200 and `grpc-status`). Any other request that claims the content type is
/// plain HTTP and gets a real 401, which monitoring counts as a failure.
#[tokio::test]
async fn grpc_style_only_for_grpc_posts() {
    use axum::routing::any;
    use http::Method;
    let fixture = Fixture::new();
    let app = axum::Router::new()
        .route("/grpc.health.v1.Health/Check", any(|| async { "ok" }))
        .layer(AuthLayer::new(
            Verifier::builder(fixture.store.clone()).build(),
        ));
    let addr = serve(app).await;
    // (HTTP/2, method, content type, `TE: deflate, Trailers`): `TE` is a list, its items
    // case-insensitive.
    let send = |(h2, method, content_type, te): (bool, Method, &str, bool)| {
        let mut request = http::Request::builder()
            .method(method)
            .uri("/grpc.health.v1.Health/Check")
            .header("content-type", content_type);
        if te {
            request = request.header(http::header::TE, "deflate, Trailers");
        }
        let request = request.body(String::new()).unwrap();
        async move {
            if h2 {
                send_tcp_h2(addr, request).await
            } else {
                send_tcp(addr, request).await
            }
        }
    };
    let plain = [
        (false, Method::GET, "application/grpc", false),
        (false, Method::POST, "application/grpc", false),
        (true, Method::GET, "application/grpc", false),
        (true, Method::POST, "application/json", false),
        (false, Method::GET, "application/grpc", true),
        (false, Method::POST, "application/json", true),
    ];
    for case in plain {
        let name = format!("{case:?}");
        let reply = send(case).await;
        assert_eq!(reply.status, 401, "{name}");
        assert_eq!(reply.json(), envelope("UNAUTHORIZED", MISSING), "{name}");
        assert_eq!(reply.headers["content-type"], "application/json", "{name}");
        assert_eq!(reply.headers["www-authenticate"], WWW_MISSING, "{name}");
        assert_eq!(reply.headers["cache-control"], "no-store", "{name}");
        assert!(reply.headers.get("grpc-status").is_none(), "{name}");
    }
    // HTTP/2, or HTTP/1.1 asking for trailers as gRPC does (what a grpc-web call becomes behind
    // a layer that translates it).
    let grpc = [
        (true, Method::POST, "application/grpc", false),
        (false, Method::POST, "application/grpc", true),
    ];
    for case in grpc {
        let name = format!("{case:?}");
        let reply = send(case).await;
        assert_eq!(reply.status, 200, "{name}");
        assert_eq!(reply.headers["content-type"], "application/grpc", "{name}");
        assert_eq!(reply.headers["grpc-status"], "16", "{name}");
        assert_eq!(reply.headers["grpc-message"], GRPC_MISSING, "{name}");
        assert_eq!(reply.headers["cache-control"], "no-store", "{name}");
        assert!(reply.body.is_empty(), "{name}");
    }
}

/// A grpc-web call (`application/grpc-web…`, over HTTP/1.1 as browsers and tonic-web's
/// clients send it) is refused the gRPC way too: HTTP 200, trailers-only, `grpc-status` and
/// `grpc-message` in the headers, a grpc-web content type, no body. A grpc-web client reads
/// its status there; a JSON 401 would reach it as a broken frame.
#[tokio::test]
async fn grpc_web_refusal_is_trailers_only_http_200() {
    use axum::routing::any;
    let fixture = Fixture::new();
    let app = axum::Router::new()
        .route("/grpc.health.v1.Health/Check", any(|| async { "ok" }))
        .layer(
            AuthLayer::new(Verifier::builder(fixture.store.clone()).build())
                .scope_policy(keygate::scope::ScopePolicy::Require(Scope::WRITE)),
        );
    let addr = serve(app).await;
    let request = |method: http::Method, content_type: &str, key: Option<&str>| {
        let mut req = http::Request::builder()
            .method(method)
            .uri("/grpc.health.v1.Health/Check")
            .header("content-type", content_type)
            .header("x-grpc-web", "1");
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        req.body(String::new()).unwrap()
    };
    // Answered in the family the call was sent in, as `application/grpc` answers gRPC's.
    let cases = [
        ("application/grpc-web", "application/grpc-web"),
        ("application/grpc-web+proto", "application/grpc-web"),
        ("application/grpc-web+json", "application/grpc-web"),
        ("application/grpc-web;charset=utf-8", "application/grpc-web"),
        ("application/grpc-web-text", "application/grpc-web-text"),
        (
            "application/grpc-web-text+proto",
            "application/grpc-web-text",
        ),
    ];
    for (sent, answered) in cases {
        for (name, reply) in [
            (
                "HTTP/1.1",
                send_tcp(addr, request(http::Method::POST, sent, None)).await,
            ),
            (
                "HTTP/2",
                send_tcp_h2(addr, request(http::Method::POST, sent, None)).await,
            ),
        ] {
            assert_eq!(reply.status, 200, "{sent} {name}");
            assert_eq!(reply.headers["content-type"], answered, "{sent} {name}");
            assert_eq!(reply.headers["grpc-status"], "16", "{sent} {name}");
            assert_eq!(reply.headers["grpc-message"], GRPC_MISSING, "{sent} {name}");
            assert_eq!(reply.headers["cache-control"], "no-store", "{sent} {name}");
            assert!(
                reply.headers.get("www-authenticate").is_none(),
                "{sent} {name}"
            );
            assert!(reply.body.is_empty(), "{sent} {name}");
        }
    }
    // A key without the scope: PERMISSION_DENIED, the same way.
    let reader = fixture.reader.expose_secret();
    let denied = send_tcp(
        addr,
        request(
            http::Method::POST,
            "application/grpc-web+proto",
            Some(reader),
        ),
    )
    .await;
    assert_eq!(denied.status, 200);
    assert_eq!(denied.headers["content-type"], "application/grpc-web");
    assert_eq!(denied.headers["grpc-status"], "7");
    assert_eq!(
        denied.headers["grpc-message"],
        "API key lacks the required scope: write"
    );
    assert!(denied.body.is_empty());
    // grpc-web is POST only: a GET that claims its content type is plain HTTP.
    let get = send_tcp(
        addr,
        request(http::Method::GET, "application/grpc-web", None),
    )
    .await;
    assert_eq!(get.status, 401);
    assert_eq!(get.json(), envelope("UNAUTHORIZED", MISSING));
    assert_eq!(get.headers["content-type"], "application/json");
    assert!(get.headers.get("grpc-status").is_none());
    // A content type that only starts like grpc-web's is not grpc-web.
    let other = send_tcp(
        addr,
        request(http::Method::POST, "application/grpc-webx", None),
    )
    .await;
    assert_eq!(other.status, 401);
    assert!(other.headers.get("grpc-status").is_none());
}

/// Behind tonic-web's `GrpcWebLayer` (rather than outside it), keygate sees a grpc-web call as
/// tonic-web hands it on: an HTTP/1.1 `POST` of `application/grpc` with `TE: trailers`. It
/// refuses it the gRPC way, which tonic-web turns back into grpc-web: the browser's client reads
/// `UNAUTHENTICATED` and the message, not a JSON 401 in a grpc-web content type.
#[tokio::test]
async fn grpc_web_behind_tonic_web() {
    let fixture = Fixture::new();
    let (reporter, health, listener) = serving_health().await;
    let addr = listener.local_addr().unwrap();
    let auth = AuthLayer::new(Verifier::builder(fixture.store.clone()).build());
    // tonic-web's layer takes a service answering tonic's own body type.
    let tonic_body = tower::util::MapResponseLayer::new(
        |response: http::Response<keygate::layer::AuthBody<tonic::body::Body>>| {
            response.map(tonic::body::Body::new)
        },
    );
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(tonic_body)
            .layer(auth)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    // A health check over HTTP/1.1 as a browser sends it: one empty message, framed.
    let call = |key: Option<&str>| {
        let mut req = http::Request::post("/grpc.health.v1.Health/Check")
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1");
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        req.body("\0\0\0\0\0".to_owned()).unwrap()
    };

    let refused = send_tcp(addr, call(None)).await;
    assert_eq!(refused.status, 200);
    assert_eq!(
        refused.headers["content-type"],
        "application/grpc-web+proto"
    );
    assert_eq!(refused.headers["grpc-status"], "16");
    assert_eq!(refused.headers["grpc-message"], GRPC_MISSING);
    assert_eq!(refused.headers["cache-control"], "no-store");
    assert!(refused.body.is_empty(), "{:?}", refused.body);

    // A key passes through both layers to the service, which answers in grpc-web frames: the
    // message (`status: SERVING`), then the trailers with `grpc-status:0`.
    let served = send_tcp(addr, call(Some(fixture.reader.expose_secret()))).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.headers["content-type"], "application/grpc-web+proto");
    let (message, trailers) = served.body.split_at(7);
    assert_eq!(message, b"\0\0\0\0\x02\x08\x01");
    assert_eq!(trailers[0], 0x80, "{:?}", served.body);
    let trailers = String::from_utf8_lossy(&trailers[5..]).to_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
}

/// tonic keeps the peer address in its own extension (`TcpConnectInfo`), which keygate does
/// not read: an IP-restricted key is refused (the client is unknown: fail closed) unless a layer
/// in front of keygate's copies the address into `ClientAddr`, as `examples/tonic.rs` does.
#[tokio::test]
async fn ip_restrictions_need_the_peer_address_copied_for_tonic() {
    use keygate::restriction::Restrictions;
    use keygate::store::MemoryStore;

    let store = MemoryStore::new();
    let key = keygate::key::KeyFormat::default().generate(keygate::key::Environment::Live);
    store.put(keygate::store::KeyRecord {
        restrictions: Restrictions {
            ip_ranges: vec!["127.0.0.0/8".parse().unwrap()],
            ..Restrictions::default()
        },
        ..record(&key, "key_local", "acme", &["admin"])
    });
    let auth = AuthLayer::new(Verifier::builder(store).build());
    let secret = key.expose_secret();

    // Without the copy: the client address is unknown, and the key is refused.
    let addr = serve_grpc(auth.clone(), Seen::default()).await;
    let refused = check(addr, Some(secret)).await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (
            Code::PermissionDenied,
            "API key restriction violated: IP address not allowed"
        )
    );

    // With it: the loopback client is inside the key's range.
    let addr = serve_grpc_with(auth, Seen::default(), true).await;
    assert_eq!(check(addr, Some(secret)).await.unwrap(), 1, "SERVING");
}
