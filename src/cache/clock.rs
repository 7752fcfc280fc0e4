//! A coarse monotonic clock in milliseconds, for the key cache's hit path.
//!
//! A cache hit must check the entry's age. `Instant::now` is a vDSO call of ~20 ns on a TSC
//! clock source and a system call on others (some VMs): on a hit of ~200 ns in all, that alone
//! would take the whole 10 % the cache may add to an in-memory lookup. Here a hit reads one
//! atomic, which a background thread refreshes every [`TICK`]; ages are then up to one tick
//! (plus scheduling delay) short, so an entry may outlive its TTL by that much.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the clock is refreshed.
pub(crate) const TICK: Duration = Duration::from_millis(10);

struct Coarse {
    start: Instant,
    ms: AtomicU64,
    /// Whether the refreshing thread runs; if it could not be started, every read is exact.
    ticking: bool,
}

static CLOCK: OnceLock<Coarse> = OnceLock::new();

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn clock() -> &'static Coarse {
    CLOCK.get_or_init(|| {
        let start = Instant::now();
        let ticking = std::thread::Builder::new()
            .name("keygate-clock".into())
            .spawn(move || {
                // `CLOCK` is set once this closure's caller returns; wait for it.
                let clock = loop {
                    if let Some(c) = CLOCK.get() {
                        break c;
                    }
                    std::thread::sleep(TICK);
                };
                loop {
                    std::thread::sleep(TICK);
                    clock.ms.store(elapsed_ms(clock.start), Ordering::Relaxed);
                }
            })
            .is_ok();
        Coarse {
            start,
            ms: AtomicU64::new(0),
            ticking,
        }
    })
}

/// Milliseconds since the clock started, at most one [`TICK`] (plus scheduling delay) behind.
pub(crate) fn now_ms() -> u64 {
    let c = clock();
    if c.ticking {
        c.ms.load(Ordering::Relaxed)
    } else {
        elapsed_ms(c.start)
    }
}

/// `d` in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
