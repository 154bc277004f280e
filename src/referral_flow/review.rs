//! Operators' review of held invites (a burst): release (pending again, valid at the next
//! maturing run if its hold is over) or reject (never counts). One referral write each.

use crate::referral::invite::NotHeld;
use crate::referral::{reject, release, InviteRecord, Programme};
use crate::store::{InviteChange, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("no invite of {0} in this programme (此活动中没有该用户的邀请记录)")]
    NoSuchInvite(String),
    #[error("{0} (该邀请不在待审核状态)")]
    NotHeld(NotHeld),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Releases (`let_go`) or rejects the held invite of `invitee`; the record as written.
pub fn review(
    store: &dyn Store,
    p: &Programme,
    invitee: &str,
    let_go: bool,
    now: i64,
) -> Result<InviteRecord, ReviewError> {
    let mut outcome = Err(ReviewError::NoSuchInvite(invitee.to_string()));
    store.referral_write(&p.account, &p.name, &[invitee], &mut |view| {
        let Some(r) = view.records.iter().find(|r| r.invitee == invitee) else {
            outcome = Err(ReviewError::NoSuchInvite(invitee.to_string()));
            return InviteChange::default();
        };
        let next = if let_go {
            release(r, now)
        } else {
            reject(r, now)
        };
        match next {
            Ok(next) => {
                outcome = Ok(next.clone());
                InviteChange {
                    records: vec![next],
                    ..Default::default()
                }
            }
            Err(e) => {
                outcome = Err(ReviewError::NotHeld(e));
                InviteChange::default()
            }
        }
    })?;
    outcome
}

/// The invites held for review, oldest first.
pub fn held(store: &dyn Store, p: &Programme) -> Result<Vec<InviteRecord>, StoreError> {
    let mut held: Vec<_> = store
        .referral_invites(&p.name)?
        .into_iter()
        .filter(|r| r.state == crate::referral::InviteState::Held)
        .collect();
    held.sort_by_key(|r| (r.created_at, r.invitee.clone()));
    Ok(held)
}
