//! The key cache on SQLite and in memory: single-flight misses, errors shared and not cached,
//! the cap on unknown keys and the miss budget, the TTL, local invalidation of every change,
//! fail closed on a miss, serve-stale, and the conformance suite through the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use axum::{Router, routing::get};
use http::{Request, StatusCode};
use keygate::cache::{CachedStore, Change, Invalidate};
use keygate::hash::{KeyDigest, KeyHasher};
use keygate::key::{ApiKey, Environment, KeyFormat};
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::plan::{
    CachedEntitlements, EntitlementSource, MemoryEntitlements, Plan, TenantEntitlements,
    TenantStatus,
};
use keygate::store::{
    KeyRecord, KeyStore, Lookup, ManagedKeyStore, MemoryStore, SqliteStore, StoreError, conformance,
};
use keygate::{AuthLayer, Tenant, Verifier, api};
use time::OffsetDateTime;
use tokio::sync::watch;

/// A store in front of another that counts `find` calls, can hold them until released, and
/// can be switched to fail.
#[derive(Clone)]
pub(crate) struct Gated<S> {
    pub(crate) inner: S,
    queries: Arc<AtomicUsize>,
    open: watch::Sender<bool>,
    failing: Arc<AtomicBool>,
}

impl<S> Gated<S> {
    /// Answers at once, successfully.
    pub(crate) fn new(inner: S) -> Self {
        Gated {
            inner,
            queries: Arc::default(),
            open: watch::Sender::new(true),
            failing: Arc::default(),
        }
    }

    /// The number of `find` calls so far.
    pub(crate) fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// Holds every `find` until [`release`](Self::release).
    pub(crate) fn hold(&self) {
        self.open.send_replace(false);
    }

    pub(crate) fn release(&self) {
        self.open.send_replace(true);
    }

    /// Every `find` from now on fails (or succeeds again).
    pub(crate) fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl<S: KeyStore> KeyStore for Gated<S> {
    async fn find(&self, digest: &KeyDigest) -> Lookup {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::backend(std::io::Error::other(
                "connection refused",
            )));
        }
        self.inner.find(digest).await
    }
}

/// The same gate in front of a plan source: one query counted per `entitlements` call.
#[async_trait::async_trait]
impl<S: EntitlementSource> EntitlementSource for Gated<S> {
    async fn entitlements(&self, tenant_id: &str) -> keygate::plan::EntitlementLookup {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
        if self.failing.load(Ordering::SeqCst) {
            return Err(keygate::backend::BackendError::backend(
                std::io::Error::other("connection refused"),
            ));
        }
        self.inner.entitlements(tenant_id).await
    }
}

#[async_trait::async_trait]
impl<S: ManagedKeyStore> ManagedKeyStore for Gated<S> {
    async fn insert(&self, record: KeyRecord, max: Option<usize>) -> Result<(), StoreError> {
        self.inner.insert(record, max).await
    }
    async fn get(
        &self,
        tenant: &str,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.get(tenant, id, now).await
    }
    async fn list(&self, tenant: &str, now: OffsetDateTime) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list(tenant, now).await
    }
    async fn rename(
        &self,
        tenant: &str,
        id: &str,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.rename(tenant, id, name, now).await
    }
    async fn revoke(
        &self,
        tenant: &str,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.revoke(tenant, id, now).await
    }
    async fn rotate(
        &self,
        tenant: &str,
        id: &str,
        replacement: KeyRecord,
        old_until: OffsetDateTime,
        now: OffsetDateTime,
        max: Option<usize>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.inner
            .rotate(tenant, id, replacement, old_until, now, max)
            .await
    }
    async fn touch(&self, used: &[(String, OffsetDateTime)]) -> Result<(), StoreError> {
        self.inner.touch(used).await
    }
}

/// 1,000 concurrent first lookups of one key through `cache`: all get the same answer from one
/// query. The query is held until every lookup has joined, so that none comes late.
pub(crate) async fn thousand_concurrent_misses<S: KeyStore + Clone>(
    cache: CachedStore<Gated<S>>,
    digest: KeyDigest,
) -> Vec<Lookup> {
    cache.store().hold();
    let joined = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (cache, joined) = (cache.clone(), joined.clone());
        tasks.push(tokio::spawn(async move {
            // Counted once the lookup's first poll is over: it has joined the flight by then.
            joined_after_first_poll(cache.find(&digest), &joined).await
        }));
    }
    while joined.load(Ordering::SeqCst) < 1000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cache.store().release();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// Polls `future` once, counts it in `joined`, then finishes it. A lookup that missed has
/// joined the flight (or led it, held by the gate) by the end of its first poll, so once every
/// task is counted, releasing the gate cannot leave a late joiner to start a second query.
pub(crate) async fn joined_after_first_poll<F: std::future::Future>(
    future: F,
    joined: &AtomicUsize,
) -> F::Output {
    let mut future = std::pin::pin!(future);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx))).await;
    joined.fetch_add(1, Ordering::SeqCst);
    match first {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => future.await,
    }
}

pub(crate) fn digest_of(key: &ApiKey) -> KeyDigest {
    KeyHasher::sha256().hash(key.expose_secret())
}

async fn sqlite_with_key() -> (SqliteStore, ApiKey, KeyRecord) {
    let store = SqliteStore::in_memory().await.unwrap();
    let key = KeyFormat::default().generate(Environment::Live);
    let record = record(&key, "key_a", "acme", &["read"]);
    store.insert(record.clone(), None).await.unwrap();
    (store, key, record)
}

fn get_with(key: &str) -> Request<String> {
    Request::get("/v1/whoami")
        .header("x-api-key", key)
        .body(String::new())
        .unwrap()
}

/// `/v1/whoami` behind `verifier` (answering the key's name), counting its calls.
fn whoami_app(verifier: Verifier, calls: Calls) -> Router {
    Router::new().route(
        "/v1/whoami",
        get(move |t: Tenant| {
            calls.hit();
            async move { t.key_name().to_owned() }
        })
        .route_layer(AuthLayer::new(verifier)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_memory_store_conforms() {
    conformance::run_all(|| async { CachedStore::new(MemoryStore::new()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
    conformance::run_all(|| {
        let store = store.clone();
        async move { CachedStore::new(store) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_make_one_query() {
    let (store, _, record) = sqlite_with_key().await;
    let cache = CachedStore::new(Gated::new(store));
    let answers = thousand_concurrent_misses(cache.clone(), record.digest).await;
    assert_eq!(
        cache.store().queries(),
        1,
        "one store query for 1,000 lookups"
    );
    assert_eq!(answers.len(), 1000);
    for answer in answers {
        assert_eq!(*answer.unwrap().unwrap(), record);
    }
    // And the next lookup is a hit, answered without a future.
    assert_eq!(
        *cache.find_now(&record.digest).unwrap().unwrap().unwrap(),
        record
    );
    assert_eq!(cache.store().queries(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_goes_to_every_waiter_once_and_is_not_cached() {
    let (store, _, record) = sqlite_with_key().await;
    let cache = CachedStore::new(Gated::new(store));
    cache.store().fail(true);
    let answers = thousand_concurrent_misses(cache.clone(), record.digest).await;
    assert_eq!(
        cache.store().queries(),
        1,
        "1,000 waiters on a failing store, one query"
    );
    for answer in answers {
        let error = answer.unwrap_err();
        assert_eq!(
            error.to_string(),
            "key store backend error: connection refused"
        );
    }
    assert!(
        cache.find_now(&record.digest).is_none(),
        "errors are not cached"
    );
    assert!(cache.is_empty());
    cache.store().fail(false);
    assert_eq!(*cache.find(&record.digest).await.unwrap().unwrap(), record);
    assert_eq!(
        cache.store().queries(),
        2,
        "the next lookup asked the store again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_on_a_failing_store_make_one_query_and_all_get_503() {
    let (store, key, _) = sqlite_with_key().await;
    let gated = Gated::new(store);
    gated.fail(true);
    gated.hold();
    let verifier = Verifier::builder(CachedStore::new(gated.clone())).build();
    let request = get_with(key.expose_secret());
    let joined = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (verifier, request, joined) = (verifier.clone(), request.clone(), joined.clone());
        tasks.push(tokio::spawn(async move {
            let head = keygate::request::RequestHead::from(&request);
            // Its first poll hashes the key and joins the flight.
            joined_after_first_poll(verifier.verify(&head, None), &joined)
                .await
                .map(|_| ())
        }));
    }
    while joined.load(Ordering::SeqCst) < 1000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gated.release();
    for task in tasks {
        let error = task.await.unwrap().unwrap_err();
        assert!(
            matches!(error, keygate::AuthError::Unavailable),
            "{error:?}"
        );
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(gated.queries(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_unknown_keys_stay_under_the_cap() {
    let store = Gated::new(SqliteStore::in_memory().await.unwrap());
    let cache = CachedStore::builder(store).no_miss_budget().build();
    assert_eq!(cache.unknown_capacity(), 10_000);
    let hasher = KeyHasher::sha256();
    for i in 0..100_000u32 {
        let digest = hasher.hash(&format!("sk_live_unknown_{i}"));
        assert!(cache.find(&digest).await.unwrap().is_none());
        if i % 10_000 == 9_999 {
            assert!(
                cache.unknown_len() <= 10_000,
                "{} unknown keys held after {} lookups",
                cache.unknown_len(),
                i + 1
            );
        }
    }
    assert!(cache.unknown_len() <= 10_000);
    assert!(cache.unknown_len() > 0);
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.store().queries(), 100_000);
    // The last one is remembered: no query for it.
    let last = hasher.hash("sk_live_unknown_99999");
    assert!(matches!(cache.find_now(&last), Some(Ok(None))));
}

#[tokio::test]
async fn the_miss_budget_refuses_beyond_it_with_503() {
    let logs = LogCapture::start();
    let (store, key, _) = sqlite_with_key().await;
    let gated = Gated::new(store);
    let cache = CachedStore::builder(gated.clone())
        .miss_budget(3, Duration::from_secs(3600))
        .build();
    let calls = Calls::default();
    let addr = serve(whoami_app(Verifier::builder(cache).build(), calls.clone())).await;
    let format = KeyFormat::default();
    let unknown: Vec<ApiKey> = (0..3).map(|_| format.generate(Environment::Live)).collect();

    // The known key and two unknown ones use up the budget of three queries.
    let ok = send_tcp(addr, get_with(key.expose_secret())).await;
    assert_eq!(
        (ok.status, ok.body.as_ref()),
        (StatusCode::OK, b"key_a name".as_ref())
    );
    for k in &unknown[..2] {
        let r = send_tcp(addr, get_with(k.expose_secret())).await;
        assert_eq!(
            (r.status, r.json()),
            (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", INVALID))
        );
    }
    assert_eq!(gated.queries(), 3);
    let refused = send_tcp(addr, get_with(unknown[2].expose_secret())).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.json(), envelope("SERVICE_UNAVAILABLE", UNAVAILABLE));
    assert_eq!(refused.headers["cache-control"], "no-store");
    assert_eq!(gated.queries(), 3, "no query beyond the budget");
    // What the cache holds is still answered, without a query.
    let again = send_tcp(addr, get_with(unknown[0].expose_secret())).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    let ok = send_tcp(addr, get_with(key.expose_secret())).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(gated.queries(), 3);
    assert_eq!(
        calls.count(),
        2,
        "the service ran for the two admitted requests only"
    );
    let text = logs.text();
    assert!(
        text.contains("key cache: miss budget used up; lookups of keys not in the cache are refused (503) until it refills"),
        "{text}"
    );
    for k in &unknown {
        assert!(!text.contains(&k.expose_secret()[8..]), "a key in the logs");
    }
}

#[tokio::test]
async fn the_ttl_bounds_staleness_of_writes_around_the_cache() {
    let (store, key, record) = sqlite_with_key().await;
    let cache = CachedStore::builder(store.clone())
        .ttl(Duration::from_secs(2))
        .build();
    let addr = serve(whoami_app(
        Verifier::builder(cache).build(),
        Calls::default(),
    ))
    .await;
    assert_eq!(
        send_tcp(addr, get_with(key.expose_secret())).await.status,
        StatusCode::OK
    );
    // Revoked on the store directly, as another process would: the cache does not know.
    store
        .revoke("acme", &record.id, OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        send_tcp(addr, get_with(key.expose_secret())).await.status,
        StatusCode::OK,
        "served from the cache within its TTL"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let refused = send_tcp(addr, get_with(key.expose_secret())).await;
    assert_eq!(
        (refused.status, refused.json()),
        (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", REVOKED))
    );
}

fn admin_request(method: &str, path: &str, key: &str, body: Option<&str>) -> Request<String> {
    let mut r = Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", key);
    if body.is_some() {
        r = r.header("content-type", "application/json");
    }
    r.body(body.unwrap_or_default().to_owned()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_through_the_manager_reaches_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
    store
        .set_tenant("acme", &TenantEntitlements::active(Plan::default()))
        .await
        .unwrap();
    // A TTL of an hour: only invalidation can make a change visible in this test.
    let keys = CachedStore::builder(store.clone())
        .ttl(Duration::from_secs(3600))
        .build();
    let plans = CachedEntitlements::new(store.clone(), Duration::from_secs(3600));
    let verifier = Verifier::builder(keys.clone())
        .entitlements(plans.clone())
        .build();
    let manager = KeyManager::builder(keys.clone())
        .scheme(verifier.scheme().clone())
        .build();
    let admin = manager
        .issue("test", "acme", NewKey::new("admin", ["admin"]))
        .await
        .unwrap();
    let admin = admin.key.expose_secret().to_owned();
    let auth = AuthLayer::new(verifier);
    let app = api::router(manager).route_layer(auth.management()).route(
        "/v1/whoami",
        get(|t: Tenant| async move { t.key_name().to_owned() }).route_layer(auth.clone()),
    );
    let addr = serve(app).await;
    let whoami = |key: String| async move { send_tcp(addr, get_with(&key)).await };

    // Issue, and use (now cached).
    let issued = send_tcp(
        addr,
        admin_request(
            "POST",
            "/v1/api-keys",
            &admin,
            Some(r#"{"name":"first","scopes":["read"]}"#),
        ),
    )
    .await;
    assert_eq!(issued.status, StatusCode::CREATED);
    let key = issued.json()["data"]["key"].as_str().unwrap().to_owned();
    let id = issued.json()["data"]["id"].as_str().unwrap().to_owned();
    let r = whoami(key.clone()).await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::OK, b"first".as_ref())
    );

    // Rename: the next request carries the new name.
    let renamed = send_tcp(
        addr,
        admin_request(
            "PATCH",
            &format!("/v1/api-keys/{id}"),
            &admin,
            Some(r#"{"name":"second"}"#),
        ),
    )
    .await;
    assert_eq!(renamed.status, StatusCode::OK);
    let r = whoami(key.clone()).await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::OK, b"second".as_ref())
    );

    // Rotate with grace: both work; the old key is in its grace period.
    let rotated = send_tcp(
        addr,
        admin_request(
            "POST",
            &format!("/v1/api-keys/{id}/rotate"),
            &admin,
            Some(r#"{"grace_period_seconds":300}"#),
        ),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    let successor = rotated.json()["data"]["key"].as_str().unwrap().to_owned();
    let successor_id = rotated.json()["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(whoami(key.clone()).await.status, StatusCode::OK);
    assert_eq!(whoami(successor.clone()).await.status, StatusCode::OK);

    // Rotate the successor without grace: it stops at once, its successor works.
    let rotated = send_tcp(
        addr,
        admin_request(
            "POST",
            &format!("/v1/api-keys/{successor_id}/rotate"),
            &admin,
            None,
        ),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    let third = rotated.json()["data"]["key"].as_str().unwrap().to_owned();
    let third_id = rotated.json()["data"]["id"].as_str().unwrap().to_owned();
    let r = whoami(successor.clone()).await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", REVOKED))
    );
    assert_eq!(whoami(third.clone()).await.status, StatusCode::OK);

    // Revoke the first key (in its grace period): refused at once.
    let revoked = send_tcp(
        addr,
        admin_request("DELETE", &format!("/v1/api-keys/{id}"), &admin, None),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let r = whoami(key.clone()).await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", REVOKED))
    );

    // Revoke the third.
    let revoked = send_tcp(
        addr,
        admin_request("DELETE", &format!("/v1/api-keys/{third_id}"), &admin, None),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(third.clone()).await.status, StatusCode::UNAUTHORIZED);

    // Suspend the tenant through the cached plans: the next request is refused.
    assert_eq!(whoami(admin.clone()).await.status, StatusCode::OK);
    plans
        .set_tenant(
            "acme",
            &TenantEntitlements {
                status: TenantStatus::Suspended,
                plan: Plan::default(),
            },
        )
        .await
        .unwrap();
    let r = whoami(admin.clone()).await;
    assert_eq!(
        (r.status, r.json()),
        (
            StatusCode::FORBIDDEN,
            envelope("FORBIDDEN", "Tenant suspended")
        )
    );
}

#[tokio::test]
async fn a_key_issued_after_it_was_looked_up_works_at_once() {
    let store = SqliteStore::in_memory().await.unwrap();
    let keys = CachedStore::builder(store)
        .unknown_ttl(Duration::from_secs(3600))
        .build();
    let key = KeyFormat::default().generate(Environment::Live);
    let record = record(&key, "key_late", "acme", &["read"]);
    assert!(keys.find(&record.digest).await.unwrap().is_none());
    assert!(
        matches!(keys.find_now(&record.digest), Some(Ok(None))),
        "remembered as unknown"
    );
    keys.insert(record.clone(), None).await.unwrap();
    assert!(
        keys.find_now(&record.digest).is_none(),
        "the insert dropped the note"
    );
    assert_eq!(*keys.find(&record.digest).await.unwrap().unwrap(), record);
}

#[tokio::test]
async fn a_miss_while_the_store_fails_is_refused() {
    let (store, key, _) = sqlite_with_key().await;
    let gated = Gated::new(store);
    gated.fail(true);
    let calls = Calls::default();
    let verifier = Verifier::builder(CachedStore::new(gated.clone())).build();
    let addr = serve(whoami_app(verifier, calls.clone())).await;
    let refused = send_tcp(addr, get_with(key.expose_secret())).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.json(), envelope("SERVICE_UNAVAILABLE", UNAVAILABLE));
    assert_eq!(calls.count(), 0, "the service never ran");
    // Not cached: once the store is back, the key works.
    gated.fail(false);
    assert_eq!(
        send_tcp(addr, get_with(key.expose_secret())).await.status,
        StatusCode::OK
    );
    assert_eq!(gated.queries(), 2);
}

#[tokio::test]
async fn serve_stale_is_bounded_and_never_serves_a_seen_revocation() {
    let logs = LogCapture::start();
    let store = SqliteStore::in_memory().await.unwrap();
    let format = KeyFormat::default();
    let (kept, revoked) = (
        format.generate(Environment::Live),
        format.generate(Environment::Live),
    );
    store
        .insert(record(&kept, "key_kept", "acme", &["read"]), None)
        .await
        .unwrap();
    store
        .insert(record(&revoked, "key_revoked", "acme", &["read"]), None)
        .await
        .unwrap();
    let gated = Gated::new(store);
    let keys = CachedStore::builder(gated.clone())
        .ttl(Duration::from_millis(200))
        .serve_stale(Duration::from_millis(1500))
        .build();
    let calls = Calls::default();
    let addr = serve(whoami_app(
        Verifier::builder(keys.clone()).build(),
        calls.clone(),
    ))
    .await;
    for k in [&kept, &revoked] {
        assert_eq!(
            send_tcp(addr, get_with(k.expose_secret())).await.status,
            StatusCode::OK
        );
    }
    // A revocation reaches this instance (as a notification would), then the store fails.
    keys.invalidate(&Change::Key(digest_of(&revoked)));
    gated.fail(true);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stale = send_tcp(addr, get_with(kept.expose_secret())).await;
    assert_eq!(
        (stale.status, stale.body.as_ref()),
        (StatusCode::OK, b"key_kept name".as_ref()),
        "past its TTL, within the window: served stale"
    );
    let text = logs.text();
    assert!(
        text.contains("key cache: the key store failed; serving a cached key record past its TTL (serve-stale)"),
        "{text}"
    );
    assert!(text.contains("WARN"), "{text}");
    let refused = send_tcp(addr, get_with(revoked.expose_secret())).await;
    assert_eq!(
        (refused.status, refused.json()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            envelope("SERVICE_UNAVAILABLE", UNAVAILABLE)
        ),
        "never a record an invalidation removed"
    );

    // Past TTL + window: refused.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = send_tcp(addr, get_with(kept.expose_secret())).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.count(), 3);
}

#[tokio::test]
async fn without_serve_stale_a_record_past_its_ttl_is_refused_while_the_store_fails() {
    let (store, key, _) = sqlite_with_key().await;
    let gated = Gated::new(store);
    let keys = CachedStore::builder(gated.clone())
        .ttl(Duration::from_millis(100))
        .build();
    let addr = serve(whoami_app(
        Verifier::builder(keys).build(),
        Calls::default(),
    ))
    .await;
    assert_eq!(
        send_tcp(addr, get_with(key.expose_secret())).await.status,
        StatusCode::OK
    );
    gated.fail(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = send_tcp(addr, get_with(key.expose_secret())).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_flush_forgets_everything() {
    let (store, _, record) = sqlite_with_key().await;
    let keys = CachedStore::new(store);
    keys.find(&record.digest).await.unwrap().unwrap();
    keys.find(&KeyDigest::from_bytes([1; 32])).await.unwrap();
    assert_eq!((keys.len(), keys.unknown_len()), (1, 1));
    keys.invalidate(&Change::Flush);
    assert!(keys.is_empty());
    assert!(keys.find_now(&record.digest).is_none());
}

#[test]
fn debug_shows_settings_and_no_record() {
    let keys = CachedStore::builder(MemoryStore::new())
        .serve_stale(Duration::from_secs(300))
        .build();
    let debug = format!("{keys:?}");
    assert!(
        debug.starts_with("CachedStore { records: 0, capacity: 100000, ttl_ms: 30000"),
        "{debug}"
    );
    assert!(debug.contains("miss_budget: 1000 per 1s"), "{debug}");
    assert!(debug.contains("serve_stale_ms: Some(300000)"), "{debug}");
}

/// A tenant write whose caller stops waiting (at every point from before the commit to after
/// it) still drops the cached answer once it commits: the cache never keeps saying "active"
/// for a tenant the database has suspended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_write_whose_caller_stops_waiting_still_reaches_the_cache() {
    // A file: an in-memory database lives in its one connection, which an abandoned write may
    // close.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("keys.db")).await.unwrap();
    let plans = CachedEntitlements::new(store.clone(), Duration::from_secs(3600));
    let (store, plans) = (&store, &plans);
    abandon_tenant_writes(
        |status| async move {
            let entitlements = TenantEntitlements {
                status,
                plan: Plan::default(),
            };
            plans.set_tenant("acme", &entitlements).await.unwrap();
        },
        || async move {
            plans.entitlements("acme").await.unwrap();
        },
        || async move {
            let stored = store.tenant("acme").await.unwrap().unwrap().status;
            let cached = plans.entitlements("acme").await.unwrap().unwrap().status;
            stored == cached
        },
    )
    .await;
}

/// A thousand lookups of one tenant's plan at once, on a plan source held until all of them
/// have joined; their answers.
async fn thousand_concurrent_plan_misses(
    plans: &CachedEntitlements<Gated<MemoryEntitlements>>,
) -> Vec<keygate::plan::EntitlementLookup> {
    plans.source().hold();
    let joined = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (plans, joined) = (plans.clone(), joined.clone());
        tasks.push(tokio::spawn(async move {
            joined_after_first_poll(plans.entitlements("acme"), &joined).await
        }));
    }
    while joined.load(Ordering::SeqCst) < 1000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    plans.source().release();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

fn plans_of_acme() -> CachedEntitlements<Gated<MemoryEntitlements>> {
    let source = MemoryEntitlements::new();
    source.set("acme", TenantEntitlements::active(Plan::default()));
    CachedEntitlements::new(Gated::new(source), Duration::from_secs(3600))
}

/// After a flush (a listener's, on a lost connection), a thousand requests of one tenant make
/// one plan query and share its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_plan_misses_make_one_query() {
    let plans = plans_of_acme();
    let answers = thousand_concurrent_plan_misses(&plans).await;
    assert_eq!(plans.source().queries(), 1, "one query for 1,000 lookups");
    for answer in answers {
        assert_eq!(answer.unwrap().unwrap().status, TenantStatus::Active);
    }
    assert!(plans.entitlements_now("acme").is_some(), "kept");
    assert_eq!(plans.source().queries(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_query_error_goes_to_every_waiter_once_and_is_not_cached() {
    let plans = plans_of_acme();
    plans.source().fail(true);
    let answers = thousand_concurrent_plan_misses(&plans).await;
    assert_eq!(plans.source().queries(), 1, "one query on a failing source");
    for answer in answers {
        assert_eq!(
            answer.unwrap_err().to_string(),
            "backend error: connection refused"
        );
    }
    assert!(plans.entitlements_now("acme").is_none(), "not cached");
    plans.source().fail(false);
    assert!(plans.entitlements("acme").await.unwrap().is_some());
    assert_eq!(plans.source().queries(), 2, "the next lookup asked again");
}

/// A plan source that never answers fails each lookup after the query timeout, and once it
/// answers again the next lookup makes a new query: no flight is left hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_query_that_never_answers_times_out_and_the_next_asks_again() {
    let plans = plans_of_acme().query_timeout(Duration::from_millis(100));
    plans.source().hold();
    // The query timeout's own error, not the guard's: the lookup gave up at its timeout.
    let error = tokio::time::timeout(Duration::from_secs(5), plans.entitlements("acme"))
        .await
        .expect("the lookup waited past its query timeout")
        .unwrap_err();
    assert_eq!(error.to_string(), "backend timed out");
    plans.source().release();
    // Each lookup from now on makes a query of its own (none joins the abandoned one) until
    // one answers. On a loaded machine a lookup may also pass its 100 ms; the guard keeps a
    // hanging flight from hanging the suite.
    let lookups = tokio::time::timeout(Duration::from_secs(10), async {
        let mut lookups = 1;
        loop {
            lookups += 1;
            match plans.entitlements("acme").await {
                Ok(found) => return (lookups, found.is_some()),
                Err(e) => assert_eq!(e.to_string(), "backend timed out"),
            }
        }
    })
    .await
    .expect("a lookup answers once the source does");
    assert!(lookups.1, "acme's plan is found");
    assert_eq!(plans.source().queries(), lookups.0, "one query per lookup");
}

/// A suspension that lands while a plan query is in flight: the lookups after it do not join
/// that query, and its answer (from before the change) is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_query_in_flight_at_an_invalidation_is_not_joined_nor_kept() {
    let plans = plans_of_acme();
    plans.source().hold();
    let before = tokio::spawn({
        let plans = plans.clone();
        async move { plans.entitlements("acme").await }
    });
    while plans.source().queries() < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    plans.source().inner.suspend("acme");
    plans.invalidate("acme");
    plans.source().release();
    let after = plans.entitlements("acme").await.unwrap().unwrap();
    assert_eq!(after.status, TenantStatus::Suspended);
    assert_eq!(plans.source().queries(), 2, "a query of its own");
    before.await.unwrap().unwrap();
    let kept = plans.entitlements_now("acme").unwrap().unwrap().unwrap();
    assert_eq!(kept.status, TenantStatus::Suspended);
}
