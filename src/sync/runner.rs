//! Running a sync: WeChat's follower list page by page (`user/get`, 10,000 openids), each
//! page in batches of 100 (`user/info/batchget`), each batch one atomic [`Store::sync_step`]
//! with the run's cursor; then the sweep over siyu's own followers of the account.
//!
//! Memory stays flat: one page of openids and one batch of answers at a time, whatever the
//! account's size. Calls are paced at the account's `rate_per_sec`. A transient failure
//! (WeChat busy, the minute's quota, the network) is retried with backoff; a batch that
//! still fails is counted as failed, with its reason, and the run goes on; a failure every
//! call would repeat (a wrong secret, the day's quota) stops the run, resumable later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{
    merge, merge_contact, sweep, sweep_contact, CorpTagNames, Phase, SyncRun, SyncState, TagNames,
};
use crate::api::{
    ApiClient, ApiError, ContactEntry, UserInfo, MAX_OPENIDS_PER_INFO_BATCH,
    MAX_USERIDS_PER_CONTACT_BATCH,
};
use crate::config::AccountKind;
use crate::follower::Follower;
use crate::store::{Store, StoreError};

/// Followers of siyu's own looked at per step of the sweep.
const SWEEP_PAGE: usize = 500;
/// Tries of one call while WeChat's answer is transient.
const TRIES: u32 = 5;
/// How long a sync holds its account (renewed every step): a second sync of the account,
/// from this or another instance, is refused meanwhile.
pub const SYNC_LEASE_MS: i64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("account `{0}` is not in the config (账号不在配置中)")]
    NoAccount(String),
    #[error("account `{0}` has no [account.api] settings, so WeChat cannot be asked for its followers (账号未配置 [account.api])")]
    NoApi(String),
    #[error(
        "a sync of account `{0}` is already running, here or on another instance (该账号正在同步)"
    )]
    Busy(String),
    /// The daily schedule's start, when one is recorded for that day already (by another
    /// instance, between its look and its lease).
    #[error("the scheduled sync of account `{0}` has already started on {1} (今日定时同步已开始)")]
    ScheduledAlready(String, String),
}

/// The account's automatic tags, applied to each follower a step writes (at `now`); the
/// outbox items that mirror what they changed, queued in the step's write
/// ([`crate::engine::autotag_effects`]).
pub type Autotag = std::sync::Arc<
    dyn Fn(&mut Follower, i64) -> Vec<crate::outbox::NewItem> + Send + std::marker::Sync,
>;

/// Applies the shop events kept for people a step wrote (README "Behaviour from the
/// shop"): given the store and the unionids of the step's followers, after the step's
/// write, so that the people index links them.
pub type KeptEvents =
    Arc<dyn Fn(&dyn Store, &[String]) -> Result<(), StoreError> + Send + std::marker::Sync>;

/// How a run is started.
#[derive(Clone, Default)]
pub struct SyncOptions {
    /// Drop an unfinished run and start from the first page.
    pub restart: bool,
    /// Who starts it, for the run's `by`.
    pub by: String,
    /// Calls per second to WeChat (0: unpaced).
    pub rate_per_sec: f64,
    /// Names this process in the lease.
    pub owner: String,
    /// The account's `[[autotag]]`s (README "Automatic tags").
    pub autotag: Option<Autotag>,
    /// Set by the daily schedule: the China date recorded as the day's scheduled start
    /// (`SyncRun::scheduled_on`), in the run's first write.
    pub scheduled_on: Option<String>,
    /// Applies the kept shop events of each step's people.
    pub kept: Option<KeptEvents>,
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("restart", &self.restart)
            .field("by", &self.by)
            .field("rate_per_sec", &self.rate_per_sec)
            .field("owner", &self.owner)
            .field("autotag", &self.autotag.is_some())
            .field("scheduled_on", &self.scheduled_on)
            .field("kept", &self.kept.is_some())
            .finish()
    }
}

/// The account can be synced with these settings: known, with API settings (the CLI and
/// the admin API check alike).
pub fn runnable(
    settings: &crate::config::Settings,
    account: &str,
) -> Result<crate::api::ApiSettings, SyncError> {
    let a = settings
        .account(account)
        .ok_or_else(|| SyncError::NoAccount(account.to_string()))?;
    a.api
        .clone()
        .ok_or_else(|| SyncError::NoApi(account.to_string()))
}

/// The run to go on with: the unfinished one (`restart` unset), else a new one. The day
/// of the last scheduled start is carried over, or set to `options.scheduled_on`.
pub fn start_or_resume(
    store: &dyn Store,
    account: &str,
    options: &SyncOptions,
    now_ms: i64,
) -> Result<SyncRun, StoreError> {
    let previous = store.sync_run(account)?;
    let carried = previous.as_ref().and_then(|r| r.scheduled_on.clone());
    let mut run = match previous {
        Some(mut run) if run.state != SyncState::Done && !options.restart => {
            run.state = SyncState::Running;
            run.error = None;
            run
        }
        _ => SyncRun::new(account, now_ms, &options.by),
    };
    run.scheduled_on = options.scheduled_on.clone().or(carried);
    Ok(run)
}

/// Runs (or resumes) the account's sync until it is done, fails, or `stop` turns true.
/// Returns the run as stored; `progress` sees it after every step.
pub async fn run(
    store: Arc<dyn Store>,
    client: Arc<ApiClient>,
    account: &str,
    options: SyncOptions,
    progress: watch::Sender<SyncRun>,
    mut stop: watch::Receiver<bool>,
) -> Result<SyncRun, SyncError> {
    let lease = format!("sync:{account}");
    let owner = options.owner.clone();
    if !lease_for(&store, &lease, &owner).await? {
        return Err(SyncError::Busy(account.to_string()));
    }
    let acc = account.to_string();
    let opts = options.clone();
    let started = blocking(&store, move |s| {
        if let Some(day) = &opts.scheduled_on {
            // Looked at again under the lease: another instance may have run the day's
            // scheduled sync between the schedule's look and this lease.
            let last = s.sync_run(&acc)?.and_then(|r| r.scheduled_on);
            if last.as_deref().is_some_and(|d| d >= day.as_str()) {
                return Ok(None);
            }
        }
        start_or_resume(s, &acc, &opts, crate::outbox::now_ms()).map(Some)
    })
    .await;
    let mut run = match started {
        Ok(Some(run)) => run,
        other => {
            let (lease, owner) = (lease.clone(), owner.clone());
            let _ = blocking(&store, move |s| s.release(&lease, &owner)).await;
            other?;
            return Err(SyncError::ScheduledAlready(
                account.to_string(),
                options.scheduled_on.clone().unwrap_or_default(),
            ));
        }
    };
    let mut sync = Sync {
        store: store.clone(),
        client,
        account: account.to_string(),
        pace: Pace::new(options.rate_per_sec),
        progress,
        lease,
        owner,
        autotag: options.autotag.clone(),
        kept: options.kept.clone(),
    };
    let result = sync.drive(&mut run, &mut stop).await;
    let (store2, lease, owner) = (store.clone(), sync.lease.clone(), sync.owner.clone());
    let _ = blocking(&store2, move |s| s.release(&lease, &owner)).await;
    result.map(|()| run)
}

struct Sync {
    store: Arc<dyn Store>,
    client: Arc<ApiClient>,
    account: String,
    pace: Pace,
    progress: watch::Sender<SyncRun>,
    lease: String,
    owner: String,
    autotag: Option<Autotag>,
    kept: Option<KeptEvents>,
}

/// Why the walk stopped early.
enum Halt {
    /// `stop` turned true: the run stays `running`, resumable.
    Stopped,
    /// A failure every call would repeat.
    Failed(String),
}

impl Sync {
    async fn drive(
        &mut self,
        run: &mut SyncRun,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), SyncError> {
        self.step(run, Vec::new(), HashMap::new(), &TagNames::new(), 0)
            .await?;
        let listed = match self.client.kind() {
            AccountKind::Official => self.list_followers(run, stop).await?,
            AccountKind::Wecom => self.list_contacts(run, stop).await?,
        };
        if let Err(halt) = listed {
            return self.halt(run, halt).await;
        }
        if run.counts.failed == 0 {
            while run.phase == Phase::Sweep {
                if *stop.borrow() {
                    return self.halt(run, Halt::Stopped).await;
                }
                self.sweep_page(run).await?;
            }
        } else {
            run.error = Some(format!(
                "{} followers could not be read, so followers missing from WeChat's list were not marked unsubscribed: run the sync again (有 {} 位粉丝读取失败，未标记取关：请再同步一次)",
                run.counts.failed, run.counts.failed
            ));
        }
        run.state = SyncState::Done;
        run.finished_at = Some(crate::outbox::now_ms().div_euclid(1000));
        self.step(run, Vec::new(), HashMap::new(), &TagNames::new(), 0)
            .await?;
        tracing::info!(account = %self.account, summary = %run.summary(), "follower sync done");
        Ok(())
    }

    async fn halt(&mut self, run: &mut SyncRun, halt: Halt) -> Result<(), SyncError> {
        if let Halt::Failed(reason) = halt {
            tracing::warn!(account = %self.account, %reason, "follower sync stopped");
            run.state = SyncState::Failed;
            run.error = Some(reason);
            self.step(run, Vec::new(), HashMap::new(), &TagNames::new(), 0)
                .await?;
        }
        Ok(())
    }

    /// Official accounts: WeChat's follower list, page by page.
    async fn list_followers(
        &mut self,
        run: &mut SyncRun,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Result<(), Halt>, SyncError> {
        let tags = match self.tag_names(stop).await {
            Ok(t) => t,
            Err(halt) => return Ok(Err(halt)),
        };
        while run.phase == Phase::List {
            if let Err(halt) = self.page(run, &tags, stop).await? {
                return Ok(Err(halt));
            }
        }
        Ok(Ok(()))
    }

    /// WeCom: every staff member's external contacts, 100 staff members and 100 entries
    /// a call, from the run's staff chunk and cursor.
    async fn list_contacts(
        &mut self,
        run: &mut SyncRun,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Result<(), Halt>, SyncError> {
        let client = self.client.clone();
        let tags: CorpTagNames = match self
            .call(stop, || {
                let client = client.clone();
                async move { client.corp_tags().await }
            })
            .await
        {
            Ok(t) => t.into_iter().collect(),
            Err(e) => {
                return Ok(Err(e.unwrap_or_else(|e| {
                    Halt::Failed(format!("get_corp_tag_list: {e}"))
                })))
            }
        };
        let staff = match self
            .call(stop, || {
                let client = client.clone();
                async move { client.follow_users().await }
            })
            .await
        {
            Ok(s) => s,
            Err(e) => {
                return Ok(Err(e.unwrap_or_else(|e| {
                    Halt::Failed(format!("get_follow_user_list: {e}"))
                })))
            }
        };
        let chunks: Vec<Vec<String>> = staff
            .chunks(MAX_USERIDS_PER_CONTACT_BATCH)
            .map(<[String]>::to_vec)
            .collect();
        while run.phase == Phase::List {
            if *stop.borrow() {
                return Ok(Err(Halt::Stopped));
            }
            let Some(chunk) = chunks.get(run.staff_chunk).cloned() else {
                let mut next = run.clone();
                next.phase = Phase::Sweep;
                self.contacts_step(&mut next, Vec::new(), &tags, 0).await?;
                *run = next;
                break;
            };
            let cursor = run.page_from.clone().unwrap_or_default();
            let asked_at = crate::outbox::now_ms().div_euclid(1000);
            let page = match self
                .call(stop, || {
                    let (client, chunk, cursor) = (client.clone(), chunk.clone(), cursor.clone());
                    async move { client.contacts_by_user(&chunk, &cursor).await }
                })
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    return Ok(Err(e.unwrap_or_else(|e| {
                        Halt::Failed(format!("batch/get_by_user: {e}"))
                    })))
                }
            };
            let mut next = run.clone();
            if page.next_cursor.is_empty() {
                next.staff_chunk += 1;
                next.page_from = None;
            } else {
                next.page_from = Some(page.next_cursor.clone());
            }
            next.page_done += page.external_contact_list.len();
            self.contacts_step(&mut next, page.external_contact_list, &tags, asked_at)
                .await?;
            *run = next;
        }
        Ok(Ok(()))
    }

    /// Writes one page of contact entries with the run.
    async fn contacts_step(
        &mut self,
        run: &mut SyncRun,
        entries: Vec<ContactEntry>,
        tags: &CorpTagNames,
        asked_at: i64,
    ) -> Result<(), SyncError> {
        let mut next = run.clone();
        let account = self.account.clone();
        let tags = tags.clone();
        let (lease, owner) = (self.lease.clone(), self.owner.clone());
        let mut ids: Vec<String> = entries
            .iter()
            .map(|e| e.external_contact.external_userid.clone())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let autotag = self.autotag.clone();
        let (kept, acc) = (self.kept.clone(), self.account.clone());
        let stored = blocking(&self.store, move |s| {
            renew(s, &lease, &owner)?;
            let mut people = Vec::new();
            s.sync_step(&account, &ids, &mut next, &mut |run, id, stored, items| {
                let mut contact = stored;
                for e in entries
                    .iter()
                    .filter(|e| e.external_contact.external_userid == id)
                {
                    contact = Some(merge_contact(contact, e, &tags, run, asked_at));
                }
                if let (Some(f), Some(autotag)) = (contact.as_mut(), &autotag) {
                    items.extend(autotag(f, asked_at));
                }
                people.extend(contact.as_ref().and_then(|f| f.unionid.clone()));
                contact
            })?;
            apply_kept(s, &acc, kept.as_ref(), &people);
            Ok::<_, StoreError>(next)
        })
        .await?;
        *run = stored;
        run.total = run.counts.listed();
        let _ = self.progress.send(run.clone());
        Ok(())
    }

    /// WeChat's tags, by id; their ids are remembered for tagging followers later.
    async fn tag_names(&mut self, stop: &mut watch::Receiver<bool>) -> Result<TagNames, Halt> {
        let client = self.client.clone();
        let tags = self
            .call(stop, || {
                let client = client.clone();
                async move { client.list_tags().await }
            })
            .await
            .map_err(|e| e.unwrap_or_else(|e| Halt::Failed(format!("tags/get: {e}"))))?;
        let account = self.account.clone();
        let known = tags.clone();
        let _ = blocking(&self.store, move |s| {
            known
                .iter()
                .try_for_each(|t| s.put_tag_id(&account, &t.name, t.id))
        })
        .await;
        Ok(tags.into_iter().map(|t| (t.id, t.name)).collect())
    }

    /// The page at the run's cursor, from where the run left it, batch by batch.
    async fn page(
        &mut self,
        run: &mut SyncRun,
        tags: &TagNames,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Result<(), Halt>, SyncError> {
        let client = self.client.clone();
        let from = run.page_from.clone();
        let page = match self
            .call(stop, || {
                let (client, from) = (client.clone(), from.clone());
                async move { client.follower_page(from.as_deref()).await }
            })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                return Ok(Err(
                    e.unwrap_or_else(|e| Halt::Failed(format!("user/get: {e}")))
                ))
            }
        };
        run.total = page.total;
        if page.openids.is_empty() {
            run.phase = Phase::Sweep;
            return Ok(Ok(()));
        }
        let last_page = page.next_openid.is_empty();
        // A page taken up again after a stop: WeChat's list may have moved since (followers
        // gone before the cursor shift it), so the page is done again from its start,
        // leaving out only the followers this run has already written.
        let todo = if run.page_done > 0 {
            let (account, id, openids) = (self.account.clone(), run.id, page.openids.clone());
            blocking(&self.store, move |s| {
                let mut left = Vec::with_capacity(openids.len());
                for o in openids {
                    let seen = s
                        .follower(&account, &o)?
                        .and_then(|f| f.synced)
                        .is_some_and(|m| m.run == id);
                    if !seen {
                        left.push(o);
                    }
                }
                Ok(left)
            })
            .await?
        } else {
            page.openids
        };
        if todo.is_empty() {
            let mut next = run.clone();
            if last_page {
                next.phase = Phase::Sweep;
            }
            next.page_from = Some(page.next_openid.clone());
            next.page_done = 0;
            self.step(&mut next, Vec::new(), HashMap::new(), tags, 0)
                .await?;
            *run = next;
            return Ok(Ok(()));
        }
        let mut done = 0;
        while done < todo.len() {
            if *stop.borrow() {
                return Ok(Err(Halt::Stopped));
            }
            let end = (done + MAX_OPENIDS_PER_INFO_BATCH).min(todo.len());
            let batch = todo[done..end].to_vec();
            let client = self.client.clone();
            let asked_at = crate::outbox::now_ms().div_euclid(1000);
            let answer = self
                .call(stop, || {
                    let (client, batch) = (client.clone(), batch.clone());
                    async move { client.user_info_batch(&batch).await }
                })
                .await;
            let mut next = run.clone();
            if end == todo.len() {
                if last_page {
                    next.phase = Phase::Sweep;
                }
                next.page_from = Some(page.next_openid.clone());
                next.page_done = 0;
            } else {
                next.page_done += batch.len();
            }
            match answer {
                Ok(infos) => {
                    let infos: HashMap<String, UserInfo> =
                        infos.into_iter().map(|i| (i.openid.clone(), i)).collect();
                    self.step(&mut next, batch, infos, tags, asked_at).await?;
                }
                Err(Err(e)) if !stops_the_run(&e) => {
                    next.fail(
                        &batch[0],
                        batch.len() as u64,
                        format!("user/info/batchget: {e}"),
                    );
                    self.step(&mut next, Vec::new(), HashMap::new(), tags, 0)
                        .await?;
                }
                Err(Err(e)) => return Ok(Err(Halt::Failed(format!("user/info/batchget: {e}")))),
                Err(Ok(halt)) => return Ok(Err(halt)),
            }
            *run = next;
            done = end;
        }
        Ok(Ok(()))
    }

    /// One page of siyu's followers of the account, those not on WeChat's list marked
    /// unsubscribed.
    async fn sweep_page(&mut self, run: &mut SyncRun) -> Result<(), SyncError> {
        let (account, after) = (self.account.clone(), run.sweep_after.clone());
        let page = blocking(&self.store, move |s| {
            s.followers_after(&account, after.as_deref(), SWEEP_PAGE)
        })
        .await?;
        let now = crate::outbox::now_ms().div_euclid(1000);
        let mut next = run.clone();
        match page.last() {
            None => next.phase = Phase::Done,
            Some(last) => next.sweep_after = Some(last.openid.clone()),
        }
        let wecom = self.client.kind() == AccountKind::Wecom;
        let swept = move |f: &Follower, run: &mut SyncRun| {
            if wecom {
                sweep_contact(f, run, now)
            } else {
                let swept = sweep(f, run, now)?;
                run.counts.add(crate::follower::SyncOutcome::Unsubscribed);
                Some(swept)
            }
        };
        // Which followers to look at again under their lock (what this counts is thrown away:
        // the step counts on the stored state).
        let mut scratch = run.clone();
        let stale: Vec<String> = page
            .iter()
            .filter(|f| swept(f, &mut scratch).is_some())
            .map(|f| f.openid.clone())
            .collect();
        let account = self.account.clone();
        let (lease, owner) = (self.lease.clone(), self.owner.clone());
        let stored = blocking(&self.store, move |s| {
            renew(s, &lease, &owner)?;
            s.sync_step(&account, &stale, &mut next, &mut |run, _, stored, _| {
                // Decided again on the follower as stored now: a callback may have come.
                swept(stored.as_ref()?, run)
            })?;
            Ok::<_, StoreError>(next)
        })
        .await?;
        *run = stored;
        let _ = self.progress.send(run.clone());
        Ok(())
    }

    /// Writes one batch's followers (merged with WeChat's answers) with the run.
    async fn step(
        &mut self,
        run: &mut SyncRun,
        batch: Vec<String>,
        infos: HashMap<String, UserInfo>,
        tags: &TagNames,
        asked_at: i64,
    ) -> Result<(), SyncError> {
        let mut next = run.clone();
        let account = self.account.clone();
        let tags = tags.clone();
        let (lease, owner) = (self.lease.clone(), self.owner.clone());
        let autotag = self.autotag.clone();
        let (kept, acc) = (self.kept.clone(), self.account.clone());
        let stored = blocking(&self.store, move |s| {
            renew(s, &lease, &owner)?;
            let mut people = Vec::new();
            s.sync_step(
                &account,
                &batch,
                &mut next,
                &mut |run, openid, stored, items| {
                    if stored
                        .as_ref()
                        .and_then(|f| f.synced.as_ref())
                        .is_some_and(|m| m.run == run.id)
                    {
                        // Written by this run before a stop: counted then. Their kept
                        // events are looked at again (the stop may have come before that).
                        people.extend(stored.and_then(|f| f.unionid));
                        return None;
                    }
                    let Some(info) = infos.get(openid) else {
                        run.fail(openid, 1, "WeChat's answer left this follower out".into());
                        return None;
                    };
                    let (mut f, outcome): (Follower, _) = merge(stored, info, &tags, run, asked_at);
                    run.counts.add(outcome);
                    if let Some(autotag) = &autotag {
                        items.extend(autotag(&mut f, asked_at));
                    }
                    people.extend(f.unionid.clone());
                    Some(f)
                },
            )?;
            apply_kept(s, &acc, kept.as_ref(), &people);
            Ok::<_, StoreError>(next)
        })
        .await?;
        *run = stored;
        let _ = self.progress.send(run.clone());
        Ok(())
    }

    /// One API call, paced, retried while its failure is transient. `Err(Ok(halt))`: the
    /// run must stop (asked to, or waiting for a retry was cut short); `Err(Err(e))`: the
    /// call failed for good.
    async fn call<T, F, Fut>(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        mut f: F,
    ) -> Result<T, Result<Halt, ApiError>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut wait = Duration::from_millis(500);
        for attempt in 1..=TRIES {
            self.pace.tick().await;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && !stops_the_run(&e) && attempt < TRIES => {
                    tracing::info!(account = %self.account, error = %e, attempt, "WeChat call failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.wait_for(|s| *s) => return Err(Ok(Halt::Stopped)),
                    }
                    wait = (wait * 2).min(Duration::from_secs(8));
                }
                Err(e) => return Err(Err(e)),
            }
        }
        unreachable!("the last try returns")
    }
}

/// The step's kept shop events, after its write (its links are in the people index then).
/// Every follower's unionid of the step is looked at, not only new links: a crash between
/// a step and this is made good by the next run, which sees every follower again. A
/// failure here is logged and the run goes on (the events stay kept for the next run).
fn apply_kept(store: &dyn Store, account: &str, kept: Option<&KeptEvents>, people: &[String]) {
    let Some(kept) = kept else { return };
    if people.is_empty() {
        return;
    }
    if let Err(e) = kept(store, people) {
        tracing::warn!(%account, error = %e, "kept shop events not applied; the next sync tries again");
    }
}

/// Failures every further call would repeat: the run stops (and can be resumed).
fn stops_the_run(e: &ApiError) -> bool {
    e.is_token_error()
        || matches!(
            e,
            ApiError::DailyQuotaReached
                | ApiError::InvalidAppSecret
                | ApiError::IpNotWhitelisted
                | ApiError::Invalid(_)
        )
}

fn renew(store: &dyn Store, lease: &str, owner: &str) -> Result<(), StoreError> {
    if store.lease(lease, owner, crate::outbox::now_ms(), SYNC_LEASE_MS)? {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "lost the lease `{lease}` to another instance"
        )))
    }
}

async fn lease_for(store: &Arc<dyn Store>, lease: &str, owner: &str) -> Result<bool, StoreError> {
    let (lease, owner) = (lease.to_string(), owner.to_string());
    blocking(store, move |s| {
        s.lease(&lease, &owner, crate::outbox::now_ms(), SYNC_LEASE_MS)
    })
    .await
}

/// A store call off the async threads (a PostgreSQL store waits on the network).
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| StoreError::Backend(format!("a store call did not finish: {e}")))?
}

/// At most `rate` calls a second.
struct Pace {
    interval: Option<tokio::time::Interval>,
}

impl Pace {
    fn new(rate: f64) -> Pace {
        let interval = (rate > 0.0).then(|| {
            let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        Pace { interval }
    }

    async fn tick(&mut self) {
        if let Some(i) = self.interval.as_mut() {
            i.tick().await;
        }
    }
}
