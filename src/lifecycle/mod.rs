//! The life of a key: issue, list, get, rename, rotate, revoke.
//!
//! [`KeyManager`] works on any [`ManagedKeyStore`](crate::store::ManagedKeyStore) and needs no
//! HTTP: the management API (`keygate::api`, `axum` feature) is a thin layer over it.
//!
//! - Input is capped for every caller: [`MAX_SCOPES`], [`MAX_NAME_CHARS`],
//!   [`MAX_METADATA_BYTES`], [`MAX_RESTRICTION_ENTRIES`], [`MAX_EXPIRY`].
//! - [`KeyBounds`] is the rule that keeps a key from issuing keys wider than itself, and from
//!   changing keys it could not have issued: [`KeyManager::issue_as`],
//!   [`KeyManager::rename_as`], [`KeyManager::rotate_as`] and [`KeyManager::revoke_as`] apply
//!   it for an authenticated caller, the plain methods are for operator code. Listing and
//!   getting are not bound.
//! - Store calls are bounded by a timeout, and each change is written with its audit event by a
//!   task of its own, which a caller that goes away cannot cancel halfway.
//!
//! ```
//! use keygate::lifecycle::{KeyManager, NewKey};
//! use keygate::key::Environment;
//! use keygate::store::MemoryStore;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let manager = KeyManager::builder(MemoryStore::new()).build();
//! let issued = manager
//!     .issue("setup-script", "acme", NewKey::new("Production API", ["read", "write"]).environment(Environment::Live))
//!     .await
//!     .unwrap();
//! // The secret is shown once; only its hash, prefix and last 4 characters are kept.
//! println!("your key: {}", issued.key.expose_secret());
//! assert_eq!(manager.list("acme").await.unwrap().len(), 1);
//! # }
//! ```

mod bounds;
mod error;
mod manager;
mod new_key;

pub use bounds::{BoundViolation, KeyBounds};
pub use error::ManageError;
#[cfg(feature = "axum")]
pub(crate) use manager::MAX_GRACE_SECONDS;
#[cfg(feature = "axum")]
pub(crate) use manager::may_manage;
pub use manager::{KeyManager, KeyManagerBuilder};
pub use new_key::{
    IssuedKey, MAX_EXPIRY, MAX_METADATA_BYTES, MAX_NAME_CHARS, MAX_RESTRICTION_ENTRIES, MAX_SCOPES,
    NewKey, validate_name,
};
