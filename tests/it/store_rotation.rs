//! Rotation rules through the management API over TCP, on the SQLite store: a key is replaced
//! once, a rotation with grace needs room under the cap, and concurrent rotations or a rotation
//! racing a revocation leave exactly one outcome.

use std::net::SocketAddr;

use crate::common::{REVOKED, envelope, send_tcp, serve};
use axum::{Router, routing::get};
use http::StatusCode;
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::scope::Scope;
use keygate::store::SqliteStore;
use keygate::{AuthLayer, Tenant, Verifier, api};
use serde_json::{Value, json};

const ALREADY_ROTATED: &str = "API key has already been rotated: rotate its successor instead";

struct Server {
    addr: SocketAddr,
    admin: String,
    admin_id: String,
    _dir: tempfile::TempDir,
}

/// The management API and `/v1/whoami` over one SQLite file, with an admin key of `acme`
/// (which counts against the cap).
async fn server(max_active: Option<usize>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
    let verifier = Verifier::builder(store.clone()).build();
    let manager = KeyManager::builder(store)
        .scheme(verifier.scheme().clone())
        .max_active_keys(max_active)
        .build();
    let admin = manager
        .issue("seed", "acme", NewKey::new("admin", ["admin"]))
        .await
        .unwrap();
    let auth = AuthLayer::new(verifier);
    let app = Router::new()
        .merge(api::router(manager).route_layer(auth.require_scope(Scope::ADMIN)))
        .route(
            "/v1/whoami",
            get(|t: Tenant| async move { t.key_id().to_owned() }).route_layer(auth),
        );
    Server {
        addr: serve(app).await,
        admin: admin.key.expose_secret().to_owned(),
        admin_id: admin.info.id,
        _dir: dir,
    }
}

impl Server {
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("x-api-key", &self.admin);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = body.map_or_else(String::new, |b| b.to_string());
        let reply = send_tcp(self.addr, req.body(body).unwrap()).await;
        if reply.status != StatusCode::NO_CONTENT {
            assert_eq!(reply.headers["content-type"], "application/json");
        }
        (reply.status, reply.json())
    }

    /// Issues a key; its secret and id.
    async fn issue(&self, name: &str) -> (String, String) {
        let (status, created) = self
            .call(
                "POST",
                "/v1/api-keys",
                Some(json!({"name": name, "scopes": ["read"]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        key_and_id(&created)
    }

    async fn rotate(&self, id: &str, grace: Option<u64>) -> (StatusCode, Value) {
        let body = grace.map(|g| json!({"grace_period_seconds": g}));
        self.call("POST", &format!("/v1/api-keys/{id}/rotate"), body)
            .await
    }

    /// The status of `/v1/whoami` with `key`, and its body.
    async fn whoami(&self, key: &str) -> (StatusCode, Value) {
        let req = http::Request::get("/v1/whoami")
            .header("x-api-key", key)
            .body(String::new())
            .unwrap();
        let reply = send_tcp(self.addr, req).await;
        let body = match reply.status {
            StatusCode::OK => Value::String(String::from_utf8(reply.body.to_vec()).unwrap()),
            _ => reply.json(),
        };
        (reply.status, body)
    }

    async fn listed_ids(&self) -> Vec<String> {
        let (status, listed) = self.call("GET", "/v1/api-keys", None).await;
        assert_eq!(status, StatusCode::OK);
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn key_and_id(created: &Value) -> (String, String) {
    (
        created["data"]["key"].as_str().unwrap().to_owned(),
        created["data"]["id"].as_str().unwrap().to_owned(),
    )
}

fn not_found() -> Value {
    envelope("NOT_FOUND", "API key not found")
}

#[tokio::test]
async fn a_key_in_its_grace_period_cannot_be_rotated_again() {
    let s = server(Some(10)).await;
    let (old_key, old_id) = s.issue("rotated").await;
    let (status, rotated) = s.rotate(&old_id, Some(3600)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (new_key, new_id) = key_and_id(&rotated);

    for grace in [None, Some(3600), Some(0)] {
        assert_eq!(
            s.rotate(&old_id, grace).await,
            (
                StatusCode::CONFLICT,
                envelope("KEY_ALREADY_ROTATED", ALREADY_ROTATED)
            ),
            "grace {grace:?}"
        );
    }
    assert_eq!(
        s.listed_ids().await,
        [s.admin_id.clone(), old_id.clone(), new_id.clone()],
        "refused rotations issue nothing"
    );
    assert_eq!(
        s.whoami(&old_key).await,
        (StatusCode::OK, json!(old_id)),
        "still in its grace period"
    );

    // The successor can be rotated; unknown and revoked keys stay 404.
    let (status, third) = s.rotate(&new_id, None).await;
    assert_eq!(status, StatusCode::CREATED);
    let (third_key, third_id) = key_and_id(&third);
    assert_eq!(
        s.whoami(&third_key).await,
        (StatusCode::OK, json!(third_id))
    );
    assert_eq!(
        s.whoami(&new_key).await,
        (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", REVOKED))
    );
    assert_eq!(
        s.rotate(&new_id, None).await,
        (StatusCode::NOT_FOUND, not_found())
    );
    assert_eq!(
        s.rotate("key_000000000000000000000000", None).await,
        (StatusCode::NOT_FOUND, not_found())
    );
}

#[tokio::test]
async fn a_rotation_with_grace_counts_against_the_active_key_cap() {
    // The admin key is one of the three.
    let s = server(Some(3)).await;
    let (_, first) = s.issue("first").await;
    let (status, rotated) = s.rotate(&first, Some(3600)).await;
    assert_eq!(status, StatusCode::CREATED, "room for the key in grace");
    let (_, second) = key_and_id(&rotated);

    assert_eq!(
        s.rotate(&second, Some(3600)).await,
        (
            StatusCode::CONFLICT,
            envelope(
                "KEY_LIMIT_REACHED",
                "The tenant already has 3 active keys, the maximum; revoke one first"
            )
        )
    );
    assert_eq!(
        s.listed_ids().await,
        [s.admin_id.clone(), first.clone(), second.clone()]
    );

    let (status, rotated) = s.rotate(&second, None).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "without grace the count does not grow"
    );
    let (_, third) = key_and_id(&rotated);
    assert_eq!(s.listed_ids().await, [s.admin_id.clone(), first, third]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_leave_one_working_successor() {
    let s = std::sync::Arc::new(server(None).await);
    let (old_key, old_id) = s.issue("contested").await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (s, id) = (s.clone(), old_id.clone());
        tasks.spawn(async move { s.rotate(&id, None).await });
    }
    let mut successors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            (StatusCode::CREATED, body) => successors.push(key_and_id(&body)),
            (StatusCode::NOT_FOUND, body) => assert_eq!(body, not_found()),
            (StatusCode::CONFLICT, body) => {
                assert_eq!(body, envelope("KEY_ALREADY_ROTATED", ALREADY_ROTATED));
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(successors.len(), 1, "exactly one rotation succeeds");
    let (key, id) = &successors[0];
    assert_eq!(s.whoami(key).await, (StatusCode::OK, json!(id)));
    assert_eq!(
        s.whoami(&old_key).await,
        (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", REVOKED))
    );
    assert_eq!(s.listed_ids().await, [s.admin_id.clone(), id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_racing_a_revocation_has_one_winner() {
    let s = std::sync::Arc::new(server(None).await);
    let mut keys = Vec::new();
    for i in 0..20 {
        keys.push(s.issue(&format!("raced {i}")).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (_, id)) in keys.iter().enumerate() {
        let rotate = {
            let (s, id) = (s.clone(), id.clone());
            async move { (i, true, s.rotate(&id, None).await) }
        };
        let revoke = {
            let (s, id) = (s.clone(), id.clone());
            async move {
                (
                    i,
                    false,
                    s.call("DELETE", &format!("/v1/api-keys/{id}"), None).await,
                )
            }
        };
        if i % 2 == 0 {
            tasks.spawn(rotate);
            tasks.spawn(revoke);
        } else {
            tasks.spawn(revoke);
            tasks.spawn(rotate);
        }
    }
    let mut rotations = vec![None; keys.len()];
    let mut revocations = vec![None; keys.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            (i, true, answer) => rotations[i] = Some(answer),
            (i, false, answer) => revocations[i] = Some(answer),
        }
    }
    let mut successors = Vec::new();
    for (i, (old_key, _)) in keys.iter().enumerate() {
        let rotation = rotations[i].take().unwrap();
        let revocation = revocations[i].take().unwrap();
        assert_eq!(
            s.whoami(old_key).await,
            (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", REVOKED)),
            "key {i}: the old key stops either way"
        );
        match (rotation, revocation) {
            ((StatusCode::CREATED, body), (StatusCode::NOT_FOUND, refused)) => {
                assert_eq!(refused, not_found());
                let (key, id) = key_and_id(&body);
                assert_eq!(
                    s.whoami(&key).await,
                    (StatusCode::OK, json!(id)),
                    "key {i}: the rotation won; its successor works"
                );
                successors.push(id);
            }
            ((StatusCode::NOT_FOUND, refused), (StatusCode::NO_CONTENT, _)) => {
                assert_eq!(refused, not_found(), "key {i}: the revocation won");
            }
            other => panic!("key {i}: both or neither won: {other:?}"),
        }
    }
    let mut expected = vec![s.admin_id.clone()];
    expected.extend(successors);
    let mut listed = s.listed_ids().await;
    listed.sort();
    expected.sort();
    assert_eq!(
        listed, expected,
        "the admin key and the successors, no old key"
    );
}
