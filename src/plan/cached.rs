use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use async_trait::async_trait;

use super::{EntitlementLookup, EntitlementSource, TenantEntitlements};

/// When an answer was fetched, and the answer.
type CachedAnswer = (std::time::Instant, Option<Arc<TenantEntitlements>>);

/// Caches another source's answers for `ttl`, so that the request path needs no second
/// backend round trip: the key lookup stays the only one. A status change made elsewhere takes
/// effect within `ttl`; [`CachedEntitlements::invalidate`] makes it immediate, and so do the
/// change notifications of the key cache (it implements
/// [`Invalidate`](crate::cache::Invalidate): subscribe it to a
/// [`ChangeListener`](crate::cache::ChangeListener) or a [`ChangeFeed`](crate::cache::ChangeFeed)).
///
/// Errors are never cached. An answer fetched while an invalidation of its tenant happened is
/// not kept, so an invalidation is never undone by a lookup that was already under way.
///
/// ```
/// use std::time::Duration;
/// use keygate::plan::{CachedEntitlements, MemoryEntitlements};
///
/// let cached = CachedEntitlements::new(MemoryEntitlements::new(), Duration::from_secs(1));
/// cached.invalidate("acme");
/// cached.flush();
/// ```
#[derive(Clone)]
pub struct CachedEntitlements<S> {
    source: Arc<S>,
    ttl: std::time::Duration,
    cache: Arc<RwLock<Answers>>,
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
        let mut cache = self.write();
        cache.epoch = cache.epoch.wrapping_add(1);
        cache.by_tenant.remove(tenant_id);
    }

    /// Forgets every cached answer.
    pub fn flush(&self) {
        let mut cache = self.write();
        cache.epoch = cache.epoch.wrapping_add(1);
        cache.by_tenant.clear();
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
            cache: Arc::default(),
        }
    }
}

#[async_trait]
impl<S: EntitlementSource> EntitlementSource for CachedEntitlements<S> {
    async fn entitlements(&self, tenant_id: &str) -> EntitlementLookup {
        if let Some(hit) = self.entitlements_now(tenant_id) {
            return hit;
        }
        let epoch = self.cache.read().unwrap_or_else(|e| e.into_inner()).epoch;
        let answer = self.source.entitlements(tenant_id).await?;
        let mut cache = self.write();
        if cache.epoch == epoch {
            cache.by_tenant.insert(
                tenant_id.to_owned(),
                (std::time::Instant::now(), answer.clone()),
            );
        }
        Ok(answer)
    }

    fn entitlements_now(&self, tenant_id: &str) -> Option<EntitlementLookup> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let (at, answer) = cache.by_tenant.get(tenant_id)?;
        (at.elapsed() < self.ttl).then(|| Ok(answer.clone()))
    }
}
