//! Tenants' plans: status (active or suspended) and plan (rate limits, quota, scopes).
//!
//! The verifier asks an [`EntitlementSource`] for the tenant of every accepted key. A
//! suspended tenant is refused with 403; the plan's limits go to the
//! [`Limiter`](crate::limit::Limiter); a key's scopes grant only what the plan allows.
//!
//! ```
//! use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
//! use keygate::limit::{Quota, QuotaPeriod, RateLimit};
//!
//! let plans = MemoryEntitlements::new();
//! plans.set(
//!     "acme",
//!     TenantEntitlements::active(Plan {
//!         name: "pro".into(),
//!         rate_limit: Some(RateLimit::per_minute(600)),
//!         key_rate_limit: None,
//!         quota: Some(Quota { limit: 1_000_000, period: QuotaPeriod::Month }),
//!         allowed_scopes: None,
//!     }),
//! );
//! plans.suspend("acme");
//! ```

mod cached;
mod memory;

pub use cached::CachedEntitlements;
pub use memory::MemoryEntitlements;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backend::BackendError;
use crate::limit::{Quota, RateLimit};
use crate::scope::Scopes;

/// Whether a tenant may use the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// Requests are served.
    Active,
    /// Every request is refused with 403 "Tenant suspended".
    Suspended,
}

/// What a tenant's plan allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The plan's name, e.g. `free`, `pro`.
    pub name: String,
    /// The tenant's rate limit, shared by all its keys.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// A rate limit for each key of the tenant.
    #[serde(default)]
    pub key_rate_limit: Option<RateLimit>,
    /// The tenant's quota per calendar period.
    #[serde(default)]
    pub quota: Option<Quota>,
    /// Scopes the plan allows; `None` allows every scope.
    #[serde(default)]
    pub allowed_scopes: Option<Scopes>,
}

/// A tenant's status and plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantEntitlements {
    /// Active or suspended.
    pub status: TenantStatus,
    /// The plan.
    pub plan: Plan,
}

impl TenantEntitlements {
    /// An active tenant on `plan`.
    pub fn active(plan: Plan) -> Self {
        TenantEntitlements {
            status: TenantStatus::Active,
            plan,
        }
    }
}

/// The answer of an entitlement lookup.
pub type EntitlementLookup = Result<Option<Arc<TenantEntitlements>>, BackendError>;

/// Where tenants' entitlements come from.
///
/// A source that fails returns a [`BackendError`]; the request is then refused with 503.
#[async_trait]
pub trait EntitlementSource: Send + Sync + 'static {
    /// The tenant's entitlements; `None` for a tenant the source does not know (the request is
    /// then refused with 403, never let through without a plan).
    async fn entitlements(&self, tenant_id: &str) -> EntitlementLookup;

    /// The same, answered at once when possible (in-memory sources, caches).
    fn entitlements_now(&self, tenant_id: &str) -> Option<EntitlementLookup> {
        let _ = tenant_id;
        None
    }
}
