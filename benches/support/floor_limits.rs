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

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use keygate::Tenant;
use keygate::key::KeyFormat;
use keygate::limit::QuotaPeriod;
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
    x_limit: HeaderValue,
    policy: HeaderValue,
}

/// The floor of the full pipeline; `limit` requests a second per tenant, `quota` a month.
#[derive(Clone)]
pub(crate) struct FloorLimitsLayer(Arc<Shared>);

impl FloorLimitsLayer {
    pub(crate) fn new(
        records: impl IntoIterator<Item = KeyRecord>,
        limit: u32,
        quota: u64,
    ) -> Self {
        let mut tenants: HashMap<String, Arc<TenantLimits>> = HashMap::new();
        let keys = records.into_iter().map(|r| {
            let limits = tenants.entry(r.tenant_id.clone()).or_default().clone();
            (r.digest, (Tenant::new(Arc::new(r)), limits))
        });
        let keys = keys.collect();
        let epoch_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (month_start, month_end) = QuotaPeriod::Month.bounds(epoch_unix);
        let window = NANOS;
        // Leaked once: a `'static` header value clones for free.
        let leak = |s: String| HeaderValue::from_static(Box::leak(s.into_boxed_str()));
        FloorLimitsLayer(Arc::new(Shared {
            format: KeyFormat::default(),
            keys,
            epoch: Instant::now(),
            epoch_unix,
            limit: u64::from(limit),
            window,
            interval: window / u64::from(limit),
            quota,
            period_end_unix: month_end,
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

impl Shared {
    /// Checks and counts both limits (the rate limit first, the quota only if it admits);
    /// `None` when either refuses.
    fn admit(&self, limits: &TenantLimits) -> Option<Values> {
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
        let remaining = (u128::from(self.window - ahead) * u128::from(self.limit)
            / u128::from(self.window)) as u64;
        let reset_after = ahead.div_ceil(NANOS).max(1);
        let unix = self.epoch_unix + now / NANOS;

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
        push(int.format(self.quota - used - 1).as_bytes());
        push(b";t=");
        let state_end = push(int.format(self.period_end_unix - unix).as_bytes()).end;
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
        let Some(values) = self.0.admit(limits) else {
            return FloorLimitsFuture::Refused {
                status: StatusCode::TOO_MANY_REQUESTS,
            };
        };
        let tenant = tenant.clone();
        req.headers_mut().remove(X_API_KEY);
        req.extensions_mut().insert(tenant);
        FloorLimitsFuture::Inner {
            future: self.1.call(req),
            headers: Some((values, self.0.clone())),
        }
    }
}

pin_project_lite::pin_project! {
    #[project = FloorLimitsProj]
    pub(crate) enum FloorLimitsFuture<F> {
        Inner { #[pin] future: F, headers: Option<(Values, Arc<Shared>)> },
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
                if let Some((values, shared)) = headers.take() {
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
