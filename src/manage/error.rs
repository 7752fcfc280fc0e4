use crate::store::StoreError;

/// Why a lifecycle operation was refused. Nothing is written when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// The name is empty, too long, or holds control characters.
    #[error("Name must be 1 to 100 characters without control characters")]
    InvalidName,
    /// No scope was given.
    #[error("Scopes must not be empty")]
    NoScopes,
    /// A scope is not well-formed or not one of the service's known scopes.
    #[error("Unknown scope: {0}")]
    UnknownScope(String),
    /// The expiry is not in the future.
    #[error("expires_at must be in the future")]
    ExpiryInPast,
    /// The grace period is negative or longer than allowed.
    #[error("grace_period_seconds must be between 0 and {max}")]
    InvalidGracePeriod {
        /// The longest grace period allowed, in seconds.
        max: u64,
    },
    /// The tenant already has the maximum number of active keys.
    #[error("The tenant already has {0} active keys, the maximum; revoke one first")]
    TooManyKeys(usize),
    /// No such active key for this tenant.
    #[error("API key not found")]
    NotFound,
    /// The key was rotated with a grace period and is still in it: it has been replaced, so
    /// only its successor can be rotated.
    #[error("API key has already been rotated: rotate its successor instead")]
    AlreadyRotated,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ActiveKeyLimit(n) => ManageError::TooManyKeys(n),
            StoreError::AlreadyRotated => ManageError::AlreadyRotated,
            e => ManageError::Store(e),
        }
    }
}
