//! Storage behind a small trait: one record per follower, holding the follower's state and
//! the callbacks of theirs recently answered (the dedupe keys, with the cached answers).
//!
//! The engine never sees sled. One callback is one call to `apply_callback`, which runs the
//! engine's (pure) decision on the current record and writes the new record, or nothing.
//! Keeping a follower's dedupe keys inside their record makes that write a single key:
//! atomic by nature, with no cross-key transaction (which in sled costs ~20× a plain insert,
//! see README "Speed"). Backends must serialise concurrent callbacks for one follower so no
//! update is lost: the sled backend with striped in-process locks (sled is single-process
//! anyway); a shared backend for scale-out would use its own (e.g. Redis WATCH/MULTI on the
//! one key).

pub mod channel_codes;
mod format;
mod group_flush;
mod legacy;
mod memory;
pub mod portable;
pub mod postgres;
pub mod referrals;
pub mod shared_rules;
mod sled_store;

pub use channel_codes::ChannelCodes;
pub use group_flush::GroupFlush;
pub use memory::MemoryStore;
pub use postgres::PgStore;
pub use referrals::{
    InviteChange, InviteView, Participant, ParticipantChange, PosterMedia, QrCode, RewardRecord,
};
pub use sled_store::SledStore;

/// A sync step's change to one follower ([`Store::sync_step`]): the run to count in, the
/// openid, the follower as stored, and where to put the outbox items the change causes
/// (queued in the step's write); `None` leaves them as stored.
pub type SyncMerge<'a> = dyn FnMut(
        &mut SyncRun,
        &str,
        Option<crate::follower::Follower>,
        &mut Vec<NewItem>,
    ) -> Option<crate::follower::Follower>
    + 'a;

/// A campaign's run, one follower's progress in it, and the follower
/// ([`Store::campaign_send_state`]).
pub type CampaignSendState = (
    Option<crate::campaign::CampaignRun>,
    Option<Progress>,
    Option<crate::follower::Follower>,
);

use serde::{Deserialize, Serialize};

use crate::audit::AuditEntry;
use crate::campaign::{CampaignRun, MassJob, Progress};
use crate::config::Secret;
use crate::coupon::{Batch, ClaimRefused, Coupon, CouponStats, RedeemRefused};
use crate::follower::{Follower, HISTORY_LEN};
use crate::outbox::{DeadItem, NewItem, OutboxItem};
use crate::protocol::Reply;
use crate::referral::{InviteRecord, ParticipantId};
use crate::report::Count;
use crate::sync::SyncRun;

/// How many recent deliveries a record remembers. WeChat retries within ~15 s; a follower
/// would have to send more than this many callbacks inside that window to push a key out
/// before its retry arrives.
pub const DELIVERIES_KEPT: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store is locked by another process at {path} (is `siyu serve` running on it?)")]
    Locked { path: String },
    #[error("store I/O error: {0}")]
    Backend(String),
    #[error("stored record under {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

/// What a callback answered, kept with its dedupe key so that WeChat's retry of the same
/// callback gets the same reply and causes nothing new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub reply: Option<Reply>,
    /// The rules that fired, for logs.
    pub rules: Vec<String>,
}

/// An account's API access token, kept so that a restart (or a second client over the same
/// store) reuses it: fetches are limited per day and each new token retires the previous
/// one (protocol.md §8). `Debug` never shows the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredToken {
    #[serde(serialize_with = "expose_secret")]
    pub access_token: Secret,
    /// Unix seconds.
    pub expires_at: i64,
}

fn expose_secret<S: serde::Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose())
}

/// Where one callback writes.
#[derive(Debug, Clone, Copy)]
pub struct CallbackKey<'a> {
    pub account: &'a str,
    pub openid: &'a str,
    /// `Inbound::dedupe_key`, unique per delivery within the account.
    pub dedupe_key: &'a str,
    pub now: i64,
    /// Until when a retry of this callback is recognised.
    pub expires_at: i64,
}

/// The state one callback leaves behind.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The follower afterwards. `None` only when there was none and the callback creates
    /// none (e.g. a mass-send report, not a follower's act): the decision is handed the
    /// stored follower by value, so returning `None` for a known follower would drop it.
    pub follower: Option<Follower>,
    pub answer: Answer,
    /// Calls to WeChat the callback causes, queued in the same atomic write.
    pub effects: Vec<NewItem>,
    /// The report counters it changes (`report::callback_counts`), in the same write.
    pub counts: Vec<Count>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// First delivery: the commit was written.
    Fresh(Answer),
    /// A retry: nothing was written; this is the first delivery's answer.
    Duplicate(Answer),
}

/// A shop event for a person no follower of the account is known as yet (by `unionid`),
/// kept until a sync links the unionid (`[ingest] unknown = "keep"`, README "Behaviour
/// from the shop"). `event` is the event as the shop posted it, checked again by the same
/// code as a live event when it is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptEvent {
    pub id: String,
    pub unionid: String,
    pub event: serde_json::Value,
    /// Unix seconds.
    pub kept_at: i64,
}

/// What [`Store::ingest_event`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// The event was new: the follower afterwards and the event id were written.
    /// (Boxed: a follower is large beside the other variants.)
    Applied(Box<Follower>),
    /// The event id was applied before: nothing was written.
    Duplicate,
    /// The change declined the event: nothing was written.
    Declined,
}

pub trait Store: Send + Sync + ChannelCodes {
    fn follower(&self, account: &str, openid: &str) -> Result<Option<Follower>, StoreError>;

    /// Runs `decide` on the follower's current state (None if unknown) unless this
    /// callback was already answered, and writes its commit atomically. `decide` must be
    /// pure (no effects but its result): a backend may run it again (e.g. after an
    /// optimistic-concurrency conflict).
    ///
    /// The follower's history is a log that decisions write and never read: `decide` gets
    /// the follower with an empty `history`, the entries in the committed follower's
    /// `history` are appended to the stored ones, and the newest [`HISTORY_LEN`] are kept.
    /// (A backend can then leave the stored entries as they are instead of decoding and
    /// encoding them on every callback.)
    fn apply_callback(
        &self,
        key: CallbackKey<'_>,
        decide: &mut dyn FnMut(Option<Follower>) -> Commit,
    ) -> Result<Applied, StoreError>;

    /// Changes a known follower atomically (operators' edits); `None` if unknown.
    fn update_follower(
        &self,
        account: &str,
        openid: &str,
        change: &mut dyn FnMut(&mut Follower),
    ) -> Result<Option<Follower>, StoreError> {
        self.update_follower_and_queue(account, openid, &mut |f| {
            change(f);
            Vec::new()
        })
    }

    /// Changes a known follower atomically together with the outbox items `change` returns
    /// (a crash keeps both or neither; an imported line's automatic tags mirrored to
    /// WeChat); `None` if unknown, and then nothing is queued.
    fn update_follower_and_queue(
        &self,
        account: &str,
        openid: &str,
        change: &mut dyn FnMut(&mut Follower) -> Vec<NewItem>,
    ) -> Result<Option<Follower>, StoreError>;

    /// Visits every follower of an account, in key order, streaming (never all in memory).
    fn for_each_follower(
        &self,
        account: &str,
        visit: &mut dyn FnMut(Follower),
    ) -> Result<(), StoreError>;

    /// Up to `limit` followers of an account with an openid above `after`, in key order
    /// (campaigns walk their audience with this, chunk by chunk).
    fn followers_after(
        &self,
        account: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Follower>, StoreError>;

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// The newest `limit` audit entries, newest first.
    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// The access token last stored for an account (API client, `src/api/token.rs`).
    fn token(&self, account: &str) -> Result<Option<StoredToken>, StoreError>;

    /// Replaces the account's stored access token.
    fn put_token(&self, account: &str, token: &StoredToken) -> Result<(), StoreError>;

    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    // --- The outbox (`src/outbox/`) ---

    /// Queues items that no callback causes (campaigns, operators); returns their ids.
    fn enqueue(
        &self,
        account: &str,
        items: Vec<NewItem>,
        now_ms: i64,
    ) -> Result<Vec<u64>, StoreError>;

    /// Up to `limit` queued items with an id above `after`, in id (queue) order. The worker
    /// pages through the queue with this: never the whole queue in memory.
    fn outbox_page(&self, after: Option<u64>, limit: usize) -> Result<Vec<OutboxItem>, StoreError>;

    /// Delivered: the item leaves the queue.
    fn outbox_done(&self, id: u64) -> Result<(), StoreError>;

    /// Writes an item back after a failed attempt (its attempts, due time, last error).
    fn outbox_retry_later(&self, item: &OutboxItem) -> Result<(), StoreError>;

    /// Moves an item from the queue to the dead letters, atomically.
    fn outbox_bury(&self, item: &OutboxItem, reason: &str, now_ms: i64) -> Result<(), StoreError>;

    /// Up to `limit` dead letters with an id above `after`, in id order.
    fn dead_letters(&self, after: Option<u64>, limit: usize) -> Result<Vec<DeadItem>, StoreError>;

    /// Moves a dead letter back into the queue, due now, attempts reset (`siyu outbox
    /// retry`); `None` if there is no dead letter with this id.
    fn requeue_dead(&self, id: u64, now_ms: i64) -> Result<Option<OutboxItem>, StoreError>;

    /// The WeChat tag id of a tag name, as cached by tag sync.
    fn tag_id(&self, account: &str, tag: &str) -> Result<Option<i64>, StoreError>;

    fn put_tag_id(&self, account: &str, tag: &str, id: i64) -> Result<(), StoreError>;

    // --- Coupons (`src/coupon/`) ---

    /// Gives the follower one code of `batch` in one atomic step: the batch's stock, the
    /// follower's count and the code's owner change together or not at all, however many
    /// claims race. `Ok(Err(_))`: refused (out of stock, limit reached, batch over).
    /// `request`: an idempotency key (a callback's dedupe key, a campaign's send id): the
    /// same request claims once and gets the same code back ever after.
    fn claim_coupon(
        &self,
        batch: &Batch,
        account: &str,
        openid: &str,
        now: i64,
        request: Option<&str>,
    ) -> Result<Result<Coupon, ClaimRefused>, StoreError>;

    /// Marks a code used, once, and counts it for the report (`coupons_redeemed`, on the
    /// local day of `now` at `zone`, under the holder's first touch) in the same write.
    fn redeem_coupon(
        &self,
        code: &str,
        now: i64,
        zone: crate::local_time::UtcOffset,
    ) -> Result<Result<Coupon, RedeemRefused>, StoreError>;

    fn coupon(&self, code: &str) -> Result<Option<Coupon>, StoreError>;

    /// Issued, redeemed, expired and left (streams the batch's codes for `expired`).
    fn coupon_stats(&self, batch: &Batch, now: i64) -> Result<CouponStats, StoreError>;

    // --- Campaigns (`src/campaign/`) ---

    fn campaign_run(&self, name: &str) -> Result<Option<CampaignRun>, StoreError>;

    /// Every campaign the store knows (started, scheduled or defined from the CLI).
    fn campaign_runs(&self) -> Result<Vec<CampaignRun>, StoreError>;

    /// Writes a campaign's run (its state: start, pause, resume, done).
    fn put_campaign_run(&self, run: &CampaignRun) -> Result<(), StoreError>;

    /// Queues one chunk of a campaign's audience in one atomic step: every follower of
    /// `openids` without progress yet gets `Queued` and an outbox item, and `run` (its
    /// cursor and count, updated by the caller) is written with them. A follower queued
    /// before (a chunk redone after a crash) is left alone; `extra` items (a group-robot
    /// announcement) are queued in the same step. Returns how many followers were queued.
    /// `per_follower`: one outbox item per follower queued (else only `extra`: a mass
    /// send's item carries its followers). `account`: whose followers `openids` are (a
    /// campaign over several accounts queues one account at a time).
    fn campaign_enqueue(
        &self,
        run: &CampaignRun,
        account: &str,
        openids: &[String],
        extra: Vec<NewItem>,
        per_follower: bool,
        now_ms: i64,
    ) -> Result<u64, StoreError>;

    fn campaign_progress(
        &self,
        campaign: &str,
        openid: &str,
    ) -> Result<Option<Progress>, StoreError>;

    /// What one follower's campaign send reads first: the campaign's run, the follower's
    /// progress in it, and the follower. A store over the network reads them in one
    /// round trip.
    fn campaign_send_state(
        &self,
        campaign: &str,
        account: &str,
        openid: &str,
    ) -> Result<CampaignSendState, StoreError> {
        Ok((
            self.campaign_run(campaign)?,
            self.campaign_progress(campaign, openid)?,
            self.follower(account, openid)?,
        ))
    }

    /// Records a follower's progress in one atomic step with the outbox item it settles
    /// (`done_item` leaves the queue) and, for a sent message with a WeChat `msgid`, the
    /// index that job-finished callbacks are matched by.
    fn campaign_record(
        &self,
        account: &str,
        campaign: &str,
        openid: &str,
        progress: &Progress,
        done_item: Option<u64>,
    ) -> Result<(), StoreError> {
        self.campaign_record_many(
            account,
            campaign,
            &[(openid.to_string(), progress.clone())],
            done_item,
            None,
        )
    }

    /// Records many followers' progress (a mass send's) in one atomic step, with the item
    /// it settles and the mass job (indexed by its msg_id for MASSSENDJOBFINISH).
    fn campaign_record_many(
        &self,
        account: &str,
        campaign: &str,
        records: &[(String, Progress)],
        done_item: Option<u64>,
        job: Option<&MassJob>,
    ) -> Result<(), StoreError> {
        self.campaign_record_counted(account, campaign, records, done_item, job, &[])
    }

    /// [`Store::campaign_record_many`] with the report counts of the sends it settles
    /// (`campaign_sends:<channel>`), in the same atomic step: a send is counted exactly
    /// when its outbox item leaves the queue.
    fn campaign_record_counted(
        &self,
        account: &str,
        campaign: &str,
        records: &[(String, Progress)],
        done_item: Option<u64>,
        job: Option<&MassJob>,
        counts: &[Count],
    ) -> Result<(), StoreError>;

    /// Writes what MASSSENDJOBFINISH said of a campaign's mass job.
    fn put_campaign_job(&self, campaign: &str, job: &MassJob) -> Result<(), StoreError>;

    /// A campaign's mass jobs, in msg_id order.
    fn campaign_jobs(&self, campaign: &str) -> Result<Vec<MassJob>, StoreError>;

    /// Up to `limit` followers' progress with an openid above `after`, in openid order.
    fn campaign_progress_page(
        &self,
        campaign: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Progress)>, StoreError>;

    /// Followers of a campaign still queued or being sent.
    fn campaign_pending(&self, campaign: &str) -> Result<u64, StoreError>;

    /// The (campaign, openid) a message id of an account was sent for.
    fn campaign_by_msgid(
        &self,
        account: &str,
        msgid: i64,
    ) -> Result<Option<(String, String)>, StoreError>;

    // --- Importing followers (`siyu followers sync`) ---

    /// Every identity (account, openid or external_userid) known to carry `unionid`: the
    /// person across the brand's accounts. Written by [`Store::sync_step`], in the same
    /// atomic write as the follower, whenever a follower's unionid becomes known.
    fn people(&self, unionid: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// The account's latest sync run.
    fn sync_run(&self, account: &str) -> Result<Option<SyncRun>, StoreError>;

    /// One step of a sync, in one atomic write: each follower of `openids` through
    /// `merge` (given the run, to count in, and the stored follower, `None` if unknown;
    /// returning `None` leaves the follower as stored), the run as `merge` leaves it, and
    /// the outbox items `merge` pushed (automatic tags mirrored to WeChat), due now.
    /// Serialised with callbacks of the same followers like `update_follower`. On an
    /// error nothing is written (the caller's `run` may hold counts that were not). A
    /// follower whose `unionid` is new or changed is written to the people index too.
    fn sync_step(
        &self,
        account: &str,
        openids: &[String],
        run: &mut SyncRun,
        merge: &mut crate::store::SyncMerge<'_>,
    ) -> Result<(), StoreError>;

    // --- Behaviour from the shop (`POST /ingest/v1/events`) ---

    /// Applies one shop event to a follower, once: unless `event_id` was already applied
    /// for this account, runs `change` on the stored follower (`None` if unknown) and
    /// writes the follower it returns together with the event id, in one atomic write (a
    /// crash keeps both or neither). `change` returning `None` declines the event: nothing
    /// is written, not even the id, so that a later resend can still apply. Serialised with
    /// callbacks of the same follower like `update_follower`. `change` gets the follower
    /// with their history, and what it returns is stored as it is.
    fn ingest_event(
        &self,
        account: &str,
        openid: &str,
        event_id: &str,
        change: &mut dyn FnMut(Option<Follower>) -> Option<(Follower, Vec<Count>)>,
    ) -> Result<Ingested, StoreError>;

    /// The openid an event id was applied to, if it was.
    fn ingested(&self, account: &str, event_id: &str) -> Result<Option<String>, StoreError>;

    /// Keeps a shop event whose person is not known yet, once: false (nothing written)
    /// when its id was applied already or is kept already (a resend). Every
    /// [`Store::ingest_event`] of the id drops the kept copy in its own atomic write (also
    /// when it finds the id applied), so an event is applied once and then no longer kept.
    fn keep_event(&self, account: &str, event: &KeptEvent) -> Result<bool, StoreError>;

    /// The account's kept events for any of `unionids`, by unionid and id.
    fn kept_events(&self, account: &str, unionids: &[String])
        -> Result<Vec<KeptEvent>, StoreError>;

    // --- Reports (`siyu report`): counters written with the commits that change them ---

    /// The account's counters for the days `from..=to`, one per (day, channel, metric)
    /// however the backend spreads them.
    fn report_counts(&self, account: &str, from: i64, to: i64) -> Result<Vec<Count>, StoreError>;

    /// Every commit's counts kept for the account (its facts), for `siyu report rebuild`.
    fn report_facts(
        &self,
        account: &str,
        visit: &mut dyn FnMut(Vec<Count>),
    ) -> Result<(), StoreError>;

    /// Replaces all of the account's counters with `counts` (`siyu report rebuild
    /// --write`, with the servers stopped), in one atomic write.
    fn replace_report_counts(&self, account: &str, counts: &[Count]) -> Result<(), StoreError>;

    // --- Referral programmes (`referrals.rs`) ---

    /// The participant `id` of `programme`, if they asked for a code.
    fn referral_participant(
        &self,
        programme: &str,
        id: &ParticipantId,
    ) -> Result<Option<Participant>, StoreError>;

    /// Changes a participant atomically with the outbox items `change` returns (of
    /// `account`); the participant as stored afterwards.
    fn update_referral_participant(
        &self,
        account: &str,
        programme: &str,
        id: &ParticipantId,
        change: &mut dyn FnMut(Option<Participant>) -> ParticipantChange,
    ) -> Result<Option<Participant>, StoreError>;

    /// One atomic referral write (see `referrals.rs`): `change` sees the programme's
    /// records and rewards concerning `people`, and what it returns is written in one
    /// transaction, serialised with every other referral write of the programme. The
    /// change written is returned.
    fn referral_write(
        &self,
        account: &str,
        programme: &str,
        people: &[&str],
        change: &mut dyn FnMut(&InviteView) -> InviteChange,
    ) -> Result<InviteChange, StoreError>;

    /// Every invite record of a programme (the report, the maturing run).
    fn referral_invites(&self, programme: &str) -> Result<Vec<InviteRecord>, StoreError>;

    /// Every reward given in a programme.
    fn referral_rewards(&self, programme: &str) -> Result<Vec<RewardRecord>, StoreError>;

    /// Bytes used on disk, where the backend knows.
    fn size_on_disk(&self) -> Option<u64> {
        None
    }

    // --- Several instances over one store ---

    /// Takes or renews the lease `name` (driving a campaign, refreshing an account's
    /// token) for `owner` until `now_ms + ttl_ms`; false while another owner holds it.
    /// A store one process owns (sled, memory) has no other owner: always granted.
    fn lease(
        &self,
        _name: &str,
        _owner: &str,
        _now_ms: i64,
        _ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Gives a lease back before it runs out.
    fn release(&self, _name: &str, _owner: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Leases queued items to `owner` until `until_ms` for delivery; returns the ids
    /// leased (an item another instance is delivering is left out). A store one process
    /// owns leases everything asked.
    fn outbox_lease(
        &self,
        ids: &[u64],
        _owner: &str,
        _now_ms: i64,
        _until_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        Ok(ids.to_vec())
    }

    /// Whether a call may wait on a network round trip (a database server), so that
    /// callers on an async worker thread move it to the blocking pool. An in-process store
    /// (sled, memory) answers from memory and its own disk: no.
    fn waits_on_network(&self) -> bool {
        false
    }

    /// The PostgreSQL store behind this one, for its pool metrics.
    fn as_postgres(&self) -> Option<&PgStore> {
        None
    }

    /// The rules shared with other instances on this store, where there can be others.
    fn shared_rules(&self) -> Option<&dyn shared_rules::SharedRules> {
        None
    }
}

/// What a sync step's write of a follower does to the people index: `Some((old, new))` when
/// the unionid is new or changed (`old`: the link to drop, if there was one).
fn person_link(
    before: Option<&crate::follower::Follower>,
    after: &crate::follower::Follower,
) -> Option<(Option<String>, String)> {
    let old = before.and_then(|b| b.unionid.clone());
    let new = after.unionid.clone().filter(|u| Some(u) != old.as_ref())?;
    Some((old, new))
}

/// Writes a follower as they are, replacing any stored state of theirs: what earlier
/// callbacks would have left (test fixtures, benches, an import). Goes through
/// `apply_callback` with a delivery key that has already expired, so a second write of
/// the same follower is not taken for a retry.
pub fn put_follower(
    store: &dyn Store,
    account: &str,
    follower: &Follower,
) -> Result<(), StoreError> {
    let key = CallbackKey {
        account,
        openid: &follower.openid,
        dedupe_key: "put_follower",
        now: 1,
        expires_at: 2,
    };
    store
        .apply_callback(key, &mut |_| Commit {
            follower: Some(follower.clone()),
            answer: Answer {
                reply: None,
                rules: Vec::new(),
            },
            effects: Vec::new(),
            counts: Vec::new(),
        })
        .map(drop)
}

/// Opens the store `[storage]` names: sled (one process) or PostgreSQL (shared).
pub fn open(settings: &crate::config::Settings) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(match &settings.postgres {
        Some(pg) => std::sync::Arc::new(PgStore::open(pg)?),
        None => std::sync::Arc::new(SledStore::open(&settings.storage_path)?),
    })
}

/// What is stored per (account, openid).
#[derive(Debug, Clone, Default, PartialEq)]
struct Record {
    follower: Option<Follower>,
    /// Oldest first.
    deliveries: Vec<Delivery>,
}

#[derive(Debug, Clone, PartialEq)]
struct Delivery {
    key: String,
    expires_at: i64,
    answer: Answer,
}

impl Record {
    /// The shared heart of every backend: a retry gets its cached answer, anything else is
    /// decided and remembered. Returns the answer (the record must be written if it is
    /// `Fresh`) and the effects to queue with it.
    fn apply(
        &mut self,
        k: CallbackKey<'_>,
        decide: &mut dyn FnMut(Option<Follower>) -> Commit,
    ) -> (Applied, Vec<NewItem>, Vec<Count>) {
        if let Some(d) = self
            .deliveries
            .iter()
            .find(|d| d.key == k.dedupe_key && d.expires_at > k.now)
        {
            return (Applied::Duplicate(d.answer.clone()), Vec::new(), Vec::new());
        }
        // Moved, not cloned: a follower with full history is dozens of allocations.
        let mut follower = self.follower.take();
        let mut history = follower
            .as_mut()
            .map(|f| std::mem::take(&mut f.history))
            .unwrap_or_default();
        let commit = decide(follower);
        self.follower = commit.follower.map(|mut f| {
            history.append(&mut f.history);
            let excess = history.len().saturating_sub(HISTORY_LEN);
            history.drain(..excess);
            f.history = history;
            f
        });
        self.deliveries
            .retain(|d| d.expires_at > k.now && d.key != k.dedupe_key);
        if self.deliveries.len() >= DELIVERIES_KEPT {
            let excess = self.deliveries.len() + 1 - DELIVERIES_KEPT;
            self.deliveries.drain(..excess);
        }
        self.deliveries.push(Delivery {
            key: k.dedupe_key.to_string(),
            expires_at: k.expires_at,
            answer: commit.answer.clone(),
        });
        (Applied::Fresh(commit.answer), commit.effects, commit.counts)
    }
}

/// The record format's version, the first byte of every stored value (layout in
/// `format.rs`). postcard is compact and fast (a follower with full history round-trips in
/// ~3 µs; JSON took 6–23 µs, see the `store/*` benches) but not self-describing: any change
/// to the layout, `Follower`, `HistoryEntry` or `Answer` must bump this and teach
/// `decode_record` to read the old layout (`legacy.rs`).
const RECORD_VERSION: u8 = format::VERSION;

fn encode_record(r: &mut Record) -> Vec<u8> {
    format::encode(r)
}

fn corrupt(key: &[u8], reason: String) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason,
    }
}

fn decode_record(key: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    let corrupt = |reason: String| corrupt(key, reason);
    match bytes.split_first() {
        Some((&v @ (RECORD_VERSION | format::VERSION_3), rest)) => format::View::parse(v, rest)
            .and_then(format::View::into_record)
            .map_err(corrupt),
        Some((2, rest)) => postcard::from_bytes::<legacy::RecordV2>(rest)
            .map(Record::from)
            .map_err(|e| corrupt(e.to_string())),
        Some((1, rest)) => postcard::from_bytes::<legacy::RecordV1>(rest)
            .map(Record::from)
            .map_err(|e| corrupt(e.to_string())),
        Some((v, _)) => Err(corrupt(format!("unknown record version {v}"))),
        None => Err(corrupt("empty value".into())),
    }
}

/// `campaign \0 openid`, for a campaign's progress.
fn campaign_key(campaign: &str, openid: &str) -> Vec<u8> {
    key(campaign, openid)
}

/// `account \0 msgid`.
fn msgid_key(account: &str, msgid: i64) -> Vec<u8> {
    let mut k = key(account, "");
    k.extend_from_slice(&msgid.to_be_bytes());
    k
}

/// Whether a follower's part in a campaign is settled (no longer pending).
fn settled(p: &Progress) -> bool {
    !matches!(p, Progress::Queued | Progress::Sending { .. })
}

/// What [`apply_stored`] leaves to write.
struct Written {
    /// The new record, for a fresh delivery.
    value: Option<Vec<u8>>,
    effects: Vec<NewItem>,
    /// As decided (a backend that needs one per cell merges them).
    counts: Vec<Count>,
}

/// [`Record::apply`] on a stored record (`None`: no record yet), decoding only what it
/// needs: the dedupe keys are compared as stored, a cached answer is decoded only on a hit,
/// and the history entries and deliveries kept are copied into the new record as they are.
fn apply_stored(
    key: &[u8],
    stored: Option<&[u8]>,
    k: CallbackKey<'_>,
    decide: &mut dyn FnMut(Option<Follower>) -> Commit,
) -> Result<(Applied, Written), StoreError> {
    let view = match stored.map(<[u8]>::split_first) {
        None => format::View::default(),
        Some(Some((&RECORD_VERSION, rest))) => {
            format::View::parse(RECORD_VERSION, rest).map_err(|e| corrupt(key, e))?
        }
        Some(_) => {
            // An older layout: read in full, rewritten in the current one.
            let old = stored.unwrap_or_default();
            let current = encode_record(&mut decode_record(key, old)?);
            return apply_stored(key, Some(&current), k, decide);
        }
    };
    let is_retry =
        |d: &&format::DeliveryView<'_>| d.key == k.dedupe_key.as_bytes() && d.expires_at > k.now;
    if let Some(d) = view.deliveries.iter().find(is_retry) {
        let answer = d.answer().map_err(|e| corrupt(key, e))?;
        let written = Written {
            value: None,
            effects: Vec::new(),
            counts: Vec::new(),
        };
        return Ok((Applied::Duplicate(answer), written));
    }
    let follower = view
        .follower_without_history()
        .map_err(|e| corrupt(key, e))?;
    let mut commit = decide(follower);
    let mut w = format::Writer::new(stored.map_or(256, |s| s.len() + 64));
    w.follower(commit.follower.as_mut());
    let kept = || {
        view.deliveries
            .iter()
            .filter(|d| d.expires_at > k.now && d.key != k.dedupe_key.as_bytes())
    };
    let n = kept().count();
    let excess = (n + 1).saturating_sub(DELIVERIES_KEPT);
    w.delivery_count(n - excess + 1);
    for d in kept().skip(excess) {
        w.raw_delivery(d);
    }
    w.delivery(k.dedupe_key, k.expires_at, &commit.answer);
    match &commit.follower {
        Some(f) => {
            let (old, new) = (view.history_len(), f.history.len());
            let excess = (old + new).saturating_sub(HISTORY_LEN);
            w.history_count(old + new - excess);
            w.raw_history(view.history_after(excess).map_err(|e| corrupt(key, e))?);
            for entry in f.history.iter().skip(excess.saturating_sub(old)) {
                w.history_entry(entry);
            }
        }
        None => w.history_count(0),
    }
    let written = Written {
        value: Some(w.finish()),
        effects: commit.effects,
        counts: commit.counts,
    };
    Ok((Applied::Fresh(commit.answer), written))
}

/// `account \0 openid`: NUL never appears in an account id or an openid, and it keeps one
/// account's records together for range scans.
fn key(account: &str, openid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.len() + 1 + openid.len());
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k.extend_from_slice(openid.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Effect;

    const Z: crate::local_time::UtcOffset = crate::local_time::UtcOffset::CHINA;

    /// The contract every backend must keep, run against each.
    pub(super) fn contract(store: &dyn Store) {
        let key = CallbackKey {
            account: "demo",
            openid: "o1",
            dedupe_key: "m:1",
            now: 100,
            expires_at: 200,
        };
        let runs = std::cell::Cell::new(0);
        let mut decide = |f: Option<Follower>| {
            runs.set(runs.get() + 1);
            let mut f = f.unwrap_or_else(|| Follower::new("o1"));
            f.messages_in += 1;
            Commit {
                follower: Some(f),
                answer: Answer {
                    reply: Some(Reply::Text {
                        content: format!("n{}", runs.get()),
                    }),
                    rules: vec!["r".into()],
                },
                effects: vec![NewItem {
                    effect: Effect::Tag {
                        openid: "o1".into(),
                        tag: format!("t{}", runs.get()),
                        add: true,
                    },
                    origin: "rule:r".into(),
                    not_before_ms: 0,
                }],
                counts: Vec::new(),
            }
        };
        let first = store.apply_callback(key, &mut decide).unwrap();
        let Applied::Fresh(answer) = first else {
            panic!("first delivery must be fresh: {first:?}")
        };
        let again = store.apply_callback(key, &mut decide).unwrap();
        assert_eq!(again, Applied::Duplicate(answer));
        assert_eq!(runs.get(), 1, "a duplicate must not run the decision");
        let queued = store.outbox_page(None, 10).unwrap();
        assert_eq!(queued.len(), 1, "one effect, queued once: {queued:?}");
        assert_eq!(
            (
                queued[0].account.as_str(),
                queued[0].due_ms,
                queued[0].attempts
            ),
            ("demo", 100_000, 0)
        );
        assert_eq!(
            store.follower("demo", "o1").unwrap().unwrap().messages_in,
            1
        );
        assert!(store.follower("other", "o1").unwrap().is_none());

        // Another message counts; after expiry the same key is a new delivery.
        let k2 = CallbackKey {
            dedupe_key: "m:2",
            ..key
        };
        store.apply_callback(k2, &mut decide).unwrap();
        assert_eq!(
            store.follower("demo", "o1").unwrap().unwrap().messages_in,
            2
        );
        let later = CallbackKey { now: 200, ..key };
        assert!(matches!(
            store.apply_callback(later, &mut decide).unwrap(),
            Applied::Fresh(_)
        ));

        // A commit without a follower records the delivery but leaves the follower alone.
        let mut report = |_: Option<Follower>| Commit {
            follower: None,
            answer: Answer {
                reply: None,
                rules: vec![],
            },
            effects: vec![],
            counts: vec![],
        };
        let rk = CallbackKey {
            openid: "gh_account",
            dedupe_key: "e:report",
            ..key
        };
        assert!(matches!(
            store.apply_callback(rk, &mut report).unwrap(),
            Applied::Fresh(_)
        ));
        assert!(matches!(
            store.apply_callback(rk, &mut report).unwrap(),
            Applied::Duplicate(_)
        ));
        assert!(store.follower("demo", "gh_account").unwrap().is_none());

        // Only the newest DELIVERIES_KEPT keys are remembered.
        for i in 0..DELIVERIES_KEPT + 1 {
            let k = format!("burst:{i}");
            let bk = CallbackKey {
                dedupe_key: &k,
                ..key
            };
            store.apply_callback(bk, &mut decide).unwrap();
        }
        let newest = format!("burst:{DELIVERIES_KEPT}");
        let nk = CallbackKey {
            dedupe_key: &newest,
            ..key
        };
        assert!(matches!(
            store.apply_callback(nk, &mut decide).unwrap(),
            Applied::Duplicate(_)
        ));
        let oldest = CallbackKey {
            dedupe_key: "burst:0",
            ..key
        };
        assert!(matches!(
            store.apply_callback(oldest, &mut decide).unwrap(),
            Applied::Fresh(_)
        ));

        // Tokens: one per account, replaced on put, never shown by Debug.
        assert!(store.token("demo").unwrap().is_none());
        let t1 = StoredToken {
            access_token: Secret::new("ACCESS-1"),
            expires_at: 7300,
        };
        store.put_token("demo", &t1).unwrap();
        assert_eq!(store.token("demo").unwrap(), Some(t1.clone()));
        assert!(store.token("other").unwrap().is_none());
        let t2 = StoredToken {
            access_token: Secret::new("ACCESS-2"),
            expires_at: 9000,
        };
        store.put_token("demo", &t2).unwrap();
        assert_eq!(store.token("demo").unwrap(), Some(t2.clone()));
        assert!(!format!("{t2:?}").contains("ACCESS"), "{t2:?}");
        store.flush().unwrap();

        outbox_contract(store);
        campaign_contract(store);
        coupon_contract(store);
        sync_contract(store);
        ingest_contract(store);
        report_contract(store);
        referral_contract(store);
        update_contract(store);
    }

    /// A known follower's edit, with the outbox items it causes in the same write.
    fn update_contract(store: &dyn Store) {
        let queued = |store: &dyn Store| -> Vec<Effect> {
            let page = store.outbox_page(None, 1000).unwrap();
            page.into_iter()
                .filter(|i| i.account == "u")
                .map(|i| i.effect)
                .collect()
        };
        let tag = |add| NewItem {
            effect: Effect::Tag {
                openid: "o_u".into(),
                tag: "vip".into(),
                add,
            },
            origin: "autotag:import".into(),
            not_before_ms: 0,
        };
        let unknown = store
            .update_follower_and_queue("u", "o_u", &mut |_| vec![tag(true)])
            .unwrap();
        assert_eq!(unknown, None);
        assert!(
            queued(store).is_empty(),
            "an unknown follower queues nothing"
        );
        put_follower(store, "u", &Follower::new("o_u")).unwrap();
        let after = store
            .update_follower_and_queue("u", "o_u", &mut |f| {
                f.tags.insert("vip".into());
                vec![tag(true)]
            })
            .unwrap()
            .unwrap();
        assert!(after.has_tag("vip"));
        assert!(store.follower("u", "o_u").unwrap().unwrap().has_tag("vip"));
        assert_eq!(queued(store), [tag(true).effect]);
        // The plain edit queues nothing.
        store
            .update_follower("u", "o_u", &mut |f| {
                f.tags.remove("vip");
            })
            .unwrap();
        assert!(!store.follower("u", "o_u").unwrap().unwrap().has_tag("vip"));
        assert_eq!(queued(store).len(), 1);
    }

    /// Report counters: written with the commit, once however often it is retried, summed
    /// across whatever the backend spreads them over, kept as facts, and replaceable.
    /// Referral programmes: a participant's id stands for one openid; an invite is created
    /// once per (programme, invitee) however often the write runs; a reward once per
    /// (programme, inviter, tier), its outbox items queued with it; programmes apart.
    fn referral_contract(store: &dyn Store) {
        use crate::referral::{Arrival, InviteRecord, InviteState, ParticipantId};
        let id = ParticipantId::of("demo", "inviter");
        assert_eq!(store.referral_participant("tea", &id).unwrap(), None);
        let first = Participant {
            programme: "tea".into(),
            id: id.clone(),
            account: "demo".into(),
            openid: "inviter".into(),
            created_at: 10,
            qr: None,
            poster: None,
            notices: vec![],
        };
        let before = store.outbox_page(None, 1000).unwrap().len();
        let stored = store
            .update_referral_participant("demo", "tea", &id, &mut |p| {
                assert!(p.is_none());
                (Some(first.clone()), vec![])
            })
            .unwrap();
        assert_eq!(stored.as_ref(), Some(&first));
        // A change that keeps the participant writes nothing but may queue.
        let kept = store
            .update_referral_participant("demo", "tea", &id, &mut |p| {
                assert_eq!(p.as_ref(), Some(&first));
                (None, vec![item("tea-poster")])
            })
            .unwrap();
        assert_eq!(kept.as_ref(), Some(&first));
        assert_eq!(store.outbox_page(None, 1000).unwrap().len(), before + 1);
        assert_eq!(store.referral_participant("other", &id).unwrap(), None);

        let record = |invitee: &str, inviter: &str, state| InviteRecord {
            programme: "tea".into(),
            inviter: inviter.into(),
            invitee: invitee.into(),
            arrival: Arrival::New,
            state,
            created_at: 100,
            matures_at: 200,
            updated_at: 100,
        };
        // Create-if-absent: the decision sees the record it made the first time.
        for attempt in 0..3 {
            let done = store
                .referral_write("demo", "tea", &["b1", "inviter"], &mut |view| {
                    if view.records.iter().any(|r| r.invitee == "b1") {
                        return InviteChange::default();
                    }
                    assert_eq!(attempt, 0, "the record is seen from the second write on");
                    InviteChange {
                        records: vec![record("b1", "inviter", InviteState::Pending)],
                        ..Default::default()
                    }
                })
                .unwrap();
            assert_eq!(done.records.len(), usize::from(attempt == 0));
        }
        store
            .referral_write("demo", "tea", &["b2", "inviter"], &mut |_| InviteChange {
                records: vec![record("b2", "inviter", InviteState::Valid)],
                ..Default::default()
            })
            .unwrap();
        // Another inviter's view holds only what concerns them.
        store
            .referral_write("demo", "tea", &["c1", "other"], &mut |view| {
                assert!(view.records.is_empty(), "{view:?}");
                InviteChange {
                    records: vec![record("c1", "other", InviteState::Pending)],
                    ..Default::default()
                }
            })
            .unwrap();
        // The inviter's view: both their records; a record replaced keeps its key.
        store
            .referral_write("demo", "tea", &["inviter"], &mut |view| {
                let mut mine: Vec<_> = view.records.iter().map(|r| r.invitee.as_str()).collect();
                mine.sort();
                assert_eq!(mine, ["b1", "b2"]);
                InviteChange {
                    records: vec![record("b1", "inviter", InviteState::Valid)],
                    rewards: vec![reward("inviter", 2)],
                    items: vec![item("notice")],
                }
            })
            .unwrap();
        // A reward already given is kept, and reported as not created.
        let again = store
            .referral_write("demo", "tea", &["inviter"], &mut |view| {
                assert_eq!(view.rewards, vec![reward("inviter", 2)]);
                InviteChange {
                    rewards: vec![reward("inviter", 2)],
                    ..Default::default()
                }
            })
            .unwrap();
        assert!(again.rewards.is_empty());
        let mut all = store.referral_invites("tea").unwrap();
        all.sort_by(|a, b| a.invitee.cmp(&b.invitee));
        let states: Vec<_> = all.iter().map(|r| (r.invitee.as_str(), r.state)).collect();
        assert_eq!(
            states,
            [
                ("b1", InviteState::Valid),
                ("b2", InviteState::Valid),
                ("c1", InviteState::Pending)
            ]
        );
        assert_eq!(
            store.referral_rewards("tea").unwrap(),
            vec![reward("inviter", 2)]
        );
        assert!(store.referral_invites("te").unwrap().is_empty());
        assert!(store.referral_rewards("tea2").unwrap().is_empty());
        let queued = store.outbox_page(None, 1000).unwrap();
        assert_eq!(queued.len(), before + 2);
        for id in queued.iter().skip(before).map(|i| i.id) {
            store.outbox_done(id).unwrap();
        }

        fn reward(inviter: &str, tier: u32) -> RewardRecord {
            RewardRecord {
                programme: "tea".into(),
                inviter: inviter.into(),
                tier,
                coupon: "gift".into(),
                at: 300,
            }
        }
        fn item(origin: &str) -> NewItem {
            NewItem {
                effect: crate::outbox::Effect::Custom {
                    openid: "inviter".into(),
                    message: Reply::Text {
                        content: "hi".into(),
                    },
                },
                origin: origin.into(),
                not_before_ms: 0,
            }
        }
    }

    fn report_contract(store: &dyn Store) {
        let counted = |openid: &'static str, counts: Vec<Count>| {
            move |f: Option<Follower>| Commit {
                follower: Some(f.unwrap_or_else(|| Follower::new(openid))),
                answer: Answer {
                    reply: None,
                    rules: vec![],
                },
                effects: vec![],
                counts: counts.clone(),
            }
        };
        let day = 20_400;
        // Many followers (spread over every shard), each twice in one commit (merged).
        for i in 0..40 {
            let openid: &'static str = Box::leak(format!("or{i}").into_boxed_str());
            let key = CallbackKey {
                account: "r",
                openid,
                dedupe_key: "m:1",
                now: 100,
                expires_at: 200,
            };
            let counts = vec![
                Count::new(day, "*", "messages", 1),
                Count::new(day, "poster", "messages", 1),
                Count::new(day, "poster", "messages", 1),
                Count::new(day + 1, "poster", "left_7d", 1),
            ];
            let mut decide = counted(openid, counts);
            assert!(matches!(
                store.apply_callback(key, &mut decide).unwrap(),
                Applied::Fresh(_)
            ));
            // A retry writes nothing: not counted again.
            let mut decide = counted(openid, vec![Count::new(day, "*", "messages", 100)]);
            assert!(matches!(
                store.apply_callback(key, &mut decide).unwrap(),
                Applied::Duplicate(_)
            ));
        }
        let mut shop = |f: Option<Follower>| {
            Some((
                f.unwrap_or_else(|| Follower::new("or0")),
                vec![Count::new(day, "poster", "shop:spend_fen", 12_850)],
            ))
        };
        store
            .ingest_event("r", "or0", "order-1", &mut shop)
            .unwrap();
        store
            .ingest_event("r", "or0", "order-1", &mut shop)
            .unwrap();
        // A campaign's sends, counted in the step that records them.
        store
            .campaign_record_counted(
                "r",
                "report-sends",
                &[(
                    "or1".to_string(),
                    Progress::Failed {
                        channel: None,
                        reason: "only the counts matter here".into(),
                        at: 1,
                    },
                )],
                None,
                None,
                &[Count::new(day, "*", "campaign_sends:custom", 2)],
            )
            .unwrap();
        let want = vec![
            Count::new(day, "*", "campaign_sends:custom", 2),
            Count::new(day, "*", "messages", 40),
            Count::new(day, "poster", "messages", 80),
            Count::new(day, "poster", "shop:spend_fen", 12_850),
            Count::new(day + 1, "poster", "left_7d", 40),
        ];
        let mut got = store.report_counts("r", day, day + 1).unwrap();
        got.sort_by(|a, b| (a.day, &a.channel, &a.metric).cmp(&(b.day, &b.channel, &b.metric)));
        assert_eq!(got, want);
        assert_eq!(
            store.report_counts("r", day, day).unwrap().len(),
            4,
            "by day"
        );
        assert!(store.report_counts("r2", day, day + 1).unwrap().is_empty());
        // The facts sum to the counters.
        // The facts sum to the counters (one per commit, or per fold of many on sled).
        let mut facts = crate::report::Tally::default();
        store
            .report_facts("r", &mut |counts| counts.iter().for_each(|c| facts.add(c)))
            .unwrap();
        assert_eq!(facts.counts(), want);
        // Replaced whole.
        let fewer = vec![Count::new(day, "*", "messages", 7)];
        store.replace_report_counts("r", &fewer).unwrap();
        assert_eq!(store.report_counts("r", day - 10, day + 10).unwrap(), fewer);
    }

    /// Shop events: applied once per (account, event id), with the id in the same write.
    fn ingest_contract(store: &dyn Store) {
        let add_order = |f: Option<Follower>| {
            let mut f = f.unwrap_or_else(|| Follower::new("o_shop"));
            *f.counters.entry("orders".into()).or_default() += 1;
            Some((f, vec![Count::new(1, "*", "shop_events", 1)]))
        };
        assert_eq!(store.ingested("i", "e1").unwrap(), None);
        // Unknown follower: created by the change.
        let first = store
            .ingest_event("i", "o_shop", "e1", &mut { add_order })
            .unwrap();
        let Ingested::Applied(after) = first else {
            panic!("first delivery not applied: {first:?}");
        };
        assert_eq!(after.counters["orders"], 1);
        assert_eq!(
            store.ingested("i", "e1").unwrap().as_deref(),
            Some("o_shop")
        );
        // A resend changes nothing and never runs the change.
        let mut ran = false;
        let again = store
            .ingest_event("i", "o_shop", "e1", &mut |f| {
                ran = true;
                add_order(f)
            })
            .unwrap();
        assert_eq!(again, Ingested::Duplicate);
        assert!(!ran, "the change ran for a duplicate");
        // The same id for another follower of the account is still the same event.
        let other = store
            .ingest_event("i", "o_other", "e1", &mut { add_order })
            .unwrap();
        assert_eq!(other, Ingested::Duplicate);
        assert_eq!(store.follower("i", "o_other").unwrap(), None);
        // Ids are per account.
        let elsewhere = store
            .ingest_event("j", "o_shop", "e1", &mut { add_order })
            .unwrap();
        assert!(matches!(elsewhere, Ingested::Applied(_)), "{elsewhere:?}");
        // A declined event writes nothing, not even its id: a later resend applies.
        let declined = store
            .ingest_event("i", "o_shop", "e2", &mut |_| None)
            .unwrap();
        assert_eq!(declined, Ingested::Declined);
        assert_eq!(store.ingested("i", "e2").unwrap(), None);
        let applied = store
            .ingest_event("i", "o_shop", "e2", &mut { add_order })
            .unwrap();
        assert!(matches!(applied, Ingested::Applied(_)), "{applied:?}");
        let f = store.follower("i", "o_shop").unwrap().unwrap();
        assert_eq!(f.counters["orders"], 2);
        // A declined event for an unknown follower leaves no follower behind.
        let none = store
            .ingest_event("i", "o_ghost", "e3", &mut |_| None)
            .unwrap();
        assert_eq!(none, Ingested::Declined);
        assert_eq!(store.follower("i", "o_ghost").unwrap(), None);
        let mut seen = Vec::new();
        store
            .for_each_follower("i", &mut |f| seen.push(f.openid))
            .unwrap();
        assert_eq!(seen, ["o_shop"]);
        // The change gets the follower with their history, and callbacks' writes keep
        // what it stored.
        let mut known = Follower::new("o_hist");
        known.history.push(history_entry(1));
        put_follower(store, "i", &known).unwrap();
        let got = store
            .ingest_event("i", "o_hist", "e4", &mut |f| {
                let mut f = f.expect("stored");
                assert_eq!(f.history.len(), 1);
                f.history.push(history_entry(2));
                f.tags.insert("buyer".into());
                Some((f, Vec::new()))
            })
            .unwrap();
        assert!(matches!(got, Ingested::Applied(_)), "{got:?}");
        let f = store.follower("i", "o_hist").unwrap().unwrap();
        assert_eq!(f.history.len(), 2);
        assert!(f.tags.contains("buyer"));
        kept_contract(store);
        channel_codes::tests::contract(store);
        store.flush().unwrap();
    }

    /// Events kept for a person not known yet: once per id, found by unionid, dropped by
    /// the write that applies them.
    fn kept_contract(store: &dyn Store) {
        let kept = |id: &str, unionid: &str| KeptEvent {
            id: id.into(),
            unionid: unionid.into(),
            event: serde_json::json!({"id": id, "unionid": unionid, "type": "order_paid"}),
            kept_at: 1_733_040_000,
        };
        let ids = |v: Vec<KeptEvent>| v.into_iter().map(|k| k.id).collect::<Vec<_>>();
        let u = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(store.kept_events("k", &u(&["ou_a"])).unwrap().is_empty());
        assert!(store.keep_event("k", &kept("k1", "ou_a")).unwrap());
        assert!(store.keep_event("k", &kept("k2", "ou_a")).unwrap());
        assert!(store.keep_event("k", &kept("k3", "ou_b")).unwrap());
        assert!(
            store.keep_event("l", &kept("k1", "ou_a")).unwrap(),
            "per account"
        );
        assert!(
            !store.keep_event("k", &kept("k1", "ou_a")).unwrap(),
            "a resend"
        );
        // An id applied already is not kept.
        let applied = store
            .ingest_event("k", "o_k", "k0", &mut |_| {
                Some((Follower::new("o_k"), Vec::new()))
            })
            .unwrap();
        assert!(matches!(applied, Ingested::Applied(_)), "{applied:?}");
        assert!(!store.keep_event("k", &kept("k0", "ou_a")).unwrap());
        let found = store.kept_events("k", &u(&["ou_a", "ou_c"])).unwrap();
        assert_eq!(found[0], kept("k1", "ou_a"), "stored as it was kept");
        assert_eq!(ids(found), ["k1", "k2"]);
        assert_eq!(
            ids(store.kept_events("k", &u(&["ou_b", "ou_a"])).unwrap()),
            ["k1", "k2", "k3"]
        );
        assert!(store.kept_events("k", &[]).unwrap().is_empty());
        // Applying one drops it; a declined apply keeps it.
        let declined = store.ingest_event("k", "o_k", "k2", &mut |_| None).unwrap();
        assert_eq!(declined, Ingested::Declined);
        let applied = store
            .ingest_event("k", "o_k", "k1", &mut |f| f.map(|f| (f, Vec::new())))
            .unwrap();
        assert!(matches!(applied, Ingested::Applied(_)), "{applied:?}");
        assert_eq!(ids(store.kept_events("k", &u(&["ou_a"])).unwrap()), ["k2"]);
        assert!(
            !store.keep_event("k", &kept("k1", "ou_a")).unwrap(),
            "applied now"
        );
        assert_eq!(
            ids(store.kept_events("l", &u(&["ou_a"])).unwrap()),
            ["k1"],
            "the other account's copy stays"
        );
        // Found applied (kept after an apply by openid raced it): dropped too.
        assert!(store.keep_event("k", &kept("k9", "ou_b")).unwrap());
        store
            .ingest_event("k", "o_k", "k9", &mut |f| f.map(|f| (f, Vec::new())))
            .unwrap();
        assert_eq!(ids(store.kept_events("k", &u(&["ou_b"])).unwrap()), ["k3"]);
    }

    fn sync_contract(store: &dyn Store) {
        use crate::follower::SyncOutcome;
        assert_eq!(store.sync_run("s").unwrap(), None);
        let mut known = Follower::new("o_b");
        known.messages_in = 3;
        known.history.push(history_entry(1));
        put_follower(store, "s", &known).unwrap();
        let openids: Vec<String> = ["o_c", "o_a", "o_b"].map(String::from).to_vec();
        let mut run = crate::sync::SyncRun::new("s", 5000, "test");
        run.page_done = 3;
        let mut seen = Vec::new();
        let tagged = |openid: &str| NewItem {
            effect: Effect::Tag {
                openid: openid.into(),
                tag: "auto".into(),
                add: true,
            },
            origin: "autotag:sync".into(),
            not_before_ms: 0,
        };
        store
            .sync_step(
                "s",
                &openids,
                &mut run,
                &mut |run, openid, stored, items| {
                    seen.push((openid.to_string(), stored.as_ref().map(|f| f.messages_in)));
                    if openid == "o_c" {
                        return None; // left as it is: not created
                    }
                    run.counts.add(SyncOutcome::New);
                    let mut f = stored.unwrap_or_else(|| Follower::new(openid));
                    f.unionid = Some(format!("u_{openid}"));
                    items.push(tagged(openid));
                    Some(f)
                },
            )
            .unwrap();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("o_a".to_string(), None),
                ("o_b".to_string(), Some(3)),
                ("o_c".to_string(), None)
            ],
            "every follower asked for, given as stored"
        );
        let stored = store
            .sync_run("s")
            .unwrap()
            .expect("the run is stored with the step");
        assert_eq!(
            (stored.counts.new, stored.page_done),
            (2, 3),
            "as merge left it"
        );
        assert_eq!(stored, run);
        let b = store.follower("s", "o_b").unwrap().unwrap();
        assert_eq!((b.messages_in, b.unionid.as_deref()), (3, Some("u_o_b")));
        assert_eq!(b.history.len(), 1, "the history stays");
        assert!(store.follower("s", "o_a").unwrap().is_some());
        assert_eq!(store.follower("s", "o_c").unwrap(), None);
        let walked: Vec<String> = store
            .followers_after("s", None, 10)
            .unwrap()
            .into_iter()
            .map(|f| f.openid)
            .collect();
        assert_eq!(walked, ["o_a", "o_b"], "nothing else appears");
        // The items the merge pushed are queued with the step, once each.
        let queued: Vec<(String, Effect)> = store
            .outbox_page(None, 1000)
            .unwrap()
            .into_iter()
            .filter(|i| i.account == "s")
            .map(|i| (i.origin, i.effect))
            .collect();
        assert_eq!(
            queued,
            ["o_a", "o_b"].map(|o| ("autotag:sync".to_string(), tagged(o).effect)),
            "{queued:?}"
        );
        // A step without followers stores the run alone; runs are per account.
        run.state = crate::sync::SyncState::Done;
        store
            .sync_step("s", &[], &mut run, &mut |_, _, _, _| None)
            .unwrap();
        assert_eq!(
            store.sync_run("s").unwrap().unwrap().state,
            crate::sync::SyncState::Done
        );
        assert_eq!(store.sync_run("other").unwrap(), None);

        // The people index: every identity a step gave a unionid, across accounts.
        assert_eq!(
            store.people("u_o_b").unwrap(),
            vec![("s".to_string(), "o_b".to_string())]
        );
        let mut other = crate::sync::SyncRun::new("t", 6000, "test");
        store
            .sync_step("t", &["w_1".to_string()], &mut other, &mut |_, o, _, _| {
                let mut f = Follower::new(o);
                f.unionid = Some("u_o_b".into());
                Some(f)
            })
            .unwrap();
        assert_eq!(
            store.people("u_o_b").unwrap(),
            vec![
                ("s".to_string(), "o_b".to_string()),
                ("t".to_string(), "w_1".to_string())
            ]
        );
        // A unionid that changes moves the identity.
        store
            .sync_step("t", &["w_1".to_string()], &mut other, &mut |_, o, _, _| {
                let mut f = Follower::new(o);
                f.unionid = Some("u_new".into());
                Some(f)
            })
            .unwrap();
        assert_eq!(store.people("u_o_b").unwrap().len(), 1);
        assert_eq!(store.people("u_new").unwrap().len(), 1);
        assert!(store.people("u_nobody").unwrap().is_empty());
    }

    fn coupon_contract(store: &dyn Store) {
        use crate::coupon::{CodeSource, Validity};
        let batch = Batch {
            name: "new-guest".into(),
            title: "新客礼".into(),
            value: "满 30 减 10".into(),
            validity: Validity::Days(7),
            stock: 3,
            per_follower: 2,
            codes: CodeSource::Generate { length: 10 },
        };
        let day = 86_400;
        let a1 = store
            .claim_coupon(&batch, "demo", "o1", 1000, None)
            .unwrap()
            .unwrap();
        assert_eq!((a1.batch.as_str(), a1.openid.as_str()), ("new-guest", "o1"));
        assert_eq!((a1.valid_from, a1.expires_at), (1000, 1000 + 7 * day));
        let a2 = store
            .claim_coupon(&batch, "demo", "o1", 1001, None)
            .unwrap()
            .unwrap();
        assert_ne!(a1.code, a2.code);
        assert_eq!(
            store
                .claim_coupon(&batch, "demo", "o1", 1002, None)
                .unwrap(),
            Err(ClaimRefused::LimitReached {
                batch: "new-guest".into(),
                held: 2
            })
        );
        // Another account's follower with the same openid is another person.
        let b1 = store
            .claim_coupon(&batch, "other", "o1", 1003, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .claim_coupon(&batch, "demo", "o2", 1004, None)
                .unwrap(),
            Err(ClaimRefused::OutOfStock("new-guest".into()))
        );
        assert_eq!(store.coupon(&b1.code).unwrap(), Some(b1.clone()));

        // Redeem once; twice, unknown and expired codes are refused with the reason.
        let used = store.redeem_coupon(&a1.code, 2000, Z).unwrap().unwrap();
        assert_eq!(used.redeemed_at, Some(2000));
        assert_eq!(
            store.redeem_coupon(&a1.code, 2001, Z).unwrap(),
            Err(RedeemRefused::AlreadyRedeemed {
                code: a1.code.clone(),
                at: 2000
            })
        );
        assert_eq!(
            store.redeem_coupon("NOSUCHCODE", 2001, Z).unwrap(),
            Err(RedeemRefused::Unknown("NOSUCHCODE".into()))
        );
        let late = 1001 + 7 * day;
        assert_eq!(
            store.redeem_coupon(&a2.code, late, Z).unwrap(),
            Err(RedeemRefused::Expired {
                code: a2.code.clone(),
                at: late
            })
        );
        assert_eq!(
            store.coupon_stats(&batch, late).unwrap(),
            CouponStats {
                issued: 3,
                redeemed: 1,
                expired: 1,
                left: 0
            }
        );

        // A repeated request (WeChat retrying a callback) gets the same code, once.
        let limited = Batch {
            name: "retry".into(),
            ..batch.clone()
        };
        let first = store
            .claim_coupon(&limited, "demo", "o9", 5, Some("msg:1"))
            .unwrap()
            .unwrap();
        let again = store
            .claim_coupon(&limited, "demo", "o9", 6, Some("msg:1"))
            .unwrap()
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(store.coupon_stats(&limited, 6).unwrap().issued, 1);

        // Imported codes are handed out in file order.
        let imported = Batch {
            name: "shop".into(),
            stock: 2,
            per_follower: 5,
            codes: CodeSource::Imported {
                codes: vec!["SHOP-0001".into(), "SHOP-0002".into()],
            },
            ..batch.clone()
        };
        let codes: Vec<String> = (0..2)
            .map(|_| {
                store
                    .claim_coupon(&imported, "demo", "o3", 1, None)
                    .unwrap()
                    .unwrap()
                    .code
            })
            .collect();
        assert_eq!(codes, ["SHOP-0001", "SHOP-0002"]);
        assert_eq!(
            store
                .claim_coupon(&imported, "demo", "o3", 1, None)
                .unwrap(),
            Err(ClaimRefused::OutOfStock("shop".into()))
        );
    }

    fn outbox_contract(store: &dyn Store) {
        // Drain what the callbacks above queued.
        for item in store.outbox_page(None, 100).unwrap() {
            store.outbox_done(item.id).unwrap();
        }
        assert!(store.outbox_page(None, 100).unwrap().is_empty());
        let new = |tag: &str, not_before_ms| NewItem {
            effect: Effect::Tag {
                openid: "o9".into(),
                tag: tag.into(),
                add: false,
            },
            origin: "admin".into(),
            not_before_ms,
        };
        let ids = store
            .enqueue(
                "demo",
                vec![new("a", 0), new("b", 9_000), new("c", 0)],
                5_000,
            )
            .unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

        // Paging: in order, resuming after the last id seen.
        let first = store.outbox_page(None, 2).unwrap();
        let rest = store.outbox_page(Some(first[1].id), 2).unwrap();
        let tags: Vec<String> = first
            .iter()
            .chain(&rest)
            .map(|i| i.effect.describe())
            .collect();
        assert_eq!(
            tags,
            [
                "remove tag a from o9",
                "remove tag b from o9",
                "remove tag c from o9"
            ]
        );
        assert_eq!(first[1].due_ms, 9_000);
        assert!(store.outbox_page(Some(rest[0].id), 2).unwrap().is_empty());

        // A failed attempt is written back; a dead item leaves the queue with its reason.
        let mut a = first[0].clone();
        a.attempts = 1;
        a.due_ms = 6_000;
        a.last_error = Some("-1 busy".into());
        store.outbox_retry_later(&a).unwrap();
        assert_eq!(store.outbox_page(None, 1).unwrap()[0], a);
        store.outbox_bury(&a, "gave up", 7_000).unwrap();
        let dead = store.dead_letters(None, 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].reason.as_str(), dead[0].died_ms),
            ("gave up", 7_000)
        );
        assert_eq!(dead[0].item, a);
        assert_eq!(store.outbox_page(None, 10).unwrap().len(), 2);
        // Writing back a buried item does not revive it.
        store.outbox_retry_later(&a).unwrap();
        assert_eq!(store.outbox_page(None, 10).unwrap().len(), 2);

        // Requeued: due now, attempts reset, the old reason kept as the last error.
        let back = store.requeue_dead(a.id, 8_000).unwrap().unwrap();
        assert_eq!((back.id, back.attempts, back.due_ms), (a.id, 0, 8_000));
        assert!(back.last_error.unwrap().contains("gave up"));
        assert!(store.dead_letters(None, 10).unwrap().is_empty());
        assert_eq!(store.requeue_dead(a.id, 8_000).unwrap(), None);
        assert_eq!(store.outbox_page(None, 10).unwrap().len(), 3);
        for id in ids {
            store.outbox_done(id).unwrap();
        }
        assert!(store.outbox_page(None, 10).unwrap().is_empty());

        // Tag ids, per account.
        assert_eq!(store.tag_id("demo", "vip").unwrap(), None);
        store.put_tag_id("demo", "vip", 134).unwrap();
        assert_eq!(store.tag_id("demo", "vip").unwrap(), Some(134));
        assert_eq!(store.tag_id("other", "vip").unwrap(), None);
    }

    fn campaign_contract(store: &dyn Store) {
        use crate::campaign::{Campaign, CampaignRun, Channel, Progress, RunState, Skip};
        for item in store.outbox_page(None, 1000).unwrap() {
            store.outbox_done(item.id).unwrap();
        }
        // Followers a1..a5 of account "acc" (a record each), and one of another account.
        for i in 1..=5 {
            let openid = format!("a{i}");
            store
                .apply_callback(
                    CallbackKey {
                        account: "acc",
                        openid: &openid,
                        dedupe_key: "k",
                        now: 1,
                        expires_at: 2,
                    },
                    &mut |_| Commit {
                        follower: Some(Follower::new(openid.clone())),
                        answer: Answer {
                            reply: None,
                            rules: vec![],
                        },
                        effects: vec![],
                        counts: vec![],
                    },
                )
                .unwrap();
        }
        let page = store.followers_after("acc", None, 2).unwrap();
        let ids: Vec<&str> = page.iter().map(|f| f.openid.as_str()).collect();
        assert_eq!(ids, ["a1", "a2"]);
        let page = store.followers_after("acc", Some("a2"), 10).unwrap();
        let ids: Vec<&str> = page.iter().map(|f| f.openid.as_str()).collect();
        assert_eq!(
            ids,
            ["a3", "a4", "a5"],
            "strictly after the cursor, this account only"
        );

        let campaign = Campaign {
            name: "spring".into(),
            account: "acc".into(),
            also: vec![],
            audience: "subscribed".into(),
            start_at: None,
            end_at: None,
            rate_per_sec: None,
            coupon: None,
            message: None,
            template: None,
            robot: None,
            mass: None,
            goals: Vec::new(),
        };
        assert_eq!(store.campaign_run("spring").unwrap(), None);
        let mut run = CampaignRun::new(campaign, false);
        run.state = RunState::Running;
        run.cursor = Some("a2".into());
        run.targeted = 2;
        let chunk = vec!["a1".to_string(), "a2".to_string()];
        assert_eq!(
            store
                .campaign_enqueue(&run, "acc", &chunk, vec![], true, 10)
                .unwrap(),
            2
        );
        assert_eq!(store.campaign_run("spring").unwrap().as_ref(), Some(&run));
        // The same chunk again (redone after a crash): nobody is queued twice.
        assert_eq!(
            store
                .campaign_enqueue(&run, "acc", &chunk, vec![], true, 10)
                .unwrap(),
            0
        );
        let queued = store.outbox_page(None, 100).unwrap();
        assert_eq!(queued.len(), 2);
        assert!(queued.iter().all(|i| i.account == "acc"), "{queued:?}");
        assert_eq!(store.campaign_pending("spring").unwrap(), 2);
        assert_eq!(
            store.campaign_progress("spring", "a1").unwrap(),
            Some(Progress::Queued)
        );
        // What a send reads first, in one go, is what the three reads say.
        let follower = Follower::new("a1");
        put_follower(store, "acc", &follower).unwrap();
        assert_eq!(
            store.campaign_send_state("spring", "acc", "a1").unwrap(),
            (Some(run.clone()), Some(Progress::Queued), Some(follower))
        );
        assert_eq!(
            store
                .campaign_send_state("spring", "acc", "nobody")
                .unwrap(),
            (Some(run.clone()), None, None)
        );
        assert_eq!(
            store.campaign_send_state("autumn", "acc", "a1").unwrap().0,
            None
        );
        // Sending is still pending; a settled outcome removes the item with it.
        store
            .campaign_record(
                "acc",
                "spring",
                "a1",
                &Progress::Sending {
                    channel: Channel::Custom,
                },
                None,
            )
            .unwrap();
        assert_eq!(store.campaign_pending("spring").unwrap(), 2);
        let sent = Progress::Sent {
            channel: Channel::Template,
            at: 11,
            msgid: Some(4242),
            coupon: None,
            delivery: None,
        };
        store
            .campaign_record("acc", "spring", "a1", &sent, Some(queued[0].id))
            .unwrap();
        let skipped = Progress::Skipped {
            reason: Skip::Unsubscribed,
            at: 11,
        };
        store
            .campaign_record("acc", "spring", "a2", &skipped, Some(queued[1].id))
            .unwrap();
        assert!(store.outbox_page(None, 100).unwrap().is_empty());
        assert_eq!(store.campaign_pending("spring").unwrap(), 0);
        assert_eq!(
            store.campaign_by_msgid("acc", 4242).unwrap(),
            Some(("spring".to_string(), "a1".to_string()))
        );
        assert_eq!(store.campaign_by_msgid("other", 4242).unwrap(), None);
        let page = store.campaign_progress_page("spring", None, 10).unwrap();
        assert_eq!(
            page,
            vec![
                ("a1".to_string(), sent),
                ("a2".to_string(), skipped.clone())
            ]
        );
        assert_eq!(
            store
                .campaign_progress_page("spring", Some("a1"), 10)
                .unwrap(),
            vec![("a2".to_string(), skipped)]
        );
        // An extra item (an announcement) is queued with a chunk.
        let extra = crate::outbox::NewItem {
            effect: crate::outbox::Effect::Announcement {
                campaign: "spring".into(),
            },
            origin: "campaign:spring".into(),
            not_before_ms: 0,
        };
        assert_eq!(
            store
                .campaign_enqueue(&run, "acc", &[], vec![extra], true, 12)
                .unwrap(),
            0
        );
        assert_eq!(store.outbox_page(None, 100).unwrap().len(), 1);
        assert_eq!(store.campaign_runs().unwrap().len(), 1);
        // A campaign over several accounts queues a later account's followers as its own.
        let mut later = run.clone();
        later.walking = 1;
        later.campaign.also = vec!["acc2".into()];
        assert_eq!(later.walking_account(), "acc2");
        assert_eq!(
            store
                .campaign_enqueue(&later, "acc2", &["b1".to_string()], vec![], true, 13)
                .unwrap(),
            1
        );
        let items = store.outbox_page(None, 100).unwrap();
        let b1 = items
            .iter()
            .find(|i| i.effect.follower() == "b1")
            .expect("b1 queued");
        assert_eq!(b1.account, "acc2");
        assert_eq!(store.campaign_run("spring").unwrap(), Some(later));
    }

    #[test]
    fn memory_store_keeps_the_contract() {
        contract(&MemoryStore::default());
    }

    #[test]
    fn sled_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        contract(&SledStore::open(&dir.path().join("db")).unwrap());
    }

    #[test]
    fn postgres_store_keeps_the_contract() {
        let Some(db) = postgres::testing::TestDatabase::new() else {
            return;
        };
        contract(&PgStore::open(&db.settings(4)).unwrap());
    }

    /// The outbox worker and the token cache call the store from async tasks. A task's
    /// cooperative budget (128 steps a poll) must not leak into the store's own waits: it
    /// did, and the 129th call in one poll spun forever at 100% CPU.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_store_calls_from_inside_an_async_task_never_run_out_of_budget() {
        let Some(db) = postgres::testing::TestDatabase::new() else {
            return;
        };
        let store = PgStore::open(&db.settings(2)).unwrap();
        // Past one batch of the streamed walk (2000 rows).
        for i in 0..2100 {
            put_follower(&store, "a", &Follower::new(format!("o_{i:04}"))).unwrap();
        }
        put_follower(&store, "b", &Follower::new("o_other")).unwrap();
        assert_eq!(store.followers_after("a", None, 1000).unwrap().len(), 1000);
        let mut walked = Vec::new();
        store
            .for_each_follower("a", &mut |f| walked.push(f.openid))
            .unwrap();
        let expected: Vec<String> = (0..2100).map(|i| format!("o_{i:04}")).collect();
        assert_eq!(
            walked, expected,
            "every follower of the account once, in order"
        );
    }

    #[test]
    fn postgres_store_behind_a_pooler_keeps_the_contract() {
        // Unnamed statements only, as PgBouncer in transaction mode needs.
        let Some(db) = postgres::testing::TestDatabase::new() else {
            return;
        };
        let settings = crate::config::PostgresSettings {
            prepared_statements: false,
            ..db.settings(2)
        };
        contract(&PgStore::open(&settings).unwrap());
    }

    #[test]
    fn postgres_migrations_run_once_and_refuse_a_newer_schema() {
        let Some(db) = postgres::testing::TestDatabase::new() else {
            return;
        };
        let store = PgStore::open(&db.settings(2)).unwrap();
        let again = postgres::migrate(&store).unwrap();
        let latest = postgres::MIGRATIONS.last().unwrap().0;
        assert_eq!((again.from, again.applied.len()), (latest, 0));
        // A version below the newest and never applied (two branches' migrations landing
        // in either order, e.g. 8 before 7): applied all the same.
        store.block(async {
            let c = store.conn().await.unwrap();
            c.batch_execute(
                "DROP TABLE channel_codes; DELETE FROM siyu_migrations WHERE version = 8; \
                 DROP TABLE people; DELETE FROM siyu_migrations WHERE version = 4",
            )
            .await
            .unwrap();
        });
        let gap = postgres::migrate(&store).unwrap();
        assert_eq!(
            gap.applied,
            [(4, "people".to_string()), (8, "channel_codes".to_string())]
        );
        assert_eq!(gap.from, latest, "the newest recorded version before");
        assert!(
            store.people("nobody").unwrap().is_empty(),
            "the table is back"
        );
        assert!(store.all_channel_codes().unwrap().is_empty());
        drop(store);
        let store = PgStore::connect(&db.settings(1)).unwrap();
        let future = latest + 1;
        store.block(async {
            let c = store.conn().await.unwrap();
            c.batch_execute(&format!(
                "INSERT INTO siyu_migrations (version, name) VALUES ({future}, 'future')"
            ))
            .await
            .unwrap();
        });
        let refused = PgStore::open(&db.settings(1)).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("version {future}, newer")),
            "{refused}"
        );
    }

    #[test]
    fn fifty_concurrent_claims_keep_stock_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        claims_race(std::sync::Arc::new(
            SledStore::open(&dir.path().join("db")).unwrap(),
        ));
    }

    #[test]
    fn fifty_concurrent_claims_keep_stock_and_limits_on_postgres() {
        let Some(db) = postgres::testing::TestDatabase::new() else {
            return;
        };
        claims_race(std::sync::Arc::new(PgStore::open(&db.settings(8)).unwrap()));
    }

    fn claims_race(store: std::sync::Arc<dyn Store>) {
        use crate::coupon::{CodeSource, Validity};
        let batch = Batch {
            name: "flash".into(),
            title: "t".into(),
            value: "v".into(),
            validity: Validity::Days(1),
            stock: 30,
            per_follower: 1,
            codes: CodeSource::Generate { length: 10 },
        };
        let race = |openid: fn(usize) -> String| {
            let handles: Vec<_> = (0..50)
                .map(|i| {
                    let (store, batch) = (store.clone(), batch.clone());
                    std::thread::spawn(move || {
                        store
                            .claim_coupon(&batch, "demo", &openid(i), 10, None)
                            .unwrap()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        };
        // One follower, 50 claims at once: exactly one code.
        let same = race(|_| "o_same".to_string());
        assert_eq!(same.iter().filter(|r| r.is_ok()).count(), 1);
        // 50 followers, 29 codes left: exactly 29 distinct codes, 21 refusals.
        let many = race(|i| format!("o_{i}"));
        let codes: std::collections::BTreeSet<String> = many
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|c| c.code.clone())
            .collect();
        assert_eq!(codes.len(), 29);
        assert!(many
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| *e == ClaimRefused::OutOfStock("flash".into())));
        let stats = store.coupon_stats(&batch, 10).unwrap();
        assert_eq!((stats.issued, stats.left), (30, 0));
    }

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        let mut f = Follower::new("o1");
        f.tags.insert("vip".into());
        f.counters.insert("n".into(), -3);
        f.last_inbound_at = Some(77);
        f.history = (0..3).map(history_entry).collect();
        let r = Record {
            follower: Some(f),
            deliveries: vec![delivery("m:1", 9), delivery("m:2", -1)],
        };
        let bytes = encode_record(&mut r.clone());
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(decode_record(b"k", &bytes).unwrap(), r);
        let empty = Record::default();
        assert_eq!(
            decode_record(b"k", &encode_record(&mut empty.clone())).unwrap(),
            empty
        );

        // The fields version 4 added round-trip too.
        let mut profiled = r.clone();
        if let Some(f) = profiled.follower.as_mut() {
            f.unionid = Some("ou1".into());
            f.subscribe_scene = Some("ADD_SCENE_QR_CODE".into());
            f.staff.push(crate::follower::StaffLink {
                userid: "zhangsan".into(),
                tags: ["老客".to_string()].into(),
                ..Default::default()
            });
            f.synced = Some(crate::follower::SyncMark {
                run: 5,
                at: 6,
                tags: ["vip".to_string()].into(),
                outcome: crate::follower::SyncOutcome::New,
            });
        }
        let bytes4 = encode_record(&mut profiled.clone());
        assert_eq!(decode_record(b"k", &bytes4).unwrap(), profiled);

        // A record written by version 3 (this layout, the follower without them) loads.
        let f = r.follower.as_ref().unwrap();
        let v3f = Some(legacy::FollowerV3::from(&Follower {
            history: Vec::new(),
            ..f.clone()
        }));
        let v3 = format::as_version_3(
            &encode_record(&mut r.clone()),
            &postcard::to_allocvec(&v3f).unwrap(),
        );
        assert_eq!(decode_record(b"k", &v3).unwrap(), r);

        // A record written by version 2 (postcard of the whole record) still loads.
        let v2 = legacy::RecordV2 {
            follower: r.follower.as_ref().map(legacy::FollowerV3::from),
            deliveries: v2_deliveries(&r),
        };
        let old = postcard::to_extend(&v2, vec![2u8]).unwrap();
        assert_eq!(decode_record(b"k", &old).unwrap(), r);

        // A record written by version 1 (before `cs_window`) still loads, window closed.
        let f = r.follower.clone().unwrap();
        let v1 = legacy::RecordV1 {
            follower: Some(legacy::FollowerV1 {
                openid: f.openid.clone(),
                subscribed: f.subscribed,
                first_subscribed_at: f.first_subscribed_at,
                last_subscribed_at: f.last_subscribed_at,
                unsubscribed_at: f.unsubscribed_at,
                first_scene: f.first_scene.clone(),
                scenes: f.scenes.clone(),
                tags: f.tags.clone(),
                attributes: f.attributes.clone(),
                counters: f.counters.clone(),
                messages_in: f.messages_in,
                last_inbound_at: f.last_inbound_at,
                last_interaction_at: f.last_interaction_at,
                history: f.history.clone(),
            }),
            deliveries: v2_deliveries(&r),
        };
        let old = postcard::to_extend(&v1, vec![1u8]).unwrap();
        assert_eq!(decode_record(b"k", &old).unwrap(), r);
        let mut trailing = bytes.clone();
        trailing.push(0);
        for bad in [
            &b""[..],
            &[9, 1, 2][..],
            &bytes[..bytes.len() / 2],
            &bytes[..bytes.len() - 1],
            &trailing[..],
        ] {
            assert!(
                matches!(decode_record(b"k", bad), Err(StoreError::Corrupt { .. })),
                "{bad:?}"
            );
        }
    }

    fn history_entry(i: i64) -> crate::follower::HistoryEntry {
        crate::follower::HistoryEntry {
            at: 1000 + i,
            kind: "text".into(),
            detail: Some(format!("我要关键词{i}")),
            rule: (i % 2 == 0).then(|| format!("r{i}")),
        }
    }

    fn delivery(key: &str, expires_at: i64) -> Delivery {
        Delivery {
            key: key.into(),
            expires_at,
            answer: Answer {
                reply: Some(Reply::Text {
                    content: format!("你好 ]]> 😀 {key}"),
                }),
                rules: vec!["a".into()],
            },
        }
    }

    fn v2_deliveries(r: &Record) -> Vec<legacy::DeliveryV2> {
        r.deliveries
            .iter()
            .map(|d| legacy::DeliveryV2 {
                key: d.key.clone(),
                expires_at: d.expires_at,
                answer: d.answer.clone(),
            })
            .collect()
    }

    /// The stored path (`apply_stored`, sled) and the in-memory one (`Record::apply`) give
    /// the same answers and leave the same record, from any record version.
    #[test]
    fn stored_records_apply_as_in_memory_ones() {
        let mut f = Follower::new("o1");
        f.history = (0..crate::follower::HISTORY_LEN as i64)
            .map(history_entry)
            .collect();
        // Expired, live, the same key expired, a long answer.
        let mut long = delivery("m:long", 500);
        long.answer.reply = Some(Reply::Text {
            content: "长".repeat(200),
        });
        let mut deliveries = vec![delivery("m:old", 50), delivery("m:9", 50), long];
        deliveries.extend((0..DELIVERIES_KEPT).map(|i| delivery(&format!("m:{i}"), 300)));
        let start = Record {
            follower: Some(f),
            deliveries,
        };
        let mut decide = |f: Option<Follower>| {
            let mut f = f.unwrap_or_else(|| Follower::new("o1"));
            assert!(f.history.is_empty(), "decisions get no history");
            f.messages_in += 1;
            f.history.push(history_entry(100 + f.messages_in as i64));
            Commit {
                follower: Some(f),
                answer: Answer {
                    reply: None,
                    rules: vec!["r".into()],
                },
                effects: vec![],
                counts: vec![],
            }
        };
        let keys = ["m:9", "m:3", "m:long", "m:new", "m:new"];
        let v2 = legacy::RecordV2 {
            follower: start.follower.as_ref().map(legacy::FollowerV3::from),
            deliveries: v2_deliveries(&start),
        };
        let v2 = postcard::to_extend(&v2, vec![2u8]).unwrap();
        for mut stored in [encode_record(&mut start.clone()), v2] {
            let mut memory = start.clone();
            for (i, dedupe_key) in keys.into_iter().enumerate() {
                let ck = CallbackKey {
                    account: "demo",
                    openid: "o1",
                    dedupe_key,
                    now: 100 + i as i64,
                    expires_at: 1000,
                };
                let (want, _, _) = memory.apply(ck, &mut decide);
                let (got, written) = apply_stored(b"k", Some(&stored), ck, &mut decide).unwrap();
                assert_eq!(got, want, "{dedupe_key}");
                assert_eq!(written.value.is_some(), matches!(got, Applied::Fresh(_)));
                if let Some(value) = written.value {
                    stored = value;
                }
                assert_eq!(
                    decode_record(b"k", &stored).unwrap(),
                    memory,
                    "{dedupe_key}"
                );
            }
            // Three fresh deliveries: their entries are the newest, the oldest dropped.
            let history = &memory.follower.as_ref().unwrap().history;
            assert_eq!(history.len(), crate::follower::HISTORY_LEN);
            assert_eq!(history[0], history_entry(3));
            assert_eq!(history.last(), Some(&history_entry(103)));
        }
        let ck = CallbackKey {
            account: "demo",
            openid: "o2",
            dedupe_key: "m:1",
            now: 100,
            expires_at: 1000,
        };
        let (got, written) = apply_stored(b"k", None, ck, &mut decide).unwrap();
        assert!(matches!(got, Applied::Fresh(_)));
        let mut memory = Record::default();
        memory.apply(ck, &mut decide);
        assert_eq!(
            decode_record(b"k", &written.value.unwrap()).unwrap(),
            memory
        );
    }
}
