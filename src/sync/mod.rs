//! Importing an account's existing followers from WeChat (`siyu followers sync`): what a
//! run remembers, and how what WeChat says merges into what siyu knows.
//!
//! Pure code: the run's state and the merge rules, no I/O. `runner.rs` walks WeChat's
//! follower list and writes through the store.
//!
//! The merge rules (README "Importing followers"):
//! - subscription: what WeChat says wins, unless siyu saw the follower (un)subscribe after
//!   WeChat was asked (a callback newer than the answer);
//! - unionid, remark, language, subscribe scene: WeChat's;
//! - the source channel: siyu's, if it has one; else WeChat's `qr_scene_str`;
//! - tags, a three-way merge against what the previous sync saw: a tag siyu added or
//!   removed since then stays as siyu has it; any other tag is as WeChat has it now (so
//!   WeChat tags siyu never knew are imported, and a tag removed in WeChat's console goes).

mod contacts;
pub mod runner;
pub mod schedule;

pub use contacts::{merge_contact, sweep_contact, CorpTagNames};

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::api::UserInfo;
use crate::follower::{Follower, SyncMark, SyncOutcome};

/// Reasons kept in a run for followers it could not import; the count goes on past them.
pub const FAILURES_KEPT: usize = 50;

/// One sync of one account: where it is, and what it did so far. Stored after every batch
/// with the batch's followers, in one atomic write, so a crash or Ctrl-C resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncRun {
    pub account: String,
    /// Unix milliseconds of the start: names the run in each follower's [`SyncMark`].
    pub id: i64,
    /// Unix seconds.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub state: SyncState,
    pub phase: Phase,
    /// The `next_openid` that fetched the page being worked (`None`: the first page).
    pub page_from: Option<String>,
    /// Openids of that page already done.
    pub page_done: usize,
    /// WeCom: the chunk of (up to 100) staff members being walked; `page_from` is then the
    /// cursor into their contacts.
    pub staff_chunk: usize,
    /// The sweep's position: the last openid of siyu's followers looked at.
    pub sweep_after: Option<String>,
    /// WeChat's count of the account's followers.
    pub total: u64,
    pub counts: SyncCounts,
    /// Why followers failed, the first [`FAILURES_KEPT`].
    pub failures: Vec<SyncFailure>,
    /// Why the run stopped, if it did not finish.
    pub error: Option<String>,
    /// Who started it (`cli`, an admin token's name, `schedule`).
    pub by: String,
    /// The China date (`YYYY-MM-DD`) of the last start by the daily schedule, this run's
    /// or an earlier one's (carried into every new run), so that the schedule starts once
    /// a day whatever restarts in between (`schedule::due`).
    pub scheduled_on: Option<String>,
}

impl Default for SyncRun {
    fn default() -> Self {
        SyncRun {
            account: String::new(),
            id: 0,
            started_at: 0,
            finished_at: None,
            state: SyncState::Running,
            phase: Phase::List,
            page_from: None,
            page_done: 0,
            staff_chunk: 0,
            sweep_after: None,
            total: 0,
            counts: SyncCounts::default(),
            failures: Vec::new(),
            error: None,
            by: String::new(),
            scheduled_on: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Started and not finished: running now, or stopped by a crash or Ctrl-C (the next
    /// `sync` resumes it).
    Running,
    /// Stopped by an error WeChat will give again (a wrong secret, the day's quota): the
    /// next `sync` resumes it once that is fixed.
    Failed,
    Done,
}

impl std::fmt::Display for SyncState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncState::Running => "running",
            SyncState::Failed => "failed",
            SyncState::Done => "done",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Walking WeChat's follower list.
    List,
    /// Marking followers siyu knew who were not on the list as unsubscribed.
    Sweep,
    /// Both done.
    Done,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncCounts {
    pub new: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub unsubscribed: u64,
    pub failed: u64,
}

impl SyncCounts {
    pub fn add(&mut self, outcome: SyncOutcome) {
        match outcome {
            SyncOutcome::New => self.new += 1,
            SyncOutcome::Updated => self.updated += 1,
            SyncOutcome::Unchanged => self.unchanged += 1,
            SyncOutcome::Unsubscribed => self.unsubscribed += 1,
        }
    }

    /// Followers of WeChat's list done so far (the sweep's not included).
    pub fn listed(&self) -> u64 {
        self.new + self.updated + self.unchanged + self.failed
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncFailure {
    /// The first openid of the batch that failed.
    pub openid: String,
    /// How many followers the failure covers.
    pub followers: u64,
    pub reason: String,
}

impl SyncRun {
    pub fn new(account: &str, now_ms: i64, by: &str) -> SyncRun {
        SyncRun {
            account: account.to_string(),
            id: now_ms,
            started_at: now_ms.div_euclid(1000),
            by: by.to_string(),
            ..SyncRun::default()
        }
    }

    pub fn fail(&mut self, openid: &str, followers: u64, reason: String) {
        self.counts.failed += followers;
        if self.failures.len() < FAILURES_KEPT {
            self.failures.push(SyncFailure {
                openid: openid.to_string(),
                followers,
                reason,
            });
        }
    }

    /// The one-line summary (CLI, log).
    pub fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "{} new, {} updated, {} unchanged, {} unsubscribed, {} failed (新增 {}, 更新 {}, 未变 {}, 已取关 {}, 失败 {})",
            c.new, c.updated, c.unchanged, c.unsubscribed, c.failed,
            c.new, c.updated, c.unchanged, c.unsubscribed, c.failed
        )
    }
}

/// WeChat's tag ids → names (`tags/get`), read once per run.
pub type TagNames = HashMap<i64, String>;

/// A follower as WeChat describes them, merged into what siyu has (`None`: unknown to
/// siyu). `asked_at`: when WeChat was asked (unix seconds), so that a callback siyu took
/// after it wins over the answer. Returns the follower to write and what changed.
pub fn merge(
    existing: Option<Follower>,
    info: &UserInfo,
    tag_names: &TagNames,
    run: &SyncRun,
    asked_at: i64,
) -> (Follower, SyncOutcome) {
    let is_new = existing.is_none();
    let before = existing.unwrap_or_else(|| Follower::new(info.openid.clone()));
    let mut f = before.clone();
    let seen_since = |t: Option<i64>| t.is_some_and(|t| t >= asked_at);
    let siyu_is_newer = seen_since(f.unsubscribed_at) || seen_since(f.last_subscribed_at);
    if !siyu_is_newer {
        if info.is_subscribed() {
            f.subscribed = true;
            if let Some(t) = info.subscribe_time.filter(|t| *t > 0) {
                f.last_subscribed_at = Some(f.last_subscribed_at.map_or(t, |s| s.max(t)));
                f.first_subscribed_at = Some(f.first_subscribed_at.map_or(t, |s| s.min(t)));
            }
        } else if f.subscribed || is_new {
            f.subscribed = false;
            f.unsubscribed_at = f.unsubscribed_at.or(Some(asked_at));
        }
    }
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    if let Some(u) = nonempty(&info.unionid) {
        f.unionid = Some(u);
    }
    if info.is_subscribed() {
        // An unsubscribed follower comes back with the openid only: keep what was known.
        f.remark = Some(info.remark.clone()).filter(|r| !r.is_empty());
        f.language = nonempty(&info.language).or(f.language.take());
        f.subscribe_scene = nonempty(&info.subscribe_scene).or(f.subscribe_scene.take());
        if f.first_scene.is_none() {
            f.first_scene = nonempty(&info.qr_scene_str);
        }
    }
    let theirs: BTreeSet<String> = info
        .tagid_list
        .iter()
        .filter_map(|id| tag_names.get(id).cloned())
        .collect();
    let base = before
        .synced
        .as_ref()
        .map(|m| m.tags.clone())
        .unwrap_or_default();
    if info.is_subscribed() {
        f.tags = merge_tags(&base, &before.tags, &theirs);
    }
    let changed = {
        let mut a = before.clone();
        let mut b = f.clone();
        a.synced = None;
        b.synced = None;
        a != b
    };
    let outcome = match (is_new, changed) {
        (true, _) => SyncOutcome::New,
        (false, true) => SyncOutcome::Updated,
        (false, false) => SyncOutcome::Unchanged,
    };
    f.synced = Some(SyncMark {
        run: run.id,
        at: asked_at,
        tags: if info.is_subscribed() { theirs } else { base },
        outcome,
    });
    (f, outcome)
}

/// The three-way merge of tag sets: a tag whose presence in `ours` differs from `base`
/// was changed in siyu since the last sync and stays; every other tag is as `theirs`.
pub fn merge_tags(
    base: &BTreeSet<String>,
    ours: &BTreeSet<String>,
    theirs: &BTreeSet<String>,
) -> BTreeSet<String> {
    base.iter()
        .chain(ours)
        .chain(theirs)
        .filter(|t| {
            let changed_here = ours.contains(*t) != base.contains(*t);
            if changed_here {
                ours.contains(*t)
            } else {
                theirs.contains(*t)
            }
        })
        .cloned()
        .collect()
}

/// The sweep's change to a follower siyu knows whom WeChat's list did not have: marked
/// unsubscribed. `None`: leave them (already unsubscribed, seen by this run, or subscribed
/// while it ran — WeChat's list was read before).
pub fn sweep(follower: &Follower, run: &SyncRun, now: i64) -> Option<Follower> {
    let seen = follower.synced.as_ref().is_some_and(|m| m.run == run.id);
    let joined_during_run = follower
        .last_subscribed_at
        .is_some_and(|t| t >= run.started_at);
    if !follower.subscribed || seen || joined_during_run {
        return None;
    }
    let mut f = follower.clone();
    f.subscribed = false;
    f.unsubscribed_at = Some(now);
    f.synced = Some(SyncMark {
        run: run.id,
        at: now,
        tags: follower
            .synced
            .as_ref()
            .map(|m| m.tags.clone())
            .unwrap_or_default(),
        outcome: SyncOutcome::Unsubscribed,
    });
    Some(f)
}

#[cfg(test)]
mod tests;
