use std::borrow::Cow;

use http::StatusCode;

use crate::key::{Environment, MalformedKey};
use crate::restriction::Violation;
use crate::scope::Scope;

/// Why a request was refused. One variant per outcome; each maps to one status and code.
///
/// Its `Display` is the message a client receives ([`message`](AuthError::message)), so what a
/// service logs and what its client sees read the same:
///
/// ```
/// use keygate::AuthError;
///
/// let error = AuthError::QuotaExhausted;
/// assert_eq!(error.to_string(), "Quota exhausted for the current period");
/// assert_eq!(error.to_string(), error.message());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No `x-api-key` and no `Authorization` header.
    MissingCredential,
    /// More than one credential: both headers, or one header repeated.
    MultipleCredentials,
    /// `Authorization` with a scheme other than `Bearer`, e.g. `Basic`.
    UnsupportedScheme,
    /// The credential is empty, not visible ASCII, or does not have the key format.
    Malformed(MalformedKey),
    /// Well-formed, but no store knows it.
    UnknownKey,
    /// The key was revoked.
    RevokedKey,
    /// The key is past its expiry.
    ExpiredKey,
    /// This server does not accept keys of this environment.
    EnvironmentNotAccepted(Environment),
    /// Development mode: the tenant header does not hold a valid tenant id (1 to 64
    /// characters of `A-Z`, `a-z`, `0-9`, `_`, `.` and `-`).
    InvalidDevTenant,
    /// Development mode: the call (e.g. the management API) is refused to a tenant that
    /// named itself in the development-mode header instead of presenting a key.
    DevelopmentMode,
    /// The key lacks the scope the route requires.
    InsufficientScope(Scope),
    /// The tenant is suspended.
    TenantSuspended,
    /// The entitlement source does not know the key's tenant.
    NoPlan,
    /// The tenant's quota for the current period is used up.
    QuotaExhausted,
    /// A key restriction does not allow this request.
    RestrictionViolated(Violation),
    /// A rate limit is exceeded; retry after the given whole seconds (at least 1).
    RateLimited {
        /// Seconds until a retry can pass.
        retry_after_secs: u64,
    },
    /// The key store or a limit backend failed or timed out (fail closed).
    Unavailable,
}

impl AuthError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::MissingCredential
            | AuthError::MultipleCredentials
            | AuthError::UnsupportedScheme
            | AuthError::Malformed(_)
            | AuthError::UnknownKey
            | AuthError::RevokedKey
            | AuthError::ExpiredKey
            | AuthError::EnvironmentNotAccepted(_)
            | AuthError::InvalidDevTenant => StatusCode::UNAUTHORIZED,
            AuthError::InsufficientScope(_)
            | AuthError::DevelopmentMode
            | AuthError::TenantSuspended
            | AuthError::NoPlan
            | AuthError::QuotaExhausted
            | AuthError::RestrictionViolated(_) => StatusCode::FORBIDDEN,
            AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable code of the error envelope.
    pub fn code(&self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            StatusCode::FORBIDDEN => "FORBIDDEN",
            StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
            _ => "SERVICE_UNAVAILABLE",
        }
    }

    /// The gRPC status code: 16, 7, 8 or 14.
    pub fn grpc_code(&self) -> u8 {
        match self.status() {
            StatusCode::UNAUTHORIZED => 16,
            StatusCode::FORBIDDEN => 7,
            StatusCode::TOO_MANY_REQUESTS => 8,
            _ => 14,
        }
    }

    /// The human-readable message clients see. It never contains the presented key.
    pub fn message(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            AuthError::MissingCredential => {
                "Missing API key: send it in the x-api-key header or as Authorization: Bearer <key>"
            }
            AuthError::MultipleCredentials => {
                "More than one credential in the request: send exactly one API key"
            }
            AuthError::UnsupportedScheme => {
                "Unsupported authorization scheme: use Authorization: Bearer <key>"
            }
            AuthError::Malformed(_) => "Malformed API key",
            AuthError::UnknownKey => "Invalid API key",
            AuthError::RevokedKey => "API key has been revoked",
            AuthError::ExpiredKey => "API key has expired",
            AuthError::EnvironmentNotAccepted(Environment::Test) => {
                "Test keys are not accepted here: use a live key"
            }
            AuthError::EnvironmentNotAccepted(Environment::Live) => {
                "Live keys are not accepted here: use a test key"
            }
            AuthError::InvalidDevTenant => {
                "Invalid tenant id in development mode: use 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-'"
            }
            AuthError::DevelopmentMode => "Management calls are not available in development mode",
            AuthError::InsufficientScope(scope) => {
                return Cow::Owned(format!("API key lacks the required scope: {scope}"));
            }
            AuthError::TenantSuspended => "Tenant suspended",
            AuthError::NoPlan => "Tenant has no active plan",
            AuthError::QuotaExhausted => "Quota exhausted for the current period",
            AuthError::RestrictionViolated(r) => {
                return Cow::Owned(format!("API key restriction violated: {r} not allowed"));
            }
            AuthError::RateLimited { .. } => "Rate limit exceeded: retry later",
            AuthError::Unavailable => "Authentication is temporarily unavailable: retry later",
        })
    }

    /// The message a gRPC client receives in `grpc-message`: [`message`](AuthError::message),
    /// except that credentials travel in *metadata* there, so the refusals that tell a client
    /// how to send its key name metadata keys instead of headers.
    ///
    /// ```
    /// use keygate::AuthError;
    ///
    /// assert_eq!(
    ///     AuthError::MissingCredential.grpc_message(),
    ///     "Missing API key: send it in the x-api-key metadata or as authorization: Bearer <key>"
    /// );
    /// assert_eq!(AuthError::QuotaExhausted.grpc_message(), AuthError::QuotaExhausted.message());
    /// ```
    pub fn grpc_message(&self) -> Cow<'static, str> {
        match self {
            AuthError::MissingCredential => Cow::Borrowed(
                "Missing API key: send it in the x-api-key metadata or as authorization: Bearer <key>",
            ),
            AuthError::MultipleCredentials => Cow::Borrowed(
                "More than one credential in the call metadata: send exactly one API key",
            ),
            AuthError::UnsupportedScheme => Cow::Borrowed(
                "Unsupported authorization scheme: send the authorization metadata as Bearer <key>",
            ),
            other => other.message(),
        }
    }

    /// The RFC 6750 `error` attribute of `WWW-Authenticate`, if any.
    pub fn bearer_error(&self) -> Option<&'static str> {
        match self {
            AuthError::MissingCredential => None,
            AuthError::InsufficientScope(_) => Some("insufficient_scope"),
            e if e.status() == StatusCode::UNAUTHORIZED => Some("invalid_token"),
            _ => None,
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for AuthError {}
