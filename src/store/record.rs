use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::hash::KeyDigest;
use crate::key::{ApiKey, Environment};
use crate::restriction::Restrictions;
use crate::scope::Scopes;

/// Everything a store keeps about one key. Never the secret: only its digest, its visible
/// prefix and its last four characters.
///
/// Serializes with serde (for a store that keeps records as documents, or an export): times
/// as RFC 3339 with their nanoseconds, the digest as 64 hex characters. A record holds no
/// secret, so neither does its serialized form; the digest is whole, though, so keep it where
/// the store's contents may go.
///
/// ```
/// use keygate::key::{Environment, KeyScheme};
/// use keygate::store::KeyRecord;
///
/// let (key, digest) = KeyScheme::default().generate(Environment::Live);
/// let record = KeyRecord::builder("key_1", "acme", digest).key(&key).build();
/// let json = serde_json::to_value(&record).unwrap();
/// assert_eq!(json["digest"], digest.to_hex());
/// assert!(!json.to_string().contains(key.expose_secret()));
/// assert_eq!(serde_json::from_value::<KeyRecord>(json).unwrap(), record);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the key stops working, if ever.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When the key stopped (or, during a rotation grace period, will stop) working.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When the key was last used, as last flushed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// Free-form data handed to the service with the [`Tenant`](crate::Tenant).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Where and for what the key may be used.
    pub restrictions: Restrictions,
}

impl KeyRecord {
    /// Starts the record of key `id` of `tenant_id`, whose secret hashes to `digest`.
    ///
    /// Until set otherwise: an empty name, prefix and last four characters, no scopes, `live`,
    /// created now, no expiry, never revoked or used, no metadata, no restrictions.
    ///
    /// ```
    /// use keygate::key::{Environment, KeyScheme};
    /// use keygate::scope::Scopes;
    /// use keygate::store::KeyRecord;
    ///
    /// let (key, digest) = KeyScheme::default().generate(Environment::Test);
    /// let record = KeyRecord::builder("key_1", "acme", digest)
    ///     .key(&key) // its visible prefix, last four characters and environment
    ///     .name("CI")
    ///     .scopes(Scopes::from_static(&["read"]))
    ///     .build();
    /// assert_eq!(record.prefix, "sk_test_");
    /// assert_eq!(record.environment, Environment::Test);
    /// ```
    pub fn builder(
        id: impl Into<String>,
        tenant_id: impl Into<String>,
        digest: KeyDigest,
    ) -> KeyRecordBuilder {
        KeyRecordBuilder {
            record: KeyRecord {
                id: id.into(),
                tenant_id: tenant_id.into(),
                name: String::new(),
                digest,
                prefix: String::new(),
                last4: String::new(),
                scopes: Scopes::default(),
                environment: Environment::Live,
                created_at: OffsetDateTime::now_utc(),
                expires_at: None,
                revoked_at: None,
                last_used_at: None,
                metadata: serde_json::Map::new(),
                restrictions: Restrictions::default(),
            },
        }
    }

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

/// Builds a [`KeyRecord`]; see [`KeyRecord::builder`]. Each setter sets the field of its name.
#[derive(Debug, Clone)]
#[must_use]
pub struct KeyRecordBuilder {
    record: KeyRecord,
}

impl KeyRecordBuilder {
    /// The visible prefix, the last four characters and the environment of `key`: what a
    /// record keeps of the key it was issued for (never the secret).
    pub fn key(mut self, key: &ApiKey) -> Self {
        self.record.prefix = key.prefix().to_owned();
        self.record.last4 = key.last4().to_owned();
        self.record.environment = key.environment();
        self
    }

    /// See [`KeyRecord::name`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.record.name = name.into();
        self
    }

    /// See [`KeyRecord::prefix`]; for keys imported by their digest.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.record.prefix = prefix.into();
        self
    }

    /// See [`KeyRecord::last4`]; for keys imported by their digest.
    pub fn last4(mut self, last4: impl Into<String>) -> Self {
        self.record.last4 = last4.into();
        self
    }

    /// See [`KeyRecord::scopes`].
    pub fn scopes(mut self, scopes: Scopes) -> Self {
        self.record.scopes = scopes;
        self
    }

    /// See [`KeyRecord::environment`].
    pub fn environment(mut self, environment: Environment) -> Self {
        self.record.environment = environment;
        self
    }

    /// See [`KeyRecord::created_at`].
    pub fn created_at(mut self, at: OffsetDateTime) -> Self {
        self.record.created_at = at;
        self
    }

    /// See [`KeyRecord::expires_at`].
    pub fn expires_at(mut self, at: impl Into<Option<OffsetDateTime>>) -> Self {
        self.record.expires_at = at.into();
        self
    }

    /// See [`KeyRecord::revoked_at`].
    pub fn revoked_at(mut self, at: impl Into<Option<OffsetDateTime>>) -> Self {
        self.record.revoked_at = at.into();
        self
    }

    /// See [`KeyRecord::last_used_at`].
    pub fn last_used_at(mut self, at: impl Into<Option<OffsetDateTime>>) -> Self {
        self.record.last_used_at = at.into();
        self
    }

    /// See [`KeyRecord::metadata`].
    pub fn metadata(mut self, metadata: serde_json::Map<String, serde_json::Value>) -> Self {
        self.record.metadata = metadata;
        self
    }

    /// See [`KeyRecord::restrictions`].
    pub fn restrictions(mut self, restrictions: Restrictions) -> Self {
        self.record.restrictions = restrictions;
        self
    }

    /// The record.
    pub fn build(self) -> KeyRecord {
        self.record
    }
}

/// The public view of a record, for listings: no digest. The management API answers with it.
///
/// With the `openapi` feature it is a `utoipa` schema (`KeyInfo`), so that a service can use it
/// in its own OpenAPI document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(description = "An API key as the management API shows it: never its secret.")
)]
pub struct KeyInfo {
    /// Stable public identifier of the key, used in the management API's paths.
    pub id: String,
    /// Human-readable name, e.g. "Production API".
    pub name: String,
    /// The visible prefix with the environment, e.g. `sk_live_`.
    pub prefix: String,
    /// The last four characters of the secret, for display.
    pub last4: String,
    /// What the key may do.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub scopes: Scopes,
    /// `live` or `test`.
    pub environment: Environment,
    /// When the key was issued (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// When the key stops working (RFC 3339); null if never.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    /// When the key was last used (RFC 3339), as last written; null if never.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_used_at: Option<OffsetDateTime>,
    /// When the key stops working because it was rotated or revoked (RFC 3339): for a key in
    /// its rotation grace period, the end of that period; null for a key neither rotated nor
    /// revoked. Absent from views written before the field existed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub revoked_at: Option<OffsetDateTime>,
    /// Free-form data handed to the service with the tenant.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Where and for what the key may be used.
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
            revoked_at: r.revoked_at,
            metadata: r.metadata.clone(),
            restrictions: r.restrictions.clone(),
        }
    }
}
