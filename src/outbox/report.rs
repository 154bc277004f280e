//! What the outbox holds, per account: for `siyu outbox` and `GET /admin/v1/outbox`.
//! Streams the queue page by page: counting a large queue never loads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DeadItem, OutboxItem};
use crate::store::{Store, StoreError};

/// Per account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountQueue {
    /// Never tried yet (waiting for their time, their batch, or the worker).
    pub pending: u64,
    /// Failed at least once; waiting for their next attempt.
    pub retrying: u64,
    pub dead: u64,
    /// Age of the oldest queued item, in seconds: how far WeChat lags behind local state.
    pub oldest_secs: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutboxReport {
    pub accounts: BTreeMap<String, AccountQueue>,
    /// The first `limit` retrying items, in queue order.
    pub retrying: Vec<OutboxItem>,
    /// The first `limit` dead letters, oldest first.
    pub dead: Vec<DeadItem>,
}

const PAGE: usize = 1024;

/// Reads the queue and the dead letters; lists at most `limit` items of each.
pub fn report(
    store: &dyn Store,
    account: Option<&str>,
    now_ms: i64,
    limit: usize,
) -> Result<OutboxReport, StoreError> {
    let mut out = OutboxReport::default();
    let wanted = |a: &str| account.is_none_or(|w| w == a);
    let mut after = None;
    loop {
        let page = store.outbox_page(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for item in page.into_iter().filter(|i| wanted(&i.account)) {
            let q = out.accounts.entry(item.account.clone()).or_default();
            let age = (now_ms - item.created_ms).max(0) / 1000;
            q.oldest_secs = Some(q.oldest_secs.map_or(age, |o| o.max(age)));
            if item.attempts == 0 {
                q.pending += 1;
            } else {
                q.retrying += 1;
                if out.retrying.len() < limit {
                    out.retrying.push(item);
                }
            }
        }
    }
    let mut after = None;
    loop {
        let page = store.dead_letters(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.item.id);
        for dead in page.into_iter().filter(|d| wanted(&d.item.account)) {
            out.accounts
                .entry(dead.item.account.clone())
                .or_default()
                .dead += 1;
            if out.dead.len() < limit {
                out.dead.push(dead);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Effect, NewItem};
    use crate::store::MemoryStore;

    #[test]
    fn counts_per_account_and_lists_failures() {
        let store = MemoryStore::default();
        let item = |openid: &str| NewItem {
            effect: Effect::Tag {
                openid: openid.into(),
                tag: "vip".into(),
                add: true,
            },
            origin: "rule:r".into(),
            not_before_ms: 0,
        };
        store
            .enqueue("a", vec![item("1"), item("2"), item("3")], 1_000)
            .unwrap();
        store.enqueue("b", vec![item("4")], 5_000).unwrap();
        let queued = store.outbox_page(None, 10).unwrap();
        let mut retry = queued[1].clone();
        retry.attempts = 2;
        retry.last_error = Some("-1 busy".into());
        store.outbox_retry_later(&retry).unwrap();
        store
            .outbox_bury(&queued[2], "43004 unsubscribed", 2_000)
            .unwrap();

        let r = report(&store, None, 11_000, 10).unwrap();
        assert_eq!(
            r.accounts["a"],
            AccountQueue {
                pending: 1,
                retrying: 1,
                dead: 1,
                oldest_secs: Some(10)
            }
        );
        assert_eq!(r.accounts["b"].pending, 1);
        assert_eq!(r.accounts["b"].oldest_secs, Some(6));
        assert_eq!(r.retrying, vec![retry]);
        assert_eq!(r.dead[0].reason, "43004 unsubscribed");

        let only_b = report(&store, Some("b"), 11_000, 10).unwrap();
        assert_eq!(only_b.accounts.keys().collect::<Vec<_>>(), ["b"]);
        assert!(only_b.dead.is_empty());
        assert_eq!(report(&store, None, 11_000, 0).unwrap().dead.len(), 0);
    }
}
