//! One request through an axum router in process (the `layer/*` apps of `benches/verify.rs`),
//! timed side by side: each round times a short batch of every side in turn, so that the
//! machine's speed, which on a shared VM drifts by tens of percent within a minute, is the same
//! for all sides of a round. Each side's figure is the median over rounds of its time against
//! no auth's time in the same round, and keygate's two sides are also given against the floor
//! each is measured against (benches/README.md, "Two more floors"). Unlike the callgrind counts
//! of `scripts/instructions.sh`, this runs the hardware's own SHA-256 instructions and caches.
//!
//! Usage: `cargo bench --bench interleaved` (env: `INTERLEAVED_ROUNDS`, default 400;
//! `INTERLEAVED_BATCH`, requests per side and round, default 500; `INTERLEAVED_BREAKDOWN=1`
//! for five more sides: three that split keygate's full pipeline (the plan looked up but no
//! limits in it, the limits without headers, the `X-RateLimit-*` headers only), the checked
//! floor of the full pipeline with keygate's header code in place of its own, and the checked
//! floor with keygate's verifier in place of its checks, each measured against its floor
//! and the last also against keygate's authentication: keygate's header code, verifier and
//! layer alone, in one binary), best pinned to one core:
//! `taskset -c 0 cargo bench --bench interleaved`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use axum::Router;
use keygate::limit::LimitHeaders;
use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
use keygate::scope::Scope;
use keygate::store::MemoryStore;
use keygate::{AuthLayer, Verifier};

mod support;
use support::{auth_app, hello_app, pipeline_app, quartiles, request_ok, store_and_floor_with};

/// The sides, in the order each round runs them; keygate's two each follow their floors.
const SIDES: [&str; 7] = [
    "no_auth",
    "floor",
    "floor_checked",
    "auth",
    "floor_limits",
    "floor_limits_checked",
    "pipeline",
];

/// With `INTERLEAVED_BREAKDOWN=1`, added to every round: keygate's full pipeline in parts,
/// each a step from `auth` towards `pipeline`, the checked floor of the full pipeline with
/// keygate's header code, and the checked floor with keygate's verifier.
const BREAKDOWN: [&str; 5] = [
    "plan_no_limits",
    "limits_no_headers",
    "x_headers_only",
    "floor_keygate_headers",
    "floor_keygate_verifier",
];

/// With `INTERLEAVED_BREAKDOWN=1`: the floors with a part of keygate in them, against the
/// floor each differs from by that part, and keygate's authentication against the floor that
/// runs its verifier (what is left is its layer).
const SWAPPED: [(&str, &str); 3] = [
    ("floor_keygate_headers", "floor_limits_checked"),
    ("floor_keygate_verifier", "floor_checked"),
    ("auth", "floor_keygate_verifier"),
];

/// keygate's sides and the floor each is measured against.
const AGAINST_FLOOR: [(&str, &str); 3] = [
    ("auth", "floor_checked"),
    ("pipeline", "floor_limits"),
    ("pipeline", "floor_limits_checked"),
];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; this bench takes no filter.
    let rounds = env_or("INTERLEAVED_ROUNDS", 400).max(1);
    let batch = env_or("INTERLEAVED_BATCH", 500).max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (store, floors, key) = store_and_floor_with(100_000, true);
    let mut sides: Vec<&str> = SIDES.to_vec();
    let mut apps: Vec<Router> = vec![
        hello_app(),
        floors.app(),
        floors.checked_app(),
        auth_app(store.clone()),
        floors.limits_app(),
        floors.checked_limits_app(),
        pipeline_app(store.clone(), LimitHeaders::All),
    ];
    let breakdown = std::env::var("INTERLEAVED_BREAKDOWN").as_deref() == Ok("1");
    if breakdown {
        sides.extend(BREAKDOWN);
        apps.extend([
            plan_without_limits_app(store.clone()),
            pipeline_app(store.clone(), LimitHeaders::None),
            pipeline_app(store.clone(), LimitHeaders::XRateLimit),
            floors.checked_limits_app_with_keygate_headers(),
            floors.checked_app_with_keygate_verifier(store),
        ]);
    }
    let time_batch = |app: &mut Router, n: usize| -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(request_ok(&rt, app, &key));
        }
        start.elapsed()
    };
    // Warm up every side (caches, allocator, the limiter's and header caches' first entries).
    for app in &mut apps {
        time_batch(app, batch * 4);
    }
    // times[side][round], in ns per request.
    let mut times = vec![Vec::with_capacity(rounds); sides.len()];
    for round in 0..rounds {
        // Each round starts at another side, so that no side always follows the same one.
        for i in 0..sides.len() {
            let side = (round + i) % sides.len();
            let elapsed = time_batch(&mut apps[side], batch);
            times[side].push(elapsed.as_nanos() as f64 / batch as f64);
        }
    }
    let index = |name: &str| sides.iter().position(|s| *s == name).unwrap();
    // Median and quartiles of side `a`'s time over side `b`'s, round by round.
    let ratio = |a: usize, b: usize| -> [f64; 3] {
        quartiles((0..rounds).map(|i| times[a][i] / times[b][i]).collect())
    };
    let median = |side: usize| quartiles(times[side].clone())[1];
    println!("{rounds} rounds of {batch} requests per side, 100,000 keys in memory");
    let no_auth = index("no_auth");
    for (side, name) in sides.iter().enumerate() {
        let [q1, m, q3] = ratio(side, no_auth);
        let extra = median(side) - median(no_auth);
        println!(
            "{name}: {m:.3}x the time of no auth (quartiles {q1:.3}-{q3:.3}); median {:.0} ns per request, {extra:+.0} ns over no auth's median",
            median(side)
        );
    }
    let swapped = if breakdown { &SWAPPED[..] } else { &[] };
    for &(side, floor) in AGAINST_FLOOR.iter().chain(swapped) {
        let [q1, m, q3] = ratio(index(side), index(floor));
        println!("{side} against {floor}: {m:.3}x its time (quartiles {q1:.3}-{q3:.3})");
    }
}

/// keygate's authentication with the tenant's plan looked up, but a plan without limits: no
/// limiter call, no limit headers (what the plan's lookup adds to `auth`).
fn plan_without_limits_app(store: MemoryStore) -> Router {
    let no_limits = TenantEntitlements::active(Plan {
        name: "no limits".into(),
        ..Plan::default()
    });
    let verifier = Verifier::builder(store)
        .entitlements(MemoryEntitlements::with_default(no_limits))
        .build();
    hello_app().layer(
        AuthLayer::new(verifier)
            .require_scope(Scope::READ)
            .inner_body(),
    )
}
