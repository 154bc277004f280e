//! Report counters on sled, without a cross-tree transaction on the callback's path.
//!
//! A sled transaction or batch costs about ten times a single insert (measured with
//! `cargo bench --bench pipeline -- store/apply_callback`: 2.5 µs for the follower's
//! insert alone, 26–30 µs with the counters in a transaction), so a counting callback
//! writes its counts as a *fact* (one insert, under the next number of a sequence) before
//! the follower's record (one insert). The facts are the archive `siyu report rebuild`
//! sums; counters are folded from them: a fold sums the facts after the last folded number
//! up to the lowest one still being written (commits finish out of order), adds the sums
//! to the counters and moves the folded mark, in one small transaction. It runs at most
//! once a second on some callback's way and before every report, so reports are exact.
//!
//! A commit whose record write fails takes its fact back. After a crash the facts past the
//! folded mark are reconciled on open: per follower, every such fact but the newest was
//! committed (each precedes its record's write, and a follower's writes are in order under
//! its lock); the newest was if the record holds its delivery (the newest write, so never
//! pruned). A fact whose record was never written (the crash came between the two inserts,
//! before any 200) is dropped: WeChat sends the callback again, and it is counted then.
//! Shop events and redemptions, already a transaction of their own, write their fact in it.

use std::collections::{BTreeMap, BTreeSet};
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
/// Unfolded facts that make a fold due at once.
const FOLD_AT: u64 = 8192;
/// The folded mark in the meta tree: every fact numbered up to it is in the counters.
const FOLDED: &[u8] = b"report_folded";

/// What the store keeps in memory for the fold.
#[derive(Debug)]
pub(super) struct Folding {
    /// The next fact's number.
    next: AtomicU64,
    /// Facts being written (their commit not yet done): the fold stops below the lowest.
    writing: Mutex<BTreeSet<u64>>,
    /// Facts written and not folded yet, by number: (account, counts). The fold sums these,
    /// never reading the facts back.
    done: Mutex<BTreeMap<u64, (String, Vec<Count>)>>,
    /// One fold at a time (the only writer of counters): when it last ran, and the mark.
    fold: Mutex<(Instant, u64)>,
}

#[derive(Serialize, Deserialize)]
struct Fact {
    account: String,
    openid: String,
    /// The dedupe key (or `ingest:<id>`, `redeem:<code>`).
    callback: String,
    /// Written in the transaction of its commit (a shop event, a redemption): committed
    /// whenever it is there.
    atomic: bool,
    counts: Vec<Count>,
}

/// A fact being written: its number and what to insert (`key`, `value`).
pub(super) struct NewFact {
    pub number: u64,
    pub key: [u8; 8],
    pub value: Vec<u8>,
    account: String,
    counts: Vec<Count>,
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

/// A fact as `siyu store copy` moves it: (number, account, counts).
pub(super) fn fact_row(k: &[u8], v: &[u8]) -> Option<(u64, String, Vec<Count>)> {
    let number = u64::from_be_bytes(<[u8; 8]>::try_from(k).ok()?);
    let fact: Fact = postcard::from_bytes(v).ok()?;
    Some((number, fact.account, fact.counts))
}

/// The stored key and value of a fact copied in (already folded where it came from: the
/// copy writes the counters too).
pub(super) fn fact_entry(number: u64, account: &str, counts: &[Count]) -> ([u8; 8], Vec<u8>) {
    let fact = Fact {
        account: account.to_string(),
        openid: String::new(),
        callback: String::new(),
        atomic: true,
        counts: counts.to_vec(),
    };
    (
        number.to_be_bytes(),
        postcard::to_allocvec(&fact).expect("counts encode"),
    )
}

fn value_of(v: &[u8]) -> i64 {
    <[u8; 8]>::try_from(v).map(i64::from_be_bytes).unwrap_or(0)
}

fn corrupt(tree: &str, k: &[u8], reason: String) -> StoreError {
    StoreError::Corrupt {
        key: format!("{tree}/{}", String::from_utf8_lossy(k).replace('\0', "/")),
        reason,
    }
}

impl Folding {
    /// From what is on disk: the facts' last number and the folded mark.
    pub(super) fn open(facts: &sled::Tree, meta: &sled::Tree) -> Result<Folding, StoreError> {
        let last = match facts.last().map_err(backend)? {
            Some((k, _)) => <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0),
            None => 0,
        };
        let folded = match meta.get(FOLDED).map_err(backend)? {
            Some(v) => value_of(&v) as u64,
            None => 0,
        };
        Ok(Folding {
            next: AtomicU64::new(last.max(folded) + 1),
            writing: Mutex::new(BTreeSet::new()),
            done: Mutex::new(BTreeMap::new()),
            fold: Mutex::new((Instant::now(), folded)),
        })
    }
}

impl SledStore {
    /// A fact of `counts` for one commit, numbered and registered as being written: to
    /// insert before (or in the transaction of) the write that commits it, then
    /// [`SledStore::fact_done`]. `None`: nothing to count.
    pub(super) fn new_fact(
        &self,
        account: &str,
        openid: &str,
        callback: &str,
        counts: &[Count],
        atomic: bool,
    ) -> Option<NewFact> {
        if counts.is_empty() {
            return None;
        }
        let fact = Fact {
            account: account.to_string(),
            openid: openid.to_string(),
            callback: callback.to_string(),
            atomic,
            counts: counts.to_vec(),
        };
        let mut writing = self
            .folding
            .writing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let number = self.folding.next.fetch_add(1, Ordering::SeqCst);
        writing.insert(number);
        drop(writing);
        Some(NewFact {
            number,
            key: number.to_be_bytes(),
            value: postcard::to_allocvec(&fact).expect("counts encode"),
            account: fact.account,
            counts: fact.counts,
        })
    }

    /// The commit of fact `number` is done (`written`: its fact stays; otherwise it is
    /// taken back); folds if one is due.
    pub(super) fn fact_done(&self, fact: NewFact, written: bool) {
        if written {
            self.folding
                .done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(fact.number, (fact.account, fact.counts));
        } else {
            // Not committed: not to be counted. If this fails too, the open after the next
            // crash or stop drops it (its record does not hold the delivery).
            let _ = self.facts.remove(fact.key);
        }
        self.folding
            .writing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fact.number);
        // Never waits on a fold already running: a later commit will look again.
        let mut fold = match self.folding.fold.try_lock() {
            Ok(fold) => fold,
            Err(_) => return,
        };
        if fold.0.elapsed() >= FOLD_EVERY || fact.number.saturating_sub(fold.1) >= FOLD_AT {
            // The commit is written whatever the fold does: a failed fold leaves the facts
            // for the next one (and every report folds first, reporting the error).
            if let Err(e) = self.fold_locked(&mut fold) {
                tracing::warn!(error = %e, "report: folding counts failed; the next fold tries again (报表计数合并失败，稍后重试)");
            }
        }
    }

    /// A fact copied in by `siyu store copy` (its counters copied too): numbers go on past
    /// it, and it counts as folded.
    pub(super) fn copied_fact(&self, number: u64) -> Result<(), StoreError> {
        let mut fold = self.folding.fold.lock().unwrap_or_else(|p| p.into_inner());
        self.folding.next.fetch_max(number + 1, Ordering::SeqCst);
        if number > fold.1 {
            self.meta
                .insert(FOLDED, &number.to_be_bytes())
                .map_err(backend)?;
            fold.1 = number;
        }
        Ok(())
    }

    /// Folds every fact whose commit is done (before a report reads the counters).
    pub(super) fn fold(&self) -> Result<(), StoreError> {
        let mut fold = self.folding.fold.lock().unwrap_or_else(|p| p.into_inner());
        self.fold_locked(&mut fold)
    }

    /// With the fold's lock held: the facts after the mark and below the lowest still
    /// being written, summed into the counters with the new mark, in one transaction.
    fn fold_locked(&self, fold: &mut (Instant, u64)) -> Result<(), StoreError> {
        fold.0 = Instant::now();
        let upto = {
            let writing = self
                .folding
                .writing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match writing.first() {
                Some(lowest) => lowest - 1,
                None => self.folding.next.load(Ordering::SeqCst) - 1,
            }
        };
        if upto <= fold.1 {
            return Ok(());
        }
        let folding = {
            let mut done = self.folding.done.lock().unwrap_or_else(|p| p.into_inner());
            let later = done.split_off(&(upto + 1));
            std::mem::replace(&mut *done, later)
        };
        let mut sums: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        for (account, counts) in folding.values() {
            for c in counts {
                *sums
                    .entry(counter_key(account, c.day, &c.channel, &c.metric))
                    .or_default() += c.n;
            }
        }
        let mark = upto.to_be_bytes();
        (&self.reports, &self.meta)
            .transaction(|(counters, meta)| {
                for (k, n) in &sums {
                    let old = counters.get(k)?.map_or(0, |v| value_of(&v));
                    counters.insert(k.as_slice(), &old.saturating_add(*n).to_be_bytes())?;
                }
                meta.insert(FOLDED, &mark)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| {
                // Not folded: back for the next fold.
                self.folding
                    .done
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(folding);
                tx_backend(e)
            })?;
        fold.1 = upto;
        Ok(())
    }

    /// On open: the facts past the folded mark that a crash left, each kept if its commit
    /// was written and dropped if not (see the module doc); then folded.
    pub(super) fn reconcile_facts(&self) -> Result<(), StoreError> {
        let folded = self
            .folding
            .fold
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1;
        // (account, openid) → the number and callback of its newest non-atomic fact.
        let mut newest: BTreeMap<(String, String), (u64, String)> = BTreeMap::new();
        let mut unfolded = BTreeMap::new();
        for item in self.facts.range((folded + 1).to_be_bytes()..) {
            let (k, v) = item.map_err(backend)?;
            let f: Fact =
                postcard::from_bytes(&v).map_err(|e| corrupt("report_facts", &k, e.to_string()))?;
            let number = u64::from_be_bytes(<[u8; 8]>::try_from(k.as_ref()).unwrap_or_default());
            if !f.atomic {
                newest.insert((f.account.clone(), f.openid), (number, f.callback));
            }
            unfolded.insert(number, (f.account, f.counts));
        }
        let mut dropped = 0usize;
        for ((account, openid), (number, callback)) in newest {
            let rk = key(&account, &openid);
            let written = match self.followers.get(&rk).map_err(backend)? {
                Some(v) => decode_record(&rk, &v)?
                    .deliveries
                    .iter()
                    .any(|d| d.key == callback),
                None => false,
            };
            if !written {
                self.facts.remove(number.to_be_bytes()).map_err(backend)?;
                unfolded.remove(&number);
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::warn!(dropped, "report: counts of callbacks a crash cut short were dropped; WeChat sends those callbacks again (崩溃中断的回调未计入，微信重发时计入)");
        }
        self.folding
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(unfolded);
        self.fold()
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
        // Every account's facts are in one sequence: a rebuild reads them all (rare, and
        // sequential reads).
        self.fold()?;
        for item in self.facts.iter() {
            let (k, v) = item.map_err(backend)?;
            let f: Fact =
                postcard::from_bytes(&v).map_err(|e| corrupt("report_facts", &k, e.to_string()))?;
            if f.account == account {
                visit(f.counts);
            }
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
        let mut fold = self.folding.fold.lock().unwrap_or_else(|p| p.into_inner());
        self.fold_locked(&mut fold)?;
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
    fn facts_a_crash_left_are_folded_if_committed_and_dropped_if_not() {
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
                let counts = [Count::new(7, "*", "messages", 100)];
                let f = store
                    .new_fact("demo", openid, dedupe, &counts, false)
                    .unwrap();
                store.facts.insert(f.key, f.value).unwrap();
            }
            // A shop event's fact, written in its own transaction: committed as it is.
            let counts = [Count::new(7, "*", "shop_events", 1)];
            let f = store
                .new_fact("demo", "o3", "ingest:e1", &counts, true)
                .unwrap();
            store.facts.insert(f.key, f.value).unwrap();
            store.flush().unwrap();
            // Closed without a fold, as by a kill.
            assert_eq!(
                store.folding.fold.lock().unwrap().1,
                0,
                "nothing folded yet"
            );
        }
        let store = SledStore::open(&path).unwrap();
        assert_eq!(
            store.report_counts("demo", 7, 7).unwrap(),
            vec![
                Count::new(7, "*", "messages", 13),
                Count::new(7, "*", "shop_events", 1)
            ]
        );
        assert_eq!(store.facts.len(), 5, "the two cut short dropped");
        let mut facts = Tally::default();
        store
            .report_facts("demo", &mut |counts| {
                counts.iter().for_each(|c| facts.add(c))
            })
            .unwrap();
        assert_eq!(facts.counts(), store.report_counts("demo", 7, 7).unwrap());
        // Numbers go on after the last fact.
        counted(&store, "o2", "m:10", 1);
        assert_eq!(store.report_counts("demo", 7, 7).unwrap()[0].n, 14);
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
    }
}
