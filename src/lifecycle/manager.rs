use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::bounds::KeyBounds;
use super::error::ManageError;
use super::new_key::{
    IssuedKey, MAX_SCOPES, NewKey, validate_expiry, validate_metadata, validate_name,
    validate_restrictions,
};
use crate::audit::{AuditAction, AuditEvent, AuditSink, TracingAudit};
use crate::backend::BackendError;
use crate::hash::KeyDigest;
use crate::key::{ApiKey, KeyScheme};
use crate::limit::{Clock, date_time_now};
use crate::restriction::Restrictions;
use crate::scope::{Scope, Scopes};
use crate::store::{KeyInfo, KeyRecord, ManagedKeyStore, StoreError};
use crate::tenant::Tenant;

/// The longest rotation grace period: 30 days.
pub(crate) const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

/// Issues and manages keys on a [`ManagedKeyStore`]. Cheap to clone.
///
/// Every call validates its input against the caps ([`MAX_SCOPES`],
/// [`MAX_NAME_CHARS`](super::MAX_NAME_CHARS), [`MAX_METADATA_BYTES`](super::MAX_METADATA_BYTES),
/// [`MAX_RESTRICTION_ENTRIES`](super::MAX_RESTRICTION_ENTRIES),
/// [`MAX_EXPIRY`](super::MAX_EXPIRY)) before any store call,
/// and bounds each store call by the store timeout (2 s by default), after which it fails
/// with [`StoreError::Timeout`]. An issue or a rotation that the store commits after that
/// (slow to confirm, not refused) is undone as soon as the store answers: the caller was told
/// it failed and never got the secret (see [`ManagedKeyStore::undo_rotate`]).
///
/// Each change and its audit event are written by a task of their own: a caller that stops
/// waiting (an HTTP client that disconnects, a dropped future) cannot cancel a change between
/// the store write and its audit event. The task needs a tokio runtime.
///
/// The plain methods ([`issue`](Self::issue), [`rotate`](Self::rotate), …) are for operator
/// code and are bound by no caller. The `_as` methods act for an authenticated caller, as the
/// management HTTP API does, and keep it within its [`KeyBounds`]: it issues
/// ([`issue_as`](Self::issue_as)) only keys inside them, and changes
/// ([`rename_as`](Self::rename_as), [`rotate_as`](Self::rotate_as),
/// [`revoke_as`](Self::revoke_as)) only keys it could have issued. Listing and getting are not
/// bound: any admin key of a tenant sees all its keys, metadata only.
#[derive(Clone)]
pub struct KeyManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ManagedKeyStore>,
    scheme: KeyScheme,
    known_scopes: Option<Vec<Scope>>,
    max_active: Option<usize>,
    audit: Arc<dyn AuditSink>,
    store_timeout: std::time::Duration,
    /// `None`: the system clock.
    clock: Option<Arc<dyn Clock>>,
}

/// Configures a [`KeyManager`].
pub struct KeyManagerBuilder {
    inner: Inner,
}

impl KeyManager {
    /// Starts configuring a manager over `store`.
    ///
    /// Defaults: [`KeyScheme::default`] (`sk`, 256 bits, checksum; SHA-256), any well-formed scope, at most 100 active keys
    /// per tenant, audit events to [`TracingAudit`], a 2 second store timeout.
    pub fn builder(store: impl ManagedKeyStore) -> KeyManagerBuilder {
        KeyManagerBuilder {
            inner: Inner {
                store: Arc::new(store),
                scheme: KeyScheme::default(),
                known_scopes: None,
                max_active: Some(100),
                audit: Arc::new(TracingAudit),
                store_timeout: std::time::Duration::from_secs(2),
                clock: None,
            },
        }
    }

    /// Now, by the manager's clock.
    fn now(&self) -> OffsetDateTime {
        date_time_now(self.inner.clock.as_deref())
    }

    /// The key scheme (format and hasher) of issued keys.
    pub fn scheme(&self) -> &KeyScheme {
        &self.inner.scheme
    }

    /// Issues a key for `tenant_id`. `actor` names who asked, for the audit trail.
    ///
    /// Operator code: the key is bound by nothing but validation. To issue on behalf of an
    /// authenticated caller, use [`KeyManager::issue_as`].
    pub async fn issue(
        &self,
        actor: &str,
        tenant_id: &str,
        new: NewKey,
    ) -> Result<IssuedKey, ManageError> {
        let (key, record) = self.prepare(tenant_id, new)?;
        self.insert(actor, key, record).await
    }

    /// Issues a key for `caller`'s tenant, on its behalf: the key must stay inside the
    /// caller's [`KeyBounds`] (same environment, scopes its key and plan grant, restrictions at
    /// least as tight, expiry no later), otherwise [`ManageError::BeyondBounds`] and nothing is
    /// written. A caller whose key is in its rotation grace period is refused with
    /// [`ManageError::CallerRotated`]. The audit actor is the caller's key id.
    ///
    /// ```
    /// use keygate::Verifier;
    /// use keygate::key::{Environment, KeyScheme};
    /// use keygate::lifecycle::{BoundViolation, KeyManager, ManageError, NewKey};
    /// use keygate::store::MemoryStore;
    /// use keygate::request::RequestHead;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let store = MemoryStore::new();
    /// let scheme = KeyScheme::default();
    /// let verifier = Verifier::builder(store.clone()).scheme(scheme.clone()).build();
    /// let manager = KeyManager::builder(store).scheme(scheme).build();
    /// let admin = manager
    ///     .issue("setup", "acme", NewKey::new("sandbox admin", ["admin"]).environment(Environment::Test))
    ///     .await
    ///     .unwrap();
    ///
    /// // The authenticated caller, as the layer hands it to a handler.
    /// let request = http::Request::get("/").header("x-api-key", admin.key.expose_secret()).body(()).unwrap();
    /// let caller = verifier.verify(&RequestHead::from(&request), None).await.unwrap();
    ///
    /// let live = NewKey::new("prod", ["read"]).environment(Environment::Live);
    /// assert!(matches!(
    ///     manager.issue_as(&caller, live).await,
    ///     Err(ManageError::BeyondBounds(BoundViolation::Environment))
    /// ));
    /// let sandbox = NewKey::new("ci", ["read"]).environment(Environment::Test);
    /// assert!(manager.issue_as(&caller, sandbox).await.is_ok());
    /// # }
    /// ```
    pub async fn issue_as(&self, caller: &Tenant, new: NewKey) -> Result<IssuedKey, ManageError> {
        may_manage(caller)?;
        let (key, record) = self.prepare(caller.tenant_id(), new)?;
        KeyBounds::of_tenant(caller).contains(&KeyBounds::of(&record, None))?;
        self.insert(caller.key_id(), key, record).await
    }

    /// Issues a key for `tenant_id` only if the tenant has no active key, checked atomically
    /// with the insert: of several callers racing (instances starting at once on one database),
    /// exactly one gets `Some`. `Ok(None)` when the tenant already has an active key.
    ///
    /// Meant for bootstrapping a tenant's first admin key.
    ///
    /// ```
    /// use keygate::lifecycle::{KeyManager, NewKey};
    /// use keygate::store::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let manager = KeyManager::builder(MemoryStore::new()).build();
    /// let first = manager.issue_first("setup", "acme", NewKey::new("admin", ["admin"])).await.unwrap();
    /// assert!(first.is_some());
    /// let again = manager.issue_first("setup", "acme", NewKey::new("admin", ["admin"])).await.unwrap();
    /// assert!(again.is_none());
    /// # }
    /// ```
    pub async fn issue_first(
        &self,
        actor: &str,
        tenant_id: &str,
        new: NewKey,
    ) -> Result<Option<IssuedKey>, ManageError> {
        let (key, record) = self.prepare(tenant_id, new)?;
        let info = KeyInfo::from(&record);
        match self
            .insert_record(actor, record, Some(1), AuditAction::Issue)
            .await
        {
            Ok(()) => Ok(Some(IssuedKey {
                key,
                info,
                replaced: None,
            })),
            Err(ManageError::TooManyKeys(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Imports a key issued by another system, known only by the hex SHA-256 of its secret
    /// (`digest`), so that its holders keep using it. Nothing secret is needed.
    ///
    /// The record gets the visible prefix of this manager's format and `new.environment`
    /// (`sk_live_` by default) and `last4`, the secret's last four characters if known (4
    /// characters of `0-9a-f`; `None` leaves them empty). The key authenticates only if it has
    /// the verifier's format (for example keys `sk_live_<64 hex>` under a format without
    /// checksum) and the verifier hashes with plain SHA-256: with a peppered hasher
    /// ([`KeyHasher::is_peppered`](crate::hash::KeyHasher::is_peppered)) the import is refused
    /// with [`ManageError::ImportPeppered`]. A digest that exists already is
    /// [`ManageError::DuplicateKey`]. Validation and the active-key cap are those of
    /// [`issue`](Self::issue); the audit event is [`AuditAction::Import`].
    ///
    /// ```
    /// use keygate::hash::{KeyDigest, KeyHasher};
    /// use keygate::lifecycle::{KeyManager, NewKey};
    /// use keygate::store::MemoryStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let manager = KeyManager::builder(MemoryStore::new()).build();
    /// // The SHA-256 another system kept of one of its keys.
    /// let legacy = "sk_live_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567";
    /// let digest = KeyDigest::from_hex(&KeyHasher::sha256().hash(legacy).to_hex()).unwrap();
    /// let info = manager
    ///     .import("migration", "acme", digest, Some("4567"), NewKey::new("legacy", ["read"]))
    ///     .await
    ///     .unwrap();
    /// assert_eq!((info.prefix.as_str(), info.last4.as_str()), ("sk_live_", "4567"));
    /// # }
    /// ```
    pub async fn import(
        &self,
        actor: &str,
        tenant_id: &str,
        digest: KeyDigest,
        last4: Option<&str>,
        mut new: NewKey,
    ) -> Result<KeyInfo, ManageError> {
        if self.inner.scheme.hasher().is_peppered() {
            return Err(ManageError::ImportPeppered);
        }
        let last4 = match last4 {
            None => "",
            Some(l)
                if l.len() == 4 && l.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                l
            }
            Some(_) => return Err(ManageError::ImportLast4),
        };
        let now = self.now();
        let Checked {
            name,
            scopes,
            restrictions,
        } = {
            let restrictions = std::mem::take(&mut new.restrictions);
            self.check(&new, restrictions, now)?
        };
        let prefix = format!(
            "{}_{}_",
            self.inner.scheme.format().prefix(),
            new.environment.as_str()
        );
        let record = KeyRecord::builder(new_key_id(), tenant_id, digest)
            .prefix(prefix)
            .last4(last4)
            .environment(new.environment)
            .name(name)
            .scopes(scopes)
            .created_at(now)
            .expires_at(new.expires_at)
            .metadata(new.metadata)
            .restrictions(restrictions)
            .build();
        let info = KeyInfo::from(&record);
        match self
            .insert_record(actor, record, self.inner.max_active, AuditAction::Import)
            .await
        {
            Err(ManageError::Store(StoreError::Conflict(_))) => Err(ManageError::DuplicateKey),
            other => other.map(|()| info),
        }
    }

    /// Checks `new` as [`issue`](Self::issue) does before any store call (name, scopes, expiry,
    /// restrictions, metadata), and writes nothing: for a caller that must know a key can be
    /// issued before it does something else first, such as creating the key's tenant.
    ///
    /// ```
    /// use keygate::lifecycle::{KeyManager, ManageError, NewKey};
    /// use keygate::store::MemoryStore;
    ///
    /// let manager = KeyManager::builder(MemoryStore::new()).build();
    /// assert!(manager.validate(&NewKey::new("ci", ["read"])).is_ok());
    /// assert!(matches!(
    ///     manager.validate(&NewKey::new(" ", ["read"])),
    ///     Err(ManageError::InvalidName)
    /// ));
    /// ```
    pub fn validate(&self, new: &NewKey) -> Result<(), ManageError> {
        self.check(new, new.restrictions.clone(), self.now())
            .map(|_| ())
    }

    /// The checks of every issue and import, with what they give back normalized; `new`'s
    /// restrictions come apart (taken out of a `NewKey` the caller owns, so that an issue does
    /// not copy them).
    fn check(
        &self,
        new: &NewKey,
        restrictions: Restrictions,
        now: OffsetDateTime,
    ) -> Result<Checked, ManageError> {
        let name = validate_name(&new.name)?;
        let scopes = self.validate_scopes(&new.scopes)?;
        validate_expiry(new.expires_at, now)?;
        let restrictions = validate_restrictions(restrictions)?;
        validate_metadata(&new.metadata)?;
        Ok(Checked {
            name,
            scopes,
            restrictions,
        })
    }

    /// Validates `new` and builds its record, with a fresh secret. Lengths are checked before
    /// any work per item.
    fn prepare(
        &self,
        tenant_id: &str,
        mut new: NewKey,
    ) -> Result<(ApiKey, KeyRecord), ManageError> {
        let now = self.now();
        let Checked {
            name,
            scopes,
            restrictions,
        } = {
            let restrictions = std::mem::take(&mut new.restrictions);
            self.check(&new, restrictions, now)?
        };
        let (key, digest) = self.inner.scheme.generate(new.environment);
        let record = KeyRecord::builder(new_key_id(), tenant_id, digest)
            .key(&key)
            .name(name)
            .scopes(scopes)
            .created_at(now)
            .expires_at(new.expires_at)
            .metadata(new.metadata)
            .restrictions(restrictions)
            .build();
        Ok((key, record))
    }

    async fn insert(
        &self,
        actor: &str,
        key: ApiKey,
        record: KeyRecord,
    ) -> Result<IssuedKey, ManageError> {
        let info = KeyInfo::from(&record);
        self.insert_record(actor, record, self.inner.max_active, AuditAction::Issue)
            .await?;
        Ok(IssuedKey {
            key,
            info,
            replaced: None,
        })
    }

    /// Inserts `record` under the cap `max_active`, with its audit event.
    async fn insert_record(
        &self,
        actor: &str,
        record: KeyRecord,
        max_active: Option<usize>,
        action: AuditAction,
    ) -> Result<(), ManageError> {
        let manager = self.clone();
        let late = LateWrite {
            actor: actor.to_owned(),
            tenant_id: record.tenant_id.clone(),
            key: KeyInfo::from(&record),
            rotated: None,
        };
        self.commit(async move {
            let store = manager.inner.store.clone();
            // The write hands its `LateWrite` back with its answer (see `withdraw`).
            let insert = async move {
                store.insert(record, max_active).await?;
                Ok(late)
            };
            let late_manager = manager.clone();
            let written = manager
                .seen_through(insert, move |late: LateWrite| async move {
                    if action == AuditAction::Issue {
                        // Nobody got the secret.
                        late.undo(&late_manager).await;
                    } else {
                        // An import hands out no secret: it did what its caller asked.
                        let (actor, tenant_id) = (&late.actor, &late.tenant_id);
                        late_manager
                            .audit_late(actor, tenant_id, action, &late.key)
                            .await;
                    }
                })
                .await?;
            let (actor, tenant_id) = (&written.actor, &written.tenant_id);
            manager.audit(actor, tenant_id, action, &written.key).await;
            Ok(())
        })
        .await
    }

    /// The tenant's active keys, oldest first.
    pub async fn list(&self, tenant_id: &str) -> Result<Vec<KeyInfo>, ManageError> {
        let keys = self
            .bounded(self.inner.store.list(tenant_id, self.now()))
            .await?;
        Ok(keys.iter().map(KeyInfo::from).collect())
    }

    /// One active key of the tenant.
    pub async fn get(&self, tenant_id: &str, key_id: &str) -> Result<KeyInfo, ManageError> {
        let key = self
            .bounded(self.inner.store.get(tenant_id, key_id, self.now()))
            .await?;
        key.as_ref().map(KeyInfo::from).ok_or(ManageError::NotFound)
    }

    /// Renames an active key.
    ///
    /// Operator code: bound by no caller. To rename on behalf of an authenticated caller, use
    /// [`KeyManager::rename_as`].
    pub async fn rename(
        &self,
        actor: &str,
        tenant_id: &str,
        key_id: &str,
        name: &str,
    ) -> Result<KeyInfo, ManageError> {
        let name = validate_name(name)?;
        self.rename_valid(actor, tenant_id, key_id, name).await
    }

    /// [`KeyManager::rename`] on behalf of `caller`, in its tenant. A caller changes only keys
    /// it could have issued: the key must lie inside the caller's [`KeyBounds`], otherwise
    /// [`ManageError::BeyondBounds`] and nothing is written. Without this, a sandbox admin
    /// could rename the tenant's live keys. A caller may rename itself: a key lies inside its
    /// own bounds, as long as its plan allows its scopes (an admin's plan always does). A caller
    /// whose key is in its rotation grace period is refused with
    /// [`ManageError::CallerRotated`]. The audit actor is the caller's key id.
    ///
    /// ```
    /// use keygate::Verifier;
    /// use keygate::key::{Environment, KeyScheme};
    /// use keygate::lifecycle::{BoundViolation, KeyManager, ManageError, NewKey};
    /// use keygate::store::MemoryStore;
    /// use keygate::request::RequestHead;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let store = MemoryStore::new();
    /// let scheme = KeyScheme::default();
    /// let verifier = Verifier::builder(store.clone()).scheme(scheme.clone()).build();
    /// let manager = KeyManager::builder(store).scheme(scheme).build();
    /// let live = manager.issue("setup", "acme", NewKey::new("prod", ["read"])).await.unwrap();
    /// let admin = manager
    ///     .issue("setup", "acme", NewKey::new("sandbox admin", ["admin"]).environment(Environment::Test))
    ///     .await
    ///     .unwrap();
    ///
    /// // The authenticated caller, as the layer hands it to a handler.
    /// let request = http::Request::get("/").header("x-api-key", admin.key.expose_secret()).body(()).unwrap();
    /// let caller = verifier.verify(&RequestHead::from(&request), None).await.unwrap();
    ///
    /// assert!(matches!(
    ///     manager.rename_as(&caller, &live.info.id, "pwned").await,
    ///     Err(ManageError::BeyondBounds(BoundViolation::Environment))
    /// ));
    /// // Its own key lies inside its bounds.
    /// let renamed = manager.rename_as(&caller, &admin.info.id, "ci admin").await.unwrap();
    /// assert_eq!(renamed.name, "ci admin");
    /// # }
    /// ```
    pub async fn rename_as(
        &self,
        caller: &Tenant,
        key_id: &str,
        name: &str,
    ) -> Result<KeyInfo, ManageError> {
        may_manage(caller)?;
        let name = validate_name(name)?;
        self.within_bounds_of(caller, key_id).await?;
        self.rename_valid(caller.key_id(), caller.tenant_id(), key_id, name)
            .await
    }

    /// Renames the key to `name`, already validated.
    async fn rename_valid(
        &self,
        actor: &str,
        tenant_id: &str,
        key_id: &str,
        name: String,
    ) -> Result<KeyInfo, ManageError> {
        let (actor, tenant_id, key_id) =
            (actor.to_owned(), tenant_id.to_owned(), key_id.to_owned());
        let manager = self.clone();
        self.commit(async move {
            let now = manager.now();
            let store = manager.inner.store.clone();
            let rename = {
                let (tenant_id, key_id) = (tenant_id.clone(), key_id.clone());
                async move { store.rename(&tenant_id, &key_id, &name, now).await }
            };
            let key = manager
                .seen_through(
                    rename,
                    manager.stands(&actor, &tenant_id, AuditAction::Rename),
                )
                .await?;
            let info = key
                .as_ref()
                .map(KeyInfo::from)
                .ok_or(ManageError::NotFound)?;
            manager
                .audit(&actor, &tenant_id, AuditAction::Rename, &info)
                .await;
            Ok(info)
        })
        .await
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
    ///
    /// Operator code: bound by no caller. To rotate on behalf of an authenticated caller, use
    /// [`KeyManager::rotate_as`].
    pub async fn rotate(
        &self,
        actor: &str,
        tenant_id: &str,
        key_id: &str,
        grace: Option<std::time::Duration>,
    ) -> Result<IssuedKey, ManageError> {
        self.rotate_within(actor, tenant_id, key_id, grace, None)
            .await
    }

    /// [`KeyManager::rotate`] on behalf of `caller`, in its tenant: the successor keeps the
    /// rotated key's attributes, which must lie inside the caller's [`KeyBounds`] (a
    /// restricted caller cannot rotate an unrestricted key), otherwise
    /// [`ManageError::BeyondBounds`] and nothing is written. A caller whose key is in its
    /// rotation grace period is refused with [`ManageError::CallerRotated`].
    pub async fn rotate_as(
        &self,
        caller: &Tenant,
        key_id: &str,
        grace: Option<std::time::Duration>,
    ) -> Result<IssuedKey, ManageError> {
        may_manage(caller)?;
        let bounds = KeyBounds::of_tenant(caller);
        self.rotate_within(
            caller.key_id(),
            caller.tenant_id(),
            key_id,
            grace,
            Some(&bounds),
        )
        .await
    }

    async fn rotate_within(
        &self,
        actor: &str,
        tenant_id: &str,
        key_id: &str,
        grace: Option<std::time::Duration>,
        bounds: Option<&KeyBounds<'_>>,
    ) -> Result<IssuedKey, ManageError> {
        let grace_secs = grace.map_or(0, |g| g.as_secs());
        if grace_secs > MAX_GRACE_SECONDS {
            return Err(ManageError::InvalidGracePeriod {
                max: MAX_GRACE_SECONDS,
            });
        }
        let now = self.now();
        let old = self
            .bounded(self.inner.store.get(tenant_id, key_id, now))
            .await?
            .ok_or(ManageError::NotFound)?;
        let (key, digest) = self.inner.scheme.generate(old.environment);
        let old_info = KeyInfo::from(&old);
        let replacement = KeyRecord {
            id: new_key_id(),
            digest,
            prefix: key.prefix().to_owned(),
            last4: key.last4().to_owned(),
            created_at: now,
            revoked_at: None,
            last_used_at: None,
            ..old
        };
        if let Some(bounds) = bounds {
            bounds.contains(&KeyBounds::of(&replacement, None))?;
        }
        let audited = KeyInfo::from(&replacement);
        let until = now + Duration::seconds(grace_secs as i64);
        let replaced = (old_info.clone(), until);
        let (actor, tenant_id, key_id) =
            (actor.to_owned(), tenant_id.to_owned(), key_id.to_owned());
        let manager = self.clone();
        let info = self.commit(async move {
            let store = manager.inner.store.clone();
            let max_active = manager.inner.max_active;
            let rotate = {
                let (tenant_id, key_id) = (tenant_id.clone(), key_id.clone());
                async move {
                    store
                        .rotate(&tenant_id, &key_id, replacement, until, now, max_active)
                        .await
                }
            };
            let late = LateWrite {
                actor: actor.clone(),
                tenant_id: tenant_id.clone(),
                key: audited.clone(),
                rotated: Some((old_info, until)),
            };
            let late_manager = manager.clone();
            let rotated = manager
                .seen_through(rotate, move |landed: Option<KeyRecord>| async move {
                    if landed.is_some() {
                        // Nobody got the successor's secret.
                        late.undo(&late_manager).await;
                    }
                })
                .await?
                .ok_or(ManageError::NotFound)?;
            manager
                .audit(
                    &actor,
                    &tenant_id,
                    AuditAction::Rotate,
                    &KeyInfo::from(&rotated),
                )
                .await;
            manager
                .audit(&actor, &tenant_id, AuditAction::Issue, &audited)
                .await;
            if rotated.name == audited.name {
                return Ok(audited);
            }
            // Renamed between this rotation's read and its write: the successor takes the
            // name the old key had when it was replaced. The rotation stands either way (the
            // caller must get its secret), so a failed rename leaves the earlier name.
            let renamed = manager
                .rename_valid(&actor, &tenant_id, &audited.id, rotated.name.clone())
                .await;
            Ok(renamed.unwrap_or_else(|error| {
                tracing::warn!(target: "keygate::lifecycle", %error, key_id = %audited.id, "the successor of a key renamed during its rotation keeps the earlier name");
                audited
            }))
        })
        .await?;
        Ok(IssuedKey {
            key,
            info,
            replaced: Some(replaced),
        })
    }

    /// Revokes an active key: the next request with it is refused.
    ///
    /// Operator code: bound by no caller. To revoke on behalf of an authenticated caller, use
    /// [`KeyManager::revoke_as`].
    pub async fn revoke(
        &self,
        actor: &str,
        tenant_id: &str,
        key_id: &str,
    ) -> Result<(), ManageError> {
        let (actor, tenant_id, key_id) =
            (actor.to_owned(), tenant_id.to_owned(), key_id.to_owned());
        let manager = self.clone();
        self.commit(async move {
            let now = manager.now();
            let store = manager.inner.store.clone();
            let revoke = {
                let (tenant_id, key_id) = (tenant_id.clone(), key_id.clone());
                async move { store.revoke(&tenant_id, &key_id, now).await }
            };
            let key = manager
                .seen_through(
                    revoke,
                    manager.stands(&actor, &tenant_id, AuditAction::Revoke),
                )
                .await?;
            let info = key
                .as_ref()
                .map(KeyInfo::from)
                .ok_or(ManageError::NotFound)?;
            manager
                .audit(&actor, &tenant_id, AuditAction::Revoke, &info)
                .await;
            Ok(())
        })
        .await
    }

    /// [`KeyManager::revoke`] on behalf of `caller`, in its tenant. A caller changes only keys
    /// it could have issued: the key must lie inside the caller's [`KeyBounds`], otherwise
    /// [`ManageError::BeyondBounds`] and nothing is written. Without this, a sandbox or
    /// IP-restricted admin could revoke the tenant's live, unrestricted admin key. A caller may
    /// revoke itself: a key lies inside its own bounds, as long as its plan allows its scopes
    /// (an admin's plan always does). A caller whose key is in its rotation grace period is
    /// refused with [`ManageError::CallerRotated`]. The audit actor is the caller's key id.
    ///
    /// ```
    /// use keygate::Verifier;
    /// use keygate::key::{Environment, KeyScheme};
    /// use keygate::lifecycle::{BoundViolation, KeyManager, ManageError, NewKey};
    /// use keygate::store::MemoryStore;
    /// use keygate::request::RequestHead;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let store = MemoryStore::new();
    /// let scheme = KeyScheme::default();
    /// let verifier = Verifier::builder(store.clone()).scheme(scheme.clone()).build();
    /// let manager = KeyManager::builder(store).scheme(scheme).build();
    /// let live_admin = manager.issue("setup", "acme", NewKey::new("admin", ["admin"])).await.unwrap();
    /// let test = |name| NewKey::new(name, ["admin"]).environment(Environment::Test);
    /// let sandbox_admin = manager.issue("setup", "acme", test("sandbox admin")).await.unwrap();
    /// let ci = manager.issue("setup", "acme", test("ci")).await.unwrap();
    ///
    /// // The authenticated caller, as the layer hands it to a handler.
    /// let request = http::Request::get("/").header("x-api-key", sandbox_admin.key.expose_secret()).body(()).unwrap();
    /// let caller = verifier.verify(&RequestHead::from(&request), None).await.unwrap();
    ///
    /// assert!(matches!(
    ///     manager.revoke_as(&caller, &live_admin.info.id).await,
    ///     Err(ManageError::BeyondBounds(BoundViolation::Environment))
    /// ));
    /// assert!(manager.revoke_as(&caller, &ci.info.id).await.is_ok());
    /// assert_eq!(manager.list("acme").await.unwrap().len(), 2);
    /// # }
    /// ```
    pub async fn revoke_as(&self, caller: &Tenant, key_id: &str) -> Result<(), ManageError> {
        may_manage(caller)?;
        self.within_bounds_of(caller, key_id).await?;
        self.revoke(caller.key_id(), caller.tenant_id(), key_id)
            .await
    }

    /// `Ok` when the active key `key_id` of `caller`'s tenant lies inside `caller`'s bounds:
    /// one it could have issued. The check reads before the write and writes nothing, which is
    /// enough: no [`ManagedKeyStore`] call changes what it compares (environment, scopes,
    /// restrictions, expiry) for a key id; a rotation gives the successor an id of its own.
    async fn within_bounds_of(&self, caller: &Tenant, key_id: &str) -> Result<(), ManageError> {
        let target = self
            .bounded(self.inner.store.get(caller.tenant_id(), key_id, self.now()))
            .await?
            .ok_or(ManageError::NotFound)?;
        KeyBounds::of_tenant(caller).contains(&KeyBounds::of(&target, None))?;
        Ok(())
    }

    fn validate_scopes(&self, names: &[String]) -> Result<Scopes, ManageError> {
        if names.is_empty() {
            return Err(ManageError::NoScopes);
        }
        if names.len() > MAX_SCOPES {
            return Err(ManageError::TooManyScopes { max: MAX_SCOPES });
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

    /// Runs a change and its audit event in a task of their own, so that a caller that stops
    /// waiting cannot cancel the change between the store write and its audit event.
    async fn commit<T: Send + 'static>(
        &self,
        change: impl Future<Output = Result<T, ManageError>> + Send + 'static,
    ) -> Result<T, ManageError> {
        tokio::spawn(change)
            .await
            .map_err(|e| ManageError::Store(StoreError::backend(e)))?
    }

    /// Takes back a key whose secret never reached its holder (printing it failed, the
    /// response that carried it was lost): the key is revoked and, if it came from
    /// [`rotate`](KeyManager::rotate), the key it replaced is active again, as before the
    /// rotation. One [`AuditAction::Withdraw`] event names the key taken back.
    ///
    /// [`ManageError::NotFound`], and nothing written, when the key is no longer active
    /// (revoked since), or, for a rotation, when either key has changed since (revoked,
    /// rotated again). An issued key rotated since with a grace period is still revoked,
    /// ending that grace period: nobody holds its secret. On a store that cannot undo a rotation
    /// ([`ManagedKeyStore::undo_rotate`] left at its default) the new key is revoked, the
    /// replaced one stays rotated, and the answer is [`ManageError::Store`] with
    /// [`StoreError::Unsupported`]. A withdrawal the store commits after the store timeout
    /// (answered with [`StoreError::Timeout`]) stands, and gets its audit event then.
    ///
    /// ```
    /// use keygate::lifecycle::{KeyManager, NewKey, ManageError};
    /// use keygate::store::{KeyStore, MemoryStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ManageError> {
    /// let store = MemoryStore::new();
    /// let manager = KeyManager::builder(store.clone()).build();
    /// let old = manager.issue("ops", "acme", NewKey::new("ci", ["read"])).await?;
    /// let new = manager.rotate("ops", "acme", &old.info.id, None).await?;
    /// // Showing `new.key` to its holder failed: the rotation is taken back.
    /// manager.withdraw("ops", "acme", &new).await?;
    /// assert_eq!(manager.get("acme", &old.info.id).await?.revoked_at, None);
    /// assert!(matches!(manager.get("acme", &new.info.id).await, Err(ManageError::NotFound)));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn withdraw(
        &self,
        actor: &str,
        tenant_id: &str,
        issued: &IssuedKey,
    ) -> Result<(), ManageError> {
        let taken_back = LateWrite {
            actor: actor.to_owned(),
            tenant_id: tenant_id.to_owned(),
            key: issued.info.clone(),
            rotated: issued.replaced.clone(),
        };
        let manager = self.clone();
        let undone = self
            .commit(async move {
                // The undo hands its `LateWrite` back with its answer, to whichever of the two
                // paths below gets that answer: no copy of it is kept for the other.
                let undo = {
                    let manager = manager.clone();
                    async move {
                        let undone = taken_back.try_undo(&manager).await?;
                        Ok((taken_back, undone))
                    }
                };
                // Seen through, as a revocation is: a withdrawal that lands after the timeout
                // stands, and the audit trail must still say why the key is revoked.
                let late_manager = manager.clone();
                let (taken_back, undone) = manager
                    .seen_through(
                        undo,
                        move |(late, undone): (LateWrite, Undone)| async move {
                            if undone != Undone::Not {
                                let (actor, tenant_id) = (&late.actor, &late.tenant_id);
                                late_manager
                                    .audit_late(actor, tenant_id, AuditAction::Withdraw, &late.key)
                                    .await;
                            }
                        },
                    )
                    .await?;
                if undone != Undone::Not {
                    let (actor, tenant_id) = (&taken_back.actor, &taken_back.tenant_id);
                    manager
                        .audit(actor, tenant_id, AuditAction::Withdraw, &taken_back.key)
                        .await;
                }
                Ok(undone)
            })
            .await?;
        match undone {
            Undone::Whole => Ok(()),
            Undone::SuccessorOnly => Err(StoreError::Unsupported.into()),
            Undone::Not => Err(ManageError::NotFound),
        }
    }

    /// A write, bounded by the store timeout for its caller but seen through to the store's
    /// answer: a store may commit a write it was slow to confirm (a cache runs writes in a
    /// task of their own; a database may have received the commit), after the caller was told
    /// it failed. Such a write goes to `late` when it lands: an issue or a rotation is taken
    /// back there ([`LateWrite::undo`]), since nobody got its secret; any other change stands
    /// and gets its audit event.
    async fn seen_through<T, F>(
        &self,
        write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
        late: impl FnOnce(T) -> F + Send + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = ()> + Send,
    {
        let mut task = tokio::spawn(write);
        match tokio::time::timeout(self.inner.store_timeout, &mut task).await {
            Ok(joined) => joined.unwrap_or_else(|e| Err(StoreError::backend(e))),
            Err(_) => {
                // Not bounded: until the store answers, the write may still commit.
                tokio::spawn(async move {
                    if let Ok(Ok(landed)) = task.await {
                        late(landed).await;
                    }
                });
                Err(StoreError::Timeout)
            }
        }
    }

    /// What a rename or a revocation that lands late does: it stands, and is audited.
    fn stands(
        &self,
        actor: &str,
        tenant_id: &str,
        action: AuditAction,
    ) -> impl FnOnce(Option<KeyRecord>) -> BoxFuture<'static, ()> + Send + 'static {
        let (manager, actor, tenant_id) = (self.clone(), actor.to_owned(), tenant_id.to_owned());
        move |landed| {
            Box::pin(async move {
                if let Some(record) = landed {
                    let key = KeyInfo::from(&record);
                    manager.audit_late(&actor, &tenant_id, action, &key).await;
                }
            })
        }
    }

    /// The audit event of a change that committed after its caller was told it failed, and
    /// stands (it hands out no secret).
    async fn audit_late(&self, actor: &str, tenant_id: &str, action: AuditAction, key: &KeyInfo) {
        tracing::warn!(target: "keygate::lifecycle", key_id = %key.id, action = %action, "a change committed after its caller was told it failed; it stands");
        self.audit(actor, tenant_id, action, key).await;
    }

    /// A store call, bounded by the store timeout.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.inner.store_timeout, call)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }

    async fn audit(&self, actor: &str, tenant_id: &str, action: AuditAction, key: &KeyInfo) {
        let event = AuditEvent {
            at: self.now(),
            actor: actor.to_owned(),
            tenant_id: tenant_id.to_owned(),
            action,
            key_id: key.id.clone(),
            key_prefix: key.prefix.clone(),
        };
        // The change is made; a failing audit sink must not make it look undone.
        let recorded =
            tokio::time::timeout(self.inner.store_timeout, self.inner.audit.record(&event))
                .await
                .unwrap_or(Err(BackendError::Timeout));
        if let Err(error) = recorded {
            tracing::error!(target: "keygate::audit", %error, action = %action, key_id = %key.id, "audit sink failed");
        }
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a write that hands out a secret made, when it may land after its caller was told it
/// failed.
struct LateWrite {
    actor: String,
    tenant_id: String,
    /// The key made, whose secret nobody holds.
    key: KeyInfo,
    /// For a rotation: the key replaced, and the end its rotation gave it.
    rotated: Option<(KeyInfo, OffsetDateTime)>,
}

/// How often a late write's undo is tried, a store timeout apart: the store that was too slow
/// for the write may be slow for its undo too.
const UNDO_ATTEMPTS: u32 = 3;

/// How far a late write was taken back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Undone {
    /// All of it: the new key is revoked (and a rotated key active again).
    Whole,
    /// The new key is revoked, but the store cannot undo a rotation: the old key stays rotated.
    SuccessorOnly,
    /// Not at all: the keys changed since, or the store kept failing.
    Not,
}

impl LateWrite {
    /// Takes the write back. Nobody waits for this, so the store's answers are awaited, not
    /// bounded by the store timeout: a call abandoned here could land late in turn. What cannot
    /// be taken back is logged, with key ids only; the audit trail records what the store
    /// holds.
    async fn undo(self, manager: &KeyManager) {
        for attempt in 1..=UNDO_ATTEMPTS {
            match self.try_undo(manager).await {
                Ok(undone) => return self.record(manager, undone).await,
                Err(error) if attempt < UNDO_ATTEMPTS => {
                    tracing::warn!(target: "keygate::lifecycle", %error, key_id = %self.key.id, attempt, "undoing a write that committed after its caller was told it failed: the store failed, trying again");
                    tokio::time::sleep(manager.inner.store_timeout).await;
                }
                Err(error) => {
                    tracing::error!(target: "keygate::lifecycle", %error, key_id = %self.key.id, "undoing a write that committed after its caller was told it failed: the store kept failing");
                    return self.record(manager, Undone::Not).await;
                }
            }
        }
    }

    async fn try_undo(&self, manager: &KeyManager) -> Result<Undone, StoreError> {
        let store = &manager.inner.store;
        let (tenant_id, key_id) = (self.tenant_id.as_str(), self.key.id.as_str());
        let now = manager.now();
        let revoke_new = async {
            let revoked = store.revoke(tenant_id, key_id, now).await?;
            Ok::<_, StoreError>(revoked.is_some())
        };
        let Some((old, old_until)) = &self.rotated else {
            return Ok(if revoke_new.await? {
                Undone::Whole
            } else {
                Undone::Not
            });
        };
        match store
            .undo_rotate(tenant_id, &old.id, *old_until, key_id, now)
            .await
        {
            Ok(undone) => Ok(if undone.is_some() {
                Undone::Whole
            } else {
                Undone::Not
            }),
            Err(StoreError::Unsupported) => Ok(if revoke_new.await? {
                Undone::SuccessorOnly
            } else {
                Undone::Not
            }),
            Err(e) => Err(e),
        }
    }

    /// Logs the outcome and writes the audit events of what the store now holds: the rotation
    /// if it stands, the new key's issue, and its revocation if it was revoked.
    async fn record(&self, manager: &KeyManager, undone: Undone) {
        let (actor, tenant_id, key) = (&self.actor, &self.tenant_id, &self.key);
        match undone {
            Undone::Whole => {
                tracing::warn!(target: "keygate::lifecycle", key_id = %key.id, "a write that committed after its caller was told it failed was undone")
            }
            Undone::SuccessorOnly => {
                tracing::error!(target: "keygate::lifecycle", key_id = %key.id, "a rotation committed after its caller was told it failed, and the store cannot undo a rotation: its successor is revoked, the old key stays rotated")
            }
            Undone::Not => {
                tracing::error!(target: "keygate::lifecycle", key_id = %key.id, "a write that committed after its caller was told it failed was not undone; nobody holds its key's secret")
            }
        }
        if let Some((old, _)) = &self.rotated
            && undone != Undone::Whole
        {
            manager
                .audit(actor, tenant_id, AuditAction::Rotate, old)
                .await;
        }
        manager
            .audit(actor, tenant_id, AuditAction::Issue, key)
            .await;
        if undone != Undone::Not {
            manager
                .audit(actor, tenant_id, AuditAction::Revoke, key)
                .await;
        }
    }
}

/// What [`KeyManager::check`] gives back: the name trimmed, the scopes parsed, the
/// restrictions normalized.
struct Checked {
    name: String,
    scopes: Scopes,
    restrictions: Restrictions,
}

/// Whether `caller` may manage keys at all: a key in its rotation grace period still
/// authenticates, but it must not act on its successor or issue keys.
pub(crate) fn may_manage(caller: &Tenant) -> Result<(), ManageError> {
    if caller.key().revoked_at.is_some() {
        return Err(ManageError::CallerRotated);
    }
    Ok(())
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
            .field("scheme", &self.inner.scheme)
            .field("known_scopes", &self.inner.known_scopes)
            .field("max_active", &self.inner.max_active)
            .field("store_timeout", &self.inner.store_timeout)
            .finish_non_exhaustive()
    }
}

impl KeyManagerBuilder {
    /// The key scheme (format and hasher) of issued keys: give the
    /// [`Verifier`](crate::Verifier) that checks them the same one.
    pub fn scheme(mut self, scheme: KeyScheme) -> Self {
        self.inner.scheme = scheme;
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

    /// How long each store call (and each audit write) may take before the operation fails
    /// with [`StoreError::Timeout`] (the management API answers 503); default 2 seconds, like
    /// the verifier's.
    pub fn store_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.inner.store_timeout = timeout;
        self
    }

    /// The clock the manager reads now from (default: the system clock): the creation time of
    /// issued keys, the earliest expiry it accepts, revocation times, the end of rotation grace
    /// periods, which keys are active, audit event times. Give the
    /// [`Verifier`](crate::Verifier) the same clock; for tests that move time, such as a
    /// [`ManualClock`](crate::limit::ManualClock) standing at or after the real time (stores
    /// judge a write at the later of the caller's time and their own clock).
    ///
    /// ```
    /// use keygate::{Verifier, lifecycle::KeyManager, limit::ManualClock, store::MemoryStore};
    ///
    /// // 2033: ahead of the real time, as a manual clock must be.
    /// let clock = ManualClock::at_unix_secs(2_000_000_000);
    /// let store = MemoryStore::new();
    /// let verifier = Verifier::builder(store.clone()).clock(clock.clone()).build();
    /// let manager = KeyManager::builder(store).clock(clock).build();
    /// # let _ = (verifier, manager);
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.inner.clock = Some(Arc::new(clock));
        self
    }

    /// Finishes the configuration.
    pub fn build(self) -> KeyManager {
        KeyManager {
            inner: Arc::new(self.inner),
        }
    }
}
