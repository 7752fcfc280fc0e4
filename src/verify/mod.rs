//! The framework-free verification pipeline.
//!
//! [`Verifier`] takes a request head and answers with a [`Tenant`](crate::Tenant) or an
//! [`AuthError`](crate::AuthError): credential extraction, key format, hashing, the store
//! lookup, and the checks. The tower layer is a thin shell around it, and any other framework
//! can call it the same way.
//!
//! `verifier.rs` is the pipeline, in the order it runs; `builder.rs` its settings and their
//! defaults; `credential.rs` where the key is read from; `outcome.rs` what a check answers;
//! `tests.rs` the decision table, one row per key state, tenant state and request.
//!
//! ```
//! use keygate::{Verifier, request::RequestHead, store::MemoryStore};
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

mod builder;
mod credential;
mod outcome;
#[cfg(test)]
mod tests;
mod verifier;

pub use builder::VerifierBuilder;
pub use credential::CredentialSource;
pub use outcome::{Admitted, Limits, Rejection};
pub use verifier::Verifier;
