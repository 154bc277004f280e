//! The typed requests and answers of the API calls siyu makes (protocol.md §9–§11).
//!
//! Requests serialize to exactly the JSON WeChat documents; answers deserialize leniently
//! (unknown fields ignored, optional ones defaulted) because WeChat adds fields over time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ApiError;
use crate::protocol::Reply;

/// A customer-service message (`/cgi-bin/message/custom/send`), sendable only inside the
/// window the follower opened (§9).
#[derive(Debug, Clone, PartialEq)]
pub enum CustomMessage {
    Text {
        content: String,
    },
    /// An image uploaded beforehand as temporary or permanent material.
    Image {
        media_id: String,
    },
    Voice {
        media_id: String,
    },
    Music {
        title: String,
        description: String,
        musicurl: String,
        hqmusicurl: String,
        thumb_media_id: String,
    },
    /// One link card.
    News {
        title: String,
        description: String,
        url: String,
        picurl: String,
    },
    MiniProgramPage {
        title: String,
        appid: String,
        pagepath: String,
        thumb_media_id: String,
    },
}

impl CustomMessage {
    /// The customer-service form of a rule's reply-shaped message. Video (WeChat wants a
    /// thumbnail a passive reply does not carry), news with more than one article and a
    /// hand-over to human service have none.
    pub fn from_reply(reply: &Reply) -> Result<CustomMessage, ApiError> {
        let text = |o: &Option<String>| o.clone().unwrap_or_default();
        Ok(match reply {
            Reply::Text { content } => CustomMessage::Text {
                content: content.clone(),
            },
            Reply::Image { media_id } => CustomMessage::Image {
                media_id: media_id.clone(),
            },
            Reply::Voice { media_id } => CustomMessage::Voice {
                media_id: media_id.clone(),
            },
            Reply::Music {
                title,
                description,
                music_url,
                hq_music_url,
                thumb_media_id,
            } => CustomMessage::Music {
                title: text(title),
                description: text(description),
                musicurl: text(music_url),
                hqmusicurl: text(hq_music_url),
                thumb_media_id: thumb_media_id.clone(),
            },
            Reply::News { articles } if articles.len() == 1 => {
                let a = &articles[0];
                CustomMessage::News {
                    title: a.title.clone(),
                    description: text(&a.description),
                    url: text(&a.url),
                    picurl: text(&a.pic_url),
                }
            }
            Reply::News { .. } => {
                return Err(ApiError::Invalid(
                    "a customer-service news message carries exactly one article".into(),
                ))
            }
            Reply::Video { .. } | Reply::TransferCustomerService { .. } => {
                return Err(ApiError::Invalid(
                    "video and hand-over replies cannot be sent as customer-service messages"
                        .into(),
                ))
            }
        })
    }

    pub fn text(content: impl Into<String>) -> CustomMessage {
        CustomMessage::Text {
            content: content.into(),
        }
    }

    /// The request body for `touser`: `{"touser", "msgtype": T, T: {…}}`. Built by hand
    /// because the payload's key is the message type, which serde's enum tagging cannot say.
    pub(crate) fn body(&self, touser: &str) -> Value {
        let (msgtype, payload) = match self {
            CustomMessage::Text { content } => ("text", json!({ "content": content })),
            CustomMessage::Image { media_id } => ("image", json!({ "media_id": media_id })),
            CustomMessage::Voice { media_id } => ("voice", json!({ "media_id": media_id })),
            CustomMessage::Music {
                title,
                description,
                musicurl,
                hqmusicurl,
                thumb_media_id,
            } => (
                "music",
                json!({
                    "title": title, "description": description, "musicurl": musicurl,
                    "hqmusicurl": hqmusicurl, "thumb_media_id": thumb_media_id,
                }),
            ),
            CustomMessage::News {
                title,
                description,
                url,
                picurl,
            } => (
                "news",
                json!({ "articles": [{
                    "title": title, "description": description, "url": url, "picurl": picurl,
                }] }),
            ),
            CustomMessage::MiniProgramPage {
                title,
                appid,
                pagepath,
                thumb_media_id,
            } => (
                "miniprogrampage",
                json!({
                    "title": title, "appid": appid, "pagepath": pagepath,
                    "thumb_media_id": thumb_media_id,
                }),
            ),
        };
        json!({ "touser": touser, "msgtype": msgtype, msgtype: payload })
    }
}

/// A template message (`/cgi-bin/message/template/send`): no window needed, approved
/// templates only.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TemplateMessage {
    pub touser: String,
    pub template_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miniprogram: Option<MiniProgramLink>,
    pub data: BTreeMap<String, TemplateValue>,
    /// Makes a retried send idempotent on WeChat's side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
}

impl TemplateMessage {
    pub fn new(touser: impl Into<String>, template_id: impl Into<String>) -> TemplateMessage {
        TemplateMessage {
            touser: touser.into(),
            template_id: template_id.into(),
            ..Default::default()
        }
    }

    /// Sets the template's field `key` (`{{key.DATA}}` in the template).
    pub fn field(mut self, key: impl Into<String>, value: impl Into<String>) -> TemplateMessage {
        self.data.insert(
            key.into(),
            TemplateValue {
                value: value.into(),
            },
        );
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MiniProgramLink {
    pub appid: String,
    pub pagepath: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateValue {
    pub value: String,
}

/// `/cgi-bin/user/info`. An unsubscribed follower comes back with `subscribe: 0` and the
/// openid only.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct UserInfo {
    pub subscribe: i64,
    pub openid: String,
    pub unionid: Option<String>,
    pub subscribe_time: Option<i64>,
    pub remark: String,
    pub groupid: i64,
    pub tagid_list: Vec<i64>,
    pub subscribe_scene: Option<String>,
    pub qr_scene: Option<i64>,
    pub qr_scene_str: Option<String>,
    pub language: Option<String>,
}

/// One page of WeCom's `externalcontact/batch/get_by_user`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ContactsPage {
    pub external_contact_list: Vec<ContactEntry>,
    /// Empty after the last page.
    pub next_cursor: String,
}

/// One (external contact, staff member) pair.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ContactEntry {
    pub external_contact: ExternalContact,
    pub follow_info: FollowInfo,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ExternalContact {
    pub external_userid: String,
    pub name: String,
    /// 1: a WeChat user, 2: a WeCom user of another corp.
    #[serde(rename = "type")]
    pub kind: i64,
    pub unionid: Option<String>,
}

/// The staff member's side of the contact.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct FollowInfo {
    pub userid: String,
    pub remark: String,
    pub createtime: i64,
    /// Corp tag ids (`et…`).
    pub tag_id: Vec<String>,
    pub add_way: i64,
    pub state: String,
}

/// One page of `/cgi-bin/user/get`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FollowerPage {
    /// How many followers the account has, as WeChat counts them now.
    pub total: u64,
    /// Empty: the list is done.
    pub openids: Vec<String>,
    /// Where the next page starts (the last openid of this one).
    pub next_openid: String,
}

impl UserInfo {
    pub fn is_subscribed(&self) -> bool {
        self.subscribe == 1
    }
}

/// A follower tag of the account (`/cgi-bin/tags/get`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Tag {
    pub id: i64,
    pub name: String,
    /// Followers carrying it.
    #[serde(default)]
    pub count: i64,
}

/// Temporary media as uploaded (`/cgi-bin/media/upload`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UploadedMedia {
    /// `image` for an image.
    #[serde(rename = "type")]
    pub kind: String,
    pub media_id: String,
    /// Unix seconds: the media lives 3 days from then.
    pub created_at: i64,
}

/// A parametric QR code (`/cgi-bin/qrcode/create`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrTicket {
    pub ticket: String,
    /// `None` for a permanent code.
    pub expire_seconds: Option<u32>,
    /// What the QR code encodes (to render it yourself).
    pub url: String,
    /// WeChat's rendering of the code: `showqrcode?ticket=` with the ticket URL-encoded.
    pub image_url: String,
}

/// A WeCom "contact me" code (`externalcontact/add_contact_way`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContactWay {
    /// WeCom's id of the code (to edit or delete it).
    pub config_id: String,
    /// A link to the code's image (for a `scene` 2 code).
    #[serde(default)]
    pub qr_code: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_messages_have_the_documented_shapes() {
        let cases = [
            (
                "text",
                CustomMessage::text("hi"),
                json!({"touser": "o1", "msgtype": "text", "text": {"content": "hi"}}),
            ),
            (
                "image",
                CustomMessage::Image {
                    media_id: "M".into(),
                },
                json!({"touser": "o1", "msgtype": "image", "image": {"media_id": "M"}}),
            ),
            (
                "news",
                CustomMessage::News {
                    title: "T".into(),
                    description: "D".into(),
                    url: "U".into(),
                    picurl: "P".into(),
                },
                json!({"touser": "o1", "msgtype": "news", "news": {"articles": [
                    {"title": "T", "description": "D", "url": "U", "picurl": "P"}]}}),
            ),
            (
                "miniprogrampage",
                CustomMessage::MiniProgramPage {
                    title: "T".into(),
                    appid: "wxa".into(),
                    pagepath: "p/i".into(),
                    thumb_media_id: "M".into(),
                },
                json!({"touser": "o1", "msgtype": "miniprogrampage", "miniprogrampage": {
                    "title": "T", "appid": "wxa", "pagepath": "p/i", "thumb_media_id": "M"}}),
            ),
        ];
        for (name, message, want) in cases {
            assert_eq!(message.body("o1"), want, "{name}");
        }
    }

    #[test]
    fn template_messages_leave_out_unset_options() {
        let m = TemplateMessage::new("o1", "T1").field("first", "你好");
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"touser": "o1", "template_id": "T1", "data": {"first": {"value": "你好"}}})
        );
    }
}
