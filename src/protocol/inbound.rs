//! Inbound message XML (protocol.md §5, §6) → [`Inbound`].
//!
//! Reads the decrypted (or plaintext-mode) body through the shared flat reader in
//! `fields.rs`, then maps it by `MsgType` and `Event`. Only what identifies a callback is
//! required (`ToUserName`, `FromUserName`, `CreateTime`, `MsgType`, a message's `MsgId`, a
//! text's `Content`); everything else defaults, because a callback WeChat sends with one
//! field fewer must still be answered. Event names match case-insensitively: WeCom spells
//! `click`/`view` where official accounts spell `CLICK`/`VIEW`.

use std::fmt::Display;
use std::str::FromStr;

use super::error::ProtocolError;
use super::fields::Fields;
use super::message::{Event, ExternalContactChange, Inbound, InboundKind, PicSource};

/// Parses one inbound message or event.
pub fn parse_inbound(xml: &str) -> Result<Inbound, ProtocolError> {
    let mut f = Fields::parse(xml)?;
    let to = required_id(&mut f, "ToUserName")?;
    let from = required_id(&mut f, "FromUserName")?;
    let create_time =
        num::<i64>(&f, "CreateTime")?.ok_or(ProtocolError::MissingField("CreateTime"))?;
    let agent_id = opt(&mut f, "AgentID").map(trimmed);

    let msg_type = match f.get("MsgType").map(str::trim) {
        None | Some("") => return Err(ProtocolError::MissingField("MsgType")),
        Some(t) => MsgType::of(t),
    };
    let kind = match msg_type {
        MsgType::Text => InboundKind::Text {
            content: f
                .take("Content")
                .ok_or(ProtocolError::MissingField("Content"))?,
            msg_id: msg_id(&f)?,
        },
        MsgType::Image => InboundKind::Image {
            pic_url: text(&mut f, "PicUrl"),
            media_id: text(&mut f, "MediaId"),
            msg_id: msg_id(&f)?,
        },
        MsgType::Voice => InboundKind::Voice {
            media_id: text(&mut f, "MediaId"),
            format: text(&mut f, "Format"),
            recognition: opt(&mut f, "Recognition"),
            msg_id: msg_id(&f)?,
        },
        MsgType::Video { short } => InboundKind::Video {
            short,
            media_id: text(&mut f, "MediaId"),
            thumb_media_id: text(&mut f, "ThumbMediaId"),
            msg_id: msg_id(&f)?,
        },
        MsgType::Location => InboundKind::Location {
            latitude: float(&f, "Location_X")?,
            longitude: float(&f, "Location_Y")?,
            scale: num_or_zero(&f, "Scale")?,
            label: text(&mut f, "Label"),
            msg_id: msg_id(&f)?,
        },
        MsgType::Link => InboundKind::Link {
            title: text(&mut f, "Title"),
            description: text(&mut f, "Description"),
            url: text(&mut f, "Url"),
            msg_id: msg_id(&f)?,
        },
        MsgType::Event => InboundKind::Event(parse_event(&mut f)?),
        MsgType::Other(msg_type) => InboundKind::Other {
            msg_type,
            msg_id: num(&f, "MsgId")?,
        },
    };
    Ok(Inbound {
        to,
        from,
        create_time,
        agent_id,
        kind,
    })
}

enum MsgType {
    Text,
    Image,
    Voice,
    Video { short: bool },
    Location,
    Link,
    Event,
    Other(String),
}

impl MsgType {
    fn of(t: &str) -> MsgType {
        let is = |name: &str| t.eq_ignore_ascii_case(name);
        if is("text") {
            MsgType::Text
        } else if is("image") {
            MsgType::Image
        } else if is("voice") {
            MsgType::Voice
        } else if is("video") {
            MsgType::Video { short: false }
        } else if is("shortvideo") {
            MsgType::Video { short: true }
        } else if is("location") {
            MsgType::Location
        } else if is("link") {
            MsgType::Link
        } else if is("event") {
            MsgType::Event
        } else {
            MsgType::Other(t.to_owned())
        }
    }
}

/// The events this version knows, by wire name.
#[derive(Clone, Copy)]
enum EventName {
    Subscribe,
    Unsubscribe,
    Scan,
    Location,
    Click,
    View,
    ScanCode { wait: bool },
    Pic(PicSource),
    LocationSelect,
    ViewMiniprogram,
    TemplateSendJobFinish,
    MassSendJobFinish,
    EnterAgent,
    ChangeExternalContact,
    ChangeContact,
}

/// Matched case-insensitively (WeCom's `click` is official `CLICK`).
const EVENT_NAMES: [(&str, EventName); 18] = [
    ("subscribe", EventName::Subscribe),
    ("unsubscribe", EventName::Unsubscribe),
    ("SCAN", EventName::Scan),
    ("LOCATION", EventName::Location),
    ("CLICK", EventName::Click),
    ("VIEW", EventName::View),
    ("scancode_push", EventName::ScanCode { wait: false }),
    ("scancode_waitmsg", EventName::ScanCode { wait: true }),
    ("pic_sysphoto", EventName::Pic(PicSource::SysPhoto)),
    (
        "pic_photo_or_album",
        EventName::Pic(PicSource::PhotoOrAlbum),
    ),
    ("pic_weixin", EventName::Pic(PicSource::Weixin)),
    ("location_select", EventName::LocationSelect),
    ("view_miniprogram", EventName::ViewMiniprogram),
    ("TEMPLATESENDJOBFINISH", EventName::TemplateSendJobFinish),
    ("MASSSENDJOBFINISH", EventName::MassSendJobFinish),
    ("enter_agent", EventName::EnterAgent),
    ("change_external_contact", EventName::ChangeExternalContact),
    ("change_contact", EventName::ChangeContact),
];

fn parse_event(f: &mut Fields<'_>) -> Result<Event, ProtocolError> {
    let raw = f.get("Event").map(str::trim).unwrap_or("");
    if raw.is_empty() {
        return Err(ProtocolError::MissingField("Event"));
    }
    let known = EVENT_NAMES
        .iter()
        .find(|(name, _)| raw.eq_ignore_ascii_case(name))
        .map(|&(_, e)| e);
    let Some(name) = known else {
        let event = raw.to_owned();
        return Ok(Event::Other {
            event,
            key: opt(f, "EventKey"),
        });
    };

    Ok(match name {
        EventName::Subscribe => Event::Subscribe {
            // A plain follow has no EventKey or an empty one; a parametric QR's is
            // `qrscene_<scene>`.
            scene: f
                .get("EventKey")
                .and_then(|k| k.strip_prefix("qrscene_"))
                .filter(|scene| !scene.is_empty())
                .map(str::to_owned),
            ticket: opt(f, "Ticket"),
        },
        EventName::Unsubscribe => Event::Unsubscribe,
        EventName::Scan => Event::Scan {
            scene: text(f, "EventKey"),
            ticket: opt(f, "Ticket"),
        },
        EventName::Location => Event::ReportLocation {
            latitude: float(f, "Latitude")?,
            longitude: float(f, "Longitude")?,
            precision: float(f, "Precision")?,
        },
        EventName::Click => Event::Click {
            key: text(f, "EventKey"),
        },
        EventName::View => Event::View {
            url: text(f, "EventKey"),
            menu_id: opt(f, "MenuId"),
        },
        EventName::ScanCode { wait } => Event::ScanCode {
            wait,
            key: text(f, "EventKey"),
            scan_type: text(f, "ScanCodeInfo/ScanType"),
            scan_result: text(f, "ScanCodeInfo/ScanResult"),
        },
        EventName::Pic(source) => Event::PicSelect {
            source,
            key: text(f, "EventKey"),
            count: num_or_zero(f, "SendPicsInfo/Count")?,
            md5s: f
                .all("SendPicsInfo/PicList/item/PicMd5Sum")
                .map(str::to_owned)
                .collect(),
        },
        EventName::LocationSelect => Event::LocationSelect {
            key: text(f, "EventKey"),
            latitude: float(f, "SendLocationInfo/Location_X")?,
            longitude: float(f, "SendLocationInfo/Location_Y")?,
            scale: num_or_zero(f, "SendLocationInfo/Scale")?,
            label: text(f, "SendLocationInfo/Label"),
            poiname: opt(f, "SendLocationInfo/Poiname"),
        },
        EventName::ViewMiniprogram => Event::ViewMiniprogram {
            path: text(f, "EventKey"),
            menu_id: opt(f, "MenuId"),
        },
        EventName::TemplateSendJobFinish => Event::TemplateSendJobFinish {
            msg_id: job_msg_id(f)?,
            status: text(f, "Status"),
        },
        EventName::MassSendJobFinish => Event::MassSendJobFinish {
            msg_id: job_msg_id(f)?,
            status: text(f, "Status"),
            total_count: num_or_zero(f, "TotalCount")?,
            filter_count: num_or_zero(f, "FilterCount")?,
            sent_count: num_or_zero(f, "SentCount")?,
            error_count: num_or_zero(f, "ErrorCount")?,
        },
        EventName::EnterAgent => Event::EnterAgent {
            key: opt(f, "EventKey"),
        },
        EventName::ChangeExternalContact => Event::ExternalContact {
            change: external_change(f.get("ChangeType").map(str::trim).unwrap_or("")),
            user_id: text(f, "UserID"),
            external_user_id: text(f, "ExternalUserID"),
            state: opt(f, "State"),
            welcome_code: opt(f, "WelcomeCode"),
        },
        EventName::ChangeContact => Event::Contact {
            change_type: text(f, "ChangeType").trim().to_owned(),
            user_id: opt(f, "UserID"),
        },
    })
}

fn external_change(change: &str) -> ExternalContactChange {
    let is = |name: &str| change.eq_ignore_ascii_case(name);
    if is("add_external_contact") {
        ExternalContactChange::Add
    } else if is("add_half_external_contact") {
        ExternalContactChange::AddHalf
    } else if is("edit_external_contact") {
        ExternalContactChange::Edit
    } else if is("del_external_contact") {
        ExternalContactChange::Del
    } else if is("del_follow_user") {
        ExternalContactChange::DelFollowUser
    } else if is("transfer_fail") {
        ExternalContactChange::TransferFail
    } else {
        ExternalContactChange::Other(change.to_owned())
    }
}

/// Ids never carry meaningful surrounding whitespace; an empty one is as good as absent.
fn required_id(f: &mut Fields<'_>, name: &'static str) -> Result<String, ProtocolError> {
    opt(f, name)
        .map(trimmed)
        .filter(|id| !id.is_empty())
        .ok_or(ProtocolError::MissingField(name))
}

fn trimmed(s: String) -> String {
    if s.trim().len() == s.len() {
        s
    } else {
        s.trim().to_owned()
    }
}

/// The element's text, or empty when absent.
fn text(f: &mut Fields<'_>, name: &str) -> String {
    f.take(name).unwrap_or_default()
}

/// The element's text; absent and empty are both `None`.
fn opt(f: &mut Fields<'_>, name: &str) -> Option<String> {
    f.take(name).filter(|s| !s.is_empty())
}

/// A message's `MsgId`, which de-duplication relies on.
fn msg_id(f: &Fields<'_>) -> Result<u64, ProtocolError> {
    num(f, "MsgId")?.ok_or(ProtocolError::MissingField("MsgId"))
}

/// Job-finish events spell it `MsgID`; accept the message spelling too.
fn job_msg_id(f: &Fields<'_>) -> Result<u64, ProtocolError> {
    Ok(match num(f, "MsgID")? {
        Some(id) => id,
        None => num_or_zero(f, "MsgId")?,
    })
}

/// A number, `None` when absent or empty.
fn num<T>(f: &Fields<'_>, name: &'static str) -> Result<Option<T>, ProtocolError>
where
    T: FromStr,
    T::Err: Display,
{
    let Some(raw) = f.get(name).map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    raw.parse()
        .map(Some)
        .map_err(|e: T::Err| ProtocolError::InvalidField {
            field: name,
            reason: e.to_string(),
        })
}

fn num_or_zero<T>(f: &Fields<'_>, name: &'static str) -> Result<T, ProtocolError>
where
    T: FromStr + Default,
    T::Err: Display,
{
    Ok(num(f, name)?.unwrap_or_default())
}

/// A coordinate or precision; `NaN` and infinities are refused as they are never WeChat's.
fn float(f: &Fields<'_>, name: &'static str) -> Result<f64, ProtocolError> {
    let value: f64 = num_or_zero(f, name)?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ProtocolError::InvalidField {
            field: name,
            reason: "not a finite number".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const TO: &str = "gh_0123456789ab";
    const FROM: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
    const TIME: i64 = 1_700_000_000;

    /// An official-account document with the common fields around `body`.
    fn doc(body: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[{TO}]]></ToUserName>\
             <FromUserName><![CDATA[{FROM}]]></FromUserName>\
             <CreateTime>{TIME}</CreateTime>{body}</xml>"
        )
    }

    fn event_doc(event: &str, rest: &str) -> String {
        doc(&format!(
            "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>{rest}"
        ))
    }

    /// A WeCom app document: the corp is the receiver, a member the sender.
    fn wecom_doc(event: &str, rest: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[ww1234567890]]></ToUserName>\
             <FromUserName><![CDATA[zhangsan]]></FromUserName>\
             <CreateTime>{TIME}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <AgentID>1000002</AgentID><Event><![CDATA[{event}]]></Event>{rest}</xml>"
        )
    }

    fn official(kind: InboundKind) -> Inbound {
        Inbound {
            to: TO.into(),
            from: FROM.into(),
            create_time: TIME,
            agent_id: None,
            kind,
        }
    }

    fn wecom(event: Event) -> Inbound {
        Inbound {
            to: "ww1234567890".into(),
            from: "zhangsan".into(),
            create_time: TIME,
            agent_id: Some("1000002".into()),
            kind: InboundKind::Event(event),
        }
    }

    fn ev(event: Event) -> Inbound {
        official(InboundKind::Event(event))
    }

    fn s(v: &str) -> String {
        v.to_owned()
    }

    fn cases() -> Vec<(&'static str, String, Inbound)> {
        vec![
            (
                "text",
                doc("<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好\nworld]]></Content><MsgId>1234567890123456</MsgId>"),
                official(InboundKind::Text { content: s("你好\nworld"), msg_id: 1_234_567_890_123_456 }),
            ),
            (
                "text with empty content",
                doc("<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[]]></Content><MsgId>1</MsgId>"),
                official(InboundKind::Text { content: s(""), msg_id: 1 }),
            ),
            (
                "text with article-comment ids",
                doc("<MsgType>text</MsgType><Content>a &amp; b &lt;c&gt;</Content><MsgId>18446744073709551615</MsgId><MsgDataId>xxxx</MsgDataId><Idx>1</Idx>"),
                official(InboundKind::Text { content: s("a & b <c>"), msg_id: u64::MAX }),
            ),
            (
                "image",
                doc("<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://mmbiz.qpic.cn/x?a=1&b=2]]></PicUrl><MediaId><![CDATA[media_1]]></MediaId><MsgId>2</MsgId>"),
                official(InboundKind::Image { pic_url: s("http://mmbiz.qpic.cn/x?a=1&b=2"), media_id: s("media_1"), msg_id: 2 }),
            ),
            (
                "voice with recognition",
                doc("<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[m]]></MediaId><Format><![CDATA[amr]]></Format><Recognition><![CDATA[腾讯微信团队]]></Recognition><MsgId>3</MsgId>"),
                official(InboundKind::Voice { media_id: s("m"), format: s("amr"), recognition: Some(s("腾讯微信团队")), msg_id: 3 }),
            ),
            (
                "voice without recognition",
                doc("<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[m]]></MediaId><Format><![CDATA[speex]]></Format><MsgId>4</MsgId>"),
                official(InboundKind::Voice { media_id: s("m"), format: s("speex"), recognition: None, msg_id: 4 }),
            ),
            (
                "voice with empty recognition",
                doc("<MsgType><![CDATA[voice]]></MsgType><MediaId>m</MediaId><Format>amr</Format><Recognition><![CDATA[]]></Recognition><MsgId>4</MsgId>"),
                official(InboundKind::Voice { media_id: s("m"), format: s("amr"), recognition: None, msg_id: 4 }),
            ),
            (
                "video",
                doc("<MsgType><![CDATA[video]]></MsgType><MediaId><![CDATA[m]]></MediaId><ThumbMediaId><![CDATA[t]]></ThumbMediaId><MsgId>5</MsgId>"),
                official(InboundKind::Video { short: false, media_id: s("m"), thumb_media_id: s("t"), msg_id: 5 }),
            ),
            (
                "shortvideo",
                doc("<MsgType><![CDATA[shortvideo]]></MsgType><MediaId><![CDATA[m]]></MediaId><ThumbMediaId><![CDATA[t]]></ThumbMediaId><MsgId>6</MsgId>"),
                official(InboundKind::Video { short: true, media_id: s("m"), thumb_media_id: s("t"), msg_id: 6 }),
            ),
            (
                "location",
                doc("<MsgType><![CDATA[location]]></MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale><Label><![CDATA[位置信息]]></Label><MsgId>7</MsgId>"),
                official(InboundKind::Location { latitude: 23.134521, longitude: 113.358803, scale: 20, label: s("位置信息"), msg_id: 7 }),
            ),
            (
                "link",
                doc("<MsgType><![CDATA[link]]></MsgType><Title><![CDATA[公众平台官网链接]]></Title><Description><![CDATA[desc]]></Description><Url><![CDATA[https://mp.weixin.qq.com]]></Url><MsgId>8</MsgId>"),
                official(InboundKind::Link { title: s("公众平台官网链接"), description: s("desc"), url: s("https://mp.weixin.qq.com"), msg_id: 8 }),
            ),
            (
                "unknown message type",
                doc("<MsgType><![CDATA[miniprogrampage]]></MsgType><Title>t</Title><MsgId>9</MsgId>"),
                official(InboundKind::Other { msg_type: s("miniprogrampage"), msg_id: Some(9) }),
            ),
            (
                "unknown message type without MsgId",
                doc("<MsgType><![CDATA[future]]></MsgType>"),
                official(InboundKind::Other { msg_type: s("future"), msg_id: None }),
            ),
            (
                "subscribe",
                event_doc("subscribe", ""),
                ev(Event::Subscribe { scene: None, ticket: None }),
            ),
            (
                "subscribe with empty EventKey",
                event_doc("subscribe", "<EventKey><![CDATA[]]></EventKey>"),
                ev(Event::Subscribe { scene: None, ticket: None }),
            ),
            (
                "subscribe via QR",
                event_doc("subscribe", "<EventKey><![CDATA[qrscene_campaign_42]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket>"),
                ev(Event::Subscribe { scene: Some(s("campaign_42")), ticket: Some(s("TICKET")) }),
            ),
            ("unsubscribe", event_doc("unsubscribe", "<EventKey><![CDATA[]]></EventKey>"), ev(Event::Unsubscribe)),
            (
                "SCAN",
                event_doc("SCAN", "<EventKey><![CDATA[123123]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket>"),
                ev(Event::Scan { scene: s("123123"), ticket: Some(s("TICKET")) }),
            ),
            (
                "LOCATION",
                event_doc("LOCATION", "<Latitude>23.137466</Latitude><Longitude>113.352425</Longitude><Precision>119.385040</Precision>"),
                ev(Event::ReportLocation { latitude: 23.137466, longitude: 113.352425, precision: 119.38504 }),
            ),
            (
                "CLICK",
                event_doc("CLICK", "<EventKey><![CDATA[V1001_TODAY_MUSIC]]></EventKey>"),
                ev(Event::Click { key: s("V1001_TODAY_MUSIC") }),
            ),
            (
                "VIEW",
                event_doc("VIEW", "<EventKey><![CDATA[https://www.qq.com/]]></EventKey><MenuId>316</MenuId>"),
                ev(Event::View { url: s("https://www.qq.com/"), menu_id: Some(s("316")) }),
            ),
            (
                "scancode_push",
                event_doc("scancode_push", "<EventKey><![CDATA[rselfmenu_0_1]]></EventKey><ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[1]]></ScanResult></ScanCodeInfo>"),
                ev(Event::ScanCode { wait: false, key: s("rselfmenu_0_1"), scan_type: s("qrcode"), scan_result: s("1") }),
            ),
            (
                "scancode_waitmsg",
                event_doc("scancode_waitmsg", "<EventKey><![CDATA[rselfmenu_0_0]]></EventKey><ScanCodeInfo><ScanType><![CDATA[barcode]]></ScanType><ScanResult><![CDATA[EAN_13,6901234567892]]></ScanResult></ScanCodeInfo>"),
                ev(Event::ScanCode { wait: true, key: s("rselfmenu_0_0"), scan_type: s("barcode"), scan_result: s("EAN_13,6901234567892") }),
            ),
            (
                "pic_sysphoto",
                event_doc("pic_sysphoto", "<EventKey><![CDATA[6]]></EventKey><SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum></item></PicList></SendPicsInfo>"),
                ev(Event::PicSelect { source: PicSource::SysPhoto, key: s("6"), count: 1, md5s: vec![s("1b5f7c23b5bf75682a53e7b6d163e185")] }),
            ),
            (
                "pic_photo_or_album",
                event_doc("pic_photo_or_album", "<EventKey><![CDATA[6]]></EventKey><SendPicsInfo><Count>2</Count><PicList><item><PicMd5Sum><![CDATA[aa]]></PicMd5Sum></item><item><PicMd5Sum><![CDATA[bb]]></PicMd5Sum></item></PicList></SendPicsInfo>"),
                ev(Event::PicSelect { source: PicSource::PhotoOrAlbum, key: s("6"), count: 2, md5s: vec![s("aa"), s("bb")] }),
            ),
            (
                "pic_weixin without pictures",
                event_doc("pic_weixin", "<EventKey><![CDATA[6]]></EventKey><SendPicsInfo><Count>0</Count><PicList></PicList></SendPicsInfo>"),
                ev(Event::PicSelect { source: PicSource::Weixin, key: s("6"), count: 0, md5s: vec![] }),
            ),
            (
                "location_select",
                event_doc("location_select", "<EventKey><![CDATA[6]]></EventKey><SendLocationInfo><Location_X><![CDATA[23]]></Location_X><Location_Y><![CDATA[113]]></Location_Y><Scale><![CDATA[15]]></Scale><Label><![CDATA[ 广州市海珠区客村艺苑路 106号]]></Label><Poiname><![CDATA[]]></Poiname></SendLocationInfo>"),
                ev(Event::LocationSelect { key: s("6"), latitude: 23.0, longitude: 113.0, scale: 15, label: s(" 广州市海珠区客村艺苑路 106号"), poiname: None }),
            ),
            (
                "location_select with poiname",
                event_doc("location_select", "<EventKey>k</EventKey><SendLocationInfo><Location_X>1.5</Location_X><Location_Y>-2.25</Location_Y><Scale>15</Scale><Label>L</Label><Poiname>P</Poiname></SendLocationInfo>"),
                ev(Event::LocationSelect { key: s("k"), latitude: 1.5, longitude: -2.25, scale: 15, label: s("L"), poiname: Some(s("P")) }),
            ),
            (
                "view_miniprogram",
                event_doc("view_miniprogram", "<EventKey><![CDATA[pages/index/index]]></EventKey><MenuId>MENUID</MenuId>"),
                ev(Event::ViewMiniprogram { path: s("pages/index/index"), menu_id: Some(s("MENUID")) }),
            ),
            (
                "TEMPLATESENDJOBFINISH",
                event_doc("TEMPLATESENDJOBFINISH", "<MsgID>200163836</MsgID><Status><![CDATA[failed:user block]]></Status>"),
                ev(Event::TemplateSendJobFinish { msg_id: 200_163_836, status: s("failed:user block") }),
            ),
            (
                "MASSSENDJOBFINISH",
                event_doc("MASSSENDJOBFINISH", "<MsgID>1988</MsgID><Status><![CDATA[sendsuccess]]></Status><TotalCount>100</TotalCount><FilterCount>80</FilterCount><SentCount>75</SentCount><ErrorCount>5</ErrorCount><CopyrightCheckResult><Count>0</Count><ResultList></ResultList><CheckState>1</CheckState></CopyrightCheckResult>"),
                ev(Event::MassSendJobFinish { msg_id: 1988, status: s("sendsuccess"), total_count: 100, filter_count: 80, sent_count: 75, error_count: 5 }),
            ),
            (
                "subscribe_msg_popup_event",
                event_doc("subscribe_msg_popup_event", "<SubscribeMsgPopupEvent><List><TemplateId><![CDATA[t]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString></List></SubscribeMsgPopupEvent>"),
                ev(Event::Other { event: s("subscribe_msg_popup_event"), key: None }),
            ),
            (
                "unknown event keeps its key",
                event_doc("FUTURE_EVENT", "<EventKey><![CDATA[k1]]></EventKey>"),
                ev(Event::Other { event: s("FUTURE_EVENT"), key: Some(s("k1")) }),
            ),
            (
                "WeCom subscribe",
                wecom_doc("subscribe", "<EventKey><![CDATA[]]></EventKey>"),
                wecom(Event::Subscribe { scene: None, ticket: None }),
            ),
            ("WeCom unsubscribe", wecom_doc("unsubscribe", ""), wecom(Event::Unsubscribe)),
            (
                "WeCom enter_agent",
                wecom_doc("enter_agent", "<EventKey><![CDATA[]]></EventKey>"),
                wecom(Event::EnterAgent { key: None }),
            ),
            (
                "WeCom LOCATION",
                wecom_doc("LOCATION", "<Latitude>23.104</Latitude><Longitude>113.320</Longitude><Precision>65.000</Precision>"),
                wecom(Event::ReportLocation { latitude: 23.104, longitude: 113.32, precision: 65.0 }),
            ),
            (
                "WeCom click",
                wecom_doc("click", "<EventKey><![CDATA[#sendmsg#_0_0#7599826]]></EventKey>"),
                wecom(Event::Click { key: s("#sendmsg#_0_0#7599826") }),
            ),
            (
                "WeCom view",
                wecom_doc("view", "<EventKey><![CDATA[https://work.weixin.qq.com]]></EventKey>"),
                wecom(Event::View { url: s("https://work.weixin.qq.com"), menu_id: None }),
            ),
            (
                "WeCom scancode_waitmsg",
                wecom_doc("scancode_waitmsg", "<EventKey><![CDATA[k]]></EventKey><ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[r]]></ScanResult></ScanCodeInfo>"),
                wecom(Event::ScanCode { wait: true, key: s("k"), scan_type: s("qrcode"), scan_result: s("r") }),
            ),
            (
                "WeCom pic_weixin",
                wecom_doc("pic_weixin", "<EventKey><![CDATA[k]]></EventKey><SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum><![CDATA[cc]]></PicMd5Sum></item></PicList></SendPicsInfo>"),
                wecom(Event::PicSelect { source: PicSource::Weixin, key: s("k"), count: 1, md5s: vec![s("cc")] }),
            ),
            (
                "WeCom location_select",
                wecom_doc("location_select", "<EventKey><![CDATA[k]]></EventKey><SendLocationInfo><Location_X>23</Location_X><Location_Y>113</Location_Y><Scale>15</Scale><Label><![CDATA[l]]></Label><Poiname><![CDATA[p]]></Poiname></SendLocationInfo>"),
                wecom(Event::LocationSelect { key: s("k"), latitude: 23.0, longitude: 113.0, scale: 15, label: s("l"), poiname: Some(s("p")) }),
            ),
            (
                "WeCom add_external_contact",
                wecom_doc("change_external_contact", "<ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[staff1]]></UserID><ExternalUserID><![CDATA[wmEXT]]></ExternalUserID><State><![CDATA[spring_fair]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>"),
                wecom(Event::ExternalContact { change: ExternalContactChange::Add, user_id: s("staff1"), external_user_id: s("wmEXT"), state: Some(s("spring_fair")), welcome_code: Some(s("WELCOMECODE")) }),
            ),
            (
                "WeCom add_half_external_contact",
                wecom_doc("change_external_contact", "<ChangeType>add_half_external_contact</ChangeType><UserID>staff1</UserID><ExternalUserID>wmEXT</ExternalUserID><State>s</State>"),
                wecom(Event::ExternalContact { change: ExternalContactChange::AddHalf, user_id: s("staff1"), external_user_id: s("wmEXT"), state: Some(s("s")), welcome_code: None }),
            ),
            (
                "WeCom edit_external_contact",
                wecom_doc("change_external_contact", "<ChangeType>edit_external_contact</ChangeType><UserID>staff1</UserID><ExternalUserID>wmEXT</ExternalUserID>"),
                wecom(Event::ExternalContact { change: ExternalContactChange::Edit, user_id: s("staff1"), external_user_id: s("wmEXT"), state: None, welcome_code: None }),
            ),
            (
                "WeCom del_external_contact",
                wecom_doc("change_external_contact", "<ChangeType>del_external_contact</ChangeType><UserID>staff1</UserID><ExternalUserID>wmEXT</ExternalUserID><Source>DELETE_BY_TRANSFER</Source>"),
                wecom(Event::ExternalContact { change: ExternalContactChange::Del, user_id: s("staff1"), external_user_id: s("wmEXT"), state: None, welcome_code: None }),
            ),
            (
                "WeCom del_follow_user",
                wecom_doc("change_external_contact", "<ChangeType>del_follow_user</ChangeType><UserID>staff1</UserID><ExternalUserID>wmEXT</ExternalUserID>"),
                wecom(Event::ExternalContact { change: ExternalContactChange::DelFollowUser, user_id: s("staff1"), external_user_id: s("wmEXT"), state: None, welcome_code: None }),
            ),
            (
                "WeCom transfer_fail",
                wecom_doc("change_external_contact", "<ChangeType>transfer_fail</ChangeType><FailReason>customer_refused</FailReason><UserID>staff1</UserID><ExternalUserID>wmEXT</ExternalUserID>"),
                wecom(Event::ExternalContact { change: ExternalContactChange::TransferFail, user_id: s("staff1"), external_user_id: s("wmEXT"), state: None, welcome_code: None }),
            ),
            (
                "WeCom unknown external change",
                wecom_doc("change_external_contact", "<ChangeType>msg_audit_approved</ChangeType><UserID>staff1</UserID>"),
                wecom(Event::ExternalContact { change: ExternalContactChange::Other(s("msg_audit_approved")), user_id: s("staff1"), external_user_id: s(""), state: None, welcome_code: None }),
            ),
            (
                "WeCom change_contact create_user",
                wecom_doc("change_contact", "<ChangeType>create_user</ChangeType><UserID><![CDATA[lisi]]></UserID><Name><![CDATA[李四]]></Name>"),
                wecom(Event::Contact { change_type: s("create_user"), user_id: Some(s("lisi")) }),
            ),
            (
                "WeCom change_contact update_party",
                wecom_doc("change_contact", "<ChangeType>update_party</ChangeType><Id>2</Id><Name>研发部</Name>"),
                wecom(Event::Contact { change_type: s("update_party"), user_id: None }),
            ),
            (
                "WeCom change_external_chat",
                wecom_doc("change_external_chat", "<ChatId>wrx</ChatId><ChangeType>create</ChangeType>"),
                wecom(Event::Other { event: s("change_external_chat"), key: None }),
            ),
            (
                "WeCom change_external_tag",
                wecom_doc("change_external_tag", "<Id>et1</Id><TagType>tag</TagType><ChangeType>create</ChangeType>"),
                wecom(Event::Other { event: s("change_external_tag"), key: None }),
            ),
        ]
    }

    #[test]
    fn every_message_and_event_type() {
        for (name, xml, expected) in cases() {
            match parse_inbound(&xml) {
                Ok(got) => assert_eq!(got, expected, "case {name}: {xml}"),
                Err(e) => panic!("case {name}: {e}\n{xml}"),
            }
        }
    }

    #[test]
    fn event_names_ignore_case() {
        let cases = [
            (
                "Subscribe",
                Event::Subscribe {
                    scene: None,
                    ticket: None,
                },
            ),
            (
                "scan",
                Event::Scan {
                    scene: s("7"),
                    ticket: None,
                },
            ),
            ("click", Event::Click { key: s("7") }),
            (
                "View",
                Event::View {
                    url: s("7"),
                    menu_id: None,
                },
            ),
            (
                "templatesendjobfinish",
                Event::TemplateSendJobFinish {
                    msg_id: 0,
                    status: s(""),
                },
            ),
            ("ENTER_AGENT", Event::EnterAgent { key: Some(s("7")) }),
        ];
        for (name, expected) in cases {
            let xml = event_doc(name, "<EventKey>7</EventKey>");
            assert_eq!(parse_inbound(&xml), Ok(ev(expected)), "event {name}");
        }
    }

    #[test]
    fn vector_plaintexts() {
        let v: Value = serde_json::from_str(include_str!("../../tests/vectors/wechat.json"))
            .expect("vectors parse");
        let official_xml = v["official_generated"]["message"]["plaintext_xml"]
            .as_str()
            .expect("xml");
        assert_eq!(
            parse_inbound(official_xml),
            Ok(official(InboundKind::Text {
                content: s("优惠券 ]]> 😀"),
                msg_id: 24_275_629_125_430_231,
            }))
        );

        let wecom_xml = v["wecom_doc"]["message"]["plaintext_xml"]
            .as_str()
            .expect("xml");
        assert_eq!(
            parse_inbound(wecom_xml),
            Ok(Inbound {
                to: s("wx5823bf96d3bd56c7"),
                from: s("mycreate"),
                create_time: 1_409_659_813,
                agent_id: Some(s("218")),
                kind: InboundKind::Text {
                    content: s("hello"),
                    msg_id: 4_561_255_354_251_345_929,
                },
            })
        );
    }

    #[test]
    fn order_and_layout_do_not_matter() {
        let expected = official(InboundKind::Text {
            content: s("hi"),
            msg_id: 11,
        });
        let variants = [
            format!("<xml><MsgId>11</MsgId><Content>hi</Content><MsgType>text</MsgType><CreateTime>{TIME}</CreateTime><FromUserName>{FROM}</FromUserName><ToUserName>{TO}</ToUserName></xml>"),
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xml>\n  <ToUserName>\n    <![CDATA[{TO}]]>\n  </ToUserName>\n  <FromUserName> {FROM} </FromUserName>\n  <CreateTime> {TIME} </CreateTime>\n  <MsgType> text </MsgType>\n  <Content>\n    <![CDATA[hi]]>\n  </Content>\n  <!-- a comment -->\n  <MsgId>\n11\n</MsgId>\n</xml>\n"),
            format!("\r\n<xml>\r\n<ToUserName><![CDATA[{TO}]]></ToUserName>\r\n<FromUserName><![CDATA[{FROM}]]></FromUserName>\r\n<CreateTime>{TIME}</CreateTime>\r\n<MsgType><![CDATA[text]]></MsgType>\r\n<Content><![CDATA[h]]><![CDATA[i]]></Content>\r\n<MsgId>11</MsgId>\r\n</xml>"),
        ];
        for (i, xml) in variants.iter().enumerate() {
            assert_eq!(
                parse_inbound(xml),
                Ok(expected.clone()),
                "variant {i}: {xml}"
            );
        }
    }

    #[test]
    fn content_is_exact() {
        let cases = [
            (
                "spaces kept without CDATA",
                "<Content>  hi  </Content>",
                "  hi  ",
            ),
            (
                "spaces kept inside CDATA",
                "<Content><![CDATA[  hi  ]]></Content>",
                "  hi  ",
            ),
            (
                "markup in CDATA",
                "<Content><![CDATA[<b>&amp;</b>]]></Content>",
                "<b>&amp;</b>",
            ),
            (
                "escaped markup",
                "<Content>&lt;b&gt;&amp;amp;</Content>",
                "<b>&amp;",
            ),
            ("char refs", "<Content>&#x1F600;&#20320;</Content>", "😀你"),
            (
                "split terminator",
                "<Content><![CDATA[a]]]]><![CDATA[>b]]></Content>",
                "a]]>b",
            ),
            (
                "newlines",
                "<Content><![CDATA[a\nb\n]]></Content>",
                "a\nb\n",
            ),
        ];
        for (name, content, expected) in cases {
            let xml = doc(&format!("<MsgType>text</MsgType>{content}<MsgId>1</MsgId>"));
            assert_eq!(
                parse_inbound(&xml).map(|m| m.text().map(str::to_owned)),
                Ok(Some(s(expected))),
                "{name}"
            );
        }
    }

    #[test]
    fn errors() {
        use ProtocolError as E;
        let text_body = "<MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId>";
        let invalid = |field: &'static str| move |e: &E| matches!(e, E::InvalidField { field: f, .. } if *f == field);
        let xml_err = |e: &E| matches!(e, E::Xml(_));
        type Check = Box<dyn Fn(&E) -> bool>;
        let missing =
            |field: &'static str| -> Check { Box::new(move |e: &E| *e == E::MissingField(field)) };
        let cases: Vec<(&str, String, Check)> = vec![
            ("no ToUserName", format!("<xml><FromUserName>a</FromUserName><CreateTime>1</CreateTime>{text_body}</xml>"), missing("ToUserName")),
            ("empty ToUserName", format!("<xml><ToUserName><![CDATA[]]></ToUserName><FromUserName>a</FromUserName><CreateTime>1</CreateTime>{text_body}</xml>"), missing("ToUserName")),
            ("no FromUserName", format!("<xml><ToUserName>a</ToUserName><CreateTime>1</CreateTime>{text_body}</xml>"), missing("FromUserName")),
            ("no CreateTime", format!("<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName>{text_body}</xml>"), missing("CreateTime")),
            ("no MsgType", doc("<Content>x</Content><MsgId>1</MsgId>"), missing("MsgType")),
            ("no MsgId on text", doc("<MsgType>text</MsgType><Content>x</Content>"), missing("MsgId")),
            ("no MsgId on image", doc("<MsgType>image</MsgType><PicUrl>u</PicUrl><MediaId>m</MediaId>"), missing("MsgId")),
            ("no MsgId on location", doc("<MsgType>location</MsgType><Location_X>1</Location_X>"), missing("MsgId")),
            ("no Content", doc("<MsgType>text</MsgType><MsgId>1</MsgId>"), missing("Content")),
            ("no Event", doc("<MsgType>event</MsgType>"), missing("Event")),
            ("CreateTime not a number", "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>yesterday</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId></xml>".into(), Box::new(invalid("CreateTime"))),
            ("CreateTime fractional", "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1.5</CreateTime><MsgType>event</MsgType><Event>CLICK</Event></xml>".into(), Box::new(invalid("CreateTime"))),
            ("MsgId not a number", doc("<MsgType>text</MsgType><Content>x</Content><MsgId>12x</MsgId>"), Box::new(invalid("MsgId"))),
            ("MsgId negative", doc("<MsgType>text</MsgType><Content>x</Content><MsgId>-1</MsgId>"), Box::new(invalid("MsgId"))),
            ("MsgId too large", doc("<MsgType>text</MsgType><Content>x</Content><MsgId>18446744073709551616</MsgId>"), Box::new(invalid("MsgId"))),
            ("latitude not a number", doc("<MsgType>location</MsgType><Location_X>north</Location_X><MsgId>1</MsgId>"), Box::new(invalid("Location_X"))),
            ("latitude NaN", event_doc("LOCATION", "<Latitude>NaN</Latitude>"), Box::new(invalid("Latitude"))),
            ("count not a number", event_doc("pic_weixin", "<SendPicsInfo><Count>many</Count></SendPicsInfo>"), Box::new(invalid("SendPicsInfo/Count"))),
            ("DOCTYPE", format!("<!DOCTYPE xml>{}", doc(text_body)), Box::new(|e: &E| *e == E::DoctypeForbidden)),
            ("ENTITY declaration", format!("<!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>{}", doc("<MsgType>text</MsgType><Content>&xxe;</Content><MsgId>1</MsgId>")), Box::new(|e: &E| *e == E::DoctypeForbidden)),
            ("undeclared entity", doc("<MsgType>text</MsgType><Content>&xxe;</Content><MsgId>1</MsgId>"), Box::new(xml_err)),
            ("unclosed element", doc(text_body).replace("</MsgId>", ""), Box::new(xml_err)),
            ("truncated", doc(text_body)[..60].to_owned(), Box::new(xml_err)),
            ("other root", doc(text_body).replace("xml>", "root>"), Box::new(xml_err)),
            ("empty", String::new(), Box::new(xml_err)),
            ("not XML", "hello".into(), Box::new(xml_err)),
            ("JSON", "{\"ToUserName\":\"a\"}".into(), Box::new(xml_err)),
        ];
        for (name, xml, check) in cases {
            match parse_inbound(&xml) {
                Err(e) => assert!(check(&e), "case {name}: unexpected {e:?}\n{xml}"),
                Ok(m) => panic!("case {name}: accepted as {m:?}\n{xml}"),
            }
        }
    }

    #[test]
    fn never_panics_on_truncations_and_mutations() {
        let (_, xml, _) = cases()
            .into_iter()
            .find(|(name, _, _)| *name == "pic_photo_or_album")
            .expect("case exists");
        for end in 0..xml.len() {
            if let Some(prefix) = xml.get(..end) {
                let _ = parse_inbound(prefix);
            }
        }
        let bytes = xml.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'<', b'>', b'&', b'/', b'!', b'[', b']', b'"', b'x'] {
                let mut mutated = bytes.to_vec();
                mutated[i] = replacement;
                if let Ok(s) = String::from_utf8(mutated) {
                    let _ = parse_inbound(&s);
                }
            }
        }
    }
}
