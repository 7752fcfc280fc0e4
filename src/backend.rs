//! Backend failures: what an entitlement source, a limiter or an audit sink returns when the
//! system behind it (a database, a network service) fails or does not answer in time.
//!
//! Key stores have [`StoreError`](crate::store::StoreError), which adds what only stores can
//! say (conflicts, caps, rotations, times out of range) and converts from a [`BackendError`].
//! On the request path every backend error refuses the request with 503 (fail closed).
//!
//! ```
//! use keygate::backend::BackendError;
//!
//! let error = BackendError::backend(std::io::Error::other("connection refused"));
//! assert_eq!(error.to_string(), "backend error: connection refused");
//! assert_eq!(BackendError::Timeout.to_string(), "backend timed out");
//! ```

use std::error::Error as StdError;

/// A backend failed or did not answer in time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend (database, network, service) failed.
    #[error("backend error: {0}")]
    Failed(#[source] Box<dyn StdError + Send + Sync>),
    /// The backend did not answer in time.
    #[error("backend timed out")]
    Timeout,
}

impl BackendError {
    /// Wraps any error of the backend.
    pub fn backend(error: impl StdError + Send + Sync + 'static) -> Self {
        BackendError::Failed(Box::new(error))
    }
}
