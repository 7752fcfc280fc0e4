//! The soak: keygate over PostgreSQL with the key cache, as the quickstart runs it, loaded for
//! minutes while a manager issues, rotates and revokes keys all along; this process's memory
//! and file descriptors sampled every 10 s; every key revoked during the run tried again at the
//! end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::HeaderValue;
use keygate::cache::{CachedStore, ChangeListener};
use keygate::key::{Environment, KeyFormat};
use keygate::last_used::LastUsedTracker;
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::plan::MemoryEntitlements;
use keygate::store::PostgresStore;
use keygate::{AuthLayer, Verifier};

use crate::apps::{self, serve, whoami};
use crate::load::{self, ACTIVE, Pools, Probe, REVOKED, REVOKING, Rng, SharedPools, Tally};
use crate::process::{load_average, open_fds, rss_kib};
use crate::{env_required, env_u64};

const TENANTS: usize = 10;
/// The manager keeps between these many active keys, over all tenants.
const ACTIVE_KEYS: (usize, usize) = (60, 140);
/// One change (issue, rotate or revoke) this often.
const CHANGE_EVERY: Duration = Duration::from_millis(200);
/// Recently revoked keys the load keeps sending.
const REVOKED_WINDOW: usize = 200;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The sample memory and descriptors are compared against: after the first minute.
const WARM_UP: Duration = Duration::from_secs(60);
/// How far the last sample may be from the warm-up one.
const FLAT: f64 = 0.10;
/// The pace of the final check of every revoked key: 500 a second.
const FINAL_CHECK_EVERY: Duration = Duration::from_millis(2);
/// The key cache's capacity: below the keys the load uses in the first minute, so that the
/// cache is full before the warm-up sample. A cache filling up to its capacity is its
/// documented bound, not what the soak looks for; the default (100,000) would take hours.
const CACHE_CAPACITY: usize = 256;

/// The manager's changes so far.
#[derive(Default)]
struct Changes {
    issued: AtomicU64,
    rotated: AtomicU64,
    revoked: AtomicU64,
    failed: AtomicU64,
}

struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: u64,
}

pub(crate) async fn run() -> bool {
    let url = env_required("FAULTS_POSTGRES_URL");
    let minutes = env_u64("SOAK_MINUTES", 10);
    let (rate, clients) = (env_u64("FAULTS_RATE", 300), env_u64("FAULTS_CLIENTS", 6));
    let length = Duration::from_secs(60 * minutes);

    let store = PostgresStore::connect(&url).await.unwrap();
    let keys = CachedStore::builder(store.clone())
        .capacity(CACHE_CAPACITY)
        .build();
    let listener = ChangeListener::start(&store).await.unwrap();
    listener.subscribe(keys.clone());
    let verifier = Verifier::builder(keys.clone())
        .entitlements(MemoryEntitlements::with_default(crate::support::plan()))
        .build();
    let tracker = LastUsedTracker::new();
    let flusher = tracker.spawn_flusher(store.clone(), Duration::from_secs(10));
    let addr = serve(whoami(&AuthLayer::new(verifier).track_last_used(tracker))).await;
    // Through the cache: every change drops what it changed from the cache before it returns.
    let manager = KeyManager::builder(keys.clone()).build();
    let tenants: Vec<String> = (0..TENANTS)
        .map(|i| apps::tenant(&format!("soak{i}")))
        .collect();

    let format = KeyFormat::default();
    let pools: SharedPools = Arc::new(RwLock::new(Pools {
        unknown: (0..20)
            .map(|_| Probe::unknown(&format.generate(Environment::Live)))
            .collect(),
        malformed: load::malformed_from(&format.generate(Environment::Live)),
        ..Pools::default()
    }));
    let changes = Arc::new(Changes::default());
    let mut owned = Vec::new();
    for i in 0..(ACTIVE_KEYS.0 + ACTIVE_KEYS.1) / 2 {
        issue(
            &manager,
            &tenants,
            i % TENANTS,
            &pools,
            &mut owned,
            &changes,
        )
        .await;
    }

    println!(
        "soak: {minutes} min, {rate} requests/s over {clients} clients, one change every {} ms \
         over {TENANTS} tenants; load average at the start {}",
        CHANGE_EVERY.as_millis(),
        load_average()
    );
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::new(start, length.as_secs()));
    let mut load = load::spawn(
        addr,
        pools.clone(),
        tally.clone(),
        rate,
        clients,
        stop.clone(),
    );
    // Room for every key the run can revoke, written now: keeping them adds no memory later.
    let revoked_all = RevokedKeys::with_room(length.as_millis() / CHANGE_EVERY.as_millis() + 16);
    let revoked_all = {
        let (manager, tenants, pools, changes, stop) = (
            manager.clone(),
            tenants.clone(),
            pools.clone(),
            changes.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut revoked_all = revoked_all;
            change_keys(
                &manager,
                &tenants,
                &pools,
                owned,
                &changes,
                &stop,
                &mut revoked_all,
            )
            .await;
            revoked_all
        })
    };

    println!("     t |  RSS KiB | fds | answers (200/401/503/other/none) | changes | cached keys");
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval_at((start + SAMPLE_EVERY).into(), SAMPLE_EVERY);
    while start.elapsed() < length {
        ticks.tick().await;
        let sample = Sample {
            at: start.elapsed(),
            rss_kib: rss_kib(),
            fds: open_fds(),
        };
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        println!(
            "{:>5.0}s | {:>8} | {:>3} | {:?} | {}/{}/{} (failed {}) | {}",
            sample.at.as_secs_f64(),
            sample.rss_kib,
            sample.fds,
            tally.totals(),
            get(&changes.issued),
            get(&changes.rotated),
            get(&changes.revoked),
            get(&changes.failed),
            keys.len()
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::SeqCst);
    while load.join_next().await.is_some() {}
    let revoked_all = revoked_all.await.unwrap();
    println!("load average at the end {}", load_average());

    let mut passed = tally.report("soak", None, Duration::ZERO);
    passed &= flat(&samples);
    passed &= all_refused(addr, revoked_all).await;
    println!(
        "changes: issued {}, rotated {}, revoked {}, failed {}",
        changes.issued.load(Ordering::SeqCst),
        changes.rotated.load(Ordering::SeqCst),
        changes.revoked.load(Ordering::SeqCst),
        changes.failed.load(Ordering::SeqCst)
    );
    listener.stop();
    flusher.shutdown().await.unwrap();
    passed
}

/// A stored key the manager owns: its tenant and the probe the load sends.
struct Owned {
    tenant: usize,
    probe: Arc<Probe>,
}

/// Every key revoked during the run, in room set aside (and written) before it.
struct RevokedKeys {
    text: Vec<u8>,
    keys: usize,
}

/// The length of the default format's keys.
const KEY_LEN: usize = 80;

impl RevokedKeys {
    fn with_room(keys: u128) -> RevokedKeys {
        RevokedKeys {
            // Not zeros: a zeroed allocation may be pages the process has not touched yet.
            text: vec![b'-'; keys as usize * KEY_LEN],
            keys: 0,
        }
    }

    fn push(&mut self, key: &HeaderValue) {
        let at = self.keys * KEY_LEN;
        self.text[at..at + KEY_LEN].copy_from_slice(key.as_bytes());
        self.keys += 1;
    }

    fn probes(&self) -> impl Iterator<Item = Arc<Probe>> + '_ {
        self.text[..self.keys * KEY_LEN]
            .chunks(KEY_LEN)
            .map(|key| Probe::stored_revoked(std::str::from_utf8(key).unwrap()))
    }
}

/// Issues, rotates and revokes keys until `stop`; keeps every key it revoked (rotated keys
/// included: a rotation without grace revokes the old key) in `revoked_all`.
async fn change_keys(
    manager: &KeyManager,
    tenants: &[String],
    pools: &SharedPools,
    mut owned: Vec<Owned>,
    changes: &Changes,
    stop: &AtomicBool,
    revoked_all: &mut RevokedKeys,
) {
    let mut rng = Rng::new();
    let mut ticks = tokio::time::interval(CHANGE_EVERY);
    while !stop.load(Ordering::SeqCst) {
        ticks.tick().await;
        let action = match owned.len() {
            n if n <= ACTIVE_KEYS.0 => 0,
            n if n >= ACTIVE_KEYS.1 => 2,
            _ => rng.below(3),
        };
        if action == 0 {
            let tenant = rng.below(TENANTS);
            issue(manager, tenants, tenant, pools, &mut owned, changes).await;
            continue;
        }
        let old = owned.swap_remove(rng.below(owned.len()));
        // From here on a 200 or a 401 are both right, until the call returns.
        old.probe.state.store(REVOKING, Ordering::SeqCst);
        let (tenant, key_id) = (&tenants[old.tenant], &*old.probe.key_id);
        let done = if action == 1 {
            match manager.rotate("soak", tenant, key_id, None).await {
                Ok(new) => {
                    let probe = Probe::stored(&new.key, &new.info.id, ACTIVE);
                    pools.write().unwrap().active.push(probe.clone());
                    owned.push(Owned {
                        tenant: old.tenant,
                        probe,
                    });
                    changes.rotated.fetch_add(1, Ordering::SeqCst);
                    true
                }
                Err(_) => false,
            }
        } else {
            let revoked = manager.revoke("soak", tenant, key_id).await.is_ok();
            if revoked {
                changes.revoked.fetch_add(1, Ordering::SeqCst);
            }
            revoked
        };
        let mut pools = pools.write().unwrap();
        pools.active.retain(|p| !Arc::ptr_eq(p, &old.probe));
        if done {
            old.probe.state.store(REVOKED, Ordering::SeqCst);
            if pools.revoked.len() == REVOKED_WINDOW {
                pools.revoked.pop_front();
            }
            revoked_all.push(&old.probe.header);
            pools.revoked.push_back(old.probe);
        } else {
            // Committed or not, no one can say: it stays "being revoked" and leaves the load.
            changes.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn issue(
    manager: &KeyManager,
    tenants: &[String],
    tenant: usize,
    pools: &SharedPools,
    owned: &mut Vec<Owned>,
    changes: &Changes,
) {
    let new = NewKey::new("soak", ["read"]);
    match manager.issue("soak", &tenants[tenant], new).await {
        Ok(issued) => {
            let probe = Probe::stored(&issued.key, &issued.info.id, ACTIVE);
            pools.write().unwrap().active.push(probe.clone());
            owned.push(Owned { tenant, probe });
            changes.issued.fetch_add(1, Ordering::SeqCst);
        }
        Err(_) => {
            changes.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Memory and descriptors at the end within [`FLAT`] of the sample after the warm-up.
fn flat(samples: &[Sample]) -> bool {
    let warm_up = WARM_UP.min(samples.last().map_or(WARM_UP, |s| s.at / 2));
    let (Some(base), Some(end)) = (samples.iter().find(|s| s.at >= warm_up), samples.last()) else {
        println!("soak: FAIL: no samples");
        return false;
    };
    let change = |from: u64, to: u64| (to as f64 - from as f64) / from as f64;
    let (rss, fds) = (change(base.rss_kib, end.rss_kib), change(base.fds, end.fds));
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap();
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap();
    println!(
        "soak: RSS {} KiB at {:.0} s, {} KiB at the end ({:+.1} %, max {max_rss} KiB); open fds \
         {} then {} ({:+.1} %, max {max_fds}); bound ±{:.0} %",
        base.rss_kib,
        base.at.as_secs_f64(),
        end.rss_kib,
        rss * 100.0,
        base.fds,
        end.fds,
        fds * 100.0,
        FLAT * 100.0
    );
    let passed = rss.abs() <= FLAT && fds.abs() <= FLAT;
    if !passed {
        println!("soak: FAIL: memory or descriptors not flat");
    }
    passed
}

/// Every key revoked during the soak, tried once more: each must be answered 401.
async fn all_refused(addr: std::net::SocketAddr, revoked: RevokedKeys) -> bool {
    let tally = Tally::new(Instant::now(), 3600);
    let client = load::client();
    let uri: http::Uri = format!("http://{addr}/whoami").parse().unwrap();
    // Below the key cache's miss budget (1,000 store queries a second for keys it does not
    // hold; most of these it does not): beyond it the cache answers 503 by design.
    let mut ticks = tokio::time::interval(FINAL_CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for probe in revoked.probes() {
        ticks.tick().await;
        load::send(&client, &uri, &probe, &tally).await;
    }
    let [ok, unauthorized, unavailable, other, none] = tally.totals();
    println!(
        "soak: every key revoked during the run, tried again: {} keys, 401 {unauthorized}, \
         200 {ok}, 503 {unavailable}, other {other}, no answer {none}",
        revoked.keys
    );
    let passed = tally.checks("revoked keys") && unauthorized == revoked.keys as u64;
    if !passed {
        println!("soak: FAIL: a revoked key was not refused with 401");
    }
    passed
}
