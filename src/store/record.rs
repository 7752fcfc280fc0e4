use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::hash::KeyDigest;
use crate::key::Environment;
use crate::restriction::Restrictions;
use crate::scope::Scopes;

/// Everything a store keeps about one key. Never the secret: only its digest, its visible
/// prefix and its last four characters.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// Stable public identifier, e.g. `key_01h…`; used by the management API.
    pub id: String,
    /// The tenant the key belongs to; it can only reach that tenant's resources.
    pub tenant_id: String,
    /// Human-readable name, e.g. "Production API".
    pub name: String,
    /// The digest of the secret.
    pub digest: KeyDigest,
    /// The visible prefix with the environment, e.g. `sk_live_`.
    pub prefix: String,
    /// The last four characters of the secret, for display.
    pub last4: String,
    /// What the key may do.
    pub scopes: Scopes,
    /// `live` or `test`.
    pub environment: Environment,
    /// When the key was issued.
    pub created_at: OffsetDateTime,
    /// When the key stops working, if ever.
    pub expires_at: Option<OffsetDateTime>,
    /// When the key stopped (or, during a rotation grace period, will stop) working.
    pub revoked_at: Option<OffsetDateTime>,
    /// When the key was last used, as last flushed.
    pub last_used_at: Option<OffsetDateTime>,
    /// Free-form data handed to the service with the [`Tenant`](crate::Tenant).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Where and for what the key may be used.
    pub restrictions: Restrictions,
}

impl KeyRecord {
    /// Whether the key is revoked at `now`.
    pub fn is_revoked_at(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_some_and(|at| at <= now)
    }

    /// Whether the key is expired at `now`.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Neither revoked nor expired at `now`.
    pub fn is_active_at(&self, now: OffsetDateTime) -> bool {
        !self.is_revoked_at(now) && !self.is_expired_at(now)
    }
}

/// The public view of a record, for listings: no digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// See [`KeyRecord::id`].
    pub id: String,
    /// See [`KeyRecord::name`].
    pub name: String,
    /// See [`KeyRecord::prefix`].
    pub prefix: String,
    /// See [`KeyRecord::last4`].
    pub last4: String,
    /// See [`KeyRecord::scopes`].
    pub scopes: Scopes,
    /// See [`KeyRecord::environment`].
    pub environment: Environment,
    /// See [`KeyRecord::created_at`].
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// See [`KeyRecord::expires_at`].
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// See [`KeyRecord::last_used_at`].
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// See [`KeyRecord::metadata`].
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// See [`KeyRecord::restrictions`].
    pub restrictions: Restrictions,
}

impl From<&KeyRecord> for KeyInfo {
    fn from(r: &KeyRecord) -> Self {
        KeyInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            prefix: r.prefix.clone(),
            last4: r.last4.clone(),
            scopes: r.scopes.clone(),
            environment: r.environment,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            metadata: r.metadata.clone(),
            restrictions: r.restrictions.clone(),
        }
    }
}
