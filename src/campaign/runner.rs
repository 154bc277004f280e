//! Running campaigns: starting, pausing and resuming them, and putting their audience
//! into the outbox chunk by chunk.
//!
//! The audience is walked in the store's key order. Each chunk is one atomic write: the
//! matching followers' progress (`Queued`), their outbox items, and the campaign's cursor
//! past the chunk. A crash anywhere leaves either the chunk written with its cursor, or
//! neither: a restart goes on from the cursor, so nobody is queued twice or left out. The
//! outbox worker then delivers the items (`send.rs`), and a campaign whose followers are
//! all queued and settled is done.

use std::time::Duration;

use super::{choose_channel, Campaign, CampaignRun, Plan, Progress, Report, RunState, MASS_MAX};
use crate::config::Settings;
use crate::outbox::{now_ms, Effect, NewItem};
use crate::segment::Segment;
use crate::store::{Store, StoreError};

/// Followers read (and queued) per atomic step.
pub const CHUNK: usize = 500;
/// How often `siyu serve` looks for campaigns to start, queue or finish.
pub const TICK: Duration = Duration::from_millis(500);

/// How long an instance drives a campaign without renewing (every [`TICK`]) before another
/// may take over.
pub const CAMPAIGN_LEASE_MS: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no campaign `{0}` (campaigns file, or `siyu campaign define`)")]
    Unknown(String),
    #[error("campaign `{name}`: account `{account}` is not in the config")]
    NoAccount { name: String, account: String },
    #[error("campaign `{name}`: account `{account}` has no [account.api] settings, so nothing can be sent")]
    NoApi { name: String, account: String },
    #[error("campaign `{name}`: coupon batch `{batch}` is not in the coupons file")]
    NoCoupon { name: String, batch: String },
    #[error("campaign `{name}` is {state}: {hint}")]
    State {
        name: String,
        state: RunState,
        hint: &'static str,
    },
    #[error("campaign `{0}` is already defined (in the campaigns file or by an earlier `define`)")]
    Exists(String),
    #[error("campaign `{name}`: audience: {message}")]
    Audience { name: String, message: String },
}

/// The outbox item for one follower of a campaign.
pub fn outbox_item(campaign: &str, openid: &str) -> NewItem {
    NewItem {
        effect: Effect::Campaign {
            campaign: campaign.to_string(),
            openid: openid.to_string(),
        },
        origin: format!("campaign:{campaign}"),
        not_before_ms: 0,
    }
}

/// A campaign by name: its run in the store (a started campaign keeps the definition it
/// started with), else its definition in the campaigns file.
pub fn find(
    store: &dyn Store,
    settings: &Settings,
    name: &str,
) -> Result<(Campaign, Option<CampaignRun>), CampaignError> {
    if let Some(run) = store.campaign_run(name)? {
        return Ok((run.campaign.clone(), Some(run)));
    }
    settings
        .campaigns
        .iter()
        .find(|c| c.name == name)
        .map(|c| (c.clone(), None))
        .ok_or_else(|| CampaignError::Unknown(name.to_string()))
}

/// Every campaign: runs in the store, then file definitions not started yet.
pub fn all(
    store: &dyn Store,
    settings: &Settings,
) -> Result<Vec<(Campaign, Option<CampaignRun>)>, StoreError> {
    let runs = store.campaign_runs()?;
    let mut out: Vec<(Campaign, Option<CampaignRun>)> = settings
        .campaigns
        .iter()
        .filter(|c| !runs.iter().any(|r| r.campaign.name == c.name))
        .map(|c| (c.clone(), None))
        .collect();
    out.extend(runs.into_iter().map(|r| (r.campaign.clone(), Some(r))));
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(out)
}

/// Checks that a campaign can run with these settings (its definition may have been
/// stored by another version of the config).
fn runnable(settings: &Settings, c: &Campaign) -> Result<(), CampaignError> {
    for id in c.accounts() {
        let account = settings
            .account(id)
            .ok_or_else(|| CampaignError::NoAccount {
                name: c.name.clone(),
                account: id.to_string(),
            })?;
        if account.api.is_none() {
            return Err(CampaignError::NoApi {
                name: c.name.clone(),
                account: id.to_string(),
            });
        }
    }
    if let Some(batch) = &c.coupon {
        if settings.coupon_batch(batch).is_none() {
            return Err(CampaignError::NoCoupon {
                name: c.name.clone(),
                batch: batch.clone(),
            });
        }
    }
    let segment = audience(c)?;
    crate::person::check_accounts(&segment, &|a| settings.account(a).is_some()).map_err(|m| {
        CampaignError::Audience {
            name: c.name.clone(),
            message: m,
        }
    })?;
    Ok(())
}

fn audience(c: &Campaign) -> Result<Segment, CampaignError> {
    Segment::parse(&c.audience).map_err(|e| CampaignError::Audience {
        name: c.name.clone(),
        message: e.to_string(),
    })
}

/// The identities (account, id) of `f`'s person in the campaign's accounts before number
/// `walking`: where the person may have been reached already. None without a unionid.
fn earlier_identities(
    store: &dyn Store,
    c: &Campaign,
    walking: usize,
    f: &crate::follower::Follower,
) -> Result<Vec<(String, String)>, StoreError> {
    let Some(unionid) = f.unionid.as_deref().filter(|_| walking > 0) else {
        return Ok(Vec::new());
    };
    let earlier: Vec<&str> = c.accounts().take(walking).collect();
    let mut people = store.people(unionid)?;
    people.retain(|(account, _)| earlier.contains(&account.as_str()));
    Ok(people)
}

/// Whether a follower of the campaign's account number `walking` is the same person as
/// one already queued through an earlier account: then they are left out, so a person
/// is reached once. Earlier accounts are queued completely before a later one starts,
/// so their progress records say exactly who was taken.
fn reached_earlier(
    store: &dyn Store,
    c: &Campaign,
    walking: usize,
    f: &crate::follower::Follower,
) -> Result<bool, StoreError> {
    for (_, id) in earlier_identities(store, c, walking, f)? {
        if store.campaign_progress(&c.name, &id)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a follower of the campaign's earlier accounts is in the audience (for a plan,
/// which queues nobody and so cannot ask the progress records).
fn in_earlier_audience(
    store: &dyn Store,
    c: &Campaign,
    walking: usize,
    segment: &Segment,
    f: &crate::follower::Follower,
    now: i64,
) -> Result<bool, StoreError> {
    for (account, id) in earlier_identities(store, c, walking, f)? {
        if let Some(other) = store.follower(&account, &id)? {
            if crate::person::in_segment(store, &account, segment, &other, now)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Stores a campaign defined from the CLI (not started).
pub fn define(
    store: &dyn Store,
    settings: &Settings,
    campaign: Campaign,
) -> Result<CampaignRun, CampaignError> {
    if store.campaign_run(&campaign.name)?.is_some()
        || settings.campaigns.iter().any(|c| c.name == campaign.name)
    {
        return Err(CampaignError::Exists(campaign.name));
    }
    runnable(settings, &campaign)?;
    let run = CampaignRun::new(campaign, true);
    store.put_campaign_run(&run)?;
    Ok(run)
}

/// Starts a campaign now (a scheduled one too, ahead of its time). Starting a running
/// campaign is a no-op; a paused one must be resumed, a done one cannot run again.
pub fn start(
    store: &dyn Store,
    settings: &Settings,
    name: &str,
    now: i64,
) -> Result<CampaignRun, CampaignError> {
    let (campaign, run) = find(store, settings, name)?;
    let mut run = run.unwrap_or_else(|| CampaignRun::new(campaign.clone(), false));
    match run.state {
        RunState::Running => return Ok(run),
        RunState::Paused => {
            return Err(CampaignError::State {
                name: name.into(),
                state: run.state,
                hint: "use `siyu campaign resume`",
            })
        }
        RunState::Done => {
            return Err(CampaignError::State {
                name: name.into(),
                state: run.state,
                hint: "a campaign runs once; define a new one to send again",
            })
        }
        RunState::Waiting => {}
    }
    runnable(settings, &run.campaign)?;
    run.state = RunState::Running;
    run.started_at = Some(now);
    store.put_campaign_run(&run)?;
    tracing::info!(campaign = name, account = %run.campaign.account, "campaign started");
    Ok(run)
}

/// Pauses a running campaign: nothing more is queued or sent until `resume` (items
/// already queued stay queued).
pub fn pause(store: &dyn Store, name: &str) -> Result<CampaignRun, CampaignError> {
    set_state(store, name, RunState::Running, RunState::Paused)
}

pub fn resume(store: &dyn Store, name: &str) -> Result<CampaignRun, CampaignError> {
    set_state(store, name, RunState::Paused, RunState::Running)
}

fn set_state(
    store: &dyn Store,
    name: &str,
    from: RunState,
    to: RunState,
) -> Result<CampaignRun, CampaignError> {
    let mut run = store
        .campaign_run(name)?
        .ok_or_else(|| CampaignError::State {
            name: name.into(),
            state: RunState::Waiting,
            hint: "it was never started",
        })?;
    if run.state == to {
        return Ok(run);
    }
    if run.state != from {
        return Err(CampaignError::State {
            name: name.into(),
            state: run.state,
            hint: if to == RunState::Paused {
                "only a running campaign can be paused"
            } else {
                "only a paused campaign can be resumed"
            },
        });
    }
    run.state = to;
    store.put_campaign_run(&run)?;
    tracing::info!(campaign = name, state = %to, "campaign state changed");
    Ok(run)
}

/// A dry run over the store: how many followers the audience has now and how each would
/// be reached. Writes nothing.
pub fn plan(
    store: &dyn Store,
    settings: &Settings,
    campaign: &Campaign,
    now: i64,
) -> Result<Plan, CampaignError> {
    let segment = audience(campaign)?;
    let mut plan = Plan::default();
    for (walking, account) in campaign.accounts().enumerate() {
        let kind = settings
            .account(account)
            .ok_or_else(|| CampaignError::NoAccount {
                name: campaign.name.clone(),
                account: account.to_string(),
            })?
            .kind;
        // The same walk as `siyu followers --where` (the person read where asked).
        let mut failed = None;
        crate::export::walk(store, account, Some(&segment), now, &mut |f| {
            match in_earlier_audience(store, campaign, walking, &segment, f, now) {
                Ok(true) => plan.same_person += 1,
                Ok(false) => plan.add(choose_channel(campaign, kind, Some(f), now)),
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    Ok(plan)
}

/// Queues the next chunk of a running campaign's audience; returns how many followers
/// were queued, `None` when there is nothing (more) to queue.
pub fn fill_chunk(store: &dyn Store, name: &str, now: i64) -> Result<Option<u64>, CampaignError> {
    let Some(mut run) = store.campaign_run(name)? else {
        return Ok(None);
    };
    if run.state != RunState::Running || run.enqueued_all {
        return Ok(None);
    }
    let c = &run.campaign.clone();
    let segment = audience(c)?;
    // One chunk queues followers of one account (a mass send is one account's call).
    let walking = run.walking;
    let account = run.walking_account().to_string();
    let accounts = c.accounts().count();
    let mut extra = Vec::new();
    if c.robot.is_some() && !run.announced {
        extra.push(NewItem {
            effect: Effect::Announcement {
                campaign: c.name.clone(),
            },
            origin: format!("campaign:{}", c.name),
            not_before_ms: 0,
        });
        run.announced = true;
    }
    let ended = c.end_at.is_some_and(|end| now >= end);
    let nothing_per_follower = c.message.is_none() && c.template.is_none() && c.mass.is_none();
    // A mass send gathers up to 10,000 followers (several pages) into one item.
    let wanted = if c.mass.is_some() { MASS_MAX } else { 1 };
    let mut audience: Vec<String> = Vec::new();
    while !run.enqueued_all && audience.len() < wanted {
        let page = if ended || nothing_per_follower {
            // Past its end, or an announcement only: nobody more to queue.
            Vec::new()
        } else {
            store.followers_after(&account, run.cursor.as_deref(), CHUNK)?
        };
        let last_page = page.len() < CHUNK;
        if let Some(last) = page.last() {
            run.cursor = Some(last.openid.clone());
        }
        for f in page {
            if !crate::person::in_segment(store, &account, &segment, &f, now)? {
                continue;
            }
            if reached_earlier(store, c, walking, &f)? {
                run.same_person += 1;
                continue;
            }
            audience.push(f.openid);
        }
        if last_page {
            if walking + 1 < accounts && !ended && !nothing_per_follower {
                // On to the next account, from its first follower.
                run.walking += 1;
                run.cursor = None;
            } else {
                run.enqueued_all = true;
            }
            break;
        }
        if c.mass.is_none() {
            break;
        }
    }
    if c.mass.is_some() && !audience.is_empty() {
        run.mass_batches += 1;
        extra.push(NewItem {
            effect: Effect::Mass {
                campaign: c.name.clone(),
                batch: run.mass_batches,
                openids: audience.clone(),
            },
            origin: format!("campaign:{}", c.name),
            not_before_ms: 0,
        });
    }
    run.targeted += audience.len() as u64;
    let announcements = extra.len() as u64;
    let per_follower = run.campaign.mass.is_none();
    let queued =
        store.campaign_enqueue(&run, &account, &audience, extra, per_follower, now_ms())?;
    if queued != audience.len() as u64 {
        // Only possible if progress was written outside a chunk; keep the count honest.
        run.targeted -= audience.len() as u64 - queued;
        store.put_campaign_run(&run)?;
    }
    Ok(Some(queued + announcements))
}

/// One look at every campaign: starts scheduled ones whose time has come, queues
/// running ones' audiences (up to `budget` chunks in all), finishes those with nothing
/// left. Returns whether anything was queued (then the worker should be woken).
pub fn tick(
    store: &dyn Store,
    settings: &Settings,
    now: i64,
    budget: usize,
    owner: &str,
) -> Result<bool, CampaignError> {
    // Several instances share a PostgreSQL store: each campaign is driven by the one
    // instance holding its lease (renewed every tick); if that instance dies, another
    // takes over once the lease has run out. A store one process owns grants every lease.
    let mut held = std::collections::HashMap::new();
    let mut mine = |name: &str| -> Result<bool, CampaignError> {
        if let Some(&yes) = held.get(name) {
            return Ok(yes);
        }
        let yes = store.lease(
            &format!("campaign:{name}"),
            owner,
            now.saturating_mul(1000),
            CAMPAIGN_LEASE_MS,
        )?;
        held.insert(name.to_string(), yes);
        Ok(yes)
    };
    for c in &settings.campaigns {
        let due = c.start_at.is_some_and(|at| at <= now);
        if due && store.campaign_run(&c.name)?.is_none() && mine(&c.name)? {
            if let Err(e) = start(store, settings, &c.name, now) {
                tracing::error!(campaign = %c.name, error = %e, "scheduled campaign cannot start");
            }
        }
    }
    let mut queued_any = false;
    let mut budget = budget;
    for run in store.campaign_runs()? {
        let name = run.campaign.name.clone();
        if run.state == RunState::Done || !mine(&name)? {
            continue;
        }
        if run.state == RunState::Waiting && run.campaign.start_at.is_some_and(|at| at <= now) {
            // Defined from the CLI with a start time.
            if let Err(e) = start(store, settings, &name, now) {
                tracing::error!(campaign = %name, error = %e, "scheduled campaign cannot start");
            }
        }
        while budget > 0 {
            budget -= 1;
            match fill_chunk(store, &name, now)? {
                Some(n) => queued_any |= n > 0,
                None => break,
            }
        }
        finish_if_done(store, &name, now)?;
    }
    Ok(queued_any)
}

/// Marks a running campaign done once its audience is queued and every follower settled.
pub fn finish_if_done(store: &dyn Store, name: &str, now: i64) -> Result<bool, CampaignError> {
    let Some(mut run) = store.campaign_run(name)? else {
        return Ok(false);
    };
    if run.state != RunState::Running || !run.enqueued_all || store.campaign_pending(name)? > 0 {
        return Ok(false);
    }
    if run.campaign.robot.is_some() && announcement_pending(store, name)? {
        return Ok(false);
    }
    run.state = RunState::Done;
    run.finished_at = Some(now);
    store.put_campaign_run(&run)?;
    tracing::info!(campaign = name, targeted = run.targeted, "campaign done");
    Ok(true)
}

fn announcement_pending(store: &dyn Store, name: &str) -> Result<bool, StoreError> {
    let mut after = None;
    loop {
        let page = store.outbox_page(after, 256)?;
        let Some(last) = page.last() else {
            return Ok(false);
        };
        after = Some(last.id);
        if page
            .iter()
            .any(|i| matches!(&i.effect, Effect::Announcement { campaign } if campaign == name))
        {
            return Ok(true);
        }
    }
}

/// The campaign's report: its followers' progress added up, with the coupons they were
/// given looked up for redemption, and its goals measured (`zone`: the local days the
/// account figures are counted in; `now`: whether a goal's day has passed).
pub fn report(
    store: &dyn Store,
    name: &str,
    zone: crate::local_time::UtcOffset,
    now: i64,
) -> Result<Report, CampaignError> {
    let run = store
        .campaign_run(name)?
        .ok_or_else(|| CampaignError::State {
            name: name.into(),
            state: RunState::Waiting,
            hint: "it was never started, so there is nothing to report (try `siyu campaign plan`)",
        })?;
    let mut report = Report::new(&run);
    report.mass_jobs = store.campaign_jobs(name)?;
    let mut after: Option<String> = None;
    loop {
        let page = store.campaign_progress_page(name, after.as_deref(), 1024)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (_, p) in &page {
            let redeemed = match p {
                Progress::Sent {
                    coupon: Some(code), ..
                } => store.coupon(code)?.is_some_and(|c| c.redeemed_at.is_some()),
                _ => false,
            };
            report.add(p, redeemed);
        }
    }
    if !run.campaign.goals.is_empty() {
        let own = |m: &str| -> Option<i64> {
            let has_coupon = run.campaign.coupon.is_some();
            Some(match m {
                "targeted" => report.targeted as i64,
                "sent" => report.sent as i64,
                "coupons_issued" if has_coupon => report.coupons_issued as i64,
                "coupons_redeemed" if has_coupon => report.coupons_redeemed as i64,
                _ => return None,
            })
        };
        let first = run.started_at.or(run.campaign.start_at).unwrap_or(now);
        let accounts: Vec<&str> = run.campaign.accounts().collect();
        report.goals = super::goal::progress(
            store,
            &run.campaign.goals,
            &accounts,
            &own,
            zone.day(first),
            zone.day(now),
        )?;
    }
    Ok(report)
}

/// Runs [`tick`] every [`TICK`] until `stop` turns true (part of `siyu serve`).
pub async fn run(
    store: std::sync::Arc<dyn Store>,
    settings: std::sync::Arc<Settings>,
    wake: std::sync::Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let owner = std::sync::Arc::new(crate::outbox::worker::instance_id());
    while !*stop.borrow() {
        let (s, st, me) = (store.clone(), settings.clone(), owner.clone());
        let ticked =
            tokio::task::spawn_blocking(move || tick(s.as_ref(), &st, now_ms() / 1000, 20, &me))
                .await;
        match ticked {
            Ok(Ok(true)) => wake.notify_one(),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "campaigns: tick failed; retrying"),
            Err(e) => tracing::error!(error = %e, "campaigns: tick task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
        }
    }
}
