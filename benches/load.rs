//! End-to-end load benchmark: the same axum hello-world with no auth and with keygate's full
//! pipeline, loaded by `wrk` from a second process over loopback, in alternating A/B rounds.
//!
//! Run it with `scripts/load.sh` (installs wrk, pins the server and the load generator to
//! different cores). Environment: `LOAD_ROUNDS` (default 6), `LOAD_SECONDS` per round
//! (default 5), `LOAD_CONNECTIONS` (default 32).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use axum::{Router, routing::get};
use keygate::hash::KeyHasher;
use keygate::key::{Environment, KeyFormat};
use keygate::scope::{Scope, Scopes};
use keygate::store::{KeyRecord, MemoryStore};
use keygate::{AuthLayer, Verifier};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn keygate_app(store: MemoryStore) -> Router {
    let auth = AuthLayer::new(Verifier::builder(store).build()).require_scope(Scope::READ);
    Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(auth)
}

fn plain_app() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
}

fn serve(rt: &tokio::runtime::Runtime, app: Router) -> std::net::SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    })
}

/// Runs wrk against `addr` and returns requests per second.
fn wrk(addr: std::net::SocketAddr, key: Option<&str>, seconds: u64, connections: u64) -> f64 {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &load_core(), "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"));
    if let Some(key) = key {
        cmd.arg("-H").arg(format!("x-api-key: {key}"));
    }
    let out = cmd
        .arg(format!("http://{addr}/"))
        .output()
        .expect("wrk runs (see scripts/load.sh)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "wrk saw errors:\n{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"))
}

fn load_core() -> String {
    std::env::var("LOAD_CLIENT_CORE").unwrap_or_else(|_| "1".into())
}

fn main() {
    // `cargo bench` passes `--bench`; this harness has no other flags.
    let rounds = env_or("LOAD_ROUNDS", 6);
    let seconds = env_or("LOAD_SECONDS", 5);
    let connections = env_or("LOAD_CONNECTIONS", 32);

    let format = KeyFormat::default();
    let store = MemoryStore::new();
    let key = format.generate(Environment::Live);
    for i in 0..100_000 {
        let k = if i == 0 {
            None
        } else {
            Some(format.generate(Environment::Live))
        };
        let k = k.as_ref().unwrap_or(&key);
        store.put(KeyRecord {
            id: format!("key_{i}"),
            tenant_id: format!("tenant_{}", i % 1000),
            name: "load".into(),
            digest: KeyHasher::sha256().hash(k.expose_secret()),
            prefix: k.prefix().into(),
            last4: k.last4().into(),
            scopes: Scopes::from_static(&["read"]),
            environment: k.environment(),
            created_at: time::OffsetDateTime::now_utc(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            metadata: Default::default(),
            restrictions: Default::default(),
        });
    }

    // One worker thread: the server gets one core, wrk the other.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let plain = serve(&rt, plain_app());
    let guarded = serve(&rt, keygate_app(store));

    // Warm-up, then alternate so drift (thermal, noise) hits both sides alike.
    // Both sides get the same request bytes, key header included: only keygate differs.
    wrk(plain, Some(key.expose_secret()), 1, connections);
    wrk(guarded, Some(key.expose_secret()), 1, connections);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (first_plain, x, y);
        if round % 2 == 0 {
            first_plain = true;
            x = wrk(plain, Some(key.expose_secret()), seconds, connections);
            y = wrk(guarded, Some(key.expose_secret()), seconds, connections);
        } else {
            first_plain = false;
            y = wrk(guarded, Some(key.expose_secret()), seconds, connections);
            x = wrk(plain, Some(key.expose_secret()), seconds, connections);
        }
        println!(
            "round {round}: no-auth {x:>10.0} req/s   keygate {y:>10.0} req/s   ratio {:.3}{}",
            y / x,
            if first_plain { "" } else { "  (keygate first)" }
        );
        a.push(x);
        b.push(y);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|p, q| p.partial_cmp(q).unwrap());
        let mid = v.len() / 2;
        if v.len() % 2 == 0 {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        }
    };
    let (ma, mb) = (median(&mut a), median(&mut b));
    println!(
        "median: no-auth {ma:.0} req/s, keygate {mb:.0} req/s, ratio keygate/no-auth {:.3}",
        mb / ma
    );
}
