//! Last-used times: noted in memory on the request path, written to the store in the
//! background.
//!
//! The layer notes every accepted key in a [`LastUsedTracker`]
//! ([`AuthLayer::track_last_used`](crate::AuthLayer::track_last_used)); a
//! [`LastUsedFlusher`] writes the notes with [`ManagedKeyStore::touch`], at most once per key
//! per interval, and on shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::store::{ManagedKeyStore, StoreError};

/// Coalesces "key used" notes in memory, so the request path never writes to the store.
///
/// Hand it to [`AuthLayer::track_last_used`](crate::AuthLayer::track_last_used); run
/// [`LastUsedTracker::spawn_flusher`] to write the notes in the background, at most once per
/// key per interval, and call [`LastUsedFlusher::shutdown`] on shutdown to write the rest.
///
/// # What a crash loses
///
/// Notes live in process memory until a flush writes them. A process that stops without
/// [`LastUsedFlusher::shutdown`] (a crash, `SIGKILL`, a power loss) loses the notes taken since
/// the last successful flush: at most one flush interval of uses, longer only while the store
/// is failing (failed flushes keep their notes for the next try, in memory). A stored
/// `last_used_at` is therefore a lower bound: the key was used then, and may have been used
/// up to one interval later (plus any store outage) without a trace. Before treating a key as
/// unused, allow for that margin.
///
/// ```
/// use std::time::Duration;
/// use keygate::last_used::LastUsedTracker;
/// use keygate::store::MemoryStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MemoryStore::new();
/// let tracker = LastUsedTracker::new();
/// let flusher = tracker.spawn_flusher(store.clone(), Duration::from_secs(30));
/// tracker.record("key_123");
/// flusher.shutdown().await.unwrap(); // writes the pending note
/// # }
/// ```
#[derive(Clone, Default)]
pub struct LastUsedTracker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    pending: Mutex<HashMap<String, OffsetDateTime>>,
    // Unix seconds, refreshed every second by the flusher: reading the clock on every request
    // costs more than the rest of the note.
    coarse_now: AtomicI64,
    ticking: AtomicBool,
}

impl std::fmt::Debug for LastUsedTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LastUsedTracker")
            .field("pending", &self.pending_len())
            .finish()
    }
}

impl LastUsedTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        LastUsedTracker::default()
    }

    /// Notes that `key_id` was used now (to the second).
    pub fn record(&self, key_id: &str) {
        let now = if self.inner.ticking.load(Ordering::Relaxed) {
            OffsetDateTime::from_unix_timestamp(self.inner.coarse_now.load(Ordering::Relaxed))
                .unwrap_or_else(|_| OffsetDateTime::now_utc())
        } else {
            OffsetDateTime::now_utc()
        };
        self.record_at(key_id, now);
    }

    /// Notes that `key_id` was used at `at`.
    pub fn record_at(&self, key_id: &str, at: OffsetDateTime) {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(key_id) {
            Some(t) => *t = (*t).max(at),
            None => {
                pending.insert(key_id.to_owned(), at);
            }
        }
    }

    /// The number of keys with an unwritten note.
    pub fn pending_len(&self) -> usize {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Writes every pending note with one [`ManagedKeyStore::touch`] call; returns how many.
    /// On failure the notes are kept for the next flush.
    pub async fn flush(&self, store: &dyn ManagedKeyStore) -> Result<usize, StoreError> {
        let batch: Vec<(String, OffsetDateTime)> = {
            let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match store.touch(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                for (id, at) in batch {
                    self.record_at(&id, at);
                }
                Err(e)
            }
        }
    }

    /// Flushes to `store` every `interval` in a background task, until
    /// [`LastUsedFlusher::shutdown`].
    pub fn spawn_flusher(
        &self,
        store: impl ManagedKeyStore,
        interval: Duration,
    ) -> LastUsedFlusher {
        let tracker = self.clone();
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let store: Arc<dyn ManagedKeyStore> = Arc::new(store);
        let task_store = store.clone();
        tracker.tick();
        tracker.inner.ticking.store(true, Ordering::Relaxed);
        let handle = tokio::spawn(async move {
            let mut clock = tokio::time::interval(Duration::from_secs(1));
            let mut flush = tokio::time::interval(interval);
            flush.tick().await;
            loop {
                tokio::select! {
                    _ = stopped.notified() => break,
                    _ = clock.tick() => tracker.tick(),
                    _ = flush.tick() => {
                        if let Err(error) = tracker.flush(&*task_store).await {
                            tracing::warn!(target: "keygate", %error, "could not write last-used times; will retry");
                        }
                    }
                }
            }
            tracker.inner.ticking.store(false, Ordering::Relaxed);
        });
        LastUsedFlusher {
            tracker: self.clone(),
            store,
            stop,
            handle,
        }
    }

    fn tick(&self) {
        self.inner.coarse_now.store(
            OffsetDateTime::now_utc().unix_timestamp(),
            Ordering::Relaxed,
        );
    }
}

/// The background flusher of a [`LastUsedTracker`].
#[derive(Debug)]
pub struct LastUsedFlusher {
    tracker: LastUsedTracker,
    store: Arc<dyn ManagedKeyStore>,
    stop: Arc<Notify>,
    handle: JoinHandle<()>,
}

impl LastUsedFlusher {
    /// Stops the background task and writes what is still pending.
    pub async fn shutdown(self) -> Result<usize, StoreError> {
        self.stop.notify_one();
        let _ = self.handle.await;
        self.tracker.flush(&*self.store).await
    }
}
