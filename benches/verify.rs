//! Criterion benchmarks of keygate's request path. Run: `cargo bench --bench verify`.
//!
//! Ids are stable: `verify/memory/<keys>`, `stage/*`, `reject/*`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::Request;
use keygate::Verifier;
use keygate::hash::KeyHasher;
use keygate::key::{ApiKey, Environment, KeyFormat};
use keygate::scope::{Scope, Scopes};
use keygate::store::{KeyRecord, KeyStore, MemoryStore};
use keygate::verify::RequestHead;

fn record(key: &ApiKey, i: usize) -> KeyRecord {
    KeyRecord {
        id: format!("key_{i}"),
        tenant_id: format!("tenant_{}", i % 1000),
        name: "bench".into(),
        digest: KeyHasher::sha256().hash(key.expose_secret()),
        prefix: key.prefix().into(),
        last4: key.last4().into(),
        scopes: Scopes::from_static(&["read", "write"]),
        environment: key.environment(),
        created_at: time::OffsetDateTime::now_utc(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        metadata: Default::default(),
        restrictions: Default::default(),
    }
}

/// A store with `n` keys; returns it and one of its keys.
fn store_with(n: usize) -> (MemoryStore, ApiKey) {
    let format = KeyFormat::default();
    let store = MemoryStore::new();
    store.reserve(n);
    let mut probe = None;
    for i in 0..n {
        let key = format.generate(Environment::Live);
        store.put(record(&key, i));
        if i == n / 2 {
            probe = Some(key);
        }
    }
    (store, probe.unwrap())
}

fn bench_verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("verify");
    for n in [1_000usize, 100_000, 1_000_000] {
        let (store, key) = store_with(n);
        let verifier = Verifier::builder(store).build();
        let req = Request::get("/v1/documents")
            .header("x-api-key", key.expose_secret())
            .body(())
            .unwrap();
        let read = Scope::READ;
        // What the layer does for a store that answers at once: no future, no runtime.
        group.bench_with_input(BenchmarkId::new("memory", n), &n, |b, _| {
            b.iter(|| {
                let head = RequestHead::from(black_box(&req));
                black_box(verifier.check_now(&head, Some(&read)).unwrap().unwrap())
            })
        });
        // The async entry point, driven by a current-thread runtime (includes `block_on`).
        if n == 100_000 {
            group.bench_function("memory_async/100000", |b| {
                b.iter(|| {
                    let head = RequestHead::from(black_box(&req));
                    black_box(rt.block_on(verifier.verify(&head, Some(&read))).unwrap())
                })
            });
        }
    }
    group.finish();
}

fn bench_stages(c: &mut Criterion) {
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
    group.bench_function("lookup_100000", |b| {
        b.iter(|| {
            store
                .find_now(black_box(&digest))
                .unwrap()
                .unwrap()
                .unwrap()
        })
    });
    let scopes = Scopes::from_static(&["read", "write"]);
    group.bench_function("scope_check", |b| {
        b.iter(|| black_box(&scopes).grants(black_box(&Scope::READ)))
    });
    group.finish();

    let mut bad = key.expose_secret().to_owned();
    bad.pop();
    bad.push('x');
    let mut reject = c.benchmark_group("reject");
    reject.bench_function("malformed", |b| {
        b.iter(|| format.parse(black_box(&bad)).is_err())
    });
    reject.finish();
}

criterion_group!(benches, bench_verify, bench_stages);
criterion_main!(benches);
