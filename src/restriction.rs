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
    /// a prefix ending in `*`. Compared byte for byte with what the browser sends; they are
    /// stored in that form when a key is issued (lowercase scheme and host, no default port),
    /// and one nothing could match is refused.
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
/// what comes before the `*`. A `GET` rule also allows `HEAD` (servers answer `HEAD` with the
/// `GET` handler). The path is the one the client asked for: under axum's `Router::nest`, the
/// path before the router removed its prefix (`OriginalUri`), not the nested router's.
///
/// A path that a service or a proxy behind the layer could resolve to another path matches no
/// rule: one with a `.` or `..` segment (percent-encoded or not), or an encoded `/` or `\`
/// (`%2F`, `%5C`) or a `\`. `/v1/public/../admin` is not under `/v1/public/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointRule {
    /// `GET`, `POST`, … (any case; an HTTP method name); none (absent) allows every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
    )]
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
            let path = requested_path(head);
            let method = head.method.as_str();
            let allowed = is_plain_path(path)
                && self.endpoints.iter().any(|rule| {
                    rule.method
                        .as_deref()
                        .is_none_or(|m| method_allows(m, method))
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

/// The path the client asked for: axum's `Router::nest` hands nested routers the path
/// without its prefix, and keeps the whole one as `OriginalUri`.
fn requested_path<'a>(head: &RequestHead<'a>) -> &'a str {
    #[cfg(feature = "axum")]
    if let Some(original) = head.extensions.get::<axum::extract::OriginalUri>() {
        return original.0.path();
    }
    head.uri.path()
}

/// Whether a rule's method allows the request's: the same name (any case), or `GET` for
/// `HEAD`.
pub(crate) fn method_allows(rule: &str, method: &str) -> bool {
    rule.eq_ignore_ascii_case(method)
        || (rule.eq_ignore_ascii_case("GET") && method.eq_ignore_ascii_case("HEAD"))
}

/// Whether the path names itself: no `.` or `..` segment, percent-encoded or not, and no
/// encoded `/` or `\` nor `\`, which something behind the layer could resolve to a path the
/// rules were not checked against.
fn is_plain_path(path: &str) -> bool {
    path.split('/').all(|segment| {
        !is_dot_segment(segment)
            && !segment.contains('\\')
            && !contains_ignore_case(segment, "%2f")
            && !contains_ignore_case(segment, "%5c")
    })
}

/// `.` or `..`, each dot written as itself or as `%2E` (any case).
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
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
    fn dot_segments_and_encoded_separators() {
        for plain in [
            "/",
            "/v1/docs",
            "/v1/.well-known",
            "/v1/a..b",
            "/v1/...",
            "/v1/%2e%2e%2e",
            "",
        ] {
            assert!(is_plain_path(plain), "{plain}");
        }
        for resolving in [
            "/v1/..",
            "/v1/.",
            "/v1/./x",
            "/v1/%2e/x",
            "/v1/%2E%2e/x",
            "/v1/.%2E/x",
            "/v1/a%2fb",
            "/v1/a%2Fb",
            "/v1/a%5cb",
            "/v1/a\\b",
        ] {
            assert!(!is_plain_path(resolving), "{resolving}");
        }
    }

    #[test]
    fn a_get_rule_allows_head_only_besides_get() {
        assert!(method_allows("GET", "HEAD") && method_allows("get", "GET"));
        assert!(!method_allows("HEAD", "GET") && !method_allows("GET", "POST"));
    }

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
