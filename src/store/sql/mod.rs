//! The SQL stores. SQLite and PostgreSQL share one implementation, written once as a macro
//! over the sqlx driver: the statements are the same (`$n` placeholders work in both), only
//! the way a write transaction is serialised differs.

use time::OffsetDateTime;

use super::StoreError;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

pub(crate) const COLUMNS: &str = "id, tenant_id, name, digest, prefix, last4, scopes, environment, \
     created_at, expires_at, revoked_at, last_used_at, metadata, restrictions";

/// `$n` is the "now" parameter.
macro_rules! active_at {
    ($n:literal) => {
        concat!(
            "(revoked_at IS NULL OR revoked_at > $",
            $n,
            ") AND (expires_at IS NULL OR expires_at > $",
            $n,
            ")"
        )
    };
}
pub(crate) use active_at;

/// `t` as stored: i64 nanoseconds since the epoch. A time outside [`MIN_TIME`] ..= [`MAX_TIME`]
/// (which i64 nanoseconds cover) is refused, never clamped.
///
/// [`MIN_TIME`]: crate::store::MIN_TIME
/// [`MAX_TIME`]: crate::store::MAX_TIME
pub(crate) fn nanos(t: OffsetDateTime) -> Result<i64, StoreError> {
    let t = super::check_time(t)?;
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| StoreError::TimeOutOfRange(t))
}

/// Each optional time of a record as stored.
pub(crate) fn opt_nanos(t: Option<OffsetDateTime>) -> Result<Option<i64>, StoreError> {
    t.map(nanos).transpose()
}

/// What an update of one key sets.
pub(crate) enum Set<'a> {
    Name(&'a str),
    RevokedAt(i64),
}

pub(crate) fn from_nanos(n: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).map_err(StoreError::backend)
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(StoreError::backend)
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(StoreError::backend)
}

pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict("key id or digest exists".into())
        }
        _ => StoreError::backend(e),
    }
}

/// Implements `KeyStore`, `ManagedKeyStore` and `AuditSink` for a store type with a
/// `pool: sqlx::Pool<$db>` field, an `async fn begin_write(&self, tenant_id: &str)` that
/// opens a transaction serialised against other writes for that tenant, and two checks that the
/// backend is still the one opened: `fn file_ok(&self)`, cheap enough for every read, and
/// `fn file_unchanged(&self)`, run when a write starts and again before it commits.
macro_rules! sql_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// The number of key records, revoked and expired ones included.
            pub async fn count_keys(&self) -> Result<u64, $crate::store::StoreError> {
                self.file_ok()?;
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keygate_keys")
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::backend)?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            fn record(row: &<$db as sqlx::Database>::Row) -> Result<$crate::store::KeyRecord, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::sql::{from_json, from_nanos};
                let get = |e: sqlx::Error| $crate::store::StoreError::backend(e);
                let digest: Vec<u8> = row.try_get("digest").map_err(get)?;
                let digest: [u8; 32] = digest
                    .try_into()
                    .map_err(|_| $crate::store::StoreError::Conflict("stored digest is not 32 bytes".into()))?;
                let environment: String = row.try_get("environment").map_err(get)?;
                let opt = |col: &str| -> Result<Option<time::OffsetDateTime>, $crate::store::StoreError> {
                    let v: Option<i64> = row.try_get(col).map_err(get)?;
                    v.map(from_nanos).transpose()
                };
                Ok($crate::store::KeyRecord {
                    id: row.try_get("id").map_err(get)?,
                    tenant_id: row.try_get("tenant_id").map_err(get)?,
                    name: row.try_get("name").map_err(get)?,
                    digest: $crate::hash::KeyDigest::from_bytes(digest),
                    prefix: row.try_get("prefix").map_err(get)?,
                    last4: row.try_get("last4").map_err(get)?,
                    scopes: from_json(&row.try_get::<String, _>("scopes").map_err(get)?)?,
                    environment: environment.parse().map_err($crate::store::StoreError::backend)?,
                    created_at: from_nanos(row.try_get("created_at").map_err(get)?)?,
                    expires_at: opt("expires_at")?,
                    revoked_at: opt("revoked_at")?,
                    last_used_at: opt("last_used_at")?,
                    metadata: from_json(&row.try_get::<String, _>("metadata").map_err(get)?)?,
                    restrictions: from_json(&row.try_get::<String, _>("restrictions").map_err(get)?)?,
                })
            }

            async fn insert_in<'c>(
                tx: &mut sqlx::Transaction<'c, $db>,
                r: &$crate::store::KeyRecord,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::sql::{db_error, nanos, opt_nanos, to_json};
                sqlx::query(concat!(
                    "INSERT INTO keygate_keys (id, tenant_id, name, digest, prefix, last4, scopes, environment, ",
                    "created_at, expires_at, revoked_at, last_used_at, metadata, restrictions) ",
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                ))
                .bind(&r.id)
                .bind(&r.tenant_id)
                .bind(&r.name)
                .bind(r.digest.as_bytes().to_vec())
                .bind(&r.prefix)
                .bind(&r.last4)
                .bind(to_json(&r.scopes)?)
                .bind(r.environment.as_str())
                .bind(nanos(r.created_at)?)
                .bind(opt_nanos(r.expires_at)?)
                .bind(opt_nanos(r.revoked_at)?)
                .bind(opt_nanos(r.last_used_at)?)
                .bind(to_json(&r.metadata)?)
                .bind(to_json(&r.restrictions)?)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
                Ok(())
            }

            /// Refuses with `ActiveKeyLimit(max)` when the tenant has `max` keys active at `at`.
            async fn check_cap<'c>(
                tx: &mut sqlx::Transaction<'c, $db>,
                tenant_id: &str,
                at: i64,
                max: usize,
            ) -> Result<(), $crate::store::StoreError> {
                use sqlx::Row;
                let row = sqlx::query(concat!(
                    "SELECT COUNT(*) AS n FROM keygate_keys WHERE tenant_id = $1 AND ",
                    $crate::store::sql::active_at!(2)
                ))
                .bind(tenant_id)
                .bind(at)
                .fetch_one(&mut **tx)
                .await
                .map_err($crate::store::StoreError::backend)?;
                let n: i64 = row.try_get("n").map_err($crate::store::StoreError::backend)?;
                if n >= i64::try_from(max).unwrap_or(i64::MAX) {
                    return Err($crate::store::StoreError::ActiveKeyLimit(max));
                }
                Ok(())
            }

            /// Commits a write, unless the backend is no longer the one opened.
            async fn commit(
                &self,
                tx: sqlx::Transaction<'_, $db>,
            ) -> Result<(), $crate::store::StoreError> {
                self.file_unchanged()?;
                tx.commit().await.map_err($crate::store::StoreError::backend)
            }

            /// Runs `sql` (`$1` tenant, `$2` key id, `$3` the time the key must be active at,
            /// `$4` the value set) on one key, in a serialised transaction.
            async fn update_one(
                &self,
                sql: &str,
                tenant_id: &str,
                key_id: &str,
                set: $crate::store::sql::Set<'_>,
                now: time::OffsetDateTime,
            ) -> Result<Option<$crate::store::KeyRecord>, $crate::store::StoreError> {
                use $crate::store::sql::{Set, db_error, nanos};
                nanos(now)?;
                self.file_unchanged()?;
                let mut tx = self.begin_write(tenant_id).await?;
                let at = nanos($crate::store::judged_at(now))?;
                let query = sqlx::query(sql).bind(tenant_id).bind(key_id).bind(at);
                let query = match set {
                    Set::Name(name) => query.bind(name.to_owned()),
                    Set::RevokedAt(t) => query.bind(t),
                };
                let row = query.fetch_optional(&mut *tx).await.map_err(db_error)?;
                let record = row.as_ref().map(Self::record).transpose()?;
                if record.is_some() {
                    self.commit(tx).await?;
                }
                Ok(record)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::KeyStore for $store {
            async fn find(&self, digest: &$crate::hash::KeyDigest) -> $crate::store::Lookup {
                self.file_ok()?;
                let row = sqlx::query(&self.sql.find)
                    .bind(digest.as_bytes().to_vec())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::backend)?;
                let record = row.as_ref().map(Self::record).transpose()?;
                // Equality of the index is not enough: compare the whole digest in constant time.
                Ok(record.filter(|r| r.digest == *digest).map(std::sync::Arc::new))
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ManagedKeyStore for $store {
            async fn insert(
                &self,
                record: $crate::store::KeyRecord,
                max_active: Option<usize>,
            ) -> Result<(), $crate::store::StoreError> {
                $crate::store::check_record_times(&record)?;
                self.file_unchanged()?;
                let mut tx = self.begin_write(&record.tenant_id).await?;
                if let Some(max) = max_active {
                    let at = $crate::store::sql::nanos(record.created_at)?;
                    Self::check_cap(&mut tx, &record.tenant_id, at, max).await?;
                }
                Self::insert_in(&mut tx, &record).await?;
                self.commit(tx).await
            }

            async fn get(
                &self,
                tenant_id: &str,
                key_id: &str,
                now: time::OffsetDateTime,
            ) -> Result<Option<$crate::store::KeyRecord>, $crate::store::StoreError> {
                let now = $crate::store::sql::nanos(now)?;
                self.file_ok()?;
                let row = sqlx::query(&self.sql.get)
                    .bind(tenant_id)
                    .bind(key_id)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::backend)?;
                row.as_ref().map(Self::record).transpose()
            }

            async fn list(
                &self,
                tenant_id: &str,
                now: time::OffsetDateTime,
            ) -> Result<Vec<$crate::store::KeyRecord>, $crate::store::StoreError> {
                let now = $crate::store::sql::nanos(now)?;
                self.file_ok()?;
                let rows = sqlx::query(&self.sql.list)
                    .bind(tenant_id)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::backend)?;
                rows.iter().map(Self::record).collect()
            }

            async fn rename(
                &self,
                tenant_id: &str,
                key_id: &str,
                name: &str,
                now: time::OffsetDateTime,
            ) -> Result<Option<$crate::store::KeyRecord>, $crate::store::StoreError> {
                self.update_one(&self.sql.rename, tenant_id, key_id, $crate::store::sql::Set::Name(name), now)
                    .await
            }

            async fn revoke(
                &self,
                tenant_id: &str,
                key_id: &str,
                now: time::OffsetDateTime,
            ) -> Result<Option<$crate::store::KeyRecord>, $crate::store::StoreError> {
                let at = $crate::store::sql::nanos(now)?;
                self.update_one(&self.sql.revoke, tenant_id, key_id, $crate::store::sql::Set::RevokedAt(at), now)
                    .await
            }

            async fn rotate(
                &self,
                tenant_id: &str,
                key_id: &str,
                replacement: $crate::store::KeyRecord,
                old_until: time::OffsetDateTime,
                now: time::OffsetDateTime,
                max_active: Option<usize>,
            ) -> Result<Option<$crate::store::KeyRecord>, $crate::store::StoreError> {
                use $crate::store::sql::nanos;
                use $crate::store::StoreError;
                $crate::store::check_record_times(&replacement)?;
                let until = nanos(old_until)?;
                nanos(now)?;
                self.file_unchanged()?;
                let mut tx = self.begin_write(tenant_id).await?;
                // Judged inside the serialised transaction: a revocation or rotation that
                // committed first is seen, whatever the caller's clock said.
                let at = $crate::store::judged_at(now);
                let at_nanos = nanos(at)?;
                let row = sqlx::query(&self.sql.rotate)
                    .bind(tenant_id)
                    .bind(key_id)
                    .bind(at_nanos)
                    .bind(until)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::backend)?;
                let Some(row) = row else {
                    // Nothing changed: tell a key in its grace period from a missing one.
                    let in_grace: Option<String> = sqlx::query_scalar(&self.sql.get_id)
                        .bind(tenant_id)
                        .bind(key_id)
                        .bind(at_nanos)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(StoreError::backend)?;
                    return match in_grace {
                        Some(_) => Err(StoreError::AlreadyRotated),
                        None => Ok(None),
                    };
                };
                let old = Self::record(&row)?;
                // With grace the old key stays active beside its successor (it is counted,
                // being active until `until`); without, the count does not grow.
                if let Some(max) = max_active.filter(|_| old_until > at) {
                    Self::check_cap(&mut tx, tenant_id, at_nanos, max).await?;
                }
                Self::insert_in(&mut tx, &replacement).await?;
                self.commit(tx).await?;
                Ok(Some(old))
            }

            async fn touch(&self, used: &[(String, time::OffsetDateTime)]) -> Result<(), $crate::store::StoreError> {
                if used.is_empty() {
                    return Ok(());
                }
                // The whole batch or nothing.
                let used = used
                    .iter()
                    .map(|(id, at)| Ok((id, $crate::store::sql::nanos(*at)?)))
                    .collect::<Result<Vec<_>, $crate::store::StoreError>>()?;
                self.file_unchanged()?;
                let mut tx = self.pool.begin().await.map_err($crate::store::StoreError::backend)?;
                for (id, at) in used {
                    sqlx::query(
                        "UPDATE keygate_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                    )
                    .bind(id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::StoreError::backend)?;
                }
                self.commit(tx).await
            }
        }

        impl $store {
            /// Creates or replaces a tenant's status and plan.
            pub async fn set_tenant(
                &self,
                tenant_id: &str,
                entitlements: &$crate::plan::TenantEntitlements,
            ) -> Result<(), $crate::store::StoreError> {
                let status = match entitlements.status {
                    $crate::plan::TenantStatus::Active => "active",
                    $crate::plan::TenantStatus::Suspended => "suspended",
                };
                self.file_unchanged()?;
                let mut tx = self.pool.begin().await.map_err($crate::store::StoreError::backend)?;
                sqlx::query(
                    "INSERT INTO keygate_tenants (id, status, plan) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, plan = excluded.plan",
                )
                .bind(tenant_id)
                .bind(status)
                .bind($crate::store::sql::to_json(&entitlements.plan)?)
                .execute(&mut *tx)
                .await
                .map_err($crate::store::StoreError::backend)?;
                self.commit(tx).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::plan::EntitlementSource for $store {
            async fn entitlements(&self, tenant_id: &str) -> $crate::plan::EntitlementLookup {
                use sqlx::Row;
                self.file_ok().map_err($crate::backend::BackendError::backend)?;
                let row = sqlx::query("SELECT status, plan FROM keygate_tenants WHERE id = $1")
                    .bind(tenant_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::backend::BackendError::backend)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let status: String = row.try_get("status").map_err($crate::backend::BackendError::backend)?;
                let status = match status.as_str() {
                    "active" => $crate::plan::TenantStatus::Active,
                    "suspended" => $crate::plan::TenantStatus::Suspended,
                    other => return Err($crate::backend::BackendError::backend(std::io::Error::other(format!("unknown tenant status {other}")))),
                };
                let plan: String = row.try_get("plan").map_err($crate::backend::BackendError::backend)?;
                let plan = $crate::store::sql::from_json(&plan).map_err($crate::backend::BackendError::backend)?;
                Ok(Some(std::sync::Arc::new($crate::plan::TenantEntitlements { status, plan })))
            }
        }

        #[async_trait::async_trait]
        impl $crate::audit::AuditSink for $store {
            async fn record(&self, event: &$crate::audit::AuditEvent) -> Result<(), $crate::backend::BackendError> {
                let at = $crate::store::sql::nanos(event.at).map_err($crate::backend::BackendError::backend)?;
                self.file_unchanged().map_err($crate::backend::BackendError::backend)?;
                let mut tx = self.pool.begin().await.map_err($crate::backend::BackendError::backend)?;
                sqlx::query(
                    "INSERT INTO keygate_audit (at, actor, tenant_id, action, key_id, key_prefix) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(at)
                .bind(&event.actor)
                .bind(&event.tenant_id)
                .bind(event.action.as_str())
                .bind(&event.key_id)
                .bind(&event.key_prefix)
                .execute(&mut *tx)
                .await
                .map_err($crate::backend::BackendError::backend)?;
                self.commit(tx).await.map_err($crate::backend::BackendError::backend)
            }
        }
    };
}
pub(crate) use sql_store;

/// The statements, built once per store.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) find: String,
    pub(crate) get: String,
    pub(crate) list: String,
    pub(crate) rename: String,
    pub(crate) revoke: String,
    pub(crate) rotate: String,
    pub(crate) get_id: String,
}

impl Statements {
    pub(crate) fn new() -> Self {
        let active3 = active_at!(3);
        Statements {
            find: format!("SELECT {COLUMNS} FROM keygate_keys WHERE digest = $1"),
            get: format!(
                "SELECT {COLUMNS} FROM keygate_keys WHERE tenant_id = $1 AND id = $2 AND {active3}"
            ),
            list: format!(
                "SELECT {COLUMNS} FROM keygate_keys WHERE tenant_id = $1 AND {} ORDER BY created_at, id",
                active_at!(2)
            ),
            rename: format!(
                "UPDATE keygate_keys SET name = $4 WHERE tenant_id = $1 AND id = $2 AND {active3} RETURNING {COLUMNS}"
            ),
            revoke: format!(
                "UPDATE keygate_keys SET revoked_at = $4 WHERE tenant_id = $1 AND id = $2 AND {active3} RETURNING {COLUMNS}"
            ),
            // Only a key with no revocation time at all: a key in its grace period has already
            // been replaced.
            rotate: format!(
                "UPDATE keygate_keys SET revoked_at = $4 WHERE tenant_id = $1 AND id = $2 \
                 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3) RETURNING {COLUMNS}"
            ),
            get_id: format!(
                "SELECT id FROM keygate_keys WHERE tenant_id = $1 AND id = $2 AND {active3}"
            ),
        }
    }
}
