//! Warnings about effects an account cannot deliver: a rule folder compiles alone, but
//! whether its follow-ups and WeCom welcomes ever leave depends on the account that reads
//! it, which the folder does not know. `siyu check` tells it ([`Reach`]) for each account.
//!
//! What needs WeChat's API (`[account.api]`), and so is silently never sent without it:
//! follow-ups (customer-service messages, official accounts only: WeCom has no
//! customer-service API, with or without `[account.api]`), and a WeCom contact's welcome
//! (a text reply to `add_external_contact`, which WeCom takes only through
//! `send_welcome_msg`, never as a passive reply). Tag changes need nothing: without the
//! API they stay local, which is what they are for first.
//!
//! Pure, like the rest of `rules`: the account comes in as a value.

use super::event::EventKind;
use super::render::{CouponField, Field};
use super::reply::ReplyTemplate;
use super::rule::{Rule, Trigger};
use super::{RuleTable, RuleWarning};

/// What an account reading a rule folder can send on its own, besides passive replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach<'a> {
    /// The account id, as the config names it.
    pub account: &'a str,
    /// A WeCom app (else an official account).
    pub wecom: bool,
    /// Whether it has `[account.api]` (or `SIYU_<ID>_APP_SECRET`).
    pub api: bool,
}

impl RuleTable {
    /// A warning for every rule with an effect `reach`'s account cannot deliver, at the
    /// rule's name, in file order.
    pub fn undeliverable(&self, reach: Reach<'_>) -> Vec<RuleWarning> {
        let id = reach.account;
        let mut warnings = Vec::new();
        for rule in &self.rules {
            let message = if rule.followups.is_empty() {
                None
            } else if reach.wecom {
                // The folder's own warnings already say so for WeCom events.
                (!wecom_event(rule)).then(|| {
                    format!(
                        "rule `{}` has follow-ups, but account `{id}` is a WeCom app, which has \
                         no customer-service API: they will never be sent / 企业微信应用 {id} \
                         没有客服消息接口，这些后续消息不会发送",
                        rule.name
                    )
                })
            } else if !reach.api {
                Some(format!(
                    "rule `{}` has follow-ups, but account `{id}` has no [account.api]: they will \
                     never be sent{} / 账号 {id} 没有配置 [account.api]，这些后续消息不会发送",
                    rule.name,
                    if coupon_only_in_followups(rule) {
                        ", and the coupon code they show is claimed all the same"
                    } else {
                        ""
                    }
                ))
            } else {
                None
            };
            warnings.extend(message.map(|m| self.at_rule(rule, m)));
            if reach.wecom && !reach.api && welcomes(rule) {
                let message = format!(
                    "rule `{}` welcomes new contacts, but account `{id}` has no [account.api]: \
                     WeCom takes a welcome only through send_welcome_msg, so it will never be \
                     sent / 账号 {id} 没有配置 [account.api]，欢迎语不会发送",
                    rule.name
                );
                warnings.push(self.at_rule(rule, message));
            }
        }
        warnings
    }

    fn at_rule(&self, rule: &Rule, message: String) -> RuleWarning {
        RuleWarning {
            file: self.files[rule.file].clone(),
            line: rule.at.line,
            column: rule.at.column,
            message,
        }
    }
}

/// A WeCom event rule, which the folder's own warnings cover (`followup_windows`).
fn wecom_event(rule: &Rule) -> bool {
    matches!(
        rule.trigger,
        Trigger::Event {
            kind: EventKind::EnterAgent | EventKind::AddExternalContact,
            ..
        }
    )
}

/// A rule whose text reply to a new WeCom contact becomes a `send_welcome_msg` call.
fn welcomes(rule: &Rule) -> bool {
    matches!(
        rule.trigger,
        Trigger::Event {
            kind: EventKind::AddExternalContact,
            ..
        }
    ) && matches!(rule.reply, Some(ReplyTemplate::Text(_)))
}

/// A rule that issues a coupon and shows its code in follow-ups but not in its reply.
fn coupon_only_in_followups(rule: &Rule) -> bool {
    let shows_code = |templates: Vec<&super::render::Template>| {
        templates.into_iter().any(|t| {
            t.placeholders()
                .any(|(p, _)| p.field == Field::Coupon(CouponField::Code))
        })
    };
    let in_reply = rule
        .reply
        .as_ref()
        .is_some_and(|r| shows_code(r.templates()));
    let in_followups = rule.followups.iter().any(|f| shows_code(f.templates()));
    rule.issue_coupon.is_some() && in_followups && !in_reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSource;

    const RULES: &str = "\
[[rule]]
name = \"price\"
keywords = \"价格\"
reply = \"茶单\"
followups = [{ after = 3, text = \"今天的招牌\" }]

[[rule]]
name = \"claim\"
keywords = \"领券\"
issue_coupon = \"new-guest\"
reply = \"券码稍后发给你\"
followups = [{ text = \"{coupon.code}\" }]

[[rule]]
name = \"wecom-welcome\"
event = \"add_external_contact\"
reply = \"欢迎\"

[[rule]]
name = \"tags-only\"
keywords = \"vip\"
add_tags = [\"vip\"]
";

    /// (case, the account, every warning expected as (`file:line:column`, a fragment)).
    type Case<'a> = (&'a str, Reach<'a>, Vec<(&'a str, &'a str)>);

    #[test]
    fn cases() {
        let table = RuleTable::compile(
            &[RuleSource {
                name: "r/a.toml".into(),
                text: RULES.into(),
            }],
            &crate::rules::RuleContext::with_coupon_batches(["new-guest"]),
        )
        .unwrap_or_else(|e| panic!("compile:\n{e}"));
        let reach = |account, wecom, api| Reach {
            account,
            wecom,
            api,
        };
        let cases: Vec<Case> = vec![
            (
                "official account without the API: follow-ups never leave",
                reach("demo", false, false),
                vec![
                    (
                        "r/a.toml:2:8",
                        "rule `price` has follow-ups, but account `demo` has no [account.api]: \
                         they will never be sent / 账号 demo 没有配置 [account.api]，这些后续消息不会发送",
                    ),
                    (
                        "r/a.toml:8:8",
                        "rule `claim` has follow-ups, but account `demo` has no [account.api]: \
                         they will never be sent, and the coupon code they show is claimed all the same",
                    ),
                ],
            ),
            (
                "official account with the API: everything is delivered",
                reach("demo", false, true),
                vec![],
            ),
            (
                "WeCom app with the API: no customer-service API for follow-ups",
                reach("corp", true, true),
                vec![
                    ("r/a.toml:2:8", "account `corp` is a WeCom app, which has no customer-service API"),
                    ("r/a.toml:8:8", "企业微信应用 corp 没有客服消息接口"),
                ],
            ),
            (
                "WeCom app without the API: and no welcome either",
                reach("corp", true, false),
                vec![
                    ("r/a.toml:2:8", "rule `price` has follow-ups, but account `corp` is a WeCom app"),
                    ("r/a.toml:8:8", "rule `claim` has follow-ups"),
                    (
                        "r/a.toml:15:8",
                        "rule `wecom-welcome` welcomes new contacts, but account `corp` has no \
                         [account.api]: WeCom takes a welcome only through send_welcome_msg, so it \
                         will never be sent / 账号 corp 没有配置 [account.api]，欢迎语不会发送",
                    ),
                ],
            ),
        ];
        for (name, reach, expected) in cases {
            let found = table.undeliverable(reach);
            let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
            assert_eq!(found.len(), expected.len(), "{name}: {shown:#?}");
            for (w, (at, fragment)) in found.iter().zip(&expected) {
                assert_eq!(
                    format!("{}:{}:{}", w.file, w.line, w.column),
                    *at,
                    "{name}: {w}"
                );
                assert!(w.message.contains(fragment), "{name}: {w}");
            }
        }
    }
}
