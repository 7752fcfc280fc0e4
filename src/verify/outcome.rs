use crate::error::AuthError;
use crate::limit::Usage;
use crate::tenant::Tenant;

/// Whether a check applies the tenant's rate limits and quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Limits {
    /// Check and consume them (the default).
    #[default]
    Apply,
    /// Neither check nor count them; every other check still applies. For calls that must not
    /// be blocked by the tenant's own traffic, such as key management (see
    /// [`AuthLayer::management`](crate::AuthLayer::management)).
    Skip,
}

/// A request that passed every check; limits, if any, are consumed.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The authenticated tenant.
    pub tenant: Tenant,
    /// The limits after this request, for the response headers.
    pub usage: Option<Usage>,
}

/// A refused request: the error, and the limits' state when a limit refused.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Why.
    pub error: AuthError,
    /// The limits' state, for the response headers.
    pub usage: Option<Usage>,
}

impl From<AuthError> for Rejection {
    fn from(error: AuthError) -> Self {
        Rejection { error, usage: None }
    }
}
