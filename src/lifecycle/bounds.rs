//! The bounds of a key: what a key may hand on to the keys it issues.

use time::OffsetDateTime;

use crate::key::Environment;
use crate::plan::Plan;
use crate::restriction::{EndpointRule, Restrictions, ip_range_within, method_allows};
use crate::scope::Scopes;
use crate::store::KeyRecord;
use crate::tenant::{Tenant, granted};

/// How far a key reaches: its environment, scopes (and its plan's allowed scopes),
/// restrictions and expiry.
///
/// [`KeyBounds::contains`] decides whether one key may issue another: a key may only hand on
/// what it holds itself. It also decides which keys a key may change: only those it could have
/// issued. The HTTP API applies it against the caller's key to every key it issues, to the
/// successor of every key it rotates, and to every key it renames or revokes (see
/// [`KeyManager::issue_as`](super::KeyManager::issue_as) and
/// [`KeyManager::revoke_as`](super::KeyManager::revoke_as)); the plain methods such as
/// [`KeyManager::issue`](super::KeyManager::issue), called by operator code, are not bound.
///
/// The relation is pure, reflexive (a key whose scopes its plan allows contains itself) and
/// transitive, and it never widens: every request a contained key may make, the containing
/// key may make too.
///
/// ```
/// use keygate::key::Environment;
/// use keygate::lifecycle::{BoundViolation, KeyBounds};
/// use keygate::restriction::Restrictions;
/// use keygate::scope::Scopes;
///
/// let admin_scopes = Scopes::from_static(&["admin"]);
/// let office: Restrictions = serde_json::from_str(r#"{"ip_ranges":["10.0.0.0/8"]}"#).unwrap();
/// let creator = KeyBounds {
///     environment: Environment::Test,
///     scopes: &admin_scopes,
///     plan_scopes: None,
///     restrictions: &office,
///     expires_at: None,
/// };
///
/// let read = Scopes::from_static(&["read"]);
/// let one_host: Restrictions = serde_json::from_str(r#"{"ip_ranges":["10.1.2.3/32"]}"#).unwrap();
/// let narrower = KeyBounds { scopes: &read, restrictions: &one_host, ..creator };
/// assert_eq!(creator.contains(&narrower), Ok(()));
///
/// let unrestricted = Restrictions::default();
/// let wider = KeyBounds { restrictions: &unrestricted, ..narrower };
/// assert_eq!(creator.contains(&wider), Err(BoundViolation::Restrictions));
///
/// let live = KeyBounds { environment: Environment::Live, ..narrower };
/// assert_eq!(creator.contains(&live), Err(BoundViolation::Environment));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct KeyBounds<'a> {
    /// The key's environment; a key only issues keys of its own environment.
    pub environment: Environment,
    /// The key's scopes.
    pub scopes: &'a Scopes,
    /// The scopes the key's plan allows (`None`: no plan, or a plan that allows every scope).
    /// Only the containing side's plan counts.
    pub plan_scopes: Option<&'a Scopes>,
    /// The key's restrictions.
    pub restrictions: &'a Restrictions,
    /// The key's expiry (`None`: never).
    pub expires_at: Option<OffsetDateTime>,
}

/// Which bound a key would exceed: a new key, or a key the caller would rename, rotate or
/// revoke. Checked, and reported, in this order. The messages speak of issuing for both: a
/// caller changes only keys it could have issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BoundViolation {
    /// The new key is of another environment.
    #[error("Cannot issue a key beyond your own: environment")]
    Environment,
    /// A scope of the new key is not granted by the creator's scopes and its plan.
    #[error("Cannot issue a key beyond your own: scopes")]
    Scopes,
    /// The new key is less restricted than its creator (an IP range, referrer or endpoint
    /// outside the creator's, or no restriction of a kind the creator has).
    #[error("Cannot issue a key beyond your own: restrictions")]
    Restrictions,
    /// The new key expires later than its creator, or never while its creator does.
    #[error("Cannot issue a key beyond your own: expiry")]
    Expiry,
}

impl<'a> KeyBounds<'a> {
    /// The bounds of a stored key, on `plan` (the plan of its tenant, if any).
    pub fn of(key: &'a KeyRecord, plan: Option<&'a Plan>) -> Self {
        KeyBounds {
            environment: key.environment,
            scopes: &key.scopes,
            plan_scopes: plan.and_then(|p| p.allowed_scopes.as_ref()),
            restrictions: &key.restrictions,
            expires_at: key.expires_at,
        }
    }

    /// The bounds of an authenticated caller: its key, on its tenant's plan.
    pub fn of_tenant(tenant: &'a Tenant) -> Self {
        KeyBounds {
            plan_scopes: tenant.plan_scopes(),
            ..KeyBounds::of(tenant.key(), None)
        }
    }

    /// `Ok` when a key with the bounds `new` stays inside `self`:
    /// - the same environment;
    /// - each of its scopes granted by `self`'s scopes and by `self`'s plan (the rule of
    ///   [`Tenant::grants`]);
    /// - for each kind of restriction `self` has, `new` has it too, and every entry of `new`
    ///   lies inside one of `self`'s: an IP range inside one of `self`'s ranges (an IPv4-mapped
    ///   range such as `::ffff:10.0.0.0/104` counting as the IPv4 range it maps); a referrer
    ///   or an endpoint path equal to one of `self`'s, or under one of `self`'s prefix
    ///   patterns (ending in `*`); an endpoint's method the same as `self`'s rule's, unless that
    ///   rule allows every method. Kinds `self` does not restrict are free;
    /// - when `self` expires, `new` expires no later (no expiry means never, which is later).
    pub fn contains(&self, new: &KeyBounds<'_>) -> Result<(), BoundViolation> {
        if new.environment != self.environment {
            return Err(BoundViolation::Environment);
        }
        if !new
            .scopes
            .iter()
            .all(|s| granted(self.scopes, self.plan_scopes, s))
        {
            return Err(BoundViolation::Scopes);
        }
        if !restrictions_contain(self.restrictions, new.restrictions) {
            return Err(BoundViolation::Restrictions);
        }
        if let Some(limit) = self.expires_at
            && new.expires_at.is_none_or(|at| at > limit)
        {
            return Err(BoundViolation::Expiry);
        }
        Ok(())
    }
}

/// Each kind is independent: an empty list means unrestricted, which contains anything and is
/// contained only by another empty list.
fn restrictions_contain(outer: &Restrictions, inner: &Restrictions) -> bool {
    fn kind<T>(outer: &[T], inner: &[T], within: impl Fn(&T, &T) -> bool) -> bool {
        outer.is_empty()
            || (!inner.is_empty() && inner.iter().all(|i| outer.iter().any(|o| within(o, i))))
    }
    kind(&outer.ip_ranges, &inner.ip_ranges, ip_range_within)
        && kind(&outer.referrers, &inner.referrers, |o, i| {
            referrer_within(o, i)
        })
        && kind(&outer.endpoints, &inner.endpoints, endpoint_within)
}

/// Whether every referrer that `inner` matches, `outer` matches too (see
/// [`Restrictions::referrers`]: an exact origin or page also matches what lies under it after
/// `/` or `?`; a pattern ending in `*` matches by prefix).
fn referrer_within(outer: &str, inner: &str) -> bool {
    // What every referrer matched by `inner` starts with.
    let inner_stem = match inner.strip_suffix('*') {
        Some(prefix) => prefix,
        None => inner.trim_end_matches('/'),
    };
    match outer.strip_suffix('*') {
        Some(prefix) => inner_stem.starts_with(prefix),
        None => {
            let outer = outer.trim_end_matches('/');
            let under = |rest: &str| rest.starts_with('/') || rest.starts_with('?');
            match inner_stem.strip_prefix(outer) {
                // An exact pattern matches itself; a prefix pattern equal to the origin would
                // also match `https://example.com.evil.io`.
                Some("") => !inner.ends_with('*'),
                Some(rest) => under(rest),
                None => false,
            }
        }
    }
}

/// Whether every request that `inner` allows, `outer` allows too.
fn endpoint_within(outer: &EndpointRule, inner: &EndpointRule) -> bool {
    let method = match (&outer.method, &inner.method) {
        (None, _) => true,
        (Some(o), Some(i)) => method_allows(o, i),
        (Some(_), None) => false,
    };
    let path = match outer.path.strip_suffix('*') {
        Some(prefix) => inner
            .path
            .strip_suffix('*')
            .unwrap_or(&inner.path)
            .starts_with(prefix),
        None => inner.path == outer.path,
    };
    method && path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestHead;
    use std::fmt;
    use std::net::IpAddr;

    fn bounds<'a>(scopes: &'a Scopes, r: &'a Restrictions) -> KeyBounds<'a> {
        KeyBounds {
            environment: Environment::Live,
            scopes,
            plan_scopes: None,
            restrictions: r,
            expires_at: None,
        }
    }

    #[test]
    fn referrer_patterns() {
        let o = "https://a.example.com";
        assert!(referrer_within(o, "https://a.example.com/"));
        assert!(referrer_within(o, "https://a.example.com/docs"));
        assert!(referrer_within(o, "https://a.example.com/docs/*"));
        assert!(referrer_within(o, "https://a.example.com?x=1"));
        assert!(!referrer_within(o, "https://a.example.com*"));
        assert!(!referrer_within(o, "https://a.example.com.evil.io"));
        let p = "https://a.example.com/*";
        assert!(referrer_within(p, "https://a.example.com/docs"));
        assert!(referrer_within(p, "https://a.example.com/docs/*"));
        assert!(!referrer_within(p, "https://a.example.com"));
        assert!(!referrer_within(p, "https://a.example.com*"));
    }

    #[test]
    fn ipv4_mapped_ranges() {
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        // `::/0` lets no IPv4 client through; `::ffff:0:0/96` lets every one through.
        assert!(!ip_range_within(&net("::/0"), &net("::ffff:0:0/96")));
        assert!(!ip_range_within(&net("::/0"), &net("::ffff:10.0.0.0/104")));
        assert!(ip_range_within(
            &net("10.0.0.0/8"),
            &net("::ffff:10.1.0.0/112")
        ));
        assert!(ip_range_within(
            &net("::ffff:10.0.0.0/104"),
            &net("10.1.2.3/32")
        ));
        assert!(ip_range_within(&net("::ffff:0:0/96"), &net("10.0.0.0/8")));
        assert!(!ip_range_within(
            &net("::ffff:10.0.0.0/104"),
            &net("11.0.0.0/8")
        ));
    }

    #[test]
    fn endpoint_patterns() {
        let rule = |m: Option<&str>, p: &str| EndpointRule {
            method: m.map(Into::into),
            path: p.into(),
        };
        assert!(endpoint_within(
            &rule(None, "/v1/*"),
            &rule(Some("GET"), "/v1/x")
        ));
        assert!(endpoint_within(
            &rule(Some("get"), "/v1/*"),
            &rule(Some("GET"), "/v1/x/*")
        ));
        assert!(!endpoint_within(
            &rule(Some("GET"), "/v1/*"),
            &rule(None, "/v1/x")
        ));
        assert!(!endpoint_within(
            &rule(None, "/v1/x"),
            &rule(None, "/v1/x*")
        ));
        assert!(!endpoint_within(
            &rule(None, "/v1/x/*"),
            &rule(None, "/v1/x")
        ));
        // A GET rule allows HEAD, not the other way round.
        assert!(endpoint_within(
            &rule(Some("GET"), "/v1/x"),
            &rule(Some("HEAD"), "/v1/x")
        ));
        assert!(!endpoint_within(
            &rule(Some("HEAD"), "/v1/x"),
            &rule(Some("GET"), "/v1/x")
        ));
    }

    #[test]
    fn plan_scopes_bound_the_creator() {
        let admin = Scopes::from_static(&["admin"]);
        let read_only = Scopes::from_static(&["read"]);
        let none = Restrictions::default();
        let creator = KeyBounds {
            plan_scopes: Some(&read_only),
            ..bounds(&admin, &none)
        };
        let read = Scopes::from_static(&["read"]);
        let write = Scopes::from_static(&["write"]);
        assert_eq!(creator.contains(&bounds(&read, &none)), Ok(()));
        assert_eq!(
            creator.contains(&bounds(&write, &none)),
            Err(BoundViolation::Scopes)
        );
    }

    #[test]
    fn expiry() {
        let s = Scopes::from_static(&["read"]);
        let r = Restrictions::default();
        let t = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let expiring = KeyBounds {
            expires_at: Some(t),
            ..bounds(&s, &r)
        };
        let never = bounds(&s, &r);
        assert_eq!(never.contains(&expiring), Ok(()));
        assert_eq!(expiring.contains(&never), Err(BoundViolation::Expiry));
        let later = KeyBounds {
            expires_at: Some(t + time::Duration::SECOND),
            ..expiring
        };
        assert_eq!(expiring.contains(&later), Err(BoundViolation::Expiry));
        assert_eq!(later.contains(&expiring), Ok(()));
    }

    // Pools of patterns and requests that sit on every edge of the matching rules.
    const NETS: &[&str] = &[
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.3/16",
        "10.1.2.0/24",
        "10.1.2.3/32",
        "10.2.0.0/16",
        "0.0.0.0/0",
        "2001:db8::/32",
        "2001:db8:1::/48",
        "::/0",
        // IPv4-mapped ranges, which match IPv4 clients.
        "::ffff:0:0/96",
        "::ffff:10.0.0.0/104",
        "::ffff:10.1.2.3/128",
    ];
    const IPS: &[&str] = &[
        "10.1.2.3",
        "10.1.2.4",
        "10.1.9.9",
        "10.2.0.1",
        "10.0.0.0",
        "192.0.2.1",
        "2001:db8:1::5",
        "2001:db8:2::5",
        "::1",
    ];
    const REFERRERS: &[&str] = &[
        "https://a.example.com",
        "https://a.example.com/",
        "https://a.example.com/*",
        "https://a.example.com*",
        "https://a.example.com/docs",
        "https://a.example.com/docs/",
        "https://a.example.com/docs/*",
        "https://a.example.com/docs*",
        "https://a.example.com?x",
        "https://a.example.com.evil.io",
        "https://b.example.com",
        "*",
    ];
    const REQUEST_REFERRERS: &[&str] = &[
        "https://a.example.com",
        "https://a.example.com/",
        "https://a.example.com//",
        "https://a.example.com/docs",
        "https://a.example.com/docs/",
        "https://a.example.com/docs/x",
        "https://a.example.com/docsx",
        "https://a.example.com/docs?q",
        "https://a.example.com?x",
        "https://a.example.com?x/y",
        "https://a.example.com?y",
        "https://a.example.com.evil.io",
        "https://a.example.com.evil.io/p",
        "https://b.example.com/p",
    ];
    const PATHS: &[&str] = &[
        "/v1/*", "/v1/a", "/v1/a/", "/v1/a/*", "/v1/a*", "/v1/b", "/v2/*", "*",
    ];
    const METHODS: &[Option<&str>] = &[None, Some("GET"), Some("get"), Some("POST")];
    const REQUEST_PATHS: &[&str] = &[
        "/", "/v1/", "/v1/a", "/v1/a/", "/v1/a/1", "/v1/ab", "/v1/b", "/v2/x",
    ];
    const REQUEST_METHODS: &[&str] = &["GET", "POST"];

    fn rules() -> Vec<EndpointRule> {
        let mut rules = Vec::new();
        for path in PATHS {
            for method in METHODS {
                rules.push(EndpointRule {
                    method: method.map(Into::into),
                    path: (*path).to_owned(),
                });
            }
        }
        rules
    }

    /// Whether the restrictions let this request through, by the request path's own check.
    fn allows(r: &Restrictions, method: &str, path: &str, referrer: &str, ip: &str) -> bool {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::REFERER, referrer)
            .body(())
            .unwrap();
        let ip: IpAddr = ip.parse().unwrap();
        r.check(&RequestHead::from(&request), || Some(ip)).is_ok()
    }

    /// Reflexive, transitive and never widening, for every single entry of one kind.
    fn check_entries<T: fmt::Debug>(
        pool: &[T],
        within: impl Fn(&T, &T) -> bool,
        matches: impl Fn(&T) -> Vec<bool>,
    ) {
        let matched: Vec<Vec<bool>> = pool.iter().map(&matches).collect();
        for (x, a) in pool.iter().enumerate() {
            assert!(within(a, a), "not reflexive: {a:?}");
            for (y, b) in pool.iter().enumerate() {
                if !within(a, b) {
                    continue;
                }
                for (request, (outer, inner)) in matched[x].iter().zip(&matched[y]).enumerate() {
                    assert!(
                        !inner || *outer,
                        "{b:?} within {a:?} widens request #{request}"
                    );
                }
                for c in pool {
                    if within(b, c) {
                        assert!(within(a, c), "not transitive: {a:?} ⊇ {b:?} ⊇ {c:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_ip_range_pair() {
        let nets: Vec<ipnet::IpNet> = NETS.iter().map(|n| n.parse().unwrap()).collect();
        check_entries(&nets, ip_range_within, |net| {
            let r = Restrictions {
                ip_ranges: vec![*net],
                ..Restrictions::default()
            };
            IPS.iter()
                .map(|ip| allows(&r, "GET", "/", "x", ip))
                .collect()
        });
    }

    #[test]
    fn every_referrer_pair() {
        check_entries(
            REFERRERS,
            |o, i| referrer_within(o, i),
            |pattern| {
                let r = Restrictions {
                    referrers: vec![(*pattern).to_owned()],
                    ..Restrictions::default()
                };
                REQUEST_REFERRERS
                    .iter()
                    .map(|referrer| allows(&r, "GET", "/", referrer, "10.0.0.1"))
                    .collect()
            },
        );
    }

    #[test]
    fn every_endpoint_pair() {
        check_entries(&rules(), endpoint_within, |rule| {
            let r = Restrictions {
                endpoints: vec![rule.clone()],
                ..Restrictions::default()
            };
            let mut matched = Vec::new();
            for method in REQUEST_METHODS {
                for path in REQUEST_PATHS {
                    matched.push(allows(&r, method, path, "x", "10.0.0.1"));
                }
            }
            matched
        });
    }
}
