//! Revocation latency across two instances on one PostgreSQL database: 100 keys, each cached
//! by instance B, revoked through instance A's manager; the time until B refuses the key.
//!
//! Each instance has its own pool, key cache, change listener and verifier, as two service
//! processes would. Run: `KEYGATE_BENCH_POSTGRES_URL=postgres://… cargo bench --features
//! postgres --bench revocation` (without the URL it says so and exits). Prints p50, p99 and the
//! maximum, measured from the moment A's revocation returns (committed) and from the moment it
//! was called. The keys are deleted afterwards.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use http::Request;
use keygate::cache::{CachedStore, ChangeListener};
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::request::RequestHead;
use keygate::store::PostgresStore;
use keygate::{AuthError, Verifier};

struct Instance {
    keys: CachedStore<PostgresStore>,
    verifier: Verifier,
    manager: KeyManager,
    _listener: ChangeListener,
}

async fn instance(url: &str) -> (Instance, PostgresStore) {
    let store = PostgresStore::connect(url).await.unwrap();
    let keys = CachedStore::builder(store.clone())
        .ttl(Duration::from_secs(3600))
        .build();
    let listener = ChangeListener::start(&store).await.unwrap();
    listener.subscribe(keys.clone());
    let verifier = Verifier::builder(keys.clone()).build();
    let manager = KeyManager::builder(keys.clone())
        .scheme(verifier.scheme().clone())
        .max_active_keys(None)
        .build();
    let instance = Instance {
        keys,
        verifier,
        manager,
        _listener: listener,
    };
    (instance, store)
}

fn verify(verifier: &Verifier, key: &str) -> Option<Result<(), AuthError>> {
    let request = Request::get("/").header("x-api-key", key).body(()).unwrap();
    verifier
        .check_now(&RequestHead::from(&request), None)
        .map(|r| r.map(drop).map_err(|e| e.error))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let Ok(url) = std::env::var("KEYGATE_BENCH_POSTGRES_URL") else {
        println!("revocation: skipped; set KEYGATE_BENCH_POSTGRES_URL to a PostgreSQL server");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (a, store) = instance(&url).await;
        let (b, _) = instance(&url).await;
        let tenant = format!("bench_revocation_{}", std::process::id());
        let mut after_commit = Vec::new();
        let mut after_call = Vec::new();
        for i in 0..100 {
            let issued = a
                .manager
                .issue("bench", &tenant, NewKey::new(format!("k{i}"), ["read"]))
                .await
                .unwrap();
            let secret = issued.key.expose_secret().to_owned();
            let digest = keygate::hash::KeyHasher::sha256().hash(&secret);
            // B caches the key (the issue's notification may drop it once: look again).
            loop {
                if keygate::store::KeyStore::find_now(&b.keys, &digest).is_some() {
                    break;
                }
                let request = Request::get("/").header("x-api-key", &secret).body(()).unwrap();
                b.verifier.verify(&RequestHead::from(&request), None).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(matches!(verify(&b.verifier, &secret), Some(Ok(()))));
            let called = Instant::now();
            a.manager.revoke("bench", &tenant, &issued.info.id).await.unwrap();
            let committed = Instant::now();
            // Until B no longer accepts it from its cache: the change arrived.
            while let Some(Ok(())) = verify(&b.verifier, &secret) {
                tokio::task::yield_now().await;
                assert!(called.elapsed() < Duration::from_secs(10), "never refused");
            }
            let seen = Instant::now();
            after_commit.push(seen - committed);
            after_call.push(seen - called);
        }
        for (what, mut times) in [
            ("from the revocation's commit", after_commit),
            ("from the revocation's call", after_call),
        ] {
            times.sort();
            println!(
                "revocation seen by the other instance, {what}: p50 {:?}, p99 {:?}, max {:?} (100 revocations)",
                percentile(&times, 0.5),
                percentile(&times, 0.99),
                times[times.len() - 1]
            );
        }
        sqlx::query("DELETE FROM keygate_keys WHERE tenant_id = $1")
            .bind(&tenant)
            .execute(store.pool())
            .await
            .unwrap();
    });
}
