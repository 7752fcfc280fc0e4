use time::{Date, Month, OffsetDateTime};

use super::QuotaPeriod;

const DAY: u64 = 86_400;

impl QuotaPeriod {
    /// The period that contains `unix_secs`: its start and end (exclusive), in Unix seconds,
    /// UTC. The same calendar days and months as [`MemoryLimiter`](super::MemoryLimiter)'s.
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
        match self {
            QuotaPeriod::Day => (day_start, day_start + DAY),
            // Past the year 9999, where `time` ends, a month is counted as the day it is in.
            QuotaPeriod::Month => month(unix_secs).unwrap_or((day_start, day_start + DAY)),
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

fn month(unix_secs: u64) -> Option<(u64, u64)> {
    let date = OffsetDateTime::from_unix_timestamp(i64::try_from(unix_secs).ok()?)
        .ok()?
        .date();
    let first = Date::from_calendar_date(date.year(), date.month(), 1).ok()?;
    let next = match date.month() {
        Month::December => Date::from_calendar_date(date.year() + 1, Month::January, 1),
        m => Date::from_calendar_date(date.year(), m.next(), 1),
    }
    .ok()?;
    let secs = |d: Date| u64::try_from(d.midnight().assume_utc().unix_timestamp()).ok();
    Some((secs(first)?, secs(next)?))
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
}
