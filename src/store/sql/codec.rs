//! Rows and records: how a [`KeyRecord`] and a tenant's entitlements are stored, and read back;
//! the values a statement binds.
//!
//! Times are signed 64-bit nanoseconds since the Unix epoch (UTC); scopes, metadata,
//! restrictions and plans are JSON text; a digest is its 32 raw bytes.

use time::OffsetDateTime;

use crate::backend::BackendError;
use crate::hash::KeyDigest;
use crate::plan::{Plan, TenantEntitlements, TenantStatus};
use crate::store::{KeyRecord, StoreError, check_time};

/// One bound parameter, in the order of the statement's `$n` placeholders.
pub(crate) enum Arg {
    Text(String),
    Bytes(Vec<u8>),
    Int(i64),
    OptInt(Option<i64>),
}

/// A row of `keygate_keys` as the database holds it.
pub(crate) struct KeyRow {
    id: String,
    tenant_id: String,
    name: String,
    digest: Vec<u8>,
    prefix: String,
    last4: String,
    scopes: String,
    environment: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    metadata: String,
    restrictions: String,
}

// Written out rather than derived: sqlx's derive macros would compile sqlx (and tokio, serde,
// time…) a second time for the host, about a third of a first build.
impl<'r, R> sqlx::FromRow<'r, R> for KeyRow
where
    R: sqlx::Row,
    &'r str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(KeyRow {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            name: row.try_get("name")?,
            digest: row.try_get("digest")?,
            prefix: row.try_get("prefix")?,
            last4: row.try_get("last4")?,
            scopes: row.try_get("scopes")?,
            environment: row.try_get("environment")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            last_used_at: row.try_get("last_used_at")?,
            metadata: row.try_get("metadata")?,
            restrictions: row.try_get("restrictions")?,
        })
    }
}

impl KeyRow {
    /// The record the row holds. A row that no keygate store could have written is an error.
    pub(super) fn into_record(self) -> Result<KeyRecord, StoreError> {
        let digest: [u8; 32] = self
            .digest
            .try_into()
            .map_err(|_| StoreError::Conflict("stored digest is not 32 bytes".into()))?;
        Ok(KeyRecord {
            id: self.id,
            tenant_id: self.tenant_id,
            name: self.name,
            digest: KeyDigest::from_bytes(digest),
            prefix: self.prefix,
            last4: self.last4,
            scopes: from_json(&self.scopes)?,
            environment: self.environment.parse().map_err(BackendError::backend)?,
            created_at: from_nanos(self.created_at)?,
            expires_at: self.expires_at.map(from_nanos).transpose()?,
            revoked_at: self.revoked_at.map(from_nanos).transpose()?,
            last_used_at: self.last_used_at.map(from_nanos).transpose()?,
            metadata: from_json(&self.metadata)?,
            restrictions: from_json(&self.restrictions)?,
        })
    }

    /// The record's values, in the order of the table's columns; a time no store keeps is
    /// refused.
    pub(super) fn args(r: &KeyRecord) -> Result<Vec<Arg>, StoreError> {
        Ok(vec![
            Arg::Text(r.id.clone()),
            Arg::Text(r.tenant_id.clone()),
            Arg::Text(r.name.clone()),
            Arg::Bytes(r.digest.as_bytes().to_vec()),
            Arg::Text(r.prefix.clone()),
            Arg::Text(r.last4.clone()),
            Arg::Text(to_json(&r.scopes)?),
            Arg::Text(r.environment.as_str().to_owned()),
            Arg::Int(nanos(r.created_at)?),
            Arg::OptInt(opt_nanos(r.expires_at)?),
            Arg::OptInt(opt_nanos(r.revoked_at)?),
            Arg::OptInt(opt_nanos(r.last_used_at)?),
            Arg::Text(to_json(&r.metadata)?),
            Arg::Text(to_json(&r.restrictions)?),
        ])
    }
}

/// A row of `keygate_tenants`.
pub(crate) struct TenantRow {
    status: String,
    plan: String,
}

impl<'r, R> sqlx::FromRow<'r, R> for TenantRow
where
    R: sqlx::Row,
    &'r str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(TenantRow {
            status: row.try_get("status")?,
            plan: row.try_get("plan")?,
        })
    }
}

impl TenantRow {
    /// The entitlements the row holds.
    pub(super) fn into_entitlements(self) -> Result<TenantEntitlements, BackendError> {
        let status = match self.status.as_str() {
            "active" => TenantStatus::Active,
            "suspended" => TenantStatus::Suspended,
            other => {
                return Err(BackendError::backend(std::io::Error::other(format!(
                    "unknown tenant status {other}"
                ))));
            }
        };
        Ok(TenantEntitlements {
            status,
            plan: from_json(&self.plan)?,
        })
    }

    /// The values of a tenant's row: its id, status and plan.
    pub(super) fn args(
        tenant_id: &str,
        entitlements: &TenantEntitlements,
    ) -> Result<Vec<Arg>, BackendError> {
        Ok(vec![
            Arg::Text(tenant_id.to_owned()),
            TenantRow::status_arg(entitlements.status),
            TenantRow::plan_arg(&entitlements.plan)?,
        ])
    }

    /// The status column's value.
    pub(super) fn status_arg(status: TenantStatus) -> Arg {
        let status = match status {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        };
        Arg::Text(status.to_owned())
    }

    /// The plan column's value: the plan as JSON.
    pub(super) fn plan_arg(plan: &Plan) -> Result<Arg, BackendError> {
        Ok(Arg::Text(to_json(plan)?))
    }
}

/// `t` as stored: i64 nanoseconds since the epoch. A time outside [`MIN_TIME`] ..= [`MAX_TIME`]
/// (which i64 nanoseconds cover) is refused, never clamped.
///
/// [`MIN_TIME`]: crate::store::MIN_TIME
/// [`MAX_TIME`]: crate::store::MAX_TIME
pub(super) fn nanos(t: OffsetDateTime) -> Result<i64, StoreError> {
    let t = check_time(t)?;
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| StoreError::TimeOutOfRange(t))
}

/// An optional time as stored.
pub(super) fn opt_nanos(t: Option<OffsetDateTime>) -> Result<Option<i64>, StoreError> {
    t.map(nanos).transpose()
}

fn from_nanos(n: i64) -> Result<OffsetDateTime, BackendError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).map_err(BackendError::backend)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, BackendError> {
    serde_json::to_string(value).map_err(BackendError::backend)
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, BackendError> {
    serde_json::from_str(text).map_err(BackendError::backend)
}

/// A failed statement: a unique index refusing a duplicate id or digest is a conflict, anything
/// else a backend failure.
pub(super) fn write_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict("key id or digest exists".into())
        }
        _ => StoreError::backend(e),
    }
}
