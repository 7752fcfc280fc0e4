use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::fast::RandomState;
use indexmap::IndexMap;
use indexmap::map::RawEntryApiV1;

use async_trait::async_trait;

use super::clock::{Clock, SystemClock};
use super::period::Period;
use super::{
    Decision, LimitRequest, Limiter, MAX_WINDOW_SECS, Quota, QuotaStatus, RateLimit, RateStatus,
    Usage,
};
use crate::backend::BackendError;

const NANOS: u64 = 1_000_000_000;

/// Limits in process memory: exact under concurrency (one lock around each check-and-consume),
/// per process (use a shared backend when several instances serve one tenant).
///
/// Tenants are spread over 64 independently locked maps, so that requests of different
/// tenants rarely wait for each other.
///
/// # Eviction
///
/// Memory follows the tenants and keys that are active, not every one ever seen. A tenant's
/// state is dropped once nothing in it would change a decision: its rate limit and every one of
/// its keys' rate limits fully replenished (the bucket full again, as for a tenant never seen)
/// and its quota either unused in the current period or counting a period that has ended (and
/// so the count of the other kind of period, which a plan that moved between days and months set
/// aside). A key's state is dropped alone once its own rate limit is replenished. An evicted tenant or
/// key is therefore decided exactly as before its eviction: eviction never lets a request
/// through that would have been refused, nor the reverse (given a clock that does not go
/// back). A tenant that used some of a monthly quota is kept until the month ends.
///
/// A clock that steps back keeps counting the quota against the period it was counting (until
/// that period ends, so stepping forward again does not start it over), and the rate limits
/// against their buckets. Only state still held can do that: a state evicted before the step
/// (its period ended, its buckets full at the later time) is decided as a fresh one.
///
/// Eviction is incremental and needs no background task: every eighth check of a map looks at
/// 32 entries of it (its own tenant's keys first) while it holds that map's lock anyway, then
/// at 32 entries of another map in turn, if that map's lock is free. No sweep stops the world
/// and no lock is added that all requests share. A map gives memory back once three quarters
/// of it are unused. So idle state is reclaimed as requests arrive: after a burst of 300,000
/// one-off tenants, some 80,000 further checks (by any tenant) reclaim it all.
///
/// GCRA is written here rather than taken from `governor`: `governor` consumes as it checks
/// and cannot give back, so a request refused by a later limit would still have used up the
/// earlier ones. Checking every limit first and consuming only when all pass needs the state
/// in one place.
#[derive(Clone)]
pub struct MemoryLimiter {
    clock: Arc<dyn Clock>,
    shards: Arc<Shards>,
    evict: bool,
}

/// How many independently locked maps hold the tenants' state.
const SHARDS: usize = 64;

/// Every this many checks of a map, eviction runs: in that map (among the tenant's keys first),
/// then in another map in turn.
const SWEEP_EVERY: u32 = 8;
/// How many entries (tenants or keys) each of those two sweeps looks at: 4 a check on average.
const SWEEP: usize = 32;

/// Tenant ids come from the key store, never from the client, so a fast seeded hash is safe
/// here; SipHash cost ~15 ns more per request. Every map hashes with `hasher` too, so that a
/// check hashes its tenant id once, for the shard and the map alike.
struct Shards {
    hasher: RandomState,
    maps: [Mutex<Shard>; SHARDS],
}

/// One locked map of tenants, and where its eviction stands.
struct Shard {
    tenants: IndexMap<String, TenantState, RandomState>,
    cursor: usize,
    /// Checks made in this map: when to sweep, and which other map.
    checks: u32,
    /// The latest time a sweep of this map ran at: a time read before it is too early to
    /// decide at (see [`MemoryLimiter::decide_read_before`]).
    swept_at: u64,
}

impl Shards {
    fn new() -> Self {
        let hasher = RandomState::default();
        Shards {
            maps: std::array::from_fn(|_| {
                Mutex::new(Shard {
                    tenants: IndexMap::with_hasher(hasher.clone()),
                    cursor: 0,
                    checks: 0,
                    swept_at: 0,
                })
            }),
            hasher,
        }
    }

    /// Which map holds the tenant whose id hashes to `hash`. Bits 32 to 37: the maps use the
    /// low bits for their buckets and the top seven as tags, which must not be the same for
    /// every tenant of a map.
    fn index_of_hash(hash: u64) -> usize {
        usize::try_from(hash >> 32).unwrap_or(0) % SHARDS
    }

    /// Which map holds `tenant_id`.
    fn index(&self, tenant_id: &str) -> usize {
        Shards::index_of_hash(self.hasher.hash_one(tenant_id))
    }

    /// The map at `index`, locked.
    fn lock_at(&self, index: usize) -> MutexGuard<'_, Shard> {
        self.maps[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The locked map that holds `tenant_id`.
    fn lock(&self, tenant_id: &str) -> MutexGuard<'_, Shard> {
        self.lock_at(self.index(tenant_id))
    }
}

#[derive(Default)]
struct TenantState {
    tat: u64,
    keys: IndexMap<String, u64, RandomState>,
    /// The latest of the keys' theoretical arrival times: once it has passed, every key's rate
    /// limit is replenished.
    keys_until: u64,
    key_cursor: usize,
    period: Option<Period>,
    used: u64,
    /// The count of the other kind of period (day or month), set aside when the plan moved to
    /// this kind: a plan that moves back finds it as it was left, as the shared limiters do
    /// (they count each period apart). Boxed: it is rarely there.
    set_aside: Option<Box<(Period, u64)>>,
}

impl TenantState {
    /// Whether this state decides every request exactly as a fresh one would, at `now` and
    /// later: every bucket full, and no quota counted in a period that is still running. (A
    /// GCRA state only counts through `max(tat, now)`: a past `tat` is the same as none.) A
    /// clock stepped back before the period's start still counts against it, even from 0.
    fn is_idle(&self, now: u64) -> bool {
        let secs = now / NANOS;
        self.tat <= now
            && self.keys_until <= now
            && self
                .period
                .is_none_or(|p| counts_nothing(p, self.used, secs))
            && self
                .set_aside
                .as_deref()
                .is_none_or(|&(p, used)| counts_nothing(p, used, secs))
    }

    /// Drops the state of keys whose rate limit is replenished, looking at up to `budget` of
    /// them from where the last look stopped; returns what is left of `budget`.
    fn sweep_keys(&mut self, now: u64, mut budget: usize) -> usize {
        let mut visits = self.keys.len();
        while budget > 0 && visits > 0 {
            budget -= 1;
            visits -= 1;
            if self.key_cursor >= self.keys.len() {
                self.key_cursor = 0;
            }
            match self.keys.get_index(self.key_cursor) {
                // The last entry moves into the hole, to be looked at next.
                Some((_, &tat)) if tat <= now => {
                    self.keys.swap_remove_index(self.key_cursor);
                }
                Some(_) => self.key_cursor += 1,
                None => break,
            }
        }
        give_back(&mut self.keys);
        budget
    }
}

impl Shard {
    /// Evicts idle tenants (and replenished keys), looking at up to `budget` entries from where
    /// the last look stopped, at most one lap.
    fn sweep(&mut self, now: u64, mut budget: usize) {
        let mut visits = self.tenants.len();
        while budget > 0 && visits > 0 {
            budget -= 1;
            visits -= 1;
            if self.cursor >= self.tenants.len() {
                self.cursor = 0;
            }
            let Some((_, state)) = self.tenants.get_index_mut(self.cursor) else {
                break;
            };
            budget = state.sweep_keys(now, budget);
            if !state.is_idle(now) {
                self.cursor += 1;
            } else if state.keys.is_empty() {
                // The last entry moves into the hole, to be looked at next.
                self.tenants.swap_remove_index(self.cursor);
            }
            // Idle with keys left: they go a few at a time (dropping thousands at once would
            // stall this request); the cursor stays here.
        }
        give_back(&mut self.tenants);
    }
}

/// Shrinks `map` once three quarters of its room are unused, to twice what it holds: the
/// rebuild costs as many moves as entries are left, paid once for every three removed.
fn give_back<V>(map: &mut IndexMap<String, V, RandomState>) {
    if map.capacity() > 8 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
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
    // At most the longest window: then `now` plus a full bucket stays within u64.
    let window = u64::try_from(limit.window.as_nanos())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_WINDOW_SECS * NANOS);
    let max = u64::from(limit.limit.max(1));
    // Rounded up: a shorter interval would replenish faster than `limit` per `window` (by up
    // to a nanosecond per request, which at a million requests a second is a tenth too many).
    let interval = window.div_ceil(max);
    let capacity = interval.saturating_mul(max);
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
        // Saturating: a saturated `new_tat` (a cost beyond any window) may lie within capacity
        // of a clock near the end of u64.
        let fits_at = self.new_tat.saturating_sub(self.capacity);
        fits_at.saturating_sub(self.now).div_ceil(NANOS).max(1)
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
            evict: true,
        }
    }

    /// Requests counted against the tenant's quota in the period it counts (0 if none): the
    /// current one, or a later one the clock stepped back from.
    pub fn quota_used(&self, tenant_id: &str) -> u64 {
        let now = self.clock.now_nanos() / NANOS;
        self.shards
            .lock(tenant_id)
            .tenants
            .get(tenant_id)
            .filter(|t| t.period.is_some_and(|p| now < p.end))
            .map_or(0, |t| t.used)
    }

    /// [`MemoryLimiter`]'s decision, at its clock's time read under the tenant's map lock.
    pub(crate) fn decide(&self, r: &LimitRequest<'_>) -> Decision {
        self.decide_at_or_after(r, None)
    }

    /// [`MemoryLimiter::decide`] at `read`, a time the caller read from this limiter's clock
    /// before the call, unless a sweep of the tenant's map ran at a later time since: then at
    /// the clock's time, read under the lock. A caller that reads the clock for work of its own
    /// (a leased quota) spares the second read; deciding at a time read before a sweep is what
    /// must not happen (the sweep may have evicted state that would refuse the request).
    pub(crate) fn decide_read_before(&self, r: &LimitRequest<'_>, read: u64) -> Decision {
        self.decide_at_or_after(r, Some(read))
    }

    fn decide_at_or_after(&self, r: &LimitRequest<'_>, read: Option<u64>) -> Decision {
        // Nothing to check (a leased quota's plan with no rate limit): no lock, no state kept.
        if r.tenant_rate.is_none() && r.key_rate.is_none() && r.quota.is_none() {
            return Decision::Allowed(Usage::default());
        }
        let hash = self.shards.hasher.hash_one(r.tenant_id);
        let own = Shards::index_of_hash(hash);
        let (decision, sweep_another) = {
            // One lock for the whole check-and-consume: all-or-nothing, exact under concurrency.
            let mut shard = self.shards.lock_at(own);
            // Read under the lock, so that a map's checks and sweeps read the clock in the
            // order they hold the map: no sweep evicts at a later time than a check after it
            // decides at. (A check that read the clock before waiting for the lock could find
            // its tenant evicted as idle at a later time than its own, and be decided as a
            // fresh tenant: admitted where the state evicted would have refused it.) A time the
            // caller read before is used only if no sweep of this map ran at a later one.
            let now = match read {
                Some(read) if read >= shard.swept_at => read,
                _ => self.clock.now_nanos(),
            };
            let found = shard
                .tenants
                .raw_entry_v1()
                .index_from_hash(hash, |id| id == r.tenant_id);
            let index = match found {
                Some(index) => index,
                None => {
                    shard
                        .tenants
                        .insert_full(r.tenant_id.to_owned(), TenantState::default())
                        .0
                }
            };
            let decision = decide(&mut shard.tenants[index], r, now);
            shard.checks = shard.checks.wrapping_add(1);
            let turn = shard.checks / SWEEP_EVERY;
            let sweep = self.evict && shard.checks.is_multiple_of(SWEEP_EVERY);
            if sweep {
                shard.swept_at = shard.swept_at.max(now);
                let left = shard.tenants[index].sweep_keys(now, SWEEP / 2);
                shard.sweep(now, SWEEP / 2 + left);
            }
            (decision, sweep.then_some((turn, now)))
        };
        // Another map in turn (each map's sweeps go round all the others), if its lock is
        // free: so that maps whose tenants went quiet are reclaimed too. At the time read
        // above, which no check of that map after this sweep can read a time before.
        if let Some((turn, now)) = sweep_another {
            let offset = 1 + usize::try_from(turn).unwrap_or(0) % (SHARDS - 1);
            if let Ok(mut shard) = self.shards.maps[(own + offset) % SHARDS].try_lock() {
                shard.swept_at = shard.swept_at.max(now);
                shard.sweep(now, SWEEP);
            }
        }
        decision
    }

    /// How many tenants have state held (for tests of eviction).
    #[cfg(test)]
    fn tenants_held(&self) -> usize {
        self.shards
            .maps
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).tenants.len())
            .sum()
    }
}

/// One check-and-consume against `state`.
fn decide(state: &mut TenantState, r: &LimitRequest<'_>, now: u64) -> Decision {
    let quota = r.quota.map(|q| quota_status(state, q, now, r.cost));
    let tenant = r
        .tenant_rate
        .map(|l| gcra("tenant", l, state.tat, now, r.cost));
    // The key's state is looked up once, only when a key rate applies, and found again by
    // position when consumed: one hash of the key id, not two.
    let key_found = r
        .key_rate
        .and_then(|_| state.keys.get_full(r.key_id))
        .map(|(index, _, &tat)| (index, tat));
    let key_tat = key_found.map_or(0, |(_, tat)| tat);
    let key = r.key_rate.map(|l| gcra("key", l, key_tat, now, r.cost));
    let quota_fits = quota.is_none_or(|(_, fits)| fits);
    let allowed = |g: &Option<Gcra>| g.as_ref().is_none_or(|g| g.allowed);
    let consumed = quota_fits && allowed(&tenant) && allowed(&key);
    // Report the most constraining rate limit, as it stands after this decision (the tenant's
    // on a tie). Matched, not iterated: most plans have one rate limit.
    let rate = match (&tenant, &key) {
        (Some(t), Some(k)) => {
            let (t, k) = (t.status(consumed), k.status(consumed));
            Some(if k.remaining < t.remaining { k } else { t })
        }
        (Some(g), None) | (None, Some(g)) => Some(g.status(consumed)),
        (None, None) => None,
    };
    let usage = Usage {
        rate,
        quota: quota.map(|(status, _)| status),
    };

    if !quota_fits {
        return Decision::QuotaExhausted { usage };
    }
    // The longest wait of the refusing limits.
    let retry = |g: &Option<Gcra>| {
        g.as_ref()
            .filter(|g| !g.allowed)
            .map(Gcra::retry_after_secs)
    };
    if let Some(retry_after_secs) = retry(&tenant).max(retry(&key)) {
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
        match key_found.and_then(|(index, _)| state.keys.get_index_mut(index)) {
            Some((_, tat)) => *tat = g.new_tat,
            None => {
                state.keys.insert(r.key_id.to_owned(), g.new_tat);
            }
        }
        state.keys_until = state.keys_until.max(g.new_tat);
    }
    let mut usage = usage;
    if let (Some(q), Some(status)) = (r.quota, usage.quota.as_mut()) {
        state.used += u64::from(r.cost);
        status.remaining = q.limit.saturating_sub(state.used);
    }
    Decision::Allowed(usage)
}

/// Whether `used` counted in `period` decides nothing at `secs` and later: the period has
/// ended, or nothing was used in it and the clock is not stepped back before its start.
fn counts_nothing(period: Period, used: u64, secs: u64) -> bool {
    secs >= period.end || (used == 0 && secs >= period.start)
}

/// The quota's state, and whether `cost` more fits; starts the count again when the period
/// counted has ended, not when the clock steps back before it. When the plan's kind of period
/// changed, the count goes aside, and the one set aside comes back if it still counts.
fn quota_status(state: &mut TenantState, quota: Quota, now: u64, cost: u32) -> (QuotaStatus, bool) {
    let secs = now / NANOS;
    let current = match state.period {
        Some(p) if p.still_counts(quota.period, secs) => p,
        last => {
            let back = match last {
                Some(p) if p.kind != quota.period => {
                    state.set_aside.replace(Box::new((p, state.used)))
                }
                _ => None,
            }
            .filter(|back| back.0.still_counts(quota.period, secs));
            let (p, used) = match back {
                Some(back) => *back,
                None => (Period::containing(quota.period, secs), 0),
            };
            state.period = Some(p);
            state.used = used;
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
    use std::time::Duration;

    use super::super::{ManualClock, QuotaPeriod};
    use super::*;

    /// The same limiter, never evicting: the reference eviction must not depart from.
    fn without_eviction(clock: &ManualClock) -> MemoryLimiter {
        MemoryLimiter {
            evict: false,
            ..MemoryLimiter::with_clock(clock.clone())
        }
    }

    /// A limiter that evicts and one that never does, on `clock`.
    fn evicting_and_kept(clock: &ManualClock) -> (MemoryLimiter, MemoryLimiter) {
        (
            MemoryLimiter::with_clock(clock.clone()),
            without_eviction(clock),
        )
    }

    /// The two limiters' decision on `r`, which must be the same.
    fn same_decision(
        evicting: &MemoryLimiter,
        kept: &MemoryLimiter,
        r: &LimitRequest<'_>,
    ) -> Decision {
        let (decided, reference) = (evicting.decide(r), kept.decide(r));
        assert_eq!(decided, reference);
        decided
    }

    fn request<'a>(tenant_id: &'a str, key_id: &'a str) -> LimitRequest<'a> {
        LimitRequest {
            tenant_id,
            key_id,
            tenant_rate: Some(RateLimit {
                limit: 3,
                window: Duration::from_secs(60),
            }),
            key_rate: Some(RateLimit {
                limit: 2,
                window: Duration::from_secs(10),
            }),
            quota: Some(Quota {
                limit: 5,
                period: QuotaPeriod::Day,
            }),
            cost: 1,
        }
    }

    #[test]
    fn a_request_with_no_limits_is_allowed_and_keeps_no_state() {
        let clock = ManualClock::at_unix_secs(1_700_000_000);
        let limiter = MemoryLimiter::with_clock(clock.clone());
        let none = LimitRequest {
            tenant_rate: None,
            key_rate: None,
            quota: None,
            ..request("acme", "key_1")
        };
        assert_eq!(limiter.decide(&none), Decision::Allowed(Usage::default()));
        assert_eq!(limiter.tenants_held(), 0);
        // The same as a limiter that keeps state for it decides: allowed, nothing reported.
        assert_eq!(
            decide(&mut TenantState::default(), &none, clock.now_nanos()),
            Decision::Allowed(Usage::default())
        );
    }

    /// With a tenant and a key rate limit: the one with fewer requests left is reported (the
    /// tenant's on a tie), and a refusal waits for the slowest of the limits that refused.
    #[test]
    fn the_most_constraining_rate_limit_is_reported_and_waited_for() {
        let clock = ManualClock::at_unix_secs(1_700_000_000);
        let limiter = MemoryLimiter::with_clock(clock.clone());
        // What a decision says: admitted (`Ok`), or refused with the rate limits' wait
        // (`Err(Some(secs))`) or by the quota (`Err(None)`); and the rate limit it reports.
        let said = |d: Decision| {
            let (outcome, usage) = match d {
                Decision::Allowed(usage) => (Ok(()), usage),
                Decision::RateLimited {
                    retry_after_secs,
                    usage,
                } => (Err(Some(retry_after_secs)), usage),
                Decision::QuotaExhausted { usage } => (Err(None), usage),
            };
            let rate = usage.rate.unwrap();
            (outcome, rate.name, rate.remaining)
        };
        // Tenant: 3 a minute (one every 20 s); key: 2 in 10 s (one every 5 s).
        let a = request("acme", "a");
        let b = request("acme", "b");
        assert_eq!(said(limiter.decide(&a)), (Ok(()), "key", 1));
        assert_eq!(said(limiter.decide(&a)), (Ok(()), "key", 0));
        // The key refuses, the tenant would admit: 5 s until the key has room.
        assert_eq!(said(limiter.decide(&a)), (Err(Some(5)), "key", 0));
        // Another key takes the tenant's last request: now the tenant is the constraint.
        assert_eq!(said(limiter.decide(&b)), (Ok(()), "tenant", 0));
        assert_eq!(said(limiter.decide(&b)), (Err(Some(20)), "tenant", 0));
        // Both refuse: the longer wait (both at 0 left: the tenant's is reported).
        assert_eq!(said(limiter.decide(&a)), (Err(Some(20)), "tenant", 0));

        // A tie (the same limit for both): the tenant's is reported.
        let same = RateLimit {
            limit: 2,
            window: Duration::from_secs(10),
        };
        let tie = LimitRequest {
            tenant_rate: Some(same),
            key_rate: Some(same),
            ..request("other", "c")
        };
        assert_eq!(said(limiter.decide(&tie)), (Ok(()), "tenant", 1));
    }

    fn keys_held(limiter: &MemoryLimiter, tenant_id: &str) -> usize {
        limiter
            .shards
            .lock(tenant_id)
            .tenants
            .get(tenant_id)
            .map_or(0, |t| t.keys.len())
    }

    /// Enough checks of one other tenant (which stays held: it keeps using its rate limit) for
    /// every map to be swept at least once.
    fn churn(limiter: &MemoryLimiter) {
        let other = LimitRequest {
            tenant_id: "busy",
            key_id: "busy_key",
            tenant_rate: Some(RateLimit::per_second(u32::MAX)),
            key_rate: None,
            quota: None,
            cost: 1,
        };
        for _ in 0..(SWEEP_EVERY as usize * SHARDS * 4) {
            limiter.decide(&other);
        }
    }

    #[test]
    fn idle_tenants_are_evicted_only_once_replenished() {
        let clock = ManualClock::at_unix_secs(1_700_000_000);
        let limiter = MemoryLimiter::with_clock(clock.clone());
        for i in 0..1_000 {
            let tenant = format!("tenant_{i}");
            assert!(matches!(
                limiter.decide(&LimitRequest {
                    quota: None,
                    ..request(&tenant, "key")
                }),
                Decision::Allowed(_)
            ));
        }
        // One request of a 3-a-minute limit takes 20 s to replenish: 19 s later the tenants'
        // buckets are not full yet, and nothing may go.
        clock.advance(Duration::from_secs(19));
        churn(&limiter);
        assert_eq!(limiter.tenants_held(), 1_001);
        // At 20 s, all of it may.
        clock.advance(Duration::from_secs(1));
        churn(&limiter);
        assert_eq!(limiter.tenants_held(), 1);
    }

    #[test]
    fn a_quota_in_use_keeps_its_tenant_until_the_period_ends() {
        // 2023-11-14T22:13:20Z: the day ends in 6,400 s.
        let clock = ManualClock::at_unix_secs(1_700_000_000);
        let limiter = MemoryLimiter::with_clock(clock.clone());
        limiter.decide(&request("acme", "key"));
        clock.advance(Duration::from_secs(6_399));
        churn(&limiter);
        assert_eq!(limiter.quota_used("acme"), 1);
        assert_eq!(limiter.tenants_held(), 2);
        clock.advance(Duration::from_secs(1));
        churn(&limiter);
        assert_eq!(limiter.tenants_held(), 1);
    }

    #[test]
    fn replenished_keys_are_evicted_from_a_busy_tenant() {
        let clock = ManualClock::at_unix_secs(1_700_000_000);
        let limiter = MemoryLimiter::with_clock(clock.clone());
        let no_tenant_limits = |key: &'static str| LimitRequest {
            tenant_rate: None,
            quota: None,
            ..request("acme", key)
        };
        let keys: Vec<String> = (0..1_000).map(|i| format!("key_{i}")).collect();
        for key in &keys {
            let r = LimitRequest {
                tenant_rate: None,
                quota: None,
                ..request("acme", key)
            };
            assert!(matches!(limiter.decide(&r), Decision::Allowed(_)));
        }
        assert_eq!(keys_held(&limiter, "acme"), 1_000);
        // One key stays busy; the others' buckets (2 per 10 s) are full after 5 s.
        clock.advance(Duration::from_secs(5));
        for _ in 0..1_000 {
            limiter.decide(&no_tenant_limits("live"));
            clock.advance(Duration::from_millis(5));
        }
        assert_eq!(keys_held(&limiter, "acme"), 1);
    }

    #[test]
    fn an_evicted_tenant_is_decided_as_a_fresh_one() {
        let clock = ManualClock::at_unix_secs(1_700_000_000);
        let (limiter, reference) = evicting_and_kept(&clock);
        let both = |r: &LimitRequest<'_>| same_decision(&limiter, &reference, r);
        // The tenant's limit (3 a minute) used up, then refused.
        for _ in 0..3 {
            assert!(matches!(both(&request("acme", "k1")), Decision::Allowed(_)));
            clock.advance(Duration::from_secs(5));
        }
        assert!(matches!(
            both(&request("acme", "k1")),
            Decision::RateLimited { .. }
        ));
        // A new day, every bucket full: the state goes, and the same requests get the same
        // answers as from the limiter that kept it, and as from a limiter that never saw it.
        clock.advance(Duration::from_secs(86_400));
        churn(&limiter);
        churn(&reference);
        // Only the churning tenant is left.
        assert_eq!(limiter.tenants_held(), 1);
        let fresh = without_eviction(&clock);
        for _ in 0..4 {
            let decision = both(&request("acme", "k1"));
            assert_eq!(decision, fresh.decide(&request("acme", "k1")));
        }
    }

    #[test]
    fn a_time_read_before_a_sweep_is_not_decided_at() {
        let clock = ManualClock::at_unix_secs(1_700_000_000);
        let (limiter, reference) = evicting_and_kept(&clock);
        let r = LimitRequest {
            tenant_rate: Some(RateLimit {
                limit: 1,
                window: Duration::from_secs(10),
            }),
            key_rate: None,
            quota: None,
            ..request("acme", "k1")
        };
        assert!(matches!(
            same_decision(&limiter, &reference, &r),
            Decision::Allowed(_)
        ));
        // No sweep since the time was read: the decision is at that time.
        clock.advance(Duration::from_secs(20));
        let read = clock.now_nanos();
        clock.advance(Duration::from_secs(1));
        let reset_at = match limiter.decide_read_before(&r, read) {
            Decision::Allowed(usage) => usage.rate.map(|s| s.reset_at),
            _ => None,
        };
        assert_eq!(reset_at, Some(read / NANOS + 10));
        assert!(matches!(
            reference.decide_read_before(&r, read),
            Decision::Allowed(_)
        ));
        // A time read 5 s into that request's window, then a sweep at 10 s that evicts the
        // replenished tenant. At the time read, the state evicted refuses (as the limiter that
        // kept it does); decided there as a fresh tenant, the request would be admitted. It is
        // decided at the clock's time instead, as the kept state decides it.
        clock.advance(Duration::from_secs(5));
        let read = clock.now_nanos();
        clock.advance(Duration::from_secs(5));
        churn(&limiter);
        assert_eq!(limiter.tenants_held(), 1);
        assert!(matches!(
            reference.decide_read_before(&r, read),
            Decision::RateLimited { .. }
        ));
        assert_eq!(
            limiter.decide_read_before(&r, read),
            reference.decide_read_before(&r, clock.now_nanos())
        );
        // So the next request, 5 s on, is refused: decided at the time read, the window would
        // have been counted from 5 s too early, and this request admitted.
        clock.advance(Duration::from_secs(5));
        assert!(matches!(
            same_decision(&limiter, &reference, &r),
            Decision::RateLimited { .. }
        ));
    }

    /// Whatever the requests and the time between them, a limiter that evicts answers every
    /// request exactly as one that keeps everything: 256 random sequences of up to 600 steps.
    ///
    /// The sequences come from a fixed seed, so a failure names its case and a rerun replays
    /// it. A small generator rather than proptest: proptest would be a dependency of every
    /// example's first build for this one unit test (the integration tests use proptest).
    #[test]
    fn eviction_never_changes_a_decision() {
        // xorshift64*: enough to spread requests over tenants, keys, shapes and time.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut below = |n: u64| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        };
        let tenants: Vec<String> = (0..8).map(|i| format!("tenant_{i}")).collect();
        let keys = ["k0", "k1", "k2", "k3"];
        for case in 0..256 {
            let clock = ManualClock::at_unix_secs(1_700_006_000);
            let limiter = MemoryLimiter::with_clock(clock.clone());
            let reference = without_eviction(&clock);
            for step in 0..1 + below(600) {
                let (tenant, key) = (below(8) as usize, below(4) as usize);
                clock.advance(Duration::from_millis(below(20_000)));
                let full = request(&tenants[tenant], keys[key]);
                let r = match below(5) {
                    0 => full,
                    // The plan moved to a monthly quota, and back when another shape comes.
                    4 => LimitRequest {
                        quota: Some(Quota {
                            limit: 7,
                            period: QuotaPeriod::Month,
                        }),
                        ..full
                    },
                    1 => LimitRequest {
                        quota: None,
                        ..full
                    },
                    2 => LimitRequest {
                        tenant_rate: None,
                        key_rate: None,
                        ..full
                    },
                    _ => LimitRequest {
                        key_rate: None,
                        cost: 2,
                        ..full
                    },
                };
                assert_eq!(
                    limiter.decide(&r),
                    reference.decide(&r),
                    "case {case}, step {step}"
                );
                assert_eq!(
                    limiter.quota_used(&tenants[tenant]),
                    reference.quota_used(&tenants[tenant]),
                    "case {case}, step {step}"
                );
            }
        }
    }

    /// An NTP step back over midnight keeps counting against the day already counted, and
    /// stepping forward again does not start it over: 3 a day admits 3 in all. Eviction while
    /// the clock is back changes no decision.
    #[test]
    fn a_clock_stepped_back_over_midnight_keeps_counting_the_stored_day() {
        // 2024-01-02T00:00:02Z; that day ends at 1_704_240_000.
        let clock = ManualClock::at_unix_secs(1_704_153_602);
        let (limiter, reference) = evicting_and_kept(&clock);
        let both = |r: &LimitRequest<'_>| same_decision(&limiter, &reference, r);
        let quota_only = |tenant_id, cost| LimitRequest {
            tenant_rate: None,
            key_rate: None,
            quota: Some(Quota {
                limit: 3,
                period: QuotaPeriod::Day,
            }),
            cost,
            ..request(tenant_id, "key")
        };
        let r = quota_only("acme", 1);
        let quota = |remaining, reset_after_secs| Usage {
            rate: None,
            quota: Some(QuotaStatus {
                limit: 3,
                remaining,
                period_secs: 86_400,
                reset_after_secs,
            }),
        };
        for remaining in [2, 1, 0] {
            assert_eq!(both(&r), Decision::Allowed(quota(remaining, 86_398)));
        }
        // Another tenant's day begun with nothing used (a request over the whole quota).
        let over = quota_only("other", 4);
        let refused = |reset_after_secs| Decision::QuotaExhausted {
            usage: quota(3, reset_after_secs),
        };
        assert_eq!(both(&over), refused(86_398));

        // 2024-01-01T23:59:57Z: still January 2's count, which ends in 86,403 s.
        clock.set_unix_secs(1_704_153_597);
        churn(&limiter);
        churn(&reference);
        let exhausted = |reset_after_secs| Decision::QuotaExhausted {
            usage: quota(0, reset_after_secs),
        };
        assert_eq!(both(&r), exhausted(86_403));
        assert_eq!(limiter.quota_used("acme"), 3);
        assert_eq!(both(&over), refused(86_403));
        assert_eq!(
            both(&quota_only("other", 1)),
            Decision::Allowed(quota(2, 86_403))
        );
        // 2024-01-02T00:00:03Z: the same day, not a new one.
        clock.set_unix_secs(1_704_153_603);
        assert_eq!(both(&r), exhausted(86_397));
        assert_eq!(limiter.quota_used("acme"), 3);
        assert_eq!(
            both(&quota_only("other", 1)),
            Decision::Allowed(quota(1, 86_397))
        );
        // January 3: a new day.
        clock.set_unix_secs(1_704_240_000);
        assert_eq!(both(&r), Decision::Allowed(quota(2, 86_400)));
    }

    /// A window of u64::MAX seconds is counted as the longest window, 2^32 s: `limit` requests,
    /// then a refusal, and no overflow on the way.
    #[test]
    fn a_window_of_u64_max_seconds_admits_exactly_its_limit() {
        const LONGEST: u64 = 1 << 32;
        let clock = ManualClock::at_unix_secs(1_700_000_000);
        let limiter = MemoryLimiter::with_clock(clock.clone());
        let status = |limit, remaining| RateStatus {
            name: "tenant",
            limit,
            remaining,
            window_secs: LONGEST,
            reset_after_secs: LONGEST / u64::from(limit) * u64::from(limit - remaining),
            reset_at: 1_700_000_000 + LONGEST / u64::from(limit) * u64::from(limit - remaining),
        };
        for limit in [2, 1] {
            let tenant = format!("tenant_{limit}");
            let r = LimitRequest {
                tenant_rate: Some(RateLimit {
                    limit,
                    window: Duration::from_secs(u64::MAX),
                }),
                key_rate: None,
                quota: None,
                ..request(&tenant, "key")
            };
            for remaining in (0..limit).rev() {
                assert_eq!(
                    limiter.decide(&r),
                    Decision::Allowed(Usage {
                        rate: Some(status(limit, remaining)),
                        quota: None,
                    })
                );
            }
            assert_eq!(
                limiter.decide(&r),
                Decision::RateLimited {
                    retry_after_secs: LONGEST / u64::from(limit),
                    usage: Usage {
                        rate: Some(status(limit, 0)),
                        quota: None,
                    },
                }
            );
        }
    }

    #[test]
    fn calendar_months() {
        // 2024-02-15 → February 2024, a leap month of 29 days.
        let p = Period::containing(QuotaPeriod::Month, 1_707_955_200);
        assert_eq!(p.start, 1_706_745_600); // 2024-02-01
        assert_eq!(p.end - p.start, 29 * 86_400);
        // 2023-12-31T23:59:59 → December 2023.
        let p = Period::containing(QuotaPeriod::Month, 1_704_067_199);
        assert_eq!(p.start, 1_701_388_800); // 2023-12-01
        assert_eq!(p.end, 1_704_067_200); // 2024-01-01
        let d = Period::containing(QuotaPeriod::Day, 1_704_067_199);
        assert_eq!((d.start, d.end), (1_703_980_800, 1_704_067_200));
    }
}
