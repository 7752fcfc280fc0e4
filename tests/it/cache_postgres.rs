//! The key cache on PostgreSQL: the conformance suite through the cache, single flight, and
//! two instances on one database, each with its own pool, cache, listener, verifier and
//! manager: a change on one is seen by the other within a second; a lost listener connection
//! flushes the cache, says so, and comes back. Needs a server: set KEYGATE_TEST_POSTGRES_URL.

use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::cache::{Gated, thousand_concurrent_misses};
use crate::common::*;
use keygate::cache::{CachedStore, ChangeListener};
use keygate::key::{Environment, KeyFormat};
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::plan::{CachedEntitlements, Plan, TenantEntitlements, TenantStatus};
use keygate::request::RequestHead;
use keygate::store::{KeyStore, ManagedKeyStore, PostgresStore, conformance};

use keygate::{AuthError, Tenant, Verifier};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

fn url() -> String {
    crate::common::postgres_url()
}

/// A store on a pool of its own, its connections named `application_name`.
async fn connect_as(application_name: &str) -> PostgresStore {
    let url = url();
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .application_name(application_name);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at KEYGATE_TEST_POSTGRES_URL={url}: {e}")
        });
    PostgresStore::from_pool(pool).await.unwrap()
}

/// One service instance: its own pool, caches with an hour's TTL (so that only notifications
/// can make a change visible), listener, verifier and manager.
struct Instance {
    store: PostgresStore,
    keys: CachedStore<PostgresStore>,
    plans: CachedEntitlements<PostgresStore>,
    listener: ChangeListener,
    verifier: Verifier,
    manager: KeyManager,
}

impl Instance {
    async fn start(name: &str) -> Instance {
        let store = connect_as(name).await;
        let keys = CachedStore::builder(store.clone())
            .ttl(Duration::from_secs(3600))
            .unknown_ttl(Duration::from_secs(3600))
            .build();
        let plans = CachedEntitlements::new(store.clone(), Duration::from_secs(3600));
        let listener = ChangeListener::start(&store).await.unwrap();
        listener.subscribe(keys.clone());
        listener.subscribe(plans.clone());
        let verifier = Verifier::builder(keys.clone())
            .entitlements(plans.clone())
            .build();
        let manager = KeyManager::builder(keys.clone())
            .scheme(verifier.scheme().clone())
            .build();
        Instance {
            store,
            keys,
            plans,
            listener,
            verifier,
            manager,
        }
    }

    /// Verifies `key` until this instance's cache holds it (see [`hold`]).
    async fn hold(&self, key: &str) {
        hold(&self.keys, &self.verifier, key).await;
    }

    async fn verify(&self, key: &str) -> Result<Tenant, AuthError> {
        verify(&self.verifier, key).await
    }
}

/// `key` in `x-api-key`, through `verifier`.
async fn verify(verifier: &Verifier, key: &str) -> Result<Tenant, AuthError> {
    let request = http::Request::get("/")
        .header("x-api-key", key)
        .body(())
        .unwrap();
    verifier.verify(&RequestHead::from(&request), None).await
}

/// Verifies `key` through `verifier` until `keys` holds it: the notification of its issue may
/// come during or after the first lookup and drop it again (a lookup that an invalidation
/// overtook is not kept). From then on, only a notification can make the cache change (the
/// TTL is an hour).
async fn hold(keys: &CachedStore<PostgresStore>, verifier: &Verifier, key: &str) {
    let digest = keygate::hash::KeyHasher::sha256().hash(key);
    let start = Instant::now();
    loop {
        assert!(verify(verifier, key).await.is_ok());
        tokio::time::sleep(Duration::from_millis(50)).await;
        if keys.find_now(&digest).is_some() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never cached");
    }
}

/// A key issued on `a` for a new tenant named after `label`, then verified through `keys` until
/// that cache holds it: the tenant, the issued key and its secret.
async fn issue_and_hold(
    a: &Instance,
    keys: &CachedStore<PostgresStore>,
    verifier: &Verifier,
    label: &str,
) -> (String, keygate::lifecycle::IssuedKey, String) {
    let tenant = unique(label);
    let key = a
        .manager
        .issue("test", &tenant, NewKey::new("k", ["read"]))
        .await
        .unwrap();
    let secret = key.key.expose_secret().to_owned();
    hold(keys, verifier, &secret).await;
    (tenant, key, secret)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", conformance::tenant())
}

/// Polls `check` every 10 ms until it holds; fails unless it does within a second. Returns how
/// long it took.
async fn within_a_second<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            let took = start.elapsed();
            println!("{what}: seen after {took:?}");
            return took;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what}: not seen within a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_postgres_store_conforms() {
    let store = connect_as("keygate-conformance").await;
    conformance::run_all(|| {
        let store = store.clone();
        async move { CachedStore::new(store) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_make_one_postgres_query() {
    let store = connect_as("keygate-single-flight").await;
    let record = conformance::record(&conformance::tenant(), time::OffsetDateTime::now_utc());
    store.insert(record.clone(), None).await.unwrap();
    let cache = CachedStore::new(Gated::new(store));
    let answers = thousand_concurrent_misses(cache.clone(), record.digest).await;
    assert_eq!(cache.store().queries(), 1);
    for answer in answers {
        assert_eq!(*answer.unwrap().unwrap(), record);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_on_one_instance_is_seen_by_another_within_a_second() {
    let a = Instance::start("keygate-instance-a").await;
    let b = Instance::start("keygate-instance-b").await;
    let tenant = unique("cross");
    let plan = TenantEntitlements::active(Plan::default());
    a.plans.set_tenant(&tenant, &plan).await.unwrap();

    // Revocation.
    let key = a
        .manager
        .issue("test", &tenant, NewKey::new("revoked", ["read"]))
        .await
        .unwrap();
    let secret = key.key.expose_secret().to_owned();
    b.hold(&secret).await;
    a.manager
        .revoke("test", &tenant, &key.info.id)
        .await
        .unwrap();
    within_a_second("revocation", || async {
        matches!(b.verify(&secret).await, Err(AuthError::RevokedKey))
    })
    .await;

    // Rotation without grace: the old key stops on b, its successor works there.
    let old = a
        .manager
        .issue("test", &tenant, NewKey::new("rotated", ["read"]))
        .await
        .unwrap();
    let old_secret = old.key.expose_secret().to_owned();
    b.hold(&old_secret).await;
    let new = a
        .manager
        .rotate("test", &tenant, &old.info.id, None)
        .await
        .unwrap();
    within_a_second("rotation", || async {
        matches!(b.verify(&old_secret).await, Err(AuthError::RevokedKey))
    })
    .await;
    assert!(b.verify(new.key.expose_secret()).await.is_ok());

    // Rename.
    let new_secret = new.key.expose_secret().to_owned();
    b.hold(&new_secret).await;
    assert_eq!(b.verify(&new_secret).await.unwrap().key_name(), "rotated");
    a.manager
        .rename("test", &tenant, &new.info.id, "renamed")
        .await
        .unwrap();
    within_a_second("rename", || async {
        b.verify(&new_secret)
            .await
            .is_ok_and(|t| t.key_name() == "renamed")
    })
    .await;

    // A key b looked up before it existed (remembered as unknown for an hour) works on b
    // once a issues it.
    let late = KeyFormat::default().generate(Environment::Live);
    assert!(matches!(
        b.verify(late.expose_secret()).await,
        Err(AuthError::UnknownKey)
    ));
    let record = keygate::store::KeyRecord::builder(
        unique("key"),
        tenant.as_str(),
        keygate::hash::KeyHasher::sha256().hash(late.expose_secret()),
    )
    .key(&late)
    .scopes(keygate::scope::Scopes::from_static(&["read"]))
    .build();
    a.keys.insert(record, None).await.unwrap();
    within_a_second("issue", || async {
        b.verify(late.expose_secret()).await.is_ok()
    })
    .await;

    // Suspension of the tenant.
    a.plans
        .set_tenant(
            &tenant,
            &TenantEntitlements {
                status: TenantStatus::Suspended,
                ..plan
            },
        )
        .await
        .unwrap();
    within_a_second("suspension", || async {
        matches!(b.verify(&new_secret).await, Err(AuthError::TenantSuspended))
    })
    .await;
    assert!(a.listener.is_connected() && b.listener.is_connected());
    drop(a.store);
}

/// Logs are captured per thread: this test runs on one, with the listener's task.
#[tokio::test(flavor = "current_thread")]
async fn losing_the_listener_connection_flushes_the_cache_and_notifications_resume() {
    let logs = LogCapture::start();
    let a = Instance::start("keygate-loss-a").await;
    let name = unique("keygate-loss-listener");
    let b_store = connect_as("keygate-loss-b").await;
    let b_keys = CachedStore::builder(b_store.clone())
        .ttl(Duration::from_secs(3600))
        .build();
    let listener = ChangeListener::start(&connect_as(&name).await)
        .await
        .unwrap();
    listener.subscribe(b_keys.clone());
    let b = Verifier::builder(b_keys.clone()).build();
    let (tenant, key, secret) = issue_and_hold(&a, &b_keys, &b, "loss").await;
    assert_eq!(b_keys.len(), 1);

    // Kill the listener's connection from another one.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&name)
    .fetch_all(a.store.pool())
    .await
    .unwrap();
    assert!(
        !killed.is_empty() && killed.iter().all(|k| *k),
        "{killed:?}"
    );

    let lost = "key cache: change notifications lost; cache flushed, staleness bounded by the TTL until they are back";
    let start = Instant::now();
    while !logs.text().contains(lost) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no warning: {}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(b_keys.is_empty(), "flushed when the loss was seen");
    let text = logs.text();
    let line = text.lines().find(|l| l.contains(lost)).unwrap();
    assert!(line.contains("WARN"), "{line}");

    assert!(
        tokio::time::timeout(Duration::from_secs(10), listener.wait_connected())
            .await
            .unwrap()
    );
    assert!(
        logs.text()
            .contains("key cache: change notifications are back; cache flushed")
    );

    // Notifications flow again.
    hold(&b_keys, &b, &secret).await;
    assert_eq!(b_keys.len(), 1);
    a.manager
        .revoke("test", &tenant, &key.info.id)
        .await
        .unwrap();
    within_a_second("revocation after reconnecting", || async {
        matches!(verify(&b, &secret).await, Err(AuthError::RevokedKey))
    })
    .await;
    assert!(!logs.text().contains(&secret[8..]), "a key in the logs");
}

/// What the proxy of [`a_listener_reconnection_that_goes_silent_is_given_up_and_retried`]
/// does with connections.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Network {
    Healthy = 0,
    /// Every connection cut, new ones refused.
    Down = 1,
    /// New connections pass the client's first packet (the startup message), so that the
    /// handshake completes, and lose every later one: what a half-open path does.
    SilentAfterHandshake = 2,
    /// Every answer of the server reaches the client 800 ms late: a slow database.
    Slow = 3,
}

/// A TCP proxy in front of the test server whose behaviour can be switched.
struct Proxy {
    port: u16,
    network: std::sync::Arc<std::sync::atomic::AtomicU8>,
}

impl Proxy {
    async fn start(server: (String, u16)) -> Proxy {
        use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let network = std::sync::Arc::new(AtomicU8::new(Network::Healthy as u8));
        let state = network.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let now = state.load(SeqCst);
                if now == Network::Down as u8 {
                    continue;
                }
                let Ok(upstream) = tokio::net::TcpStream::connect(server.clone()).await else {
                    continue;
                };
                let silent = now == Network::SilentAfterHandshake as u8;
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = upstream.into_split();
                tokio::spawn(pump(
                    client_read,
                    server_write,
                    state.clone(),
                    silent,
                    false,
                ));
                tokio::spawn(pump(server_read, client_write, state.clone(), false, true));
            }
        });
        Proxy { port, network }
    }

    /// A store whose connections (and its listeners') go through a proxy.
    async fn in_front_of_a_store() -> (Proxy, PostgresStore) {
        let direct = PgConnectOptions::from_str(&url()).unwrap();
        let proxy = Proxy::start((direct.get_host().to_owned(), direct.get_port())).await;
        let options = direct.host("127.0.0.1").port(proxy.port);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL through the proxy: {e}"));
        (proxy, PostgresStore::from_pool(pool).await.unwrap())
    }

    fn set(&self, network: Network) {
        self.network
            .store(network as u8, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes or the network goes down; with `silent`, only the
/// first packet; with `answers`, late when the network is slow.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    network: std::sync::Arc<std::sync::atomic::AtomicU8>,
    silent: bool,
    answers: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let down = || network.load(std::sync::atomic::Ordering::SeqCst) == Network::Down as u8;
    let mut buf = vec![0; 64 * 1024];
    let mut packets = 0;
    loop {
        let read = tokio::time::timeout(Duration::from_millis(20), from.read(&mut buf)).await;
        if down() {
            return;
        }
        let n = match read {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        packets += 1;
        if silent && packets > 1 {
            continue;
        }
        if answers && network.load(std::sync::atomic::Ordering::SeqCst) == Network::Slow as u8 {
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A reconnection whose handshake passes and whose `LISTEN` is then lost (a half-open path
/// after a failover) is given up after 5 s and tried again: the listener comes back once the
/// network does, instead of waiting on that connection for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_reconnection_that_goes_silent_is_given_up_and_retried() {
    let (proxy, store) = Proxy::in_front_of_a_store().await;
    let listener = ChangeListener::start(&store).await.unwrap();
    assert!(listener.is_connected());

    // A glitch cuts the connection; the reconnection, 100 ms later, completes its handshake
    // and its `LISTEN` is lost.
    proxy.set(Network::Down);
    tokio::time::timeout(Duration::from_secs(5), async {
        while listener.is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the loss is seen");
    proxy.set(Network::SilentAfterHandshake);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!listener.is_connected());
    // The network is healthy again: the listener is back within the 5 s bound of the stalled
    // attempt and the backoff after it.
    proxy.set(Network::Healthy);
    let back = tokio::time::timeout(Duration::from_secs(10), listener.wait_connected()).await;
    assert_eq!(back, Ok(true), "the listener did not come back");
    listener.stop();
}

/// A database that answers 800 ms late: with the default 500 ms check, the listener counts
/// the connection lost at its first check (and flushes every cache); with a 2 s check it stays
/// connected. The guard bounds only how long the test waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_database_needs_a_longer_check_timeout() {
    let (proxy, store) = Proxy::in_front_of_a_store().await;
    let default = ChangeListener::start(&store).await.unwrap();
    let patient = ChangeListener::start_with_check_timeout(&store, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(default.is_connected() && patient.is_connected());
    proxy.set(Network::Slow);
    tokio::time::timeout(Duration::from_secs(10), async {
        while default.is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the default check gives up on a slow database");
    // Three more seconds (several checks) of the patient listener, watched all along.
    let mut stayed = true;
    for _ in 0..300 {
        stayed &= patient.is_connected();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stayed, "a 2 s check counted an 800 ms database lost");
    proxy.set(Network::Healthy);
    default.stop();
    patient.stop();
}

/// A cache subscribed after it was filled is flushed: it may hold what changes made before it
/// listened have made stale, and no notification will tell it of those.
#[tokio::test]
async fn a_cache_subscribed_late_is_flushed() {
    let a = Instance::start("keygate-late-a").await;
    let store = connect_as("keygate-late-b").await;
    let keys = CachedStore::builder(store.clone())
        .ttl(Duration::from_secs(3600))
        .build();
    let verifier = Verifier::builder(keys.clone()).build();
    let (tenant, key, secret) = issue_and_hold(&a, &keys, &verifier, "late").await;
    // Revoked before this cache listens.
    a.manager
        .revoke("test", &tenant, &key.info.id)
        .await
        .unwrap();
    let listener = ChangeListener::start(&store).await.unwrap();
    listener.subscribe(keys.clone());
    assert!(keys.is_empty());
    assert!(matches!(
        verify(&verifier, &secret).await,
        Err(AuthError::RevokedKey)
    ));
    listener.stop();
}
