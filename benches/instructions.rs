//! Instructions per request through an axum router in process, with and without keygate, for
//! `scripts/instructions.sh`, which runs this under callgrind. Instruction counts do not move
//! with the machine's load or clock, so small changes to the request path can be compared where
//! timings on a shared VM cannot.
//!
//! Usage: `instructions <side> <requests>`, side `no_auth`, `auth` or `pipeline` (as in the
//! `layer/*` criterion benchmarks). The script runs each side twice with different request
//! counts and divides the difference, so that setup cancels out.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use http::Request;
use keygate::limit::LimitHeaders;
use tower::{Service, ServiceExt};

mod support;
use support::{auth_app, hello_app, pipeline_app, store_with};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let (Some(side), Some(requests)) = (args.next(), args.next()) else {
        // `cargo bench` runs every bench target: without arguments there is nothing to count.
        println!("instructions: run by scripts/instructions.sh");
        return;
    };
    let requests: usize = requests.parse().expect("a request count");
    let (store, key) = store_with(1_000);
    let mut app = match side.as_str() {
        "no_auth" => hello_app(),
        "auth" => auth_app(store),
        "pipeline" => pipeline_app(store, LimitHeaders::All),
        other => panic!("side must be no_auth, auth or pipeline, not {other:?}"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for _ in 0..requests {
        let req = Request::get("/")
            .header("x-api-key", key.expose_secret())
            .body(Body::empty())
            .unwrap();
        let response = rt.block_on(async {
            ServiceExt::<Request<Body>>::ready(&mut app)
                .await
                .unwrap()
                .call(req)
                .await
                .unwrap()
        });
        assert_eq!(response.status(), 200);
        std::hint::black_box(response);
    }
}
