//! The verifier's decision table: what a stored key's state, its tenant's plan and the request
//! make of a check, one row each, with the exact error, through the public pieces.

use std::sync::Arc;

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};

use super::Verifier;
use crate::error::AuthError;
use crate::hash::KeyDigest;
use crate::key::{ApiKey, Environment, KeyScheme, MalformedKey};
use crate::limit::{Quota, QuotaPeriod};
use crate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
use crate::request::RequestHead;
use crate::restriction::{Restrictions, Violation};
use crate::scope::{Scope, Scopes};
use crate::store::{KeyRecord, KeyRecordBuilder, KeyStore, Lookup, MemoryStore, StoreError};

/// What the request carries.
#[derive(Clone, Copy)]
enum Credential {
    /// The stored key, in `x-api-key`.
    Stored,
    /// A well-formed key that no store holds.
    Unknown,
    /// The stored key with its last character changed: the checksum no longer matches.
    Typo,
    /// No credential at all.
    Nothing,
    /// The stored key twice: in `x-api-key` and as `Authorization: Bearer`.
    Twice,
    /// `Authorization: Basic`.
    Basic,
}

/// The key's tenant, as the entitlement source knows it.
#[derive(Clone, Copy)]
enum Tenancy {
    /// No entitlement source: no tenant checks, no limits.
    NoSource,
    /// Active, on a plan that allows these scopes (`None`: every scope).
    Active(Option<&'static [&'static str]>),
    Suspended,
    /// The source does not know the tenant.
    Unknown,
    /// Active, on a plan whose quota is used up.
    QuotaUsedUp,
}

struct Case {
    name: &'static str,
    environment: Environment,
    key: fn(KeyRecordBuilder) -> KeyRecordBuilder,
    tenancy: Tenancy,
    accept_test_keys: bool,
    credential: Credential,
    required: Option<&'static str>,
    expected: Result<(), AuthError>,
}

fn past() -> OffsetDateTime {
    OffsetDateTime::now_utc() - Duration::minutes(5)
}

fn future() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::minutes(5)
}

fn as_is(b: KeyRecordBuilder) -> KeyRecordBuilder {
    b
}

fn revoked(b: KeyRecordBuilder) -> KeyRecordBuilder {
    b.revoked_at(past())
}

fn in_grace(b: KeyRecordBuilder) -> KeyRecordBuilder {
    b.revoked_at(future())
}

fn expired(b: KeyRecordBuilder) -> KeyRecordBuilder {
    b.expires_at(past())
}

fn revoked_and_expired(b: KeyRecordBuilder) -> KeyRecordBuilder {
    b.revoked_at(past()).expires_at(past())
}

fn expiring(b: KeyRecordBuilder) -> KeyRecordBuilder {
    b.expires_at(future())
}

fn office_only(b: KeyRecordBuilder) -> KeyRecordBuilder {
    // The requests carry no client address: an IP restriction refuses them (fail closed).
    b.restrictions(Restrictions {
        ip_ranges: vec!["10.0.0.0/8".parse().unwrap()],
        ..Restrictions::default()
    })
}

fn read_only(b: KeyRecordBuilder) -> KeyRecordBuilder {
    b.scopes(Scopes::from_static(&["read"]))
}

fn revoked_read_only(b: KeyRecordBuilder) -> KeyRecordBuilder {
    read_only(revoked(b))
}

fn office_read_only(b: KeyRecordBuilder) -> KeyRecordBuilder {
    read_only(office_only(b))
}

/// A row with the defaults: a live `write` key, no entitlement source, test keys accepted, the
/// stored key presented, no scope required, admitted.
const ROW: Case = Case {
    name: "",
    environment: Environment::Live,
    key: as_is,
    tenancy: Tenancy::NoSource,
    accept_test_keys: true,
    credential: Credential::Stored,
    required: None,
    expected: Ok(()),
};

#[rustfmt::skip]
fn table() -> Vec<Case> {
    use AuthError::*;
    vec![
        Case { name: "a valid key", ..ROW },
        Case { name: "a valid key with the scope it holds", required: Some("write"), ..ROW },
        Case { name: "a scope its scope grants", required: Some("read"), ..ROW },
        Case { name: "no credential", credential: Credential::Nothing, expected: Err(MissingCredential), ..ROW },
        Case { name: "two credentials", credential: Credential::Twice, expected: Err(MultipleCredentials), ..ROW },
        Case { name: "a Basic authorization", credential: Credential::Basic, expected: Err(UnsupportedScheme), ..ROW },
        Case { name: "a typo", credential: Credential::Typo, expected: Err(Malformed(MalformedKey::Checksum)), ..ROW },
        Case { name: "a key no store knows", credential: Credential::Unknown, expected: Err(UnknownKey), ..ROW },
        Case { name: "a revoked key", key: revoked, expected: Err(RevokedKey), ..ROW },
        Case { name: "a key in its rotation grace period", key: in_grace, ..ROW },
        Case { name: "an expired key", key: expired, expected: Err(ExpiredKey), ..ROW },
        Case { name: "revoked and expired: revoked", key: revoked_and_expired, expected: Err(RevokedKey), ..ROW },
        Case { name: "a key that expires later", key: expiring, ..ROW },
        Case { name: "a test key where test keys are refused", environment: Environment::Test, accept_test_keys: false, expected: Err(EnvironmentNotAccepted(Environment::Test)), ..ROW },
        Case { name: "a test key where they are accepted", environment: Environment::Test, ..ROW },
        Case { name: "a scope the key lacks", key: read_only, required: Some("write"), expected: Err(InsufficientScope(Scope::WRITE)), ..ROW },
        Case { name: "revoked before the scope is looked at", key: revoked_read_only, required: Some("write"), expected: Err(RevokedKey), ..ROW },
        Case { name: "an IP restriction and no client address", key: office_only, expected: Err(RestrictionViolated(Violation::IpAddress)), ..ROW },
        Case { name: "a restriction before the scope", key: office_read_only, required: Some("write"), expected: Err(RestrictionViolated(Violation::IpAddress)), ..ROW },
        Case { name: "an active tenant", tenancy: Tenancy::Active(None), ..ROW },
        Case { name: "a suspended tenant", tenancy: Tenancy::Suspended, expected: Err(TenantSuspended), ..ROW },
        Case { name: "suspended before the restriction", tenancy: Tenancy::Suspended, key: office_only, expected: Err(TenantSuspended), ..ROW },
        Case { name: "a tenant the source does not know", tenancy: Tenancy::Unknown, expected: Err(NoPlan), ..ROW },
        Case { name: "a scope the plan does not allow", tenancy: Tenancy::Active(Some(&["read"])), required: Some("write"), expected: Err(InsufficientScope(Scope::WRITE)), ..ROW },
        Case { name: "a scope the plan allows", tenancy: Tenancy::Active(Some(&["read"])), required: Some("read"), ..ROW },
        Case { name: "a used-up quota", tenancy: Tenancy::QuotaUsedUp, expected: Err(QuotaExhausted), ..ROW },
        Case { name: "the scope before the quota", tenancy: Tenancy::QuotaUsedUp, key: read_only, required: Some("write"), expected: Err(InsufficientScope(Scope::WRITE)), ..ROW },
    ]
}

fn stored_key(case: &Case) -> (ApiKey, KeyRecord) {
    let (key, digest) = KeyScheme::default().generate(case.environment);
    let builder = KeyRecord::builder("key_1", "acme", digest)
        .key(&key)
        .scopes(Scopes::from_static(&["write"]));
    (key, (case.key)(builder).build())
}

fn verifier(case: &Case, store: impl KeyStore) -> Verifier {
    let plan = |allowed: Option<&[&'static str]>, quota| {
        TenantEntitlements::active(Plan {
            allowed_scopes: allowed.map(Scopes::from_static),
            quota,
            ..Plan::default()
        })
    };
    let plans = MemoryEntitlements::new();
    match case.tenancy {
        Tenancy::NoSource | Tenancy::Unknown => {}
        Tenancy::Active(allowed) => plans.set("acme", plan(allowed, None)),
        Tenancy::Suspended => {
            plans.set("acme", plan(None, None));
            plans.suspend("acme");
        }
        Tenancy::QuotaUsedUp => {
            let none_left = Quota {
                limit: 0,
                period: QuotaPeriod::Month,
            };
            plans.set("acme", plan(None, Some(none_left)));
        }
    }
    let builder = Verifier::builder(store).accept_test_keys(case.accept_test_keys);
    match case.tenancy {
        Tenancy::NoSource => builder.build(),
        _ => builder.entitlements(plans).build(),
    }
}

fn request(credential: Credential, key: &ApiKey) -> http::Request<()> {
    let secret = key.expose_secret();
    let request = http::Request::get("/v1/documents");
    match credential {
        Credential::Stored => request.header("x-api-key", secret),
        Credential::Unknown => {
            let other = KeyScheme::default().generate(key.environment()).0;
            request.header("x-api-key", other.expose_secret().to_owned())
        }
        Credential::Typo => {
            let mut typo = secret.to_owned();
            let last = typo.pop().unwrap();
            typo.push(if last == '0' { '1' } else { '0' });
            request.header("x-api-key", typo)
        }
        Credential::Nothing => request,
        Credential::Twice => request
            .header("x-api-key", secret)
            .header("authorization", format!("Bearer {secret}")),
        Credential::Basic => request.header("authorization", "Basic dXNlcjpwYXNz"),
    }
    .body(())
    .unwrap()
}

#[tokio::test]
async fn every_row_of_the_decision_table() {
    for case in table() {
        let (key, record) = stored_key(&case);
        let store = MemoryStore::new();
        store.put(record);
        let verifier = verifier(&case, store);
        let presented = request(case.credential, &key);
        let head = RequestHead::from(&presented);
        let required = case.required.map(Scope::from_static);
        // In memory every backend answers at once: the fast path decides, and the async path
        // must decide the same.
        let now = verifier.check_now(&head, required.as_ref());
        assert!(now.is_some(), "{}: no verdict without a future", case.name);
        let now = now.unwrap().map(|_| ()).map_err(|r| r.error);
        assert_eq!(now, case.expected, "{} (check_now)", case.name);
        let awaited = verifier
            .check(&head, required.as_ref())
            .await
            .map(|_| ())
            .map_err(|r| r.error);
        assert_eq!(awaited, case.expected, "{} (check)", case.name);
    }
}

/// A store that fails, or never answers.
struct Down {
    hangs: bool,
}

#[async_trait]
impl KeyStore for Down {
    async fn find(&self, _: &KeyDigest) -> Lookup {
        if self.hangs {
            std::future::pending::<()>().await;
        }
        Err(StoreError::backend(std::io::Error::other(
            "connection refused",
        )))
    }
}

#[tokio::test]
async fn a_store_that_fails_or_hangs_refuses_with_unavailable() {
    for hangs in [false, true] {
        let verifier = Verifier::builder(Arc::new(Down { hangs }))
            .store_timeout(std::time::Duration::from_millis(50))
            .build();
        let key = KeyScheme::default().generate(Environment::Live).0;
        let presented = request(Credential::Stored, &key);
        let head = RequestHead::from(&presented);
        assert!(
            verifier.check_now(&head, None).is_none(),
            "the store must be awaited"
        );
        let error = verifier.check(&head, None).await.unwrap_err().error;
        assert_eq!(error, AuthError::Unavailable, "hangs: {hangs}");
        // A malformed key never reaches the failing store.
        let typo = request(Credential::Typo, &key);
        let error = verifier
            .check(&RequestHead::from(&typo), None)
            .await
            .unwrap_err()
            .error;
        assert_eq!(error, AuthError::Malformed(MalformedKey::Checksum));
    }
}
