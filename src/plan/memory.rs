use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::{EntitlementLookup, EntitlementSource, Plan, TenantEntitlements, TenantStatus};

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
