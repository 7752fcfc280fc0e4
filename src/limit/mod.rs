//! Rate limits and quotas, checked and consumed all-or-nothing.
//!
//! A [`Limiter`] receives everything a request must pass at once (the tenant's rate limit, the
//! key's rate limit, the tenant's quota) and either consumes all of it or none: a request
//! refused by one limit never uses up another. The trait is shaped for shared backends (one
//! atomic check-and-consume with a cost).
//!
//! | limiter | rate limits | quota | after a restart | per request |
//! |---|---|---|---|---|
//! | [`MemoryLimiter`] | exact, per process | exact, per process | lost | no I/O |
//! | [`LeasedQuotaLimiter`] on a [`QuotaLedger`] ([`SqliteStore`](crate::store::SqliteStore), [`PostgresStore`](crate::store::PostgresStore)) | exact, per process ([`MemoryLimiter`]) | never exceeded across the instances sharing the ledger; durable | clean stop ([`shutdown`](LeasedQuotaLimiter::shutdown)): nothing lost; crash: less than 1.5 blocks per tenant (1 unit near the end) | no I/O; a ledger call per block, in the background, and per request near the end |
//! | `RedisLimiter` (feature `redis`) | exact across instances | exact across instances | as durable as Redis is configured | one Redis round trip (one Lua script) |
//!
//! Pick [`MemoryLimiter`] for one instance; [`LeasedQuotaLimiter`] when quotas are billing data
//! or several instances share a database (the bounds on early refusals near the end of a quota
//! are on its page); `RedisLimiter` when several instances must share one rate limit too.
//!
//! Rate limits use GCRA: a smooth limit of `limit` requests per `window` that allows bursts of
//! up to `limit`. Quotas count requests per tenant per calendar day or month (UTC).
//!
//! ```
//! use std::time::Duration;
//! use keygate::limit::{Decision, LimitRequest, Limiter, MemoryLimiter, Quota, QuotaPeriod, RateLimit};
//!
//! let limiter = MemoryLimiter::new();
//! let request = LimitRequest {
//!     tenant_id: "acme",
//!     key_id: "key_1",
//!     tenant_rate: Some(RateLimit::per_minute(2)),
//!     key_rate: None,
//!     quota: Some(Quota { limit: 1000, period: QuotaPeriod::Month }),
//!     cost: 1,
//! };
//! assert!(matches!(limiter.acquire_now(&request), Some(Ok(Decision::Allowed(_)))));
//! assert!(matches!(limiter.acquire_now(&request), Some(Ok(Decision::Allowed(_)))));
//! assert!(matches!(limiter.acquire_now(&request), Some(Ok(Decision::RateLimited { .. }))));
//! ```

mod clock;
mod headers;
mod leased;
mod memory;
mod period;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use self::redis::{RedisLimiter, RedisLimiterBuilder};
pub(crate) use clock::date_time_now;
pub use clock::{Clock, ManualClock, SystemClock};
pub use headers::LimitHeaders;
pub use leased::{
    LeasedQuotaLimiter, LeasedQuotaLimiterBuilder, QuotaAccount, QuotaLease, QuotaLedger,
};
pub use memory::MemoryLimiter;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backend::BackendError;

/// `limit` requests per `window`, bursts up to `limit`.
///
/// Serialized as `{"limit": n, "window": seconds}`. Reading or writing a `limit` of 0 or a
/// `window` under 1 second fails (the window is stored in whole seconds): such a limit would
/// admit nearly everything. The limiters count a `limit` of 0 as 1, a zero window as their
/// smallest unit, and a window longer than 2^32 seconds (about 136 years) as 2^32 seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests allowed per window (at least 1).
    #[serde(with = "at_least_one")]
    pub limit: u32,
    /// The window (at least 1 second).
    #[serde(with = "secs")]
    pub window: Duration,
}

/// The longest window the limiters count, in seconds: longer ones count as this. It keeps a
/// window's time added to the clock exact: in u64 nanoseconds, and under 2^53 µs (the integers
/// a Lua number holds) on Redis until the year 2119.
pub(crate) const MAX_WINDOW_SECS: u64 = 1 << 32;

impl RateLimit {
    /// `limit` requests per minute.
    pub const fn per_minute(limit: u32) -> Self {
        RateLimit {
            limit,
            window: Duration::from_secs(60),
        }
    }

    /// `limit` requests per second.
    pub const fn per_second(limit: u32) -> Self {
        RateLimit {
            limit,
            window: Duration::from_secs(1),
        }
    }
}

/// A window in whole seconds, at least 1: a zero window would disable the limit.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de, ser};

    const ZERO: &str = "rate limit window must be at least 1 second";

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        // Under a second would be stored as 0, which cannot be read back.
        match d.as_secs() {
            0 => Err(ser::Error::custom(ZERO)),
            secs => s.serialize_u64(secs),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match u64::deserialize(d)? {
            0 => Err(de::Error::custom(ZERO)),
            secs => Ok(Duration::from_secs(secs)),
        }
    }
}

/// A rate limit's `limit`, at least 1.
mod at_least_one {
    use serde::{Deserialize, Deserializer, Serializer, de, ser};

    const ZERO: &str = "rate limit must allow at least 1 request per window";

    pub(super) fn serialize<S: Serializer>(limit: &u32, s: S) -> Result<S::Ok, S::Error> {
        match limit {
            0 => Err(ser::Error::custom(ZERO)),
            &n => s.serialize_u32(n),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        match u32::deserialize(d)? {
            0 => Err(de::Error::custom(ZERO)),
            n => Ok(n),
        }
    }
}

/// A calendar period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    /// From 00:00 UTC to the next.
    Day,
    /// From the first of the month, 00:00 UTC, to the next first.
    Month,
}

/// `limit` requests per tenant per calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Requests allowed per period.
    pub limit: u64,
    /// The period.
    pub period: QuotaPeriod,
}

/// Everything one request must pass.
#[derive(Debug, Clone, Copy)]
pub struct LimitRequest<'a> {
    /// The tenant: its rate limit and quota are shared by all its keys.
    pub tenant_id: &'a str,
    /// The key, for a per-key rate limit.
    pub key_id: &'a str,
    /// The tenant's rate limit.
    pub tenant_rate: Option<RateLimit>,
    /// The key's own rate limit.
    pub key_rate: Option<RateLimit>,
    /// The tenant's quota.
    pub quota: Option<Quota>,
    /// How much this request consumes (usually 1; the verifier always asks for 1). A cost above
    /// a rate limit's `limit` never fits in its bucket: such a request is always refused as
    /// rate limited, and its `retry_after_secs` is only when the bucket is full again.
    pub cost: u32,
}

/// The state of the most constraining rate limit after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    /// Which limit this is: `"tenant"` or `"key"`.
    pub name: &'static str,
    /// Requests per window.
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Window length in seconds.
    pub window_secs: u64,
    /// Seconds until the limit is fully replenished.
    pub reset_after_secs: u64,
    /// Unix time (seconds) when the limit is fully replenished.
    pub reset_at: u64,
}

/// The state of the quota after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaStatus {
    /// Requests per period.
    pub limit: u64,
    /// Requests left in this period.
    pub remaining: u64,
    /// Length of the current period in seconds.
    pub period_secs: u64,
    /// Seconds until the next period starts.
    pub reset_after_secs: u64,
}

/// What the limits look like after a decision; rendered as response headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The most constraining rate limit, if any applies.
    pub rate: Option<RateStatus>,
    /// The quota, if one applies.
    pub quota: Option<QuotaStatus>,
}

/// The answer of a limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Everything passed and was consumed.
    Allowed(Usage),
    /// A rate limit refused; nothing was consumed.
    RateLimited {
        /// Whole seconds (at least 1) until the request could pass.
        retry_after_secs: u64,
        /// The limits' state.
        usage: Usage,
    },
    /// The quota is used up; nothing was consumed.
    QuotaExhausted {
        /// The limits' state.
        usage: Usage,
    },
}

/// Checks and consumes rate limits and quotas, all-or-nothing.
///
/// A backend that fails returns a [`BackendError`]; the verifier then refuses the request with
/// 503, or lets it through when configured to fail open.
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// One atomic check-and-consume of everything in `request`.
    async fn acquire(&self, request: &LimitRequest<'_>) -> Result<Decision, BackendError>;

    /// The same, answered at once when the backend can (in-process limiters); `None` means
    /// "ask [`Limiter::acquire`]" and must not have consumed anything.
    fn acquire_now(&self, request: &LimitRequest<'_>) -> Option<Result<Decision, BackendError>> {
        let _ = request;
        None
    }
}

/// A shared limiter, e.g. one chosen at run time as `Arc<dyn Limiter>`.
#[async_trait]
impl<L: Limiter + ?Sized> Limiter for std::sync::Arc<L> {
    async fn acquire(&self, request: &LimitRequest<'_>) -> Result<Decision, BackendError> {
        (**self).acquire(request).await
    }

    fn acquire_now(&self, request: &LimitRequest<'_>) -> Option<Result<Decision, BackendError>> {
        (**self).acquire_now(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_of_zero_is_refused_when_read() {
        let error = |json| {
            serde_json::from_str::<RateLimit>(json)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error(r#"{"limit":5,"window":0}"#),
            "rate limit window must be at least 1 second at line 1 column 22"
        );
        assert_eq!(
            error(r#"{"limit":0,"window":1}"#),
            "rate limit must allow at least 1 request per window at line 1 column 10"
        );
        assert_eq!(
            serde_json::from_str::<RateLimit>(r#"{"limit":1,"window":1}"#).unwrap(),
            RateLimit::per_second(1)
        );
    }

    /// What cannot be read back is not written: a window under a second (stored as whole
    /// seconds, 0) and a limit of 0.
    #[test]
    fn a_rate_limit_of_zero_is_refused_when_written() {
        let error = |limit: RateLimit| serde_json::to_string(&limit).unwrap_err().to_string();
        assert_eq!(
            error(RateLimit {
                limit: 5,
                window: Duration::from_millis(999),
            }),
            "rate limit window must be at least 1 second"
        );
        assert_eq!(
            error(RateLimit::per_minute(0)),
            "rate limit must allow at least 1 request per window"
        );
        assert_eq!(
            serde_json::to_string(&RateLimit::per_minute(600)).unwrap(),
            r#"{"limit":600,"window":60}"#
        );
    }
}
