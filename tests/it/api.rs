//! The management API through the real layer: every call, every bad body, tenant isolation,
//! and no secret in any answer but the one that issues it.

use crate::common::*;
use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use keygate::key::Environment;
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::scope::Scope;
use keygate::store::{ManagedKeyStore, MemoryStore};
use keygate::{AuthLayer, Tenant, Verifier, api};
use serde_json::{Value, json};
use std::sync::Arc;
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
        .scheme(verifier.scheme().clone())
        .known_scopes([Scope::ADMIN, Scope::READ, Scope::WRITE])
        .max_active_keys(Some(6))
        .build();
    let seed = KeyManager::builder(auth_store)
        .scheme(verifier.scheme().clone())
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
            "revoked_at",
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
    assert_eq!(graced["data"]["revoked_at"], Value::Null);
    // The key in its grace period shows when it stops: an hour after its successor was made.
    let (status, _, shown) = s
        .call("GET", &format!("/v1/api-keys/{new_id}"), Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let rfc3339 = |v: &Value| {
        let text = v.as_str().unwrap_or_else(|| panic!("a time, not {v}"));
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert_eq!(
        rfc3339(&shown["data"]["revoked_at"]),
        rfc3339(&graced["data"]["created_at"]) + time::Duration::hours(1)
    );

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
        (
            "missing name",
            json_ct,
            r#"{"scopes":["read"]}"#,
            "Invalid JSON body: missing field `name` at line 1 column 19".into(),
        ),
        (
            "empty name",
            json_ct,
            r#"{"name":"  ","scopes":["read"]}"#,
            "Name must be 1 to 128 characters without control or formatting characters".into(),
        ),
        (
            "long name",
            json_ct,
            &*Box::leak(
                format!(r#"{{"name":"{}","scopes":["read"]}}"#, "n".repeat(129)).into_boxed_str(),
            ),
            "Name must be 1 to 128 characters without control or formatting characters".into(),
        ),
        (
            "missing scopes",
            json_ct,
            r#"{"name":"x"}"#,
            "Invalid JSON body: missing field `scopes` at line 1 column 12".into(),
        ),
        (
            "empty scopes",
            json_ct,
            r#"{"name":"x","scopes":[]}"#,
            "Scopes must not be empty".into(),
        ),
        (
            "unknown scope",
            json_ct,
            r#"{"name":"x","scopes":["read","billing"]}"#,
            "Unknown scope: billing".into(),
        ),
        (
            "invalid scope",
            json_ct,
            r#"{"name":"x","scopes":["Read Me"]}"#,
            "Unknown scope: Read Me".into(),
        ),
        (
            "past expiry",
            json_ct,
            r#"{"name":"x","scopes":["read"],"expires_at":"2001-01-01T00:00:00Z"}"#,
            "expires_at must be in the future".into(),
        ),
        (
            "expiry not RFC 3339",
            json_ct,
            r#"{"name":"x","scopes":["read"],"expires_at":"tomorrow"}"#,
            String::new(),
        ),
        (
            "unknown environment",
            json_ct,
            r#"{"name":"x","scopes":["read"],"environment":"prod"}"#,
            String::new(),
        ),
        (
            "unknown field",
            json_ct,
            r#"{"name":"x","scopes":["read"],"admin":true}"#,
            String::new(),
        ),
        (
            "malformed JSON",
            json_ct,
            r#"{"name":"x","#,
            "Invalid JSON body: EOF while parsing a value at line 1 column 12".into(),
        ),
        (
            "not an object",
            json_ct,
            "[]",
            "Invalid JSON body: invalid type: sequence, expected a JSON object at line 1 column 0"
                .into(),
        ),
        (
            "wrong content type",
            "text/plain",
            r#"{"name":"x","scopes":["read"]}"#,
            "Content-Type must be application/json".into(),
        ),
        (
            "no content type",
            "",
            r#"{"name":"x","scopes":["read"]}"#,
            "Content-Type must be application/json".into(),
        ),
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
            bad_request(
                "Name must be 1 to 128 characters without control or formatting characters"
            )
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
    // Not a whole number of seconds: the same message as a grace period out of range.
    for grace in [
        json!(-5),
        json!(1.5),
        json!("60"),
        json!(true),
        json!(1e30),
        json!([]),
    ] {
        let (status, v) = s
            .json(
                "POST",
                &format!("/v1/api-keys/{id}/rotate"),
                &admin,
                json!({"grace_period_seconds": grace}),
            )
            .await;
        assert_eq!(
            (status, v),
            (
                StatusCode::BAD_REQUEST,
                bad_request("grace_period_seconds must be between 0 and 2592000")
            ),
            "grace_period_seconds {grace}"
        );
    }
    assert!(
        s.works(&s.acme_reader).await,
        "a refused rotation changes nothing"
    );
    assert_eq!(count(&s, &admin).await, before);

    // A whole number written with a zero fraction is an integer, as the OpenAPI document's
    // JSON Schema takes it: a grace period of a minute.
    let (status, graced) = s
        .json(
            "POST",
            &format!("/v1/api-keys/{id}/rotate"),
            &admin,
            json!({"grace_period_seconds": 60.0}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{graced}");
    let (status, _, shown) = s
        .call("GET", &format!("/v1/api-keys/{id}"), Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let time = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        time(&shown["data"]["revoked_at"]),
        time(&graced["data"]["created_at"]) + time::Duration::minutes(1)
    );
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

#[tokio::test]
async fn store_failure_is_a_503() {
    let s = setup_with(DownStore::TimesOut, MemoryStore::new()).await;
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
    // The answer holds the secret: no cache may keep it.
    assert_eq!(reply.headers["cache-control"], "no-store");
    let created = reply.json();
    let key = created["data"]["key"].as_str().unwrap().to_owned();
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    let rotate = http::Request::post(format!("/v1/api-keys/{id}/rotate"))
        .header("x-api-key", &s.acme_admin)
        .body(String::new())
        .unwrap();
    let rotated = send_tcp(addr, rotate).await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    assert_eq!(rotated.headers["cache-control"], "no-store");
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
    use keygate::last_used::LastUsedTracker;
    let store = MemoryStore::new();
    let verifier = Verifier::builder(store.clone()).build();
    let manager = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
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

// ---------------------------------------------------------------------------------------------
// Over real TCP: bounds of the caller, caps on input, strict bodies, plans, rotation grace.
// ---------------------------------------------------------------------------------------------

/// One management call over TCP; `body` is sent as `application/json`.
async fn call_tcp(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: Option<String>,
) -> Reply {
    call_tcp_with(addr, method, path, key, body, &[]).await
}

async fn call_tcp_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", key);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    send_tcp(addr, req.body(body.unwrap_or_default()).unwrap()).await
}

fn forbidden(message: &str) -> Value {
    envelope("FORBIDDEN", message)
}

async fn issue(manager: &KeyManager, tenant: &str, new: NewKey) -> (String, String) {
    let issued = manager.issue("operator", tenant, new).await.unwrap();
    (issued.key.expose_secret().to_owned(), issued.info.id)
}

fn restrictions(value: Value) -> keygate::restriction::Restrictions {
    serde_json::from_value(value).unwrap()
}

/// Two admin keys of acme, each bounded where a live admin key is not: one of the test
/// environment, one restricted to loopback clients. Secrets and ids.
async fn restricted_admins(operator: &KeyManager) -> [(String, String); 2] {
    let test = NewKey::new("test admin", ["admin"]).environment(Environment::Test);
    let ip = NewKey::new("ip admin", ["admin"])
        .restrictions(restrictions(json!({"ip_ranges": ["127.0.0.0/8"]})));
    [
        issue(operator, "acme", test).await,
        issue(operator, "acme", ip).await,
    ]
}

#[tokio::test]
async fn a_key_cannot_issue_or_rotate_keys_beyond_its_own() {
    let store = MemoryStore::new();
    let verifier = Verifier::builder(store.clone()).build();
    // The operator's own manager, called from Rust, is bound by no caller.
    let operator = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .build();
    let auth = AuthLayer::new(verifier);
    let addr =
        serve(api::router(operator.clone()).route_layer(auth.require_scope(Scope::ADMIN))).await;

    let [(test_admin, test_admin_id), (ip_admin, _)] = restricted_admins(&operator).await;
    let (endpoint_admin, _) = issue(
        &operator,
        "acme",
        NewKey::new("endpoint admin", ["admin"]).restrictions(restrictions(
            json!({"endpoints": [{"path": "/v1/api-keys*"}]}),
        )),
    )
    .await;
    let (referrer_admin, _) = issue(
        &operator,
        "acme",
        NewKey::new("referrer admin", ["admin"]).restrictions(restrictions(
            json!({"referrers": ["https://admin.example.com/*"]}),
        )),
    )
    .await;
    let in_an_hour = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let (expiring_admin, _) = issue(
        &operator,
        "acme",
        NewKey::new("expiring admin", ["admin"]).expires_at(in_an_hour),
    )
    .await;
    let (plain, plain_id) = issue(&operator, "acme", NewKey::new("plain", ["read"])).await;
    let count = || async { operator.list("acme").await.unwrap().len() };
    let before = count().await;

    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let in_half_an_hour = rfc3339(time::OffsetDateTime::now_utc() + time::Duration::minutes(30));
    let referer = [("referer", "https://admin.example.com/keys")];
    let cases: Vec<(&str, &str, Value, Option<&str>)> = vec![
        (
            "test admin, live key",
            &test_admin,
            json!({"name": "n", "scopes": ["read"], "environment": "live"}),
            Some("environment"),
        ),
        (
            "test admin, test key",
            &test_admin,
            json!({"name": "n", "scopes": ["read"]}),
            None,
        ),
        (
            "ip admin, unrestricted",
            &ip_admin,
            json!({"name": "n", "scopes": ["read"]}),
            Some("restrictions"),
        ),
        (
            "ip admin, other range",
            &ip_admin,
            json!({"name": "n", "scopes": ["read"], "restrictions": {"ip_ranges": ["10.0.0.0/8"]}}),
            Some("restrictions"),
        ),
        (
            "ip admin, wider range",
            &ip_admin,
            json!({"name": "n", "scopes": ["read"], "restrictions": {"ip_ranges": ["126.0.0.0/7"]}}),
            Some("restrictions"),
        ),
        (
            "ip admin, IPv6 range",
            &ip_admin,
            json!({"name": "n", "scopes": ["read"], "restrictions": {"ip_ranges": ["::1/128"]}}),
            Some("restrictions"),
        ),
        (
            "ip admin, narrower ranges",
            &ip_admin,
            json!({"name": "n", "scopes": ["read"], "restrictions": {"ip_ranges": ["127.0.0.1/32", "127.1.0.0/16"]}}),
            None,
        ),
        (
            "endpoint admin, unrestricted",
            &endpoint_admin,
            json!({"name": "n", "scopes": ["read"]}),
            Some("restrictions"),
        ),
        (
            "endpoint admin, other path",
            &endpoint_admin,
            json!({"name": "n", "scopes": ["read"], "restrictions": {"endpoints": [{"path": "/v1/documents"}]}}),
            Some("restrictions"),
        ),
        (
            "endpoint admin, narrower rules",
            &endpoint_admin,
            json!({"name": "n", "scopes": ["read"], "restrictions": {"endpoints": [{"method": "GET", "path": "/v1/api-keys"}, {"path": "/v1/api-keys/*"}]}}),
            None,
        ),
        (
            "referrer admin, unrestricted",
            &referrer_admin,
            json!({"name": "n", "scopes": ["read"]}),
            Some("restrictions"),
        ),
        (
            "referrer admin, the bare origin",
            &referrer_admin,
            json!({"name": "n", "scopes": ["read"], "restrictions": {"referrers": ["https://admin.example.com"]}}),
            Some("restrictions"),
        ),
        (
            "referrer admin, a page under its prefix",
            &referrer_admin,
            json!({"name": "n", "scopes": ["read"], "restrictions": {"referrers": ["https://admin.example.com/keys"]}}),
            None,
        ),
        (
            "expiring admin, no expiry",
            &expiring_admin,
            json!({"name": "n", "scopes": ["read"]}),
            Some("expiry"),
        ),
        (
            "expiring admin, later expiry",
            &expiring_admin,
            json!({"name": "n", "scopes": ["read"], "expires_at": "2099-01-01T00:00:00Z"}),
            Some("expiry"),
        ),
        (
            "expiring admin, earlier expiry",
            &expiring_admin,
            json!({"name": "n", "scopes": ["read"], "expires_at": in_half_an_hour}),
            None,
        ),
    ];
    let mut created = 0;
    for (name, key, body, violation) in cases {
        let reply = call_tcp_with(
            addr,
            "POST",
            "/v1/api-keys",
            key,
            Some(body.to_string()),
            &referer,
        )
        .await;
        match violation {
            Some(bound) => assert_eq!(
                (reply.status, reply.json()),
                (
                    StatusCode::FORBIDDEN,
                    forbidden(&format!("Cannot issue a key beyond your own: {bound}"))
                ),
                "{name}"
            ),
            None => {
                assert_eq!(
                    reply.status,
                    StatusCode::CREATED,
                    "{name}: {:?}",
                    reply.json()
                );
                created += 1;
            }
        }
    }
    assert_eq!(count().await, before + created, "refusals write nothing");

    // Rotation: the successor keeps the rotated key's attributes, which must be inside the
    // caller's bounds.
    let rotate = format!("/v1/api-keys/{plain_id}/rotate");
    for (name, key, bound) in [
        ("ip admin", &ip_admin, "restrictions"),
        ("test admin", &test_admin, "environment"),
        ("expiring admin", &expiring_admin, "expiry"),
    ] {
        let reply = call_tcp_with(addr, "POST", &rotate, key, None, &referer).await;
        assert_eq!(
            (reply.status, reply.json()),
            (
                StatusCode::FORBIDDEN,
                forbidden(&format!("Cannot issue a key beyond your own: {bound}"))
            ),
            "{name}"
        );
    }
    assert_eq!(operator.get("acme", &plain_id).await.unwrap().id, plain_id);
    let who = call_tcp(
        addr,
        "GET",
        &format!("/v1/api-keys/{plain_id}"),
        &ip_admin,
        None,
    )
    .await;
    assert_eq!(
        who.status,
        StatusCode::OK,
        "the refused rotation changed nothing"
    );
    let _ = plain;
    assert_eq!(count().await, before + created);

    // Within its bounds a key may rotate, itself included.
    let reply = call_tcp(
        addr,
        "POST",
        &format!("/v1/api-keys/{test_admin_id}/rotate"),
        &test_admin,
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.json()["data"]["environment"], "test");
}

/// Found by review: a test-environment or IP-restricted admin could rename and revoke any key of
/// its tenant over the API, the live admin key included. A caller now changes only keys it
/// could have issued; it still lists and gets them all.
#[tokio::test]
async fn a_key_cannot_rename_or_revoke_keys_beyond_its_own() {
    let store = MemoryStore::new();
    let verifier = Verifier::builder(store.clone()).build();
    let operator = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .build();
    let auth = AuthLayer::new(verifier);
    let app = api::router(operator.clone())
        .route_layer(auth.require_scope(Scope::ADMIN))
        .route(
            "/v1/whoami",
            get(|t: Tenant| async move { t.key_id().to_owned() }).route_layer(auth),
        );
    let addr = serve(app).await;

    let (live_admin, live_admin_id) =
        issue(&operator, "acme", NewKey::new("live admin", ["admin"])).await;
    let [(test_admin, test_admin_id), (ip_admin, _)] = restricted_admins(&operator).await;
    let (ci, ci_id) = issue(
        &operator,
        "acme",
        NewKey::new("ci", ["read"]).environment(Environment::Test),
    )
    .await;
    let live = format!("/v1/api-keys/{live_admin_id}");
    let rename = Some(json!({"name": "pwned"}).to_string());

    for (who, key, method, body, bound) in [
        (
            "test admin",
            &test_admin,
            "PATCH",
            rename.clone(),
            "environment",
        ),
        ("test admin", &test_admin, "DELETE", None, "environment"),
        (
            "ip admin",
            &ip_admin,
            "PATCH",
            rename.clone(),
            "restrictions",
        ),
        ("ip admin", &ip_admin, "DELETE", None, "restrictions"),
    ] {
        let reply = call_tcp(addr, method, &live, key, body).await;
        assert_eq!(
            (reply.status, reply.json()),
            (
                StatusCode::FORBIDDEN,
                forbidden(&format!("Cannot issue a key beyond your own: {bound}"))
            ),
            "{who}: {method} {live}"
        );
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(reply.headers["cache-control"], "no-store");
        assert!(
            !reply.headers.contains_key("www-authenticate"),
            "{who}: {method}: the caller is authenticated and holds admin"
        );
    }

    // The live admin key is untouched: listed under its name, and it still authenticates.
    let got = call_tcp(addr, "GET", &live, &test_admin, None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["data"]["name"], "live admin");
    // Listing stays unbounded: a test admin sees every active key of its tenant.
    let listed = call_tcp(addr, "GET", "/v1/api-keys", &test_admin, None).await;
    assert_eq!(listed.status, StatusCode::OK);
    let listed = listed.json();
    let mut names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["ci", "ip admin", "live admin", "test admin"]);
    let who = call_tcp(addr, "GET", "/v1/whoami", &live_admin, None).await;
    assert_eq!(
        (who.status, &who.body[..]),
        (StatusCode::OK, live_admin_id.as_bytes())
    );

    // Within its bounds a key renames and revokes, itself included.
    let ci_path = format!("/v1/api-keys/{ci_id}");
    let renamed = call_tcp(
        addr,
        "PATCH",
        &ci_path,
        &test_admin,
        Some(json!({"name": "ci renamed"}).to_string()),
    )
    .await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(renamed.json()["data"]["name"], "ci renamed");
    let revoked = call_tcp(addr, "DELETE", &ci_path, &test_admin, None).await;
    assert_eq!(
        (revoked.status, revoked.body.len()),
        (StatusCode::NO_CONTENT, 0)
    );
    let who = call_tcp(addr, "GET", "/v1/whoami", &ci, None).await;
    assert_eq!(
        (who.status, who.json()),
        (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", REVOKED))
    );
    let own = format!("/v1/api-keys/{test_admin_id}");
    let renamed = call_tcp(
        addr,
        "PATCH",
        &own,
        &test_admin,
        Some(json!({"name": "me"}).to_string()),
    )
    .await;
    assert_eq!(
        (renamed.status, renamed.json()["data"]["name"].clone()),
        (StatusCode::OK, json!("me"))
    );
    let revoked = call_tcp(addr, "DELETE", &own, &test_admin, None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let who = call_tcp(addr, "GET", "/v1/whoami", &test_admin, None).await;
    assert_eq!(
        (who.status, who.json()),
        (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", REVOKED))
    );
}

#[tokio::test]
async fn oversized_input_is_refused_with_a_clear_answer() {
    let store = MemoryStore::new();
    let verifier = Verifier::builder(store.clone()).build();
    let manager = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .build();
    let auth = AuthLayer::new(verifier);
    let addr =
        serve(api::router(manager.clone()).route_layer(auth.require_scope(Scope::ADMIN))).await;
    let (admin, admin_id) = issue(&manager, "acme", NewKey::new("admin", ["admin"])).await;
    let count = || async { manager.list("acme").await.unwrap().len() };
    let before = count().await;

    let scopes = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
    let many = |n: usize, item: &dyn Fn(usize) -> Value| (0..n).map(item).collect::<Vec<_>>();
    let ip = |i: usize| json!(format!("10.0.{}.{}/32", i / 256, i % 256));
    let referrer = |i: usize| json!(format!("https://app{i}.example.com"));
    let endpoint = |i: usize| json!({"path": format!("/v1/e{i}")});
    const NAME_MESSAGE: &str =
        "Name must be 1 to 128 characters without control or formatting characters";
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "65 scopes",
            json!({"name": "n", "scopes": scopes(65)}),
            "Too many scopes: at most 64",
        ),
        (
            "129-character name",
            json!({"name": "n".repeat(129), "scopes": ["read"]}),
            NAME_MESSAGE,
        ),
        (
            "right-to-left override",
            json!({"name": "invoice\u{202E}fdp.exe", "scopes": ["read"]}),
            NAME_MESSAGE,
        ),
        (
            "isolate",
            json!({"name": "a\u{2066}b", "scopes": ["read"]}),
            NAME_MESSAGE,
        ),
        (
            "left-to-right mark",
            json!({"name": "a\u{200E}b", "scopes": ["read"]}),
            NAME_MESSAGE,
        ),
        (
            "arabic letter mark",
            json!({"name": "a\u{061C}b", "scopes": ["read"]}),
            NAME_MESSAGE,
        ),
        (
            "control character",
            json!({"name": "a\u{0007}b", "scopes": ["read"]}),
            NAME_MESSAGE,
        ),
        (
            "4097 bytes of metadata",
            json!({"name": "n", "scopes": ["read"], "metadata": {"k": "x".repeat(4089)}}),
            "metadata must be at most 4096 bytes of JSON",
        ),
        (
            "65 IP ranges",
            json!({"name": "n", "scopes": ["read"], "restrictions": {"ip_ranges": many(65, &ip)}}),
            "restrictions.ip_ranges must have at most 64 entries",
        ),
        (
            "65 referrers",
            json!({"name": "n", "scopes": ["read"], "restrictions": {"referrers": many(65, &referrer)}}),
            "restrictions.referrers must have at most 64 entries",
        ),
        (
            "65 endpoints",
            json!({"name": "n", "scopes": ["read"], "restrictions": {"endpoints": many(65, &endpoint)}}),
            "restrictions.endpoints must have at most 64 entries",
        ),
        (
            "expiry past 2262",
            json!({"name": "n", "scopes": ["read"], "expires_at": "2262-01-01T00:00:01Z"}),
            "expires_at must not be after 2262-01-01T00:00:00Z",
        ),
        (
            "expiry in year 9999",
            json!({"name": "n", "scopes": ["read"], "expires_at": "9999-12-31T23:59:59Z"}),
            "expires_at must not be after 2262-01-01T00:00:00Z",
        ),
    ];
    for (name, body, message) in cases {
        let reply = call_tcp(addr, "POST", "/v1/api-keys", &admin, Some(body.to_string())).await;
        assert_eq!(
            (reply.status, reply.json()),
            (StatusCode::BAD_REQUEST, bad_request(message)),
            "{name}"
        );
        assert_eq!(reply.headers["content-type"], "application/json", "{name}");
    }
    let rename = call_tcp(
        addr,
        "PATCH",
        &format!("/v1/api-keys/{admin_id}"),
        &admin,
        Some(json!({"name": "a\u{202E}b"}).to_string()),
    )
    .await;
    assert_eq!(
        (rename.status, rename.json()),
        (StatusCode::BAD_REQUEST, bad_request(NAME_MESSAGE))
    );

    // Bodies over the router's 64 KiB limit: 413 in the same envelope.
    let too_large = envelope(
        "PAYLOAD_TOO_LARGE",
        "Request body too large: at most 65536 bytes",
    );
    let huge_scopes = json!({"name": "n", "scopes": scopes(200_000)}).to_string();
    let huge_metadata =
        json!({"name": "n", "scopes": ["read"], "metadata": {"blob": "x".repeat(1_700_000)}})
            .to_string();
    let small = json!({"name": "padded", "scopes": ["read"]}).to_string();
    let padded = |total: usize| format!("{small}{}", " ".repeat(total - small.len()));
    for (name, path, body) in [
        ("200k scopes", "/v1/api-keys".to_owned(), huge_scopes),
        (
            "1.7 MB of metadata",
            "/v1/api-keys".to_owned(),
            huge_metadata,
        ),
        ("65537 bytes", "/v1/api-keys".to_owned(), padded(65_537)),
        (
            "rotate, 65537 bytes",
            format!("/v1/api-keys/{admin_id}/rotate"),
            format!("{{}}{}", " ".repeat(65_535)),
        ),
    ] {
        let reply = call_tcp(addr, "POST", &path, &admin, Some(body)).await;
        assert_eq!(
            (reply.status, reply.json()),
            (StatusCode::PAYLOAD_TOO_LARGE, too_large.clone()),
            "{name}"
        );
        assert_eq!(reply.headers["content-type"], "application/json", "{name}");
    }
    assert_eq!(count().await, before, "nothing written");

    // At the caps exactly: accepted.
    for (name, body) in [
        ("64 scopes", json!({"name": "n", "scopes": scopes(64)}).to_string()),
        ("128-character name", json!({"name": "é".repeat(128), "scopes": ["read"]}).to_string()),
        ("4096 bytes of metadata", json!({"name": "n", "scopes": ["read"], "metadata": {"k": "x".repeat(4088)}}).to_string()),
        ("64 of each restriction", json!({"name": "n", "scopes": ["read"], "restrictions": {"ip_ranges": many(64, &ip), "referrers": many(64, &referrer), "endpoints": many(64, &endpoint)}}).to_string()),
        ("expiry at 2262-01-01", json!({"name": "n", "scopes": ["read"], "expires_at": "2262-01-01T00:00:00Z"}).to_string()),
        ("65536 bytes", padded(65_536)),
    ] {
        let reply = call_tcp(addr, "POST", "/v1/api-keys", &admin, Some(body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{name}: {:?}", reply.json());
    }
}

/// Sends each `(method, path, body, message)` over TCP as `acme`'s admin (`{id}` in a path is
/// that admin key's id), expects 400 with `message`, then checks that nothing was written.
async fn bodies_are_refused(cases: &[(&str, &str, &str, &str)]) {
    let store = MemoryStore::new();
    let verifier = Verifier::builder(store.clone()).build();
    let manager = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .build();
    let auth = AuthLayer::new(verifier);
    let addr =
        serve(api::router(manager.clone()).route_layer(auth.require_scope(Scope::ADMIN))).await;
    let (admin, admin_id) = issue(&manager, "acme", NewKey::new("admin", ["admin"])).await;
    let before = manager.list("acme").await.unwrap().len();
    for &(method, path, body, message) in cases {
        let path = path.replace("{id}", &admin_id);
        let reply = call_tcp(addr, method, &path, &admin, Some(body.to_owned())).await;
        assert_eq!(
            (reply.status, reply.json()),
            (StatusCode::BAD_REQUEST, bad_request(message)),
            "{body}"
        );
    }
    assert_eq!(
        manager.list("acme").await.unwrap().len(),
        before,
        "nothing written"
    );
    assert_eq!(manager.get("acme", &admin_id).await.unwrap().name, "admin");
}

/// Found by the `management_api` fuzz target: serde's derived structs also read a JSON array,
/// field by field, so `["new name"]` renamed a key. Every body and nested object must be an
/// object.
#[tokio::test]
async fn arrays_are_not_objects_at_any_level() {
    bodies_are_refused(&[
        (
            "POST",
            "/v1/api-keys",
            r#"["n",["read"]]"#,
            "Invalid JSON body: invalid type: sequence, expected a JSON object at line 1 column 0",
        ),
        (
            "PATCH",
            "/v1/api-keys/{id}",
            r#" ["renamed"]"#,
            "Invalid JSON body: invalid type: sequence, expected a JSON object at line 1 column 1",
        ),
        (
            "POST",
            "/v1/api-keys/{id}/rotate",
            "[60]",
            "Invalid JSON body: invalid type: sequence, expected a JSON object at line 1 column 0",
        ),
        (
            "POST",
            "/v1/api-keys",
            r#"{"name":"n","scopes":["read"],"restrictions":[["10.0.0.0/8"],[],[]]}"#,
            "Invalid JSON body: invalid type: sequence, expected a JSON object at line 1 column 45",
        ),
        (
            "POST",
            "/v1/api-keys",
            r#"{"name":"n","scopes":["read"],"restrictions":{"endpoints":[["GET","/v1/x"]]}}"#,
            "Invalid JSON body: invalid type: sequence, expected a JSON object at line 1 column 59",
        ),
    ])
    .await;
}

#[tokio::test]
async fn unknown_fields_at_every_level_are_refused() {
    bodies_are_refused(&[
        (
            "POST",
            "/v1/api-keys",
            r#"{"name":"n","scopes":["read"],"restrictions":{"ip_range":["10.0.0.0/8"]}}"#,
            "Invalid JSON body: unknown field `ip_range`, expected one of `ip_ranges`, `referrers`, `endpoints` at line 1 column 56",
        ),
        (
            "POST",
            "/v1/api-keys",
            r#"{"name":"n","scopes":["read"],"restrictions":{"endpoints":[{"path":"/v1/x","methods":["GET"]}]}}"#,
            "Invalid JSON body: unknown field `methods`, expected `method` or `path` at line 1 column 84",
        ),
        (
            "POST",
            "/v1/api-keys",
            r#"{"name":"n","scopes":["read"],"admin":true}"#,
            "Invalid JSON body: unknown field `admin`, expected one of `name`, `scopes`, `environment`, `expires_at`, `metadata`, `restrictions` at line 1 column 37",
        ),
        (
            "PATCH",
            "/v1/api-keys/{id}",
            r#"{"title":"x"}"#,
            "Invalid JSON body: unknown field `title`, expected `name` at line 1 column 8",
        ),
        (
            "POST",
            "/v1/api-keys/{id}/rotate",
            r#"{"grace":60}"#,
            "Invalid JSON body: unknown field `grace`, expected `grace_period_seconds` at line 1 column 8",
        ),
    ])
    .await;
}

#[tokio::test]
async fn the_plan_narrows_scopes_in_handlers_and_management_too() {
    use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
    use keygate::scope::Scopes;
    let store = MemoryStore::new();
    let plans = MemoryEntitlements::new();
    plans.set(
        "acme",
        TenantEntitlements::active(Plan {
            name: "read-only".into(),
            allowed_scopes: Some(Scopes::from_static(&["read"])),
            ..Plan::default()
        }),
    );
    let verifier = Verifier::builder(store.clone()).entitlements(plans).build();
    let manager = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .build();
    let auth = AuthLayer::new(verifier);
    // Routes behind the any-key layer: the handlers decide.
    let app = api::router(manager.clone())
        .route(
            "/v1/documents",
            axum::routing::delete(|t: Tenant| async move {
                t.require(&Scope::WRITE)?;
                Ok::<_, keygate::AuthError>("deleted")
            }),
        )
        .route_layer(auth);
    let addr = serve(app).await;
    let (writer, _) = issue(&manager, "acme", NewKey::new("writer", ["write"])).await;
    let (admin, _) = issue(&manager, "acme", NewKey::new("admin", ["admin"])).await;

    let reply = call_tcp(addr, "DELETE", "/v1/documents", &writer, None).await;
    assert_eq!(
        (reply.status, reply.json()),
        (
            StatusCode::FORBIDDEN,
            forbidden("API key lacks the required scope: write")
        )
    );
    assert_eq!(
        reply.headers["www-authenticate"],
        "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"write\""
    );
    for (method, path, body) in [
        ("GET", "/v1/api-keys", None),
        (
            "POST",
            "/v1/api-keys",
            Some(json!({"name": "n", "scopes": ["read"]}).to_string()),
        ),
    ] {
        let reply = call_tcp(addr, method, path, &admin, body).await;
        assert_eq!(
            (reply.status, reply.json()),
            (
                StatusCode::FORBIDDEN,
                forbidden("API key lacks the required scope: admin")
            ),
            "{method} {path}"
        );
    }
    assert_eq!(manager.list("acme").await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_key_in_its_rotation_grace_period_cannot_manage_keys() {
    let store = MemoryStore::new();
    let verifier = Verifier::builder(store.clone()).build();
    let manager = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .build();
    let auth = AuthLayer::new(verifier);
    let app = api::router(manager.clone())
        .route_layer(auth.require_scope(Scope::ADMIN))
        .route(
            "/v1/whoami",
            get(|t: Tenant| async move { t.key_id().to_owned() }).route_layer(auth),
        );
    let addr = serve(app).await;
    let (old, old_id) = issue(&manager, "acme", NewKey::new("admin", ["admin"])).await;
    let (_, other_id) = issue(&manager, "acme", NewKey::new("other", ["read"])).await;

    let rotated = call_tcp(
        addr,
        "POST",
        &format!("/v1/api-keys/{old_id}/rotate"),
        &old,
        Some(json!({"grace_period_seconds": 3600}).to_string()),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    let new = rotated.json()["data"]["key"].as_str().unwrap().to_owned();
    let new_id = rotated.json()["data"]["id"].as_str().unwrap().to_owned();

    // It still authenticates...
    let who = call_tcp(addr, "GET", "/v1/whoami", &old, None).await;
    assert_eq!(
        (who.status, &who.body[..]),
        (StatusCode::OK, old_id.as_bytes())
    );
    // ...but every management call is refused, and changes nothing.
    let rotated_message = forbidden("API key has been rotated: use its successor to manage keys");
    for (method, path, body) in [
        ("GET", "/v1/api-keys".to_owned(), None),
        ("GET", format!("/v1/api-keys/{new_id}"), None),
        (
            "POST",
            "/v1/api-keys".to_owned(),
            Some(json!({"name": "n", "scopes": ["read"]}).to_string()),
        ),
        (
            "PATCH",
            format!("/v1/api-keys/{new_id}"),
            Some(json!({"name": "mine"}).to_string()),
        ),
        ("POST", format!("/v1/api-keys/{new_id}/rotate"), None),
        ("DELETE", format!("/v1/api-keys/{new_id}"), None),
        ("DELETE", format!("/v1/api-keys/{other_id}"), None),
    ] {
        let reply = call_tcp(addr, method, &path, &old, body).await;
        assert_eq!(
            (reply.status, reply.json()),
            (StatusCode::FORBIDDEN, rotated_message.clone()),
            "{method} {path}"
        );
    }
    let listed = manager.list("acme").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["admin", "other", "admin"]);

    // The successor manages, and can end the grace period at once.
    let revoked = call_tcp(
        addr,
        "DELETE",
        &format!("/v1/api-keys/{old_id}"),
        &new,
        None,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let who = call_tcp(addr, "GET", "/v1/whoami", &old, None).await;
    assert_eq!(
        (who.status, who.json()),
        (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", REVOKED))
    );
}

/// Records audit events in memory and wakes whoever waits for one.
#[derive(Clone, Default)]
struct RecordingAudit {
    events: Arc<std::sync::Mutex<Vec<keygate::audit::AuditEvent>>>,
    recorded: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl keygate::audit::AuditSink for RecordingAudit {
    async fn record(
        &self,
        event: &keygate::audit::AuditEvent,
    ) -> Result<(), keygate::backend::BackendError> {
        self.events.lock().unwrap().push(event.clone());
        self.recorded.notify_waiters();
        Ok(())
    }
}

/// A memory store whose `revoke` announces itself and then waits to be released.
#[derive(Clone)]
struct GatedStore {
    inner: MemoryStore,
    entered: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl keygate::store::KeyStore for GatedStore {
    async fn find(&self, digest: &keygate::hash::KeyDigest) -> keygate::store::Lookup {
        self.inner.find(digest).await
    }
}

#[async_trait::async_trait]
impl ManagedKeyStore for GatedStore {
    async fn insert(
        &self,
        record: keygate::store::KeyRecord,
        max: Option<usize>,
    ) -> Result<(), keygate::store::StoreError> {
        self.inner.insert(record, max).await
    }
    async fn get(
        &self,
        t: &str,
        k: &str,
        now: time::OffsetDateTime,
    ) -> Result<Option<keygate::store::KeyRecord>, keygate::store::StoreError> {
        self.inner.get(t, k, now).await
    }
    async fn list(
        &self,
        t: &str,
        now: time::OffsetDateTime,
    ) -> Result<Vec<keygate::store::KeyRecord>, keygate::store::StoreError> {
        self.inner.list(t, now).await
    }
    async fn rename(
        &self,
        t: &str,
        k: &str,
        name: &str,
        now: time::OffsetDateTime,
    ) -> Result<Option<keygate::store::KeyRecord>, keygate::store::StoreError> {
        self.inner.rename(t, k, name, now).await
    }
    async fn revoke(
        &self,
        t: &str,
        k: &str,
        now: time::OffsetDateTime,
    ) -> Result<Option<keygate::store::KeyRecord>, keygate::store::StoreError> {
        self.entered.notify_one();
        self.release.notified().await;
        self.inner.revoke(t, k, now).await
    }
    async fn rotate(
        &self,
        t: &str,
        k: &str,
        r: keygate::store::KeyRecord,
        until: time::OffsetDateTime,
        now: time::OffsetDateTime,
        max_active: Option<usize>,
    ) -> Result<Option<keygate::store::KeyRecord>, keygate::store::StoreError> {
        self.inner.rotate(t, k, r, until, now, max_active).await
    }
    async fn touch(
        &self,
        used: &[(String, time::OffsetDateTime)],
    ) -> Result<(), keygate::store::StoreError> {
        self.inner.touch(used).await
    }
}

/// Fires when dropped unless disarmed: tells the test that the server cancelled the handler.
struct OnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl OnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn a_client_that_disconnects_mid_call_still_leaves_the_change_audited() {
    use tokio::io::AsyncWriteExt;
    let memory = MemoryStore::new();
    let store = GatedStore {
        inner: memory.clone(),
        entered: Arc::default(),
        release: Arc::default(),
    };
    let audit = RecordingAudit::default();
    let verifier = Verifier::builder(memory.clone()).build();
    let manager = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .audit(audit.clone())
        .build();
    let (admin, _) = issue(&manager, "acme", NewKey::new("admin", ["admin"])).await;
    let (_, victim_id) = issue(&manager, "acme", NewKey::new("leaked", ["read"])).await;
    let (cancelled_tx, cancelled_rx) = tokio::sync::oneshot::channel::<()>();
    let cancelled = Arc::new(std::sync::Mutex::new(Some(cancelled_tx)));
    let app = api::router(manager.clone())
        .route_layer(AuthLayer::new(verifier).require_scope(Scope::ADMIN))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let guard = OnDrop(cancelled.lock().unwrap().take());
                async move {
                    let response = next.run(req).await;
                    guard.disarm(); // completed, not cancelled
                    response
                }
            },
        ));
    let addr = serve(app).await;

    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "DELETE /v1/api-keys/{victim_id} HTTP/1.1\r\nhost: keygate\r\nx-api-key: {admin}\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    store.entered.notified().await;
    drop(client);
    // The server notices the disconnect and drops the request's future...
    tokio::time::timeout(std::time::Duration::from_secs(10), cancelled_rx)
        .await
        .expect("the server cancels the handler of a disconnected client")
        .unwrap();
    // ...and only then does the store finish the write.
    store.release.notify_one();
    let revoke_audited = || {
        audit
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.action == keygate::audit::AuditAction::Revoke && e.key_id == victim_id)
    };
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !revoke_audited() {
            let recorded = audit.recorded.notified();
            if revoke_audited() {
                break;
            }
            recorded.await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the revocation's audit event was never recorded"
    );
    assert!(
        matches!(
            manager.get("acme", &victim_id).await,
            Err(keygate::lifecycle::ManageError::NotFound)
        ),
        "the key is revoked"
    );
}

/// Every management call answers, and carries no limit header.
async fn manage_all(addr: std::net::SocketAddr, admin: &str, label: &str) {
    let limit_headers = [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit",
        "ratelimit-policy",
        "retry-after",
    ];
    let mut answers = Vec::new();
    let created = call_tcp(
        addr,
        "POST",
        "/v1/api-keys",
        admin,
        Some(json!({"name": label, "scopes": ["read"]}).to_string()),
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{label}: {:?}",
        created.json()
    );
    let id = created.json()["data"]["id"].as_str().unwrap().to_owned();
    answers.push(created);
    answers.push(call_tcp(addr, "GET", "/v1/api-keys", admin, None).await);
    answers.push(call_tcp(addr, "GET", &format!("/v1/api-keys/{id}"), admin, None).await);
    answers.push(
        call_tcp(
            addr,
            "PATCH",
            &format!("/v1/api-keys/{id}"),
            admin,
            Some(json!({"name": "renamed"}).to_string()),
        )
        .await,
    );
    answers.push(call_tcp(addr, "DELETE", &format!("/v1/api-keys/{id}"), admin, None).await);
    let statuses: Vec<u16> = answers.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, [201, 200, 200, 200, 204], "{label}");
    for reply in &answers {
        for header in limit_headers {
            assert!(reply.headers.get(header).is_none(), "{label}: {header}");
        }
    }
}

#[tokio::test]
async fn a_leaked_key_cannot_block_its_own_revocation_through_the_tenants_limits() {
    use keygate::limit::{ManualClock, MemoryLimiter, Quota, QuotaPeriod, RateLimit};
    use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
    let store = MemoryStore::new();
    let clock = ManualClock::at_unix_secs(1_767_225_600); // 2026-01-01T00:00:00Z
    let limiter = MemoryLimiter::with_clock(clock.clone());
    let plans = MemoryEntitlements::new();
    plans.set(
        "acme",
        TenantEntitlements::active(Plan {
            name: "small".into(),
            rate_limit: Some(RateLimit::per_minute(2)),
            quota: Some(Quota {
                limit: 3,
                period: QuotaPeriod::Month,
            }),
            ..Plan::default()
        }),
    );
    let verifier = Verifier::builder(store.clone())
        .entitlements(plans.clone())
        .limiter(limiter.clone())
        .build();
    let manager = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .build();
    let auth = AuthLayer::new(verifier);
    let app = Router::new()
        .route(
            "/v1/documents",
            get(|| async { "[]" }).route_layer(auth.require_scope(Scope::READ)),
        )
        .merge(api::router(manager.clone()).route_layer(auth.management()));
    let addr = serve(app).await;
    let (admin, _) = issue(&manager, "acme", NewKey::new("admin", ["admin"])).await;
    let (leaked, leaked_id) = issue(&manager, "acme", NewKey::new("leaked", ["read"])).await;
    let limit_headers = [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit",
        "ratelimit-policy",
        "retry-after",
    ];
    let snapshot = |reply: &Reply| {
        let headers: Vec<Option<String>> = limit_headers
            .iter()
            .map(|h| {
                reply
                    .headers
                    .get(*h)
                    .map(|v| v.to_str().unwrap().to_owned())
            })
            .collect();
        (reply.status, reply.json(), headers)
    };
    let documents = || call_tcp(addr, "GET", "/v1/documents", &leaked, None);

    // The leaked key uses up the rate limit.
    for _ in 0..2 {
        assert_eq!(documents().await.status, StatusCode::OK);
    }
    let limited = documents().await;
    assert_eq!(
        (limited.status, limited.json()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            envelope("RATE_LIMITED", "Rate limit exceeded: retry later")
        )
    );
    manage_all(addr, &admin, "while rate limited").await;
    assert_eq!(
        limiter.quota_used("acme"),
        2,
        "management calls are not counted"
    );
    assert_eq!(
        snapshot(&documents().await),
        snapshot(&limited),
        "nor do they move the rate limit"
    );

    // A minute later it uses up the quota.
    clock.advance(std::time::Duration::from_secs(60));
    assert_eq!(documents().await.status, StatusCode::OK);
    let exhausted = documents().await;
    assert_eq!(
        (exhausted.status, exhausted.json()),
        (
            StatusCode::FORBIDDEN,
            envelope("FORBIDDEN", "Quota exhausted for the current period")
        )
    );
    manage_all(addr, &admin, "with the quota used up").await;
    assert_eq!(limiter.quota_used("acme"), 3);
    assert_eq!(snapshot(&documents().await), snapshot(&exhausted));

    // The admin revokes it.
    let revoked = call_tcp(
        addr,
        "DELETE",
        &format!("/v1/api-keys/{leaked_id}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let refused = documents().await;
    assert_eq!(
        (refused.status, refused.json()),
        (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", REVOKED))
    );
    assert_eq!(limiter.quota_used("acme"), 3);

    // Suspension still applies to management calls.
    plans.suspend("acme");
    let suspended = call_tcp(addr, "GET", "/v1/api-keys", &admin, None).await;
    assert_eq!(
        (suspended.status, suspended.json()),
        (
            StatusCode::FORBIDDEN,
            envelope("FORBIDDEN", "Tenant suspended")
        )
    );
}

#[tokio::test]
async fn a_stalled_store_answers_503_after_the_store_timeout() {
    let auth_store = MemoryStore::new();
    let verifier = Verifier::builder(auth_store.clone()).build();
    let seed = KeyManager::builder(auth_store)
        .scheme(verifier.scheme().clone())
        .build();
    let (admin, admin_id) = issue(&seed, "acme", NewKey::new("admin", ["admin"])).await;
    let manager = KeyManager::builder(DownStore::Hangs)
        .scheme(verifier.scheme().clone())
        .store_timeout(std::time::Duration::from_millis(100))
        .build();
    let addr = serve(api::router(manager).route_layer(AuthLayer::new(verifier).management())).await;
    let unavailable = envelope("SERVICE_UNAVAILABLE", UNAVAILABLE);
    let calls = [
        (
            "POST",
            "/v1/api-keys".to_owned(),
            Some(json!({"name": "n", "scopes": ["read"]}).to_string()),
        ),
        ("GET", "/v1/api-keys".to_owned(), None),
        ("GET", format!("/v1/api-keys/{admin_id}"), None),
        (
            "PATCH",
            format!("/v1/api-keys/{admin_id}"),
            Some(json!({"name": "m"}).to_string()),
        ),
        ("POST", format!("/v1/api-keys/{admin_id}/rotate"), None),
        ("DELETE", format!("/v1/api-keys/{admin_id}"), None),
    ];
    // The guard only keeps a regression from hanging the suite; nothing here measures time.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        for (method, path, body) in calls {
            let reply = call_tcp(addr, method, &path, &admin, body).await;
            assert_eq!(
                (reply.status, reply.json()),
                (StatusCode::SERVICE_UNAVAILABLE, unavailable.clone()),
                "{method} {path}"
            );
        }
    })
    .await
    .expect("every call is answered");
}

/// Every refusal of the management API, like every refusal of the layer, tells caches on the way
/// not to keep it.
#[tokio::test]
async fn management_refusals_are_no_store() {
    let s = setup().await;
    let addr = serve(s.app.clone()).await;
    let request = |method: &str, path: &str, key: &str, body: &str| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .unwrap()
    };
    let cases = [
        (
            request("POST", "/v1/api-keys", &s.acme_admin, "{"),
            StatusCode::BAD_REQUEST,
        ),
        (
            request("GET", "/v1/api-keys/key_missing", &s.acme_admin, ""),
            StatusCode::NOT_FOUND,
        ),
        (
            request(
                "POST",
                "/v1/api-keys",
                &s.acme_admin,
                &" ".repeat(api::MAX_BODY_BYTES + 1),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            request("GET", "/v1/api-keys", &s.acme_reader, ""),
            StatusCode::FORBIDDEN,
        ),
        (
            request("GET", "/v1/api-keys", "sk_live_nope", ""),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    // An id that is not UTF-8 names no key: the same 404 as any unknown id, after the caller
    // is judged (axum's own answer was plain text, without no-store).
    let not_utf8 = "/v1/api-keys/%FF";
    let cases = cases.into_iter().chain([
        (
            request("GET", not_utf8, &s.acme_admin, ""),
            StatusCode::NOT_FOUND,
        ),
        (
            request("PATCH", not_utf8, &s.acme_admin, r#"{"name":"x"}"#),
            StatusCode::NOT_FOUND,
        ),
        (
            request("POST", "/v1/api-keys/%FF/rotate", &s.acme_admin, ""),
            StatusCode::NOT_FOUND,
        ),
        (
            request("DELETE", not_utf8, &s.acme_admin, ""),
            StatusCode::NOT_FOUND,
        ),
        (
            request("DELETE", not_utf8, &s.acme_reader, ""),
            StatusCode::FORBIDDEN,
        ),
    ]);
    for (req, status) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let reply = send_tcp(addr, req).await;
        assert_eq!(reply.status, status, "{what}");
        assert_eq!(reply.headers["cache-control"], "no-store", "{what}");
        assert_eq!(reply.json()["success"], json!(false), "{what}");
        if status == StatusCode::NOT_FOUND {
            assert_eq!(
                reply.json(),
                envelope("NOT_FOUND", "API key not found"),
                "{what}"
            );
        }
    }
}

/// Found by the `management_api` fuzz target: tabs around a name are surrounding whitespace,
/// trimmed before the name is checked and stored; tabs inside it are control characters.
#[tokio::test]
async fn names_are_trimmed_before_they_are_checked_and_stored() {
    let s = setup().await;
    let admin = s.acme_admin.clone();
    let (status, created) = s
        .json(
            "POST",
            "/v1/api-keys",
            &admin,
            json!({"name": " \tdeploy\n", "scopes": ["read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["data"]["name"], json!("deploy"));
    let id = created["data"]["id"].as_str().unwrap().to_owned();

    let path = format!("/v1/api-keys/{id}");
    let (status, renamed) = s
        .json("PATCH", &path, &admin, json!({"name": "\t\t\t\t\t!\t\t\t"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["data"]["name"], json!("!"));
    let (status, got) = s.json("GET", &path, &admin, Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["data"]["name"], json!("!"));

    for name in ["\t\t", "a\tb", "a\nb"] {
        let (status, refused) = s.json("PATCH", &path, &admin, json!({"name": name})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}");
        assert_eq!(
            refused,
            bad_request(
                "Name must be 1 to 128 characters without control or formatting characters"
            )
        );
    }
    let (_, got) = s.json("GET", &path, &admin, Value::Null).await;
    assert_eq!(got["data"]["name"], json!("!"), "a refused rename wrote");
}
