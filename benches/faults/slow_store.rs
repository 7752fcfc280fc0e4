//! A store that answers slowly while switched to: the stand-in for a database that is up but
//! overloaded, answering after keygate has stopped waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keygate::hash::KeyDigest;
use keygate::store::{KeyStore, Lookup};

/// `inner`, with every lookup delayed by `delay` while [`SlowStore::set_slow`] is on.
#[derive(Clone)]
pub(crate) struct SlowStore<S> {
    inner: S,
    slow: Arc<AtomicBool>,
    delay: Duration,
}

impl<S> SlowStore<S> {
    pub(crate) fn new(inner: S, delay: Duration) -> Self {
        SlowStore {
            inner,
            slow: Arc::default(),
            delay,
        }
    }

    /// Turns the delay on or off for every clone; lookups already waiting keep their delay.
    pub(crate) fn set_slow(&self, slow: bool) {
        self.slow.store(slow, Ordering::SeqCst);
    }
}

#[keygate::async_trait]
impl<S: KeyStore> KeyStore for SlowStore<S> {
    async fn find(&self, digest: &KeyDigest) -> Lookup {
        if self.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.find(digest).await
    }
}
