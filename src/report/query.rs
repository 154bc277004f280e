//! Reports read from the store's counters (the one part of `report` that does I/O, and
//! only through `&dyn Store`): shared by `siyu report` and `/admin/v1/reports/*`.

use serde::{Deserialize, Serialize};

use super::{ChannelRow, Count, DayRow, Range, Tally, TOTAL};
use crate::channel::Channel;
use crate::store::{Store, StoreError};

/// Every day a counter can be on: what a rebuild compares.
const ALL_DAYS: (i64, i64) = (-1_000_000, 1_000_000);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelReport {
    pub account: String,
    pub from: String,
    pub to: String,
    /// How shop events, messages and coupons are attributed (`first_touch`); the
    /// `last_touch_*` fields are the last-touch view of shop events.
    pub attribution: String,
    pub channels: Vec<ChannelReportRow>,
}

/// A channel's row with its funnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelReportRow {
    #[serde(flatten)]
    pub row: ChannelRow,
    /// scans → subscribed (new + returning) → still following after 7 days → ordered.
    pub funnel: [i64; 4],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyReport {
    pub account: String,
    pub from: String,
    pub to: String,
    pub days: Vec<DayRow>,
}

/// The account's channels over `range`; every channel of `channels.toml` of the account
/// is a row, also one nobody came through yet.
pub fn channels(
    store: &dyn Store,
    account: &str,
    range: Range,
    named: &[Channel],
) -> Result<ChannelReport, StoreError> {
    let mut tally = Tally::from_counts(&store.report_counts(account, range.from, range.to)?);
    for c in named.iter().filter(|c| c.account == account) {
        // A zero keeps the channel in the table (zeros are never stored).
        tally.add(&Count::new(range.from, &c.name, super::metric::SCANS, 0));
    }
    let rows = tally
        .channels(range)
        .into_iter()
        .map(|mut row| {
            if let Some(c) = named
                .iter()
                .find(|c| c.account == account && c.name == row.channel)
            {
                row.title = c.title.clone();
                row.kind = Some(c.kind.to_string());
            }
            let funnel = [
                row.scans,
                row.new + row.returning,
                row.still_7d,
                row.ordered,
            ];
            ChannelReportRow { row, funnel }
        })
        .collect();
    Ok(ChannelReport {
        account: account.to_string(),
        from: crate::local_time::day_date(range.from),
        to: crate::local_time::day_date(range.to),
        attribution: "first_touch".into(),
        channels: rows,
    })
}

pub fn daily(store: &dyn Store, account: &str, range: Range) -> Result<DailyReport, StoreError> {
    let counts = store.report_counts(account, range.from, range.to)?;
    let days = Tally::from_counts(counts.iter().filter(|c| c.channel == TOTAL)).days(range);
    Ok(DailyReport {
        account: account.to_string(),
        from: crate::local_time::day_date(range.from),
        to: crate::local_time::day_date(range.to),
        days,
    })
}

/// What `siyu report rebuild` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuilt {
    pub account: String,
    /// Commits whose counts were summed again.
    pub facts: u64,
    /// Counters compared (the union of both sides' cells).
    pub cells: usize,
    /// Every cell where the live counters and the facts disagree.
    pub differences: Vec<Difference>,
    /// The counters were replaced by the facts' sums.
    pub written: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub date: String,
    pub channel: String,
    pub metric: String,
    pub live: i64,
    pub rebuilt: i64,
}

/// Sums every fact of the account again and compares the sums with the live counters;
/// `write`: then replaces the counters with the sums (run with the servers stopped, or
/// counts written meanwhile are lost).
pub fn rebuild(store: &dyn Store, account: &str, write: bool) -> Result<Rebuilt, StoreError> {
    let mut rebuilt = Tally::default();
    let mut facts = 0u64;
    store.report_facts(account, &mut |counts| {
        facts += 1;
        counts.iter().for_each(|c| rebuilt.add(c));
    })?;
    let live = Tally::from_counts(&store.report_counts(account, ALL_DAYS.0, ALL_DAYS.1)?);
    let cells = {
        let mut keys: Vec<(i64, String, String)> = live
            .counts()
            .into_iter()
            .chain(rebuilt.counts())
            .map(|c| (c.day, c.channel, c.metric))
            .collect();
        keys.sort();
        keys.dedup();
        keys.len()
    };
    let differences = live
        .differences(&rebuilt)
        .into_iter()
        .map(|(day, channel, metric, live, rebuilt)| Difference {
            date: crate::local_time::day_date(day),
            channel,
            metric,
            live,
            rebuilt,
        })
        .collect();
    if write {
        store.replace_report_counts(account, &rebuilt.counts())?;
        store.flush()?;
    }
    Ok(Rebuilt {
        account: account.to_string(),
        facts,
        cells,
        differences,
        written: write,
    })
}

/// Today's account figures (the `TOTAL` row), for the Prometheus gauges.
pub fn today(store: &dyn Store, account: &str, day: i64) -> Result<Vec<Count>, StoreError> {
    Ok(store
        .report_counts(account, day, day)?
        .into_iter()
        .filter(|c| c.channel == TOTAL)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::follower::Follower;
    use crate::store::{Answer, CallbackKey, Commit, MemoryStore};

    fn counted(store: &dyn Store, openid: &str, counts: Vec<Count>) {
        let key = CallbackKey {
            account: "demo",
            openid,
            dedupe_key: "m:1",
            now: 1,
            expires_at: 2,
        };
        store
            .apply_callback(key, &mut |_| Commit {
                follower: Some(Follower::new(openid)),
                answer: Answer {
                    reply: None,
                    rules: vec![],
                },
                effects: vec![],
                counts: counts.clone(),
            })
            .unwrap();
    }

    #[test]
    fn a_rebuild_finds_counters_that_drifted_and_writes_them_back() {
        let store = MemoryStore::default();
        counted(&store, "o1", vec![Count::new(10, TOTAL, "new", 1)]);
        counted(&store, "o2", vec![Count::new(10, TOTAL, "new", 1)]);
        let fine = rebuild(&store, "demo", false).unwrap();
        assert_eq!((fine.facts, fine.cells), (2, 1));
        assert!(fine.differences.is_empty());
        // A counter lost (e.g. restored from an older backup than the facts).
        store
            .replace_report_counts("demo", &[Count::new(10, TOTAL, "new", 1)])
            .unwrap();
        let drifted = rebuild(&store, "demo", false).unwrap();
        assert_eq!(
            drifted.differences,
            vec![Difference {
                date: "1970-01-11".into(),
                channel: TOTAL.into(),
                metric: "new".into(),
                live: 1,
                rebuilt: 2,
            }]
        );
        assert!(!rebuild(&store, "demo", true)
            .unwrap()
            .differences
            .is_empty());
        assert!(rebuild(&store, "demo", false)
            .unwrap()
            .differences
            .is_empty());
        let range = Range { from: 10, to: 10 };
        assert_eq!(daily(&store, "demo", range).unwrap().days[0].new, 2);
    }
}
