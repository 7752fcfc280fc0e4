//! `KeyManager` called from Rust: the caps apply to every caller, operator code is bound by no
//! caller, `issue_as` / `rotate_as` keep what they issue within the caller's bounds, and
//! `rename_as` / `revoke_as` change only keys the caller could have issued.

use std::sync::Arc;

use keygate::Tenant;
use keygate::audit::{AuditAction, AuditEvent, AuditSink};
use keygate::key::Environment;
use keygate::lifecycle::{BoundViolation, KeyManager, ManageError, NewKey};
use keygate::plan::{Plan, TenantEntitlements};
use keygate::restriction::Restrictions;
use keygate::scope::Scopes;
use keygate::store::{KeyStore, ManagedKeyStore, MemoryStore};
use serde_json::json;
use time::OffsetDateTime;

/// The caller a verifier would hand a handler for the key `id`, on `plan`.
async fn caller(store: &MemoryStore, id: &str, plan: Option<Plan>) -> Tenant {
    let record = store
        .get("acme", id, OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap();
    // Round-trip through the lookup path, as the verifier does.
    let found = store.find(&record.digest).await.unwrap().unwrap();
    Tenant::with_entitlements(found, plan.map(|p| Arc::new(TenantEntitlements::active(p))))
}

fn message(result: Result<impl std::fmt::Debug, ManageError>) -> String {
    result.unwrap_err().to_string()
}

#[tokio::test]
async fn caps_apply_to_rust_callers_too() {
    let store = MemoryStore::new();
    let manager = KeyManager::builder(store.clone()).build();
    // 200,000 distinct, well-formed scopes: refused on the count alone.
    let scopes: Vec<String> = (0..200_000).map(|i| format!("s{i}")).collect();
    assert_eq!(
        message(
            manager
                .issue("ops", "acme", NewKey::new("many", scopes))
                .await
        ),
        "Too many scopes: at most 64"
    );
    let metadata = json!({"blob": "x".repeat(1_700_000)});
    let metadata = metadata.as_object().unwrap().clone();
    assert_eq!(
        message(
            manager
                .issue(
                    "ops",
                    "acme",
                    NewKey::new("big", ["read"]).metadata(metadata)
                )
                .await
        ),
        "metadata must be at most 4096 bytes of JSON"
    );
    let ranges: Vec<String> = (0..65).map(|i| format!("10.0.0.{i}/32")).collect();
    let restrictions: Restrictions = serde_json::from_value(json!({"ip_ranges": ranges})).unwrap();
    assert_eq!(
        message(
            manager
                .issue(
                    "ops",
                    "acme",
                    NewKey::new("ips", ["read"]).restrictions(restrictions)
                )
                .await
        ),
        "restrictions.ip_ranges must have at most 64 entries"
    );
    assert_eq!(
        message(
            manager
                .issue(
                    "ops",
                    "acme",
                    NewKey::new("far", ["read"])
                        .expires_at(keygate::lifecycle::MAX_EXPIRY + time::Duration::SECOND)
                )
                .await
        ),
        "expires_at must not be after 2262-01-01T00:00:00Z"
    );
    for name in [
        "x".repeat(129),
        "a\u{202D}b".into(),
        "a\u{2069}".into(),
        "\u{200F}".into(),
        // Invisible: a name that looks like "admin", a byte-order mark, a tag character.
        "ad\u{200B}min".into(),
        "\u{FEFF}ci".into(),
        "ci\u{E0041}".into(),
        "soft\u{00AD}hyphen".into(),
    ] {
        assert_eq!(
            message(
                manager
                    .issue("ops", "acme", NewKey::new(name, ["read"]))
                    .await
            ),
            "Name must be 1 to 128 characters without control or formatting characters"
        );
    }
    let ok = manager
        .issue("ops", "acme", NewKey::new("ok", ["read"]))
        .await
        .unwrap();
    assert_eq!(
        message(
            manager
                .rename("ops", "acme", &ok.info.id, &"y".repeat(1_000_000))
                .await
        ),
        "Name must be 1 to 128 characters without control or formatting characters"
    );
    assert_eq!(
        manager.list("acme").await.unwrap().len(),
        1,
        "nothing else written"
    );
}

#[tokio::test]
async fn operator_code_is_unbound_but_issue_as_is_bound_by_its_caller() {
    let store = MemoryStore::new();
    let manager = KeyManager::builder(store.clone()).build();
    let sandbox = manager
        .issue(
            "ops",
            "acme",
            NewKey::new("writer", ["write", "search"]).environment(Environment::Test),
        )
        .await
        .unwrap();
    // The operator issues whatever it likes.
    manager
        .issue("ops", "acme", NewKey::new("live admin", ["admin"]))
        .await
        .unwrap();

    let plan = Plan {
        allowed_scopes: Some(Scopes::from_static(&["read", "write"])),
        ..Plan::default()
    };
    let writer = caller(&store, &sandbox.info.id, Some(plan)).await;
    let test_key = |scopes: &[&str]| {
        NewKey::new("child", scopes.iter().copied()).environment(Environment::Test)
    };
    for (scopes, expected) in [
        (&["admin"][..], Err(BoundViolation::Scopes)),
        (&["search"][..], Err(BoundViolation::Scopes)), // the key holds it, the plan does not
        (&["docs:read"][..], Err(BoundViolation::Scopes)),
        (&["read", "write"][..], Ok(())),
    ] {
        let got = manager.issue_as(&writer, test_key(scopes)).await;
        match (got, expected) {
            (Err(ManageError::BeyondBounds(v)), Err(e)) => assert_eq!(v, e, "{scopes:?}"),
            (Ok(issued), Ok(())) => assert_eq!(issued.info.environment, Environment::Test),
            (got, expected) => panic!("{scopes:?}: {got:?} instead of {expected:?}"),
        }
    }
    assert_eq!(
        message(
            manager
                .issue_as(&writer, NewKey::new("live", ["read"]))
                .await
        ),
        "Cannot issue a key beyond your own: environment"
    );
    assert_eq!(manager.list("acme").await.unwrap().len(), 3);

    // rotate_as: the successor keeps the rotated key's attributes, which must be in bounds.
    let live_admin = manager.list("acme").await.unwrap()[1].id.clone();
    assert_eq!(
        message(manager.rotate_as(&writer, &live_admin, None).await),
        "Cannot issue a key beyond your own: environment"
    );
    assert!(
        manager.get("acme", &live_admin).await.is_ok(),
        "nothing written"
    );
    // A key holding a scope its plan does not allow cannot even rotate itself: its successor
    // would hold that scope too.
    assert_eq!(
        message(manager.rotate_as(&writer, &sandbox.info.id, None).await),
        "Cannot issue a key beyond your own: scopes"
    );
    // Without that plan it can; then, in its grace period, it may not act at all.
    let unplanned = caller(&store, &sandbox.info.id, None).await;
    let successor = manager
        .rotate_as(
            &unplanned,
            &sandbox.info.id,
            Some(std::time::Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(
        successor.info.scopes,
        Scopes::from_static(&["write", "search"])
    );
    let rotated = caller_in_grace(&store, &sandbox).await;
    assert_eq!(
        message(manager.issue_as(&rotated, test_key(&["read"])).await),
        "API key has been rotated: use its successor to manage keys"
    );
    assert_eq!(
        message(manager.rotate_as(&rotated, &successor.info.id, None).await),
        "API key has been rotated: use its successor to manage keys"
    );
}

/// Whether `secret` authenticates through `verifier`.
async fn authenticates(verifier: &keygate::Verifier, secret: &str) -> bool {
    let request = http::Request::get("/")
        .header("x-api-key", secret)
        .body(())
        .unwrap();
    verifier
        .verify(&keygate::request::RequestHead::from(&request), None)
        .await
        .is_ok()
}

/// Found by review: a sandbox or restricted admin could rename and revoke any key of its
/// tenant, its live admin key included. A caller now changes only keys it could have issued.
#[tokio::test]
async fn rename_as_and_revoke_as_change_only_keys_the_caller_could_have_issued() {
    let store = MemoryStore::new();
    let trail = Trail::default();
    let verifier = keygate::Verifier::builder(store.clone()).build();
    let manager = KeyManager::builder(store.clone())
        .scheme(verifier.scheme().clone())
        .audit(trail.clone())
        .build();
    let issue = |new: NewKey| {
        let manager = manager.clone();
        async move { manager.issue("ops", "acme", new).await.unwrap() }
    };
    let office = |cidr: &str| -> Restrictions {
        serde_json::from_value(json!({"ip_ranges": [cidr]})).unwrap()
    };
    let live_admin = issue(NewKey::new("live admin", ["admin"])).await;
    let sandbox_admin =
        issue(NewKey::new("sandbox admin", ["admin"]).environment(Environment::Test)).await;
    let ip_admin =
        issue(NewKey::new("ip admin", ["admin"]).restrictions(office("10.0.0.0/8"))).await;
    let in_an_hour = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let expiring_admin =
        issue(NewKey::new("expiring admin", ["admin"]).expires_at(in_an_hour)).await;
    let ci = issue(NewKey::new("ci", ["read"]).environment(Environment::Test)).await;
    let office_key =
        issue(NewKey::new("office", ["read"]).restrictions(office("10.1.0.0/16"))).await;
    let globex = manager
        .issue("ops", "globex", NewKey::new("globex admin", ["admin"]))
        .await
        .unwrap();
    let sandbox = caller(&store, &sandbox_admin.info.id, None).await;
    let restricted = caller(&store, &ip_admin.info.id, None).await;
    let expiring = caller(&store, &expiring_admin.info.id, None).await;
    let audited = || trail.0.lock().unwrap().len();
    let before = audited();

    // Beyond the caller's bounds: refused, nothing written, nothing audited.
    let live = &live_admin.info.id;
    for (who, by, violation) in [
        ("sandbox admin", &sandbox, BoundViolation::Environment),
        ("ip admin", &restricted, BoundViolation::Restrictions),
        ("expiring admin", &expiring, BoundViolation::Expiry),
    ] {
        match manager.revoke_as(by, live).await {
            Err(ManageError::BeyondBounds(v)) => assert_eq!(v, violation, "{who} revokes"),
            other => panic!("{who} revokes the live admin: {other:?}"),
        }
        match manager.rename_as(by, live, "pwned").await {
            Err(ManageError::BeyondBounds(v)) => assert_eq!(v, violation, "{who} renames"),
            other => panic!("{who} renames the live admin: {other:?}"),
        }
    }
    assert_eq!(
        message(manager.revoke_as(&sandbox, live).await),
        "Cannot issue a key beyond your own: environment"
    );
    assert_eq!(manager.get("acme", live).await.unwrap().name, "live admin");
    assert!(authenticates(&verifier, live_admin.key.expose_secret()).await);
    assert_eq!(audited(), before, "refusals are not audited");
    // Listing and getting stay unbounded: every admin sees the tenant's keys (no secrets).
    assert_eq!(manager.list("acme").await.unwrap().len(), 6);

    // Unknown ids, and another tenant's, are NotFound as before.
    for id in ["key_does_not_exist", globex.info.id.as_str()] {
        assert!(matches!(
            manager.revoke_as(&sandbox, id).await,
            Err(ManageError::NotFound)
        ));
        assert!(matches!(
            manager.rename_as(&sandbox, id, "x").await,
            Err(ManageError::NotFound)
        ));
    }
    assert!(authenticates(&verifier, globex.key.expose_secret()).await);

    // Within the caller's bounds: renamed and revoked, audited under the caller's key id.
    let renamed = manager
        .rename_as(&sandbox, &ci.info.id, " ci renamed ")
        .await
        .unwrap();
    assert_eq!(renamed.name, "ci renamed");
    manager.revoke_as(&sandbox, &ci.info.id).await.unwrap();
    assert!(!authenticates(&verifier, ci.key.expose_secret()).await);
    assert!(matches!(
        manager.revoke_as(&sandbox, &ci.info.id).await,
        Err(ManageError::NotFound)
    ));
    manager
        .revoke_as(&restricted, &office_key.info.id)
        .await
        .unwrap();
    assert!(!authenticates(&verifier, office_key.key.expose_secret()).await);

    // A caller's own key is within its own bounds.
    let me = manager
        .rename_as(&sandbox, &sandbox_admin.info.id, "me")
        .await
        .unwrap();
    assert_eq!(me.name, "me");
    manager
        .revoke_as(&sandbox, &sandbox_admin.info.id)
        .await
        .unwrap();
    assert!(!authenticates(&verifier, sandbox_admin.key.expose_secret()).await);

    let events: Vec<(AuditAction, String, String)> = trail.0.lock().unwrap()[before..]
        .iter()
        .map(|e| (e.action, e.key_id.clone(), e.actor.clone()))
        .collect();
    let (sandbox_id, ip_id) = (sandbox_admin.info.id.clone(), ip_admin.info.id.clone());
    assert_eq!(
        events,
        [
            (AuditAction::Rename, ci.info.id.clone(), sandbox_id.clone()),
            (AuditAction::Revoke, ci.info.id.clone(), sandbox_id.clone()),
            (AuditAction::Revoke, office_key.info.id.clone(), ip_id),
            (AuditAction::Rename, sandbox_id.clone(), sandbox_id.clone()),
            (AuditAction::Revoke, sandbox_id.clone(), sandbox_id),
        ]
    );
}

/// A caller in its rotation grace period renames and revokes nothing, not even its successor.
#[tokio::test]
async fn a_caller_in_its_grace_period_may_not_rename_or_revoke() {
    let store = MemoryStore::new();
    let manager = KeyManager::builder(store.clone()).build();
    let admin = manager
        .issue("ops", "acme", NewKey::new("admin", ["admin"]))
        .await
        .unwrap();
    let other = manager
        .issue("ops", "acme", NewKey::new("other", ["read"]))
        .await
        .unwrap();
    let successor = manager
        .rotate(
            "ops",
            "acme",
            &admin.info.id,
            Some(std::time::Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let rotated = caller_in_grace(&store, &admin).await;
    for id in [&successor.info.id, &other.info.id, &admin.info.id] {
        assert!(matches!(
            manager.revoke_as(&rotated, id).await,
            Err(ManageError::CallerRotated)
        ));
        assert!(matches!(
            manager.rename_as(&rotated, id, "mine").await,
            Err(ManageError::CallerRotated)
        ));
    }
    let mut names: Vec<String> = manager
        .list("acme")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["admin", "admin", "other"], "nothing written");
}

/// The caller for a key that is in its grace period: still found by the lookup path.
async fn caller_in_grace(store: &MemoryStore, key: &keygate::lifecycle::IssuedKey) -> Tenant {
    let digest = keygate::hash::KeyHasher::default().hash(key.key.expose_secret());
    let found = store.find(&digest).await.unwrap().unwrap();
    assert!(found.revoked_at.is_some() && found.is_active_at(OffsetDateTime::now_utc()));
    Tenant::new(found)
}

/// Keeps every audit event.
#[derive(Clone, Default)]
struct Trail(Arc<std::sync::Mutex<Vec<AuditEvent>>>);

#[async_trait::async_trait]
impl AuditSink for Trail {
    async fn record(&self, event: &AuditEvent) -> Result<(), keygate::backend::BackendError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_rotation_is_audited_on_the_old_key_and_its_successor_is_issued() {
    let trail = Trail::default();
    let manager = KeyManager::builder(MemoryStore::new())
        .audit(trail.clone())
        .build();
    let old = manager
        .issue("ops", "acme", NewKey::new("ci", ["read"]))
        .await
        .unwrap();
    let new = manager
        .rotate("ops", "acme", &old.info.id, None)
        .await
        .unwrap();
    let events: Vec<(AuditAction, String, String)> = trail
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.action, e.key_id.clone(), e.actor.clone()))
        .collect();
    assert_eq!(
        events,
        [
            (AuditAction::Issue, old.info.id.clone(), "ops".to_owned()),
            (AuditAction::Rotate, old.info.id.clone(), "ops".to_owned()),
            (AuditAction::Issue, new.info.id.clone(), "ops".to_owned()),
        ]
    );
}

impl Trail {
    /// Each event's action, key and actor.
    fn events(&self) -> Vec<(AuditAction, String, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| (e.action, e.key_id.clone(), e.actor.clone()))
            .collect()
    }
}

/// A key whose secret never reached its holder is taken back: an issued key is revoked, a
/// rotation undone (the old key authenticates again, the successor never), each with one
/// `withdraw` event; taking back a key that changed since writes nothing.
#[tokio::test]
async fn a_key_whose_secret_was_lost_is_withdrawn() {
    use keygate::Verifier;
    use keygate::request::RequestHead;

    let store = MemoryStore::new();
    let trail = Trail::default();
    let manager = KeyManager::builder(store.clone())
        .audit(trail.clone())
        .build();
    let verifier = Verifier::builder(store).build();
    let works = |key: &keygate::key::ApiKey| {
        let req = http::Request::get("/")
            .header("x-api-key", key.expose_secret())
            .body(())
            .unwrap();
        verifier
            .check_now(&RequestHead::from(&req), None)
            .unwrap()
            .is_ok()
    };

    let issued = manager
        .issue("ops", "acme", NewKey::new("lost", ["read"]))
        .await
        .unwrap();
    manager.withdraw("cli", "acme", &issued).await.unwrap();
    assert!(!works(&issued.key));
    assert!(matches!(
        manager.get("acme", &issued.info.id).await,
        Err(ManageError::NotFound)
    ));
    // Already taken back: nothing more is written.
    assert!(matches!(
        manager.withdraw("cli", "acme", &issued).await,
        Err(ManageError::NotFound)
    ));

    let old = manager
        .issue("ops", "acme", NewKey::new("ci", ["read"]))
        .await
        .unwrap();
    let new = manager
        .rotate("ops", "acme", &old.info.id, None)
        .await
        .unwrap();
    assert!(!works(&old.key));
    manager.withdraw("cli", "acme", &new).await.unwrap();
    assert!(works(&old.key));
    assert!(!works(&new.key));
    let active: Vec<String> = manager
        .list("acme")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(active, std::slice::from_ref(&old.info.id));
    assert_eq!(
        manager.get("acme", &old.info.id).await.unwrap().revoked_at,
        None
    );

    // A rotation whose old key was revoked since is not undone: nothing is written.
    let again = manager
        .rotate(
            "ops",
            "acme",
            &old.info.id,
            Some(std::time::Duration::from_secs(60)),
        )
        .await
        .unwrap();
    manager.revoke("ops", "acme", &old.info.id).await.unwrap();
    assert!(matches!(
        manager.withdraw("cli", "acme", &again).await,
        Err(ManageError::NotFound)
    ));
    assert!(works(&again.key));

    let (cli, ops) = ("cli".to_owned(), "ops".to_owned());
    assert_eq!(
        trail.events(),
        [
            (AuditAction::Issue, issued.info.id.clone(), ops.clone()),
            (AuditAction::Withdraw, issued.info.id.clone(), cli.clone()),
            (AuditAction::Issue, old.info.id.clone(), ops.clone()),
            (AuditAction::Rotate, old.info.id.clone(), ops.clone()),
            (AuditAction::Issue, new.info.id.clone(), ops.clone()),
            (AuditAction::Withdraw, new.info.id.clone(), cli),
            (AuditAction::Rotate, old.info.id.clone(), ops.clone()),
            (AuditAction::Issue, again.info.id.clone(), ops.clone()),
            (AuditAction::Revoke, old.info.id.clone(), ops),
        ]
    );
}

/// A key issued elsewhere, known by its SHA-256, is imported: it then authenticates through
/// the verifier, and the import is audited. Bad imports are refused before any write.
#[tokio::test]
async fn a_key_known_by_its_sha256_is_imported_and_authenticates() {
    use keygate::Verifier;
    use keygate::hash::{KeyDigest, KeyHasher};
    use keygate::key::{KeyFormat, KeyScheme};
    use keygate::request::RequestHead;

    let store = MemoryStore::new();
    let trail = Trail::default();
    let scheme = KeyScheme::new(
        KeyFormat::default().with_checksum(false),
        KeyHasher::sha256(),
    );
    // The manager's clock, not the system's, dates an import and judges its expiry.
    let clock = keygate::limit::ManualClock::at_unix_secs(1_767_225_600); // 2026-01-01
    let manager = KeyManager::builder(store.clone())
        .scheme(scheme.clone())
        .audit(trail.clone())
        .clock(clock)
        .build();
    let legacy = scheme.format().generate(Environment::Test);
    let secret = legacy.expose_secret();
    let digest = KeyDigest::from_hex(&KeyHasher::sha256().hash(secret).to_hex()).unwrap();
    let new = || NewKey::new("legacy", ["read"]).environment(Environment::Test);

    for last4 in ["abc", "ABCD", "abcde", "wxyz"] {
        let refused = manager
            .import("ops", "acme", digest, Some(last4), new())
            .await;
        assert_eq!(
            message(refused),
            "The imported key's last four characters must be 4 characters of 0-9 and a-f"
        );
    }
    let no_scope = manager
        .import(
            "ops",
            "acme",
            digest,
            None,
            NewKey::new("legacy", Vec::<String>::new()),
        )
        .await;
    assert_eq!(message(no_scope), "Scopes must not be empty");
    let peppered = KeyManager::builder(store.clone())
        .scheme(KeyScheme::new(
            KeyFormat::default(),
            KeyHasher::hmac_sha256(b"pepper"),
        ))
        .build();
    let refused = peppered.import("ops", "acme", digest, None, new()).await;
    assert!(matches!(refused, Err(ManageError::ImportPeppered)));
    assert!(store.is_empty(), "nothing written by a refused import");

    let info = manager
        .import("ops", "acme", digest, Some(legacy.last4()), new())
        .await
        .unwrap();
    assert_eq!(
        (info.prefix.as_str(), info.last4.as_str(), info.environment),
        ("sk_test_", legacy.last4(), Environment::Test)
    );
    assert_eq!(info.created_at.unix_timestamp(), 1_767_225_600);
    let duplicate = manager.import("ops", "acme", digest, None, new()).await;
    assert!(matches!(duplicate, Err(ManageError::DuplicateKey)));
    assert_eq!(
        message(manager.import("ops", "acme", digest, None, new()).await),
        "A key with this digest already exists"
    );

    let verifier = Verifier::builder(store.clone()).scheme(scheme).build();
    let request = http::Request::get("/")
        .header("x-api-key", secret)
        .body(())
        .unwrap();
    let tenant = verifier
        .verify(&RequestHead::from(&request), None)
        .await
        .unwrap();
    assert_eq!(
        (tenant.tenant_id(), tenant.key_id()),
        ("acme", info.id.as_str())
    );

    let events: Vec<(AuditAction, String)> = trail
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.action, e.key_id.clone()))
        .collect();
    assert_eq!(events, [(AuditAction::Import, info.id.clone())]);
}
