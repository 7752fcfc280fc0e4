//! [`CachedStore`]: key records in memory in front of any [`KeyStore`].

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, OptionsBuilder, UnitWeighter};
use time::OffsetDateTime;

use super::changes::{Change, Invalidate};
use super::clock::{millis, now_ms};
use crate::hash::{DigestHasher, KeyDigest};
use crate::metrics::{KeyCacheMetrics, Tally};
use crate::single_flight::{Flight, SharedError, SingleFlight, Waited, WrapsBackend, wait};
use crate::store::{KeyRecord, KeyStore, Lookup, ManagedKeyStore, StoreError, write_detached};

/// The default number of key records kept.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// The default time a record is served from the cache without asking the store again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// The default number of unknown keys remembered.
pub const DEFAULT_UNKNOWN_CAPACITY: usize = 10_000;
/// The default time an unknown key is answered "unknown" without asking the store again.
pub const DEFAULT_UNKNOWN_TTL: Duration = Duration::from_secs(10);
/// The default bound of one store query made by the cache.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// The default miss budget: store queries for keys the cache does not hold, per second.
pub const DEFAULT_MISS_BUDGET: u32 = 1_000;
/// The most memory one remembered unknown key takes, in bytes, counting the cache's own
/// bookkeeping: the unknown-key cache holds at most `unknown_capacity` × this (1.6 MB at the
/// default capacity). `tests/allocations.rs` measures ~123 bytes, all of the cache's heap
/// included, after 100,000 unknown keys at the default capacity.
pub const UNKNOWN_ENTRY_BYTES: usize = 160;

/// Shards of the unknown-key cache: a fixed number, so that its memory does not grow with the
/// machine's cores (each shard's lock takes 1 KiB). Misses are rare next to hits.
const UNKNOWN_SHARDS: usize = 16;

/// Independent locks that order fills against invalidations, by digest.
const STRIPES: usize = 64;

/// Key records in memory in front of any [`KeyStore`]: a hit is answered by
/// [`find_now`](KeyStore::find_now), with no future, no network and no lock shared across cores.
///
/// - **Hits** are served while younger than the TTL (30 s by default): the hard bound of
///   staleness when no invalidation reaches the cache.
/// - **Misses** are single-flight: concurrent lookups of one key make one store query (bounded by
///   the [query timeout](CachedStoreBuilder::query_timeout)) and share its answer, errors
///   included. Errors are never cached.
/// - **Unknown keys** (well-formed, but the store has no record) are remembered in a separate
///   cache of [`DEFAULT_UNKNOWN_CAPACITY`] entries for a short TTL, and store queries for keys
///   the cache does not hold are capped by a **miss budget** ([`DEFAULT_MISS_BUDGET`] a
///   second): beyond it a lookup fails, so the request is refused with 503. A flood of random
///   keys can neither grow memory past the cap nor query the store faster than the budget.
/// - **Invalidation**: as a [`ManagedKeyStore`] (when its store is one) every write goes to the
///   store and then drops the keys it changed before it returns, so a
///   [`KeyManager`](crate::lifecycle::KeyManager) built on the cache changes what the very
///   next request of this process sees. Changes made elsewhere arrive as [`Change`]s
///   ([`Invalidate`]), e.g. from PostgreSQL notifications
///   ([`ChangeListener`](super::ChangeListener)).
/// - **Outage**: a miss while the store fails is refused (fail closed). With
///   [`serve_stale`](CachedStoreBuilder::serve_stale), a record past its TTL is served while the
///   store fails, within the window, with a warning event; never one an invalidation removed.
///   With a [`ChangeListener`](super::ChangeListener), a database outage that takes the
///   listener's connection with it flushes the cache (changes could be missed): from then on
///   every key is a miss, refused until the database is back.
///
/// Cheap to clone: clones share the cache.
///
/// ```
/// use keygate::Verifier;
/// use keygate::cache::CachedStore;
/// use keygate::key::KeyScheme;
/// use keygate::lifecycle::KeyManager;
/// use keygate::store::MemoryStore; // e.g. SqliteStore or PostgresStore
///
/// let keys = CachedStore::new(MemoryStore::new());
/// let scheme = KeyScheme::default();
/// let verifier = Verifier::builder(keys.clone()).scheme(scheme.clone()).build();
/// // Changes through the manager drop the cached records they change.
/// let manager = KeyManager::builder(keys).scheme(scheme).build();
/// # let _ = (verifier, manager);
/// ```
pub struct CachedStore<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for CachedStore<S> {
    fn clone(&self) -> Self {
        CachedStore {
            inner: self.inner.clone(),
        }
    }
}

type Records =
    Cache<KeyDigest, Entry, UnitWeighter, BuildHasherDefault<DigestHasher>, CountEvictions<Entry>>;
// Clients choose which unknown keys land here: a seeded hasher, so that no one can make
// keys collide in its table.
type Unknown =
    Cache<KeyDigest, u64, UnitWeighter, foldhash::fast::RandomState, CountEvictions<u64>>;
/// A shareable answer: the error of one query goes to all its waiters.
type Shared = Result<Option<Arc<KeyRecord>>, Arc<StoreError>>;
/// Seeded like `Unknown`: a flight is started for any key a client sends.
type FlightHasher = foldhash::fast::RandomState;
type Flights = SingleFlight<KeyDigest, Shared, FlightHasher>;

struct Inner<S> {
    store: S,
    records: Records,
    unknown: Unknown,
    flights: Flights,
    /// Bumped by every invalidation; a fill that started before one does not insert.
    epochs: [Mutex<u64>; STRIPES],
    ttl_ms: u64,
    unknown_ttl_ms: u64,
    stale_ms: Option<u64>,
    query_timeout: Duration,
    budget: Budget,
    capacity: usize,
    unknown_capacity: usize,
    /// When a rate-limited warning was last logged, and how many were left out since.
    budget_log: LogGate,
    stale_log: LogGate,
    metrics: KeyCacheMetrics,
}

/// quick_cache's eviction hook: counts each entry evicted for capacity (not those removed or
/// replaced) and, like quick_cache's default, drops the evicted values after the shard's lock
/// is released (two per insert at most, in practice).
struct CountEvictions<V> {
    evicted: Tally,
    values: std::marker::PhantomData<fn() -> V>,
}

impl<V> CountEvictions<V> {
    fn new(evicted: Tally) -> Self {
        CountEvictions {
            evicted,
            values: std::marker::PhantomData,
        }
    }
}

impl<V> Clone for CountEvictions<V> {
    fn clone(&self) -> Self {
        CountEvictions::new(self.evicted.clone())
    }
}

impl<V> Lifecycle<KeyDigest, V> for CountEvictions<V> {
    type RequestState = [Option<V>; 2];

    fn on_evict(&self, state: &mut Self::RequestState, _key: KeyDigest, value: V) {
        self.evicted.add_one();
        if let Some(slot) = state.iter_mut().find(|s| s.is_none()) {
            *slot = Some(value);
        }
    }
}

#[derive(Clone)]
struct Entry {
    record: Arc<KeyRecord>,
    /// When it was fetched, on the coarse clock.
    at_ms: u64,
}

enum Budget {
    Unlimited,
    Limited {
        limiter: DefaultDirectRateLimiter,
        queries: u32,
        per: Duration,
    },
    /// Zero queries allowed: every miss is refused.
    Closed,
}

impl Budget {
    fn allows(&self) -> bool {
        match self {
            Budget::Unlimited => true,
            Budget::Limited { limiter, .. } => limiter.check().is_ok(),
            Budget::Closed => false,
        }
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Unlimited => f.write_str("unlimited"),
            Budget::Limited { queries, per, .. } => write!(f, "{queries} per {per:?}"),
            Budget::Closed => f.write_str("closed"),
        }
    }
}

/// Lets one warning through per second and counts the ones it holds back.
struct LogGate {
    last_ms: AtomicU64,
    held: AtomicU64,
}

impl LogGate {
    fn new() -> Self {
        LogGate {
            last_ms: AtomicU64::new(u64::MAX),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(number held back since the last one)` when a warning may be logged now.
    fn pass(&self) -> Option<u64> {
        let now = now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != u64::MAX && now.saturating_sub(last) < 1_000 {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => Some(self.held.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.held.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// A lookup refused because the miss budget is used up.
#[derive(Debug)]
struct MissBudgetExceeded(String);

impl fmt::Display for MissBudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key cache: the miss budget ({}) of store queries for keys not in the cache is used up",
            self.0
        )
    }
}

impl StdError for MissBudgetExceeded {}

impl WrapsBackend for StoreError {
    fn wrapped(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        match self {
            StoreError::Backend(e) => Some(&**e),
            _ => None,
        }
    }
}

/// A copy of a shared error for one waiter.
fn unshare(error: &Arc<StoreError>) -> StoreError {
    match &**error {
        StoreError::Timeout => StoreError::Timeout,
        _ => StoreError::Backend(Box::new(SharedError(error.clone()))),
    }
}

fn abandoned() -> StoreError {
    StoreError::backend(std::io::Error::other(
        "key cache: the store query ended without an answer",
    ))
}

impl<S: KeyStore> CachedStore<S> {
    /// Caches `store`'s records with the defaults; see [`CachedStore::builder`].
    pub fn new(store: S) -> Self {
        CachedStore::builder(store).build()
    }

    /// Starts configuring a cache in front of `store`.
    ///
    /// Defaults: [`DEFAULT_CAPACITY`] records for [`DEFAULT_TTL`], [`DEFAULT_UNKNOWN_CAPACITY`]
    /// unknown keys for [`DEFAULT_UNKNOWN_TTL`], a miss budget of [`DEFAULT_MISS_BUDGET`]
    /// queries a second, each query bounded by [`DEFAULT_QUERY_TIMEOUT`], no serve-stale.
    pub fn builder(store: S) -> CachedStoreBuilder<S> {
        CachedStoreBuilder {
            store,
            capacity: DEFAULT_CAPACITY,
            ttl: DEFAULT_TTL,
            unknown_capacity: DEFAULT_UNKNOWN_CAPACITY,
            unknown_ttl: DEFAULT_UNKNOWN_TTL,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            budget: Some((DEFAULT_MISS_BUDGET, Duration::from_secs(1))),
            stale: None,
        }
    }

    /// The wrapped store. Writes made on it directly bypass the cache, which then serves the
    /// old record until its TTL ends or an [`invalidate`](Invalidate::invalidate) drops it.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The number of key records held (those past their TTL included, until evicted).
    pub fn len(&self) -> usize {
        self.inner.records.len()
    }

    /// Whether no key record and no unknown key is held.
    pub fn is_empty(&self) -> bool {
        self.inner.records.is_empty() && self.inner.unknown.is_empty()
    }

    /// The number of unknown keys remembered; never more than
    /// [`unknown_capacity`](Self::unknown_capacity).
    pub fn unknown_len(&self) -> usize {
        self.inner.unknown.len()
    }

    /// The most key records held.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// The most unknown keys remembered.
    pub fn unknown_capacity(&self) -> usize {
        self.inner.unknown_capacity
    }
}

impl<S: KeyStore> Inner<S> {
    fn stripe(&self, digest: &KeyDigest) -> MutexGuard<'_, u64> {
        let i = usize::from(digest.as_bytes()[31]) % STRIPES;
        // A poisoned stripe holds a plain counter: still valid.
        self.epochs[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn epoch(&self, digest: &KeyDigest) -> u64 {
        *self.stripe(digest)
    }

    /// Drops what is known of `digest`. In this order: the epoch first (under the stripe's
    /// lock, which fills take to insert), so that a query in flight cannot put back what was
    /// dropped, then the flight, so that later lookups query anew.
    fn forget(&self, digest: &KeyDigest) {
        self.metrics.key_invalidated();
        {
            let mut epoch = self.stripe(digest);
            *epoch = epoch.wrapping_add(1);
            self.records.remove(digest);
            self.unknown.remove(digest);
        }
        self.flights.forget(digest);
    }

    fn flush(&self) {
        self.metrics.flushed();
        let mut stripes: Vec<MutexGuard<'_, u64>> = self
            .epochs
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        for epoch in &mut stripes {
            **epoch = epoch.wrapping_add(1);
        }
        self.records.clear();
        self.unknown.clear();
        drop(stripes);
        self.flights.forget_all();
    }

    /// Keeps a query's answer, unless an invalidation of its key came after `epoch`.
    fn fill(&self, digest: &KeyDigest, epoch: u64, answer: &Lookup) {
        let at_ms = now_ms();
        let stripe = self.stripe(digest);
        if *stripe != epoch {
            return;
        }
        match answer {
            // A record for another digest is the store's error, not this key's: not kept.
            Ok(Some(record)) if record.digest == *digest => {
                self.unknown.remove(digest);
                self.records.insert(
                    *digest,
                    Entry {
                        record: record.clone(),
                        at_ms,
                    },
                );
            }
            Ok(None) => {
                self.records.remove(digest);
                self.unknown.insert(*digest, at_ms);
            }
            _ => {}
        }
        drop(stripe);
    }

    /// A fresh answer from the cache.
    fn fresh(&self, digest: &KeyDigest) -> Option<Lookup> {
        let now = now_ms();
        if let Some(entry) = self.records.get(digest) {
            if now.saturating_sub(entry.at_ms) < self.ttl_ms {
                self.metrics.hit();
                return Some(Ok(Some(entry.record)));
            }
            return None;
        }
        let at = self.unknown.get(digest)?;
        if now.saturating_sub(at) < self.unknown_ttl_ms {
            self.metrics.negative_hit();
            return Some(Ok(None));
        }
        None
    }

    /// Queries the store for `digest` and keeps the answer; the flight ends with it.
    async fn query(
        self: Arc<Self>,
        digest: KeyDigest,
        flight: Flight<KeyDigest, Shared, FlightHasher>,
    ) {
        let epoch = self.epoch(&digest);
        let answer = tokio::time::timeout(self.query_timeout, self.store.find(&digest))
            .await
            .unwrap_or(Err(StoreError::Timeout));
        self.fill(&digest, epoch, &answer);
        flight.finish(answer.map_err(Arc::new));
    }
}

#[async_trait]
impl<S: KeyStore> KeyStore for CachedStore<S> {
    async fn find(&self, digest: &KeyDigest) -> Lookup {
        let inner = &self.inner;
        if let Some(hit) = inner.fresh(digest) {
            return hit;
        }
        // Counted here, not in `find_now`: the verifier asks `find` after `find_now` missed.
        inner.metrics.miss();
        // A record past its TTL: a key the store knew, refreshed without the miss budget, and
        // what serve-stale may answer with if the refresh fails.
        let expired = inner.records.peek(digest);
        let joined = inner
            .flights
            .join(digest, || expired.is_some() || inner.budget.allows());
        let (flight, rx) = match joined {
            Ok(joined) => joined,
            Err(()) => {
                inner.metrics.budget_exceeded();
                if let Some(held) = inner.budget_log.pass() {
                    tracing::warn!(
                        target: "keygate::cache",
                        budget = ?inner.budget,
                        refused_before = held,
                        "key cache: miss budget used up; lookups of keys not in the cache are refused (503) until it refills"
                    );
                }
                return Err(StoreError::backend(MissBudgetExceeded(format!(
                    "{:?}",
                    inner.budget
                ))));
            }
        };
        if let Some(flight) = flight {
            // A task of its own: a caller that stops waiting does not cancel the query its
            // waiters share.
            tokio::spawn(inner.clone().query(*digest, flight));
        }
        let answer = match wait(rx).await {
            Waited::Answer(Ok(found)) => return Ok(found),
            Waited::Answer(Err(e)) => unshare(&e),
            Waited::Abandoned => abandoned(),
        };
        match (inner.stale_ms, expired) {
            (Some(window), Some(entry)) => {
                let age = now_ms().saturating_sub(entry.at_ms);
                // Never what an invalidation removed: only an entry still in the cache.
                let still_held = inner
                    .records
                    .peek(digest)
                    .is_some_and(|e| Arc::ptr_eq(&e.record, &entry.record));
                if still_held && age < inner.ttl_ms.saturating_add(window) {
                    inner.metrics.stale_served();
                    if let Some(held) = inner.stale_log.pass() {
                        tracing::warn!(
                            target: "keygate::cache",
                            error = %answer,
                            age_ms = age,
                            key_id = %entry.record.id,
                            held_back = held,
                            "key cache: the key store failed; serving a cached key record past its TTL (serve-stale)"
                        );
                    }
                    return Ok(Some(entry.record));
                }
                Err(answer)
            }
            _ => Err(answer),
        }
    }

    fn find_now(&self, digest: &KeyDigest) -> Option<Lookup> {
        self.inner.fresh(digest)
    }
}

impl<S: KeyStore> Invalidate for CachedStore<S> {
    fn invalidate(&self, change: &Change) {
        match change {
            Change::Key(digest) => self.inner.forget(digest),
            Change::Flush => self.inner.flush(),
            // Key records carry no tenant status or plan.
            Change::Tenant(_) => {}
        }
    }
}

/// Whether a failed write may still have been written: the store did not say no, it failed or
/// did not answer.
fn may_have_written(error: &StoreError) -> bool {
    matches!(error, StoreError::Backend(_) | StoreError::Timeout)
}

impl<S: ManagedKeyStore> CachedStore<S> {
    /// Runs a write and the invalidation after it in a task of their own
    /// ([`write_detached`]); if the task is lost, the whole cache is forgotten.
    async fn write<T: Send + 'static>(
        &self,
        write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        write_detached(write, || self.inner.flush()).await
    }
}

/// Drops the key a rename or a revocation changed; everything when it may have changed one
/// it did not name.
fn after_update<S: KeyStore>(inner: &Inner<S>, result: &Result<Option<KeyRecord>, StoreError>) {
    match result {
        Ok(Some(record)) => inner.forget(&record.digest),
        Ok(None) => {}
        Err(e) if may_have_written(e) => inner.flush(),
        Err(_) => {}
    }
}

#[async_trait]
impl<S: ManagedKeyStore> ManagedKeyStore for CachedStore<S> {
    /// Inserts through the store, then drops any note that the new key is unknown.
    async fn insert(&self, record: KeyRecord, max_active: Option<usize>) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        self.write(async move {
            let digest = record.digest;
            let result = inner.store.insert(record, max_active).await;
            inner.forget(&digest);
            result
        })
        .await
    }

    async fn get(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.store.get(tenant_id, key_id, now).await
    }

    async fn list(
        &self,
        tenant_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.store.list(tenant_id, now).await
    }

    /// Renames through the store, then drops the key's cached record.
    async fn rename(
        &self,
        tenant_id: &str,
        key_id: &str,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let (tenant_id, key_id, name) = (tenant_id.to_owned(), key_id.to_owned(), name.to_owned());
        let inner = self.inner.clone();
        self.write(async move {
            let result = inner.store.rename(&tenant_id, &key_id, &name, now).await;
            after_update(&inner, &result);
            result
        })
        .await
    }

    /// Revokes through the store, then drops the key's cached record.
    async fn revoke(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let (tenant_id, key_id) = (tenant_id.to_owned(), key_id.to_owned());
        let inner = self.inner.clone();
        self.write(async move {
            let result = inner.store.revoke(&tenant_id, &key_id, now).await;
            after_update(&inner, &result);
            result
        })
        .await
    }

    /// Rotates through the store, then drops both keys' cached entries.
    async fn rotate(
        &self,
        tenant_id: &str,
        key_id: &str,
        replacement: KeyRecord,
        old_until: OffsetDateTime,
        now: OffsetDateTime,
        max_active: Option<usize>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let (tenant_id, key_id) = (tenant_id.to_owned(), key_id.to_owned());
        let inner = self.inner.clone();
        self.write(async move {
            let new_digest = replacement.digest;
            let result = inner
                .store
                .rotate(&tenant_id, &key_id, replacement, old_until, now, max_active)
                .await;
            inner.forget(&new_digest);
            after_update(&inner, &result);
            result
        })
        .await
    }

    /// Undoes a rotation through the store, then drops both keys' cached entries.
    async fn undo_rotate(
        &self,
        tenant_id: &str,
        key_id: &str,
        old_until: OffsetDateTime,
        successor_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(KeyRecord, KeyRecord)>, StoreError> {
        let (tenant_id, key_id, successor_id) = (
            tenant_id.to_owned(),
            key_id.to_owned(),
            successor_id.to_owned(),
        );
        let inner = self.inner.clone();
        self.write(async move {
            let result = inner
                .store
                .undo_rotate(&tenant_id, &key_id, old_until, &successor_id, now)
                .await;
            match &result {
                Ok(Some((old, successor))) => {
                    inner.forget(&old.digest);
                    inner.forget(&successor.digest);
                }
                Err(e) if may_have_written(e) => inner.flush(),
                _ => {}
            }
            result
        })
        .await
    }

    /// Writes last-used times through; cached records keep the `last_used_at` they were
    /// fetched with.
    async fn touch(&self, used: &[(String, OffsetDateTime)]) -> Result<(), StoreError> {
        self.inner.store.touch(used).await
    }
}

impl<S> fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("CachedStore")
            .field("records", &inner.records.len())
            .field("capacity", &inner.capacity)
            .field("ttl_ms", &inner.ttl_ms)
            .field("unknown", &inner.unknown.len())
            .field("unknown_capacity", &inner.unknown_capacity)
            .field("unknown_ttl_ms", &inner.unknown_ttl_ms)
            .field("miss_budget", &inner.budget)
            .field("query_timeout", &inner.query_timeout)
            .field("serve_stale_ms", &inner.stale_ms)
            .finish_non_exhaustive()
    }
}

/// Configures a [`CachedStore`]; see [`CachedStore::builder`].
#[must_use]
pub struct CachedStoreBuilder<S> {
    store: S,
    capacity: usize,
    ttl: Duration,
    unknown_capacity: usize,
    unknown_ttl: Duration,
    query_timeout: Duration,
    budget: Option<(u32, Duration)>,
    stale: Option<Duration>,
}

impl<S> fmt::Debug for CachedStoreBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStoreBuilder")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("unknown_capacity", &self.unknown_capacity)
            .field("unknown_ttl", &self.unknown_ttl)
            .field("query_timeout", &self.query_timeout)
            .field("miss_budget", &self.budget)
            .field("serve_stale", &self.stale)
            .finish_non_exhaustive()
    }
}

impl<S: KeyStore> CachedStoreBuilder<S> {
    /// The most key records held (default [`DEFAULT_CAPACITY`]); beyond it the least useful
    /// are evicted (quick_cache's S3-FIFO policy). A record takes about 1 KB (its scopes,
    /// metadata and restrictions).
    pub fn capacity(mut self, records: usize) -> Self {
        self.capacity = records;
        self
    }

    /// How long a record is served without asking the store again (default [`DEFAULT_TTL`]):
    /// the bound of staleness when no invalidation reaches the cache.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The most unknown keys remembered (default [`DEFAULT_UNKNOWN_CAPACITY`]), each in at
    /// most [`UNKNOWN_ENTRY_BYTES`] bytes.
    pub fn unknown_capacity(mut self, keys: usize) -> Self {
        self.unknown_capacity = keys;
        self
    }

    /// How long a key the store does not know is answered "unknown" without asking again
    /// (default [`DEFAULT_UNKNOWN_TTL`]). Inserting the key through the cache, or a
    /// [`Change::Key`] for it, ends this at once.
    pub fn unknown_ttl(mut self, ttl: Duration) -> Self {
        self.unknown_ttl = ttl;
        self
    }

    /// The bound of each store query the cache makes (default [`DEFAULT_QUERY_TIMEOUT`]); a
    /// query that takes longer fails with [`StoreError::Timeout`] for all its waiters. Keep it
    /// below the verifier's store timeout (2 s by default), so that with
    /// [`serve_stale`](Self::serve_stale) a hanging store is answered from the cache before
    /// the verifier gives up.
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// At most `queries` store queries per `per` for keys the cache does not hold (default
    /// [`DEFAULT_MISS_BUDGET`] a second, in bursts of as many); beyond it such a lookup fails
    /// (the request is refused with 503) with a warning event, logged at most once a second.
    /// Refreshing a record the cache holds past its TTL does not count. `queries` 0 refuses
    /// every such lookup.
    pub fn miss_budget(mut self, queries: u32, per: Duration) -> Self {
        self.budget = Some((queries, per));
        self
    }

    /// No miss budget: every miss queries the store.
    pub fn no_miss_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// Serve-stale (off by default): when refreshing a record past its TTL fails (store error
    /// or timeout), answer with the cached record while its age is below TTL + `window`, with
    /// a warning event (logged at most once a second). Never a record an invalidation removed,
    /// never an unknown key, and never past `window`. A few minutes at most is sensible. It
    /// helps when the store fails and the cache keeps what it holds: with a
    /// [`ChangeListener`](super::ChangeListener), an outage that also cuts the listener's
    /// connection flushes the cache, and nothing is left to serve.
    pub fn serve_stale(mut self, window: Duration) -> Self {
        self.stale = Some(window);
        self
    }

    /// Finishes the configuration.
    pub fn build(self) -> CachedStore<S> {
        let budget = match self.budget {
            None => Budget::Unlimited,
            Some((queries, per)) => match NonZeroU32::new(queries) {
                None => Budget::Closed,
                Some(n) => {
                    let period = (per / n.get()).max(Duration::from_nanos(1));
                    match Quota::with_period(period) {
                        Some(quota) => Budget::Limited {
                            limiter: RateLimiter::direct(quota.allow_burst(n)),
                            queries,
                            per,
                        },
                        None => Budget::Unlimited,
                    }
                }
            },
        };
        // Registered now, with the recorder installed now.
        let metrics = KeyCacheMetrics::register();
        CachedStore {
            inner: Arc::new(Inner {
                store: self.store,
                records: new_cache(
                    self.capacity,
                    None,
                    Default::default(),
                    CountEvictions::new(metrics.records_evicted.clone()),
                ),
                unknown: new_cache(
                    self.unknown_capacity,
                    Some(UNKNOWN_SHARDS),
                    foldhash::fast::RandomState::default(),
                    CountEvictions::new(metrics.unknown_evicted.clone()),
                ),
                flights: SingleFlight::new(),
                epochs: std::array::from_fn(|_| Mutex::new(0)),
                ttl_ms: millis(self.ttl),
                unknown_ttl_ms: millis(self.unknown_ttl),
                stale_ms: self.stale.map(millis),
                query_timeout: self.query_timeout,
                budget,
                capacity: self.capacity,
                unknown_capacity: self.unknown_capacity,
                budget_log: LogGate::new(),
                stale_log: LogGate::new(),
                metrics,
            }),
        }
    }
}

/// A cache of `capacity` entries, in `shards` shards (quick_cache's default, 4 per core, when
/// `None`).
fn new_cache<V: Clone, H: std::hash::BuildHasher + Clone>(
    capacity: usize,
    shards: Option<usize>,
    hasher: H,
    lifecycle: CountEvictions<V>,
) -> Cache<KeyDigest, V, UnitWeighter, H, CountEvictions<V>> {
    // Shards hold at least 32 entries each (quick_cache halves the count until they do); the
    // options cannot fail with a capacity set.
    let mut options = OptionsBuilder::new();
    options
        .estimated_items_capacity(capacity)
        .weight_capacity(capacity as u64);
    if let Some(shards) = shards {
        options.shards(shards);
    }
    let options = options.build();
    match options {
        Ok(options) => Cache::with_options(options, UnitWeighter, hasher, lifecycle),
        Err(_) => Cache::with(capacity, capacity as u64, UnitWeighter, hasher, lifecycle),
    }
}
