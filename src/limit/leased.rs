use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use foldhash::fast::RandomState;
use tokio::sync::{Notify, watch};

use super::clock::{Clock, SystemClock};
use super::period::Period;
use super::{
    Decision, LimitRequest, Limiter, MemoryLimiter, Quota, QuotaPeriod, QuotaStatus, Usage,
};
use crate::backend::BackendError;

const NANOS: u64 = 1_000_000_000;

/// One tenant's quota in one calendar period: what a [`QuotaLedger`] counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaAccount<'a> {
    /// The tenant.
    pub tenant_id: &'a str,
    /// Day or month.
    pub period: QuotaPeriod,
    /// The period's start, Unix seconds (see [`QuotaPeriod::bounds`]).
    pub period_start: u64,
}

/// What a [`QuotaLedger`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLease {
    /// Units granted by this lease (0: the quota is used up, or leased out elsewhere).
    pub granted: u64,
    /// Units counted in the account after this lease, the grant included; at least the limit
    /// when nothing was granted.
    pub used: u64,
}

/// Durable quota usage shared by every instance: the ledger behind [`LeasedQuotaLimiter`].
///
/// A lease is one atomic step: it grants `min(want, limit - used)` and counts it as used, so
/// that the ledger never grants more than the limit, whatever the number of instances asking.
/// [`SqliteStore`](crate::store::SqliteStore) and [`PostgresStore`](crate::store::PostgresStore)
/// implement it (table `keygate_quota_usage`, one statement per lease).
///
/// ```
/// use std::sync::Mutex;
/// use keygate::backend::BackendError;
/// use keygate::limit::{QuotaAccount, QuotaLease, QuotaLedger};
///
/// /// One process's ledger: only an example (a real one is shared and durable).
/// #[derive(Default)]
/// struct Counter(Mutex<u64>);
///
/// #[async_trait::async_trait]
/// impl QuotaLedger for Counter {
///     async fn lease(&self, _: &QuotaAccount<'_>, limit: u64, want: u64) -> Result<QuotaLease, BackendError> {
///         let mut used = self.0.lock().unwrap();
///         let granted = want.min(limit.saturating_sub(*used));
///         *used += granted;
///         Ok(QuotaLease { granted, used: (*used).max(if granted == 0 { limit } else { 0 }) })
///     }
///     async fn give_back(&self, _: &QuotaAccount<'_>, unused: u64) -> Result<(), BackendError> {
///         let mut used = self.0.lock().unwrap();
///         *used = used.saturating_sub(unused);
///         Ok(())
///     }
///     async fn used(&self, _: &QuotaAccount<'_>) -> Result<u64, BackendError> {
///         Ok(*self.0.lock().unwrap())
///     }
/// }
/// ```
#[async_trait]
pub trait QuotaLedger: Send + Sync + 'static {
    /// Grants up to `want` units of `account`'s quota of `limit`, never past the limit, and
    /// counts them as used, in one atomic step.
    async fn lease(
        &self,
        account: &QuotaAccount<'_>,
        limit: u64,
        want: u64,
    ) -> Result<QuotaLease, BackendError>;

    /// Returns `unused` units of an earlier lease.
    ///
    /// An error may come after the units were returned (a reply lost on the way back): the
    /// limiter cannot tell, so it never offers those units again. A failed give-back can leave
    /// units counted that were never used, never the reverse.
    async fn give_back(&self, account: &QuotaAccount<'_>, unused: u64) -> Result<(), BackendError>;

    /// Units counted in `account`: used, or leased and not given back (0 if none).
    async fn used(&self, account: &QuotaAccount<'_>) -> Result<u64, BackendError>;
}

#[async_trait]
impl<L: QuotaLedger + ?Sized> QuotaLedger for Arc<L> {
    async fn lease(
        &self,
        account: &QuotaAccount<'_>,
        limit: u64,
        want: u64,
    ) -> Result<QuotaLease, BackendError> {
        (**self).lease(account, limit, want).await
    }

    async fn give_back(&self, account: &QuotaAccount<'_>, unused: u64) -> Result<(), BackendError> {
        (**self).give_back(account, unused).await
    }

    async fn used(&self, account: &QuotaAccount<'_>) -> Result<u64, BackendError> {
        (**self).used(account).await
    }
}

/// Quotas served from blocks leased from a durable, shared [`QuotaLedger`]; rate limits in
/// process memory ([`MemoryLimiter`]).
///
/// Each instance leases a block of a tenant's remaining quota in one ledger call and serves
/// requests from it locally, with no I/O: the global quota is never exceeded, however many
/// instances share the ledger, and it survives restarts. The rules, with the defaults:
///
/// - **Block size**: `clamp(remaining / 16, 1, max_block)` (`max_block` 1000), where
///   `remaining` is what the ledger reported after this instance's last lease (the limit before
///   the first). Blocks shrink as the quota nears its end; from 31 units left they are 1 unit,
///   and a request may then wait for one ledger round trip.
/// - **Prefetch**: when a block is down to less than half of what was asked, the next one is
///   leased in the background (one lease in flight per tenant), so steady traffic does not wait
///   for the database. A request that finds the block empty waits for the lease in flight
///   (bounded by the verifier's store timeout).
/// - **Lease lifetime** (2 s): a block unused for that long is given back, so a quiet instance
///   does not hold quota others need. An instance told "nothing left" refuses (403) for that
///   long before it asks the ledger again.
/// - **Shutdown**: [`shutdown`](Self::shutdown) gives back every unused block: after a clean
///   stop nothing is lost.
/// - **Plan and period changes**: when a tenant's quota limit is lowered, its unused block goes
///   back and the next request leases against the new limit (a raised limit keeps the block);
///   when a period ends (or the plan moves from days to months), the unused block goes back to
///   the period it was leased in, so that each period's count is what was served in it.
/// - **Ledger timeout** (5 s): a lease or give-back that takes longer counts as failed.
///   A give-back that fails is not retried and its units are not served: it may have been
///   applied before its answer was lost, and serving them could exceed the quota.
///
/// The bounds this gives:
///
/// | event | bound |
/// |---|---|
/// | instances together | never admit more than the quota |
/// | clean stop (`shutdown`) | nothing lost |
/// | crash (`kill -9`) | the instance's unused blocks stay counted: less than 1.5 blocks per tenant (a block and the prefetched next), so at most 1 unit once a tenant has fewer than 32 left, and never more than 1.5 × `max_block` (for requests of cost 1, as the verifier makes them; a request of cost `c` leases at least `c`) |
/// | refused early | a request can be refused while other instances still hold units of the tenant's quota; they hold at most a block each (1 unit near the end) and give it back at the first sweep (every quarter lifetime) after one lease lifetime idle; this instance asks again one lease lifetime after its "nothing left": about 2.25 lease lifetimes (4.5 s) after the last use elsewhere, plus the ledger's round trips |
/// | ledger failing | blocks already held are still served; a request that needs a lease is refused (503, or let through with `limits_fail_open`); a failed give-back leaves its units counted, unused, as a crash does |
///
/// Periods are the calendar day or month in UTC, as with [`MemoryLimiter`]; a new period
/// starts from 0. The `remaining` in a response's quota header is what this instance knows:
/// the ledger's remainder at its last lease plus its own unused block.
///
/// ```no_run
/// use keygate::limit::LeasedQuotaLimiter;
/// use keygate::store::SqliteStore;
/// use keygate::Verifier;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStore::open("keys.db").await?;
/// let limiter = LeasedQuotaLimiter::new(store.clone());
/// let verifier = Verifier::builder(store.clone())
///     .entitlements(store)
///     .limiter(limiter.clone())
///     .build();
/// // ... serve; then, on the way out:
/// limiter.shutdown().await?;
/// # let _ = verifier;
/// # Ok(())
/// # }
/// ```
pub struct LeasedQuotaLimiter<L> {
    inner: Arc<Inner<L>>,
}

impl<L> Clone for LeasedQuotaLimiter<L> {
    fn clone(&self) -> Self {
        LeasedQuotaLimiter {
            inner: self.inner.clone(),
        }
    }
}

impl<L> std::fmt::Debug for LeasedQuotaLimiter<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedQuotaLimiter")
            .field("max_block", &self.inner.max_block)
            .field("lease_lifetime", &Duration::from_nanos(self.inner.lifetime))
            .finish_non_exhaustive()
    }
}

/// Builds a [`LeasedQuotaLimiter`]; from [`LeasedQuotaLimiter::builder`].
pub struct LeasedQuotaLimiterBuilder<L> {
    ledger: L,
    clock: Option<Arc<dyn Clock>>,
    max_block: u64,
    lifetime: Duration,
    ledger_timeout: Duration,
}

impl<L> std::fmt::Debug for LeasedQuotaLimiterBuilder<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedQuotaLimiterBuilder")
            .field("max_block", &self.max_block)
            .field("lease_lifetime", &self.lifetime)
            .field("ledger_timeout", &self.ledger_timeout)
            .finish_non_exhaustive()
    }
}

impl<L: QuotaLedger> LeasedQuotaLimiterBuilder<L> {
    /// The clock for periods, rate limits and lease lifetimes (default: the system clock; a
    /// [`ManualClock`](super::ManualClock) in tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The largest block leased at once (default 1000; at least 1). Larger blocks mean fewer
    /// ledger calls and more quota lost to a crash.
    pub fn max_block(mut self, max_block: u64) -> Self {
        self.max_block = max_block.max(1);
        self
    }

    /// How long an unused block is held before it is given back, and how long a "nothing
    /// left" answer is trusted (default 2 s; at least 1 ms).
    pub fn lease_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime.max(Duration::from_millis(1));
        self
    }

    /// How long a lease or a give-back may take before it counts as failed (default 5 s; at
    /// least 1 ms). A lease that hangs (a connection left half-open by a database failover)
    /// would otherwise hold up every request of its tenant that needs a lease, and `shutdown`.
    /// A lease abandoned this way may still be granted later: its units stay counted, unused,
    /// as after a crash.
    pub fn ledger_timeout(mut self, timeout: Duration) -> Self {
        self.ledger_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The limiter.
    pub fn build(self) -> LeasedQuotaLimiter<L> {
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let rates = MemoryLimiter::with_clock(SharedClock(clock.clone()));
        LeasedQuotaLimiter {
            inner: Arc::new(Inner {
                ledger: self.ledger,
                rates,
                clock,
                max_block: self.max_block,
                lifetime: u64::try_from(self.lifetime.as_nanos()).unwrap_or(u64::MAX),
                ledger_timeout: self.ledger_timeout,
                hasher: RandomState::default(),
                shards: std::array::from_fn(|_| Mutex::new(SlotMap::default())),
                closed: AtomicBool::new(false),
                sweeper: Mutex::new(None),
                stop_sweeper: Arc::new(Notify::new()),
            }),
        }
    }
}

/// The limiter's clock, shared with its rate limiter.
struct SharedClock(Arc<dyn Clock>);

impl Clock for SharedClock {
    fn now_nanos(&self) -> u64 {
        self.0.now_nanos()
    }
}

const SHARDS: usize = 16;

type SlotMap = HashMap<String, Slot, RandomState>;

/// What a lease in flight will say: nothing yet, done, or the ledger's error.
type LeaseState = Option<Result<(), Arc<str>>>;

struct Inner<L> {
    ledger: L,
    rates: MemoryLimiter,
    clock: Arc<dyn Clock>,
    max_block: u64,
    /// Lease lifetime, nanoseconds.
    lifetime: u64,
    /// The longest a lease or a give-back may take.
    ledger_timeout: Duration,
    hasher: RandomState,
    shards: [Mutex<SlotMap>; SHARDS],
    closed: AtomicBool,
    sweeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Tells the sweeper to stop after the sweep it is in, if any.
    stop_sweeper: Arc<Notify>,
}

/// One tenant's quota on this instance, for one period.
struct Slot {
    period: Period,
    limit: u64,
    /// Units leased and not yet used.
    held: u64,
    /// Units leased under a higher limit than the plan's now, to give back before the next
    /// lease (which the ledger then judges against the new limit).
    returning: u64,
    /// `limit - used` as the ledger reported after the last lease (the limit before one).
    remaining: u64,
    /// What the last lease asked for: the prefetch threshold is half of it.
    asked: u64,
    /// When the ledger last granted nothing (clock nanoseconds).
    exhausted_at: Option<u64>,
    /// The lease in flight, if any.
    lease: Option<watch::Receiver<LeaseState>>,
    /// Last request served from the block, or last lease landed (clock nanoseconds).
    last_use: u64,
}

impl Slot {
    fn new(quota: Quota, now: u64) -> Slot {
        Slot {
            period: Period::containing(quota.period, now / NANOS),
            limit: quota.limit,
            held: 0,
            returning: 0,
            remaining: quota.limit,
            asked: 0,
            exhausted_at: None,
            lease: None,
            last_use: now,
        }
    }

    /// Takes what this instance holds and has not used: its block and what goes back before
    /// the next lease.
    fn take_unused(&mut self) -> u64 {
        std::mem::take(&mut self.held) + std::mem::take(&mut self.returning)
    }

    fn status(&self, now_secs: u64) -> QuotaStatus {
        QuotaStatus {
            limit: self.limit,
            remaining: self.remaining.saturating_add(self.held).min(self.limit),
            period_secs: self.period.end - self.period.start,
            reset_after_secs: self.period.end.saturating_sub(now_secs),
        }
    }
}

/// What the local state says about a request.
enum Local {
    Decided(Decision),
    /// A lease is in flight: wait for it, then look again.
    Wait(watch::Receiver<LeaseState>),
    /// A lease is needed and the caller cannot wait (`acquire_now`).
    Later,
    Closed,
}

impl<L: QuotaLedger> LeasedQuotaLimiter<L> {
    /// A limiter on `ledger` with the defaults (system clock, blocks of at most 1000, a lease
    /// lifetime of 2 s, a ledger timeout of 5 s).
    pub fn new(ledger: L) -> Self {
        LeasedQuotaLimiter::builder(ledger).build()
    }

    /// A builder, to set the clock, the largest block, the lease lifetime or the ledger timeout.
    pub fn builder(ledger: L) -> LeasedQuotaLimiterBuilder<L> {
        LeasedQuotaLimiterBuilder {
            ledger,
            clock: None,
            max_block: 1000,
            lifetime: Duration::from_secs(2),
            ledger_timeout: Duration::from_secs(5),
        }
    }

    /// The ledger.
    pub fn ledger(&self) -> &L {
        &self.inner.ledger
    }

    /// Units of the tenant's quota this instance holds, leased and not yet used (0 if none).
    pub fn held(&self, tenant_id: &str) -> u64 {
        self.inner
            .shard(tenant_id)
            .get(tenant_id)
            .map_or(0, |slot| slot.held)
    }

    /// Stops leasing, waits for the leases in flight and for a sweep of idle blocks under
    /// way, and gives every unused block back to the ledger; returns the units given back
    /// (by this call: not those a sweep it waited for gave back). Call it when the service
    /// stops (after the server has finished its requests): without it, unused blocks stay
    /// counted, as after a crash. Each ledger call is bounded by the
    /// [ledger timeout](LeasedQuotaLimiterBuilder::ledger_timeout), and blocks go back 16 at
    /// a time.
    ///
    /// Afterwards, requests that need a lease are refused with a backend error (503). A block
    /// whose give-back fails stays counted (never under-counted); the first error is returned
    /// after every block was tried.
    pub async fn shutdown(&self) -> Result<u64, BackendError> {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::SeqCst);
        // Not aborted: a sweep stopped between taking blocks and giving them back would lose
        // them. The sweeper finishes the sweep it is in (each give-back bounded) and stops.
        let sweeper = inner.lock_sweeper().take();
        if let Some(sweeper) = sweeper {
            inner.stop_sweeper.notify_one();
            let _ = sweeper.await;
        }
        let in_flight: Vec<_> = inner
            .shards
            .iter()
            .flat_map(|shard| {
                let map = lock(shard);
                map.values()
                    .filter_map(|s| s.lease.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        for mut lease in in_flight {
            let _ = lease.wait_for(Option::is_some).await;
        }
        let mut returns = Vec::new();
        for shard in &inner.shards {
            let mut map = lock(shard);
            for (tenant, slot) in map.iter_mut() {
                let unused = slot.take_unused();
                if unused > 0 {
                    returns.push((tenant.clone(), slot.period, unused));
                }
            }
        }
        let (given, first_error) = give_back_all(inner, returns, "at shutdown").await;
        match first_error {
            Some(e) => Err(e),
            None => Ok(given),
        }
    }
}

/// The ledger's account for `tenant_id`'s quota in `period`.
fn account(tenant_id: &str, period: Period) -> QuotaAccount<'_> {
    QuotaAccount {
        tenant_id,
        period: period.kind,
        period_start: period.start,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn backend_error(message: &str) -> BackendError {
    BackendError::backend(std::io::Error::other(message.to_owned()))
}

/// Gives `units` of `tenant`'s quota in `period` back to the ledger, within the ledger timeout.
/// On failure the units are not offered again: the give-back may have been applied before its
/// answer was lost, and offering them again would count them twice.
async fn give_back<L: QuotaLedger>(
    inner: &Inner<L>,
    tenant: &str,
    period: Period,
    units: u64,
    when: &'static str,
) -> Result<(), BackendError> {
    let account = account(tenant, period);
    let result = inner
        .within_timeout(inner.ledger.give_back(&account, units))
        .await;
    if let Err(e) = &result {
        tracing::warn!(target: "keygate", error = %e, tenant_id = %tenant, units, when, "giving back unused quota failed; it stays counted");
    }
    result
}

impl<L: QuotaLedger> Inner<L> {
    fn shard(&self, tenant_id: &str) -> MutexGuard<'_, SlotMap> {
        let index = usize::try_from(self.hasher.hash_one(tenant_id) >> 60).unwrap_or(0) % SHARDS;
        lock(&self.shards[index])
    }

    fn lock_sweeper(&self) -> MutexGuard<'_, Option<tokio::task::JoinHandle<()>>> {
        lock(&self.sweeper)
    }

    /// A ledger call, failed with [`BackendError::Timeout`] past the ledger timeout.
    async fn within_timeout<T>(
        &self,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        tokio::time::timeout(self.ledger_timeout, call)
            .await
            .unwrap_or(Err(BackendError::Timeout))
    }

    fn want(&self, slot: &Slot, cost: u64) -> u64 {
        (slot.remaining / 16).clamp(1, self.max_block).max(cost)
    }
}

impl<L: QuotaLedger> LeasedQuotaLimiter<L> {
    /// Decides from the local block, under the tenant's lock; starts a lease when one is
    /// needed and `can_wait`.
    fn local(&self, r: &LimitRequest<'_>, quota: Quota, can_wait: bool) -> Local {
        let inner = &self.inner;
        let now = inner.clock.now_nanos();
        let now_secs = now / NANOS;
        let cost = u64::from(r.cost);
        let mut map = inner.shard(r.tenant_id);
        let slot = match map.get_mut(r.tenant_id) {
            Some(slot) => slot,
            None => map
                .entry(r.tenant_id.to_owned())
                .or_insert_with(|| Slot::new(quota, now)),
        };
        // The calendar (a month's bounds) is worked out only when the slot's period is over.
        if !slot.period.is_current(quota.period, now_secs) {
            // A new period (or another kind of period) starts from nothing. What is left of the
            // last one's block goes back to it, so that its count is what was served.
            let (period, unused) = (slot.period, slot.take_unused());
            *slot = Slot::new(quota, now);
            self.give_back_later(r.tenant_id, period, unused);
        } else if slot.limit != quota.limit {
            // A new plan. Under a higher limit what is held stays valid; under a lower one it
            // may be more than the new limit allows, so it goes back first thing in the next
            // lease, which the ledger then judges against the new limit.
            if quota.limit < slot.limit {
                slot.returning += std::mem::take(&mut slot.held);
            }
            slot.limit = quota.limit;
            slot.remaining = quota.limit;
            slot.exhausted_at = None;
        }

        if slot.held >= cost {
            let rates = LimitRequest { quota: None, ..*r };
            // The rate limits, on the same clock, at the time read above unless the limiter
            // swept their map at a later one since (`MemoryLimiter::decide_read_before`).
            return Local::Decided(match inner.rates.decide_read_before(&rates, now) {
                Decision::Allowed(usage) => {
                    slot.held -= cost;
                    slot.last_use = now;
                    let status = slot.status(now_secs);
                    if slot.held * 2 < slot.asked
                        && slot.lease.is_none()
                        && slot.exhausted_at.is_none()
                        && !inner.closed.load(Ordering::Relaxed)
                        && let Ok(runtime) = tokio::runtime::Handle::try_current()
                    {
                        self.start_lease(&runtime, r.tenant_id, slot, cost);
                    }
                    Decision::Allowed(Usage {
                        quota: Some(status),
                        ..usage
                    })
                }
                Decision::RateLimited {
                    retry_after_secs,
                    usage,
                } => Decision::RateLimited {
                    retry_after_secs,
                    usage: Usage {
                        quota: Some(slot.status(now_secs)),
                        ..usage
                    },
                },
                Decision::QuotaExhausted { usage } => Decision::QuotaExhausted {
                    usage: Usage {
                        quota: Some(slot.status(now_secs)),
                        ..usage
                    },
                },
            });
        }
        if let Some(at) = slot.exhausted_at {
            if now.saturating_sub(at) < inner.lifetime {
                // The rate limits' state for the headers, consuming nothing: a quota of 0
                // refuses every request, and a refused request uses up no limit.
                let zero = Quota { limit: 0, ..quota };
                let rates = LimitRequest {
                    quota: Some(zero),
                    ..*r
                };
                let rate = match inner.rates.decide_read_before(&rates, now) {
                    Decision::QuotaExhausted { usage } => usage.rate,
                    _ => None,
                };
                return Local::Decided(Decision::QuotaExhausted {
                    usage: Usage {
                        rate,
                        quota: Some(slot.status(now_secs)),
                    },
                });
            }
            slot.exhausted_at = None;
        }
        if let Some(lease) = &slot.lease {
            return if can_wait {
                Local::Wait(lease.clone())
            } else {
                Local::Later
            };
        }
        if !can_wait {
            return Local::Later;
        }
        if inner.closed.load(Ordering::Relaxed) {
            return Local::Closed;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Local::Wait(self.start_lease(&runtime, r.tenant_id, slot, cost)),
            Err(_) => Local::Closed,
        }
    }

    /// Gives `units` back in a task of their own, as the caller holds a lock; with no runtime
    /// to run it, they stay counted. For units of a period that has ended: no later lease is
    /// judged against what they leave.
    fn give_back_later(&self, tenant_id: &str, period: Period, units: u64) {
        if units == 0 {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let inner = self.inner.clone();
                let tenant = tenant_id.to_owned();
                runtime.spawn(async move {
                    let _ = give_back(&inner, &tenant, period, units, "at the period's end").await;
                });
            }
            Err(_) => {
                tracing::warn!(target: "keygate", tenant_id, units, "no runtime to give back unused quota; it stays counted");
            }
        }
    }

    /// Spawns a lease for `slot` (single-flight: the slot holds its receiver until it lands).
    /// Spawned, so that it completes even if the request that started it goes away.
    fn start_lease(
        &self,
        runtime: &tokio::runtime::Handle,
        tenant_id: &str,
        slot: &mut Slot,
        cost: u64,
    ) -> watch::Receiver<LeaseState> {
        self.ensure_sweeper(runtime);
        let (tx, rx) = watch::channel(None);
        slot.lease = Some(rx.clone());
        let want = self.inner.want(slot, cost);
        slot.asked = want;
        let (period, limit) = (slot.period, slot.limit);
        let returning = std::mem::take(&mut slot.returning);
        let tenant = tenant_id.to_owned();
        let inner = self.inner.clone();
        runtime.spawn(async move {
            if returning > 0 {
                let _ = give_back(&inner, &tenant, period, returning, "after a lower limit").await;
            }
            let account = account(&tenant, period);
            // Bounded: a lease that never answers would hold up every request of this tenant
            // that needs one, as they all wait for the lease in flight.
            let result = inner
                .within_timeout(inner.ledger.lease(&account, limit, want))
                .await;
            let now = inner.clock.now_nanos();
            let mut unusable = 0;
            let state = {
                let mut map = inner.shard(&tenant);
                let slot = map
                    .get_mut(&tenant)
                    .filter(|s| s.period == period);
                match (&result, slot) {
                    (Ok(lease), Some(slot)) if slot.limit >= limit => {
                        slot.lease = None;
                        slot.held += lease.granted;
                        slot.remaining = slot.limit.saturating_sub(lease.used);
                        slot.last_use = now;
                        slot.exhausted_at = (lease.granted == 0).then_some(now);
                        Ok(())
                    }
                    // The plan's limit was lowered meanwhile: the grant, judged against the old
                    // one, goes back before the next lease.
                    (Ok(lease), Some(slot)) => {
                        slot.lease = None;
                        slot.returning += lease.granted;
                        Ok(())
                    }
                    // The period ended meanwhile: the grant goes back to the old one.
                    (Ok(lease), None) => {
                        unusable = lease.granted;
                        Ok(())
                    }
                    (Err(e), slot) => {
                        if let Some(slot) = slot {
                            slot.lease = None;
                        }
                        tracing::error!(target: "keygate", error = %e, tenant_id = %tenant, "quota lease failed");
                        Err(Arc::from(format!("quota lease failed: {e}")))
                    }
                }
            };
            let _ = tx.send(Some(state));
            if unusable > 0 {
                let _ = give_back(&inner, &tenant, period, unusable, "at the period's end").await;
            }
        });
        rx
    }

    /// Starts the task that gives back idle blocks, once.
    fn ensure_sweeper(&self, runtime: &tokio::runtime::Handle) {
        let mut sweeper = self.inner.lock_sweeper();
        if sweeper.is_some() || self.inner.closed.load(Ordering::Relaxed) {
            return;
        }
        let weak: Weak<Inner<L>> = Arc::downgrade(&self.inner);
        let every = Duration::from_nanos(self.inner.lifetime / 4).max(Duration::from_millis(1));
        let stop = self.inner.stop_sweeper.clone();
        *sweeper = Some(runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.notified() => break,
                }
                // The limiter is gone: so is the need to sweep.
                let Some(inner) = weak.upgrade() else { break };
                sweep(&inner).await;
            }
        }));
    }

    async fn acquire_quota(
        &self,
        r: &LimitRequest<'_>,
        quota: Quota,
    ) -> Result<Decision, BackendError> {
        loop {
            match self.local(r, quota, true) {
                Local::Decided(decision) => return Ok(decision),
                Local::Wait(mut lease) => {
                    let outcome = lease.wait_for(Option::is_some).await.map(|s| s.clone());
                    match outcome {
                        Ok(Some(Ok(()))) => continue,
                        Ok(Some(Err(message))) => return Err(backend_error(&message)),
                        _ => return Err(backend_error("quota lease abandoned")),
                    }
                }
                Local::Later | Local::Closed => {
                    return Err(backend_error("the quota limiter is shut down"));
                }
            }
        }
    }
}

/// Gives back blocks idle for a lease lifetime, and forgets tenants idle for long.
async fn sweep<L: QuotaLedger>(inner: &Arc<Inner<L>>) {
    let now = inner.clock.now_nanos();
    let mut returns = Vec::new();
    for shard in &inner.shards {
        let mut map = lock(shard);
        map.retain(|tenant, slot| {
            let idle = now.saturating_sub(slot.last_use);
            if slot.lease.is_some() || idle < inner.lifetime {
                return true;
            }
            let unused = slot.take_unused();
            if unused > 0 {
                returns.push((tenant.clone(), slot.period, unused));
                return true;
            }
            // Kept a while for its block size and its "nothing left", then forgotten.
            idle < inner.lifetime.saturating_mul(30)
        });
    }
    // A failed give-back is not retried, nor the block kept: it may have been applied.
    give_back_all(inner, returns, "idle block").await;
}

/// How many give-backs of a sweep or a shutdown run at once.
const GIVE_BACKS_AT_ONCE: usize = 16;

/// Gives back each of `returns` (tenant, period, units), [`GIVE_BACKS_AT_ONCE`] at a time, so
/// that a sweep or a shutdown over many tenants takes a few ledger round trips, and a ledger
/// that hangs holds them up for about one ledger timeout per batch, not one per tenant.
/// Returns the units given back and the first error.
async fn give_back_all<L: QuotaLedger>(
    inner: &Arc<Inner<L>>,
    returns: Vec<(String, Period, u64)>,
    when: &'static str,
) -> (u64, Option<BackendError>) {
    let (mut given, mut first_error) = (0, None);
    let mut running = tokio::task::JoinSet::new();
    let mut returns = returns.into_iter();
    loop {
        while running.len() < GIVE_BACKS_AT_ONCE
            && let Some((tenant, period, units)) = returns.next()
        {
            let inner = inner.clone();
            running.spawn(async move {
                give_back(&inner, &tenant, period, units, when)
                    .await
                    .map(|()| units)
            });
        }
        match running.join_next().await {
            Some(Ok(Ok(units))) => given += units,
            Some(Ok(Err(e))) => {
                first_error.get_or_insert(e);
            }
            // A task that panicked or was cancelled: its units stay counted.
            Some(Err(e)) => {
                first_error.get_or_insert(BackendError::backend(e));
            }
            None => break,
        }
    }
    (given, first_error)
}

#[async_trait]
impl<L: QuotaLedger> Limiter for LeasedQuotaLimiter<L> {
    async fn acquire(&self, request: &LimitRequest<'_>) -> Result<Decision, BackendError> {
        match request.quota {
            Some(quota) => self.acquire_quota(request, quota).await,
            None => self.inner.rates.acquire(request).await,
        }
    }

    fn acquire_now(&self, request: &LimitRequest<'_>) -> Option<Result<Decision, BackendError>> {
        let Some(quota) = request.quota else {
            return self.inner.rates.acquire_now(request);
        };
        match self.local(request, quota, false) {
            Local::Decided(decision) => Some(Ok(decision)),
            Local::Wait(_) | Local::Later | Local::Closed => None,
        }
    }
}
