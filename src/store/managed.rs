use async_trait::async_trait;
use time::OffsetDateTime;

use super::KeyStore;
use super::error::StoreError;
use super::record::KeyRecord;

/// A store that can also manage keys: what the lifecycle API and the management HTTP API use.
///
/// Every method is scoped by tenant: a key id of another tenant behaves exactly like an unknown
/// id. Each method is one atomic step in the backend, so concurrent calls never leave a key
/// half-changed.
///
/// # Active keys
/// A key is *active at* a time `t` when its `revoked_at` is unset or later than `t` and its
/// `expires_at` is unset or later than `t` ([`KeyRecord::is_active_at`]). A key in a rotation
/// grace period is active (its `revoked_at` lies in the future) and counts against the
/// `max_active` cap of [`insert`](Self::insert) and [`rotate`](Self::rotate).
/// [`get`](Self::get), [`list`](Self::list) and the cap count only active keys; revoked and
/// expired records stay in the store (so that [`find`](KeyStore::find) can name them).
///
/// The cap is checked in the same atomic step as the write: concurrent inserts never leave
/// more than `max_active` active keys. [`insert`](Self::insert) counts the keys active at
/// `record.created_at`; [`rotate`](Self::rotate) counts at its judged time (see
/// [Times](ManagedKeyStore#times)) and only when it keeps the old key active beside its
/// successor. A refusal is [`StoreError::ActiveKeyLimit`] carrying the `max_active` the call
/// was given, not the current count.
///
/// # Times
/// `now` is the caller's clock, read before the call. [`rename`](Self::rename),
/// [`revoke`](Self::revoke) and [`rotate`](Self::rotate) judge the key at the later of `now`
/// and the store's own clock read once it holds its lock (or inside its serialised
/// transaction): a call that waited for the lock must still see a write that committed before
/// it, such as a revocation stamped after this call's `now`.
///
/// Every time given to a store, in a record or as `now`, must lie within
/// [`MIN_TIME`](super::MIN_TIME)..=[`MAX_TIME`](super::MAX_TIME) (the range of signed 64-bit
/// nanoseconds since the Unix epoch, which is how keygate's SQL stores keep times); any other
/// is refused with [`StoreError::TimeOutOfRange`] and nothing is written. A stored time comes
/// back as written (the conformance suite writes times truncated to the microsecond).
///
/// # Atomicity
/// Each call is one atomic step. In particular, of concurrent rotations of one key exactly
/// one succeeds and leaves exactly one successor (the others answer
/// [`StoreError::AlreadyRotated`] or `Ok(None)`), and a revocation racing a rotation either
/// follows it (and ends the old key at once) or precedes it (and the rotation answers
/// `Ok(None)`, writing nothing).
///
/// The [`conformance`](super::conformance) suite checks all of this, concurrency included.
///
/// # Example
/// A store that wraps another and refuses to issue keys for a closed tenant; everything else
/// is passed through, so the inner store's atomicity carries over.
///
/// ```
/// use keygate::hash::KeyDigest;
/// use keygate::store::{
///     KeyRecord, KeyStore, Lookup, ManagedKeyStore, MemoryStore, StoreError, conformance,
/// };
/// use time::OffsetDateTime;
///
/// #[derive(Clone)]
/// struct NoIssueFor<S> {
///     inner: S,
///     closed_tenant: String,
/// }
///
/// #[keygate::async_trait]
/// impl<S: KeyStore> KeyStore for NoIssueFor<S> {
///     async fn find(&self, digest: &KeyDigest) -> Lookup {
///         self.inner.find(digest).await
///     }
///     fn find_now(&self, digest: &KeyDigest) -> Option<Lookup> {
///         self.inner.find_now(digest)
///     }
/// }
///
/// #[keygate::async_trait]
/// impl<S: ManagedKeyStore> ManagedKeyStore for NoIssueFor<S> {
///     async fn insert(&self, record: KeyRecord, max_active: Option<usize>) -> Result<(), StoreError> {
///         if record.tenant_id == self.closed_tenant {
///             return Err(StoreError::Conflict("the tenant is closed".into()));
///         }
///         self.inner.insert(record, max_active).await
///     }
///     async fn get(&self, tenant: &str, id: &str, now: OffsetDateTime)
///         -> Result<Option<KeyRecord>, StoreError> {
///         self.inner.get(tenant, id, now).await
///     }
///     async fn list(&self, tenant: &str, now: OffsetDateTime)
///         -> Result<Vec<KeyRecord>, StoreError> {
///         self.inner.list(tenant, now).await
///     }
///     async fn rename(&self, tenant: &str, id: &str, name: &str, now: OffsetDateTime)
///         -> Result<Option<KeyRecord>, StoreError> {
///         self.inner.rename(tenant, id, name, now).await
///     }
///     async fn revoke(&self, tenant: &str, id: &str, now: OffsetDateTime)
///         -> Result<Option<KeyRecord>, StoreError> {
///         self.inner.revoke(tenant, id, now).await
///     }
///     async fn rotate(&self, tenant: &str, id: &str, replacement: KeyRecord,
///         old_until: OffsetDateTime, now: OffsetDateTime, max_active: Option<usize>)
///         -> Result<Option<KeyRecord>, StoreError> {
///         self.inner.rotate(tenant, id, replacement, old_until, now, max_active).await
///     }
///     async fn touch(&self, used: &[(String, OffsetDateTime)]) -> Result<(), StoreError> {
///         self.inner.touch(used).await
///     }
///     async fn undo_rotate(&self, tenant: &str, id: &str, old_until: OffsetDateTime,
///         successor: &str, now: OffsetDateTime)
///         -> Result<Option<(KeyRecord, KeyRecord)>, StoreError> {
///         self.inner.undo_rotate(tenant, id, old_until, successor, now).await
///     }
/// }
///
/// # #[tokio::main]
/// # async fn main() {
/// let store = || async {
///     NoIssueFor { inner: MemoryStore::new(), closed_tenant: "closed".to_owned() }
/// };
/// conformance::run_all(store).await;
/// # }
/// ```
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

    /// Renames an active key; `None` when there is no such active key (judged as described in
    /// [Times](ManagedKeyStore#times)).
    async fn rename(
        &self,
        tenant_id: &str,
        key_id: &str,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// Revokes an active key as of `now` (its `revoked_at` becomes `now`); `None` when there is
    /// no such active key (judged as described in [Times](ManagedKeyStore#times)). A key in a
    /// rotation grace period is active: revoking it ends the grace period.
    async fn revoke(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// Replaces a key, in one atomic step: checks that `key_id` is active and has never been
    /// replaced or revoked (no `revoked_at` at all), sets its `revoked_at` to `old_until` (`now`
    /// for an immediate cut-over, later for a grace period) and inserts `replacement`. Returns
    /// the old record as updated.
    ///
    /// - `Ok(None)`: no such active key for the tenant (unknown, revoked, expired, another
    ///   tenant's). Nothing is written.
    /// - [`StoreError::AlreadyRotated`]: the key is in a rotation grace period (`revoked_at`
    ///   still to come): it has been replaced already, and only its successor may be rotated.
    /// - [`StoreError::ActiveKeyLimit`] carrying `max_active`: with a grace period
    ///   (`old_until` later than the judged time) the old key stays active beside its
    ///   successor, so the tenant's active keys, the old key included, must number fewer than
    ///   `max_active`. Without grace the count does not grow and is not checked.
    /// - [`StoreError::Conflict`]: the replacement's id or digest exists.
    ///
    /// Of concurrent rotations of one key exactly one succeeds; of a rotation and a revocation
    /// racing, either the rotation comes first (the revocation then ends the old key) or the
    /// revocation does and the rotation answers `Ok(None)`: never a successor for a key revoked
    /// before it.
    async fn rotate(
        &self,
        tenant_id: &str,
        key_id: &str,
        replacement: KeyRecord,
        old_until: OffsetDateTime,
        now: OffsetDateTime,
        max_active: Option<usize>,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// Takes a rotation back, in one atomic step: when `key_id` still has the `revoked_at` its
    /// rotation gave it (`old_until`) and `successor_id` has never been revoked or replaced,
    /// revokes the successor as of the judged time (see [Times](ManagedKeyStore#times)) and
    /// makes `key_id` active again (no `revoked_at`). Returns the two records as updated, the
    /// old key first; `Ok(None)` when either has changed since (or is not the tenant's), and
    /// nothing is written.
    ///
    /// [`KeyManager`](crate::lifecycle::KeyManager) calls it only for a rotation that
    /// committed after its caller was told it failed (the store answered after the manager's
    /// store timeout): the caller never got the successor's secret, so the rotation is undone
    /// and the failure it was told holds. The old key works again; the successor, whose secret
    /// nobody holds, never will.
    ///
    /// The default answers [`StoreError::Unsupported`]; the manager then revokes the successor
    /// alone and logs that the old key stays rotated.
    async fn undo_rotate(
        &self,
        tenant_id: &str,
        key_id: &str,
        old_until: OffsetDateTime,
        successor_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(KeyRecord, KeyRecord)>, StoreError> {
        let _ = (tenant_id, key_id, old_until, successor_id, now);
        Err(StoreError::Unsupported)
    }

    /// Records last-used times, a batch at a time; an unknown id is ignored. A time earlier
    /// than the stored one never moves it back. A batch with a time out of range is refused
    /// whole.
    async fn touch(&self, used: &[(String, OffsetDateTime)]) -> Result<(), StoreError>;
}

/// Names the trait object, for the `Debug` of types that hold a store.
impl std::fmt::Debug for dyn ManagedKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManagedKeyStore")
    }
}

/// Runs a write through a cache, and the invalidation that follows it inside `write`, in a
/// task of their own: a caller that stops waiting (a timeout, a client gone) cannot leave the
/// write committed and the cache not told. `if_lost` runs when the task ends without an answer
/// (it panicked): whether the write committed is unknown, so the caller forgets what it might
/// have changed.
pub(crate) async fn write_detached<T: Send + 'static>(
    write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    if_lost: impl FnOnce(),
) -> Result<T, StoreError> {
    tokio::spawn(write).await.unwrap_or_else(|e| {
        if_lost();
        Err(StoreError::backend(e))
    })
}
