//! The life of a key: issue, list, get, rename, rotate, revoke; and last-used tracking.
//!
//! [`KeyManager`] works on any [`ManagedKeyStore`](crate::store::ManagedKeyStore) and needs no
//! HTTP: the management API in [`api`](crate::api) is a thin layer over it.
//!
//! ```
//! use keygate::manage::{KeyManager, NewKey};
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

mod error;
mod last_used;
mod manager;

pub use error::ManageError;
pub use last_used::{LastUsedFlusher, LastUsedTracker};
pub use manager::{IssuedKey, KeyManager, KeyManagerBuilder, NewKey};
