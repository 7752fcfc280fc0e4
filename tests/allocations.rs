//! Heap allocations of one authenticated request through the layer, and the memory the
//! in-memory store holds per key, counted with dhat's allocator. Counts, not times.
#![allow(clippy::unwrap_used)]

// The integration tests' fixtures (`tests/it` is their binary).
#[path = "it/common.rs"]
mod common;

use std::convert::Infallible;

use common::*;
use http::{Request, Response};
use keygate::limit::{
    Decision, LimitRequest, Limiter, ManualClock, MemoryLimiter, Quota, QuotaPeriod, RateLimit,
};
use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
use keygate::{AuthLayer, Verifier};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

async fn ok(_req: Request<String>) -> Result<Response<String>, Infallible> {
    Ok(Response::new(String::new()))
}

/// Drives one request through `service`, readiness first, to its response.
fn respond<S>(rt: &tokio::runtime::Runtime, service: &mut S, req: Request<String>) -> S::Response
where
    S: Service<Request<String>>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async { service.ready().await.unwrap().call(req).await.unwrap() })
}

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = dhat::HeapStats::get().total_blocks;
    f();
    dhat::HeapStats::get().total_blocks - before
}

// One test function: dhat allows one profiler per process.
#[test]
fn allocation_counts() {
    let _profiler = dhat::Profiler::builder().testing().build();
    // With the `metrics` feature, a Prometheus recorder installed as an application installs
    // it, before anything is built: counting on the request path must not allocate either.
    #[cfg(feature = "metrics")]
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let fixture = Fixture::new();
    let key = fixture.reader.expose_secret().to_owned();
    let mut plain = tower::service_fn(ok);
    let mut guarded = AuthLayer::new(Verifier::builder(fixture.store.clone()).build())
        .layer(tower::service_fn(ok));
    // A request as a server hands it over: its extensions already hold connection data.
    let request = || {
        let mut req = Request::get("/")
            .header("x-api-key", &key)
            .body(String::new())
            .unwrap();
        req.extensions_mut()
            .insert(std::net::SocketAddr::from(([127, 0, 0, 1], 4000)));
        req
    };
    // Warm up lazily initialised statics.
    respond(&rt, &mut guarded, request());

    let baseline = allocations_during(|| {
        respond(&rt, &mut plain, request());
    });
    let with_keygate = allocations_during(|| {
        let response = respond(&rt, &mut guarded, request());
        assert_eq!(response.status(), 200);
    });
    let keygate_allocations = with_keygate - baseline;
    println!(
        "allocations per authenticated request: {keygate_allocations} (baseline request {baseline})"
    );
    // The Tenant goes into the request extensions, which boxes it: one allocation, in `http`.
    assert!(
        keygate_allocations <= 2,
        "{keygate_allocations} allocations per request"
    );

    // The full pipeline: the tenant's plan, its rate limit and quota, and the five limit headers.
    let plan = TenantEntitlements::active(Plan {
        name: "pro".into(),
        rate_limit: Some(RateLimit::per_second(1_000_000)),
        quota: Some(Quota {
            limit: 1_000_000,
            period: QuotaPeriod::Month,
        }),
        ..Plan::default()
    });
    let verifier = Verifier::builder(fixture.store.clone())
        .entitlements(MemoryEntitlements::with_default(plan))
        .build();
    let mut limited = AuthLayer::new(verifier).layer(tower::service_fn(ok));
    let mut call_limited = || {
        let response = respond(&rt, &mut limited, request());
        assert_eq!(response.status(), 200);
        assert!(response.headers().contains_key("ratelimit"));
    };
    call_limited();
    let with_limits = allocations_during(call_limited) - baseline;
    println!("allocations per request with rate limit, quota and limit headers: {with_limits}");
    // The tenant (one, as above), one buffer shared by the three header values that change
    // per request (the plan's two constant ones are rendered once and reused), and the
    // response's header map, which the bare handler left empty (two blocks, in `http`).
    assert!(with_limits <= 4, "{with_limits} allocations per request");

    // Memory held per key by the in-memory store.
    let format = keygate::key::KeyFormat::default();
    let keys: Vec<_> = (0..10_000)
        .map(|_| format.generate(keygate::key::Environment::Live))
        .collect();
    let held = |metadata: bool| {
        let store = keygate::store::MemoryStore::new();
        let before = dhat::HeapStats::get().curr_bytes;
        for (i, key) in keys.iter().enumerate() {
            let mut r = record(
                key,
                &format!("key_{i:08}"),
                "tenant_0001",
                &["read", "write"],
            );
            if !metadata {
                r.metadata.clear();
            }
            store.put(r);
        }
        let per_key = (dhat::HeapStats::get().curr_bytes - before) / keys.len();
        drop(store);
        per_key
    };
    let (bare, with_metadata) = (held(false), held(true));
    println!(
        "bytes held per key in MemoryStore (10k keys, 2 scopes): {bare}; with one metadata entry: {with_metadata}"
    );
    assert!(bare < 1024, "{bare} bytes per key");
    assert!(with_metadata < 2048, "{with_metadata} bytes per key");

    // The same through the key cache, on a hit: no allocation of the cache's own.
    let cached = keygate::cache::CachedStore::new(fixture.store.clone());
    let mut through_cache =
        AuthLayer::new(Verifier::builder(cached).build()).layer(tower::service_fn(ok));
    // The first request fills the cache: a store query, bounded by a timer.
    let timed = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    respond(&timed, &mut through_cache, request());
    // The cache's first use starts its clock thread, whose start-up allocations must not land
    // in the count below (dhat counts every thread's).
    std::thread::sleep(std::time::Duration::from_millis(200));
    let with_cache = allocations_during(|| {
        let response = respond(&rt, &mut through_cache, request());
        assert_eq!(response.status(), 200);
    }) - baseline;
    println!("allocations per authenticated request through the key cache (hit): {with_cache}");
    assert_eq!(
        with_cache, keygate_allocations,
        "a cache hit allocates nothing more"
    );
    // ... and the recorder did count it.
    #[cfg(feature = "metrics")]
    {
        let text = prometheus.render();
        let hit = r#"keygate_key_cache_total{result="hit"} 1"#;
        assert!(text.lines().any(|l| l == hit), "{hit} not in\n{text}");
    }

    // Memory held by the key cache's record of unknown keys after 100,000 distinct unknown
    // keys: bounded by its capacity.
    let capacity = keygate::cache::DEFAULT_UNKNOWN_CAPACITY;
    let before = dhat::HeapStats::get().curr_bytes;
    let cache = keygate::cache::CachedStore::builder(keygate::store::MemoryStore::new())
        .no_miss_budget()
        .build();
    let hasher = keygate::hash::KeyHasher::sha256();
    timed.block_on(async {
        use keygate::store::KeyStore;
        for i in 0..100_000u32 {
            let digest = hasher.hash(&format!("sk_live_unknown_{i}"));
            assert!(cache.find(&digest).await.unwrap().is_none());
        }
    });
    let held = dhat::HeapStats::get().curr_bytes - before;
    println!(
        "bytes held by the key cache after 100,000 unknown keys: {held} ({} remembered, {} bytes each)",
        cache.unknown_len(),
        held / cache.unknown_len().max(1)
    );
    assert!(cache.unknown_len() <= capacity);
    assert!(
        held <= capacity * keygate::cache::UNKNOWN_ENTRY_BYTES,
        "{held} bytes for at most {capacity} unknown keys"
    );

    memory_limiter_gives_back_idle_state();
}

/// `MemoryLimiter` after 300,000 one-off keys of one tenant, and after 300,000 one-off tenants:
/// once their windows have replenished (and their quota's day ended), further requests evict
/// them, and the heap returns to within 10% of where it started.
fn memory_limiter_gives_back_idle_state() {
    const N: usize = 300_000;
    let clock = ManualClock::at_unix_secs(1_700_000_000);
    let limiter = MemoryLimiter::with_clock(clock.clone());
    let allowed = |r: &LimitRequest<'_>| {
        assert!(matches!(
            limiter.acquire_now(r),
            Some(Ok(Decision::Allowed(_)))
        ))
    };
    // The tenant that keeps sending requests, in its steady state before the start.
    let live = LimitRequest {
        tenant_id: "live",
        key_id: "live_key",
        tenant_rate: Some(RateLimit::per_second(1_000_000)),
        key_rate: Some(RateLimit::per_second(1_000_000)),
        quota: Some(Quota {
            limit: u64::MAX,
            period: QuotaPeriod::Month,
        }),
        cost: 1,
    };
    allowed(&live);
    let heap = || dhat::HeapStats::get().curr_bytes;
    let start = heap();

    // 300,000 keys of one tenant, each used once; then that tenant's one busy key.
    let ids: Vec<String> = (0..N).map(|i| format!("id_{i:07}")).collect();
    let ids_bytes = heap() - start;
    let one_off_key = |key_id| LimitRequest {
        tenant_id: "many_keys",
        key_id,
        tenant_rate: None,
        key_rate: Some(RateLimit::per_minute(10)),
        quota: None,
        cost: 1,
    };
    for id in &ids {
        allowed(&one_off_key(id));
    }
    let grown = heap().saturating_sub(start + ids_bytes);
    clock.advance(std::time::Duration::from_secs(60));
    let mut checks = 0;
    // The tenant's busy key: soon refused by its own rate limit (the clock stands still), which
    // does not matter here; every check, admitted or not, takes part in the eviction.
    while heap().saturating_sub(start + ids_bytes) > grown / 100 && checks < 2 * N {
        limiter.acquire_now(&one_off_key("busy_key"));
        checks += 1;
    }
    let left = heap().saturating_sub(start + ids_bytes);
    println!(
        "MemoryLimiter, {N} one-off keys of one tenant: {grown} bytes; {left} left after {checks} checks of its busy key"
    );
    assert!(
        left <= grown / 10,
        "{left} bytes left of {grown} after {checks} checks"
    );

    // 300,000 tenants, each with a rate limit and a daily quota, used once.
    let start = heap() - ids_bytes;
    let one_off_tenant = |tenant_id| LimitRequest {
        tenant_id,
        key_id: "key",
        tenant_rate: Some(RateLimit::per_minute(10)),
        key_rate: None,
        quota: Some(Quota {
            limit: 1_000,
            period: QuotaPeriod::Day,
        }),
        cost: 1,
    };
    for id in &ids {
        allowed(&one_off_tenant(id));
    }
    let grown = heap().saturating_sub(start + ids_bytes);
    // The next day: every quota counts a period that has ended.
    clock.advance(std::time::Duration::from_secs(86_400));
    let mut checks = 0;
    while heap().saturating_sub(start + ids_bytes) > grown / 100 && checks < 2 * N {
        allowed(&live);
        checks += 1;
    }
    let left = heap().saturating_sub(start + ids_bytes);
    println!(
        "MemoryLimiter, {N} one-off tenants: {grown} bytes; {left} left after {checks} checks of another tenant"
    );
    assert!(
        left <= grown / 10,
        "{left} bytes left of {grown} after {checks} checks"
    );
}
