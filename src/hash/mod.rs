//! Hashing keys: the digest that stores keep instead of the secret.
//!
//! A [`KeyHasher`] turns a presented key into a [`KeyDigest`]: SHA-256 of the whole key by
//! default, or HMAC-SHA-256 with a server-side pepper kept outside the store, so that a leaked
//! database alone does not let anyone test guesses offline.
//!
//! ```
//! use keygate::hash::{KeyDigest, KeyHasher};
//!
//! let plain = KeyHasher::sha256();
//! let digest = plain.hash("sk_live_0123");
//! // Keys issued by another system can be imported by their hex SHA-256.
//! assert_eq!(KeyDigest::from_hex(&digest.to_hex()).unwrap(), digest);
//!
//! let peppered = KeyHasher::hmac_sha256(b"a secret kept in the service's config".to_vec());
//! assert_ne!(peppered.hash("sk_live_0123"), digest);
//! ```

mod digest;
mod hasher;

pub(crate) use digest::DigestHasher;
pub use digest::{InvalidDigest, KeyDigest};
pub use hasher::KeyHasher;
