//! Constant time, measured with dudect (Welch's t-test on the timings of two input classes;
//! |t| above 5 means the classes are told apart). Run it with `scripts/constant_time.sh`, or
//! `cargo bench --bench constant_time [FILTER]`; `KEYGATE_CT_SAMPLES` sets the samples per
//! class (default 2,000,000) and `KEYGATE_CT_POOL` the distinct inputs per class (default
//! 100,000). Each bench prints its class sizes, then dudect's max |t|. Every sample is timed on
//! the same memory (see `digest_bench` and `verify_bench`), so that the classes differ by their
//! inputs alone.
//!
//! - `digest_*`: the 32-byte digest comparison every lookup ends with (`KeyDigest`'s `==`):
//!   equal vs differing in the first byte, first vs last byte, equal vs unrelated; and the
//!   control, first byte vs first byte, whose |t| is the harness's floor.
//! - `verify_near_miss_vs_unrelated`: a full `Verifier::check_now` over a memory store of
//!   10,000 keys, presenting a stored key with one body character changed (checksum
//!   recomputed, so it reaches the store) vs an unrelated well-formed key, both built by the
//!   same steps. Both are unknown; a key close to a real one must not take a different time.
//!   Its controls: `verify_control_unrelated_vs_unrelated` (two pools of unrelated keys) and
//!   `verify_placement_control` (unrelated keys built in two different ways).
//! - `verify_found_vs_unknown`: a stored key (revoked, so both classes are refused) vs an
//!   unknown one. Expected to differ: see the security evidence page for why that is no leak.

use std::hint::black_box;
use std::sync::Arc;

use dudect_bencher::ctbench::{BenchFn, BenchMetadata, BenchName, BenchOpts, run_benches_console};
use dudect_bencher::rand::{Rng, RngExt};
use dudect_bencher::{BenchRng, Class, CtRunner};
use http::{HeaderName, HeaderValue, Request};
use keygate::Verifier;
use keygate::hash::KeyDigest;
use keygate::key::{Environment, KeyFormat};
use keygate::request::RequestHead;
use keygate::store::{KeyRecord, MemoryStore};
use time::OffsetDateTime;

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Comparisons timed per sample: one 32-byte compare is a few nanoseconds, under the clock's
/// resolution; a fixed batch keeps the signal above it.
const BATCH: usize = 16;
/// Keys in the store for the verify benches.
const STORED: usize = 10_000;
/// Distinct inputs per class (`KEYGATE_CT_POOL`, default 100,000); samples pick among them at
/// random. Each unknown key's digest takes the store's hash map its own number of probe steps:
/// a large pool averages that out, where two small ones can differ by it alone.
fn pool_size() -> usize {
    std::env::var("KEYGATE_CT_POOL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000)
}

fn samples_per_class() -> usize {
    std::env::var("KEYGATE_CT_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000)
}

/// The class of each sample, in random order, about half each.
fn classes(rng: &mut BenchRng) -> Vec<Class> {
    let n = 2 * samples_per_class();
    let classes: Vec<Class> = (0..n)
        .map(|_| {
            if rng.random::<bool>() {
                Class::Left
            } else {
                Class::Right
            }
        })
        .collect();
    let left = classes.iter().filter(|c| matches!(c, Class::Left)).count();
    print!("left {left}, right {} ", n - left);
    classes
}

fn random_digest(rng: &mut BenchRng) -> KeyDigest {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    KeyDigest::from_bytes(bytes)
}

fn with_byte_flipped(d: &KeyDigest, at: usize) -> KeyDigest {
    let mut bytes = *d.as_bytes();
    bytes[at] ^= 0x01;
    KeyDigest::from_bytes(bytes)
}

/// Where the digest benches put the pair they time.
#[repr(align(64))]
struct Aligned([KeyDigest; 2]);

/// Times `BATCH` comparisons of pairs drawn for each class. Each class has its own pool of
/// pairs with the same layout, so that only the bytes compared differ between the classes.
fn digest_bench(
    runner: &mut CtRunner,
    rng: &mut BenchRng,
    left: fn(&KeyDigest, &mut BenchRng) -> KeyDigest,
    right: fn(&KeyDigest, &mut BenchRng) -> KeyDigest,
) {
    let mut pool = |second: fn(&KeyDigest, &mut BenchRng) -> KeyDigest| -> Vec<[KeyDigest; 2]> {
        (0..pool_size())
            .map(|_| {
                let a = random_digest(rng);
                [a, second(&a, rng)]
            })
            .collect()
    };
    let (left, right) = (pool(left), pool(right));
    let mut slot = Aligned([KeyDigest::from_bytes([0; 32]); 2]);
    for class in classes(rng) {
        let pool = match class {
            Class::Left => &left,
            Class::Right => &right,
        };
        // Copied out of the pool into one cache-line-aligned slot (`black_box` keeps the copy
        // from being optimised away): every sample compares the same 64 bytes, so that the
        // classes differ by the bytes compared and not by where their pools sit in memory (a
        // pair that straddles two cache lines loads slower than one that does not).
        slot.0 = pool[rng.random_range(0..pool.len())];
        black_box(&mut slot);
        let [a, b] = &slot.0;
        runner.run_one(class, || {
            let mut equal = 0u32;
            for _ in 0..BATCH {
                equal += u32::from(black_box(a) == black_box(b));
            }
            equal
        });
    }
}

/// The control: both classes differ in the first byte. Whatever |t| this shows is the floor of
/// the harness on this machine (pools, cache, scheduling), not the comparison.
fn digest_control_first_vs_first_byte(runner: &mut CtRunner, rng: &mut BenchRng) {
    digest_bench(
        runner,
        rng,
        |a, _| with_byte_flipped(a, 0),
        |a, _| with_byte_flipped(a, 0),
    );
}

fn digest_equal_vs_first_byte(runner: &mut CtRunner, rng: &mut BenchRng) {
    digest_bench(runner, rng, |a, _| *a, |a, _| with_byte_flipped(a, 0));
}

fn digest_first_vs_last_byte(runner: &mut CtRunner, rng: &mut BenchRng) {
    digest_bench(
        runner,
        rng,
        |a, _| with_byte_flipped(a, 0),
        |a, _| with_byte_flipped(a, 31),
    );
}

fn digest_equal_vs_random(runner: &mut CtRunner, rng: &mut BenchRng) {
    digest_bench(runner, rng, |a, _| *a, |_, rng| random_digest(rng));
}

/// A memory store of `STORED` live keys (all revoked when `revoked`), and the keys.
fn store_of_keys(revoked: bool) -> (Verifier, Vec<String>) {
    let format = KeyFormat::default();
    let store = MemoryStore::new();
    store.reserve(STORED);
    let verifier = Verifier::builder(store.clone()).build();
    let hasher = verifier.scheme().hasher();
    let keys: Vec<String> = (0..STORED)
        .map(|i| {
            let key = format.generate(Environment::Live);
            let mut record =
                KeyRecord::builder(format!("key_{i}"), "acme", hasher.hash(key.expose_secret()))
                    .key(&key)
                    .name("constant time");
            if revoked {
                record = record.revoked_at(OffsetDateTime::UNIX_EPOCH);
            }
            store.put(record.build());
            key.expose_secret().to_owned()
        })
        .collect();
    (verifier, keys)
}

/// `key` with one body character changed and the CRC32 tail recomputed: well-formed, unknown.
fn near_miss(key: &str, rng: &mut BenchRng) -> String {
    let mut bytes = key.as_bytes().to_vec();
    let body = "sk_live_".len()..bytes.len() - 8;
    let at = rng.random_range(body);
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    let split = bytes.len() - 8;
    let crc = crc32fast::hash(&bytes[..split]);
    bytes.truncate(split);
    let mut key = String::from_utf8(bytes).unwrap_or_default();
    key.push_str(&format!("{crc:08x}"));
    key
}

fn request(key: &str) -> Request<()> {
    let mut request = Request::new(());
    if let Ok(value) = key.parse() {
        request.headers_mut().insert(X_API_KEY, value);
    }
    request
}

/// Times one `check_now` per sample, the request drawn from each class's pool.
fn verify_bench(
    runner: &mut CtRunner,
    rng: &mut BenchRng,
    verifier: &Verifier,
    left: &[Request<()>],
    right: &[Request<()>],
    expect: fn(&keygate::AuthError) -> bool,
) {
    // Every request is refused as expected, or the classes do not measure what they claim.
    for r in left.iter().chain(right) {
        match verifier.check_now(&RequestHead::from(r), None) {
            Some(Err(rejection)) if expect(&rejection.error) => {}
            other => panic!("unexpected outcome {:?}", other.map(|o| o.map(|_| ()))),
        }
    }
    let verifier = Arc::new(verifier.clone());
    // One request for every sample: the pool's key is copied into it before the timer starts
    // (the old value freed first, so that the allocator hands the same block back), so that
    // the classes differ by the key presented and not by where their requests sit in memory.
    let mut request = Request::new(());
    for class in classes(rng) {
        let pool = match class {
            Class::Left => left,
            Class::Right => right,
        };
        let key = &pool[rng.random_range(0..pool.len())].headers()[X_API_KEY];
        request.headers_mut().remove(X_API_KEY);
        if let Ok(value) = HeaderValue::from_bytes(key.as_bytes()) {
            request.headers_mut().insert(X_API_KEY, value);
        }
        let head = RequestHead::from(&request);
        runner.run_one(class, || {
            verifier.check_now(black_box(&head), None).is_some()
        });
    }
}

fn verify_near_miss_vs_unrelated(runner: &mut CtRunner, rng: &mut BenchRng) {
    let (verifier, keys) = store_of_keys(false);
    let format = KeyFormat::default();
    // Both classes go through `near_miss`, in turns, so that their requests are allocated by the
    // same steps in the same places: the only difference left is whether the key changed was a
    // stored one. (Built by different steps, the classes differ by their memory placement alone:
    // see `verify_placement_control`.)
    let (mut near, mut unrelated) = (
        Vec::with_capacity(pool_size()),
        Vec::with_capacity(pool_size()),
    );
    for _ in 0..pool_size() {
        near.push(request(&near_miss(
            &keys[rng.random_range(0..keys.len())],
            rng,
        )));
        let fresh = format.generate(Environment::Live);
        unrelated.push(request(&near_miss(fresh.expose_secret(), rng)));
    }
    verify_bench(runner, rng, &verifier, &near, &unrelated, |e| {
        *e == keygate::AuthError::UnknownKey
    });
}

/// A second control: two pools of unrelated unknown keys that differ only in how their
/// requests were built (through `near_miss`'s steps, or straight from `generate`). Nothing
/// about the keys differs; what |t| shows here is the memory placement of the two pools.
fn verify_placement_control(runner: &mut CtRunner, rng: &mut BenchRng) {
    let (verifier, _) = store_of_keys(false);
    let format = KeyFormat::default();
    let (mut rebuilt, mut generated) = (
        Vec::with_capacity(pool_size()),
        Vec::with_capacity(pool_size()),
    );
    for _ in 0..pool_size() {
        let fresh = format.generate(Environment::Live);
        rebuilt.push(request(&near_miss(fresh.expose_secret(), rng)));
        generated.push(request(format.generate(Environment::Live).expose_secret()));
    }
    verify_bench(runner, rng, &verifier, &rebuilt, &generated, |e| {
        *e == keygate::AuthError::UnknownKey
    });
}

/// The control: two pools of unrelated unknown keys. Each key's digest takes the hash map's
/// probe its own number of steps; this shows how far two pools of 1,000 differ by that alone.
fn verify_control_unrelated_vs_unrelated(runner: &mut CtRunner, rng: &mut BenchRng) {
    let (verifier, _) = store_of_keys(false);
    let format = KeyFormat::default();
    let (mut a, mut b) = (
        Vec::with_capacity(pool_size()),
        Vec::with_capacity(pool_size()),
    );
    for _ in 0..pool_size() {
        a.push(request(format.generate(Environment::Live).expose_secret()));
        b.push(request(format.generate(Environment::Live).expose_secret()));
    }
    verify_bench(runner, rng, &verifier, &a, &b, |e| {
        *e == keygate::AuthError::UnknownKey
    });
}

fn verify_found_vs_unknown(runner: &mut CtRunner, rng: &mut BenchRng) {
    let (verifier, keys) = store_of_keys(true);
    let format = KeyFormat::default();
    let found: Vec<Request<()>> = keys.iter().take(pool_size()).map(|k| request(k)).collect();
    let unknown: Vec<Request<()>> = (0..pool_size())
        .map(|_| request(format.generate(Environment::Live).expose_secret()))
        .collect();
    verify_bench(runner, rng, &verifier, &found, &unknown, |e| {
        matches!(
            e,
            keygate::AuthError::UnknownKey | keygate::AuthError::RevokedKey
        )
    });
}

fn main() {
    // `cargo bench` passes `--bench`; the first other argument filters by name.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let benches: [(&'static str, BenchFn); 8] = [
        (
            "digest_control_first_vs_first_byte",
            digest_control_first_vs_first_byte,
        ),
        ("digest_equal_vs_first_byte", digest_equal_vs_first_byte),
        ("digest_first_vs_last_byte", digest_first_vs_last_byte),
        ("digest_equal_vs_random", digest_equal_vs_random),
        (
            "verify_control_unrelated_vs_unrelated",
            verify_control_unrelated_vs_unrelated,
        ),
        (
            "verify_near_miss_vs_unrelated",
            verify_near_miss_vs_unrelated,
        ),
        ("verify_placement_control", verify_placement_control),
        ("verify_found_vs_unknown", verify_found_vs_unknown),
    ];
    let benches = benches
        .into_iter()
        .map(|(name, benchfn)| BenchMetadata {
            name: BenchName(name),
            seed: None,
            benchfn,
        })
        .collect();
    let opts = BenchOpts {
        filter,
        ..BenchOpts::default()
    };
    if let Err(e) = run_benches_console(opts, benches) {
        eprintln!("constant_time: {e}");
        std::process::exit(1);
    }
}
