//! One-call setup: `Keygate` wires the layer and the manager on SQLite and PostgreSQL with the
//! key cache, cached plans, leased quotas, last-used times and the SQL audit trail. Every test
//! goes through the public API, with real requests over TCP.

use axum::{Router, routing::get};
use http::{Request, StatusCode};
use keygate::key::Environment;
use keygate::lifecycle::NewKey;
use keygate::limit::{Quota, QuotaPeriod};
use keygate::plan::{Plan, TenantEntitlements, TenantStatus};
use keygate::scope::Scope;
use keygate::setup::{Database, Keygate, SetupError};
use keygate::{Tenant, store::KeyInfo};

use crate::common::*;

fn req(key: &str, path: &str) -> Request<String> {
    Request::get(path)
        .header("x-api-key", key)
        .body(String::new())
        .unwrap()
}

/// The app of the README: one route behind the layer, the management API.
fn app(keygate: &Keygate) -> Router {
    Router::new()
        .route(
            "/v1/whoami",
            get(|t: Tenant| async move { format!("{} {}", t.tenant_id(), t.key_id()) }),
        )
        .route_layer(keygate.layer().clone())
        .merge(keygate.management_router())
}

fn plan(quota: Option<u64>) -> TenantEntitlements {
    TenantEntitlements::active(Plan {
        name: "test".into(),
        quota: quota.map(|limit| Quota {
            limit,
            period: QuotaPeriod::Month,
        }),
        ..Plan::default()
    })
}

/// A `Keygate` with the defaults on a new SQLite file, and the folder that holds the file.
async fn keygate_on_a_new_sqlite_file() -> (Keygate, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let keygate = Keygate::sqlite(dir.path().join("keys.db"))
        .build()
        .await
        .unwrap();
    (keygate, dir)
}

/// A new tenant on the default plan, and an admin key of it.
async fn tenant_with_admin(keygate: &Keygate) -> (String, keygate::lifecycle::IssuedKey) {
    let tenant = keygate::store::conformance::tenant();
    keygate.set_tenant(&tenant, &plan(None)).await.unwrap();
    let admin = keygate
        .manager()
        .issue("setup", &tenant, NewKey::new("admin", ["admin"]))
        .await
        .unwrap();
    (tenant, admin)
}

/// The key's record as the database has it now (not the cache).
async fn stored(db: &Database, tenant: &str, key_id: &str) -> KeyInfo {
    db.key_manager().build().get(tenant, key_id).await.unwrap()
}

/// The audit trail of `tenant`: (action, actor, key id), oldest first.
pub(crate) async fn audit(db: &Database, tenant: &str) -> Vec<(String, String, String)> {
    let sql = "SELECT action, actor, key_id FROM keygate_audit WHERE tenant_id = $1 ORDER BY seq";
    match db {
        Database::Sqlite(store) => sqlx::query_as(sql)
            .bind(tenant)
            .fetch_all(store.pool())
            .await
            .unwrap(),
        #[cfg(feature = "postgres")]
        Database::Postgres(store) => sqlx::query_as(sql)
            .bind(tenant)
            .fetch_all(store.pool())
            .await
            .unwrap(),
        _ => unreachable!(),
    }
}

/// A request through the built layer writes last_used_at (at shutdown at the latest) and the
/// manager's changes land in the audit table; revocation is immediate.
async fn wired_end_to_end(keygate: Keygate) {
    let (tenant, admin) = tenant_with_admin(&keygate).await;
    let db = keygate.database().clone();
    let addr = serve(app(&keygate)).await;

    let reply = send_tcp(addr, req(admin.key.expose_secret(), "/v1/whoami")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, format!("{tenant} {}", admin.info.id));

    // A key issued over the management API is audited with the admin key as actor.
    let create = Request::post("/v1/api-keys")
        .header("x-api-key", admin.key.expose_secret())
        .header("content-type", "application/json")
        .body(r#"{"name":"reader","scopes":["read"]}"#.to_owned())
        .unwrap();
    let created = send_tcp(addr, create).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let reader_id = created.json()["data"]["id"].as_str().unwrap().to_owned();
    let reader_key = created.json()["data"]["key"].as_str().unwrap().to_owned();
    let reply = send_tcp(addr, req(&reader_key, "/v1/whoami")).await;
    assert_eq!(reply.status, StatusCode::OK);

    // Revocation through the built manager refuses the very next request, though the key is
    // cached.
    keygate
        .manager()
        .revoke("setup", &tenant, &reader_id)
        .await
        .unwrap();
    let reply = send_tcp(addr, req(&reader_key, "/v1/whoami")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json(), envelope("UNAUTHORIZED", REVOKED));

    // Suspension through the Keygate is immediate too, and resuming as well.
    assert!(
        keygate
            .set_tenant_status(&tenant, TenantStatus::Suspended)
            .await
            .unwrap()
    );
    let reply = send_tcp(addr, req(admin.key.expose_secret(), "/v1/whoami")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json(), envelope("FORBIDDEN", "Tenant suspended"));
    assert!(
        keygate
            .set_tenant_status(&tenant, TenantStatus::Active)
            .await
            .unwrap()
    );
    let reply = send_tcp(addr, req(admin.key.expose_secret(), "/v1/whoami")).await;
    assert_eq!(reply.status, StatusCode::OK);

    assert_eq!(
        stored(&db, &tenant, &admin.info.id).await.last_used_at,
        None
    );
    let stopped = keygate.shutdown().await.unwrap();
    // Both keys were used (the reader before its revocation); the flusher's first interval
    // has not passed, so shutdown writes both.
    assert_eq!(stopped.last_used_written, 2);
    let used = stored(&db, &tenant, &admin.info.id).await.last_used_at;
    let used = used.expect("last_used_at written");
    assert!((time::OffsetDateTime::now_utc() - used).whole_seconds() < 10);

    assert_eq!(
        audit(&db, &tenant).await,
        vec![
            ("issue".into(), "setup".into(), admin.info.id.clone()),
            ("issue".into(), admin.info.id.clone(), reader_id.clone()),
            ("revoke".into(), "setup".into(), reader_id.clone()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygate_on_sqlite_tracks_last_used_audits_and_revokes_at_once() {
    let (keygate, _dir) = keygate_on_a_new_sqlite_file().await;
    assert_eq!(keygate.database().kind(), "SQLite");
    wired_end_to_end(keygate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygate_from_an_sqlite_path_or_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("from-url.db");
    let keygate = Keygate::from_url(path.to_str().unwrap())
        .build()
        .await
        .unwrap();
    assert_eq!(keygate.database().kind(), "SQLite");
    keygate.shutdown().await.unwrap();
    assert!(path.exists());
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("url.db").display());
    let keygate = Keygate::from_url(&url).build().await.unwrap();
    wired_end_to_end(keygate).await;
}

/// A database URL of another scheme, or a misspelled one, is refused for what it is, not
/// taken for the path of an SQLite file; `sqlite://` URLs create their file as paths do.
#[tokio::test]
async fn database_urls_of_other_schemes_are_refused_and_sqlite_urls_create_their_file() {
    for (url, scheme) in [
        ("mysql://user:secret@db.internal/app", "mysql"),
        ("postgress://db.internal/app", "postgress"),
        ("MySQL://db.internal/app", "mysql"),
    ] {
        let error = Database::connect(url).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "unsupported database URL scheme {scheme:?}: use postgres://, postgresql://, sqlite:// or the path of an SQLite file"
            )
        );
        assert!(!error.to_string().contains("secret"));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let url = format!("SQLite://{}", path.display());
    Database::connect(&url).await.unwrap();
    assert!(path.exists(), "the file is created");
    // A URL that sets its mode keeps sqlx's meaning: `rw` does not create.
    let missing = dir.path().join("missing.db");
    let url = format!("sqlite://{}?mode=rw", missing.display());
    assert!(Database::connect(&url).await.is_err());
    assert!(!missing.exists());
}

#[tokio::test]
async fn keygate_refuses_an_empty_url() {
    let error = Keygate::from_url(" ").build().await.unwrap_err();
    assert!(matches!(error, SetupError::EmptyUrl));
    assert_eq!(error.to_string(), "the database URL is empty");
}

/// A file that is not a database is an error, not a panic, and the message does not repeat
/// the URL.
#[tokio::test]
async fn keygate_reports_a_database_it_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-db");
    std::fs::write(&path, b"this is not an SQLite database, not at all").unwrap();
    let error = Keygate::sqlite(&path).build().await.unwrap_err();
    assert!(matches!(error, SetupError::Store(_)), "{error:?}");
    assert!(!error.to_string().contains("not-a-db"), "{error}");
}

/// Quotas are leased from the database by default: durable, and given back at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygate_enforces_quotas_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quota.db");
    let keygate = Keygate::sqlite(&path).build().await.unwrap();
    let tenant = keygate::store::conformance::tenant();
    keygate.set_tenant(&tenant, &plan(Some(2))).await.unwrap();
    let key = keygate
        .manager()
        .issue("setup", &tenant, NewKey::new("k", ["read"]))
        .await
        .unwrap();
    let addr = serve(app(&keygate)).await;
    let secret = key.key.expose_secret();
    for _ in 0..2 {
        assert_eq!(
            send_tcp(addr, req(secret, "/v1/whoami")).await.status,
            StatusCode::OK
        );
    }
    let reply = send_tcp(addr, req(secret, "/v1/whoami")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json(),
        envelope("FORBIDDEN", "Quota exhausted for the current period")
    );
    keygate.shutdown().await.unwrap();

    // A new process on the same file: the two requests are still counted.
    let again = Keygate::sqlite(&path).build().await.unwrap();
    let addr = serve(app(&again)).await;
    let reply = send_tcp(addr, req(secret, "/v1/whoami")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    again.shutdown().await.unwrap();
}

/// Each part can be changed: no last-used times, a custom audit sink, known scopes, the
/// verifier's options.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygate_options_change_each_part() {
    let dir = tempfile::tempdir().unwrap();
    let keygate = Keygate::sqlite(dir.path().join("options.db"))
        .no_last_used()
        .no_key_cache()
        .audit(keygate::audit::TracingAudit)
        .known_scopes([Scope::READ])
        .max_active_keys(Some(1))
        .limiter(keygate::limit::MemoryLimiter::new())
        .configure_verifier(|v| v.accept_test_keys(false))
        .build()
        .await
        .unwrap();
    let tenant = keygate::store::conformance::tenant();
    keygate.set_tenant(&tenant, &plan(None)).await.unwrap();
    let manager = keygate.manager();
    assert!(matches!(
        manager
            .issue("setup", &tenant, NewKey::new("w", ["write"]))
            .await,
        Err(keygate::lifecycle::ManageError::UnknownScope(s)) if s == "write"
    ));
    let test_key = manager
        .issue(
            "setup",
            &tenant,
            NewKey::new("t", ["read"]).environment(Environment::Test),
        )
        .await
        .unwrap();
    assert!(matches!(
        manager
            .issue("setup", &tenant, NewKey::new("2", ["read"]))
            .await,
        Err(keygate::lifecycle::ManageError::TooManyKeys(1))
    ));
    let addr = serve(app(&keygate)).await;
    let reply = send_tcp(addr, req(test_key.key.expose_secret(), "/v1/whoami")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.json(),
        envelope(
            "UNAUTHORIZED",
            "Test keys are not accepted here: use a live key"
        )
    );
    let db = keygate.database().clone();
    let stopped = keygate.shutdown().await.unwrap();
    assert_eq!(
        (stopped.last_used_written, stopped.quota_given_back),
        (0, 0)
    );
    assert!(
        audit(&db, &tenant).await.is_empty(),
        "audit went to tracing"
    );
}

/// Bootstrapping: of many callers racing for a tenant's first key, exactly one gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_first_issues_one_key_among_racers() {
    let (keygate, _dir) = keygate_on_a_new_sqlite_file().await;
    let tenant = keygate::store::conformance::tenant();
    let calls = (0..8).map(|i| {
        let manager = keygate.manager().clone();
        let tenant = tenant.clone();
        tokio::spawn(async move {
            manager
                .issue_first(
                    "setup",
                    &tenant,
                    NewKey::new(format!("admin {i}"), ["admin"]),
                )
                .await
                .unwrap()
        })
    });
    let mut issued = 0;
    for call in calls.collect::<Vec<_>>() {
        issued += usize::from(call.await.unwrap().is_some());
    }
    assert_eq!(issued, 1);
    assert_eq!(keygate.manager().list(&tenant).await.unwrap().len(), 1);
    keygate.shutdown().await.unwrap();
}

/// The tenant writes: create only once, and status and plan each changed alone.
async fn tenant_writes(db: &Database) {
    let tenant = keygate::store::conformance::tenant();
    let pro = plan(Some(10));
    assert!(db.create_tenant(&tenant, &pro).await.unwrap());
    assert!(
        !db.create_tenant(&tenant, &plan(None)).await.unwrap(),
        "exists"
    );
    assert_eq!(db.tenant(&tenant).await.unwrap(), Some(pro.clone()));
    assert!(
        db.set_tenant_status(&tenant, TenantStatus::Suspended)
            .await
            .unwrap()
    );
    let free = Plan {
        name: "free".into(),
        ..Plan::default()
    };
    assert!(db.set_tenant_plan(&tenant, &free).await.unwrap());
    assert_eq!(
        db.tenant(&tenant).await.unwrap(),
        Some(TenantEntitlements {
            status: TenantStatus::Suspended,
            plan: free,
        }),
        "the plan changed, the status kept"
    );
    assert!(
        db.set_tenant_status(&tenant, TenantStatus::Active)
            .await
            .unwrap()
    );
    assert_eq!(db.tenant(&tenant).await.unwrap().unwrap().plan.name, "free");
    let nobody = keygate::store::conformance::tenant();
    assert!(
        !db.set_tenant_status(&nobody, TenantStatus::Active)
            .await
            .unwrap()
    );
    assert!(!db.set_tenant_plan(&nobody, &Plan::default()).await.unwrap());
    assert_eq!(db.tenant(&nobody).await.unwrap(), None);
}

#[tokio::test]
async fn tenant_writes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::sqlite(dir.path().join("tenants.db"))
        .await
        .unwrap();
    tenant_writes(&db).await;
}

/// A rate limit that cannot be read back is refused when written (nothing written), and one
/// already stored (from before the check) reads as an error, never a panic.
#[tokio::test]
async fn a_zero_rate_limit_window_is_refused_on_write_and_an_error_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::sqlite(dir.path().join("tenants.db"))
        .await
        .unwrap();
    let zero = TenantEntitlements::active(Plan {
        name: "zero".into(),
        rate_limit: Some(keygate::limit::RateLimit {
            limit: 5,
            window: std::time::Duration::ZERO,
        }),
        ..Plan::default()
    });
    assert_eq!(
        db.set_tenant("acme", &zero).await.unwrap_err().to_string(),
        "key store backend error: rate limit window must be at least 1 second"
    );
    assert_eq!(db.tenant("acme").await.unwrap(), None);

    db.set_tenant("acme", &plan(None)).await.unwrap();
    let Database::Sqlite(store) = &db else {
        unreachable!()
    };
    sqlx::query("UPDATE keygate_tenants SET plan = $1 WHERE id = 'acme'")
        .bind(r#"{"name":"zero","rate_limit":{"limit":5,"window":0}}"#)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        db.tenant("acme").await.unwrap_err().to_string(),
        "key store backend error: rate limit window must be at least 1 second at line 1 column 50"
    );
}

#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    use std::time::Duration;

    use super::*;

    pub(crate) async fn drop_database(name: &str, admin: &sqlx::PgPool) {
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(admin)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keygate_on_postgres_tracks_last_used_audits_and_revokes_at_once() {
        let (url, name, admin) = fresh_postgres_database("keygate_setup").await;
        let keygate = Keygate::postgres(&url).build().await.unwrap();
        assert_eq!(keygate.database().kind(), "PostgreSQL");
        wired_end_to_end(keygate).await;
        let keygate = Keygate::from_url(&url.replacen("postgres://", "postgresql://", 1))
            .build()
            .await
            .unwrap();
        assert_eq!(keygate.database().kind(), "PostgreSQL");
        keygate.shutdown().await.unwrap();
        drop_database(&name, &admin).await;
    }

    #[tokio::test]
    async fn tenant_writes_on_postgres() {
        let (url, name, admin) = fresh_postgres_database("keygate_setup").await;
        let db = Database::connect(&url).await.unwrap();
        tenant_writes(&db).await;
        drop(db);
        drop_database(&name, &admin).await;
    }

    /// Two instances on one database: a revocation and a suspension made through one reach
    /// the other's caches within a second, by the change listener the setup starts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_keygates_on_one_postgres_database_see_each_others_changes() {
        let (url, name, admin_pool) = fresh_postgres_database("keygate_setup").await;
        let a = Keygate::from_url(&url).build().await.unwrap();
        let b = Keygate::from_url(&url).build().await.unwrap();
        let tenant = keygate::store::conformance::tenant();
        a.set_tenant(&tenant, &plan(None)).await.unwrap();
        let key = a
            .manager()
            .issue("setup", &tenant, NewKey::new("k", ["read"]))
            .await
            .unwrap();
        let other = a
            .manager()
            .issue("setup", &tenant, NewKey::new("other", ["read"]))
            .await
            .unwrap();
        let addr_b = serve(app(&b)).await;
        // Both keys cached by B.
        for k in [&key, &other] {
            let reply = send_tcp(addr_b, req(k.key.expose_secret(), "/v1/whoami")).await;
            assert_eq!(reply.status, StatusCode::OK);
        }

        a.manager()
            .revoke("setup", &tenant, &key.info.id)
            .await
            .unwrap();
        let status = eventually(addr_b, key.key.expose_secret(), StatusCode::UNAUTHORIZED).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "revocation not seen by B within 1 s"
        );

        a.set_tenant_status(&tenant, TenantStatus::Suspended)
            .await
            .unwrap();
        let status = eventually(addr_b, other.key.expose_secret(), StatusCode::FORBIDDEN).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "suspension not seen by B within 1 s"
        );

        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
        drop_database(&name, &admin_pool).await;
    }

    /// The status of `key`'s request once it is `want`, or after a second.
    async fn eventually(addr: std::net::SocketAddr, key: &str, want: StatusCode) -> StatusCode {
        let mut status = StatusCode::OK;
        for _ in 0..20 {
            status = send_tcp(addr, req(key, "/v1/whoami")).await.status;
            if status == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        status
    }
}

/// `Keygate`'s tenant writes whose caller stops waiting still reach the next request once they
/// commit (SQLite, the quickstart's database): a suspension is never left unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_write_whose_caller_stops_waiting_still_reaches_the_next_request() {
    use tower::ServiceExt;
    let (keygate, _dir) = keygate_on_a_new_sqlite_file().await;
    let (tenant, admin) = tenant_with_admin(&keygate).await;
    let (keygate, tenant, app) = (&keygate, tenant.as_str(), app(&keygate));
    let secret = admin.key.expose_secret();
    let whoami = |app: Router| async move {
        let reply = app.oneshot(req(secret, "/v1/whoami")).await.unwrap();
        reply.status()
    };
    let expected = |status| match status {
        TenantStatus::Active => StatusCode::OK,
        _ => StatusCode::FORBIDDEN,
    };
    abandon_tenant_writes(
        |status| async move {
            keygate.set_tenant_status(tenant, status).await.unwrap();
        },
        || {
            let app = app.clone();
            async move {
                whoami(app).await;
            }
        },
        || {
            let app = app.clone();
            async move {
                let stored = keygate.database().tenant(tenant).await.unwrap().unwrap();
                whoami(app).await == expected(stored.status)
            }
        },
    )
    .await;
}

/// A build that fails after its change listener started (here Redis is unreachable) stops the
/// listener: a retry loop around `build` leaves no listener and no connection behind.
#[cfg(all(feature = "postgres", feature = "redis"))]
#[tokio::test]
async fn a_failed_build_leaves_no_listener_nor_connection_behind() {
    let (url, name, admin) = fresh_postgres_database("keygate_failed_build").await;
    let connections = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .fetch_one(&admin)
            .await
            .unwrap();
        n
    };
    for _ in 0..3 {
        let built = Keygate::from_url(&url)
            .redis("redis://127.0.0.1:1")
            .build()
            .await;
        assert!(built.is_err(), "Redis at port 1 is unreachable");
    }
    // Closed connections leave pg_stat_activity a moment after the client goes; the guard
    // only keeps a leak from passing for a slow close.
    let mut left = connections().await;
    for _ in 0..100 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        left = connections().await;
    }
    assert_eq!(left, 0, "connections left behind by failed builds");
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
}
