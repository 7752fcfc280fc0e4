use super::environment::Environment;
use super::format::{KeyFormat, ParsedKey};
use super::secret::ApiKey;
use crate::hash::{KeyDigest, KeyHasher};

/// How a service's keys look and how they are hashed: what the
/// [`Verifier`](crate::Verifier) that checks keys and the
/// [`KeyManager`](crate::lifecycle::KeyManager) that issues them must agree on.
///
/// Build one scheme and hand it to both. A key issued under one scheme is not found under
/// another: a different prefix fails the format check, a different pepper gives another digest.
///
/// ```
/// use keygate::hash::KeyHasher;
/// use keygate::key::{Environment, KeyFormat, KeyScheme};
///
/// let scheme = KeyScheme::new(
///     KeyFormat::new("ak").unwrap(),
///     KeyHasher::hmac_sha256(b"a secret kept in the service's config".to_vec()),
/// );
/// let (key, digest) = scheme.generate(Environment::Live);
/// assert!(key.expose_secret().starts_with("ak_live_"));
/// // What a verifier computes from the presented key is what was stored when it was issued.
/// let presented = scheme.format().parse(key.expose_secret()).unwrap();
/// assert_eq!(scheme.digest(&presented), digest);
/// ```
#[derive(Debug, Clone, Default)]
pub struct KeyScheme {
    format: KeyFormat,
    hasher: KeyHasher,
}

impl KeyScheme {
    /// Keys of `format`, hashed by `hasher`. [`KeyScheme::default`] is the default format
    /// (`sk`, 256 bits, checksum) with plain SHA-256.
    pub fn new(format: KeyFormat, hasher: KeyHasher) -> Self {
        KeyScheme { format, hasher }
    }

    /// The key format.
    #[inline]
    pub fn format(&self) -> &KeyFormat {
        &self.format
    }

    /// The hasher.
    #[inline]
    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// A fresh key of `environment` and the digest a store keeps for it.
    ///
    /// # Panics
    /// If the operating system cannot provide randomness (see [`KeyFormat::generate`]).
    pub fn generate(&self, environment: Environment) -> (ApiKey, KeyDigest) {
        let key = self.format.generate(environment);
        let digest = self.hasher.hash(key.expose_secret());
        (key, digest)
    }

    /// The digest of a presented key, to look up in a store.
    #[inline]
    pub fn digest(&self, key: &ParsedKey<'_>) -> KeyDigest {
        self.hasher.hash(key.expose_secret())
    }
}
