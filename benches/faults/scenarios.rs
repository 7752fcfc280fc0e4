//! The fault scenarios: load every side, begin the fault at a known time, end it, keep loading,
//! then judge each side.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keygate::cache::{CachedStore, ChangeListener};
use keygate::lifecycle::KeyManager;
use keygate::limit::RedisLimiter;
use keygate::plan::MemoryEntitlements;
use keygate::store::{MemoryStore, PostgresStore};
use keygate::{AuthLayer, Verifier};

use crate::apps::{self, serve, whoami};
use crate::load::{self, SharedPools, Tally};
use crate::process::{load_average, shell};
use crate::slow_store::SlowStore;
use crate::{env_required, env_secs, env_u64};

/// The key cache's TTL on the cached sides: short, so that during the fault the cache must
/// go back to the store for the keys it holds too, not only for the ones it never saw.
const CACHE_TTL: Duration = Duration::from_secs(3);
/// How late the slow store answers: above the verifier's store timeout (2 s) and the cache's
/// query timeout (1 s).
const SLOW_DELAY: Duration = Duration::from_secs(3);

/// Valid, revoked and unknown keys each side is loaded with (and malformed ones).
const KEYS: (usize, usize, usize) = (40, 10, 10);

/// PostgreSQL stopped and started again under load, keygate without and with the key cache.
pub(crate) async fn postgres() -> bool {
    let url = env_required("FAULTS_POSTGRES_URL");
    let (stop, start) = (
        env_required("FAULT_STOP_CMD"),
        env_required("FAULT_START_CMD"),
    );
    let store = PostgresStore::connect(&url).await.unwrap();
    let pools = seeded(KeyManager::builder(store.clone()).build(), "faults_pg").await;
    let plain = AuthLayer::new(Verifier::builder(store.clone()).build());
    let keys = CachedStore::builder(store.clone()).ttl(CACHE_TTL).build();
    let listener = ChangeListener::start(&store).await.unwrap();
    listener.subscribe(keys.clone());
    let cached = AuthLayer::new(Verifier::builder(keys).build());
    let sides = vec![
        (
            "postgres: PostgresStore, no cache (store timeout 2 s)",
            serve(whoami(&plain)).await,
        ),
        (
            "postgres-cached: CachedStore over PostgresStore (TTL 3 s, query timeout 1 s), \
             ChangeListener",
            serve(whoami(&cached)).await,
        ),
    ];
    let passed = drive(
        "PostgreSQL stopped, then started again",
        sides,
        pools,
        env_secs("FAULTS_DOWN", 5),
        shell(&stop),
        shell(&start),
    )
    .await;
    println!(
        "change listener connected at the end: {}",
        listener.is_connected()
    );
    passed
}

/// Redis stopped and started again under load, keygate with `RedisLimiter` (keys in memory).
pub(crate) async fn redis() -> bool {
    let url = env_required("FAULTS_REDIS_URL");
    let (stop, start) = (
        env_required("FAULT_STOP_CMD"),
        env_required("FAULT_START_CMD"),
    );
    let store = MemoryStore::new();
    let pools = seeded(KeyManager::builder(store.clone()).build(), "faults_redis").await;
    let limiter = RedisLimiter::builder(url)
        .prefix(format!("keygate-faults:{}:", std::process::id()))
        .connect()
        .await
        .unwrap();
    let verifier = Verifier::builder(store)
        .entitlements(MemoryEntitlements::with_default(crate::support::plan()))
        .limiter(limiter)
        .build();
    let sides = vec![(
        "redis: RedisLimiter (timeout 1 s; rate limit and quota that never refuse), keys in memory",
        serve(whoami(&AuthLayer::new(verifier))).await,
    )];
    drive(
        "Redis stopped, then started again",
        sides,
        pools,
        env_secs("FAULTS_DOWN", 5),
        shell(&stop),
        shell(&start),
    )
    .await
}

/// A store answering later than keygate waits, for a while, without and with the key cache.
pub(crate) async fn slow() -> bool {
    let url = env_required("FAULTS_POSTGRES_URL");
    let store = PostgresStore::connect(&url).await.unwrap();
    let pools = seeded(KeyManager::builder(store.clone()).build(), "faults_slow").await;
    let slow = SlowStore::new(store, SLOW_DELAY);
    let plain = AuthLayer::new(Verifier::builder(slow.clone()).build());
    let keys = CachedStore::builder(slow.clone()).ttl(CACHE_TTL).build();
    let cached = AuthLayer::new(Verifier::builder(keys).build());
    let sides = vec![
        (
            "slow: PostgresStore answering 3 s late, no cache (store timeout 2 s)",
            serve(whoami(&plain)).await,
        ),
        (
            "slow-cached: CachedStore (TTL 3 s, query timeout 1 s) over the same",
            serve(whoami(&cached)).await,
        ),
    ];
    drive(
        "the store answers 3 s late",
        sides,
        pools,
        env_secs("FAULTS_DOWN", 10),
        async { slow.set_slow(true) },
        async { slow.set_slow(false) },
    )
    .await
}

async fn seeded(manager: KeyManager, label: &str) -> SharedPools {
    let (valid, revoked, unknown) = KEYS;
    apps::seed(&manager, &apps::tenant(label), valid, revoked, unknown).await
}

/// Loads every side for `FAULTS_SECONDS`; at `FAULTS_AT` runs `begin`, `down` later `end`
/// (whose return is the fault's end); then prints each side's table and figures. Returns
/// whether every side passed.
async fn drive(
    fault: &str,
    sides: Vec<(&str, SocketAddr)>,
    pools: SharedPools,
    down: Duration,
    begin: impl Future<Output = ()>,
    end: impl Future<Output = ()>,
) -> bool {
    let seconds = env_u64("FAULTS_SECONDS", 40);
    let at = env_secs("FAULTS_AT", 10);
    let recovery = env_secs("FAULTS_RECOVERY", 5);
    let (rate, clients) = (env_u64("FAULTS_RATE", 300), env_u64("FAULTS_CLIENTS", 6));
    let load_before = load_average();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut loads = Vec::new();
    for (_, addr) in &sides {
        let tally = Arc::new(Tally::new(start, seconds));
        let tasks = load::spawn(
            *addr,
            pools.clone(),
            tally.clone(),
            rate,
            clients,
            stop.clone(),
        );
        loads.push((tally, tasks));
    }
    let ms = || start.elapsed().as_millis() as u64;
    tokio::time::sleep_until((start + at).into()).await;
    let began = ms();
    begin.await;
    tokio::time::sleep_until((start + at + down).into()).await;
    end.await;
    let ended = loads
        .iter()
        .map(|(tally, _)| tally.fault_ended())
        .min()
        .unwrap();
    tokio::time::sleep_until((start + Duration::from_secs(seconds)).into()).await;
    stop.store(true, Ordering::SeqCst);
    let mut passed = true;
    println!(
        "fault: {fault}; {seconds} s of load, {rate} requests/s and {clients} clients per side; \
         load average before {load_before}, after {}",
        load_average()
    );
    for ((side, _), (tally, mut tasks)) in sides.iter().zip(loads) {
        while tasks.join_next().await.is_some() {}
        println!("\n== {side} ==");
        print!("{}", tally.table(seconds));
        let name = side.split(':').next().unwrap();
        passed &= tally.report(name, Some((began, ended)), recovery);
    }
    passed
}
