use std::fmt;

use http::{Extensions, HeaderMap, Method, Request, Uri, Version, request::Parts};

/// A borrowed view of a request head: what the verifier reads.
///
/// Its `Debug` output redacts every value that may carry a credential (the rule is on the
/// `Debug` impl below), so that a head can be logged from [`AuthLayer::public_when`](crate::AuthLayer::public_when) or
/// [`ScopePolicy::custom`](crate::scope::ScopePolicy::custom). The fields themselves are the
/// request's own: `head.headers` printed on its own shows every value, keys included.
#[derive(Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The HTTP version (gRPC calls are HTTP/2).
    pub version: Version,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions, where servers put the peer address.
    pub extensions: &'a Extensions,
}

impl<'a, B> From<&'a Request<B>> for RequestHead<'a> {
    fn from(req: &'a Request<B>) -> Self {
        RequestHead {
            method: req.method(),
            uri: req.uri(),
            version: req.version(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }
}

impl<'a> From<&'a Parts> for RequestHead<'a> {
    fn from(parts: &'a Parts) -> Self {
        RequestHead {
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            extensions: &parts.extensions,
        }
    }
}

/// Shown instead of a value that may be a credential.
const REDACTED: &str = "<redacted>";

/// Prints the head with every value that may be a credential replaced by `"<redacted>"`: the
/// headers `authorization`, `proxy-authorization`, `x-api-key`, `cookie` and every header whose
/// name contains `key`, `token`, `secret`, `auth`, `cookie`, `credential` or `password`; query
/// parameters with such names; and the user information of the URI. `Debug` cannot know which
/// header a [`CredentialSource`](crate::verify::CredentialSource) reads, hence the rule by name: a
/// custom key header should have a name it catches (`x-acme-key` does).
///
/// ```
/// use keygate::request::RequestHead;
///
/// let request = http::Request::get("/v1/things?api_key=sk_live_123&page=2")
///     .header("x-api-key", "sk_live_123")
///     .header("authorization", "Bearer sk_live_123")
///     .header("accept", "application/json")
///     .body(())
///     .unwrap();
/// let shown = format!("{:?}", RequestHead::from(&request));
/// assert!(!shown.contains("sk_live_123"));
/// assert!(shown.contains(r#""x-api-key": "<redacted>""#));
/// assert!(shown.contains(r#""accept": "application/json""#));
/// assert!(shown.contains("/v1/things?api_key=<redacted>&page=2"));
/// ```
impl fmt::Debug for RequestHead<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHead")
            .field("method", self.method)
            .field("uri", &RedactedUri(self.uri))
            .field("version", &self.version)
            .field("headers", &RedactedHeaders(self.headers))
            .field("extensions", self.extensions)
            .finish()
    }
}

/// Whether a header or query parameter of this name may carry a credential.
fn is_sensitive(name: &str) -> bool {
    const PARTS: [&str; 7] = [
        "key",
        "token",
        "secret",
        "auth",
        "cookie",
        "credential",
        "password",
    ];
    let name = name.to_ascii_lowercase();
    PARTS.iter().any(|part| name.contains(part))
}

struct RedactedHeaders<'a>(&'a HeaderMap);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if is_sensitive(name.as_str()) {
                map.entry(name, &REDACTED);
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}

struct RedactedUri<'a>(&'a Uri);

impl fmt::Debug for RedactedUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = self.0;
        if let Some(scheme) = uri.scheme_str() {
            write!(f, "{scheme}://")?;
        }
        if let Some(authority) = uri.authority() {
            match authority.as_str().rsplit_once('@') {
                Some((_, host)) => write!(f, "{REDACTED}@{host}")?,
                None => f.write_str(authority.as_str())?,
            }
        }
        f.write_str(uri.path())?;
        let Some(query) = uri.query() else {
            return Ok(());
        };
        f.write_str("?")?;
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            match pair.split_once('=') {
                Some((name, _)) if is_sensitive(name) => write!(f, "{name}={REDACTED}")?,
                _ => f.write_str(pair)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_credentials_everywhere() {
        let secret = "sk_live_0123456789abcdef";
        let request = Request::post(format!(
            "https://user:{secret}@api.example.com/v1/x?page=1&access_token={secret}&flag"
        ))
        .header("x-api-key", secret)
        .header("authorization", format!("Bearer {secret}"))
        .header("proxy-authorization", format!("Basic {secret}"))
        .header("cookie", format!("session={secret}"))
        .header("x-acme-key", secret)
        .header("x-client-secret", secret)
        .header("x-request-id", "42")
        .body(())
        .unwrap();
        let shown = format!("{:?}", RequestHead::from(&request));
        assert!(!shown.contains(secret), "{shown}");
        // What follows is the extensions, as `http` prints them.
        assert!(
            shown.starts_with(
                "RequestHead { method: POST, \
             uri: https://<redacted>@api.example.com/v1/x?page=1&access_token=<redacted>&flag, \
             version: HTTP/1.1, headers: {\"x-api-key\": \"<redacted>\", \
             \"authorization\": \"<redacted>\", \"proxy-authorization\": \"<redacted>\", \
             \"cookie\": \"<redacted>\", \"x-acme-key\": \"<redacted>\", \
             \"x-client-secret\": \"<redacted>\", \"x-request-id\": \"42\"}, extensions: "
            ),
            "{shown}"
        );
    }
}
