//! A programme's report (PURE): aggregation over its invite records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::invite::{Arrival, InviteRecord, InviteState, Refusal};
use super::programme::Programme;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub programme: String,
    /// Inviters with at least one record: people whose code brought anyone.
    pub participants: usize,
    pub invites: ByState,
    /// Per tier, how many inviters' valid invites reach it now. (Coupons actually issued are
    /// the coupon store's: a count that fell after a reward leaves the reward given.)
    pub tiers: Vec<TierReach>,
    /// The inviters with the most valid invites, most first (ties by openid).
    pub top: Vec<TopInviter>,
    /// Invitees who arrived as new followers (in any state but refused).
    pub new_followers: usize,
    /// Of those, the ones following now.
    pub still_following: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByState {
    pub pending: usize,
    pub held: usize,
    pub valid: usize,
    pub revoked: usize,
    pub rejected: usize,
    pub capped: usize,
    pub refused_self: usize,
    pub refused_mutual: usize,
    pub refused_not_new: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierReach {
    pub invites: u32,
    pub coupon: String,
    pub inviters: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopInviter {
    pub inviter: String,
    pub valid: u32,
    pub pending: u32,
}

/// The report of `programme` over `records` (others' records are skipped); `following`
/// says whether an openid follows the account now; `top` is how many inviters to list.
pub fn report(
    programme: &Programme,
    records: &[InviteRecord],
    following: &dyn Fn(&str) -> bool,
    top: usize,
) -> Report {
    let mut invites = ByState::default();
    let mut per_inviter: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let (mut new_followers, mut still_following) = (0, 0);
    for r in records.iter().filter(|r| r.programme == programme.name) {
        let slot = match r.state {
            InviteState::Pending => &mut invites.pending,
            InviteState::Held => &mut invites.held,
            InviteState::Valid => &mut invites.valid,
            InviteState::Revoked => &mut invites.revoked,
            InviteState::Rejected => &mut invites.rejected,
            InviteState::Capped => &mut invites.capped,
            InviteState::Refused(Refusal::SelfInvite) => &mut invites.refused_self,
            InviteState::Refused(Refusal::Mutual) => &mut invites.refused_mutual,
            InviteState::Refused(Refusal::NotNew) => &mut invites.refused_not_new,
        };
        *slot += 1;
        let counts = per_inviter.entry(&r.inviter).or_default();
        counts.0 += u32::from(r.is_valid());
        counts.1 += u32::from(r.is_open());
        if r.arrival == Arrival::New && !matches!(r.state, InviteState::Refused(_)) {
            new_followers += 1;
            still_following += usize::from(following(&r.invitee));
        }
    }
    let tiers = programme
        .tiers
        .iter()
        .map(|t| TierReach {
            invites: t.invites,
            coupon: t.coupon.clone(),
            inviters: per_inviter
                .values()
                .filter(|(v, _)| *v >= t.invites)
                .count(),
        })
        .collect();
    let mut ranked: Vec<TopInviter> = per_inviter
        .iter()
        .filter(|(_, (valid, _))| *valid > 0)
        .map(|(inviter, (valid, pending))| TopInviter {
            inviter: inviter.to_string(),
            valid: *valid,
            pending: *pending,
        })
        .collect();
    // Stable sort over the openid order of the map: ties stay by openid.
    ranked.sort_by_key(|t| std::cmp::Reverse(t.valid));
    ranked.truncate(top);
    Report {
        programme: programme.name.clone(),
        participants: per_inviter.len(),
        invites,
        tiers,
        top: ranked,
        new_followers,
        still_following,
    }
}
