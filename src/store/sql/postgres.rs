use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Pool, Transaction};

use super::SqlStore;
use super::dialect::{Dialect, sealed};
use crate::backend::BackendError;
use crate::store::StoreError;

/// Keys in PostgreSQL, for services with several instances.
///
/// The schema is created by embedded migrations on connect ([`connect`](PostgresStore::connect),
/// [`from_pool`](PostgresStore::from_pool)); [`from_pool_unmigrated`](PostgresStore::from_pool_unmigrated)
/// opts out. Writes that must see a consistent
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
    /// Connects to `url` and runs the embedded migrations.
    ///
    /// The pool holds at most 10 connections, opened on demand; waiting for a free one gives up
    /// after 5 s. On the request path the verifier's
    /// [`store_timeout`](crate::verify::VerifierBuilder::store_timeout) (2 s by default) bounds
    /// every call first, so a saturated pool refuses requests with 503 rather than queueing
    /// them. The server's `NOTICE` messages are not sent to these connections
    /// (`client_min_messages = warning`): PostgreSQL answers an `IF NOT EXISTS` that finds its
    /// table with one, which would be logged at `INFO` on every start. For other settings,
    /// build the pool yourself and pass it to [`from_pool`](PostgresStore::from_pool).
    ///
    /// A URL parameter sqlx does not read is refused ([`StoreError::Backend`], naming the
    /// parameter, never its value): sqlx would log it with its value and go on without it, and
    /// a mistyped `password` would put a password in the logs. A server that refuses the
    /// connection is tried again until the 5 s are up (it may be starting), then the error names
    /// what the last attempt met (e.g. `Connection refused`), not only the pool's timeout.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        // Parsed once, as sqlx parses it (its error, which quotes nothing, for a text that is no
        // URL), then checked and read.
        let url = url::Url::parse(url)
            .map_err(|e| StoreError::backend(sqlx::Error::Configuration(e.into())))?;
        check_url_parameters(&url)?;
        let options = PgConnectOptions::from_url(&url)
            .map_err(StoreError::backend)?
            .options([("client_min_messages", "warning")]);
        let pool = match connect_pool(&options).await {
            Err(sqlx::Error::PoolTimedOut) => match why_not_connected(&options).await {
                Some(error) => return Err(error),
                // The server answers now: it was starting.
                None => connect_pool(&options).await,
            },
            connected => connected,
        };
        PostgresStore::from_pool(pool.map_err(StoreError::backend)?).await
    }

    /// Uses an existing pool; runs the embedded migrations.
    pub async fn from_pool(pool: PgPool) -> Result<PostgresStore, StoreError> {
        PostgresStore::migrate(&pool).await?;
        Ok(PostgresStore::from_pool_unmigrated(pool))
    }

    /// Uses an existing pool and leaves the schema alone: for deployments that apply schema
    /// changes in a step of their own, with [`migrate`](PostgresStore::migrate) or the SQL
    /// files under `migrations/postgres` in keygate's repository (the store's queries fail
    /// with a backend error until the schema is in place).
    ///
    /// ```no_run
    /// use keygate::store::PostgresStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/app").await?;
    /// // In the deployment's migration step:
    /// PostgresStore::migrate(&pool).await?;
    /// // In the service:
    /// let store = PostgresStore::from_pool_unmigrated(pool);
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_pool_unmigrated(pool: PgPool) -> PostgresStore {
        SqlStore::new(pool, Postgres)
    }

    /// Runs the embedded migrations: those already applied are skipped, and concurrent runs
    /// from several instances are serialised by sqlx's advisory lock.
    pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
        super::migrations::postgres()
            .run(pool)
            .await
            .map_err(StoreError::backend)
    }
}

/// How long [`PostgresStore::connect`] waits for its first connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The query parameters sqlx reads from a PostgreSQL URL (sqlx-postgres 0.8), besides
/// `options[…]`.
const URL_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// A URL parameter [`PostgresStore::connect`] refuses, named without its value.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown parameter `{0}` in the PostgreSQL URL (known: {known}, options[…])",
    known = URL_PARAMETERS.join(", ")
)]
struct UnknownUrlParameter(String);

/// A PostgreSQL URL with an `@` after its host, refused without quoting any of it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the PostgreSQL URL has an `@` after its host: percent-encode `?`, `#` and `/` in its user name and password (%3F, %23, %2F)"
)]
struct UnencodedUserInfo;

/// Whether `key` can be shown in an error: it has the shape of a parameter's name, so it is
/// one mistyped, not a piece of something else.
fn looks_like_a_name(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.[]".contains(&b))
}

/// Refuses a query parameter sqlx would log with its value and ignore. The parameters are read
/// as sqlx reads them: the URL parser's query, decoded as a form (a plain split at `?` would
/// name a piece of a password holding an unencoded `?` as a parameter).
fn check_url_parameters(parsed: &url::Url) -> Result<(), StoreError> {
    // An unencoded `?` or `#` in the password can still leave a URL (`user:5432?rest@host`:
    // host `user`, port 5432), whose query or fragment then holds the rest of the password and
    // the `@` after it. sqlx would log that query as a parameter.
    let after_host = [parsed.query(), parsed.fragment()];
    if after_host.iter().flatten().any(|part| part.contains('@')) {
        return Err(StoreError::backend(UnencodedUserInfo));
    }
    for (key, _) in parsed.query_pairs() {
        let known = URL_PARAMETERS.contains(&key.as_ref())
            || (key.starts_with("options[") && key.ends_with(']'));
        if !known {
            let shown = if looks_like_a_name(&key) {
                key.into_owned()
            } else {
                "(not shown: not a parameter's name)".to_owned()
            };
            return Err(StoreError::backend(UnknownUrlParameter(shown)));
        }
    }
    Ok(())
}

/// The pool of [`PostgresStore::connect`], with its first connection.
async fn connect_pool(options: &PgConnectOptions) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options.clone())
        .await
}

/// Why no connection came within [`CONNECT_TIMEOUT`]: the pool retries a refused connection
/// until then and reports only that it timed out, so one more attempt, bounded alike, tells
/// what stands in the way; `None` if it connects.
async fn why_not_connected(options: &PgConnectOptions) -> Option<StoreError> {
    use sqlx::Connection;
    let attempt =
        tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(options)).await;
    match attempt {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            None
        }
        Ok(Err(e)) => Some(StoreError::backend(e)),
        Err(_) => Some(StoreError::backend(sqlx::Error::PoolTimedOut)),
    }
}
