//! A programme's figures from the store: the core's report (participants, invites by
//! state, tiers reached, top inviters, new followers brought and still following) and the
//! rewards actually given per tier.

use serde::{Deserialize, Serialize};

use crate::referral::{report, Programme, Report};
use crate::store::{Store, StoreError};

/// How many inviters the report lists.
pub const TOP: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    pub title: String,
    #[serde(flatten)]
    pub report: Report,
    /// Per tier, the rewards given (each one coupon, once per inviter).
    pub rewards: Vec<TierRewards>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierRewards {
    pub invites: u32,
    pub coupon: String,
    pub given: usize,
}

pub fn figures(store: &dyn Store, p: &Programme) -> Result<Figures, StoreError> {
    let records = store.referral_invites(&p.name)?;
    let rewards = store.referral_rewards(&p.name)?;
    let mut following = std::collections::BTreeMap::new();
    for r in &records {
        if !following.contains_key(&r.invitee) {
            let now = store
                .follower(&p.account, &r.invitee)?
                .is_some_and(|f| f.subscribed);
            following.insert(r.invitee.clone(), now);
        }
    }
    let report = report(
        p,
        &records,
        &|o| following.get(o).copied().unwrap_or(false),
        TOP,
    );
    Ok(Figures {
        title: p.title.clone(),
        report,
        rewards: p
            .tiers
            .iter()
            .map(|t| TierRewards {
                invites: t.invites,
                coupon: t.coupon.clone(),
                given: rewards.iter().filter(|w| w.tier == t.invites).count(),
            })
            .collect(),
    })
}
