//! What the store keeps of referral programmes (任务宝, `src/referral/`): participants, invite
//! records and rewards, and the one atomic write that changes them.
//!
//! Invite records are keyed by (programme, invitee): the write that creates one runs its
//! decision on every record it concerns under the programme's lock (in-process on sled and
//! in memory, an advisory transaction lock on PostgreSQL), so two racing callbacks make one
//! record. An inviter's counts are never stored apart: they are read from the records in
//! that same write, so they cannot drift from them. Rewards are create-if-absent per
//! (programme, inviter, tier), and the outbox items a write returns (a reward notice) are
//! queued in the same transaction: a crash keeps all of it or none.

use serde::{Deserialize, Serialize};

use crate::outbox::NewItem;
use crate::referral::{InviteRecord, ParticipantId};

/// Someone who asked for their personal code in a programme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub programme: String,
    pub id: ParticipantId,
    pub account: String,
    /// The only openid this id stands for (a second one is refused).
    pub openid: String,
    pub created_at: i64,
    /// Their current temporary QR code, once WeChat made it.
    #[serde(default)]
    pub qr: Option<QrCode>,
    /// The poster uploaded as temporary media, for the code it shows.
    #[serde(default)]
    pub poster: Option<PosterMedia>,
    /// Reward notices that could not be sent yet (no window, no template): sent after
    /// their next message.
    #[serde(default)]
    pub notices: Vec<String>,
}

/// A temporary QR code as WeChat made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QrCode {
    pub ticket: String,
    /// What the code encodes (drawn on the poster).
    pub url: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A poster uploaded as temporary media (WeChat keeps it 3 days).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosterMedia {
    pub media_id: String,
    /// WeChat's `created_at`.
    pub uploaded_at: i64,
    /// The ticket of the code drawn on it: a new code needs a new poster.
    pub ticket: String,
}

/// A tier reached by an inviter: given once, ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardRecord {
    pub programme: String,
    pub inviter: String,
    pub tier: u32,
    pub coupon: String,
    pub at: i64,
}

/// What a referral write reads: the programme's records whose invitee or inviter is one of
/// the people named, and those people's rewards (as inviters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InviteView {
    pub records: Vec<InviteRecord>,
    pub rewards: Vec<RewardRecord>,
}

/// What a referral write changes: records put (created or replaced, keyed by invitee),
/// rewards created (one already there is kept as it is), and outbox items queued.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InviteChange {
    pub records: Vec<InviteRecord>,
    pub rewards: Vec<RewardRecord>,
    pub items: Vec<NewItem>,
}

impl InviteChange {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.rewards.is_empty() && self.items.is_empty()
    }
}

impl InviteView {
    /// Keeps what a write about `people` may see, from all of a programme's records.
    pub fn of(
        records: impl IntoIterator<Item = InviteRecord>,
        rewards: impl IntoIterator<Item = RewardRecord>,
        people: &[&str],
    ) -> InviteView {
        InviteView {
            records: records
                .into_iter()
                .filter(|r| {
                    people.contains(&r.invitee.as_str()) || people.contains(&r.inviter.as_str())
                })
                .collect(),
            rewards: rewards
                .into_iter()
                .filter(|r| people.contains(&r.inviter.as_str()))
                .collect(),
        }
    }
}

/// A participant's change: the participant to store (`None`: leave as is) and the outbox
/// items to queue with it.
pub type ParticipantChange = (Option<Participant>, Vec<NewItem>);
