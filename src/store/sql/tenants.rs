//! The tenants table, `keygate_tenants`: each tenant's status and plan, so that an SQL store is
//! an [`EntitlementSource`] too.

use std::sync::Arc;

use async_trait::async_trait;

use super::SqlStore;
use super::changes::Notice;
use super::codec::{Arg, TenantRow};
use super::dialect::Dialect;
use super::driver::{Driver, On};
use crate::backend::BackendError;
use crate::plan::{CachedEntitlements, EntitlementLookup, EntitlementSource, TenantEntitlements};
use crate::store::StoreError;

const UPSERT: &str = "INSERT INTO keygate_tenants (id, status, plan) VALUES ($1, $2, $3) \
     ON CONFLICT (id) DO UPDATE SET status = excluded.status, plan = excluded.plan";

const GET: &str = "SELECT status, plan FROM keygate_tenants WHERE id = $1";

// `Driver` is the store's own plumbing, implemented for every database a `Dialect` names: the
// bound is always met, and there is nothing in it for a caller to see.
#[allow(private_bounds)]
impl<D: Dialect> SqlStore<D>
where
    D::Db: Driver,
{
    /// Creates or replaces a tenant's status and plan. On PostgreSQL the change is published
    /// to the caches of every instance; in this process, set it through
    /// [`CachedEntitlements::set_tenant`] to drop the cached answer at once.
    pub async fn set_tenant(
        &self,
        tenant_id: &str,
        entitlements: &TenantEntitlements,
    ) -> Result<(), StoreError> {
        let args = TenantRow::args(tenant_id, entitlements)?;
        self.dialect.check_write()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        D::Db::execute(On::Tx(&mut tx), UPSERT, args)
            .await
            .map_err(StoreError::backend)?;
        self.publish(&mut tx, Notice::Tenant(tenant_id.to_owned()))
            .await?;
        Ok(self.commit(tx).await?)
    }
}

#[allow(private_bounds)]
impl<D: Dialect> CachedEntitlements<SqlStore<D>>
where
    D::Db: Driver,
{
    /// Creates or replaces a tenant's status and plan in the SQL store
    /// ([`SqlStore::set_tenant`]), then drops this cache's answer for the tenant: a suspension
    /// refuses this process's very next request of the tenant. Other instances learn of it
    /// through PostgreSQL notifications, or when their TTL ends.
    pub async fn set_tenant(
        &self,
        tenant_id: &str,
        entitlements: &TenantEntitlements,
    ) -> Result<(), StoreError> {
        let result = self.source().set_tenant(tenant_id, entitlements).await;
        // Also on failure: the write may have committed before the error.
        self.invalidate(tenant_id);
        result
    }
}

#[async_trait]
impl<D: Dialect> EntitlementSource for SqlStore<D>
where
    D::Db: Driver,
{
    async fn entitlements(&self, tenant_id: &str) -> EntitlementLookup {
        self.dialect.check_read()?;
        let args = vec![Arg::Text(tenant_id.to_owned())];
        let row = D::Db::fetch_tenant(On::Pool(&self.pool), GET, args)
            .await
            .map_err(BackendError::backend)?;
        Ok(row
            .map(TenantRow::into_entitlements)
            .transpose()?
            .map(Arc::new))
    }
}
