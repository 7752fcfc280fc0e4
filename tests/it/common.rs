//! Shared fixtures for keygate's integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keygate::hash::KeyHasher;
use keygate::key::{ApiKey, Environment, KeyFormat};
use keygate::scope::Scope;
use keygate::store::{KeyRecord, MemoryStore};
use time::{Duration, OffsetDateTime};

/// A record for `key`, as an issuing service would store it.
pub fn record(key: &ApiKey, id: &str, tenant: &str, scopes: &[&'static str]) -> KeyRecord {
    KeyRecord::builder(id, tenant, KeyHasher::sha256().hash(key.expose_secret()))
        .key(key)
        .name(format!("{id} name"))
        .scopes(scopes.iter().map(|s| Scope::from_static(s)).collect())
        .metadata(serde_json::Map::from_iter([(
            "team".to_owned(),
            serde_json::json!("core"),
        )]))
        .build()
}

/// A memory store seeded with one key of each interesting kind.
pub struct Fixture {
    pub store: MemoryStore,
    /// `acme`, scopes `write`, live.
    pub writer: ApiKey,
    /// `acme`, scopes `read`, live.
    pub reader: ApiKey,
    /// `acme`, scopes `admin`, test environment.
    pub test_admin: ApiKey,
    pub revoked: ApiKey,
    pub expired: ApiKey,
    /// Well-formed, never stored.
    pub unknown: ApiKey,
}

impl Fixture {
    pub fn new() -> Self {
        let format = KeyFormat::default();
        let store = MemoryStore::new();
        let writer = format.generate(Environment::Live);
        let reader = format.generate(Environment::Live);
        let test_admin = format.generate(Environment::Test);
        let revoked = format.generate(Environment::Live);
        let expired = format.generate(Environment::Live);
        let unknown = format.generate(Environment::Live);
        let past = OffsetDateTime::now_utc() - Duration::minutes(5);
        store.put(record(&writer, "key_writer", "acme", &["write"]));
        store.put(record(&reader, "key_reader", "acme", &["read"]));
        store.put(record(&test_admin, "key_test_admin", "acme", &["admin"]));
        store.put(KeyRecord {
            revoked_at: Some(past),
            ..record(&revoked, "key_revoked", "acme", &["admin"])
        });
        store.put(KeyRecord {
            expires_at: Some(past),
            ..record(&expired, "key_expired", "acme", &["admin"])
        });
        Fixture {
            store,
            writer,
            reader,
            test_admin,
            revoked,
            expired,
            unknown,
        }
    }

    /// Every secret of the fixture, for leak checks.
    pub fn secrets(&self) -> Vec<String> {
        [
            &self.writer,
            &self.reader,
            &self.test_admin,
            &self.revoked,
            &self.expired,
            &self.unknown,
        ]
        .iter()
        .map(|k| k.expose_secret().to_owned())
        .collect()
    }
}

/// Counts calls, to prove the inner service never ran.
#[derive(Clone, Default)]
pub struct Calls(Arc<AtomicUsize>);

impl Calls {
    pub fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The JSON error envelope keygate answers with.
pub fn envelope(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"success": false, "error": {"code": code, "message": message}})
}

pub const MISSING: &str =
    "Missing API key: send it in the x-api-key header or as Authorization: Bearer <key>";
pub const MULTIPLE: &str = "More than one credential in the request: send exactly one API key";
pub const UNSUPPORTED: &str = "Unsupported authorization scheme: use Authorization: Bearer <key>";
/// The same three refusals as a gRPC client reads them: credentials travel in metadata there.
pub const GRPC_MISSING: &str =
    "Missing API key: send it in the x-api-key metadata or as authorization: Bearer <key>";
pub const GRPC_MULTIPLE: &str =
    "More than one credential in the call metadata: send exactly one API key";
pub const GRPC_UNSUPPORTED: &str =
    "Unsupported authorization scheme: send the authorization metadata as Bearer <key>";
pub const MALFORMED: &str = "Malformed API key";
pub const INVALID: &str = "Invalid API key";
pub const REVOKED: &str = "API key has been revoked";
pub const EXPIRED: &str = "API key has expired";
pub const UNAVAILABLE: &str = "Authentication is temporarily unavailable: retry later";
pub const WWW_MISSING: &str = "Bearer realm=\"api\"";
pub const WWW_INVALID: &str = "Bearer realm=\"api\", error=\"invalid_token\"";

/// A store whose backend always fails.
pub struct FailingStore;

#[async_trait::async_trait]
impl keygate::store::KeyStore for FailingStore {
    async fn find(&self, _: &keygate::hash::KeyDigest) -> keygate::store::Lookup {
        Err(keygate::store::StoreError::backend(std::io::Error::other(
            "connection refused",
        )))
    }
}

/// A managed store whose backend is down, in one of two ways: every lookup and every change
/// times out at once, or never answers (and only the caller's own timeout ends it).
#[derive(Clone, Copy)]
pub enum DownStore {
    TimesOut,
    Hangs,
}

impl DownStore {
    async fn fail<T>(self) -> Result<T, keygate::store::StoreError> {
        match self {
            DownStore::TimesOut => Err(keygate::store::StoreError::Timeout),
            DownStore::Hangs => std::future::pending().await,
        }
    }
}

#[async_trait::async_trait]
impl keygate::store::KeyStore for DownStore {
    async fn find(&self, _: &keygate::hash::KeyDigest) -> keygate::store::Lookup {
        self.fail().await
    }
}

#[async_trait::async_trait]
impl keygate::store::ManagedKeyStore for DownStore {
    async fn insert(
        &self,
        _: keygate::store::KeyRecord,
        _: Option<usize>,
    ) -> Result<(), keygate::store::StoreError> {
        self.fail().await
    }
    async fn get(
        &self,
        _: &str,
        _: &str,
        _: time::OffsetDateTime,
    ) -> Result<Option<keygate::store::KeyRecord>, keygate::store::StoreError> {
        self.fail().await
    }
    async fn list(
        &self,
        _: &str,
        _: time::OffsetDateTime,
    ) -> Result<Vec<keygate::store::KeyRecord>, keygate::store::StoreError> {
        self.fail().await
    }
    async fn rename(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: time::OffsetDateTime,
    ) -> Result<Option<keygate::store::KeyRecord>, keygate::store::StoreError> {
        self.fail().await
    }
    async fn revoke(
        &self,
        _: &str,
        _: &str,
        _: time::OffsetDateTime,
    ) -> Result<Option<keygate::store::KeyRecord>, keygate::store::StoreError> {
        self.fail().await
    }
    async fn rotate(
        &self,
        _: &str,
        _: &str,
        _: keygate::store::KeyRecord,
        _: time::OffsetDateTime,
        _: time::OffsetDateTime,
        _: Option<usize>,
    ) -> Result<Option<keygate::store::KeyRecord>, keygate::store::StoreError> {
        self.fail().await
    }
    async fn touch(
        &self,
        _: &[(String, time::OffsetDateTime)],
    ) -> Result<(), keygate::store::StoreError> {
        self.fail().await
    }
}

/// Serves `app` on a fresh loopback port; the server lives as long as the test's runtime.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// Serves `app` on a fresh port of a dual-stack `[::]` listener, where IPv4 clients appear as
/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`); returns the port's IPv4 loopback address,
/// so that requests come from such a client.
pub async fn serve_dual_stack(app: axum::Router) -> std::net::SocketAddr {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
    socket.set_only_v6(false).unwrap();
    socket.set_nonblocking(true).unwrap();
    let any: std::net::SocketAddr = "[::]:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    socket.listen(128).unwrap();
    let listener = tokio::net::TcpListener::from_std(socket.into()).unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// A response read whole.
pub struct Reply {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends one request over real TCP with hyper's client, in HTTP/1.1.
pub async fn send_tcp(addr: std::net::SocketAddr, req: http::Request<String>) -> Reply {
    send_tcp_as(addr, req, false).await
}

/// Sends one request over real TCP with hyper's client, in HTTP/2 (prior knowledge).
pub async fn send_tcp_h2(addr: std::net::SocketAddr, req: http::Request<String>) -> Reply {
    send_tcp_as(addr, req, true).await
}

async fn send_tcp_as(addr: std::net::SocketAddr, req: http::Request<String>, h2: bool) -> Reply {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, String> = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http();
    let (mut parts, body) = req.into_parts();
    let uri = format!(
        "http://{addr}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    parts.uri = uri.parse().unwrap();
    let response = client
        .request(http::Request::from_parts(parts, body))
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// Captures everything logged at TRACE and above while it is alive (on this thread).
pub struct LogCapture {
    buffer: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogCapture {
    pub fn start() -> Self {
        let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || BufferWriter(writer.clone()))
            .finish();
        LogCapture {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

struct BufferWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The PostgreSQL server of KEYGATE_TEST_POSTGRES_URL; fails with a clear message when unset.
#[cfg(feature = "postgres")]
pub fn postgres_url() -> String {
    std::env::var("KEYGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("KEYGATE_TEST_POSTGRES_URL is not set: point it at a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/test")
    })
}

/// A database of its own for one test, named `<label>_<16 hex digits>`, on the server of
/// KEYGATE_TEST_POSTGRES_URL: its URL, its name, and a pool on the test database to drop it with.
#[cfg(feature = "postgres")]
pub async fn fresh_postgres_database(label: &str) -> (String, String, sqlx::PgPool) {
    let url = postgres_url();
    let admin = sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| {
        panic!("cannot reach PostgreSQL at KEYGATE_TEST_POSTGRES_URL={url}: {e}")
    });
    let name = keygate::store::conformance::tenant().replace("tenant", label);
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url.as_str(), String::new()),
    };
    let server = &base[..base.rfind('/').unwrap()];
    (format!("{server}/{name}{query}"), name, admin)
}

/// `GET /` with `key` in `x-api-key`.
pub fn get_req(key: &ApiKey) -> http::Request<String> {
    http::Request::get("/")
        .header("x-api-key", key.expose_secret())
        .body(String::new())
        .unwrap()
}

/// A binary of the keygate package, built with this suite's features: `--bin keygate` (the
/// CLI) or `--example quickstart`. The suite is a package of its own, so cargo does not build
/// them for it; each is built here once per run (a no-op when up to date), never taken stale.
pub fn keygate_binary(kind: &str, name: &str) -> std::path::PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<HashMap<String, std::path::PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    let target = format!("--{kind} {name}");
    if let Some(path) = built.get(&target) {
        return path.clone();
    }
    let features: Vec<&str> = [
        ("axum", cfg!(feature = "axum")),
        ("sqlite", cfg!(feature = "sqlite")),
        ("postgres", cfg!(feature = "postgres")),
        ("redis", cfg!(feature = "redis")),
        ("dev-mode", cfg!(feature = "dev-mode")),
        ("cli", cfg!(feature = "cli")),
        ("openapi", cfg!(feature = "openapi")),
        ("metrics", cfg!(feature = "metrics")),
    ]
    .into_iter()
    .filter_map(|(feature, on)| on.then_some(feature))
    .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "keygate",
            &format!("--{kind}"),
            name,
        ])
        .args(["--no-default-features", "--features", &features.join(",")])
        .current_dir(root)
        .status()
        .unwrap();
    assert!(status.success(), "building keygate's {target} failed");
    // Next to this test's binary: target/<profile>/deps/it-… -> target/<profile>/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = match kind {
        "example" => profile_dir.join("examples").join(name),
        _ => profile_dir.join(name),
    };
    built.insert(target, path.clone());
    path
}

/// Tenant writes abandoned part way, 300 times, at points spread over one and a half times
/// what a write takes when waited for (a suspension, then a resumption, in turn): `set(status)`
/// writes a status, `cache()` makes the cache under test hold the tenant's status, and after
/// each abandoned write `agrees()` must hold within 2 s. An abandoned write may still land
/// after the next one (its task goes on): only agreement is checked, not which status won.
pub async fn abandon_tenant_writes<S, SF, C, CF, A, AF>(set: S, cache: C, agrees: A)
where
    S: Fn(keygate::plan::TenantStatus) -> SF,
    SF: std::future::Future<Output = ()>,
    C: Fn() -> CF,
    CF: std::future::Future<Output = ()>,
    A: Fn() -> AF,
    AF: std::future::Future<Output = bool>,
{
    use keygate::plan::TenantStatus::{Active, Suspended};
    use std::time::{Duration, Instant};
    const ATTEMPTS: u32 = 300;
    let started = Instant::now();
    set(Active).await;
    let write = started.elapsed();
    for attempt in 0..ATTEMPTS {
        let (from, to) = match attempt % 2 {
            0 => (Active, Suspended),
            _ => (Suspended, Active),
        };
        set(from).await;
        cache().await;
        let spin = write * 3 / 2 * attempt / ATTEMPTS;
        abandon_after(set(to), spin).await;
        let started = Instant::now();
        while !agrees().await {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "attempt {attempt}: the cache disagrees with the database"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Polls `write` for about `spin`, then drops it: a caller that stops waiting (a timeout, a
/// client gone) at a point that moves with `spin`, before, during or after the write's commit.
async fn abandon_after<F: std::future::Future>(write: F, spin: std::time::Duration) {
    let mut write = std::pin::pin!(write);
    let start = std::time::Instant::now();
    loop {
        let ready =
            std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx).is_ready()))
                .await;
        if ready || start.elapsed() >= spin {
            return;
        }
        // Blocking on purpose: the database's own threads carry the write on meanwhile.
        std::thread::sleep(std::time::Duration::from_micros(5));
    }
}

/// A tonic health service reporting `SERVING`, the reporter that keeps it so (hold it while the
/// server runs), and a loopback listener for the server.
pub async fn serving_health() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    tokio::net::TcpListener,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    (reporter, health, listener)
}
