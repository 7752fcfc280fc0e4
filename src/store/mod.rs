//! Key stores: where key records live.
//!
//! The request path needs one thing from a store: [`KeyStore::find`], the record whose digest
//! equals the presented key's digest. Managing keys (issuing, listing, renaming, rotating,
//! revoking) needs more, and that is [`ManagedKeyStore`]. A read-only store, for example one fed
//! from a config file, implements only the first.
//!
//! keygate ships [`MemoryStore`], and `SqliteStore` and `PostgresStore` (features `sqlite` and
//! `postgres`, in the `sql` module). A record is built with [`KeyRecord::builder`];
//! `examples/custom_store.rs` shows a complete custom store, and [`conformance`] is the suite
//! every store runs.
//!
//! # Writing a store
//! - Index records by [`KeyDigest`] and compare digests with `==`, which is constant-time.
//! - Return revoked and expired records as they are: the verifier decides what they mean, so
//!   the error a client sees is exact ("revoked", "expired") rather than "unknown".
//! - Return [`StoreError`] when the backend fails; the request is then refused with 503, never
//!   let through.
//! - If a lookup can be answered without waiting (memory, a local cache), also implement
//!   [`KeyStore::find_now`]: the request path then skips the future entirely.
//! - Write the trait impls with [`keygate::async_trait`](crate::async_trait); a store needs
//!   no `async-trait` dependency of its own.
//! - Run [`conformance::run_read_only`] on a [`KeyStore`], or [`conformance::run_all`] on a
//!   [`ManagedKeyStore`], in your tests.

pub mod conformance;
mod error;
mod managed;
mod memory;
mod record;
#[cfg(feature = "sql")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub mod sql;

pub use error::StoreError;
pub use managed::ManagedKeyStore;
pub(crate) use managed::write_detached;
pub use memory::MemoryStore;
pub use record::{KeyInfo, KeyRecord, KeyRecordBuilder};
#[cfg(feature = "postgres")]
pub use sql::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteStore;

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use time::macros::datetime;

use crate::hash::KeyDigest;

/// The latest instant a keygate store accepts: 2262-01-01T00:00:00Z.
///
/// The SQL stores keep times as signed 64-bit nanoseconds since the Unix epoch, which run out in
/// April 2262. Every store (and every store that passes the [`conformance`] suite) refuses a
/// later time, in a record or as `now`, with [`StoreError::TimeOutOfRange`] and writes nothing:
/// a time is never silently changed. The key manager refuses a later `expires_at` up front.
///
/// ```
/// use keygate::store::MAX_TIME;
/// assert_eq!(MAX_TIME.year(), 2262);
/// ```
pub const MAX_TIME: OffsetDateTime = datetime!(2262-01-01 00:00:00 UTC);

/// The earliest instant a keygate store accepts: 1678-01-01T00:00:00Z, the first new year that
/// signed 64-bit nanoseconds reach. Earlier times are refused like those after [`MAX_TIME`].
///
/// ```
/// use keygate::store::MIN_TIME;
/// assert_eq!(MIN_TIME.year(), 1678);
/// ```
pub const MIN_TIME: OffsetDateTime = datetime!(1678-01-01 00:00:00 UTC);

/// `t` if a store accepts it, [`StoreError::TimeOutOfRange`] otherwise.
pub(crate) fn check_time(t: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    if (MIN_TIME..=MAX_TIME).contains(&t) {
        Ok(t)
    } else {
        Err(StoreError::TimeOutOfRange(t))
    }
}

/// Refuses a record holding a time no store can keep.
pub(crate) fn check_record_times(r: &KeyRecord) -> Result<(), StoreError> {
    check_time(r.created_at)?;
    for t in [r.expires_at, r.revoked_at, r.last_used_at]
        .into_iter()
        .flatten()
    {
        check_time(t)?;
    }
    Ok(())
}

/// The time a write judges a key at: the caller's `now`, or the clock read once the store holds
/// its lock (or inside its serialised transaction) when that is later.
///
/// The caller read `now` before its call waited for the lock; a write that committed meanwhile
/// used a later time, and judged at the stale `now` it would look still to come (a revocation
/// would look like a grace period).
pub(crate) fn judged_at(now: OffsetDateTime) -> OffsetDateTime {
    now.max(OffsetDateTime::now_utc())
}

/// The answer of a lookup: the record, if the digest is known.
pub type Lookup = Result<Option<Arc<KeyRecord>>, StoreError>;

/// Finds key records by digest; the only store call on the request path.
///
/// # What a store must do
/// - [`find`](Self::find) returns the record whose [`KeyRecord::digest`] equals the digest
///   given, or `Ok(None)`; at most one record per digest.
/// - It returns every record it holds, active or not: revoked (`revoked_at` at or before now),
///   expired (`expires_at` at or before now) and in a rotation grace period (`revoked_at`
///   still to come). The verifier judges the record at the request's time `t` with
///   [`KeyRecord::is_revoked_at`] and [`KeyRecord::is_expired_at`]: revoked when `revoked_at`
///   is set and at or before `t`, expired likewise with `expires_at`. A key is *active* at `t`
///   ([`KeyRecord::is_active_at`]) when it is neither: a key revoked or expiring at `t` is no
///   longer active at `t`.
/// - It returns the record with every field as it was stored. keygate's SQL stores keep
///   times as signed 64-bit nanoseconds since the Unix epoch, so their range is
///   [`MIN_TIME`]..=[`MAX_TIME`]; the [`conformance`] suite writes times truncated to the
///   microsecond, so a backend that keeps microseconds passes it too.
/// - A backend failure is [`StoreError`] (`Backend` or `Timeout`): the request is refused
///   with 503 and the service is not called. Never answer `Ok(None)` for a failure: the
///   client would be told its key is unknown.
/// - [`find_now`](Self::find_now) answers `Some` only when it needs no waiting, and then
///   answers exactly as `find` would.
///
/// [`conformance::run_read_only`] checks this for a store that only implements `KeyStore`.
///
/// ```
/// use std::sync::Arc;
/// use keygate::hash::KeyDigest;
/// use keygate::store::{KeyRecord, KeyStore, Lookup};
///
/// /// A store holding exactly one key, e.g. from the environment.
/// struct SingleKey(Arc<KeyRecord>);
///
/// #[keygate::async_trait]
/// impl KeyStore for SingleKey {
///     async fn find(&self, digest: &KeyDigest) -> Lookup {
///         Ok((self.0.digest == *digest).then(|| self.0.clone()))
///     }
/// }
/// ```
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The record whose digest equals `digest`, including revoked and expired ones.
    async fn find(&self, digest: &KeyDigest) -> Lookup;

    /// Answers at once when the store can do so without waiting, `None` otherwise.
    ///
    /// In-memory stores and caches implement this so that the request path needs no future and
    /// no allocation. The default defers to [`KeyStore::find`].
    fn find_now(&self, digest: &KeyDigest) -> Option<Lookup> {
        let _ = digest;
        None
    }
}

#[async_trait]
impl<S: KeyStore + ?Sized> KeyStore for Arc<S> {
    async fn find(&self, digest: &KeyDigest) -> Lookup {
        (**self).find(digest).await
    }

    fn find_now(&self, digest: &KeyDigest) -> Option<Lookup> {
        (**self).find_now(digest)
    }
}
