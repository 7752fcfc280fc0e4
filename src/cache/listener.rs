//! [`ChangeListener`]: PostgreSQL's change notifications, handed to this process's caches.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::changes::{Change, ChangeFeed, Invalidate};
use crate::store::sql::changes::{CHANNEL, Notice};
use crate::store::{PostgresStore, StoreError};

/// How long the connection may stay quiet before the listener checks it with a query.
pub(crate) const PING_EVERY: Duration = Duration::from_millis(500);
/// How long that check may take before the connection counts as lost.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_millis(500);
/// How long connecting and starting to listen may take: a connection whose handshake passed
/// and which then went silent would otherwise hold the listener (and the caches' 1 s bound)
/// until the kernel gives up on it, a quarter of an hour or more.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// The first and the longest wait between attempts to reconnect.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Listens to the changes every keygate write to a PostgreSQL store publishes
/// (`LISTEN keygate_changes` on a connection of its own) and hands each to the caches that
/// [`subscribe`](Self::subscribe)d: a key revoked on any instance is dropped from the cache of
/// this one within a second.
///
/// When the connection is lost (an error, the server closing it, or a check query that does
/// not answer within 500 ms, sent after 500 ms of silence; see
/// [`start_with_check_timeout`](Self::start_with_check_timeout) for a slower database), changes
/// may be missed:
/// the listener flushes every subscribed cache, logs the warning "key cache: change
/// notifications lost; cache flushed, staleness bounded by the TTL until they are back", and
/// reconnects with backoff (100 ms doubling to 5 s; an attempt that takes longer than 5 s
/// counts as failed). Until it is back, the caches' TTLs bound staleness. Once back it
/// flushes again (changes may have been missed in between) and logs an `info` event. One
/// listener per process serves every cache.
///
/// The listener runs in a task of its own until [`stop`](Self::stop)ped; dropping the handle
/// does not stop it.
///
/// ```no_run
/// use std::time::Duration;
/// use keygate::Verifier;
/// use keygate::cache::{CachedStore, ChangeListener};
/// use keygate::plan::CachedEntitlements;
/// use keygate::store::PostgresStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await?;
/// let keys = CachedStore::new(store.clone());
/// let plans = CachedEntitlements::new(store.clone(), Duration::from_secs(30));
/// let changes = ChangeListener::start(&store).await?;
/// changes.subscribe(keys.clone());
/// changes.subscribe(plans.clone());
/// let verifier = Verifier::builder(keys).entitlements(plans).build();
/// # let _ = verifier;
/// # Ok(())
/// # }
/// ```
pub struct ChangeListener {
    feed: ChangeFeed,
    connected: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl ChangeListener {
    /// Connects (with the store's connection settings, on a connection of its own), starts
    /// listening, and returns once it listens: no change committed after this returns is
    /// missed while the connection lasts. An error if that takes longer than 5 s.
    pub async fn start(store: &PostgresStore) -> Result<ChangeListener, StoreError> {
        Self::start_with_check_timeout(store, PING_TIMEOUT).await
    }

    /// [`start`](Self::start), with another limit for the check query the listener sends after
    /// 500 ms of silence (500 ms by default). For a database that takes longer than that to
    /// answer `SELECT 1`: with the default, each check would count the connection lost and
    /// flush every subscribed cache. A change on another instance then reaches this one within
    /// 500 ms plus `timeout` of its commit, rather than within a second.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use keygate::cache::ChangeListener;
    /// use keygate::store::PostgresStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = PostgresStore::connect("postgres://postgres@db.internal:5432/app").await?;
    /// let changes = ChangeListener::start_with_check_timeout(&store, Duration::from_secs(2)).await?;
    /// # let _ = changes;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_with_check_timeout(
        store: &PostgresStore,
        timeout: Duration,
    ) -> Result<ChangeListener, StoreError> {
        let options = store.pool().connect_options().as_ref().clone();
        let listener = listen(&options).await.map_err(StoreError::backend)?;
        let feed = ChangeFeed::new();
        let (tx, connected) = watch::channel(true);
        let task = tokio::spawn(run(options, listener, feed.clone(), tx, timeout));
        Ok(ChangeListener {
            feed,
            connected,
            task,
        })
    }

    /// Hands every later change to `cache` too (a [`CachedStore`](super::CachedStore), a
    /// [`CachedEntitlements`](crate::plan::CachedEntitlements), a [`ChangeFeed`]), and flushes
    /// it: what it holds may predate changes it was not told of.
    pub fn subscribe(&self, cache: impl Invalidate) {
        let cache = std::sync::Arc::new(cache);
        // Subscribed first: a change between the two is not lost.
        self.feed.subscribe(cache.clone());
        cache.invalidate(&Change::Flush);
    }

    /// Whether the listener is connected and listening now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Waits until the listener is connected (at once if it is). Ends early, returning
    /// `false`, if the listener stopped.
    pub async fn wait_connected(&self) -> bool {
        let mut connected = self.connected.clone();
        connected.wait_for(|c| *c).await.is_ok()
    }

    /// Stops listening. The caches keep working, their TTLs the only bound of staleness from
    /// now on; a warning event says so.
    pub fn stop(self) {
        self.task.abort();
        tracing::warn!(
            target: "keygate::cache",
            "key cache: change listener stopped; staleness bounded by the TTL"
        );
    }
}

impl ChangeListener {
    /// Stops listening without a warning: for a process that is shutting down.
    pub(crate) fn close(self) {
        self.task.abort();
    }
}

impl fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeListener")
            .field("connected", &self.is_connected())
            .field("subscribers", &self.feed.len())
            .finish()
    }
}

/// A listener on a new connection of its own: not one of the store's (it would hold one for
/// good, and close with the store's pool), and never a connection that was lost before.
/// Connecting and `LISTEN` together are bounded by [`LISTEN_TIMEOUT`].
async fn listen(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    match tokio::time::timeout(LISTEN_TIMEOUT, listen_unbounded(options)).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connecting and listening took longer than 5 s",
        ))),
    }
}

async fn listen_unbounded(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    // Reconnecting is ours to do, with backoff and a flush.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Receives until the connection is lost; then flushes, reconnects, flushes again; forever.
async fn run(
    options: PgConnectOptions,
    first: PgListener,
    feed: ChangeFeed,
    connected: watch::Sender<bool>,
    check_timeout: Duration,
) {
    let mut listener = first;
    loop {
        let why = receive(&mut listener, &feed, check_timeout).await;
        drop(listener);
        connected.send_replace(false);
        feed.invalidate(&Change::Flush);
        tracing::warn!(
            target: "keygate::cache",
            reason = %why,
            "key cache: change notifications lost; cache flushed, staleness bounded by the TTL until they are back"
        );
        let mut wait = BACKOFF.0;
        listener = loop {
            tokio::time::sleep(wait).await;
            match listen(&options).await {
                Ok(l) => break l,
                Err(error) => {
                    tracing::debug!(target: "keygate::cache", %error, "key cache: reconnecting the change listener failed");
                    wait = (wait * 2).min(BACKOFF.1);
                }
            }
        };
        // Changes committed while no one listened were missed.
        feed.invalidate(&Change::Flush);
        connected.send_replace(true);
        tracing::info!(
            target: "keygate::cache",
            "key cache: change notifications are back; cache flushed"
        );
    }
}

/// Hands notifications to `feed` until the connection fails (or a check query takes longer
/// than `check_timeout`); returns why.
async fn receive(listener: &mut PgListener, feed: &ChangeFeed, check_timeout: Duration) -> String {
    loop {
        // `try_recv` is cancel-safe: a timeout loses no notification.
        match tokio::time::timeout(PING_EVERY, listener.try_recv()).await {
            Ok(Ok(Some(notification))) => {
                let change = match Notice::parse(notification.payload()) {
                    Notice::Key(digest) => Change::Key(digest),
                    Notice::Tenant(id) => Change::Tenant(id),
                    Notice::Everything => Change::Flush,
                };
                feed.invalidate(&change);
            }
            Ok(Ok(None)) => return "connection closed".into(),
            Ok(Err(error)) => return error.to_string(),
            Err(_) => {
                // Silence: make sure the connection is still there.
                let ping = sqlx::query("SELECT 1").execute(&mut *listener);
                match tokio::time::timeout(check_timeout, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return error.to_string(),
                    Err(_) => return "the connection did not answer a check in time".into(),
                }
            }
        }
    }
}
