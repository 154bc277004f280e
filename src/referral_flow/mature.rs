//! The maturing run: pending invites whose hold is over become valid (or capped, or
//! revoked if the invitee did not follow through), and the tiers an inviter now reaches
//! become rewards.
//!
//! One referral write per inviter: their records are matured one at a time in
//! `matures_at` order against the records of that same write (the daily cap is exact), the
//! valid count is read from those records, and each tier reached and not rewarded yet is a
//! reward record plus its notice queued in the outbox ([`Effect::ReferralNotice`]), all in
//! that one transaction. A tier is rewarded once per (programme, inviter) whatever happens
//! (a count that falls and rises again, a crash, two instances); the coupon is claimed by
//! the notice's delivery with the reward's idempotency key.
//!
//! `siyu serve` runs it every `[referral] check_every_secs`; on a shared store the lease
//! `referral:mature` lets one instance do it at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::outbox::{Effect, NewItem};
use crate::referral::{followed_through, mature, newly_reached, InviteState, Programme};
use crate::store::{InviteChange, RewardRecord, Store, StoreError};

/// What one run did, summed over the programmes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Matured {
    pub valid: usize,
    pub capped: usize,
    pub revoked: usize,
    pub rewards: usize,
}

/// The lease's name. It is held for three intervals (at least 3 s): renewed by every run,
/// taken over soon after an instance dies. Two instances overlapping after a slow run
/// would do no harm either: every write is serialised and rewards are create-if-absent.
pub const LEASE: &str = "referral:mature";

fn lease_ms(every: Duration) -> i64 {
    (every.as_millis() as i64).saturating_mul(3).max(3_000)
}

/// Matures every programme's due invites at `now`.
pub fn run(store: &dyn Store, programmes: &[Programme], now: i64) -> Result<Matured, StoreError> {
    let mut total = Matured::default();
    for p in programmes {
        let records = store.referral_invites(&p.name)?;
        let mut due: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in records
            .iter()
            .filter(|r| r.state == InviteState::Pending && r.matures_at <= now)
        {
            due.entry(r.inviter.clone())
                .or_default()
                .push(r.invitee.clone());
        }
        for (inviter, invitees) in due {
            // Read before the write: whether each invitee followed through.
            let mut following = BTreeMap::new();
            for invitee in &invitees {
                let f = store.follower(&p.account, invitee)?;
                following.insert(
                    invitee.clone(),
                    f.map(|f| (f.subscribed, f.unsubscribed_at)),
                );
            }
            let mut run = Matured::default();
            store.referral_write(&p.account, &p.name, &[&inviter], &mut |view| {
                run = Matured::default();
                one_inviter(p, &inviter, view, &following, now, &mut run)
            })?;
            total.valid += run.valid;
            total.capped += run.capped;
            total.revoked += run.revoked;
            total.rewards += run.rewards;
        }
    }
    Ok(total)
}

type Following = BTreeMap<String, Option<(bool, Option<i64>)>>;

fn one_inviter(
    p: &Programme,
    inviter: &str,
    view: &crate::store::InviteView,
    following: &Following,
    now: i64,
    run: &mut Matured,
) -> InviteChange {
    let mut mine: Vec<_> = view
        .records
        .iter()
        .filter(|r| r.inviter == inviter)
        .cloned()
        .collect();
    let mut order: Vec<usize> = (0..mine.len())
        .filter(|&i| mine[i].state == InviteState::Pending && mine[i].matures_at <= now)
        .collect();
    order.sort_by_key(|&i| (mine[i].matures_at, mine[i].invitee.clone()));
    let mut change = InviteChange::default();
    for i in order {
        let r = &mine[i];
        let still = match following.get(&r.invitee) {
            Some(Some((subscribed, left))) => followed_through(r, *subscribed, *left),
            // Not read before this write (it became due meanwhile): next run.
            None => continue,
            // No follower record for someone who subscribed: never followed through.
            Some(None) => false,
        };
        let Some(next) = mature(p, r, still, &mine, now) else {
            continue;
        };
        match next.state {
            InviteState::Valid => run.valid += 1,
            InviteState::Capped => run.capped += 1,
            _ => run.revoked += 1,
        }
        mine[i] = next.clone();
        change.records.push(next);
    }
    let valid = mine.iter().filter(|r| r.is_valid()).count() as u32;
    for reward in newly_reached(p, inviter, 0, valid) {
        let given = view
            .rewards
            .iter()
            .any(|w| w.inviter == inviter && w.tier == reward.tier);
        if given {
            continue;
        }
        run.rewards += 1;
        change.rewards.push(RewardRecord {
            programme: p.name.clone(),
            inviter: inviter.to_string(),
            tier: reward.tier,
            coupon: reward.coupon.clone(),
            at: now,
        });
        change.items.push(NewItem {
            effect: Effect::ReferralNotice {
                programme: p.name.clone(),
                inviter: inviter.to_string(),
                tier: reward.tier,
            },
            origin: format!("referral:{}", p.name),
            not_before_ms: now.saturating_mul(1000),
        });
    }
    change
}

/// The task of `siyu serve`: a run every `every`, under the lease, until `stopped`.
pub async fn every(
    store: std::sync::Arc<dyn Store>,
    programmes: Vec<Programme>,
    every: Duration,
    wake: std::sync::Arc<tokio::sync::Notify>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let owner = crate::outbox::worker::instance_id();
    while !*stopped.borrow() {
        let store2 = store.clone();
        let programmes2 = programmes.clone();
        let done = tokio::task::spawn_blocking(move || {
            let now_ms = crate::outbox::now_ms();
            if !store2.lease(LEASE, owner, now_ms, lease_ms(every))? {
                return Ok(None);
            }
            let done = run(store2.as_ref(), &programmes2, now_ms / 1000)?;
            if done.rewards > 0 || done.valid > 0 {
                store2.flush()?;
            }
            Ok::<_, StoreError>(Some(done))
        })
        .await;
        match done {
            Ok(Ok(Some(m))) if m != Matured::default() => {
                tracing::info!(
                    valid = m.valid,
                    capped = m.capped,
                    revoked = m.revoked,
                    rewards = m.rewards,
                    "referral: invites matured (邀请已确认)"
                );
                if m.rewards > 0 {
                    wake.notify_one();
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "referral: maturing failed; trying again"),
            Err(e) => tracing::error!(error = %e, "referral: maturing task panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = stopped.changed() => if changed.is_err() { break },
        }
    }
}
