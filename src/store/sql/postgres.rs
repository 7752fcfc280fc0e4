use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Pool, Transaction};

use super::SqlStore;
use super::dialect::{Dialect, sealed};
use crate::backend::BackendError;
use crate::store::StoreError;

/// Keys in PostgreSQL, for services with several instances.
///
/// The schema is created by embedded migrations on connect. Writes that must see a consistent
/// tenant (the active-key cap, rotation) take a transaction-scoped advisory lock on the tenant.
///
/// Every write that changes what the request path reads (a key issued, renamed, revoked or
/// rotated; a tenant set) publishes the change on the notification channel `keygate_changes`
/// inside its transaction, so it is delivered on commit only. A
/// [`ChangeListener`](crate::cache::ChangeListener) hands those changes to the caches of every
/// instance.
///
/// ```no_run
/// use keygate::store::PostgresStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await.unwrap();
/// # let _ = store;
/// # }
/// ```
pub type PostgresStore = SqlStore<Postgres>;

/// The PostgreSQL [`Dialect`]: writes to a tenant's keys take a transaction-scoped advisory
/// lock on the tenant. A server has no file to lose; a failing connection is an error of its
/// own, so there is nothing to check before a call.
#[derive(Clone, Copy, Debug)]
pub struct Postgres;

impl sealed::Sealed for Postgres {}

impl Dialect for Postgres {
    type Db = sqlx::Postgres;

    fn store_name(&self) -> &'static str {
        "PostgresStore"
    }

    async fn begin_write(
        &self,
        pool: &Pool<sqlx::Postgres>,
        tenant_id: &str,
    ) -> Result<Transaction<'static, sqlx::Postgres>, BackendError> {
        let mut tx = pool.begin().await.map_err(BackendError::backend)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(tenant_id)
            .execute(&mut *tx)
            .await
            .map_err(BackendError::backend)?;
        Ok(tx)
    }

    async fn publish(
        &self,
        tx: &mut Transaction<'static, sqlx::Postgres>,
        payload: String,
    ) -> Result<(), BackendError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(super::changes::CHANNEL)
            .bind(payload)
            .execute(&mut **tx)
            .await
            .map(drop)
            .map_err(BackendError::backend)
    }

    fn check_read(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn check_write(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

impl SqlStore<Postgres> {
    /// Connects to `url` and migrates.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(url)
            .await
            .map_err(StoreError::backend)?;
        PostgresStore::from_pool(pool).await
    }

    /// Uses an existing pool; runs the embedded migrations.
    pub async fn from_pool(pool: PgPool) -> Result<PostgresStore, StoreError> {
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(SqlStore::new(pool, Postgres))
    }
}
