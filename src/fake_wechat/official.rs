//! The fake's official-account APIs (protocol.md §9–§10): customer-service and template
//! messages, follower info, tags, QR codes. Plain functions of the state and the request
//! body, returning WeChat's JSON answer.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{json, Value};

use super::population;
use super::routes::{err, nonempty, ok, str_field};
use super::state::{FakeTag, State, Window};

/// The §10 batch limit, and the errcode WeChat answers past it (invalid openid list size).
const MAX_BATCH: usize = 50;
const ERR_OPENID_LIST_SIZE: i64 = 40032;
/// A follower carries at most 20 tags; an account has at most 100 (§10).
const MAX_TAGS_PER_FOLLOWER: usize = 20;
pub(super) const MAX_TAGS: usize = 100;

pub(super) fn custom_send(state: &mut State, b: &Value) -> Value {
    let Some(touser) = str_field(b, "touser") else {
        return err(40003, "invalid openid");
    };
    let known = [
        "text",
        "image",
        "voice",
        "video",
        "music",
        "news",
        "mpnews",
        "msgmenu",
        "miniprogrampage",
    ];
    let msgtype = str_field(b, "msgtype").unwrap_or_default();
    if !known.contains(&msgtype) || !b[msgtype].is_object() {
        return err(40008, "invalid message type");
    }
    if msgtype == "image" && str_field(&b["image"], "media_id").is_none() {
        return err(40007, "invalid media_id");
    }
    let now = Instant::now();
    if !state.windows.contains_key(touser) {
        // `POST /fake/window {"openid": "*"}`: every follower wrote just now.
        if let Some(all) = state.windows.get("*") {
            let fresh = Window {
                remaining: all.remaining,
                until: all.until,
            };
            state.windows.insert(touser.to_string(), fresh);
        }
    }
    match state.windows.get_mut(touser) {
        Some(w) if w.until > now && w.remaining > 0 => {
            w.remaining -= 1;
            ok()
        }
        Some(w) if w.until > now => err(45047, "out of response count limit"),
        _ => err(
            45015,
            "response out of time limit or subscription is canceled",
        ),
    }
}

pub(super) fn template_send(state: &mut State, b: &Value) -> Value {
    if str_field(b, "touser").is_none() {
        return err(40003, "invalid openid");
    }
    if str_field(b, "template_id").is_none() {
        return err(40037, "invalid template_id");
    }
    if !b["data"].is_object() {
        return err(47001, "data format error");
    }
    // `client_msg_id` makes a repeat of the same send a no-op (WeChat keeps it for
    // 10 minutes): the first send's msgid comes back and nothing is delivered again.
    let repeat_key = str_field(b, "client_msg_id").map(|id| {
        (
            str_field(b, "touser").unwrap_or_default().to_string(),
            id.to_string(),
        )
    });
    if let Some(msgid) = repeat_key
        .as_ref()
        .and_then(|k| state.template_sends.get(k))
    {
        return json!({ "errcode": 0, "errmsg": "ok", "msgid": msgid });
    }
    state.next_msgid += 1;
    let msgid = state.next_msgid;
    if let Some(k) = repeat_key {
        state.template_sends.insert(k, msgid);
    }
    state.templates_delivered += 1;
    json!({ "errcode": 0, "errmsg": "ok", "msgid": msgid })
}

/// A mass send to an openid list (§9): 2 to 10,000 openids; `clientmsgid` makes a repeat
/// fail with 45065 instead of sending twice.
pub(super) fn mass_send(state: &mut State, b: &Value) -> Value {
    let Some(touser) = b["touser"].as_array() else {
        return err(40130, "invalid openid list size, at least two openid");
    };
    if !(2..=10_000).contains(&touser.len()) {
        return err(40130, "invalid openid list size, at least two openid");
    }
    let msgtype = str_field(b, "msgtype").unwrap_or_default();
    if !["text", "mpnews", "image", "voice", "mpvideo", "wxcard"].contains(&msgtype)
        || !b[msgtype].is_object()
    {
        return err(40008, "invalid message type");
    }
    if let Some(id) = str_field(b, "clientmsgid") {
        if !state.mass_client_ids.insert(id.to_string()) {
            return err(45065, "clientmsgid exist");
        }
    }
    state.next_msgid += 1;
    state.mass_recipients += touser.len() as u64;
    json!({ "errcode": 0, "errmsg": "send job submission success", "msg_id": state.next_msgid, "msg_data_id": state.next_msgid })
}

/// A follower of the token owner's population answers as the population says; any other
/// openid as a plain subscribed follower.
pub(super) fn user_info(state: &mut State, owner: &str, q: &HashMap<String, String>) -> Value {
    let Some(openid) = nonempty(q, "openid") else {
        return err(40003, "invalid openid");
    };
    if let Some(info) = population::user_info(state, owner, openid) {
        return info;
    }
    let tagids: Vec<i64> = state
        .tags
        .iter()
        .filter(|(_, t)| t.contains(openid))
        .map(|(id, _)| *id)
        .collect();
    json!({
        "subscribe": 1, "openid": openid, "language": "zh_CN", "subscribe_time": 1_700_000_000,
        "remark": "", "groupid": 0, "tagid_list": tagids, "subscribe_scene": "ADD_SCENE_QR_CODE",
        "qr_scene": 0, "qr_scene_str": "",
    })
}

pub(super) fn create_tag(state: &mut State, b: &Value) -> Value {
    let name = b["tag"]["name"].as_str().unwrap_or_default();
    if name.is_empty() || name.len() > 30 {
        return err(45158, "tag name too long");
    }
    if state.tags.values().any(|t| t.name == name) {
        return err(45157, "invalid tag name");
    }
    if state.tags.len() >= MAX_TAGS {
        return err(45056, "too many tags now, no need to add new");
    }
    let id = state.next_tag_id;
    state.next_tag_id += 1;
    state.tags.insert(id, FakeTag::new(name));
    json!({ "tag": { "id": id, "name": name } })
}

pub(super) fn list_tags(state: &mut State) -> Value {
    let tags: Vec<Value> = state
        .tags
        .iter()
        .map(|(id, t)| json!({ "id": id, "name": t.name, "count": t.count() }))
        .collect();
    json!({ "tags": tags })
}

pub(super) fn batch(state: &mut State, b: &Value, tagging: bool) -> Value {
    let Some(list) = b["openid_list"].as_array() else {
        return err(47001, "data format error");
    };
    if list.is_empty() || list.len() > MAX_BATCH {
        return err(ERR_OPENID_LIST_SIZE, "invalid openid list size");
    }
    let openids: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    if openids.len() != list.len() || openids.iter().any(|o| o.is_empty()) {
        return err(40003, "invalid openid");
    }
    let Some(tagid) = b["tagid"].as_i64().filter(|id| state.tags.contains_key(id)) else {
        return err(45159, "invalid tag id");
    };
    if tagging {
        let over = openids.iter().any(|o| {
            let carried = state
                .tags
                .iter()
                .filter(|(id, t)| **id != tagid && t.contains(o))
                .count();
            carried >= MAX_TAGS_PER_FOLLOWER
        });
        if over {
            return err(45059, "has too many tags");
        }
    }
    if let Some(tag) = state.tags.get_mut(&tagid) {
        for o in openids {
            if tagging {
                tag.insert(o);
            } else {
                tag.remove(o);
            }
        }
    }
    ok()
}

/// The one file part of a `multipart/form-data` body, as recorded: its field name, file
/// name, content type and size (`{}` if the body is no such form), and its bytes.
pub(super) fn multipart_media(content_type: &str, body: &[u8]) -> (Value, Vec<u8>) {
    let Some(boundary) = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
    else {
        return (json!({}), Vec::new());
    };
    let delimiter = format!("--{}", boundary.trim_matches('"'));
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let Some(start) = find(body, delimiter.as_bytes(), 0) else {
        return (json!({}), Vec::new());
    };
    let Some(head_end) = find(body, b"\r\n\r\n", start) else {
        return (json!({}), Vec::new());
    };
    let head = String::from_utf8_lossy(&body[start + delimiter.len()..head_end]).into_owned();
    let end_marker = format!("\r\n{delimiter}");
    let data_start = head_end + 4;
    let data_end = find(body, end_marker.as_bytes(), data_start).unwrap_or(body.len());
    let data = body[data_start..data_end].to_vec();
    let field = |name: &str| {
        head.split(';')
            .find_map(|p| p.trim().strip_prefix(&format!("{name}=\"")))
            .and_then(|v| v.split('"').next())
            .map(str::to_string)
    };
    let part_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .map(str::trim)
        .map(str::to_string);
    let summary = json!({
        "name": field("name"),
        "filename": field("filename"),
        "content_type": part_type,
        "bytes": data.len(),
        "png": data.starts_with(b"\x89PNG\r\n\x1a\n"),
    });
    (summary, data)
}

/// `media/upload?type=image`: a form field `media` holding an image (protocol.md:
/// `{"type":"image","media_id":…,"created_at":…}`; 40004 a bad type, 41005 no media).
pub(super) fn upload_media(
    state: &mut State,
    query: &std::collections::HashMap<String, String>,
    summary: Option<&Value>,
    bytes: Vec<u8>,
) -> Value {
    let kind = query.get("type").map(String::as_str).unwrap_or_default();
    if !["image", "voice", "video", "thumb"].contains(&kind) {
        return err(40004, "invalid media type");
    }
    let Some(summary) = summary.filter(|s| s["name"] == "media" && !bytes.is_empty()) else {
        return err(41005, "media data missing");
    };
    if kind == "image" && summary["png"] != true && !bytes.starts_with(&[0xff, 0xd8]) {
        return err(40113, "unsupported file type");
    }
    let media_id = format!("MEDIA_{}", hex::encode(rand::random::<[u8; 12]>()));
    state.media.insert(media_id.clone(), bytes);
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({ "type": kind, "media_id": media_id, "created_at": created_at })
}

pub(super) fn create_qrcode(state: &mut State, b: &Value) -> Value {
    let action = str_field(b, "action_name").unwrap_or_default();
    let scene = &b["action_info"]["scene"];
    let valid_scene = match action {
        "QR_STR_SCENE" | "QR_LIMIT_STR_SCENE" => scene["scene_str"]
            .as_str()
            .is_some_and(|s| (1..=64).contains(&s.chars().count())),
        "QR_SCENE" | "QR_LIMIT_SCENE" => scene["scene_id"].as_u64().is_some_and(|id| id > 0),
        _ => false,
    };
    if !valid_scene {
        return err(40097, "invalid args");
    }
    // Tickets end in base64 padding, like real ones: clients must URL-encode them.
    let ticket = format!("gQH/{}+==", hex::encode(rand::random::<[u8; 16]>()));
    let url = format!(
        "http://weixin.qq.com/q/{}",
        hex::encode(rand::random::<[u8; 8]>())
    );
    if action.starts_with("QR_LIMIT") {
        return json!({ "ticket": ticket, "url": url });
    }
    let expire = b["expire_seconds"].as_u64().unwrap_or(60);
    if !(1..=2_592_000).contains(&expire) {
        return err(40097, "invalid args");
    }
    let expire = state.qr_expire_cap.map_or(expire, |cap| expire.min(cap));
    json!({ "ticket": ticket, "expire_seconds": expire, "url": url })
}
