use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::database::each_store;
use super::{Database, Keygate, SetupError};
use crate::audit::AuditSink;
use crate::backend::BackendError;
use crate::cache::{CachedStore, Invalidate};
use crate::key::KeyScheme;
use crate::last_used::LastUsedTracker;
use crate::layer::AuthLayer;
use crate::lifecycle::{KeyManager, KeyManagerBuilder};
use crate::limit::{LeasedQuotaLimiter, Limiter, QuotaLedger};
use crate::plan::{CachedEntitlements, EntitlementSource};
use crate::scope::Scope;
use crate::store::ManagedKeyStore;
use crate::verify::{Verifier, VerifierBuilder};

/// The default interval at which last-used times are written: 10 seconds.
pub const DEFAULT_LAST_USED_INTERVAL: Duration = Duration::from_secs(10);
/// How long tenants' plans and status are cached by default: 30 seconds.
pub const DEFAULT_PLANS_TTL: Duration = Duration::from_secs(30);

type VerifierHook = Box<dyn FnOnce(VerifierBuilder) -> VerifierBuilder + Send>;
type ManagerHook = Box<dyn FnOnce(KeyManagerBuilder) -> KeyManagerBuilder + Send>;
type QuotaFuture = Pin<Box<dyn Future<Output = Result<u64, BackendError>> + Send>>;
/// Gives the leased quota limiter's unused blocks back, whatever its ledger's type.
pub(super) type QuotaShutdown = Box<dyn FnOnce() -> QuotaFuture + Send>;

/// Where the database comes from.
enum Target {
    Url(String),
    #[cfg(feature = "sqlite")]
    SqliteFile(std::path::PathBuf),
    #[cfg(feature = "postgres")]
    Postgres(String),
    Open(Database),
}

/// Where rate limits and quotas live.
enum Limits {
    /// Quotas leased in blocks from the database's ledger; rate limits in this process.
    Leased,
    /// On Redis, shared by every instance.
    #[cfg(feature = "redis")]
    Redis { url: String },
    /// A limiter of the caller's.
    Custom(Arc<dyn Limiter>),
}

/// Configures a [`Keygate`]; see [`Keygate::from_url`]. Every part is on by default, each
/// setter changes one.
#[must_use]
pub struct KeygateBuilder {
    target: Target,
    scheme: KeyScheme,
    known_scopes: Option<Vec<Scope>>,
    max_active_keys: Option<Option<usize>>,
    key_cache_ttl: Option<Duration>,
    plans_ttl: Duration,
    change_listener: bool,
    limits: Limits,
    /// Kept apart from `limits`, so that it holds whichever of `redis` and `redis_prefix`
    /// comes first.
    #[cfg(feature = "redis")]
    redis_prefix: Option<String>,
    last_used: Option<Duration>,
    audit: Option<Arc<dyn AuditSink>>,
    verifier: Option<VerifierHook>,
    manager: Option<ManagerHook>,
}

impl std::fmt::Debug for KeygateBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("KeygateBuilder")
            .field("scheme", &self.scheme)
            .field("known_scopes", &self.known_scopes)
            .field("key_cache_ttl", &self.key_cache_ttl)
            .field("plans_ttl", &self.plans_ttl)
            .field("change_listener", &self.change_listener)
            .field("last_used", &self.last_used)
            .finish_non_exhaustive()
    }
}

impl KeygateBuilder {
    fn new(target: Target) -> Self {
        KeygateBuilder {
            target,
            scheme: KeyScheme::default(),
            known_scopes: None,
            max_active_keys: None,
            key_cache_ttl: Some(crate::cache::DEFAULT_TTL),
            plans_ttl: DEFAULT_PLANS_TTL,
            change_listener: true,
            limits: Limits::Leased,
            #[cfg(feature = "redis")]
            redis_prefix: None,
            last_used: Some(DEFAULT_LAST_USED_INTERVAL),
            audit: None,
            verifier: None,
            manager: None,
        }
    }

    pub(super) fn from_url(url: &str) -> Self {
        KeygateBuilder::new(Target::Url(url.to_owned()))
    }

    #[cfg(feature = "sqlite")]
    pub(super) fn from_sqlite_file(path: std::path::PathBuf) -> Self {
        KeygateBuilder::new(Target::SqliteFile(path))
    }

    #[cfg(feature = "postgres")]
    pub(super) fn from_postgres(url: &str) -> Self {
        KeygateBuilder::new(Target::Postgres(url.to_owned()))
    }

    pub(super) fn from_database(database: Database) -> Self {
        KeygateBuilder::new(Target::Open(database))
    }

    /// The key scheme (format and hasher) of the verifier and the manager (default
    /// [`KeyScheme::default`]).
    pub fn scheme(mut self, scheme: KeyScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// Only these scopes may be granted by the manager (default: any well-formed scope).
    pub fn known_scopes(mut self, scopes: impl IntoIterator<Item = Scope>) -> Self {
        self.known_scopes = Some(scopes.into_iter().collect());
        self
    }

    /// The most active keys a tenant may hold (`None`: no cap; default 100, the manager's).
    pub fn max_active_keys(mut self, max: Option<usize>) -> Self {
        self.max_active_keys = Some(max);
        self
    }

    /// How long the key cache keeps a record (default [`DEFAULT_TTL`](crate::cache::DEFAULT_TTL),
    /// 30 s); see [`CachedStore`].
    pub fn key_cache_ttl(mut self, ttl: Duration) -> Self {
        self.key_cache_ttl = Some(ttl);
        self
    }

    /// No key cache: every request looks its key up in the database.
    pub fn no_key_cache(mut self) -> Self {
        self.key_cache_ttl = None;
        self
    }

    /// How long tenants' plans and status are cached (default [`DEFAULT_PLANS_TTL`], 30 s;
    /// zero caches nothing).
    pub fn plans_ttl(mut self, ttl: Duration) -> Self {
        self.plans_ttl = ttl;
        self
    }

    /// On PostgreSQL, whether a [`ChangeListener`](crate::cache::ChangeListener) carries every
    /// instance's changes to this one's caches within a second (default yes). Without it,
    /// other instances' changes are seen within the caches' TTLs.
    pub fn change_listener(mut self, listen: bool) -> Self {
        self.change_listener = listen;
        self
    }

    /// Rate limits and quotas on Redis at `url`, shared by every instance
    /// ([`RedisLimiter`](crate::limit::RedisLimiter)), instead of quotas leased from the
    /// database.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.limits = Limits::Redis { url: url.into() };
        self
    }

    /// The prefix of the Redis key names (the limiter's default, `keygate:`, otherwise), for
    /// [`redis`](Self::redis), called before or after it.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redis_prefix = Some(prefix.into());
        self
    }

    /// A limiter of your own, e.g. a [`MemoryLimiter`](crate::limit::MemoryLimiter), instead
    /// of quotas leased from the database.
    pub fn limiter(mut self, limiter: impl Limiter) -> Self {
        self.limits = Limits::Custom(Arc::new(limiter));
        self
    }

    /// How often last-used times are written to the database (default
    /// [`DEFAULT_LAST_USED_INTERVAL`], 10 s); see [`LastUsedTracker`].
    pub fn last_used_interval(mut self, interval: Duration) -> Self {
        self.last_used = Some(interval);
        self
    }

    /// Last-used times are not tracked: `last_used_at` stays unset.
    pub fn no_last_used(mut self) -> Self {
        self.last_used = None;
        self
    }

    /// Where the manager's audit events go (default: the database's `keygate_audit` table).
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Some(Arc::new(sink));
        self
    }

    /// Changes the verifier's configuration beyond what this builder sets (its store, scheme,
    /// plans and limiter), e.g. `|v| v.accept_test_keys(false)`.
    pub fn configure_verifier(
        mut self,
        f: impl FnOnce(VerifierBuilder) -> VerifierBuilder + Send + 'static,
    ) -> Self {
        self.verifier = Some(Box::new(f));
        self
    }

    /// Changes the manager's configuration beyond what this builder sets, e.g.
    /// `|m| m.store_timeout(Duration::from_secs(5))`.
    pub fn configure_manager(
        mut self,
        f: impl FnOnce(KeyManagerBuilder) -> KeyManagerBuilder + Send + 'static,
    ) -> Self {
        self.manager = Some(Box::new(f));
        self
    }

    /// Opens and migrates the database (unless it was given open), starts the change listener
    /// (PostgreSQL), connects the limiter, and wires everything. Needs a tokio runtime: the
    /// last-used flusher and the listener run as tasks.
    pub async fn build(self) -> Result<Keygate, SetupError> {
        let database = match &self.target {
            Target::Url(url) => Database::connect(url).await?,
            #[cfg(feature = "sqlite")]
            Target::SqliteFile(path) => Database::sqlite(path).await?,
            #[cfg(feature = "postgres")]
            Target::Postgres(url) => Database::postgres(url).await?,
            Target::Open(database) => database.clone(),
        };
        // Listening before anything is cached: no change is missed.
        #[cfg(feature = "postgres")]
        let listener = match &database {
            Database::Postgres(store) if self.change_listener => {
                Some(crate::cache::ChangeListener::start(store).await?)
            }
            _ => None,
        };
        #[cfg(not(feature = "postgres"))]
        let listener: Option<NoListener> = None;
        let subscribe = |cache: Arc<dyn Invalidate>| {
            if let Some(listener) = &listener {
                listener.subscribe(cache);
            }
        };
        let parts = match each_store!(&database, store => self.wire(store.clone(), &subscribe).await)
        {
            Ok(parts) => parts,
            Err(error) => {
                // The listener runs in a task of its own, holding the caches it feeds and
                // through them the database's connections: a build that fails stops it, or a
                // retry loop around `build` would leave a listener and its connections behind
                // at every attempt.
                #[cfg(feature = "postgres")]
                if let Some(listener) = listener {
                    listener.close();
                }
                return Err(error);
            }
        };
        Ok(Keygate {
            layer: parts.layer,
            manager: parts.manager,
            plans: parts.plans,
            flusher: parts.flusher,
            quota: parts.quota,
            database,
            #[cfg(feature = "postgres")]
            listener,
        })
    }

    async fn wire<S>(
        self,
        store: S,
        subscribe: &dyn Fn(Arc<dyn Invalidate>),
    ) -> Result<Parts, SetupError>
    where
        S: ManagedKeyStore + EntitlementSource + AuditSink + QuotaLedger + Clone,
    {
        let plans = CachedEntitlements::new(store.clone(), self.plans_ttl);
        subscribe(Arc::new(plans.clone()));
        let (verifier, manager) = match self.key_cache_ttl {
            Some(ttl) => {
                let keys = CachedStore::builder(store.clone()).ttl(ttl).build();
                subscribe(Arc::new(keys.clone()));
                (Verifier::builder(keys.clone()), KeyManager::builder(keys))
            }
            None => (
                Verifier::builder(store.clone()),
                KeyManager::builder(store.clone()),
            ),
        };
        let verifier = verifier
            .scheme(self.scheme.clone())
            .entitlements(plans.clone());
        let (verifier, quota): (_, Option<QuotaShutdown>) = match self.limits {
            Limits::Leased => {
                let limiter = LeasedQuotaLimiter::new(store.clone());
                let stop = limiter.clone();
                let shutdown: QuotaShutdown = Box::new(move || -> QuotaFuture {
                    Box::pin(async move { stop.shutdown().await })
                });
                (verifier.limiter(limiter), Some(shutdown))
            }
            #[cfg(feature = "redis")]
            Limits::Redis { url } => {
                let mut redis = crate::limit::RedisLimiter::builder(url);
                if let Some(prefix) = self.redis_prefix {
                    redis = redis.prefix(prefix);
                }
                (verifier.limiter(redis.connect().await?), None)
            }
            Limits::Custom(limiter) => (verifier.limiter(limiter), None),
        };
        let verifier = match self.verifier {
            Some(hook) => hook(verifier),
            None => verifier,
        };

        let mut manager = manager.scheme(self.scheme);
        if let Some(scopes) = self.known_scopes {
            manager = manager.known_scopes(scopes);
        }
        if let Some(max) = self.max_active_keys {
            manager = manager.max_active_keys(max);
        }
        manager = match self.audit {
            Some(sink) => manager.audit(sink),
            None => manager.audit(store.clone()),
        };
        if let Some(hook) = self.manager {
            manager = hook(manager);
        }

        let mut layer = AuthLayer::new(verifier.build());
        let mut flusher = None;
        if let Some(interval) = self.last_used {
            let tracker = LastUsedTracker::new();
            layer = layer.track_last_used(tracker.clone());
            // Written straight to the database: the cache holds no last-used times.
            flusher = Some(tracker.spawn_flusher(store, interval));
        }
        Ok(Parts {
            layer,
            manager: manager.build(),
            plans: Arc::new(plans),
            flusher,
            quota,
        })
    }
}

/// What [`KeygateBuilder::wire`] makes, whatever the store.
struct Parts {
    layer: AuthLayer,
    manager: KeyManager,
    plans: Arc<dyn Invalidate>,
    flusher: Option<crate::last_used::LastUsedFlusher>,
    quota: Option<QuotaShutdown>,
}

/// Stands for the change listener in builds without PostgreSQL.
#[cfg(not(feature = "postgres"))]
struct NoListener;

#[cfg(not(feature = "postgres"))]
impl NoListener {
    fn subscribe(&self, _: Arc<dyn Invalidate>) {}
}
