//! The conformance suite every key store runs: keygate's memory, SQLite and PostgreSQL stores,
//! and yours.
//!
//! Each check takes a store, works on fresh random tenant ids (so stores may be shared between
//! checks), and panics with a message naming what went wrong. Some checks race calls from
//! spawned tasks (concurrent rotations, a rotation against a revocation): run the suite on a
//! multi-threaded runtime, as keygate's own tests do, so that the races are real.
//!
//! ```
//! use keygate::store::{MemoryStore, conformance};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! conformance::run_all(|| async { MemoryStore::new() }).await;
//! # }
//! ```
//!
//! A store that implements only [`KeyStore`] (keys from a config file, an import, another
//! service) runs [`run_read_only`] instead: it hands the store the records to hold and checks
//! what [`KeyStore::find`] and [`KeyStore::find_now`] answer.
//!
//! # What the suite writes
//! Every record the suite makes comes from [`record`]: tenant id `tenant_` followed by 16
//! random hex digits ([`tenant`]), key id `key_` followed by 16 random hex digits, name
//! `conformance` (some checks rename keys to `renamed`), scopes `read` and `write`, metadata
//! `{"plan": {"tier": 2}}`. [`run_all`] inserts such records through the store, rotates,
//! revokes, renames and touches them, and deletes nothing, since [`ManagedKeyStore`] has no
//! delete. Point it at a store of its own (an in-memory store, a fresh SQLite file, a scratch
//! PostgreSQL schema or database, as keygate's own tests do) and drop that afterwards;
//! against a shared database, delete the rows whose tenant id starts with `tenant_` and is
//! followed by 16 hex digits, once no real tenant is named so. [`run_read_only`] writes
//! nothing itself: what the store does with the records it is given is up to it.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::error::StoreError;
use super::managed::ManagedKeyStore;
use super::record::KeyRecord;
use super::{KeyStore, Lookup};
use super::{MAX_TIME, MIN_TIME};
use crate::key::{Environment, KeyScheme};
use crate::restriction::Restrictions;
use crate::scope::Scopes;

/// Runs every check, each on a store from `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: ManagedKeyStore + Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    find_by_digest(&make().await).await;
    revoked_and_expired_records_are_returned(&make().await).await;
    insert_conflicts(&make().await).await;
    active_key_cap(&make().await).await;
    concurrent_inserts_respect_the_cap(make().await).await;
    get_list_rename_revoke(&make().await).await;
    rotate_immediately(&make().await).await;
    rotate_with_grace_period(&make().await).await;
    tenant_isolation(&make().await).await;
    concurrent_revoke_and_find(make().await).await;
    touch_last_used(&make().await).await;
    expiry(&make().await).await;
    concurrent_rotations_leave_one_successor(make().await).await;
    concurrent_rotations_with_grace_leave_one_successor(make().await).await;
    rotate_racing_revoke(make().await).await;
    rotation_with_grace_counts_against_the_cap(&make().await).await;
    a_key_in_grace_cannot_be_rotated_again(&make().await).await;
    a_rotation_refused_by_a_conflict_writes_nothing(&make().await).await;
    undo_rotate(&make().await).await;
    times_out_of_range_are_refused(&make().await).await;
}

/// Runs the checks that need only [`KeyStore`], on one store from `hold`.
///
/// `hold` is called once, with the records the store must hold (keys of two fresh tenants:
/// active, revoked, expired, in a rotation grace period, expiring at [`MAX_TIME`], created at
/// [`MIN_TIME`]), and returns a store holding exactly those records, or those among others.
/// The suite then checks that [`find`](KeyStore::find) returns each record unchanged, that an
/// unknown digest misses, that [`find_now`](KeyStore::find_now), where it answers, agrees
/// with `find`, and that concurrent lookups agree. Run it on a multi-threaded runtime.
///
/// ```
/// use keygate::store::{ManagedKeyStore, MemoryStore, conformance};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// conformance::run_read_only(|records| async move {
///     let store = MemoryStore::new();
///     for record in records {
///         store.insert(record, None).await.expect("insert");
///     }
///     store
/// })
/// .await;
/// # }
/// ```
pub async fn run_read_only<S, F, Fut>(hold: F)
where
    S: KeyStore,
    F: FnOnce(Vec<KeyRecord>) -> Fut,
    Fut: Future<Output = S>,
{
    let (a, b) = (tenant(), tenant());
    let at = now();
    let past = at - Duration::hours(1);
    let future = at + Duration::hours(1);
    let records = vec![
        record(&a, past),
        KeyRecord {
            revoked_at: Some(past),
            ..record(&a, past - Duration::hours(1))
        },
        KeyRecord {
            expires_at: Some(past),
            ..record(&a, past - Duration::hours(1))
        },
        KeyRecord {
            revoked_at: Some(future),
            last_used_at: Some(past),
            ..record(&a, past)
        },
        KeyRecord {
            expires_at: Some(MAX_TIME),
            ..record(&b, at)
        },
        KeyRecord {
            revoked_at: Some(MIN_TIME),
            ..record(&b, MIN_TIME)
        },
    ];
    let store = Arc::new(hold(records.clone()).await);

    for r in &records {
        let found = store
            .find(&r.digest)
            .await
            .unwrap_or_else(|e| panic!("find {}: unexpected error {e}", r.id));
        let found = found.unwrap_or_else(|| panic!("find {}: record missing", r.id));
        assert_eq!(
            *found, *r,
            "find: the record must come back exactly as given"
        );
        agrees_now(&*store, r, Some(&found));
    }
    let unknown = record(&a, at);
    assert!(
        store.find(&unknown.digest).await.expect("find").is_none(),
        "find: an unknown digest must miss"
    );
    agrees_now(&*store, &unknown, None);

    // Lookups from many tasks at once, as on a busy request path.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let (store, r) = (store.clone(), records[i % records.len()].clone());
        tasks.spawn(async move {
            let found = store.find(&r.digest).await.expect("concurrent find");
            assert_eq!(
                found.as_deref(),
                Some(&r),
                "concurrent find: the same record"
            );
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("concurrent find task");
    }
}

/// `find_now`, when it answers, answers as `find` did.
fn agrees_now<S: KeyStore + ?Sized>(store: &S, r: &KeyRecord, expected: Option<&KeyRecord>) {
    let answer: Option<Lookup> = store.find_now(&r.digest);
    if let Some(lookup) = answer {
        let found = lookup.unwrap_or_else(|e| panic!("find_now {}: unexpected error {e}", r.id));
        assert_eq!(
            found.as_deref(),
            expected,
            "find_now must answer as find does"
        );
    }
}

/// A fresh tenant id, unique across runs.
pub fn tenant() -> String {
    format!("tenant_{}", random_hex())
}

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A record as an issuing service would store it (no secret), created at `created_at`
/// truncated to the microsecond.
pub fn record(tenant_id: &str, created_at: OffsetDateTime) -> KeyRecord {
    let (key, digest) = KeyScheme::default().generate(Environment::Live);
    let created_at = created_at
        .replace_nanosecond(created_at.microsecond() * 1000)
        .expect("valid");
    KeyRecord::builder(format!("key_{}", random_hex()), tenant_id, digest)
        .key(&key)
        .name("conformance")
        .scopes(Scopes::from_static(&["read", "write"]))
        .created_at(created_at)
        .metadata(serde_json::Map::from_iter([(
            "plan".to_owned(),
            serde_json::json!({"tier": 2}),
        )]))
        .restrictions(Restrictions {
            ip_ranges: vec!["10.0.0.0/8".parse().expect("cidr")],
            ..Restrictions::default()
        })
        .build()
}

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.microsecond() * 1000).expect("valid")
}

/// `find` returns the exact record for its digest and nothing for an unknown digest.
pub async fn find_by_digest<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let r = record(&t, now());
    store.insert(r.clone(), None).await.expect("insert");
    let found = store
        .find(&r.digest)
        .await
        .expect("find")
        .expect("find: record missing");
    assert_eq!(
        *found, r,
        "find: the stored record must come back unchanged"
    );
    let other = record(&t, now());
    assert!(
        store.find(&other.digest).await.expect("find").is_none(),
        "find: unknown digest must miss"
    );
}

/// Revoked and expired records are returned by `find` as they are, so that the verifier can
/// say "revoked" or "expired" rather than "unknown".
pub async fn revoked_and_expired_records_are_returned<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let past = now() - Duration::hours(1);
    let revoked = KeyRecord {
        revoked_at: Some(past),
        ..record(&t, past)
    };
    let expired = KeyRecord {
        expires_at: Some(past),
        ..record(&t, past - Duration::hours(1))
    };
    store
        .insert(revoked.clone(), None)
        .await
        .expect("insert revoked");
    store
        .insert(expired.clone(), None)
        .await
        .expect("insert expired");
    assert_eq!(
        *store
            .find(&revoked.digest)
            .await
            .unwrap()
            .expect("revoked found"),
        revoked
    );
    assert_eq!(
        *store
            .find(&expired.digest)
            .await
            .unwrap()
            .expect("expired found"),
        expired
    );
    assert!(
        store.list(&t, now()).await.unwrap().is_empty(),
        "list: only active keys"
    );
}

/// A duplicate id or digest is a conflict and changes nothing.
pub async fn insert_conflicts<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let r = record(&t, now());
    store.insert(r.clone(), None).await.unwrap();
    let same_id = KeyRecord {
        id: r.id.clone(),
        ..record(&t, now())
    };
    assert!(
        matches!(
            store.insert(same_id.clone(), None).await,
            Err(StoreError::Conflict(_))
        ),
        "duplicate id"
    );
    assert!(
        store.find(&same_id.digest).await.unwrap().is_none(),
        "a refused insert writes nothing"
    );
    let same_digest = KeyRecord {
        digest: r.digest,
        ..record(&t, now())
    };
    assert!(
        matches!(
            store.insert(same_digest, None).await,
            Err(StoreError::Conflict(_))
        ),
        "duplicate digest"
    );
    assert_eq!(store.list(&t, now()).await.unwrap().len(), 1);
}

/// `max_active` counts only the tenant's active keys.
pub async fn active_key_cap<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let past = now() - Duration::hours(1);
    store
        .insert(
            KeyRecord {
                revoked_at: Some(past),
                ..record(&t, past)
            },
            Some(2),
        )
        .await
        .unwrap();
    store.insert(record(&t, now()), Some(2)).await.unwrap();
    store.insert(record(&t, now()), Some(2)).await.unwrap();
    let third = record(&t, now());
    assert!(matches!(
        store.insert(third.clone(), Some(2)).await,
        Err(StoreError::ActiveKeyLimit(2))
    ));
    assert!(store.find(&third.digest).await.unwrap().is_none());
    // Another tenant is not affected.
    store
        .insert(record(&tenant(), now()), Some(2))
        .await
        .unwrap();
}

/// Concurrent inserts never exceed the cap.
pub async fn concurrent_inserts_respect_the_cap<S: ManagedKeyStore + Clone>(store: S) {
    let t = tenant();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        let r = record(&t, now());
        tasks.spawn(async move { store.insert(r, Some(5)).await });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("task") {
            Ok(()) => ok += 1,
            Err(StoreError::ActiveKeyLimit(5)) => {}
            Err(e) => panic!("concurrent insert: unexpected error {e}"),
        }
    }
    assert_eq!(ok, 5, "exactly the cap must succeed");
    assert_eq!(store.list(&t, now()).await.unwrap().len(), 5);
}

/// The read and update operations, and listing order.
pub async fn get_list_rename_revoke<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let base = now() - Duration::minutes(10);
    let (a, b, c) = (
        record(&t, base + Duration::seconds(2)),
        record(&t, base),
        record(&t, base + Duration::seconds(1)),
    );
    for r in [&a, &b, &c] {
        store.insert(r.clone(), None).await.unwrap();
    }
    let ids: Vec<String> = store
        .list(&t, now())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        ids,
        [b.id.clone(), c.id.clone(), a.id.clone()],
        "list: oldest first"
    );
    assert_eq!(
        store.get(&t, &a.id, now()).await.unwrap().as_ref(),
        Some(&a)
    );
    assert!(store.get(&t, "key_missing", now()).await.unwrap().is_none());

    let renamed = store
        .rename(&t, &a.id, "renamed", now())
        .await
        .unwrap()
        .expect("rename");
    assert_eq!(renamed.name, "renamed");
    assert_eq!(
        store.get(&t, &a.id, now()).await.unwrap().unwrap().name,
        "renamed"
    );
    assert_eq!(
        store.find(&a.digest).await.unwrap().unwrap().name,
        "renamed"
    );

    let at = now();
    let revoked = store.revoke(&t, &a.id, at).await.unwrap().expect("revoke");
    assert_eq!(revoked.revoked_at, Some(at));
    assert!(
        store.get(&t, &a.id, now()).await.unwrap().is_none(),
        "revoked keys are gone from get"
    );
    assert!(
        store.revoke(&t, &a.id, now()).await.unwrap().is_none(),
        "revoking twice"
    );
    assert!(
        store.rename(&t, &a.id, "x", now()).await.unwrap().is_none(),
        "renaming a revoked key"
    );
    let found = store.find(&a.digest).await.unwrap().unwrap();
    assert!(
        found.is_revoked_at(now()),
        "find sees the revocation at once"
    );
    assert_eq!(store.list(&t, now()).await.unwrap().len(), 2);
}

/// Rotation without grace: the old key is revoked at `now`, the new one is stored.
pub async fn rotate_immediately<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let old = KeyRecord {
        expires_at: Some(now() + Duration::days(30)),
        ..record(&t, now() - Duration::minutes(1))
    };
    store.insert(old.clone(), None).await.unwrap();
    let at = now();
    let new = KeyRecord {
        created_at: at,
        ..record(&t, at)
    };
    let rotated = store
        .rotate(&t, &old.id, new.clone(), at, at, None)
        .await
        .unwrap()
        .expect("rotate");
    assert_eq!(rotated.revoked_at, Some(at));
    assert!(store.get(&t, &old.id, now()).await.unwrap().is_none());
    assert_eq!(
        *store
            .find(&new.digest)
            .await
            .unwrap()
            .expect("new key found"),
        new
    );
    assert!(
        store
            .find(&old.digest)
            .await
            .unwrap()
            .unwrap()
            .is_revoked_at(now())
    );
    assert!(
        store
            .rotate(&t, &old.id, record(&t, now()), now(), now(), None)
            .await
            .unwrap()
            .is_none(),
        "rotating a revoked key"
    );
}

/// Rotation with a grace period: both keys work until it ends.
pub async fn rotate_with_grace_period<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let old = record(&t, now() - Duration::minutes(1));
    store.insert(old.clone(), None).await.unwrap();
    let at = now();
    let until = at + Duration::hours(1);
    let new = record(&t, at);
    let rotated = store
        .rotate(&t, &old.id, new.clone(), until, at, None)
        .await
        .unwrap()
        .expect("rotate");
    assert_eq!(rotated.revoked_at, Some(until));
    assert!(
        store.get(&t, &old.id, at).await.unwrap().is_some(),
        "old key active during grace"
    );
    assert!(
        store
            .get(&t, &old.id, until + Duration::seconds(1))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.list(&t, at).await.unwrap().len(), 2);
    assert!(
        store
            .get(&t, &new.id, until + Duration::seconds(1))
            .await
            .unwrap()
            .is_some()
    );
}

/// Another tenant's key behaves exactly like an unknown key, and is left untouched.
pub async fn tenant_isolation<S: ManagedKeyStore>(store: &S) {
    let (owner, intruder) = (tenant(), tenant());
    let r = record(&owner, now());
    store.insert(r.clone(), None).await.unwrap();
    assert!(store.get(&intruder, &r.id, now()).await.unwrap().is_none());
    assert!(store.list(&intruder, now()).await.unwrap().is_empty());
    assert!(
        store
            .rename(&intruder, &r.id, "pwned", now())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .revoke(&intruder, &r.id, now())
            .await
            .unwrap()
            .is_none()
    );
    let stolen = record(&intruder, now());
    assert!(
        store
            .rotate(&intruder, &r.id, stolen.clone(), now(), now(), None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store.find(&stolen.digest).await.unwrap().is_none(),
        "a refused rotation writes nothing"
    );
    assert_eq!(
        store.get(&owner, &r.id, now()).await.unwrap().as_ref(),
        Some(&r),
        "owner's key untouched"
    );
}

/// Lookups racing a revocation see either the active or the revoked record, never an error,
/// and every lookup after the revocation sees it revoked.
pub async fn concurrent_revoke_and_find<S: ManagedKeyStore + Clone>(store: S) {
    let t = tenant();
    let keys: Vec<KeyRecord> = (0..10).map(|_| record(&t, now())).collect();
    for r in &keys {
        store.insert(r.clone(), None).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for r in keys.clone() {
        let (s1, s2, t) = (store.clone(), store.clone(), t.clone());
        tasks.spawn(async move { s1.revoke(&t, &r.id, now()).await.map(|x| x.is_some()) });
        tasks.spawn(async move { s2.find(&r.digest).await.map(|x| x.is_some()) });
    }
    while let Some(result) = tasks.join_next().await {
        assert!(
            result.expect("task").expect("no store error"),
            "every revoke and find succeeds"
        );
    }
    for r in &keys {
        assert!(
            store
                .find(&r.digest)
                .await
                .unwrap()
                .unwrap()
                .is_revoked_at(now())
        );
    }
    assert!(store.list(&t, now()).await.unwrap().is_empty());
}

/// `touch` records last use in batches, never moves it back, and ignores unknown ids.
pub async fn touch_last_used<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let (a, b) = (record(&t, now()), record(&t, now()));
    store.insert(a.clone(), None).await.unwrap();
    store.insert(b.clone(), None).await.unwrap();
    let t1 = now();
    let t0 = t1 - Duration::minutes(5);
    store
        .touch(&[
            (a.id.clone(), t1),
            (b.id.clone(), t0),
            ("key_unknown".into(), t1),
        ])
        .await
        .expect("touch");
    store.touch(&[(a.id.clone(), t0)]).await.unwrap();
    let a_now = store.get(&t, &a.id, now()).await.unwrap().unwrap();
    let b_now = store.get(&t, &b.id, now()).await.unwrap().unwrap();
    assert_eq!(
        a_now.last_used_at,
        Some(t1),
        "an older time never moves last use back"
    );
    assert_eq!(b_now.last_used_at, Some(t0));
    store.touch(&[]).await.expect("empty batch");
}

/// A key with an expiry is active before it and gone after it.
pub async fn expiry<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let at = now();
    let r = KeyRecord {
        expires_at: Some(at + Duration::seconds(60)),
        ..record(&t, at)
    };
    store.insert(r.clone(), None).await.unwrap();
    assert!(store.get(&t, &r.id, at).await.unwrap().is_some());
    assert!(
        store
            .get(&t, &r.id, at + Duration::seconds(61))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .list(&t, at + Duration::seconds(61))
            .await
            .unwrap()
            .len(),
        0
    );
    let found = store.find(&r.digest).await.unwrap().unwrap();
    assert!(found.is_expired_at(at + Duration::seconds(61)) && !found.is_expired_at(at));

    // An expired key is not found for a change, and is left as it was.
    let expired = KeyRecord {
        expires_at: Some(at - Duration::seconds(1)),
        ..record(&t, at - Duration::hours(1))
    };
    store.insert(expired.clone(), None).await.unwrap();
    let id = &expired.id;
    let renamed = store.rename(&t, id, "renamed", now()).await.unwrap();
    assert!(renamed.is_none(), "renaming an expired key");
    let revoked = store.revoke(&t, id, now()).await.unwrap();
    assert!(revoked.is_none(), "revoking an expired key");
    let successor = record(&t, now());
    let rotated = store
        .rotate(&t, id, successor.clone(), now(), now(), None)
        .await
        .unwrap();
    assert!(rotated.is_none(), "rotating an expired key");
    assert!(
        store.find(&successor.digest).await.unwrap().is_none(),
        "a refused rotation writes nothing"
    );
    let kept = store.find(&expired.digest).await.unwrap();
    assert_eq!(
        kept.as_deref(),
        Some(&expired),
        "the expired key is unchanged"
    );
}

/// Twenty rotations of one key at once, without grace: exactly one succeeds, the others find
/// the key gone (`None`) or already rotated, and exactly one successor exists and works.
///
/// A caller reads its clock before its call reaches the store, so calls arrive in any order
/// relative to their `now`; here each later task carries an earlier time.
pub async fn concurrent_rotations_leave_one_successor<S: ManagedKeyStore + Clone>(store: S) {
    concurrent_rotations(store, false).await;
}

/// Twenty rotations of one key at once, with a grace period: exactly one succeeds, the others
/// are refused with [`StoreError::AlreadyRotated`] (or `None`), and the tenant holds exactly the
/// old key, in its grace period, and one successor.
pub async fn concurrent_rotations_with_grace_leave_one_successor<S: ManagedKeyStore + Clone>(
    store: S,
) {
    concurrent_rotations(store, true).await;
}

async fn concurrent_rotations<S: ManagedKeyStore + Clone>(store: S, grace: bool) {
    let what = if grace { "with grace" } else { "without grace" };
    let t = tenant();
    let base = now();
    let old = record(&t, base - Duration::minutes(1));
    store.insert(old.clone(), None).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let at = base - Duration::milliseconds(i);
        let until = if grace { at + Duration::hours(1) } else { at };
        let new = record(&t, at);
        let (store, t, id) = (store.clone(), t.clone(), old.id.clone());
        tasks.spawn(async move {
            let result = store.rotate(&t, &id, new.clone(), until, at, None).await;
            (new, until, result)
        });
    }
    let mut successors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (new, until, result) = joined.expect("task");
        match result {
            Ok(Some(rotated)) => {
                assert_eq!(rotated.id, old.id, "rotate {what}: returns the old record");
                assert_eq!(
                    rotated.revoked_at,
                    Some(until),
                    "rotate {what}: the old key stops at `old_until`"
                );
                successors.push(new);
            }
            Ok(None) | Err(StoreError::AlreadyRotated) => assert!(
                store.find(&new.digest).await.unwrap().is_none(),
                "rotate {what}: a refused rotation writes nothing"
            ),
            Err(e) => panic!("concurrent rotations {what}: unexpected error {e}"),
        }
    }
    assert_eq!(
        successors.len(),
        1,
        "concurrent rotations {what}: exactly one must succeed"
    );
    let check = now();
    let successor = &successors[0];
    assert!(
        store
            .find(&successor.digest)
            .await
            .unwrap()
            .expect("the successor is stored")
            .is_active_at(check),
        "concurrent rotations {what}: the successor works"
    );
    let ids: Vec<String> = store
        .list(&t, check)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let expected = if grace {
        vec![old.id.clone(), successor.id.clone()]
    } else {
        vec![successor.id.clone()]
    };
    assert_eq!(
        ids, expected,
        "concurrent rotations {what}: the old key (only in grace) and one successor"
    );
}

/// Twenty keys, each rotated and revoked at once (half of the rotations with grace). One of
/// the two wins cleanly: either the rotation came first (the revocation then ends the old key,
/// and the successor works), or the revocation did and the rotation finds no key and writes
/// nothing. Never a successor issued for a key revoked before it.
///
/// The rotation's `now` is read before the revocation's, as when a rotation waits for the
/// store while a revocation passes it.
pub async fn rotate_racing_revoke<S: ManagedKeyStore + Clone>(store: S) {
    enum Outcome {
        Rotate(Result<Option<KeyRecord>, StoreError>),
        Revoke(Result<Option<KeyRecord>, StoreError>),
    }
    let t = tenant();
    let base = now();
    let keys: Vec<KeyRecord> = (0..20)
        .map(|_| record(&t, base - Duration::minutes(1)))
        .collect();
    for r in &keys {
        store.insert(r.clone(), None).await.unwrap();
    }
    let rotate_at = base - Duration::milliseconds(1);
    let mut plans = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, old) in keys.iter().enumerate() {
        let until = if i % 2 == 0 {
            rotate_at
        } else {
            rotate_at + Duration::hours(1)
        };
        let new = record(&t, rotate_at);
        plans.push((until, new.clone()));
        let rotate = {
            let (store, t, id) = (store.clone(), t.clone(), old.id.clone());
            async move {
                let result = store.rotate(&t, &id, new, until, rotate_at, None).await;
                (i, Outcome::Rotate(result))
            }
        };
        let revoke = {
            let (store, t, id) = (store.clone(), t.clone(), old.id.clone());
            async move { (i, Outcome::Revoke(store.revoke(&t, &id, now()).await)) }
        };
        // Spawn order varies, so that either may reach the store first.
        if i % 4 < 2 {
            tasks.spawn(revoke);
            tasks.spawn(rotate);
        } else {
            tasks.spawn(rotate);
            tasks.spawn(revoke);
        }
    }
    let mut rotations: Vec<Option<Option<KeyRecord>>> = vec![None; keys.len()];
    let mut revocations: Vec<Option<Option<KeyRecord>>> = vec![None; keys.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task") {
            (i, Outcome::Rotate(r)) => {
                rotations[i] = Some(r.unwrap_or_else(|e| panic!("rotate racing revoke: {e}")));
            }
            (i, Outcome::Revoke(r)) => {
                revocations[i] = Some(r.unwrap_or_else(|e| panic!("revoke racing rotate: {e}")));
            }
        }
    }
    let check = now();
    for (i, old) in keys.iter().enumerate() {
        let (until, new) = &plans[i];
        let rotated = rotations[i].take().expect("rotation ran");
        let revoked = revocations[i].take().expect("revocation ran");
        let stored_old = store
            .find(&old.digest)
            .await
            .unwrap()
            .expect("old key kept");
        assert!(
            !stored_old.is_active_at(check),
            "rotate racing revoke: the old key no longer works"
        );
        let stored_new = store.find(&new.digest).await.unwrap();
        match rotated {
            None => {
                assert!(
                    stored_new.is_none(),
                    "rotate racing revoke: a refused rotation writes nothing"
                );
                assert!(
                    revoked.is_some(),
                    "rotate racing revoke: without a rotation, the revocation must have succeeded"
                );
            }
            Some(rotated) => {
                assert_eq!(
                    rotated.revoked_at,
                    Some(*until),
                    "rotate racing revoke: a rotation succeeds only on a key not yet revoked"
                );
                assert!(
                    stored_new.expect("successor stored").is_active_at(check),
                    "rotate racing revoke: the successor works"
                );
                if let Some(revoked) = revoked {
                    assert_eq!(
                        stored_old.revoked_at, revoked.revoked_at,
                        "rotate racing revoke: both succeeded, so the revocation came last"
                    );
                }
            }
        }
    }
}

/// A rotation with a grace period keeps the old key working, so it needs room under the cap;
/// one without grace does not add a key and is never refused for the cap.
pub async fn rotation_with_grace_counts_against_the_cap<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let first = record(&t, now() - Duration::minutes(1));
    store.insert(first.clone(), Some(2)).await.unwrap();
    let at = now();
    let second = record(&t, at);
    store
        .rotate(
            &t,
            &first.id,
            second.clone(),
            at + Duration::hours(1),
            at,
            Some(2),
        )
        .await
        .unwrap()
        .expect("room for the key in grace");
    assert_eq!(store.list(&t, now()).await.unwrap().len(), 2);

    let at = now();
    let third = record(&t, at);
    assert!(
        matches!(
            store
                .rotate(
                    &t,
                    &second.id,
                    third.clone(),
                    at + Duration::hours(1),
                    at,
                    Some(2)
                )
                .await,
            Err(StoreError::ActiveKeyLimit(2))
        ),
        "rotation with grace at the cap"
    );
    assert!(
        store.find(&third.digest).await.unwrap().is_none(),
        "a refused rotation writes nothing"
    );
    assert_eq!(
        store.get(&t, &second.id, now()).await.unwrap().as_ref(),
        Some(&second),
        "a refused rotation leaves the key untouched"
    );
    assert!(
        matches!(
            store.insert(record(&t, now()), Some(2)).await,
            Err(StoreError::ActiveKeyLimit(2))
        ),
        "a key in grace counts for inserts too"
    );

    let at = now();
    store
        .rotate(&t, &second.id, third.clone(), at, at, Some(2))
        .await
        .unwrap()
        .expect("rotation without grace at the cap");
    let ids: Vec<String> = store
        .list(&t, now())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [first.id.clone(), third.id.clone()]);
}

/// A key in its rotation grace period has been replaced: rotating it again, with or without
/// grace, is refused with [`StoreError::AlreadyRotated`] and writes nothing. Its successor can
/// be rotated.
pub async fn a_key_in_grace_cannot_be_rotated_again<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let old = record(&t, now() - Duration::minutes(1));
    store.insert(old.clone(), None).await.unwrap();
    let at = now();
    let until = at + Duration::hours(1);
    let successor = record(&t, at);
    store
        .rotate(&t, &old.id, successor.clone(), until, at, None)
        .await
        .unwrap()
        .expect("first rotation");
    // To another tenant the key in grace is unknown, not "already rotated".
    let intruder = tenant();
    let stolen = record(&intruder, now());
    let answer = store
        .rotate(&intruder, &old.id, stolen, now(), now(), None)
        .await;
    assert!(
        matches!(answer, Ok(None)),
        "another tenant rotating a key in grace: expected Ok(None), got {answer:?}"
    );
    for grace in [Duration::hours(1), Duration::ZERO] {
        let at = now();
        let again = record(&t, at);
        assert!(
            matches!(
                store
                    .rotate(&t, &old.id, again.clone(), at + grace, at, Some(100))
                    .await,
                Err(StoreError::AlreadyRotated)
            ),
            "rotating a key in grace (grace {grace})"
        );
        assert!(
            store.find(&again.digest).await.unwrap().is_none(),
            "a refused rotation writes nothing"
        );
    }
    let kept = store
        .get(&t, &old.id, now())
        .await
        .unwrap()
        .expect("the old key still works in its grace period");
    assert_eq!(
        kept.revoked_at,
        Some(until),
        "its grace period is unchanged"
    );
    let at = now();
    store
        .rotate(&t, &successor.id, record(&t, at), at, at, None)
        .await
        .unwrap()
        .expect("the successor can be rotated");
}

/// [`ManagedKeyStore::undo_rotate`] takes a rotation back, with or without a grace period:
/// the old key active again with no `revoked_at`, the successor revoked at the judged time.
/// It writes nothing when the old key's end is not the one given, when either key has changed
/// since (the old key revoked in its grace period, the successor revoked or the old key
/// rotated again), or for another tenant. A store that leaves `undo_rotate` to its default
/// ([`StoreError::Unsupported`]) passes.
pub async fn undo_rotate<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    for grace in [Duration::ZERO, Duration::hours(1)] {
        let (old, successor, until) = rotated(store, &t, grace).await;
        match store
            .undo_rotate(&tenant(), &old.id, until, &successor.id, now())
            .await
        {
            Err(StoreError::Unsupported) => return,
            Ok(None) => {}
            other => panic!("undo_rotate for another tenant: expected Ok(None), got {other:?}"),
        }
        let wrong_end = store
            .undo_rotate(
                &t,
                &old.id,
                until + Duration::seconds(1),
                &successor.id,
                now(),
            )
            .await
            .unwrap();
        assert!(
            wrong_end.is_none(),
            "undo_rotate with another end than the rotation's"
        );
        assert_eq!(
            ends(store, &old, &successor).await,
            (Some(until), None),
            "undo_rotate for another tenant or end wrote nothing"
        );
        let at = now();
        let (restored, revoked) = store
            .undo_rotate(&t, &old.id, until, &successor.id, at)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("undo_rotate (grace {grace}) found nothing to undo"));
        assert_eq!(
            (restored.id.as_str(), restored.revoked_at),
            (old.id.as_str(), None)
        );
        assert_eq!(revoked.id, successor.id);
        assert!(
            revoked.revoked_at.is_some_and(|r| r >= at),
            "the successor is revoked at the judged time, not before {at}: {:?}",
            revoked.revoked_at
        );
        assert_eq!(
            ends(store, &old, &successor).await,
            (None, revoked.revoked_at),
            "undo_rotate returns the records as stored"
        );
        let later = now() + Duration::hours(2);
        assert!(
            store.get(&t, &successor.id, later).await.unwrap().is_none()
                && store.get(&t, &old.id, later).await.unwrap().is_some(),
            "after undo_rotate (grace {grace}) the old key is active, the successor is not"
        );
        let again = store
            .undo_rotate(&t, &old.id, until, &successor.id, now())
            .await
            .unwrap();
        assert!(again.is_none(), "a second undo finds the successor revoked");
        let at = now();
        store
            .rotate(&t, &old.id, record(&t, at), at, at, None)
            .await
            .unwrap()
            .expect("the old key can be rotated again");
    }

    // Either key revoked since the rotation: nothing is undone, nothing written.
    for revoke_old in [true, false] {
        let (old, successor, until) = rotated(store, &t, Duration::hours(1)).await;
        let target = if revoke_old { &old } else { &successor };
        let revoked = store.revoke(&t, &target.id, now()).await.unwrap();
        let revoked_at = revoked.expect("revoke").revoked_at;
        let undone = store
            .undo_rotate(&t, &old.id, until, &successor.id, now())
            .await
            .unwrap();
        let (what, expected) = if revoke_old {
            ("the old key revoked since", (revoked_at, None))
        } else {
            ("the successor revoked since", (Some(until), revoked_at))
        };
        assert!(undone.is_none(), "undo_rotate with {what}");
        assert_eq!(
            ends(store, &old, &successor).await,
            expected,
            "undo_rotate with {what} writes nothing"
        );
    }
}

/// A key of `t` rotated with `grace`: the old record, its successor, the old key's end.
async fn rotated<S: ManagedKeyStore>(
    store: &S,
    t: &str,
    grace: Duration,
) -> (KeyRecord, KeyRecord, OffsetDateTime) {
    let old = record(t, now() - Duration::minutes(1));
    store.insert(old.clone(), None).await.unwrap();
    let at = now();
    let successor = record(t, at);
    store
        .rotate(t, &old.id, successor.clone(), at + grace, at, None)
        .await
        .unwrap()
        .expect("rotate");
    (old, successor, at + grace)
}

/// The stored `revoked_at` of two keys.
async fn ends<S: ManagedKeyStore>(
    store: &S,
    a: &KeyRecord,
    b: &KeyRecord,
) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
    let end = |r: Option<Arc<KeyRecord>>| r.expect("the record is kept").revoked_at;
    (
        end(store.find(&a.digest).await.unwrap()),
        end(store.find(&b.digest).await.unwrap()),
    )
}

/// A rotation whose successor's id or digest exists is refused with
/// [`StoreError::Conflict`], with or without grace, and writes nothing: the old key is not
/// rotated (it can be rotated afterwards) and no successor is stored.
pub async fn a_rotation_refused_by_a_conflict_writes_nothing<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let old = record(&t, now() - Duration::minutes(1));
    let other = record(&t, now() - Duration::minutes(1));
    store.insert(old.clone(), None).await.unwrap();
    store.insert(other.clone(), None).await.unwrap();
    for grace in [Duration::ZERO, Duration::hours(1)] {
        let at = now();
        let fresh = record(&t, at);
        let same_id = KeyRecord {
            id: other.id.clone(),
            ..fresh.clone()
        };
        let same_digest = KeyRecord {
            digest: other.digest,
            ..record(&t, at)
        };
        for (what, successor) in [("id", same_id), ("digest", same_digest)] {
            let answer = store
                .rotate(&t, &old.id, successor, at + grace, at, None)
                .await;
            assert!(
                matches!(answer, Err(StoreError::Conflict(_))),
                "a successor with an existing {what} (grace {grace}): expected Conflict, got {answer:?}"
            );
            let kept = store.find(&old.digest).await.unwrap();
            assert_eq!(
                kept.as_deref(),
                Some(&old),
                "a rotation refused on the {what} leaves the old key as it was"
            );
            let kept = store.find(&other.digest).await.unwrap();
            assert_eq!(
                kept.as_deref(),
                Some(&other),
                "the key it clashed with is untouched"
            );
        }
        assert!(store.find(&fresh.digest).await.unwrap().is_none());
    }
    let at = now();
    store
        .rotate(&t, &old.id, record(&t, at), at, at, None)
        .await
        .unwrap()
        .expect("the old key can still be rotated");
}

/// Every time handed to a store lies within [`MIN_TIME`]..=[`MAX_TIME`]: the bounds are kept
/// exactly, anything outside is refused with [`StoreError::TimeOutOfRange`], never changed, and
/// nothing is written.
pub async fn times_out_of_range_are_refused<S: ManagedKeyStore>(store: &S) {
    let t = tenant();
    let too_late = MAX_TIME + Duration::seconds(1);
    let too_early = MIN_TIME - Duration::seconds(1);

    let at_max = KeyRecord {
        expires_at: Some(MAX_TIME),
        ..record(&t, now())
    };
    store
        .insert(at_max.clone(), None)
        .await
        .expect("MAX_TIME is accepted");
    assert_eq!(
        *store.find(&at_max.digest).await.unwrap().unwrap(),
        at_max,
        "MAX_TIME is kept exactly"
    );
    let at_min = KeyRecord {
        revoked_at: Some(MIN_TIME),
        ..record(&t, MIN_TIME)
    };
    store
        .insert(at_min.clone(), None)
        .await
        .expect("MIN_TIME is accepted");
    assert_eq!(*store.find(&at_min.digest).await.unwrap().unwrap(), at_min);

    let refused = |r: Result<(), StoreError>, at: OffsetDateTime, what: &str| match r {
        Err(StoreError::TimeOutOfRange(t)) => assert_eq!(t, at, "{what}: names the time"),
        other => panic!("{what}: expected TimeOutOfRange, got {other:?}"),
    };
    for (what, r, at) in [
        (
            "expires_at after MAX_TIME",
            KeyRecord {
                expires_at: Some(too_late),
                ..record(&t, now())
            },
            too_late,
        ),
        (
            "revoked_at after MAX_TIME",
            KeyRecord {
                revoked_at: Some(too_late),
                ..record(&t, now())
            },
            too_late,
        ),
        (
            "last_used_at after MAX_TIME",
            KeyRecord {
                last_used_at: Some(too_late),
                ..record(&t, now())
            },
            too_late,
        ),
        (
            "created_at before MIN_TIME",
            record(&t, too_early),
            too_early,
        ),
    ] {
        refused(store.insert(r.clone(), None).await, at, what);
        assert!(
            store.find(&r.digest).await.unwrap().is_none(),
            "{what}: nothing written"
        );
    }

    let key = record(&t, now());
    store.insert(key.clone(), None).await.unwrap();
    let at = now();
    let next = record(&t, at);
    refused(
        store
            .rotate(&t, &key.id, next.clone(), too_late, at, None)
            .await
            .map(|_| ()),
        too_late,
        "rotate with old_until after MAX_TIME",
    );
    let far = KeyRecord {
        expires_at: Some(too_late),
        ..record(&t, at)
    };
    refused(
        store
            .rotate(&t, &key.id, far.clone(), at, at, None)
            .await
            .map(|_| ()),
        too_late,
        "rotate to a successor expiring after MAX_TIME",
    );
    refused(
        store.revoke(&t, &key.id, too_late).await.map(|_| ()),
        too_late,
        "revoke at a time after MAX_TIME",
    );
    let used = now();
    refused(
        store
            .touch(&[(key.id.clone(), used), (key.id.clone(), too_late)])
            .await,
        too_late,
        "touch with a time after MAX_TIME",
    );
    for r in [&next, &far] {
        assert!(
            store.find(&r.digest).await.unwrap().is_none(),
            "a refused rotation writes nothing"
        );
    }
    assert_eq!(
        store.get(&t, &key.id, now()).await.unwrap().as_ref(),
        Some(&key),
        "refused calls leave the key untouched, the whole touch batch included"
    );
}
