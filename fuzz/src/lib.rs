//! What keygate's fuzz targets share: a reference renderer of keys, a store that counts its
//! lookups, and a fixture of one verifier over a memory store.
//!
//! The targets compare keygate with small reference models written here from the documented
//! rules, so that a finding is a wrong answer, not only a panic.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use keygate::hash::KeyDigest;
use keygate::key::Environment;
use keygate::scope::Scopes;
use keygate::store::{KeyRecord, KeyStore, Lookup, MemoryStore};

/// Renders `<prefix>_<env>_<body>[crc32]` as the key format documents it, independently of
/// keygate's generator.
pub fn render_key(prefix: &str, env: &str, body: &str, checksum: bool) -> String {
    let mut key = format!("{prefix}_{env}_{body}");
    if checksum {
        let crc = crc32fast::hash(key.as_bytes());
        key.push_str(&format!("{crc:08x}"));
    }
    key
}

/// Lowercase hex of `bytes`, repeated or cut to exactly `len` characters.
pub fn hex_body(bytes: &[u8], len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(len);
    let mut i = 0usize;
    while out.len() < len {
        let b = bytes.get(i % bytes.len().max(1)).copied().unwrap_or(0) ^ (i as u8);
        out.push(HEX[usize::from(b & 0xf)] as char);
        i += 1;
    }
    out
}

/// A default-format (`sk`, 64 hex, checksum) key, deterministic from `seed`.
pub fn default_key(env: Environment, seed: u8) -> String {
    render_key("sk", env.as_str(), &hex_body(&[seed, 0x5a, 0xc3], 64), true)
}

/// A store that counts every lookup, to show that refused credentials never reach it.
#[derive(Clone, Default)]
pub struct CountingStore {
    /// The store answering the lookups.
    pub inner: MemoryStore,
    /// Lookups so far (`find` and `find_now`).
    pub lookups: Arc<AtomicUsize>,
}

impl CountingStore {
    /// The lookups so far.
    pub fn count(&self) -> usize {
        self.lookups.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl KeyStore for CountingStore {
    async fn find(&self, digest: &KeyDigest) -> Lookup {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.inner.find(digest).await
    }

    fn find_now(&self, digest: &KeyDigest) -> Option<Lookup> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.inner.find_now(digest)
    }
}

/// A record for `key` (default format) of tenant `tenant`, scopes `admin`.
pub fn record_for(id: &str, tenant: &str, key: &str, env: Environment) -> KeyRecord {
    let digest = keygate::hash::KeyHasher::default().hash(key);
    KeyRecord::builder(id, tenant, digest)
        .prefix(&key[..8])
        .last4(&key[key.len() - 4..])
        .environment(env)
        .scopes(Scopes::from_static(&["admin"]))
        .build()
}

/// An address from fuzz input: IPv4, IPv6, or IPv4-mapped IPv6 (what an IPv4 client looks
/// like on a `[::]` listener), drawn from a few small ranges so that matches happen often.
pub fn fuzz_ip(kind: u8, bits: u32) -> IpAddr {
    // Few distinct values: ranges and addresses collide, so both outcomes are reached.
    let v4 = std::net::Ipv4Addr::from(match kind % 4 {
        0 => 0x0a00_0000 | (bits & 0x0000_0f0f), // 10.0.x.y
        1 => 0xc000_0200 | (bits & 0x0f),        // 192.0.2.x
        2 => 0xc633_6400 | (bits & 0x0f),        // 198.51.100.x
        _ => bits,
    });
    match (kind >> 2) % 4 {
        0 | 1 => IpAddr::V4(v4),
        2 => IpAddr::V6(v4.to_ipv6_mapped()),
        _ => IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001,
            0x0db8,
            0,
            0,
            0,
            0,
            (bits >> 16) as u16 & 0x0f,
            bits as u16 & 0x0f,
        )),
    }
}

/// A range from fuzz input around [`fuzz_ip`]'s addresses; the prefix length is cut to the
/// family's maximum.
pub fn fuzz_net(kind: u8, bits: u32, prefix: u8) -> IpNet {
    match fuzz_ip(kind, bits) {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, prefix % 33).unwrap_or_default()),
        IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, prefix % 129).unwrap_or_default()),
    }
}

/// Whether `net` contains `ip`, with both sides canonical as keygate documents it (IPv4-mapped
/// IPv6 addresses and ranges are the IPv4 ones).
pub fn canonical_contains(net: &IpNet, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let net = match net {
        IpNet::V6(v6) => match (
            v6.network().to_ipv4_mapped(),
            v6.prefix_len().checked_sub(96),
        ) {
            (Some(v4), Some(len)) => Ipv4Net::new(v4, len).map_or(*net, IpNet::V4),
            _ => *net,
        },
        IpNet::V4(_) => *net,
    };
    net.contains(&ip)
}
