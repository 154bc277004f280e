//! An in-memory store for unit tests: the same contract as sled, one mutex for everything
//! (contention is no concern there).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{
    key, settled, Applied, CallbackKey, Commit, Ingested, Record, Store, StoreError, StoredToken,
};
use crate::audit::AuditEntry;
use crate::campaign::{CampaignRun, MassJob, Progress};
use crate::coupon::{
    claim, redeem, Batch, BatchState, ClaimRefused, Coupon, CouponStats, RedeemRefused,
};
use crate::follower::Follower;
use crate::outbox::{DeadItem, NewItem, OutboxItem};
use crate::report::Count;
use crate::sync::SyncRun;

#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<Vec<u8>, Record>>,
    audit: Mutex<Vec<AuditEntry>>,
    tokens: Mutex<HashMap<String, StoredToken>>,
    queue: Mutex<Queue>,
    coupons: Mutex<Coupons>,
    syncs: Mutex<HashMap<String, SyncRun>>,
    /// (unionid, account, openid).
    people: Mutex<std::collections::BTreeSet<(String, String, String)>>,
    /// (account, event id) → openid: the shop events applied. Locked after `records`.
    ingested: Mutex<HashMap<(String, String), String>>,
    /// (account, event id) → the event kept for a person not known yet. Locked after
    /// `ingested`.
    kept: Mutex<BTreeMap<(String, String), super::KeptEvent>>,
    /// account → its counters and facts. Locked after `records` (and after `kept`).
    reports: Mutex<HashMap<String, Reports>>,
    /// Referral programmes: one lock for all of them (a test store).
    referrals: Mutex<Referrals>,
}

#[derive(Debug, Default)]
struct Reports {
    counters: crate::report::Tally,
    facts: Vec<Vec<Count>>,
}

#[derive(Debug, Default)]
struct Coupons {
    states: HashMap<String, BatchState>,
    /// code → coupon (codes are unique across batches).
    codes: BTreeMap<String, Coupon>,
    held: HashMap<(String, String, String), u32>,
    /// (account, openid, batch, request) → code.
    requests: HashMap<(String, String, String, String), String>,
}

#[derive(Debug, Default)]
struct Queue {
    next_id: u64,
    outbox: BTreeMap<u64, OutboxItem>,
    dead: BTreeMap<u64, DeadItem>,
    tag_ids: HashMap<(String, String), i64>,
    // Campaigns live with the queue: their progress and its outbox items change together.
    campaigns: BTreeMap<String, CampaignRun>,
    /// (campaign, openid) → progress.
    progress: BTreeMap<(String, String), Progress>,
    /// (account, msgid) → (campaign, openid; "" for a mass job).
    msgids: HashMap<(String, i64), (String, String)>,
    /// (campaign, msg_id) → mass job.
    jobs: BTreeMap<(String, i64), MassJob>,
    /// (account, channel) → its code: with the queue, as its queued mark is written with
    /// the item.
    channel_codes: BTreeMap<(String, String), crate::channel_code::ChannelCode>,
}

impl Queue {
    fn push(&mut self, account: &str, items: Vec<NewItem>, now_ms: i64) -> Vec<u64> {
        items
            .into_iter()
            .map(|item| {
                self.next_id += 1;
                let id = self.next_id;
                self.outbox
                    .insert(id, OutboxItem::new(id, account, item, now_ms));
                id
            })
            .collect()
    }
}

fn page<T: Clone>(map: &BTreeMap<u64, T>, after: Option<u64>, limit: usize) -> Vec<T> {
    let start = after.map_or(0, |a| a.saturating_add(1));
    map.range(start..)
        .take(limit)
        .map(|(_, v)| v.clone())
        .collect()
}

impl MemoryStore {
    /// A commit's counts, as counters and as a fact (called under the records lock).
    fn count(&self, account: &str, counts: Vec<Count>) {
        if counts.is_empty() {
            return;
        }
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let r = reports.entry(account.to_string()).or_default();
        for c in &counts {
            r.counters.add(c);
        }
        r.facts.push(counts);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Record>> {
        // A panic while holding the lock cannot leave a half-written record (each callback
        // is one map insert after the decision), so a poisoned lock is still usable.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Participants by (programme, id), invites by (programme, invitee), rewards by
/// (programme, inviter, tier).
#[derive(Debug, Default)]
struct Referrals {
    participants: BTreeMap<(String, String), super::Participant>,
    invites: BTreeMap<(String, String), crate::referral::InviteRecord>,
    rewards: BTreeMap<(String, String, u32), super::RewardRecord>,
}

impl MemoryStore {
    fn referrals(&self) -> std::sync::MutexGuard<'_, Referrals> {
        self.referrals.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl super::ChannelCodes for MemoryStore {
    fn channel_code(
        &self,
        account: &str,
        channel: &str,
    ) -> Result<Option<crate::channel_code::ChannelCode>, StoreError> {
        let k = (account.to_string(), channel.to_string());
        Ok(self.queue().channel_codes.get(&k).cloned())
    }

    fn all_channel_codes(&self) -> Result<Vec<crate::channel_code::ChannelCode>, StoreError> {
        Ok(self.queue().channel_codes.values().cloned().collect())
    }

    fn queue_channel_code(
        &self,
        account: &str,
        channel: &str,
        item: NewItem,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let mut q = self.queue();
        let k = (account.to_string(), channel.to_string());
        let old = q.channel_codes.get(&k).cloned();
        if old.as_ref().is_some_and(|e| e.queued_at.is_some()) {
            return Ok(None);
        }
        let id = q.push(account, vec![item], now_ms)[0];
        let entry = super::channel_codes::queued(old, account, channel, now_ms);
        q.channel_codes.insert(k, entry);
        Ok(Some(id))
    }

    fn put_channel_code(
        &self,
        account: &str,
        channel: &str,
        code: &crate::channel_code::IssuedCode,
    ) -> Result<(), StoreError> {
        let entry = super::channel_codes::issued(account, channel, code);
        self.queue()
            .channel_codes
            .insert((account.to_string(), channel.to_string()), entry);
        Ok(())
    }

    fn channel_code_failed(
        &self,
        account: &str,
        channel: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut q = self.queue();
        let k = (account.to_string(), channel.to_string());
        let old = q.channel_codes.get(&k).cloned();
        let entry = super::channel_codes::failed(old, account, channel, reason);
        q.channel_codes.insert(k, entry);
        Ok(())
    }
}

impl Store for MemoryStore {
    fn referral_participant(
        &self,
        programme: &str,
        id: &crate::referral::ParticipantId,
    ) -> Result<Option<super::Participant>, StoreError> {
        let key = (programme.to_string(), id.to_string());
        Ok(self.referrals().participants.get(&key).cloned())
    }

    fn update_referral_participant(
        &self,
        account: &str,
        programme: &str,
        id: &crate::referral::ParticipantId,
        change: &mut dyn FnMut(Option<super::Participant>) -> super::ParticipantChange,
    ) -> Result<Option<super::Participant>, StoreError> {
        let key = (programme.to_string(), id.to_string());
        let mut r = self.referrals();
        let (after, items) = change(r.participants.get(&key).cloned());
        if let Some(p) = after {
            r.participants.insert(key.clone(), p);
        }
        if !items.is_empty() {
            self.queue().push(account, items, crate::outbox::now_ms());
        }
        Ok(r.participants.get(&key).cloned())
    }

    fn referral_write(
        &self,
        account: &str,
        programme: &str,
        people: &[&str],
        change: &mut dyn FnMut(&super::InviteView) -> super::InviteChange,
    ) -> Result<super::InviteChange, StoreError> {
        let mut r = self.referrals();
        let view = super::InviteView::of(
            r.invites
                .iter()
                .filter(|((p, _), _)| p == programme)
                .map(|(_, v)| v.clone()),
            r.rewards
                .iter()
                .filter(|((p, _, _), _)| p == programme)
                .map(|(_, v)| v.clone()),
            people,
        );
        let mut done = change(&view);
        for rec in &done.records {
            r.invites
                .insert((programme.to_string(), rec.invitee.clone()), rec.clone());
        }
        done.rewards.retain(|w| {
            let key = (programme.to_string(), w.inviter.clone(), w.tier);
            !r.rewards.contains_key(&key) && r.rewards.insert(key, w.clone()).is_none()
        });
        if !done.items.is_empty() {
            self.queue()
                .push(account, done.items.clone(), crate::outbox::now_ms());
        }
        Ok(done)
    }

    fn referral_invites(
        &self,
        programme: &str,
    ) -> Result<Vec<crate::referral::InviteRecord>, StoreError> {
        Ok(self
            .referrals()
            .invites
            .iter()
            .filter(|((p, _), _)| p == programme)
            .map(|(_, v)| v.clone())
            .collect())
    }

    fn referral_rewards(&self, programme: &str) -> Result<Vec<super::RewardRecord>, StoreError> {
        Ok(self
            .referrals()
            .rewards
            .iter()
            .filter(|((p, _, _), _)| p == programme)
            .map(|(_, v)| v.clone())
            .collect())
    }

    fn people(&self, unionid: &str) -> Result<Vec<(String, String)>, StoreError> {
        let people = self.people.lock().unwrap_or_else(|p| p.into_inner());
        Ok(people
            .iter()
            .filter(|(u, _, _)| u == unionid)
            .map(|(_, a, o)| (a.clone(), o.clone()))
            .collect())
    }

    fn sync_run(&self, account: &str) -> Result<Option<SyncRun>, StoreError> {
        let syncs = self.syncs.lock().unwrap_or_else(|p| p.into_inner());
        Ok(syncs.get(account).cloned())
    }

    fn sync_step(
        &self,
        account: &str,
        openids: &[String],
        run: &mut SyncRun,
        merge: &mut crate::store::SyncMerge<'_>,
    ) -> Result<(), StoreError> {
        let mut records = self.lock();
        // Decided in full before anything is written: all or nothing.
        let mut items = Vec::new();
        let changed: Vec<(Vec<u8>, Follower)> = openids
            .iter()
            .filter_map(|o| {
                let k = key(account, o);
                let stored = records.get(&k).and_then(|r| r.follower.clone());
                merge(run, o, stored, &mut items).map(|f| (k, f))
            })
            .collect();
        // Under the records lock: the followers and their items are seen together.
        self.queue().push(account, items, crate::outbox::now_ms());
        let mut people = self.people.lock().unwrap_or_else(|p| p.into_inner());
        for (k, f) in changed {
            let record = records.entry(k).or_default();
            if let Some((old, new)) = super::person_link(record.follower.as_ref(), &f) {
                if let Some(old) = old {
                    people.remove(&(old, account.to_string(), f.openid.clone()));
                }
                people.insert((new, account.to_string(), f.openid.clone()));
            }
            record.follower = Some(f);
        }
        let mut syncs = self.syncs.lock().unwrap_or_else(|p| p.into_inner());
        syncs.insert(account.to_string(), run.clone());
        Ok(())
    }

    fn ingest_event(
        &self,
        account: &str,
        openid: &str,
        event_id: &str,
        change: &mut dyn FnMut(Option<Follower>) -> Option<(Follower, Vec<Count>)>,
    ) -> Result<Ingested, StoreError> {
        let mut records = self.lock();
        let mut ingested = self.ingested.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let id = (account.to_string(), event_id.to_string());
        if ingested.contains_key(&id) {
            kept.remove(&id);
            return Ok(Ingested::Duplicate);
        }
        let k = key(account, openid);
        let stored = records.get(&k).and_then(|r| r.follower.clone());
        let Some((after, counts)) = change(stored) else {
            return Ok(Ingested::Declined);
        };
        records.entry(k).or_default().follower = Some(after.clone());
        kept.remove(&id);
        self.count(account, crate::report::merge(counts));
        ingested.insert(id, openid.to_string());
        Ok(Ingested::Applied(Box::new(after)))
    }

    fn report_counts(&self, account: &str, from: i64, to: i64) -> Result<Vec<Count>, StoreError> {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        Ok(reports.get(account).map_or_else(Vec::new, |r| {
            r.counters
                .counts()
                .into_iter()
                .filter(|c| (from..=to).contains(&c.day))
                .collect()
        }))
    }

    fn report_facts(
        &self,
        account: &str,
        visit: &mut dyn FnMut(Vec<Count>),
    ) -> Result<(), StoreError> {
        let facts: Vec<Vec<Count>> = {
            let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
            reports
                .get(account)
                .map(|r| r.facts.clone())
                .unwrap_or_default()
        };
        facts.into_iter().for_each(visit);
        Ok(())
    }

    fn replace_report_counts(&self, account: &str, counts: &[Count]) -> Result<(), StoreError> {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.entry(account.to_string()).or_default().counters =
            crate::report::Tally::from_counts(counts);
        Ok(())
    }

    fn keep_event(&self, account: &str, event: &super::KeptEvent) -> Result<bool, StoreError> {
        let ingested = self.ingested.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let id = (account.to_string(), event.id.clone());
        if ingested.contains_key(&id) || kept.contains_key(&id) {
            return Ok(false);
        }
        kept.insert(id, event.clone());
        Ok(true)
    }

    fn kept_events(
        &self,
        account: &str,
        unionids: &[String],
    ) -> Result<Vec<super::KeptEvent>, StoreError> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<super::KeptEvent> = kept
            .iter()
            .filter(|((a, _), k)| a == account && unionids.contains(&k.unionid))
            .map(|(_, k)| k.clone())
            .collect();
        found.sort_by(|a, b| (&a.unionid, &a.id).cmp(&(&b.unionid, &b.id)));
        Ok(found)
    }

    fn ingested(&self, account: &str, event_id: &str) -> Result<Option<String>, StoreError> {
        let ingested = self.ingested.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ingested
            .get(&(account.to_string(), event_id.to_string()))
            .cloned())
    }

    fn follower(&self, account: &str, openid: &str) -> Result<Option<Follower>, StoreError> {
        Ok(self
            .lock()
            .get(&key(account, openid))
            .and_then(|r| r.follower.clone()))
    }

    fn apply_callback(
        &self,
        k: CallbackKey<'_>,
        decide: &mut dyn FnMut(Option<Follower>) -> Commit,
    ) -> Result<Applied, StoreError> {
        let mut records = self.lock();
        let record = records.entry(key(k.account, k.openid)).or_default();
        let (applied, effects, counts) = record.apply(k, decide);
        // Under the records lock: the writes are seen together or not at all.
        self.queue()
            .push(k.account, effects, k.now.saturating_mul(1000));
        self.count(k.account, counts);
        Ok(applied)
    }

    fn update_follower_and_queue(
        &self,
        account: &str,
        openid: &str,
        change: &mut dyn FnMut(&mut Follower) -> Vec<NewItem>,
    ) -> Result<Option<Follower>, StoreError> {
        let mut records = self.lock();
        let Some(f) = records
            .get_mut(&key(account, openid))
            .and_then(|r| r.follower.as_mut())
        else {
            return Ok(None);
        };
        let items = change(f);
        // Under the records lock, as `apply_callback`.
        self.queue().push(account, items, crate::outbox::now_ms());
        Ok(Some(f.clone()))
    }

    fn for_each_follower(
        &self,
        account: &str,
        visit: &mut dyn FnMut(Follower),
    ) -> Result<(), StoreError> {
        let prefix = key(account, "");
        let sorted: BTreeMap<Vec<u8>, Follower> = self
            .lock()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, r)| Some((k.clone(), r.follower.clone()?)))
            .collect();
        sorted.into_values().for_each(visit);
        Ok(())
    }

    fn followers_after(
        &self,
        account: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Follower>, StoreError> {
        let prefix = key(account, "");
        let from = key(account, after.unwrap_or(""));
        let sorted: BTreeMap<Vec<u8>, Follower> = self
            .lock()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && (after.is_none() || **k > from))
            .filter_map(|(k, r)| Some((k.clone(), r.follower.clone()?)))
            .collect();
        Ok(sorted.into_values().take(limit).collect())
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry.clone());
        Ok(())
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut all = self.audit.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Ordered by time like the sled tree (a stable sort keeps arrival order within a second).
        all.sort_by_key(|e| e.at);
        Ok(all.into_iter().rev().take(limit).collect())
    }

    fn token(&self, account: &str) -> Result<Option<StoredToken>, StoreError> {
        Ok(self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .cloned())
    }

    fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), StoreError> {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.to_string(), token.clone());
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn enqueue(
        &self,
        account: &str,
        items: Vec<NewItem>,
        now_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        Ok(self.queue().push(account, items, now_ms))
    }

    fn outbox_page(&self, after: Option<u64>, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        Ok(page(&self.queue().outbox, after, limit))
    }

    fn outbox_done(&self, id: u64) -> Result<(), StoreError> {
        self.queue().outbox.remove(&id);
        Ok(())
    }

    fn outbox_retry_later(&self, item: &OutboxItem) -> Result<(), StoreError> {
        if let Some(queued) = self.queue().outbox.get_mut(&item.id) {
            *queued = item.clone();
        }
        Ok(())
    }

    fn outbox_bury(&self, item: &OutboxItem, reason: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut q = self.queue();
        q.outbox.remove(&item.id);
        q.dead.insert(
            item.id,
            DeadItem {
                item: item.clone(),
                reason: reason.to_string(),
                died_ms: now_ms,
            },
        );
        Ok(())
    }

    fn dead_letters(&self, after: Option<u64>, limit: usize) -> Result<Vec<DeadItem>, StoreError> {
        Ok(page(&self.queue().dead, after, limit))
    }

    fn requeue_dead(&self, id: u64, now_ms: i64) -> Result<Option<OutboxItem>, StoreError> {
        let mut q = self.queue();
        let Some(dead) = q.dead.remove(&id) else {
            return Ok(None);
        };
        let item = dead.requeued(now_ms);
        q.outbox.insert(id, item.clone());
        Ok(Some(item))
    }

    fn tag_id(&self, account: &str, tag: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .queue()
            .tag_ids
            .get(&(account.to_string(), tag.to_string()))
            .copied())
    }

    fn claim_coupon(
        &self,
        batch: &Batch,
        account: &str,
        openid: &str,
        now: i64,
        request: Option<&str>,
    ) -> Result<Result<Coupon, ClaimRefused>, StoreError> {
        let mut c = self.coupons.lock().unwrap_or_else(|p| p.into_inner());
        let request_key = request.map(|r| {
            (
                account.to_string(),
                openid.to_string(),
                batch.name.clone(),
                r.to_string(),
            )
        });
        if let Some(code) = request_key.as_ref().and_then(|k| c.requests.get(k)) {
            if let Some(coupon) = c.codes.get(code) {
                return Ok(Ok(coupon.clone()));
            }
        }
        let state = c.states.get(&batch.name).copied().unwrap_or_default();
        let who = (batch.name.clone(), account.to_string(), openid.to_string());
        let held = c.held.get(&who).copied().unwrap_or(0);
        let codes = &c.codes;
        let decided = claim(batch, state, held, account, openid, now, &mut |code| {
            codes.contains_key(code)
        });
        let Ok(coupon) = decided else {
            return Ok(decided);
        };
        c.states.insert(
            batch.name.clone(),
            BatchState {
                issued: state.issued + 1,
                ..state
            },
        );
        c.held.insert(who, held + 1);
        c.codes.insert(coupon.code.clone(), coupon.clone());
        if let Some(k) = request_key {
            c.requests.insert(k, coupon.code.clone());
        }
        Ok(Ok(coupon))
    }

    fn redeem_coupon(
        &self,
        code: &str,
        now: i64,
        zone: crate::local_time::UtcOffset,
    ) -> Result<Result<Coupon, RedeemRefused>, StoreError> {
        // The holder first (records before coupons, the order callbacks lock them in).
        let holder = {
            let c = self.coupons.lock().unwrap_or_else(|p| p.into_inner());
            c.codes
                .get(code)
                .map(|k| (k.account.clone(), k.openid.clone()))
        };
        let Some((account, openid)) = holder else {
            return Ok(Err(RedeemRefused::Unknown(code.to_string())));
        };
        let records = self.lock();
        let follower = records
            .get(&key(&account, &openid))
            .and_then(|r| r.follower.as_ref());
        let counts = crate::report::redeem_counts(follower, now, zone);
        let mut c = self.coupons.lock().unwrap_or_else(|p| p.into_inner());
        let Some(coupon) = c.codes.get(code).cloned() else {
            return Ok(Err(RedeemRefused::Unknown(code.to_string())));
        };
        let used = match redeem(coupon, now) {
            Ok(used) => used,
            Err(refused) => return Ok(Err(refused)),
        };
        c.states.entry(used.batch.clone()).or_default().redeemed += 1;
        c.codes.insert(code.to_string(), used.clone());
        self.count(&account, crate::report::merge(counts));
        Ok(Ok(used))
    }

    fn coupon(&self, code: &str) -> Result<Option<Coupon>, StoreError> {
        let c = self.coupons.lock().unwrap_or_else(|p| p.into_inner());
        Ok(c.codes.get(code).cloned())
    }

    fn coupon_stats(&self, batch: &Batch, now: i64) -> Result<CouponStats, StoreError> {
        let c = self.coupons.lock().unwrap_or_else(|p| p.into_inner());
        let state = c.states.get(&batch.name).copied().unwrap_or_default();
        let expired = c
            .codes
            .values()
            .filter(|k| k.batch == batch.name && k.redeemed_at.is_none() && k.expires_at <= now)
            .count() as u64;
        Ok(CouponStats {
            issued: state.issued,
            redeemed: state.redeemed,
            expired,
            left: batch.stock.saturating_sub(state.issued),
        })
    }

    fn put_tag_id(&self, account: &str, tag: &str, id: i64) -> Result<(), StoreError> {
        self.queue()
            .tag_ids
            .insert((account.to_string(), tag.to_string()), id);
        Ok(())
    }

    fn campaign_run(&self, name: &str) -> Result<Option<CampaignRun>, StoreError> {
        Ok(self.queue().campaigns.get(name).cloned())
    }

    fn campaign_runs(&self) -> Result<Vec<CampaignRun>, StoreError> {
        Ok(self.queue().campaigns.values().cloned().collect())
    }

    fn put_campaign_run(&self, run: &CampaignRun) -> Result<(), StoreError> {
        self.queue()
            .campaigns
            .insert(run.campaign.name.clone(), run.clone());
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
        let mut q = self.queue();
        q.push(account, extra, now_ms);
        let mut queued = 0;
        for openid in openids {
            let k = (name.clone(), openid.clone());
            if q.progress.contains_key(&k) {
                continue;
            }
            q.progress.insert(k, Progress::Queued);
            if per_follower {
                q.push(
                    account,
                    vec![crate::campaign::runner::outbox_item(name, openid)],
                    now_ms,
                );
            }
            queued += 1;
        }
        q.campaigns.insert(name.clone(), run.clone());
        Ok(queued)
    }

    fn campaign_progress(
        &self,
        campaign: &str,
        openid: &str,
    ) -> Result<Option<Progress>, StoreError> {
        Ok(self
            .queue()
            .progress
            .get(&(campaign.to_string(), openid.to_string()))
            .cloned())
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
        let mut q = self.queue();
        // Under the queue lock, as the item's removal.
        self.count(account, counts.to_vec());
        if let Some(id) = done_item {
            q.outbox.remove(&id);
        }
        for (openid, progress) in records {
            if let Progress::Sent {
                msgid: Some(msgid),
                channel,
                ..
            } = progress
            {
                if *channel != crate::campaign::Channel::Mass {
                    q.msgids.insert(
                        (account.to_string(), *msgid),
                        (campaign.to_string(), openid.clone()),
                    );
                }
            }
            q.progress
                .insert((campaign.to_string(), openid.clone()), progress.clone());
        }
        if let Some(job) = job {
            q.msgids.insert(
                (account.to_string(), job.msg_id),
                (campaign.to_string(), String::new()),
            );
            q.jobs
                .insert((campaign.to_string(), job.msg_id), job.clone());
        }
        Ok(())
    }

    fn put_campaign_job(&self, campaign: &str, job: &MassJob) -> Result<(), StoreError> {
        self.queue()
            .jobs
            .insert((campaign.to_string(), job.msg_id), job.clone());
        Ok(())
    }

    fn campaign_jobs(&self, campaign: &str) -> Result<Vec<MassJob>, StoreError> {
        Ok(self
            .queue()
            .jobs
            .range((campaign.to_string(), i64::MIN)..)
            .take_while(|((c, _), _)| c == campaign)
            .map(|(_, j)| j.clone())
            .collect())
    }

    fn campaign_progress_page(
        &self,
        campaign: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Progress)>, StoreError> {
        let q = self.queue();
        let from = (campaign.to_string(), after.unwrap_or("").to_string());
        Ok(q.progress
            .range(from..)
            .filter(|((_, o), _)| after.is_none_or(|a| o.as_str() > a))
            .take_while(|((c, _), _)| c == campaign)
            .take(limit)
            .map(|((_, o), p)| (o.clone(), p.clone()))
            .collect())
    }

    fn campaign_pending(&self, campaign: &str) -> Result<u64, StoreError> {
        let q = self.queue();
        Ok(q.progress
            .range((campaign.to_string(), String::new())..)
            .take_while(|((c, _), _)| c == campaign)
            .filter(|(_, p)| !settled(p))
            .count() as u64)
    }

    fn campaign_by_msgid(
        &self,
        account: &str,
        msgid: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .queue()
            .msgids
            .get(&(account.to_string(), msgid))
            .cloned())
    }
}
