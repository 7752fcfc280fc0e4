//! The framework-free verification pipeline.
//!
//! [`Verifier`] takes a request head and answers with a [`Tenant`](crate::Tenant) or an
//! [`AuthError`](crate::AuthError): credential extraction, key format, hashing, the store
//! lookup, and the checks. The tower layer is a thin shell around it, and any other framework
//! can call it the same way.
//!
//! ```
//! use keygate::{Verifier, key::Environment, store::MemoryStore, verify::RequestHead};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::new();
//! let verifier = Verifier::builder(store.clone()).build();
//!
//! let request = http::Request::get("/").header("x-api-key", "sk_live_nope").body(()).unwrap();
//! let error = verifier.verify(&RequestHead::from(&request), None).await.unwrap_err();
//! assert_eq!(error.status(), 401);
//! # }
//! ```

mod client_ip;
mod credential;
mod head;
mod verifier;

pub use client_ip::{ClientAddr, ForwardedHeader};
pub(crate) use client_ip::{TrustedProxies, canonical_net, client_ip};
pub use credential::CredentialSource;
pub use head::RequestHead;
pub use verifier::{Admitted, Limits, Presented, Rejection, Verifier, VerifierBuilder};
