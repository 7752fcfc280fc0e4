use async_trait::async_trait;
use time::OffsetDateTime;

use super::{KeyRecord, KeyStore, StoreError};

/// A store that can also manage keys: what the lifecycle API and the management HTTP API use.
///
/// Every method is scoped by tenant: a key id of another tenant behaves exactly like an unknown
/// id. Each method is one atomic step in the backend, so concurrent calls never leave a key
/// half-changed.
#[async_trait]
pub trait ManagedKeyStore: KeyStore {
    /// Inserts a new record. Fails with [`StoreError::Conflict`] when the id or digest exists,
    /// and with [`StoreError::ActiveKeyLimit`] when `max_active` is set and the tenant already
    /// has that many active keys at `record.created_at` (checked atomically with the insert).
    async fn insert(&self, record: KeyRecord, max_active: Option<usize>) -> Result<(), StoreError>;

    /// One key of a tenant, if it is active at `now`.
    async fn get(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// A tenant's keys active at `now`, oldest first (ties broken by id).
    async fn list(
        &self,
        tenant_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<KeyRecord>, StoreError>;

    /// Renames an active key; `None` when there is no such active key.
    async fn rename(
        &self,
        tenant_id: &str,
        key_id: &str,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// Revokes an active key as of `now`; `None` when there is no such active key.
    async fn revoke(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// In one atomic step: checks that `key_id` is active at `now`, sets its revocation time to
    /// `old_until` (`now` for an immediate cut-over, later for a grace period) and inserts
    /// `replacement`. Returns the old record as updated, `None` when there is no such key.
    async fn rotate(
        &self,
        tenant_id: &str,
        key_id: &str,
        replacement: KeyRecord,
        old_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// Records last-used times, a batch at a time; an unknown id is ignored. A time earlier
    /// than the stored one never moves it back.
    async fn touch(&self, used: &[(String, OffsetDateTime)]) -> Result<(), StoreError>;
}
