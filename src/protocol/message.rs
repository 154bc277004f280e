//! Inbound messages and events, as WeChat and WeCom deliver them (protocol.md §5, §6).
//!
//! Pure data: built by the XML parser in `inbound.rs`, read by the rule engine. Unknown
//! message and event types land in `Other` variants and are never an error, because
//! WeChat adds types without notice and a callback must still be answered.

/// One decrypted, parsed callback: a message or an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// `ToUserName`: the official account's original id (gh_…) or the WeCom corp id.
    pub to: String,
    /// `FromUserName`: the follower's openid, or a WeCom member's UserID.
    pub from: String,
    /// `CreateTime`, seconds since the epoch.
    pub create_time: i64,
    /// `AgentID`, present on WeCom app callbacks only.
    pub agent_id: Option<String>,
    pub kind: InboundKind,
}

/// What the callback carries. Messages have a `msg_id`; events do not.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundKind {
    Text {
        content: String,
        msg_id: u64,
    },
    Image {
        pic_url: String,
        media_id: String,
        msg_id: u64,
    },
    Voice {
        media_id: String,
        format: String,
        /// Speech-to-text, when the account has it enabled.
        recognition: Option<String>,
        msg_id: u64,
    },
    /// `video` and `shortvideo` differ only in `MsgType`.
    Video {
        short: bool,
        media_id: String,
        thumb_media_id: String,
        msg_id: u64,
    },
    Location {
        latitude: f64,
        longitude: f64,
        scale: u32,
        label: String,
        msg_id: u64,
    },
    Link {
        title: String,
        description: String,
        url: String,
        msg_id: u64,
    },
    Event(Event),
    /// A message type this version does not know. Answered with `success`.
    Other {
        msg_type: String,
        msg_id: Option<u64>,
    },
}

/// Official-account and WeCom events.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A follow. `scene` is the parametric QR scene with the `qrscene_` prefix removed.
    Subscribe {
        scene: Option<String>,
        ticket: Option<String>,
    },
    Unsubscribe,
    /// An existing follower scanned a parametric QR code.
    Scan {
        scene: String,
        ticket: Option<String>,
    },
    /// Location reported on entering the chat (`LOCATION`).
    ReportLocation {
        latitude: f64,
        longitude: f64,
        precision: f64,
    },
    /// Custom-menu click (`CLICK`, WeCom `click`).
    Click {
        key: String,
    },
    /// Custom-menu link (`VIEW`, WeCom `view`).
    View {
        url: String,
        menu_id: Option<String>,
    },
    /// `scancode_push` (`wait == false`) and `scancode_waitmsg` (`wait == true`).
    ScanCode {
        wait: bool,
        key: String,
        scan_type: String,
        scan_result: String,
    },
    /// `pic_sysphoto`, `pic_photo_or_album`, `pic_weixin`.
    PicSelect {
        source: PicSource,
        key: String,
        count: u32,
        md5s: Vec<String>,
    },
    LocationSelect {
        key: String,
        latitude: f64,
        longitude: f64,
        scale: u32,
        label: String,
        poiname: Option<String>,
    },
    ViewMiniprogram {
        path: String,
        menu_id: Option<String>,
    },
    TemplateSendJobFinish {
        msg_id: u64,
        status: String,
    },
    MassSendJobFinish {
        msg_id: u64,
        status: String,
        total_count: u64,
        filter_count: u64,
        sent_count: u64,
        error_count: u64,
    },
    /// WeCom: a member opened the app.
    EnterAgent {
        key: Option<String>,
    },
    /// WeCom `change_external_contact`.
    ExternalContact {
        change: ExternalContactChange,
        /// The staff member's UserID.
        user_id: String,
        external_user_id: String,
        /// The "contact me" channel code's state: WeCom's twin of a QR scene.
        state: Option<String>,
        /// Valid 20 seconds, usable once, for `send_welcome_msg`.
        welcome_code: Option<String>,
    },
    /// WeCom `change_contact` (members and departments).
    Contact {
        change_type: String,
        user_id: Option<String>,
    },
    /// An event this version does not know.
    Other {
        event: String,
        key: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PicSource {
    SysPhoto,
    PhotoOrAlbum,
    Weixin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalContactChange {
    Add,
    AddHalf,
    Edit,
    Del,
    DelFollowUser,
    TransferFail,
    Other(String),
}

impl ExternalContactChange {
    /// The `ChangeType` as WeCom spells it.
    pub fn as_str(&self) -> &str {
        match self {
            ExternalContactChange::Add => "add_external_contact",
            ExternalContactChange::AddHalf => "add_half_external_contact",
            ExternalContactChange::Edit => "edit_external_contact",
            ExternalContactChange::Del => "del_external_contact",
            ExternalContactChange::DelFollowUser => "del_follow_user",
            ExternalContactChange::TransferFail => "transfer_fail",
            ExternalContactChange::Other(s) => s,
        }
    }
}

impl Inbound {
    /// The text rules match against: a text message's content, or a voice message's
    /// speech recognition when WeChat provides one.
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            InboundKind::Text { content, .. } => Some(content),
            InboundKind::Voice {
                recognition: Some(r),
                ..
            } => Some(r),
            _ => None,
        }
    }

    /// `text`, `image`, …, `event:subscribe`, or the unknown `MsgType`: for logs and history.
    pub fn type_name(&self) -> String {
        let name = match &self.kind {
            InboundKind::Text { .. } => "text",
            InboundKind::Image { .. } => "image",
            InboundKind::Voice { .. } => "voice",
            InboundKind::Video { short: false, .. } => "video",
            InboundKind::Video { short: true, .. } => "shortvideo",
            InboundKind::Location { .. } => "location",
            InboundKind::Link { .. } => "link",
            InboundKind::Event(e) => return format!("event:{}", e.name_and_key().0),
            InboundKind::Other { msg_type, .. } => msg_type,
        };
        name.to_string()
    }

    /// The key WeChat's retries share (protocol.md §6): `MsgId` for messages, and for
    /// events `FromUserName + CreateTime + Event + EventKey`, because several events of one
    /// follower can share a second. WeCom adds `AgentID`. The caller prefixes the account.
    pub fn dedupe_key(&self) -> String {
        let agent = self.agent_id.as_deref().unwrap_or("");
        match &self.kind {
            InboundKind::Text { msg_id, .. }
            | InboundKind::Image { msg_id, .. }
            | InboundKind::Voice { msg_id, .. }
            | InboundKind::Video { msg_id, .. }
            | InboundKind::Location { msg_id, .. }
            | InboundKind::Link { msg_id, .. }
            | InboundKind::Other {
                msg_id: Some(msg_id),
                ..
            } => {
                // MsgId alone has been seen to collide across followers (WxJava issues),
                // so the sender is part of the key. Written by hand: `format!` costs
                // several times more on every callback.
                let mut key = String::with_capacity(4 + agent.len() + self.from.len() + 20);
                for part in ["m:", agent, ":", &self.from, ":"] {
                    key.push_str(part);
                }
                push_decimal(&mut key, *msg_id);
                key
            }
            InboundKind::Other { msg_type, .. } => {
                format!("o:{agent}:{}:{}:{msg_type}", self.from, self.create_time)
            }
            InboundKind::Event(event) => {
                let (name, key) = event.name_and_key();
                format!(
                    "e:{agent}:{}:{}:{name}:{}",
                    self.from,
                    self.create_time,
                    key.unwrap_or("")
                )
            }
        }
    }
}

impl Event {
    /// The wire name of the event (as official accounts spell it) and its key, if any.
    pub fn name_and_key(&self) -> (&str, Option<&str>) {
        match self {
            Event::Subscribe { scene, .. } => ("subscribe", scene.as_deref()),
            Event::Unsubscribe => ("unsubscribe", None),
            Event::Scan { scene, .. } => ("SCAN", Some(scene)),
            Event::ReportLocation { .. } => ("LOCATION", None),
            Event::Click { key } => ("CLICK", Some(key)),
            Event::View { url, .. } => ("VIEW", Some(url)),
            Event::ScanCode { wait, key, .. } => (
                if *wait {
                    "scancode_waitmsg"
                } else {
                    "scancode_push"
                },
                Some(key),
            ),
            Event::PicSelect { source, key, .. } => (
                match source {
                    PicSource::SysPhoto => "pic_sysphoto",
                    PicSource::PhotoOrAlbum => "pic_photo_or_album",
                    PicSource::Weixin => "pic_weixin",
                },
                Some(key),
            ),
            Event::LocationSelect { key, .. } => ("location_select", Some(key)),
            Event::ViewMiniprogram { path, .. } => ("view_miniprogram", Some(path)),
            Event::TemplateSendJobFinish { .. } => ("TEMPLATESENDJOBFINISH", None),
            Event::MassSendJobFinish { .. } => ("MASSSENDJOBFINISH", None),
            Event::EnterAgent { key } => ("enter_agent", key.as_deref()),
            // The change type is the name: an add and a delete of one contact can share a
            // second, and must not share a dedupe key.
            Event::ExternalContact {
                change,
                external_user_id,
                ..
            } => (change.as_str(), Some(external_user_id)),
            Event::Contact { change_type, .. } => ("change_contact", Some(change_type)),
            Event::Other { event, key } => (event, key.as_deref()),
        }
    }
}

/// Appends `n` in decimal, as `{n}` would.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(change: ExternalContactChange) -> Inbound {
        Inbound {
            to: "corp".into(),
            from: "sys".into(),
            create_time: 1,
            agent_id: Some("218".into()),
            kind: InboundKind::Event(Event::ExternalContact {
                change,
                user_id: "staff".into(),
                external_user_id: "wmX".into(),
                state: None,
                welcome_code: None,
            }),
        }
    }

    fn text(from: &str, msg_id: u64) -> Inbound {
        Inbound {
            to: "gh".into(),
            from: from.into(),
            create_time: 1,
            agent_id: None,
            kind: InboundKind::Text {
                content: "x".into(),
                msg_id,
            },
        }
    }

    #[test]
    fn dedupe_keys_separate_what_must_not_collide() {
        let cases = [
            ("same msg id, two followers", text("a", 1), text("b", 1)),
            ("two msg ids, one follower", text("a", 1), text("a", 2)),
            (
                "add then delete in one second",
                contact(ExternalContactChange::Add),
                contact(ExternalContactChange::Del),
            ),
        ];
        for (name, x, y) in cases {
            assert_ne!(x.dedupe_key(), y.dedupe_key(), "{name}");
        }
        assert_eq!(text("a", 1).dedupe_key(), text("a", 1).dedupe_key());
    }

    /// Keys already stored (cached deliveries) must still match: the layout is fixed.
    #[test]
    fn message_keys_keep_their_layout() {
        for id in [0, 7, 10, 1_234_567_890_123, u64::MAX] {
            assert_eq!(text("o1", id).dedupe_key(), format!("m::o1:{id}"));
            let wecom = Inbound {
                agent_id: Some("218".into()),
                ..text("u", id)
            };
            assert_eq!(wecom.dedupe_key(), format!("m:218:u:{id}"));
        }
    }
}
