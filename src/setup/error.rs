use crate::backend::BackendError;
use crate::store::StoreError;

/// Why a [`Keygate`](super::Keygate) or a [`Database`](super::Database) could not be set up or
/// shut down. Messages never hold the database URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The database URL is empty.
    #[error("the database URL is empty")]
    EmptyUrl,
    /// The URL names a backend this build of keygate does not have.
    #[error("{what} needs keygate's `{feature}` feature")]
    MissingFeature {
        /// What was asked for, e.g. `a PostgreSQL URL`.
        what: &'static str,
        /// The cargo feature that brings it.
        feature: &'static str,
    },
    /// The URL's scheme is neither PostgreSQL's nor SQLite's (`mysql://…`, a typo such as
    /// `postgress://…`); carries the scheme.
    #[error(
        "unsupported database URL scheme {0:?}: use postgres://, postgresql://, sqlite:// or the path of an SQLite file"
    )]
    UnsupportedScheme(String),
    /// The database failed: connecting, migrating, or a write.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another backend (the limiter's) failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}
