//! Reports (报表): per-channel and per-account daily figures, kept as counters. PURE
//! but for [`query`], which reads them through `&dyn Store`.
//!
//! Every callback and shop event that changes a figure carries its [`Count`]s into the
//! same atomic write as the follower's change (`Commit::counts`), so a report reads a few
//! counter rows per day instead of every follower, and a figure is never counted for a
//! callback WeChat will send again (nothing is written for a retry). The backends also keep
//! each commit's counts as a fact; `siyu report rebuild` sums the facts again and compares
//! them with the counters (see README "Reports").
//!
//! A counter is keyed by (local day, channel, metric). The channel is [`TOTAL`] for the
//! account's own figures, the scene of a channel for a channel's, and [`DIRECT`] for
//! followers who came without one. Attribution is first touch by default (the channel
//! that brought the follower, `first_scene`); shop events are also counted under the last
//! touch (the latest scan before the event) as `last:`-prefixed metrics.

pub mod count;
pub mod query;
pub mod table;

pub use count::{callback_counts, redeem_counts, shop_counts, Before};
pub use table::{ChannelRow, DayRow, Tally};

use serde::{Deserialize, Serialize};

/// The channel of an account's own figures (no scene has a `*`).
pub const TOTAL: &str = "*";
/// The channel of followers who came without a scene (searched, a shared card, …).
pub const DIRECT: &str = "";

/// The metric names counters are kept under (shop counters add `shop:<counter>`).
pub mod metric {
    /// Scans of a channel's code: SCAN events and subscribes with its scene.
    pub const SCANS: &str = "scans";
    /// Subscribes by someone never seen subscribed before.
    pub const NEW: &str = "new";
    /// Subscribes by someone who had unfollowed.
    pub const RETURNING: &str = "returning";
    pub const UNFOLLOWS: &str = "unfollows";
    /// Of the followers who arrived on the counter's day: how many left within 1, 7 and 30
    /// days of arriving (cumulative: within 1 day is within 7).
    pub const LEFT_1D: &str = "left_1d";
    pub const LEFT_7D: &str = "left_7d";
    pub const LEFT_30D: &str = "left_30d";
    /// Of the followers who arrived on the counter's day: how many have ordered since
    /// (the first time their order counter, `[report] orders`, became non-zero).
    pub const ORDERED: &str = "ordered";
    /// Messages followers wrote (not events).
    pub const MESSAGES: &str = "messages";
    /// Followers who wrote, clicked, scanned or subscribed that day, each once a day.
    pub const ACTIVE: &str = "active";
    /// Callbacks a rule answered or acted on.
    pub const RULE_HITS: &str = "rule_hits";
    pub const COUPONS_CLAIMED: &str = "coupons_claimed";
    pub const COUPONS_REDEEMED: &str = "coupons_redeemed";
    pub const SHOP_EVENTS: &str = "shop_events";
    /// `shop:<counter>`: the sum a shop event added to a follower counter (`orders`,
    /// `spend_fen`, …).
    pub const SHOP_PREFIX: &str = "shop:";
    /// The last-touch twin of a shop metric, counted under the latest channel scanned.
    pub const LAST_PREFIX: &str = "last:";
    /// `campaign_sends:<channel>`: campaign messages sent, by how they were sent.
    pub const CAMPAIGN_SENDS_PREFIX: &str = "campaign_sends:";

    /// The account's daily figures (the Prometheus gauges start each day at zero).
    pub const DAILY: [&str; 9] = [
        NEW,
        RETURNING,
        UNFOLLOWS,
        ACTIVE,
        MESSAGES,
        RULE_HITS,
        COUPONS_CLAIMED,
        COUPONS_REDEEMED,
        SHOP_EVENTS,
    ];
}

/// One change to one counter: `n` added to (day, channel, metric) of the account the
/// commit is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Count {
    /// The local day (days since 1970-01-01 at `[display] utc_offset`).
    pub day: i64,
    pub channel: String,
    pub metric: String,
    pub n: i64,
}

impl Count {
    pub fn new(day: i64, channel: &str, metric: &str, n: i64) -> Count {
        Count {
            day,
            channel: channel.to_string(),
            metric: metric.to_string(),
            n,
        }
    }
}

/// One count per (day, channel, metric), zeros dropped, in key order: what a backend
/// writes (an upsert may not touch one row twice in a statement).
pub fn merge(counts: Vec<Count>) -> Vec<Count> {
    if counts.len() < 2 {
        return counts.into_iter().filter(|c| c.n != 0).collect();
    }
    Tally::from_counts(&counts).counts()
}

/// The counter whose first increase makes a follower `ordered` (the funnel's last step).
pub const ORDER_COUNTER: &str = "orders";

/// The channel a scene is counted under: the scene itself, except a personal referral
/// code (`ref:<programme>:<participant>`), counted under its programme (`ref:<programme>`)
/// so that a thousand participants are one row, not a thousand.
pub fn channel_of_scene(scene: &str) -> &str {
    if let Some(rest) = scene.strip_prefix("ref:") {
        if let Some(i) = rest.find(':') {
            return &scene[..4 + i];
        }
    }
    scene
}

/// The days a report covers, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

impl Range {
    /// From `YYYY-MM-DD` to `YYYY-MM-DD`, both included.
    pub fn parse(from: &str, to: &str) -> Result<Range, RangeError> {
        let day = |s: &str| {
            crate::local_time::parse_day(s).ok_or_else(|| RangeError::NotADate(s.to_string()))
        };
        let (from, to) = (day(from)?, day(to)?);
        if from > to {
            return Err(RangeError::Backwards);
        }
        if to - from >= MAX_DAYS {
            return Err(RangeError::TooLong);
        }
        Ok(Range { from, to })
    }

    /// As given, or by default the 30 days up to `today` (or up to `to`).
    pub fn or_default(
        from: Option<&str>,
        to: Option<&str>,
        today: i64,
    ) -> Result<Range, RangeError> {
        let to = match to {
            Some(t) => t.to_string(),
            None => crate::local_time::day_date(today),
        };
        let from = match from {
            Some(f) => f.to_string(),
            None => {
                let end = crate::local_time::parse_day(&to)
                    .ok_or_else(|| RangeError::NotADate(to.clone()))?;
                crate::local_time::day_date(end - 29)
            }
        };
        Range::parse(&from, &to)
    }

    pub fn contains(&self, day: i64) -> bool {
        (self.from..=self.to).contains(&day)
    }
}

/// The longest range a report covers: two years of days.
pub const MAX_DAYS: i64 = 731;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("`{0}` is not a date: write YYYY-MM-DD, e.g. 2026-11-01 (日期格式应为 YYYY-MM-DD)")]
    NotADate(String),
    #[error(
        "the range ends before it starts: --from must not be after --to (开始日期晚于结束日期)"
    )]
    Backwards,
    #[error("a report covers at most {MAX_DAYS} days (最多 {MAX_DAYS} 天)")]
    TooLong,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referral_codes_count_under_their_programme() {
        assert_eq!(channel_of_scene("ref:double11:a1b2"), "ref:double11");
        assert_eq!(channel_of_scene("ref:double11"), "ref:double11");
        assert_eq!(channel_of_scene("spring-poster"), "spring-poster");
        assert_eq!(channel_of_scene("refx:a:b"), "refx:a:b");
    }

    #[test]
    fn ranges_are_checked() {
        let r = Range::parse("2026-11-01", "2026-11-30").unwrap();
        assert_eq!(r.to - r.from, 29);
        assert!(r.contains(r.from) && r.contains(r.to) && !r.contains(r.to + 1));
        assert_eq!(
            Range::parse("2026-11-31", "2026-12-01"),
            Err(RangeError::NotADate("2026-11-31".into()))
        );
        assert_eq!(
            Range::parse("2026-12-02", "2026-12-01"),
            Err(RangeError::Backwards)
        );
        assert_eq!(
            Range::parse("2020-01-01", "2026-12-01"),
            Err(RangeError::TooLong)
        );
        assert!(Range::parse("2026-1-01", "2026-12-01").is_err());
    }
}
