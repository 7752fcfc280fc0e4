//! keygate's quickstart: a small API with SQLite-backed keys and the management API.
//!
//! `cargo run --example quickstart`, then follow the README. Settings:
//! - `KEYGATE_ADDR` (default `127.0.0.1:3000`), `KEYGATE_DB` (default `keygate-quickstart.db`);
//! - `KEYGATE_RATE_LIMIT_PER_MINUTE` (default 60) and `KEYGATE_MONTHLY_QUOTA` (default
//!   unlimited): tenant `demo`'s plan, stored in the database at every start;
//! - `RUST_LOG` for logs (default `info`).
//!
//! On a database without keys it creates tenant `demo` with an admin key (environment `test`)
//! and prints it once as `admin key: <key>`. It stops cleanly on Ctrl-C and SIGTERM, writing
//! pending last-used times first.

use std::time::Duration;

use axum::{Json, Router, http::StatusCode, routing::get};
use keygate::key::{Environment, KeyScheme};
use keygate::last_used::LastUsedTracker;
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::limit::{Quota, QuotaPeriod, RateLimit};
use keygate::plan::{CachedEntitlements, Plan, TenantEntitlements};
use keygate::scope::Scope;
use keygate::store::SqliteStore;
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
    let db = std::env::var("KEYGATE_DB").unwrap_or_else(|_| "keygate-quickstart.db".into());

    let plan = demo_plan()?;

    let store = SqliteStore::open(&db).await?;
    store
        .set_tenant("demo", &TenantEntitlements::active(plan))
        .await?;
    // One key scheme (format and hasher) for the verifier that checks keys and the manager that
    // issues them.
    let scheme = KeyScheme::default();
    let verifier = Verifier::builder(store.clone())
        .scheme(scheme.clone())
        // Plans are read from SQLite and cached briefly: the request path makes one query.
        .entitlements(CachedEntitlements::new(
            store.clone(),
            Duration::from_secs(5),
        ))
        .build();
    let manager = KeyManager::builder(store.clone())
        .scheme(scheme)
        .known_scopes([Scope::ADMIN, Scope::READ, Scope::WRITE])
        .audit(store.clone())
        .build();

    if store.count_keys().await? == 0 {
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

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(addr = %listener.local_addr()?, db = %db, "keygate quickstart listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    let written = flusher.shutdown().await?;
    tracing::info!(last_used_written = written, "stopped");
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
