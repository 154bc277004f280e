//! The sled backend: an embedded, crash-safe store in one folder.
//!
//! One tree, `followers`: account\0openid → versioned record (follower + recent
//! deliveries). Two small side trees: `audit` (time-ordered entries) and `tokens` (account →
//! JSON access token; a handful of keys, rewritten every two hours). A callback is a get and one plain insert of that key, so it is atomic
//! without a transaction. Concurrent callbacks of one follower are serialised by a striped
//! lock: a std `Mutex` (held for a few µs, never across an await), 256 stripes so that
//! different followers almost never wait on each other.

use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{Db, Tree};

use super::{
    apply_stored, campaign_key, decode_record, encode_record, key, msgid_key, settled, Applied,
    CallbackKey, Commit, Ingested, Store, StoreError, StoredToken,
};
use crate::audit::AuditEntry;
use crate::campaign::{CampaignRun, MassJob, Progress};
use crate::coupon::{
    claim, redeem, Batch, BatchState, ClaimRefused, Coupon, CouponStats, RedeemRefused,
};
use crate::follower::Follower;
use crate::outbox::{DeadItem, NewItem, OutboxItem};
use crate::sync::SyncRun;

mod channel_codes;
mod portable;
mod referrals;
mod reports;

const STRIPES: usize = 256;

/// In `meta`: the lowest id this store hands out (big-endian u64), raised past every id
/// that `siyu store copy` writes in.
const ID_FLOOR: &[u8] = b"id_floor";

#[derive(Clone)]
pub struct SledStore {
    db: Db,
    followers: Tree,
    /// big-endian time ‖ sled-generated id → JSON entry: ordered by time, never colliding.
    audit: Tree,
    tokens: Tree,
    /// id (big-endian) → JSON `OutboxItem`: the queue, in order.
    outbox: Tree,
    /// id (big-endian) → JSON `DeadItem`.
    dead: Tree,
    /// account \0 tag name → WeChat tag id (big-endian i64).
    tag_ids: Tree,
    /// Coupons, one tree so that a claim is one single-tree transaction:
    /// `b\0batch` → JSON `BatchState`; `c\0batch\0code` → JSON `Coupon`;
    /// `x\0code` → batch (codes are unique across batches);
    /// `h\0batch\0account\0openid` → codes held (big-endian u32);
    /// `r\0account\0openid\0batch\0request` → the code a request claimed.
    coupons: Tree,
    /// campaign name → JSON `CampaignRun`.
    campaigns: Tree,
    /// campaign \0 openid → JSON `Progress`.
    progress: Tree,
    /// campaign \0 openid → empty: the followers still queued or being sent (a count
    /// without reading every progress entry).
    pending: Tree,
    /// account \0 msgid (big-endian) → campaign \0 openid (openid empty: a mass job).
    msgids: Tree,
    /// campaign \0 msg_id (big-endian) → JSON `MassJob`.
    jobs: Tree,
    /// Small named values: the id floor, a store copy's checkpoint.
    meta: Tree,
    /// account → JSON `SyncRun`: the latest follower sync of each account.
    syncs: Tree,
    /// unionid \0 account \0 openid → empty: the people index.
    people: Tree,
    /// account \0 event id → openid: the shop events applied (`POST /ingest/v1/events`),
    /// written in one transaction with the follower each one changed.
    ingested: Tree,
    /// Shop events kept for a person not known yet, two kinds of key in one tree so that
    /// keeping and dropping are single-tree writes inside the ingest transaction:
    /// `e\0account\0event id` → JSON `KeptEvent`; `u\0account\0unionid\0event id` → empty.
    kept: Tree,
    /// Report counters (`reports.rs`): account \0 day channel \0 metric → i64, written by
    /// the fold alone.
    reports: Tree,
    /// number (8) → postcard `Fact`: each counting commit's counts, in one sequence.
    facts: Tree,
    /// account \0 channel → JSON `ChannelCode`: the codes siyu made for channels.
    channel_codes: Tree,
    /// Referral programmes (`referrals.rs`), four kinds of key in one tree so that a write
    /// is one transaction with the outbox.
    referrals: Tree,
    /// Serialises referral writes (sled is one process): the read of the records a
    /// decision needs and the write of what it decided are one step.
    referral_lock: Arc<Mutex<()>>,
    /// Added to every id sled generates (see [`ID_FLOOR`]).
    id_floor: Arc<AtomicU64>,
    path: PathBuf,
    stripes: Arc<[Mutex<()>]>,
    /// The report's pending facts, folded into `reports` (`reports.rs`).
    folding: Arc<reports::Folding>,
    /// Picks a record's stripe (FNV-1a from a random start, see `lock_stripe`).
    stripe_seed: u64,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

impl SledStore {
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Backend(e.to_string()))?;
        }
        let db = sled::Config::new().path(path).open().map_err(|e| match e {
            // sled takes an exclusive file lock; a second process is refused.
            sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                StoreError::Locked {
                    path: path.display().to_string(),
                }
            }
            other => StoreError::Backend(other.to_string()),
        })?;
        let meta = db.open_tree("meta").map_err(backend)?;
        let facts = db.open_tree("report_facts").map_err(backend)?;
        let store = SledStore {
            followers: db.open_tree("followers").map_err(backend)?,
            audit: db.open_tree("audit").map_err(backend)?,
            tokens: db.open_tree("tokens").map_err(backend)?,
            outbox: db.open_tree("outbox").map_err(backend)?,
            dead: db.open_tree("dead").map_err(backend)?,
            tag_ids: db.open_tree("tag_ids").map_err(backend)?,
            coupons: db.open_tree("coupons").map_err(backend)?,
            campaigns: db.open_tree("campaigns").map_err(backend)?,
            progress: db.open_tree("campaign_progress").map_err(backend)?,
            pending: db.open_tree("campaign_pending").map_err(backend)?,
            msgids: db.open_tree("campaign_msgids").map_err(backend)?,
            jobs: db.open_tree("campaign_jobs").map_err(backend)?,
            syncs: db.open_tree("syncs").map_err(backend)?,
            people: db.open_tree("people").map_err(backend)?,
            ingested: db.open_tree("ingest_events").map_err(backend)?,
            kept: db.open_tree("ingest_kept").map_err(backend)?,
            reports: db.open_tree("report_counts").map_err(backend)?,
            folding: Arc::new(reports::Folding::open(&facts, &meta)?),
            facts,
            channel_codes: db.open_tree("channel_codes").map_err(backend)?,
            referrals: db.open_tree("referrals").map_err(backend)?,
            referral_lock: Arc::new(Mutex::new(())),
            id_floor: Arc::new(AtomicU64::new(
                match meta.get(ID_FLOOR).map_err(backend)? {
                    Some(v) => <[u8; 8]>::try_from(v.as_ref())
                        .map(u64::from_be_bytes)
                        .map_err(|_| StoreError::Corrupt {
                            key: "meta/id_floor".into(),
                            reason: format!("{} bytes, want 8", v.len()),
                        })?,
                    None => 0,
                },
            )),
            meta,
            path: path.to_path_buf(),
            db,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            stripe_seed: RandomState::new().hash_one(0u8),
        };
        store.reconcile_facts()?;
        Ok(store)
    }

    /// Serialises writers of one record.
    fn lock_stripe(&self, k: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        self.lock_stripe_at(self.stripe_of(k))
    }

    fn stripe_of(&self, k: &[u8]) -> usize {
        // FNV-1a: a few instructions per byte where SipHash cost ~600 a callback. Keys
        // (openids) are WeChat's, not chosen by senders, and the random start keeps the
        // mapping different in every process.
        let hash = k.iter().fold(self.stripe_seed, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        ((hash ^ (hash >> 32)) as usize) % STRIPES
    }

    fn lock_stripe_at(&self, stripe: usize) -> std::sync::MutexGuard<'_, ()> {
        // Nothing panics while this is held except a bug in a decision; the stored record
        // is untouched then, so a poisoned stripe is still safe to use.
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn tx_backend(e: TransactionError<()>) -> StoreError {
    match e {
        TransactionError::Storage(e) => backend(e),
        TransactionError::Abort(()) => StoreError::Backend("transaction aborted".into()),
    }
}

/// `unionid \0 account \0 openid`.
fn person_key(unionid: &str, account: &str, openid: &str) -> Vec<u8> {
    let mut k = key(unionid, account);
    k.push(0);
    k.extend_from_slice(openid.as_bytes());
    k
}

/// `e\0account\0event id`: a kept event.
fn kept_key(account: &str, event_id: &str) -> Vec<u8> {
    let mut k = b"e\0".to_vec();
    k.extend_from_slice(&key(account, event_id));
    k
}

/// `u\0account\0unionid\0event id`: a kept event by unionid (ids and unionids hold no
/// control characters, `Event::parse` refuses them).
fn kept_by_unionid(account: &str, unionid: &str, event_id: &str) -> Vec<u8> {
    let mut k = b"u\0".to_vec();
    k.extend_from_slice(&person_key(account, unionid, event_id));
    k
}

/// Drops the kept copy of an event, if there is one, inside a transaction.
fn drop_kept(
    kept: &sled::transaction::TransactionalTree,
    account: &str,
    event_id: &str,
) -> Result<(), ConflictableTransactionError<()>> {
    if let Some(v) = kept.remove(kept_key(account, event_id))? {
        // Unreadable: the index entry cannot be named, and stays (harmless: `kept_events`
        // reads the event through its `e` key).
        if let Ok(k) = serde_json::from_slice::<super::KeptEvent>(&v) {
            kept.remove(kept_by_unionid(account, &k.unionid, event_id))?;
        }
    }
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Plain owned data (strings, numbers, enums with named fields) always encodes.
    serde_json::to_vec(value).expect("plain data encodes")
}

fn from_json<T: serde::de::DeserializeOwned>(
    tree: &str,
    k: &[u8],
    v: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: format!("{tree}/{}", hex::encode(k)),
        reason: e.to_string(),
    })
}

/// The parts joined by NUL (which no batch name, code, account or openid contains).
fn coupon_key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Keys above `after` (all keys if `None`), as a range start.
fn after_key(after: Option<u64>) -> std::ops::RangeFrom<[u8; 8]> {
    match after {
        Some(id) if id == u64::MAX => [0xff; 8]..,
        Some(id) => id_key(id + 1)..,
        None => [0; 8]..,
    }
}

impl SledStore {
    /// A new id: unique and increasing, above every id copied in.
    fn generate_id(&self) -> Result<u64, StoreError> {
        let id = self.db.generate_id().map_err(backend)?;
        Ok(id.saturating_add(self.id_floor.load(Ordering::SeqCst)))
    }

    fn new_items(
        &self,
        account: &str,
        items: Vec<NewItem>,
        now_ms: i64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        items
            .into_iter()
            .map(|item| {
                let id = self.generate_id()?;
                Ok((id, json(&OutboxItem::new(id, account, item, now_ms))))
            })
            .collect()
    }

    /// A callback's commit: its counts as a fact (`reports.rs`), then the follower's
    /// record with the outbox items its change causes (one transaction when there are
    /// items: a crash keeps both or neither).
    fn write_commit(
        &self,
        ck: CallbackKey<'_>,
        k: &[u8],
        value: Vec<u8>,
        items: &[(u64, Vec<u8>)],
        counts: &[crate::report::Count],
    ) -> Result<(), StoreError> {
        let fact = self.new_fact(ck.account, ck.openid, ck.dedupe_key, counts, false);
        let written = (|| {
            if let Some(f) = &fact {
                self.facts
                    .insert(f.key, f.value.as_slice())
                    .map_err(backend)?;
            }
            if items.is_empty() {
                self.followers.insert(k, value).map(drop).map_err(backend)
            } else {
                self.write_follower_and_items(k, &value, items)
            }
        })();
        if let Some(f) = fact {
            self.fact_done(f, written.is_ok());
        }
        written
    }

    /// A follower's record and the outbox items its change causes, in one transaction: a
    /// crash keeps both or neither.
    fn write_follower_and_items(
        &self,
        k: &[u8],
        value: &[u8],
        items: &[(u64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        (&self.followers, &self.outbox)
            .transaction(|(followers, outbox)| {
                followers.insert(k, value)?;
                for (id, item) in items {
                    outbox.insert(&id_key(*id), item.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_backend)
    }

    fn page<T: serde::de::DeserializeOwned>(
        tree: &Tree,
        name: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        tree.range(after_key(after))
            .take(limit)
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                from_json(name, &k, &v)
            })
            .collect()
    }
}

impl Store for SledStore {
    fn referral_participant(
        &self,
        programme: &str,
        id: &crate::referral::ParticipantId,
    ) -> Result<Option<super::Participant>, StoreError> {
        self.sled_referral_participant(programme, id)
    }

    fn update_referral_participant(
        &self,
        account: &str,
        programme: &str,
        id: &crate::referral::ParticipantId,
        change: &mut dyn FnMut(Option<super::Participant>) -> super::ParticipantChange,
    ) -> Result<Option<super::Participant>, StoreError> {
        self.sled_update_referral_participant(account, programme, id, change)
    }

    fn referral_write(
        &self,
        account: &str,
        programme: &str,
        people: &[&str],
        change: &mut dyn FnMut(&super::InviteView) -> super::InviteChange,
    ) -> Result<super::InviteChange, StoreError> {
        self.sled_referral_write(account, programme, people, change)
    }

    fn referral_invites(
        &self,
        programme: &str,
    ) -> Result<Vec<crate::referral::InviteRecord>, StoreError> {
        self.sled_scan(&referrals::prefix(b'i', programme))
    }

    fn referral_rewards(&self, programme: &str) -> Result<Vec<super::RewardRecord>, StoreError> {
        self.sled_scan(&referrals::prefix(b'w', programme))
    }

    fn follower(&self, account: &str, openid: &str) -> Result<Option<Follower>, StoreError> {
        let k = key(account, openid);
        match self.followers.get(&k).map_err(backend)? {
            Some(v) => Ok(decode_record(&k, &v)?.follower),
            None => Ok(None),
        }
    }

    fn apply_callback(
        &self,
        ck: CallbackKey<'_>,
        decide: &mut dyn FnMut(Option<Follower>) -> Commit,
    ) -> Result<Applied, StoreError> {
        let k = key(ck.account, ck.openid);
        let _guard = self.lock_stripe(&k);
        let stored = self.followers.get(&k).map_err(backend)?;
        let (applied, written) = apply_stored(&k, stored.as_deref(), ck, decide)?;
        if let Some(value) = written.value {
            if written.effects.is_empty() && written.counts.is_empty() {
                self.followers.insert(k, value).map_err(backend)?;
            } else {
                // The follower change, the calls it causes and what it counts, in one
                // atomic write: a crash keeps all or none. Only a callback with effects or
                // counts pays for a transaction.
                let items =
                    self.new_items(ck.account, written.effects, ck.now.saturating_mul(1000))?;
                self.write_commit(ck, &k, value, &items, &written.counts)?;
            }
        }
        Ok(applied)
    }

    fn update_follower_and_queue(
        &self,
        account: &str,
        openid: &str,
        change: &mut dyn FnMut(&mut Follower) -> Vec<NewItem>,
    ) -> Result<Option<Follower>, StoreError> {
        let k = key(account, openid);
        let _guard = self.lock_stripe(&k);
        let Some(v) = self.followers.get(&k).map_err(backend)? else {
            return Ok(None);
        };
        let mut record = decode_record(&k, &v)?;
        let Some(f) = record.follower.as_mut() else {
            return Ok(None);
        };
        let items = change(f);
        let after = f.clone();
        let value = encode_record(&mut record);
        if items.is_empty() {
            self.followers.insert(k, value).map_err(backend)?;
            return Ok(Some(after));
        }
        // As `apply_callback`: only a change with items pays for a transaction.
        let items = self.new_items(account, items, crate::outbox::now_ms())?;
        self.write_follower_and_items(&k, &value, &items)?;
        Ok(Some(after))
    }

    fn for_each_follower(
        &self,
        account: &str,
        visit: &mut dyn FnMut(Follower),
    ) -> Result<(), StoreError> {
        for item in self.followers.scan_prefix(key(account, "")) {
            let (k, v) = item.map_err(backend)?;
            if let Some(f) = decode_record(&k, &v)?.follower {
                visit(f);
            }
        }
        Ok(())
    }

    fn followers_after(
        &self,
        account: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Follower>, StoreError> {
        let prefix = key(account, "");
        let mut from = key(account, after.unwrap_or(""));
        if after.is_some() {
            // Just above `after`: NUL never appears in an openid.
            from.push(0);
        }
        let mut out = Vec::with_capacity(limit.min(4096));
        for item in self.followers.range(from..) {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            if let Some(f) = decode_record(&k, &v)?.follower {
                out.push(f);
            }
        }
        Ok(out)
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let id = self.generate_id()?;
        let mut k = (entry.at.max(0) as u64).to_be_bytes().to_vec();
        k.extend_from_slice(&id.to_be_bytes());
        let v = serde_json::to_vec(entry).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.audit.insert(k, v).map_err(backend)?;
        Ok(())
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit
            .iter()
            .rev()
            .take(limit)
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    key: format!("audit/{}", hex::encode(&k)),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    fn token(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        let Some(v) = self.tokens.get(account).map_err(backend)? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                key: format!("tokens/{account}"),
                // Position only: serde_json's message may quote the value, i.e. the token.
                reason: format!("{:?} error at column {}", e.classify(), e.column()),
            })
    }

    fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), StoreError> {
        let v = serde_json::to_vec(token).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.tokens.insert(account, v).map_err(backend)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(backend)
    }

    fn enqueue(
        &self,
        account: &str,
        items: Vec<NewItem>,
        now_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        let items = self.new_items(account, items, now_ms)?;
        let mut batch = sled::Batch::default();
        for (id, item) in &items {
            batch.insert(&id_key(*id), item.as_slice());
        }
        self.outbox.apply_batch(batch).map_err(backend)?;
        Ok(items.into_iter().map(|(id, _)| id).collect())
    }

    fn outbox_page(&self, after: Option<u64>, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        Self::page(&self.outbox, "outbox", after, limit)
    }

    fn outbox_done(&self, id: u64) -> Result<(), StoreError> {
        self.outbox.remove(id_key(id)).map_err(backend)?;
        Ok(())
    }

    fn outbox_retry_later(&self, item: &OutboxItem) -> Result<(), StoreError> {
        // Only if still queued: an item requeued or removed meanwhile is not revived.
        let k = id_key(item.id);
        let Some(old) = self.outbox.get(k).map_err(backend)? else {
            return Ok(());
        };
        self.outbox
            .compare_and_swap(k, Some(old), Some(json(item)))
            .map_err(backend)?
            .ok();
        Ok(())
    }

    fn outbox_bury(&self, item: &OutboxItem, reason: &str, now_ms: i64) -> Result<(), StoreError> {
        let k = id_key(item.id);
        let dead = json(&DeadItem {
            item: item.clone(),
            reason: reason.to_string(),
            died_ms: now_ms,
        });
        (&self.outbox, &self.dead)
            .transaction(|(outbox, dead_tree)| {
                outbox.remove(&k)?;
                dead_tree.insert(&k, dead.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_backend)
    }

    fn dead_letters(&self, after: Option<u64>, limit: usize) -> Result<Vec<DeadItem>, StoreError> {
        Self::page(&self.dead, "dead", after, limit)
    }

    fn requeue_dead(&self, id: u64, now_ms: i64) -> Result<Option<OutboxItem>, StoreError> {
        let k = id_key(id);
        let Some(v) = self.dead.get(k).map_err(backend)? else {
            return Ok(None);
        };
        let dead: DeadItem = from_json("dead", &k, &v)?;
        let item = dead.requeued(now_ms);
        let value = json(&item);
        (&self.outbox, &self.dead)
            .transaction(|(outbox, dead_tree)| {
                dead_tree.remove(&k)?;
                outbox.insert(&k, value.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_backend)?;
        Ok(Some(item))
    }

    fn tag_id(&self, account: &str, tag: &str) -> Result<Option<i64>, StoreError> {
        let k = key(account, tag);
        match self.tag_ids.get(&k).map_err(backend)? {
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(|b| Some(i64::from_be_bytes(b)))
                .map_err(|_| StoreError::Corrupt {
                    key: format!("tag_ids/{account}/{tag}"),
                    reason: format!("{} bytes, want 8", v.len()),
                }),
            None => Ok(None),
        }
    }

    fn put_tag_id(&self, account: &str, tag: &str, id: i64) -> Result<(), StoreError> {
        self.tag_ids
            .insert(key(account, tag), &id.to_be_bytes())
            .map_err(backend)?;
        Ok(())
    }

    fn claim_coupon(
        &self,
        batch: &Batch,
        account: &str,
        openid: &str,
        now: i64,
        request: Option<&str>,
    ) -> Result<Result<Coupon, ClaimRefused>, StoreError> {
        let request_key = request.map(|r| {
            coupon_key(&[
                b"r",
                account.as_bytes(),
                openid.as_bytes(),
                batch.name.as_bytes(),
                r.as_bytes(),
            ])
        });
        let state_key = coupon_key(&[b"b", batch.name.as_bytes()]);
        let held_key = coupon_key(&[
            b"h",
            batch.name.as_bytes(),
            account.as_bytes(),
            openid.as_bytes(),
        ]);
        let result = self.coupons.transaction(|t| {
            if let Some(rk) = &request_key {
                if let Some(code) = t.get(rk)? {
                    let ck = coupon_key(&[b"c", batch.name.as_bytes(), &code]);
                    if let Some(c) = t.get(&ck)?.and_then(|v| serde_json::from_slice(&v).ok()) {
                        return Ok(c);
                    }
                }
            }
            let state: BatchState = match t.get(&state_key)? {
                Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
                None => BatchState::default(),
            };
            let held = t
                .get(&held_key)?
                .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
                .map_or(0, u32::from_be_bytes);
            let mut lookup_failed = None;
            let mut taken = |code: &str| match t.get(coupon_key(&[b"x", code.as_bytes()])) {
                Ok(v) => v.is_some(),
                Err(e) => {
                    lookup_failed = Some(e);
                    true
                }
            };
            let decided = claim(batch, state, held, account, openid, now, &mut taken);
            if let Some(e) = lookup_failed {
                return Err(e.into());
            }
            let coupon = match decided {
                Ok(c) => c,
                Err(refused) => return Err(ConflictableTransactionError::Abort(refused)),
            };
            let next = BatchState {
                issued: state.issued + 1,
                ..state
            };
            t.insert(state_key.as_slice(), json(&next))?;
            t.insert(held_key.as_slice(), &(held + 1).to_be_bytes())?;
            t.insert(
                coupon_key(&[b"c", batch.name.as_bytes(), coupon.code.as_bytes()]),
                json(&coupon),
            )?;
            t.insert(
                coupon_key(&[b"x", coupon.code.as_bytes()]),
                batch.name.as_bytes(),
            )?;
            if let Some(rk) = &request_key {
                t.insert(rk.as_slice(), coupon.code.as_bytes())?;
            }
            Ok(coupon)
        });
        match result {
            Ok(c) => Ok(Ok(c)),
            Err(TransactionError::Abort(refused)) => Ok(Err(refused)),
            Err(TransactionError::Storage(e)) => Err(backend(e)),
        }
    }

    fn redeem_coupon(
        &self,
        code: &str,
        now: i64,
        zone: crate::local_time::UtcOffset,
    ) -> Result<Result<Coupon, RedeemRefused>, StoreError> {
        let Some(batch) = self
            .coupons
            .get(coupon_key(&[b"x", code.as_bytes()]))
            .map_err(backend)?
        else {
            return Ok(Err(RedeemRefused::Unknown(code.to_string())));
        };
        let code_key = coupon_key(&[b"c", &batch, code.as_bytes()]);
        let state_key = coupon_key(&[b"b", &batch]);
        // The holder (a code's holder never changes) and their first touch, for the
        // report's count, written as a fact in the redemption's transaction.
        let Some(held) = self
            .coupons
            .get(&code_key)
            .map_err(backend)?
            .and_then(|v| serde_json::from_slice::<Coupon>(&v).ok())
        else {
            return Ok(Err(RedeemRefused::Unknown(code.to_string())));
        };
        let holder_key = key(&held.account, &held.openid);
        let holder = match self.followers.get(&holder_key).map_err(backend)? {
            Some(v) => decode_record(&holder_key, &v)?.follower,
            None => None,
        };
        let counts = crate::report::merge(crate::report::redeem_counts(holder.as_ref(), now, zone));
        let callback = format!("redeem:{code}");
        let fact = self.new_fact(&held.account, &held.openid, &callback, &counts, true);
        let result = (&self.coupons, &self.facts).transaction(|(t, facts)| {
            let Some(v) = t.get(&code_key)? else {
                return Err(ConflictableTransactionError::Abort(RedeemRefused::Unknown(
                    code.to_string(),
                )));
            };
            let coupon: Coupon = match serde_json::from_slice(&v) {
                Ok(c) => c,
                Err(_) => {
                    return Err(ConflictableTransactionError::Abort(RedeemRefused::Unknown(
                        code.to_string(),
                    )))
                }
            };
            let used = redeem(coupon, now).map_err(ConflictableTransactionError::Abort)?;
            let mut state: BatchState = match t.get(&state_key)? {
                Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
                None => BatchState::default(),
            };
            state.redeemed += 1;
            t.insert(code_key.as_slice(), json(&used))?;
            t.insert(state_key.as_slice(), json(&state))?;
            if let Some(f) = &fact {
                facts.insert(&f.key, f.value.as_slice())?;
            }
            Ok(used)
        });
        if let Some(f) = fact {
            self.fact_done(f, result.is_ok());
        }
        match result {
            Ok(c) => Ok(Ok(c)),
            Err(TransactionError::Abort(refused)) => Ok(Err(refused)),
            Err(TransactionError::Storage(e)) => Err(backend(e)),
        }
    }

    fn coupon(&self, code: &str) -> Result<Option<Coupon>, StoreError> {
        let Some(batch) = self
            .coupons
            .get(coupon_key(&[b"x", code.as_bytes()]))
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let k = coupon_key(&[b"c", &batch, code.as_bytes()]);
        match self.coupons.get(&k).map_err(backend)? {
            Some(v) => from_json("coupons", &k, &v).map(Some),
            None => Ok(None),
        }
    }

    fn coupon_stats(&self, batch: &Batch, now: i64) -> Result<CouponStats, StoreError> {
        let state_key = coupon_key(&[b"b", batch.name.as_bytes()]);
        let state: BatchState = match self.coupons.get(&state_key).map_err(backend)? {
            Some(v) => from_json("coupons", &state_key, &v)?,
            None => BatchState::default(),
        };
        let mut expired = 0;
        let mut prefix = coupon_key(&[b"c", batch.name.as_bytes()]);
        prefix.push(0);
        for item in self.coupons.scan_prefix(&prefix) {
            let (k, v) = item.map_err(backend)?;
            let c: Coupon = from_json("coupons", &k, &v)?;
            if c.redeemed_at.is_none() && c.expires_at <= now {
                expired += 1;
            }
        }
        Ok(CouponStats {
            issued: state.issued,
            redeemed: state.redeemed,
            expired,
            left: batch.stock.saturating_sub(state.issued),
        })
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }

    fn people(&self, unionid: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut prefix = unionid.as_bytes().to_vec();
        prefix.push(0);
        self.people
            .scan_prefix(&prefix)
            .keys()
            .map(|k| {
                let k = k.map_err(backend)?;
                let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let (account, openid) = rest.split_once('\0').unwrap_or((&rest, ""));
                Ok((account.to_string(), openid.to_string()))
            })
            .collect()
    }

    fn sync_run(&self, account: &str) -> Result<Option<SyncRun>, StoreError> {
        self.syncs
            .get(account.as_bytes())
            .map_err(backend)?
            .map(|v| from_json("syncs", account.as_bytes(), &v))
            .transpose()
    }

    fn sync_step(
        &self,
        account: &str,
        openids: &[String],
        run: &mut SyncRun,
        merge: &mut crate::store::SyncMerge<'_>,
    ) -> Result<(), StoreError> {
        let keys: Vec<Vec<u8>> = openids.iter().map(|o| key(account, o)).collect();
        // Every record's stripe, taken in one order so two steps never wait on each other.
        let mut stripes: Vec<usize> = keys.iter().map(|k| self.stripe_of(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _guards: Vec<_> = stripes.iter().map(|&i| self.lock_stripe_at(i)).collect();
        let mut writes = Vec::with_capacity(keys.len());
        let (mut links, mut unlinks) = (Vec::new(), Vec::new());
        let mut items = Vec::new();
        for (openid, k) in openids.iter().zip(&keys) {
            let mut record = match self.followers.get(k).map_err(backend)? {
                Some(v) => decode_record(k, &v)?,
                None => super::Record::default(),
            };
            if let Some(f) = merge(run, openid, record.follower.clone(), &mut items) {
                if let Some((old, new)) = super::person_link(record.follower.as_ref(), &f) {
                    if let Some(old) = old {
                        unlinks.push(person_key(&old, account, openid));
                    }
                    links.push(person_key(&new, account, openid));
                }
                record.follower = Some(f);
                writes.push((k, encode_record(&mut record)));
            }
        }
        let run_json = json(run);
        // Ids taken now: an id left unused by a failed step is only a gap in the queue.
        let items = self.new_items(account, items, crate::outbox::now_ms())?;
        (&self.followers, &self.syncs, &self.people, &self.outbox)
            .transaction(|(followers, syncs, people, outbox)| {
                for (k, v) in &writes {
                    followers.insert(k.as_slice(), v.as_slice())?;
                }
                for (id, item) in &items {
                    outbox.insert(&id_key(*id), item.as_slice())?;
                }
                for k in &unlinks {
                    people.remove(k.as_slice())?;
                }
                for k in &links {
                    people.insert(k.as_slice(), &[][..])?;
                }
                syncs.insert(account.as_bytes(), run_json.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_backend)?;
        Ok(())
    }

    fn ingest_event(
        &self,
        account: &str,
        openid: &str,
        event_id: &str,
        change: &mut dyn FnMut(Option<Follower>) -> Option<(Follower, Vec<crate::report::Count>)>,
    ) -> Result<Ingested, StoreError> {
        let k = key(account, openid);
        let id = key(account, event_id);
        // The follower's stripe serialises this with their callbacks and edits; two
        // requests carrying the same event id for different followers are told apart by
        // the transaction below, which reads the id again.
        let _guard = self.lock_stripe(&k);
        if self.ingested.contains_key(&id).map_err(backend)? {
            if self
                .kept
                .contains_key(kept_key(account, event_id))
                .map_err(backend)?
            {
                self.kept
                    .transaction(|kept| drop_kept(kept, account, event_id))
                    .map_err(tx_backend)?;
            }
            return Ok(Ingested::Duplicate);
        }
        let mut record = match self.followers.get(&k).map_err(backend)? {
            Some(v) => decode_record(&k, &v)?,
            None => super::Record::default(),
        };
        let Some((after, counts)) = change(record.follower.take()) else {
            return Ok(Ingested::Declined);
        };
        record.follower = Some(after.clone());
        let value = encode_record(&mut record);
        let fact = self.new_fact(
            account,
            openid,
            &format!("ingest:{event_id}"),
            &counts,
            true,
        );
        let fresh = (&self.followers, &self.ingested, &self.kept, &self.facts)
            .transaction(|(followers, ingested, kept, facts)| {
                drop_kept(kept, account, event_id)?;
                if ingested.get(id.as_slice())?.is_some() {
                    return Ok(false);
                }
                followers.insert(k.as_slice(), value.as_slice())?;
                ingested.insert(id.as_slice(), openid.as_bytes())?;
                if let Some(f) = &fact {
                    facts.insert(&f.key, f.value.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(true)
            })
            .map_err(tx_backend);
        if let Some(f) = fact {
            self.fact_done(f, matches!(fresh, Ok(true)));
        }
        let fresh = fresh?;
        Ok(if fresh {
            Ingested::Applied(Box::new(after))
        } else {
            Ingested::Duplicate
        })
    }

    fn ingested(&self, account: &str, event_id: &str) -> Result<Option<String>, StoreError> {
        self.ingested
            .get(key(account, event_id))
            .map_err(backend)?
            .map(|v| {
                String::from_utf8(v.to_vec()).map_err(|_| StoreError::Corrupt {
                    key: format!("ingest_events/{account}/{event_id}"),
                    reason: "openid is not UTF-8".into(),
                })
            })
            .transpose()
    }

    fn report_counts(
        &self,
        account: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<crate::report::Count>, StoreError> {
        self.sled_report_counts(account, from, to)
    }

    fn report_facts(
        &self,
        account: &str,
        visit: &mut dyn FnMut(Vec<crate::report::Count>),
    ) -> Result<(), StoreError> {
        self.sled_report_facts(account, visit)
    }

    fn replace_report_counts(
        &self,
        account: &str,
        counts: &[crate::report::Count],
    ) -> Result<(), StoreError> {
        self.sled_replace_report_counts(account, counts)
    }

    fn keep_event(&self, account: &str, event: &super::KeptEvent) -> Result<bool, StoreError> {
        let id = key(account, &event.id);
        let (e, u) = (
            kept_key(account, &event.id),
            kept_by_unionid(account, &event.unionid, &event.id),
        );
        let value = json(event);
        (&self.ingested, &self.kept)
            .transaction(|(ingested, kept)| {
                if ingested.get(id.as_slice())?.is_some() || kept.get(e.as_slice())?.is_some() {
                    return Ok(false);
                }
                kept.insert(e.as_slice(), value.as_slice())?;
                kept.insert(u.as_slice(), &[][..])?;
                Ok::<_, ConflictableTransactionError<()>>(true)
            })
            .map_err(tx_backend)
    }

    fn kept_events(
        &self,
        account: &str,
        unionids: &[String],
    ) -> Result<Vec<super::KeptEvent>, StoreError> {
        let mut sorted = unionids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut found = Vec::new();
        for unionid in &sorted {
            let prefix = kept_by_unionid(account, unionid, "");
            for k in self.kept.scan_prefix(&prefix).keys() {
                let k = k.map_err(backend)?;
                let event_id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let e = kept_key(account, &event_id);
                // Dropped between the scan and the read: applied meanwhile.
                if let Some(v) = self.kept.get(&e).map_err(backend)? {
                    found.push(from_json("ingest_kept", &e, &v)?);
                }
            }
        }
        Ok(found)
    }

    fn campaign_run(&self, name: &str) -> Result<Option<CampaignRun>, StoreError> {
        self.campaigns
            .get(name.as_bytes())
            .map_err(backend)?
            .map(|v| from_json("campaigns", name.as_bytes(), &v))
            .transpose()
    }

    fn campaign_runs(&self) -> Result<Vec<CampaignRun>, StoreError> {
        self.campaigns
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                from_json("campaigns", &k, &v)
            })
            .collect()
    }

    fn put_campaign_run(&self, run: &CampaignRun) -> Result<(), StoreError> {
        self.campaigns
            .insert(run.campaign.name.as_bytes(), json(run))
            .map_err(backend)?;
        Ok(())
    }

    fn campaign_enqueue(
        &self,
        run: &CampaignRun,
        account: &str,
        openids: &[String],
        extra: Vec<NewItem>,
        per_follower: bool,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let name = &run.campaign.name;
        let extra = self.new_items(account, extra, now_ms)?;
        // Ids are drawn before the transaction (which may run more than once); an id
        // left unused is only a gap in the queue's order.
        let items = if per_follower {
            self.new_items(
                account,
                openids
                    .iter()
                    .map(|o| crate::campaign::runner::outbox_item(name, o))
                    .collect(),
                now_ms,
            )?
        } else {
            Vec::new()
        };
        let queued_state = json(&Progress::Queued);
        let run_bytes = json(run);
        (&self.campaigns, &self.progress, &self.pending, &self.outbox)
            .transaction(|(campaigns, progress, pending, outbox)| {
                let mut queued = 0u64;
                for (i, openid) in openids.iter().enumerate() {
                    let k = campaign_key(name, openid);
                    if progress.get(&k)?.is_some() {
                        continue;
                    }
                    progress.insert(k.as_slice(), queued_state.as_slice())?;
                    pending.insert(k.as_slice(), &[][..])?;
                    if let Some((id, item)) = items.get(i) {
                        outbox.insert(&id_key(*id), item.as_slice())?;
                    }
                    queued += 1;
                }
                for (id, item) in &extra {
                    outbox.insert(&id_key(*id), item.as_slice())?;
                }
                campaigns.insert(name.as_bytes(), run_bytes.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(queued)
            })
            .map_err(tx_backend)
    }

    fn campaign_progress(
        &self,
        campaign: &str,
        openid: &str,
    ) -> Result<Option<Progress>, StoreError> {
        let k = campaign_key(campaign, openid);
        self.progress
            .get(&k)
            .map_err(backend)?
            .map(|v| from_json("campaign_progress", &k, &v))
            .transpose()
    }

    fn campaign_record_counted(
        &self,
        account: &str,
        campaign: &str,
        records: &[(String, Progress)],
        done_item: Option<u64>,
        job: Option<&MassJob>,
        counts: &[crate::report::Count],
    ) -> Result<(), StoreError> {
        // (progress key, progress, settled?, msgid index key)
        type Row = (Vec<u8>, Vec<u8>, bool, Option<Vec<u8>>);
        let rows: Vec<Row> = records
            .iter()
            .map(|(openid, p)| {
                let msgid = match p {
                    Progress::Sent {
                        msgid: Some(m),
                        channel,
                        ..
                    } if *channel != crate::campaign::Channel::Mass => Some(msgid_key(account, *m)),
                    _ => None,
                };
                (campaign_key(campaign, openid), json(p), settled(p), msgid)
            })
            .collect();
        let job = job.map(|j| {
            let mut k = campaign_key(campaign, "");
            k.extend_from_slice(&j.msg_id.to_be_bytes());
            (
                k,
                json(j),
                msgid_key(account, j.msg_id),
                campaign_key(campaign, ""),
            )
        });
        let callback = format!("campaign:{campaign}:{}", done_item.unwrap_or(0));
        let fact = self.new_fact(account, "", &callback, counts, true);
        let written = (
            &self.progress,
            &self.pending,
            &self.outbox,
            &self.msgids,
            &self.jobs,
            &self.facts,
        )
            .transaction(|(progress, pending, outbox, msgids, jobs, facts)| {
                for (k, value, done, msgid) in &rows {
                    progress.insert(k.as_slice(), value.as_slice())?;
                    if *done {
                        pending.remove(k.as_slice())?;
                    }
                    if let Some(m) = msgid {
                        msgids.insert(m.as_slice(), k.as_slice())?;
                    }
                }
                if let Some(id) = done_item {
                    outbox.remove(&id_key(id))?;
                }
                if let Some((jk, jv, mk, mv)) = &job {
                    jobs.insert(jk.as_slice(), jv.as_slice())?;
                    msgids.insert(mk.as_slice(), mv.as_slice())?;
                }
                if let Some(f) = &fact {
                    facts.insert(&f.key, f.value.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_backend);
        if let Some(f) = fact {
            self.fact_done(f, written.is_ok());
        }
        written
    }

    fn put_campaign_job(&self, campaign: &str, job: &MassJob) -> Result<(), StoreError> {
        let mut k = campaign_key(campaign, "");
        k.extend_from_slice(&job.msg_id.to_be_bytes());
        self.jobs.insert(k, json(job)).map_err(backend)?;
        Ok(())
    }

    fn campaign_jobs(&self, campaign: &str) -> Result<Vec<MassJob>, StoreError> {
        self.jobs
            .scan_prefix(campaign_key(campaign, ""))
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                from_json("campaign_jobs", &k, &v)
            })
            .collect()
    }

    fn campaign_progress_page(
        &self,
        campaign: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Progress)>, StoreError> {
        let prefix = campaign_key(campaign, "");
        let mut from = campaign_key(campaign, after.unwrap_or(""));
        if after.is_some() {
            from.push(0);
        }
        let mut out = Vec::with_capacity(limit.min(4096));
        for item in self.progress.range(from..) {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let openid = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((openid, from_json("campaign_progress", &k, &v)?));
        }
        Ok(out)
    }

    fn campaign_pending(&self, campaign: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in self.pending.scan_prefix(campaign_key(campaign, "")).keys() {
            item.map_err(backend)?;
            n += 1;
        }
        Ok(n)
    }

    fn campaign_by_msgid(
        &self,
        account: &str,
        msgid: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        let Some(v) = self
            .msgids
            .get(msgid_key(account, msgid))
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&v);
        Ok(text
            .split_once('\0')
            .map(|(c, o)| (c.to_string(), o.to_string())))
    }
}
