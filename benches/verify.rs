//! Criterion benchmarks of keygate's request path. Run: `cargo bench --bench verify`.
//!
//! Ids are stable: `verify/memory/<keys>` (the full verification of a valid key: format,
//! checksum, hash, lookup, constant-time compare, revocation, expiry, scope),
//! `pipeline/memory/<keys>` (that plus entitlements, tenant rate limit and monthly quota),
//! `stage/*` (each stage on its own), `reject/malformed` (a bad checksum through the verifier),
//! `verify/cached_memory/100000` (the same as `verify/memory/100000` through the key cache, on
//! a hit) and `verify/cached_postgres/100000` (through the key cache in front of PostgreSQL, on
//! a hit: needs the `postgres` feature and `KEYGATE_BENCH_POSTGRES_URL`, else it is skipped
//! with a message; its 100,000 keys are inserted under a tenant of their own and deleted after).
//!
//! `KEYGATE_BENCH_RECORDER=prometheus` (feature `metrics`) installs a Prometheus recorder before
//! anything is built, so that the figures include what counting costs.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::Request;
use keygate::Verifier;
use keygate::hash::KeyHasher;
use keygate::key::KeyFormat;
use keygate::limit::{Decision, LimitHeaders, LimitRequest, Limiter, MemoryLimiter};
use keygate::plan::{EntitlementSource, MemoryEntitlements};
use keygate::request::RequestHead;
use keygate::scope::{Scope, Scopes};
use keygate::store::{KeyRecord, KeyStore};

mod support;
use support::{
    auth_app, hello_app, pipeline_app, plan, record, request_ok, store_and_floor_with, store_with,
};
#[cfg(feature = "postgres")]
#[path = "support/cache_apps.rs"]
mod cache_apps;

/// A Prometheus recorder, once, if `KEYGATE_BENCH_RECORDER=prometheus`.
fn install_recorder() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("KEYGATE_BENCH_RECORDER").as_deref() != Ok("prometheus") {
            return;
        }
        #[cfg(feature = "metrics")]
        {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .unwrap();
            println!("metrics: a Prometheus recorder is installed");
        }
        #[cfg(not(feature = "metrics"))]
        panic!("KEYGATE_BENCH_RECORDER needs the `metrics` feature");
    });
}

fn bench_verify(c: &mut Criterion) {
    install_recorder();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for n in [1_000usize, 100_000, 1_000_000] {
        let (store, key) = store_with(n);
        let req = Request::get("/v1/documents")
            .header("x-api-key", key.expose_secret())
            .body(())
            .unwrap();
        let read = Scope::READ;
        // Authentication alone: format, hash, lookup, compare, revocation/expiry, scope.
        let auth_only = Verifier::builder(store.clone()).build();
        let mut group = c.benchmark_group("verify");
        group.bench_with_input(BenchmarkId::new("memory", n), &n, |b, _| {
            b.iter(|| {
                let head = RequestHead::from(black_box(&req));
                black_box(auth_only.check_now(&head, Some(&read)).unwrap().unwrap())
            })
        });
        // The same key through the key cache, on a hit: what the cache adds to an in-memory
        // lookup (its backing store plays no part in a hit).
        if n == 100_000 {
            let cached = keygate::cache::CachedStore::new(store.clone());
            let verifier = Verifier::builder(cached).build();
            rt.block_on(verifier.check(&RequestHead::from(&req), Some(&read)))
                .unwrap();
            group.bench_function("cached_memory/100000", |b| {
                b.iter(|| {
                    let head = RequestHead::from(black_box(&req));
                    black_box(verifier.check_now(&head, Some(&read)).unwrap().unwrap())
                })
            });
        }
        group.finish();
        // The full pipeline the layer runs for a store that answers at once (no future, no
        // runtime): authentication, entitlements, tenant rate limit and monthly quota.
        let full = Verifier::builder(store)
            .entitlements(MemoryEntitlements::with_default(plan()))
            .build();
        let mut pipeline = c.benchmark_group("pipeline");
        pipeline.bench_with_input(BenchmarkId::new("memory", n), &n, |b, _| {
            b.iter(|| {
                let head = RequestHead::from(black_box(&req));
                black_box(full.check_now(&head, Some(&read)).unwrap().unwrap())
            })
        });
        // The async entry point, driven by a current-thread runtime (includes `block_on`).
        if n == 100_000 {
            pipeline.bench_function("memory_async/100000", |b| {
                b.iter(|| {
                    let head = RequestHead::from(black_box(&req));
                    black_box(rt.block_on(full.check(&head, Some(&read))).unwrap())
                })
            });
        }
        pipeline.finish();
    }
}

fn bench_stages(c: &mut Criterion) {
    install_recorder();
    let (store, key) = store_with(100_000);
    let format = KeyFormat::default();
    let hasher = KeyHasher::sha256();
    let digest = hasher.hash(key.expose_secret());
    let mut group = c.benchmark_group("stage");
    group.bench_function("parse_checksum", |b| {
        b.iter(|| {
            format
                .parse(black_box(key.expose_secret()))
                .unwrap()
                .environment()
        })
    });
    group.bench_function("sha256", |b| {
        b.iter(|| hasher.hash(black_box(key.expose_secret())))
    });
    // Probe plus the constant-time comparison of the full digest.
    group.bench_function("lookup_compare/100000", |b| {
        b.iter(|| {
            let record = store
                .find_now(black_box(&digest))
                .unwrap()
                .unwrap()
                .unwrap();
            black_box(record.digest == *black_box(&digest))
        })
    });
    let scopes = Scopes::from_static(&["read", "write"]);
    group.bench_function("scope_check", |b| {
        b.iter(|| black_box(&scopes).grants(black_box(&Scope::READ)))
    });
    // A key with an expiry date: the clock read and both date checks, then the scope.
    let dated = KeyRecord {
        expires_at: Some(time::OffsetDateTime::now_utc() + time::Duration::days(30)),
        ..record(&key, 0)
    };
    group.bench_function("expiry_scope_check", |b| {
        b.iter(|| {
            let record = black_box(&dated);
            let now = time::OffsetDateTime::now_utc();
            !record.is_revoked_at(now)
                && !record.is_expired_at(now)
                && record.scopes.grants(black_box(&Scope::READ))
        })
    });
    let entitlements = MemoryEntitlements::with_default(plan());
    for i in 0..1000 {
        entitlements.set(&format!("tenant_{i}"), plan());
    }
    group.bench_function("entitlements", |b| {
        b.iter(|| black_box(entitlements.entitlements_now(black_box("tenant_7"))))
    });
    // Tenant rate limit + monthly quota, checked and consumed together.
    let limiter = MemoryLimiter::new();
    let plan = plan().plan;
    let request = LimitRequest {
        tenant_id: "tenant_7",
        key_id: "key_7",
        tenant_rate: plan.rate_limit,
        key_rate: None,
        quota: plan.quota,
        cost: 1,
    };
    for i in 0..1000 {
        let tenant = format!("tenant_{i}");
        limiter.acquire_now(&LimitRequest {
            tenant_id: &tenant,
            ..request
        });
    }
    group.bench_function("limits", |b| {
        b.iter(|| black_box(limiter.acquire_now(black_box(&request))))
    });
    // The same with a per-key rate limit too: the key's state is found in the tenant's.
    let with_key = LimitRequest {
        key_rate: plan.rate_limit,
        ..request
    };
    for i in 0..100 {
        let key = format!("key_{i}");
        limiter.acquire_now(&LimitRequest {
            key_id: &key,
            ..with_key
        });
    }
    group.bench_function("limits_key_rate", |b| {
        b.iter(|| black_box(limiter.acquire_now(black_box(&with_key))))
    });
    // What the limiter's one clock read costs of `limits` (a floor that counts time pays it too).
    group.bench_function("clock_read", |b| {
        b.iter(|| black_box(std::time::SystemTime::now()))
    });
    // What the request path's reference counts and locks cost each: an atomic read-modify-write
    // waits for the core's pending stores, which instruction counts do not show (each is one
    // instruction there). keygate's full pipeline makes 17 a request, its floor 9.
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    group.bench_function("atomic_add", |b| {
        b.iter(|| black_box(&count).fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    });
    group.bench_function("arc_clone_drop", |b| {
        b.iter(|| drop(black_box(count.clone())))
    });
    let lock = std::sync::RwLock::new(0_u64);
    group.bench_function("rwlock_read", |b| {
        b.iter(|| *black_box(&lock).read().unwrap_or_else(|e| e.into_inner()))
    });
    let mut headers = http::HeaderMap::new();
    let usage = match limiter.acquire_now(&request).unwrap().unwrap() {
        Decision::Allowed(usage) => usage,
        _ => unreachable!("the bench plan never refuses"),
    };
    group.bench_function("limit_headers", |b| {
        b.iter(|| {
            headers.clear();
            LimitHeaders::All.apply(black_box(&mut headers), black_box(&usage));
        })
    });
    // The floor under `limit_headers`: the same five names and values, made once as static
    // constants and only inserted, which is what `http`'s header map costs by itself. Rendered
    // here once, as the bench above does not run when a filter leaves it out.
    headers.clear();
    LimitHeaders::All.apply(&mut headers, &usage);
    let constants: Vec<(http::HeaderName, http::HeaderValue)> = headers
        .iter()
        .map(|(name, value)| {
            let text: &'static str = Box::leak(value.to_str().unwrap().into());
            (name.clone(), http::HeaderValue::from_static(text))
        })
        .collect();
    assert_eq!(constants.len(), 5);
    group.bench_function("limit_headers_constant", |b| {
        b.iter(|| {
            headers.clear();
            headers.reserve(constants.len());
            for (name, value) in black_box(&constants) {
                headers.insert(name.clone(), value.clone());
            }
        })
    });
    group.finish();

    // A malformed key through the whole verifier, refused before any store call: the costliest
    // kind, a typo in the checksum (every character valid, so the whole key is checked and its
    // CRC computed before the mismatch shows).
    let mut bad = key.expose_secret().to_owned();
    let last = bad.pop().unwrap();
    bad.push(if last == '0' { '1' } else { '0' });
    assert_eq!(
        format.parse(&bad).unwrap_err(),
        keygate::key::MalformedKey::Checksum
    );
    let verifier = Verifier::builder(store).build();
    let bad_req = Request::get("/v1/documents")
        .header("x-api-key", bad.as_str())
        .body(())
        .unwrap();
    let mut reject = c.benchmark_group("reject");
    reject.bench_function("malformed", |b| {
        b.iter(|| {
            let head = RequestHead::from(black_box(&bad_req));
            black_box(
                verifier
                    .check_now(&head, Some(&Scope::READ))
                    .unwrap()
                    .is_err(),
            )
        })
    });
    reject.bench_function("malformed_parse", |b| {
        b.iter(|| format.parse(black_box(&bad)).is_err())
    });
    reject.finish();
}

/// One request through an axum router in process (no network), with and without the layer: what
/// keygate adds to a request inside axum, allocations and boxing included.
fn bench_layer(c: &mut Criterion) {
    install_recorder();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (store, floors, key) = store_and_floor_with(100_000, true);
    let mut group = c.benchmark_group("layer");
    // Each of keygate's two sides after the hand-written floor it is measured against
    // (benches/README.md, "Two more floors").
    for (name, mut app) in [
        ("no_auth", hello_app()),
        ("floor", floors.app()),
        ("floor_checked", floors.checked_app()),
        ("auth", auth_app(store.clone())),
        ("floor_limits", floors.limits_app()),
        ("pipeline", pipeline_app(store, LimitHeaders::All)),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(request_ok(&rt, &mut app, &key)))
        });
    }
    group.finish();
}

/// `verify/cached_postgres/100000`: 100,000 keys in PostgreSQL, each looked up once through the
/// key cache, then the verification of one of them, a cache hit.
#[cfg(feature = "postgres")]
fn bench_cached_postgres(c: &mut Criterion) {
    use keygate::cache::CachedStore;
    use keygate::store::PostgresStore;
    let Ok(url) = std::env::var("KEYGATE_BENCH_POSTGRES_URL") else {
        println!(
            "verify/cached_postgres: skipped; set KEYGATE_BENCH_POSTGRES_URL to a PostgreSQL server"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = 100_000;
    let (store, tenant, key) = rt.block_on(async {
        let store = PostgresStore::connect(&url).await.unwrap();
        let tenant = cache_apps::tenant();
        let key = cache_apps::seed(&store, &tenant, n).await;
        (store, tenant, key)
    });
    // Room for every key: the cache's sharded eviction starts a little before its capacity.
    let cached = CachedStore::builder(store.clone())
        .capacity(2 * n)
        .no_miss_budget()
        .build();
    let verifier = Verifier::builder(cached.clone()).build();
    rt.block_on(async {
        // Every key through the cache once, so that it holds 100,000 records.
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT digest FROM keygate_keys WHERE tenant_id = $1")
                .bind(&tenant)
                .fetch_all(store.pool())
                .await
                .unwrap();
        for digest in rows {
            let digest = keygate::hash::KeyDigest::from_bytes(digest.try_into().unwrap());
            cached.find(&digest).await.unwrap().unwrap();
        }
    });
    assert_eq!(cached.len(), n);
    let req = Request::get("/v1/documents")
        .header("x-api-key", key.expose_secret())
        .body(())
        .unwrap();
    let read = Scope::READ;
    let mut group = c.benchmark_group("verify");
    group.bench_function(BenchmarkId::new("cached_postgres", n), |b| {
        b.iter(|| {
            let head = RequestHead::from(black_box(&req));
            black_box(verifier.check_now(&head, Some(&read)).unwrap().unwrap())
        })
    });
    group.finish();
    rt.block_on(async {
        sqlx::query("DELETE FROM keygate_keys WHERE tenant_id = $1")
            .bind(&tenant)
            .execute(store.pool())
            .await
            .unwrap();
    });
}

#[cfg(not(feature = "postgres"))]
fn bench_cached_postgres(_: &mut Criterion) {
    println!("verify/cached_postgres: skipped; it needs the postgres feature");
}

criterion_group!(
    benches,
    bench_verify,
    bench_cached_postgres,
    bench_stages,
    bench_layer
);
criterion_main!(benches);
