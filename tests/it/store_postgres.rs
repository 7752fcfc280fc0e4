//! The conformance suite and durability on the PostgreSQL store. Needs a server: set
//! KEYGATE_TEST_POSTGRES_URL (`.ci/run` points it at the local one).

use keygate::lifecycle::{KeyManager, NewKey};
use keygate::store::{KeyStore, PostgresStore, conformance};

fn url() -> String {
    crate::common::postgres_url()
}

async fn connect() -> PostgresStore {
    let url = url();
    PostgresStore::connect(&url).await.unwrap_or_else(|e| {
        panic!("cannot reach PostgreSQL at KEYGATE_TEST_POSTGRES_URL={url}: {e}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    let store = connect().await;
    conformance::run_all(|| {
        let store = store.clone();
        async move { store }
    })
    .await;
}

#[tokio::test]
async fn state_survives_a_new_pool() {
    let tenant = conformance::tenant();
    let (kept, revoked) = {
        let store = connect().await;
        let manager = KeyManager::builder(store.clone())
            .audit(store.clone())
            .build();
        let kept = manager
            .issue("test", &tenant, NewKey::new("kept", ["read"]))
            .await
            .unwrap();
        let revoked = manager
            .issue("test", &tenant, NewKey::new("revoked", ["read"]))
            .await
            .unwrap();
        manager
            .revoke("test", &tenant, &revoked.info.id)
            .await
            .unwrap();
        store.pool().close().await;
        (kept, revoked)
    };
    let store = connect().await;
    let manager = KeyManager::builder(store.clone()).build();
    let ids: Vec<String> = manager
        .list(&tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, [kept.info.id]);
    let hasher = keygate::hash::KeyHasher::sha256();
    let now = time::OffsetDateTime::now_utc();
    let found = store
        .find(&hasher.hash(revoked.key.expose_secret()))
        .await
        .unwrap()
        .unwrap();
    assert!(found.is_revoked_at(now));
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM keygate_audit WHERE tenant_id = $1 ORDER BY seq")
            .bind(&tenant)
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(actions, ["issue", "issue", "revoke"]);
}

#[tokio::test]
async fn tenants_and_plans_are_stored() {
    use keygate::limit::{Quota, QuotaPeriod, RateLimit};
    use keygate::plan::{
        CachedEntitlements, EntitlementSource, Plan, TenantEntitlements, TenantStatus,
    };
    let store = connect().await;
    let tenant = conformance::tenant();
    assert!(store.entitlements(&tenant).await.unwrap().is_none());
    let pro = TenantEntitlements::active(Plan {
        name: "pro".into(),
        rate_limit: Some(RateLimit::per_minute(60)),
        key_rate_limit: Some(RateLimit::per_second(5)),
        quota: Some(Quota {
            limit: 1000,
            period: QuotaPeriod::Month,
        }),
        allowed_scopes: Some(keygate::scope::Scopes::from_static(&["read"])),
    });
    store.set_tenant(&tenant, &pro).await.unwrap();
    assert_eq!(*store.entitlements(&tenant).await.unwrap().unwrap(), pro);

    let cached = CachedEntitlements::new(store.clone(), std::time::Duration::from_secs(3600));
    assert!(
        cached.entitlements_now(&tenant).is_none(),
        "nothing cached yet"
    );
    assert_eq!(*cached.entitlements(&tenant).await.unwrap().unwrap(), pro);
    let suspended = TenantEntitlements {
        status: TenantStatus::Suspended,
        ..pro.clone()
    };
    store.set_tenant(&tenant, &suspended).await.unwrap();
    let hit = cached.entitlements_now(&tenant).unwrap().unwrap().unwrap();
    assert_eq!(
        hit.status,
        TenantStatus::Active,
        "served from the cache within its TTL"
    );
    cached.invalidate(&tenant);
    assert_eq!(
        cached.entitlements(&tenant).await.unwrap().unwrap().status,
        TenantStatus::Suspended
    );
}

/// A start against a database that is already migrated logs nothing at INFO or above: the
/// server's "already exists, skipping" notices are not sent to the store's connections.
#[tokio::test]
async fn a_second_start_logs_nothing_at_info() {
    drop(connect().await);
    let logs = crate::common::LogCapture::start();
    let store = connect().await;
    store
        .find(&keygate::hash::KeyDigest::from_bytes([7; 32]))
        .await
        .unwrap();
    let text = logs.text();
    let noisy: Vec<&str> = text
        .lines()
        .filter(|line| {
            [" INFO ", " WARN ", " ERROR "]
                .iter()
                .any(|level| line.contains(level))
        })
        .collect();
    assert!(noisy.is_empty(), "logged on start: {noisy:#?}");
}

/// `from_pool_unmigrated` leaves the schema alone; `migrate` puts it in place and may run again.
#[tokio::test]
async fn migrations_can_be_run_apart() {
    let url = url();
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let schema = format!("keygate_unmigrated_{}", std::process::id());
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let digest = keygate::hash::KeyDigest::from_bytes([9; 32]);

    let store = PostgresStore::from_pool_unmigrated(pool.clone());
    let error = store.find(&digest).await.unwrap_err();
    assert!(
        error.to_string().starts_with("key store backend error"),
        "{error}"
    );

    PostgresStore::migrate(&pool).await.unwrap();
    PostgresStore::migrate(&pool).await.unwrap();
    assert!(store.find(&digest).await.unwrap().is_none());

    pool.close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

/// The URL parameters sqlx reads, as the error of an unknown one lists them.
const KNOWN: &str = "sslmode, ssl-mode, sslrootcert, ssl-root-cert, ssl-ca, sslcert, ssl-cert, \
                     sslkey, ssl-key, statement-cache-capacity, host, hostaddr, port, dbname, \
                     user, password, application_name, options";

/// Why connecting to `url` fails (it must).
async fn connect_error(url: &str) -> String {
    PostgresStore::connect(url)
        .await
        .map(drop)
        .unwrap_err()
        .to_string()
}

/// `url` with `query` appended as further parameters.
fn with_query(url: &str, query: &str) -> String {
    let join = if url.contains('?') { '&' } else { '?' };
    format!("{url}{join}{query}")
}

/// A URL parameter sqlx does not read is refused, named without its value: sqlx would log the
/// value at WARN (a mistyped `password`: a password in the logs) and connect without it.
#[tokio::test]
async fn an_unknown_url_parameter_is_refused_without_its_value() {
    let logs = crate::common::LogCapture::start();
    let mistyped = with_query(&url(), "sslmode=prefer&passwd=hunter2-in-the-url");
    let error = connect_error(&mistyped).await;
    assert_eq!(
        error,
        format!(
            "key store backend error: unknown parameter `passwd` in the PostgreSQL URL (known: \
             {KNOWN}, options[…])"
        )
    );
    assert!(!logs.text().contains("hunter2"), "{}", logs.text());
    // Encoded names are read as sqlx reads them; known ones and `options[…]` connect.
    let known = with_query(
        &url(),
        "application_name=keygate-test&options%5Bstatement_timeout%5D=5000&sslmode=prefer",
    );
    PostgresStore::connect(&known).await.unwrap();
}

/// A URL whose query the URL parser does not find where a plain split at `?` does (a password
/// with an unencoded `?`, a fragment that holds one) is not read as parameters: no part of the
/// password reaches the error, and a fragment's text is no parameter.
#[tokio::test]
async fn a_question_mark_outside_the_query_is_no_parameter() {
    // The parser ends the authority at the `?`: "invalid port number", as sqlx alone says.
    let error = PostgresStore::connect("postgres://postgres:pass?word-in-the-url@127.0.0.1/test")
        .await
        .map(drop)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "key store backend error: error with configuration: invalid port number"
    );
    // A fragment is not sent, and sqlx reads no parameter from it: the URL connects.
    PostgresStore::connect(&format!("{}#section?notes", url()))
        .await
        .unwrap();
    // A password whose `?` leaves a valid port: the rest of it, up to the `@`, would be read
    // as a parameter. Refused, quoting nothing.
    let logs = crate::common::LogCapture::start();
    for leaky in [
        "postgres://postgres:5432?hunter2@127.0.0.1/test",
        "postgres://postgres:5432?hunter2=x@127.0.0.1/test",
        "postgres://postgres:5432#hunter2@127.0.0.1/test",
    ] {
        assert_eq!(
            connect_error(leaky).await,
            "key store backend error: the PostgreSQL URL has an `@` after its host: percent-encode \
             `?`, `#` and `/` in its user name and password (%3F, %23, %2F)",
            "{leaky}"
        );
    }
    // A name that is no parameter's name is not shown either.
    assert_eq!(
        connect_error(&with_query(&url(), "sslmode=prefer&hunter2%20x=1")).await,
        format!(
            "key store backend error: unknown parameter `(not shown: not a parameter's name)` in \
             the PostgreSQL URL (known: {KNOWN}, options[…])"
        )
    );
    assert!(!logs.text().contains("hunter2"), "{}", logs.text());
}

/// A server that refuses the connection is named as such once the pool has waited for it,
/// not only as the pool's timeout.
#[tokio::test]
async fn a_refused_connection_says_so() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = connect_error(&format!("postgres://postgres@127.0.0.1:{port}/test")).await;
    assert_eq!(
        error,
        "key store backend error: error communicating with database: Connection refused (os error 111)"
    );
}
