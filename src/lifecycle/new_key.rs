//! What a new key is made of ([`NewKey`]), what issuing one answers ([`IssuedKey`]), and the
//! caps every new key must keep, whoever asks for it.

use time::OffsetDateTime;

use super::error::ManageError;
use crate::key::{ApiKey, Environment};
use crate::restriction::Restrictions;
use crate::store::KeyInfo;

/// The most scopes one key may hold.
pub const MAX_SCOPES: usize = 64;

/// The longest key name, in characters (after trimming surrounding whitespace).
pub const MAX_NAME_CHARS: usize = 128;

/// The most bytes a key's metadata may take, serialized as JSON. Metadata travels with the key
/// on every lookup, so it is kept small.
pub const MAX_METADATA_BYTES: usize = 4096;

/// The most entries in each of a key's restriction lists (`ip_ranges`, `referrers`,
/// `endpoints`).
pub const MAX_RESTRICTION_ENTRIES: usize = 64;

/// The latest expiry a key may have: 2262-01-01T00:00:00Z (inclusive), the latest instant the
/// stores keep ([`MAX_TIME`](crate::store::MAX_TIME): times are stored as signed 64-bit
/// nanoseconds since 1970, which end in April 2262).
pub const MAX_EXPIRY: OffsetDateTime = crate::store::MAX_TIME;

/// What to issue: name, scopes and options. Built with [`NewKey::new`] and its setters.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Human-readable name: 1 to [`MAX_NAME_CHARS`] characters, without control or
    /// bidirectional-formatting characters.
    pub name: String,
    /// Scope names, at most [`MAX_SCOPES`]; validated against the manager's known scopes.
    pub scopes: Vec<String>,
    /// `live` (default) or `test`.
    pub environment: Environment,
    /// Optional expiry, which must be in the future and no later than [`MAX_EXPIRY`].
    pub expires_at: Option<OffsetDateTime>,
    /// Free-form data handed to the service with the tenant; at most [`MAX_METADATA_BYTES`]
    /// as JSON.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Where and for what the key may be used; at most [`MAX_RESTRICTION_ENTRIES`] entries in
    /// each list.
    pub restrictions: Restrictions,
}

impl NewKey {
    /// A live key with these scopes and no expiry.
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        scopes: impl IntoIterator<Item = S>,
    ) -> Self {
        NewKey {
            name: name.into(),
            scopes: scopes.into_iter().map(Into::into).collect(),
            environment: Environment::Live,
            expires_at: None,
            metadata: Default::default(),
            restrictions: Default::default(),
        }
    }

    /// Sets the environment.
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }

    /// Sets the expiry.
    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets the metadata.
    pub fn metadata(mut self, metadata: serde_json::Map<String, serde_json::Value>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the restrictions.
    pub fn restrictions(mut self, restrictions: Restrictions) -> Self {
        self.restrictions = restrictions;
        self
    }
}

/// A freshly issued (or rotated) key: the secret, shown once, and what was stored.
#[derive(Debug)]
pub struct IssuedKey {
    /// The secret. Hand it to the user once; it cannot be retrieved again.
    pub key: ApiKey,
    /// The stored metadata.
    pub info: KeyInfo,
    /// For a rotation: the key replaced and the end its rotation gave it, so that
    /// [`KeyManager::withdraw`](super::KeyManager::withdraw) can make it active again.
    pub(super) replaced: Option<(KeyInfo, time::OffsetDateTime)>,
}

/// `name` trimmed, if keygate takes it as a key's name: 1 to [`MAX_NAME_CHARS`] characters, no
/// control or formatting characters (invisible ones, bidirectional controls); otherwise
/// [`ManageError::InvalidName`]. Other names that people read in listings and logs (a plan's,
/// an audit actor's) can be held to the same rule.
///
/// ```
/// use keygate::lifecycle::{validate_name, ManageError};
///
/// assert_eq!(validate_name("  Production API ").unwrap(), "Production API");
/// assert!(matches!(validate_name("pro\u{202E}"), Err(ManageError::InvalidName)));
/// assert!(matches!(validate_name("line\nbreak"), Err(ManageError::InvalidName)));
/// ```
pub fn validate_name(name: &str) -> Result<String, ManageError> {
    let name = name.trim();
    // The byte length bounds the character count: no per-character work on a huge name.
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS * 4
        && name.chars().count() <= MAX_NAME_CHARS
        && !name.chars().any(|c| c.is_control() || is_format(c));
    if !valid {
        return Err(ManageError::InvalidName);
    }
    Ok(name.to_owned())
}

/// Format characters (Unicode general category Cf, as of Unicode 15.1): invisible ones
/// (zero-width spaces and joiners, the byte-order mark, tags) and those that reorder how text
/// is displayed (bidirectional controls). In a key's name they could make two names look alike
/// or a listing show something other than what is stored. The table is short and fixed, so it
/// is written out rather than taken from a Unicode crate.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

pub(super) fn validate_expiry(
    at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), ManageError> {
    match at {
        Some(at) if at <= now => Err(ManageError::ExpiryInPast),
        Some(at) if at > MAX_EXPIRY => Err(ManageError::ExpiryTooLate),
        _ => Ok(()),
    }
}

/// Checks the restrictions' sizes and entries, and gives them back with each referrer in the
/// form browsers send (see [`normalize_referrer`]).
pub(super) fn validate_restrictions(mut r: Restrictions) -> Result<Restrictions, ManageError> {
    for (field, len) in [
        ("ip_ranges", r.ip_ranges.len()),
        ("referrers", r.referrers.len()),
        ("endpoints", r.endpoints.len()),
    ] {
        if len > MAX_RESTRICTION_ENTRIES {
            return Err(ManageError::TooManyRestrictions {
                field,
                max: MAX_RESTRICTION_ENTRIES,
            });
        }
    }
    for referrer in &mut r.referrers {
        *referrer = normalize_referrer(referrer)
            .ok_or_else(|| ManageError::InvalidReferrer(referrer.clone()))?;
    }
    for rule in &r.endpoints {
        if !rule.path.starts_with('/') {
            return Err(ManageError::InvalidEndpointPath(rule.path.clone()));
        }
        // A request's method is a token (RFC 9110): anything else matches no request.
        if let Some(method) = &rule.method
            && http::Method::from_bytes(method.as_bytes()).is_err()
        {
            return Err(ManageError::InvalidEndpointMethod(method.clone()));
        }
    }
    Ok(r)
}

/// A referrer pattern in the form browsers send `Referer` and `Origin`, which are compared to
/// it byte for byte: the scheme and host in lowercase, no default port (`:443` for https,
/// `:80` for http). `None` for a pattern nothing could match: a scheme other than http or
/// https, no host (unless a `*` follows at once: `https://*` is any https origin), or a user
/// name before the host.
fn normalize_referrer(pattern: &str) -> Option<String> {
    let (scheme, rest) = pattern.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let end = rest.find(['/', '?', '#', '*']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') || (authority.is_empty() && !tail.starts_with('*')) {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}{tail}"))
}

pub(super) fn validate_metadata(
    metadata: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), ManageError> {
    /// Counts bytes and gives up past the cap, so a huge map is never serialized whole.
    struct Budget(usize);
    impl std::io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self
                .0
                .checked_sub(buf.len())
                .ok_or_else(|| std::io::Error::other("over the metadata cap"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Budget(MAX_METADATA_BYTES), metadata).map_err(|_| {
        ManageError::MetadataTooLarge {
            max: MAX_METADATA_BYTES,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrers_take_the_form_browsers_send() {
        for (given, stored) in [
            ("https://app.example.com", "https://app.example.com"),
            (
                "HTTPS://App.Example.COM/Docs/*",
                "https://app.example.com/Docs/*",
            ),
            ("https://app.example.com:443/x", "https://app.example.com/x"),
            ("http://app.example.com:80", "http://app.example.com"),
            (
                "https://app.example.com:8443",
                "https://app.example.com:8443",
            ),
            ("http://localhost:3000*", "http://localhost:3000*"),
            ("https://*", "https://*"),
            ("https://[::1]:443/", "https://[::1]/"),
        ] {
            assert_eq!(
                normalize_referrer(given).as_deref(),
                Some(stored),
                "{given}"
            );
        }
        for refused in [
            "app.example.com",
            "ftp://app.example.com",
            "https://",
            "https:///path",
            "https://user@app.example.com",
            "*",
            "",
        ] {
            assert_eq!(normalize_referrer(refused), None, "{refused}");
        }
    }
}
