//! Report counters on sled, without a cross-tree transaction on the callback's path.
//!
//! A sled transaction or batch costs about ten times a single insert (measured with
//! `cargo bench --bench pipeline -- store/apply_callback`: 2.5 µs for the follower's
//! insert alone, 26–30 µs with the counters in a transaction), so a callback that counts
//! writes its counts as a *pending fact* (one insert, keyed by the follower and the
//! callback, before the follower's record) and then the record (one insert), and tells the
//! store the fact is committed. A fold moves committed facts into the counters and, summed
//! per account, into the archive `siyu report rebuild` sums, in one transaction for many
//! facts: at most once a second on some callback's way, and before every report, so
//! reports are exact.
//!
//! After a crash the pending facts left are reconciled on open: per follower, every fact
//! but the newest was committed (each precedes its record's write, and a follower's writes
//! are in order under its lock); the newest was committed if the record holds its
//! delivery (the newest write, so never pruned). A fact whose record was never written (the
//! crash came between the two inserts) is dropped: WeChat sends the callback again, and it
//! is counted then.
//!
//! Shop events and redemptions already write in a transaction of their own: they put their
//! pending fact in it, and it is folded the same way. Only the fold writes counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, Transactional};

use super::{backend, tx_backend, SledStore};
use crate::report::{Count, Tally};
use crate::store::{decode_record, key, StoreError};

/// Folded on a callback's way at most this often (and before every report).
const FOLD_EVERY: Duration = Duration::from_secs(1);
/// Committed facts that make a fold due at once.
const FOLD_AT: usize = 4096;

/// What the store keeps in memory for the fold.
#[derive(Debug)]
pub(super) struct Folding {
    /// Pending facts known to be committed, with their counts, waiting for the fold.
    committed: Mutex<Vec<(Vec<u8>, Vec<Count>)>>,
    /// One fold at a time: the only writer of counters.
    fold: Mutex<Instant>,
    /// Orders one process's facts (the newest of a follower's is the one checked on open).
    seq: AtomicU64,
}

impl Folding {
    pub(super) fn new() -> Folding {
        Folding {
            committed: Mutex::new(Vec::new()),
            fold: Mutex::new(Instant::now()),
            seq: AtomicU64::new(0),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct PendingFact {
    /// Unix milliseconds at the write, then the process's sequence: newest last.
    order: (i64, u64),
    /// Written in the transaction of its commit (a shop event, a redemption): committed
    /// whenever it is there.
    atomic: bool,
    counts: Vec<Count>,
}

/// `account \0 openid \0 callback \0 now(8)`: `callback` is the dedupe key (or
/// `ingest:<id>`, `redeem:<code>`), `now` keeps a later callback with the same key apart.
fn pending_key(account: &str, openid: &str, callback: &str, now_ms: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + openid.len() + callback.len() + 12);
    for part in [account, openid, callback] {
        k.extend_from_slice(part.as_bytes());
        k.push(0);
    }
    k.extend_from_slice(&now_ms.to_be_bytes());
    k
}

/// (account, openid, callback) of a pending key.
fn pending_parts(k: &[u8]) -> Option<(String, String, String)> {
    let body = k.get(..k.len().checked_sub(8)?)?;
    let mut parts = body.split(|b| *b == 0);
    let text = |p: Option<&[u8]>| {
        p.and_then(|p| std::str::from_utf8(p).ok())
            .map(str::to_string)
    };
    let (a, o, c) = (
        text(parts.next())?,
        text(parts.next())?,
        text(parts.next())?,
    );
    Some((a, o, c))
}

/// `account \0 day(8, order-preserving) channel \0 metric`.
fn counter_key(account: &str, day: i64, channel: &str, metric: &str) -> Vec<u8> {
    let mut k = day_prefix(account, day);
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k.extend_from_slice(metric.as_bytes());
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
    let mut parts = rest.splitn(2, |b| *b == 0);
    let channel = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let metric = std::str::from_utf8(parts.next()?).ok()?.to_string();
    Some((day, channel, metric))
}

/// A counter entry as `siyu store copy` moves it: (account, count) of a stored key and value.
pub(super) fn counter_row(k: &[u8], v: &[u8]) -> Option<(String, Count)> {
    let at = k.iter().position(|&b| b == 0)?;
    let account = std::str::from_utf8(&k[..at]).ok()?;
    let (day, channel, metric) = parse_counter_key(account, k)?;
    Some((
        account.to_string(),
        Count {
            day,
            channel,
            metric,
            n: value_of(v),
        },
    ))
}

/// The stored key and value of a counter copied in.
pub(super) fn counter_entry(account: &str, c: &Count) -> (Vec<u8>, [u8; 8]) {
    (
        counter_key(account, c.day, &c.channel, &c.metric),
        c.n.to_be_bytes(),
    )
}

fn value_of(v: &[u8]) -> i64 {
    <[u8; 8]>::try_from(v).map(i64::from_be_bytes).unwrap_or(0)
}

/// `account \0 id`: a folded fact, kept for `siyu report rebuild`.
fn fact_key(account: &str, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + 9);
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn corrupt(tree: &str, k: &[u8], reason: String) -> StoreError {
    StoreError::Corrupt {
        key: format!("{tree}/{}", String::from_utf8_lossy(k).replace('\0', "/")),
        reason,
    }
}

impl SledStore {
    /// A pending fact of `counts` for one commit: (key, value) to insert before (or in
    /// the transaction of) the write that commits it. `None`: nothing to count.
    pub(super) fn pending_fact(
        &self,
        account: &str,
        openid: &str,
        callback: &str,
        counts: &[Count],
        atomic: bool,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        if counts.is_empty() {
            return None;
        }
        let now_ms = crate::outbox::now_ms();
        let fact = PendingFact {
            order: (now_ms, self.folding.seq.fetch_add(1, Ordering::Relaxed)),
            atomic,
            counts: counts.to_vec(),
        };
        let value = postcard::to_allocvec(&fact).expect("counts encode");
        Some((pending_key(account, openid, callback, now_ms), value))
    }

    /// The fact's commit is written: it may be folded (now, if one is due).
    pub(super) fn committed(&self, fact: Vec<u8>, counts: &[Count]) -> Result<(), StoreError> {
        let due = {
            let mut committed = self
                .folding
                .committed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            committed.push((fact, counts.to_vec()));
            committed.len() >= FOLD_AT
        };
        // Never waits on a fold already running: the next callback will look again.
        let mut last = match self.folding.fold.try_lock() {
            Ok(last) => last,
            Err(_) => return Ok(()),
        };
        if due || last.elapsed() >= FOLD_EVERY {
            self.fold_locked(&mut last)?;
        }
        Ok(())
    }

    /// Folds every committed fact now (before a report reads the counters).
    pub(super) fn fold(&self) -> Result<(), StoreError> {
        let mut last = self.folding.fold.lock().unwrap_or_else(|p| p.into_inner());
        self.fold_locked(&mut last)
    }

    /// With the fold's lock held (`last`: when the last fold ran).
    fn fold_locked(&self, last: &mut Instant) -> Result<(), StoreError> {
        *last = Instant::now();
        let keys = std::mem::take(
            &mut *self
                .folding
                .committed
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for chunk in keys.chunks(512) {
            if let Err(e) = self.fold_chunk(chunk) {
                // Not lost: still pending, folded by the next fold.
                let mut committed = self
                    .folding
                    .committed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                committed.extend(keys.iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }

    /// One transaction: the facts' counts added to the counters and kept, summed per
    /// account, as one archived fact (what `siyu report rebuild` sums), the pending facts
    /// removed. A fact already gone (a fold retried) is not counted again: the transaction
    /// reads each one.
    fn fold_chunk(&self, facts: &[(Vec<u8>, Vec<Count>)]) -> Result<(), StoreError> {
        if facts.is_empty() {
            return Ok(());
        }
        // One archived fact per account of the chunk, each with an id of its own (ids are
        // unique in the store: `siyu store copy` moves them to PostgreSQL as they are).
        let accounts: std::collections::BTreeSet<String> = facts
            .iter()
            .filter_map(|(k, _)| pending_parts(k).map(|(a, _, _)| a))
            .collect();
        let ids: std::collections::BTreeMap<String, u64> = accounts
            .into_iter()
            .map(|a| self.generate_id().map(|id| (a, id)))
            .collect::<Result<_, _>>()?;
        (&self.report_pending, &self.reports, &self.facts)
            .transaction(|(pending, counters, archive)| {
                // Summed first: one read and one write per counter, one fact per account.
                let mut sums: std::collections::BTreeMap<Vec<u8>, i64> = Default::default();
                let mut kept: std::collections::BTreeMap<String, Tally> = Default::default();
                for (k, counts) in facts {
                    if pending.remove(k.as_slice())?.is_none() {
                        continue;
                    }
                    let Some((account, _, _)) = pending_parts(k) else {
                        continue;
                    };
                    for c in counts {
                        *sums
                            .entry(counter_key(&account, c.day, &c.channel, &c.metric))
                            .or_default() += c.n;
                    }
                    let tally = kept.entry(account).or_default();
                    counts.iter().for_each(|c| tally.add(c));
                }
                for (k, n) in &sums {
                    let old = counters.get(k)?.map_or(0, |v| value_of(&v));
                    counters.insert(k.as_slice(), &old.saturating_add(*n).to_be_bytes())?;
                }
                for (account, tally) in &kept {
                    let value = postcard::to_allocvec(&tally.counts()).expect("counts encode");
                    archive.insert(fact_key(account, ids[account]), value)?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_backend)
    }

    /// On open: the pending facts a crash left, each folded if its commit was written,
    /// dropped if not (see the module doc).
    pub(super) fn reconcile_pending(&self) -> Result<(), StoreError> {
        // (account, openid) → its facts: (order, key, callback, atomic, counts).
        type Facts = Vec<((i64, u64), Vec<u8>, String, bool, Vec<Count>)>;
        let mut by_follower: std::collections::BTreeMap<(String, String), Facts> =
            Default::default();
        for item in self.report_pending.iter() {
            let (k, v) = item.map_err(backend)?;
            let fact: PendingFact = postcard::from_bytes(&v)
                .map_err(|e| corrupt("report_pending", &k, e.to_string()))?;
            let (account, openid, callback) =
                pending_parts(&k).ok_or_else(|| corrupt("report_pending", &k, "bad key".into()))?;
            by_follower.entry((account, openid)).or_default().push((
                fact.order,
                k.to_vec(),
                callback,
                fact.atomic,
                fact.counts,
            ));
        }
        let mut committed = Vec::new();
        let mut dropped = 0usize;
        for ((account, openid), mut facts) in by_follower {
            // Written in their commit's own transaction: committed whenever there.
            committed.extend(
                facts
                    .iter()
                    .filter(|f| f.3)
                    .map(|f| (f.1.clone(), f.4.clone())),
            );
            facts.retain(|f| !f.3);
            facts.sort_by(|a, b| a.0.cmp(&b.0));
            let Some((_, newest, callback, _, counts)) = facts.pop() else {
                continue;
            };
            committed.extend(facts.into_iter().map(|f| (f.1, f.4)));
            let written = {
                let rk = key(&account, &openid);
                match self.followers.get(&rk).map_err(backend)? {
                    Some(v) => decode_record(&rk, &v)?
                        .deliveries
                        .iter()
                        .any(|d| d.key == callback),
                    None => false,
                }
            };
            if written {
                committed.push((newest, counts));
            } else {
                self.report_pending.remove(&newest).map_err(backend)?;
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::warn!(dropped, "report: counts of callbacks a crash cut short were dropped; WeChat sends those callbacks again");
        }
        if !committed.is_empty() {
            self.folding
                .committed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(committed);
            self.fold()?;
        }
        Ok(())
    }

    pub(super) fn sled_report_counts(
        &self,
        account: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<Count>, StoreError> {
        self.fold()?;
        let mut tally = Tally::default();
        for item in self
            .reports
            .range(day_prefix(account, from)..day_prefix(account, to.saturating_add(1)))
        {
            let (k, v) = item.map_err(backend)?;
            let (day, channel, metric) = parse_counter_key(account, &k)
                .ok_or_else(|| corrupt("report_counts", &k, "not a counter's key".into()))?;
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
        self.fold()?;
        let mut prefix = account.as_bytes().to_vec();
        prefix.push(0);
        for item in self.facts.scan_prefix(&prefix) {
            let (k, v) = item.map_err(backend)?;
            let counts: Vec<Count> =
                postcard::from_bytes(&v).map_err(|e| corrupt("report_facts", &k, e.to_string()))?;
            visit(counts);
        }
        Ok(())
    }

    /// One batch (atomic on one tree), under the fold's lock: the account's counters
    /// removed, `counts` written.
    pub(super) fn sled_replace_report_counts(
        &self,
        account: &str,
        counts: &[Count],
    ) -> Result<(), StoreError> {
        let mut last = self.folding.fold.lock().unwrap_or_else(|p| p.into_inner());
        self.fold_locked(&mut last)?;
        let mut prefix = account.as_bytes().to_vec();
        prefix.push(0);
        let mut batch = sled::Batch::default();
        for k in self.reports.scan_prefix(&prefix).keys() {
            batch.remove(k.map_err(backend)?);
        }
        for c in crate::report::merge(counts.to_vec()) {
            batch.insert(
                counter_key(account, c.day, &c.channel, &c.metric),
                &c.n.to_be_bytes(),
            );
        }
        self.reports.apply_batch(batch).map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::follower::Follower;
    use crate::store::{Answer, CallbackKey, Commit, Store};

    fn counted(store: &SledStore, openid: &str, dedupe: &str, n: i64) {
        let key = CallbackKey {
            account: "demo",
            openid,
            dedupe_key: dedupe,
            now: 1,
            expires_at: i64::MAX,
        };
        store
            .apply_callback(key, &mut |_| Commit {
                follower: Some(Follower::new(openid)),
                answer: Answer {
                    reply: None,
                    rules: vec![],
                },
                effects: vec![],
                counts: vec![Count::new(7, "*", "messages", n)],
            })
            .unwrap();
    }

    #[test]
    fn pending_facts_a_crash_left_are_folded_if_committed_and_dropped_if_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        {
            let store = SledStore::open(&path).unwrap();
            for i in 0..3 {
                counted(&store, "o1", &format!("m:{i}"), 1);
            }
            counted(&store, "o2", "m:9", 10);
            // A crash between the fact and the record: o1's fourth callback and a first
            // callback of o3 have their facts written and no record.
            for (openid, dedupe) in [("o1", "m:3"), ("o3", "m:1")] {
                let (k, v) = store
                    .pending_fact(
                        "demo",
                        openid,
                        dedupe,
                        &[Count::new(7, "*", "messages", 100)],
                        false,
                    )
                    .unwrap();
                store.report_pending.insert(k, v).unwrap();
            }
            // A shop event's fact, written in its own transaction: committed as it is.
            let (k, v) = store
                .pending_fact(
                    "demo",
                    "o3",
                    "ingest:e1",
                    &[Count::new(7, "*", "shop_events", 1)],
                    true,
                )
                .unwrap();
            store.report_pending.insert(k, v).unwrap();
            store.flush().unwrap();
            // Closed without a fold, as by a kill: the committed facts are still pending.
            assert_eq!(store.report_pending.len(), 7);
        }
        let store = SledStore::open(&path).unwrap();
        assert_eq!(
            store.report_counts("demo", 7, 7).unwrap(),
            vec![
                Count::new(7, "*", "messages", 13),
                Count::new(7, "*", "shop_events", 1)
            ]
        );
        assert_eq!(store.report_pending.len(), 0, "every pending fact settled");
        let mut facts = Tally::default();
        store
            .report_facts("demo", &mut |counts| {
                counts.iter().for_each(|c| facts.add(c))
            })
            .unwrap();
        assert_eq!(facts.counts(), store.report_counts("demo", 7, 7).unwrap());
    }

    #[test]
    fn keys_round_trip_and_counters_sort_by_day() {
        for day in [-3, 0, 20_400] {
            let k = counter_key("demo", day, "ref:x", "shop:spend_fen");
            assert_eq!(
                parse_counter_key("demo", &k),
                Some((day, "ref:x".into(), "shop:spend_fen".into()))
            );
        }
        assert!(counter_key("demo", -1, "", "new") < counter_key("demo", 0, "", "new"));
        assert!(counter_key("demo", 5, "zz", "new") < day_prefix("demo", 6));
        assert_eq!(
            parse_counter_key("demo2", &counter_key("demo", 1, "", "n")),
            None
        );
        let p = pending_key("demo", "o1", "m:42", 1_700_000_000_123);
        assert_eq!(
            pending_parts(&p),
            Some(("demo".into(), "o1".into(), "m:42".into()))
        );
    }
}
