//! The authenticated caller, handed to the service in the request extensions.

use std::fmt;
use std::sync::Arc;

use crate::error::AuthError;
use crate::key::Environment;
use crate::plan::TenantEntitlements;
use crate::scope::{Scope, Scopes};
use crate::store::KeyRecord;

/// Who made the request: the tenant and the key it used.
///
/// The layer inserts it into the request extensions after every check passed. Cloning is an
/// `Arc` clone.
///
/// ```
/// # use keygate::Tenant;
/// fn handler_logic(tenant: &Tenant) -> String {
///     format!("hello {} (key {})", tenant.tenant_id(), tenant.key_id())
/// }
/// ```
#[derive(Clone)]
pub struct Tenant {
    key: Arc<KeyRecord>,
    entitlements: Option<Arc<TenantEntitlements>>,
    development: bool,
    /// Set by an `AuthLayer` that admitted the request: a layer nested inside it reuses this
    /// tenant instead of verifying again. Not settable outside keygate, so a `Tenant` put into
    /// the extensions by other code authenticates nothing.
    admitted_by_layer: bool,
}

impl Tenant {
    /// Wraps the record of the key that authenticated the request.
    pub fn new(key: Arc<KeyRecord>) -> Self {
        Tenant {
            key,
            entitlements: None,
            development: false,
            admitted_by_layer: false,
        }
    }

    /// Wraps the key's record and its tenant's entitlements.
    pub fn with_entitlements(
        key: Arc<KeyRecord>,
        entitlements: Option<Arc<TenantEntitlements>>,
    ) -> Self {
        Tenant {
            key,
            entitlements,
            development: false,
            admitted_by_layer: false,
        }
    }

    /// Marks a tenant that an `AuthLayer` admitted, as it hands the request on.
    pub(crate) fn admitted_by_layer(mut self) -> Self {
        self.admitted_by_layer = true;
        self
    }

    /// Whether an `AuthLayer` admitted the request this tenant came with.
    pub(crate) fn is_admitted_by_layer(&self) -> bool {
        self.admitted_by_layer
    }

    /// Marks a tenant named by the development-mode header rather than by a key.
    pub(crate) fn development(mut self) -> Self {
        self.development = true;
        self
    }

    /// Whether the request named its tenant in the development-mode header (see
    /// `VerifierBuilder::dev_tenant_header`, feature `dev-mode`) instead of presenting a key.
    /// Such a tenant is trusted on its word: anything that lasts longer than development
    /// mode, such as issuing keys, must refuse it (the management API answers 403).
    ///
    /// ```
    /// # use keygate::Tenant;
    /// fn may_issue_keys(tenant: &Tenant) -> bool {
    ///     !tenant.is_development()
    /// }
    /// ```
    pub fn is_development(&self) -> bool {
        self.development
    }

    /// The tenant's status and plan, when the verifier has an entitlement source.
    pub fn entitlements(&self) -> Option<&TenantEntitlements> {
        self.entitlements.as_deref()
    }

    /// The tenant's id.
    pub fn tenant_id(&self) -> &str {
        &self.key.tenant_id
    }

    /// The id of the key used.
    pub fn key_id(&self) -> &str {
        &self.key.id
    }

    /// The name of the key used.
    pub fn key_name(&self) -> &str {
        &self.key.name
    }

    /// The key's scopes.
    pub fn scopes(&self) -> &Scopes {
        &self.key.scopes
    }

    /// The key's environment.
    pub fn environment(&self) -> Environment {
        self.key.environment
    }

    /// The key's metadata.
    pub fn metadata(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.key.metadata
    }

    /// The whole key record (never holds the secret).
    pub fn key(&self) -> &KeyRecord {
        &self.key
    }

    /// Whether this caller may do what `scope` allows: the key's scopes grant it **and** the
    /// plan's `allowed_scopes`, when the tenant has a plan that lists them, grant it too.
    ///
    /// This is the one rule for what a key may do: the verifier's scope check,
    /// [`Tenant::require`] and the management API's `admin` check all use it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keygate::Tenant;
    /// use keygate::plan::{Plan, TenantEntitlements};
    /// use keygate::scope::{Scope, Scopes};
    /// # fn record() -> keygate::store::KeyRecord {
    /// #     let digest = keygate::hash::KeyDigest::from_bytes([0; 32]);
    /// #     keygate::store::KeyRecord::builder("key_1", "acme", digest)
    /// #         .scopes(Scopes::from_static(&["write"]))
    /// #         .build()
    /// # }
    /// let read_only = Plan { allowed_scopes: Some(Scopes::from_static(&["read"])), ..Plan::default() };
    /// // A key holding `write`, on a plan that allows only `read`:
    /// let tenant = Tenant::with_entitlements(
    ///     Arc::new(record()),
    ///     Some(Arc::new(TenantEntitlements::active(read_only))),
    /// );
    /// assert!(tenant.grants(&Scope::READ));
    /// assert!(!tenant.grants(&Scope::WRITE));
    /// ```
    pub fn grants(&self, scope: &Scope) -> bool {
        granted(&self.key.scopes, self.plan_scopes(), scope)
    }

    /// The scopes the tenant's plan allows, when it has a plan that limits them.
    pub(crate) fn plan_scopes(&self) -> Option<&Scopes> {
        self.entitlements.as_ref()?.plan.allowed_scopes.as_ref()
    }

    /// `Ok` when [`Tenant::grants`] `scope`, otherwise the 403 `insufficient_scope` error.
    ///
    /// ```
    /// # use keygate::{Tenant, scope::Scope};
    /// fn delete_document(tenant: &Tenant) -> Result<(), keygate::AuthError> {
    ///     tenant.require(&Scope::WRITE)?;
    ///     Ok(())
    /// }
    /// ```
    pub fn require(&self, scope: &Scope) -> Result<(), AuthError> {
        if self.grants(scope) {
            Ok(())
        } else {
            Err(AuthError::InsufficientScope(scope.clone()))
        }
    }
}

/// The rule behind [`Tenant::grants`], for callers that hold the parts rather than a tenant.
pub(crate) fn granted(key_scopes: &Scopes, plan_scopes: Option<&Scopes>, scope: &Scope) -> bool {
    key_scopes.grants(scope) && plan_scopes.is_none_or(|allowed| allowed.grants(scope))
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("tenant_id", &self.key.tenant_id)
            .field("key_id", &self.key.id)
            .field("prefix", &self.key.prefix)
            .field("scopes", &self.key.scopes)
            .field("environment", &self.key.environment)
            .field("plan", &self.entitlements.as_ref().map(|e| &e.plan.name))
            .field("development", &self.development)
            .finish()
    }
}
