use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{EntitlementLookup, EntitlementSource, TenantEntitlements};
use crate::backend::BackendError;
use crate::single_flight::{Flight, SharedError, SingleFlight, Waited, WrapsBackend, wait};

/// When an answer was fetched, and the answer.
type CachedAnswer = (std::time::Instant, Option<Arc<TenantEntitlements>>);
/// A query's answer as its waiters share it.
type Shared = Result<Option<Arc<TenantEntitlements>>, Arc<BackendError>>;
type Flights = SingleFlight<String, Shared, foldhash::fast::RandomState>;

/// How long a query of the source may take by default.
const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// Caches another source's answers for `ttl`, so that the request path needs no second
/// backend round trip: the key lookup stays the only one. A status change made elsewhere takes
/// effect within `ttl`; [`CachedEntitlements::invalidate`] makes it immediate, and so do the
/// change notifications of the key cache (it implements
/// [`Invalidate`](crate::cache::Invalidate): subscribe it to a
/// [`ChangeListener`](crate::cache::ChangeListener) or a [`ChangeFeed`](crate::cache::ChangeFeed)).
///
/// Errors are never cached. An answer fetched while an invalidation of its tenant happened is
/// not kept, so an invalidation is never undone by a lookup that was already under way.
/// Concurrent misses of one tenant make one query of the source and share its answer (an
/// error included), and a query that takes longer than the
/// [query timeout](Self::query_timeout) (1 s) fails: after a flush, a thousand requests of a
/// tenant make one query, not a thousand.
///
/// ```
/// use std::time::Duration;
/// use keygate::plan::{CachedEntitlements, MemoryEntitlements};
///
/// let cached = CachedEntitlements::new(MemoryEntitlements::new(), Duration::from_secs(1));
/// cached.invalidate("acme");
/// cached.flush();
/// ```
pub struct CachedEntitlements<S> {
    source: Arc<S>,
    ttl: std::time::Duration,
    query_timeout: Duration,
    cache: Arc<RwLock<Answers>>,
    flights: Arc<Flights>,
}

// By hand: a clone shares the source, so `S` need not be `Clone`.
impl<S> Clone for CachedEntitlements<S> {
    fn clone(&self) -> Self {
        CachedEntitlements {
            source: self.source.clone(),
            ttl: self.ttl,
            query_timeout: self.query_timeout,
            cache: self.cache.clone(),
            flights: self.flights.clone(),
        }
    }
}

#[derive(Default)]
struct Answers {
    // Tenant ids come from key records, not from clients: a fast seeded hash is safe.
    by_tenant: HashMap<String, CachedAnswer, foldhash::fast::RandomState>,
    /// Bumped by every invalidation; a lookup that started before one does not insert.
    epoch: u64,
}

impl<S> std::fmt::Debug for CachedEntitlements<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedEntitlements")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<S> CachedEntitlements<S> {
    /// Forgets the cached answer for a tenant.
    pub fn invalidate(&self, tenant_id: &str) {
        {
            let mut cache = self.write();
            cache.epoch = cache.epoch.wrapping_add(1);
            cache.by_tenant.remove(tenant_id);
        }
        // Later lookups start a query of their own, which cannot predate this change.
        self.flights.forget(&tenant_id.to_owned());
    }

    /// Forgets every cached answer.
    pub fn flush(&self) {
        {
            let mut cache = self.write();
            cache.epoch = cache.epoch.wrapping_add(1);
            cache.by_tenant.clear();
        }
        self.flights.forget_all();
    }

    /// The number of tenants whose answer is cached (expired ones included).
    pub fn len(&self) -> usize {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_tenant
            .len()
    }

    /// Whether no answer is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wrapped source.
    pub fn source(&self) -> &S {
        &self.source
    }

    fn write(&self) -> RwLockWriteGuard<'_, Answers> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: EntitlementSource> CachedEntitlements<S> {
    /// Caches `source`'s answers (found or not found; errors are never cached) for `ttl`.
    pub fn new(source: S, ttl: std::time::Duration) -> Self {
        CachedEntitlements {
            source: Arc::new(source),
            ttl,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            cache: Arc::default(),
            flights: Arc::new(SingleFlight::new()),
        }
    }

    /// How long a query of the source may take before it fails with
    /// [`BackendError::Timeout`] (default 1 s, below the verifier's 2 s store timeout). Its
    /// waiters share the failure; the next miss queries again.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keygate::plan::{CachedEntitlements, MemoryEntitlements};
    ///
    /// let cached = CachedEntitlements::new(MemoryEntitlements::new(), Duration::from_secs(30))
    ///     .query_timeout(Duration::from_millis(500));
    /// # let _ = cached;
    /// ```
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Queries the source for `tenant_id` and keeps the answer; the flight ends with it.
    async fn query(
        self,
        tenant_id: String,
        flight: Flight<String, Shared, foldhash::fast::RandomState>,
    ) {
        let epoch = self.cache.read().unwrap_or_else(|e| e.into_inner()).epoch;
        let answer = tokio::time::timeout(self.query_timeout, self.source.entitlements(&tenant_id))
            .await
            .unwrap_or(Err(BackendError::Timeout));
        if let Ok(found) = &answer {
            let mut cache = self.write();
            if cache.epoch == epoch {
                cache
                    .by_tenant
                    .insert(tenant_id, (std::time::Instant::now(), found.clone()));
            }
        }
        flight.finish(answer.map_err(Arc::new));
    }
}

impl WrapsBackend for BackendError {
    fn wrapped(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            BackendError::Failed(e) => Some(&**e),
            BackendError::Timeout => None,
        }
    }
}

/// A copy of a shared error for one waiter.
fn unshare(error: &Arc<BackendError>) -> BackendError {
    match &**error {
        BackendError::Timeout => BackendError::Timeout,
        _ => BackendError::backend(SharedError(error.clone())),
    }
}

#[async_trait]
impl<S: EntitlementSource> EntitlementSource for CachedEntitlements<S> {
    async fn entitlements(&self, tenant_id: &str) -> EntitlementLookup {
        if let Some(hit) = self.entitlements_now(tenant_id) {
            return hit;
        }
        let tenant = tenant_id.to_owned();
        let Ok((flight, rx)) = self.flights.join(&tenant, || true) else {
            // Unreachable: anyone may lead.
            return Err(BackendError::Timeout);
        };
        if let Some(flight) = flight {
            // A task of its own: a caller that stops waiting does not cancel the query its
            // waiters share.
            tokio::spawn(self.clone().query(tenant, flight));
        }
        match wait(rx).await {
            Waited::Answer(Ok(found)) => Ok(found),
            Waited::Answer(Err(e)) => Err(unshare(&e)),
            Waited::Abandoned => Err(BackendError::backend(std::io::Error::other(
                "cached plans: the query ended without an answer",
            ))),
        }
    }

    fn entitlements_now(&self, tenant_id: &str) -> Option<EntitlementLookup> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let (at, answer) = cache.by_tenant.get(tenant_id)?;
        (at.elapsed() < self.ttl).then(|| Ok(answer.clone()))
    }
}
