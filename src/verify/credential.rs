use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName};

use crate::error::AuthError;
use crate::key::MalformedKey;

/// Where credentials are read from: an API-key header and `Authorization: Bearer`.
///
/// Exactly one credential is accepted. Two (both headers, or one header repeated) are refused,
/// even when equal: a request that carries two keys is ambiguous and never resolved by picking
/// one. The query string is never read. The key is read in place from the header value, never
/// copied; the header's bytes are `http`'s, freed (not wiped) when the request is done with
/// them.
///
/// ```
/// use keygate::verify::CredentialSource;
///
/// let source = CredentialSource::default()
///     .with_api_key_header(http::HeaderName::from_static("x-acme-key"))
///     .with_bearer(false);
/// assert_eq!(source.api_key_header().as_str(), "x-acme-key");
/// ```
#[derive(Debug, Clone)]
pub struct CredentialSource {
    api_key_header: HeaderName,
    bearer: bool,
}

impl Default for CredentialSource {
    fn default() -> Self {
        CredentialSource {
            api_key_header: HeaderName::from_static("x-api-key"),
            bearer: true,
        }
    }
}

impl CredentialSource {
    /// Reads keys from this header instead of `x-api-key`.
    pub fn with_api_key_header(mut self, name: HeaderName) -> Self {
        self.api_key_header = name;
        self
    }

    /// Whether `Authorization: Bearer <key>` is read (default on).
    pub fn with_bearer(mut self, bearer: bool) -> Self {
        self.bearer = bearer;
        self
    }

    /// The API-key header.
    pub fn api_key_header(&self) -> &HeaderName {
        &self.api_key_header
    }

    /// Whether `Authorization: Bearer` is read.
    pub fn reads_bearer(&self) -> bool {
        self.bearer
    }

    /// Removes the credential's header, so the inner service never sees the key. Called on
    /// admitted requests only, which carry exactly one credential header (a second one, or an
    /// `Authorization` of another scheme next to the API-key header, is refused): when the
    /// API-key header was it, there is no `Authorization` to look for.
    pub(crate) fn strip(&self, headers: &mut HeaderMap) {
        if headers.remove(&self.api_key_header).is_none() && self.bearer {
            headers.remove(&AUTHORIZATION);
        }
    }

    /// Finds the one credential. `max_len` bounds the work done on hostile values: anything
    /// longer cannot be a key.
    // Always inlined into the verifier's `start` (see its `accept_key`).
    #[inline(always)]
    pub(crate) fn extract<'h>(
        &self,
        headers: &'h HeaderMap,
        max_len: usize,
    ) -> Result<&'h [u8], AuthError> {
        let mut found: Option<&[u8]> = None;
        for value in headers.get_all(&self.api_key_header) {
            if found.replace(value.as_bytes()).is_some() {
                return Err(AuthError::MultipleCredentials);
            }
        }
        if self.bearer {
            // By reference, as the API-key header: one instance of `http`'s lookup code for
            // both, fewer lines of code run a request.
            for value in headers.get_all(&AUTHORIZATION) {
                let token = bearer_token(value.as_bytes()).ok_or(if found.is_some() {
                    AuthError::MultipleCredentials
                } else {
                    AuthError::UnsupportedScheme
                })?;
                if found.replace(token).is_some() {
                    return Err(AuthError::MultipleCredentials);
                }
            }
        }
        let value = found.ok_or(AuthError::MissingCredential)?;
        if value.is_empty() || value.len() > max_len {
            return Err(AuthError::Malformed(MalformedKey::Length));
        }
        Ok(value)
    }
}

/// The token of `Bearer <token>`, scheme case-insensitive, surrounding spaces ignored; `None`
/// for any other scheme. An empty token is returned as empty, to be refused as malformed.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = match value.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => value.split_at(i),
        None => (value, &[][..]),
    };
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}
