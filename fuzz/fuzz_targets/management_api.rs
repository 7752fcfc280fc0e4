//! Every management API request body (issue, rename, rotate), driven through the real axum
//! router behind `AuthLayer::management` in process.
//!
//! Bodies are raw bytes or JSON objects built from the documented fields with hostile values.
//! Invariants: only documented statuses (never 5xx: the memory store cannot fail), the error
//! envelope's code matches the status, a refused call writes nothing, an issued key
//! authenticates as the caller's tenant within the caller's scopes, a rename returns the new
//! name, and the caller's secret is never in an answer.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use keygate::key::Environment;
use keygate::lifecycle::KeyManager;
use keygate::request::{ClientAddr, RequestHead};
use keygate::restriction::Restrictions;
use keygate::scope::{Scope, Scopes};
use keygate::store::MemoryStore;
use keygate::{AuthLayer, Verifier, api};
use keygate_fuzz::{default_key, fuzz_net, record_for};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

#[derive(Arbitrary, Debug)]
enum Field<'a> {
    Str(&'a str),
    Int(i64),
    Big(u64),
    Float(f64),
    Bool(bool),
    Null,
    Choice(u8),
    List(Vec<&'a str>),
}

#[derive(Arbitrary, Debug)]
enum BodyInput<'a> {
    Raw(&'a [u8]),
    Fields(Vec<(u8, Field<'a>)>),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    op: u8,
    content_type: u8,
    caller_bounds: u8,
    max_keys: u8,
    body: BodyInput<'a>,
}

const NAMES: [&str; 10] = [
    "name",
    "scopes",
    "environment",
    "expires_at",
    "metadata",
    "restrictions",
    "grace_period_seconds",
    "ip_range",
    "id",
    "",
];

/// Values a field is likely to be checked against: valid ones, edges, and near misses.
fn choice(field: &str, c: u8) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let at = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .map_or(Value::Null, Value::String)
    };
    match (field, c % 8) {
        ("name", 0) => json!("CI deploy"),
        ("name", 1) => json!("x".repeat(128)),
        ("name", 2) => json!("x".repeat(129)),
        ("name", 3) => json!("bad\u{202e}name"),
        ("name", 4) => json!("tab\tname"),
        ("scopes", 0) => json!(["read"]),
        ("scopes", 1) => json!(["admin"]),
        ("scopes", 2) => json!([]),
        ("scopes", 3) => json!(["read", "write", "read"]),
        ("scopes", 4) => json!(vec!["read"; 65]),
        ("scopes", 5) => json!(["nope"]),
        ("environment", 0) => json!("live"),
        ("environment", 1) => json!("test"),
        ("environment", 2) => json!("LIVE"),
        ("expires_at", 0) => at(now + 3600),
        ("expires_at", 1) => at(now - 3600),
        ("expires_at", 2) => json!("2262-01-01T00:00:00Z"),
        ("expires_at", 3) => json!("2262-01-01T00:00:01Z"),
        ("expires_at", 4) => at(now + 3 * 86400),
        ("expires_at", 5) => json!("9999-12-31T23:59:59Z"),
        ("metadata", 0) => json!({"team": "infra"}),
        ("metadata", 1) => json!({"blob": "x".repeat(4100)}),
        ("metadata", 2) => json!({"nested": {"a": [1, 2, {"b": null}]}}),
        ("restrictions", 0) => json!({"ip_ranges": ["10.0.0.0/8"]}),
        ("restrictions", 1) => {
            json!({"ip_ranges": ["10.1.0.0/16"], "referrers": ["https://app.example.com"]})
        }
        ("restrictions", 2) => json!({"endpoints": [{"method": "GET", "path": "/v1/*"}]}),
        ("restrictions", 3) => json!({"ip_range": ["10.0.0.0/8"]}),
        ("restrictions", 4) => json!({"endpoints": [{"path": "/v1/x", "verb": "GET"}]}),
        ("restrictions", 5) => json!({"ip_ranges": ["::ffff:10.0.0.0/104"]}),
        ("restrictions", 6) => json!({"referrers": vec!["https://a.example"; 65]}),
        ("grace_period_seconds", 0) => json!(0),
        ("grace_period_seconds", 1) => json!(2_592_000),
        ("grace_period_seconds", 2) => json!(2_592_001),
        ("grace_period_seconds", 3) => json!(u64::MAX),
        ("grace_period_seconds", 4) => json!(-1),
        _ => json!(c),
    }
}

fn value(field: &str, f: &Field<'_>) -> Value {
    match f {
        Field::Str(s) => json!(s),
        Field::Int(i) => json!(i),
        Field::Big(u) => json!(u),
        Field::Float(x) => json!(x),
        Field::Bool(b) => json!(b),
        Field::Null => Value::Null,
        Field::Choice(c) => choice(field, *c),
        Field::List(items) => json!(items),
    }
}

struct Fixed {
    runtime: tokio::runtime::Runtime,
    admin: String,
    other: String,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| Fixed {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime"),
        admin: default_key(Environment::Live, 11),
        other: default_key(Environment::Live, 12),
    })
}

fn expected_code(status: StatusCode) -> &'static [&'static str] {
    match status.as_u16() {
        400 => &["BAD_REQUEST"],
        401 => &["UNAUTHORIZED"],
        403 => &["FORBIDDEN"],
        404 => &["NOT_FOUND"],
        409 => &["KEY_LIMIT_REACHED", "KEY_ALREADY_ROTATED"],
        413 => &["PAYLOAD_TOO_LARGE"],
        _ => &[],
    }
}

fuzz_target!(|input: Input<'_>| {
    let f = fixed();
    let store = MemoryStore::new();
    let mut admin = record_for("key_admin", "acme", &f.admin, Environment::Live);
    admin.scopes = Scopes::from_static(&["admin"]);
    // The caller's own bounds, which what it issues must stay within.
    if input.caller_bounds & 1 != 0 {
        admin.restrictions = Restrictions {
            ip_ranges: vec![fuzz_net(0, 0, 8)], // 10.0.0.0/8
            ..Restrictions::default()
        };
    }
    if input.caller_bounds & 2 != 0 {
        admin.expires_at = Some(time::OffsetDateTime::now_utc() + time::Duration::days(2));
    }
    if input.caller_bounds & 4 != 0 {
        admin.scopes = Scopes::from_static(&["admin", "read"]);
    }
    store.put(admin);
    let mut other = record_for("key_2", "acme", &f.other, Environment::Live);
    other.scopes = Scopes::from_static(&["read"]);
    store.put(other);

    let verifier = Verifier::builder(store.clone()).build();
    let manager = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .known_scopes([Scope::ADMIN, Scope::READ, Scope::WRITE])
        .max_active_keys(Some(2 + usize::from(input.max_keys % 3)))
        .build();
    let app =
        api::router(manager.clone()).route_layer(AuthLayer::new(verifier.clone()).management());

    let (method, path, op) = match input.op % 5 {
        0 => ("POST", "/v1/api-keys", "create"),
        1 => ("PATCH", "/v1/api-keys/key_2", "rename"),
        2 => ("PATCH", "/v1/api-keys/key_nope", "rename"),
        3 => ("POST", "/v1/api-keys/key_2/rotate", "rotate"),
        _ => ("POST", "/v1/api-keys/key_admin/rotate", "rotate"),
    };
    let body: Vec<u8> = match &input.body {
        BodyInput::Raw(raw) => raw.to_vec(),
        BodyInput::Fields(fields) => {
            let mut object = Map::new();
            for (name, field) in fields.iter().take(8) {
                let name = NAMES[usize::from(*name) % NAMES.len()];
                object.insert(name.to_owned(), value(name, field));
            }
            serde_json::to_vec(&object).expect("JSON")
        }
    };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", &f.admin);
    match input.content_type % 5 {
        0 => request = request.header("content-type", "application/json"),
        1 => request = request.header("content-type", "application/json; charset=utf-8"),
        2 => request = request.header("content-type", "APPLICATION/JSON"),
        3 => request = request.header("content-type", "text/plain"),
        _ => {}
    }
    let mut request = request.body(Body::from(body.clone())).expect("request");
    request
        .extensions_mut()
        .insert(ClientAddr(SocketAddr::from(([10, 0, 0, 1], 4000))));

    f.runtime.block_on(async {
        let before = serde_json::to_value(manager.list("acme").await.expect("list")).expect("JSON");
        let len_before = store.len();
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&f.admin), "the caller's secret in an answer");
        assert!(!text.contains(&f.other), "a stored secret in an answer");
        assert!(
            [200, 201, 400, 403, 404, 409, 413].contains(&status.as_u16()),
            "{op} {status}: {text}"
        );
        let answer: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{status} not JSON ({e}): {text}"));
        assert_eq!(answer["success"], json!(status.is_success()), "{text}");
        let after = serde_json::to_value(manager.list("acme").await.expect("list")).expect("JSON");
        if !status.is_success() {
            let code = answer["error"]["code"].as_str().unwrap_or_default();
            assert!(
                expected_code(status).contains(&code),
                "{status} with code {code}"
            );
            assert_eq!(before, after, "a refused {op} wrote: {text}");
            assert_eq!(store.len(), len_before, "a refused {op} wrote: {text}");
            return;
        }
        match (op, status.as_u16()) {
            ("create" | "rotate", 201) => {
                assert_eq!(store.len(), len_before + 1);
                let secret = answer["data"]["key"].as_str().expect("the new secret");
                // A request every restriction this target can issue allows (10.0.0.0/8,
                // 10.1.0.0/16 and its IPv4-mapped form; the referrer; `GET /v1/*`): a key
                // restricted to 10.1.0.0/16 is rightly refused from 10.0.0.1.
                let mut check = Request::get("/v1/x")
                    .header("referer", "https://app.example.com")
                    .body(())
                    .expect("request");
                check
                    .headers_mut()
                    .insert("x-api-key", secret.parse().expect("header"));
                check
                    .extensions_mut()
                    .insert(ClientAddr(SocketAddr::from(([10, 1, 0, 1], 4000))));
                let admitted = verifier
                    .check(&RequestHead::from(&check), None)
                    .await
                    .unwrap_or_else(|r| panic!("issued key refused: {:?}", r.error));
                assert_eq!(admitted.tenant.tenant_id(), "acme");
                for scope in answer["data"]["scopes"].as_array().expect("scopes") {
                    let scope: Scope = scope.as_str().expect("a scope").parse().expect("valid");
                    assert!(
                        Scopes::from_static(&["admin"]).grants(&scope),
                        "issued a scope the caller lacks"
                    );
                }
            }
            ("rename", 200) => {
                let sent: Value =
                    serde_json::from_slice(&body).expect("a rename that succeeded had JSON");
                // Names are stored with surrounding whitespace trimmed (documented at
                // `MAX_NAME_CHARS`).
                let name = sent["name"]
                    .as_str()
                    .expect("a rename that succeeded had a name");
                assert_eq!(answer["data"]["name"], json!(name.trim()));
                assert_eq!(store.len(), len_before);
            }
            _ => panic!("{op} answered {status}"),
        }
    });
});
