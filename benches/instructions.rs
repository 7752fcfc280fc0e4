//! Instructions per request through an axum router in process, with and without keygate, for
//! `scripts/instructions.sh`, which runs this under callgrind. Instruction counts do not move
//! with the machine's load or clock, so small changes to the request path can be compared where
//! timings on a shared VM cannot.
//!
//! Usage: `instructions <side> <requests>`, side `no_auth`, `floor` (the hand-written floor of
//! `support/floor.rs`), `floor_checked` (the same with keygate's key checks),
//! `floor_keygate_verifier` (that one with keygate's verifier deciding), `floor_limits`
//! (the floor of the full pipeline, `support/floor_limits.rs`), `floor_limits_checked` (the
//! same with the limits keygate's contract asks for), `floor_keygate_headers` (that one with
//! keygate's `LimitHeaders::apply` rendering its headers), `auth` or `pipeline` (as in the
//! `layer/*` criterion benchmarks), or
//! `sql_quota` (the pipeline with its quota leased from a SQLite ledger, feature `sqlite`: the
//! leases' own work, on the blocking threads, is counted too). The script runs each side twice
//! with different request counts and divides the difference, so that setup cancels out.
//! `KEYGATE_BENCH_KEYS` sets the store's size (default 1,000).
//! `KEYGATE_BENCH_RECORDER=prometheus` (feature `metrics`) installs a Prometheus recorder
//! first, so that the counts include what counting costs.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use keygate::limit::LimitHeaders;

#[path = "support/limits.rs"]
#[allow(dead_code)] // the load bench's Redis round-trip count
mod limits;
mod support;
use support::{auth_app, hello_app, pipeline_app, request_ok, store_and_floor_with};

const USAGE: &str = "instructions: counts instructions per request under callgrind; run \
     scripts/instructions.sh (usage: instructions <no_auth|floor|floor_checked|floor_keygate_verifier|floor_limits|floor_limits_checked|floor_keygate_headers|auth|pipeline|sql_quota> <requests>)";

fn main() {
    // `cargo bench` runs every bench target, with `--bench` and any filter it was given: only
    // a side and a request count, as the script passes them, count anything.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (side, requests) = match args.as_slice() {
        [side, requests] => match (side.as_str(), requests.parse::<usize>()) {
            (
                side @ ("no_auth"
                | "floor"
                | "floor_checked"
                | "floor_keygate_verifier"
                | "floor_limits"
                | "floor_limits_checked"
                | "floor_keygate_headers"
                | "auth"
                | "pipeline"
                | "sql_quota"),
                Ok(requests),
            ) => (side, requests),
            _ => return println!("{USAGE}"),
        },
        _ => return println!("{USAGE}"),
    };
    if std::env::var("KEYGATE_BENCH_RECORDER").as_deref() == Ok("prometheus") {
        #[cfg(feature = "metrics")]
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap();
        #[cfg(not(feature = "metrics"))]
        panic!("KEYGATE_BENCH_RECORDER needs the `metrics` feature");
    }
    // 1,000 keys unless `KEYGATE_BENCH_KEYS` says otherwise (e.g. 100000 with callgrind's
    // cache simulation, for a store bigger than the caches).
    let keys = std::env::var("KEYGATE_BENCH_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let (store, floor, key) = store_and_floor_with(keys, side.starts_with("floor"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ledger_dir = tempfile::tempdir().unwrap();
    let mut app = match side {
        "no_auth" => hello_app(),
        "floor" => floor.app(),
        "floor_checked" => floor.checked_app(),
        "floor_limits" => floor.limits_app(),
        "floor_limits_checked" => floor.checked_limits_app(),
        "floor_keygate_headers" => floor.checked_limits_app_with_keygate_headers(),
        "floor_keygate_verifier" => floor.checked_app_with_keygate_verifier(store),
        "auth" => auth_app(store),
        "sql_quota" => {
            limits::sides(&rt, store, ledger_dir.path())
                .into_iter()
                .find(|(name, _)| *name == "keygate-sql-quota")
                .expect("the sql_quota side needs the `sqlite` feature")
                .1
        }
        _ => pipeline_app(store, LimitHeaders::All),
    };
    for _ in 0..requests {
        std::hint::black_box(request_ok(&rt, &mut app, &key));
    }
}
