//! Which counters one callback or one shop event changes (PURE): decided from the
//! follower before and after, in the decision that writes the follower.

use super::{channel_of_scene, metric, Count, DIRECT, TOTAL};
use crate::follower::Follower;
use crate::local_time::UtcOffset;
use crate::protocol::{Event, ExternalContactChange, Inbound, InboundKind};

const DAY: i64 = 86_400;

/// What the counts need of the follower as they were before the callback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Before {
    pub subscribed: bool,
    /// Subscribed at some time before (a subscribe now is a return).
    pub ever_subscribed: bool,
    pub last_subscribed_at: Option<i64>,
    /// The channel of the last arrival (its cohort's row).
    pub arrival_channel: String,
    /// The last time they wrote, clicked, scanned or subscribed.
    pub last_active_at: Option<i64>,
}

impl Before {
    pub fn of(f: Option<&Follower>) -> Before {
        let Some(f) = f else {
            return Before::default();
        };
        Before {
            subscribed: f.subscribed,
            ever_subscribed: f.first_subscribed_at.is_some(),
            last_subscribed_at: f.last_subscribed_at,
            arrival_channel: arrival_channel(f).to_string(),
            last_active_at: f.last_inbound_at.max(f.last_interaction_at),
        }
    }
}

/// First touch: the channel that brought the follower.
pub fn first_touch(f: &Follower) -> &str {
    f.first_scene.as_deref().map_or(DIRECT, channel_of_scene)
}

/// Last touch at `at`: the latest channel scanned at or before it.
pub fn last_touch(f: &Follower, at: i64) -> &str {
    f.scenes
        .iter()
        .rev()
        .find(|v| v.at <= at)
        .map_or(DIRECT, |v| channel_of_scene(&v.scene))
}

/// The channel of the follower's latest arrival: the scene their last subscribe came with
/// (the first visit of that second: a scan in the same second comes after it).
pub fn arrival_channel(f: &Follower) -> &str {
    f.last_subscribed_at
        .and_then(|t| f.scenes.iter().find(|v| v.at == t))
        .map_or(DIRECT, |v| channel_of_scene(&v.scene))
}

/// The counts of one callback. `after` is the follower as committed (`None`: the callback
/// is not a follower's, e.g. a mass-send report); `rule_hit`: a rule answered or acted;
/// `coupons`: coupons the rules handed out in this callback.
pub fn callback_counts(
    before: &Before,
    after: Option<&Follower>,
    msg: &Inbound,
    rule_hit: bool,
    coupons: i64,
    now: i64,
    zone: UtcOffset,
) -> Vec<Count> {
    let Some(after) = after else {
        return Vec::new();
    };
    let today = zone.day(now);
    let first = first_touch(after);
    let mut out = Vec::new();
    let both = |out: &mut Vec<Count>, day: i64, channel: &str, m: &str| {
        out.push(Count::new(day, TOTAL, m, 1));
        out.push(Count::new(day, channel, m, 1));
    };
    let mut active = false;
    match &msg.kind {
        InboundKind::Event(Event::Subscribe { scene, .. }) => {
            arrive(&mut out, before, scene.as_deref(), today);
            active = true;
        }
        InboundKind::Event(Event::ExternalContact {
            change: ExternalContactChange::Add | ExternalContactChange::AddHalf,
            state,
            ..
        }) => {
            let state = state.as_deref().filter(|s| !s.is_empty());
            arrive(&mut out, before, state, today);
            active = true;
        }
        InboundKind::Event(Event::Scan { scene, .. }) => {
            out.push(Count::new(today, channel_of_scene(scene), metric::SCANS, 1));
            active = true;
        }
        InboundKind::Event(Event::Unsubscribe)
        | InboundKind::Event(Event::ExternalContact {
            change: ExternalContactChange::Del | ExternalContactChange::DelFollowUser,
            ..
        }) => {
            if before.subscribed && !after.subscribed {
                both(&mut out, today, first, metric::UNFOLLOWS);
                if let Some(arrived) = before.last_subscribed_at {
                    let stayed = now.saturating_sub(arrived);
                    let cohort = zone.day(arrived);
                    for (days, m) in [
                        (1, metric::LEFT_1D),
                        (7, metric::LEFT_7D),
                        (30, metric::LEFT_30D),
                    ] {
                        if stayed < days * DAY {
                            both(&mut out, cohort, &before.arrival_channel, m);
                        }
                    }
                }
            }
        }
        InboundKind::Event(Event::Click { .. } | Event::ScanCode { .. }) => active = true,
        InboundKind::Event(_) => {}
        _ => {
            both(&mut out, today, first, metric::MESSAGES);
            active = true;
        }
    }
    let first_today = before.last_active_at.map(|t| zone.day(t)) != Some(today);
    if active && first_today {
        both(&mut out, today, first, metric::ACTIVE);
    }
    if rule_hit {
        out.push(Count::new(today, TOTAL, metric::RULE_HITS, 1));
    }
    if coupons > 0 {
        out.push(Count::new(today, TOTAL, metric::COUPONS_CLAIMED, coupons));
        out.push(Count::new(today, first, metric::COUPONS_CLAIMED, coupons));
    }
    out
}

/// A coupon of the follower `holder` (`None`: not known) redeemed at `now`.
pub fn redeem_counts(holder: Option<&Follower>, now: i64, zone: UtcOffset) -> Vec<Count> {
    let day = zone.day(now);
    let first = holder.map_or(DIRECT, first_touch);
    vec![
        Count::new(day, TOTAL, metric::COUPONS_REDEEMED, 1),
        Count::new(day, first, metric::COUPONS_REDEEMED, 1),
    ]
}

/// A subscribe (or a WeCom contact added): a scan of its channel, and an arrival unless
/// the follower was subscribed already (a second staff member adding a WeCom contact).
fn arrive(out: &mut Vec<Count>, before: &Before, scene: Option<&str>, today: i64) {
    let channel = scene.map_or(DIRECT, channel_of_scene);
    if scene.is_some() {
        out.push(Count::new(today, channel, metric::SCANS, 1));
    }
    if !before.subscribed {
        let m = if before.ever_subscribed {
            metric::RETURNING
        } else {
            metric::NEW
        };
        out.push(Count::new(today, TOTAL, m, 1));
        out.push(Count::new(today, channel, m, 1));
    }
}

/// The counts of one shop event at `at` (its own time, not the time it was posted):
/// `added` is what it added to the follower's counters, `after` the follower afterwards.
/// Counted under the first touch and, as `last:` metrics, under the last touch; the first
/// increase of the [`ORDER_COUNTER`](super::ORDER_COUNTER) (`had_ordered`: it was above
/// zero before) counts the follower's arrival cohort as `ordered`.
pub fn shop_counts(
    had_ordered: bool,
    after: &Follower,
    added: &[(String, i64)],
    at: i64,
    zone: UtcOffset,
) -> Vec<Count> {
    let day = zone.day(at);
    let (first, last) = (first_touch(after), last_touch(after, at));
    let mut out = Vec::with_capacity(3 + 3 * added.len());
    let mut put = |m: &str, n: i64| {
        out.push(Count::new(day, TOTAL, m, n));
        out.push(Count::new(day, first, m, n));
        out.push(Count::new(
            day,
            last,
            &format!("{}{m}", metric::LAST_PREFIX),
            n,
        ));
    };
    put(metric::SHOP_EVENTS, 1);
    for (counter, n) in added {
        put(&format!("{}{counter}", metric::SHOP_PREFIX), *n);
    }
    let orders = after
        .counters
        .get(super::ORDER_COUNTER)
        .copied()
        .unwrap_or(0);
    if !had_ordered && orders > 0 {
        if let Some(arrived) = after.last_subscribed_at {
            let cohort = zone.day(arrived);
            out.push(Count::new(cohort, TOTAL, metric::ORDERED, 1));
            out.push(Count::new(
                cohort,
                arrival_channel(after),
                metric::ORDERED,
                1,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::follower::SceneVisit;

    const Z: UtcOffset = UtcOffset::CHINA;
    /// 2026-11-11 00:00 China time.
    const T: i64 = 1_794_326_400;

    fn msg(kind: InboundKind) -> Inbound {
        Inbound {
            to: "gh".into(),
            from: "o1".into(),
            create_time: T,
            agent_id: None,
            kind,
        }
    }

    fn event(e: Event) -> Inbound {
        msg(InboundKind::Event(e))
    }

    fn follower(first_scene: Option<&str>, subscribed_at: i64) -> Follower {
        let mut f = Follower::new("o1");
        f.subscribed = true;
        f.first_subscribed_at = Some(subscribed_at);
        f.last_subscribed_at = Some(subscribed_at);
        f.last_interaction_at = Some(subscribed_at);
        if let Some(s) = first_scene {
            f.first_scene = Some(s.into());
            f.scenes.push(SceneVisit {
                scene: s.into(),
                at: subscribed_at,
            });
        }
        f
    }

    fn has(counts: &[Count], day: i64, channel: &str, m: &str) -> i64 {
        counts
            .iter()
            .filter(|c| c.day == day && c.channel == channel && c.metric == m)
            .map(|c| c.n)
            .sum()
    }

    #[test]
    fn a_new_subscribe_through_a_channel_counts_a_scan_and_an_arrival() {
        let after = follower(Some("poster"), T);
        let sub = event(Event::Subscribe {
            scene: Some("poster".into()),
            ticket: None,
        });
        let c = callback_counts(&Before::of(None), Some(&after), &sub, true, 0, T, Z);
        let today = Z.day(T);
        assert_eq!(has(&c, today, "poster", metric::SCANS), 1);
        assert_eq!(has(&c, today, "poster", metric::NEW), 1);
        assert_eq!(has(&c, today, TOTAL, metric::NEW), 1);
        assert_eq!(has(&c, today, TOTAL, metric::RETURNING), 0);
        assert_eq!(has(&c, today, TOTAL, metric::ACTIVE), 1);
        assert_eq!(has(&c, today, TOTAL, metric::RULE_HITS), 1);
        assert_eq!(
            has(&c, today, TOTAL, metric::SCANS),
            0,
            "scans are a channel's"
        );
    }

    #[test]
    fn a_return_is_returning_and_a_second_subscribe_is_no_arrival() {
        let mut before = follower(None, T - 10 * DAY);
        before.subscribed = false;
        let after = follower(None, T);
        let sub = event(Event::Subscribe {
            scene: None,
            ticket: None,
        });
        let c = callback_counts(
            &Before::of(Some(&before)),
            Some(&after),
            &sub,
            false,
            0,
            T,
            Z,
        );
        assert_eq!(has(&c, Z.day(T), DIRECT, metric::RETURNING), 1);
        assert_eq!(has(&c, Z.day(T), TOTAL, metric::NEW), 0);
        // Already subscribed (a second WeCom staff member adds the contact): no arrival.
        let c = callback_counts(
            &Before::of(Some(&after)),
            Some(&after),
            &sub,
            false,
            0,
            T,
            Z,
        );
        assert!(c
            .iter()
            .all(|c| c.metric != metric::NEW && c.metric != metric::RETURNING));
    }

    #[test]
    fn leaving_counts_in_the_arrival_cohort_within_each_window() {
        let arrived = T - 3 * DAY;
        let before = follower(Some("poster"), arrived);
        let mut after = before.clone();
        after.subscribed = false;
        let c = callback_counts(
            &Before::of(Some(&before)),
            Some(&after),
            &event(Event::Unsubscribe),
            false,
            0,
            T,
            Z,
        );
        let cohort = Z.day(arrived);
        assert_eq!(has(&c, Z.day(T), "poster", metric::UNFOLLOWS), 1);
        assert_eq!(has(&c, Z.day(T), TOTAL, metric::UNFOLLOWS), 1);
        assert_eq!(has(&c, cohort, "poster", metric::LEFT_1D), 0);
        assert_eq!(has(&c, cohort, "poster", metric::LEFT_7D), 1);
        assert_eq!(has(&c, cohort, "poster", metric::LEFT_30D), 1);
        assert_eq!(has(&c, cohort, TOTAL, metric::LEFT_7D), 1);
        // An unsubscribe from someone not subscribed (a resend after a restore) counts nothing.
        let c = callback_counts(
            &Before::of(Some(&after)),
            Some(&after),
            &event(Event::Unsubscribe),
            false,
            0,
            T,
            Z,
        );
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn messages_count_under_the_first_touch_and_activity_once_a_day() {
        let mut before = follower(Some("poster"), T - DAY);
        before.scenes.push(SceneVisit {
            scene: "store-7".into(),
            at: T - 100,
        });
        let text = msg(InboundKind::Text {
            content: "hi".into(),
            msg_id: 1,
        });
        let c = callback_counts(
            &Before::of(Some(&before)),
            Some(&before),
            &text,
            false,
            2,
            T,
            Z,
        );
        assert_eq!(has(&c, Z.day(T), "poster", metric::MESSAGES), 1);
        assert_eq!(has(&c, Z.day(T), "store-7", metric::MESSAGES), 0);
        assert_eq!(has(&c, Z.day(T), "poster", metric::ACTIVE), 1);
        assert_eq!(has(&c, Z.day(T), "poster", metric::COUPONS_CLAIMED), 2);
        let mut later = before.clone();
        later.last_inbound_at = Some(T + 5);
        let c = callback_counts(
            &Before::of(Some(&later)),
            Some(&later),
            &text,
            false,
            0,
            T + 60,
            Z,
        );
        assert_eq!(has(&c, Z.day(T), TOTAL, metric::ACTIVE), 0, "once a day");
        assert_eq!(has(&c, Z.day(T), TOTAL, metric::MESSAGES), 1);
        // The next local day (China time), active again.
        let c = callback_counts(
            &Before::of(Some(&later)),
            Some(&later),
            &text,
            false,
            0,
            T + DAY,
            Z,
        );
        assert_eq!(has(&c, Z.day(T) + 1, TOTAL, metric::ACTIVE), 1);
    }

    #[test]
    fn shop_events_count_first_and_last_touch_and_the_first_order() {
        let mut before = follower(Some("poster"), T - DAY);
        before.scenes.push(SceneVisit {
            scene: "ref:double11:ab".into(),
            at: T - 100,
        });
        before.scenes.push(SceneVisit {
            scene: "later".into(),
            at: T + 100,
        });
        let mut after = before.clone();
        after.counters.insert("orders".into(), 1);
        let added = vec![("orders".to_string(), 1), ("spend_fen".to_string(), 12850)];
        let c = shop_counts(false, &after, &added, T, Z);
        let d = Z.day(T);
        assert_eq!(has(&c, d, TOTAL, metric::SHOP_EVENTS), 1);
        assert_eq!(has(&c, d, "poster", "shop:spend_fen"), 12850);
        assert_eq!(has(&c, d, "ref:double11", "last:shop:spend_fen"), 12850);
        assert_eq!(
            has(&c, d, "later", "last:shop_events"),
            0,
            "scanned after the order"
        );
        assert_eq!(has(&c, Z.day(T - DAY), "poster", metric::ORDERED), 1);
        // A second order: the cohort has ordered already.
        let mut again = after.clone();
        again.counters.insert("orders".into(), 2);
        let c = shop_counts(true, &again, &added, T, Z);
        assert_eq!(has(&c, Z.day(T - DAY), "poster", metric::ORDERED), 0);
    }

    #[test]
    fn reports_and_unknown_senders_count_nothing() {
        let c = callback_counts(
            &Before::default(),
            None,
            &event(Event::Unsubscribe),
            true,
            0,
            T,
            Z,
        );
        assert!(c.is_empty());
    }
}
