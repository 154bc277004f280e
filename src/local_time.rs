//! Times for people: unix seconds shown as calendar dates and date-times at a fixed offset
//! from UTC (`[display] utc_offset`, China time by default).
//!
//! PURE: no clock, no I/O. The store, the admin API and the `_at` fields of JSON keep unix
//! seconds, which machines compare and convert; listings, CSV and messages meant to be read
//! by a person go through here. A fixed offset rather than a zone database: China, where
//! these brands' audiences are, has had no daylight saving since 1991, and an offset needs
//! neither a crate nor tz files on the server. An operator elsewhere sets their own offset.

use std::fmt;
use std::str::FromStr;

/// An offset from UTC in whole minutes, within the −12:00 … +14:00 that real zones use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct UtcOffset {
    minutes: i32,
}

/// Why a `utc_offset` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an offset from UTC: write +HH:MM or -HH:MM between -12:00 and +14:00 \
     (e.g. \"+08:00\" for China)"
)]
pub struct OffsetError(pub String);

impl UtcOffset {
    /// China Standard Time, UTC+08:00: the default.
    pub const CHINA: UtcOffset = UtcOffset { minutes: 8 * 60 };
    pub const UTC: UtcOffset = UtcOffset { minutes: 0 };

    /// An offset of `minutes` east of UTC (negative: west).
    pub fn from_minutes(minutes: i32) -> Option<UtcOffset> {
        (-12 * 60..=14 * 60)
            .contains(&minutes)
            .then_some(UtcOffset { minutes })
    }

    pub fn seconds(self) -> i64 {
        i64::from(self.minutes) * 60
    }

    /// The local calendar date of unix second `ts`, as `YYYY-MM-DD`.
    pub fn date(self, ts: i64) -> String {
        let (y, m, d) = civil_from_days(self.local(ts).div_euclid(86_400));
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// The local date-time of unix second `ts`, as `YYYY-MM-DD HH:MM:SS`: the form Excel
    /// and LibreOffice read as a date-time, and sorted as text it sorts by time.
    pub fn date_time(self, ts: i64) -> String {
        let secs = self.local(ts).rem_euclid(86_400);
        format!(
            "{} {:02}:{:02}:{:02}",
            self.date(ts),
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }

    /// The local day of unix second `ts`: days since 1970-01-01 at this offset (reports
    /// count per local day: a Double-11 sale starts at midnight China time, not UTC).
    pub fn day(self, ts: i64) -> i64 {
        self.local(ts).div_euclid(86_400)
    }

    /// Local seconds: saturating, so no stored value can overflow the arithmetic.
    fn local(self, ts: i64) -> i64 {
        ts.saturating_add(self.seconds())
    }
}

/// Beside every `…_at` field of unix seconds in a JSON value (at any depth), a `…_at_local`
/// with its local date-time at `zone`: people reading `--json` output get both, and
/// machines keep the number.
pub fn add_local_times(value: &mut serde_json::Value, zone: UtcOffset) {
    match value {
        serde_json::Value::Object(map) => {
            let local: Vec<(String, String)> = map
                .iter()
                .filter(|(k, _)| k.ends_with("_at"))
                .filter_map(|(k, v)| Some((format!("{k}_local"), zone.date_time(v.as_i64()?))))
                .collect();
            for v in map.values_mut() {
                add_local_times(v, zone);
            }
            map.extend(local.into_iter().map(|(k, v)| (k, v.into())));
        }
        serde_json::Value::Array(items) => {
            for v in items {
                add_local_times(v, zone);
            }
        }
        _ => {}
    }
}

impl Default for UtcOffset {
    fn default() -> Self {
        UtcOffset::CHINA
    }
}

impl FromStr for UtcOffset {
    type Err = OffsetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refused = || OffsetError(s.to_string());
        if s == "Z" {
            return Ok(UtcOffset::UTC);
        }
        // Exactly `±HH:MM`: one spelling, so a typo such as `8:00` or `+0800` is refused
        // rather than read some other way.
        let b = s.as_bytes();
        if b.len() != 6 || b[3] != b':' {
            return Err(refused());
        }
        let sign = match b[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return Err(refused()),
        };
        let number = |part: &[u8]| -> Option<i32> {
            part.iter().try_fold(0i32, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + i32::from(c - b'0'))
            })
        };
        let (Some(hours), Some(minutes)) = (number(&b[1..3]), number(&b[4..6])) else {
            return Err(refused());
        };
        if minutes >= 60 {
            return Err(refused());
        }
        UtcOffset::from_minutes(sign * (hours * 60 + minutes)).ok_or_else(refused)
    }
}

impl TryFrom<String> for UtcOffset {
    type Error = OffsetError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minutes < 0 { '-' } else { '+' };
        let m = self.minutes.abs();
        write!(f, "{sign}{:02}:{:02}", m / 60, m % 60)
    }
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// proleptic Gregorian).
/// A day number (days since 1970-01-01) as `YYYY-MM-DD`.
pub fn day_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD` as a day number (days since 1970-01-01); `None` if it is not a real date.
pub fn parse_day(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let mut next = |len: usize| {
        parts
            .next()
            .filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<i64>().ok())
    };
    let (y, m, d) = (next(4)?, next(2)?, next(2)?);
    let day = days_from_civil(y, m, d);
    (civil_from_days(day) == (y, m, d)).then_some(day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_at_offsets() {
        let at = |s: &str| s.parse::<UtcOffset>().unwrap();
        // (case, offset, unix seconds, local date-time)
        let cases = [
            ("epoch in UTC", "+00:00", 0, "1970-01-01 00:00:00"),
            ("epoch in China", "+08:00", 0, "1970-01-01 08:00:00"),
            ("before the epoch", "+00:00", -1, "1969-12-31 23:59:59"),
            (
                "west of UTC, previous day",
                "-05:00",
                0,
                "1969-12-31 19:00:00",
            ),
            (
                "half-hour offset west",
                "-03:30",
                1_796_054_400,
                "2026-11-30 12:30:00",
            ),
            (
                "China, last second of a day",
                "+08:00",
                1_796_054_399,
                "2026-11-30 23:59:59",
            ),
            (
                "China, midnight",
                "+08:00",
                1_796_054_400,
                "2026-12-01 00:00:00",
            ),
            ("India", "+05:30", 1_796_054_400, "2026-11-30 21:30:00"),
            (
                "furthest east crosses the day",
                "+14:00",
                1_796_032_800,
                "2026-12-01 00:00:00",
            ),
            (
                "furthest west",
                "-12:00",
                1_796_054_400,
                "2026-11-30 04:00:00",
            ),
            ("leap day", "+08:00", 1_709_136_000, "2024-02-29 00:00:00"),
            (
                "new year west of UTC",
                "-08:00",
                1_798_761_600,
                "2026-12-31 16:00:00",
            ),
        ];
        for (case, offset, ts, want) in cases {
            assert_eq!(at(offset).date_time(ts), want, "{case}: {offset} {ts}");
            assert_eq!(at(offset).date(ts), want[..10], "{case}: date");
        }
    }

    #[test]
    fn json_gets_local_times_beside_unix_seconds() {
        let mut v = serde_json::json!({
            "name": "x",
            "started_at": 1_796_054_400,
            "finished_at": null,
            "jobs": [{ "sent_at": 0, "count_at_most": "n" }],
        });
        add_local_times(&mut v, UtcOffset::CHINA);
        assert_eq!(v["started_at"], 1_796_054_400, "the number stays");
        assert_eq!(v["started_at_local"], "2026-12-01 00:00:00");
        assert!(
            v.get("finished_at_local").is_none(),
            "null has no local time"
        );
        assert_eq!(v["jobs"][0]["sent_at_local"], "1970-01-01 08:00:00");
        assert!(v["jobs"][0].get("count_at_most_local").is_none());
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let _ = UtcOffset::CHINA.date_time(i64::MAX);
        let _ = UtcOffset::from_minutes(-720).unwrap().date_time(i64::MIN);
    }

    #[test]
    fn offsets_parse_in_one_spelling_and_print_back() {
        for (text, minutes) in [
            ("+08:00", 480),
            ("-05:30", -330),
            ("+00:00", 0),
            ("-00:00", 0),
            ("Z", 0),
            ("+14:00", 840),
            ("-12:00", -720),
        ] {
            let o: UtcOffset = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(o.minutes, minutes, "{text}");
        }
        assert_eq!(UtcOffset::CHINA.to_string(), "+08:00");
        assert_eq!(UtcOffset::from_minutes(-330).unwrap().to_string(), "-05:30");
        assert_eq!(UtcOffset::UTC.to_string(), "+00:00");
        for bad in [
            "",
            "8",
            "+8:00",
            "08:00",
            "+0800",
            "+08:60",
            "+15:00",
            "-12:30",
            "+1a:00",
            "UTC+8",
            "+08:00 ",
            "Asia/Shanghai",
        ] {
            assert!(bad.parse::<UtcOffset>().is_err(), "{bad:?} was accepted");
        }
    }
}
