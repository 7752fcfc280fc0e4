use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::fast::RandomState;

use async_trait::async_trait;

use super::clock::{Clock, SystemClock};
use super::{
    Decision, LimitRequest, Limiter, Quota, QuotaPeriod, QuotaStatus, RateLimit, RateStatus, Usage,
};
use crate::backend::BackendError;

const NANOS: u64 = 1_000_000_000;

/// Limits in process memory: exact under concurrency (one lock around each check-and-consume),
/// per process (use a shared backend when several instances serve one tenant).
///
/// Tenants are spread over 64 independently locked maps, so that requests of different
/// tenants rarely wait for each other.
///
/// GCRA is written here rather than taken from `governor`: `governor` consumes as it checks
/// and cannot give back, so a request refused by a later limit would still have used up the
/// earlier ones. Checking every limit first and consuming only when all pass needs the state
/// in one place.
#[derive(Clone)]
pub struct MemoryLimiter {
    clock: Arc<dyn Clock>,
    shards: Arc<Shards>,
}

/// How many independently locked maps hold the tenants' state.
const SHARDS: usize = 64;

/// Tenant ids come from the key store, never from the client, so a fast seeded hash is safe
/// here; SipHash cost ~15 ns more per request.
struct Shards {
    hasher: RandomState,
    maps: [Mutex<TenantMap>; SHARDS],
}

type TenantMap = HashMap<String, TenantState, RandomState>;

impl Shards {
    fn new() -> Self {
        Shards {
            hasher: RandomState::default(),
            maps: std::array::from_fn(|_| Mutex::new(TenantMap::default())),
        }
    }

    /// The locked map that holds `tenant_id`.
    fn lock(&self, tenant_id: &str) -> MutexGuard<'_, TenantMap> {
        // The top bits pick the shard: the map itself uses the low ones for its buckets.
        let hash = self.hasher.hash_one(tenant_id);
        let index = usize::try_from(hash >> 58).unwrap_or(0) % SHARDS;
        self.maps[index].lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct TenantState {
    tat: u64,
    keys: HashMap<String, u64, RandomState>,
    period: Option<Period>,
    used: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Period {
    kind: QuotaPeriod,
    start: u64,
    end: u64,
}

impl std::fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiter").finish_non_exhaustive()
    }
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter::new()
    }
}

/// The outcome of one GCRA check, before anything is committed.
struct Gcra {
    name: &'static str,
    limit: u32,
    window: u64,
    interval: u64,
    capacity: u64,
    now: u64,
    /// The theoretical arrival time as it is.
    base: u64,
    /// The theoretical arrival time if this request is consumed.
    new_tat: u64,
    allowed: bool,
}

fn gcra(name: &'static str, limit: RateLimit, tat: u64, now: u64, cost: u32) -> Gcra {
    let window = u64::try_from(limit.window.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let max = u64::from(limit.limit.max(1));
    // Rounded up: a shorter interval would replenish faster than `limit` per `window` (by up
    // to a nanosecond per request, which at a million requests a second is a tenth too many).
    let interval = window.div_ceil(max);
    let capacity = interval * max;
    let base = tat.max(now);
    // A cost of up to u32::MAX times an interval of up to a window overflows u64: saturate,
    // which refuses such a request.
    let new_tat = base.saturating_add(interval.saturating_mul(u64::from(cost)));
    Gcra {
        name,
        limit: limit.limit,
        window,
        interval,
        capacity,
        now,
        base,
        new_tat,
        allowed: new_tat - now <= capacity,
    }
}

impl Gcra {
    /// Whole seconds (at least 1) until a refused request would fit.
    fn retry_after_secs(&self) -> u64 {
        (self.new_tat - self.capacity - self.now)
            .div_ceil(NANOS)
            .max(1)
    }

    /// The limit's state after this request if `consumed`, else as it stands. Computed only
    /// for the limit that is reported: the divisions are a good part of a check's cost.
    fn status(&self, consumed: bool) -> RateStatus {
        let used = if consumed { self.new_tat } else { self.base } - self.now;
        let reset_after = used.div_ceil(NANOS);
        RateStatus {
            name: self.name,
            limit: self.limit,
            remaining: u32::try_from(self.capacity.saturating_sub(used) / self.interval)
                .unwrap_or(u32::MAX),
            window_secs: self.window.div_ceil(NANOS),
            reset_after_secs: reset_after,
            reset_at: self.now / NANOS + reset_after,
        }
    }
}

impl Period {
    fn containing(kind: QuotaPeriod, now: u64) -> Period {
        let secs = now / NANOS;
        let day = secs / 86_400;
        let (start_day, end_day) = match kind {
            QuotaPeriod::Day => (day, day + 1),
            QuotaPeriod::Month => {
                let (y, m) = civil_from_days(day);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (days_from_civil(y, m), days_from_civil(ny, nm))
            }
        };
        Period {
            kind,
            start: start_day * 86_400,
            end: end_day * 86_400,
        }
    }
}

/// Year and month of a day count since 1970-01-01 (H. Hinnant's civil calendar algorithm).
fn civil_from_days(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m)
}

/// Days since 1970-01-01 of the first of month `m` of year `y`.
fn days_from_civil(y: u64, m: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl MemoryLimiter {
    /// A limiter on the system clock.
    pub fn new() -> Self {
        MemoryLimiter::with_clock(SystemClock)
    }

    /// A limiter on `clock` (e.g. a [`ManualClock`](super::ManualClock) in tests).
    pub fn with_clock(clock: impl Clock) -> Self {
        MemoryLimiter {
            clock: Arc::new(clock),
            shards: Arc::new(Shards::new()),
        }
    }

    /// Requests counted against the tenant's quota in the current period (0 if none).
    pub fn quota_used(&self, tenant_id: &str) -> u64 {
        let now = self.clock.now_nanos() / NANOS;
        self.shards
            .lock(tenant_id)
            .get(tenant_id)
            .filter(|t| t.period.is_some_and(|p| p.start <= now && now < p.end))
            .map_or(0, |t| t.used)
    }

    fn decide(&self, r: &LimitRequest<'_>) -> Decision {
        let now = self.clock.now_nanos();
        // One lock for the whole check-and-consume: all-or-nothing, exact under concurrency.
        let mut tenants = self.shards.lock(r.tenant_id);
        let state = match tenants.get_mut(r.tenant_id) {
            Some(state) => state,
            None => tenants.entry(r.tenant_id.to_owned()).or_default(),
        };

        let quota = r.quota.map(|q| quota_status(state, q, now, r.cost));
        let tenant = r
            .tenant_rate
            .map(|l| gcra("tenant", l, state.tat, now, r.cost));
        let key_tat = state.keys.get(r.key_id).copied().unwrap_or(0);
        let key = r.key_rate.map(|l| gcra("key", l, key_tat, now, r.cost));
        let quota_fits = quota.is_none_or(|(_, fits)| fits);
        let rate_fits = [&tenant, &key].into_iter().flatten().all(|g| g.allowed);
        let consumed = quota_fits && rate_fits;
        // Report the most constraining rate limit, as it stands after this decision.
        let rate = [&tenant, &key]
            .into_iter()
            .flatten()
            .map(|g| g.status(consumed))
            .min_by_key(|status| status.remaining);
        let usage = Usage {
            rate,
            quota: quota.map(|(status, _)| status),
        };

        if !quota_fits {
            return Decision::QuotaExhausted { usage };
        }
        let refused = [&tenant, &key].into_iter().flatten().filter(|g| !g.allowed);
        if let Some(retry_after_secs) = refused.map(Gcra::retry_after_secs).max() {
            return Decision::RateLimited {
                retry_after_secs,
                usage,
            };
        }

        // Every limit passed: consume them all.
        if let Some(g) = &tenant {
            state.tat = g.new_tat;
        }
        if let Some(g) = &key {
            match state.keys.get_mut(r.key_id) {
                Some(tat) => *tat = g.new_tat,
                None => {
                    state.keys.insert(r.key_id.to_owned(), g.new_tat);
                }
            }
        }
        let mut usage = usage;
        if let (Some(q), Some(status)) = (r.quota, usage.quota.as_mut()) {
            state.used += u64::from(r.cost);
            status.remaining = q.limit.saturating_sub(state.used);
        }
        Decision::Allowed(usage)
    }
}

/// The quota's state, and whether `cost` more fits; resets the count when a new period began.
fn quota_status(state: &mut TenantState, quota: Quota, now: u64, cost: u32) -> (QuotaStatus, bool) {
    let secs = now / NANOS;
    let current = match state.period {
        Some(p) if p.kind == quota.period && p.start <= secs && secs < p.end => p,
        _ => {
            state.used = 0;
            let p = Period::containing(quota.period, now);
            state.period = Some(p);
            p
        }
    };
    let fits = state.used.saturating_add(u64::from(cost)) <= quota.limit;
    (
        QuotaStatus {
            limit: quota.limit,
            remaining: quota.limit.saturating_sub(state.used),
            period_secs: current.end - current.start,
            reset_after_secs: current.end - secs,
        },
        fits,
    )
}

#[async_trait]
impl Limiter for MemoryLimiter {
    async fn acquire(&self, request: &LimitRequest<'_>) -> Result<Decision, BackendError> {
        Ok(self.decide(request))
    }

    fn acquire_now(&self, request: &LimitRequest<'_>) -> Option<Result<Decision, BackendError>> {
        Some(Ok(self.decide(request)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_months() {
        // 2024-02-15 → February 2024, a leap month of 29 days.
        let p = Period::containing(QuotaPeriod::Month, 1_707_955_200 * NANOS);
        assert_eq!(p.start, 1_706_745_600); // 2024-02-01
        assert_eq!(p.end - p.start, 29 * 86_400);
        // 2023-12-31T23:59:59 → December 2023.
        let p = Period::containing(QuotaPeriod::Month, 1_704_067_199 * NANOS);
        assert_eq!(p.start, 1_701_388_800); // 2023-12-01
        assert_eq!(p.end, 1_704_067_200); // 2024-01-01
        let d = Period::containing(QuotaPeriod::Day, 1_704_067_199 * NANOS);
        assert_eq!((d.start, d.end), (1_703_980_800, 1_704_067_200));
    }
}
