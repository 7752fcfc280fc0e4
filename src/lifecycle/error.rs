use super::bounds::BoundViolation;
use crate::store::StoreError;

/// Why a lifecycle operation was refused. Nothing is written when one is returned, except
/// for [`ManageError::Store`] with [`StoreError::Timeout`]: the backend may still apply a
/// rename, a revocation or an import it was slow to confirm. An issue or a rotation that
/// commits after its timeout is undone (the new key revoked, a rotated key active again), so
/// the secret nobody received never works and a retry starts from where the caller left.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// The name is empty, too long, or holds control or formatting characters.
    #[error("Name must be 1 to 128 characters without control or formatting characters")]
    InvalidName,
    /// No scope was given.
    #[error("Scopes must not be empty")]
    NoScopes,
    /// More scopes than [`MAX_SCOPES`](super::MAX_SCOPES).
    #[error("Too many scopes: at most {max}")]
    TooManyScopes {
        /// The most scopes a key may hold.
        max: usize,
    },
    /// A scope is not well-formed or not one of the service's known scopes.
    #[error("Unknown scope: {0}")]
    UnknownScope(String),
    /// The expiry is not in the future.
    #[error("expires_at must be in the future")]
    ExpiryInPast,
    /// The expiry is after [`MAX_EXPIRY`](super::MAX_EXPIRY), the latest instant stores keep.
    #[error("expires_at must not be after 2262-01-01T00:00:00Z")]
    ExpiryTooLate,
    /// The metadata serializes to more than [`MAX_METADATA_BYTES`](super::MAX_METADATA_BYTES).
    #[error("metadata must be at most {max} bytes of JSON")]
    MetadataTooLarge {
        /// The most bytes of JSON allowed.
        max: usize,
    },
    /// A restriction list has more than
    /// [`MAX_RESTRICTION_ENTRIES`](super::MAX_RESTRICTION_ENTRIES) entries.
    #[error("restrictions.{field} must have at most {max} entries")]
    TooManyRestrictions {
        /// `ip_ranges`, `referrers` or `endpoints`.
        field: &'static str,
        /// The most entries allowed.
        max: usize,
    },
    /// A referrer that no browser's `Referer` or `Origin` could match: not `http://` or
    /// `https://`, no host (unless the pattern is a prefix such as `https://*`), or a user
    /// name before the host.
    #[error(
        "Invalid referrer {0:?}: use an origin such as https://app.example.com, optionally followed by a path, or a prefix ending in *"
    )]
    InvalidReferrer(String),
    /// An endpoint rule whose path does not start with `/`, which no request path matches.
    #[error("Invalid endpoint path {0:?}: it must start with /")]
    InvalidEndpointPath(String),
    /// An endpoint rule whose method is not an HTTP method name (a token: letters, digits and
    /// ``!#$%&'*+-.^_`|~``), which no request's method matches.
    #[error(
        "Invalid endpoint method {0:?}: use an HTTP method such as GET or POST, or leave it out to allow every method"
    )]
    InvalidEndpointMethod(String),
    /// The grace period is negative or longer than allowed.
    #[error("grace_period_seconds must be between 0 and {max}")]
    InvalidGracePeriod {
        /// The longest grace period allowed, in seconds.
        max: u64,
    },
    /// The key would reach beyond the key of the caller it is issued for, or the key the
    /// caller would rename, rotate or revoke lies beyond the caller's own: one it could not
    /// have issued (see [`KeyBounds`](super::KeyBounds)).
    #[error("{0}")]
    BeyondBounds(BoundViolation),
    /// The caller's key has been rotated and is in its grace period: it still authenticates,
    /// but only its successor may manage keys.
    #[error("API key has been rotated: use its successor to manage keys")]
    CallerRotated,
    /// The tenant already has the maximum number of active keys.
    #[error("The tenant already has {0} active keys, the maximum; revoke one first")]
    TooManyKeys(usize),
    /// The last four characters of an imported key are not 4 characters of lowercase hex.
    #[error("The imported key's last four characters must be 4 characters of 0-9 and a-f")]
    ImportLast4,
    /// Keys are hashed with a pepper (HMAC-SHA-256): a plain SHA-256 made elsewhere can never
    /// match the digest the verifier computes, so the key cannot be imported.
    #[error(
        "Keys are hashed with a pepper (HMAC-SHA-256): a key known only by its plain SHA-256 cannot be imported"
    )]
    ImportPeppered,
    /// A key with this digest exists already ([`KeyManager::import`](super::KeyManager::import)).
    #[error("A key with this digest already exists")]
    DuplicateKey,
    /// No such active key for this tenant.
    #[error("API key not found")]
    NotFound,
    /// The key was rotated with a grace period and is still in it: it has been replaced, so
    /// only its successor can be rotated.
    #[error("API key has already been rotated: rotate its successor instead")]
    AlreadyRotated,
    /// The store failed or did not answer within the manager's store timeout.
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

impl From<BoundViolation> for ManageError {
    fn from(v: BoundViolation) -> Self {
        ManageError::BeyondBounds(v)
    }
}
