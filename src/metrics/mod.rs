//! Metrics through the [`metrics`](https://docs.rs/metrics/0.24) facade (feature `metrics`, on
//! by default): decisions, backend latencies and failures, the key cache, limits let through.
//!
//! keygate records into whatever recorder the application installs (e.g.
//! `metrics-exporter-prometheus`); without one, every metric is a no-op. Each
//! [`Verifier`](crate::Verifier) and [`CachedStore`](crate::cache::CachedStore) registers its
//! metrics **once, when it is built**, with the recorder installed at that moment, and keeps
//! the handles: the request path formats no label and allocates nothing. So **install the
//! recorder before building** the verifier, the layer or [`Keygate`](crate::Keygate); what is
//! built earlier records nowhere. Every series is registered at build time, so counters start
//! at 0 before the first request.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `keygate_requests_total` | counter | `outcome="admitted"` | requests the verifier admitted |
//! | `keygate_requests_total` | counter | `outcome="refused"`, `code`, `reason` | requests it refused: `code` is the error envelope's code (`UNAUTHORIZED`, `FORBIDDEN`, `RATE_LIMITED`, `SERVICE_UNAVAILABLE`), `reason` the [`AuthError`] variant (table below) |
//! | `keygate_store_duration_seconds` | histogram | `op="find"` or `op="entitlements"` | how long a request waited for the key store (`find`) or the entitlement source when it could not answer at once, timeouts included; answers given at once (a key cache hit, a memory store) are not timed |
//! | `keygate_store_errors_total` | counter | `op="find"` or `op="entitlements"` | those lookups that failed or timed out (the request is refused with 503) |
//! | `keygate_limiter_duration_seconds` | histogram | | how long a request waited for the limiter (Redis, a quota lease) when it could not answer at once |
//! | `keygate_limiter_errors_total` | counter | | limiter calls that failed or timed out, whether the request was then refused or let through |
//! | `keygate_limits_fail_open_total` | counter | | requests admitted without their limits because the limiter failed and the verifier is built with `limits_fail_open(true)` |
//! | `keygate_key_cache_total` | counter | `result="hit"`, `"negative_hit"` or `"miss"` | key cache lookups: a record served from memory, a key remembered as unknown, or neither (the store is asked) |
//! | `keygate_key_cache_evictions_total` | counter | `cache="records"` or `"unknown"` | entries evicted to stay within the cache's capacity (key records, or remembered unknown keys) |
//! | `keygate_key_cache_invalidations_total` | counter | `kind="key"` or `"flush"` | entries dropped because of a change: one key (a write through the cache, a change notification), or everything (a flush, e.g. when the change listener's connection is lost) |
//! | `keygate_key_cache_miss_budget_exceeded_total` | counter | | lookups refused (503) because the miss budget was used up |
//! | `keygate_key_cache_stale_served_total` | counter | | records served past their TTL while the store failed (serve-stale) |
//!
//! The `reason` of a refusal, with its `code`:
//!
//! | `reason` | `code` |
//! |---|---|
//! | `missing_credential`, `multiple_credentials`, `unsupported_scheme`, `malformed`, `unknown_key`, `revoked_key`, `expired_key`, `environment_not_accepted`, `invalid_dev_tenant` | `UNAUTHORIZED` |
//! | `development_mode`, `insufficient_scope`, `tenant_suspended`, `no_plan`, `quota_exhausted`, `restriction_violated` | `FORBIDDEN` |
//! | `rate_limited` | `RATE_LIMITED` |
//! | `unavailable` | `SERVICE_UNAVAILABLE` |
//!
//! `development_mode` is listed for completeness, as every refusal has a reason: it is the
//! management API's answer to a development-mode tenant, given by its handlers after the layer
//! admitted the request (and counted it as admitted), so no decision of the layer carries it.
//!
//! No label holds anything a client sent: no key, no prefix, no tenant or key id. A request
//! that an [`AuthLayer`](crate::AuthLayer) nested inside another one refuses (a scope the
//! outer layer's key lacks) counts once as admitted, by the outer layer, and once as refused.
//!
//! ```
//! use keygate::{Verifier, request::RequestHead, store::MemoryStore};
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//!
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! // Installed first (here for this thread only; an application installs it globally).
//! let verifier = metrics::with_local_recorder(&recorder, || {
//!     Verifier::builder(MemoryStore::new()).build()
//! });
//!
//! let request = http::Request::get("/").body(()).unwrap();
//! assert!(verifier.check_now(&RequestHead::from(&request), None).unwrap().is_err());
//!
//! let missing = snapshotter.snapshot().into_vec().into_iter().find(|(key, ..)| {
//!     key.key().name() == "keygate_requests_total"
//!         && key.key().labels().any(|l| l.value() == "missing_credential")
//! });
//! assert!(matches!(missing, Some((_, _, _, DebugValue::Counter(1)))));
//! ```
//!
//! Histograms are recorded in seconds; with `metrics-exporter-prometheus`, give them buckets
//! (`set_buckets_for_metric`) to export Prometheus histograms rather than summaries. The
//! quickstart serves all of this at `GET /metrics`.
//!
//! [`AuthError`]: crate::AuthError

#[cfg(feature = "metrics")]
mod recorded;
#[cfg(feature = "metrics")]
pub(crate) use recorded::Tally;
#[cfg(feature = "metrics")]
use recorded::{Stopwatch, Timing, describe};

#[cfg(not(feature = "metrics"))]
mod off;
#[cfg(not(feature = "metrics"))]
pub(crate) use off::Tally;
#[cfg(not(feature = "metrics"))]
use off::{Stopwatch, Timing, describe};

use crate::error::AuthError;

const REQUESTS: &str = "keygate_requests_total";
const STORE_DURATION: &str = "keygate_store_duration_seconds";
const STORE_ERRORS: &str = "keygate_store_errors_total";
const LIMITER_DURATION: &str = "keygate_limiter_duration_seconds";
const LIMITER_ERRORS: &str = "keygate_limiter_errors_total";
const FAIL_OPEN: &str = "keygate_limits_fail_open_total";
const KEY_CACHE: &str = "keygate_key_cache_total";
const KEY_CACHE_EVICTIONS: &str = "keygate_key_cache_evictions_total";
const KEY_CACHE_INVALIDATIONS: &str = "keygate_key_cache_invalidations_total";
const KEY_CACHE_BUDGET: &str = "keygate_key_cache_miss_budget_exceeded_total";
const KEY_CACHE_STALE: &str = "keygate_key_cache_stale_served_total";

/// Every metric's name, kind and help text, for the recorder's descriptions.
const DESCRIPTIONS: [(&str, Kind, &str); 11] = [
    (
        REQUESTS,
        Kind::Counter,
        "Requests the verifier decided, by outcome, error code and reason.",
    ),
    (
        STORE_DURATION,
        Kind::Seconds,
        "Time a request waited for the key store (op=find) or the entitlement source (op=entitlements).",
    ),
    (
        STORE_ERRORS,
        Kind::Counter,
        "Key store (op=find) or entitlement source (op=entitlements) lookups that failed or timed out.",
    ),
    (
        LIMITER_DURATION,
        Kind::Seconds,
        "Time a request waited for the limiter.",
    ),
    (
        LIMITER_ERRORS,
        Kind::Counter,
        "Limiter calls that failed or timed out.",
    ),
    (
        FAIL_OPEN,
        Kind::Counter,
        "Requests admitted without their limits because the limiter failed (fail open).",
    ),
    (
        KEY_CACHE,
        Kind::Counter,
        "Key cache lookups by result: hit, negative_hit (a remembered unknown key) or miss.",
    ),
    (
        KEY_CACHE_EVICTIONS,
        Kind::Counter,
        "Key cache entries evicted to stay within capacity.",
    ),
    (
        KEY_CACHE_INVALIDATIONS,
        Kind::Counter,
        "Key cache entries dropped by a change: one key, or a flush of everything.",
    ),
    (
        KEY_CACHE_BUDGET,
        Kind::Counter,
        "Key cache lookups refused because the miss budget was used up.",
    ),
    (
        KEY_CACHE_STALE,
        Kind::Counter,
        "Key records served past their TTL while the store failed (serve-stale).",
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Seconds,
}

/// The `reason` and `code` labels of each refusal, indexed by [`reason_index`].
const REASONS: [(&str, &str); 17] = [
    ("missing_credential", "UNAUTHORIZED"),
    ("multiple_credentials", "UNAUTHORIZED"),
    ("unsupported_scheme", "UNAUTHORIZED"),
    ("malformed", "UNAUTHORIZED"),
    ("unknown_key", "UNAUTHORIZED"),
    ("revoked_key", "UNAUTHORIZED"),
    ("expired_key", "UNAUTHORIZED"),
    ("environment_not_accepted", "UNAUTHORIZED"),
    ("invalid_dev_tenant", "UNAUTHORIZED"),
    ("development_mode", "FORBIDDEN"),
    ("insufficient_scope", "FORBIDDEN"),
    ("tenant_suspended", "FORBIDDEN"),
    ("no_plan", "FORBIDDEN"),
    ("quota_exhausted", "FORBIDDEN"),
    ("restriction_violated", "FORBIDDEN"),
    ("rate_limited", "RATE_LIMITED"),
    ("unavailable", "SERVICE_UNAVAILABLE"),
];

/// Where `error`'s labels are in [`REASONS`]; a match, so that a new variant must be placed.
fn reason_index(error: &AuthError) -> usize {
    match error {
        AuthError::MissingCredential => 0,
        AuthError::MultipleCredentials => 1,
        AuthError::UnsupportedScheme => 2,
        AuthError::Malformed(_) => 3,
        AuthError::UnknownKey => 4,
        AuthError::RevokedKey => 5,
        AuthError::ExpiredKey => 6,
        AuthError::EnvironmentNotAccepted(_) => 7,
        AuthError::InvalidDevTenant => 8,
        AuthError::DevelopmentMode => 9,
        AuthError::InsufficientScope(_) => 10,
        AuthError::TenantSuspended => 11,
        AuthError::NoPlan => 12,
        AuthError::QuotaExhausted => 13,
        AuthError::RestrictionViolated(_) => 14,
        AuthError::RateLimited { .. } => 15,
        AuthError::Unavailable => 16,
    }
}

/// A backend lookup the verifier may wait for.
#[derive(Clone, Copy)]
pub(crate) enum StoreOp {
    /// The key store's `find`.
    Find,
    /// The entitlement source.
    Entitlements,
}

/// A point in time to measure a wait from; reads no clock when the feature is off.
pub(crate) fn start() -> Stopwatch {
    Stopwatch::start()
}

/// The verifier's metrics: registered when it is built, recorded on the request path.
#[derive(Default)]
pub(crate) struct VerifierMetrics {
    admitted: Tally,
    refused: [Tally; REASONS.len()],
    find_duration: Timing,
    entitlements_duration: Timing,
    find_errors: Tally,
    entitlements_errors: Tally,
    limiter_duration: Timing,
    limiter_errors: Tally,
    fail_open: Tally,
}

impl VerifierMetrics {
    /// Registers every series with the recorder installed now.
    pub(crate) fn register() -> Self {
        describe(&DESCRIPTIONS);
        VerifierMetrics {
            admitted: Tally::register(REQUESTS, &[("outcome", "admitted")]),
            refused: REASONS.map(|(reason, code)| {
                Tally::register(
                    REQUESTS,
                    &[("outcome", "refused"), ("code", code), ("reason", reason)],
                )
            }),
            find_duration: Timing::register(STORE_DURATION, &[("op", "find")]),
            entitlements_duration: Timing::register(STORE_DURATION, &[("op", "entitlements")]),
            find_errors: Tally::register(STORE_ERRORS, &[("op", "find")]),
            entitlements_errors: Tally::register(STORE_ERRORS, &[("op", "entitlements")]),
            limiter_duration: Timing::register(LIMITER_DURATION, &[]),
            limiter_errors: Tally::register(LIMITER_ERRORS, &[]),
            fail_open: Tally::register(FAIL_OPEN, &[]),
        }
    }

    /// One decision: admitted, or refused with `error`.
    #[inline]
    pub(crate) fn decided(&self, refusal: Option<&AuthError>) {
        match refusal {
            None => self.admitted.add_one(),
            Some(error) => self.refused[reason_index(error)].add_one(),
        }
    }

    /// A wait for the key store or the entitlement source ended, with or without an answer.
    pub(crate) fn store_waited(&self, op: StoreOp, since: Stopwatch) {
        match op {
            StoreOp::Find => self.find_duration.observe(since),
            StoreOp::Entitlements => self.entitlements_duration.observe(since),
        }
    }

    /// The key store or the entitlement source failed or timed out.
    pub(crate) fn store_failed(&self, op: StoreOp) {
        match op {
            StoreOp::Find => self.find_errors.add_one(),
            StoreOp::Entitlements => self.entitlements_errors.add_one(),
        }
    }

    /// A wait for the limiter ended.
    pub(crate) fn limiter_waited(&self, since: Stopwatch) {
        self.limiter_duration.observe(since);
    }

    /// The limiter failed or timed out.
    pub(crate) fn limiter_failed(&self) {
        self.limiter_errors.add_one();
    }

    /// A request admitted without its limits (fail open).
    pub(crate) fn failed_open(&self) {
        self.fail_open.add_one();
    }
}

/// The key cache's metrics: registered when it is built.
#[derive(Default)]
pub(crate) struct KeyCacheMetrics {
    hit: Tally,
    negative_hit: Tally,
    miss: Tally,
    /// Cloned into the records cache's eviction hook.
    pub(crate) records_evicted: Tally,
    /// Cloned into the unknown-key cache's eviction hook.
    pub(crate) unknown_evicted: Tally,
    key_invalidated: Tally,
    flushed: Tally,
    budget_exceeded: Tally,
    stale_served: Tally,
}

impl KeyCacheMetrics {
    /// Registers every series with the recorder installed now.
    pub(crate) fn register() -> Self {
        describe(&DESCRIPTIONS);
        KeyCacheMetrics {
            hit: Tally::register(KEY_CACHE, &[("result", "hit")]),
            negative_hit: Tally::register(KEY_CACHE, &[("result", "negative_hit")]),
            miss: Tally::register(KEY_CACHE, &[("result", "miss")]),
            records_evicted: Tally::register(KEY_CACHE_EVICTIONS, &[("cache", "records")]),
            unknown_evicted: Tally::register(KEY_CACHE_EVICTIONS, &[("cache", "unknown")]),
            key_invalidated: Tally::register(KEY_CACHE_INVALIDATIONS, &[("kind", "key")]),
            flushed: Tally::register(KEY_CACHE_INVALIDATIONS, &[("kind", "flush")]),
            budget_exceeded: Tally::register(KEY_CACHE_BUDGET, &[]),
            stale_served: Tally::register(KEY_CACHE_STALE, &[]),
        }
    }

    /// A record served from memory.
    #[inline]
    pub(crate) fn hit(&self) {
        self.hit.add_one();
    }

    /// A key answered "unknown" from memory.
    #[inline]
    pub(crate) fn negative_hit(&self) {
        self.negative_hit.add_one();
    }

    /// Neither: the store is asked.
    pub(crate) fn miss(&self) {
        self.miss.add_one();
    }

    /// One key's entries dropped by a change.
    pub(crate) fn key_invalidated(&self) {
        self.key_invalidated.add_one();
    }

    /// Everything dropped.
    pub(crate) fn flushed(&self) {
        self.flushed.add_one();
    }

    /// A lookup refused by the miss budget.
    pub(crate) fn budget_exceeded(&self) {
        self.budget_exceeded.add_one();
    }

    /// A record served past its TTL (serve-stale).
    pub(crate) fn stale_served(&self) {
        self.stale_served.add_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Environment, MalformedKey};
    use crate::restriction::Violation;
    use crate::scope::Scope;

    /// Each variant's `code` label is the code its error envelope carries.
    #[test]
    fn every_reason_has_the_code_of_its_error() {
        let samples = [
            AuthError::MissingCredential,
            AuthError::MultipleCredentials,
            AuthError::UnsupportedScheme,
            AuthError::Malformed(MalformedKey::Length),
            AuthError::UnknownKey,
            AuthError::RevokedKey,
            AuthError::ExpiredKey,
            AuthError::EnvironmentNotAccepted(Environment::Live),
            AuthError::InvalidDevTenant,
            AuthError::DevelopmentMode,
            AuthError::InsufficientScope(Scope::READ),
            AuthError::TenantSuspended,
            AuthError::NoPlan,
            AuthError::QuotaExhausted,
            AuthError::RestrictionViolated(Violation::Endpoint),
            AuthError::RateLimited {
                retry_after_secs: 1,
            },
            AuthError::Unavailable,
        ];
        let mut seen = [false; REASONS.len()];
        for error in &samples {
            let i = reason_index(error);
            assert_eq!(REASONS[i].1, error.code(), "{error:?}");
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s), "every row is some variant's");
    }
}
