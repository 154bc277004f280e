//! After a callback's commit: what it means for referral programmes.
//!
//! - A subscribe (`qrscene_ref:…`) or scan (`ref:…`) through a participant's code: the
//!   invite, decided by `referral::on_scan_subscribe` inside one referral write (create if
//!   absent on (programme, invitee)), so a retried callback, a rescan or a racing twin finds
//!   the record and changes nothing.
//! - An unfollow: each programme's invite of that follower is revoked if still in its hold.
//! - Any message from a participant with reward notices kept (no window, no template):
//!   they go out now, as customer-service messages (the message just opened the window).
//!
//! Run on a retried callback too (everything here is idempotent): a crash between the
//! callback's commit and this write is repaired by WeChat's retry. The webhook answers only
//! once this is written.

use crate::engine::Outcome;
use crate::follower::Follower;
use crate::outbox::{Effect, NewItem};
use crate::protocol::{Event, Inbound, InboundKind, Reply};
use crate::referral::{
    find, on_scan_subscribe, on_unsubscribe, Arrival, Decision, ParticipantId, Programme,
};
use crate::store::{InviteChange, Store, StoreError};

/// How a subscribe or scan arrives, from the follower's state before the callback: never
/// seen subscribed → new; subscribed once and gone → returning; following → already
/// following (a `SCAN` is always that). `None` for other messages.
pub fn arrival_before(msg: &Inbound, before: Option<&Follower>) -> Option<Arrival> {
    match &msg.kind {
        InboundKind::Event(Event::Scan { .. }) => Some(Arrival::AlreadyFollowing),
        InboundKind::Event(Event::Subscribe { .. }) => Some(match before {
            Some(f) if f.subscribed => Arrival::AlreadyFollowing,
            Some(f) if f.first_subscribed_at.is_some() || f.unsubscribed_at.is_some() => {
                Arrival::Returning
            }
            _ => Arrival::New,
        }),
        _ => None,
    }
}

/// The arrival of a retried subscribe whose first delivery's state is gone (the follower
/// is stored as it was after that delivery): returning if they had unfollowed before this
/// subscribe, or had subscribed before it.
fn arrival_after(msg: &Inbound, after: Option<&Follower>) -> Option<Arrival> {
    match &msg.kind {
        InboundKind::Event(Event::Scan { .. }) => Some(Arrival::AlreadyFollowing),
        InboundKind::Event(Event::Subscribe { .. }) => Some(match after {
            Some(f)
                if f.unsubscribed_at.is_some() || f.first_subscribed_at != f.last_subscribed_at =>
            {
                Arrival::Returning
            }
            _ => Arrival::New,
        }),
        _ => None,
    }
}

/// The referral side of one callback: the outbox items it queued and whether it wrote.
pub fn after_callback(
    store: &dyn Store,
    programmes: &[Programme],
    account: &str,
    msg: &Inbound,
    outcome: &Outcome,
    now: i64,
) -> Result<(bool, Vec<NewItem>), StoreError> {
    if !programmes.iter().any(|p| p.account == account) {
        return Ok((false, Vec::new()));
    }
    let openid = outcome.follower_id.as_str();
    match &msg.kind {
        InboundKind::Event(Event::Subscribe {
            scene: Some(scene), ..
        })
        | InboundKind::Event(Event::Scan { scene, .. }) => {
            let Some((p, id)) = find(programmes, account, scene) else {
                return Ok((false, Vec::new()));
            };
            let arrival = match outcome.arrival {
                Some(a) => a,
                None => {
                    let after = store.follower(account, openid)?;
                    arrival_after(msg, after.as_ref()).unwrap_or(Arrival::New)
                }
            };
            invite(store, p, &id, openid, arrival, now).map(|w| (w, Vec::new()))
        }
        InboundKind::Event(Event::Unsubscribe) => {
            let mut wrote = false;
            for p in programmes.iter().filter(|p| p.account == account) {
                let done = store.referral_write(account, &p.name, &[openid], &mut |view| {
                    InviteChange {
                        records: view
                            .records
                            .iter()
                            .filter(|r| r.invitee == openid)
                            .filter_map(|r| on_unsubscribe(r, now))
                            .collect(),
                        ..Default::default()
                    }
                })?;
                wrote |= !done.is_empty();
            }
            Ok((wrote, Vec::new()))
        }
        InboundKind::Event(_) => Ok((false, Vec::new())),
        _ => kept_notices(store, programmes, account, openid),
    }
}

/// The invite of `invitee` through participant `id`'s code.
fn invite(
    store: &dyn Store,
    p: &Programme,
    id: &ParticipantId,
    invitee: &str,
    arrival: Arrival,
    now: i64,
) -> Result<bool, StoreError> {
    let Some(inviter) = store.referral_participant(&p.name, id)? else {
        tracing::warn!(programme = %p.name, %id, invitee, "referral: a code of no known participant");
        return Ok(false);
    };
    let inviter = inviter.openid;
    let done = store.referral_write(&p.account, &p.name, &[invitee, &inviter], &mut |view| {
        match on_scan_subscribe(p, &inviter, invitee, arrival, &view.records, now) {
            Decision::Create { record, update } => InviteChange {
                records: std::iter::once(record).chain(update).collect(),
                ..Default::default()
            },
            Decision::Ignore(_) => InviteChange::default(),
        }
    })?;
    if let Some(r) = done.records.first() {
        tracing::info!(programme = %p.name, inviter = %r.inviter, invitee, state = ?r.state, "referral: invite");
    }
    Ok(!done.is_empty())
}

/// Reward notices kept for `openid` (sent when they write next).
fn kept_notices(
    store: &dyn Store,
    programmes: &[Programme],
    account: &str,
    openid: &str,
) -> Result<(bool, Vec<NewItem>), StoreError> {
    let id = ParticipantId::of(account, openid);
    let (mut wrote, mut queued) = (false, Vec::new());
    for p in programmes.iter().filter(|p| p.account == account) {
        let has = store
            .referral_participant(&p.name, &id)?
            .is_some_and(|k| k.openid == openid && !k.notices.is_empty());
        if !has {
            continue;
        }
        let mut items = Vec::new();
        store.update_referral_participant(account, &p.name, &id, &mut |known| {
            let Some(mut known) = known.filter(|k| !k.notices.is_empty()) else {
                return (None, Vec::new());
            };
            items = std::mem::take(&mut known.notices)
                .into_iter()
                .map(|text| NewItem {
                    effect: Effect::Custom {
                        openid: openid.to_string(),
                        message: Reply::Text { content: text },
                    },
                    origin: format!("referral:{}", p.name),
                    not_before_ms: crate::outbox::now_ms(),
                })
                .collect();
            (Some(known), items.clone())
        })?;
        wrote |= !items.is_empty();
        queued.extend(items);
    }
    Ok((wrote, queued))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: InboundKind) -> Inbound {
        Inbound {
            to: "gh".into(),
            from: "o1".into(),
            create_time: 100,
            agent_id: None,
            kind,
        }
    }

    #[test]
    fn arrivals_come_from_the_state_before_the_callback() {
        let subscribe = msg(InboundKind::Event(Event::Subscribe {
            scene: Some("ref:tea:aaaaaaaaaaaaaaaa".into()),
            ticket: None,
        }));
        let scan = msg(InboundKind::Event(Event::Scan {
            scene: "ref:tea:aaaaaaaaaaaaaaaa".into(),
            ticket: None,
        }));
        let follower = |subscribed, first: Option<i64>, left: Option<i64>| Follower {
            subscribed,
            first_subscribed_at: first,
            last_subscribed_at: first,
            unsubscribed_at: left,
            ..Follower::new("o1")
        };
        for (case, before, want) in [
            ("never seen", None, Arrival::New),
            (
                "known, never subscribed (a shop event)",
                Some(follower(false, None, None)),
                Arrival::New,
            ),
            (
                "had unfollowed",
                Some(follower(false, Some(10), Some(20))),
                Arrival::Returning,
            ),
            (
                "following",
                Some(follower(true, Some(10), None)),
                Arrival::AlreadyFollowing,
            ),
        ] {
            assert_eq!(
                arrival_before(&subscribe, before.as_ref()),
                Some(want),
                "{case}"
            );
        }
        assert_eq!(
            arrival_before(&scan, None),
            Some(Arrival::AlreadyFollowing),
            "a scan is by a follower"
        );
        let text = msg(InboundKind::Text {
            content: "hi".into(),
            msg_id: 1,
        });
        assert_eq!(arrival_before(&text, None), None);
        // A retried subscribe, from the state after its first delivery.
        assert_eq!(
            arrival_after(&subscribe, Some(&follower(true, Some(100), None))),
            Some(Arrival::New)
        );
        assert_eq!(
            arrival_after(&subscribe, Some(&follower(true, Some(100), Some(50)))),
            Some(Arrival::Returning)
        );
    }
}
