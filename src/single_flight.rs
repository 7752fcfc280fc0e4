//! One backend query per key at a time (the key cache's records, the cached plans): the first
//! caller that misses leads, the others wait for its answer.
//!
//! The answer, error included, is handed to every waiter: 1,000 requests for one key on a
//! failing store make one query and all get its error, instead of each retrying in turn.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// Queries in flight, by key.
pub(crate) struct SingleFlight<K, V, H> {
    flights: Arc<Mutex<Flights<K, V, H>>>,
    next_id: AtomicU64,
}

/// Each flight's id and the receiver its waiters clone.
type Flights<K, V, H> = HashMap<K, (u64, watch::Receiver<Option<V>>), H>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the map consistent; a panic elsewhere cannot corrupt it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The caller that leads a query: it must [`finish`](Flight::finish) it. Dropped unfinished
/// (the query's task panicked or was cancelled), its waiters get [`Waited::Abandoned`].
pub(crate) struct Flight<K: Hash + Eq, V, H: BuildHasher> {
    flights: Arc<Mutex<Flights<K, V, H>>>,
    key: K,
    id: u64,
    tx: watch::Sender<Option<V>>,
}

/// What a waiter gets.
pub(crate) enum Waited<V> {
    Answer(V),
    /// The leader went away without an answer.
    Abandoned,
}

impl<K: Hash + Eq + Clone, V: Clone, H: BuildHasher + Default> SingleFlight<K, V, H> {
    pub(crate) fn new() -> Self {
        SingleFlight {
            flights: Arc::new(Mutex::new(HashMap::default())),
            next_id: AtomicU64::new(0),
        }
    }

    /// Joins the query in flight for `key`, or, if there is none and `may_lead` allows it,
    /// starts one: `Some(flight)` then, and the caller must run the query and finish it.
    /// `Err(())` when there is no flight and `may_lead` refuses.
    #[allow(clippy::type_complexity)]
    pub(crate) fn join(
        &self,
        key: &K,
        may_lead: impl FnOnce() -> bool,
    ) -> Result<(Option<Flight<K, V, H>>, watch::Receiver<Option<V>>), ()> {
        let mut flights = lock(&self.flights);
        if let Some((_, rx)) = flights.get(key) {
            return Ok((None, rx.clone()));
        }
        if !may_lead() {
            return Err(());
        }
        let (tx, rx) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        flights.insert(key.clone(), (id, rx.clone()));
        let flight = Flight {
            flights: self.flights.clone(),
            key: key.clone(),
            id,
            tx,
        };
        Ok((Some(flight), rx))
    }

    /// Forgets the flight for `key`: later callers start a new query, whose answer cannot
    /// predate a change made before this call. Its current waiters still get its answer.
    pub(crate) fn forget(&self, key: &K) {
        lock(&self.flights).remove(key);
    }

    /// Forgets every flight.
    pub(crate) fn forget_all(&self) {
        lock(&self.flights).clear();
    }
}

impl<K: Hash + Eq, V, H: BuildHasher> Flight<K, V, H> {
    /// Hands `answer` to every waiter and ends the flight.
    pub(crate) fn finish(self, answer: V) {
        // Out of the map before the answer goes out: a waiter that has its answer and asks
        // again must start a new flight, not join this finished one and get the same answer
        // (an error shared with a caller that came after it).
        self.leave();
        self.tx.send_replace(Some(answer));
    }

    /// Removes this flight from the map; only this flight's entry: after a `forget`, a newer
    /// flight may hold the key.
    fn leave(&self) {
        let mut flights = lock(&self.flights);
        if flights.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            flights.remove(&self.key);
        }
    }
}

impl<K: Hash + Eq, V, H: BuildHasher> Drop for Flight<K, V, H> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Waits for the answer of a flight.
pub(crate) async fn wait<V: Clone>(mut rx: watch::Receiver<Option<V>>) -> Waited<V> {
    match rx.wait_for(Option::is_some).await {
        Ok(answer) => match &*answer {
            Some(v) => Waited::Answer(v.clone()),
            None => Waited::Abandoned,
        },
        Err(_) => Waited::Abandoned,
    }
}

/// An error that wraps a backend's error after a prefix of its own (`StoreError::Backend`,
/// `BackendError::Failed`): a [`SharedError`] shows what it wraps, so that each waiter's copy
/// does not print the prefix twice.
pub(crate) trait WrapsBackend: std::error::Error {
    /// The backend's error, if this is one that wraps it.
    fn wrapped(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)>;
}

/// One flight's error, handed to each of its waiters inside an error of their own.
#[derive(Debug)]
pub(crate) struct SharedError<E>(pub(crate) Arc<E>);

impl<E: WrapsBackend> std::fmt::Display for SharedError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.wrapped() {
            Some(wrapped) => std::fmt::Display::fmt(wrapped, f),
            None => std::fmt::Display::fmt(&*self.0, f),
        }
    }
}

impl<E: WrapsBackend> std::error::Error for SharedError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.wrapped().and_then(|wrapped| wrapped.source())
    }
}
