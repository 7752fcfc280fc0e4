use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::error::StoreError;
use super::managed::ManagedKeyStore;
use super::record::KeyRecord;
use super::{KeyStore, Lookup, check_record_times, check_time, judged_at};
use crate::hash::{DigestHasher, KeyDigest};

/// Keys in process memory: for tests, small services, and as a model for other stores.
///
/// Lookups take a read lock and clone an `Arc`; changes take effect for the very next request.
///
/// ```
/// use keygate::store::MemoryStore;
///
/// let store = MemoryStore::new();
/// assert_eq!(store.len(), 0);
/// ```
#[derive(Default, Clone)]
pub struct MemoryStore {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default)]
struct Inner {
    by_digest: HashMap<KeyDigest, Arc<KeyRecord>, BuildHasherDefault<DigestHasher>>,
    by_id: HashMap<String, KeyDigest>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// The number of records, revoked and expired ones included.
    pub fn len(&self) -> usize {
        self.read().by_digest.len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts or replaces a record directly, bypassing every check; for tests, seeding and
    /// imports of keys issued elsewhere.
    pub fn put(&self, record: KeyRecord) {
        let mut inner = self.write();
        if let Some(old) = inner.by_id.insert(record.id.clone(), record.digest) {
            inner.by_digest.remove(&old);
        }
        inner.by_digest.insert(record.digest, Arc::new(record));
    }

    /// Reserves room for `additional` more keys.
    pub fn reserve(&self, additional: usize) {
        let mut inner = self.write();
        inner.by_digest.reserve(additional);
        inner.by_id.reserve(additional);
    }

    // A poisoned lock only means another thread panicked mid-update; each update replaces whole
    // entries, so the data is still consistent and serving it beats failing every request.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// The tenant's record `key_id`, active or not.
    fn tenant_record(&self, tenant_id: &str, key_id: &str) -> Option<&Arc<KeyRecord>> {
        let digest = self.by_id.get(key_id)?;
        self.by_digest
            .get(digest)
            .filter(|r| r.tenant_id == tenant_id)
    }

    fn tenant_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Option<&Arc<KeyRecord>> {
        self.tenant_record(tenant_id, key_id)
            .filter(|r| r.is_active_at(now))
    }

    fn update(
        &mut self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
        change: impl FnOnce(&mut KeyRecord),
    ) -> Option<KeyRecord> {
        let mut record = KeyRecord::clone(self.tenant_key(tenant_id, key_id, now)?);
        change(&mut record);
        self.by_digest
            .insert(record.digest, Arc::new(record.clone()));
        Some(record)
    }

    fn active_count(&self, tenant_id: &str, now: OffsetDateTime) -> usize {
        self.by_digest
            .values()
            .filter(|r| r.tenant_id == tenant_id && r.is_active_at(now))
            .count()
    }

    fn check_new(&self, record: &KeyRecord) -> Result<(), StoreError> {
        if self.by_id.contains_key(&record.id) {
            return Err(StoreError::Conflict(format!("key id {} exists", record.id)));
        }
        if self.by_digest.contains_key(&record.digest) {
            return Err(StoreError::Conflict("key digest exists".into()));
        }
        Ok(())
    }

    fn add(&mut self, record: KeyRecord) {
        self.by_id.insert(record.id.clone(), record.digest);
        self.by_digest.insert(record.digest, Arc::new(record));
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn find(&self, digest: &KeyDigest) -> Lookup {
        Ok(self.read().by_digest.get(digest).cloned())
    }

    fn find_now(&self, digest: &KeyDigest) -> Option<Lookup> {
        Some(Ok(self.read().by_digest.get(digest).cloned()))
    }
}

#[async_trait]
impl ManagedKeyStore for MemoryStore {
    async fn insert(&self, record: KeyRecord, max_active: Option<usize>) -> Result<(), StoreError> {
        check_record_times(&record)?;
        let mut inner = self.write();
        inner.check_new(&record)?;
        if let Some(max) = max_active
            && inner.active_count(&record.tenant_id, record.created_at) >= max
        {
            return Err(StoreError::ActiveKeyLimit(max));
        }
        inner.add(record);
        Ok(())
    }

    async fn get(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        check_time(now)?;
        Ok(self
            .read()
            .tenant_key(tenant_id, key_id, now)
            .map(|r| KeyRecord::clone(r)))
    }

    async fn list(
        &self,
        tenant_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        check_time(now)?;
        let mut keys: Vec<KeyRecord> = self
            .read()
            .by_digest
            .values()
            .filter(|r| r.tenant_id == tenant_id && r.is_active_at(now))
            .map(|r| KeyRecord::clone(r))
            .collect();
        keys.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(keys)
    }

    async fn rename(
        &self,
        tenant_id: &str,
        key_id: &str,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        check_time(now)?;
        let mut inner = self.write();
        Ok(inner.update(tenant_id, key_id, judged_at(now), |r| {
            r.name = name.to_owned()
        }))
    }

    async fn revoke(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        check_time(now)?;
        let mut inner = self.write();
        Ok(inner.update(tenant_id, key_id, judged_at(now), |r| {
            r.revoked_at = Some(now)
        }))
    }

    async fn rotate(
        &self,
        tenant_id: &str,
        key_id: &str,
        replacement: KeyRecord,
        old_until: OffsetDateTime,
        now: OffsetDateTime,
        max_active: Option<usize>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        check_record_times(&replacement)?;
        check_time(old_until)?;
        check_time(now)?;
        // Everything is judged under the write lock, so two rotations, or a rotation and a
        // revocation, of one key cannot both see it unreplaced.
        let mut inner = self.write();
        let at = judged_at(now);
        let Some(old) = inner.tenant_key(tenant_id, key_id, at) else {
            return Ok(None);
        };
        if old.revoked_at.is_some() {
            return Err(StoreError::AlreadyRotated);
        }
        if let Some(max) = max_active {
            // With grace the old key stays active beside its successor; without, the count
            // does not grow.
            if old_until > at && inner.active_count(tenant_id, at) >= max {
                return Err(StoreError::ActiveKeyLimit(max));
            }
        }
        inner.check_new(&replacement)?;
        let old = inner.update(tenant_id, key_id, at, |r| r.revoked_at = Some(old_until));
        inner.add(replacement);
        Ok(old)
    }

    async fn undo_rotate(
        &self,
        tenant_id: &str,
        key_id: &str,
        old_until: OffsetDateTime,
        successor_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(KeyRecord, KeyRecord)>, StoreError> {
        check_time(old_until)?;
        check_time(now)?;
        let mut inner = self.write();
        let at = judged_at(now);
        let (Some(old), Some(successor)) = (
            inner.tenant_record(tenant_id, key_id),
            inner.tenant_record(tenant_id, successor_id),
        ) else {
            return Ok(None);
        };
        if old.revoked_at != Some(old_until) || successor.revoked_at.is_some() {
            return Ok(None);
        }
        let mut old = KeyRecord::clone(old);
        let mut successor = KeyRecord::clone(successor);
        old.revoked_at = None;
        successor.revoked_at = Some(at);
        inner.by_digest.insert(old.digest, Arc::new(old.clone()));
        inner
            .by_digest
            .insert(successor.digest, Arc::new(successor.clone()));
        Ok(Some((old, successor)))
    }

    async fn touch(&self, used: &[(String, OffsetDateTime)]) -> Result<(), StoreError> {
        // The whole batch or nothing.
        for (_, at) in used {
            check_time(*at)?;
        }
        let mut inner = self.write();
        for (id, at) in used {
            let Some(digest) = inner.by_id.get(id).copied() else {
                continue;
            };
            if let Some(record) = inner.by_digest.get_mut(&digest)
                && record.last_used_at.is_none_or(|t| t < *at)
            {
                Arc::make_mut(record).last_used_at = Some(*at);
            }
        }
        Ok(())
    }
}
