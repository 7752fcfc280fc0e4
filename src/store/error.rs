use std::error::Error as StdError;

/// A store failed to answer. The request path turns every variant into 503.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend (database, network) failed.
    #[error("key store backend error: {0}")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
    /// The backend did not answer in time.
    #[error("key store timed out")]
    Timeout,
    /// The write conflicts with existing data, e.g. a duplicate id or digest.
    #[error("key store conflict: {0}")]
    Conflict(String),
    /// The tenant already has the maximum number of active keys.
    #[error("the tenant already has {0} active keys, the maximum")]
    ActiveKeyLimit(usize),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(error: impl StdError + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(error))
    }
}
