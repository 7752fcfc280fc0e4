//! The quickstart as a new user runs it: start, copy the admin key, call the API with curl-like
//! requests, stop with SIGTERM, start again.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use http::{Request, StatusCode};
use keygate::store::SqliteStore;

fn quickstart_binary() -> PathBuf {
    keygate_binary("example", "quickstart")
}

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct Quickstart {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
    addr: SocketAddr,
}

impl Quickstart {
    fn start(db: &std::path::Path) -> Self {
        Self::start_with(db, &[])
    }

    fn start_with(db: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let addr = free_addr();
        let mut child = Command::new(quickstart_binary())
            .envs(env.iter().copied())
            .env("KEYGATE_ADDR", addr.to_string())
            .env("KEYGATE_DB", db)
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Quickstart {
            child,
            stdout,
            addr,
        }
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the quickstart did not start listening on {}", self.addr);
    }

    /// The admin key the first start prints.
    fn admin_key(&mut self) -> String {
        let mut first = String::new();
        self.stdout.read_line(&mut first).unwrap();
        first
            .trim_end()
            .strip_prefix("admin key: ")
            .expect("first line is `admin key: <key>`")
            .to_owned()
    }

    /// `kill -9`: no shutdown of any kind.
    fn kill_9(mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status, the rest of stdout and all of stderr.
    fn stop(mut self) -> (std::process::ExitStatus, String, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (exit, out, err)
    }
}

fn req(method: &str, path: &str, key: &str, body: Option<&str>) -> Request<String> {
    let mut r = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"));
    if body.is_some() {
        r = r.header("content-type", "application/json");
    }
    r.body(body.unwrap_or_default().to_owned()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_as_a_new_user() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("quickstart.db");

    let mut qs = Quickstart::start(&db);
    let mut first = String::new();
    qs.stdout.read_line(&mut first).unwrap();
    let admin = first
        .trim_end()
        .strip_prefix("admin key: ")
        .expect("first line is `admin key: <key>`")
        .to_owned();
    assert!(admin.starts_with("sk_test_"));
    qs.wait_ready().await;
    let addr = qs.addr;

    let health = send_tcp(addr, Request::get("/health").body(String::new()).unwrap()).await;
    assert_eq!(health.status, StatusCode::OK);
    let who = send_tcp(addr, req("GET", "/v1/whoami", &admin, None)).await;
    assert_eq!(who.status, StatusCode::OK);
    assert_eq!(who.json()["data"]["tenant_id"], "demo");
    assert_eq!(who.json()["data"]["scopes"], serde_json::json!(["admin"]));
    assert_eq!(who.json()["data"]["environment"], "test");
    assert_eq!(
        who.headers["x-ratelimit-limit"], "60",
        "the default plan: 60 a minute"
    );
    let missing = send_tcp(
        addr,
        Request::get("/v1/whoami").body(String::new()).unwrap(),
    )
    .await;
    assert_eq!(
        (missing.status, missing.json()),
        (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", MISSING))
    );

    // Create a read-only key, use it, rotate it, revoke it.
    let created = send_tcp(
        addr,
        req(
            "POST",
            "/v1/api-keys",
            &admin,
            Some(r#"{"name":"reader","scopes":["read"]}"#),
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let reader = created.json()["data"]["key"].as_str().unwrap().to_owned();
    let reader_id = created.json()["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        send_tcp(addr, req("GET", "/v1/documents", &reader, None))
            .await
            .status,
        StatusCode::OK
    );
    let denied = send_tcp(addr, req("POST", "/v1/documents", &reader, None)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(
        send_tcp(addr, req("POST", "/v1/documents", &admin, None))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        send_tcp(addr, req("GET", "/v1/api-keys", &reader, None))
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let rotated = send_tcp(
        addr,
        req(
            "POST",
            &format!("/v1/api-keys/{reader_id}/rotate"),
            &admin,
            None,
        ),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    let rotated_key = rotated.json()["data"]["key"].as_str().unwrap().to_owned();
    let rotated_id = rotated.json()["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        send_tcp(addr, req("GET", "/v1/documents", &reader, None))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send_tcp(addr, req("GET", "/v1/documents", &rotated_key, None))
            .await
            .status,
        StatusCode::OK
    );
    let revoked = send_tcp(
        addr,
        req(
            "DELETE",
            &format!("/v1/api-keys/{rotated_id}"),
            &admin,
            None,
        ),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(
        send_tcp(addr, req("GET", "/v1/documents", &rotated_key, None))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let (exit, rest, logs) = qs.stop();
    assert!(exit.success(), "exit status {exit}");
    assert_eq!(rest, "", "only the admin key line is printed");
    for secret in [&admin, &reader, &rotated_key] {
        assert!(
            !logs.contains(&secret[8..]),
            "a secret in the quickstart's logs"
        );
    }
    assert!(logs.contains("stopped"), "{logs}");

    // Second start: no key printed, state kept (admin works, the revoked key does not), and the
    // last-used time written at shutdown is visible.
    let qs = Quickstart::start(&db);
    qs.wait_ready().await;
    let who = send_tcp(qs.addr, req("GET", "/v1/whoami", &admin, None)).await;
    assert_eq!(who.status, StatusCode::OK);
    assert_eq!(
        send_tcp(qs.addr, req("GET", "/v1/documents", &rotated_key, None))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let listed = send_tcp(qs.addr, req("GET", "/v1/api-keys", &admin, None)).await;
    let keys = listed.json()["data"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1, "only the admin key is active");
    assert!(
        keys[0]["last_used_at"].is_string(),
        "last use flushed at shutdown: {keys:?}"
    );
    let (exit, out, _) = qs.stop();
    assert!(exit.success());
    assert_eq!(out, "", "no key printed on a database that has keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_plan_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("limits.db");
    let mut qs = Quickstart::start_with(
        &db,
        &[
            ("KEYGATE_RATE_LIMIT_PER_MINUTE", "100"),
            ("KEYGATE_MONTHLY_QUOTA", "3"),
        ],
    );
    let mut first = String::new();
    qs.stdout.read_line(&mut first).unwrap();
    let admin = first
        .trim_end()
        .strip_prefix("admin key: ")
        .unwrap()
        .to_owned();
    qs.wait_ready().await;
    for remaining in ["2", "1", "0"] {
        let ok = send_tcp(qs.addr, req("GET", "/v1/whoami", &admin, None)).await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.headers["x-ratelimit-limit"], "100");
        let quota = ok.headers["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            quota.contains(&format!("\"quota\";r={remaining};")),
            "{quota}"
        );
    }
    let refused = send_tcp(qs.addr, req("GET", "/v1/whoami", &admin, None)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.json(),
        envelope("FORBIDDEN", "Quota exhausted for the current period")
    );
    let (exit, _, _) = qs.stop();
    assert!(exit.success());

    // A rate limit of 2 a minute: the third request in a row is refused with Retry-After.
    let qs = Quickstart::start_with(&db, &[("KEYGATE_RATE_LIMIT_PER_MINUTE", "2")]);
    qs.wait_ready().await;
    assert_eq!(
        send_tcp(qs.addr, req("GET", "/v1/whoami", &admin, None))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send_tcp(qs.addr, req("GET", "/v1/whoami", &admin, None))
            .await
            .status,
        StatusCode::OK
    );
    let limited = send_tcp(qs.addr, req("GET", "/v1/whoami", &admin, None)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["retry-after"], "30");
    assert_eq!(
        limited.json(),
        envelope("RATE_LIMITED", "Rate limit exceeded: retry later")
    );
    let (exit, _, _) = qs.stop();
    assert!(exit.success());
}

/// The quickstart serves the management API's OpenAPI document, without a key: the very
/// document the `openapi` tests check against the API.
#[cfg(feature = "openapi")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_serves_the_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let mut qs = Quickstart::start(&dir.path().join("quickstart.db"));
    qs.admin_key();
    qs.wait_ready().await;
    let reply = send_tcp(
        qs.addr,
        Request::get("/openapi.json").body(String::new()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    let doc = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    assert_eq!(doc, serde_json::to_value(keygate::api::openapi()).unwrap());
    let (exit, _, _) = qs.stop();
    assert!(exit.success());
}

#[test]
fn quickstart_refuses_a_bad_setting_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(quickstart_binary())
        .env("KEYGATE_ADDR", free_addr().to_string())
        .env("KEYGATE_DB", dir.path().join("bad.db"))
        .env("KEYGATE_RATE_LIMIT_PER_MINUTE", "lots")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("KEYGATE_RATE_LIMIT_PER_MINUTE must be a positive integer, got \"lots\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_admin_can_revoke_a_key_that_used_up_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    for (db, env, refused, message) in [
        (
            "rate.db",
            [
                ("KEYGATE_RATE_LIMIT_PER_MINUTE", "2"),
                ("KEYGATE_MONTHLY_QUOTA", "unlimited"),
            ],
            StatusCode::TOO_MANY_REQUESTS,
            envelope("RATE_LIMITED", "Rate limit exceeded: retry later"),
        ),
        (
            "quota.db",
            [
                ("KEYGATE_RATE_LIMIT_PER_MINUTE", "100"),
                ("KEYGATE_MONTHLY_QUOTA", "2"),
            ],
            StatusCode::FORBIDDEN,
            envelope("FORBIDDEN", "Quota exhausted for the current period"),
        ),
    ] {
        let mut qs = Quickstart::start_with(&dir.path().join(db), &env);
        let mut first = String::new();
        qs.stdout.read_line(&mut first).unwrap();
        let admin = first
            .trim_end()
            .strip_prefix("admin key: ")
            .unwrap()
            .to_owned();
        qs.wait_ready().await;
        let addr = qs.addr;

        // The admin issues a key (not counted), which then leaks and uses up the limit.
        let created = send_tcp(
            addr,
            req(
                "POST",
                "/v1/api-keys",
                &admin,
                Some(r#"{"name":"leaked","scopes":["read"]}"#),
            ),
        )
        .await;
        assert_eq!(created.status, StatusCode::CREATED, "{db}");
        assert!(created.headers.get("x-ratelimit-limit").is_none(), "{db}");
        let leaked = created.json()["data"]["key"].as_str().unwrap().to_owned();
        let leaked_id = created.json()["data"]["id"].as_str().unwrap().to_owned();
        for _ in 0..2 {
            let ok = send_tcp(addr, req("GET", "/v1/documents", &leaked, None)).await;
            assert_eq!(ok.status, StatusCode::OK, "{db}");
        }
        let blocked = send_tcp(addr, req("GET", "/v1/documents", &leaked, None)).await;
        assert_eq!(
            (blocked.status, blocked.json()),
            (refused, message.clone()),
            "{db}"
        );
        // The admin's own data calls are blocked too...
        let whoami = send_tcp(addr, req("GET", "/v1/whoami", &admin, None)).await;
        assert_eq!((whoami.status, whoami.json()), (refused, message), "{db}");
        // ...but not its management calls.
        let listed = send_tcp(addr, req("GET", "/v1/api-keys", &admin, None)).await;
        assert_eq!(listed.status, StatusCode::OK, "{db}");
        let revoked = send_tcp(
            addr,
            req("DELETE", &format!("/v1/api-keys/{leaked_id}"), &admin, None),
        )
        .await;
        assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{db}");
        let gone = send_tcp(addr, req("GET", "/v1/documents", &leaked, None)).await;
        assert_eq!(
            (gone.status, gone.json()),
            (StatusCode::UNAUTHORIZED, envelope("UNAUTHORIZED", REVOKED)),
            "{db}"
        );
        let (exit, _, _) = qs.stop();
        assert!(exit.success());
    }
}

/// Tenant `demo`'s quota account this month, as the quickstart's ledger keeps it.
fn demo_month() -> keygate::limit::QuotaAccount<'static> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    keygate::limit::QuotaAccount {
        tenant_id: "demo",
        period: keygate::limit::QuotaPeriod::Month,
        period_start: keygate::limit::QuotaPeriod::Month.bounds(now).0,
    }
}

async fn whoami_status(addr: SocketAddr, key: &str) -> u16 {
    send_tcp(addr, req("GET", "/v1/whoami", key, None))
        .await
        .status
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_quota_survives_a_clean_restart_and_a_kill_9_within_its_bound() {
    use keygate::limit::QuotaLedger;
    let dir = tempfile::tempdir().unwrap();

    // Quota 3, three requests, a clean stop: after the restart the fourth is refused.
    let db = dir.path().join("clean.db");
    let quota = [("KEYGATE_MONTHLY_QUOTA", "3")];
    let mut qs = Quickstart::start_with(&db, &quota);
    let admin = qs.admin_key();
    qs.wait_ready().await;
    for _ in 0..3 {
        assert_eq!(whoami_status(qs.addr, &admin).await, 200);
    }
    let (exit, _, logs) = qs.stop();
    assert!(exit.success());
    assert!(logs.contains("quota_given_back"), "{logs}");
    let qs = Quickstart::start_with(&db, &quota);
    qs.wait_ready().await;
    let refused = send_tcp(qs.addr, req("GET", "/v1/whoami", &admin, None)).await;
    assert_eq!(
        (refused.status, refused.json()),
        (
            StatusCode::FORBIDDEN,
            envelope("FORBIDDEN", "Quota exhausted for the current period")
        )
    );
    let (exit, _, _) = qs.stop();
    assert!(exit.success());

    // Quota 10, three requests, kill -9. The documented bound: the blocks the instance held
    // stay counted, and with fewer than 32 left a block is 1 unit, so at most 1 is lost.
    let db = dir.path().join("killed.db");
    let quota = [("KEYGATE_MONTHLY_QUOTA", "10")];
    let mut qs = Quickstart::start_with(&db, &quota);
    let admin = qs.admin_key();
    qs.wait_ready().await;
    for _ in 0..3 {
        assert_eq!(whoami_status(qs.addr, &admin).await, 200);
    }
    qs.kill_9();
    let store = SqliteStore::open(&db).await.unwrap();
    let used = store.used(&demo_month()).await.unwrap();
    assert!((3..=4).contains(&used), "{used} counted after 3 requests");
    store.pool().close().await;
    // After the restart exactly what was not counted is admitted.
    let qs = Quickstart::start_with(&db, &quota);
    qs.wait_ready().await;
    let mut admitted = 0;
    while whoami_status(qs.addr, &admin).await == 200 {
        admitted += 1;
    }
    assert_eq!(admitted, 10 - used);
    let (exit, _, _) = qs.stop();
    assert!(exit.success());
}

/// Two quickstarts on one PostgreSQL database and one Redis: one rate limit and one quota
/// between them, and the quota still used up after both restart.
#[cfg(all(feature = "postgres", feature = "redis"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_quickstarts_share_one_rate_limit_and_one_quota() {
    let server = crate::common::postgres_url();
    let redis = std::env::var("KEYGATE_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!("KEYGATE_TEST_REDIS_URL is not set: point it at a Redis server, e.g. redis://127.0.0.1:6379")
    });
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let run = format!("{}_{nanos}", std::process::id());
    // A database of its own, so that the first start finds no keys and prints the admin key.
    let name = format!("keygate_quickstart_{run}");
    let admin_pool = sqlx::PgPool::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {server}: {e}"));
    let create = format!("CREATE DATABASE {name}");
    sqlx::query(&create).execute(&admin_pool).await.unwrap();
    let base = server.split('?').next().unwrap();
    let database = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
    let dir = tempfile::tempdir().unwrap();
    let unused_file = dir.path().join("unused.db");

    let env = |prefix: &str, rate: &'static str, quota: &'static str| {
        vec![
            ("KEYGATE_DATABASE_URL", database.clone()),
            ("KEYGATE_REDIS_URL", redis.clone()),
            (
                "KEYGATE_REDIS_PREFIX",
                format!("keygate-test:{run}:{prefix}:"),
            ),
            ("KEYGATE_RATE_LIMIT_PER_MINUTE", rate.to_owned()),
            ("KEYGATE_MONTHLY_QUOTA", quota.to_owned()),
        ]
    };
    let start = |env: &[(&'static str, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Quickstart::start_with(&unused_file, &env)
    };

    // One rate limit of 3 a minute between the two.
    let rate = env("rate", "3", "unlimited");
    let mut a = start(&rate);
    let admin = a.admin_key();
    a.wait_ready().await;
    let b = start(&rate);
    b.wait_ready().await;
    assert_eq!(whoami_status(a.addr, &admin).await, 200);
    assert_eq!(whoami_status(b.addr, &admin).await, 200);
    assert_eq!(whoami_status(a.addr, &admin).await, 200);
    let limited = send_tcp(b.addr, req("GET", "/v1/whoami", &admin, None)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["retry-after"], "20");
    assert_eq!(
        limited.json(),
        envelope("RATE_LIMITED", "Rate limit exceeded: retry later")
    );
    for qs in [a, b] {
        let (exit, out, _) = qs.stop();
        assert!(exit.success());
        assert_eq!(out, "");
    }

    // One quota of 5 between them, still used up after both restart.
    let quota = env("quota", "100", "5");
    let (a, b) = (start(&quota), start(&quota));
    a.wait_ready().await;
    b.wait_ready().await;
    let mut statuses = Vec::new();
    for i in 0..7 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        statuses.push(whoami_status(addr, &admin).await);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 403, 403]);
    for qs in [a, b] {
        assert!(qs.stop().0.success());
    }
    let (a, b) = (start(&quota), start(&quota));
    a.wait_ready().await;
    b.wait_ready().await;
    assert_eq!(whoami_status(a.addr, &admin).await, 403);
    assert_eq!(whoami_status(b.addr, &admin).await, 403);
    for qs in [a, b] {
        assert!(qs.stop().0.success());
    }

    let drop = format!("DROP DATABASE {name} WITH (FORCE)");
    sqlx::query(&drop).execute(&admin_pool).await.unwrap();
}

/// A shared backend named without the feature that brings it is refused at start, clearly.
#[cfg(not(all(feature = "postgres", feature = "redis")))]
#[test]
fn quickstart_refuses_a_backend_it_was_built_without() {
    let dir = tempfile::tempdir().unwrap();
    let (name, value, feature) = if cfg!(feature = "redis") {
        ("KEYGATE_DATABASE_URL", "postgres://127.0.0.1/x", "postgres")
    } else {
        ("KEYGATE_REDIS_URL", "redis://127.0.0.1:6379", "redis")
    };
    let output = Command::new(quickstart_binary())
        .env("KEYGATE_ADDR", free_addr().to_string())
        .env("KEYGATE_DB", dir.path().join("unused.db"))
        .env(name, value)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains(&format!(
            "error: {name} needs the `{feature}` feature: cargo run --example quickstart --features {feature}"
        )),
        "{err}"
    );
}

/// A quickstart process whose stdout lines arrive on a channel, so that a test can look for a
/// line without blocking on a process that prints none.
#[cfg(feature = "postgres")]
struct Instance {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    addr: SocketAddr,
}

#[cfg(feature = "postgres")]
impl Instance {
    fn start(database_url: &str) -> Instance {
        let addr = free_addr();
        let mut child = Command::new(quickstart_binary())
            .env("KEYGATE_ADDR", addr.to_string())
            .env("KEYGATE_DATABASE_URL", database_url)
            .env("RUST_LOG", "info,keygate=trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Instance { child, lines, addr }
    }

    async fn wait_ready(&mut self) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("the quickstart exited with {status}: {err}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the quickstart did not start listening on {}", self.addr);
    }

    /// The lines printed so far (the admin key is printed before the server listens).
    fn printed(&self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
            lines.push(line);
        }
        lines
    }

    /// SIGTERM; the exit status and stderr.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (exit, err)
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_quickstarts_on_one_postgres_database() {
    let (url, name, admin_pool) = crate::common::fresh_postgres_database("keygate_qs").await;

    // Both start at once on an empty database: exactly one prints the admin key.
    let mut a = Instance::start(&url);
    let mut b = Instance::start(&url);
    a.wait_ready().await;
    b.wait_ready().await;
    let (printed_a, printed_b) = (a.printed(), b.printed());
    let printed: Vec<&String> = printed_a.iter().chain(&printed_b).collect();
    assert_eq!(printed.len(), 1, "one line between them: {printed:?}");
    let admin = printed[0]
        .strip_prefix("admin key: ")
        .expect("`admin key: <key>`")
        .to_owned();
    assert!(admin.starts_with("sk_test_"));

    // A key issued through instance A works on instance B.
    let created = send_tcp(
        a.addr,
        req(
            "POST",
            "/v1/api-keys",
            &admin,
            Some(r#"{"name":"reader","scopes":["read"]}"#),
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let reader = created.json()["data"]["key"].as_str().unwrap().to_owned();
    let reader_id = created.json()["data"]["id"].as_str().unwrap().to_owned();
    // Let B see the issue's notification first, then cache the key with a request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let ok = send_tcp(b.addr, req("GET", "/v1/documents", &reader, None)).await;
        assert_eq!(ok.status, StatusCode::OK);
    }

    // Revoked through A's management API: B refuses it within a second.
    let revoked = send_tcp(
        a.addr,
        req("DELETE", &format!("/v1/api-keys/{reader_id}"), &admin, None),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let start = std::time::Instant::now();
    loop {
        let r = send_tcp(b.addr, req("GET", "/v1/documents", &reader, None)).await;
        if r.status == StatusCode::UNAUTHORIZED {
            assert_eq!(r.json(), envelope("UNAUTHORIZED", REVOKED));
            println!("revoked on A, refused by B after {:?}", start.elapsed());
            break;
        }
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "B still accepts a key revoked on A after a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut logs = String::new();
    for instance in [a, b] {
        let (exit, err) = instance.stop();
        assert!(exit.success(), "exit status {exit}: {err}");
        logs.push_str(&err);
    }
    for secret in [&admin, &reader] {
        assert!(
            !logs.contains(&secret[8..]),
            "a secret in the quickstart's logs"
        );
    }
    assert!(!logs.contains(&url), "the database URL in the logs");

    // A later start finds the key and prints none.
    let mut again = Instance::start(&url);
    again.wait_ready().await;
    let who = send_tcp(again.addr, req("GET", "/v1/whoami", &admin, None)).await;
    assert_eq!(who.status, StatusCode::OK);
    assert_eq!(again.printed(), Vec::<String>::new());
    let (exit, _) = again.stop();
    assert!(exit.success());

    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin_pool)
        .await
        .unwrap();
}

#[test]
fn quickstart_takes_its_sqlite_file_from_keygate_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("named.db");
    let addr = free_addr();
    let mut child = Command::new(quickstart_binary())
        .env("KEYGATE_ADDR", addr.to_string())
        .env("KEYGATE_DATABASE_URL", &db)
        .env("KEYGATE_DB", dir.path().join("ignored.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("admin key: sk_test_"), "{first}");
    // Listening means its signal handler is in place.
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(db.exists());
    assert!(!dir.path().join("ignored.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_serves_its_metrics_to_a_prometheus_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let mut qs = Quickstart::start(&dir.path().join("metrics.db"));
    let admin = qs.admin_key();
    qs.wait_ready().await;
    let addr = qs.addr;

    for _ in 0..2 {
        let who = send_tcp(addr, req("GET", "/v1/whoami", &admin, None)).await;
        assert_eq!(who.status, StatusCode::OK);
    }
    let missing = send_tcp(
        addr,
        Request::get("/v1/whoami").body(String::new()).unwrap(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    let bad = send_tcp(addr, req("GET", "/v1/whoami", "sk_test_nope", None)).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);

    // Public: no key needed.
    let scrape = send_tcp(addr, Request::get("/metrics").body(String::new()).unwrap()).await;
    assert_eq!(scrape.status, StatusCode::OK);
    assert_eq!(scrape.headers["content-type"], "text/plain; version=0.0.4");
    let text = std::str::from_utf8(&scrape.body).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for line in [
        "# TYPE keygate_requests_total counter",
        r#"keygate_requests_total{outcome="admitted"} 2"#,
        r#"keygate_requests_total{outcome="refused",code="UNAUTHORIZED",reason="missing_credential"} 1"#,
        r#"keygate_requests_total{outcome="refused",code="UNAUTHORIZED",reason="malformed"} 1"#,
        r#"keygate_requests_total{outcome="refused",code="UNAUTHORIZED",reason="unknown_key"} 0"#,
        // The first call asked the database, the second was answered from the key cache.
        r#"keygate_key_cache_total{result="miss"} 1"#,
        r#"keygate_key_cache_total{result="hit"} 1"#,
        "# TYPE keygate_store_duration_seconds histogram",
        r#"keygate_store_duration_seconds_count{op="find"} 1"#,
    ] {
        assert!(lines.contains(&line), "{line} not in\n{text}");
    }
    assert!(!text.contains(&admin[8..]), "a secret in the metrics");

    let (exit, _, _) = qs.stop();
    assert!(exit.success(), "exit status {exit}");
}

/// From a review of the quickstart: a port in use must not cost the one printing of the admin
/// key; a suspension of `demo` made with the CLI outlives a restart (the settings give the
/// plan, not the status); SIGTERM stops the quickstart after a grace period even while a client
/// holds a request half-sent, and the stop still writes what it must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_restarts_keep_the_key_the_suspension_and_a_bounded_stop() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ops.db");

    // The port is taken: nothing is printed, the error names the setting.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let output = Command::new(quickstart_binary())
        .env("KEYGATE_ADDR", taken.local_addr().unwrap().to_string())
        .env("KEYGATE_DB", &db)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.starts_with("error: KEYGATE_ADDR \""), "{err}");
    drop(taken);

    // The first start that serves prints the key.
    let mut qs = Quickstart::start(&db);
    let admin = qs.admin_key();
    qs.wait_ready().await;
    assert_eq!(whoami_status(qs.addr, &admin).await, 200);
    let (exit, _, _) = qs.stop();
    assert!(exit.success());

    // Suspended while it was stopped, as the CLI does: still suspended after the restart.
    let database = keygate::setup::Database::sqlite(&db).await.unwrap();
    let suspended = database
        .set_tenant_status("demo", keygate::plan::TenantStatus::Suspended)
        .await
        .unwrap();
    assert!(suspended);
    drop(database);
    let qs = Quickstart::start(&db);
    qs.wait_ready().await;
    let refused = send_tcp(qs.addr, req("GET", "/v1/whoami", &admin, None)).await;
    assert_eq!(
        (refused.status, refused.json()),
        (
            StatusCode::FORBIDDEN,
            envelope("FORBIDDEN", "Tenant suspended")
        )
    );

    // A client holds a request half-sent: SIGTERM still ends the process, cleanly.
    use tokio::io::AsyncWriteExt;
    let mut stalled = tokio::net::TcpStream::connect(qs.addr).await.unwrap();
    stalled
        .write_all(b"GET /health HTTP/1.1\r\nhost: keygate\r\n")
        .await
        .unwrap();
    let stopped = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || qs.stop()),
    )
    .await
    .expect("SIGTERM ends the quickstart despite the stalled client")
    .unwrap();
    let (exit, _, logs) = stopped;
    assert!(exit.success(), "{logs}");
    assert!(
        logs.contains("connections still open after the grace period"),
        "{logs}"
    );
    assert!(logs.contains("last_used_written"), "{logs}");
    drop(stalled);
}
