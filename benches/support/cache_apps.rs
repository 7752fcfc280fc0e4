//! The quickstart-like app the load bench serves on SQLite and on PostgreSQL: the quickstart's
//! routes, keys and plans cached as the quickstart caches them, last-used times noted, and a plan
//! that never refuses (`support::plan`), so that every request does the whole work.
//! Declared with `#[path]` by the benches that use it, each a part of it.
#![allow(dead_code)]

use std::time::Duration;

use axum::{Extension, Json, Router, routing::get};
use keygate::cache::CachedStore;
use keygate::key::{ApiKey, Environment, KeyFormat};
use keygate::last_used::LastUsedTracker;
use keygate::plan::{CachedEntitlements, EntitlementSource};
use keygate::scope::Scope;
use keygate::store::{KeyRecord, ManagedKeyStore};
use keygate::{AuthLayer, Tenant, Verifier};
use serde_json::json;

/// The tenant the apps' keys belong to.
pub(crate) fn tenant() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("bench_{hex}")
}

/// Inserts `n` keys of `tenant` into `store`; returns one of them.
pub(crate) async fn seed<S: ManagedKeyStore + Clone>(store: &S, tenant: &str, n: usize) -> ApiKey {
    let format = KeyFormat::default();
    let mut probe = None;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let key = format.generate(Environment::Live);
        let record = record_of(&key, tenant, i);
        if i == n / 2 {
            probe = Some(key);
        }
        let store = store.clone();
        tasks.spawn(async move { store.insert(record, None).await.unwrap() });
        // A few writes at a time: SQLite serialises them anyway, PostgreSQL's pool is small.
        if tasks.len() >= 8 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    probe.unwrap()
}

/// The quickstart's routes over `store`, as the quickstart builds them: `/health` public,
/// `/v1/whoami` authenticated with the tenant's plan, its limits and the limit headers. The
/// caches go to `subscribe` (to a change listener, on PostgreSQL).
pub(crate) fn quickstart_like<S>(
    store: S,
    subscribe: impl FnOnce(CachedStore<S>, CachedEntitlements<S>),
) -> Router
where
    S: ManagedKeyStore + EntitlementSource + Clone,
{
    let keys = CachedStore::new(store.clone());
    let plans = CachedEntitlements::new(store.clone(), Duration::from_secs(30));
    subscribe(keys.clone(), plans.clone());
    let verifier = Verifier::builder(keys).entitlements(plans).build();
    let tracker = LastUsedTracker::new();
    // Writes last-used times every 10 s, as the quickstart does, for the bench's life (the
    // flusher's task runs on when its handle is dropped).
    drop(tracker.spawn_flusher(store, Duration::from_secs(10)));
    let auth = AuthLayer::new(verifier).track_last_used(tracker);
    Router::new()
        .route(
            "/v1/whoami",
            // `Extension`, not keygate's extractor: the benches build without the `axum` feature.
            get(|Extension(t): Extension<Tenant>| async move {
                Json(json!({"success": true, "data": {"tenant_id": t.tenant_id(), "key_id": t.key_id()}}))
            })
            .route_layer(auth.require_scope(Scope::READ)),
        )
        .route(
            "/health",
            get(|| async { Json(json!({"success": true, "data": {"status": "ok"}})) }),
        )
}

/// A record of `tenant` for `key`, as [`seed`] stores them.
pub(crate) fn record_of(key: &ApiKey, tenant: &str, i: usize) -> KeyRecord {
    let mut record = crate::support::record(key, i);
    record.id = format!("{tenant}_key_{i}");
    record.tenant_id = tenant.to_owned();
    record
}
