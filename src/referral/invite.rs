//! Invites as a state machine over records (PURE): what a subscribe through a participant's
//! code decides, when an invite becomes valid, and which reward tiers an inviter reaches.
//!
//! One [`InviteRecord`] per (programme, invitee), created by the first subscribe through
//! someone's code and never again: a retried callback or a rescan finds it and decides
//! nothing ([`Ignored::AlreadyRecorded`]), so the store's insert must be create-if-absent on
//! that key (two racing callbacks make one record). The record's first inviter keeps it.
//!
//! ```text
//!                 burst, or the inviter has invites under review
//!   subscribe ──▶ held ──release──▶ pending ──hold over, still following, under the cap──▶ valid
//!       │           └──reject──▶ rejected  │──unfollowed within the hold──────────────────▶ revoked
//!       │                                  └──hold over, the day's cap reached─────────────▶ capped
//!       └──▶ pending
//!       └──▶ refused (self-invite, mutual invite, not new when only new followers count)
//! ```
//!
//! Time is an argument (unix seconds); the records an operation needs are passed in, so the
//! store decides which to read and every rule here is tested without one.

use serde::{Deserialize, Serialize};

use super::programme::{Counts, Programme, Tier};
use super::text::Values;
use crate::rules::CouponView;

/// One invitee's arrival through an inviter's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRecord {
    pub programme: String,
    /// The inviter's openid (the scene's participant id, resolved by the store).
    pub inviter: String,
    pub invitee: String,
    pub arrival: Arrival,
    pub state: InviteState,
    /// When the invitee subscribed (unix seconds); its local day is the one the daily cap
    /// counts it on.
    pub created_at: i64,
    /// `created_at` + the hold period: from then on the invite may become valid.
    pub matures_at: i64,
    /// The last change of state.
    pub updated_at: i64,
}

/// How the invitee came to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// A subscribe by someone the account never had.
    New,
    /// A subscribe by someone who had followed and unfollowed.
    Returning,
    /// A scan by a follower (WeChat's `SCAN` event): never an invite.
    AlreadyFollowing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InviteState {
    /// Waiting for the hold period to end.
    Pending,
    /// Waiting for an operator (burst detection).
    Held,
    /// Counts towards the inviter's tiers.
    Valid,
    /// The invitee unfollowed within the hold period (or before the invite matured).
    Revoked,
    /// An operator refused it after review.
    Rejected,
    /// It matured on a local day on which the inviter already had `daily_cap` valid invites.
    Capped,
    /// Never counted, decided at once.
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The inviter subscribed through their own code.
    SelfInvite,
    /// A invited B and B invited A: neither invite counts.
    Mutual,
    /// A returning follower, when the programme counts only new ones.
    NotNew,
}

/// What a subscribe through a participant's code decides.
// One per callback, never kept in bulk: a box would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create `record` if (programme, invitee) has none yet, and write `update` (an earlier
    /// record this one changes: the other half of a mutual invite) in the same write.
    Create {
        record: InviteRecord,
        update: Option<InviteRecord>,
    },
    /// Nothing to store.
    Ignore(Ignored),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// This invitee has a record in this programme already: a retry or a rescan.
    AlreadyRecorded,
    /// A follower scanned the code: no arrival.
    AlreadyFollowing,
    /// The scan is before the programme's start or from its end on.
    NotRunning,
}

impl InviteRecord {
    /// Whether it counts towards the inviter's tiers.
    pub fn is_valid(&self) -> bool {
        self.state == InviteState::Valid
    }

    /// Whether it may still become valid (shown as `{pending}`).
    pub fn is_open(&self) -> bool {
        matches!(self.state, InviteState::Pending | InviteState::Held)
    }
}

/// Decides a subscribe (or scan) of `invitee` through `inviter`'s code at `now`.
///
/// `existing` must hold, of this programme, every record whose invitee is `invitee` or
/// `inviter` (the retry and the mutual checks), and every record of `inviter` as inviter
/// created within the burst window or still held; more records do no harm.
pub fn on_scan_subscribe(
    programme: &Programme,
    inviter: &str,
    invitee: &str,
    arrival: Arrival,
    existing: &[InviteRecord],
    now: i64,
) -> Decision {
    let ours = || existing.iter().filter(|r| r.programme == programme.name);
    if ours().any(|r| r.invitee == invitee) {
        return Decision::Ignore(Ignored::AlreadyRecorded);
    }
    if arrival == Arrival::AlreadyFollowing {
        return Decision::Ignore(Ignored::AlreadyFollowing);
    }
    if !programme.is_running(now) {
        return Decision::Ignore(Ignored::NotRunning);
    }
    let record = |state| InviteRecord {
        programme: programme.name.clone(),
        inviter: inviter.to_string(),
        invitee: invitee.to_string(),
        arrival,
        state,
        created_at: now,
        matures_at: now.saturating_add(programme.hold_secs),
        updated_at: now,
    };
    let refused = |why| Decision::Create {
        record: record(InviteState::Refused(why)),
        update: None,
    };
    if inviter == invitee {
        return refused(Refusal::SelfInvite);
    }
    if let Some(earlier) = ours().find(|r| r.invitee == inviter && r.inviter == invitee) {
        // The earlier half stops counting too, whatever its state; a reward it already
        // helped reach stays given (claims are not taken back).
        let update = counts_or_may(earlier).then(|| InviteRecord {
            state: InviteState::Refused(Refusal::Mutual),
            updated_at: now,
            ..earlier.clone()
        });
        return Decision::Create {
            record: record(InviteState::Refused(Refusal::Mutual)),
            update,
        };
    }
    if programme.counts == Counts::New && arrival == Arrival::Returning {
        return refused(Refusal::NotNew);
    }
    let window_start = now - i64::from(programme.burst.minutes) * 60;
    let of_inviter = || ours().filter(|r| r.inviter == inviter);
    let recent = of_inviter()
        .filter(|r| r.created_at > window_start && counts_or_may(r))
        .count();
    let under_review = of_inviter().any(|r| r.state == InviteState::Held);
    let state = if recent + 1 > programme.burst.invites as usize || under_review {
        InviteState::Held
    } else {
        InviteState::Pending
    };
    Decision::Create {
        record: record(state),
        update: None,
    }
}

/// The invite once its hold period is over: valid, capped or revoked; `None` while it is
/// not pending, or still within its hold period with the invitee following.
///
/// `still_following`: the invitee follows now, and did not unfollow during the hold period
/// ([`followed_through`] computes it from a follower's record). `inviter_records`: the
/// inviter's records of this programme created on the same local day as `record` (more do
/// no harm). An unfollow ends a pending invite at once, even before its hold is over.
///
/// **The daily cap**: of one inviter's invites *created* (subscribed) on one local
/// calendar day at the programme's offset, at most `daily_cap` become valid; the ones
/// maturing after that are `Capped` for good. The creation day counts, not the maturing
/// day, so a late maturing run cannot move invites onto a fresher day; invites revoked in
/// their hold period take no place under the cap. Records of one inviter must be matured
/// one at a time (in one transaction with the read of `inviter_records`), in `matures_at`
/// order, so that the cap is exact.
pub fn mature(
    programme: &Programme,
    record: &InviteRecord,
    still_following: bool,
    inviter_records: &[InviteRecord],
    now: i64,
) -> Option<InviteRecord> {
    if record.state != InviteState::Pending {
        return None;
    }
    let to = |state| {
        Some(InviteRecord {
            state,
            updated_at: now,
            ..record.clone()
        })
    };
    if !still_following {
        return to(InviteState::Revoked);
    }
    if now < record.matures_at {
        return None;
    }
    let day = local_day(programme, record.created_at);
    let valid_that_day = inviter_records
        .iter()
        .filter(|r| {
            r.programme == record.programme
                && r.inviter == record.inviter
                && r.invitee != record.invitee
                && r.is_valid()
                && local_day(programme, r.created_at) == day
        })
        .count();
    if valid_that_day >= programme.daily_cap as usize {
        to(InviteState::Capped)
    } else {
        to(InviteState::Valid)
    }
}

/// The invite after its invitee unfollowed at `now`: revoked if it was pending or held and
/// within its hold period, else unchanged (`None`). After the hold period a pending invite
/// is earned; [`mature`] makes it valid (`still_following` from [`followed_through`]).
pub fn on_unsubscribe(record: &InviteRecord, now: i64) -> Option<InviteRecord> {
    (record.is_open() && now < record.matures_at).then(|| InviteRecord {
        state: InviteState::Revoked,
        updated_at: now,
        ..record.clone()
    })
}

/// Whether an invitee kept following through `record`'s hold period, from what the
/// follower's record says: following now, or unfollowed last only after the hold.
/// (`last_unsubscribed_at` before the invite is the unfollow that made them returning.)
pub fn followed_through(
    record: &InviteRecord,
    subscribed: bool,
    last_unsubscribed_at: Option<i64>,
) -> bool {
    match last_unsubscribed_at {
        None => subscribed,
        Some(t) if t < record.created_at => subscribed,
        Some(t) => t >= record.matures_at,
    }
}

/// Why an operator's review could not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the invite of {invitee} is {state:?}, not held for review")]
pub struct NotHeld {
    pub invitee: String,
    pub state: InviteState,
}

/// An operator lets a held invite go on: it is pending again, with its own hold period (if
/// that is over already, [`mature`] decides it at once).
pub fn release(record: &InviteRecord, now: i64) -> Result<InviteRecord, NotHeld> {
    review(record, InviteState::Pending, now)
}

/// An operator refuses a held invite: it never counts.
pub fn reject(record: &InviteRecord, now: i64) -> Result<InviteRecord, NotHeld> {
    review(record, InviteState::Rejected, now)
}

fn review(record: &InviteRecord, to: InviteState, now: i64) -> Result<InviteRecord, NotHeld> {
    if record.state != InviteState::Held {
        return Err(NotHeld {
            invitee: record.invitee.clone(),
            state: record.state,
        });
    }
    Ok(InviteRecord {
        state: to,
        updated_at: now,
        ..record.clone()
    })
}

/// An inviter's counts in a programme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub valid: u32,
    /// Pending and held: may still become valid.
    pub pending: u32,
}

/// `inviter`'s counts among `records` (of any programmes and inviters).
pub fn tally(programme: &str, inviter: &str, records: &[InviteRecord]) -> Tally {
    records
        .iter()
        .filter(|r| r.programme == programme && r.inviter == inviter)
        .fold(Tally::default(), |mut t, r| {
            t.valid += u32::from(r.is_valid());
            t.pending += u32::from(r.is_open());
            t
        })
}

/// A tier an inviter reached: one coupon claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reward {
    pub programme: String,
    pub inviter: String,
    /// The tier's invites.
    pub tier: u32,
    pub coupon: String,
    /// The coupon claim's idempotency key, `referral:<programme>:<inviter>:<tier>`: the
    /// same for (programme, inviter, tier) forever, so however often a tier is crossed (a
    /// retried write, a count that fell and rose again) one code is issued.
    pub request: String,
}

/// The tiers reached by going from `before` to `after` valid invites: those with
/// `before < invites <= after`, in ascending order (from 2 to 11 reaches both 3 and 10).
pub fn newly_reached(programme: &Programme, inviter: &str, before: u32, after: u32) -> Vec<Reward> {
    programme
        .tiers
        .iter()
        .filter(|t| before < t.invites && t.invites <= after)
        .map(|t: &Tier| Reward {
            programme: programme.name.clone(),
            inviter: inviter.to_string(),
            tier: t.invites,
            coupon: t.coupon.clone(),
            request: reward_key(&programme.name, inviter, t.invites),
        })
        .collect()
}

/// The idempotency key of (programme, inviter, tier): programme names and openids hold no
/// `:`, so it is unambiguous.
pub fn reward_key(programme: &str, inviter: &str, tier: u32) -> String {
    format!("referral:{programme}:{inviter}:{tier}")
}

/// The values of the progress reply for `tally` (render with `texts.progress`).
pub fn progress(programme: &Programme, tally: Tally) -> Values<'_> {
    Values {
        valid: tally.valid,
        pending: tally.pending,
        next_tier: programme.next_tier(tally.valid).map(|t| t.invites),
        tier: None,
        title: &programme.title,
        end: programme.end_text(),
        coupon: None,
    }
}

/// The values of the reward notice for `reward`, once its coupon was claimed (render with
/// `texts.reward`).
pub fn reward_notice<'a>(
    programme: &'a Programme,
    reward: &Reward,
    valid: u32,
    coupon: Option<&'a CouponView>,
) -> Values<'a> {
    Values {
        valid,
        pending: 0,
        next_tier: programme.next_tier(valid).map(|t| t.invites),
        tier: Some(reward.tier),
        title: &programme.title,
        end: programme.end_text(),
        coupon,
    }
}

/// Whether a record counts now or may still (the ones a burst or a mutual invite concern).
fn counts_or_may(r: &InviteRecord) -> bool {
    r.is_valid() || r.is_open()
}

/// The local calendar day of `ts` at the programme's offset, as a day number.
fn local_day(programme: &Programme, ts: i64) -> i64 {
    ts.saturating_add(programme.zone.seconds())
        .div_euclid(86_400)
}
