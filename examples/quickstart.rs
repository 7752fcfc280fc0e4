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
//!   unlimited): tenant `demo`'s plan, stored in the database at every start;
//! - `RUST_LOG` for logs (default `info`).
//!
//! On a database without keys it creates tenant `demo` with an admin key (environment `test`)
//! and prints it once as `admin key: <key>`; of several instances starting at once on one
//! database, exactly one does. Keys and plans are cached in memory (`CachedStore`,
//! `CachedEntitlements`); on PostgreSQL a `ChangeListener` carries every change to the other
//! instances' caches within a second. It stops cleanly on Ctrl-C and SIGTERM, writing pending
//! last-used times and giving back unused quota blocks first.

use std::time::Duration;

use axum::{Json, Router, http::StatusCode, routing::get};
use keygate::audit::AuditSink;
use keygate::cache::CachedStore;
use keygate::key::{Environment, KeyScheme};
use keygate::last_used::LastUsedTracker;
use keygate::lifecycle::{KeyManager, ManageError, NewKey};
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

/// Where the keys are, from `KEYGATE_DATABASE_URL` (or `KEYGATE_DB`).
enum Database {
    SqliteFile(String),
    SqliteUrl(String),
    Postgres(String),
}

impl Database {
    fn from_env() -> Database {
        let setting = std::env::var("KEYGATE_DATABASE_URL")
            .or_else(|_| std::env::var("KEYGATE_DB"))
            .unwrap_or_else(|_| "keygate-quickstart.db".into());
        if setting.starts_with("postgres://") || setting.starts_with("postgresql://") {
            Database::Postgres(setting)
        } else if setting.starts_with("sqlite:") {
            Database::SqliteUrl(setting)
        } else {
            Database::SqliteFile(setting)
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

async fn run() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let addr = std::env::var("KEYGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let demo = TenantEntitlements::active(demo_plan()?);
    let limits = limits_setting()?;

    match Database::from_env() {
        Database::Postgres(url) => postgres(&addr, &url, &demo, limits).await,
        Database::SqliteUrl(url) => {
            let store = SqliteStore::connect(&url).await?;
            sqlite(&addr, store, "an SQLite URL".into(), &demo, limits).await
        }
        Database::SqliteFile(path) => {
            let store = SqliteStore::open(&path).await?;
            sqlite(&addr, store, path, &demo, limits).await
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

async fn sqlite(
    addr: &str,
    store: SqliteStore,
    db: String,
    demo: &TenantEntitlements,
    limits: Limits,
) -> Result<(), BoxError> {
    store.set_tenant("demo", demo).await?;
    let fresh = store.count_keys().await? == 0;
    // SQLite has no channel between processes: another process's changes are seen within the
    // cache's TTL.
    serve(addr, store, fresh, &db, limits, |_, _| {}).await
}

#[cfg(feature = "postgres")]
async fn postgres(
    addr: &str,
    url: &str,
    demo: &TenantEntitlements,
    limits: Limits,
) -> Result<(), BoxError> {
    let store = keygate::store::PostgresStore::connect(url).await?;
    // Listening before anything is cached: no change is missed.
    let changes = keygate::cache::ChangeListener::start(&store).await?;
    store.set_tenant("demo", demo).await?;
    let fresh = store.count_keys().await? == 0;
    // The URL may hold a password: it is not logged.
    serve(
        addr,
        store,
        fresh,
        "PostgreSQL",
        limits,
        move |keys, plans| {
            changes.subscribe(keys);
            changes.subscribe(plans);
        },
    )
    .await
}

#[cfg(not(feature = "postgres"))]
async fn postgres(_: &str, _: &str, _: &TenantEntitlements, _: Limits) -> Result<(), BoxError> {
    Err("KEYGATE_DATABASE_URL needs the `postgres` feature: \
         cargo run --example quickstart --features postgres"
        .into())
}

/// Serves the API on `store`'s keys and plans, both cached. On a `fresh` database (no keys at
/// all) it creates tenant `demo`'s admin key, unless another instance just did.
async fn serve<S>(
    addr: &str,
    store: S,
    fresh: bool,
    db: &str,
    limits: Limits,
    subscribe: impl FnOnce(CachedStore<S>, CachedEntitlements<S>),
) -> Result<(), BoxError>
where
    S: ManagedKeyStore + EntitlementSource + AuditSink + QuotaLedger + Clone,
{
    // Keys and plans are cached: a request for a key seen within the TTL makes no query.
    let keys = CachedStore::new(store.clone());
    let plans = CachedEntitlements::new(store.clone(), Duration::from_secs(30));
    subscribe(keys.clone(), plans.clone());
    // One key scheme (format and hasher) for the verifier that checks keys and the manager that
    // issues them.
    let scheme = KeyScheme::default();
    let verifier = Verifier::builder(keys.clone())
        .scheme(scheme.clone())
        .entitlements(plans);
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
    // On the cached store: a change through the manager reaches this process's next request.
    let manager = KeyManager::builder(keys.clone())
        .scheme(scheme.clone())
        .known_scopes([Scope::ADMIN, Scope::READ, Scope::WRITE])
        .audit(store.clone())
        .build();

    if fresh {
        // At most one active key for `demo`, checked atomically with the insert: of two
        // instances starting at once on one database, one creates the admin key.
        let bootstrap = KeyManager::builder(keys)
            .scheme(scheme)
            .max_active_keys(Some(1))
            .audit(store.clone())
            .build();
        let new = NewKey::new("quickstart admin", ["admin"]).environment(Environment::Test);
        match bootstrap.issue("quickstart", "demo", new).await {
            // The one place a secret is ever printed: the first start, for the user to copy.
            Ok(issued) => println!("admin key: {}", issued.key.expose_secret()),
            Err(ManageError::TooManyKeys(_)) => {
                tracing::info!("tenant demo's admin key was created by another instance");
            }
            Err(error) => return Err(error.into()),
        }
    }

    let tracker = LastUsedTracker::new();
    let flusher = tracker.spawn_flusher(store, Duration::from_secs(10));
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

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(addr = %listener.local_addr()?, db, "keygate quickstart listening");
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
