use super::SetupError;
use crate::lifecycle::KeyManager;
use crate::plan::{Plan, TenantEntitlements, TenantStatus};
#[cfg(feature = "postgres")]
use crate::store::PostgresStore;
#[cfg(feature = "sqlite")]
use crate::store::SqliteStore;
use crate::store::StoreError;

/// A keygate database, SQLite or PostgreSQL, chosen by its URL: what
/// [`Keygate`](super::Keygate) and the `keygate` command-line tool work on.
///
/// Opening one runs the embedded migrations. Cheap to clone: clones share the pool.
///
/// ```
/// use keygate::setup::Database;
/// use keygate::plan::{Plan, TenantEntitlements};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = std::env::temp_dir().join(format!("keygate-doc-{}.db", std::process::id()));
/// let db = Database::connect(path.to_str().unwrap()).await?;
/// assert_eq!(db.kind(), "SQLite");
/// db.set_tenant("acme", &TenantEntitlements::active(Plan::default())).await?;
/// assert!(db.tenant("acme").await?.is_some());
/// # drop(db); let _ = std::fs::remove_file(&path);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Database {
    /// An SQLite database.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres(PostgresStore),
}

/// Runs `$body` with `$store` bound to the store, whichever it is.
macro_rules! each_store {
    ($db:expr, $store:ident => $body:expr) => {
        match $db {
            #[cfg(feature = "sqlite")]
            Database::Sqlite($store) => $body,
            #[cfg(feature = "postgres")]
            Database::Postgres($store) => $body,
        }
    };
}
pub(super) use each_store;

/// What a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlKind {
    /// `postgres://…` or `postgresql://…`.
    Postgres,
    /// `sqlite:…`, an sqlx SQLite URL.
    SqliteUrl,
    /// Anything else: the path of an SQLite file.
    SqliteFile,
    /// `<scheme>://…` of another scheme.
    Unsupported,
}

impl UrlKind {
    /// Schemes in any case, as URLs allow. A scheme is two characters or more, so that a
    /// Windows path such as `C://keys.db` stays a path.
    fn of(url: &str) -> UrlKind {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme).filter(|s| {
            s.len() >= 2
                && s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        match scheme.map(str::to_ascii_lowercase).as_deref() {
            Some("postgres" | "postgresql") => UrlKind::Postgres,
            Some("sqlite") => UrlKind::SqliteUrl,
            Some(_) => UrlKind::Unsupported,
            None if url
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case("sqlite:")) =>
            {
                UrlKind::SqliteUrl
            }
            None => UrlKind::SqliteFile,
        }
    }
}

impl Database {
    /// Opens the database `url` names, and migrates it:
    /// - `postgres://…` or `postgresql://…`: PostgreSQL (feature `postgres`);
    /// - `sqlite:…`: an sqlx SQLite URL, e.g. `sqlite://keys.db`, its file created if missing
    ///   unless the URL sets a `mode`;
    /// - another `<scheme>://…`: refused ([`SetupError::UnsupportedScheme`]);
    /// - anything else: the path of an SQLite file, created if missing (feature `sqlite`).
    ///
    /// A URL for a backend this build lacks is [`SetupError::MissingFeature`].
    pub async fn connect(url: &str) -> Result<Database, SetupError> {
        if url.trim().is_empty() {
            return Err(SetupError::EmptyUrl);
        }
        let kind = UrlKind::of(url);
        // The drivers read the scheme in lowercase only.
        let url = &match url.split_once(':') {
            Some((scheme, rest)) if kind != UrlKind::SqliteFile => {
                format!("{}:{rest}", scheme.to_ascii_lowercase())
            }
            _ => url.to_owned(),
        };
        match kind {
            UrlKind::Unsupported => {
                let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
                Err(SetupError::UnsupportedScheme(scheme.to_owned()))
            }
            #[cfg(feature = "postgres")]
            UrlKind::Postgres => Database::postgres(url).await,
            #[cfg(not(feature = "postgres"))]
            UrlKind::Postgres => Err(SetupError::MissingFeature {
                what: "a PostgreSQL URL",
                feature: "postgres",
            }),
            #[cfg(feature = "sqlite")]
            UrlKind::SqliteUrl => Ok(Database::Sqlite(SqliteStore::connect(url).await?)),
            #[cfg(feature = "sqlite")]
            UrlKind::SqliteFile => Database::sqlite(url).await,
            #[cfg(not(feature = "sqlite"))]
            UrlKind::SqliteUrl | UrlKind::SqliteFile => Err(SetupError::MissingFeature {
                what: "an SQLite database",
                feature: "sqlite",
            }),
        }
    }

    /// Opens (creating if missing) the SQLite file at `path` and migrates it
    /// ([`SqliteStore::open`]).
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub async fn sqlite(path: impl AsRef<std::path::Path>) -> Result<Database, SetupError> {
        Ok(Database::Sqlite(SqliteStore::open(path).await?))
    }

    /// Connects to PostgreSQL at `url` and migrates it ([`PostgresStore::connect`]).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub async fn postgres(url: &str) -> Result<Database, SetupError> {
        Ok(Database::Postgres(PostgresStore::connect(url).await?))
    }

    /// `SQLite` or `PostgreSQL`, for messages (never the URL, which may hold a password).
    pub fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Database::Sqlite(_) => "SQLite",
            #[cfg(feature = "postgres")]
            Database::Postgres(_) => "PostgreSQL",
        }
    }

    /// A key manager on this database (uncached), whose audit events go to its audit table.
    /// For a manager whose changes also reach a [`Keygate`](super::Keygate)'s key cache at once,
    /// use [`Keygate::manager`](super::Keygate::manager).
    pub fn key_manager(&self) -> crate::lifecycle::KeyManagerBuilder {
        each_store!(self, store => KeyManager::builder(store.clone()).audit(store.clone()))
    }

    /// The number of key records, revoked and expired ones included.
    pub async fn count_keys(&self) -> Result<u64, StoreError> {
        each_store!(self, store => store.count_keys().await)
    }

    /// Creates or replaces a tenant's status and plan (see `SqlStore::set_tenant`).
    pub async fn set_tenant(
        &self,
        tenant_id: &str,
        entitlements: &TenantEntitlements,
    ) -> Result<(), StoreError> {
        each_store!(self, store => store.set_tenant(tenant_id, entitlements).await)
    }

    /// Creates a tenant; `false`, and nothing written, when it exists already.
    pub async fn create_tenant(
        &self,
        tenant_id: &str,
        entitlements: &TenantEntitlements,
    ) -> Result<bool, StoreError> {
        each_store!(self, store => store.create_tenant(tenant_id, entitlements).await)
    }

    /// Suspends or resumes a tenant, keeping its plan; `false` when there is no such tenant.
    pub async fn set_tenant_status(
        &self,
        tenant_id: &str,
        status: TenantStatus,
    ) -> Result<bool, StoreError> {
        each_store!(self, store => store.set_tenant_status(tenant_id, status).await)
    }

    /// Sets a tenant's plan, keeping its status; `false` when there is no such tenant.
    pub async fn set_tenant_plan(&self, tenant_id: &str, plan: &Plan) -> Result<bool, StoreError> {
        each_store!(self, store => store.set_tenant_plan(tenant_id, plan).await)
    }

    /// A tenant's status and plan, if it exists.
    pub async fn tenant(&self, tenant_id: &str) -> Result<Option<TenantEntitlements>, StoreError> {
        each_store!(self, store => store.tenant(tenant_id).await)
    }
}

#[cfg(feature = "sqlite")]
impl From<SqliteStore> for Database {
    fn from(store: SqliteStore) -> Self {
        Database::Sqlite(store)
    }
}

#[cfg(feature = "postgres")]
impl From<PostgresStore> for Database {
    fn from(store: PostgresStore) -> Self {
        Database::Postgres(store)
    }
}
