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
use crate::plan::{
    CachedEntitlements, EntitlementLookup, EntitlementSource, Plan, TenantEntitlements,
    TenantStatus,
};
use crate::store::{StoreError, write_detached};

const UPSERT: &str = "INSERT INTO keygate_tenants (id, status, plan) VALUES ($1, $2, $3) \
     ON CONFLICT (id) DO UPDATE SET status = excluded.status, plan = excluded.plan";

/// Returns the id when the row was inserted, nothing when the tenant existed.
const CREATE: &str = "INSERT INTO keygate_tenants (id, status, plan) VALUES ($1, $2, $3) \
     ON CONFLICT (id) DO NOTHING RETURNING id";

const SET_STATUS: &str = "UPDATE keygate_tenants SET status = $2 WHERE id = $1 RETURNING id";

const SET_PLAN: &str = "UPDATE keygate_tenants SET plan = $2 WHERE id = $1 RETURNING id";

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

    /// Creates a tenant with this status and plan; `false`, and nothing written, when the
    /// tenant exists already. Published like [`set_tenant`](Self::set_tenant).
    pub async fn create_tenant(
        &self,
        tenant_id: &str,
        entitlements: &TenantEntitlements,
    ) -> Result<bool, StoreError> {
        let args = TenantRow::args(tenant_id, entitlements)?;
        self.tenant_write(tenant_id, CREATE, args).await
    }

    /// Sets an existing tenant's status (suspends or resumes it), keeping its plan; `false`
    /// when there is no such tenant. Published like [`set_tenant`](Self::set_tenant).
    pub async fn set_tenant_status(
        &self,
        tenant_id: &str,
        status: TenantStatus,
    ) -> Result<bool, StoreError> {
        let args = vec![
            Arg::Text(tenant_id.to_owned()),
            TenantRow::status_arg(status),
        ];
        self.tenant_write(tenant_id, SET_STATUS, args).await
    }

    /// Sets an existing tenant's plan, keeping its status; `false` when there is no such
    /// tenant. Published like [`set_tenant`](Self::set_tenant).
    pub async fn set_tenant_plan(&self, tenant_id: &str, plan: &Plan) -> Result<bool, StoreError> {
        let args = vec![Arg::Text(tenant_id.to_owned()), TenantRow::plan_arg(plan)?];
        self.tenant_write(tenant_id, SET_PLAN, args).await
    }

    /// The tenant's status and plan, if it exists (uncached).
    pub async fn tenant(&self, tenant_id: &str) -> Result<Option<TenantEntitlements>, StoreError> {
        let found = EntitlementSource::entitlements(self, tenant_id).await?;
        Ok(found.map(Arc::unwrap_or_clone))
    }

    /// Runs a write of one tenant row that returns its id when it changed a row, and
    /// publishes the change if it did.
    async fn tenant_write(
        &self,
        tenant_id: &str,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<bool, StoreError> {
        self.dialect.check_write()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        let changed = D::Db::fetch_text(On::Tx(&mut tx), sql, args)
            .await
            .map_err(StoreError::backend)?
            .is_some();
        if changed {
            self.publish(&mut tx, Notice::Tenant(tenant_id.to_owned()))
                .await?;
        }
        self.commit(tx).await?;
        Ok(changed)
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
        let (cache, tenant, entitlements) =
            (self.clone(), tenant_id.to_owned(), entitlements.clone());
        let write = async move {
            let result = cache.source().set_tenant(&tenant, &entitlements).await;
            // Also on failure: the write may have committed before the error.
            cache.invalidate(&tenant);
            result
        };
        write_detached(write, || self.invalidate(tenant_id)).await
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
