//! How keygate's statements run on an sqlx database.
//!
//! sqlx is generic over its databases, but generic code that runs a query must prove, at every
//! use, that the database can encode and decode each type and that its connections execute
//! queries. [`Driver`] states those bounds once, on one blanket implementation, and offers the
//! few operations the SQL store needs; the store's code is then generic over a
//! [`Dialect`](super::Dialect) with no sqlx bounds of its own.

use std::future::Future;

use sqlx::database::Database;
use sqlx::{
    Arguments, ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Transaction, Type,
};

use super::codec::{Arg, KeyRow, TenantRow};

/// Where a statement runs: on a pooled connection, or inside a transaction.
pub(crate) enum On<'a, DB: Database> {
    Pool(&'a Pool<DB>),
    Tx(&'a mut Transaction<'static, DB>),
}

/// The operations of the SQL store, for any sqlx database that supports its column types.
pub(crate) trait Driver: Database {
    /// At most one key row.
    fn fetch_key<'a>(
        on: On<'a, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> impl Future<Output = Result<Option<KeyRow>, sqlx::Error>> + Send + 'a;

    /// Every key row.
    fn fetch_keys<'a>(
        on: On<'a, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> impl Future<Output = Result<Vec<KeyRow>, sqlx::Error>> + Send + 'a;

    /// At most one tenant row.
    fn fetch_tenant<'a>(
        on: On<'a, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> impl Future<Output = Result<Option<TenantRow>, sqlx::Error>> + Send + 'a;

    /// The first column of the one row, an integer (a count).
    fn fetch_int<'a>(
        on: On<'a, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send + 'a;

    /// The first column of at most one row, a text (an id).
    fn fetch_text<'a>(
        on: On<'a, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> impl Future<Output = Result<Option<String>, sqlx::Error>> + Send + 'a;

    /// The first two columns of at most one row, integers.
    fn fetch_int_pair<'a>(
        on: On<'a, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> impl Future<Output = Result<Option<(i64, i64)>, sqlx::Error>> + Send + 'a;

    /// Runs a statement that returns no rows.
    fn execute<'a>(
        on: On<'a, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;
}

impl<DB> Driver for DB
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'r> KeyRow: sqlx::FromRow<'r, DB::Row>,
    for<'r> TenantRow: sqlx::FromRow<'r, DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    async fn fetch_key(
        on: On<'_, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<Option<KeyRow>, sqlx::Error> {
        let query = sqlx::query_as_with::<DB, KeyRow, _>(sql, arguments::<DB>(args)?);
        match on {
            On::Pool(pool) => query.fetch_optional(pool).await,
            On::Tx(tx) => query.fetch_optional(&mut **tx).await,
        }
    }

    async fn fetch_keys(
        on: On<'_, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<Vec<KeyRow>, sqlx::Error> {
        let query = sqlx::query_as_with::<DB, KeyRow, _>(sql, arguments::<DB>(args)?);
        match on {
            On::Pool(pool) => query.fetch_all(pool).await,
            On::Tx(tx) => query.fetch_all(&mut **tx).await,
        }
    }

    async fn fetch_tenant(
        on: On<'_, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<Option<TenantRow>, sqlx::Error> {
        let query = sqlx::query_as_with::<DB, TenantRow, _>(sql, arguments::<DB>(args)?);
        match on {
            On::Pool(pool) => query.fetch_optional(pool).await,
            On::Tx(tx) => query.fetch_optional(&mut **tx).await,
        }
    }

    async fn fetch_int(
        on: On<'_, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<i64, sqlx::Error> {
        let query = sqlx::query_scalar_with::<DB, i64, _>(sql, arguments::<DB>(args)?);
        match on {
            On::Pool(pool) => query.fetch_one(pool).await,
            On::Tx(tx) => query.fetch_one(&mut **tx).await,
        }
    }

    async fn fetch_text(
        on: On<'_, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<Option<String>, sqlx::Error> {
        let query = sqlx::query_scalar_with::<DB, String, _>(sql, arguments::<DB>(args)?);
        match on {
            On::Pool(pool) => query.fetch_optional(pool).await,
            On::Tx(tx) => query.fetch_optional(&mut **tx).await,
        }
    }

    async fn fetch_int_pair(
        on: On<'_, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<Option<(i64, i64)>, sqlx::Error> {
        let query = sqlx::query_as_with::<DB, (i64, i64), _>(sql, arguments::<DB>(args)?);
        match on {
            On::Pool(pool) => query.fetch_optional(pool).await,
            On::Tx(tx) => query.fetch_optional(&mut **tx).await,
        }
    }

    async fn execute(
        on: On<'_, Self>,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<(), sqlx::Error> {
        let query = sqlx::query_with::<DB, _>(sql, arguments::<DB>(args)?);
        match on {
            On::Pool(pool) => query.execute(pool).await.map(drop),
            On::Tx(tx) => query.execute(&mut **tx).await.map(drop),
        }
    }
}

/// The parameters as the database's own arguments.
fn arguments<DB>(args: Vec<Arg>) -> Result<DB::Arguments<'static>, sqlx::Error>
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
{
    let mut out = DB::Arguments::default();
    for arg in args {
        match arg {
            Arg::Text(v) => out.add(v),
            Arg::Bytes(v) => out.add(v),
            Arg::Int(v) => out.add(v),
            Arg::OptInt(v) => out.add(v),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(out)
}
