//! One-call setup: [`Keygate`] opens a database and returns the layer and the manager, wired
//! the way a production service wants them.
//!
//! From a database URL (SQLite or PostgreSQL), [`Keygate::from_url`] runs the migrations and
//! wires:
//!
//! | part | default | change it with |
//! |---|---|---|
//! | key store | the database, behind a [`CachedStore`](crate::cache::CachedStore) (30 s TTL) | [`key_cache_ttl`](KeygateBuilder::key_cache_ttl), [`no_key_cache`](KeygateBuilder::no_key_cache) |
//! | cross-instance invalidation | on PostgreSQL, a [`ChangeListener`](crate::cache::ChangeListener) feeding both caches | [`change_listener`](KeygateBuilder::change_listener) |
//! | tenants' plans and status | the database's `keygate_tenants`, cached 30 s ([`CachedEntitlements`](crate::plan::CachedEntitlements)) | [`plans_ttl`](KeygateBuilder::plans_ttl) |
//! | rate limits and quotas | quotas leased from the database ([`LeasedQuotaLimiter`](crate::limit::LeasedQuotaLimiter), durable), rate limits in process | [`redis`](KeygateBuilder::redis) (feature `redis`), [`limiter`](KeygateBuilder::limiter) |
//! | last-used times | noted by the layer, written every 10 s ([`LastUsedTracker`](crate::last_used::LastUsedTracker)) | [`last_used_interval`](KeygateBuilder::last_used_interval), [`no_last_used`](KeygateBuilder::no_last_used) |
//! | audit trail | the database's `keygate_audit` table | [`audit`](KeygateBuilder::audit) |
//! | key scheme | [`KeyScheme::default`](crate::key::KeyScheme::default), shared by verifier and manager | [`scheme`](KeygateBuilder::scheme) |
//!
//! The manager writes through the key cache, so a revocation refuses this process's very next
//! request; other instances on PostgreSQL see it within a second. Call
//! [`Keygate::shutdown`] when the server has stopped: it writes the pending last-used times and
//! gives unused quota blocks back.
//!
//! ```
//! use axum::{Router, routing::get};
//! use keygate::{Keygate, Tenant};
//! use keygate::key::Environment;
//! use keygate::lifecycle::NewKey;
//! use keygate::plan::{Plan, TenantEntitlements};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("keygate-setup-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let path = dir.join("keys.db");
//! // A file path or `sqlite:` URL for SQLite, `postgres://…` for PostgreSQL.
//! let keygate = Keygate::from_url(path.to_str().unwrap()).build().await?;
//! keygate.set_tenant("acme", &TenantEntitlements::active(Plan::default())).await?;
//! let admin = keygate
//!     .manager()
//!     .issue("setup", "acme", NewKey::new("admin", ["admin"]).environment(Environment::Test))
//!     .await?;
//! # let _ = admin;
//!
//! let app: Router = Router::new()
//!     .route("/v1/whoami", get(|t: Tenant| async move { t.tenant_id().to_owned() }))
//!     .route_layer(keygate.layer().clone())
//!     .merge(keygate.management_router());
//! # let _ = app;
//! // … serve `app`; once the server has stopped:
//! keygate.shutdown().await?;
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok(())
//! # }
//! ```

mod builder;
mod database;
mod error;

pub use builder::{DEFAULT_LAST_USED_INTERVAL, DEFAULT_PLANS_TTL, KeygateBuilder};
pub use database::Database;
pub use error::SetupError;

use std::fmt;
use std::sync::Arc;

use crate::cache::{Change, Invalidate};
use crate::last_used::LastUsedFlusher;
use crate::layer::AuthLayer;
use crate::lifecycle::KeyManager;
use crate::plan::{Plan, TenantEntitlements, TenantStatus};
use crate::store::{StoreError, write_detached};

/// keygate, wired in one call: the [`AuthLayer`] and the [`KeyManager`] on one database, with
/// the key cache, cached plans, durable quotas, last-used times and the audit trail. See the
/// [module docs](self).
///
/// Call [`shutdown`](Self::shutdown) when the server has stopped. Dropped without it, the
/// last-used notes taken since the last write are lost and unused quota blocks stay counted,
/// as after a crash (within the bounds [`LastUsedTracker`](crate::last_used::LastUsedTracker)
/// and [`LeasedQuotaLimiter`](crate::limit::LeasedQuotaLimiter) document).
pub struct Keygate {
    layer: AuthLayer,
    manager: KeyManager,
    database: Database,
    plans: Arc<dyn Invalidate>,
    flusher: Option<LastUsedFlusher>,
    quota: Option<builder::QuotaShutdown>,
    #[cfg(feature = "postgres")]
    listener: Option<crate::cache::ChangeListener>,
}

/// What [`Keygate::shutdown`] wrote back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stopped {
    /// Last-used times written.
    pub last_used_written: usize,
    /// Quota units given back to the database (quotas leased from it only).
    pub quota_given_back: u64,
}

impl Keygate {
    /// Configures keygate on the database `url` names: `postgres://…` or `postgresql://…` for
    /// PostgreSQL (feature `postgres`), `sqlite:…` for an sqlx SQLite URL, anything else for
    /// the path of an SQLite file (created if missing). See [`Database::connect`].
    pub fn from_url(url: &str) -> KeygateBuilder {
        KeygateBuilder::from_url(url)
    }

    /// Configures keygate on the SQLite file at `path` (created if missing).
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn sqlite(path: impl AsRef<std::path::Path>) -> KeygateBuilder {
        KeygateBuilder::from_sqlite_file(path.as_ref().to_owned())
    }

    /// Configures keygate on PostgreSQL at `url`.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres(url: &str) -> KeygateBuilder {
        KeygateBuilder::from_postgres(url)
    }

    /// Configures keygate on a database already open, e.g.
    /// `Database::from(SqliteStore::in_memory().await?)`.
    pub fn with_database(database: Database) -> KeygateBuilder {
        KeygateBuilder::from_database(database)
    }

    /// The layer: put it on the routes that need a key (`route_layer`), and derive the
    /// others from it ([`require_scope`](AuthLayer::require_scope),
    /// [`management`](AuthLayer::management)). Clones share everything.
    pub fn layer(&self) -> &AuthLayer {
        &self.layer
    }

    /// The key manager: issue, list, rename, rotate, revoke, import. It writes through the key
    /// cache, so its changes reach this process's next request at once.
    pub fn manager(&self) -> &KeyManager {
        &self.manager
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The management HTTP API (`keygate::api::router`) behind
    /// [`layer().management()`](AuthLayer::management): `admin` keys only, exempt from the
    /// tenant's limits.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn management_router(&self) -> axum::Router {
        crate::api::router(self.manager.clone()).route_layer(self.layer.management())
    }

    /// Creates or replaces a tenant's status and plan; this process's next request sees it.
    pub async fn set_tenant(
        &self,
        tenant_id: &str,
        entitlements: &TenantEntitlements,
    ) -> Result<(), StoreError> {
        let (database, tenant, entitlements) = (
            self.database.clone(),
            tenant_id.to_owned(),
            entitlements.clone(),
        );
        self.tenant_write(tenant_id, async move {
            database.set_tenant(&tenant, &entitlements).await
        })
        .await
    }

    /// Creates a tenant; `false`, and nothing written, when it exists already.
    pub async fn create_tenant(
        &self,
        tenant_id: &str,
        entitlements: &TenantEntitlements,
    ) -> Result<bool, StoreError> {
        let (database, tenant, entitlements) = (
            self.database.clone(),
            tenant_id.to_owned(),
            entitlements.clone(),
        );
        self.tenant_write(tenant_id, async move {
            database.create_tenant(&tenant, &entitlements).await
        })
        .await
    }

    /// Suspends or resumes a tenant; `false` when there is no such tenant. This process's next
    /// request sees it.
    pub async fn set_tenant_status(
        &self,
        tenant_id: &str,
        status: TenantStatus,
    ) -> Result<bool, StoreError> {
        let (database, tenant) = (self.database.clone(), tenant_id.to_owned());
        self.tenant_write(tenant_id, async move {
            database.set_tenant_status(&tenant, status).await
        })
        .await
    }

    /// Sets a tenant's plan, keeping its status; `false` when there is no such tenant. This
    /// process's next request sees it.
    pub async fn set_tenant_plan(&self, tenant_id: &str, plan: &Plan) -> Result<bool, StoreError> {
        let (database, tenant, plan) = (self.database.clone(), tenant_id.to_owned(), plan.clone());
        self.tenant_write(tenant_id, async move {
            database.set_tenant_plan(&tenant, &plan).await
        })
        .await
    }

    /// Runs a tenant write, then drops the tenant's cached plan (also after an error: the
    /// write may have committed before it), in a task of their own ([`write_detached`]).
    async fn tenant_write<T: Send + 'static>(
        &self,
        tenant_id: &str,
        write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (plans, tenant) = (self.plans.clone(), tenant_id.to_owned());
        let write = async move {
            let result = write.await;
            plans.invalidate(&Change::Tenant(tenant));
            result
        };
        write_detached(write, || self.forget_tenant(tenant_id)).await
    }

    fn forget_tenant(&self, tenant_id: &str) {
        self.plans.invalidate(&Change::Tenant(tenant_id.to_owned()));
    }

    /// Call once the server has stopped: writes the pending last-used times, gives unused
    /// quota blocks back to the database, and stops the change listener. Every step is tried;
    /// the first error is returned.
    pub async fn shutdown(self) -> Result<Stopped, SetupError> {
        let mut stopped = Stopped::default();
        let mut first_error: Option<SetupError> = None;
        if let Some(flusher) = self.flusher {
            match flusher.shutdown().await {
                Ok(n) => stopped.last_used_written = n,
                Err(e) => {
                    first_error.get_or_insert(e.into());
                }
            }
        }
        if let Some(give_back) = self.quota {
            match give_back().await {
                Ok(n) => stopped.quota_given_back = n,
                Err(e) => {
                    first_error.get_or_insert(e.into());
                }
            }
        }
        #[cfg(feature = "postgres")]
        if let Some(listener) = self.listener {
            listener.close();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(stopped),
        }
    }
}

impl fmt::Debug for Keygate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keygate")
            .field("database", &self.database.kind())
            .field("layer", &self.layer)
            .field("manager", &self.manager)
            .field("last_used", &self.flusher.is_some())
            .finish_non_exhaustive()
    }
}
