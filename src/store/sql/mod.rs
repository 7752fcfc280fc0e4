//! The SQL stores: keys, tenants' plans and the audit trail in SQLite or PostgreSQL.
//!
//! One implementation serves both engines. [`SqlStore`] is generic over its [`Dialect`], what
//! differs between them; [`SqliteStore`] (feature `sqlite`) and
//! [`PostgresStore`] (feature `postgres`) are its two forms, each
//! with its own constructors. Each store runs its embedded migrations when it opens.
//!
//! | file | what |
//! |---|---|
//! | `keys.rs` | the keys table: [`KeyStore`](crate::store::KeyStore) and [`ManagedKeyStore`](crate::store::ManagedKeyStore) |
//! | `tenants.rs` | the tenants table: `set_tenant` and [`EntitlementSource`](crate::plan::EntitlementSource) |
//! | `audit.rs` | the audit table: [`AuditSink`](crate::audit::AuditSink) |
//! | `quota.rs` | the quota usage table: [`QuotaLedger`](crate::limit::QuotaLedger), for [`LeasedQuotaLimiter`](crate::limit::LeasedQuotaLimiter) |
//! | `changes.rs` | the change notifications writes publish (PostgreSQL `NOTIFY`), for the key cache |
//! | `codec.rs` | rows and records: times, JSON, digests |
//! | `dialect.rs`, `sqlite.rs`, `postgres.rs` | what differs, and each engine's constructors |
//! | `driver.rs` | running a statement on any sqlx database |
//! | `migrations.rs` | the embedded migrations of each engine |

mod audit;
pub(crate) mod changes;
mod codec;
mod dialect;
mod driver;
mod keys;
mod migrations;
#[cfg(feature = "postgres")]
mod postgres;
mod quota;
#[cfg(feature = "sqlite")]
mod sqlite;
mod tenants;

pub use dialect::Dialect;
#[cfg(feature = "postgres")]
pub use postgres::{Postgres, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{Sqlite, SqliteStore};

use std::fmt;

use sqlx::{Pool, Transaction};

use crate::backend::BackendError;

/// A key store, entitlement source, audit sink and quota ledger on an SQL database; see
/// [`SqliteStore`] and [`PostgresStore`].
///
/// Cheap to clone: clones share the connection pool.
pub struct SqlStore<D: Dialect> {
    pool: Pool<D::Db>,
    dialect: D,
}

impl<D: Dialect> SqlStore<D> {
    fn new(pool: Pool<D::Db>, dialect: D) -> Self {
        SqlStore { pool, dialect }
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool<D::Db> {
        &self.pool
    }

    /// Publishes a change inside the write's transaction: delivered on commit only.
    async fn publish(
        &self,
        tx: &mut Transaction<'static, D::Db>,
        notice: changes::Notice,
    ) -> Result<(), BackendError> {
        self.dialect.publish(tx, notice.payload()).await
    }

    /// Commits a write, unless the backend is no longer the one opened.
    async fn commit(&self, tx: Transaction<'static, D::Db>) -> Result<(), BackendError> {
        self.dialect.check_write()?;
        tx.commit().await.map_err(BackendError::backend)
    }
}

// By hand: a derive would ask the sqlx database type to be `Clone` too.
impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            dialect: self.dialect.clone(),
        }
    }
}

impl<D: Dialect> fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(self.dialect.store_name())
            .finish_non_exhaustive()
    }
}
