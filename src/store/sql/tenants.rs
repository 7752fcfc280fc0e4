//! The tenants table, `keygate_tenants`: each tenant's status and plan, so that an SQL store is
//! an [`EntitlementSource`] too.

use std::sync::Arc;

use async_trait::async_trait;

use super::SqlStore;
use super::codec::{Arg, TenantRow};
use super::dialect::Dialect;
use super::driver::{Driver, On};
use crate::backend::BackendError;
use crate::plan::{EntitlementLookup, EntitlementSource, TenantEntitlements};
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
    /// Creates or replaces a tenant's status and plan.
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
        Ok(self.commit(tx).await?)
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
