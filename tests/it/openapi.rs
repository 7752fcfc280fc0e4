//! The management API's OpenAPI document against the real API over TCP: every documented call
//! is made until it has given every status (and every error code) the document lists for it;
//! each answer must be listed for its call, its body must validate against the documented
//! schema (JSON Schema 2020-12) and its headers must match the documented ones. Nothing is
//! documented that no call answered, so the document cannot drift from the API.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::common::*;
use http::StatusCode;
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::scope::Scope;
use keygate::store::{KeyRecord, MemoryStore};
use keygate::{AuthLayer, Verifier, api};
use serde_json::{Value, json};

/// The most active keys per tenant in these tests; tenant `full` has that many.
const MAX_KEYS: usize = 8;

/// The document, and what the calls made against it have answered.
struct Checked {
    doc: Value,
    /// (operation id, status, error code) of every answer.
    seen: BTreeSet<(String, u16, Option<String>)>,
    /// (operation id, status, header) of every documented header an answer carried.
    seen_headers: BTreeSet<(String, u16, String)>,
}

/// One request, by operation id.
struct Call<'a> {
    operation: &'a str,
    id: Option<&'a str>,
    key: Option<&'a str>,
    /// `application/json` unless said otherwise; `None`: no body and no content type.
    body: Option<String>,
    content_type: &'a str,
    /// The key as `Authorization: Bearer` instead of `x-api-key`.
    bearer: bool,
}

impl<'a> Call<'a> {
    fn new(operation: &'a str, key: &'a str) -> Self {
        Call {
            operation,
            id: None,
            key: Some(key),
            body: None,
            content_type: "application/json",
            bearer: false,
        }
    }
    fn id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }
    fn json(mut self, body: Value) -> Self {
        self.body = Some(body.to_string());
        self
    }
    fn raw(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }
    fn content_type(mut self, content_type: &'a str) -> Self {
        self.content_type = content_type;
        self
    }
    fn bearer(mut self) -> Self {
        self.bearer = true;
        self
    }
    fn anonymous(mut self) -> Self {
        self.key = None;
        self
    }
}

impl Checked {
    fn new() -> Self {
        Checked {
            doc: serde_json::to_value(api::openapi()).unwrap(),
            seen: BTreeSet::new(),
            seen_headers: BTreeSet::new(),
        }
    }

    /// The method, path template and operation object of `operation_id`.
    fn operation(&self, operation_id: &str) -> (String, String, Value) {
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if operation["operationId"] == operation_id {
                    return (method.clone(), path.clone(), operation.clone());
                }
            }
        }
        panic!("no operation {operation_id} in the document");
    }

    /// A `$ref` to a component resolved, anything else as it is.
    fn resolve(&self, value: &Value) -> Value {
        match value["$ref"].as_str() {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').unwrap();
                self.doc.pointer(pointer).unwrap().clone()
            }
            None => value.clone(),
        }
    }

    /// Whether `instance` validates against `schema`, a schema of the document whose
    /// `#/components/…` references resolve within the document; the errors if not.
    fn validate(&self, schema: &Value, instance: &Value) -> Result<(), Vec<String>> {
        let mut root = schema.as_object().unwrap().clone();
        root.insert("components".into(), self.doc["components"].clone());
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .unwrap();
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Makes the call over TCP and checks its answer against the document; records it.
    async fn call(&mut self, addr: SocketAddr, call: Call<'_>) -> Reply {
        let (method, template, operation) = self.operation(call.operation);
        let path = match call.id {
            Some(id) => template.replace("{id}", id),
            None => template.clone(),
        };
        let mut request = http::Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(&path);
        match call.key {
            Some(key) if call.bearer => {
                request = request.header("authorization", format!("Bearer {key}"));
            }
            Some(key) => request = request.header("x-api-key", key),
            None => {}
        }
        if call.body.is_some() {
            request = request.header("content-type", call.content_type);
        }
        let sent = call.body.clone().unwrap_or_default();
        let reply = send_tcp(addr, request.body(sent.clone()).unwrap()).await;
        let what = format!("{} {method} {path} -> {}", call.operation, reply.status);

        let status = reply.status.as_str().to_owned();
        let documented = operation["responses"]
            .get(&status)
            .unwrap_or_else(|| panic!("{what}: status not in the document"));
        let response = self.resolve(documented);
        let body = reply.json();
        match response["content"]["application/json"].get("schema") {
            Some(schema) => {
                assert_eq!(reply.headers["content-type"], "application/json", "{what}");
                if let Err(errors) = self.validate(schema, &body) {
                    panic!("{what}: the answer does not match its schema: {errors:#?}\n{body}");
                }
            }
            None => assert!(
                reply.body.is_empty(),
                "{what}: a body where none is documented"
            ),
        }
        // Headers: those documented with a fixed value carry it; `WWW-Authenticate` only where
        // documented.
        let headers = response["headers"].as_object().cloned().unwrap_or_default();
        for (name, header) in &headers {
            if reply.headers.contains_key(name.as_str()) {
                self.seen_headers.insert((
                    call.operation.to_owned(),
                    reply.status.as_u16(),
                    name.clone(),
                ));
            }
            if let Some(values) = header["schema"]["enum"].as_array() {
                let got = reply
                    .headers
                    .get(name.as_str())
                    .map(|v| v.to_str().unwrap());
                assert_eq!(
                    got.map(Value::from).as_ref(),
                    values.first(),
                    "{what}: {name}"
                );
            }
        }
        if reply.headers.contains_key("www-authenticate") {
            assert!(
                headers.contains_key("WWW-Authenticate"),
                "{what}: WWW-Authenticate is not documented"
            );
        }
        // What a successful call sent is what the document says it may send.
        if reply.status.is_success()
            && let Some(schema) = operation["requestBody"]["content"]["application/json"]
                .get("schema")
                .filter(|_| !sent.is_empty())
        {
            let sent: Value = serde_json::from_str(&sent).unwrap();
            if let Err(errors) = self.validate(schema, &sent) {
                panic!("{what}: an accepted request does not match its schema: {errors:#?}");
            }
        }
        let code = body["error"]["code"].as_str().map(str::to_owned);
        self.seen
            .insert((call.operation.to_owned(), reply.status.as_u16(), code));
        reply
    }

    /// Every documented operation has answered every documented status with every documented
    /// header, and every refusal every code its schema allows.
    fn assert_all_seen(&self) {
        let mut missing = Vec::new();
        for item in self.doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let id = operation["operationId"].as_str().unwrap();
                for (status, response) in operation["responses"].as_object().unwrap() {
                    let status: u16 = status.parse().unwrap();
                    let response = self.resolve(response);
                    for name in response["headers"]
                        .as_object()
                        .into_iter()
                        .flat_map(|h| h.keys())
                    {
                        if !self
                            .seen_headers
                            .contains(&(id.into(), status, name.clone()))
                        {
                            missing.push(format!("{id} {status} header {name}"));
                        }
                    }
                    let schema = &response["content"]["application/json"]["schema"];
                    match schema.pointer("/allOf/1/properties/error/properties/code/enum") {
                        Some(codes) => {
                            for code in codes.as_array().unwrap() {
                                let code = code.as_str().unwrap().to_owned();
                                if !self.seen.contains(&(id.into(), status, Some(code.clone()))) {
                                    missing.push(format!("{id} {status} {code}"));
                                }
                            }
                        }
                        None => {
                            if !self.seen.iter().any(|(o, s, _)| o == id && *s == status) {
                                missing.push(format!("{id} {status}"));
                            }
                        }
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "documented, never answered: {missing:?}"
        );
    }
}

/// The management API of tenants `acme` (an admin key, a reader, a key with every field set)
/// and `full` (an admin key and as many keys as allowed), behind the management layer.
struct Api {
    addr: SocketAddr,
    admin: String,
    reader: String,
    full_admin: String,
    full_key_id: String,
    detailed_key_id: String,
}

async fn api() -> Api {
    let store = MemoryStore::new();
    let verifier = Verifier::builder(store.clone()).build();
    let manager = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .known_scopes([Scope::ADMIN, Scope::READ, Scope::WRITE])
        .max_active_keys(Some(MAX_KEYS))
        .build();
    let seed = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .build();
    let issue = |tenant: &'static str, name: &'static str, scope: &'static str| {
        let seed = seed.clone();
        async move {
            seed.issue("seed", tenant, NewKey::new(name, [scope]))
                .await
                .unwrap()
        }
    };
    let admin = issue("acme", "acme admin", "admin").await;
    let reader = issue("acme", "acme reader", "read").await;
    // A key with every optional field set, so that each shape of the key view is checked.
    let detailed = keygate::key::KeyFormat::default().generate(keygate::key::Environment::Live);
    let now = time::OffsetDateTime::now_utc();
    store.put(KeyRecord {
        expires_at: Some(now + time::Duration::days(30)),
        last_used_at: Some(now),
        restrictions: serde_json::from_value(json!({
            "ip_ranges": ["10.0.0.0/8", "2001:db8::/32"],
            "referrers": ["https://app.example.com"],
            "endpoints": [{"method": "GET", "path": "/v1/documents/*"}, {"path": "/v1/health"}],
        }))
        .unwrap(),
        ..record(&detailed, "key_detailed", "acme", &["read"])
    });
    let full_admin = issue("full", "full admin", "admin").await;
    let mut full_key_id = String::new();
    for _ in 1..MAX_KEYS {
        full_key_id = issue("full", "filler", "read").await.info.id;
    }
    let app = api::router(manager).route_layer(AuthLayer::new(verifier).management());
    Api {
        addr: serve(app).await,
        admin: admin.key.expose_secret().to_owned(),
        reader: reader.key.expose_secret().to_owned(),
        full_admin: full_admin.key.expose_secret().to_owned(),
        full_key_id,
        detailed_key_id: "key_detailed".into(),
    }
}

/// The management API with its store down: the layer authenticates the caller (its own store
/// works), every call then fails in the key store.
async fn api_with_store_down() -> (SocketAddr, String) {
    let auth_store = MemoryStore::new();
    let verifier = Verifier::builder(auth_store.clone()).build();
    let admin = KeyManager::builder(auth_store)
        .scheme(verifier.scheme().clone())
        .build()
        .issue("seed", "acme", NewKey::new("admin", ["admin"]))
        .await
        .unwrap();
    let manager = KeyManager::builder(DownStore::TimesOut)
        .scheme(verifier.scheme().clone())
        .build();
    let app = api::router(manager).route_layer(AuthLayer::new(verifier).management());
    (serve(app).await, admin.key.expose_secret().to_owned())
}

/// The management API whose layer cannot authenticate anyone: its store fails.
async fn api_with_layer_store_failing() -> SocketAddr {
    let verifier = Verifier::builder(FailingStore).build();
    let manager = KeyManager::builder(MemoryStore::new()).build();
    serve(api::router(manager).route_layer(AuthLayer::new(verifier).management())).await
}

const OPERATIONS: [&str; 6] = [
    "createKey",
    "listKeys",
    "getKey",
    "renameKey",
    "rotateKey",
    "revokeKey",
];

/// A request to `operation` with a body it accepts (`id` for calls on one key).
fn valid_call<'a>(operation: &'a str, key: &'a str, id: &'a str) -> Call<'a> {
    let call = Call::new(operation, key);
    match operation {
        "createKey" => call.json(json!({"name": "n", "scopes": ["read"]})),
        "listKeys" => call,
        "renameKey" => call.id(id).json(json!({"name": "renamed"})),
        _ => call.id(id),
    }
}

#[tokio::test]
async fn every_documented_call_and_status_is_what_the_api_answers() {
    let mut doc = Checked::new();
    let s = api().await;
    let a = s.addr;
    let admin = s.admin.as_str();

    // Successes, with every field of the bodies used.
    let created = doc
        .call(
            a,
            Call::new("createKey", admin).json(json!({
                "name": "  CI deploys  ",
                "scopes": ["read", "write"],
                "environment": "live",
                "expires_at": "2099-01-01T00:00:00Z",
                "metadata": {"owner": "ci", "nested": {"ok": true}},
                "restrictions": {
                    "ip_ranges": ["192.0.2.0/24"],
                    "referrers": ["https://*"],
                    "endpoints": [{"method": "POST", "path": "/v1/deploys"}],
                },
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let created_id = created.json()["data"]["id"].as_str().unwrap().to_owned();
    let minimal = doc
        .call(
            a,
            Call::new("createKey", admin).json(json!({"name": "minimal", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(minimal.status, StatusCode::CREATED);
    let minimal_id = minimal.json()["data"]["id"].as_str().unwrap().to_owned();
    // Both security schemes of the document.
    for call in [
        Call::new("listKeys", admin),
        Call::new("listKeys", admin).bearer(),
    ] {
        let listed = doc.call(a, call).await;
        assert_eq!(listed.status, StatusCode::OK);
        assert_eq!(listed.json()["data"].as_array().unwrap().len(), 5);
    }
    for id in [&s.detailed_key_id, &created_id] {
        let got = doc.call(a, Call::new("getKey", admin).id(id)).await;
        assert_eq!(got.status, StatusCode::OK);
    }
    let renamed = doc
        .call(
            a,
            Call::new("renameKey", admin)
                .id(&created_id)
                .json(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK);
    // Rotations: with no body, with an empty body, with a grace period.
    let rotated = doc
        .call(a, Call::new("rotateKey", admin).id(&minimal_id))
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    let successor = rotated.json()["data"]["id"].as_str().unwrap().to_owned();
    let rotated = doc
        .call(a, Call::new("rotateKey", admin).id(&successor).raw(""))
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    let successor = rotated.json()["data"]["id"].as_str().unwrap().to_owned();
    let rotated = doc
        .call(
            a,
            Call::new("rotateKey", admin)
                .id(&created_id)
                .json(json!({"grace_period_seconds": 60})),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    // 409: a key in its grace period was already rotated.
    let again = doc
        .call(
            a,
            Call::new("rotateKey", admin)
                .id(&created_id)
                .json(json!({})),
        )
        .await;
    assert_eq!(
        (again.status, &again.json()["error"]["code"]),
        (StatusCode::CONFLICT, &json!("KEY_ALREADY_ROTATED"))
    );
    let revoked = doc
        .call(a, Call::new("revokeKey", admin).id(&s.detailed_key_id))
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);

    // 409: tenant `full` has as many active keys as allowed; a rotation with a grace period
    // keeps the old key active too.
    let full = s.full_admin.as_str();
    let created = doc
        .call(
            a,
            Call::new("createKey", full).json(json!({"name": "one more", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(
        (created.status, &created.json()["error"]["code"]),
        (StatusCode::CONFLICT, &json!("KEY_LIMIT_REACHED"))
    );
    let rotated = doc
        .call(
            a,
            Call::new("rotateKey", full)
                .id(&s.full_key_id)
                .json(json!({"grace_period_seconds": 60})),
        )
        .await;
    assert_eq!(
        (rotated.status, &rotated.json()["error"]["code"]),
        (StatusCode::CONFLICT, &json!("KEY_LIMIT_REACHED"))
    );

    // 400: bad bodies, each call that takes one.
    let bad_bodies = [
        Call::new("createKey", admin).raw("{"),
        Call::new("createKey", admin).json(json!({"name": "x", "scopes": []})),
        Call::new("createKey", admin)
            .json(json!({"name": "x", "scopes": ["read"]}))
            .content_type("text/plain"),
        Call::new("renameKey", admin)
            .id(&created_id)
            .json(json!({"nom": "x"})),
        Call::new("rotateKey", admin)
            .id(&successor)
            .json(json!({"grace_period_seconds": 2_592_001})),
    ];
    for call in bad_bodies {
        assert_eq!(doc.call(a, call).await.status, StatusCode::BAD_REQUEST);
    }
    // 413: a body over the limit, each call that takes one.
    let huge = " ".repeat(api::MAX_BODY_BYTES + 1);
    for (operation, id) in [
        ("createKey", None),
        ("renameKey", Some(created_id.as_str())),
        ("rotateKey", Some(successor.as_str())),
    ] {
        let mut call = Call::new(operation, admin).raw(huge.clone());
        call.id = id;
        let reply = doc.call(a, call).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{operation}");
    }
    // 404: an unknown id, and another tenant's key.
    for operation in ["getKey", "renameKey", "rotateKey", "revokeKey"] {
        for id in ["key_unknown", s.full_key_id.as_str()] {
            let reply = doc.call(a, valid_call(operation, admin, id)).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{operation} {id}");
        }
    }
    // 401 without a key or with an unknown one; 403 for a key without `admin`, and for a key
    // asked beyond the caller's own.
    let unknown = keygate::key::KeyFormat::default().generate(keygate::key::Environment::Live);
    for operation in OPERATIONS {
        let reply = doc
            .call(a, valid_call(operation, admin, &successor).anonymous())
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{operation}");
        let reply = doc
            .call(
                a,
                valid_call(operation, unknown.expose_secret(), &successor),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{operation}");
        let reply = doc
            .call(a, valid_call(operation, &s.reader, &successor))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{operation}");
    }
    let beyond = doc
        .call(
            a,
            Call::new("createKey", admin)
                .json(json!({"name": "x", "scopes": ["read"], "environment": "test"})),
        )
        .await;
    assert_eq!(beyond.status, StatusCode::FORBIDDEN);

    // 503: the key store fails during the call, or while the layer authenticates.
    let (down, down_admin) = api_with_store_down().await;
    let failing = api_with_layer_store_failing().await;
    for operation in OPERATIONS {
        let reply = doc
            .call(down, valid_call(operation, &down_admin, "key_1"))
            .await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{operation}");
        let reply = doc
            .call(failing, valid_call(operation, &down_admin, "key_1"))
            .await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{operation}");
    }

    doc.assert_all_seen();
}

/// The checks above can fail: an answer with a field added, renamed or missing, or an error
/// code of another status, does not validate.
#[tokio::test]
async fn the_schemas_refuse_an_answer_that_differs() {
    let doc = Checked::new();
    let s = api().await;
    let listed = send_tcp(
        s.addr,
        http::Request::get("/v1/api-keys")
            .header("x-api-key", &s.admin)
            .body(String::new())
            .unwrap(),
    )
    .await;
    let list = json!({"$ref": "#/components/schemas/KeyListResponse"});
    let body = listed.json();
    assert_eq!(doc.validate(&list, &body), Ok(()));
    let changed: [fn(&mut Value); 7] = [
        |v| v["data"][0]["extra"] = json!(1),
        |v| {
            let name = v["data"][0]
                .as_object_mut()
                .unwrap()
                .remove("name")
                .unwrap();
            v["data"][0]["title"] = name;
        },
        |v| drop(v["data"][0].as_object_mut().unwrap().remove("expires_at")),
        |v| v["data"][0]["restrictions"]["ip_range"] = json!([]),
        |v| v["data"][0]["environment"] = json!("staging"),
        |v| v["data"][0]["created_at"] = json!("yesterday"),
        |v| v["success"] = json!(false),
    ];
    for (i, change) in changed.iter().enumerate() {
        let mut body = body.clone();
        change(&mut body);
        assert!(doc.validate(&list, &body).is_err(), "change {i}: {body}");
    }
    let not_found = doc.resolve(&json!({"$ref": "#/components/responses/NotFound"}));
    let not_found = &not_found["content"]["application/json"]["schema"];
    let answer = |code: &str| envelope(code, "API key not found");
    assert_eq!(doc.validate(not_found, &answer("NOT_FOUND")), Ok(()));
    assert!(doc.validate(not_found, &answer("FORBIDDEN")).is_err());
    let mut extra = answer("NOT_FOUND");
    extra["error"]["details"] = json!("x");
    assert!(doc.validate(not_found, &extra).is_err());
}

/// The document is OpenAPI 3.1 with both ways of sending a key, and lists every call of the
/// router under the paths the router serves.
#[test]
fn the_document_is_openapi_3_1_with_both_security_schemes() {
    let doc = Checked::new().doc;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"],
        json!({
            "api_key": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "The API key."},
            "bearer": {"type": "http", "scheme": "bearer", "description": "The API key as `Authorization: Bearer <key>`."},
        })
    );
    assert_eq!(
        doc["security"],
        json!([{"api_key": ["admin"]}, {"bearer": ["admin"]}])
    );
    let mut operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .map(move |(method, op)| format!("{method} {path} {}", op["operationId"]))
        })
        .collect();
    operations.sort();
    assert_eq!(
        operations,
        [
            "delete /v1/api-keys/{id} \"revokeKey\"",
            "get /v1/api-keys \"listKeys\"",
            "get /v1/api-keys/{id} \"getKey\"",
            "patch /v1/api-keys/{id} \"renameKey\"",
            "post /v1/api-keys \"createKey\"",
            "post /v1/api-keys/{id}/rotate \"rotateKey\"",
        ]
    );
}

/// The document's texts are written for API clients: no rustdoc markup (intra-doc links such
/// as ``[`KeyManager`](crate::lifecycle::KeyManager)``, which mean nothing outside the crate's
/// docs) leaks into a description or a summary.
#[test]
fn no_rustdoc_link_in_the_document() {
    fn texts<'v>(value: &'v Value, at: String, out: &mut Vec<(String, &'v str)>) {
        match value {
            Value::String(s) => out.push((at, s)),
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    texts(v, format!("{at}/{i}"), out);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    texts(v, format!("{at}/{k}"), out);
                }
            }
            _ => {}
        }
    }
    let doc = serde_json::to_value(api::openapi()).unwrap();
    let mut all = Vec::new();
    texts(&doc, String::new(), &mut all);
    let leaked: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| {
            s.contains("](crate::") || s.contains("](super::") || s.contains("](Self::")
        })
        .collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
}
