use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
};
use sqlx::{ConnectOptions, Connection, Pool, Transaction};

use super::SqlStore;
use super::dialect::{Dialect, sealed};
use crate::backend::BackendError;
use crate::store::StoreError;

/// Keys in SQLite: embedded, durable, no server. The quickstart's store.
///
/// The schema is created by embedded migrations on open. Writes run in `BEGIN IMMEDIATE`
/// transactions, so concurrent issues, rotations and revocations serialise cleanly, also across
/// processes sharing the file.
///
/// # The database file
/// [`open`](SqliteStore::open) creates the file if it is missing, once; the connections it
/// serves from never create it. If the file is deleted or replaced while the store runs, the
/// store fails closed: every call answers an error (the request path 503), nothing is written to
/// the deleted file and no empty database appears at its path. Writes check the file when they
/// start and again before they commit; lookups check it at most once per second, so one may
/// still be answered from the deleted file's last state within that second. Reopen the store to
/// serve again.
///
/// ```
/// use keygate::store::SqliteStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = SqliteStore::in_memory().await.unwrap();
/// # let _ = store;
/// # }
/// ```
pub type SqliteStore = SqlStore<Sqlite>;

/// The SQLite [`Dialect`]: writes take the database's write lock when they begin
/// (`BEGIN IMMEDIATE`), and every call first checks that the database file is still the one
/// the store opened.
#[derive(Clone, Debug)]
pub struct Sqlite {
    /// The database file, when there is one (not for in-memory databases).
    file: Option<Arc<FileGuard>>,
}

impl sealed::Sealed for Sqlite {}

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;

    fn store_name(&self) -> &'static str {
        "SqliteStore"
    }

    async fn begin_write(
        &self,
        pool: &Pool<sqlx::Sqlite>,
        _tenant_id: &str,
    ) -> Result<Transaction<'static, sqlx::Sqlite>, BackendError> {
        pool.begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(BackendError::backend)
    }

    /// SQLite has no channel between processes: caches in other processes see a change when
    /// their TTL ends.
    async fn publish(
        &self,
        _tx: &mut Transaction<'static, sqlx::Sqlite>,
        _payload: String,
    ) -> Result<(), BackendError> {
        Ok(())
    }

    /// Cheap enough for every call: see [`FileGuard::check_lookup`].
    fn check_read(&self) -> Result<(), BackendError> {
        self.file.as_deref().map_or(Ok(()), FileGuard::check_lookup)
    }

    /// See [`FileGuard::check`].
    fn check_write(&self) -> Result<(), BackendError> {
        self.file.as_deref().map_or(Ok(()), FileGuard::check)
    }
}

impl SqlStore<Sqlite> {
    /// Opens (creating if missing) the database file at `path`, in WAL mode, and migrates it.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        SqliteStore::open_with(options, SqlitePoolOptions::new().max_connections(4)).await
    }

    /// Connects with an sqlx SQLite URL, e.g. `sqlite://keys.db`, and migrates.
    ///
    /// The file is created if missing, as by [`open`](SqliteStore::open), unless the URL sets
    /// a `mode` (`?mode=ro`, `?mode=rw`: sqlx's meaning). As with `open`, only the first
    /// connection may create the file.
    pub async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        let mut options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::backend)?
            .busy_timeout(Duration::from_secs(5));
        let query = url.split_once('?').map_or("", |(_, query)| query);
        if !query.split('&').any(|pair| pair.starts_with("mode=")) {
            options = options.create_if_missing(true);
        }
        SqliteStore::open_with(options, SqlitePoolOptions::new()).await
    }

    /// A private in-memory database, for tests: one connection that lives as long as the store.
    pub async fn in_memory() -> Result<SqliteStore, StoreError> {
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
        SqliteStore::from_pool(pool).await
    }

    /// Uses an existing pool; runs the embedded migrations.
    ///
    /// The store watches the database file the pool has open as [`open`](SqliteStore::open)
    /// does, but whether the pool's new connections may create a missing file is up to its
    /// options.
    pub async fn from_pool(pool: SqlitePool) -> Result<SqliteStore, StoreError> {
        super::migrations::sqlite()
            .run(&pool)
            .await
            .map_err(StoreError::backend)?;
        let mut conn = pool.acquire().await.map_err(StoreError::backend)?;
        let file = FileGuard::of(&mut conn).await?;
        drop(conn);
        Ok(SqlStore::new(pool, Sqlite { file }))
    }

    /// Opens the store, tried again when opening raced another process's on the same file
    /// (instances starting at once on a new file). sqlx's migration lock does nothing on
    /// SQLite: two processes may both find a migration not applied yet, and the second to
    /// apply it fails ("table … already exists"); turning a new file to WAL, or a read into a
    /// write, can meet the other's lock ("database is locked") without waiting. Each attempt
    /// reads again what is applied, so once the other has committed the next attempt finds the
    /// migrations done; a real failure fails every attempt and is returned.
    async fn open_with(
        options: SqliteConnectOptions,
        pool: SqlitePoolOptions,
    ) -> Result<SqliteStore, StoreError> {
        const ATTEMPTS: u32 = 8;
        let mut attempt = 1;
        loop {
            match Self::open_once(options.clone(), pool.clone()).await {
                Err(error) if attempt < ATTEMPTS => {
                    tracing::debug!(target: "keygate", %error, attempt, "opening the SQLite store failed, perhaps racing another process; trying again");
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    async fn open_once(
        options: SqliteConnectOptions,
        pool: SqlitePoolOptions,
    ) -> Result<SqliteStore, StoreError> {
        // The one connection that may create the file: it creates and migrates it.
        let mut first = options.connect().await.map_err(StoreError::backend)?;
        super::migrations::sqlite()
            .run_direct(&mut first)
            .await
            .map_err(StoreError::backend)?;
        let file = FileGuard::of(&mut first).await?;
        // Every other connection must find the file in place: a deleted database is refused,
        // never silently recreated empty.
        let pool = pool
            .connect_with(options.create_if_missing(false))
            .await
            .map_err(StoreError::backend)?;
        // Closed only now, so that a shared in-memory database lives on in the pool.
        first.close().await.map_err(StoreError::backend)?;
        Ok(SqlStore::new(pool, Sqlite { file }))
    }
}

/// How long a lookup may go without checking the database file.
///
/// Lookups are the request path: a `stat` per request would be a system call on every request,
/// for an event (the file deleted under a running service) that is rare and whose reads are still
/// the last consistent state. Writes, which could be lost, check every time.
const LOOKUP_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The database file a store opened, and whether it is still the file at its path.
///
/// A connection keeps the file it opened: if the file is deleted, writes through it go on
/// "succeeding" into a file nobody will ever open again, while new connections would find
/// nothing (or another file) at the path.
#[derive(Debug)]
struct FileGuard {
    path: PathBuf,
    id: FileId,
    opened: Instant,
    /// When the file was last checked, in milliseconds after `opened`.
    checked_ms: AtomicU64,
    /// Sticky: once gone, the store refuses everything.
    gone: AtomicBool,
}

impl FileGuard {
    /// The main database file `conn` has open; `None` for an in-memory database.
    async fn of(conn: &mut SqliteConnection) -> Result<Option<Arc<Self>>, StoreError> {
        let path: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&mut *conn)
                .await
                .map_err(StoreError::backend)?;
        if path.is_empty() {
            return Ok(None);
        }
        let path = PathBuf::from(path);
        let id = file_id(&path).map_err(StoreError::backend)?;
        Ok(Some(Arc::new(FileGuard {
            path,
            id,
            opened: Instant::now(),
            checked_ms: AtomicU64::new(0),
            gone: AtomicBool::new(false),
        })))
    }

    /// Checks the file unless it was checked less than [`LOOKUP_CHECK_INTERVAL`] ago.
    fn check_lookup(&self) -> Result<(), BackendError> {
        if self.gone.load(Ordering::Relaxed) {
            return Err(gone());
        }
        let now = self.elapsed_ms();
        let last = self.checked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < LOOKUP_CHECK_INTERVAL.as_millis() as u64 {
            return Ok(());
        }
        // One caller checks; the others go on as they did a moment ago.
        match self
            .checked_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => self.check(),
            Err(_) => Ok(()),
        }
    }

    /// Checks now that the file at the path is the one opened.
    fn check(&self) -> Result<(), BackendError> {
        if self.gone.load(Ordering::Relaxed) {
            return Err(gone());
        }
        match file_id(&self.path) {
            Ok(id) if id == self.id => {
                self.checked_ms.store(self.elapsed_ms(), Ordering::Relaxed);
                Ok(())
            }
            Ok(_) => self.mark_gone("replaced"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.mark_gone("deleted"),
            // Not proof that the file is gone: refuse this call only.
            Err(e) => Err(BackendError::backend(e)),
        }
    }

    fn mark_gone(&self, what: &str) -> Result<(), BackendError> {
        if !self.gone.swap(true, Ordering::Relaxed) {
            tracing::error!(
                target: "keygate",
                path = %self.path.display(),
                "the SQLite database file was {what} while the store had it open; \
                 refusing every call until the store is reopened"
            );
        }
        Err(gone())
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn gone() -> BackendError {
    BackendError::backend(io::Error::new(
        io::ErrorKind::NotFound,
        "the SQLite database file was deleted or replaced while open",
    ))
}

/// Device and inode: a file put at the same path, e.g. a restored copy, is a different file.
#[cfg(unix)]
type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(path: &Path) -> io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Elsewhere only existence: Windows refuses to delete or replace a file SQLite holds open.
#[cfg(not(unix))]
type FileId = ();

#[cfg(not(unix))]
fn file_id(path: &Path) -> io::Result<FileId> {
    std::fs::metadata(path).map(|_| ())
}
