//! The one path a message takes, whether it comes from HTTP, `siyu simulate` or a test:
//! inbound message → follower bookkeeping → rule decision → one atomic commit.
//!
//! No actix types and no network here. Time and randomness come in as arguments so that
//! tests are deterministic. The decision itself (`prepare`) is pure: the store may run it
//! again (a backend with optimistic concurrency would), and a dry run calls the very same
//! function.

use crate::follower::{
    Follower, HistoryEntry, SceneVisit, CS_AFTER_INTERACTION, CS_AFTER_MESSAGE, HISTORY_LEN,
};
use std::collections::BTreeSet;

use crate::coupon::{china_date, refusal_text, Batch};
use crate::outbox::{Effect, NewItem};
use crate::protocol::{Event, ExternalContactChange, Inbound, InboundKind, Reply};
use crate::rules::{Action, CouponView, Decision, RuleTable};
use crate::store::{Answer, Applied, CallbackKey, Commit, Store, StoreError};

/// How many scene visits a follower keeps (the first scene is kept apart, forever).
pub const SCENES_LEN: usize = 20;
/// Longest text kept in a history entry, in characters.
const HISTORY_DETAIL_CHARS: usize = 80;

/// What happened to one callback.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whose state this callback touched (openid, or WeCom external user id).
    pub follower_id: String,
    pub answer: Answer,
    /// The actions applied (empty for a duplicate: nothing was applied again).
    pub actions: Vec<Action>,
    /// True when this was WeChat retrying a callback already handled.
    pub duplicate: bool,
    /// The calls to WeChat queued in the outbox with the change (none for a duplicate).
    pub effects: Vec<NewItem>,
    /// Whether the store was written (a fresh callback always is; a retry only when it
    /// recorded a delivery report the first delivery may not have): what was written
    /// must be on disk before WeChat is answered.
    pub changed: bool,
    /// For a subscribe or scan: how the follower arrived, from their state before this
    /// callback (a referral invite's `counts` rule). `None` for a duplicate (the first
    /// delivery decided it) and for every other message.
    pub arrival: Option<crate::referral::Arrival>,
}

/// The inputs of one callback besides the message.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub account: &'a str,
    pub rules: &'a RuleTable,
    pub now: i64,
    /// The same instant in milliseconds: outbox items are timed finer than seconds.
    pub now_ms: i64,
    /// Picks among reply variants.
    pub seed: u64,
    pub dedupe_ttl_secs: u64,
    /// The coupon batches rules may issue from (`issue_coupon`).
    pub coupons: &'a [Batch],
    /// The channels (`channels.toml`): a follower arriving through one gets its tags.
    pub channels: &'a [crate::channel::Channel],
    /// The offset of the local day reports count in (`[display] utc_offset`).
    pub zone: crate::local_time::UtcOffset,
    /// Whether and how the account talks back to WeChat: `None` (no `[account.api]`)
    /// queues nothing, so nothing piles up that no worker would send.
    pub outbound: Option<Outbound>,
    /// A referral programme's keyword (`referral_flow::ask`): its reply replaces the
    /// rules' and its poster is queued with the commit.
    pub referral: Option<&'a crate::referral_flow::Ask>,
}

/// The API an account's side effects go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    /// Official account: user tags, customer-service messages.
    Official,
    /// WeCom: corp tags of external contacts, welcome messages.
    WeCom,
}

/// The least time between two follow-ups of one callback.
pub const FOLLOW_UP_GAP_MS: i64 = 1000;

/// How long a WeCom WelcomeCode can be used (protocol.md §11).
pub const WELCOME_CODE_SECS: i64 = 20;

/// Handles one callback for real: decides and commits atomically, or returns the cached
/// answer of the first delivery when this is a retry.
pub fn handle(store: &dyn Store, ctx: Context<'_>, msg: &Inbound) -> Result<Outcome, StoreError> {
    let follower_id = follower_id(msg);
    let dedupe_key = msg.dedupe_key();
    let mut actions = Vec::new();
    let mut effects = Vec::new();
    let mut arrival = None;
    let applied = store.apply_callback(
        CallbackKey {
            account: ctx.account,
            openid: &follower_id,
            dedupe_key: &dedupe_key,
            now: ctx.now,
            expires_at: ctx.now.saturating_add(ctx.dedupe_ttl_secs as i64),
        },
        &mut |current| {
            // A claim is keyed by the callback's dedupe key: however often this runs (a
            // retry, a rerun), the follower gets one code.
            let mut issue = |batch: &str| claim(store, ctx, &follower_id, &dedupe_key, batch);
            arrival = crate::referral_flow::arrival_before(msg, current.as_ref());
            let (commit, applied_actions) = prepare(current, &follower_id, msg, ctx, &mut issue);
            actions = applied_actions;
            effects = commit.effects.clone();
            commit
        },
    )?;
    // Idempotent, so done on a retry too (a crash may have come between the two writes).
    let reported = record_job_result(store, ctx.account, msg)?;
    Ok(match applied {
        Applied::Fresh(answer) => Outcome {
            follower_id,
            answer,
            actions,
            duplicate: false,
            effects,
            changed: true,
            arrival,
        },
        Applied::Duplicate(answer) => Outcome {
            follower_id,
            answer,
            actions: Vec::new(),
            duplicate: true,
            effects: Vec::new(),
            changed: reported,
            arrival: None,
        },
    })
}

/// TEMPLATESENDJOBFINISH / MASSSENDJOBFINISH for a message a campaign sent: WeChat's
/// delivery result is recorded against the campaign's follower, or its mass job (a
/// message id siyu did not send is ignored). Whether anything was written.
fn record_job_result(store: &dyn Store, account: &str, msg: &Inbound) -> Result<bool, StoreError> {
    if let InboundKind::Event(Event::MassSendJobFinish {
        msg_id,
        status,
        total_count,
        filter_count,
        sent_count,
        error_count,
    }) = &msg.kind
    {
        let Ok(msgid) = i64::try_from(*msg_id) else {
            return Ok(false);
        };
        let Some((campaign, _)) = store.campaign_by_msgid(account, msgid)? else {
            return Ok(false);
        };
        let mut job = store
            .campaign_jobs(&campaign)?
            .into_iter()
            .find(|j| j.msg_id == msgid)
            .unwrap_or(crate::campaign::MassJob {
                msg_id: msgid,
                ..Default::default()
            });
        job.status = Some(status.clone());
        job.total_count = *total_count;
        job.filter_count = *filter_count;
        job.sent_count = *sent_count;
        job.error_count = *error_count;
        store.put_campaign_job(&campaign, &job)?;
        tracing::info!(%campaign, msgid, %status, sent = sent_count, filtered = filter_count, "campaign: mass send reported");
        return Ok(true);
    }
    let InboundKind::Event(Event::TemplateSendJobFinish { msg_id, status }) = &msg.kind else {
        return Ok(false);
    };
    let Ok(msgid) = i64::try_from(*msg_id) else {
        return Ok(false);
    };
    let Some((campaign, openid)) = store.campaign_by_msgid(account, msgid)? else {
        return Ok(false);
    };
    if let Some(crate::campaign::Progress::Sent {
        channel,
        at,
        msgid,
        coupon,
        ..
    }) = store.campaign_progress(&campaign, &openid)?
    {
        let progress = crate::campaign::Progress::Sent {
            channel,
            at,
            msgid,
            coupon,
            delivery: Some(status.clone()),
        };
        store.campaign_record(account, &campaign, &openid, &progress, None)?;
        tracing::info!(%campaign, %openid, %status, "campaign: template delivery reported");
        return Ok(true);
    }
    Ok(false)
}

/// Runs the same decision against the store's current state without writing anything;
/// returns the outcome and the follower as it would be afterwards.
pub fn dry_run(
    store: &dyn Store,
    ctx: Context<'_>,
    msg: &Inbound,
) -> Result<(Outcome, Option<Follower>), StoreError> {
    let follower_id = follower_id(msg);
    let current = store.follower(ctx.account, &follower_id)?;
    let arrival = crate::referral_flow::arrival_before(msg, current.as_ref());
    let mut preview = |name: &str| preview(ctx, name);
    let (commit, actions) = prepare(current, &follower_id, msg, ctx, &mut preview);
    Ok((
        Outcome {
            follower_id,
            answer: commit.answer,
            actions,
            duplicate: false,
            effects: commit.effects,
            changed: false,
            arrival,
        },
        commit.follower,
    ))
}

/// The follower a callback is about: the sender, except for WeCom customer-contact events
/// where the sender is `sys` and the customer is the external user id.
pub fn follower_id(msg: &Inbound) -> String {
    match &msg.kind {
        InboundKind::Event(Event::ExternalContact {
            external_user_id, ..
        }) => external_user_id.clone(),
        _ => msg.from.clone(),
    }
}

/// The pure heart: bookkeeping, then the rule table's decision, then history.
fn prepare(
    current: Option<Follower>,
    follower_id: &str,
    msg: &Inbound,
    ctx: Context<'_>,
    issue: &mut dyn FnMut(&str) -> CouponView,
) -> (Commit, Vec<Action>) {
    let known = current.is_some();
    let before = crate::report::Before::of(current.as_ref());
    let mut follower = current.unwrap_or_else(|| Follower::new(follower_id));
    // Only an account that talks back needs the tags before (for the net change).
    let tags_before = ctx.outbound.map(|_| follower.tags.clone());
    let touches_follower = record_inbound(&mut follower, msg, ctx.now);
    // Before the rules, so a channel's welcome rule (`scene = …`, `if_tag`) sees its tags,
    // and mirrored to WeChat with the rules' own tag changes.
    if let Some(channel) =
        arrival_scene(msg).and_then(|scene| crate::channel::find(ctx.channels, ctx.account, scene))
    {
        follower.tags.extend(channel.tags.iter().cloned());
    }
    let mut coupons = 0;
    let mut issue = |batch: &str| {
        let view = issue(batch);
        if !view.code.is_empty() && view.refused.is_empty() {
            coupons += 1;
        }
        view
    };
    let mut decision = ctx
        .rules
        .decide_with(msg, &mut follower, ctx.seed, &mut issue);
    let mut effects = match ctx.outbound {
        Some(outbound) => {
            let before = tags_before.unwrap_or_default();
            effects(outbound, msg, &before, &follower, &mut decision, ctx)
        }
        None => Vec::new(),
    };
    // The keyword of a referral programme: its reply, and the poster queued in this
    // commit (so a crash never answers without queueing it, nor queues it twice).
    if let (Some(ask), Some(_)) = (ctx.referral, ctx.outbound) {
        decision.reply = Some(ask.reply.clone());
        effects.extend(ask.item(ctx.now_ms));
    }
    let rule = decision.rules.first().cloned();
    follower.history.push(HistoryEntry {
        at: ctx.now,
        kind: msg.type_name(),
        detail: detail(msg),
        rule,
    });
    if follower.history.len() > HISTORY_LEN {
        let excess = follower.history.len() - HISTORY_LEN;
        follower.history.drain(..excess);
    }
    // Job reports are about the account, not a follower: don't invent a record for them.
    let write = touches_follower || known || !decision.actions.is_empty();
    let counts = crate::report::callback_counts(
        &before,
        write.then_some(&follower),
        msg,
        !decision.rules.is_empty(),
        coupons,
        ctx.now,
        ctx.zone,
    );
    (
        Commit {
            follower: write.then_some(follower),
            answer: Answer {
                reply: decision.reply,
                rules: decision.rules,
            },
            effects,
            counts,
        },
        decision.actions,
    )
}

/// The effect that mirrors one local tag change on WeChat: a user tag (official), or a
/// corp tag set by `staff` (WeCom; default the staff member who added the contact, and
/// none without one). Rules and operators' edits both go through here.
pub fn tag_effect(
    outbound: Outbound,
    follower: &Follower,
    staff: Option<&str>,
    tag: &str,
    add: bool,
) -> Option<Effect> {
    match outbound {
        Outbound::Official => Some(Effect::Tag {
            openid: follower.openid.clone(),
            tag: tag.to_string(),
            add,
        }),
        Outbound::WeCom => {
            let staff = staff
                .filter(|s| !s.is_empty())
                .or(follower.attributes.get("wecom_staff").map(String::as_str))?;
            Some(Effect::CorpTag {
                staff: staff.to_string(),
                external_userid: follower.openid.clone(),
                tag: tag.to_string(),
                add,
            })
        }
    }
}

/// The account's automatic tags re-evaluated on a follower changed outside a callback (a
/// sync step, an imported line), and the outbox items that mirror what they changed: each
/// tag they put on, and each they took off (`remove = true`). Tags the follower had before
/// (WeChat's own, brought in by a sync) are never sent back. See [`tag_items`] for who is
/// mirrored at all.
pub fn autotag_effects(
    rules: &RuleTable,
    outbound: Option<Outbound>,
    follower: &mut Follower,
    now: i64,
    origin: &str,
) -> Vec<NewItem> {
    let (added, removed) = rules.autotag(follower, now);
    let changes = added
        .into_iter()
        .map(|t| (t, true))
        .chain(removed.into_iter().map(|t| (t, false)));
    tag_items(
        outbound,
        follower,
        changes,
        origin,
        now.saturating_mul(1000),
    )
}

/// The outbox items mirroring tag changes (`(tag, added)`) made outside a callback, due at
/// `now_ms`. None for an account without `[account.api]` (`outbound` is `None`), nor for a
/// follower who does not follow the account: WeChat cannot tag an openid that is not
/// subscribed (the tag is kept here, and a later change mirrors it).
pub fn tag_items(
    outbound: Option<Outbound>,
    follower: &Follower,
    changes: impl IntoIterator<Item = (String, bool)>,
    origin: &str,
    now_ms: i64,
) -> Vec<NewItem> {
    let Some(outbound) = outbound.filter(|_| follower.subscribed) else {
        return Vec::new();
    };
    changes
        .into_iter()
        .filter_map(|(tag, add)| tag_effect(outbound, follower, None, &tag, add))
        .map(|effect| NewItem {
            effect,
            origin: origin.to_string(),
            not_before_ms: now_ms,
        })
        .collect()
}

/// Claims a code of batch `name` for the follower (idempotent per callback), as replies
/// show it; a refusal says why in `refused`.
fn claim(store: &dyn Store, ctx: Context<'_>, openid: &str, key: &str, name: &str) -> CouponView {
    let Some(batch) = ctx.coupons.iter().find(|b| b.name == name) else {
        tracing::warn!(batch = name, "a rule issues from an unknown coupon batch");
        return refused(name, "暂不可用");
    };
    match store.claim_coupon(batch, ctx.account, openid, ctx.now, Some(key)) {
        Ok(Ok(c)) => CouponView {
            code: c.code,
            title: batch.title.clone(),
            value: batch.value.clone(),
            expires: china_date(c.expires_at - 1),
            refused: String::new(),
        },
        Ok(Err(r)) => refused(&batch.title, refusal_text(&r)),
        Err(e) => {
            tracing::error!(error = %e, batch = name, "coupon claim failed");
            refused(&batch.title, "暂不可用")
        }
    }
}

/// What a dry run shows: the batch, and where the code would be.
fn preview(ctx: Context<'_>, name: &str) -> CouponView {
    match ctx.coupons.iter().find(|b| b.name == name) {
        Some(b) => CouponView {
            code: "(a new code)".into(),
            title: b.title.clone(),
            value: b.value.clone(),
            expires: china_date(b.validity.window(ctx.now).1 - 1),
            refused: String::new(),
        },
        None => refused(name, "暂不可用"),
    }
}

fn refused(title: &str, why: &str) -> CouponView {
    CouponView {
        title: title.to_string(),
        refused: why.to_string(),
        ..CouponView::default()
    }
}

/// The calls to WeChat a decision causes. Tags: the net change of the follower's tag set
/// (a tag added and removed in one callback, or added again, costs no call). Official
/// accounts: the rules' follow-up messages (WeCom has no customer-service API). WeCom: a
/// new external contact's welcome is the rule's text reply, sent with the WelcomeCode
/// (a passive reply would not reach them), and it replaces the passive reply.
fn effects(
    outbound: Outbound,
    msg: &Inbound,
    tags_before: &BTreeSet<String>,
    follower: &Follower,
    decision: &mut Decision,
    ctx: Context<'_>,
) -> Vec<NewItem> {
    let origin = format!(
        "rule:{}",
        decision.rules.first().map_or("-", String::as_str)
    );
    let (now, now_ms) = (ctx.now, ctx.now_ms);
    let item = |effect| NewItem {
        effect,
        origin: origin.clone(),
        not_before_ms: now_ms,
    };
    let changes = tags_before
        .symmetric_difference(&follower.tags)
        .map(|tag| (tag.clone(), follower.tags.contains(tag)));
    // WeCom's mark_tag acts as a staff member who has the contact: this event's, or the
    // one who added them (`tag_effect` falls back to the latter).
    let event_staff = match &msg.kind {
        InboundKind::Event(Event::ExternalContact { user_id, .. }) => Some(user_id.as_str()),
        _ => None,
    };
    let mut out: Vec<NewItem> = changes
        .filter_map(|(tag, add)| tag_effect(outbound, follower, event_staff, &tag, add))
        .map(item)
        .collect();
    match outbound {
        Outbound::Official => {
            // Follow-ups go out in order, at least a second apart: the worker sends items
            // concurrently, so equal times could arrive swapped.
            let mut due = now_ms;
            for f in std::mem::take(&mut decision.followups) {
                due = due.max(now_ms.saturating_add(i64::from(f.after_secs) * 1000));
                out.push(NewItem {
                    effect: Effect::Custom {
                        openid: follower.openid.clone(),
                        message: f.message,
                    },
                    origin: origin.clone(),
                    not_before_ms: due,
                });
                due = due.saturating_add(FOLLOW_UP_GAP_MS);
            }
        }
        Outbound::WeCom => {
            if let InboundKind::Event(Event::ExternalContact {
                change: ExternalContactChange::Add,
                welcome_code: Some(code),
                ..
            }) = &msg.kind
            {
                if let Some(Reply::Text { content }) = &decision.reply {
                    out.push(item(Effect::Welcome {
                        welcome_code: code.clone(),
                        text: content.clone(),
                        expires_at: now.saturating_add(WELCOME_CODE_SECS),
                    }));
                    decision.reply = None;
                }
            }
        }
    }
    out
}

/// Applies what the callback itself says about the follower (before rules run, so that
/// conditions and placeholders see it). Returns false for callbacks that are not a
/// follower's own doing (send-job reports).
fn record_inbound(f: &mut Follower, msg: &Inbound, now: i64) -> bool {
    let InboundKind::Event(event) = &msg.kind else {
        // Only a follower can send a message, so one we did not know is subscribed.
        f.subscribed = true;
        f.messages_in += 1;
        f.last_inbound_at = Some(now);
        f.open_cs_window(CS_AFTER_MESSAGE, now);
        return true;
    };
    match event {
        Event::Subscribe { scene, .. } => {
            subscribe(f, now);
            f.open_cs_window(CS_AFTER_INTERACTION, now);
            if let Some(scene) = scene {
                visit(f, scene, now);
            }
        }
        Event::Unsubscribe => {
            f.subscribed = false;
            f.unsubscribed_at = Some(now);
        }
        Event::Scan { scene, .. } => {
            f.subscribed = true;
            visit(f, scene, now);
            f.last_interaction_at = Some(now);
            f.open_cs_window(CS_AFTER_INTERACTION, now);
        }
        Event::ExternalContact {
            change,
            state,
            user_id,
            ..
        } => match change {
            ExternalContactChange::Add | ExternalContactChange::AddHalf => {
                subscribe(f, now);
                if let Some(state) = state.as_deref().filter(|s| !s.is_empty()) {
                    visit(f, state, now);
                }
                f.attributes
                    .insert("wecom_staff".to_string(), user_id.clone());
                if !f.staff.iter().any(|l| &l.userid == user_id) {
                    f.staff.push(crate::follower::StaffLink {
                        userid: user_id.clone(),
                        added_at: now,
                        state: state.clone().unwrap_or_default(),
                        ..Default::default()
                    });
                }
            }
            ExternalContactChange::Del | ExternalContactChange::DelFollowUser => {
                f.staff.retain(|l| &l.userid != user_id);
                // Still another staff member's contact: still in the private domain.
                if f.staff.is_empty() {
                    f.subscribed = false;
                    f.unsubscribed_at = Some(now);
                }
            }
            _ => {}
        },
        Event::TemplateSendJobFinish { .. } | Event::MassSendJobFinish { .. } => return false,
        Event::Click { .. } | Event::ScanCode { .. } => {
            f.subscribed = true;
            f.last_interaction_at = Some(now);
            f.open_cs_window(CS_AFTER_INTERACTION, now);
        }
        _ => f.subscribed = true,
    }
    true
}

/// The scene a follower arrives with: a subscribe or scan of a parametric QR code, or a
/// WeCom contact added through a "contact me" code with its state.
fn arrival_scene(msg: &Inbound) -> Option<&str> {
    match &msg.kind {
        InboundKind::Event(Event::Subscribe {
            scene: Some(scene), ..
        })
        | InboundKind::Event(Event::Scan { scene, .. }) => Some(scene),
        InboundKind::Event(Event::ExternalContact {
            change: ExternalContactChange::Add | ExternalContactChange::AddHalf,
            state: Some(state),
            ..
        }) => Some(state),
        _ => None,
    }
}

fn subscribe(f: &mut Follower, now: i64) {
    f.subscribed = true;
    f.first_subscribed_at.get_or_insert(now);
    f.last_subscribed_at = Some(now);
    f.last_interaction_at = Some(now);
}

fn visit(f: &mut Follower, scene: &str, now: i64) {
    if f.first_scene.is_none() {
        f.first_scene = Some(scene.to_string());
    }
    f.scenes.push(SceneVisit {
        scene: scene.to_string(),
        at: now,
    });
    if f.scenes.len() > SCENES_LEN {
        f.scenes.remove(0);
    }
}

fn detail(msg: &Inbound) -> Option<String> {
    let text = match &msg.kind {
        InboundKind::Event(e) => e.name_and_key().1,
        InboundKind::Link { url, .. } => Some(url.as_str()),
        _ => msg.text(),
    }?;
    // The first HISTORY_DETAIL_CHARS characters, copied in one piece.
    let end = text
        .char_indices()
        .nth(HISTORY_DETAIL_CHARS)
        .map_or(text.len(), |(i, _)| i);
    Some(text[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Reply;
    use crate::rules::{RuleContext, RuleSource};
    use crate::store::MemoryStore;

    const RULES: &str = r#"
[[rule]]
name = "welcome"
event = "subscribe"
reply = "欢迎 {scene}"
add_tags = ["new"]

[[rule]]
name = "count"
keywords = ["打卡"]
reply = "第 {counter.checkin} 次"
incr = { checkin = 1 }
"#;

    fn table() -> RuleTable {
        RuleTable::compile(
            &[RuleSource {
                name: "t.toml".into(),
                text: RULES.into(),
            }],
            &RuleContext::default(),
        )
        .unwrap()
    }

    fn ctx<'a>(rules: &'a RuleTable, now: i64) -> Context<'a> {
        Context {
            account: "demo",
            rules,
            now,
            now_ms: now * 1000,
            seed: 0,
            dedupe_ttl_secs: 60,
            channels: &[],
            zone: crate::local_time::UtcOffset::CHINA,
            coupons: &[],
            outbound: None,
            referral: None,
        }
    }

    fn msg(from: &str, at: i64, kind: InboundKind) -> Inbound {
        Inbound {
            to: "gh".into(),
            from: from.into(),
            create_time: at,
            agent_id: None,
            kind,
        }
    }

    fn subscribe(scene: Option<&str>) -> InboundKind {
        InboundKind::Event(Event::Subscribe {
            scene: scene.map(str::to_string),
            ticket: None,
        })
    }

    fn text(s: &str, id: u64) -> InboundKind {
        InboundKind::Text {
            content: s.into(),
            msg_id: id,
        }
    }

    #[test]
    fn a_follower_arriving_through_a_channel_gets_its_tags_before_the_rules_see_them() {
        use crate::channel::{Channel, ChannelKind};
        let rules = RuleTable::compile(
            &[RuleSource {
                name: "w.toml".into(),
                text: "[[rule]]\nname = \"poster-welcome\"\nevent = \"subscribe\"\nif_tag = \"poster\"\nreply = \"海报来的朋友你好\"\n"
                    .into(),
            }],
            &RuleContext::default(),
        )
        .unwrap();
        let channels = [Channel {
            name: "spring-poster".into(),
            account: "demo".into(),
            kind: ChannelKind::QrTemporary,
            title: "春季海报".into(),
            tags: vec!["poster".into()],
        }];
        let store = MemoryStore::default();
        let c = Context {
            channels: &channels,
            outbound: Some(Outbound::Official),
            referral: None,
            ..ctx(&rules, 100)
        };
        let o = handle(&store, c, &msg("o1", 100, subscribe(Some("spring-poster")))).unwrap();
        assert_eq!(o.answer.rules, ["poster-welcome"], "the channel's welcome");
        let f = store.follower("demo", "o1").unwrap().unwrap();
        assert!(f.has_tag("poster"));
        let shown: Vec<String> = o.effects.iter().map(|e| e.effect.describe()).collect();
        assert!(
            shown.iter().any(|d| d.contains("poster")),
            "mirrored to WeChat: {shown:?}"
        );
        // Another scene, another account's channel of that name, or a plain message: nothing.
        for (account, from, kind) in [
            ("demo", "o2", subscribe(Some("store-7"))),
            ("other", "o3", subscribe(Some("spring-poster"))),
            ("demo", "o4", text("hi", 9)),
        ] {
            let c = Context {
                account,
                channels: &channels,
                ..ctx(&rules, 100)
            };
            handle(&store, c, &msg(from, 100, kind)).unwrap();
            let f = store.follower(account, from).unwrap().unwrap();
            assert!(!f.has_tag("poster"), "{account}/{from}");
        }
        // A scan of the code by a follower already subscribed is an arrival too.
        let c = Context {
            channels: &channels,
            ..ctx(&rules, 200)
        };
        let scan = InboundKind::Event(Event::Scan {
            scene: "spring-poster".into(),
            ticket: None,
        });
        handle(&store, c, &msg("o2", 200, scan)).unwrap();
        assert!(store
            .follower("demo", "o2")
            .unwrap()
            .unwrap()
            .has_tag("poster"));
    }

    #[test]
    fn effects_are_the_net_tag_change_follow_ups_and_welcomes() {
        let rules = RuleTable::compile(
            &[RuleSource {
                name: "e.toml".into(),
                text: r#"
[[rule]]
name = "vip"
keywords = ["升级"]
reply = "ok"
add_tags = ["vip", "asked"]
remove_tags = ["cold"]
followups = [{ text = "one" }, { text = "two" }, { after = 5, text = "three" }]

[[rule]]
name = "again"
keywords = ["再升级"]
add_tags = ["vip"]

[[rule]]
name = "hello"
event = "add_external_contact"
reply = "欢迎"
add_tags = ["contact"]
"#
                .into(),
            }],
            &RuleContext::default(),
        )
        .unwrap();
        let store = MemoryStore::default();
        let official = Context {
            outbound: Some(Outbound::Official),
            referral: None,
            now_ms: 100_250,
            ..ctx(&rules, 100)
        };
        let o = handle(&store, official, &msg("o1", 100, text("升级", 1))).unwrap();
        let shown: Vec<(String, i64)> = o
            .effects
            .iter()
            .map(|e| (e.effect.describe(), e.not_before_ms - 100_250))
            .collect();
        assert_eq!(
            shown,
            [
                ("add tag asked to o1".to_string(), 0),
                ("add tag vip to o1".to_string(), 0),
                ("text message to o1".to_string(), 0),
                ("text message to o1".to_string(), 1000),
                ("text message to o1".to_string(), 5000),
            ],
            "`cold` was not there to remove; follow-ups in order, a second apart at least"
        );
        assert_eq!(
            store.outbox_page(None, 10).unwrap().len(),
            5,
            "queued with the change"
        );
        // Adding a tag the follower has changes nothing on WeChat's side.
        let o = handle(&store, official, &msg("o1", 101, text("再升级", 2))).unwrap();
        assert!(o.effects.is_empty(), "{:?}", o.effects);
        // Without API settings nothing is queued.
        let o = handle(&store, ctx(&rules, 102), &msg("o2", 102, text("升级", 3))).unwrap();
        assert!(o.effects.is_empty());

        // WeCom: the welcome goes through send_welcome_msg, not as a passive reply; the tag
        // through mark_tag as the staff member.
        let wecom = Context {
            outbound: Some(Outbound::WeCom),
            referral: None,
            ..ctx(&rules, 200)
        };
        let add = InboundKind::Event(Event::ExternalContact {
            change: ExternalContactChange::Add,
            user_id: "staff-li".into(),
            external_user_id: "wm1".into(),
            state: None,
            welcome_code: Some("CODE".into()),
        });
        let o = handle(&store, wecom, &msg("sys", 200, add)).unwrap();
        assert_eq!(o.answer.reply, None);
        let effects: Vec<&Effect> = o.effects.iter().map(|e| &e.effect).collect();
        assert_eq!(
            effects,
            [
                &Effect::CorpTag {
                    staff: "staff-li".into(),
                    external_userid: "wm1".into(),
                    tag: "contact".into(),
                    add: true
                },
                &Effect::Welcome {
                    welcome_code: "CODE".into(),
                    text: "欢迎".into(),
                    expires_at: 200 + WELCOME_CODE_SECS
                },
            ]
        );
    }

    #[test]
    fn subscribe_lifecycle_keeps_history() {
        let store = MemoryStore::default();
        let t = table();
        let o = handle(
            &store,
            ctx(&t, 100),
            &msg("o1", 100, subscribe(Some("poster"))),
        )
        .unwrap();
        assert_eq!(
            o.answer.reply,
            Some(Reply::Text {
                content: "欢迎 poster".into()
            })
        );
        handle(
            &store,
            ctx(&t, 200),
            &msg("o1", 200, InboundKind::Event(Event::Unsubscribe)),
        )
        .unwrap();
        handle(&store, ctx(&t, 300), &msg("o1", 300, subscribe(None))).unwrap();
        let f = store.follower("demo", "o1").unwrap().unwrap();
        assert!(f.subscribed);
        assert_eq!(f.first_subscribed_at, Some(100));
        assert_eq!(f.last_subscribed_at, Some(300));
        assert_eq!(f.unsubscribed_at, Some(200));
        assert_eq!(f.first_scene.as_deref(), Some("poster"));
        let kinds: Vec<&str> = f.history.iter().map(|h| h.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["event:subscribe", "event:unsubscribe", "event:subscribe"]
        );
    }

    #[test]
    fn dry_run_decides_the_same_and_writes_nothing() {
        let store = MemoryStore::default();
        let t = table();
        let m = msg("o2", 1, text("打卡", 1));
        let (dry, after) = dry_run(&store, ctx(&t, 1), &m).unwrap();
        assert!(store.follower("demo", "o2").unwrap().is_none());
        assert_eq!(after.unwrap().counters.get("checkin"), Some(&1));
        let real = handle(&store, ctx(&t, 1), &m).unwrap();
        assert_eq!(dry.answer, real.answer);
        assert_eq!(dry.actions, real.actions);
        let retry = handle(&store, ctx(&t, 2), &m).unwrap();
        assert!(retry.duplicate && retry.actions.is_empty());
        assert_eq!(retry.answer, real.answer);
    }

    #[test]
    fn job_reports_do_not_invent_followers() {
        let store = MemoryStore::default();
        let t = table();
        let report = InboundKind::Event(Event::MassSendJobFinish {
            msg_id: 1,
            status: "send success".into(),
            total_count: 1,
            filter_count: 1,
            sent_count: 1,
            error_count: 0,
        });
        handle(&store, ctx(&t, 1), &msg("gh_admin", 1, report)).unwrap();
        assert!(store.follower("demo", "gh_admin").unwrap().is_none());
    }

    #[test]
    fn history_is_bounded_and_counts_every_message() {
        let store = MemoryStore::default();
        let t = table();
        for i in 0..(HISTORY_LEN as u64 + 5) {
            handle(
                &store,
                ctx(&t, i as i64),
                &msg("o3", i as i64, text("打卡", i)),
            )
            .unwrap();
        }
        let f = store.follower("demo", "o3").unwrap().unwrap();
        assert_eq!(f.history.len(), HISTORY_LEN);
        assert_eq!(f.messages_in, HISTORY_LEN as u64 + 5);
        assert_eq!(f.counters.get("checkin"), Some(&(HISTORY_LEN as i64 + 5)));
        assert_eq!(f.history.last().unwrap().rule.as_deref(), Some("count"));
    }

    #[test]
    fn history_details_keep_the_first_80_characters() {
        for (content, kept) in [
            ("短", "短".to_string()),
            (&"优".repeat(80), "优".repeat(80)),
            (
                &format!("{}😀x", "优".repeat(79)),
                format!("{}😀", "优".repeat(79)),
            ),
        ] {
            let m = msg("o4", 1, text(content, 1));
            assert_eq!(detail(&m), Some(kept));
        }
    }

    #[test]
    fn external_contacts_are_keyed_by_external_user_id() {
        let store = MemoryStore::default();
        let t = table();
        let add = InboundKind::Event(Event::ExternalContact {
            change: ExternalContactChange::Add,
            user_id: "staff".into(),
            external_user_id: "wmX".into(),
            state: Some("store-1".into()),
            welcome_code: None,
        });
        let o = handle(&store, ctx(&t, 1), &msg("sys", 1, add)).unwrap();
        assert_eq!(o.follower_id, "wmX");
        let f = store.follower("demo", "wmX").unwrap().unwrap();
        assert_eq!(f.first_scene.as_deref(), Some("store-1"));
        assert!(store.follower("demo", "sys").unwrap().is_none());
    }
}
