use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::{EntitlementLookup, EntitlementSource, TenantEntitlements};

/// When an answer was fetched, and the answer.
type CachedAnswer = (std::time::Instant, Option<Arc<TenantEntitlements>>);

/// Caches another source's answers for `ttl`, so that the request path needs no second
/// backend round trip: the key lookup stays the only one. A status change made elsewhere takes
/// effect within `ttl`; [`CachedEntitlements::invalidate`] makes it immediate.
///
/// ```
/// use std::time::Duration;
/// use keygate::plan::{CachedEntitlements, MemoryEntitlements};
///
/// let cached = CachedEntitlements::new(MemoryEntitlements::new(), Duration::from_secs(1));
/// cached.invalidate("acme");
/// ```
#[derive(Clone)]
pub struct CachedEntitlements<S> {
    source: Arc<S>,
    ttl: std::time::Duration,
    cache: Arc<RwLock<HashMap<String, CachedAnswer, foldhash::fast::RandomState>>>,
}

impl<S> std::fmt::Debug for CachedEntitlements<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedEntitlements")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
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

    /// Forgets the cached answer for a tenant.
    pub fn invalidate(&self, tenant_id: &str) {
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant_id);
    }

    /// The wrapped source.
    pub fn source(&self) -> &S {
        &self.source
    }
}

#[async_trait]
impl<S: EntitlementSource> EntitlementSource for CachedEntitlements<S> {
    async fn entitlements(&self, tenant_id: &str) -> EntitlementLookup {
        if let Some(hit) = self.entitlements_now(tenant_id) {
            return hit;
        }
        let answer = self.source.entitlements(tenant_id).await?;
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                tenant_id.to_owned(),
                (std::time::Instant::now(), answer.clone()),
            );
        Ok(answer)
    }

    fn entitlements_now(&self, tenant_id: &str) -> Option<EntitlementLookup> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let (at, answer) = cache.get(tenant_id)?;
        (at.elapsed() < self.ttl).then(|| Ok(answer.clone()))
    }
}
