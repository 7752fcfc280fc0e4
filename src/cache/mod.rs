//! The key cache: key records and tenants' plans in memory, and the change notifications that
//! keep them fresh across instances.
//!
//! [`CachedStore`] wraps any [`KeyStore`](crate::store::KeyStore): a hit is answered in memory
//! through [`find_now`](crate::store::KeyStore::find_now), so with SQLite or PostgreSQL behind
//! it the request path makes no query for a key it has seen within the TTL.
//! [`CachedEntitlements`](crate::plan::CachedEntitlements) does the same for tenants' plans and
//! status. Both forget what a [`Change`] makes stale ([`Invalidate`]); a [`ChangeListener`]
//! (feature `postgres`) feeds them the changes every instance's writes publish.
//!
//! ```
//! use std::time::Duration;
//! use keygate::Verifier;
//! use keygate::cache::CachedStore;
//! use keygate::lifecycle::KeyManager;
//! use keygate::plan::CachedEntitlements;
//! use keygate::store::SqliteStore;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = SqliteStore::in_memory().await.unwrap();
//! let keys = CachedStore::new(store.clone());
//! let plans = CachedEntitlements::new(store.clone(), Duration::from_secs(30));
//! let verifier = Verifier::builder(keys.clone()).entitlements(plans.clone()).build();
//! // Revocations, rotations and renames through this manager reach the next request.
//! let manager = KeyManager::builder(keys).build();
//! # let _ = (verifier, manager);
//! # }
//! ```
//!
//! # Staleness
//!
//! How long a change (a key revoked, rotated, renamed or issued; a tenant suspended or its plan
//! changed) may take to reach a request:
//!
//! | where the change is made | store | the next request sees it |
//! |---|---|---|
//! | this process, through the cache ([`KeyManager`](crate::lifecycle::KeyManager) on the [`CachedStore`], [`CachedEntitlements::set_tenant`](crate::plan::CachedEntitlements::set_tenant)) | any | immediately: the write drops the entry before it returns |
//! | another instance (or this one, bypassing the cache) | PostgreSQL with a [`ChangeListener`] | within 1 s: the write's `NOTIFY` is delivered on commit, typically in milliseconds |
//! | anywhere, while the listener's connection is lost | PostgreSQL | the TTL (30 s by default): the cache is flushed when the loss is seen (at once when the connection fails; within 1 s when it goes silent) and again when it is back |
//! | another process | SQLite, or PostgreSQL without a listener | the TTL (30 s by default; 10 s for an unknown key that is then issued) |
//!
//! A cached record whose key has since expired is still refused: the verifier checks expiry
//! and revocation times against the clock on every request. SQLite has no notification
//! channel between processes; keygate does not poll the file for changes (that would flush the
//! whole cache on every write, last-used times included), so a second process writing the
//! same file is seen within the TTL: shorten it where that matters.
//!
//! # Outage policy
//!
//! - **Miss while the store fails or times out**: refused, 503 (fail closed). Errors are never
//!   cached, and the one query of a single flight hands its error to all its waiters.
//! - **Hit while the store fails**: served while younger than the TTL, as always, as long as
//!   the cache holds it. With a [`ChangeListener`], a database outage usually takes the
//!   listener's connection too, and losing it flushes the cache (changes could be missed): the
//!   cache then vouches for no key, and every request with one is refused (503) until the
//!   database is back, as without a cache.
//! - **Hit past its TTL while the store fails**: refused (503) by default. With
//!   [`serve_stale(window)`](CachedStoreBuilder::serve_stale) the record is served while its
//!   age is below TTL + window, with a warning event; never a record that an invalidation
//!   removed (a revocation this instance has seen, or a flush, such as the listener's on an
//!   outage that cuts its connection), never an unknown key.
//! - **Flood of unknown keys**: at most [`DEFAULT_UNKNOWN_CAPACITY`] are remembered (each in
//!   at most [`UNKNOWN_ENTRY_BYTES`] bytes: 1.6 MB), and store queries for keys not in
//!   the cache are capped by the miss budget ([`DEFAULT_MISS_BUDGET`] a second); beyond it
//!   such a request is refused with 503 and a warning event, logged at most once a second.
//!   A cold cache after a restart counts against the same budget: raise it
//!   ([`CachedStoreBuilder::miss_budget`]) if more distinct keys than that arrive in a second.
//!
//! # Files
//!
//! | file | what |
//! |---|---|
//! | `key_cache.rs` | [`CachedStore`] and its builder |
//! | `changes.rs` | [`Change`], [`Invalidate`], [`ChangeFeed`] |
//! | `listener.rs` | [`ChangeListener`]: PostgreSQL `LISTEN`, loss and reconnection (feature `postgres`) |
//! | `clock.rs` | the coarse clock a hit reads |

mod changes;
mod clock;
mod key_cache;
#[cfg(feature = "postgres")]
mod listener;

pub use changes::{Change, ChangeFeed, Invalidate};
pub use key_cache::{
    CachedStore, CachedStoreBuilder, DEFAULT_CAPACITY, DEFAULT_MISS_BUDGET, DEFAULT_QUERY_TIMEOUT,
    DEFAULT_TTL, DEFAULT_UNKNOWN_CAPACITY, DEFAULT_UNKNOWN_TTL, UNKNOWN_ENTRY_BYTES,
};
#[cfg(feature = "postgres")]
pub use listener::ChangeListener;
