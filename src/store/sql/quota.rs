//! The quota usage table, `keygate_quota_usage`: an SQL store is a [`QuotaLedger`], the durable
//! side of [`LeasedQuotaLimiter`](crate::limit::LeasedQuotaLimiter).
//!
//! Each lease is one statement: SQLite runs it under the database's write lock, PostgreSQL
//! under the row's lock, so concurrent leases from any number of instances serialise and the
//! sum of the grants never passes the limit.

use async_trait::async_trait;

use super::SqlStore;
use super::codec::Arg;
use super::dialect::Dialect;
use super::driver::{Driver, On};
use crate::backend::BackendError;
use crate::limit::{QuotaAccount, QuotaLease, QuotaLedger};

// $1 the tenant, $2 the period (`day`, `month`), $3 its start (Unix seconds); then $4 the
// limit and $5 the units wanted (LEASE), or $4 the units given back (GIVE_BACK). The grant is
// min(want, limit - used), written as CASE, which both engines read alike; SET expressions see
// the row as it was.
const LEASE: &str = "INSERT INTO keygate_quota_usage \
     (tenant_id, period, period_start, used, last_grant) \
     VALUES ($1, $2, $3, CASE WHEN $5 < $4 THEN $5 ELSE $4 END, \
     CASE WHEN $5 < $4 THEN $5 ELSE $4 END) \
     ON CONFLICT (tenant_id, period, period_start) DO UPDATE SET \
     last_grant = CASE WHEN $5 < $4 - keygate_quota_usage.used THEN $5 \
     ELSE $4 - keygate_quota_usage.used END, \
     used = keygate_quota_usage.used + CASE WHEN $5 < $4 - keygate_quota_usage.used THEN $5 \
     ELSE $4 - keygate_quota_usage.used END \
     WHERE keygate_quota_usage.used < $4 \
     RETURNING used, last_grant";

const GIVE_BACK: &str = "UPDATE keygate_quota_usage \
     SET used = CASE WHEN used > $4 THEN used - $4 ELSE 0 END \
     WHERE tenant_id = $1 AND period = $2 AND period_start = $3";

const USED: &str = "SELECT COALESCE((SELECT used FROM keygate_quota_usage \
     WHERE tenant_id = $1 AND period = $2 AND period_start = $3), 0)";

/// The account's key columns.
fn account_args(account: &QuotaAccount<'_>) -> Vec<Arg> {
    vec![
        Arg::Text(account.tenant_id.to_owned()),
        Arg::Text(account.period.as_str().to_owned()),
        Arg::Int(int(account.period_start)),
    ]
}

/// Counts are BIGINT: anything larger is as good as unlimited.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[async_trait]
impl<D: Dialect> QuotaLedger for SqlStore<D>
where
    D::Db: Driver,
{
    async fn lease(
        &self,
        account: &QuotaAccount<'_>,
        limit: u64,
        want: u64,
    ) -> Result<QuotaLease, BackendError> {
        let mut args = account_args(account);
        args.push(Arg::Int(int(limit)));
        args.push(Arg::Int(int(want)));
        self.dialect.check_write()?;
        let row = D::Db::fetch_int_pair(On::Pool(&self.pool), LEASE, args)
            .await
            .map_err(BackendError::backend)?;
        Ok(match row {
            Some((used, granted)) => QuotaLease {
                granted: count(granted),
                used: count(used),
            },
            // The row is at its limit: the update's condition left it alone.
            None => QuotaLease {
                granted: 0,
                used: limit,
            },
        })
    }

    async fn give_back(&self, account: &QuotaAccount<'_>, unused: u64) -> Result<(), BackendError> {
        if unused == 0 {
            return Ok(());
        }
        let mut args = account_args(account);
        args.push(Arg::Int(int(unused)));
        self.dialect.check_write()?;
        D::Db::execute(On::Pool(&self.pool), GIVE_BACK, args)
            .await
            .map_err(BackendError::backend)
    }

    async fn used(&self, account: &QuotaAccount<'_>) -> Result<u64, BackendError> {
        self.dialect.check_read()?;
        let used = D::Db::fetch_int(On::Pool(&self.pool), USED, account_args(account))
            .await
            .map_err(BackendError::backend)?;
        Ok(count(used))
    }
}
