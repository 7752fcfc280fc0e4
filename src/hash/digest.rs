use std::fmt;
use std::hash::{Hash, Hasher};

use subtle::ConstantTimeEq;

/// The 32-byte digest of a key; what stores index and compare.
///
/// Equality is constant-time: the comparison reads all 32 bytes whatever they hold, folds
/// their differences as four 64-bit words without a branch, and asks `subtle` only whether
/// the fold is zero (`subtle`'s byte-wise compare costs ~40 ns on 32 bytes; a test per word,
/// the four answers combined, passes seven times through its optimisation barrier, the fold
/// once).
// Aligned as four words (its size stays 32): what holds a digest next to bytes (the verifier's
// credential, its pending check) is then moved and compared as whole words, not byte by byte.
#[derive(Clone, Copy)]
#[repr(align(8))]
pub struct KeyDigest([u8; 32]);

/// The text is not 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key digest is 64 hex characters")]
pub struct InvalidDigest;

impl KeyDigest {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyDigest(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex characters (either case), e.g. a SHA-256 exported from another system.
    pub fn from_hex(hex: &str) -> Result<Self, InvalidDigest> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return Err(InvalidDigest);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(KeyDigest(out))
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 0xf)] as char);
        }
        s
    }

    fn words(&self) -> [u64; 4] {
        let mut words = [0u64; 4];
        for (word, chunk) in words.iter_mut().zip(self.0.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            *word = u64::from_ne_bytes(bytes);
        }
        words
    }
}

fn nibble(c: u8) -> Result<u8, InvalidDigest> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(InvalidDigest),
    }
}

impl ConstantTimeEq for KeyDigest {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        let (a, b) = (self.words(), other.words());
        // XOR and OR never branch; `subtle` keeps the one test of the result branch-free.
        let differences = (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]);
        differences.ct_eq(&0)
    }
}

impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for KeyDigest {}

impl Hash for KeyDigest {
    /// Feeds the first 8 bytes only: a digest is already uniformly distributed, and equal
    /// digests have equal first bytes, so this is a valid and cheap hash.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.words()[0]);
    }
}

/// Serializes as its 64 lowercase hex characters ([`KeyDigest::to_hex`]), the whole digest:
/// keep serialized records where the store's own contents may go, not in logs.
///
/// ```
/// use keygate::hash::KeyDigest;
///
/// let digest = KeyDigest::from_bytes([0xab; 32]);
/// let json = serde_json::to_string(&digest).unwrap();
/// assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
/// assert_eq!(serde_json::from_str::<KeyDigest>(&json).unwrap(), digest);
/// ```
impl serde::Serialize for KeyDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

/// Deserializes from 64 hex characters, either case ([`KeyDigest::from_hex`]); anything else
/// is an error naming what a digest must be.
impl<'de> serde::Deserialize<'de> for KeyDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        KeyDigest::from_hex(&hex).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({}…)", &self.to_hex()[..8])
    }
}

/// Hashes a [`KeyDigest`] by taking the first 8 bytes it feeds in.
///
/// A SHA-256 digest is already uniform, so hashing it again (SipHash ~50 ns at 100k keys,
/// foldhash ~17 ns) only costs time. Only for maps whose entries clients cannot choose (the
/// keys a store or a cache of its records holds): there, flooding is not a concern, as a
/// lookup of a crafted digest only probes the service's own, random, entries. A map that
/// clients fill, such as the key cache's record of unknown keys, needs a seeded hasher.
#[derive(Default)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_reads_every_bit() {
        let a = KeyDigest([7; 32]);
        for bit in 0..256 {
            let mut b = [7; 32];
            b[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(a, KeyDigest(b), "bit {bit}");
        }
        assert_eq!(a, KeyDigest([7; 32]));
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let d = KeyDigest([0xab; 32]);
        assert_eq!(KeyDigest::from_hex(&d.to_hex()).unwrap(), d);
        assert_eq!(KeyDigest::from_hex(&d.to_hex().to_uppercase()).unwrap(), d);
        assert!(KeyDigest::from_hex("ab").is_err());
        assert!(KeyDigest::from_hex(&"g".repeat(64)).is_err());
    }
}
