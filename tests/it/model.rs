//! A model-based test of the key lifecycle: random sequences of issue, rotate (with and
//! without grace), rename, revoke, time passing (a manual clock) and verify run against
//! `KeyManager` + `Verifier` over each store, and every answer is compared, step by step, with
//! a small reference model of what keygate documents.
//!
//! `KeyManager` and `Verifier` share a `ManualClock` that stands a year ahead of the real time
//! (stores judge writes at the later of the caller's time and their own clock), so that keys
//! expire and grace periods end exactly when the model says.
//!
//! Cases per store: 24, or `KEYGATE_MODEL_CASES`. A failure prints the shortest sequence found.

use std::time::Duration;

use http::Request;
use keygate::cache::CachedStore;
use keygate::key::{Environment, KeyFormat};
use keygate::lifecycle::{KeyManager, ManageError, NewKey};
use keygate::limit::ManualClock;
use keygate::request::RequestHead;
use keygate::scope::Scope;
use keygate::store::{ManagedKeyStore, MemoryStore, conformance};
use keygate::{AuthError, Verifier};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use time::OffsetDateTime;

/// The active-key cap of every tenant: small, so that sequences reach it.
const MAX_ACTIVE: usize = 4;
/// The longest grace period the manager accepts.
const MAX_GRACE_SECS: u64 = 30 * 24 * 3600;
const SCOPE_SETS: &[&[&str]] = &[&["read"], &["write"], &["admin"], &["docs:write", "search"]];
const REQUIRED: &[&str] = &["read", "write", "admin", "docs:read", "search", "billing"];
const NAMES: &[&str] = &["Production", "CI", "laptop", "Zoë's key"];

#[derive(Debug, Clone)]
enum Op {
    Issue {
        tenant: usize,
        environment: Environment,
        scopes: usize,
        /// Seconds from now; 0 is refused as not in the future.
        expires_in: Option<u64>,
    },
    Rotate {
        key: Index,
        /// `None`: the default (none); above 30 days: refused.
        grace_secs: Option<u64>,
    },
    Rename {
        key: Index,
        name: usize,
    },
    Revoke {
        key: Index,
    },
    /// Rename and revoke a key as the other tenant: not found, nothing changes.
    OtherTenant {
        key: Index,
    },
    Advance {
        secs: u64,
    },
    /// Moves the clock exactly to a key's expiry or the end of its grace period, if still to
    /// come: the instant it stops working.
    AdvanceToEdge {
        key: Index,
    },
    Verify {
        key: Index,
        required: Option<usize>,
    },
    VerifyUnknown,
    List {
        tenant: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let environment = prop_oneof![Just(Environment::Live), Just(Environment::Test)];
    let expires_in = prop_oneof![
        3 => Just(None),
        3 => (1u64..7_200).prop_map(Some),
        1 => Just(Some(0)),
    ];
    let grace = prop_oneof![
        2 => Just(None),
        1 => Just(Some(0)),
        3 => (1u64..3_600).prop_map(Some),
        1 => Just(Some(MAX_GRACE_SECS)),
        1 => Just(Some(MAX_GRACE_SECS + 1)),
    ];
    prop_oneof![
        4 => (0..2usize, environment, 0..SCOPE_SETS.len(), expires_in).prop_map(
            |(tenant, environment, scopes, expires_in)| Op::Issue { tenant, environment, scopes, expires_in }
        ),
        3 => (any::<Index>(), grace).prop_map(|(key, grace_secs)| Op::Rotate { key, grace_secs }),
        1 => (any::<Index>(), 0..NAMES.len()).prop_map(|(key, name)| Op::Rename { key, name }),
        2 => any::<Index>().prop_map(|key| Op::Revoke { key }),
        1 => any::<Index>().prop_map(|key| Op::OtherTenant { key }),
        2 => prop_oneof![Just(1u64), Just(59), 1..4_000u64, Just(86_400)].prop_map(|secs| Op::Advance { secs }),
        2 => any::<Index>().prop_map(|key| Op::AdvanceToEdge { key }),
        8 => (any::<Index>(), prop::option::weighted(0.4, 0..REQUIRED.len()))
            .prop_map(|(key, required)| Op::Verify { key, required }),
        1 => Just(Op::VerifyUnknown),
        1 => (0..2usize).prop_map(|tenant| Op::List { tenant }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..60)
}

/// What the model knows of one issued key.
#[derive(Debug, Clone)]
struct ModelKey {
    id: String,
    tenant: usize,
    secret: String,
    name: String,
    scopes: usize,
    environment: Environment,
    created_at: OffsetDateTime,
    expires_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
}

impl ModelKey {
    fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none_or(|at| at > now) && self.expires_at.is_none_or(|at| at > now)
    }
}

struct Model {
    now: OffsetDateTime,
    tenants: [String; 2],
    keys: Vec<ModelKey>,
}

impl Model {
    fn active_count(&self, tenant: usize) -> usize {
        self.keys
            .iter()
            .filter(|k| k.tenant == tenant && k.is_active(self.now))
            .count()
    }

    /// The key an index picks among every key ever issued.
    fn pick(&self, index: &Index) -> Option<usize> {
        (!self.keys.is_empty()).then(|| index.index(self.keys.len()))
    }

    /// What verifying key `k` must answer.
    fn verify(&self, k: usize, required: Option<&Scope>) -> Seen {
        let key = &self.keys[k];
        if key.revoked_at.is_some_and(|at| at <= self.now) {
            return Seen::Refused(AuthError::RevokedKey);
        }
        if key.expires_at.is_some_and(|at| at <= self.now) {
            return Seen::Refused(AuthError::ExpiredKey);
        }
        if let Some(scope) = required
            && !scope_sets_grant(SCOPE_SETS[key.scopes], scope.as_str())
        {
            return Seen::Refused(AuthError::InsufficientScope(scope.clone()));
        }
        Seen::Admitted {
            tenant: self.tenants[key.tenant].clone(),
            key_id: key.id.clone(),
            name: key.name.clone(),
            scopes: SCOPE_SETS[key.scopes]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            environment: key.environment,
        }
    }
}

/// The documented grants: `admin` grants all, `<r>write` grants `<r>read`, a scope itself.
fn scope_sets_grant(held: &[&str], needed: &str) -> bool {
    held.iter().any(|h| {
        *h == needed
            || *h == "admin"
            || h.strip_suffix("write").is_some_and(|r| {
                needed.strip_suffix("read") == Some(r) && (r.is_empty() || r.ends_with(':'))
            })
    })
}

/// A verifier's answer, as compared.
#[derive(Debug, PartialEq)]
enum Seen {
    Admitted {
        tenant: String,
        key_id: String,
        name: String,
        scopes: Vec<String>,
        environment: Environment,
    },
    Refused(AuthError),
}

/// The system under test: a manager and a verifier on one store and one clock.
struct Sut {
    manager: KeyManager,
    verifier: Verifier,
    clock: ManualClock,
}

impl Sut {
    fn new<S: ManagedKeyStore + Clone>(store: S) -> Sut {
        // A year ahead of the real time, in whole seconds.
        let start = OffsetDateTime::now_utc().unix_timestamp() + 365 * 86_400;
        let clock = ManualClock::at_unix_secs(u64::try_from(start).unwrap());
        Sut {
            verifier: Verifier::builder(store.clone())
                .clock(clock.clone())
                .build(),
            manager: KeyManager::builder(store)
                .clock(clock.clone())
                .max_active_keys(Some(MAX_ACTIVE))
                .build(),
            clock,
        }
    }

    fn now(&self) -> OffsetDateTime {
        use keygate::limit::Clock;
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.clock.now_nanos())).unwrap()
    }

    async fn verify(&self, secret: &str, required: Option<&Scope>) -> Seen {
        let request = Request::get("/v1/x")
            .header("x-api-key", secret)
            .body(())
            .unwrap();
        match self
            .verifier
            .verify(&RequestHead::from(&request), required)
            .await
        {
            Ok(tenant) => Seen::Admitted {
                tenant: tenant.tenant_id().to_owned(),
                key_id: tenant.key_id().to_owned(),
                name: tenant.key().name.clone(),
                scopes: tenant.key().scopes.iter().map(|s| s.to_string()).collect(),
                environment: tenant.key().environment,
            },
            Err(e) => Seen::Refused(e),
        }
    }
}

/// Compares a manager's answer with the model's: the error by its exact variant and fields.
fn same_error<T: std::fmt::Debug>(
    actual: &Result<T, ManageError>,
    expected: &ManageError,
) -> Result<(), String> {
    match actual {
        Err(e) if format!("{e:?}") == format!("{expected:?}") => Ok(()),
        other => Err(format!("expected Err({expected:?}), got {other:?}")),
    }
}

/// Runs `ops` on a fresh system over `store` and on the model; the first disagreement is the
/// error.
async fn check<S: ManagedKeyStore + Clone>(store: S, ops: &[Op]) -> Result<(), String> {
    let sut = Sut::new(store);
    let mut model = Model {
        now: sut.now(),
        tenants: [conformance::tenant(), conformance::tenant()],
        keys: Vec::new(),
    };
    for (step, op) in ops.iter().enumerate() {
        apply(&sut, &mut model, op)
            .await
            .map_err(|e| format!("step {step}, {op:?}: {e}"))?;
    }
    // Finally, every key ever issued answers as the model says.
    for k in 0..model.keys.len() {
        let expected = model.verify(k, None);
        let seen = sut.verify(&model.keys[k].secret, None).await;
        if seen != expected {
            return Err(format!(
                "final check of key {k}: expected {expected:?}, got {seen:?}"
            ));
        }
    }
    Ok(())
}

async fn apply(sut: &Sut, model: &mut Model, op: &Op) -> Result<(), String> {
    let now = model.now;
    match op {
        Op::Issue {
            tenant,
            environment,
            scopes,
            expires_in,
        } => {
            let mut new = NewKey::new(NAMES[0], SCOPE_SETS[*scopes].iter().copied())
                .environment(*environment);
            let expires_at = expires_in.map(|s| now + Duration::from_secs(s));
            if let Some(at) = expires_at {
                new = new.expires_at(at);
            }
            let result = sut
                .manager
                .issue("model", &model.tenants[*tenant], new)
                .await;
            if *expires_in == Some(0) {
                return same_error(&result, &ManageError::ExpiryInPast);
            }
            if model.active_count(*tenant) >= MAX_ACTIVE {
                return same_error(&result, &ManageError::TooManyKeys(MAX_ACTIVE));
            }
            let issued = result.map_err(|e| format!("expected a key, got {e:?}"))?;
            let info = &issued.info;
            let expected = (
                NAMES[0],
                SCOPE_SETS[*scopes].to_vec(),
                *environment,
                now,
                expires_at,
            );
            let scopes_seen: Vec<&str> = info.scopes.iter().map(Scope::as_str).collect();
            let seen = (
                info.name.as_str(),
                scopes_seen,
                info.environment,
                info.created_at,
                info.expires_at,
            );
            if seen != expected {
                return Err(format!("issued {seen:?}, expected {expected:?}"));
            }
            model.keys.push(ModelKey {
                id: info.id.clone(),
                tenant: *tenant,
                secret: issued.key.expose_secret().to_owned(),
                name: NAMES[0].to_owned(),
                scopes: *scopes,
                environment: *environment,
                created_at: now,
                expires_at,
                revoked_at: None,
            });
        }
        Op::Rotate { key, grace_secs } => {
            let Some(k) = model.pick(key) else {
                return Ok(());
            };
            let old = model.keys[k].clone();
            let result = sut
                .manager
                .rotate(
                    "model",
                    &model.tenants[old.tenant],
                    &old.id,
                    grace_secs.map(Duration::from_secs),
                )
                .await;
            let grace = grace_secs.unwrap_or(0);
            if grace > MAX_GRACE_SECS {
                return same_error(
                    &result,
                    &ManageError::InvalidGracePeriod {
                        max: MAX_GRACE_SECS,
                    },
                );
            }
            if !old.is_active(now) {
                return same_error(&result, &ManageError::NotFound);
            }
            if old.revoked_at.is_some() {
                return same_error(&result, &ManageError::AlreadyRotated);
            }
            if grace > 0 && model.active_count(old.tenant) >= MAX_ACTIVE {
                return same_error(&result, &ManageError::TooManyKeys(MAX_ACTIVE));
            }
            let issued = result.map_err(|e| format!("expected a successor, got {e:?}"))?;
            let info = &issued.info;
            let seen = (
                info.name.as_str(),
                info.environment,
                info.created_at,
                info.expires_at,
            );
            let expected = (old.name.as_str(), old.environment, now, old.expires_at);
            if seen != expected || info.id == old.id {
                return Err(format!("successor {seen:?}, expected {expected:?}"));
            }
            model.keys[k].revoked_at = Some(now + Duration::from_secs(grace));
            model.keys.push(ModelKey {
                id: info.id.clone(),
                secret: issued.key.expose_secret().to_owned(),
                created_at: now,
                revoked_at: None,
                ..old
            });
        }
        Op::Rename { key, name } => {
            let Some(k) = model.pick(key) else {
                return Ok(());
            };
            let key = &model.keys[k];
            let result = sut
                .manager
                .rename("model", &model.tenants[key.tenant], &key.id, NAMES[*name])
                .await;
            if !key.is_active(now) {
                return same_error(&result, &ManageError::NotFound);
            }
            let info = result.map_err(|e| format!("expected the renamed key, got {e:?}"))?;
            if info.name != NAMES[*name] || info.id != key.id {
                return Err(format!("renamed to {info:?}"));
            }
            model.keys[k].name = NAMES[*name].to_owned();
        }
        Op::Revoke { key } => {
            let Some(k) = model.pick(key) else {
                return Ok(());
            };
            let key = &model.keys[k];
            let result = sut
                .manager
                .revoke("model", &model.tenants[key.tenant], &key.id)
                .await;
            if !key.is_active(now) {
                return same_error(&result, &ManageError::NotFound);
            }
            result.map_err(|e| format!("expected the revocation, got {e:?}"))?;
            model.keys[k].revoked_at = Some(now);
        }
        Op::OtherTenant { key } => {
            let Some(k) = model.pick(key) else {
                return Ok(());
            };
            let key = &model.keys[k];
            let other = &model.tenants[1 - key.tenant];
            let renamed = sut
                .manager
                .rename("model", other, &key.id, "taken over")
                .await;
            same_error(&renamed, &ManageError::NotFound)?;
            let revoked = sut.manager.revoke("model", other, &key.id).await;
            same_error(&revoked, &ManageError::NotFound)?;
            let rotated = sut.manager.rotate("model", other, &key.id, None).await;
            same_error(&rotated, &ManageError::NotFound)?;
        }
        Op::Advance { secs } => {
            sut.clock.advance(Duration::from_secs(*secs));
            model.now += Duration::from_secs(*secs);
        }
        Op::AdvanceToEdge { key } => {
            let Some(k) = model.pick(key) else {
                return Ok(());
            };
            let key = &model.keys[k];
            let edge = [key.revoked_at, key.expires_at]
                .into_iter()
                .flatten()
                .filter(|at| *at > now)
                .min();
            if let Some(edge) = edge {
                let by = edge - now;
                sut.clock.advance(by.unsigned_abs());
                model.now = edge;
            }
        }
        Op::Verify { key, required } => {
            let Some(k) = model.pick(key) else {
                return Ok(());
            };
            let required = required.map(|r| Scope::new(REQUIRED[r]).unwrap());
            let expected = model.verify(k, required.as_ref());
            let seen = sut.verify(&model.keys[k].secret, required.as_ref()).await;
            if seen != expected {
                return Err(format!("expected {expected:?}, got {seen:?}"));
            }
        }
        Op::VerifyUnknown => {
            let key = KeyFormat::default().generate(Environment::Live);
            let seen = sut.verify(key.expose_secret(), None).await;
            if seen != Seen::Refused(AuthError::UnknownKey) {
                return Err(format!("an unknown key answered {seen:?}"));
            }
        }
        Op::List { tenant } => {
            let listed: Vec<String> = sut
                .manager
                .list(&model.tenants[*tenant])
                .await
                .map_err(|e| format!("list failed: {e:?}"))?
                .into_iter()
                .map(|k| k.id)
                .collect();
            let mut active: Vec<&ModelKey> = model
                .keys
                .iter()
                .filter(|k| k.tenant == *tenant && k.is_active(now))
                .collect();
            active.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            let expected: Vec<String> = active.iter().map(|k| k.id.clone()).collect();
            if listed != expected {
                return Err(format!("listed {listed:?}, expected {expected:?}"));
            }
        }
    }
    Ok(())
}

fn config() -> Config {
    let cases = std::env::var("KEYGATE_MODEL_CASES")
        .ok()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("KEYGATE_MODEL_CASES={n} is not a number"))
        })
        .unwrap_or(24);
    Config {
        cases,
        // Sequences are cheap to regenerate; the failing one is printed.
        failure_persistence: None,
        ..Config::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs the model against stores made by `make`, a fresh one per case, on `runtime`.
fn run_model_on<S, F, Fut>(runtime: &tokio::runtime::Runtime, make: F)
where
    S: ManagedKeyStore + Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let mut runner = TestRunner::new(config());
    let result = runner.run(&ops(), |ops| {
        runtime
            .block_on(async { check(make().await, &ops).await })
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("the key lifecycle disagrees with its model: {e}");
    }
}

fn run_model<S, F, Fut>(make: F)
where
    S: ManagedKeyStore + Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    run_model_on(&runtime(), make);
}

#[test]
fn model_memory() {
    run_model(|| async { MemoryStore::new() });
}

#[test]
fn model_cached_memory() {
    run_model(|| async { CachedStore::new(MemoryStore::new()) });
}

#[cfg(feature = "sqlite")]
#[test]
fn model_sqlite() {
    run_model(|| async { keygate::store::SqliteStore::in_memory().await.unwrap() });
}

#[cfg(feature = "sqlite")]
#[test]
fn model_cached_sqlite() {
    run_model(|| async {
        CachedStore::new(keygate::store::SqliteStore::in_memory().await.unwrap())
    });
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use keygate::store::PostgresStore;

    /// One pool for every case, on the runtime that runs them. Tenants are fresh per case, so
    /// cases and other tests never see each other's keys.
    fn connect(runtime: &tokio::runtime::Runtime) -> PostgresStore {
        let url = crate::common::postgres_url();
        runtime
            .block_on(PostgresStore::connect(&url))
            .unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at KEYGATE_TEST_POSTGRES_URL={url}: {e}")
            })
    }

    #[test]
    fn model_postgres() {
        let runtime = runtime();
        let store = connect(&runtime);
        run_model_on(&runtime, || std::future::ready(store.clone()));
    }

    #[test]
    fn model_cached_postgres() {
        let runtime = runtime();
        let store = connect(&runtime);
        run_model_on(&runtime, || {
            std::future::ready(CachedStore::new(store.clone()))
        });
    }
}
