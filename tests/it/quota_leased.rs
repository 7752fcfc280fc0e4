//! Durable quotas: `LeasedQuotaLimiter` on the SQL stores' ledger, over real TCP. Quota usage
//! survives restarts, and instances sharing one database never admit more than the quota.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use crate::common::*;
use axum::{Router, routing::get};
use http::{Request, StatusCode};
use keygate::backend::BackendError;
use keygate::key::{ApiKey, Environment, KeyFormat};
use keygate::limit::{
    Decision, LeasedQuotaLimiter, LimitRequest, Limiter, ManualClock, Quota, QuotaAccount,
    QuotaLease, QuotaLedger, QuotaPeriod, QuotaStatus, RateLimit, Usage,
};
use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
use keygate::store::{MemoryStore, SqliteStore};
use keygate::{AuthLayer, Verifier};

const T0: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn plan(rate: Option<RateLimit>, quota: u64) -> TenantEntitlements {
    TenantEntitlements::active(Plan {
        name: "test".into(),
        rate_limit: rate,
        quota: Some(Quota {
            limit: quota,
            period: QuotaPeriod::Day,
        }),
        ..Plan::default()
    })
}

/// A tenant of its own for each test, so that tests sharing a database never meet.
fn tenant(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Keys of `tenant`, in a memory store: the tests are about the limiter, not the key store.
fn keys(tenant: &str, n: usize) -> (MemoryStore, Vec<ApiKey>) {
    let store = MemoryStore::new();
    let keys: Vec<ApiKey> = (0..n)
        .map(|i| {
            let key = KeyFormat::default().generate(Environment::Live);
            store.put(record(&key, &format!("key_{i}"), tenant, &["read"]));
            key
        })
        .collect();
    (store, keys)
}

/// One instance: a server over TCP whose limiter is `limiter`.
async fn instance<L: QuotaLedger>(
    store: MemoryStore,
    plans: MemoryEntitlements,
    limiter: LeasedQuotaLimiter<L>,
) -> std::net::SocketAddr {
    let verifier = Verifier::builder(store)
        .entitlements(plans)
        .limiter(limiter)
        .build();
    serve(
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(AuthLayer::new(verifier)),
    )
    .await
}

async fn statuses(addr: std::net::SocketAddr, key: &ApiKey, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(send_tcp(addr, get_req(key)).await.status.as_u16());
    }
    out
}

fn account(tenant: &str, clock_secs: u64) -> QuotaAccount<'_> {
    QuotaAccount {
        tenant_id: tenant,
        period: QuotaPeriod::Day,
        period_start: QuotaPeriod::Day.bounds(clock_secs).0,
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn the_sql_ledger_never_grants_past_the_limit() {
    let store = SqliteStore::in_memory().await.unwrap();
    let a = account("acme", T0);
    assert_eq!(store.used(&a).await.unwrap(), 0);
    let lease = |want| {
        let store = store.clone();
        async move { store.lease(&account("acme", T0), 10, want).await.unwrap() }
    };
    assert_eq!(
        lease(4).await,
        QuotaLease {
            granted: 4,
            used: 4
        }
    );
    assert_eq!(
        lease(4).await,
        QuotaLease {
            granted: 4,
            used: 8
        }
    );
    assert_eq!(
        lease(4).await,
        QuotaLease {
            granted: 2,
            used: 10
        }
    );
    assert_eq!(
        lease(4).await,
        QuotaLease {
            granted: 0,
            used: 10
        }
    );
    store.give_back(&a, 3).await.unwrap();
    assert_eq!(store.used(&a).await.unwrap(), 7);
    assert_eq!(
        lease(1).await,
        QuotaLease {
            granted: 1,
            used: 8
        }
    );
    // Another period, another tenant and another kind of period are other accounts.
    let next_day = account("acme", T0 + 86_400);
    assert_eq!(
        store.lease(&next_day, 10, 5).await.unwrap(),
        QuotaLease {
            granted: 5,
            used: 5
        }
    );
    let month = QuotaAccount {
        period: QuotaPeriod::Month,
        ..a
    };
    assert_eq!(store.used(&month).await.unwrap(), 0);
    assert_eq!(store.used(&account("other", T0)).await.unwrap(), 0);
    assert_eq!(store.used(&a).await.unwrap(), 8);
    // A give-back never takes the count below zero.
    store.give_back(&next_day, 50).await.unwrap();
    assert_eq!(store.used(&next_day).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_survives_a_clean_restart_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quota.db");
    let (keys_store, keys) = keys("acme", 1);
    let plans = MemoryEntitlements::new();
    plans.set("acme", plan(None, 10));

    let store = SqliteStore::open(&db).await.unwrap();
    let limiter = LeasedQuotaLimiter::new(store.clone());
    let addr = instance(keys_store.clone(), plans.clone(), limiter.clone()).await;
    assert_eq!(statuses(addr, &keys[0], 3).await, [200, 200, 200]);
    // Blocks were leased ahead; a clean stop gives back what was not used.
    let given = limiter.shutdown().await.unwrap();
    assert_eq!(
        store.used(&account("acme", now_secs())).await.unwrap(),
        3,
        "{given} given back"
    );
    store.pool().close().await;

    // A new process: the quota goes on from 3, not from 0.
    let store = SqliteStore::open(&db).await.unwrap();
    let addr = instance(keys_store, plans, LeasedQuotaLimiter::new(store.clone())).await;
    let after = statuses(addr, &keys[0], 9).await;
    assert_eq!(after, [200, 200, 200, 200, 200, 200, 200, 403, 403]);
    let refused = send_tcp(addr, get_req(&keys[0])).await;
    assert_eq!(
        (refused.status, refused.json()),
        (
            StatusCode::FORBIDDEN,
            envelope("FORBIDDEN", "Quota exhausted for the current period")
        )
    );
    let state = refused.headers["ratelimit"].to_str().unwrap();
    assert!(state.starts_with("\"quota\";r=0;t="), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_at_most_the_blocks_held() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let (keys_store, keys) = keys("acme", 1);
    let plans = MemoryEntitlements::new();
    plans.set("acme", plan(None, 1000));

    let store = SqliteStore::open(&db).await.unwrap();
    // A lifetime longer than the test: a crashed instance gives nothing back.
    let limiter = LeasedQuotaLimiter::builder(store.clone())
        .lease_lifetime(Duration::from_secs(3600))
        .build();
    let addr = instance(keys_store.clone(), plans.clone(), limiter.clone()).await;
    assert_eq!(statuses(addr, &keys[0], 40).await, [200; 40]);
    // No shutdown: a crash. What this instance held stays counted, and nothing else. The first
    // block is 1000 / 16 = 62; below half of it (from the 32nd request) the next one, of
    // (1000 - 62) / 16 = 58, was leased in the background: wait until it has landed (before
    // the ledger grants it, `used == 40 + held` holds too, with the first block alone).
    let (mut held, mut used) = (0, 0);
    for _ in 0..500 {
        held = limiter.held("acme");
        used = store.used(&account("acme", now_secs())).await.unwrap();
        if used == 62 + 58 && used == 40 + held {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((used, held), (62 + 58, 62 + 58 - 40));
    // The documented bound: less than 1.5 blocks of clamp(remaining / 16, 1, 1000) = 62.
    assert!(held < 93, "{held} held");
    drop(limiter);

    let store = SqliteStore::open(&db).await.unwrap();
    let addr = instance(keys_store, plans, LeasedQuotaLimiter::new(store.clone())).await;
    let mut admitted = 0;
    while send_tcp(addr, get_req(&keys[0])).await.status == StatusCode::OK {
        admitted += 1;
    }
    assert_eq!(admitted, 1000 - used);
}

/// 2,000 concurrent requests split over two instances (each with its own pool) against a
/// quota of 500: exactly 500 admitted; after a restart of both, still exhausted.
async fn two_instances_admit_exactly_the_quota<L, F, Fut>(open: F)
where
    L: QuotaLedger + Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = L>,
{
    let tenant = tenant("shared");
    let (keys_store, keys) = keys(&tenant, 2);
    let plans = MemoryEntitlements::new();
    plans.set(&tenant, plan(None, 500));
    let limiters = [
        LeasedQuotaLimiter::new(open().await),
        LeasedQuotaLimiter::new(open().await),
    ];
    let addrs = [
        instance(keys_store.clone(), plans.clone(), limiters[0].clone()).await,
        instance(keys_store.clone(), plans.clone(), limiters[1].clone()).await,
    ];
    let clients = [h2_client(), h2_client()];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2000 {
        let (addr, client) = (addrs[i % 2], clients[i % 2].clone());
        let key = keys[(i / 2) % 2].expose_secret().to_owned();
        tasks.spawn(async move { h2_get(&client, addr, &key).await });
    }
    let (mut ok, mut forbidden) = (0, 0);
    while let Some(status) = tasks.join_next().await {
        match status.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::FORBIDDEN => forbidden += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, forbidden), (500, 1500));
    for limiter in &limiters {
        limiter.shutdown().await.unwrap();
    }
    let ledger = open().await;
    let account = QuotaAccount {
        tenant_id: &tenant,
        ..account("", now_secs())
    };
    assert_eq!(ledger.used(&account).await.unwrap(), 500);

    // Both instances restart: the quota is still used up.
    for _ in 0..2 {
        let addr = instance(
            keys_store.clone(),
            plans.clone(),
            LeasedQuotaLimiter::new(open().await),
        )
        .await;
        assert_eq!(statuses(addr, &keys[0], 2).await, [403, 403]);
    }
}

type H2Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, String>;

/// One HTTP/2 connection per instance carries all the concurrent requests.
fn h2_client() -> H2Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

async fn h2_get(client: &H2Client, addr: std::net::SocketAddr, key: &str) -> StatusCode {
    let req = Request::get(format!("http://{addr}/"))
        .header("x-api-key", key)
        .body(String::new())
        .unwrap();
    client.request(req).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_sqlite_file_admit_exactly_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let db = Arc::new(db);
    two_instances_admit_exactly_the_quota(|| {
        let db = db.clone();
        async move { SqliteStore::open(&*db).await.unwrap() }
    })
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_admit_exactly_the_quota() {
    let url = crate::common::postgres_url();
    two_instances_admit_exactly_the_quota(|| {
        let url = url.clone();
        async move {
            keygate::store::PostgresStore::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_block_is_given_back_for_other_instances() {
    let store = SqliteStore::in_memory().await.unwrap();
    let (keys_store, keys) = keys("acme", 1);
    let plans = MemoryEntitlements::new();
    plans.set("acme", plan(None, 100));
    let clock = ManualClock::at_unix_secs(T0);
    let limiter = |store: SqliteStore| {
        LeasedQuotaLimiter::builder(store)
            .clock(clock.clone())
            .lease_lifetime(Duration::from_secs(2))
            .build()
    };
    let (a, b) = (limiter(store.clone()), limiter(store.clone()));
    let addr_a = instance(keys_store.clone(), plans.clone(), a.clone()).await;
    let addr_b = instance(keys_store, plans, b.clone()).await;

    // A serves one request from a block of 100 / 16 = 6, and goes quiet holding 5 (its
    // prefetch waits until the block is below half).
    assert_eq!(statuses(addr_a, &keys[0], 1).await, [200]);
    assert_eq!(a.held("acme"), 5);
    // B takes everything else, then is refused: A still holds 5.
    let mut admitted = 0;
    while send_tcp(addr_b, get_req(&keys[0])).await.status == StatusCode::OK {
        admitted += 1;
    }
    assert_eq!(admitted, 94);
    assert_eq!(store.used(&account("acme", T0)).await.unwrap(), 100);

    // One lease lifetime later A gives its idle block back, and B, asking again once its
    // "nothing left" is a lifetime old, gets exactly those 5.
    clock.advance(Duration::from_secs(2));
    // The sweep takes the block (held 0), then gives it back to the ledger: wait for both.
    for _ in 0..200 {
        let used = store.used(&account("acme", T0)).await.unwrap();
        if a.held("acme") == 0 && used == 95 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(a.held("acme"), 0, "the idle block was not given back");
    assert_eq!(store.used(&account("acme", T0)).await.unwrap(), 95);
    let mut admitted = 0;
    while send_tcp(addr_b, get_req(&keys[0])).await.status == StatusCode::OK {
        admitted += 1;
    }
    assert_eq!(admitted, 5);
}

#[tokio::test]
async fn a_rate_limit_refusal_uses_none_of_the_quota_and_headers_show_both() {
    let store = SqliteStore::in_memory().await.unwrap();
    let (keys_store, keys) = keys("acme", 1);
    let plans = MemoryEntitlements::new();
    plans.set("acme", plan(Some(RateLimit::per_minute(2)), 3));
    let clock = ManualClock::at_unix_secs(T0);
    let limiter = LeasedQuotaLimiter::builder(store.clone())
        .clock(clock.clone())
        .build();
    let addr = instance(keys_store, plans, limiter.clone()).await;
    assert_eq!(statuses(addr, &keys[0], 3).await, [200, 200, 429]);
    clock.advance(Duration::from_secs(60));
    let last = send_tcp(addr, get_req(&keys[0])).await;
    assert_eq!(last.status, StatusCode::OK, "the 429 took no quota");
    assert_eq!(
        last.headers["ratelimit"],
        "\"tenant\";r=1;t=30, \"quota\";r=0;t=86340"
    );
    let refused = send_tcp(addr, get_req(&keys[0])).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // A quota refusal shows the rate limit as it stands, untouched by the refusal.
    assert_eq!(
        refused.headers["ratelimit"],
        "\"tenant\";r=1;t=30, \"quota\";r=0;t=86340"
    );
    assert_eq!(refused.headers["x-ratelimit-remaining"], "1");
    assert_eq!(store.used(&account("acme", T0)).await.unwrap(), 3);
}

#[tokio::test]
async fn a_new_period_starts_from_nothing_and_the_old_one_stays_counted() {
    let store = SqliteStore::in_memory().await.unwrap();
    let (keys_store, keys) = keys("acme", 1);
    let plans = MemoryEntitlements::new();
    plans.set("acme", plan(None, 2));
    // One second before the day ends.
    let clock = ManualClock::at_unix_secs(T0 + 86_399);
    let limiter = LeasedQuotaLimiter::builder(store.clone())
        .clock(clock.clone())
        .build();
    let addr = instance(keys_store, plans, limiter.clone()).await;
    assert_eq!(statuses(addr, &keys[0], 3).await, [200, 200, 403]);
    // The next day: a fresh quota, its reset a whole day away; yesterday's use stays counted.
    clock.advance(Duration::from_secs(1));
    let first = send_tcp(addr, get_req(&keys[0])).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.headers["ratelimit"], "\"quota\";r=1;t=86400");
    assert_eq!(statuses(addr, &keys[0], 2).await, [200, 403]);
    assert_eq!(store.used(&account("acme", T0)).await.unwrap(), 2);
    assert_eq!(store.used(&account("acme", T0 + 86_400)).await.unwrap(), 2);
}

/// A ledger whose database is down.
struct DownLedger;

#[async_trait::async_trait]
impl QuotaLedger for DownLedger {
    async fn lease(
        &self,
        _: &QuotaAccount<'_>,
        _: u64,
        _: u64,
    ) -> Result<QuotaLease, BackendError> {
        Err(BackendError::backend(std::io::Error::other(
            "connection refused",
        )))
    }
    async fn give_back(&self, _: &QuotaAccount<'_>, _: u64) -> Result<(), BackendError> {
        Err(BackendError::Timeout)
    }
    async fn used(&self, _: &QuotaAccount<'_>) -> Result<u64, BackendError> {
        Err(BackendError::Timeout)
    }
}

#[tokio::test]
async fn a_failing_ledger_fails_closed_or_open_as_configured() {
    let (keys_store, keys) = keys("acme", 1);
    let plans = MemoryEntitlements::new();
    plans.set("acme", plan(Some(RateLimit::per_minute(60)), 100));
    let addr = instance(
        keys_store.clone(),
        plans.clone(),
        LeasedQuotaLimiter::new(DownLedger),
    )
    .await;
    let refused = send_tcp(addr, get_req(&keys[0])).await;
    assert_eq!(
        (refused.status, refused.json()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            envelope("SERVICE_UNAVAILABLE", UNAVAILABLE)
        )
    );
    assert_eq!(refused.headers["cache-control"], "no-store");

    let verifier = Verifier::builder(keys_store)
        .entitlements(plans)
        .limiter(LeasedQuotaLimiter::new(DownLedger))
        .limits_fail_open(true)
        .build();
    let addr = serve(
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(AuthLayer::new(verifier)),
    )
    .await;
    let open = send_tcp(addr, get_req(&keys[0])).await;
    assert_eq!(open.status, StatusCode::OK);
    assert!(open.headers.get("ratelimit").is_none());
}

#[tokio::test]
async fn after_shutdown_requests_that_need_a_lease_are_refused() {
    let store = SqliteStore::in_memory().await.unwrap();
    let (keys_store, keys) = keys("acme", 1);
    let plans = MemoryEntitlements::new();
    plans.set("acme", plan(None, 100));
    let limiter = LeasedQuotaLimiter::new(store.clone());
    let addr = instance(keys_store, plans, limiter.clone()).await;
    assert_eq!(statuses(addr, &keys[0], 1).await, [200]);
    assert_eq!(limiter.shutdown().await.unwrap(), 5);
    assert_eq!(statuses(addr, &keys[0], 1).await, [503]);
    assert_eq!(store.used(&account("acme", now_secs())).await.unwrap(), 1);
}

/// A ledger in memory that can misbehave as a database and its connections do on a bad day:
/// give-backs applied whose answer is lost (an error), slow give-backs, leases that never
/// answer.
#[derive(Default)]
struct FlakyLedger {
    used: std::sync::Mutex<std::collections::HashMap<(String, QuotaPeriod, u64), u64>>,
    /// Give-backs are applied, then answer with an error.
    give_back_fails_after_applying: AtomicBool,
    /// Give-backs wait this long (ms) before they are applied.
    give_back_delay_ms: AtomicU64,
    /// Leases never answer.
    leases_hang: AtomicBool,
    leases: AtomicU64,
    give_backs: AtomicU64,
}

impl FlakyLedger {
    fn count(&self, tenant: &str, period: QuotaPeriod, start: u64) -> u64 {
        let key = (tenant.to_owned(), period, start);
        self.used.lock().unwrap().get(&key).copied().unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl QuotaLedger for FlakyLedger {
    async fn lease(
        &self,
        a: &QuotaAccount<'_>,
        limit: u64,
        want: u64,
    ) -> Result<QuotaLease, BackendError> {
        self.leases.fetch_add(1, SeqCst);
        if self.leases_hang.load(SeqCst) {
            std::future::pending::<()>().await;
        }
        let mut used = self.used.lock().unwrap();
        let used = used
            .entry((a.tenant_id.to_owned(), a.period, a.period_start))
            .or_default();
        let granted = want.min(limit.saturating_sub(*used));
        *used += granted;
        Ok(QuotaLease {
            granted,
            used: if granted == 0 {
                (*used).max(limit)
            } else {
                *used
            },
        })
    }

    async fn give_back(&self, a: &QuotaAccount<'_>, unused: u64) -> Result<(), BackendError> {
        self.give_backs.fetch_add(1, SeqCst);
        let delay = self.give_back_delay_ms.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        {
            let mut used = self.used.lock().unwrap();
            let used = used
                .entry((a.tenant_id.to_owned(), a.period, a.period_start))
                .or_default();
            *used = used.saturating_sub(unused);
        }
        if self.give_back_fails_after_applying.load(SeqCst) {
            return Err(BackendError::backend(std::io::Error::other(
                "connection reset",
            )));
        }
        Ok(())
    }

    async fn used(&self, a: &QuotaAccount<'_>) -> Result<u64, BackendError> {
        Ok(self.count(a.tenant_id, a.period, a.period_start))
    }
}

/// A request of `tenant` against a daily quota of `limit`, no rate limits.
fn quota_request(tenant: &str, limit: u64, period: QuotaPeriod) -> LimitRequest<'_> {
    LimitRequest {
        tenant_id: tenant,
        key_id: "key_1",
        tenant_rate: None,
        key_rate: None,
        quota: Some(Quota { limit, period }),
        cost: 1,
    }
}

/// Requests admitted one after the other until the first refusal.
async fn admit_all<L: Limiter>(limiter: &L, request: &LimitRequest<'_>) -> u64 {
    let mut admitted = 0;
    while let Decision::Allowed(_) = limiter.acquire(request).await.unwrap() {
        admitted += 1;
    }
    admitted
}

/// Waits (up to 5 s) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_give_back_that_fails_after_applying_is_not_offered_again() {
    let ledger = Arc::new(FlakyLedger::default());
    let clock = ManualClock::at_unix_secs(T0);
    let limiter = || {
        LeasedQuotaLimiter::builder(ledger.clone())
            .clock(clock.clone())
            .lease_lifetime(Duration::from_millis(200))
            .build()
    };
    let (a, b) = (limiter(), limiter());
    let request = quota_request("acme", 32, QuotaPeriod::Day);
    // A leases 32 / 16 = 2, serves 1 and goes quiet holding 1.
    assert!(matches!(
        a.acquire(&request).await.unwrap(),
        Decision::Allowed(_)
    ));
    assert_eq!(a.held("acme"), 1);
    assert_eq!(ledger.count("acme", QuotaPeriod::Day, T0), 2);

    // Its idle block goes back; the give-back is applied but answers with an error.
    ledger.give_back_fails_after_applying.store(true, SeqCst);
    clock.advance(Duration::from_millis(200));
    eventually("a sweep gave the idle block back", || {
        ledger.give_backs.load(SeqCst) >= 1
    })
    .await;
    // Six more sweeps' time: a block kept after a failed give-back would go back again at each.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ledger.give_backs.load(SeqCst), 1);
    assert_eq!(a.held("acme"), 0);
    assert_eq!(ledger.count("acme", QuotaPeriod::Day, T0), 1);

    // Between them the two instances admit exactly the quota.
    let admitted = admit_all(&b, &request).await + admit_all(&a, &request).await;
    assert_eq!(1 + admitted, 32);
    assert_eq!(ledger.count("acme", QuotaPeriod::Day, T0), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_never_answers_is_abandoned_after_the_ledger_timeout() {
    let ledger = Arc::new(FlakyLedger::default());
    ledger.leases_hang.store(true, SeqCst);
    let (keys_store, keys) = keys("acme", 1);
    let plans = MemoryEntitlements::new();
    plans.set("acme", plan(None, 100));
    let limiter = LeasedQuotaLimiter::builder(ledger.clone())
        .ledger_timeout(Duration::from_millis(100))
        .build();
    let addr = instance(keys_store, plans, limiter.clone()).await;

    // Refused once the lease times out, well within the verifier's 2 s store timeout.
    let started = std::time::Instant::now();
    let refused = send_tcp(addr, get_req(&keys[0])).await;
    assert_eq!(
        (refused.status, refused.json()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            envelope("SERVICE_UNAVAILABLE", UNAVAILABLE)
        )
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(ledger.leases.load(SeqCst), 1);
    // The database answers again: the next request makes a new lease instead of waiting on the
    // abandoned one for good.
    ledger.leases_hang.store(false, SeqCst);
    assert_eq!(statuses(addr, &keys[0], 2).await, [200, 200]);
    assert_eq!(ledger.leases.load(SeqCst), 2);
    // A lease that hangs at shutdown holds it up no longer than the timeout either.
    ledger.leases_hang.store(true, SeqCst);
    let direct = limiter.clone();
    let other = tokio::spawn(async move {
        direct
            .acquire(&quota_request("other", 100, QuotaPeriod::Day))
            .await
    });
    eventually("the second tenant's lease started", || {
        ledger.leases.load(SeqCst) == 3
    })
    .await;
    let given = tokio::time::timeout(Duration::from_secs(2), limiter.shutdown())
        .await
        .expect("shutdown waits no longer than the ledger timeout");
    assert_eq!(given.unwrap(), 4);
    assert_eq!(
        other.await.unwrap().unwrap_err().to_string(),
        "backend error: quota lease failed: backend timed out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_sweep_under_way_and_loses_nothing() {
    let ledger = Arc::new(FlakyLedger::default());
    let clock = ManualClock::at_unix_secs(T0);
    let limiter = LeasedQuotaLimiter::builder(ledger.clone())
        .clock(clock.clone())
        .lease_lifetime(Duration::from_millis(200))
        .build();
    let tenants = ["t1", "t2", "t3", "t4"];
    for tenant in tenants {
        let request = quota_request(tenant, 1000, QuotaPeriod::Day);
        assert!(matches!(
            limiter.acquire(&request).await.unwrap(),
            Decision::Allowed(_)
        ));
        assert_eq!(ledger.count(tenant, QuotaPeriod::Day, T0), 62);
    }
    // Give-backs take 200 ms each: the sweep of the four idle blocks takes 800 ms, and shutdown
    // is called during it.
    ledger.give_back_delay_ms.store(200, SeqCst);
    clock.advance(Duration::from_millis(200));
    eventually("a sweep began giving back", || {
        ledger.give_backs.load(SeqCst) >= 1
    })
    .await;
    limiter.shutdown().await.unwrap();
    for tenant in tenants {
        assert_eq!(ledger.count(tenant, QuotaPeriod::Day, T0), 1, "{tenant}");
    }
    assert_eq!(ledger.give_backs.load(SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_quota_gives_back_the_block_and_leases_against_the_new_limit() {
    let ledger = Arc::new(FlakyLedger::default());
    let clock = ManualClock::at_unix_secs(T0);
    let limiter = LeasedQuotaLimiter::builder(ledger.clone())
        .clock(clock.clone())
        .build();
    // 1,000 a day: one request, a block of 62 leased.
    let before = quota_request("acme", 1000, QuotaPeriod::Day);
    assert!(matches!(
        limiter.acquire(&before).await.unwrap(),
        Decision::Allowed(_)
    ));
    assert_eq!(limiter.held("acme"), 61);
    // The plan goes down to 10 a day: 9 more, not the 61 held.
    let after = quota_request("acme", 10, QuotaPeriod::Day);
    let first = limiter.acquire(&after).await.unwrap();
    assert_eq!(
        first,
        Decision::Allowed(Usage {
            rate: None,
            quota: Some(QuotaStatus {
                limit: 10,
                remaining: 8,
                period_secs: 86_400,
                reset_after_secs: 86_400,
            }),
        })
    );
    assert_eq!(1 + 1 + admit_all(&limiter, &after).await, 10);
    let refused = limiter.acquire(&after).await.unwrap();
    assert_eq!(
        refused,
        Decision::QuotaExhausted {
            usage: Usage {
                rate: None,
                quota: Some(QuotaStatus {
                    limit: 10,
                    remaining: 0,
                    period_secs: 86_400,
                    reset_after_secs: 86_400,
                }),
            },
        }
    );
    assert_eq!(ledger.count("acme", QuotaPeriod::Day, T0), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_end_of_a_period_its_unused_block_goes_back_to_it() {
    let ledger = Arc::new(FlakyLedger::default());
    // One second before the day ends.
    let clock = ManualClock::at_unix_secs(T0 + 86_399);
    let limiter = LeasedQuotaLimiter::builder(ledger.clone())
        .clock(clock.clone())
        .build();
    let daily = quota_request("acme", 1000, QuotaPeriod::Day);
    assert!(matches!(
        limiter.acquire(&daily).await.unwrap(),
        Decision::Allowed(_)
    ));
    assert_eq!(ledger.count("acme", QuotaPeriod::Day, T0), 62);
    // The next day: yesterday's count becomes what was served.
    clock.advance(Duration::from_secs(1));
    assert!(matches!(
        limiter.acquire(&daily).await.unwrap(),
        Decision::Allowed(_)
    ));
    eventually("yesterday's block went back", || {
        ledger.count("acme", QuotaPeriod::Day, T0) == 1
    })
    .await;
    assert_eq!(ledger.count("acme", QuotaPeriod::Day, T0 + 86_400), 62);
    // The plan moves to a monthly quota mid-month: the day's block goes back to the day.
    let monthly = quota_request("acme", 1000, QuotaPeriod::Month);
    assert!(matches!(
        limiter.acquire(&monthly).await.unwrap(),
        Decision::Allowed(_)
    ));
    eventually("the day's block went back", || {
        ledger.count("acme", QuotaPeriod::Day, T0 + 86_400) == 1
    })
    .await;
    assert_eq!(ledger.count("acme", QuotaPeriod::Month, T0), 62);
}

/// Blocks go back 16 at a time: a shutdown over 40 tenants whose ledger never answers a
/// give-back takes three ledger timeouts, not forty; the blocks stay counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_over_many_tenants_on_a_hung_ledger_takes_a_few_timeouts() {
    let ledger = Arc::new(FlakyLedger::default());
    let limiter = LeasedQuotaLimiter::builder(ledger.clone())
        .clock(ManualClock::at_unix_secs(T0))
        .ledger_timeout(Duration::from_millis(200))
        .build();
    let tenants: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    for tenant in &tenants {
        let request = quota_request(tenant, 1000, QuotaPeriod::Day);
        assert!(matches!(
            limiter.acquire(&request).await.unwrap(),
            Decision::Allowed(_)
        ));
    }
    ledger.give_back_delay_ms.store(60_000, SeqCst);
    let started = std::time::Instant::now();
    let stopped = limiter.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stopped.unwrap_err().to_string(), "backend timed out");
    assert_eq!(ledger.give_backs.load(SeqCst), 40);
    for tenant in &tenants {
        assert_eq!(ledger.count(tenant, QuotaPeriod::Day, T0), 62, "{tenant}");
    }
}
