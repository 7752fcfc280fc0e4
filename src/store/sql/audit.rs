//! The audit table, `keygate_audit`: an SQL store is an [`AuditSink`] that keeps every event.

use async_trait::async_trait;

use super::SqlStore;
use super::codec::{Arg, nanos};
use super::dialect::Dialect;
use super::driver::{Driver, On};
use crate::audit::{AuditEvent, AuditSink};
use crate::backend::BackendError;

const INSERT: &str = "INSERT INTO keygate_audit (at, actor, tenant_id, action, key_id, \
     key_prefix) VALUES ($1, $2, $3, $4, $5, $6)";

#[async_trait]
impl<D: Dialect> AuditSink for SqlStore<D>
where
    D::Db: Driver,
{
    async fn record(&self, event: &AuditEvent) -> Result<(), BackendError> {
        let at = nanos(event.at).map_err(BackendError::backend)?;
        let args = vec![
            Arg::Int(at),
            Arg::Text(event.actor.clone()),
            Arg::Text(event.tenant_id.clone()),
            Arg::Text(event.action.as_str().to_owned()),
            Arg::Text(event.key_id.clone()),
            Arg::Text(event.key_prefix.clone()),
        ];
        self.dialect.check_write()?;
        let mut tx = self.pool.begin().await.map_err(BackendError::backend)?;
        D::Db::execute(On::Tx(&mut tx), INSERT, args)
            .await
            .map_err(BackendError::backend)?;
        self.commit(tx).await
    }
}
