//! The outbox worker: delivers queued items through each account's API client, in the
//! background, never on a callback's path.
//!
//! One pass pages through the queue in id order (never the whole queue in memory), takes
//! the items that are due, and delivers them: tag changes batched per (account, tag) up to
//! 50 followers a call, everything else one call per item, `concurrency` calls in flight.
//! A slot that frees up takes the next item at once (one slow call holds only its own
//! slot); at the end of the queue, while calls are still out, the pass keeps watching for
//! new items and for items falling due, so it ends only when nothing is in flight.
//! Each outcome is written to the store before the item counts as handled: delivered
//! items leave the queue (and the write is flushed to disk before the slot takes its next
//! item), failed ones are rescheduled with backoff or moved to the dead letters.
//!
//! Exactly once, and its one gap: an item is removed only after WeChat accepted it, so a
//! crash never loses one. A crash after WeChat accepted a call and before its removal
//! reached the disk means that item is sent again after the restart; at most one item per
//! slot (`concurrency`), or per tag batch, is ever in that state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{watch, Notify};

use super::{now_ms, verdict, Effect, OutboxItem, Verdict};
use crate::api::{ApiClient, ApiError, ApiSettings, CustomMessage};
use crate::config::OutboxSettings;
use crate::store::{GroupFlush, Store, StoreError};

/// WeChat's batch tagging takes at most 50 openids per call (protocol.md §10).
pub const TAG_BATCH: usize = 50;
/// Items read from the store per page.
const PAGE: usize = 256;
/// The longest the worker sleeps when nothing is due and nobody wakes it.
const IDLE: Duration = Duration::from_secs(1);
/// How often the end of the queue is looked at again while calls are still out.
const RESCAN: Duration = Duration::from_millis(200);

/// One account's way out: its client and its pace.
pub struct Channel {
    pub client: Arc<ApiClient>,
    pub(crate) kind: crate::config::AccountKind,
    /// Where group-robot webhooks are posted (the account's API base).
    pub(crate) api_base: String,
    pub(crate) limiter: RateLimiter,
    corp_tags: BTreeMap<String, String>,
}

impl Channel {
    pub fn new(client: Arc<ApiClient>, settings: &ApiSettings) -> Channel {
        Channel {
            client,
            kind: settings.kind,
            api_base: settings.api_base.clone(),
            limiter: RateLimiter::new(settings.rate_per_sec),
            corp_tags: settings.corp_tags.clone(),
        }
    }
}

/// Paces one account's calls: each call gets the next free slot, `1/rate` apart.
pub(crate) struct RateLimiter {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl RateLimiter {
    pub(crate) fn new(per_sec: f64) -> RateLimiter {
        RateLimiter {
            interval: (per_sec > 0.0).then(|| Duration::from_secs_f64(1.0 / per_sec)),
            next: Mutex::new(Instant::now()),
        }
    }

    pub(crate) async fn acquire(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (*next).max(Instant::now());
            *next = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// Why an attempt failed.
pub(crate) enum Failure {
    Api(ApiError),
    /// Known to fail before calling (window closed, code expired, no corp tag id).
    Final(String),
    Store(StoreError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// What one worker slot does: one item, or one page's tag changes (batched).
enum Job {
    Single(Box<OutboxItem>),
    Tags(Vec<OutboxItem>),
}

impl Job {
    fn ids(&self) -> Vec<u64> {
        match self {
            Job::Single(item) => vec![item.id],
            Job::Tags(items) => items.iter().map(|i| i.id).collect(),
        }
    }
}

fn forget(busy: &mut HashSet<u64>, done: Vec<u64>) {
    for id in done {
        busy.remove(&id);
    }
}

/// One follower of a tag batch, with the queued items the call settles.
type Member = (String, Vec<OutboxItem>);

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PassReport {
    pub delivered: usize,
    pub retried: usize,
    pub dead: usize,
    /// API calls made (a tag batch is one call for many items).
    pub calls: usize,
    /// When the next waiting item is due (unix ms), if any.
    pub next_due_ms: Option<i64>,
}

#[derive(Default)]
struct Tally {
    delivered: usize,
    retried: usize,
    dead: usize,
    calls: usize,
}

pub struct Worker {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) channels: HashMap<String, Channel>,
    pub(crate) settings: OutboxSettings,
    /// Coupon batches, for campaigns that give one per follower.
    pub(crate) coupons: Vec<crate::coupon::Batch>,
    /// Referral programmes, for their posters and reward notices.
    pub(crate) referrals: Vec<crate::referral::Programme>,
    /// Each running campaign's own pace.
    pub(crate) campaign_limiters: Mutex<HashMap<String, Arc<RateLimiter>>>,
    /// Accounts whose daily API quota ran out (45009), until when (unix ms): their
    /// campaign sends wait instead of each spending a call on the same refusal. In
    /// memory: after a restart one call finds out again.
    pub(crate) quota_until: Mutex<HashMap<String, i64>>,
    /// Group commit for `flush`.
    flusher: Arc<GroupFlush>,
    /// Woken when a callback queues something.
    wake: Arc<Notify>,
    tally: Mutex<Tally>,
    metrics: Option<crate::server::metrics::Metrics>,
    /// This instance, as the owner of the outbox items it leases.
    pub(crate) owner: &'static str,
    /// The local day the report counts campaign sends in (`[display] utc_offset`).
    pub(crate) zone: crate::local_time::UtcOffset,
}

/// A name for this process among the instances sharing a store (host, pid and a random
/// part: a restarted process is a new owner, and its predecessor's leases run out). One per
/// process, shared by the outbox worker, the campaign runner and the token caches.
pub fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        format!(
            "{}-{}-{:08x}",
            if host.is_empty() { "siyu" } else { &host },
            std::process::id(),
            rand::random::<u32>()
        )
    })
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        channels: HashMap<String, Channel>,
        settings: OutboxSettings,
        wake: Arc<Notify>,
    ) -> Worker {
        let flusher = Arc::new(GroupFlush::over(store.clone()));
        Worker {
            store,
            channels,
            settings,
            coupons: Vec::new(),
            referrals: Vec::new(),
            campaign_limiters: Mutex::new(HashMap::new()),
            quota_until: Mutex::new(HashMap::new()),
            flusher,
            wake,
            tally: Mutex::new(Tally::default()),
            metrics: None,
            owner: instance_id(),
            zone: crate::local_time::UtcOffset::CHINA,
        }
    }

    pub fn with_zone(mut self, zone: crate::local_time::UtcOffset) -> Worker {
        self.zone = zone;
        self
    }

    /// Shares fsyncs with others writing the same store (the server's callbacks).
    pub fn with_flusher(mut self, flusher: Arc<GroupFlush>) -> Worker {
        self.flusher = flusher;
        self
    }

    pub fn with_coupons(mut self, coupons: Vec<crate::coupon::Batch>) -> Worker {
        self.coupons = coupons;
        self
    }

    pub fn with_referrals(mut self, referrals: Vec<crate::referral::Programme>) -> Worker {
        self.referrals = referrals;
        self
    }

    pub fn with_metrics(mut self, metrics: crate::server::metrics::Metrics) -> Worker {
        self.metrics = Some(metrics);
        self
    }

    /// Runs passes until `stop` turns true; a pass in progress finishes its calls first.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            let wait = match self.pass().await {
                Ok(report) => report
                    .next_due_ms
                    .map(|due| Duration::from_millis((due - now_ms()).max(0) as u64).min(IDLE))
                    .unwrap_or(IDLE),
                Err(e) => {
                    tracing::error!(error = %e, "outbox: cannot read the queue; retrying in 1 s");
                    IDLE
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One pass over the queue: delivers every item due now.
    pub async fn pass(self: &Arc<Self>) -> Result<PassReport, StoreError> {
        *self.tally.lock().unwrap_or_else(|p| p.into_inner()) = Tally::default();
        let mut next_due: Option<i64> = None;
        let mut after = None;
        // Jobs in flight, and their items: the next page is read as soon as a slot frees
        // up, so one slow call holds its own slot, never the items behind it.
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        let mut busy: HashSet<u64> = HashSet::new();
        let read = loop {
            let page = match self.store.outbox_page(after, PAGE) {
                Ok(page) => page,
                Err(e) => break Err(e),
            };
            let Some(last) = page.last() else {
                if in_flight.is_empty() {
                    break Ok(());
                }
                // The end of the queue with calls still out: watch for new items (a
                // callback's wake, or a tick) and for items falling due meanwhile.
                tokio::select! {
                    Some(done) = in_flight.next() => forget(&mut busy, done),
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(RESCAN) => {}
                }
                if next_due.is_some_and(|due| due <= now_ms()) {
                    (after, next_due) = (None, None);
                }
                continue;
            };
            after = Some(last.id);
            let page: Vec<OutboxItem> =
                page.into_iter().filter(|i| !busy.contains(&i.id)).collect();
            let (tags, singles) = self.due(page, now_ms(), &mut next_due);
            let tags = (!tags.is_empty()).then_some(Job::Tags(tags));
            for job in tags
                .into_iter()
                .chain(singles.into_iter().map(|i| Job::Single(Box::new(i))))
            {
                while in_flight.len() >= self.settings.concurrency {
                    if let Some(done) = in_flight.next().await {
                        forget(&mut busy, done);
                    }
                }
                if self.store.waits_on_network() {
                    busy.extend(job.ids());
                    in_flight.push(futures_util::future::Either::Right(
                        self.clone().run_job_on_pool(job),
                    ));
                    continue;
                }
                let Some(job) = self.lease(job) else {
                    continue;
                };
                busy.extend(job.ids());
                in_flight.push(futures_util::future::Either::Left(self.run_job(job)));
            }
        };
        while let Some(done) = in_flight.next().await {
            forget(&mut busy, done);
        }
        read?;
        let t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        Ok(PassReport {
            delivered: t.delivered,
            retried: t.retried,
            dead: t.dead,
            calls: t.calls,
            next_due_ms: next_due,
        })
    }

    /// Leases the job's items to this instance for `lease_secs`; the job keeps the items
    /// leased (another instance sharing the store may be delivering the rest), `None` if
    /// none are left.
    fn lease(&self, job: Job) -> Option<Job> {
        let now = now_ms();
        let until = now.saturating_add(self.settings.lease_secs.saturating_mul(1000) as i64);
        let leased = match self.store.outbox_lease(&job.ids(), self.owner, now, until) {
            Ok(mut ids) => {
                ids.sort_unstable();
                ids
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot lease outbox items; trying again later");
                return None;
            }
        };
        let keep = |i: &OutboxItem| leased.binary_search(&i.id).is_ok();
        match job {
            Job::Single(item) => keep(&item).then_some(Job::Single(item)),
            Job::Tags(items) => {
                let items: Vec<OutboxItem> = items.into_iter().filter(keep).collect();
                (!items.is_empty()).then_some(Job::Tags(items))
            }
        }
    }

    /// [`Worker::run_job`] (lease first) on a thread of the blocking pool, for a store
    /// that waits on the network: every store call of a delivery is a round trip, and
    /// the deliveries in flight share one task, so on this task each wait would hold up
    /// all of them (a campaign on PostgreSQL went at 235 sends/s, one call at a time).
    /// Returns the job's ids whether or not it could lease them.
    async fn run_job_on_pool(self: Arc<Self>, job: Job) -> Vec<u64> {
        let ids = job.ids();
        let runtime = tokio::runtime::Handle::current();
        let ran = tokio::task::spawn_blocking(move || {
            if let Some(job) = self.lease(job) {
                runtime.block_on(self.run_job(job));
            }
        })
        .await;
        if let Err(e) = ran {
            tracing::error!(error = %e, "outbox: a delivery failed to run; its items stay queued");
        }
        ids
    }

    /// Runs one job; returns the ids of the items it settled.
    async fn run_job(&self, job: Job) -> Vec<u64> {
        let ids = job.ids();
        match job {
            Job::Single(item) => self.deliver(*item).await,
            Job::Tags(items) => self.sync_tags(items).await,
        }
        ids
    }

    /// Splits a page into what to deliver now: tag changes (to batch) and the rest.
    /// A tag change waits `tag_batch_delay_ms` for company; once one of an account's is
    /// due, all of that account's fresh tag changes in the page go along.
    fn due(
        &self,
        page: Vec<OutboxItem>,
        now: i64,
        next_due: &mut Option<i64>,
    ) -> (Vec<OutboxItem>, Vec<OutboxItem>) {
        let delay = self.settings.tag_batch_delay_ms as i64;
        let is_tag = |i: &OutboxItem| matches!(i.effect, Effect::Tag { .. });
        let tag_due = |i: &OutboxItem| {
            if i.attempts == 0 {
                i.due_ms.saturating_add(delay)
            } else {
                i.due_ms
            }
        };
        let ripe_accounts: Vec<String> = page
            .iter()
            .filter(|i| is_tag(i) && tag_due(i) <= now)
            .map(|i| i.account.clone())
            .collect();
        let (mut tags, mut singles) = (Vec::new(), Vec::new());
        // Whether each campaign in the page is running (a paused one's items wait).
        let mut running: HashMap<String, bool> = HashMap::new();
        for item in page {
            if !self.channels.contains_key(&item.account) {
                // Queued while the account had API settings; kept until it has them again.
                continue;
            }
            if let Effect::Campaign { campaign, .. }
            | Effect::Announcement { campaign }
            | Effect::Mass { campaign, .. } = &item.effect
            {
                if let Some(until) = self.quota_blocked(&item.account, now) {
                    *next_due = Some(next_due.map_or(until, |n| n.min(until)));
                    continue;
                }
                let go = *running
                    .entry(campaign.clone())
                    .or_insert_with(|| self.campaign_running(campaign));
                if !go {
                    continue;
                }
            }
            let ready = if is_tag(&item) {
                tag_due(&item) <= now
                    || (item.attempts == 0 && ripe_accounts.contains(&item.account))
            } else {
                item.due_ms <= now
            };
            let due = if is_tag(&item) {
                tag_due(&item)
            } else {
                item.due_ms
            };
            match (ready, is_tag(&item)) {
                (true, true) => tags.push(item),
                (true, false) => singles.push(item),
                (false, _) => *next_due = Some(next_due.map_or(due, |n| n.min(due))),
            }
        }
        (tags, singles)
    }

    async fn deliver(&self, item: OutboxItem) {
        let channel = &self.channels[&item.account];
        if let Effect::Campaign { campaign, openid } = &item.effect {
            let (campaign, openid) = (campaign.clone(), openid.clone());
            return self
                .deliver_campaign(channel, &item, &campaign, &openid)
                .await;
        }
        if let Effect::Mass { .. } = &item.effect {
            return self.deliver_mass(channel, &item).await;
        }
        if let Effect::ChannelCode {
            channel: name,
            request,
        } = &item.effect
        {
            return self
                .deliver_channel_code(channel, &item, name, request)
                .await;
        }
        // Referral items pace each of their calls themselves (several per item).
        if !matches!(
            item.effect,
            Effect::ReferralPoster { .. } | Effect::ReferralNotice { .. }
        ) {
            channel.limiter.acquire().await;
        }
        let result = match &item.effect {
            Effect::Custom { openid, message } => {
                self.send_custom(channel, &item.account, openid, message)
                    .await
            }
            Effect::Welcome {
                welcome_code,
                text,
                expires_at,
            } => {
                if now_ms() / 1000 >= *expires_at {
                    Err(Failure::Final(
                        "the WelcomeCode expired (usable 20 s after the contact was added)".into(),
                    ))
                } else {
                    self.count_call();
                    channel
                        .client
                        .send_welcome_msg(welcome_code, text)
                        .await
                        .map_err(Failure::Api)
                }
            }
            Effect::CorpTag {
                staff,
                external_userid,
                tag,
                add,
            } => match channel.corp_tags.get(tag) {
                None => Err(Failure::Final(format!(
                    "no WeCom corp tag id for tag `{tag}`: map it under [account.api.corp_tags] \
                     in the config, then `siyu outbox retry`"
                ))),
                Some(id) => {
                    let ids = [id.clone()];
                    let (add_ids, remove_ids): (&[String], &[String]) =
                        if *add { (&ids, &[]) } else { (&[], &ids) };
                    self.count_call();
                    channel
                        .client
                        .mark_tag(staff, external_userid, add_ids, remove_ids)
                        .await
                        .map_err(Failure::Api)
                }
            },
            Effect::Announcement { campaign } => self.announce(channel, campaign).await,
            Effect::ReferralPoster { programme, openid } => {
                self.deliver_poster(channel, &item.account, programme, openid)
                    .await
            }
            Effect::ReferralNotice {
                programme,
                inviter,
                tier,
            } => {
                self.deliver_notice(channel, &item.account, programme, inviter, *tier)
                    .await
            }
            Effect::Tag { .. }
            | Effect::Campaign { .. }
            | Effect::Mass { .. }
            | Effect::ChannelCode { .. } => {
                unreachable!("tag changes are batched by sync_tags; the others handled above")
            }
        };
        self.settle(&[item], result).await;
    }

    /// A customer-service message: only inside the follower's window as siyu knows it
    /// (one slot taken before the call, given back if WeChat did not take the message).
    pub(crate) async fn send_custom(
        &self,
        channel: &Channel,
        account: &str,
        openid: &str,
        message: &crate::protocol::Reply,
    ) -> Result<(), Failure> {
        let message = CustomMessage::from_reply(message)?;
        let now = now_ms() / 1000;
        let mut window = Ok(());
        let known = self
            .store
            .update_follower(account, openid, &mut |f| window = f.take_cs_slot(now))?;
        if known.is_none() {
            return Err(Failure::Final(format!("unknown follower {openid}")));
        }
        window.map_err(|closed| Failure::Final(closed.to_string()))?;
        self.count_call();
        let sent = channel.client.send_custom(openid, &message).await;
        if let Err(e) = &sent {
            if e.is_transient() {
                self.store
                    .update_follower(account, openid, &mut |f| f.return_cs_slot(now))?;
            }
        }
        sent.map_err(Failure::Api)
    }

    /// Tag changes, batched: the newest change per (account, follower, tag) wins (older
    /// ones are settled with it), then one call per (account, tag, add/remove) and 50
    /// followers.
    async fn sync_tags(&self, items: Vec<OutboxItem>) {
        // (account, tag, openid) → (add?, the items saying so).
        let mut latest: BTreeMap<(String, String, String), (bool, Vec<OutboxItem>)> =
            BTreeMap::new();
        for item in items {
            let Effect::Tag { openid, tag, add } = &item.effect else {
                continue;
            };
            let entry = latest
                .entry((item.account.clone(), tag.clone(), openid.clone()))
                .or_insert((*add, Vec::new()));
            entry.0 = *add;
            entry.1.push(item);
        }
        let mut groups: BTreeMap<(String, String, bool), Vec<Member>> = BTreeMap::new();
        for ((account, tag, openid), (add, items)) in latest {
            groups
                .entry((account, tag, add))
                .or_default()
                .push((openid, items));
        }
        for ((account, tag, add), members) in groups {
            let channel = &self.channels[&account];
            let id = match self.tag_id(channel, &account, &tag, add).await {
                Ok(id) => id,
                Err(e) => {
                    let all: Vec<OutboxItem> = members.into_iter().flat_map(|m| m.1).collect();
                    self.settle(&all, Err(e)).await;
                    continue;
                }
            };
            for chunk in members.chunks(TAG_BATCH) {
                let items: Vec<OutboxItem> =
                    chunk.iter().flat_map(|(_, i)| i.iter().cloned()).collect();
                let Some(id) = id else {
                    // Removing a tag WeChat never had: nothing to do.
                    self.settle(&items, Ok(())).await;
                    continue;
                };
                let openids: Vec<String> = chunk.iter().map(|(o, _)| o.clone()).collect();
                channel.limiter.acquire().await;
                self.count_call();
                let result = if add {
                    channel.client.batch_tag(id, &openids).await
                } else {
                    channel.client.batch_untag(id, &openids).await
                };
                self.settle(&items, result.map_err(Failure::Api)).await;
            }
        }
    }

    /// The WeChat id of a tag: cached in the store; created on first use (found by name
    /// if it exists already). `None` when removing a tag WeChat does not have.
    async fn tag_id(
        &self,
        channel: &Channel,
        account: &str,
        tag: &str,
        creating: bool,
    ) -> Result<Option<i64>, Failure> {
        if let Some(id) = self.store.tag_id(account, tag)? {
            return Ok(Some(id));
        }
        let created = if creating {
            self.count_call();
            channel.client.create_tag(tag).await
        } else {
            Err(ApiError::TagNameExists)
        };
        let id = match created {
            Ok(id) => Some(id),
            Err(ApiError::TagNameExists) => {
                self.count_call();
                let tags = channel.client.list_tags().await?;
                tags.into_iter().find(|t| t.name == tag).map(|t| t.id)
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(id) = id {
            self.store.put_tag_id(account, tag, id)?;
        }
        Ok(id)
    }

    /// Writes the outcome of one attempt for `items` (one call's worth).
    pub(crate) async fn settle(&self, items: &[OutboxItem], result: Result<(), Failure>) {
        let now = now_ms();
        let outcome = match result {
            Ok(()) => {
                let removed = items.iter().try_for_each(|i| self.store.outbox_done(i.id));
                let removed = match removed {
                    Ok(()) => self.flush().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = removed {
                    // Delivered but still queued: it will be sent again (the documented gap).
                    tracing::error!(error = %e, "outbox: cannot record a delivery");
                }
                for i in items {
                    tracing::info!(id = i.id, account = %i.account, effect = %i.effect.describe(), "outbox: delivered");
                }
                self.bump(|t| t.delivered += items.len(), "delivered", items);
                return;
            }
            Err(Failure::Store(e)) => {
                tracing::error!(error = %e, "outbox: store error while delivering; will retry");
                return;
            }
            Err(Failure::Final(reason)) => (Verdict::Dead(reason.clone()), reason),
            Err(Failure::Api(e)) => {
                let attempts = items.iter().map(|i| i.attempts).max().unwrap_or(0) + 1;
                let v = verdict(&self.settings.retry, attempts, &e, rand::random::<f64>());
                (v, e.to_string())
            }
        };
        let (outcome, error) = outcome;
        for item in items {
            let written = match &outcome {
                Verdict::Retry(wait) => {
                    let mut next = item.clone();
                    next.attempts += 1;
                    next.due_ms = now + *wait as i64;
                    next.last_error = Some(error.clone());
                    tracing::warn!(id = item.id, account = %item.account, attempt = next.attempts, retry_in_ms = wait, %error, "outbox: transient failure");
                    self.store.outbox_retry_later(&next)
                }
                Verdict::Dead(reason) => {
                    tracing::warn!(id = item.id, account = %item.account, effect = %item.effect.describe(), %reason, "outbox: dead letter");
                    self.store.outbox_bury(item, reason, now)
                }
            };
            if let Err(e) = written {
                tracing::error!(error = %e, id = item.id, "outbox: cannot record a failed attempt");
            }
        }
        match outcome {
            Verdict::Retry(_) => self.bump(|t| t.retried += items.len(), "retried", items),
            Verdict::Dead(_) => self.bump(|t| t.dead += items.len(), "dead", items),
        }
    }

    /// Makes this slot's writes so far durable, sharing fsyncs with the other slots (and
    /// with callbacks, when the server hands its own [`GroupFlush`] over).
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        self.flusher.flush().await
    }

    pub(crate) fn count_call(&self) {
        self.tally.lock().unwrap_or_else(|p| p.into_inner()).calls += 1;
    }

    pub(crate) fn bump_delivered(&self, item: &OutboxItem) {
        self.bump(
            |t| t.delivered += 1,
            "delivered",
            std::slice::from_ref(item),
        );
    }

    pub(crate) fn bump_retried(&self, item: &OutboxItem) {
        self.bump(|t| t.retried += 1, "retried", std::slice::from_ref(item));
    }

    pub(crate) fn bump_dead(&self, item: &OutboxItem) {
        self.bump(|t| t.dead += 1, "dead", std::slice::from_ref(item));
    }

    fn bump(&self, f: impl FnOnce(&mut Tally), outcome: &str, items: &[OutboxItem]) {
        f(&mut self.tally.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(m) = &self.metrics {
            for i in items {
                m.outbox(&i.account, i.effect.kind(), outcome);
            }
        }
    }
}
