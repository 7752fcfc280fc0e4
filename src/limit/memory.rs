use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{
    Clock, Decision, LimitError, LimitRequest, Limiter, Quota, QuotaPeriod, QuotaStatus, RateLimit,
    RateStatus, SystemClock, Usage,
};

const NANOS: u64 = 1_000_000_000;

/// Limits in process memory: exact under concurrency (one lock around each check-and-consume),
/// per process (use a shared backend when several instances serve one tenant).
///
/// GCRA is written here rather than taken from `governor`: `governor` consumes as it checks
/// and cannot give back, so a request refused by a later limit would still have used up the
/// earlier ones. Checking every limit first and consuming only when all pass needs the state
/// in one place.
#[derive(Clone)]
pub struct MemoryLimiter {
    clock: Arc<dyn Clock>,
    tenants: Arc<Mutex<HashMap<String, TenantState>>>,
}

#[derive(Default)]
struct TenantState {
    tat: u64,
    keys: HashMap<String, u64>,
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
    new_tat: u64,
    allowed: bool,
    retry_after_secs: u64,
    /// The limit's state if this request is consumed.
    after: RateStatus,
    /// The limit's state as it is (for refusals: nothing is consumed).
    before: RateStatus,
}

fn gcra(name: &'static str, limit: RateLimit, tat: u64, now: u64, cost: u32) -> Gcra {
    let window = u64::try_from(limit.window.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let max = u64::from(limit.limit.max(1));
    let interval = (window / max).max(1);
    let capacity = interval * max;
    let base = tat.max(now);
    let new_tat = base.saturating_add(interval * u64::from(cost));
    let allowed = new_tat - now <= capacity;
    let status = |used: u64| {
        let reset_after = used.div_ceil(NANOS);
        RateStatus {
            name,
            limit: limit.limit,
            remaining: u32::try_from(capacity.saturating_sub(used) / interval).unwrap_or(u32::MAX),
            window_secs: window.div_ceil(NANOS),
            reset_after_secs: reset_after,
            reset_at: now / NANOS + reset_after,
        }
    };
    Gcra {
        new_tat,
        allowed,
        retry_after_secs: if allowed {
            0
        } else {
            (new_tat - capacity - now).div_ceil(NANOS).max(1)
        },
        after: status(new_tat - now),
        before: status(base - now),
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
            tenants: Arc::default(),
        }
    }

    /// Requests counted against the tenant's quota in the current period (0 if none).
    pub fn quota_used(&self, tenant_id: &str) -> u64 {
        let now = self.clock.now_nanos() / NANOS;
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants
            .get(tenant_id)
            .filter(|t| t.period.is_some_and(|p| p.start <= now && now < p.end))
            .map_or(0, |t| t.used)
    }

    fn decide(&self, r: &LimitRequest<'_>) -> Decision {
        let now = self.clock.now_nanos();
        // One lock for the whole check-and-consume: all-or-nothing, exact under concurrency.
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
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
            .map(|g| if consumed { g.after } else { g.before })
            .min_by_key(|status| status.remaining);
        let usage = Usage {
            rate,
            quota: quota.map(|(status, _)| status),
        };

        if !quota_fits {
            return Decision::QuotaExhausted { usage };
        }
        let refused = [&tenant, &key].into_iter().flatten().filter(|g| !g.allowed);
        if let Some(retry_after_secs) = refused.map(|g| g.retry_after_secs).max() {
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
    let fits = state.used + u64::from(cost) <= quota.limit;
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
    async fn acquire(&self, request: &LimitRequest<'_>) -> Result<Decision, LimitError> {
        Ok(self.decide(request))
    }

    fn acquire_now(&self, request: &LimitRequest<'_>) -> Option<Result<Decision, LimitError>> {
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
