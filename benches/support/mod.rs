//! What the benchmarks share: a store of `n` keys, a plan that never refuses, and the axum
//! hello-world served bare, behind the floor (`floor.rs`: the least an API-key layer can do),
//! behind the checked floor (the same with keygate's key checks), behind the floor of the full
//! pipeline (`floor_limits.rs`: the checked floor plus two limits and the five limit headers),
//! behind keygate's authentication, and behind its full pipeline.

// Not every bench uses the floors.
#[allow(dead_code)]
mod floor;
#[allow(dead_code)]
mod floor_limits;
use floor::FloorLayer;
use floor_limits::{FloorHeaders, FloorLimitsLayer};

use axum::body::Body;
use axum::response::Response;
use axum::{Router, routing::get};
use http::Request;
use keygate::hash::KeyHasher;
use keygate::key::{ApiKey, Environment, KeyFormat};
use keygate::limit::{LimitHeaders, Quota, QuotaPeriod, RateLimit};
use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
use keygate::scope::{Scope, Scopes};
use keygate::store::{KeyRecord, MemoryStore};
use keygate::verify::VerifierBuilder;
use keygate::{AuthLayer, Verifier};
use tower::{Service, ServiceExt};

pub(crate) fn record(key: &ApiKey, i: usize) -> KeyRecord {
    KeyRecord::builder(
        format!("key_{i}"),
        format!("tenant_{}", i % 1000),
        KeyHasher::sha256().hash(key.expose_secret()),
    )
    .key(key)
    .name("bench")
    .scopes(Scopes::from_static(&["read", "write"]))
    .build()
}

/// A store with `n` keys; returns it and one of its keys.
#[allow(dead_code)] // not every bench uses it
pub(crate) fn store_with(n: usize) -> (MemoryStore, ApiKey) {
    let (store, _, key) = store_and_floor_with(n, false);
    (store, key)
}

/// A store with `n` keys, the same keys for the floors (if `floor`), and one key.
pub(crate) fn store_and_floor_with(n: usize, floor: bool) -> (MemoryStore, Floors, ApiKey) {
    let format = KeyFormat::default();
    let store = MemoryStore::new();
    store.reserve(n);
    let mut records = Vec::with_capacity(if floor { n } else { 0 });
    let mut probe = None;
    for i in 0..n {
        let key = format.generate(Environment::Live);
        let record = record(&key, i);
        if floor {
            records.push(record.clone());
        }
        store.put(record);
        if i == n / 2 {
            probe = Some(key);
        }
    }
    (store, Floors(records), probe.unwrap())
}

/// The keys the floors hold.
pub(crate) struct Floors(Vec<KeyRecord>);

#[allow(dead_code)] // not every bench uses them
impl Floors {
    /// The floor (`floor.rs`) in front of [`hello_app`].
    pub(crate) fn app(&self) -> Router {
        hello_app().layer(FloorLayer::new(self.0.iter().cloned(), false))
    }

    /// The checked floor (`floor.rs` with `checked`: the key's format and checksum, one
    /// credential, the record's checks, the credential's header removed) in front of
    /// [`hello_app`].
    pub(crate) fn checked_app(&self) -> Router {
        hello_app().layer(FloorLayer::new(self.0.iter().cloned(), true))
    }

    /// The floor of the full pipeline (`floor_limits.rs`) in front of [`hello_app`], with the
    /// limits of [`plan`].
    pub(crate) fn limits_app(&self) -> Router {
        self.limits_app_with(false, FloorHeaders::Own)
    }

    /// The checked floor of the full pipeline (`floor_limits.rs` with `checked`: the plan read
    /// per request, state for any tenant, all-or-nothing, the calendar month) in front of
    /// [`hello_app`], with the limits of [`plan`].
    pub(crate) fn checked_limits_app(&self) -> Router {
        self.limits_app_with(true, FloorHeaders::Own)
    }

    /// The checked floor with keygate's verifier (on `store`) deciding in place of its own
    /// checks (`floor.rs`, `FloorLayer::with_verifier`).
    pub(crate) fn checked_app_with_keygate_verifier(&self, store: MemoryStore) -> Router {
        hello_app().layer(FloorLayer::with_verifier(Verifier::builder(store).build()))
    }

    /// The checked floor of the full pipeline with its five headers rendered by keygate's
    /// `LimitHeaders::apply` (`floor_limits.rs`, `FloorHeaders::Keygate`).
    pub(crate) fn checked_limits_app_with_keygate_headers(&self) -> Router {
        self.limits_app_with(true, FloorHeaders::Keygate)
    }

    fn limits_app_with(&self, checked: bool, headers: FloorHeaders) -> Router {
        hello_app().layer(FloorLimitsLayer::new(
            self.0.iter().cloned(),
            u32::MAX,
            u64::MAX,
            checked,
            headers,
        ))
    }
}

/// The plan every tenant gets in the full-pipeline benches: a tenant rate limit and a monthly
/// quota high enough never to refuse, so that each iteration does the whole work.
pub(crate) fn plan() -> TenantEntitlements {
    TenantEntitlements::active(Plan {
        name: "bench".into(),
        rate_limit: Some(RateLimit::per_second(u32::MAX)),
        quota: Some(Quota {
            limit: u64::MAX,
            period: QuotaPeriod::Month,
        }),
        ..Plan::default()
    })
}

/// The hello-world every in-process and end-to-end comparison starts from.
pub(crate) fn hello_app() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
}

/// keygate without a plan in front of [`hello_app`]: authentication and scope only, no limits,
/// no limit headers. With axum's own body type (`inner_body`), as an axum service should be.
pub(crate) fn auth_app(store: MemoryStore) -> Router {
    let auth = AuthLayer::new(Verifier::builder(store).build());
    hello_app().layer(auth.require_scope(Scope::READ).inner_body())
}

/// keygate's full pipeline in front of [`hello_app`]: authentication, scope, the tenant's plan
/// (rate limit and monthly quota from [`plan`], so every request does the whole work) and the
/// chosen limit headers on every response; with axum's own body type (`inner_body`).
pub(crate) fn pipeline_app(store: MemoryStore, headers: LimitHeaders) -> Router {
    pipeline_app_with(store, headers, |verifier| verifier)
}

/// [`pipeline_app`] with more set on its verifier (another limiter): every full-pipeline side
/// is this one layer, so that the sides differ by what `configure` sets alone.
pub(crate) fn pipeline_app_with(
    store: MemoryStore,
    headers: LimitHeaders,
    configure: impl FnOnce(VerifierBuilder) -> VerifierBuilder,
) -> Router {
    let verifier = Verifier::builder(store).entitlements(MemoryEntitlements::with_default(plan()));
    hello_app().layer(
        AuthLayer::new(configure(verifier).build())
            .require_scope(Scope::READ)
            .limit_headers(headers)
            .inner_body(),
    )
}

/// The first quartile, the median and the third quartile of `values` (at a quarter, half and
/// three quarters of their number, once sorted).
#[allow(dead_code)] // not every bench uses it
pub(crate) fn quartiles(mut values: Vec<f64>) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    [values[n / 4], values[n / 2], values[n * 3 / 4]]
}

/// One `GET /` with `key` in `x-api-key` through `app`, driven to its response on `rt`. Panics
/// unless the answer is 200: every side must do its whole work, and a refusal would be cheaper.
#[allow(dead_code)] // not every bench uses it
pub(crate) fn request_ok(rt: &tokio::runtime::Runtime, app: &mut Router, key: &ApiKey) -> Response {
    let req = Request::get("/")
        .header("x-api-key", key.expose_secret())
        .body(Body::empty())
        .unwrap();
    let response = rt.block_on(async {
        ServiceExt::<Request<Body>>::ready(app)
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap()
    });
    assert_eq!(response.status(), 200);
    response
}
