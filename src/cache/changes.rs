//! Change notifications: what a cache must forget, and a fan-out that hands each change to
//! every cache that subscribed.

use std::sync::{Arc, RwLock};

use crate::hash::KeyDigest;

/// One change a cache must take into account.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The record of the key with this digest changed (issued, renamed, revoked, rotated):
    /// forget it, and any note that the key is unknown.
    Key(KeyDigest),
    /// A tenant's status or plan changed: forget its entitlements.
    Tenant(String),
    /// Changes may have been missed: forget everything.
    Flush,
}

/// A cache that forgets what a [`Change`] makes stale: [`CachedStore`](super::CachedStore)
/// (key changes), [`CachedEntitlements`](crate::plan::CachedEntitlements) (tenant changes),
/// and [`ChangeFeed`] (hands the change on).
///
/// ```
/// use keygate::cache::{CachedStore, Change, Invalidate};
/// use keygate::store::MemoryStore;
///
/// let cache = CachedStore::new(MemoryStore::new());
/// cache.invalidate(&Change::Flush);
/// assert!(cache.is_empty());
/// ```
pub trait Invalidate: Send + Sync + 'static {
    /// Forgets what `change` makes stale. Must not block for long: a listener calls it for
    /// every notification.
    fn invalidate(&self, change: &Change);
}

impl<T: Invalidate + ?Sized> Invalidate for Arc<T> {
    fn invalidate(&self, change: &Change) {
        (**self).invalidate(change)
    }
}

/// Hands every change to each cache that subscribed. Cheap to clone; clones share the
/// subscribers.
///
/// ```
/// use std::time::Duration;
/// use keygate::cache::{CachedStore, Change, ChangeFeed, Invalidate};
/// use keygate::plan::{CachedEntitlements, MemoryEntitlements};
/// use keygate::store::MemoryStore;
///
/// let feed = ChangeFeed::new();
/// feed.subscribe(CachedStore::new(MemoryStore::new()));
/// feed.subscribe(CachedEntitlements::new(MemoryEntitlements::new(), Duration::from_secs(30)));
/// feed.invalidate(&Change::Tenant("acme".into()));
/// ```
#[derive(Clone, Default)]
pub struct ChangeFeed {
    subscribers: Arc<RwLock<Vec<Arc<dyn Invalidate>>>>,
}

impl ChangeFeed {
    /// A feed with no subscriber.
    pub fn new() -> Self {
        ChangeFeed::default()
    }

    /// Hands every later change to `cache` too.
    pub fn subscribe(&self, cache: impl Invalidate) {
        self.subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(cache));
    }

    /// The number of subscribers.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether nothing subscribed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<dyn Invalidate>>> {
        self.subscribers.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Invalidate for ChangeFeed {
    fn invalidate(&self, change: &Change) {
        for cache in self.read().iter() {
            cache.invalidate(change);
        }
    }
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("subscribers", &self.len())
            .finish()
    }
}

/// Tenant changes forget the tenant's answer; key changes concern no plan.
impl<S: crate::plan::EntitlementSource> Invalidate for crate::plan::CachedEntitlements<S> {
    fn invalidate(&self, change: &Change) {
        match change {
            Change::Tenant(tenant_id) => {
                crate::plan::CachedEntitlements::invalidate(self, tenant_id)
            }
            Change::Flush => self.flush(),
            Change::Key(_) => {}
        }
    }
}
