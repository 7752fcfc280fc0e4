use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// Wall-clock time in nanoseconds since the Unix epoch, for limits and quota periods.
///
/// Injectable so that tests can cross windows and calendar periods without sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Now, in nanoseconds since 1970-01-01T00:00:00Z.
    fn now_nanos(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_nanos(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            // Seconds and nanoseconds apart: no 128-bit arithmetic on the request path.
            .map_or(0, |d| {
                d.as_secs()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(u64::from(d.subsec_nanos()))
            })
    }
}

/// A clock that moves only when told to; for tests.
///
/// ```
/// use std::time::Duration;
/// use keygate::limit::{Clock, ManualClock};
///
/// let clock = ManualClock::at_unix_secs(1_700_000_000);
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now_nanos(), 1_700_000_090 * 1_000_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `secs` since the epoch.
    pub fn at_unix_secs(secs: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(secs * 1_000_000_000)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            u64::try_from(by.as_nanos()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Sets the clock to `secs` since the epoch.
    pub fn set_unix_secs(&self, secs: u64) {
        self.0.store(secs * 1_000_000_000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Now as a date-time: `clock`'s when one is given, the system's otherwise (read directly, no
/// dynamic call, for the default case on the request path).
pub(crate) fn date_time_now(clock: Option<&dyn Clock>) -> OffsetDateTime {
    match clock {
        None => OffsetDateTime::now_utc(),
        // u64 nanoseconds end in the year 2554, inside the range of `time`: the conversion
        // cannot fail, and the system clock would stand in if it did.
        Some(clock) => OffsetDateTime::from_unix_timestamp_nanos(i128::from(clock.now_nanos()))
            .unwrap_or_else(|_| OffsetDateTime::now_utc()),
    }
}
