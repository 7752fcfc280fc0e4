//! Faults under load and a soak: keygate served over loopback while its backends fail, and for
//! minutes while keys are issued, rotated and revoked all along.
//!
//! Run it with `scripts/faults.sh` and `scripts/soak.sh`: they start private PostgreSQL and
//! Redis instances on ports of their own, hand this binary the commands that stop and start
//! them, and clean up. Without a scenario, as in a plain `cargo bench`, it only says how to run
//! it and exits.
//!
//! Scenarios (`faults <scenario>`):
//!
//! - `postgres`: keygate over PostgreSQL, without and with the key cache (and its change
//!   listener), both loaded at once; PostgreSQL is stopped and started again mid-run.
//! - `redis`: keygate with `RedisLimiter`; Redis is stopped and started again mid-run.
//! - `slow`: keygate over a store that answers slower than its timeouts for a while, without
//!   and with the key cache.
//! - `soak`: keygate over PostgreSQL with the key cache, loaded for `SOAK_MINUTES` (10) while a
//!   manager issues, rotates and revokes keys; memory and file descriptors sampled every 10 s.
//!
//! Every scenario loads each side with a mix of valid, revoked, unknown and malformed keys;
//! the handler echoes the admitted key's id, and every answer is checked against what the key
//! was when the request was sent (`load.rs`). The process exits non-zero when a check fails.
//!
//! Environment: `FAULTS_POSTGRES_URL`, `FAULTS_REDIS_URL` (the private instances),
//! `FAULT_STOP_CMD` and `FAULT_START_CMD` (shell commands, `postgres` and `redis`),
//! `FAULTS_SECONDS` (run length, 40), `FAULTS_AT` (when the fault begins, 10 s),
//! `FAULTS_DOWN` (how long it lasts, 5 s before the start command runs; `slow`: 10 s),
//! `FAULTS_RECOVERY` (the bound on recovery after the fault ends, 5 s), `FAULTS_RATE`
//! (requests a second per side, 300), `FAULTS_CLIENTS` (client tasks per side, 6),
//! `SOAK_MINUTES` (10), `RUST_LOG` (the log filter; logs go to stderr).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod apps;
mod load;
mod process;
mod scenarios;
mod slow_store;
mod soak;
// The plan that never refuses (`support::plan`).
#[allow(dead_code, unused_imports)]
#[path = "../support/mod.rs"]
mod support;

/// Panics anywhere in the process, counted by the panic hook; every scenario requires zero.
pub(crate) static PANICS: AtomicU64 = AtomicU64::new(0);

const USAGE: &str = "usage: faults <postgres|redis|slow|soak> (run by scripts/faults.sh and \
                     scripts/soak.sh, which start the private PostgreSQL and Redis it needs)";

/// A number from the environment, or `default`.
pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {v:?}")),
        Err(_) => default,
    }
}

/// A setting the scenario cannot run without.
pub(crate) fn env_required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("{name} is not set; run this through scripts/faults.sh or scripts/soak.sh");
        std::process::exit(2)
    })
}

/// A duration in whole seconds from the environment.
pub(crate) fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(env_u64(name, default))
}

fn main() {
    // cargo bench passes `--bench`; the scenario is the first other argument.
    let Some(scenario) = std::env::args().skip(1).find(|a| !a.starts_with('-')) else {
        println!("{USAGE}");
        return;
    };
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    // `RUST_LOG` as `target=level` directives (no regex engine in the build for it).
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| "warn,keygate=info".parse().unwrap());
    {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .with(filter)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let passed = runtime.block_on(async {
        match scenario.as_str() {
            "postgres" => scenarios::postgres().await,
            "redis" => scenarios::redis().await,
            "slow" => scenarios::slow().await,
            "soak" => soak::run().await,
            other => {
                eprintln!("unknown scenario {other:?}; {USAGE}");
                std::process::exit(2)
            }
        }
    });
    // Background tasks (listeners, flushers) end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let panics = PANICS.load(Ordering::SeqCst);
    let passed = passed && panics == 0;
    println!(
        "RESULT {scenario}: {} (panics: {panics})",
        if passed { "PASS" } else { "FAIL" }
    );
    if !passed {
        std::process::exit(1);
    }
}
