//! Report counters on sled: written inside the transaction of the commit that counts them.
//!
//! A counter is spread over [`SHARDS`] shards (`…\0shard`): a commit adds only to its
//! follower's shard (from the follower's lock stripe), holding that shard's lock (taken
//! after the stripe's, never before), so the read-add-write of a counter never races
//! another commit and the transaction never conflicts, while commits of followers in other
//! shards go on. A report sums the shards.

use sled::transaction::{TransactionalTree, UnabortableTransactionError};

use super::{backend, SledStore};
use crate::report::{Count, Tally};
use crate::store::StoreError;

/// Counter shards: enough that two cores rarely wait on one, few enough that a month's
/// report reads a few thousand keys.
pub(super) const SHARDS: u16 = 16;

pub(super) fn shard_of(stripe: usize) -> u16 {
    (stripe % usize::from(SHARDS)) as u16
}

/// `account \0 day(8, order-preserving) channel \0 metric \0 shard(2)`.
pub(super) fn counter_key(
    account: &str,
    day: i64,
    channel: &str,
    metric: &str,
    shard: u16,
) -> Vec<u8> {
    let mut k = day_prefix(account, day);
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k.extend_from_slice(metric.as_bytes());
    k.push(0);
    k.extend_from_slice(&shard.to_be_bytes());
    k
}

/// `account \0 day`: the days sort in order (the sign bit flipped).
fn day_prefix(account: &str, day: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + 48);
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k.extend_from_slice(&((day as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// (day, channel, metric) of a counter key of `account`.
fn parse_counter_key(account: &str, k: &[u8]) -> Option<(i64, String, String)> {
    let rest = k.strip_prefix(account.as_bytes())?.strip_prefix(&[0])?;
    let (day, rest) = rest.split_at_checked(8)?;
    let day = (u64::from_be_bytes(day.try_into().ok()?) ^ (1 << 63)) as i64;
    let rest = rest.get(..rest.len().checked_sub(2)?)?;
    let mut parts = rest.split(|b| *b == 0);
    let channel = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let metric = std::str::from_utf8(parts.next()?).ok()?.to_string();
    parts.next().filter(|p| p.is_empty())?;
    Some((day, channel, metric))
}

fn value_of(v: &[u8]) -> i64 {
    <[u8; 8]>::try_from(v).map(i64::from_be_bytes).unwrap_or(0)
}

/// Adds `counts` (merged) to the counters of `shard`, inside the commit's transaction.
pub(super) fn add_counts(
    tree: &TransactionalTree,
    account: &str,
    shard: u16,
    counts: &[Count],
) -> Result<(), UnabortableTransactionError> {
    for c in counts {
        let k = counter_key(account, c.day, &c.channel, &c.metric, shard);
        let n = tree.get(&k)?.map_or(0, |v| value_of(&v));
        tree.insert(k, &n.saturating_add(c.n).to_be_bytes())?;
    }
    Ok(())
}

/// `account \0 id`: one commit's counts, kept for `siyu report rebuild`.
pub(super) fn fact_key(account: &str, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + 9);
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(super) fn encode_fact(counts: &[Count]) -> Vec<u8> {
    postcard::to_allocvec(counts).expect("counts encode")
}

impl SledStore {
    pub(super) fn sled_report_counts(
        &self,
        account: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<Count>, StoreError> {
        let mut tally = Tally::default();
        for item in self
            .reports
            .range(day_prefix(account, from)..day_prefix(account, to.saturating_add(1)))
        {
            let (k, v) = item.map_err(backend)?;
            let (day, channel, metric) =
                parse_counter_key(account, &k).ok_or_else(|| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).replace('\0', "/"),
                    reason: "not a report counter's key".into(),
                })?;
            tally.add(&Count {
                day,
                channel,
                metric,
                n: value_of(&v),
            });
        }
        Ok(tally.counts())
    }

    pub(super) fn sled_report_facts(
        &self,
        account: &str,
        visit: &mut dyn FnMut(Vec<Count>),
    ) -> Result<(), StoreError> {
        let mut prefix = account.as_bytes().to_vec();
        prefix.push(0);
        for item in self.facts.scan_prefix(&prefix) {
            let (k, v) = item.map_err(backend)?;
            let counts: Vec<Count> = postcard::from_bytes(&v).map_err(|e| StoreError::Corrupt {
                key: format!(
                    "report_facts/{}",
                    String::from_utf8_lossy(&k).replace('\0', "/")
                ),
                reason: e.to_string(),
            })?;
            visit(counts);
        }
        Ok(())
    }

    /// One batch (atomic on one tree): the account's counters removed, `counts` written.
    pub(super) fn sled_replace_report_counts(
        &self,
        account: &str,
        counts: &[Count],
    ) -> Result<(), StoreError> {
        let mut prefix = account.as_bytes().to_vec();
        prefix.push(0);
        let mut batch = sled::Batch::default();
        for k in self.reports.scan_prefix(&prefix).keys() {
            batch.remove(k.map_err(backend)?);
        }
        for c in crate::report::merge(counts.to_vec()) {
            let k = counter_key(account, c.day, &c.channel, &c.metric, 0);
            batch.insert(k, &c.n.to_be_bytes());
        }
        self.reports.apply_batch(batch).map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_keys_round_trip_and_sort_by_day() {
        for day in [-3, 0, 20_400] {
            let k = counter_key("demo", day, "ref:x", "shop:spend_fen", 7);
            assert_eq!(
                parse_counter_key("demo", &k),
                Some((day, "ref:x".into(), "shop:spend_fen".into()))
            );
        }
        assert!(counter_key("demo", -1, "", "new", 0) < counter_key("demo", 0, "", "new", 0));
        assert!(counter_key("demo", 5, "zz", "new", 9) < day_prefix("demo", 6));
        assert_eq!(
            parse_counter_key("demo2", &counter_key("demo", 1, "", "n", 0)),
            None
        );
    }
}
