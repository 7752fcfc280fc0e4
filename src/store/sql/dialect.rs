//! What differs between the SQL engines.
//!
//! The statements are the same for SQLite and PostgreSQL (`$n` placeholders work in both, and
//! so do `RETURNING` and `ON CONFLICT`). What differs is how a write is kept from racing
//! another (SQLite takes the database's write lock at once; PostgreSQL takes an advisory lock on
//! the tenant), how a write tells other instances what it changed (PostgreSQL notifies, SQLite
//! has no channel between processes) and what a store must check before it trusts its connections (SQLite, that its
//! file is still the one it opened).

use std::future::Future;

use sqlx::{Database, Pool, Transaction};

use crate::backend::BackendError;

/// The SQL engine behind a [`SqlStore`](super::SqlStore): [`Sqlite`](super::Sqlite) or
/// [`Postgres`](super::Postgres). Sealed: keygate implements it for those two only, and its
/// methods are the store's own business.
pub trait Dialect: sealed::Sealed + Clone + Send + Sync + 'static {
    /// The sqlx database.
    type Db: Database;

    /// The name the store shows in `Debug` output, e.g. `SqliteStore`.
    #[doc(hidden)]
    fn store_name(&self) -> &'static str;

    /// Opens a transaction serialised against every other write of keygate's to `tenant_id`'s
    /// keys: checking the active-key cap and inserting, or judging and rotating a key, cannot
    /// interleave with another such write.
    #[doc(hidden)]
    fn begin_write(
        &self,
        pool: &Pool<Self::Db>,
        tenant_id: &str,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, BackendError>> + Send;

    /// Publishes `payload` to the stores' change channel inside `tx`, so that it is delivered
    /// when, and only if, `tx` commits (PostgreSQL `pg_notify`); nothing where there is no
    /// such channel (SQLite).
    #[doc(hidden)]
    fn publish<'a>(
        &'a self,
        tx: &'a mut Transaction<'static, Self::Db>,
        payload: String,
    ) -> impl Future<Output = Result<(), BackendError>> + Send + 'a;

    /// Run before every read; cheap enough for the request path.
    #[doc(hidden)]
    fn check_read(&self) -> Result<(), BackendError>;

    /// Run when a write starts and again before it commits.
    #[doc(hidden)]
    fn check_write(&self) -> Result<(), BackendError>;
}

pub(super) mod sealed {
    /// Public in a module private to the SQL store: nameable as a bound of the public
    /// [`Dialect`](super::Dialect), implementable only by the store's own dialects.
    #[allow(unreachable_pub)]
    pub trait Sealed {}
}
