//! The conformance suite and durability on the SQLite store.
#![cfg(feature = "sqlite")]

use keygate::manage::{KeyManager, NewKey};
use keygate::store::{KeyStore, SqliteStore, conformance};

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
    use keygate::entitle::{
        CachedEntitlements, EntitlementSource, Plan, TenantEntitlements, TenantStatus,
    };
    use keygate::limit::{Quota, QuotaPeriod, RateLimit};
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
