//! Metrics (feature `metrics`): each test registers its layer's and its cache's metrics with a
//! recorder of its own (`with_local_recorder` while building), so that tests running in
//! parallel in this binary never see each other's counts.

use std::collections::BTreeMap;

use crate::common::*;
use axum::{Router, routing::get};
use http::{Request, StatusCode};
use keygate::backend::BackendError;
use keygate::cache::{CachedStore, Change, Invalidate};
use keygate::hash::KeyHasher;
use keygate::key::{ApiKey, Environment, KeyFormat};
use keygate::limit::{Decision, LimitRequest, Limiter, Quota, QuotaPeriod};
use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
use keygate::scope::Scope;
use keygate::{AuthLayer, Verifier};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::ServiceExt;

/// Runs `build` with a fresh recorder, so that what it builds registers there.
fn recorded<T>(build: impl FnOnce() -> T) -> (T, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    (metrics::with_local_recorder(&recorder, build), snapshotter)
}

/// What was recorded since the last sample: counters that moved, and how many observations
/// each histogram got. Series as Prometheus writes them: `name{label="value",…}`.
#[derive(Debug, Default)]
struct Sample {
    counters: BTreeMap<String, u64>,
    observations: BTreeMap<String, usize>,
    /// Every series registered, moved or not.
    series: Vec<String>,
}

fn sample(snapshotter: &Snapshotter) -> Sample {
    let mut sample = Sample::default();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
            .collect();
        let series = if labels.is_empty() {
            key.name().to_owned()
        } else {
            format!("{}{{{}}}", key.name(), labels.join(","))
        };
        match value {
            DebugValue::Counter(0) => {}
            DebugValue::Counter(n) => {
                sample.counters.insert(series.clone(), n);
            }
            DebugValue::Histogram(values) if values.is_empty() => {}
            DebugValue::Histogram(values) => {
                sample.observations.insert(series.clone(), values.len());
            }
            DebugValue::Gauge(_) => panic!("keygate records no gauge: {series}"),
        }
        sample.series.push(series);
    }
    sample
}

fn counts<const N: usize>(expected: [(&str, u64); N]) -> BTreeMap<String, u64> {
    expected
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

fn observed<const N: usize>(expected: [(&str, usize); N]) -> BTreeMap<String, usize> {
    expected
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

const ADMITTED: &str = r#"keygate_requests_total{outcome="admitted"}"#;

fn refused(code: &str, reason: &str) -> String {
    format!(r#"keygate_requests_total{{outcome="refused",code="{code}",reason="{reason}"}}"#)
}

fn request(header: Option<(&str, &str)>) -> Request<String> {
    let mut r = Request::get("/");
    if let Some((name, value)) = header {
        r = r.header(name, value);
    }
    r.body(String::new()).unwrap()
}

#[tokio::test]
async fn every_decision_over_tcp_is_counted_by_outcome_code_and_reason() {
    let fixture = Fixture::new();
    let (app, snapshotter) = recorded(|| {
        let auth = AuthLayer::new(Verifier::builder(fixture.store.clone()).build());
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(auth.require_scope(Scope::WRITE))
    });
    let addr = serve(app).await;

    for _ in 0..3 {
        let ok = send_tcp(addr, get_req(&fixture.writer)).await;
        assert_eq!(ok.status, StatusCode::OK);
    }
    let refusals = [
        (request(None), StatusCode::UNAUTHORIZED),
        (get_req(&fixture.unknown), StatusCode::UNAUTHORIZED),
        (get_req(&fixture.unknown), StatusCode::UNAUTHORIZED),
        (get_req(&fixture.revoked), StatusCode::UNAUTHORIZED),
        (get_req(&fixture.expired), StatusCode::UNAUTHORIZED),
        (
            request(Some(("x-api-key", "sk_live_not_a_key"))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            request(Some(("authorization", "Basic dXNlcjpwYXNz"))),
            StatusCode::UNAUTHORIZED,
        ),
        (get_req(&fixture.reader), StatusCode::FORBIDDEN),
    ];
    for (req, status) in refusals {
        assert_eq!(send_tcp(addr, req).await.status, status);
    }

    let got = sample(&snapshotter);
    assert_eq!(
        got.counters,
        counts([
            (ADMITTED, 3),
            (&refused("UNAUTHORIZED", "missing_credential"), 1),
            (&refused("UNAUTHORIZED", "unknown_key"), 2),
            (&refused("UNAUTHORIZED", "revoked_key"), 1),
            (&refused("UNAUTHORIZED", "expired_key"), 1),
            (&refused("UNAUTHORIZED", "malformed"), 1),
            (&refused("UNAUTHORIZED", "unsupported_scheme"), 1),
            (&refused("FORBIDDEN", "insufficient_scope"), 1),
        ])
    );
    // A memory store answers at once: nothing was waited for.
    assert_eq!(got.observations, BTreeMap::new());
    // Every series exists from the start: 1 admitted, 17 refusal reasons, the backends'.
    assert_eq!(
        got.series
            .iter()
            .filter(|s| s.starts_with("keygate_requests_total{"))
            .count(),
        18
    );
    for series in [
        r#"keygate_store_duration_seconds{op="find"}"#,
        r#"keygate_store_duration_seconds{op="entitlements"}"#,
        r#"keygate_store_errors_total{op="find"}"#,
        r#"keygate_store_errors_total{op="entitlements"}"#,
        "keygate_limiter_duration_seconds",
        "keygate_limiter_errors_total",
        "keygate_limits_fail_open_total",
        &refused("SERVICE_UNAVAILABLE", "unavailable"),
        &refused("RATE_LIMITED", "rate_limited"),
    ] {
        assert!(got.series.iter().any(|s| s == series), "{series}");
    }
    // No label carries anything a client sent.
    for series in &got.series {
        for secret in fixture.secrets() {
            assert!(!series.contains(&secret), "{series}");
            assert!(!series.contains(&secret[..12]), "{series}");
        }
        for id in [
            "acme",
            "key_reader",
            "key_writer",
            "key_revoked",
            "key_expired",
        ] {
            assert!(!series.contains(id), "{series}");
        }
    }
    // Read again: counters are deltas since the last sample.
    assert_eq!(sample(&snapshotter).counters, BTreeMap::new());
}

#[tokio::test]
async fn a_nested_layer_refusal_is_counted_once_as_refused() {
    let fixture = Fixture::new();
    let (app, snapshotter) = recorded(|| {
        let auth = AuthLayer::new(Verifier::builder(fixture.store.clone()).build());
        Router::new()
            .route(
                "/",
                get(|| async { "ok" }).route_layer(auth.require_scope(Scope::WRITE)),
            )
            .layer(auth)
    });
    let refused_reply = app.oneshot(get_req(&fixture.reader)).await.unwrap();
    assert_eq!(refused_reply.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        sample(&snapshotter).counters,
        counts([
            // The outer layer admitted the key, the inner one refused its scope.
            (ADMITTED, 1),
            (&refused("FORBIDDEN", "insufficient_scope"), 1),
        ])
    );
}

/// What one request leaves whose key lookup failed: one 503 decision, one store error, one
/// timed lookup, nothing else.
fn assert_one_failed_lookup(snapshotter: &Snapshotter) {
    let got = sample(snapshotter);
    assert_eq!(
        got.counters,
        counts([
            (&refused("SERVICE_UNAVAILABLE", "unavailable"), 1),
            (r#"keygate_store_errors_total{op="find"}"#, 1),
        ])
    );
    assert_eq!(
        got.observations,
        observed([(r#"keygate_store_duration_seconds{op="find"}"#, 1)])
    );
}

#[tokio::test]
async fn a_failing_store_is_timed_counted_and_refused() {
    let key = KeyFormat::default().generate(Environment::Live);
    let (verifier, snapshotter) = recorded(|| Verifier::builder(FailingStore).build());
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(AuthLayer::new(verifier));
    let reply = app.oneshot(get_req(&key)).await.unwrap();
    assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);

    assert_one_failed_lookup(&snapshotter);
}

#[tokio::test]
async fn a_store_timeout_is_timed_and_counted() {
    let key = KeyFormat::default().generate(Environment::Live);
    let (verifier, snapshotter) = recorded(|| {
        Verifier::builder(DownStore::Hangs)
            .store_timeout(std::time::Duration::from_millis(50))
            .build()
    });
    let refusal = verifier
        .verify(&keygate::request::RequestHead::from(&get_req(&key)), None)
        .await
        .unwrap_err();
    assert_eq!(refusal, keygate::AuthError::Unavailable);
    assert_one_failed_lookup(&snapshotter);
}

#[tokio::test]
async fn key_cache_hits_misses_negative_hits_and_invalidations_are_counted() {
    let fixture = Fixture::new();
    let ((cache, app), snapshotter) = recorded(|| {
        let cache = CachedStore::new(fixture.store.clone());
        let verifier = Verifier::builder(cache.clone()).build();
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(AuthLayer::new(verifier));
        (cache, app)
    });
    let addr = serve(app).await;
    let statuses = [
        (&fixture.reader, StatusCode::OK), // miss: the store is asked
        (&fixture.reader, StatusCode::OK), // hit
        (&fixture.reader, StatusCode::OK), // hit
        (&fixture.unknown, StatusCode::UNAUTHORIZED), // miss
        (&fixture.unknown, StatusCode::UNAUTHORIZED), // negative hit
    ];
    for (key, status) in statuses {
        assert_eq!(send_tcp(addr, get_req(key)).await.status, status);
    }
    let got = sample(&snapshotter);
    assert_eq!(
        got.counters,
        counts([
            (ADMITTED, 3),
            (&refused("UNAUTHORIZED", "unknown_key"), 2),
            (r#"keygate_key_cache_total{result="hit"}"#, 2),
            (r#"keygate_key_cache_total{result="miss"}"#, 2),
            (r#"keygate_key_cache_total{result="negative_hit"}"#, 1),
        ])
    );
    // Only the misses made the verifier wait for the store.
    assert_eq!(
        got.observations,
        observed([(r#"keygate_store_duration_seconds{op="find"}"#, 2)])
    );

    let digest = KeyHasher::sha256().hash(fixture.reader.expose_secret());
    cache.invalidate(&Change::Key(digest));
    cache.invalidate(&Change::Flush);
    cache.invalidate(&Change::Tenant("acme".into()));
    assert_eq!(
        sample(&snapshotter).counters,
        counts([
            (r#"keygate_key_cache_invalidations_total{kind="key"}"#, 1),
            (r#"keygate_key_cache_invalidations_total{kind="flush"}"#, 1),
        ])
    );
}

#[tokio::test]
async fn key_cache_evictions_are_counted() {
    let format = KeyFormat::default();
    let store = keygate::store::MemoryStore::new();
    let keys: Vec<ApiKey> = (0..100)
        .map(|_| format.generate(Environment::Live))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        store.put(record(key, &format!("key_{i}"), "acme", &["read"]));
    }
    let unknown: Vec<ApiKey> = (0..100)
        .map(|_| format.generate(Environment::Live))
        .collect();
    let ((cache, verifier), snapshotter) = recorded(|| {
        let cache = CachedStore::builder(store)
            .capacity(10)
            .unknown_capacity(10)
            .no_miss_budget()
            .build();
        (cache.clone(), Verifier::builder(cache).build())
    });
    for key in &keys {
        let req = get_req(key);
        let head = keygate::request::RequestHead::from(&req);
        assert!(verifier.verify(&head, None).await.is_ok());
    }
    for key in &unknown {
        let req = get_req(key);
        let head = keygate::request::RequestHead::from(&req);
        assert!(verifier.verify(&head, None).await.is_err());
    }
    let counters = sample(&snapshotter).counters;
    // Whatever is no longer held was evicted: no key was removed any other way.
    let records = cache.len();
    assert!(records <= 10 && cache.unknown_len() <= 10, "{cache:?}");
    assert_eq!(
        counters[r#"keygate_key_cache_evictions_total{cache="records"}"#],
        (100 - records) as u64
    );
    assert_eq!(
        counters[r#"keygate_key_cache_evictions_total{cache="unknown"}"#],
        (100 - cache.unknown_len()) as u64
    );
}

/// A limiter that must be awaited, failing or not.
struct RemoteLimiter {
    fails: bool,
}

#[async_trait::async_trait]
impl Limiter for RemoteLimiter {
    async fn acquire(&self, request: &LimitRequest<'_>) -> Result<Decision, BackendError> {
        tokio::task::yield_now().await;
        if self.fails {
            return Err(BackendError::backend(std::io::Error::other(
                "connection refused",
            )));
        }
        keygate::limit::MemoryLimiter::new().acquire(request).await
    }
}

/// Every tenant on a plan with a monthly quota of 100 and no rate limit.
fn metered() -> MemoryEntitlements {
    MemoryEntitlements::with_default(TenantEntitlements::active(Plan {
        name: "metered".into(),
        rate_limit: None,
        key_rate_limit: None,
        quota: Some(Quota {
            limit: 100,
            period: QuotaPeriod::Month,
        }),
        allowed_scopes: None,
    }))
}

fn limited_app(fixture: &Fixture, fails: bool, fail_open: bool) -> (Router, Snapshotter) {
    recorded(|| {
        let verifier = Verifier::builder(fixture.store.clone())
            .entitlements(metered())
            .limiter(RemoteLimiter { fails })
            .limits_fail_open(fail_open)
            .build();
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(AuthLayer::new(verifier))
    })
}

#[tokio::test]
async fn limiter_waits_failures_and_fail_open_are_counted() {
    let fixture = Fixture::new();

    let (app, snapshotter) = limited_app(&fixture, false, false);
    let reply = app.oneshot(get_req(&fixture.reader)).await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    let got = sample(&snapshotter);
    assert_eq!(got.counters, counts([(ADMITTED, 1)]));
    assert_eq!(
        got.observations,
        observed([("keygate_limiter_duration_seconds", 1)])
    );

    let (app, snapshotter) = limited_app(&fixture, true, true);
    let reply = app.oneshot(get_req(&fixture.reader)).await.unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(
        sample(&snapshotter).counters,
        counts([
            (ADMITTED, 1),
            ("keygate_limiter_errors_total", 1),
            ("keygate_limits_fail_open_total", 1),
        ])
    );

    let (app, snapshotter) = limited_app(&fixture, true, false);
    let reply = app.oneshot(get_req(&fixture.reader)).await.unwrap();
    assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        sample(&snapshotter).counters,
        counts([
            (&refused("SERVICE_UNAVAILABLE", "unavailable"), 1),
            ("keygate_limiter_errors_total", 1),
        ])
    );
}

/// An entitlement source that must be awaited.
struct RemoteEntitlements(MemoryEntitlements);

#[async_trait::async_trait]
impl keygate::plan::EntitlementSource for RemoteEntitlements {
    async fn entitlements(&self, tenant_id: &str) -> keygate::plan::EntitlementLookup {
        tokio::task::yield_now().await;
        self.0.entitlements(tenant_id).await
    }
}

/// A key found at once in the key cache counts one hit, also when the entitlement source or
/// the limiter must be awaited after it: the rest of the check goes on from the key found, it
/// does not look the key up (and count a hit) again.
#[tokio::test]
async fn a_key_cache_hit_before_an_awaited_backend_is_counted_once() {
    let fixture = Fixture::new();
    for remote_entitlements in [false, true] {
        let (app, snapshotter) = recorded(|| {
            let builder = Verifier::builder(CachedStore::new(fixture.store.clone()))
                .limiter(RemoteLimiter { fails: false });
            let verifier = if remote_entitlements {
                builder.entitlements(RemoteEntitlements(metered()))
            } else {
                builder.entitlements(metered())
            }
            .build();
            Router::new()
                .route("/", get(|| async { "ok" }))
                .layer(AuthLayer::new(verifier))
        });
        let addr = serve(app).await;
        for _ in 0..3 {
            let reply = send_tcp(addr, get_req(&fixture.reader)).await;
            assert_eq!(reply.status, StatusCode::OK);
        }
        let got = sample(&snapshotter);
        assert_eq!(
            got.counters,
            counts([
                (ADMITTED, 3),
                (r#"keygate_key_cache_total{result="hit"}"#, 2),
                (r#"keygate_key_cache_total{result="miss"}"#, 1),
            ]),
            "remote entitlements: {remote_entitlements}"
        );
        let mut waits = vec![
            (r#"keygate_store_duration_seconds{op="find"}"#, 1),
            ("keygate_limiter_duration_seconds", 3),
        ];
        if remote_entitlements {
            waits.push((r#"keygate_store_duration_seconds{op="entitlements"}"#, 3));
        }
        let waits: BTreeMap<String, usize> =
            waits.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(
            got.observations, waits,
            "remote entitlements: {remote_entitlements}"
        );
    }
}

#[tokio::test]
async fn a_verifier_built_before_the_recorder_records_nowhere() {
    let fixture = Fixture::new();
    let verifier = Verifier::builder(fixture.store.clone()).build();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let head_req = get_req(&fixture.reader);
    let head = keygate::request::RequestHead::from(&head_req);
    metrics::with_local_recorder(&recorder, || {
        assert!(verifier.check_now(&head, None).unwrap().is_ok());
    });
    assert!(sample(&snapshotter).series.is_empty());
}
