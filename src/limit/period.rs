use super::QuotaPeriod;

const DAY: u64 = 86_400;
/// 9999-12-01T00:00:00Z: from here on a month is counted as the day it is in (see
/// [`QuotaPeriod::bounds`]).
const LAST_MONTH: u64 = 253_399_622_400;

impl QuotaPeriod {
    /// The period that contains `unix_secs`: its start and end (exclusive), in Unix seconds,
    /// UTC. The same calendar days and months as [`MemoryLimiter`](super::MemoryLimiter)'s.
    /// Never panics: the last day a `u64` reaches is cut short, ending at `u64::MAX`.
    ///
    /// ```
    /// use keygate::limit::QuotaPeriod;
    ///
    /// // 2024-02-15T00:00:00Z: February 2024, 29 days.
    /// assert_eq!(QuotaPeriod::Month.bounds(1_707_955_200), (1_706_745_600, 1_709_251_200));
    /// assert_eq!(QuotaPeriod::Day.bounds(1_707_955_201), (1_707_955_200, 1_708_041_600));
    /// ```
    pub fn bounds(self, unix_secs: u64) -> (u64, u64) {
        let day_start = unix_secs - unix_secs % DAY;
        // The last day u64 holds is cut short at u64::MAX: no input overflows.
        let day_end = day_start.saturating_add(DAY);
        match self {
            QuotaPeriod::Day => (day_start, day_end),
            // From December 9999 on, a month is counted as the day it is in: the calendar
            // keygate used first ended with the year 9999, and ledgers already hold its periods.
            QuotaPeriod::Month if unix_secs >= LAST_MONTH => (day_start, day_end),
            QuotaPeriod::Month => month(unix_secs),
        }
    }

    /// The name stored with a period's usage: `"day"` or `"month"`.
    ///
    /// ```
    /// assert_eq!(keygate::limit::QuotaPeriod::Month.as_str(), "month");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::Day => "day",
            QuotaPeriod::Month => "month",
        }
    }
}

/// One calendar period of a quota, as the limiters keep it: its kind and bounds (Unix seconds,
/// end exclusive).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Period {
    pub(super) kind: QuotaPeriod,
    pub(super) start: u64,
    pub(super) end: u64,
}

impl Period {
    /// The period of `kind` that contains `unix_secs`.
    pub(super) fn containing(kind: QuotaPeriod, unix_secs: u64) -> Period {
        let (start, end) = kind.bounds(unix_secs);
        Period { kind, start, end }
    }

    /// Whether `unix_secs` falls in this period.
    pub(super) fn contains(&self, unix_secs: u64) -> bool {
        self.start <= unix_secs && unix_secs < self.end
    }

    /// Whether this is the period of `kind` that contains `unix_secs`: if not, the quota's
    /// count starts again (a new period, or another kind of period).
    pub(super) fn is_current(&self, kind: QuotaPeriod, unix_secs: u64) -> bool {
        self.kind == kind && self.contains(unix_secs)
    }

    /// Whether a quota of `kind` counted in this period still counts against it at
    /// `unix_secs`: the same kind, not ended. A clock stepped back before its start keeps
    /// counting against it, so that stepping back over a boundary and forward again does not
    /// start the count over twice.
    pub(super) fn still_counts(&self, kind: QuotaPeriod, unix_secs: u64) -> bool {
        self.kind == kind && unix_secs < self.end
    }
}

/// The calendar month (UTC) that contains `unix_secs`: its first second and the next month's.
fn month(unix_secs: u64) -> (u64, u64) {
    let (y, m) = civil_from_days(unix_secs / DAY);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (days_from_civil(y, m) * DAY, days_from_civil(ny, nm) * DAY)
}

/// Year and month of a day count since 1970-01-01 (H. Hinnant's civil calendar algorithm).
fn civil_from_days(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m)
}

/// Days since 1970-01-01 of the first of month `m` of year `y`.
fn days_from_civil(y: u64, m: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_periods() {
        // 2023-12-31T23:59:59 → December 2023 and its last day.
        assert_eq!(
            QuotaPeriod::Month.bounds(1_704_067_199),
            (1_701_388_800, 1_704_067_200)
        );
        assert_eq!(
            QuotaPeriod::Day.bounds(1_704_067_199),
            (1_703_980_800, 1_704_067_200)
        );
        // The first second of a month starts it.
        assert_eq!(
            QuotaPeriod::Month.bounds(1_704_067_200),
            (1_704_067_200, 1_706_745_600)
        );
    }

    /// The last second u64 can hold: no overflow, and a period that ends where u64 does.
    #[test]
    fn the_last_second_has_bounds() {
        let day_start = u64::MAX - u64::MAX % DAY;
        for kind in [QuotaPeriod::Day, QuotaPeriod::Month] {
            assert_eq!(kind.bounds(u64::MAX), (day_start, u64::MAX));
            assert_eq!(kind.bounds(day_start), (day_start, u64::MAX));
        }
        // The day before ends where the last one starts.
        assert_eq!(
            QuotaPeriod::Day.bounds(day_start - 1),
            (day_start - DAY, day_start)
        );
    }

    /// The month arithmetic against the `time` crate's calendar, from 1970 to the last month
    /// counted as a month: samples a little over 7 days and 8 hours apart (so that over the
    /// years they fall on every day of the month and every hour), and each month's last second.
    #[test]
    fn months_agree_with_the_time_crate() {
        use time::{Date, Month, OffsetDateTime};
        let expected = |secs: u64| {
            let date = OffsetDateTime::from_unix_timestamp(secs as i64)
                .unwrap()
                .date();
            let first = Date::from_calendar_date(date.year(), date.month(), 1).unwrap();
            let next = match date.month() {
                Month::December => Date::from_calendar_date(date.year() + 1, Month::January, 1),
                m => Date::from_calendar_date(date.year(), m.next(), 1),
            }
            .unwrap();
            let secs = |d: Date| d.midnight().assume_utc().unix_timestamp() as u64;
            (secs(first), secs(next))
        };
        let mut secs = 0;
        while secs < LAST_MONTH {
            let (start, end) = QuotaPeriod::Month.bounds(secs);
            assert_eq!((start, end), expected(secs), "at {secs}");
            assert_eq!(QuotaPeriod::Month.bounds(end - 1), (start, end));
            secs += 90_001 * 7 + 3_599;
        }
        // From December 9999, a day.
        assert_eq!(
            QuotaPeriod::Month.bounds(LAST_MONTH + 5),
            (LAST_MONTH, LAST_MONTH + DAY)
        );
    }
}
