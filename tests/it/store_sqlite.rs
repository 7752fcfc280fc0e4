//! The conformance suite and durability on the SQLite store.

use std::path::{Path, PathBuf};

use keygate::lifecycle::{KeyManager, NewKey};
use keygate::store::{KeyStore, ManagedKeyStore, SqliteStore, StoreError, conformance};
use time::{Duration, OffsetDateTime};

const GONE: &str =
    "key store backend error: the SQLite database file was deleted or replaced while open";

/// The database file and its WAL companions.
fn db_files(path: &Path) -> [PathBuf; 3] {
    let name = path.file_name().unwrap().to_str().unwrap();
    [
        path.to_owned(),
        path.with_file_name(format!("{name}-wal")),
        path.with_file_name(format!("{name}-shm")),
    ]
}

fn delete_db(path: &Path) {
    for file in db_files(path) {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot delete {}: {e}", file.display()),
        }
    }
}

fn assert_no_db(path: &Path) {
    for file in db_files(path) {
        assert!(!file.exists(), "{} was created again", file.display());
    }
}

#[track_caller]
fn assert_gone<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(e @ StoreError::Backend(_)) => assert_eq!(e.to_string(), GONE, "{what}"),
        other => panic!("{what}: expected the gone-file error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_conforms() {
    conformance::run_all(|| async { SqliteStore::in_memory().await.unwrap() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let store = SqliteStore::open(&path).await.unwrap();
    conformance::run_all(|| {
        let store = store.clone();
        async move { store }
    })
    .await;
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let hasher = keygate::hash::KeyHasher::sha256();
    let (kept, rotated_old, rotated_new, revoked) = {
        let store = SqliteStore::open(&path).await.unwrap();
        let manager = KeyManager::builder(store.clone())
            .audit(store.clone())
            .build();
        let kept = manager
            .issue("test", "acme", NewKey::new("kept", ["read"]))
            .await
            .unwrap();
        let old = manager
            .issue("test", "acme", NewKey::new("rotated", ["write"]))
            .await
            .unwrap();
        let new = manager
            .rotate("test", "acme", &old.info.id, None)
            .await
            .unwrap();
        let revoked = manager
            .issue("test", "acme", NewKey::new("revoked", ["read"]))
            .await
            .unwrap();
        manager
            .revoke("test", "acme", &revoked.info.id)
            .await
            .unwrap();
        manager
            .rename("test", "acme", &kept.info.id, "kept and renamed")
            .await
            .unwrap();
        store.pool().close().await;
        (kept, old, new, revoked)
    };
    let store = SqliteStore::open(&path).await.unwrap();
    let manager = KeyManager::builder(store.clone()).build();
    let names: Vec<String> = manager
        .list("acme")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["kept and renamed", "rotated"]);
    let now = time::OffsetDateTime::now_utc();
    for (key, active) in [
        (&kept.key, true),
        (&rotated_new.key, true),
        (&rotated_old.key, false),
        (&revoked.key, false),
    ] {
        let digest = hasher.hash(key.expose_secret());
        let record = store.find(&digest).await.unwrap().unwrap();
        assert_eq!(record.is_active_at(now), active, "{}", record.name);
    }
    // The audit trail was persisted: issue x4 (one for the rotation's new key), rotate, revoke, rename.
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM keygate_audit ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        actions,
        [
            "issue", "issue", "rotate", "issue", "issue", "revoke", "rename"
        ]
    );
}

#[tokio::test]
async fn tenants_and_plans_are_stored() {
    use keygate::limit::{Quota, QuotaPeriod, RateLimit};
    use keygate::plan::{
        CachedEntitlements, EntitlementSource, Plan, TenantEntitlements, TenantStatus,
    };
    let store = SqliteStore::in_memory().await.unwrap();
    let tenant = conformance::tenant();
    assert!(store.entitlements(&tenant).await.unwrap().is_none());
    let pro = TenantEntitlements::active(Plan {
        name: "pro".into(),
        rate_limit: Some(RateLimit::per_minute(60)),
        key_rate_limit: Some(RateLimit::per_second(5)),
        quota: Some(Quota {
            limit: 1000,
            period: QuotaPeriod::Month,
        }),
        allowed_scopes: Some(keygate::scope::Scopes::from_static(&["read"])),
    });
    store.set_tenant(&tenant, &pro).await.unwrap();
    assert_eq!(*store.entitlements(&tenant).await.unwrap().unwrap(), pro);

    let cached = CachedEntitlements::new(store.clone(), std::time::Duration::from_secs(3600));
    assert!(
        cached.entitlements_now(&tenant).is_none(),
        "nothing cached yet"
    );
    assert_eq!(*cached.entitlements(&tenant).await.unwrap().unwrap(), pro);
    let suspended = TenantEntitlements {
        status: TenantStatus::Suspended,
        ..pro.clone()
    };
    store.set_tenant(&tenant, &suspended).await.unwrap();
    let hit = cached.entitlements_now(&tenant).unwrap().unwrap().unwrap();
    assert_eq!(
        hit.status,
        TenantStatus::Active,
        "served from the cache within its TTL"
    );
    cached.invalidate(&tenant);
    assert_eq!(
        cached.entitlements(&tenant).await.unwrap().unwrap().status,
        TenantStatus::Suspended
    );
}

#[tokio::test]
async fn a_deleted_database_file_fails_closed() {
    deleted_file_fails_closed(true).await;
}

#[tokio::test]
async fn a_deleted_database_file_fails_closed_with_its_wal_left() {
    deleted_file_fails_closed(false).await;
}

async fn deleted_file_fails_closed(with_wal: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let tenant = conformance::tenant();
    let now = OffsetDateTime::now_utc();
    let kept = conformance::record(&tenant, now);
    store.insert(kept.clone(), None).await.unwrap();
    if with_wal {
        delete_db(&path);
    } else {
        std::fs::remove_file(&path).unwrap();
    }

    let new = conformance::record(&tenant, now);
    assert_gone(store.insert(new.clone(), None).await, "insert");
    let at = OffsetDateTime::now_utc();
    assert_gone(
        store
            .rotate(
                &tenant,
                &kept.id,
                conformance::record(&tenant, at),
                at,
                at,
                None,
            )
            .await,
        "rotate",
    );
    assert_gone(store.revoke(&tenant, &kept.id, at).await, "revoke");
    assert_gone(store.rename(&tenant, &kept.id, "x", at).await, "rename");
    assert_gone(store.touch(&[(kept.id.clone(), at)]).await, "touch");
    assert_gone(store.find(&kept.digest).await, "find");
    assert_gone(store.get(&tenant, &kept.id, at).await, "get");
    assert_gone(store.list(&tenant, at).await, "list");
    assert!(!path.exists(), "the database file was created again");
    if with_wal {
        assert_no_db(&path);
    }

    // Reopened, the path is a new, empty database: nothing was written anywhere meanwhile.
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.count_keys().await.unwrap(), 0);
}

#[tokio::test]
async fn lookups_notice_a_deleted_file_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let record = conformance::record(&conformance::tenant(), OffsetDateTime::now_utc());
    store.insert(record.clone(), None).await.unwrap();
    assert!(store.find(&record.digest).await.unwrap().is_some());
    delete_db(&path);
    // Lookups check the file at most once a second (no write here trips the check).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_gone(store.find(&record.digest).await, "find");
    assert_gone(store.find(&record.digest).await, "find, again");
    assert_no_db(&path);
}

#[tokio::test]
async fn a_replaced_database_file_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let old = SqliteStore::open(&path).await.unwrap();
    let tenant = conformance::tenant();
    old.insert(
        conformance::record(&tenant, OffsetDateTime::now_utc()),
        None,
    )
    .await
    .unwrap();
    delete_db(&path);
    // Another database now lives at the path, e.g. a restored copy.
    let replacement = SqliteStore::open(&path).await.unwrap();

    let record = conformance::record(&tenant, OffsetDateTime::now_utc());
    assert_gone(old.insert(record.clone(), None).await, "insert");
    assert_gone(old.find(&record.digest).await, "find");
    assert_eq!(
        replacement.count_keys().await.unwrap(),
        0,
        "nothing written into the replacement"
    );
}

#[tokio::test]
async fn a_store_connected_by_url_fails_closed_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = SqliteStore::connect(&url).await.unwrap();
    let record = conformance::record(&conformance::tenant(), OffsetDateTime::now_utc());
    store.insert(record.clone(), None).await.unwrap();
    delete_db(&path);
    assert_gone(
        store
            .insert(
                conformance::record(&record.tenant_id, OffsetDateTime::now_utc()),
                None,
            )
            .await,
        "insert",
    );
    assert_gone(store.find(&record.digest).await, "find");
    assert_no_db(&path);

    // An in-memory database by URL has no file to watch.
    let memory = SqliteStore::connect("sqlite::memory:").await.unwrap();
    memory.insert(record.clone(), None).await.unwrap();
    assert!(memory.find(&record.digest).await.unwrap().is_some());
}

#[tokio::test]
async fn in_memory_and_reopened_stores_are_unaffected() {
    let store = SqliteStore::in_memory().await.unwrap();
    let record = conformance::record(&conformance::tenant(), OffsetDateTime::now_utc());
    store.insert(record.clone(), None).await.unwrap();
    assert!(store.find(&record.digest).await.unwrap().is_some());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let first = SqliteStore::open(&path).await.unwrap();
    first.insert(record.clone(), None).await.unwrap();
    first.pool().close().await;
    let again = SqliteStore::open(&path).await.unwrap();
    assert!(again.find(&record.digest).await.unwrap().is_some());
    let later = OffsetDateTime::now_utc() + Duration::seconds(1);
    assert!(
        again
            .revoke(&record.tenant_id, &record.id, later)
            .await
            .unwrap()
            .is_some()
    );
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn the_management_api_and_the_request_path_answer_503_when_the_file_is_gone() {
    use crate::common::{UNAVAILABLE, envelope, send_tcp, serve};
    use axum::{Router, routing::get};
    use http::StatusCode;
    use keygate::scope::Scope;
    use keygate::store::MemoryStore;
    use keygate::{AuthLayer, Tenant, Verifier, api};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let sqlite = SqliteStore::open(&path).await.unwrap();
    // The admin key lives elsewhere, so that only the managed store is lost.
    let admins = MemoryStore::new();
    let admin_auth = AuthLayer::new(Verifier::builder(admins.clone()).build());
    let admin = KeyManager::builder(admins)
        .build()
        .issue("seed", "acme", NewKey::new("admin", ["admin"]))
        .await
        .unwrap();
    let verifier = Verifier::builder(sqlite.clone()).build();
    let manager = KeyManager::builder(sqlite.clone())
        .scheme(verifier.scheme().clone())
        .build();
    let app = Router::new()
        .merge(api::router(manager).route_layer(admin_auth.require_scope(Scope::ADMIN)))
        .route(
            "/v1/whoami",
            get(|t: Tenant| async move { t.key_id().to_owned() })
                .route_layer(AuthLayer::new(verifier)),
        );
    let addr = serve(app).await;
    let admin = admin.key.expose_secret().to_owned();
    let call = |method: &str, uri: &str, key: &str, body: &str| {
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("x-api-key", key);
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        req.body(body.to_owned()).unwrap()
    };

    let created = send_tcp(
        addr,
        call(
            "POST",
            "/v1/api-keys",
            &admin,
            r#"{"name":"k","scopes":["read"]}"#,
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let key = created.json()["data"]["key"].as_str().unwrap().to_owned();
    let id = created.json()["data"]["id"].as_str().unwrap().to_owned();
    let whoami = send_tcp(addr, call("GET", "/v1/whoami", &key, "")).await;
    assert_eq!(
        (whoami.status, &whoami.body[..]),
        (StatusCode::OK, id.as_bytes())
    );

    delete_db(&path);
    let unavailable = envelope("SERVICE_UNAVAILABLE", UNAVAILABLE);
    let rotate = format!("/v1/api-keys/{id}/rotate");
    let one = format!("/v1/api-keys/{id}");
    for (method, uri, body) in [
        (
            "POST",
            "/v1/api-keys",
            r#"{"name":"lost","scopes":["read"]}"#,
        ),
        ("POST", rotate.as_str(), ""),
        ("DELETE", one.as_str(), ""),
        ("PATCH", one.as_str(), r#"{"name":"renamed"}"#),
        ("GET", one.as_str(), ""),
        ("GET", "/v1/api-keys", ""),
    ] {
        let reply = send_tcp(addr, call(method, uri, &admin, body)).await;
        assert_eq!(
            (reply.status, reply.json()),
            (StatusCode::SERVICE_UNAVAILABLE, unavailable.clone()),
            "{method} {uri}"
        );
        assert_eq!(reply.headers["content-type"], "application/json");
    }
    let whoami = send_tcp(addr, call("GET", "/v1/whoami", &key, "")).await;
    assert_eq!(
        (whoami.status, whoami.json()),
        (StatusCode::SERVICE_UNAVAILABLE, unavailable)
    );
    assert_no_db(&path);
}

/// Instances starting at once on a new file each migrate it: the one that loses the race finds
/// the migrations applied by the other and opens the store, instead of failing on "table
/// already exists" or "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opened_at_once_on_a_new_file_all_open() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { SqliteStore::open(&path).await.map(|_| ()) })
            })
            .collect();
        for (i, open) in opens.into_iter().enumerate() {
            let opened = open.await.unwrap();
            assert!(opened.is_ok(), "round {round}, store {i}: {opened:?}");
        }
    }
}
