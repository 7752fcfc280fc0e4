use std::sync::Arc;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{Statements, sql_store};
use crate::store::StoreError;

/// Keys in PostgreSQL, for services with several instances.
///
/// The schema is created by embedded migrations on connect. Writes that must see a consistent
/// tenant (the active-key cap, rotation) take a transaction-scoped advisory lock on the tenant.
///
/// ```no_run
/// use keygate::store::PostgresStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await.unwrap();
/// # let _ = store;
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    sql: Arc<Statements>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` and migrates.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(url)
            .await
            .map_err(StoreError::backend)?;
        Self::from_pool(pool).await
    }

    /// Uses an existing pool; runs the embedded migrations.
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(PostgresStore {
            pool,
            sql: Arc::new(Statements::new()),
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(
        &self,
        tenant_id: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(tenant_id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        Ok(tx)
    }

    // A server has no file to lose; a failing connection is an error of its own.
    fn file_ok(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn file_unchanged(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

sql_store!(PostgresStore, sqlx::Postgres);
