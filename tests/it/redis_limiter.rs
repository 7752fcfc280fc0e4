//! `RedisLimiter` against a real Redis, over real TCP: exact across instances, all-or-nothing
//! across the three limits, one round trip per request, fail closed while Redis is away and
//! back without a restart. Needs a server: set KEYGATE_TEST_REDIS_URL (`.ci/run` points it at
//! the local one). Each test writes under a key prefix of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use axum::{Router, routing::get};
use http::StatusCode;
use keygate::key::{ApiKey, Environment, KeyFormat};
use keygate::limit::{Quota, QuotaPeriod, RateLimit, RedisLimiter};
use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
use keygate::store::MemoryStore;
use keygate::{AuthLayer, Verifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn url() -> String {
    std::env::var("KEYGATE_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!("KEYGATE_TEST_REDIS_URL is not set: point it at a Redis server, e.g. redis://127.0.0.1:6379")
    })
}

/// `host:port` of a `redis://host:port[/db]` URL.
fn redis_addr() -> String {
    let url = url();
    let rest = url.strip_prefix("redis://").unwrap_or(&url);
    rest.split('/').next().unwrap().to_owned()
}

/// A key prefix no other test or run uses.
fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("keygate-test:{test}:{}:{nanos}:", std::process::id())
}

async fn direct() -> redis::aio::MultiplexedConnection {
    let url = url();
    redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot reach Redis at KEYGATE_TEST_REDIS_URL={url}: {e}"))
}

/// Redis's clock, in microseconds.
async fn redis_now_us(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1_000_000 + micros
}

/// The quota counter the limiter keeps for `tenant` today (0 if none).
async fn quota_used(prefix: &str, tenant: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start = QuotaPeriod::Day.bounds(now).0;
    let key = format!("{prefix}{}:{{{tenant}}}:q:day:{start}", tenant.len());
    let used: Option<u64> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut direct().await)
        .await
        .unwrap();
    used.unwrap_or(0)
}

/// A TCP proxy in front of Redis that the test can cut and restore, and that counts the
/// commands the limiter sends (RESP arrays), so that Redis vanishes and comes back for one
/// limiter without disturbing the real server.
struct RedisProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    commands: Arc<AtomicUsize>,
}

impl RedisProxy {
    async fn start() -> RedisProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let commands = Arc::new(AtomicUsize::new(0));
        let (up2, cut2, commands2) = (up.clone(), cut.clone(), commands.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // Redis is "down": the connection closes at once.
                    continue;
                }
                let (mut cut, commands) = (cut2.subscribe(), commands2.clone());
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(redis_addr()).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut ur, mut uw) = upstream.into_split();
                    let to_redis = async {
                        let mut counter = RespCounter::default();
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = cr.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            commands.fetch_add(counter.feed(&buf[..n]), Ordering::SeqCst);
                            if uw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let to_client = async {
                        let _ = tokio::io::copy(&mut ur, &mut cw).await;
                    };
                    tokio::select! {
                        _ = to_redis => {},
                        _ = to_client => {},
                        _ = cut.changed() => {},
                    }
                });
            }
        });
        RedisProxy {
            addr,
            up,
            cut,
            commands,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Redis goes away: open connections drop, new ones are closed at once.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    fn commands(&self) -> usize {
        self.commands.load(Ordering::SeqCst)
    }
}

/// Counts complete RESP commands (`*<n>\r\n` then n bulk strings) in a byte stream.
#[derive(Default)]
struct RespCounter {
    pending: Vec<u8>,
}

impl RespCounter {
    fn feed(&mut self, bytes: &[u8]) -> usize {
        self.pending.extend_from_slice(bytes);
        let mut count = 0;
        while let Some(len) = command_len(&self.pending) {
            self.pending.drain(..len);
            count += 1;
        }
        count
    }
}

/// The length of the complete command at the start of `buf`, if it is all there.
fn command_len(buf: &[u8]) -> Option<usize> {
    fn line(buf: &[u8], at: usize) -> Option<(i64, usize)> {
        let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let n = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    }
    assert_eq!(buf.first().copied().unwrap_or(b'*'), b'*', "not a command");
    if buf.is_empty() {
        return None;
    }
    let (items, mut at) = line(buf, 0)?;
    for _ in 0..items {
        let (len, start) = line(buf, at)?;
        at = start + usize::try_from(len).unwrap() + 2;
        if at > buf.len() {
            return None;
        }
    }
    Some(at)
}

fn plan(
    rate: Option<RateLimit>,
    key_rate: Option<RateLimit>,
    quota: Option<u64>,
) -> TenantEntitlements {
    TenantEntitlements::active(Plan {
        name: "test".into(),
        rate_limit: rate,
        key_rate_limit: key_rate,
        quota: quota.map(|limit| Quota {
            limit,
            period: QuotaPeriod::Day,
        }),
        allowed_scopes: None,
    })
}

struct Tenant {
    store: MemoryStore,
    keys: Vec<ApiKey>,
    plans: MemoryEntitlements,
}

fn tenant(entitlements: TenantEntitlements, keys: usize) -> Tenant {
    let store = MemoryStore::new();
    let plans = MemoryEntitlements::new();
    plans.set("acme", entitlements);
    let keys = (0..keys)
        .map(|i| {
            let key = KeyFormat::default().generate(Environment::Live);
            store.put(record(&key, &format!("key_{i}"), "acme", &["read"]));
            key
        })
        .collect();
    Tenant { store, keys, plans }
}

async fn limiter(url: &str, prefix: &str) -> RedisLimiter {
    limiter_with_timeout(url, prefix, Duration::from_secs(1)).await
}

async fn patient_limiter(url: &str, prefix: &str) -> RedisLimiter {
    limiter_with_timeout(url, prefix, Duration::from_secs(60)).await
}

async fn limiter_with_timeout(url: &str, prefix: &str, timeout: Duration) -> RedisLimiter {
    RedisLimiter::builder(url)
        .prefix(prefix)
        .timeout(timeout)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot reach Redis at {url}: {e}"))
}

/// One instance over TCP with its own `RedisLimiter`.
async fn instance(t: &Tenant, limiter: RedisLimiter, fail_open: bool) -> SocketAddr {
    instance_with_timeout(t, limiter, fail_open, Duration::from_secs(2)).await
}

/// An instance for the bursts that test exactness, not timeouts: 2,000 requests at once in a
/// debug build on a busy machine can wait longer than the default 2 s for their answer, and a
/// fail-closed 503 would then stand for a request the limiter counted (never more than the
/// limit, but not the exact count these tests assert).
async fn patient_instance(t: &Tenant, limiter: RedisLimiter) -> SocketAddr {
    instance_with_timeout(t, limiter, false, Duration::from_secs(60)).await
}

async fn instance_with_timeout(
    t: &Tenant,
    limiter: RedisLimiter,
    fail_open: bool,
    timeout: Duration,
) -> SocketAddr {
    let verifier = Verifier::builder(t.store.clone())
        .entitlements(t.plans.clone())
        .limiter(limiter)
        .limits_fail_open(fail_open)
        .store_timeout(timeout)
        .build();
    serve(
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(AuthLayer::new(verifier)),
    )
    .await
}

async fn status(addr: SocketAddr, key: &ApiKey) -> u16 {
    send_tcp(addr, get_req(key)).await.status.as_u16()
}

/// `n` concurrent requests, alternating between the instances and the keys; the statuses.
async fn burst(addrs: [SocketAddr; 2], keys: &[ApiKey], n: usize) -> Vec<Reply> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let addr = addrs[i % 2];
        let req = get_req(&keys[(i / 2) % keys.len()]);
        tasks.spawn(async move { send_tcp(addr, req).await });
    }
    let mut replies = Vec::new();
    while let Some(reply) = tasks.join_next().await {
        replies.push(reply.unwrap());
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_round_trip_per_request() {
    let prefix = unique_prefix("round-trips");
    let proxy = RedisProxy::start().await;
    let t = tenant(
        plan(
            Some(RateLimit::per_minute(1000)),
            Some(RateLimit::per_minute(1000)),
            Some(1000),
        ),
        1,
    );
    let addr = instance(&t, limiter(&proxy.url(), &prefix).await, false).await;
    // The first request may load the script (EVALSHA, SCRIPT LOAD, EVALSHA).
    assert_eq!(status(addr, &t.keys[0]).await, 200);
    let before = proxy.commands();
    for _ in 0..20 {
        assert_eq!(status(addr, &t.keys[0]).await, 200);
    }
    assert_eq!(proxy.commands() - before, 20);
    assert_eq!(quota_used(&prefix, "acme").await, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_two_instances_gets_exactly_the_rate_limit() {
    const L: u32 = 30; // per minute: one request every 2 s replenishes
    let prefix = unique_prefix("burst");
    let t = tenant(plan(Some(RateLimit::per_minute(L)), None, None), 2);
    let addrs = [
        patient_instance(&t, patient_limiter(&url(), &prefix).await).await,
        patient_instance(&t, patient_limiter(&url(), &prefix).await).await,
    ];
    let mut conn = direct().await;
    let started = redis_now_us(&mut conn).await;
    let replies = burst(addrs, &t.keys, 3 * L as usize).await;
    let elapsed = redis_now_us(&mut conn).await - started;
    let admitted = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count() as u64;
    // What the window gave back while the burst ran, on Redis's clock: one per 2 s.
    let replenished = elapsed / 2_000_000;
    assert!(
        (u64::from(L)..=u64::from(L) + replenished).contains(&admitted),
        "{admitted} admitted, {replenished} replenished in {elapsed} µs"
    );
    for refused in replies.iter().filter(|r| r.status != StatusCode::OK) {
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            refused.json(),
            envelope("RATE_LIMITED", "Rate limit exceeded: retry later")
        );
        let retry: u64 = refused.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "retry-after {retry}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_of_500_admits_exactly_500_of_2000_over_two_instances_and_stays_used() {
    let prefix = unique_prefix("quota");
    let t = tenant(plan(None, None, Some(500)), 2);
    let addrs = [
        patient_instance(&t, patient_limiter(&url(), &prefix).await).await,
        patient_instance(&t, patient_limiter(&url(), &prefix).await).await,
    ];
    let replies = burst(addrs, &t.keys, 2000).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let forbidden = replies
        .iter()
        .filter(|r| r.status == StatusCode::FORBIDDEN)
        .count();
    assert_eq!((ok, forbidden), (500, 1500));
    assert_eq!(quota_used(&prefix, "acme").await, 500);

    // Both instances restart: the quota is still used up.
    for _ in 0..2 {
        let addr = instance(&t, limiter(&url(), &prefix).await, false).await;
        let refused = send_tcp(addr, get_req(&t.keys[0])).await;
        assert_eq!(
            (refused.status, refused.json()),
            (
                StatusCode::FORBIDDEN,
                envelope("FORBIDDEN", "Quota exhausted for the current period")
            )
        );
    }
    assert_eq!(quota_used(&prefix, "acme").await, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_limits_are_all_or_nothing() {
    let prefix = unique_prefix("all-or-nothing");
    let t = tenant(
        plan(
            Some(RateLimit::per_minute(3)),
            Some(RateLimit::per_minute(2)),
            Some(4),
        ),
        2,
    );
    let addr = instance(&t, limiter(&url(), &prefix).await, false).await;
    let (a, b) = (&t.keys[0], &t.keys[1]);
    assert_eq!(status(addr, a).await, 200);
    assert_eq!(status(addr, a).await, 200);
    // Key A's own limit refuses: neither the tenant's limit nor the quota is used.
    let refused = send_tcp(addr, get_req(a)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers["x-ratelimit-remaining"], "0");
    assert_eq!(quota_used(&prefix, "acme").await, 2);
    // So key B still gets the tenant's third request; then the tenant's limit refuses it.
    let third = send_tcp(addr, get_req(b)).await;
    assert_eq!(third.status, StatusCode::OK);
    assert_eq!(
        third.headers["ratelimit-policy"],
        "\"tenant\";q=3;w=60, \"quota\";q=4;w=86400"
    );
    assert_eq!(status(addr, b).await, 429);
    assert_eq!(quota_used(&prefix, "acme").await, 3);

    // A quota refusal uses up no rate limit.
    let prefix = unique_prefix("all-or-nothing-quota");
    let t = tenant(plan(Some(RateLimit::per_minute(5)), None, Some(2)), 1);
    let addr = instance(&t, limiter(&url(), &prefix).await, false).await;
    assert_eq!(status(addr, &t.keys[0]).await, 200);
    assert_eq!(status(addr, &t.keys[0]).await, 200);
    let refused = send_tcp(addr, get_req(&t.keys[0])).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.headers["x-ratelimit-remaining"], "3");
    assert_eq!(quota_used(&prefix, "acme").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_away_refuses_with_503_and_back_recovers_without_a_restart() {
    let prefix = unique_prefix("outage");
    let proxy = RedisProxy::start().await;
    let t = tenant(plan(Some(RateLimit::per_minute(1000)), None, Some(100)), 1);
    let limiter = limiter(&proxy.url(), &prefix).await;
    let closed = instance(&t, limiter.clone(), false).await;
    let open = instance(&t, limiter, true).await;
    for _ in 0..3 {
        assert_eq!(status(closed, &t.keys[0]).await, 200);
    }

    proxy.cut();
    for _ in 0..3 {
        let refused = send_tcp(closed, get_req(&t.keys[0])).await;
        assert_eq!(
            (refused.status, refused.json()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                envelope("SERVICE_UNAVAILABLE", UNAVAILABLE)
            )
        );
        assert!(refused.headers.get("ratelimit").is_none());
    }
    // Failing open is a choice: then the request passes, with no limit headers.
    let passed = send_tcp(open, get_req(&t.keys[0])).await;
    assert_eq!(passed.status, StatusCode::OK);
    assert!(passed.headers.get("x-ratelimit-limit").is_none());
    // Never a 200 that was not counted, and nothing counted for the refusals.
    assert_eq!(quota_used(&prefix, "acme").await, 3);

    // Redis is back: the same limiter recovers by itself. Until its connection is back a
    // request may still be refused; none passes uncounted.
    proxy.restore();
    let mut admitted = 0;
    for _ in 0..100 {
        match status(closed, &t.keys[0]).await {
            200 => {
                admitted += 1;
                break;
            }
            503 => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(admitted, 1, "the limiter did not recover");
    assert_eq!(status(closed, &t.keys[0]).await, 200);
    assert_eq!(quota_used(&prefix, "acme").await, 5);
}

/// A cost of 0 on fresh buckets consumes nothing and is allowed (not a Redis error on a
/// zero expiry): the rate limits and the quota report every request left.
#[tokio::test]
async fn a_cost_of_zero_on_a_fresh_bucket_is_allowed() {
    use keygate::limit::{Decision, LimitRequest, Limiter, QuotaStatus, RateStatus, Usage};
    let prefix = unique_prefix("cost-zero");
    let limiter = limiter(&url(), &prefix).await;
    let request = |cost| LimitRequest {
        tenant_id: "acme",
        key_id: "key_1",
        tenant_rate: Some(RateLimit::per_minute(3)),
        key_rate: Some(RateLimit::per_minute(2)),
        quota: Some(Quota {
            limit: 5,
            period: QuotaPeriod::Day,
        }),
        cost,
    };
    // Redis's clock in whole seconds, as the decision reports it.
    let redis_secs = |d: &Decision| match d {
        Decision::Allowed(usage) => usage.rate.map_or(0, |r| r.reset_at - r.reset_after_secs),
        _ => 0,
    };
    let expected = |secs: u64, key_left: u32, used: u64| {
        let reset_after = u64::from(2 - key_left) * 30;
        Decision::Allowed(Usage {
            rate: Some(RateStatus {
                name: "key",
                limit: 2,
                remaining: key_left,
                window_secs: 60,
                reset_after_secs: reset_after,
                reset_at: secs + reset_after,
            }),
            quota: Some(QuotaStatus {
                limit: 5,
                remaining: 5 - used,
                period_secs: 86_400,
                reset_after_secs: QuotaPeriod::Day.bounds(secs).1 - secs,
            }),
        })
    };
    let free = limiter.acquire(&request(0)).await.unwrap();
    assert_eq!(free, expected(redis_secs(&free), 2, 0));
    // Nothing was consumed: the next request is the first one counted.
    let paid = limiter.acquire(&request(1)).await.unwrap();
    assert_eq!(paid, expected(redis_secs(&paid), 1, 1));
    assert_eq!(quota_used(&prefix, "acme").await, 1);
    // And a cost of 0 on a bucket in use changes nothing either.
    let free = limiter.acquire(&request(0)).await.unwrap();
    assert_eq!(free, expected(redis_secs(&free), 1, 1));
}

/// A window of u64::MAX seconds counts as 2^32 s: `limit` requests, then a refusal with the
/// exact wait, through the script's arithmetic.
#[tokio::test]
async fn a_window_of_u64_max_seconds_admits_exactly_its_limit() {
    use keygate::limit::{Decision, LimitRequest, Limiter};
    let prefix = unique_prefix("longest-window");
    let limiter = limiter(&url(), &prefix).await;
    let request = LimitRequest {
        tenant_id: "acme",
        key_id: "key_1",
        tenant_rate: Some(RateLimit {
            limit: 2,
            window: Duration::from_secs(u64::MAX),
        }),
        key_rate: None,
        quota: None,
        cost: 1,
    };
    let said = |d: Decision| match d {
        Decision::Allowed(u) => (Ok(()), u.rate.map(|r| (r.remaining, r.window_secs))),
        Decision::RateLimited {
            retry_after_secs,
            usage,
        } => (
            Err(retry_after_secs),
            usage.rate.map(|r| (r.remaining, r.window_secs)),
        ),
        Decision::QuotaExhausted { .. } => panic!("no quota"),
    };
    let acquire = || async { said(limiter.acquire(&request).await.unwrap()) };
    assert_eq!(acquire().await, (Ok(()), Some((1, 1 << 32))));
    assert_eq!(acquire().await, (Ok(()), Some((0, 1 << 32))));
    assert_eq!(acquire().await, (Err(1 << 31), Some((0, 1 << 32))));
}
