//! Entitlements, quotas and rate limits through the layer: exact under concurrency,
//! all-or-nothing, with consistent headers.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode};
use keygate::backend::BackendError;
use keygate::key::ApiKey;
use keygate::limit::{
    Decision, LimitRequest, Limiter, ManualClock, MemoryLimiter, Quota, QuotaPeriod, RateLimit,
};
use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
use keygate::scope::{Scope, Scopes};
use keygate::{AuthLayer, Verifier};
use tower::ServiceExt;

const T0: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

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

struct Env {
    app: Router,
    fixture: Fixture,
    limiter: MemoryLimiter,
    clock: ManualClock,
    plans: MemoryEntitlements,
    calls: Calls,
}

fn env(entitlements: TenantEntitlements) -> Env {
    let fixture = Fixture::new();
    let clock = ManualClock::at_unix_secs(T0);
    let limiter = MemoryLimiter::with_clock(clock.clone());
    let plans = MemoryEntitlements::new();
    plans.set("acme", entitlements);
    let verifier = Verifier::builder(fixture.store.clone())
        .entitlements(plans.clone())
        .limiter(limiter.clone())
        .build();
    let calls = Calls::default();
    let counted = calls.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let calls = counted.clone();
                async move {
                    calls.hit();
                    "ok"
                }
            })
            .post(|| async { "posted" }),
        )
        .layer(AuthLayer::new(verifier).scope_policy(keygate::scope::ScopePolicy::by_method()));
    Env {
        app,
        fixture,
        limiter,
        clock,
        plans,
        calls,
    }
}

async fn get_with(app: &Router, key: &ApiKey) -> http::Response<Body> {
    get_secret(app, key.expose_secret()).await
}

async fn get_secret(app: &Router, secret: &str) -> http::Response<Body> {
    let req = Request::get("/")
        .header("x-api-key", secret)
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(req).await.unwrap().map(Body::new)
}

fn header(r: &http::Response<Body>, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn body_json(r: http::Response<Body>) -> serde_json::Value {
    use http_body_util::BodyExt;
    serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_of_500_lets_exactly_500_of_2000_concurrent_requests_through() {
    let e = env(plan(None, None, Some(500)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2000 {
        let app = e.app.clone();
        let key = if i % 2 == 0 {
            e.fixture.reader.expose_secret()
        } else {
            e.fixture.writer.expose_secret()
        }
        .to_owned();
        tasks.spawn(async move {
            let req = Request::get("/")
                .header("x-api-key", key)
                .body(Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        });
    }
    let (mut ok, mut forbidden) = (0, 0);
    while let Some(status) = tasks.join_next().await {
        match status.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::FORBIDDEN => forbidden += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, forbidden), (500, 1500));
    assert_eq!(e.calls.count(), 500);
    assert_eq!(e.limiter.quota_used("acme"), 500);
    let refused = get_with(&e.app, &e.fixture.reader).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        header(&refused, "ratelimit-policy").as_deref(),
        Some("\"quota\";q=500;w=86400")
    );
    assert_eq!(
        header(&refused, "ratelimit").as_deref(),
        Some("\"quota\";r=0;t=86400")
    );
    assert_eq!(
        body_json(refused).await,
        envelope("FORBIDDEN", "Quota exhausted for the current period")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_burst_passes_exactly_n_with_consistent_headers() {
    let e = env(plan(Some(RateLimit::per_minute(50)), None, None));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..120 {
        let app = e.app.clone();
        let key = e.fixture.reader.expose_secret().to_owned();
        tasks.spawn(async move {
            let req = Request::get("/")
                .header("x-api-key", key)
                .body(Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap()
        });
    }
    let mut remaining = Vec::new();
    let mut limited = 0;
    while let Some(response) = tasks.join_next().await {
        let response = response.unwrap();
        assert_eq!(
            header(&response, "x-ratelimit-limit").as_deref(),
            Some("50")
        );
        let reset: u64 = header(&response, "x-ratelimit-reset")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            reset > T0 && reset <= T0 + 60,
            "reset {reset} is within the window ahead"
        );
        match response.status() {
            StatusCode::OK => remaining.push(
                header(&response, "x-ratelimit-remaining")
                    .unwrap()
                    .parse::<u32>()
                    .unwrap(),
            ),
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert_eq!(
                    header(&response, "retry-after").as_deref(),
                    Some("2"),
                    "one request frees up every 1.2 s"
                );
                assert_eq!(
                    header(&response, "x-ratelimit-remaining").as_deref(),
                    Some("0")
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((remaining.len(), limited), (50, 70));
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..50).collect::<Vec<u32>>(),
        "Remaining counts down by one per request"
    );

    // 1.2 s later exactly one more passes.
    e.clock.advance(Duration::from_millis(1200));
    let ok = get_with(&e.app, &e.fixture.reader).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(
        header(&ok, "ratelimit-policy").as_deref(),
        Some("\"tenant\";q=50;w=60")
    );
    assert_eq!(
        header(&ok, "ratelimit").as_deref(),
        Some("\"tenant\";r=0;t=60")
    );
    let limited = get_with(&e.app, &e.fixture.reader).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(
        body_json(limited).await,
        envelope("RATE_LIMITED", "Rate limit exceeded: retry later")
    );
}

#[tokio::test]
async fn a_refusal_by_one_limit_consumes_no_other() {
    // Tenant: 10 per minute; each key: 3 per minute; quota 100 a day.
    let e = env(plan(
        Some(RateLimit::per_minute(10)),
        Some(RateLimit::per_minute(3)),
        Some(100),
    ));
    let statuses = |key: &ApiKey, n: usize| {
        let app = e.app.clone();
        let secret = key.expose_secret().to_owned();
        async move {
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(get_secret(&app, &secret).await.status().as_u16());
            }
            v
        }
    };
    assert_eq!(
        statuses(&e.fixture.reader, 5).await,
        [200, 200, 200, 429, 429]
    );
    // The two key-limited refusals used neither the tenant's limit nor the quota.
    assert_eq!(e.limiter.quota_used("acme"), 3);
    assert_eq!(statuses(&e.fixture.writer, 4).await, [200, 200, 200, 429]);
    assert_eq!(
        statuses(&e.fixture.test_admin, 5).await,
        [200, 200, 200, 429, 429]
    );
    assert_eq!(e.limiter.quota_used("acme"), 9);
    // A fourth key (issued fresh) gets exactly the tenant's last request.
    let extra = keygate::key::KeyFormat::default().generate(keygate::key::Environment::Live);
    e.fixture
        .store
        .put(record(&extra, "key_extra", "acme", &["read"]));
    assert_eq!(statuses(&extra, 2).await, [200, 429]);
    assert_eq!(e.limiter.quota_used("acme"), 10);
}

#[tokio::test]
async fn quota_refusal_leaves_rate_limits_and_other_refusals_consume_nothing() {
    let e = env(plan(Some(RateLimit::per_minute(5)), None, Some(2)));
    assert_eq!(get_with(&e.app, &e.fixture.reader).await.status(), 200);
    assert_eq!(get_with(&e.app, &e.fixture.reader).await.status(), 200);
    let refused = get_with(&e.app, &e.fixture.reader).await;
    assert_eq!(refused.status(), 403);
    // The rate limit still has 3 left: the quota refusal took nothing from it.
    assert_eq!(
        header(&refused, "x-ratelimit-remaining").as_deref(),
        Some("3")
    );

    // Refusals for other reasons consume nothing: unknown key, revoked key, missing scope.
    let e = env(plan(Some(RateLimit::per_minute(5)), None, Some(10)));
    assert_eq!(get_with(&e.app, &e.fixture.unknown).await.status(), 401);
    assert_eq!(get_with(&e.app, &e.fixture.revoked).await.status(), 401);
    let post = Request::post("/")
        .header("x-api-key", e.fixture.reader.expose_secret())
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        e.app.clone().oneshot(post).await.unwrap().status(),
        403,
        "read key cannot POST"
    );
    assert_eq!(e.limiter.quota_used("acme"), 0);
    let ok = get_with(&e.app, &e.fixture.reader).await;
    assert_eq!(header(&ok, "x-ratelimit-remaining").as_deref(), Some("4"));
}

#[tokio::test]
async fn quota_resets_with_the_calendar_period() {
    let e = env(plan(None, None, Some(2)));
    e.clock.set_unix_secs(T0 + 86_400 - 10); // 23:59:50
    assert_eq!(get_with(&e.app, &e.fixture.reader).await.status(), 200);
    let second = get_with(&e.app, &e.fixture.reader).await;
    assert_eq!(
        header(&second, "ratelimit").as_deref(),
        Some("\"quota\";r=0;t=10")
    );
    assert_eq!(get_with(&e.app, &e.fixture.reader).await.status(), 403);
    e.clock.advance(Duration::from_secs(10)); // midnight UTC
    assert_eq!(get_with(&e.app, &e.fixture.reader).await.status(), 200);
}

#[tokio::test]
async fn usage_belongs_to_the_tenant_across_rotation() {
    use keygate::lifecycle::{KeyManager, NewKey};
    let e = env(plan(None, None, Some(3)));
    let manager = KeyManager::builder(e.fixture.store.clone()).build();
    let issued = manager
        .issue("t", "acme", NewKey::new("k", ["read"]))
        .await
        .unwrap();
    assert_eq!(get_with(&e.app, &issued.key).await.status(), 200);
    assert_eq!(get_with(&e.app, &issued.key).await.status(), 200);
    let rotated = manager
        .rotate("t", "acme", &issued.info.id, None)
        .await
        .unwrap();
    assert_eq!(get_with(&e.app, &rotated.key).await.status(), 200);
    assert_eq!(
        get_with(&e.app, &rotated.key).await.status(),
        403,
        "rotation did not reset the quota"
    );
}

#[tokio::test]
async fn suspended_unknown_and_plan_scopes() {
    let e = env(plan(None, None, None));
    assert_eq!(get_with(&e.app, &e.fixture.reader).await.status(), 200);
    e.plans.suspend("acme");
    let refused = get_with(&e.app, &e.fixture.reader).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        body_json(refused).await,
        envelope("FORBIDDEN", "Tenant suspended")
    );
    e.plans.reactivate("acme");
    assert_eq!(get_with(&e.app, &e.fixture.reader).await.status(), 200);

    // The plan allows only `read`: an admin key cannot POST (needs `write`).
    e.plans.set(
        "acme",
        TenantEntitlements::active(Plan {
            name: "read-only".into(),
            allowed_scopes: Some(Scopes::from_static(&["read"])),
            ..Plan::default()
        }),
    );
    let post = Request::post("/")
        .header("x-api-key", e.fixture.test_admin.expose_secret())
        .body(Body::empty())
        .unwrap();
    let refused = e.app.clone().oneshot(post).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(get_with(&e.app, &e.fixture.test_admin).await.status(), 200);

    // A tenant the source does not know has no plan.
    let globex = keygate::key::KeyFormat::default().generate(keygate::key::Environment::Live);
    e.fixture
        .store
        .put(record(&globex, "key_globex", "globex", &["read"]));
    let refused = get_with(&e.app, &globex).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        body_json(refused).await,
        envelope("FORBIDDEN", "Tenant has no active plan")
    );
    let _ = Scope::READ;
}

/// A limiter that must be awaited, to drive the layer's slow path.
#[derive(Clone)]
struct RemoteLimiter(MemoryLimiter, bool);

#[async_trait::async_trait]
impl Limiter for RemoteLimiter {
    async fn acquire(&self, request: &LimitRequest<'_>) -> Result<Decision, BackendError> {
        tokio::task::yield_now().await;
        if self.1 {
            return Err(BackendError::backend(std::io::Error::other(
                "connection refused",
            )));
        }
        self.0.acquire(request).await
    }
}

fn remote_env(fail: bool, fail_open: bool) -> (Router, Fixture, Calls) {
    let fixture = Fixture::new();
    let plans = MemoryEntitlements::with_default(plan(None, None, Some(100)));
    let verifier = Verifier::builder(fixture.store.clone())
        .entitlements(plans)
        .limiter(RemoteLimiter(
            MemoryLimiter::with_clock(ManualClock::at_unix_secs(T0)),
            fail,
        ))
        .limits_fail_open(fail_open)
        .build();
    let calls = Calls::default();
    let counted = calls.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                counted.hit();
                async { "ok" }
            }),
        )
        .layer(AuthLayer::new(verifier));
    (app, fixture, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaited_limiter_is_exact_too() {
    let fixture = Fixture::new();
    let plans = MemoryEntitlements::with_default(plan(None, None, Some(50)));
    let limiter = RemoteLimiter(
        MemoryLimiter::with_clock(ManualClock::at_unix_secs(T0)),
        false,
    );
    let verifier = Verifier::builder(fixture.store.clone())
        .entitlements(plans)
        .limiter(limiter.clone())
        .build();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(AuthLayer::new(verifier));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let app = app.clone();
        let key = fixture.reader.expose_secret().to_owned();
        tasks.spawn(async move { get_secret(&app, &key).await.status() });
    }
    let mut ok = 0;
    while let Some(s) = tasks.join_next().await {
        if s.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 50);
    assert_eq!(limiter.0.quota_used("acme"), 50);
}

#[tokio::test]
async fn failing_limiter_fails_closed_unless_configured_open() {
    let logs = LogCapture::start();
    let (app, fixture, calls) = remote_env(true, false);
    let refused = get_with(&app, &fixture.reader).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        body_json(refused).await,
        envelope("SERVICE_UNAVAILABLE", UNAVAILABLE)
    );
    assert_eq!(calls.count(), 0);
    assert!(
        logs.text()
            .contains("limit backend failed; request refused"),
        "an error each time"
    );

    let (app, fixture, calls) = remote_env(true, true);
    let ok = get_with(&app, &fixture.reader).await;
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().get("x-ratelimit-limit").is_none());
    assert_eq!(calls.count(), 1);
    assert!(
        logs.text().contains("fail open is configured"),
        "a warning each time"
    );
}

#[tokio::test]
async fn grpc_codes_for_limits() {
    use tonic::Code;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let fixture = Fixture::new();
    let plans = MemoryEntitlements::new();
    plans.set(
        "acme",
        plan(Some(RateLimit::per_minute(1)), None, Some(1000)),
    );
    let limiter = MemoryLimiter::with_clock(ManualClock::at_unix_secs(T0));
    let verifier = Verifier::builder(fixture.store.clone())
        .entitlements(plans.clone())
        .limiter(limiter)
        .build();
    let (reporter, health, listener) = serving_health().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .layer(AuthLayer::new(verifier))
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let call = |client: &mut HealthClient<tonic::transport::Channel>| {
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        req.metadata_mut()
            .insert("x-api-key", fixture.reader.expose_secret().parse().unwrap());
        let mut client = client.clone();
        async move { client.check(req).await }
    };
    let ok = call(&mut client).await.unwrap();
    assert_eq!(ok.metadata().get("x-ratelimit-remaining").unwrap(), "0");
    let limited = call(&mut client).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(limited.message(), "Rate limit exceeded: retry later");
    assert_eq!(limited.metadata().get("retry-after").unwrap(), "60");
    plans.suspend("acme");
    let suspended = call(&mut client).await.unwrap_err();
    assert_eq!(
        (suspended.code(), suspended.message()),
        (Code::PermissionDenied, "Tenant suspended")
    );
    let _ = Arc::new(());
}

/// Every limit header a response carries, by name, in a fixed order.
fn limit_headers_of(r: &http::Response<Body>) -> Vec<(String, String)> {
    [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit-policy",
        "ratelimit",
        "retry-after",
    ]
    .into_iter()
    .filter_map(|name| header(r, name).map(|v| (name.to_owned(), v)))
    .collect()
}

#[tokio::test]
async fn the_layer_sends_the_chosen_limit_header_families() {
    use keygate::limit::LimitHeaders;

    let fixture = Fixture::new();
    let pair = |name: &str, value: &str| (name.to_owned(), value.to_owned());
    let x_family = |remaining: &str| {
        vec![
            pair("x-ratelimit-limit", "1"),
            pair("x-ratelimit-remaining", remaining),
            pair("x-ratelimit-reset", &(T0 + 60).to_string()),
        ]
    };
    let draft_family = |remaining: &str, used: u64| {
        vec![
            pair(
                "ratelimit-policy",
                "\"tenant\";q=1;w=60, \"quota\";q=10;w=86400",
            ),
            pair(
                "ratelimit",
                &format!(
                    "\"tenant\";r={remaining};t=60, \"quota\";r={};t=86400",
                    10 - used
                ),
            ),
        ]
    };
    let choices = [
        (LimitHeaders::All, true, true),
        (LimitHeaders::XRateLimit, true, false),
        (LimitHeaders::Draft, false, true),
        (LimitHeaders::None, false, false),
    ];
    // Each choice on both paths: a limiter that answers at once, and one that must be awaited.
    for ((choice, x, draft), awaited) in choices.into_iter().flat_map(|c| [(c, false), (c, true)]) {
        // A fresh limiter per run: one request a minute, ten a day.
        let plans = MemoryEntitlements::new();
        plans.set("acme", plan(Some(RateLimit::per_minute(1)), None, Some(10)));
        let limiter = MemoryLimiter::with_clock(ManualClock::at_unix_secs(T0));
        let builder = Verifier::builder(fixture.store.clone()).entitlements(plans);
        let verifier = if awaited {
            builder.limiter(RemoteLimiter(limiter, false)).build()
        } else {
            builder.limiter(limiter).build()
        };
        let choice_and_path = format!("{choice:?}, awaited: {awaited}");
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(AuthLayer::new(verifier).limit_headers(choice));

        let allowed = get_with(&app, &fixture.reader).await;
        assert_eq!(allowed.status(), StatusCode::OK, "{choice_and_path}");
        let mut expected = Vec::new();
        if x {
            expected.extend(x_family("0"));
        }
        if draft {
            expected.extend(draft_family("0", 1));
        }
        assert_eq!(limit_headers_of(&allowed), expected, "{choice_and_path}");

        // Refused by the rate limit: the same families, and always `Retry-After`.
        let refused = get_with(&app, &fixture.reader).await;
        assert_eq!(
            refused.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{choice_and_path}"
        );
        let mut expected = Vec::new();
        if x {
            expected.extend(x_family("0"));
        }
        if draft {
            expected.extend(draft_family("0", 1));
        }
        expected.push(pair("retry-after", "60"));
        assert_eq!(limit_headers_of(&refused), expected, "{choice_and_path}");
    }
}

/// A clock that, on the read after [`PausingClock::pause_next`], takes its reading and then
/// waits for [`PausingClock::resume`] before answering (up to 5 s): a thread preempted between
/// reading the clock and using what it read.
#[derive(Clone)]
struct PausingClock {
    now: ManualClock,
    pause: Arc<std::sync::atomic::AtomicBool>,
    read: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    resumed: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl PausingClock {
    fn new(now: ManualClock) -> Self {
        PausingClock {
            now,
            pause: Arc::default(),
            read: Arc::default(),
            resumed: Arc::default(),
        }
    }

    fn pause_next(&self) {
        self.pause.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn wait_for_the_paused_read(&self) {
        let (lock, cv) = &*self.read;
        let guard = lock.lock().unwrap();
        drop(cv.wait_while(guard, |read| !*read).unwrap());
    }

    fn resume(&self) {
        let (lock, cv) = &*self.resumed;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
}

impl keygate::limit::Clock for PausingClock {
    fn now_nanos(&self) -> u64 {
        let now = self.now.now_nanos();
        if self.pause.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let (lock, cv) = &*self.read;
            *lock.lock().unwrap() = true;
            cv.notify_all();
            let (lock, cv) = &*self.resumed;
            let guard = lock.lock().unwrap();
            // Bounded: should the limiter hold a lock the test's other thread needs, the
            // paused read answers anyway, and only the test's time is lost.
            drop(
                cv.wait_timeout_while(guard, Duration::from_secs(5), |resumed| !*resumed)
                    .unwrap(),
            );
        }
        now
    }
}

/// A request whose thread read the clock before another thread's eviction of its tenant is
/// decided as of that reading, as if the tenant's state were still held: 1 a 10 s, used at 0 s,
/// a request read at 5 s is refused. (Its tenant, idle at 10 s, was evicted then; deciding the
/// 5 s request on a fresh state admitted it and let a third through at 15 s: two in 5 s.)
#[test]
fn a_request_that_read_the_clock_before_its_tenants_eviction_is_decided_as_before() {
    let manual = ManualClock::at_unix_secs(T0);
    let clock = PausingClock::new(manual.clone());
    let limiter = MemoryLimiter::with_clock(clock.clone());
    let one_per_10s = |tenant_id| LimitRequest {
        tenant_id,
        key_id: "key",
        tenant_rate: Some(RateLimit {
            limit: 1,
            window: Duration::from_secs(10),
        }),
        key_rate: None,
        quota: None,
        cost: 1,
    };
    let allowed =
        |d: Option<Result<Decision, BackendError>>| matches!(d, Some(Ok(Decision::Allowed(_))));
    assert!(allowed(limiter.acquire_now(&one_per_10s("acme"))));

    manual.advance(Duration::from_secs(5));
    clock.pause_next();
    let paused = std::thread::spawn({
        let limiter = limiter.clone();
        move || limiter.acquire_now(&one_per_10s("acme"))
    });
    clock.wait_for_the_paused_read();
    // At 10 s acme's bucket is full again: other tenants' checks sweep every map, and may
    // evict it (each map that holds one of them sweeps all the others some 8 times).
    manual.advance(Duration::from_secs(5));
    let tenants: Vec<String> = (0..64).map(|i| format!("other_{i}")).collect();
    for _ in 0..512 {
        for tenant in &tenants {
            limiter.acquire_now(&one_per_10s(tenant));
        }
    }
    clock.resume();
    assert!(matches!(
        paused.join().unwrap(),
        Some(Ok(Decision::RateLimited { .. }))
    ));
    manual.advance(Duration::from_secs(5));
    assert!(allowed(limiter.acquire_now(&one_per_10s("acme"))));
}

/// A plan that moves from a monthly quota to a daily one and back finds the month's count as it
/// left it, as `RedisLimiter` and `LeasedQuotaLimiter` do (they count each period apart): 2 a
/// month used up, then 1 under a daily plan, then the monthly plan refuses. (It started the
/// month over from 0: 4 requests in one month under a monthly quota of 2.)
#[test]
fn a_plan_back_to_its_period_kind_finds_that_periods_count() {
    let clock = ManualClock::at_unix_secs(T0 + 86_400 * 10);
    let limiter = MemoryLimiter::with_clock(clock.clone());
    let quota = |limit, period| LimitRequest {
        tenant_id: "acme",
        key_id: "key",
        tenant_rate: None,
        key_rate: None,
        quota: Some(Quota { limit, period }),
        cost: 1,
    };
    let outcome = |r: &LimitRequest<'_>| match limiter.acquire_now(r) {
        Some(Ok(Decision::Allowed(usage))) => Ok(usage.quota.unwrap().remaining),
        Some(Ok(Decision::QuotaExhausted { usage })) => Err(usage.quota.unwrap().remaining),
        other => panic!("unexpected {other:?}"),
    };
    let month = quota(2, QuotaPeriod::Month);
    let day = quota(1, QuotaPeriod::Day);
    assert_eq!(outcome(&month), Ok(1));
    assert_eq!(outcome(&month), Ok(0));
    assert_eq!(outcome(&month), Err(0));
    // A day is counted apart from the month, as the other limiters count it.
    assert_eq!(outcome(&day), Ok(0));
    assert_eq!(outcome(&day), Err(0));
    // Back to the month, and to the day again: each count as it was left.
    assert_eq!(outcome(&month), Err(0));
    assert_eq!(outcome(&day), Err(0));
    // The next day, a new day's count; the month's stays.
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(outcome(&day), Ok(0));
    assert_eq!(outcome(&month), Err(0));
    assert_eq!(limiter.quota_used("acme"), 2);
}

/// A renderer of its own (the RFC 9457 one of `RenderError`'s documentation, which sets no
/// `Retry-After`) still answers a rate-limited request with `Retry-After`, as the contract says
/// of every 429, and with the limit headers; one that sets its own keeps it.
#[tokio::test]
async fn a_custom_renderers_429_carries_retry_after() {
    use bytes::Bytes;
    use keygate::error::{AuthError, RenderError};

    struct ProblemJson {
        retry_after: Option<&'static str>,
    }
    impl RenderError for ProblemJson {
        fn render(&self, error: &AuthError) -> http::Response<Bytes> {
            let mut response = http::Response::new(Bytes::from(error.code()));
            *response.status_mut() = error.status();
            if let Some(value) = self.retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static(value));
            }
            response
        }
    }
    for (retry_after, expected) in [(None, "60"), (Some("120"), "120")] {
        let fixture = Fixture::new();
        let plans = MemoryEntitlements::new();
        plans.set("acme", plan(Some(RateLimit::per_minute(1)), None, None));
        let verifier = Verifier::builder(fixture.store.clone())
            .entitlements(plans)
            .limiter(MemoryLimiter::with_clock(ManualClock::at_unix_secs(T0)))
            .build();
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(AuthLayer::new(verifier).renderer(ProblemJson { retry_after }));
        assert_eq!(
            get_with(&app, &fixture.reader).await.status(),
            StatusCode::OK
        );
        let refused = get_with(&app, &fixture.reader).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            limit_headers_of(&refused),
            [
                ("x-ratelimit-limit", "1"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &(T0 + 60).to_string()),
                ("ratelimit-policy", "\"tenant\";q=1;w=60"),
                ("ratelimit", "\"tenant\";r=0;t=60"),
                ("retry-after", expected),
            ]
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
        );
        assert_eq!(
            header(&refused, "cache-control").as_deref(),
            Some("no-store")
        );
    }
}
