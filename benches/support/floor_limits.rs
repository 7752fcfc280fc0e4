//! The floor of the full pipeline: the checked floor of `floor.rs` (the key's format and
//! checksum, one credential, the record's checks, the credential's header removed) plus the
//! least a layer can do to enforce the bench plan's two limits and send the same five limit
//! headers keygate sends.
//! Per tenant, one rate limit (GCRA on one atomic) and one quota counter (one atomic); the
//! plan's two constant header values rendered once (as `'static` values, so a clone costs
//! nothing); the three that change written with `itoa` into one buffer that becomes one shared
//! allocation, split into the three values (two reference counts); room reserved for all five
//! and axum's `content-length`. No plan lookup (the
//! limits are fixed), no per-key limit, no metrics; a refusal is a bare 401 or 429;
//! the month's end is computed once, at start.
//!
//! With `checked` (side `floor_limits_checked`), the limits also keep what keygate's contract
//! asks of any limiter, each in the least way, as the checked floor does for the key: the
//! tenant's plan read on every request from a map that may change at any time (a tenant without
//! one is refused, 403), limit state for any tenant created on its first request and dropped
//! again once idle (memory follows the active tenants), both limits checked before either is
//! consumed (a request the quota refuses uses no rate limit), and the quota's calendar month
//! taken from the wall clock, starting over when it ends. One lock for the plans, 64 for the
//! states; no pluggable plan source, limiter or clock, no `Usage` in between. The two constant
//! header values are the bare floor's (the bench has one plan).
//!
//! With [`FloorHeaders::Keygate`] (side `floor_keygate_headers`), the checked floor hands its
//! count to keygate's [`LimitHeaders::apply`] as a [`Usage`] and lets it render and insert the
//! five headers: everything else is the checked floor's, in the same binary, so that the
//! difference between the two sides is keygate's header code alone, free of the code-layout
//! effects that move a comparison between two builds.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use keygate::Tenant;
use keygate::key::KeyFormat;
use keygate::limit::{LimitHeaders, QuotaPeriod, QuotaStatus, RateStatus, Usage};
use keygate::store::KeyRecord;
use tower::{Layer, Service};

use super::floor::{ByDigest, X_API_KEY, checked_lookup, refusal};

const NANOS: u64 = 1_000_000_000;

/// One tenant's limits: the GCRA's theoretical arrival time (ns since `Shared::epoch`) and the
/// quota's use this period.
#[derive(Default)]
struct TenantLimits {
    tat: AtomicU64,
    used: AtomicU64,
}

struct Shared {
    /// The checked floor's limits; `None` for the bare floor of the full pipeline, which counts
    /// in the `TenantLimits` each key's entry holds.
    checked: Option<CheckedLimits>,
    format: KeyFormat,
    keys: ByDigest<(Tenant, Arc<TenantLimits>)>,
    epoch: Instant,
    epoch_unix: u64,
    /// The rate limit: `limit` requests per `window` ns, one every `interval` ns.
    limit: u64,
    window: u64,
    interval: u64,
    quota: u64,
    period_end_unix: u64,
    /// The length of the month the bare floor counts in, in seconds.
    period_secs: u64,
    headers: FloorHeaders,
    x_limit: HeaderValue,
    policy: HeaderValue,
}

/// The floor of the full pipeline; `limit` requests a second per tenant, `quota` a month.
#[derive(Clone)]
pub(crate) struct FloorLimitsLayer(Arc<Shared>);

/// Who renders the five limit headers of the floor of the full pipeline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloorHeaders {
    /// The floor's own code (the module docs).
    Own,
    /// keygate's [`LimitHeaders::apply`], from a [`Usage`] made of the floor's count.
    Keygate,
}

impl FloorLimitsLayer {
    /// With `checked`, the limits of the checked floor (module docs): every tenant of
    /// `records` gets the plan of `limit` and `quota`; `headers` says who renders the headers.
    pub(crate) fn new(
        records: impl IntoIterator<Item = KeyRecord>,
        limit: u32,
        quota: u64,
        checked: bool,
        headers: FloorHeaders,
    ) -> Self {
        let mut tenants: HashMap<String, Arc<TenantLimits>> = HashMap::new();
        let keys = records.into_iter().map(|r| {
            let limits = tenants.entry(r.tenant_id.clone()).or_default().clone();
            (r.digest, (Tenant::new(Arc::new(r)), limits))
        });
        let keys: ByDigest<_> = keys.collect();
        let checked = checked.then(|| {
            let plan = CheckedPlan::new(u64::from(limit), NANOS, quota);
            CheckedLimits::new(tenants.keys().map(|t| (t.clone(), plan)))
        });
        let epoch_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (month_start, month_end) = QuotaPeriod::Month.bounds(epoch_unix);
        let window = NANOS;
        // Leaked once: a `'static` header value clones for free.
        let leak = |s: String| HeaderValue::from_static(Box::leak(s.into_boxed_str()));
        FloorLimitsLayer(Arc::new(Shared {
            checked,
            format: KeyFormat::default(),
            keys,
            epoch: Instant::now(),
            epoch_unix,
            limit: u64::from(limit),
            window,
            interval: window / u64::from(limit),
            quota,
            period_end_unix: month_end,
            period_secs: month_end - month_start,
            headers,
            x_limit: leak(limit.to_string()),
            policy: leak(format!(
                "\"tenant\";q={limit};w=1, \"quota\";q={quota};w={}",
                month_end - month_start
            )),
        }))
    }
}

impl<S> Layer<S> for FloorLimitsLayer {
    type Service = FloorLimits<S>;
    fn layer(&self, inner: S) -> FloorLimits<S> {
        FloorLimits(self.0.clone(), inner)
    }
}

#[derive(Clone)]
pub(crate) struct FloorLimits<S>(Arc<Shared>, S);

/// The rendered values' buffer, owned by the shared bytes the values point into.
struct Rendered {
    buf: [u8; 160],
    len: usize,
}

impl AsRef<[u8]> for Rendered {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The three header values that change per request.
struct Values {
    remaining: HeaderValue,
    reset: HeaderValue,
    state: HeaderValue,
}

/// A tenant's plan as the checked floor keeps it: the rate limit's interval and burst in
/// nanoseconds (as keygate counts them: the interval rounded up, so that no window admits more
/// than the limit) and the monthly quota.
#[derive(Clone, Copy)]
struct CheckedPlan {
    interval: u64,
    capacity: u64,
    quota: u64,
}

impl CheckedPlan {
    fn new(limit: u64, window: u64, quota: u64) -> Self {
        let interval = window.div_ceil(limit.max(1));
        CheckedPlan {
            interval,
            capacity: interval * limit,
            quota,
        }
    }
}

/// One tenant's limit state in the checked floor.
#[derive(Default)]
struct CheckedState {
    /// The rate limit's theoretical arrival time, in ns since the Unix epoch.
    tat: u64,
    /// The quota's use in the month that ends at `month_end` (Unix seconds).
    used: u64,
    month_end: u64,
    /// That month's length in seconds.
    month_secs: u64,
}

impl CheckedState {
    /// Whether this state decides as a fresh one would from `now` on: the rate limit full
    /// again and no quota counted in a month still running.
    fn is_idle(&self, now: u64) -> bool {
        self.tat <= now && (self.used == 0 || now / NANOS >= self.month_end)
    }

    /// Both limits checked at `now` (ns since the Unix epoch), then both consumed, or neither.
    fn count(&mut self, plan: &CheckedPlan, now: u64) -> Result<Counted, StatusCode> {
        let unix = now / NANOS;
        if unix >= self.month_end {
            self.used = 0;
            let (start, end) = QuotaPeriod::Month.bounds(unix);
            self.month_end = end;
            self.month_secs = end - start;
        }
        let new_tat = self.tat.max(now) + plan.interval;
        let ahead = new_tat - now;
        if ahead > plan.capacity || self.used >= plan.quota {
            return Err(StatusCode::TOO_MANY_REQUESTS);
        }
        self.tat = new_tat;
        self.used += 1;
        Ok(Counted {
            remaining: (plan.capacity - ahead) / plan.interval,
            reset_after: ahead.div_ceil(NANOS).max(1),
            unix,
            quota_remaining: plan.quota - self.used,
            period_left: self.month_end - unix,
            period_secs: self.month_secs,
        })
    }
}

/// How many independently locked maps hold the states.
const SHARDS: usize = 64;
/// Every this many checks of a map, its idle states are dropped.
const EVICT_EVERY: u32 = 64;

type TenantMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct StateShard {
    states: TenantMap<CheckedState>,
    checks: u32,
}

/// The checked floor's plans and limit states.
struct CheckedLimits {
    plans: RwLock<TenantMap<CheckedPlan>>,
    shards: Box<[Mutex<StateShard>; SHARDS]>,
    hasher: foldhash::fast::RandomState,
}

impl CheckedLimits {
    fn new(plans: impl IntoIterator<Item = (String, CheckedPlan)>) -> Self {
        CheckedLimits {
            plans: RwLock::new(plans.into_iter().collect()),
            shards: Box::new(std::array::from_fn(|_| Mutex::default())),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Checks both of the tenant's limits at the wall clock's time and consumes them only if
    /// both admit: 403 without a plan, 429 when a limit refuses.
    fn count(&self, tenant_id: &str) -> Result<Counted, StatusCode> {
        let plan = self
            .plans
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant_id)
            .copied()
            .ok_or(StatusCode::FORBIDDEN)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let index = (self.hasher.hash_one(tenant_id) >> 32) as usize % SHARDS;
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let shard = &mut *shard;
        shard.checks = shard.checks.wrapping_add(1);
        if shard.checks.is_multiple_of(EVICT_EVERY) {
            shard.states.retain(|_, state| !state.is_idle(now));
        }
        match shard.states.get_mut(tenant_id) {
            Some(state) => state.count(&plan, now),
            None => {
                let mut state = CheckedState::default();
                let counted = state.count(&plan, now);
                shard.states.insert(tenant_id.to_owned(), state);
                counted
            }
        }
    }
}

/// What one admitted request leaves of the limits, for the headers.
struct Counted {
    remaining: u64,
    /// Whole seconds until the rate limit is full again (at least 1).
    reset_after: u64,
    /// The time of the decision, in Unix seconds.
    unix: u64,
    quota_remaining: u64,
    /// Seconds until the quota's period ends.
    period_left: u64,
    /// The length of the quota's period in seconds.
    period_secs: u64,
}

impl Counted {
    /// What keygate's limiters would report for this count: the rate limit of `shared`, one
    /// request a second per unit of its limit, and the monthly quota.
    fn usage(&self, shared: &Shared) -> Usage {
        Usage {
            rate: Some(RateStatus {
                name: "tenant",
                limit: u32::try_from(shared.limit).unwrap_or(u32::MAX),
                remaining: u32::try_from(self.remaining).unwrap_or(u32::MAX),
                window_secs: shared.window / NANOS,
                reset_after_secs: self.reset_after,
                reset_at: self.unix + self.reset_after,
            }),
            quota: Some(QuotaStatus {
                limit: shared.quota,
                remaining: self.quota_remaining,
                period_secs: self.period_secs,
                reset_after_secs: self.period_left,
            }),
        }
    }
}

impl Shared {
    /// The bare floor's count: the rate limit checked and consumed first, then the quota (a
    /// request the quota refuses has used the rate limit); `None` when either refuses.
    fn count(&self, limits: &TenantLimits) -> Option<Counted> {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut tat = limits.tat.load(Ordering::Relaxed);
        let new_tat = loop {
            let new_tat = tat.max(now) + self.interval;
            if new_tat - now > self.window {
                return None;
            }
            match limits.tat.compare_exchange_weak(
                tat,
                new_tat,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break new_tat,
                Err(actual) => tat = actual,
            }
        };
        let used = limits.used.fetch_add(1, Ordering::Relaxed);
        if used >= self.quota {
            limits.used.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let ahead = new_tat - now;
        let unix = self.epoch_unix + now / NANOS;
        Some(Counted {
            remaining: (u128::from(self.window - ahead) * u128::from(self.limit)
                / u128::from(self.window)) as u64,
            reset_after: ahead.div_ceil(NANOS).max(1),
            unix,
            quota_remaining: self.quota - used - 1,
            period_left: self.period_end_unix - unix,
            period_secs: self.period_secs,
        })
    }
}

/// The three header values that change per request, for `counted`.
fn render(counted: &Counted) -> Option<Values> {
    let Counted {
        remaining,
        reset_after,
        unix,
        quota_remaining,
        period_left,
        ..
    } = *counted;
    let mut buf = [0u8; 160];
    let mut len = 0;
    let mut push = |s: &[u8]| -> Range<usize> {
        let start = len;
        buf[start..start + s.len()].copy_from_slice(s);
        len += s.len();
        start..len
    };
    let mut int = itoa::Buffer::new();
    let remaining_at = push(int.format(remaining).as_bytes());
    let reset_at = push(int.format(unix + reset_after).as_bytes());
    let state_start = push(b"\"tenant\";r=").start;
    push(int.format(remaining).as_bytes());
    push(b";t=");
    push(int.format(reset_after).as_bytes());
    push(b", \"quota\";r=");
    push(int.format(quota_remaining).as_bytes());
    push(b";t=");
    let state_end = push(int.format(period_left).as_bytes()).end;
    // One allocation (the buffer moves into it); the values are split off its front in
    // order, the last is what is left: two reference counts, three releases.
    let mut rest = Bytes::from_owner(Rendered { buf, len });
    let mut value = |r: Range<usize>| {
        let bytes = if r.len() == rest.len() {
            std::mem::take(&mut rest)
        } else {
            rest.split_to(r.len())
        };
        HeaderValue::from_maybe_shared(bytes).ok()
    };
    Some(Values {
        remaining: value(remaining_at)?,
        reset: value(reset_at)?,
        state: value(state_start..state_end)?,
    })
}

impl<S, B, R: Default> Service<Request<B>> for FloorLimits<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = FloorLimitsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.1.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let found = checked_lookup(&self.0.keys, req.headers(), &self.0.format, |e| &e.0);
        let Some((tenant, limits)) = found else {
            return FloorLimitsFuture::Refused {
                status: StatusCode::UNAUTHORIZED,
            };
        };
        let counted = match &self.0.checked {
            None => self.0.count(limits).ok_or(StatusCode::TOO_MANY_REQUESTS),
            Some(checked) => checked.count(tenant.tenant_id()),
        };
        let counted = match counted {
            Ok(counted) => counted,
            Err(status) => return FloorLimitsFuture::Refused { status },
        };
        let headers = match self.0.headers {
            FloorHeaders::Own => match render(&counted) {
                Some(values) => Headers::Own(values, self.0.clone()),
                // Unreachable with the buffer's size: never send a truncated value.
                None => {
                    return FloorLimitsFuture::Refused {
                        status: StatusCode::INTERNAL_SERVER_ERROR,
                    };
                }
            },
            FloorHeaders::Keygate => Headers::Keygate(counted.usage(&self.0)),
        };
        let tenant = tenant.clone();
        req.headers_mut().remove(X_API_KEY);
        req.extensions_mut().insert(tenant);
        FloorLimitsFuture::Inner {
            future: self.1.call(req),
            headers: Some(headers),
        }
    }
}

/// The headers an admitted request's response gets: the floor's values, or keygate's usage.
enum Headers {
    Own(Values, Arc<Shared>),
    Keygate(Usage),
}

pin_project_lite::pin_project! {
    #[project = FloorLimitsProj]
    pub(crate) enum FloorLimitsFuture<F> {
        Inner { #[pin] future: F, headers: Option<Headers> },
        Refused { status: StatusCode },
    }
}

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

impl<F, R: Default, E> Future for FloorLimitsFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            FloorLimitsProj::Inner { future, headers } => {
                let mut response = std::task::ready!(future.poll(cx))?;
                // Applied from where it lies, as keygate's response future does.
                if let Some(Headers::Keygate(usage)) = headers {
                    LimitHeaders::All.apply(response.headers_mut(), usage);
                } else if let Some(Headers::Own(values, shared)) = headers.take() {
                    let map = response.headers_mut();
                    map.reserve(6);
                    map.insert(X_RATELIMIT_LIMIT, shared.x_limit.clone());
                    map.insert(X_RATELIMIT_REMAINING, values.remaining);
                    map.insert(X_RATELIMIT_RESET, values.reset);
                    map.insert(RATELIMIT_POLICY, shared.policy.clone());
                    map.insert(RATELIMIT, values.state);
                }
                Poll::Ready(Ok(response))
            }
            FloorLimitsProj::Refused { status } => Poll::Ready(Ok(refusal(*status))),
        }
    }
}
