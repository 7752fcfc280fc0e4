//! Key stores: where key records live.
//!
//! The request path needs one thing from a store: [`KeyStore::find`], the record whose digest
//! equals the presented key's digest. Managing keys (issuing, listing, renaming, rotating,
//! revoking) needs more, and that is [`ManagedKeyStore`]. A read-only store, for example one fed
//! from a config file, implements only the first.
//!
//! keygate ships [`MemoryStore`]; `examples/custom_store.rs` shows a complete custom store.
//!
//! # Writing a store
//! - Index records by [`KeyDigest`] and compare digests with `==`, which is constant-time.
//! - Return revoked and expired records as they are: the verifier decides what they mean, so
//!   the error a client sees is exact ("revoked", "expired") rather than "unknown".
//! - Return [`StoreError`] when the backend fails; the request is then refused with 503, never
//!   let through.
//! - If a lookup can be answered without waiting (memory, a local cache), also implement
//!   [`KeyStore::find_now`]: the request path then skips the future entirely.

pub mod conformance;
mod error;
mod managed;
mod memory;
mod record;
#[cfg(feature = "sql")]
pub(crate) mod sql;

pub use error::StoreError;
pub use managed::ManagedKeyStore;
pub use memory::MemoryStore;
pub use record::{KeyInfo, KeyRecord};
#[cfg(feature = "postgres")]
pub use sql::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sql::SqliteStore;

use std::sync::Arc;

use async_trait::async_trait;

use crate::hash::KeyDigest;

/// The answer of a lookup: the record, if the digest is known.
pub type Lookup = Result<Option<Arc<KeyRecord>>, StoreError>;

/// Finds key records by digest; the only store call on the request path.
///
/// ```
/// use std::sync::Arc;
/// use keygate::hash::KeyDigest;
/// use keygate::store::{KeyRecord, KeyStore, Lookup};
///
/// /// A store holding exactly one key, e.g. from the environment.
/// struct SingleKey(Arc<KeyRecord>);
///
/// #[async_trait::async_trait]
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
