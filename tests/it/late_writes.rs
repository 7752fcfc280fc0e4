//! Writes that land around a manager's call. An issue or a rotation that the store commits
//! after the manager's store timeout is undone: its caller was told it failed (503) and never
//! got the secret, so the new key must never work and a rotated key must work again. Writes
//! through a `CachedStore` run in a task of their own, so a store that is slow to answer
//! commits them after the timeout: that is the case built here, with a store that commits
//! `delay` after it is asked. And a rename that lands in the middle of a rotation reaches the
//! successor.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate::audit::{AuditAction, AuditEvent, AuditSink};
use keygate::cache::CachedStore;
use keygate::hash::KeyDigest;
use keygate::lifecycle::{KeyManager, ManageError, NewKey};
use keygate::request::RequestHead;
use keygate::store::{KeyRecord, KeyStore, Lookup, ManagedKeyStore, MemoryStore, StoreError};
use keygate::{AuthLayer, Verifier, api};
use time::OffsetDateTime;

use crate::common::*;

/// A store whose writes commit `delay` after they are asked for. With
/// `undo: false` it leaves `undo_rotate` to its default, as a third-party store may.
///
/// It can also rename a key just before rotating it (`rename_before_rotate`): a rename that
/// lands between a rotation's read of the key and its write.
#[derive(Clone)]
struct SlowWrites<S> {
    inner: S,
    delay: Arc<Mutex<Duration>>,
    undo: bool,
    rename_first: Arc<Mutex<Option<String>>>,
}

impl<S> SlowWrites<S> {
    fn new(inner: S, undo: bool) -> Self {
        SlowWrites {
            inner,
            delay: Arc::default(),
            undo,
            rename_first: Arc::default(),
        }
    }

    fn rename_before_rotate(&self, name: &str) {
        *self.rename_first.lock().unwrap() = Some(name.to_owned());
    }

    fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    async fn wait(&self) {
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
    }
}

#[async_trait::async_trait]
impl<S: KeyStore> KeyStore for SlowWrites<S> {
    async fn find(&self, digest: &KeyDigest) -> Lookup {
        self.inner.find(digest).await
    }
}

#[async_trait::async_trait]
impl<S: ManagedKeyStore> ManagedKeyStore for SlowWrites<S> {
    async fn insert(&self, record: KeyRecord, max: Option<usize>) -> Result<(), StoreError> {
        self.wait().await;
        self.inner.insert(record, max).await
    }
    async fn get(
        &self,
        tenant: &str,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.get(tenant, id, now).await
    }
    async fn list(&self, tenant: &str, now: OffsetDateTime) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list(tenant, now).await
    }
    async fn rename(
        &self,
        tenant: &str,
        id: &str,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.wait().await;
        self.inner.rename(tenant, id, name, now).await
    }
    async fn revoke(
        &self,
        tenant: &str,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.wait().await;
        self.inner.revoke(tenant, id, now).await
    }
    async fn rotate(
        &self,
        tenant: &str,
        id: &str,
        replacement: KeyRecord,
        old_until: OffsetDateTime,
        now: OffsetDateTime,
        max: Option<usize>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.wait().await;
        let rename = self.rename_first.lock().unwrap().take();
        if let Some(name) = rename {
            self.inner.rename(tenant, id, &name, now).await?;
        }
        self.inner
            .rotate(tenant, id, replacement, old_until, now, max)
            .await
    }
    async fn touch(&self, used: &[(String, OffsetDateTime)]) -> Result<(), StoreError> {
        self.inner.touch(used).await
    }
    async fn undo_rotate(
        &self,
        tenant: &str,
        id: &str,
        old_until: OffsetDateTime,
        successor: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(KeyRecord, KeyRecord)>, StoreError> {
        if !self.undo {
            return Err(StoreError::Unsupported);
        }
        self.inner
            .undo_rotate(tenant, id, old_until, successor, now)
            .await
    }
}

/// The audit trail, and a signal at each event.
#[derive(Clone, Default)]
struct Trail {
    events: Arc<Mutex<Vec<AuditEvent>>>,
    recorded: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl AuditSink for Trail {
    async fn record(&self, event: &AuditEvent) -> Result<(), keygate::backend::BackendError> {
        self.events.lock().unwrap().push(event.clone());
        self.recorded.notify_waiters();
        Ok(())
    }
}

impl Trail {
    /// Actions and key ids recorded from the `from`th event on.
    fn since(&self, from: usize) -> Vec<(AuditAction, String)> {
        let events = self.events.lock().unwrap();
        events[from..]
            .iter()
            .map(|e| (e.action, e.key_id.clone()))
            .collect()
    }

    fn len(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    /// Waits until `n` events are recorded from the `from`th on, and gives them. The guard
    /// keeps a regression from hanging the suite; nothing here measures time.
    async fn wait_since(&self, from: usize, n: usize) -> Vec<(AuditAction, String)> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let recorded = self.recorded.notified();
                let events = self.since(from);
                if events.len() >= n {
                    return events;
                }
                recorded.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} events are never recorded: {:?}", self.since(from)))
    }
}

/// The manager's store timeout: long enough that a write on a loaded machine is not late by
/// accident, short against `SLOW`, which makes a write late for sure.
const TIMEOUT: Duration = Duration::from_millis(500);
const SLOW: Duration = Duration::from_millis(1500);

fn manager<S: ManagedKeyStore + Clone>(
    slow: &SlowWrites<S>,
    verifier: &Verifier,
    trail: &Trail,
) -> KeyManager {
    KeyManager::builder(CachedStore::new(slow.clone()))
        .scheme(verifier.scheme().clone())
        .store_timeout(TIMEOUT)
        .audit(trail.clone())
        .build()
}

/// What each test works with: the store, the slow store in front of it, a verifier on the
/// store, the audit trail, and a manager writing through a cache over the slow store.
struct Parts<S> {
    store: S,
    slow: SlowWrites<S>,
    verifier: Verifier,
    trail: Trail,
    manager: KeyManager,
}

impl<S: ManagedKeyStore + Clone> Parts<S> {
    fn on(store: S, undo: bool) -> Self {
        let slow = SlowWrites::new(store.clone(), undo);
        let verifier = Verifier::builder(store.clone()).build();
        let trail = Trail::default();
        let manager = manager(&slow, &verifier, &trail);
        Parts {
            store,
            slow,
            verifier,
            trail,
            manager,
        }
    }
}

/// The id of the key `secret` authenticates as, or why it does not.
async fn authenticates(verifier: &Verifier, secret: &str) -> Result<String, String> {
    let request = http::Request::get("/")
        .header("x-api-key", secret)
        .body(())
        .unwrap();
    verifier
        .verify(&RequestHead::from(&request), None)
        .await
        .map(|t| t.key_id().to_owned())
        .map_err(|e| e.to_string())
}

/// The ids of the tenant's keys active a second from now.
async fn stored_ids(store: &impl ManagedKeyStore, tenant: &str) -> Vec<String> {
    let now = OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let keys = store.list(tenant, now).await.unwrap();
    keys.into_iter().map(|k| k.id).collect()
}

async fn a_rotation_that_commits_late_is_undone<S: ManagedKeyStore + Clone>(store: S) {
    for grace in [None, Some(Duration::from_secs(60))] {
        let Parts {
            slow,
            verifier,
            trail,
            manager,
            ..
        } = Parts::on(store.clone(), true);
        let tenant = keygate::store::conformance::tenant();
        let old = manager
            .issue("ops", &tenant, NewKey::new("admin", ["admin"]))
            .await
            .unwrap();
        let (secret, old_id) = (old.key.expose_secret(), old.info.id.clone());

        slow.set_delay(SLOW);
        let from = trail.len();
        let answer = manager.rotate("ops", &tenant, &old_id, grace).await;
        assert!(
            matches!(answer, Err(ManageError::Store(StoreError::Timeout))),
            "grace {grace:?}: {answer:?}"
        );
        // The rotation commits, then is taken back: its successor is revoked.
        let events = trail.wait_since(from, 2).await;
        let successor = events[0].1.clone();
        assert_ne!(successor, old_id);
        assert_eq!(
            trail.since(from),
            [
                (AuditAction::Issue, successor.clone()),
                (AuditAction::Revoke, successor.clone()),
            ],
            "grace {grace:?}: the trail holds what the store holds"
        );
        assert_eq!(
            authenticates(&verifier, secret).await,
            Ok(old_id.clone()),
            "grace {grace:?}: the old key works"
        );
        assert_eq!(
            stored_ids(&store, &tenant).await,
            [old_id.as_str()],
            "grace {grace:?}: the old key is the tenant's only active key, past any grace"
        );
        // A retry starts from where the caller left: the old key is rotated afresh.
        slow.set_delay(Duration::ZERO);
        let new = manager
            .rotate("ops", &tenant, &old_id, grace)
            .await
            .unwrap();
        assert_eq!(
            authenticates(&verifier, new.key.expose_secret()).await,
            Ok(new.info.id.clone())
        );
    }
}

#[tokio::test]
async fn a_rotation_that_commits_after_the_timeout_is_undone_on_memory() {
    a_rotation_that_commits_late_is_undone(MemoryStore::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_rotation_that_commits_after_the_timeout_is_undone_on_sqlite() {
    let store = keygate::store::SqliteStore::in_memory().await.unwrap();
    a_rotation_that_commits_late_is_undone(store).await;
}

#[tokio::test]
async fn an_issue_that_commits_after_the_timeout_is_revoked() {
    let Parts {
        store,
        slow,
        verifier,
        trail,
        manager,
    } = Parts::on(MemoryStore::new(), true);
    slow.set_delay(SLOW);
    for first in [false, true] {
        let from = trail.len();
        let new = NewKey::new("admin", ["admin"]);
        let answer = if first {
            manager.issue_first("setup", "acme", new).await.map(|_| ())
        } else {
            manager.issue("ops", "acme", new).await.map(|_| ())
        };
        assert!(
            matches!(answer, Err(ManageError::Store(StoreError::Timeout))),
            "{answer:?}"
        );
        let key = trail.wait_since(from, 2).await[0].1.clone();
        assert_eq!(
            trail.since(from),
            [
                (AuditAction::Issue, key.clone()),
                (AuditAction::Revoke, key.clone()),
            ],
            "issue_first: {first}"
        );
    }
    assert_eq!(stored_ids(&store, "acme").await, Vec::<String>::new());
    assert_eq!(store.len(), 2, "the records are kept, revoked");
    // The tenant has no active key: its first admin key can still be made.
    slow.set_delay(Duration::ZERO);
    let first = manager
        .issue_first("setup", "acme", NewKey::new("admin", ["admin"]))
        .await
        .unwrap()
        .expect("the tenant has no active key");
    assert_eq!(
        authenticates(&verifier, first.key.expose_secret()).await,
        Ok(first.info.id.clone())
    );
}

/// An import hands out no secret: committed late, it did what its caller asked, and stays.
#[tokio::test]
async fn an_import_that_commits_after_the_timeout_stays() {
    use keygate::hash::KeyHasher;
    use keygate::key::{Environment, KeyFormat, KeyScheme};
    let store = MemoryStore::new();
    let slow = SlowWrites::new(store.clone(), true);
    // Keys issued elsewhere: no checksum, plain SHA-256.
    let scheme = KeyScheme::new(
        KeyFormat::default().with_checksum(false),
        KeyHasher::sha256(),
    );
    let verifier = Verifier::builder(store.clone())
        .scheme(scheme.clone())
        .build();
    let trail = Trail::default();
    let manager = manager(&slow, &verifier, &trail);
    let legacy = scheme.format().generate(Environment::Live);
    let secret = legacy.expose_secret().to_owned();
    let digest = KeyDigest::from_hex(&KeyHasher::sha256().hash(&secret).to_hex()).unwrap();
    slow.set_delay(SLOW);
    let answer = manager
        .import("ops", "acme", digest, None, NewKey::new("old", ["read"]))
        .await;
    assert!(
        matches!(answer, Err(ManageError::Store(StoreError::Timeout))),
        "{answer:?}"
    );
    let events = trail.wait_since(0, 1).await;
    assert_eq!(events[0].0, AuditAction::Import);
    let imported = events[0].1.clone();
    assert_eq!(authenticates(&verifier, &secret).await, Ok(imported));
}

/// A store without `undo_rotate` gets the successor revoked; the old key stays rotated and
/// the trail says so.
#[tokio::test]
async fn a_store_that_cannot_undo_a_rotation_gets_its_successor_revoked() {
    let Parts {
        store,
        slow,
        verifier,
        trail,
        manager,
    } = Parts::on(MemoryStore::new(), false);
    let old = manager
        .issue("ops", "acme", NewKey::new("ci", ["read"]))
        .await
        .unwrap();
    let old_id = old.info.id.clone();
    slow.set_delay(SLOW);
    let from = trail.len();
    let answer = manager
        .rotate("ops", "acme", &old_id, Some(Duration::from_secs(60)))
        .await;
    assert!(
        matches!(answer, Err(ManageError::Store(StoreError::Timeout))),
        "{answer:?}"
    );
    let successor = trail.wait_since(from, 3).await[1].1.clone();
    assert_eq!(
        trail.since(from),
        [
            (AuditAction::Rotate, old_id.clone()),
            (AuditAction::Issue, successor.clone()),
            (AuditAction::Revoke, successor.clone()),
        ]
    );
    let past_grace = OffsetDateTime::now_utc() + time::Duration::minutes(2);
    assert!(store.list("acme", past_grace).await.unwrap().is_empty());
    assert_eq!(
        authenticates(&verifier, old.key.expose_secret()).await,
        Ok(old_id),
        "in its grace period, the old key still works"
    );
}

/// The case a review found: the tenant's only admin key rotates itself through the management
/// API with no grace period, and the store is slow. The caller gets 503; the admin key keeps
/// working, and nothing else does.
#[tokio::test]
async fn an_admin_key_rotating_itself_on_a_slow_store_keeps_working_after_a_503() {
    let Parts {
        slow,
        verifier,
        trail,
        manager,
        ..
    } = Parts::on(MemoryStore::new(), true);
    let admin = manager
        .issue("setup", "acme", NewKey::new("admin", ["admin"]))
        .await
        .unwrap();
    let (secret, admin_id) = (admin.key.expose_secret(), admin.info.id.clone());
    let addr = serve(api::router(manager).route_layer(AuthLayer::new(verifier).management())).await;
    slow.set_delay(SLOW);
    let from = trail.len();
    let request = |method: &str, path: &str| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("x-api-key", secret)
            .body(String::new())
            .unwrap()
    };
    let reply = send_tcp(
        addr,
        request("POST", &format!("/v1/api-keys/{admin_id}/rotate")),
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()),
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            envelope("SERVICE_UNAVAILABLE", UNAVAILABLE)
        )
    );
    assert_eq!(reply.headers["cache-control"], "no-store");
    let successor = trail.wait_since(from, 2).await[0].1.clone();
    assert_eq!(
        trail.since(from),
        [
            (AuditAction::Issue, successor.clone()),
            (AuditAction::Revoke, successor),
        ]
    );
    let reply = send_tcp(addr, request("GET", "/v1/api-keys")).await;
    assert_eq!(reply.status, http::StatusCode::OK);
    let listed = reply.json();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [admin_id.as_str()]);
}

impl<S> Parts<S> {
    /// `change`, made while the store is slow: its caller gets a timeout, and the audit trail
    /// records `event` once the change lands.
    async fn lands_late<T: std::fmt::Debug>(
        &self,
        change: impl std::future::Future<Output = Result<T, ManageError>>,
        event: (AuditAction, String),
    ) {
        self.slow.set_delay(SLOW);
        let from = self.trail.len();
        let answer = change.await;
        assert!(
            matches!(answer, Err(ManageError::Store(StoreError::Timeout))),
            "{answer:?}"
        );
        assert_eq!(self.trail.wait_since(from, 1).await, [event]);
    }
}

/// A rename or a revocation hands out no secret: committed late, it stands, and the audit
/// trail records it as it records any change.
#[tokio::test]
async fn a_rename_or_revocation_that_commits_after_the_timeout_stands_and_is_audited() {
    let parts = Parts::on(MemoryStore::new(), true);
    let manager = &parts.manager;
    let key = manager
        .issue("ops", "acme", NewKey::new("ci", ["read"]))
        .await
        .unwrap();
    let id = key.info.id.clone();

    let rename = manager.rename("ops", "acme", &id, "deploys");
    parts
        .lands_late(rename, (AuditAction::Rename, id.clone()))
        .await;
    parts.slow.set_delay(Duration::ZERO);
    assert_eq!(manager.get("acme", &id).await.unwrap().name, "deploys");

    let revoke = manager.revoke("ops", "acme", &id);
    parts
        .lands_late(revoke, (AuditAction::Revoke, id.clone()))
        .await;
    assert_eq!(
        authenticates(&parts.verifier, key.key.expose_secret()).await,
        Err("API key has been revoked".to_owned())
    );
}

/// A withdrawal that commits after the timeout stands, as a revocation does, and the audit
/// trail records it: the store holds the key revoked, and the trail must say why.
#[tokio::test]
async fn a_withdrawal_that_commits_after_the_timeout_is_audited() {
    let parts = Parts::on(MemoryStore::new(), true);
    let key = parts
        .manager
        .issue("ops", "acme", NewKey::new("ci", ["read"]))
        .await
        .unwrap();
    let withdraw = parts.manager.withdraw("ops", "acme", &key);
    parts
        .lands_late(withdraw, (AuditAction::Withdraw, key.info.id.clone()))
        .await;
    assert_eq!(
        authenticates(&parts.verifier, key.key.expose_secret()).await,
        Err("API key has been revoked".to_owned())
    );
}

/// A rename that commits between a rotation's read of the key and its write reaches the
/// successor: it takes the name the old key had when it was replaced, not the one read.
#[tokio::test]
async fn a_rename_during_a_rotation_reaches_the_successor() {
    let Parts {
        slow,
        trail,
        manager,
        ..
    } = Parts::on(MemoryStore::new(), true);
    let old = manager
        .issue("ops", "acme", NewKey::new("ci", ["read"]))
        .await
        .unwrap();
    slow.rename_before_rotate("deploys");
    let from = trail.len();
    let new = manager
        .rotate("ops", "acme", &old.info.id, None)
        .await
        .unwrap();
    assert_eq!(new.info.name, "deploys");
    assert_eq!(
        manager.get("acme", &new.info.id).await.unwrap().name,
        "deploys"
    );
    assert_eq!(
        trail.since(from),
        [
            (AuditAction::Rotate, old.info.id.clone()),
            (AuditAction::Issue, new.info.id.clone()),
            (AuditAction::Rename, new.info.id.clone()),
        ]
    );
}
