use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::digest::KeyDigest;

/// Turns a presented key into its [`KeyDigest`].
///
/// Every store and every verifier of one service must use the same hasher: a key issued with a
/// pepper is only found by a verifier that has the same pepper.
///
/// The hashing state, which holds the end of the key (and, with a pepper, the keyed HMAC state
/// derived from it), is wiped when it is dropped: after every [`hash`](Self::hash), and when
/// the hasher itself goes. Values that Rust moves on the stack may leave copies that no drop
/// sees; the pepper you pass in is yours to wipe.
#[derive(Clone)]
pub struct KeyHasher {
    kind: Kind,
}

// sha2 and hmac are built with their `zeroize` feature, so that their states wipe themselves
// on drop: SHA-256 whole, and HMAC-SHA-256 part by part (its inner and outer SHA-256 states and
// its block buffer; hmac does not mark the whole generic type). This stops compiling if the
// feature is ever lost.
const _: () = {
    use hmac::digest::block_api::{Buffer, CoreProxy};
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop + ?Sized>() {}
    let _ = wiped_on_drop::<Sha256>;
    let _ = wiped_on_drop::<<Sha256 as CoreProxy>::Core>;
    let _ = wiped_on_drop::<Buffer<<Hmac<Sha256> as CoreProxy>::Core>>;
};

#[derive(Clone)]
enum Kind {
    Sha256,
    // The keyed state is computed once; cloning it per key skips re-hashing the pepper.
    Hmac(Box<Hmac<Sha256>>),
}

impl KeyHasher {
    /// Plain SHA-256 of the whole key. Keys carry 128 bits or more of entropy, so a fast hash
    /// is safe here, unlike for passwords.
    pub fn sha256() -> Self {
        KeyHasher { kind: Kind::Sha256 }
    }

    /// HMAC-SHA-256 keyed with `pepper`, a server-side secret that never goes into the store.
    pub fn hmac_sha256(pepper: impl AsRef<[u8]>) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        #[allow(clippy::expect_used)]
        let mac =
            Hmac::<Sha256>::new_from_slice(pepper.as_ref()).expect("HMAC takes any key length");
        KeyHasher {
            kind: Kind::Hmac(Box::new(mac)),
        }
    }

    /// Whether the hasher is keyed with a pepper (HMAC-SHA-256), rather than plain SHA-256.
    ///
    /// A digest made elsewhere with plain SHA-256 can only be matched by a plain hasher: keys
    /// imported by their SHA-256 ([`KeyManager::import`](crate::lifecycle::KeyManager::import))
    /// need one.
    ///
    /// ```
    /// use keygate::hash::KeyHasher;
    /// assert!(!KeyHasher::sha256().is_peppered());
    /// assert!(KeyHasher::hmac_sha256(b"pepper").is_peppered());
    /// ```
    pub fn is_peppered(&self) -> bool {
        matches!(self.kind, Kind::Hmac(_))
    }

    /// The digest of `key`.
    pub fn hash(&self, key: &str) -> KeyDigest {
        let bytes: [u8; 32] = match &self.kind {
            Kind::Sha256 => Sha256::digest(key.as_bytes()).into(),
            Kind::Hmac(mac) => hmac(mac, key),
        };
        KeyDigest::from_bytes(bytes)
    }
}

/// HMAC-SHA-256 of `key` from the keyed state, in a function of its own: a service runs one
/// of the two hashes, and only its code is brought in per request.
#[inline(never)]
fn hmac(mac: &Hmac<Sha256>, key: &str) -> [u8; 32] {
    let mut mac = mac.clone();
    mac.update(key.as_bytes());
    mac.finalize().into_bytes().into()
}

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher::sha256()
    }
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Sha256 => f.write_str("KeyHasher(sha256)"),
            Kind::Hmac(_) => f.write_str("KeyHasher(hmac-sha256, pepper redacted)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        let d = KeyHasher::sha256().hash("abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hmac_known_answer() {
        // RFC 4231 test case 2.
        let d = KeyHasher::hmac_sha256(b"Jefe").hash("what do ya want for nothing?");
        assert_eq!(
            d.to_hex(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(!format!("{:?}", KeyHasher::hmac_sha256(b"Jefe")).contains("Jefe"));
    }
}
