//! keygate's quickstart: a small API with keys in SQLite (or PostgreSQL) and the management API.
//!
//! `cargo run --example quickstart`, then follow the README. Settings:
//! - `KEYGATE_ADDR` (default `127.0.0.1:3000`);
//! - `KEYGATE_DATABASE_URL`: `postgres://…` (or `postgresql://…`) keeps keys in PostgreSQL
//!   (build with `--features postgres`), `sqlite://…` or a file path in SQLite; default the
//!   SQLite file `keygate-quickstart.db`. `KEYGATE_DB` (a path) is the older name of the same;
//! - `KEYGATE_REDIS_URL` (feature `redis`): rate limits and quotas on Redis, shared by every
//!   instance (`KEYGATE_REDIS_PREFIX`, default `keygate:`, starts their key names). Without it
//!   quotas are durable in the database (leased in blocks) and rate limits are per process;
//! - `KEYGATE_RATE_LIMIT_PER_MINUTE` (default 60) and `KEYGATE_MONTHLY_QUOTA` (default
//!   unlimited): tenant `demo`'s plan, stored in the database at every start (its status is
//!   left as it is: a suspension outlives a restart);
//! - `RUST_LOG` for logs: a level or `target=level` directives, e.g. `warn,keygate=debug`
//!   (default `info`).
//!
//! The management API's OpenAPI 3.1 document is at `GET /openapi.json`, without a key.
//!
//! `GET /metrics` (public, no key) answers keygate's metrics in Prometheus' text format.
//!
//! On a database without keys it creates tenant `demo` with an admin key (environment `test`)
//! and prints it once as `admin key: <key>`, after binding its port; of several instances
//! starting at once on one database, exactly one does. On a database that holds keys already
//! it makes none, and logs so. Everything is wired by `keygate::Keygate` in one call: keys and
//! plans cached in memory (`CachedStore`, `CachedEntitlements`), on PostgreSQL a
//! `ChangeListener` carrying every change to the other instances' caches within a second,
//! durable quotas, last-used times and the audit trail in the database. It stops cleanly on
//! Ctrl-C and SIGTERM, writing pending last-used times and giving back unused quota blocks
//! first; open connections get 10 s to finish. A setting that is not UTF-8 is an error.

use axum::http::{StatusCode, header::CONTENT_TYPE};
use axum::{Json, Router, routing::get};
use keygate::Tenant;
use keygate::key::Environment;
use keygate::lifecycle::NewKey;
use keygate::limit::{Quota, QuotaPeriod, RateLimit};
use keygate::plan::{Plan, TenantEntitlements};
use keygate::scope::Scope;
use keygate::setup::{Keygate, KeygateBuilder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

async fn run() -> Result<(), BoxError> {
    // `RUST_LOG` as `target=level` directives, e.g. `info` or `warn,keygate=trace`.
    let filter = setting("RUST_LOG")?.unwrap_or_else(|| "info".into());
    let filter: Targets = filter
        .parse()
        .map_err(|e| format!("RUST_LOG must be `level` or `target=level` directives: {e}"))?;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    let stopped_by_signal = shutdown_signal();
    let addr = setting("KEYGATE_ADDR")?.unwrap_or_else(|| "127.0.0.1:3000".into());
    let plan = demo_plan()?;
    // Bound before anything is written: a port in use must not cost the one printing of the
    // admin key.
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("KEYGATE_ADDR {addr:?}: {e}"))?;
    // Before keygate is built: it registers its metrics with the recorder installed then.
    let metrics = prometheus()?;

    // Keys and plans cached, a change listener on PostgreSQL, quotas leased from the database
    // (or everything on Redis), last-used times and the audit trail in the database.
    let keygate = with_limits(keygate_builder()?)?
        .known_scopes([Scope::ADMIN, Scope::READ, Scope::WRITE])
        .build()
        .await?;
    // The plan is the settings'; the status is the operator's: a suspension made with the CLI
    // outlives a restart.
    let created = keygate
        .create_tenant("demo", &TenantEntitlements::active(plan.clone()))
        .await?;
    if !created {
        keygate.set_tenant_plan("demo", &plan).await?;
    }
    if keygate.database().count_keys().await? != 0 {
        tracing::info!(
            "the database holds keys already: no admin key is made for tenant demo (issue one \
             with the CLI on this database: `KEYGATE_DATABASE_URL=<this database> keygate key \
             issue --tenant demo --scope admin --environment test`)"
        );
    } else {
        // At most one active key for `demo`, checked atomically with the insert: of two
        // instances starting at once on one database, one creates the admin key.
        let new = NewKey::new("quickstart admin", ["admin"]).environment(Environment::Test);
        match keygate
            .manager()
            .issue_first("quickstart", "demo", new)
            .await?
        {
            // The one place a secret is ever printed: the first start, for the user to copy.
            Some(issued) => println!("admin key: {}", issued.key.expose_secret()),
            None => tracing::info!("tenant demo's admin key was created by another instance"),
        }
    }

    let auth = keygate.layer().clone();
    let openapi = (
        [(CONTENT_TYPE, "application/json")],
        keygate::api::openapi().to_json()?,
    );
    let app = Router::new()
        .route("/v1/whoami", get(whoami).route_layer(auth.clone()))
        .route(
            "/v1/documents",
            get(|| async { Json(json!({"success": true, "data": []})) })
                .route_layer(auth.require_scope(Scope::READ)),
        )
        .route(
            "/v1/documents",
            axum::routing::post(|| async {
                (
                    StatusCode::CREATED,
                    Json(json!({"success": true, "data": {"id": "doc_1"}})),
                )
            })
            .route_layer(auth.require_scope(Scope::WRITE)),
        )
        // Management needs `admin` and is exempt from the tenant's rate limit and quota, so that
        // a leaked key that uses them up can still be revoked.
        .merge(keygate.management_router())
        .route(
            "/health",
            get(|| async { Json(json!({"success": true, "data": {"status": "ok"}})) }),
        )
        // The management API's OpenAPI 3.1 document, public.
        .route("/openapi.json", get(move || async move { openapi }))
        // keygate's metrics in Prometheus' text format, public.
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        );

    // The database's kind only: a URL may hold a password.
    let db = keygate.database().kind();
    tracing::info!(addr = %listener.local_addr()?, db, "keygate quickstart listening");
    let (stopping, stop) = tokio::sync::oneshot::channel::<()>();
    let serve = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        stopped_by_signal.await;
        let _ = stopping.send(());
    });
    // Connections get a while to finish after the signal, not for ever: a client that holds a
    // request half-sent must not keep last-used times and quota from being written back.
    tokio::select! {
        served = serve => served?,
        () = async {
            if stop.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => tracing::warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "connections still open after the grace period: stopping without them"
        ),
    }
    // Pending last-used times are written and unused quota blocks go back to the database, so
    // that a clean restart loses none.
    let stopped = keygate.shutdown().await?;
    tracing::info!(
        last_used_written = stopped.last_used_written,
        quota_given_back = stopped.quota_given_back,
        "stopped"
    );
    Ok(())
}

/// The Prometheus recorder, installed for the whole process, with histogram buckets for the
/// waits keygate records (in seconds), and its upkeep every few seconds.
fn prometheus() -> Result<PrometheusHandle, BoxError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// How long open connections get to finish after Ctrl-C or SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A setting from the environment; unset and empty are the same. One that is not UTF-8 is an
/// error, not a default.
fn setting(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    }
}

/// keygate on the database of `KEYGATE_DATABASE_URL` (or `KEYGATE_DB`).
fn keygate_builder() -> Result<KeygateBuilder, String> {
    let url = match setting("KEYGATE_DATABASE_URL")? {
        Some(url) => url,
        None => setting("KEYGATE_DB")?.unwrap_or_else(|| "keygate-quickstart.db".into()),
    };
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if postgres && !cfg!(feature = "postgres") {
        return Err("KEYGATE_DATABASE_URL needs the `postgres` feature: \
             cargo run --example quickstart --features postgres"
            .into());
    }
    Ok(Keygate::from_url(&url))
}

/// Rate limits and quotas on Redis with `KEYGATE_REDIS_URL`; otherwise quotas are leased from
/// the database and rate limits kept in this process.
fn with_limits(keygate: KeygateBuilder) -> Result<KeygateBuilder, String> {
    match setting("KEYGATE_REDIS_URL")? {
        None => Ok(keygate),
        #[cfg(feature = "redis")]
        Some(url) => Ok(keygate
            .redis(url)
            .redis_prefix(setting("KEYGATE_REDIS_PREFIX")?.unwrap_or_else(|| "keygate:".into()))),
        #[cfg(not(feature = "redis"))]
        Some(_) => Err("KEYGATE_REDIS_URL needs the `redis` feature: \
             cargo run --example quickstart --features redis"
            .into()),
    }
}

/// Tenant `demo`'s plan from the environment.
fn demo_plan() -> Result<Plan, String> {
    let per_minute = match setting("KEYGATE_RATE_LIMIT_PER_MINUTE")? {
        None => 60,
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                format!("KEYGATE_RATE_LIMIT_PER_MINUTE must be a positive integer, got {v:?}")
            })?,
    };
    let quota = match setting("KEYGATE_MONTHLY_QUOTA")? {
        None => None,
        Some(v) if v.trim() == "unlimited" => None,
        Some(v) => Some(Quota {
            limit: v.trim().parse().map_err(|_| {
                format!("KEYGATE_MONTHLY_QUOTA must be a number or `unlimited`, got {v:?}")
            })?,
            period: QuotaPeriod::Month,
        }),
    };
    Ok(Plan {
        name: "quickstart".into(),
        rate_limit: Some(RateLimit::per_minute(per_minute)),
        key_rate_limit: None,
        quota,
        allowed_scopes: None,
    })
}

async fn whoami(tenant: Tenant) -> Json<serde_json::Value> {
    Json(json!({
        "success": true,
        "data": {
            "tenant_id": tenant.tenant_id(),
            "key_id": tenant.key_id(),
            "scopes": tenant.scopes(),
            "environment": tenant.environment(),
        }
    }))
}

fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // Registered now, not when first awaited: a signal that comes while the quickstart is still
    // starting (its port already bound) is a clean stop too, not the default death.
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut interrupt, mut terminate) = handlers;
            let next = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = next(interrupt.take()) => {},
                () = next(terminate.take()) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}
