//! The shared limiters' sides of the load bench: keygate's full pipeline with the quota leased
//! from SQLite (and PostgreSQL when `KEYGATE_BENCH_POSTGRES_URL` is set, feature `postgres`),
//! and with `RedisLimiter` when `KEYGATE_BENCH_REDIS_URL` is set (feature `redis`). Each serves
//! the same request and plan as the memory-limiter side, [`super::support::pipeline_app`].

use axum::Router;
use keygate::limit::{LimitHeaders, Limiter};
use keygate::store::MemoryStore;

use super::support::pipeline_app_with;

/// The full pipeline of `pipeline_app` with `limiter` instead of the default `MemoryLimiter`.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "redis")),
    allow(dead_code)
)]
fn app_with(store: MemoryStore, limiter: impl Limiter) -> Router {
    pipeline_app_with(store, LimitHeaders::All, |verifier| {
        verifier.limiter(limiter)
    })
}

/// A leased-quota limiter on `ledger`, with blocks of at most `KEYGATE_BENCH_MAX_BLOCK` units
/// (default: the limiter's own, 1,000): a ledger call per block is the side's cost over the
/// memory limiter, so this is the lever to measure (and what a crash can lose).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn leased<L: keygate::limit::QuotaLedger>(ledger: L) -> keygate::limit::LeasedQuotaLimiter<L> {
    let builder = keygate::limit::LeasedQuotaLimiter::builder(ledger);
    match std::env::var("KEYGATE_BENCH_MAX_BLOCK") {
        Ok(n) => builder.max_block(n.parse().expect("KEYGATE_BENCH_MAX_BLOCK: a number")),
        Err(_) => builder,
    }
    .build()
}

/// The sides this machine can run: name and app. The SQLite ledger lives in `dir`.
pub(crate) fn sides(
    rt: &tokio::runtime::Runtime,
    store: MemoryStore,
    dir: &std::path::Path,
) -> Vec<(&'static str, Router)> {
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "redis")),
        allow(unused_mut)
    )]
    let mut sides = Vec::new();
    #[cfg(feature = "sqlite")]
    {
        let ledger = rt
            .block_on(keygate::store::SqliteStore::open(
                dir.join("bench-quota.db"),
            ))
            .unwrap();
        let limiter = leased(ledger);
        sides.push(("keygate-sql-quota", app_with(store.clone(), limiter)));
    }
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("KEYGATE_BENCH_POSTGRES_URL") {
        let ledger = rt
            .block_on(keygate::store::PostgresStore::connect(&url))
            .unwrap();
        let limiter = leased(ledger);
        sides.push(("keygate-pg-quota", app_with(store.clone(), limiter)));
    }
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("KEYGATE_BENCH_REDIS_URL") {
        let prefix = format!("keygate-bench:{}:", std::process::id());
        let limiter = rt
            .block_on(
                keygate::limit::RedisLimiter::builder(url)
                    .prefix(prefix)
                    .connect(),
            )
            .unwrap();
        sides.push(("keygate-redis", app_with(store.clone(), limiter)));
    }
    let _ = (rt, store, dir);
    sides
}

/// Redis round trips per request on the Redis side: `EVALSHA` calls counted by Redis
/// (`INFO commandstats`) over `requests` requests sent one after another. `None` without the
/// side.
pub(crate) fn redis_round_trips(
    sides: &[(&'static str, std::net::SocketAddr)],
    key: &str,
    requests: u32,
) -> Option<f64> {
    #[cfg(feature = "redis")]
    {
        let url = std::env::var("KEYGATE_BENCH_REDIS_URL").ok()?;
        let addr = sides.iter().find(|(name, _)| *name == "keygate-redis")?.1;
        let mut redis = redis::Client::open(url).ok()?.get_connection().ok()?;
        let mut calls = || -> u64 {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query(&mut redis)
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let before = calls();
        for _ in 0..requests {
            one_request(addr, key);
        }
        // Other clients of the same Redis count too: run this on a Redis of its own.
        Some((calls() - before) as f64 / f64::from(requests))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (sides, key, requests);
        None
    }
}

#[cfg(feature = "redis")]
fn one_request(addr: std::net::SocketAddr, key: &str) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nhost: bench\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}
