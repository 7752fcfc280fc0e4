//! The management API through the real layer: every call, every bad body, tenant isolation,
//! and no secret in any answer but the one that issues it.
#![cfg(feature = "axum")]

mod common;

use axum::{Router, body::Body, routing::get};
use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use keygate::key::Environment;
use keygate::manage::{KeyManager, NewKey};
use keygate::scope::Scope;
use keygate::store::{ManagedKeyStore, MemoryStore};
use keygate::{AuthLayer, Tenant, Verifier, api};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Setup {
    app: Router,
    acme_admin: String,
    acme_reader: String,
    globex_admin: String,
    globex_key_id: String,
    /// Every response body seen, for the secret scan.
    seen: std::sync::Mutex<Vec<String>>,
}

async fn setup_with(manager_store: impl ManagedKeyStore + Clone, auth_store: MemoryStore) -> Setup {
    let verifier = Verifier::builder(auth_store.clone()).build();
    let manager = KeyManager::builder(manager_store)
        .for_verifier(&verifier)
        .known_scopes([Scope::ADMIN, Scope::READ, Scope::WRITE])
        .max_active_keys(Some(6))
        .build();
    let seed = KeyManager::builder(auth_store)
        .for_verifier(&verifier)
        .build();
    let acme_admin = seed
        .issue("seed", "acme", NewKey::new("acme admin", ["admin"]))
        .await
        .unwrap();
    let acme_reader = seed
        .issue("seed", "acme", NewKey::new("acme reader", ["read"]))
        .await
        .unwrap();
    let globex_admin = seed
        .issue(
            "seed",
            "globex",
            NewKey::new("globex admin", ["admin"]).environment(Environment::Test),
        )
        .await
        .unwrap();
    let auth = AuthLayer::new(verifier);
    let app = api::router(manager)
        .route_layer(auth.require_scope(Scope::ADMIN))
        .route(
            "/v1/whoami",
            get(|t: Tenant| async move { t.key_id().to_owned() }).route_layer(auth),
        );
    Setup {
        app,
        acme_admin: acme_admin.key.expose_secret().to_owned(),
        acme_reader: acme_reader.key.expose_secret().to_owned(),
        globex_admin: globex_admin.key.expose_secret().to_owned(),
        globex_key_id: globex_admin.info.id.clone(),
        seen: Default::default(),
    }
}

async fn setup() -> Setup {
    let store = MemoryStore::new();
    setup_with(store.clone(), store).await
}

impl Setup {
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        let body = match body {
            Some((content_type, text)) => {
                if !content_type.is_empty() {
                    req = req.header("content-type", content_type);
                }
                Body::from(text.to_owned())
            }
            None => Body::empty(),
        };
        let response = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let mut scanned = value.clone();
        if let Some(data) = scanned.get_mut("data").and_then(Value::as_object_mut) {
            data.remove("key"); // the one field allowed to hold a secret
        }
        self.seen
            .lock()
            .unwrap()
            .push(format!("{headers:?} {scanned}"));
        if value.is_null() {
            self.seen.lock().unwrap().push(text);
        }
        (status, headers, value)
    }

    async fn json(&self, method: &str, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let text = body.to_string();
        let (s, _, v) = self
            .call(method, path, Some(key), Some(("application/json", &text)))
            .await;
        (s, v)
    }

    async fn works(&self, key: &str) -> bool {
        self.call("GET", "/v1/whoami", Some(key), None).await.0 == StatusCode::OK
    }
}

fn bad_request(message: &str) -> Value {
    envelope("BAD_REQUEST", message)
}

#[tokio::test]
async fn issue_list_get_rename_rotate_revoke() {
    let s = setup().await;
    let admin = s.acme_admin.clone();

    // Issue.
    let (status, created) = s
        .json(
            "POST",
            "/v1/api-keys",
            &admin,
            json!({"name": "Production API", "scopes": ["read", "write"], "environment": "live",
            "expires_at": "2099-01-01T00:00:00Z", "metadata": {"team": "core"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["success"], true);
    assert_eq!(
        created["message"],
        "Store this key securely — it cannot be retrieved again."
    );
    let data = created["data"].as_object().unwrap();
    let mut fields: Vec<&str> = data.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created_at",
            "environment",
            "expires_at",
            "id",
            "key",
            "last4",
            "last_used_at",
            "metadata",
            "name",
            "prefix",
            "restrictions",
            "scopes"
        ]
    );
    let key = data["key"].as_str().unwrap().to_owned();
    let id = data["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk_live_"));
    assert_eq!(data["prefix"], "sk_live_");
    assert_eq!(data["last4"], key[key.len() - 4..]);
    assert_eq!(data["scopes"], json!(["read", "write"]));
    assert_eq!(data["environment"], "live");
    assert_eq!(data["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(data["metadata"], json!({"team": "core"}));
    assert!(s.works(&key).await);

    // List: metadata only, oldest first.
    let (status, _, listed) = s.call("GET", "/v1/api-keys", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme admin", "acme reader", "Production API"]);
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key").is_none())
    );

    // Get and rename.
    let (status, _, got) = s
        .call("GET", &format!("/v1/api-keys/{id}"), Some(&admin), None)
        .await;
    assert_eq!(
        (status, got["data"]["name"].as_str()),
        (StatusCode::OK, Some("Production API"))
    );
    let (status, renamed) = s
        .json(
            "PATCH",
            &format!("/v1/api-keys/{id}"),
            &admin,
            json!({"name": "Prod"}),
        )
        .await;
    assert_eq!(
        (status, renamed["data"]["name"].as_str()),
        (StatusCode::OK, Some("Prod"))
    );
    assert!(renamed["data"].get("key").is_none());

    // Rotate without grace: same name, scopes, environment, expiry; old key refused at once.
    let (status, _, rotated) = s
        .call(
            "POST",
            &format!("/v1/api-keys/{id}/rotate"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let new_key = rotated["data"]["key"].as_str().unwrap().to_owned();
    let new_id = rotated["data"]["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    assert_eq!(rotated["data"]["name"], "Prod");
    assert_eq!(rotated["data"]["scopes"], json!(["read", "write"]));
    assert_eq!(rotated["data"]["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(
        rotated["message"],
        "Store this key securely — it cannot be retrieved again."
    );
    assert!(!s.works(&key).await, "the old key stops at once");
    assert!(s.works(&new_key).await);
    let (status, _, body) = s
        .call("GET", &format!("/v1/api-keys/{id}"), Some(&admin), None)
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            envelope("NOT_FOUND", "API key not found")
        )
    );

    // Rotate with a grace period: both work.
    let (status, graced) = s
        .json(
            "POST",
            &format!("/v1/api-keys/{new_id}/rotate"),
            &admin,
            json!({"grace_period_seconds": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let third = graced["data"]["key"].as_str().unwrap().to_owned();
    assert!(s.works(&new_key).await && s.works(&third).await);

    // Revoke: 204, empty body, refused on the next request, gone.
    let (status, headers, body) = s
        .call(
            "DELETE",
            &format!("/v1/api-keys/{new_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert!(headers.get("content-length").is_none_or(|v| v == "0"));
    assert!(!s.works(&new_key).await);
    let (status, _, _) = s
        .call(
            "DELETE",
            &format!("/v1/api-keys/{new_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // No secret anywhere but in the create and rotate answers' `key`.
    let seen = s.seen.lock().unwrap().join("\n");
    for secret in [
        &key,
        &new_key,
        &third,
        &s.acme_admin,
        &s.acme_reader,
        &s.globex_admin,
    ] {
        assert!(
            !seen.contains(&secret[8..]),
            "a secret leaked into a management response"
        );
    }
}

#[tokio::test]
async fn every_bad_body_is_a_400_and_writes_nothing() {
    let s = setup().await;
    let admin = s.acme_admin.clone();
    async fn count(s: &Setup, admin: &str) -> usize {
        s.call("GET", "/v1/api-keys", Some(admin), None).await.2["data"]
            .as_array()
            .unwrap()
            .len()
    }
    let before = count(&s, &admin).await;
    let json_ct = "application/json";
    let cases: Vec<(&str, &str, &str, String)> = vec![
        ("missing name", json_ct, r#"{"scopes":["read"]}"#, "Invalid JSON body: missing field `name` at line 1 column 19".into()),
        ("empty name", json_ct, r#"{"name":"  ","scopes":["read"]}"#, "Name must be 1 to 100 characters without control characters".into()),
        ("long name", json_ct, &*Box::leak(format!(r#"{{"name":"{}","scopes":["read"]}}"#, "n".repeat(101)).into_boxed_str()), "Name must be 1 to 100 characters without control characters".into()),
        ("missing scopes", json_ct, r#"{"name":"x"}"#, "Invalid JSON body: missing field `scopes` at line 1 column 12".into()),
        ("empty scopes", json_ct, r#"{"name":"x","scopes":[]}"#, "Scopes must not be empty".into()),
        ("unknown scope", json_ct, r#"{"name":"x","scopes":["read","billing"]}"#, "Unknown scope: billing".into()),
        ("invalid scope", json_ct, r#"{"name":"x","scopes":["Read Me"]}"#, "Unknown scope: Read Me".into()),
        ("past expiry", json_ct, r#"{"name":"x","scopes":["read"],"expires_at":"2001-01-01T00:00:00Z"}"#, "expires_at must be in the future".into()),
        ("expiry not RFC 3339", json_ct, r#"{"name":"x","scopes":["read"],"expires_at":"tomorrow"}"#, String::new()),
        ("unknown environment", json_ct, r#"{"name":"x","scopes":["read"],"environment":"prod"}"#, String::new()),
        ("unknown field", json_ct, r#"{"name":"x","scopes":["read"],"admin":true}"#, String::new()),
        ("malformed JSON", json_ct, r#"{"name":"x","#, "Invalid JSON body: EOF while parsing a value at line 1 column 12".into()),
        ("not an object", json_ct, "[]", "Invalid JSON body: invalid length 0, expected struct CreateKey with 6 elements at line 1 column 2".into()),
        ("wrong content type", "text/plain", r#"{"name":"x","scopes":["read"]}"#, "Content-Type must be application/json".into()),
        ("no content type", "", r#"{"name":"x","scopes":["read"]}"#, "Content-Type must be application/json".into()),
    ];
    for (name, content_type, body, message) in cases {
        let (status, headers, value) = s
            .call(
                "POST",
                "/v1/api-keys",
                Some(&admin),
                Some((content_type, body)),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(headers["content-type"], "application/json", "{name}");
        assert_eq!(value["success"], false, "{name}");
        assert_eq!(value["error"]["code"], "BAD_REQUEST", "{name}");
        let got = value["error"]["message"].as_str().unwrap();
        if message.is_empty() {
            assert!(got.starts_with("Invalid JSON body: "), "{name}: {got}");
        } else {
            assert_eq!(value, bad_request(&message), "{name}");
        }
    }
    assert_eq!(count(&s, &admin).await, before, "nothing written");

    // Rename and rotate bodies.
    let (_, listed) = (0, s.call("GET", "/v1/api-keys", Some(&admin), None).await.2);
    let id = listed["data"][1]["id"].as_str().unwrap().to_owned();
    let (status, v) = s
        .json(
            "PATCH",
            &format!("/v1/api-keys/{id}"),
            &admin,
            json!({"name": ""}),
        )
        .await;
    assert_eq!(
        (status, v),
        (
            StatusCode::BAD_REQUEST,
            bad_request("Name must be 1 to 100 characters without control characters")
        )
    );
    let (status, _) = s
        .json(
            "PATCH",
            &format!("/v1/api-keys/{id}"),
            &admin,
            json!({"title": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, v) = s
        .json(
            "POST",
            &format!("/v1/api-keys/{id}/rotate"),
            &admin,
            json!({"grace_period_seconds": 99_999_999}),
        )
        .await;
    assert_eq!(
        (status, v),
        (
            StatusCode::BAD_REQUEST,
            bad_request("grace_period_seconds must be between 0 and 2592000")
        )
    );
    let (status, _) = s
        .json(
            "POST",
            &format!("/v1/api-keys/{id}/rotate"),
            &admin,
            json!({"grace_period_seconds": -5}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        s.works(&s.acme_reader).await,
        "a refused rotation changes nothing"
    );
    assert_eq!(count(&s, &admin).await, before);
}

#[tokio::test]
async fn tenants_are_isolated_and_admin_is_required() {
    let s = setup().await;
    let foreign = format!("/v1/api-keys/{}", s.globex_key_id);
    let not_found = envelope("NOT_FOUND", "API key not found");
    for (method, path, body) in [
        ("GET", foreign.clone(), None),
        ("PATCH", foreign.clone(), Some(r#"{"name":"pwned"}"#)),
        ("DELETE", foreign.clone(), None),
        ("POST", format!("{foreign}/rotate"), None),
        ("GET", "/v1/api-keys/key_does_not_exist".into(), None),
    ] {
        let (status, _, value) = s
            .call(
                method,
                &path,
                Some(&s.acme_admin),
                body.map(|b| ("application/json", b)),
            )
            .await;
        assert_eq!(
            (status, &value),
            (StatusCode::NOT_FOUND, &not_found),
            "{method} {path}"
        );
    }
    assert!(
        s.works(&s.globex_admin).await,
        "the other tenant's key is untouched"
    );
    let (_, _, globex) = s
        .call("GET", "/v1/api-keys", Some(&s.globex_admin), None)
        .await;
    assert_eq!(globex["data"].as_array().unwrap().len(), 1);
    assert_eq!(globex["data"][0]["name"], "globex admin");

    // Keys created by a test-environment admin default to its environment.
    let (status, created) = s
        .json(
            "POST",
            "/v1/api-keys",
            &s.globex_admin.clone(),
            json!({"name": "t", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(
        (status, created["data"]["environment"].as_str()),
        (StatusCode::CREATED, Some("test"))
    );

    let (status, headers, value) = s
        .call("GET", "/v1/api-keys", Some(&s.acme_reader), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        value,
        envelope("FORBIDDEN", "API key lacks the required scope: admin")
    );
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"admin\""
    );
    let (status, _, value) = s
        .call(
            "POST",
            "/v1/api-keys",
            None,
            Some(("application/json", "{}")),
        )
        .await;
    assert_eq!(
        (status, value),
        (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", MISSING))
    );
}

#[tokio::test]
async fn router_without_the_layer_refuses_everything() {
    let manager = KeyManager::builder(MemoryStore::new()).build();
    let app = api::router(manager);
    let response = app
        .oneshot(Request::get("/v1/api-keys").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn active_key_cap_is_a_409() {
    let s = setup().await;
    for i in 0..4 {
        let (status, _) = s
            .json(
                "POST",
                "/v1/api-keys",
                &s.acme_admin.clone(),
                json!({"name": format!("k{i}"), "scopes": ["read"]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "key {i}");
    }
    let (status, value) = s
        .json(
            "POST",
            "/v1/api-keys",
            &s.acme_admin.clone(),
            json!({"name": "one too many", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        value,
        envelope(
            "KEY_LIMIT_REACHED",
            "The tenant already has 6 active keys, the maximum; revoke one first"
        )
    );
}

/// A managed store whose backend is down.
#[derive(Clone)]
struct DownStore;

#[async_trait::async_trait]
impl keygate::store::KeyStore for DownStore {
    async fn find(&self, _: &keygate::hash::KeyDigest) -> keygate::store::Lookup {
        Err(keygate::store::StoreError::Timeout)
    }
}

#[async_trait::async_trait]
impl ManagedKeyStore for DownStore {
    async fn insert(
        &self,
        _: keygate::store::KeyRecord,
        _: Option<usize>,
    ) -> Result<(), keygate::store::StoreError> {
        Err(keygate::store::StoreError::Timeout)
    }
    async fn get(
        &self,
        _: &str,
        _: &str,
        _: time::OffsetDateTime,
    ) -> Result<Option<keygate::store::KeyRecord>, keygate::store::StoreError> {
        Err(keygate::store::StoreError::Timeout)
    }
    async fn list(
        &self,
        _: &str,
        _: time::OffsetDateTime,
    ) -> Result<Vec<keygate::store::KeyRecord>, keygate::store::StoreError> {
        Err(keygate::store::StoreError::Timeout)
    }
    async fn rename(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: time::OffsetDateTime,
    ) -> Result<Option<keygate::store::KeyRecord>, keygate::store::StoreError> {
        Err(keygate::store::StoreError::Timeout)
    }
    async fn revoke(
        &self,
        _: &str,
        _: &str,
        _: time::OffsetDateTime,
    ) -> Result<Option<keygate::store::KeyRecord>, keygate::store::StoreError> {
        Err(keygate::store::StoreError::Timeout)
    }
    async fn rotate(
        &self,
        _: &str,
        _: &str,
        _: keygate::store::KeyRecord,
        _: time::OffsetDateTime,
        _: time::OffsetDateTime,
    ) -> Result<Option<keygate::store::KeyRecord>, keygate::store::StoreError> {
        Err(keygate::store::StoreError::Timeout)
    }
    async fn touch(
        &self,
        _: &[(String, time::OffsetDateTime)],
    ) -> Result<(), keygate::store::StoreError> {
        Err(keygate::store::StoreError::Timeout)
    }
}

#[tokio::test]
async fn store_failure_is_a_503() {
    let s = setup_with(DownStore, MemoryStore::new()).await;
    let unavailable = envelope("SERVICE_UNAVAILABLE", UNAVAILABLE);
    let (status, v) = s
        .json(
            "POST",
            "/v1/api-keys",
            &s.acme_admin.clone(),
            json!({"name": "x", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(
        (status, v),
        (StatusCode::SERVICE_UNAVAILABLE, unavailable.clone())
    );
    let (status, _, v) = s
        .call("GET", "/v1/api-keys", Some(&s.acme_admin), None)
        .await;
    assert_eq!((status, v), (StatusCode::SERVICE_UNAVAILABLE, unavailable));
}

#[tokio::test]
async fn management_over_tcp_and_no_secret_in_logs() {
    let logs = LogCapture::start();
    let s = setup().await;
    let addr = serve(s.app.clone()).await;
    let post = http::Request::post("/v1/api-keys")
        .header("authorization", format!("Bearer {}", s.acme_admin))
        .header("content-type", "application/json")
        .body(r#"{"name":"over tcp","scopes":["write"]}"#.to_owned())
        .unwrap();
    let reply = send_tcp(addr, post).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.headers["content-type"], "application/json");
    let created = reply.json();
    let key = created["data"]["key"].as_str().unwrap().to_owned();
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    let rotate = http::Request::post(format!("/v1/api-keys/{id}/rotate"))
        .header("x-api-key", &s.acme_admin)
        .body(String::new())
        .unwrap();
    let rotated = send_tcp(addr, rotate).await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    let new_key = rotated.json()["data"]["key"].as_str().unwrap().to_owned();
    let new_id = rotated.json()["data"]["id"].as_str().unwrap().to_owned();
    let delete = http::Request::delete(format!("/v1/api-keys/{new_id}"))
        .header("x-api-key", &s.acme_admin)
        .body(String::new())
        .unwrap();
    let deleted = send_tcp(addr, delete).await;
    assert_eq!(
        (deleted.status, deleted.body.len()),
        (StatusCode::NO_CONTENT, 0)
    );
    let text = logs.text();
    assert!(
        text.contains("key lifecycle event"),
        "audit events were logged: {text}"
    );
    assert!(
        text.contains(&id) && text.contains(&new_id),
        "audit events name the keys"
    );
    for secret in [
        &key,
        &new_key,
        &s.acme_admin,
        &s.globex_admin,
        &s.acme_reader,
    ] {
        assert!(!text.contains(&secret[8..]), "a secret in the logs");
    }
}

#[tokio::test]
async fn last_used_is_coalesced_and_flushed() {
    use keygate::manage::LastUsedTracker;
    let store = MemoryStore::new();
    let verifier = Verifier::builder(store.clone()).build();
    let manager = KeyManager::builder(store.clone())
        .for_verifier(&verifier)
        .build();
    let a = manager
        .issue("t", "acme", NewKey::new("a", ["read"]))
        .await
        .unwrap();
    let b = manager
        .issue("t", "acme", NewKey::new("b", ["read"]))
        .await
        .unwrap();
    let tracker = LastUsedTracker::new();
    let flusher = tracker.spawn_flusher(store.clone(), std::time::Duration::from_secs(3600));
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(AuthLayer::new(verifier).track_last_used(tracker.clone()));
    for key in [&a.key, &b.key, &a.key, &a.key] {
        let req = Request::get("/")
            .header("x-api-key", key.expose_secret())
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 200);
    }
    assert_eq!(
        tracker.pending_len(),
        2,
        "one note per key, however many requests"
    );
    assert!(
        manager
            .get("acme", &a.info.id)
            .await
            .unwrap()
            .last_used_at
            .is_none(),
        "no store write per request"
    );
    assert_eq!(
        flusher.shutdown().await.unwrap(),
        2,
        "shutdown writes what is pending"
    );
    assert!(
        manager
            .get("acme", &a.info.id)
            .await
            .unwrap()
            .last_used_at
            .is_some()
    );
    assert!(
        manager
            .get("acme", &b.info.id)
            .await
            .unwrap()
            .last_used_at
            .is_some()
    );
    assert_eq!(tracker.pending_len(), 0);
}
