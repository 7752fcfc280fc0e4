//! Key restrictions: where a key may be used from, and for what.
//!
//! A key can be limited to client IP ranges, to referrers, and to endpoints. An empty list
//! means "no restriction of that kind".
//!
//! ```
//! use keygate::restriction::{EndpointRule, Restrictions};
//!
//! let r = Restrictions {
//!     ip_ranges: vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
//!     referrers: vec!["https://app.example.com".into()],
//!     endpoints: vec![EndpointRule { method: Some("GET".into()), path: "/v1/documents/*".into() }],
//! };
//! assert!(!r.is_empty());
//! ```

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::request::{RequestHead, canonical_net};

/// The restrictions attached to one key.
///
/// Deserializing refuses unknown fields at every level: a typo such as `ip_range` must not
/// silently give an unrestricted key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(description = "Where and for what a key may be used; an empty list does not restrict.")
)]
pub struct Restrictions {
    /// Client addresses allowed to use the key (CIDR, IPv4 or IPv6; an IPv4-mapped IPv6 range
    /// such as `::ffff:10.0.0.0/104` is the IPv4 range it maps, and an IPv4 client matches
    /// IPv4 ranges however the server's socket sees it).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub ip_ranges: Vec<IpNet>,
    /// Allowed `Referer`/`Origin` values: an exact origin such as `https://app.example.com`, or
    /// a prefix ending in `*`.
    pub referrers: Vec<String>,
    /// Endpoints the key may call.
    #[serde(deserialize_with = "crate::json_object::list")]
    pub endpoints: Vec<EndpointRule>,
}

impl Restrictions {
    /// Whether the key is unrestricted.
    pub fn is_empty(&self) -> bool {
        self.ip_ranges.is_empty() && self.referrers.is_empty() && self.endpoints.is_empty()
    }
}

/// One allowed endpoint: an optional method and a path pattern.
///
/// The pattern matches the path exactly, or, when it ends in `*`, every path that starts with
/// what comes before the `*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointRule {
    /// `GET`, `POST`, …; none (absent) allows every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The path pattern, e.g. `/v1/documents` or `/v1/documents/*`.
    pub path: String,
}

impl Restrictions {
    /// Checks a request against the restrictions; `client_ip` is computed only when the key
    /// has IP ranges. An unknown client address fails an IP restriction (fail closed).
    pub(crate) fn check(
        &self,
        head: &RequestHead<'_>,
        client_ip: impl FnOnce() -> Option<IpAddr>,
    ) -> Result<(), Violation> {
        if !self.ip_ranges.is_empty() {
            // Both sides canonical: an IPv4 client seen on a `[::]` listener as
            // `::ffff:a.b.c.d` is the IPv4 client, and a range written that way is IPv4 too.
            let allowed = client_ip().is_some_and(|ip| {
                let ip = ip.to_canonical();
                self.ip_ranges
                    .iter()
                    .any(|net| canonical_net(*net).contains(&ip))
            });
            if !allowed {
                return Err(Violation::IpAddress);
            }
        }
        if !self.referrers.is_empty() {
            let referrer = head
                .headers
                .get(http::header::REFERER)
                .or_else(|| head.headers.get(http::header::ORIGIN))
                .and_then(|v| v.to_str().ok());
            if !referrer.is_some_and(|r| {
                self.referrers
                    .iter()
                    .any(|pattern| referrer_matches(pattern, r))
            }) {
                return Err(Violation::Referrer);
            }
        }
        if !self.endpoints.is_empty() {
            let path = head.uri.path();
            let method = head.method.as_str();
            let allowed = self.endpoints.iter().any(|rule| {
                rule.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                    && path_matches(&rule.path, path)
            });
            if !allowed {
                return Err(Violation::Endpoint);
            }
        }
        Ok(())
    }
}

/// The kind of key restriction a request violated, carried by
/// [`AuthError::RestrictionViolated`](crate::AuthError::RestrictionViolated).
///
/// ```
/// use keygate::restriction::Violation;
///
/// assert_eq!(Violation::IpAddress.to_string(), "IP address");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The client address is outside the key's allowed ranges.
    IpAddress,
    /// The referrer is not one of the key's allowed referrers.
    Referrer,
    /// The endpoint is not one of the key's allowed endpoints.
    Endpoint,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Violation::IpAddress => "IP address",
            Violation::Referrer => "referrer",
            Violation::Endpoint => "endpoint",
        })
    }
}

/// Whether every client address `inner` lets through, `outer` lets through too: both compared
/// as the request path matches them, IPv4-mapped IPv6 ranges as the IPv4 ranges they map (so
/// `::ffff:0:0/96`, which lets every IPv4 client through, is not inside `::/0`, which lets
/// none through).
pub(crate) fn ip_range_within(outer: &IpNet, inner: &IpNet) -> bool {
    canonical_net(*outer).contains(&canonical_net(*inner))
}

/// `https://app.example.com` matches that origin and any page under it; `https://*.example.com`
/// style wildcards are not supported, a trailing `*` is a prefix match.
fn referrer_matches(pattern: &str, referrer: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        return referrer.starts_with(prefix);
    }
    let pattern = pattern.trim_end_matches('/');
    referrer == pattern
        || referrer
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
}

fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrers_and_paths() {
        assert!(referrer_matches(
            "https://app.example.com",
            "https://app.example.com"
        ));
        assert!(referrer_matches(
            "https://app.example.com",
            "https://app.example.com/page?x=1"
        ));
        assert!(!referrer_matches(
            "https://app.example.com",
            "https://app.example.com.evil.io/"
        ));
        assert!(referrer_matches(
            "https://app.example.com/docs/*",
            "https://app.example.com/docs/a"
        ));
        assert!(path_matches("/v1/documents/*", "/v1/documents/42"));
        assert!(!path_matches("/v1/documents", "/v1/documents/42"));
    }
}
