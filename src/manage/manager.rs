use std::fmt;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::ManageError;
use crate::audit::{AuditAction, AuditEvent, AuditSink, TracingAudit};
use crate::hash::KeyHasher;
use crate::key::{ApiKey, Environment, KeyFormat};
use crate::restrict::Restrictions;
use crate::scope::{Scope, Scopes};
use crate::store::{KeyInfo, KeyRecord, ManagedKeyStore};
use crate::verify::Verifier;

/// The longest rotation grace period: 30 days.
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

/// Issues and manages keys on a [`ManagedKeyStore`]. Cheap to clone.
#[derive(Clone)]
pub struct KeyManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ManagedKeyStore>,
    format: KeyFormat,
    hasher: KeyHasher,
    known_scopes: Option<Vec<Scope>>,
    max_active: Option<usize>,
    audit: Arc<dyn AuditSink>,
}

/// Configures a [`KeyManager`].
pub struct KeyManagerBuilder {
    inner: Inner,
}

/// What to issue: name, scopes and options. Built with [`NewKey::new`] and its setters.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Human-readable name.
    pub name: String,
    /// Scope names; validated against the manager's known scopes.
    pub scopes: Vec<String>,
    /// `live` (default) or `test`.
    pub environment: Environment,
    /// Optional expiry, which must be in the future.
    pub expires_at: Option<OffsetDateTime>,
    /// Free-form data handed to the service with the tenant.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Where and for what the key may be used.
    pub restrictions: Restrictions,
}

impl NewKey {
    /// A live key with these scopes and no expiry.
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        scopes: impl IntoIterator<Item = S>,
    ) -> Self {
        NewKey {
            name: name.into(),
            scopes: scopes.into_iter().map(Into::into).collect(),
            environment: Environment::Live,
            expires_at: None,
            metadata: Default::default(),
            restrictions: Default::default(),
        }
    }

    /// Sets the environment.
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }

    /// Sets the expiry.
    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets the metadata.
    pub fn metadata(mut self, metadata: serde_json::Map<String, serde_json::Value>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the restrictions.
    pub fn restrictions(mut self, restrictions: Restrictions) -> Self {
        self.restrictions = restrictions;
        self
    }
}

/// A freshly issued (or rotated) key: the secret, shown once, and what was stored.
#[derive(Debug)]
pub struct IssuedKey {
    /// The secret. Hand it to the user once; it cannot be retrieved again.
    pub key: ApiKey,
    /// The stored metadata.
    pub info: KeyInfo,
}

impl KeyManager {
    /// Starts configuring a manager over `store`.
    ///
    /// Defaults: [`KeyFormat::default`], SHA-256, any well-formed scope, at most 100 active keys
    /// per tenant, audit events to [`TracingAudit`].
    pub fn builder(store: impl ManagedKeyStore) -> KeyManagerBuilder {
        KeyManagerBuilder {
            inner: Inner {
                store: Arc::new(store),
                format: KeyFormat::default(),
                hasher: KeyHasher::default(),
                known_scopes: None,
                max_active: Some(100),
                audit: Arc::new(TracingAudit),
            },
        }
    }

    /// The key format of issued keys.
    pub fn format(&self) -> &KeyFormat {
        &self.inner.format
    }

    /// Issues a key for `tenant_id`. `actor` names who asked, for the audit trail.
    pub async fn issue(
        &self,
        actor: &str,
        tenant_id: &str,
        new: NewKey,
    ) -> Result<IssuedKey, ManageError> {
        let now = OffsetDateTime::now_utc();
        let name = validate_name(&new.name)?;
        let scopes = self.validate_scopes(&new.scopes)?;
        if new.expires_at.is_some_and(|at| at <= now) {
            return Err(ManageError::ExpiryInPast);
        }
        let key = self.inner.format.generate(new.environment);
        let record = KeyRecord {
            id: new_key_id(),
            tenant_id: tenant_id.to_owned(),
            name,
            digest: self.inner.hasher.hash(key.expose_secret()),
            prefix: key.prefix().to_owned(),
            last4: key.last4().to_owned(),
            scopes,
            environment: new.environment,
            created_at: now,
            expires_at: new.expires_at,
            revoked_at: None,
            last_used_at: None,
            metadata: new.metadata,
            restrictions: new.restrictions,
        };
        let info = KeyInfo::from(&record);
        self.inner
            .store
            .insert(record, self.inner.max_active)
            .await?;
        self.audit(actor, tenant_id, AuditAction::Issue, &info)
            .await;
        Ok(IssuedKey { key, info })
    }

    /// The tenant's active keys, oldest first.
    pub async fn list(&self, tenant_id: &str) -> Result<Vec<KeyInfo>, ManageError> {
        let keys = self
            .inner
            .store
            .list(tenant_id, OffsetDateTime::now_utc())
            .await?;
        Ok(keys.iter().map(KeyInfo::from).collect())
    }

    /// One active key of the tenant.
    pub async fn get(&self, tenant_id: &str, key_id: &str) -> Result<KeyInfo, ManageError> {
        let key = self
            .inner
            .store
            .get(tenant_id, key_id, OffsetDateTime::now_utc())
            .await?;
        key.as_ref().map(KeyInfo::from).ok_or(ManageError::NotFound)
    }

    /// Renames an active key.
    pub async fn rename(
        &self,
        actor: &str,
        tenant_id: &str,
        key_id: &str,
        name: &str,
    ) -> Result<KeyInfo, ManageError> {
        let name = validate_name(name)?;
        let now = OffsetDateTime::now_utc();
        let key = self
            .inner
            .store
            .rename(tenant_id, key_id, &name, now)
            .await?;
        let info = key
            .as_ref()
            .map(KeyInfo::from)
            .ok_or(ManageError::NotFound)?;
        self.audit(actor, tenant_id, AuditAction::Rename, &info)
            .await;
        Ok(info)
    }

    /// Replaces an active key with a new secret of the same name, scopes, environment, expiry,
    /// metadata and restrictions. The old key stops working at once, or after `grace` (at most
    /// 30 days) during which both work. Usage counters belong to the tenant and are untouched.
    ///
    /// A key is replaced once: a key in its grace period is refused with
    /// [`ManageError::AlreadyRotated`] (rotate its successor instead). With a grace period the
    /// old key stays active beside the new one, so the rotation needs room under the active-key
    /// cap ([`ManageError::TooManyKeys`]); without, it never grows the count. An unknown,
    /// revoked or expired key, or another tenant's, is [`ManageError::NotFound`].
    pub async fn rotate(
        &self,
        actor: &str,
        tenant_id: &str,
        key_id: &str,
        grace: Option<std::time::Duration>,
    ) -> Result<IssuedKey, ManageError> {
        let grace_secs = grace.map_or(0, |g| g.as_secs());
        if grace_secs > MAX_GRACE_SECONDS {
            return Err(ManageError::InvalidGracePeriod {
                max: MAX_GRACE_SECONDS,
            });
        }
        let now = OffsetDateTime::now_utc();
        let old = self
            .inner
            .store
            .get(tenant_id, key_id, now)
            .await?
            .ok_or(ManageError::NotFound)?;
        let key = self.inner.format.generate(old.environment);
        let replacement = KeyRecord {
            id: new_key_id(),
            digest: self.inner.hasher.hash(key.expose_secret()),
            prefix: key.prefix().to_owned(),
            last4: key.last4().to_owned(),
            created_at: now,
            revoked_at: None,
            last_used_at: None,
            ..old
        };
        let info = KeyInfo::from(&replacement);
        let until = now + Duration::seconds(grace_secs as i64);
        let rotated = self
            .inner
            .store
            .rotate(
                tenant_id,
                key_id,
                replacement,
                until,
                now,
                self.inner.max_active,
            )
            .await?
            .ok_or(ManageError::NotFound)?;
        self.audit(
            actor,
            tenant_id,
            AuditAction::Rotate,
            &KeyInfo::from(&rotated),
        )
        .await;
        self.audit(actor, tenant_id, AuditAction::Issue, &info)
            .await;
        Ok(IssuedKey { key, info })
    }

    /// Revokes an active key: the next request with it is refused.
    pub async fn revoke(
        &self,
        actor: &str,
        tenant_id: &str,
        key_id: &str,
    ) -> Result<(), ManageError> {
        let now = OffsetDateTime::now_utc();
        let key = self.inner.store.revoke(tenant_id, key_id, now).await?;
        let info = key
            .as_ref()
            .map(KeyInfo::from)
            .ok_or(ManageError::NotFound)?;
        self.audit(actor, tenant_id, AuditAction::Revoke, &info)
            .await;
        Ok(())
    }

    fn validate_scopes(&self, names: &[String]) -> Result<Scopes, ManageError> {
        if names.is_empty() {
            return Err(ManageError::NoScopes);
        }
        names
            .iter()
            .map(|name| {
                let scope = Scope::new(name.as_str())
                    .map_err(|_| ManageError::UnknownScope(name.clone()))?;
                match &self.inner.known_scopes {
                    Some(known) if !known.contains(&scope) => {
                        Err(ManageError::UnknownScope(name.clone()))
                    }
                    _ => Ok(scope),
                }
            })
            .collect()
    }

    async fn audit(&self, actor: &str, tenant_id: &str, action: AuditAction, key: &KeyInfo) {
        let event = AuditEvent {
            at: OffsetDateTime::now_utc(),
            actor: actor.to_owned(),
            tenant_id: tenant_id.to_owned(),
            action,
            key_id: key.id.clone(),
            key_prefix: key.prefix.clone(),
        };
        // The change is made; a failing audit sink must not make it look undone.
        if let Err(error) = self.inner.audit.record(&event).await {
            tracing::error!(target: "keygate::audit", %error, action = %action, key_id = %key.id, "audit sink failed");
        }
    }
}

fn validate_name(name: &str) -> Result<String, ManageError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ManageError::InvalidName);
    }
    Ok(name.to_owned())
}

/// `key_` and 24 hex characters (96 random bits).
fn new_key_id() -> String {
    let mut bytes = [0u8; 12];
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system CSPRNG is unavailable");
    let mut id = String::with_capacity(28);
    id.push_str("key_");
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

impl fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyManager")
            .field("format", &self.inner.format)
            .field("known_scopes", &self.inner.known_scopes)
            .field("max_active", &self.inner.max_active)
            .finish_non_exhaustive()
    }
}

impl KeyManagerBuilder {
    /// Takes the key format and hasher from the verifier that will check the keys.
    pub fn for_verifier(mut self, verifier: &Verifier) -> Self {
        self.inner.format = verifier.format().clone();
        self.inner.hasher = verifier.hasher().clone();
        self
    }

    /// The format of issued keys.
    pub fn format(mut self, format: KeyFormat) -> Self {
        self.inner.format = format;
        self
    }

    /// The hasher; must be the verifier's.
    pub fn hasher(mut self, hasher: KeyHasher) -> Self {
        self.inner.hasher = hasher;
        self
    }

    /// Only these scopes may be granted (default: any well-formed scope).
    pub fn known_scopes(mut self, scopes: impl IntoIterator<Item = Scope>) -> Self {
        self.inner.known_scopes = Some(scopes.into_iter().collect());
        self
    }

    /// The most active keys a tenant may hold (`None`: no cap).
    pub fn max_active_keys(mut self, max: Option<usize>) -> Self {
        self.inner.max_active = max;
        self
    }

    /// Where audit events go.
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.inner.audit = Arc::new(sink);
        self
    }

    /// Finishes the configuration.
    pub fn build(self) -> KeyManager {
        KeyManager {
            inner: Arc::new(self.inner),
        }
    }
}
