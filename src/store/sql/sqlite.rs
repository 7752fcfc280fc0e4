use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::{Statements, sql_store};
use crate::store::StoreError;

/// Keys in SQLite: embedded, durable, no server. The quickstart's store.
///
/// The schema is created by embedded migrations on open. Writes run in `BEGIN IMMEDIATE`
/// transactions, so concurrent issues, rotations and revocations serialise cleanly, also across
/// processes sharing the file.
///
/// ```
/// use keygate::store::SqliteStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = SqliteStore::in_memory().await.unwrap();
/// # let _ = store;
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    sql: Arc<Statements>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`, in WAL mode, and migrates it.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(StoreError::backend)?;
        Self::from_pool(pool).await
    }

    /// Connects with an sqlx SQLite URL, e.g. `sqlite://keys.db?mode=rwc`, and migrates.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::backend)?
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePool::connect_with(options)
            .await
            .map_err(StoreError::backend)?;
        Self::from_pool(pool).await
    }

    /// A private in-memory database, for tests: one connection that lives as long as the store.
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options =
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(StoreError::backend)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(StoreError::backend)?;
        Self::from_pool(pool).await
    }

    /// Uses an existing pool; runs the embedded migrations.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(SqliteStore {
            pool,
            sql: Arc::new(Statements::new()),
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn begin_write(
        &self,
        _tenant_id: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::backend)
    }
}

sql_store!(SqliteStore, sqlx::Sqlite);
