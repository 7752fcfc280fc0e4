//! keygate's quickstart: a small API with SQLite-backed keys and the management API.
//!
//! `cargo run --example quickstart`, then follow the README. Settings:
//! - `KEYGATE_ADDR` (default `127.0.0.1:3000`), `KEYGATE_DB` (default `keygate-quickstart.db`);
//! - `KEYGATE_DATABASE_URL` (feature `postgres`): keys, plans and quotas in PostgreSQL instead
//!   of the SQLite file, so that several instances can share them;
//! - `KEYGATE_REDIS_URL` (feature `redis`): rate limits and quotas on Redis, shared by every
//!   instance (`KEYGATE_REDIS_PREFIX`, default `keygate:`, starts their key names). Without it
//!   quotas are durable in the database (leased in blocks) and rate limits are per process;
//! - `KEYGATE_RATE_LIMIT_PER_MINUTE` (default 60) and `KEYGATE_MONTHLY_QUOTA` (default
//!   unlimited): tenant `demo`'s plan, stored in the database at every start;
//! - `RUST_LOG` for logs (default `info`).
//!
//! On a database without keys it creates tenant `demo` with an admin key (environment `test`)
//! and prints it once as `admin key: <key>`. It stops cleanly on Ctrl-C and SIGTERM, writing
//! pending last-used times and giving back unused quota blocks first.

use std::time::Duration;

use axum::{Json, Router, http::StatusCode, routing::get};
use keygate::audit::AuditSink;
use keygate::key::{Environment, KeyScheme};
use keygate::last_used::LastUsedTracker;
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::limit::{LeasedQuotaLimiter, Quota, QuotaLedger, QuotaPeriod, RateLimit};
use keygate::plan::{CachedEntitlements, EntitlementSource, Plan, TenantEntitlements};
use keygate::scope::Scope;
use keygate::store::{ManagedKeyStore, SqliteStore};
use keygate::{AuthLayer, Tenant, Verifier, api};
use serde_json::json;

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

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let addr = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let plan = demo_plan()?;
    let limits = limits_setting()?;
    let demo = TenantEntitlements::active(plan);

    match setting("KEYGATE_DATABASE_URL") {
        #[cfg(feature = "postgres")]
        Some(url) => {
            let store = keygate::store::PostgresStore::connect(&url).await?;
            store.set_tenant("demo", &demo).await?;
            let empty = store.count_keys().await? == 0;
            serve(store, empty, limits, &addr, "PostgreSQL").await
        }
        #[cfg(not(feature = "postgres"))]
        Some(_) => Err("KEYGATE_DATABASE_URL needs the `postgres` feature: \
             cargo run --example quickstart --features postgres"
            .into()),
        None => {
            let db = std::env::var("KEYGATE_DB").unwrap_or_else(|_| "keygate-quickstart.db".into());
            let store = SqliteStore::open(&db).await?;
            store.set_tenant("demo", &demo).await?;
            let empty = store.count_keys().await? == 0;
            serve(store, empty, limits, &addr, &db).await
        }
    }
}

/// A setting from the environment; unset and empty are the same.
fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Where rate limits and quotas live.
enum Limits {
    /// Quotas leased from the database in blocks, rate limits in this process.
    Database,
    /// Everything on Redis: the URL and the key prefix.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Redis { url: String, prefix: String },
}

fn limits_setting() -> Result<Limits, String> {
    match setting("KEYGATE_REDIS_URL") {
        None => Ok(Limits::Database),
        Some(url) if cfg!(feature = "redis") => Ok(Limits::Redis {
            url,
            prefix: setting("KEYGATE_REDIS_PREFIX").unwrap_or_else(|| "keygate:".into()),
        }),
        Some(_) => Err("KEYGATE_REDIS_URL needs the `redis` feature: \
             cargo run --example quickstart --features redis"
            .into()),
    }
}

/// Serves the quickstart's API on `store` until Ctrl-C or SIGTERM.
async fn serve<S>(
    store: S,
    empty: bool,
    limits: Limits,
    addr: &str,
    database: &str,
) -> Result<(), Box<dyn std::error::Error>>
where
    S: ManagedKeyStore + EntitlementSource + AuditSink + QuotaLedger + Clone,
{
    // One key scheme (format and hasher) for the verifier that checks keys and the manager that
    // issues them.
    let scheme = KeyScheme::default();
    let verifier = Verifier::builder(store.clone())
        .scheme(scheme.clone())
        // Plans are read from the database and cached briefly: the request path makes one query.
        .entitlements(CachedEntitlements::new(
            store.clone(),
            Duration::from_secs(5),
        ));
    let (verifier, leased) = match limits {
        Limits::Database => {
            let limiter = LeasedQuotaLimiter::new(store.clone());
            (verifier.limiter(limiter.clone()).build(), Some(limiter))
        }
        #[cfg(feature = "redis")]
        Limits::Redis { url, prefix } => {
            let limiter = keygate::limit::RedisLimiter::builder(url)
                .prefix(prefix)
                .connect()
                .await?;
            (verifier.limiter(limiter).build(), None)
        }
        #[cfg(not(feature = "redis"))]
        Limits::Redis { .. } => unreachable!("refused by limits_setting"),
    };
    let manager = KeyManager::builder(store.clone())
        .scheme(scheme)
        .known_scopes([Scope::ADMIN, Scope::READ, Scope::WRITE])
        .audit(store.clone())
        .build();

    if empty {
        let new = NewKey::new("quickstart admin", ["admin"]).environment(Environment::Test);
        let issued = manager.issue("quickstart", "demo", new).await?;
        // The one place a secret is ever printed: the first start, for the user to copy.
        println!("admin key: {}", issued.key.expose_secret());
    }

    let tracker = LastUsedTracker::new();
    let flusher = tracker.spawn_flusher(store.clone(), Duration::from_secs(10));
    let auth = AuthLayer::new(verifier).track_last_used(tracker);

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
        .merge(api::router(manager).route_layer(auth.management()))
        .route(
            "/health",
            get(|| async { Json(json!({"success": true, "data": {"status": "ok"}})) }),
        );

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, db = %database, "keygate quickstart listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    let written = flusher.shutdown().await?;
    // Unused quota blocks go back to the database, so that a clean restart loses none.
    let given_back = match leased {
        Some(limiter) => limiter.shutdown().await?,
        None => 0,
    };
    tracing::info!(
        last_used_written = written,
        quota_given_back = given_back,
        "stopped"
    );
    Ok(())
}

/// Tenant `demo`'s plan from the environment.
fn demo_plan() -> Result<Plan, String> {
    let per_minute = match std::env::var("KEYGATE_RATE_LIMIT_PER_MINUTE") {
        Err(_) => 60,
        Ok(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                format!("KEYGATE_RATE_LIMIT_PER_MINUTE must be a positive integer, got {v:?}")
            })?,
    };
    let quota = match std::env::var("KEYGATE_MONTHLY_QUOTA") {
        Err(_) => None,
        Ok(v) if v.trim().is_empty() || v.trim() == "unlimited" => None,
        Ok(v) => Some(Quota {
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

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
