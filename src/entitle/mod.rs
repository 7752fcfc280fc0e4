//! Tenant entitlements: status (active or suspended) and plan (rate limits, quota, scopes).
//!
//! The verifier asks an [`EntitlementSource`] for the tenant of every accepted key. A
//! suspended tenant is refused with 403; the plan's limits go to the
//! [`Limiter`](crate::limit::Limiter); a key's scopes grant only what the plan allows.
//!
//! ```
//! use keygate::entitle::{MemoryEntitlements, Plan, TenantEntitlements};
//! use keygate::limit::{Quota, QuotaPeriod, RateLimit};
//!
//! let plans = MemoryEntitlements::new();
//! plans.set(
//!     "acme",
//!     TenantEntitlements::active(Plan {
//!         name: "pro".into(),
//!         rate_limit: Some(RateLimit::per_minute(600)),
//!         key_rate_limit: None,
//!         quota: Some(Quota { limit: 1_000_000, period: QuotaPeriod::Month }),
//!         allowed_scopes: None,
//!     }),
//! );
//! plans.suspend("acme");
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backend::BackendError;
use crate::limit::{Quota, RateLimit};
use crate::scope::Scopes;

/// Whether a tenant may use the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// Requests are served.
    Active,
    /// Every request is refused with 403 "Tenant suspended".
    Suspended,
}

/// What a tenant's plan allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The plan's name, e.g. `free`, `pro`.
    pub name: String,
    /// The tenant's rate limit, shared by all its keys.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// A rate limit for each key of the tenant.
    #[serde(default)]
    pub key_rate_limit: Option<RateLimit>,
    /// The tenant's quota per calendar period.
    #[serde(default)]
    pub quota: Option<Quota>,
    /// Scopes the plan allows; `None` allows every scope.
    #[serde(default)]
    pub allowed_scopes: Option<Scopes>,
}

/// A tenant's status and plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantEntitlements {
    /// Active or suspended.
    pub status: TenantStatus,
    /// The plan.
    pub plan: Plan,
}

impl TenantEntitlements {
    /// An active tenant on `plan`.
    pub fn active(plan: Plan) -> Self {
        TenantEntitlements {
            status: TenantStatus::Active,
            plan,
        }
    }
}

/// The answer of an entitlement lookup.
pub type EntitlementLookup = Result<Option<Arc<TenantEntitlements>>, BackendError>;

/// Where tenants' entitlements come from.
///
/// A source that fails returns a [`BackendError`]; the request is then refused with 503.
#[async_trait]
pub trait EntitlementSource: Send + Sync + 'static {
    /// The tenant's entitlements; `None` for a tenant the source does not know (the request is
    /// then refused with 403, never let through without a plan).
    async fn entitlements(&self, tenant_id: &str) -> EntitlementLookup;

    /// The same, answered at once when possible (in-memory sources, caches).
    fn entitlements_now(&self, tenant_id: &str) -> Option<EntitlementLookup> {
        let _ = tenant_id;
        None
    }
}

/// Entitlements in process memory, with an optional default for unknown tenants.
#[derive(Clone, Default)]
pub struct MemoryEntitlements {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default)]
struct Inner {
    // Tenant ids come from the key store, not from clients: a fast seeded hash is safe.
    tenants: HashMap<String, Arc<TenantEntitlements>, foldhash::fast::RandomState>,
    default: Option<Arc<TenantEntitlements>>,
}

impl std::fmt::Debug for MemoryEntitlements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEntitlements").finish_non_exhaustive()
    }
}

impl MemoryEntitlements {
    /// No tenants, no default: every tenant must be set.
    pub fn new() -> Self {
        MemoryEntitlements::default()
    }

    /// Tenants that were not [`set`](Self::set) get `default`.
    pub fn with_default(default: TenantEntitlements) -> Self {
        let source = MemoryEntitlements::new();
        source.write().default = Some(Arc::new(default));
        source
    }

    /// Sets a tenant's entitlements; effective for the next request.
    pub fn set(&self, tenant_id: &str, entitlements: TenantEntitlements) {
        self.write()
            .tenants
            .insert(tenant_id.to_owned(), Arc::new(entitlements));
    }

    /// Suspends a tenant (keeping its plan); effective for the next request.
    pub fn suspend(&self, tenant_id: &str) {
        self.set_status(tenant_id, TenantStatus::Suspended);
    }

    /// Reactivates a suspended tenant.
    pub fn reactivate(&self, tenant_id: &str) {
        self.set_status(tenant_id, TenantStatus::Active);
    }

    fn set_status(&self, tenant_id: &str, status: TenantStatus) {
        let mut inner = self.write();
        let current = inner
            .tenants
            .get(tenant_id)
            .or(inner.default.as_ref())
            .map(|e| TenantEntitlements::clone(e))
            .unwrap_or_else(|| TenantEntitlements::active(Plan::default()));
        inner.tenants.insert(
            tenant_id.to_owned(),
            Arc::new(TenantEntitlements { status, ..current }),
        );
    }

    fn lookup(&self, tenant_id: &str) -> Option<Arc<TenantEntitlements>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .tenants
            .get(tenant_id)
            .or(inner.default.as_ref())
            .cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl EntitlementSource for MemoryEntitlements {
    async fn entitlements(&self, tenant_id: &str) -> EntitlementLookup {
        Ok(self.lookup(tenant_id))
    }

    fn entitlements_now(&self, tenant_id: &str) -> Option<EntitlementLookup> {
        Some(Ok(self.lookup(tenant_id)))
    }
}

/// When an answer was fetched, and the answer.
type CachedAnswer = (std::time::Instant, Option<Arc<TenantEntitlements>>);

/// Caches another source's answers for `ttl`, so that the request path needs no second
/// backend round trip: the key lookup stays the only one. A status change made elsewhere takes
/// effect within `ttl`; [`CachedEntitlements::invalidate`] makes it immediate.
///
/// ```
/// use std::time::Duration;
/// use keygate::entitle::{CachedEntitlements, MemoryEntitlements};
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
