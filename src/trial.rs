//! Synthetic inbound messages for trying rules before they go live (the admin API's
//! simulate; the CLI's `simulate`), built exactly as the parser would build the real ones.

use crate::config::AccountKind;
use crate::protocol::{Event, ExternalContactChange, Inbound, InboundKind};

/// The events a trial can stand for, by the names rule files use.
pub const EVENTS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "scan",
    "click",
    "view",
    "enter_agent",
    "add_external_contact",
    "del_external_contact",
];

/// What to try: a text, or an event with its scene or key.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    pub from: Option<String>,
    pub text: Option<String>,
    pub event: Option<String>,
    pub scene: Option<String>,
    pub key: Option<String>,
}

pub const DEFAULT_FROM: &str = "o_simulated_follower";

impl Trial {
    /// The message WeChat would have delivered; `msg_id` makes each trial a new message.
    pub fn message(
        &self,
        kind: AccountKind,
        receive_id: &str,
        now: i64,
        msg_id: u64,
    ) -> Result<Inbound, String> {
        let from = self
            .from
            .clone()
            .unwrap_or_else(|| DEFAULT_FROM.to_string());
        let key = || self.key.clone().ok_or("this event needs a key (--key)");
        let inbound_kind = match self.event.as_deref() {
            None => InboundKind::Text {
                content: self
                    .text
                    .clone()
                    .ok_or("give the message text, or an event")?,
                msg_id,
            },
            Some(event) => InboundKind::Event(match event {
                "subscribe" => Event::Subscribe {
                    scene: self.scene.clone(),
                    ticket: None,
                },
                "unsubscribe" => Event::Unsubscribe,
                "scan" => Event::Scan {
                    scene: self.scene.clone().ok_or("scan needs a scene (--scene)")?,
                    ticket: None,
                },
                "click" => Event::Click { key: key()? },
                "view" => Event::View {
                    url: key()?,
                    menu_id: None,
                },
                "enter_agent" => Event::EnterAgent {
                    key: self.key.clone(),
                },
                "add_external_contact" | "del_external_contact" => {
                    if kind != AccountKind::Wecom {
                        return Err("external-contact events exist only for wecom accounts".into());
                    }
                    Event::ExternalContact {
                        change: if event == "add_external_contact" {
                            ExternalContactChange::Add
                        } else {
                            ExternalContactChange::Del
                        },
                        user_id: "simulated-staff".into(),
                        external_user_id: from.clone(),
                        state: self.scene.clone(),
                        welcome_code: None,
                    }
                }
                other => {
                    return Err(format!(
                        "unknown event `{other}` (one of: {})",
                        EVENTS.join(", ")
                    ))
                }
            }),
        };
        Ok(Inbound {
            to: receive_id.to_string(),
            from,
            create_time: now,
            agent_id: (kind == AccountKind::Wecom).then(|| "0".to_string()),
            kind: inbound_kind,
        })
    }
}
