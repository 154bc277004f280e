//! Counters summed into the rows reports show (PURE).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{metric, Count, Range, DIRECT, TOTAL};

/// Counters summed by (day, channel, metric).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    cells: BTreeMap<(i64, String, String), i64>,
}

impl Tally {
    pub fn add(&mut self, c: &Count) {
        let cell = self
            .cells
            .entry((c.day, c.channel.clone(), c.metric.clone()))
            .or_default();
        *cell = cell.saturating_add(c.n);
    }

    pub fn from_counts<'a>(counts: impl IntoIterator<Item = &'a Count>) -> Tally {
        let mut t = Tally::default();
        for c in counts {
            t.add(c);
        }
        t
    }

    /// Every non-zero cell as a count, in key order.
    pub fn counts(&self) -> Vec<Count> {
        self.cells
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|((day, channel, m), n)| Count::new(*day, channel, m, *n))
            .collect()
    }

    /// Where `self` and `other` differ: (day, channel, metric, self's, other's).
    pub fn differences(&self, other: &Tally) -> Vec<(i64, String, String, i64, i64)> {
        let mut keys: Vec<&(i64, String, String)> =
            self.cells.keys().chain(other.cells.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|k| {
                let (a, b) = (
                    self.cells.get(k).copied().unwrap_or(0),
                    other.cells.get(k).copied().unwrap_or(0),
                );
                (a != b).then(|| (k.0, k.1.clone(), k.2.clone(), a, b))
            })
            .collect()
    }

    /// One row per channel over `range` (the account's totals not among them), busiest
    /// first by arrivals.
    pub fn channels(&self, range: Range) -> Vec<ChannelRow> {
        let mut rows: BTreeMap<&str, ChannelRow> = BTreeMap::new();
        for ((day, channel, m), n) in &self.cells {
            if channel == TOTAL || !range.contains(*day) {
                continue;
            }
            rows.entry(channel)
                .or_insert_with(|| ChannelRow::named(channel))
                .put(m, *n);
        }
        let mut rows: Vec<ChannelRow> = rows.into_values().map(ChannelRow::finish).collect();
        rows.sort_by(|a, b| {
            (b.new + b.returning, b.scans)
                .cmp(&(a.new + a.returning, a.scans))
                .then_with(|| a.channel.cmp(&b.channel))
        });
        rows
    }

    /// One row per day of `range`, every day present (a quiet day is a row of zeros).
    pub fn days(&self, range: Range) -> Vec<DayRow> {
        (range.from..=range.to)
            .map(|day| {
                let mut row = DayRow {
                    date: crate::local_time::day_date(day),
                    ..DayRow::default()
                };
                let from = (day, TOTAL.to_string(), String::new());
                for ((d, channel, m), n) in self.cells.range(from..) {
                    if *d != day || channel != TOTAL {
                        break;
                    }
                    row.put(m, *n);
                }
                row.net = row.new + row.returning - row.unfollows;
                row
            })
            .collect()
    }
}

/// One channel's figures over a range. The cohort figures (`left_*`, `still_7d`,
/// `ordered`) are about the followers who arrived within the range, whenever they left or
/// ordered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRow {
    /// The scene; `""` for followers who came without one.
    pub channel: String,
    /// The title from `channels.toml` (filled in by the caller), else the scene.
    pub title: String,
    /// The channel's kind from `channels.toml`; `None` for a scene not named there.
    pub kind: Option<String>,
    pub scans: i64,
    pub new: i64,
    pub returning: i64,
    pub unfollows: i64,
    pub left_1d: i64,
    pub left_7d: i64,
    pub left_30d: i64,
    /// Arrivals minus those who left within 7 days.
    pub still_7d: i64,
    pub ordered: i64,
    pub messages: i64,
    pub active: i64,
    pub coupons_claimed: i64,
    pub coupons_redeemed: i64,
    /// First touch: shop events of followers this channel brought.
    pub shop_events: i64,
    /// First touch: `shop:<counter>` sums (`orders`, `spend_fen`, …).
    pub shop: BTreeMap<String, i64>,
    /// Last touch: shop events whose latest scan before them was this channel's.
    pub last_touch_shop_events: i64,
    pub last_touch_shop: BTreeMap<String, i64>,
}

impl ChannelRow {
    fn named(channel: &str) -> ChannelRow {
        ChannelRow {
            channel: channel.to_string(),
            title: if channel == DIRECT {
                "直接关注 (direct)".to_string()
            } else {
                channel.to_string()
            },
            ..ChannelRow::default()
        }
    }

    fn put(&mut self, m: &str, n: i64) {
        let slot = match m {
            metric::SCANS => &mut self.scans,
            metric::NEW => &mut self.new,
            metric::RETURNING => &mut self.returning,
            metric::UNFOLLOWS => &mut self.unfollows,
            metric::LEFT_1D => &mut self.left_1d,
            metric::LEFT_7D => &mut self.left_7d,
            metric::LEFT_30D => &mut self.left_30d,
            metric::ORDERED => &mut self.ordered,
            metric::MESSAGES => &mut self.messages,
            metric::ACTIVE => &mut self.active,
            metric::COUPONS_CLAIMED => &mut self.coupons_claimed,
            metric::COUPONS_REDEEMED => &mut self.coupons_redeemed,
            metric::SHOP_EVENTS => &mut self.shop_events,
            _ => {
                if let Some(last) = m.strip_prefix(metric::LAST_PREFIX) {
                    if last == metric::SHOP_EVENTS {
                        &mut self.last_touch_shop_events
                    } else if let Some(c) = last.strip_prefix(metric::SHOP_PREFIX) {
                        self.last_touch_shop.entry(c.to_string()).or_default()
                    } else {
                        return;
                    }
                } else if let Some(c) = m.strip_prefix(metric::SHOP_PREFIX) {
                    self.shop.entry(c.to_string()).or_default()
                } else {
                    return;
                }
            }
        };
        *slot = slot.saturating_add(n);
    }

    fn finish(mut self) -> ChannelRow {
        self.still_7d = self.new + self.returning - self.left_7d;
        self
    }
}

/// One day of an account's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRow {
    /// `YYYY-MM-DD`, local.
    pub date: String,
    pub new: i64,
    pub returning: i64,
    pub unfollows: i64,
    /// New and returning minus unfollows.
    pub net: i64,
    pub active: i64,
    pub messages: i64,
    pub rule_hits: i64,
    pub coupons_claimed: i64,
    pub coupons_redeemed: i64,
    pub shop_events: i64,
    pub shop: BTreeMap<String, i64>,
    /// By how they were sent (`cs`, `template`, `mass`, …).
    pub campaign_sends: BTreeMap<String, i64>,
}

impl DayRow {
    fn put(&mut self, m: &str, n: i64) {
        let slot = match m {
            metric::NEW => &mut self.new,
            metric::RETURNING => &mut self.returning,
            metric::UNFOLLOWS => &mut self.unfollows,
            metric::ACTIVE => &mut self.active,
            metric::MESSAGES => &mut self.messages,
            metric::RULE_HITS => &mut self.rule_hits,
            metric::COUPONS_CLAIMED => &mut self.coupons_claimed,
            metric::COUPONS_REDEEMED => &mut self.coupons_redeemed,
            metric::SHOP_EVENTS => &mut self.shop_events,
            _ => {
                if let Some(c) = m.strip_prefix(metric::SHOP_PREFIX) {
                    self.shop.entry(c.to_string()).or_default()
                } else if let Some(c) = m.strip_prefix(metric::CAMPAIGN_SENDS_PREFIX) {
                    self.campaign_sends.entry(c.to_string()).or_default()
                } else {
                    return;
                }
            }
        };
        *slot = slot.saturating_add(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_and_days_sum_their_cells() {
        let d = 20_400;
        let counts = [
            Count::new(d, "poster", metric::SCANS, 3),
            Count::new(d, "poster", metric::NEW, 2),
            Count::new(d + 1, "poster", metric::NEW, 1),
            Count::new(d, "poster", metric::LEFT_7D, 1),
            Count::new(d, "poster", "shop:spend_fen", 500),
            Count::new(d, "poster", "last:shop:spend_fen", 200),
            Count::new(d, "", metric::NEW, 5),
            Count::new(d, TOTAL, metric::NEW, 8),
            Count::new(d, TOTAL, metric::UNFOLLOWS, 3),
            Count::new(d, TOTAL, "campaign_sends:cs", 40),
            Count::new(d + 5, "poster", metric::NEW, 100),
        ];
        let t = Tally::from_counts(&counts);
        let range = Range { from: d, to: d + 1 };
        let rows = t.channels(range);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].channel, "", "five arrivals beat three");
        let poster = &rows[1];
        assert_eq!((poster.scans, poster.new, poster.still_7d), (3, 3, 2));
        assert_eq!(poster.shop["spend_fen"], 500);
        assert_eq!(poster.last_touch_shop["spend_fen"], 200);
        let days = t.days(range);
        assert_eq!(days.len(), 2);
        assert_eq!((days[0].new, days[0].unfollows, days[0].net), (8, 3, 5));
        assert_eq!(days[0].campaign_sends["cs"], 40);
        assert_eq!(
            days[1],
            DayRow {
                date: crate::local_time::day_date(d + 1),
                ..DayRow::default()
            }
        );
    }

    #[test]
    fn differences_name_every_cell_that_disagrees() {
        let a = Tally::from_counts(&[Count::new(1, "x", "new", 2), Count::new(1, "y", "new", 1)]);
        let b = Tally::from_counts(&[Count::new(1, "x", "new", 2), Count::new(2, "x", "new", 1)]);
        assert_eq!(
            a.differences(&b),
            vec![
                (1, "y".to_string(), "new".to_string(), 1, 0),
                (2, "x".to_string(), "new".to_string(), 0, 1)
            ]
        );
        assert!(a.differences(&a).is_empty());
    }
}
