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

pub(crate) fn nanos(t: OffsetDateTime) -> i64 {
    // i64 nanoseconds reach the year 2262; clamp rather than wrap beyond.
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
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
/// `pool: sqlx::Pool<$db>` field and an `async fn begin_write(&self, tenant_id: &str)` that
/// opens a transaction serialised against other writes for that tenant.
macro_rules! sql_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// The number of key records, revoked and expired ones included.
            pub async fn count_keys(&self) -> Result<u64, $crate::store::StoreError> {
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
                use $crate::store::sql::{db_error, nanos, to_json};
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
                .bind(nanos(r.created_at))
                .bind(r.expires_at.map(nanos))
                .bind(r.revoked_at.map(nanos))
                .bind(r.last_used_at.map(nanos))
                .bind(to_json(&r.metadata)?)
                .bind(to_json(&r.restrictions)?)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
                Ok(())
            }

            async fn update_one(
                &self,
                sql: &str,
                tenant_id: &str,
                key_id: &str,
                set: Option<&str>,
                now: time::OffsetDateTime,
            ) -> Result<Option<$crate::store::KeyRecord>, $crate::store::StoreError> {
                let query = sqlx::query(sql).bind(tenant_id).bind(key_id).bind($crate::store::sql::nanos(now));
                let query = match set {
                    Some(s) => query.bind(s.to_owned()),
                    None => query,
                };
                let row = query.fetch_optional(&self.pool).await.map_err($crate::store::sql::db_error)?;
                row.as_ref().map(Self::record).transpose()
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::KeyStore for $store {
            async fn find(&self, digest: &$crate::hash::KeyDigest) -> $crate::store::Lookup {
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
                use sqlx::Row;
                let mut tx = self.begin_write(&record.tenant_id).await?;
                if let Some(max) = max_active {
                    let row = sqlx::query(concat!(
                        "SELECT COUNT(*) AS n FROM keygate_keys WHERE tenant_id = $1 AND ",
                        $crate::store::sql::active_at!(2)
                    ))
                    .bind(&record.tenant_id)
                    .bind($crate::store::sql::nanos(record.created_at))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err($crate::store::StoreError::backend)?;
                    let n: i64 = row.try_get("n").map_err($crate::store::StoreError::backend)?;
                    if n >= i64::try_from(max).unwrap_or(i64::MAX) {
                        return Err($crate::store::StoreError::ActiveKeyLimit(max));
                    }
                }
                Self::insert_in(&mut tx, &record).await?;
                tx.commit().await.map_err($crate::store::StoreError::backend)
            }

            async fn get(
                &self,
                tenant_id: &str,
                key_id: &str,
                now: time::OffsetDateTime,
            ) -> Result<Option<$crate::store::KeyRecord>, $crate::store::StoreError> {
                let row = sqlx::query(&self.sql.get)
                    .bind(tenant_id)
                    .bind(key_id)
                    .bind($crate::store::sql::nanos(now))
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
                let rows = sqlx::query(&self.sql.list)
                    .bind(tenant_id)
                    .bind($crate::store::sql::nanos(now))
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
                self.update_one(&self.sql.rename, tenant_id, key_id, Some(name), now).await
            }

            async fn revoke(
                &self,
                tenant_id: &str,
                key_id: &str,
                now: time::OffsetDateTime,
            ) -> Result<Option<$crate::store::KeyRecord>, $crate::store::StoreError> {
                self.update_one(&self.sql.revoke, tenant_id, key_id, None, now).await
            }

            async fn rotate(
                &self,
                tenant_id: &str,
                key_id: &str,
                replacement: $crate::store::KeyRecord,
                old_until: time::OffsetDateTime,
                now: time::OffsetDateTime,
            ) -> Result<Option<$crate::store::KeyRecord>, $crate::store::StoreError> {
                use $crate::store::sql::nanos;
                let mut tx = self.begin_write(tenant_id).await?;
                let row = sqlx::query(&self.sql.rotate)
                    .bind(tenant_id)
                    .bind(key_id)
                    .bind(nanos(now))
                    .bind(nanos(old_until))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err($crate::store::StoreError::backend)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let old = Self::record(&row)?;
                Self::insert_in(&mut tx, &replacement).await?;
                tx.commit().await.map_err($crate::store::StoreError::backend)?;
                Ok(Some(old))
            }

            async fn touch(&self, used: &[(String, time::OffsetDateTime)]) -> Result<(), $crate::store::StoreError> {
                if used.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await.map_err($crate::store::StoreError::backend)?;
                for (id, at) in used {
                    sqlx::query(
                        "UPDATE keygate_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                    )
                    .bind(id)
                    .bind($crate::store::sql::nanos(*at))
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::StoreError::backend)?;
                }
                tx.commit().await.map_err($crate::store::StoreError::backend)
            }
        }

        impl $store {
            /// Creates or replaces a tenant's status and plan.
            pub async fn set_tenant(
                &self,
                tenant_id: &str,
                entitlements: &$crate::entitle::TenantEntitlements,
            ) -> Result<(), $crate::store::StoreError> {
                let status = match entitlements.status {
                    $crate::entitle::TenantStatus::Active => "active",
                    $crate::entitle::TenantStatus::Suspended => "suspended",
                };
                sqlx::query(
                    "INSERT INTO keygate_tenants (id, status, plan) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, plan = excluded.plan",
                )
                .bind(tenant_id)
                .bind(status)
                .bind($crate::store::sql::to_json(&entitlements.plan)?)
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::backend)?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::entitle::EntitlementSource for $store {
            async fn entitlements(&self, tenant_id: &str) -> $crate::entitle::EntitlementLookup {
                use sqlx::Row;
                let row = sqlx::query("SELECT status, plan FROM keygate_tenants WHERE id = $1")
                    .bind(tenant_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::backend)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let status: String = row.try_get("status").map_err($crate::store::StoreError::backend)?;
                let status = match status.as_str() {
                    "active" => $crate::entitle::TenantStatus::Active,
                    "suspended" => $crate::entitle::TenantStatus::Suspended,
                    other => return Err($crate::store::StoreError::Conflict(format!("unknown tenant status {other}"))),
                };
                let plan: String = row.try_get("plan").map_err($crate::store::StoreError::backend)?;
                let plan = $crate::store::sql::from_json(&plan)?;
                Ok(Some(std::sync::Arc::new($crate::entitle::TenantEntitlements { status, plan })))
            }
        }

        #[async_trait::async_trait]
        impl $crate::audit::AuditSink for $store {
            async fn record(&self, event: &$crate::audit::AuditEvent) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO keygate_audit (at, actor, tenant_id, action, key_id, key_prefix) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind($crate::store::sql::nanos(event.at))
                .bind(&event.actor)
                .bind(&event.tenant_id)
                .bind(event.action.as_str())
                .bind(&event.key_id)
                .bind(&event.key_prefix)
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::backend)?;
                Ok(())
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
                "UPDATE keygate_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND {active3} RETURNING {COLUMNS}"
            ),
            rotate: format!(
                "UPDATE keygate_keys SET revoked_at = CASE WHEN revoked_at IS NULL OR revoked_at > $4 THEN $4 \
                 ELSE revoked_at END WHERE tenant_id = $1 AND id = $2 AND {active3} RETURNING {COLUMNS}"
            ),
        }
    }
}
