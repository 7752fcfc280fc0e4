use std::error::Error as StdError;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::backend::BackendError;

/// A store failed or refused to answer. The request path turns every variant into 503; the
/// management API maps [`StoreError::ActiveKeyLimit`] and [`StoreError::AlreadyRotated`] to 409
/// and the rest to 503.
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
    /// The tenant already has the maximum number of active keys; carries that maximum (the
    /// `max_active` the call was given).
    #[error("the tenant already has {0} active keys, the maximum")]
    ActiveKeyLimit(usize),
    /// The key is in a rotation grace period: it has already been replaced, and only its
    /// successor may be rotated.
    #[error("the key has already been rotated")]
    AlreadyRotated,
    /// A time lies outside [`MIN_TIME`](super::MIN_TIME)..=[`MAX_TIME`](super::MAX_TIME), the
    /// range every keygate store accepts. Nothing was written.
    #[error("time {} is outside the range a key store accepts ({} to {})", rfc3339(.0), rfc3339(&super::MIN_TIME), rfc3339(&super::MAX_TIME))]
    TimeOutOfRange(OffsetDateTime),
    /// The store does not implement this operation (a provided method of
    /// [`ManagedKeyStore`](super::ManagedKeyStore) it leaves to its default).
    #[error("the key store does not support this operation")]
    Unsupported,
}

/// A backend failure is a store failure: [`BackendError::Failed`] becomes
/// [`StoreError::Backend`], [`BackendError::Timeout`] becomes [`StoreError::Timeout`].
impl From<BackendError> for StoreError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Failed(e) => StoreError::Backend(e),
            BackendError::Timeout => StoreError::Timeout,
        }
    }
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(error: impl StdError + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(error))
    }
}

fn rfc3339(t: &OffsetDateTime) -> String {
    // RFC 3339 has no room for years outside 0..=9999; such a time is shown as `time` prints it.
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}
