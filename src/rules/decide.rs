//! Deciding one message: order the candidates, check conditions, fire, follow `continue`.
//!
//! Candidates come from the indexes (`matcher.rs`) and are tried by priority (higher
//! first), then specificity, then declaration order; default rules follow, for messages
//! only. A fired rule's actions are applied to the follower at once, so the conditions of
//! later rules and the rendered reply see them. The reply and every fired rule's
//! follow-ups are rendered last, against the follower after every fired rule's actions.

use std::cmp::Reverse;

use super::action::Action;
use super::event::{event_key, event_scene, EventKind};
use super::followup::FollowUp;
use super::matcher::Candidate;
use super::normalise::normalise;
use super::render::{Context, CouponView};
use super::rule::Rule;
use super::RuleTable;
use crate::follower::Follower;
use crate::protocol::{Inbound, InboundKind, Reply};

/// What the table decided for one message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Names of the rules that fired, in order.
    pub rules: Vec<String>,
    /// `None`: answer nothing (the server replies `success`).
    pub reply: Option<Reply>,
    /// The actions applied to the follower, rendered, in order.
    pub actions: Vec<Action>,
    /// Messages to send after the reply through the customer-service API: the follow-ups
    /// of every fired rule, in firing order, then each rule's own order.
    pub followups: Vec<FollowUp>,
    /// The batch a coupon was issued from, if one was.
    pub coupon: Option<String>,
}

/// `decide` without a store: shows where a code would go.
fn preview_coupon(batch: &str) -> CouponView {
    CouponView {
        code: "COUPONCODE".into(),
        title: batch.into(),
        value: String::new(),
        expires: String::new(),
        refused: String::new(),
    }
}

impl RuleTable {
    /// Decides what to do with `msg`: applies the fired rules' actions to `follower` (an
    /// in-memory change; storing it is the caller's job) and renders the reply and the
    /// follow-ups against the follower after those actions. `seed` picks among text
    /// variants (`seed % n`), the reply's and the follow-ups' alike.
    pub fn decide(&self, msg: &Inbound, follower: &mut Follower, seed: u64) -> Decision {
        self.decide_with(msg, follower, seed, &mut preview_coupon)
    }

    /// [`decide`](Self::decide), issuing coupons through `issue`: called with the batch
    /// name of the first fired rule with `issue_coupon` (once per decision), it returns the
    /// issued code, or why there is none (`refused`), for `{coupon.…}` and
    /// `coupon_refused`.
    pub fn decide_with(
        &self,
        msg: &Inbound,
        follower: &mut Follower,
        seed: u64,
        issue: &mut dyn FnMut(&str) -> CouponView,
    ) -> Decision {
        let normalised = msg.text().map(normalise);
        let event = match &msg.kind {
            InboundKind::Event(event) => Some(event),
            _ => None,
        };
        let mut candidates = match (event, &normalised) {
            (Some(event), _) => match EventKind::of(event) {
                Some((kind, value)) => self.events.candidates(kind, value),
                None => Vec::new(),
            },
            (None, Some(text)) => self.text.candidates(text),
            (None, None) => Vec::new(),
        };
        candidates.sort_by_key(|c| {
            (
                Reverse(self.rules[c.rule].priority),
                Reverse(c.specificity),
                c.rule,
            )
        });
        if event.is_none() {
            let defaults = self.defaults.iter().map(|&rule| Candidate {
                rule,
                specificity: 0,
                regex: None,
            });
            candidates.extend(defaults);
        }

        let base = Context {
            content: msg.text().unwrap_or(""),
            scene: event.and_then(event_scene),
            event_key: event.and_then(event_key).unwrap_or(""),
            captures: &[],
            coupon: None,
        };
        let mut decision = Decision::default();
        let mut coupon: Option<CouponView> = None;
        // The fired rules with something to render at the end (the reply's, and any with
        // follow-ups), with their captures; which one gives the reply.
        let mut to_render: Vec<(&Rule, Vec<String>)> = Vec::new();
        let mut reply_from: Option<usize> = None;
        for candidate in candidates {
            let rule = &self.rules[candidate.rule];
            let conditions_hold = rule.if_tags.iter().all(|t| follower.has_tag(t))
                && !rule.unless_tags.iter().any(|t| follower.has_tag(t))
                && rule
                    .when
                    .as_ref()
                    .is_none_or(|w| w.matches(follower, msg.create_time));
            if !conditions_hold {
                continue;
            }
            // Captures only when a template of this rule asks for them: most rules don't,
            // and the set already told us which regex matched.
            let captures = match (rule.uses_captures, candidate.regex, &normalised) {
                (true, Some(regex), Some(text)) => self.text.captures(regex, text),
                _ => Vec::new(),
            };
            let ctx = Context {
                captures: &captures,
                ..base
            };
            rule.actions.apply(&ctx, follower, &mut decision.actions);
            decision.rules.push(rule.name.clone());
            if let (None, Some(batch)) = (&coupon, &rule.issue_coupon) {
                let issued = issue(batch);
                decision.coupon = Some(batch.clone()).filter(|_| issued.refused.is_empty());
                coupon = Some(issued);
            }
            let gives_reply = reply_from.is_none() && rule.reply.is_some();
            if gives_reply {
                reply_from = Some(to_render.len());
            }
            if gives_reply || !rule.followups.is_empty() {
                to_render.push((rule, captures));
            }
            if !rule.continues {
                break;
            }
        }
        // Automatic tags see the follower as the message and the fired rules left them.
        let (added, removed) = self.autotag(follower, msg.create_time);
        let auto = |add: bool| move |tag: String| Action::AutoTag { tag, add };
        decision.actions.extend(added.into_iter().map(auto(true)));
        decision
            .actions
            .extend(removed.into_iter().map(auto(false)));
        let follower = &*follower;
        let refused = coupon.as_ref().is_some_and(|c| !c.refused.is_empty());
        let base = Context {
            coupon: coupon.as_ref(),
            ..base
        };
        for (i, (rule, captures)) in to_render.iter().enumerate() {
            let ctx = Context { captures, ..base };
            if reply_from == Some(i) {
                decision.reply = match (&rule.coupon_refused, refused) {
                    (Some(t), true) if rule.issue_coupon.is_some() => Some(Reply::Text {
                        content: t.render(&ctx, follower),
                    }),
                    _ => rule.reply.as_ref().map(|t| t.render(&ctx, follower, seed)),
                };
            }
            let followups = rule.followups.iter();
            decision
                .followups
                .extend(followups.map(|f| f.render(&ctx, follower, seed)));
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::follower::SceneVisit;
    use crate::protocol::{Event, ExternalContactChange};
    use crate::rules::{RuleContext, RuleSource};

    fn table(files: &[(&str, &str)]) -> RuleTable {
        let sources: Vec<RuleSource> = files
            .iter()
            .map(|(name, text)| RuleSource {
                name: name.to_string(),
                text: text.to_string(),
            })
            .collect();
        RuleTable::compile(&sources, &RuleContext::default())
            .unwrap_or_else(|e| panic!("compile:\n{e}"))
    }

    fn inbound(kind: InboundKind) -> Inbound {
        Inbound {
            to: "gh_1".into(),
            from: "o1".into(),
            create_time: 1,
            agent_id: None,
            kind,
        }
    }

    fn text(content: &str) -> Inbound {
        inbound(InboundKind::Text {
            content: content.into(),
            msg_id: 7,
        })
    }

    fn event(event: Event) -> Inbound {
        inbound(InboundKind::Event(event))
    }

    #[test]
    fn a_when_condition_gates_a_rule_on_the_followers_state() {
        let t = table(&[(
            "a.toml",
            r#"
[[rule]]
name = "buyers"
keywords = ["优惠"]
when = "counter.orders >= 1 AND NOT tag:vip"
reply = "老客专享"

[[rule]]
name = "everyone"
keywords = ["优惠"]
reply = "新客礼"
"#,
        )]);
        let mut f = follower(&[]);
        assert_eq!(shown(&t.decide(&text("优惠"), &mut f, 1)), "新客礼");
        f.counters.insert("orders".into(), 2);
        assert_eq!(shown(&t.decide(&text("优惠"), &mut f, 1)), "老客专享");
        f.tags.insert("vip".into());
        assert_eq!(shown(&t.decide(&text("优惠"), &mut f, 1)), "新客礼");
    }

    #[test]
    fn autotags_follow_the_followers_state_in_the_same_decision() {
        let t = table(&[(
            "a.toml",
            r#"
[[rule]]
name = "coupon-question"
keywords = ["券"]
incr = { coupon_asks = 1 }
reply = "领券"

[[autotag]]
tag = "coupon-hunter"
when = "counter.coupon_asks >= 3"

[[autotag]]
tag = "chatty"
when = "messages_in >= 2"
remove = true
"#,
        )]);
        let mut f = follower(&[]);
        for ask in 1..=3 {
            f.messages_in = ask;
            let d = t.decide(&text("券"), &mut f, 1);
            let autos: Vec<String> = d
                .actions
                .iter()
                .filter(|a| matches!(a, Action::AutoTag { .. }))
                .map(ToString::to_string)
                .collect();
            match ask {
                1 => assert!(autos.is_empty(), "{autos:?}"),
                2 => assert_eq!(autos, ["autotag +chatty"]),
                _ => assert_eq!(autos, ["autotag +coupon-hunter"], "the third question"),
            }
        }
        assert!(f.has_tag("coupon-hunter") && f.has_tag("chatty"));
        // `remove = true`: off again once the condition stops holding; the other stays.
        f.messages_in = 0;
        f.counters.clear();
        let d = t.decide(&text("别的"), &mut f, 1);
        assert!(d.actions.contains(&Action::AutoTag {
            tag: "chatty".into(),
            add: false
        }));
        assert!(!f.has_tag("chatty") && f.has_tag("coupon-hunter"));
    }

    fn follower(tags: &[&str]) -> Follower {
        let mut f = Follower::new("o1");
        f.tags.extend(tags.iter().map(|t| t.to_string()));
        f
    }

    /// The reply's text, or "-" for no reply.
    fn shown(d: &Decision) -> String {
        match &d.reply {
            None => "-".into(),
            Some(Reply::Text { content }) => content.clone(),
            Some(other) => format!("{other:?}"),
        }
    }

    const ORDERING: &str = r#"
[[rule]]
name = "contains-coupon"
keywords = ["coupon"]
match = "contains"
reply = "contains"

[[rule]]
name = "exact-coupon"
keywords = ["coupon"]
reply = "exact"

[[rule]]
name = "prefix-coupon"
keywords = ["coupon"]
match = "prefix"
reply = "prefix"

[[rule]]
name = "exact-urgent"
keywords = ["urgent coupon"]
reply = "exact urgent"

[[rule]]
name = "urgent-regex"
priority = 5
regex = "^urgent"
reply = "urgent"

[[rule]]
name = "first-hello"
keywords = ["hello"]
reply = "first"

[[rule]]
name = "second-hello"
keywords = ["hello"]
reply = "second"

[[rule]]
name = "tag-vip"
keywords = ["vip"]
match = "prefix"
add_tags = ["vip"]
incr = { vip_asks = 1 }
continue = true

[[rule]]
name = "count-vip"
keywords = ["vip"]
match = "contains"
reply = "counted {counter.vip_asks}, tags {tags}"
continue = true

[[rule]]
name = "vip-answer"
keywords = ["vip"]
match = "contains"
if_tag = ["vip"]
add_tags = ["answered"]
reply = "vip answer"

[[rule]]
name = "member-menu"
priority = 1
keywords = ["menu"]
if_tag = ["member"]
reply = "member menu"

[[rule]]
name = "public-menu"
keywords = ["menu"]
unless_tag = ["blocked"]
reply = "public menu"

[[rule]]
name = "note-thanks"
keywords = ["thanks"]
match = "contains"
add_tags = ["polite"]
continue = true

[[rule]]
name = "silence"
keywords = ["stop"]

[[rule]]
name = "fallback"
default = true
reply = "fallback"

[[rule]]
name = "greeting-event"
event = "subscribe"
reply = "welcome"
"#;

    /// A case: name, message, the follower's tags, the rules expected to fire, the reply.
    type Case<'a> = (&'a str, Inbound, &'a [&'a str], &'a [&'a str], &'a str);

    #[test]
    fn ordering() {
        let table = table(&[("replies/ordering.toml", ORDERING)]);
        let cases: Vec<Case> = vec![
            (
                "exact beats prefix and contains at equal priority",
                text("Coupon!"),
                &[],
                &["exact-coupon"],
                "exact",
            ),
            (
                "prefix beats contains",
                text("coupon please"),
                &[],
                &["prefix-coupon"],
                "prefix",
            ),
            (
                "contains when nothing more specific",
                text("a coupon"),
                &[],
                &["contains-coupon"],
                "contains",
            ),
            (
                "priority beats specificity",
                text("urgent coupon"),
                &[],
                &["urgent-regex"],
                "urgent",
            ),
            (
                "declaration order breaks ties",
                text("hello"),
                &[],
                &["first-hello"],
                "first",
            ),
            (
                "continue chains actions; the first reply wins, rendered after all actions",
                text("VIP"),
                &[],
                &["tag-vip", "count-vip", "vip-answer"],
                "counted 1, tags answered, vip",
            ),
            (
                "conditions skip to the next candidate",
                text("menu"),
                &[],
                &["public-menu"],
                "public menu",
            ),
            (
                "if_tag holds",
                text("menu"),
                &["member"],
                &["member-menu"],
                "member menu",
            ),
            (
                "unless_tag skips, then the default",
                text("menu"),
                &["blocked"],
                &["fallback"],
                "fallback",
            ),
            (
                "default when nothing matched",
                text("随便聊聊"),
                &[],
                &["fallback"],
                "fallback",
            ),
            (
                "default after continue rules only",
                text("many thanks"),
                &[],
                &["note-thanks", "fallback"],
                "fallback",
            ),
            (
                "a rule without reply silences the default",
                text("stop"),
                &[],
                &["silence"],
                "-",
            ),
            (
                "default for a non-text message",
                inbound(InboundKind::Image {
                    pic_url: "u".into(),
                    media_id: "m".into(),
                    msg_id: 1,
                }),
                &[],
                &["fallback"],
                "fallback",
            ),
            (
                "voice recognition is text",
                inbound(InboundKind::Voice {
                    media_id: "m".into(),
                    format: "amr".into(),
                    recognition: Some("coupon。".into()),
                    msg_id: 1,
                }),
                &[],
                &["exact-coupon"],
                "exact",
            ),
            (
                "never a default for an event",
                event(Event::Click { key: "X".into() }),
                &[],
                &[],
                "-",
            ),
            (
                "event rule",
                event(Event::Subscribe {
                    scene: None,
                    ticket: None,
                }),
                &[],
                &["greeting-event"],
                "welcome",
            ),
        ];
        for (name, msg, tags, rules, reply) in cases {
            let mut f = follower(tags);
            let d = table.decide(&msg, &mut f, 0);
            assert_eq!(d.rules, rules, "{name}");
            assert_eq!(shown(&d), reply, "{name}");
        }
    }

    #[test]
    fn continue_applies_actions_in_rule_order() {
        let table = table(&[("replies/ordering.toml", ORDERING)]);
        let mut f = follower(&[]);
        let d = table.decide(&text("vip"), &mut f, 0);
        let actions: Vec<String> = d.actions.iter().map(ToString::to_string).collect();
        assert_eq!(
            actions,
            ["add tag vip", "counter vip_asks += 1", "add tag answered"]
        );
        assert!(f.has_tag("vip") && f.has_tag("answered"));
    }

    const EVENTS: &str = r#"
[[rule]]
name = "welcome"
event = "subscribe"
reply = "welcome {scene}"

[[rule]]
name = "welcome-spring"
event = "subscribe"
scene = "spring-poster"
add_tags = ["channel-spring"]
reply = "spring welcome"

[[rule]]
name = "welcome-any-scene"
event = "subscribe"
scene = "*"
reply = "scene welcome {scene}"

[[rule]]
name = "scan"
event = "scan"
reply = "scanned {event_key}"

[[rule]]
name = "bye"
event = "unsubscribe"
add_tags = ["churned"]

[[rule]]
name = "coupon-menu"
event = "click"
key = ["MENU_COUPON", "MENU_COUPON_2"]
reply = "coupon menu"

[[rule]]
name = "any-click"
event = "click"
reply = "clicked {event_key}"

[[rule]]
name = "view"
event = "view"
key = "https://shop.example/"
set = { last_view = "{event_key}" }

[[rule]]
name = "location"
event = "location"
set = { located = "yes" }

[[rule]]
name = "scancode"
event = "scancode"
reply = "code"

[[rule]]
name = "agent"
event = "enter_agent"
reply = "agent"

[[rule]]
name = "wecom-add"
event = "add_external_contact"
scene = "store-7"
reply = "store 7 welcome"

[[rule]]
name = "wecom-del"
event = "del_external_contact"
add_tags = ["wecom-lost"]

[[rule]]
name = "template-done"
event = "template_finish"
incr = { templates = 1 }

[[rule]]
name = "mass-done"
event = "mass_finish"
incr = { mass = 1 }
"#;

    #[test]
    fn events() {
        let table = table(&[("replies/events.toml", EVENTS)]);
        let s = |v: &str| v.to_string();
        let sub = |scene: Option<&str>| Event::Subscribe {
            scene: scene.map(s),
            ticket: None,
        };
        let contact = |change, state: Option<&str>| Event::ExternalContact {
            change,
            user_id: s("staff"),
            external_user_id: s("wm1"),
            state: state.map(s),
            welcome_code: None,
        };
        let cases: Vec<(&str, Event, &[&str], &str)> = vec![
            (
                "scene filter matches",
                sub(Some("spring-poster")),
                &["welcome-spring"],
                "spring welcome",
            ),
            (
                "other scene: the \"*\" rule",
                sub(Some("summer")),
                &["welcome-any-scene"],
                "scene welcome summer",
            ),
            (
                "no scene: the unfiltered rule",
                sub(None),
                &["welcome"],
                "welcome ",
            ),
            (
                "empty scene counts as none",
                sub(Some("")),
                &["welcome"],
                "welcome ",
            ),
            (
                "scan",
                Event::Scan {
                    scene: s("42"),
                    ticket: None,
                },
                &["scan"],
                "scanned 42",
            ),
            (
                "unsubscribe acts without reply",
                Event::Unsubscribe,
                &["bye"],
                "-",
            ),
            (
                "click key",
                Event::Click {
                    key: s("MENU_COUPON_2"),
                },
                &["coupon-menu"],
                "coupon menu",
            ),
            (
                "other click key",
                Event::Click { key: s("MENU_X") },
                &["any-click"],
                "clicked MENU_X",
            ),
            (
                "view url as key",
                Event::View {
                    url: s("https://shop.example/"),
                    menu_id: None,
                },
                &["view"],
                "-",
            ),
            (
                "other view url",
                Event::View {
                    url: s("https://other/"),
                    menu_id: None,
                },
                &[],
                "-",
            ),
            (
                "location",
                Event::ReportLocation {
                    latitude: 1.0,
                    longitude: 2.0,
                    precision: 3.0,
                },
                &["location"],
                "-",
            ),
            (
                "scancode",
                Event::ScanCode {
                    wait: false,
                    key: s("S"),
                    scan_type: s("qrcode"),
                    scan_result: s("x"),
                },
                &["scancode"],
                "code",
            ),
            (
                "enter_agent",
                Event::EnterAgent { key: None },
                &["agent"],
                "agent",
            ),
            (
                "wecom add with state",
                contact(ExternalContactChange::Add, Some("store-7")),
                &["wecom-add"],
                "store 7 welcome",
            ),
            (
                "wecom add, other state",
                contact(ExternalContactChange::AddHalf, Some("store-8")),
                &[],
                "-",
            ),
            (
                "wecom delete",
                contact(ExternalContactChange::Del, None),
                &["wecom-del"],
                "-",
            ),
            (
                "template finish",
                Event::TemplateSendJobFinish {
                    msg_id: 1,
                    status: s("success"),
                },
                &["template-done"],
                "-",
            ),
            (
                "mass finish",
                Event::MassSendJobFinish {
                    msg_id: 1,
                    status: s("ok"),
                    total_count: 1,
                    filter_count: 1,
                    sent_count: 1,
                    error_count: 0,
                },
                &["mass-done"],
                "-",
            ),
            (
                "unmapped event",
                Event::Other {
                    event: s("x"),
                    key: None,
                },
                &[],
                "-",
            ),
        ];
        for (name, ev, rules, reply) in cases {
            let mut f = follower(&[]);
            let d = table.decide(&event(ev), &mut f, 0);
            assert_eq!(d.rules, rules, "{name}");
            assert_eq!(shown(&d), reply, "{name}");
        }

        let mut f = follower(&[]);
        table.decide(&event(sub(Some("spring-poster"))), &mut f, 0);
        assert!(f.has_tag("channel-spring"));
        table.decide(
            &event(Event::View {
                url: s("https://shop.example/"),
                menu_id: None,
            }),
            &mut f,
            0,
        );
        assert_eq!(f.attributes["last_view"], "https://shop.example/");
    }

    #[test]
    fn scene_placeholder_falls_back_to_the_follower() {
        let table = table(&[(
            "r.toml",
            "[[rule]]\nname = \"a\"\nkeywords = \"where\"\nreply = \"{scene}|{first_scene}\"\n",
        )]);
        let mut f = follower(&[]);
        f.first_scene = Some("poster".into());
        f.scenes.push(SceneVisit {
            scene: "store".into(),
            at: 1,
        });
        assert_eq!(
            shown(&table.decide(&text("where"), &mut f, 0)),
            "store|poster"
        );
    }

    #[test]
    fn intents_are_shared_across_rules_and_files() {
        let intents = r#"
[intents]
greeting = ["你好", "hello", "在吗"]
price = { phrases = ["多少钱", "价格"], match = "contains" }
"#;
        let rules = r#"
[[rule]]
name = "vip-greeting"
intent = "greeting"
if_tag = ["vip"]
reply = "贵宾您好"

[[rule]]
name = "greeting"
intent = ["greeting"]
reply = "您好"

[[rule]]
name = "price"
intent = "price"
reply = "价格表"

[[rule]]
name = "price-or-greeting"
priority = -1
intent = ["price", "greeting"]
reply = "never first"
"#;
        // The rules file sorts before the intents file: intents are global.
        let table = table(&[
            ("replies/b-intents.toml", intents),
            ("replies/a-rules.toml", rules),
        ]);
        let cases: Vec<(&str, &str, &[&str], &str)> = vec![
            (
                "exact phrase, first rule's condition fails",
                "在吗？",
                &[],
                "您好",
            ),
            (
                "same intent, condition holds",
                "Hello",
                &["vip"],
                "贵宾您好",
            ),
            ("contains phrase", "这个多少钱啊", &[], "价格表"),
            (
                "exact intent phrase does not match inside",
                "你好啊",
                &[],
                "-",
            ),
        ];
        for (name, msg, tags, reply) in cases {
            let d = table.decide(&text(msg), &mut follower(tags), 0);
            assert_eq!(shown(&d), reply, "{name}");
        }
    }

    #[test]
    fn regex_captures() {
        let rules = r#"
[[rule]]
name = "order"
regex = ["^订单\\s*(\\d+)$", "^order\\s*#?(\\d+)$"]
set = { last_order = "{match.1}" }
reply = "查询订单 {match.1}（{match.0}）"

[[rule]]
name = "order-keyword"
keywords = ["订单"]
regex = "^查单\\s*(\\d+)$"
reply = "[{match.1}]"
"#;
        let table = table(&[("r.toml", rules)]);
        let cases = [
            ("first regex", "订单 12345", "查询订单 12345（订单 12345）"),
            (
                "second regex, normalised text",
                "ORDER #77！",
                "查询订单 77（order #77）",
            ),
            ("keyword matched, no capture", "订单", "[]"),
            ("regex of a mixed rule", "查单 5", "[5]"),
        ];
        for (name, msg, reply) in cases {
            let mut f = follower(&[]);
            let d = table.decide(&text(msg), &mut f, 0);
            assert_eq!(shown(&d), reply, "{name}");
        }
        let mut f = follower(&[]);
        table.decide(&text("订单 9"), &mut f, 0);
        assert_eq!(f.attributes["last_order"], "9");
    }

    #[test]
    fn variants_by_seed() {
        let table = table(&[(
            "r.toml",
            "[[rule]]\nname = \"a\"\ndefault = true\nreply = [\"A\", \"B\", \"C\"]\n",
        )]);
        let picked: Vec<String> = (0..6)
            .map(|seed| shown(&table.decide(&text("x"), &mut follower(&[]), seed)))
            .collect();
        assert_eq!(picked, ["A", "B", "C", "A", "B", "C"]);
    }

    #[test]
    fn placeholders_render_after_actions() {
        let rules = r#"
[[rule]]
name = "checkin"
keywords = ["签到"]
incr = { checkin = 1 }
set = { last = "{content}", before = "{counter.checkin}" }
add_tags = ["active"]
reply = "{openid} 第{counter.checkin}次签到（{attr.last}，之前 {attr.before}，{tags}，共{messages_in}条）"
"#;
        let table = table(&[("r.toml", rules)]);
        let mut f = follower(&[]);
        f.counters.insert("checkin".into(), 2);
        f.messages_in = 5;
        let d = table.decide(&text("签到！"), &mut f, 0);
        // `set` renders before `incr` applies; the reply after everything.
        assert_eq!(shown(&d), "o1 第3次签到（签到！，之前 2，active，共5条）");
        assert_eq!(f.counters["checkin"], 3);
    }

    const FOLLOWUPS: &str = r#"
[[rule]]
name = "note"
keywords = "订单"
match = "contains"
add_tags = ["asked"]
continue = true
followups = [{ text = "note: {tags} {counter.orders}" }]

[[rule]]
name = "vip-only"
keywords = "订单"
match = "contains"
if_tag = ["vip"]
continue = true
followups = [{ after = 1, text = "vip" }]

[[rule]]
name = "order"
regex = "^订单\\s*(\\d+)$"
incr = { orders = 1 }
reply = "查询中 {match.1}"
followups = [
  { after = 2, text = ["A {match.1} 第{counter.orders}次 {openid}", "B {match.1}"] },
  { after = 5, news = [{ title = "订单 {match.1}", url = "https://x/o/{match.1}" }] },
]

[[rule]]
name = "order-help"
regex = "^订单"
followups = [{ text = "请附上订单号" }]

[[rule]]
name = "fallback"
default = true
followups = [{ after = 60, voice = "V_{openid}" }]
"#;

    /// A follow-up as `after:text`, or `after:kind …` for the other kinds.
    fn followups_shown(d: &Decision) -> Vec<String> {
        d.followups
            .iter()
            .map(|f| {
                let message = match &f.message {
                    Reply::Text { content } => content.clone(),
                    Reply::News { articles } => {
                        let a = &articles[0];
                        format!("news {} {}", a.title, a.url.as_deref().unwrap_or(""))
                    }
                    Reply::Voice { media_id } => format!("voice {media_id}"),
                    other => format!("{other:?}"),
                };
                format!("{}:{message}", f.after_secs)
            })
            .collect()
    }

    #[test]
    fn followups() {
        let table = table(&[("replies/followups.toml", FOLLOWUPS)]);
        // name, message, follower tags, seed, rules fired, reply, follow-ups.
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [&'a str],
            u64,
            &'a [&'a str],
            &'a str,
            &'a [&'a str],
        );
        let cases: Vec<Case> = vec![
            (
                "continue gathers every fired rule's follow-ups, in firing order, rendered after all actions",
                "订单 42",
                &[],
                0,
                &["note", "order"],
                "查询中 42",
                &["0:note: asked 1", "2:A 42 第1次 o1", "5:news 订单 42 https://x/o/42"],
            ),
            (
                "the seed picks the variant, as for replies",
                "订单 42",
                &[],
                1,
                &["note", "order"],
                "查询中 42",
                &["0:note: asked 1", "2:B 42", "5:news 订单 42 https://x/o/42"],
            ),
            (
                "a rule whose condition holds adds its own",
                "订单 7",
                &["vip"],
                0,
                &["note", "vip-only", "order"],
                "查询中 7",
                &["0:note: asked, vip 1", "1:vip", "2:A 7 第1次 o1", "5:news 订单 7 https://x/o/7"],
            ),
            (
                "follow-ups without a reply",
                "订单",
                &[],
                0,
                &["note", "order-help"],
                "-",
                &["0:note: asked 0", "0:请附上订单号"],
            ),
            (
                "a default rule's",
                "你好",
                &[],
                0,
                &["fallback"],
                "-",
                &["60:voice V_o1"],
            ),
        ];
        for (name, msg, tags, seed, rules, reply, followups) in cases {
            let d = table.decide(&text(msg), &mut follower(tags), seed);
            assert_eq!(d.rules, rules, "{name}");
            assert_eq!(shown(&d), reply, "{name}");
            assert_eq!(followups_shown(&d), followups, "{name}");
        }
        // Rules without follow-ups give none.
        let table = self::table(&[("replies/ordering.toml", ORDERING)]);
        let d = table.decide(&text("VIP"), &mut follower(&[]), 0);
        assert!(d.followups.is_empty(), "{d:?}");
    }

    /// Thousands of keyword rules: the indexes find the right one (correctness, not timing).
    #[test]
    fn five_thousand_keyword_rules() {
        let mut file = String::new();
        for i in 0..5000 {
            let kind = ["exact", "prefix", "contains"][i % 3];
            file.push_str(&format!(
                "[[rule]]\nname = \"r{i}\"\nkeywords = [\"kw{i}x\", \"关键词{i}号\"]\nmatch = \"{kind}\"\nreply = \"{i}\"\n\n"
            ));
        }
        file.push_str("[[rule]]\nname = \"fallback\"\ndefault = true\nreply = \"fallback\"\n");
        let table = table(&[("replies/many.toml", &file)]);
        assert_eq!(table.len(), 5001);
        assert_eq!(table.summary().keywords, 10_000);
        let cases = [
            ("exact, first", "kw0x", "0"),
            ("exact, last", "KW4998X", "4998"),
            ("exact needs the whole text", "kw0x!? no", "fallback"),
            ("prefix", "kw1x and more", "1"),
            ("prefix is not contains", "say kw1x", "fallback"),
            ("contains, CJK", "请问关键词4997号在哪", "4997"),
            ("kw1x (prefix) does not match kw14x", "kw14x", "14"),
            ("nothing", "kw5000x", "fallback"),
        ];
        for (name, msg, reply) in cases {
            assert_eq!(
                shown(&table.decide(&text(msg), &mut follower(&[]), 0)),
                reply,
                "{name}: {msg}"
            );
        }
    }
}
