//! The daily sync schedule (`[account.sync] daily_at = "03:30"`): when the next scheduled
//! start is, and whether it is due now.
//!
//! PURE: no clock, no I/O; `now` is an argument. Times of day are China time (UTC+08:00,
//! Asia/Shanghai, which has had no daylight saving since 1991), as coupons' dates are:
//! the schedule belongs to the brand's audience, not to where an operator's terminal is
//! (`[display] utc_offset` only changes how times are shown).
//!
//! The rule, once a day: the start is due when it is at or past `daily_at` today and no
//! scheduled start has been recorded for today (the sync run keeps the China date of the
//! last one, `scheduled_on`, carried from run to run). So a restart after today's start
//! does not start it again, and a server that was down at `daily_at` starts it when it
//! comes up later the same day; a day missed entirely is not made up the next morning
//! before `daily_at` (the next start is that day's).

use std::fmt;
use std::str::FromStr;

use crate::local_time::UtcOffset;

/// The zone of `daily_at` and of the recorded day.
pub const ZONE: UtcOffset = UtcOffset::CHINA;

const DAY: i64 = 86_400;

/// A time of day, `HH:MM` (00:00 to 23:59), China time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct DailyAt {
    minutes: u16,
}

/// Why a `daily_at` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a time of day: write \"HH:MM\" between 00:00 and 23:59, China time \
     (e.g. \"03:30\") (请写成 HH:MM，北京时间)"
)]
pub struct DailyAtError(pub String);

impl DailyAt {
    /// `hours:minutes`, if it is a time of day.
    pub fn new(hours: u16, minutes: u16) -> Option<DailyAt> {
        (hours < 24 && minutes < 60).then_some(DailyAt {
            minutes: hours * 60 + minutes,
        })
    }

    /// Seconds after local midnight.
    fn seconds(self) -> i64 {
        i64::from(self.minutes) * 60
    }
}

impl FromStr for DailyAt {
    type Err = DailyAtError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refused = || DailyAtError(s.to_string());
        // Exactly `HH:MM`: one spelling, so `3:30` or `0330` is refused, not guessed at.
        let b = s.as_bytes();
        if b.len() != 5
            || b[2] != b':'
            || !b
                .iter()
                .enumerate()
                .all(|(i, c)| i == 2 || c.is_ascii_digit())
        {
            return Err(refused());
        }
        let two = |i: usize| u16::from(b[i] - b'0') * 10 + u16::from(b[i + 1] - b'0');
        DailyAt::new(two(0), two(3)).ok_or_else(refused)
    }
}

impl TryFrom<String> for DailyAt {
    type Error = DailyAtError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for DailyAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

/// The China date of unix second `now`, `YYYY-MM-DD`: what a scheduled start records.
pub fn day(now: i64) -> String {
    ZONE.date(now)
}

/// When the schedule starts the sync next (unix seconds): today's `daily_at` unless a
/// scheduled start is recorded for today (or a later day: a clock set back), then
/// tomorrow's. At or before `now` means due now.
pub fn next_at(now: i64, daily_at: DailyAt, last_started_day: Option<&str>) -> i64 {
    let local = now.saturating_add(ZONE.seconds());
    let midnight = now - local.rem_euclid(DAY);
    let today = midnight + daily_at.seconds();
    // `YYYY-MM-DD` sorts as the dates do.
    let started_today = last_started_day.is_some_and(|d| d >= day(now).as_str());
    if started_today {
        today + DAY
    } else {
        today
    }
}

/// Whether the scheduled start is due at `now`.
pub fn due(now: i64, daily_at: DailyAt, last_started_day: Option<&str>) -> bool {
    next_at(now, daily_at, last_started_day) <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01 00:00:00 China time (2026-11-30 16:00 UTC).
    const DEC_1: i64 = 1_796_054_400;
    const H: i64 = 3600;
    const M: i64 = 60;

    /// (case, now, daily_at, last scheduled day, due, next_at)
    type Case = (
        &'static str,
        i64,
        &'static str,
        Option<&'static str>,
        bool,
        i64,
    );

    fn at(s: &str) -> DailyAt {
        s.parse().unwrap()
    }

    #[test]
    fn due_once_a_day_from_daily_at_on() {
        let three_thirty = 3 * H + 30 * M;
        let cases: &[Case] = &[
            (
                "never started, before the time",
                DEC_1 + 3 * H,
                "03:30",
                None,
                false,
                DEC_1 + three_thirty,
            ),
            (
                "never started, at the time to the second",
                DEC_1 + three_thirty,
                "03:30",
                None,
                true,
                DEC_1 + three_thirty,
            ),
            (
                "never started, a second before",
                DEC_1 + three_thirty - 1,
                "03:30",
                None,
                false,
                DEC_1 + three_thirty,
            ),
            (
                "yesterday's start, today after the time",
                DEC_1 + 4 * H,
                "03:30",
                Some("2026-11-30"),
                true,
                DEC_1 + three_thirty,
            ),
            (
                "already started today: restarted at 03:31",
                DEC_1 + three_thirty + M,
                "03:30",
                Some("2026-12-01"),
                false,
                DEC_1 + DAY + three_thirty,
            ),
            (
                "already started today, late evening",
                DEC_1 + 23 * H + 59 * M,
                "03:30",
                Some("2026-12-01"),
                false,
                DEC_1 + DAY + three_thirty,
            ),
            (
                "down at 03:30, up at 15:00 the same day",
                DEC_1 + 15 * H,
                "03:30",
                Some("2026-11-30"),
                true,
                DEC_1 + three_thirty,
            ),
            (
                "down all of yesterday: not made up before today's time",
                DEC_1 + H,
                "03:30",
                Some("2026-11-29"),
                false,
                DEC_1 + three_thirty,
            ),
            (
                "just before China midnight, started that day",
                DEC_1 - 1,
                "03:30",
                Some("2026-11-30"),
                false,
                DEC_1 + three_thirty,
            ),
            (
                "just after China midnight: a new day, not yet the time",
                DEC_1 + 1,
                "03:30",
                Some("2026-11-30"),
                false,
                DEC_1 + three_thirty,
            ),
            (
                "UTC's date differs from China's: 01:00 China is 17:00 UTC the day before",
                DEC_1 + H,
                "00:30",
                Some("2026-11-30"),
                true,
                DEC_1 + 30 * M,
            ),
            (
                "midnight itself",
                DEC_1,
                "00:00",
                Some("2026-11-30"),
                true,
                DEC_1,
            ),
            (
                "the last minute of the day",
                DEC_1 + 23 * H + 59 * M,
                "23:59",
                Some("2026-11-30"),
                true,
                DEC_1 + 23 * H + 59 * M,
            ),
            (
                "a clock set back below a recorded day",
                DEC_1 + 4 * H,
                "03:30",
                Some("2026-12-02"),
                false,
                DEC_1 + DAY + three_thirty,
            ),
        ];
        for &(case, now, daily, last, want_due, want_next) in cases {
            assert_eq!(due(now, at(daily), last), want_due, "{case}: due");
            assert_eq!(next_at(now, at(daily), last), want_next, "{case}: next_at");
        }
    }

    #[test]
    fn the_recorded_day_is_chinas() {
        assert_eq!(day(DEC_1 - 1), "2026-11-30");
        assert_eq!(day(DEC_1), "2026-12-01");
        // 2026-12-01 01:00 UTC is 09:00 in China.
        assert_eq!(day(DEC_1 + 9 * H), "2026-12-01");
    }

    #[test]
    fn daily_at_parses_in_one_spelling_and_prints_back() {
        for (text, minutes) in [("00:00", 0), ("03:30", 210), ("23:59", 1439)] {
            let d: DailyAt = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(d.minutes, minutes, "{text}");
            assert_eq!(d.to_string(), text);
        }
        for bad in [
            "", "3:30", "03:3", "0330", "24:00", "03:60", "03:30:00", "03-30", " 03:30", "+3:30",
            "３:30",
        ] {
            assert!(bad.parse::<DailyAt>().is_err(), "{bad:?} was accepted");
        }
    }
}
