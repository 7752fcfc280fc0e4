//! Property tests of the guarantees keygate's security rests on: key format round trips, typos
//! refused before any store call, the scope implication laws, the bounds a key issues keys
//! within, and rate limits and quotas that never admit more than they allow.
//!
//! `PROPTEST_CASES` raises the number of cases of every property here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderValue, Request};
use keygate::hash::KeyHasher;
use keygate::key::{Environment, KeyFormat, KeyFormatError, KeyScheme, MalformedKey};
use keygate::lifecycle::KeyBounds;
use keygate::limit::{
    Decision, LimitRequest, Limiter, ManualClock, MemoryLimiter, Quota, QuotaPeriod, RateLimit,
};
use keygate::plan::{MemoryEntitlements, Plan, TenantEntitlements};
use keygate::request::{ClientAddr, RequestHead};
use keygate::restriction::{EndpointRule, Restrictions};
use keygate::scope::{Scope, Scopes};
use keygate::store::{KeyRecord, KeyStore, Lookup, MemoryStore};
use keygate::{AuthError, Verifier};
use proptest::prelude::*;
use proptest::sample::Index;
use time::OffsetDateTime;

// ---------------------------------------------------------------------------------------------
// Key format

/// Every setting a [`KeyFormat`] offers: prefix, entropy, checksum.
#[derive(Debug, Clone)]
struct FormatOptions {
    prefix: String,
    bits: usize,
    checksum: bool,
}

impl FormatOptions {
    fn format(&self) -> KeyFormat {
        KeyFormat::new(&self.prefix)
            .unwrap()
            .with_entropy_bits(self.bits)
            .unwrap()
            .with_checksum(self.checksum)
    }
}

fn format_options() -> impl Strategy<Value = FormatOptions> {
    ("[a-z0-9]{1,16}", 16usize..=64, any::<bool>()).prop_map(|(prefix, bytes, checksum)| {
        FormatOptions {
            prefix,
            bits: bytes * 8,
            checksum,
        }
    })
}

fn environment() -> impl Strategy<Value = Environment> {
    prop_oneof![Just(Environment::Live), Just(Environment::Test)]
}

/// A store that counts every lookup, answered or not.
#[derive(Clone, Default)]
struct CountingStore {
    inner: MemoryStore,
    calls: Arc<AtomicUsize>,
}

impl CountingStore {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl KeyStore for CountingStore {
    async fn find(&self, digest: &keygate::hash::KeyDigest) -> Lookup {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.find(digest).await
    }

    fn find_now(&self, digest: &keygate::hash::KeyDigest) -> Option<Lookup> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.find_now(digest)
    }
}

/// One edit of one character of a key.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, char),
    Insert(Index, char),
    Delete(Index),
}

/// Visible ASCII and a few multi-byte characters. Surrounding whitespace is not part of a
/// header value (HTTP strips it), so it is no edit of the key.
fn edit_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => (0x21u8..=0x7e).prop_map(char::from),
        1 => prop::sample::select(vec!['é', 'ß', '€', '\u{1F511}', '\u{0661}']),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), edit_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
        1 => (any::<Index>(), edit_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
        1 => any::<Index>().prop_map(Edit::Delete),
    ]
}

impl Edit {
    /// The key with this edit applied (keys are ASCII: every index is a char boundary).
    fn apply(&self, key: &str) -> String {
        let mut out = key.to_owned();
        match self {
            Edit::Replace(i, c) => {
                let at = i.index(key.len());
                out.replace_range(at..=at, c.encode_utf8(&mut [0; 4]));
            }
            Edit::Insert(i, c) => out.insert(i.index(key.len() + 1), *c),
            Edit::Delete(i) => {
                out.remove(i.index(key.len()));
            }
        }
        out
    }

    /// Whether this edit leaves a key of the same shape: one lowercase hex character of the
    /// body replaced by another. Without a checksum, only the store can refuse such a key.
    fn is_hex_for_hex_in_body(&self, format: &KeyFormat) -> bool {
        let body_start = format.prefix().len() + 6;
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        match self {
            Edit::Replace(i, c) => i.index(format.key_len()) >= body_start && hex(*c),
            _ => false,
        }
    }
}

/// A request carrying `key` in `x-api-key`, or as a bearer token.
fn request_with(key: &str, bearer: bool) -> Option<Request<()>> {
    let value = if bearer {
        HeaderValue::from_bytes(format!("Bearer {key}").as_bytes()).ok()?
    } else {
        HeaderValue::from_bytes(key.as_bytes()).ok()?
    };
    let name = if bearer { "authorization" } else { "x-api-key" };
    Some(Request::get("/").header(name, value).body(()).unwrap())
}

/// A verifier over a counting store that holds one issued key of `format`.
fn one_key_verifier(
    format: &KeyFormat,
    environment: Environment,
) -> (Verifier, CountingStore, String) {
    let scheme = KeyScheme::new(format.clone(), KeyHasher::sha256());
    let (key, digest) = scheme.generate(environment);
    let store = CountingStore::default();
    store.inner.put(
        KeyRecord::builder("key_1", "acme", digest)
            .key(&key)
            .environment(environment)
            .scopes(Scopes::from_static(&["read"]))
            .build(),
    );
    let verifier = Verifier::builder(store.clone()).scheme(scheme).build();
    (verifier, store, key.expose_secret().to_owned())
}

/// The memory store answers at once: the verdict comes from `check_now`.
fn verdict(verifier: &Verifier, request: &Request<()>) -> Result<String, AuthError> {
    verifier
        .check_now(&RequestHead::from(request), None)
        .expect("the memory store answers at once")
        .map(|admitted| admitted.tenant.key_id().to_owned())
        .map_err(|rejection| rejection.error)
}

proptest! {
    /// Every key a format generates parses under that format, into what was generated.
    #[test]
    fn generate_parse_round_trip(options in format_options(), environment in environment()) {
        let format = options.format();
        let key = format.generate(environment);
        let secret = key.expose_secret();
        let visible = format!("{}_{}_", options.prefix, environment.as_str());
        let body_len = options.bits / 4;
        let tail = if options.checksum { 8 } else { 0 };

        prop_assert_eq!(format.key_len(), visible.len() + body_len + tail);
        prop_assert_eq!(secret.len(), format.key_len());
        prop_assert_eq!(key.prefix(), visible.as_str());
        prop_assert_eq!(key.environment(), environment);
        prop_assert_eq!(key.last4(), &secret[secret.len() - 4..]);
        prop_assert!(secret[visible.len()..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(format.has_checksum(), options.checksum);

        let parsed = format.parse(secret).unwrap();
        prop_assert_eq!(parsed.expose_secret(), secret);
        prop_assert_eq!(parsed.prefix(), visible.as_str());
        prop_assert_eq!(parsed.environment(), environment);
        prop_assert_eq!(parsed.last4(), key.last4());

        // The digest the verifier computes is the one stored at issue, with or without pepper.
        for hasher in [KeyHasher::sha256(), KeyHasher::hmac_sha256(b"pepper")] {
            let scheme = KeyScheme::new(format.clone(), hasher);
            let (key, digest) = scheme.generate(environment);
            prop_assert_eq!(scheme.digest(&scheme.format().parse(key.expose_secret()).unwrap()), digest);
        }
    }

    /// A format takes exactly the documented settings.
    #[test]
    fn format_settings_are_validated(prefix in "\\PC{0,20}", bits in 0usize..1100) {
        let prefix_ok = (1..=16).contains(&prefix.len())
            && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        match KeyFormat::new(&prefix) {
            Ok(format) => {
                prop_assert!(prefix_ok);
                prop_assert_eq!(format.prefix(), prefix.as_str());
            }
            Err(e) => {
                prop_assert!(!prefix_ok);
                prop_assert_eq!(e, KeyFormatError::InvalidPrefix);
            }
        }
        let bits_ok = (128..=512).contains(&bits) && bits % 8 == 0;
        match KeyFormat::default().with_entropy_bits(bits) {
            Ok(format) => {
                prop_assert!(bits_ok);
                prop_assert_eq!(format.key_len(), 8 + bits / 4 + 8);
            }
            Err(e) => {
                prop_assert!(!bits_ok);
                prop_assert_eq!(e, KeyFormatError::InvalidEntropy);
            }
        }
    }

    /// A key of one service's prefix is never accepted by a format with another prefix, whatever
    /// the other settings.
    #[test]
    fn other_prefixes_are_refused(a in format_options(), b in format_options(), environment in environment()) {
        prop_assume!(a.prefix != b.prefix);
        let key = a.format().generate(environment);
        prop_assert!(b.format().parse(key.expose_secret()).is_err());
    }

    /// With the checksum (the default), any single-character change of a valid key (replaced,
    /// inserted or deleted, anywhere) is refused as malformed without a store call.
    #[test]
    fn edited_key_is_refused_without_store_call(
        options in format_options(),
        environment in environment(),
        edit in edit(),
        bearer in any::<bool>(),
    ) {
        let format = options.format().with_checksum(true);
        let (verifier, store, key) = one_key_verifier(&format, environment);
        // The key itself is found, with one store call.
        prop_assert_eq!(verdict(&verifier, &request_with(&key, bearer).unwrap()), Ok("key_1".to_owned()));
        prop_assert_eq!(store.calls(), 1);

        let edited = edit.apply(&key);
        prop_assume!(edited != key);
        let Some(request) = request_with(&edited, bearer) else { return Ok(()) };
        let refused = verdict(&verifier, &request);
        prop_assert!(matches!(refused, Err(AuthError::Malformed(_))), "{edit:?}: {refused:?}");
        prop_assert_eq!(store.calls(), 1, "{:?} reached the store", edit);
    }

    /// Without the checksum, every change but one lowercase hex character of the body for
    /// another is still refused without a store call; that one yields a well-formed key, which
    /// the store does not know.
    #[test]
    fn edited_key_without_checksum(
        options in format_options(),
        environment in environment(),
        edit in edit(),
    ) {
        let format = options.format().with_checksum(false);
        let (verifier, store, key) = one_key_verifier(&format, environment);
        let edited = edit.apply(&key);
        prop_assume!(edited != key);
        let Some(request) = request_with(&edited, false) else { return Ok(()) };
        let refused = verdict(&verifier, &request);
        if edit.is_hex_for_hex_in_body(&format) {
            prop_assert_eq!(refused, Err(AuthError::UnknownKey));
            prop_assert_eq!(store.calls(), 1);
        } else {
            prop_assert!(matches!(refused, Err(AuthError::Malformed(_))), "{edit:?}: {refused:?}");
            prop_assert_eq!(store.calls(), 0);
        }
    }
}

/// The checksum catches every substitution of one character by every other, at every position
/// (CRC32 detects every error burst of up to 32 bits); exhaustive for one key of each
/// environment.
#[test]
fn every_substitution_is_a_malformed_key() {
    for environment in [Environment::Live, Environment::Test] {
        let format = KeyFormat::default();
        let key = format.generate(environment);
        let key = key.expose_secret();
        for at in 0..key.len() {
            for c in 0x21u8..=0x7e {
                if key.as_bytes()[at] == c {
                    continue;
                }
                let mut edited = key.as_bytes().to_vec();
                edited[at] = c;
                let edited = String::from_utf8(edited).unwrap();
                let refused = format.parse(&edited).unwrap_err();
                if at >= 8 && (c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
                    assert_eq!(refused, MalformedKey::Checksum, "{at} {c}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scopes

/// A resource part: none (`read`, `write`), `name:`, or text that is not a resource.
fn resource() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-c]{1,2}:",
        "[a-z0-9_.-]{1,3}",
        "[a-c]{1,2}:[a-c]{1,2}:",
    ]
}

fn scope_name() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("admin".to_owned()),
        3 => resource().prop_map(|r| format!("{r}read")),
        3 => resource().prop_map(|r| format!("{r}write")),
        2 => "[a-z0-9_.:-]{1,12}",
    ]
}

fn scope() -> impl Strategy<Value = Scope> {
    scope_name().prop_map(|n| Scope::new(n).unwrap())
}

fn scope_set() -> impl Strategy<Value = Scopes> {
    prop::collection::vec(scope(), 0..4).prop_map(|v| v.into_iter().collect())
}

/// The documented rule, written out independently of the implementation.
fn documented_grant(held: &str, needed: &str) -> bool {
    if held == needed || held == "admin" {
        return true;
    }
    let (Some(resource), Some(read_resource)) =
        (held.strip_suffix("write"), needed.strip_suffix("read"))
    else {
        return false;
    };
    resource == read_resource && (resource.is_empty() || resource.ends_with(':'))
}

proptest! {
    #[test]
    fn admin_grants_every_scope(s in scope()) {
        prop_assert!(Scope::ADMIN.grants(&s));
        prop_assert!(Scopes::from_static(&["admin"]).grants(&s));
    }

    #[test]
    fn every_scope_grants_itself(s in scope()) {
        prop_assert!(s.grants(&s));
    }

    #[test]
    fn only_admin_grants_admin(s in scope()) {
        prop_assert_eq!(s.grants(&Scope::ADMIN), s == Scope::ADMIN);
    }

    /// `write` grants `read`, and `<name>:write` grants `<name>:read`; never the other way,
    /// never across resources.
    #[test]
    fn write_grants_read_of_the_same_resource(a in "([a-c]{1,2}:)?", b in "([a-c]{1,2}:)?") {
        let write = Scope::new(format!("{a}write")).unwrap();
        let read = Scope::new(format!("{b}read")).unwrap();
        prop_assert_eq!(write.grants(&read), a == b);
        let reverse_write = Scope::new(format!("{b}write")).unwrap();
        let reverse_read = Scope::new(format!("{a}read")).unwrap();
        prop_assert!(!reverse_read.grants(&reverse_write));
    }

    /// The implementation is exactly the documented rule.
    #[test]
    fn grants_is_the_documented_rule(held in scope(), needed in scope()) {
        prop_assert_eq!(held.grants(&needed), documented_grant(held.as_str(), needed.as_str()));
    }

    #[test]
    fn grants_is_transitive(a in scope(), b in scope(), c in scope()) {
        if a.grants(&b) && b.grants(&c) {
            prop_assert!(a.grants(&c), "{a:?} ⊇ {b:?} ⊇ {c:?}");
        }
    }

    /// A set grants what one of its scopes grants; a set that grants every scope of another
    /// grants all that the other grants.
    #[test]
    fn sets_of_scopes(a in scope_set(), b in scope_set(), needed in scope()) {
        prop_assert_eq!(a.grants(&needed), a.iter().any(|s| s.grants(&needed)));
        if b.iter().all(|s| a.grants(s)) && b.grants(&needed) {
            prop_assert!(a.grants(&needed));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The bounds of a key

/// A key's reach, owned, from pools that sit on the edges of the matching rules.
#[derive(Debug, Clone)]
struct Reach {
    environment: Environment,
    scopes: Scopes,
    plan_scopes: Option<Scopes>,
    restrictions: Restrictions,
    /// Hours after the test's epoch.
    expires_at: Option<i64>,
}

const NETS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "10.2.0.0/16",
    "0.0.0.0/0",
    "::/0",
    "::ffff:0:0/96",
    "::ffff:10.0.0.0/104",
    "2001:db8::/32",
    "2001:db8:1::/48",
];
const CLIENTS: &[&str] = &[
    "10.1.2.3",
    "10.1.2.9",
    "10.2.0.1",
    "192.0.2.1",
    "::ffff:10.1.2.3",
    "2001:db8:1::5",
    "2001:db8:2::5",
];
const REFERRERS: &[&str] = &[
    "https://a.example.com",
    "https://a.example.com/",
    "https://a.example.com/*",
    "https://a.example.com*",
    "https://a.example.com/docs",
    "https://a.example.com/docs/*",
    "https://a.example.com.evil.io",
    "https://b.example.com",
];
const REQUEST_REFERRERS: &[&str] = &[
    "https://a.example.com",
    "https://a.example.com/docs",
    "https://a.example.com/docs/x",
    "https://a.example.com/docsx",
    "https://a.example.com?x",
    "https://a.example.com.evil.io/p",
    "https://b.example.com/p",
];
const PATHS: &[&str] = &["/v1/*", "/v1/a", "/v1/a/*", "/v1/a*", "/v2/*", "*"];
const METHODS: &[Option<&str>] = &[None, Some("GET"), Some("post")];
const REQUEST_PATHS: &[&str] = &["/", "/v1/a", "/v1/a/1", "/v1/ab", "/v1/b", "/v2/x"];
const REQUEST_METHODS: &[&str] = &["GET", "POST"];
const SCOPE_NAMES: &[&str] = &[
    "admin",
    "read",
    "write",
    "docs:read",
    "docs:write",
    "search",
];

fn scopes_from(pool: &'static [&'static str], min: usize) -> impl Strategy<Value = Scopes> {
    prop::collection::vec(prop::sample::select(pool), min..=3)
        .prop_map(|names| names.iter().map(|n| Scope::from_static(n)).collect())
}

fn restrictions() -> impl Strategy<Value = Restrictions> {
    let endpoint =
        (prop::sample::select(PATHS), prop::sample::select(METHODS)).prop_map(|(path, method)| {
            EndpointRule {
                method: method.map(Into::into),
                path: path.into(),
            }
        });
    (
        prop::collection::vec(prop::sample::select(NETS), 0..=2),
        prop::collection::vec(prop::sample::select(REFERRERS), 0..=2),
        prop::collection::vec(endpoint, 0..=2),
    )
        .prop_map(|(nets, referrers, endpoints)| Restrictions {
            ip_ranges: nets.iter().map(|n| n.parse().unwrap()).collect(),
            referrers: referrers.iter().map(|r| (*r).to_owned()).collect(),
            endpoints,
        })
}

fn reach() -> impl Strategy<Value = Reach> {
    (
        prop::bool::weighted(0.2),
        scopes_from(SCOPE_NAMES, 1),
        prop::option::weighted(0.3, scopes_from(SCOPE_NAMES, 1)),
        restrictions(),
        prop::option::of(0i64..4),
    )
        .prop_map(
            |(test, scopes, plan_scopes, restrictions, expires_at)| Reach {
                environment: if test {
                    Environment::Test
                } else {
                    Environment::Live
                },
                scopes,
                plan_scopes,
                restrictions,
                expires_at,
            },
        )
}

/// The start of the hours of [`Reach::expires_at`]: far enough ahead that keys issued at it
/// are valid now.
fn epoch() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(4_000_000_000).unwrap()
}

impl Reach {
    fn bounds(&self) -> KeyBounds<'_> {
        KeyBounds {
            environment: self.environment,
            scopes: &self.scopes,
            plan_scopes: self.plan_scopes.as_ref(),
            restrictions: &self.restrictions,
            expires_at: self.expires_at.map(|h| epoch() + time::Duration::hours(h)),
        }
    }

    /// Each attribute from `self` where `keep` says so, else from `other`: a key built this
    /// way is often, not always, inside `self`.
    fn mixed(&self, other: &Reach, keep: [bool; 6]) -> Reach {
        fn pick<T: Clone>(keep: bool, mine: &T, theirs: &T) -> T {
            if keep { mine } else { theirs }.clone()
        }
        Reach {
            environment: pick(keep[0], &self.environment, &other.environment),
            scopes: pick(keep[1], &self.scopes, &other.scopes),
            plan_scopes: self.plan_scopes.clone(),
            restrictions: Restrictions {
                ip_ranges: pick(
                    keep[2],
                    &self.restrictions.ip_ranges,
                    &other.restrictions.ip_ranges,
                ),
                referrers: pick(
                    keep[3],
                    &self.restrictions.referrers,
                    &other.restrictions.referrers,
                ),
                endpoints: pick(
                    keep[4],
                    &self.restrictions.endpoints,
                    &other.restrictions.endpoints,
                ),
            },
            expires_at: pick(keep[5], &self.expires_at, &other.expires_at),
        }
    }

    fn record(&self, id: &str, key: &keygate::key::ApiKey) -> KeyRecord {
        KeyRecord::builder(id, "acme", KeyHasher::sha256().hash(key.expose_secret()))
            .key(key)
            .scopes(self.scopes.clone())
            .environment(self.environment)
            .expires_at(self.bounds().expires_at)
            .restrictions(self.restrictions.clone())
            .build()
    }
}

fn keep() -> impl Strategy<Value = [bool; 6]> {
    prop::array::uniform6(prop::bool::weighted(0.75))
}

/// One request as the verifier sees it.
#[derive(Debug, Clone)]
struct Use {
    method: &'static str,
    path: &'static str,
    referrer: &'static str,
    client: &'static str,
    scope: Option<&'static str>,
    /// Hours after the test's epoch.
    at: i64,
}

fn a_use() -> impl Strategy<Value = Use> {
    (
        prop::sample::select(REQUEST_METHODS),
        prop::sample::select(REQUEST_PATHS),
        prop::sample::select(REQUEST_REFERRERS),
        prop::sample::select(CLIENTS),
        prop::option::of(prop::sample::select(SCOPE_NAMES)),
        -1i64..5,
    )
        .prop_map(|(method, path, referrer, client, scope, at)| Use {
            method,
            path,
            referrer,
            client,
            scope,
            at,
        })
}

proptest! {
    // Many generated pairs are not contained, and `bounds_never_widen` skips those.
    #![proptest_config(ProptestConfig {
        cases: ProptestConfig::default().cases.max(1024),
        max_global_rejects: 1 << 16,
        ..ProptestConfig::default()
    })]

    /// A key whose scopes its plan allows contains itself.
    #[test]
    fn bounds_are_reflexive(a in reach()) {
        let allowed = a.plan_scopes.as_ref().is_none_or(|plan| a.scopes.iter().all(|s| plan.grants(s)));
        prop_assert_eq!(a.bounds().contains(&a.bounds()).is_ok(), allowed);
    }

    /// Each side's own plan bounds what it contains; containment still chains.
    #[test]
    fn bounds_are_transitive(
        a in reach(),
        r1 in reach(),
        r2 in reach(),
        k1 in keep(),
        k2 in keep(),
        b_plan in prop::option::weighted(0.3, scopes_from(SCOPE_NAMES, 1)),
    ) {
        let b = Reach { plan_scopes: b_plan, ..a.mixed(&r1, k1) };
        let c = b.mixed(&r2, k2);
        if a.bounds().contains(&b.bounds()).is_ok() && b.bounds().contains(&c.bounds()).is_ok() {
            prop_assert_eq!(a.bounds().contains(&c.bounds()), Ok(()));
        }
    }

    /// A key inside its creator's bounds is never admitted where its creator is not: the same
    /// verifier (same tenant, same plan, same clock) judges both on the same request.
    #[test]
    fn bounds_never_widen(a in reach(), r in reach(), k in keep(), uses in prop::collection::vec(a_use(), 1..8)) {
        let b = a.mixed(&r, k);
        prop_assume!(a.bounds().contains(&b.bounds()).is_ok());
        prop_assert_eq!(a.environment, b.environment);

        let format = KeyFormat::default();
        let (parent, child) = (format.generate(a.environment), format.generate(b.environment));
        let store = MemoryStore::new();
        store.put(a.record("key_parent", &parent));
        store.put(b.record("key_child", &child));
        let clock = ManualClock::default();
        let plans = MemoryEntitlements::new();
        plans.set("acme", TenantEntitlements::active(Plan {
            allowed_scopes: a.plan_scopes.clone(),
            ..Plan::default()
        }));
        let verifier = Verifier::builder(store).entitlements(plans).clock(clock.clone()).build();
        for u in uses {
            let at = epoch() + time::Duration::hours(u.at) + time::Duration::minutes(30);
            clock.set_unix_secs(u64::try_from(at.unix_timestamp()).unwrap());
            let scope = u.scope.map(Scope::from_static);
            let judge = |key: &keygate::key::ApiKey| {
                let mut request = Request::builder()
                    .method(u.method)
                    .uri(u.path)
                    .header("x-api-key", key.expose_secret())
                    .header("referer", u.referrer)
                    .body(())
                    .unwrap();
                let client: std::net::IpAddr = u.client.parse().unwrap();
                request.extensions_mut().insert(ClientAddr(SocketAddr::new(client, 40000)));
                verifier
                    .check_now(&RequestHead::from(&request), scope.as_ref())
                    .expect("memory backends answer at once")
                    .map(|_| ())
                    .map_err(|r| r.error)
            };
            if judge(&child).is_ok() {
                prop_assert_eq!(judge(&parent), Ok(()), "{:?}", u);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limits and quotas

/// The time between two requests, in nanoseconds: bursts (0), sub-interval steps, and long
/// pauses.
fn gap() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0u64),
        4 => 0u64..2_000,
        4 => 0u64..200_000_000,
        2 => 0u64..5_000_000_000,
        1 => 0u64..200_000_000_000,
    ]
}

fn rate_limit() -> impl Strategy<Value = RateLimit> {
    (
        prop_oneof![
            1..=10u32,
            1..=1_000u32,
            1_000_000..=1_000_000_000u32,
            any::<u32>().prop_map(|l| l.max(1)),
        ],
        prop_oneof![Just(1u64), Just(60), 1..=3_600u64],
    )
        .prop_map(|(limit, secs)| RateLimit {
            limit,
            window: Duration::from_secs(secs),
        })
}

/// Whether the admitted requests (time, cost) keep the GCRA bound: in every span of time from
/// one admitted request to another, at most `limit` units plus what the elapsed time
/// replenished at exactly `limit` per `window`.
fn check_rate_bound(admitted: &[(u64, u32)], limit: RateLimit) -> Result<(), TestCaseError> {
    let window = limit.window.as_nanos();
    for (i, (first, _)) in admitted.iter().enumerate() {
        let mut units = 0u128;
        for (last, cost) in &admitted[i..] {
            units += u128::from(*cost);
            let replenished = u128::from(last - first) * u128::from(limit.limit) / window;
            prop_assert!(
                units <= u128::from(limit.limit) + replenished,
                "{units} units admitted in {} ns under {limit:?}",
                last - first
            );
        }
    }
    Ok(())
}

/// A request's cost: mostly 1, else anything up to the limit (a larger cost never fits).
fn cost(limit: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => Just(1u32),
        1 => 1..=limit,
        1 => any::<u32>(),
    ]
}

proptest! {
    /// One key, one rate limit, requests of any cost: every span of admitted requests keeps
    /// the bound, and a request is refused only with a retry time of at least a second.
    #[test]
    fn rate_limit_never_admits_more_than_it_replenishes(
        (limit, steps) in rate_limit().prop_flat_map(|limit| {
            (Just(limit), prop::collection::vec((gap(), cost(limit.limit)), 1..300))
        }),
    ) {
        let clock = ManualClock::at_unix_secs(1_700_000_000);
        let limiter = MemoryLimiter::with_clock(clock.clone());
        let mut now = 0u64;
        let mut admitted = Vec::new();
        for (gap, cost) in steps {
            clock.advance(Duration::from_nanos(gap));
            now += gap;
            let request = LimitRequest {
                tenant_id: "acme",
                key_id: "key_1",
                tenant_rate: Some(limit),
                key_rate: None,
                quota: None,
                cost,
            };
            match limiter.acquire_now(&request).unwrap().unwrap() {
                Decision::Allowed(_) => admitted.push((now, cost)),
                Decision::RateLimited { retry_after_secs, .. } => prop_assert!(retry_after_secs >= 1),
                Decision::QuotaExhausted { .. } => {
                    return Err(TestCaseError::fail("quota exhausted, but no quota was set"));
                }
            }
        }
        check_rate_bound(&admitted, limit)?;
    }

    /// A tenant limit, key limits and a quota at once, over two keys and calendar boundaries:
    /// each holds on its own, and a request refused by one consumes none of the others.
    #[test]
    fn limits_together_never_exceed_any_of_them(
        tenant_rate in rate_limit(),
        key_rate in rate_limit(),
        quota_limit in 1u64..50,
        month in any::<bool>(),
        steps in prop::collection::vec((any::<bool>(), 0u64..3_000_000_000_000), 1..200),
    ) {
        // 2024-02-28T23:00:00Z: the day and the month end within the steps' reach.
        let start = 1_709_161_200u64;
        let clock = ManualClock::at_unix_secs(start);
        let limiter = MemoryLimiter::with_clock(clock.clone());
        let period = if month { QuotaPeriod::Month } else { QuotaPeriod::Day };
        let quota = Quota { limit: quota_limit, period };
        let mut now = 0u64;
        let mut tenant_admitted = Vec::new();
        let mut key_admitted: [Vec<(u64, u32)>; 2] = Default::default();
        let mut per_period = std::collections::BTreeMap::<(i32, u8, u8), u64>::new();
        for (second_key, gap) in steps {
            clock.advance(Duration::from_nanos(gap));
            now += gap;
            let key = usize::from(second_key);
            let request = LimitRequest {
                tenant_id: "acme",
                key_id: ["key_1", "key_2"][key],
                tenant_rate: Some(tenant_rate),
                key_rate: Some(key_rate),
                quota: Some(quota),
                cost: 1,
            };
            if let Decision::Allowed(_) = limiter.acquire_now(&request).unwrap().unwrap() {
                tenant_admitted.push((now, 1));
                key_admitted[key].push((now, 1));
                let date = OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(start) * 1_000_000_000 + i128::from(now),
                ).unwrap().date();
                let day = if month { 0 } else { date.day() };
                *per_period.entry((date.year(), u8::from(date.month()), day)).or_default() += 1;
            }
        }
        check_rate_bound(&tenant_admitted, tenant_rate)?;
        for admitted in &key_admitted {
            check_rate_bound(admitted, key_rate)?;
        }
        for (period, used) in per_period {
            prop_assert!(used <= quota_limit, "{used} admitted in {period:?}, quota {quota_limit}");
        }
    }
}

/// A limit whose interval is not a whole number of nanoseconds: 600,000,000 a second is one
/// unit every 1⅔ ns. The interval is rounded up, so that after a full burst, 0.6 s replenish
/// 0.6 of the limit, never a whole limit.
#[test]
fn fractional_intervals_round_towards_fewer_requests() {
    let clock = ManualClock::at_unix_secs(1_700_000_000);
    let limiter = MemoryLimiter::with_clock(clock.clone());
    let limit = RateLimit::per_second(600_000_000);
    let request = |cost| LimitRequest {
        tenant_id: "acme",
        key_id: "key_1",
        tenant_rate: Some(limit),
        key_rate: None,
        quota: None,
        cost,
    };
    let decide = |cost| limiter.acquire_now(&request(cost)).unwrap().unwrap();
    assert!(matches!(decide(600_000_000), Decision::Allowed(_)));
    clock.advance(Duration::from_millis(600));
    assert!(matches!(decide(600_000_000), Decision::RateLimited { .. }));
    assert!(matches!(decide(300_000_000), Decision::Allowed(_)));
}

/// The largest cost under the longest interval overflows 64 bits of nanoseconds: it is
/// refused, not a panic (debug) or a wrapped time that admits it (release).
#[test]
fn huge_costs_are_refused() {
    let limiter = MemoryLimiter::with_clock(ManualClock::at_unix_secs(1_700_000_000));
    let request = LimitRequest {
        tenant_id: "acme",
        key_id: "key_1",
        tenant_rate: Some(RateLimit {
            limit: 1,
            window: Duration::from_secs(30 * 86_400),
        }),
        key_rate: None,
        quota: Some(Quota {
            limit: u64::MAX,
            period: QuotaPeriod::Day,
        }),
        cost: u32::MAX,
    };
    let decision = limiter.acquire_now(&request).unwrap().unwrap();
    assert!(
        matches!(decision, Decision::RateLimited { .. }),
        "{decision:?}"
    );
}
