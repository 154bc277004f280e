//! `ApiClient`: one account's typed calls to the WeChat or WeCom API.
//!
//! Every call takes the shared token, sends, and decodes WeChat's answer uniformly: HTTP 200
//! with a non-zero `errcode` is an [`ApiError`] like any transport failure. If WeChat refuses
//! the token (40001/40014/42001) the client refreshes it and retries once: once, because a
//! second refusal means the secret or the account is wrong, and looping would burn the daily
//! token quota. Nothing else is retried here: whether a transient failure is worth another
//! try (and when) is the caller's decision, a send may not be idempotent.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Method};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::model::{
    ContactWay, ContactsPage, CustomMessage, FollowerPage, QrTicket, Tag, TemplateMessage, UserInfo,
};
use super::token::{TokenSource, Tokens};
use super::transport::{exchange, url};
use super::ApiError;
use crate::config::{AccountKind, Secret};
use crate::store::Store;

pub const OFFICIAL_API_BASE: &str = "https://api.weixin.qq.com";
pub const WECOM_API_BASE: &str = "https://qyapi.weixin.qq.com";
/// `batchtagging` / `batchuntagging` take at most 50 openids a call (§10).
pub const MAX_OPENIDS_PER_BATCH: usize = 50;
/// `user/info/batchget` takes at most 100 openids a call (§10).
pub const MAX_OPENIDS_PER_INFO_BATCH: usize = 100;
/// `batch/get_by_user` takes at most 100 staff members a call (§11).
pub const MAX_USERIDS_PER_CONTACT_BATCH: usize = 100;
/// Temporary QR codes live at most 30 days (§10).
pub const MAX_QR_EXPIRE_SECONDS: u32 = 2_592_000;
/// The QR code image, by ticket (§10).
const SHOW_QRCODE: &str = "https://mp.weixin.qq.com/cgi-bin/showqrcode";

/// What one account's client needs.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The account's id in siyu's config; names the stored token.
    pub account: String,
    pub kind: AccountKind,
    /// The AppID, or the CorpID for WeCom.
    pub app_id: String,
    /// The AppSecret, or the WeCom app's secret.
    pub secret: Secret,
    /// [`OFFICIAL_API_BASE`] or [`WECOM_API_BASE`]; the fake's URL in tests.
    pub api_base: String,
    /// Use `/cgi-bin/stable_token` (official accounts): lets several processes share an
    /// AppSecret without retiring each other's tokens.
    pub use_stable_token: bool,
    /// The WeCom app that sends app messages.
    pub agent_id: Option<i64>,
    /// For each HTTP exchange, connection included.
    pub timeout: Duration,
    /// The outbox worker's pace for this account, calls per second (0: unlimited).
    pub rate_per_sec: f64,
    /// WeCom: local tag name → corp tag id (`et…`), for mirroring tags with mark_tag.
    pub corp_tags: std::collections::BTreeMap<String, String>,
}

impl ApiSettings {
    /// Settings with the real API base for `kind`, classic tokens, and a 10 s timeout
    /// (WeChat answers in well under a second; longer means something is stuck).
    pub fn new(
        account: impl Into<String>,
        kind: AccountKind,
        app_id: impl Into<String>,
        secret: Secret,
    ) -> ApiSettings {
        ApiSettings {
            account: account.into(),
            kind,
            app_id: app_id.into(),
            secret,
            api_base: match kind {
                AccountKind::Official => OFFICIAL_API_BASE,
                AccountKind::Wecom => WECOM_API_BASE,
            }
            .to_string(),
            use_stable_token: false,
            agent_id: None,
            timeout: Duration::from_secs(10),
            // WeChat's own limits are per minute and per day; 50/s keeps a burst from
            // spending a minute's quota at once.
            rate_per_sec: 50.0,
            corp_tags: Default::default(),
        }
    }
}

/// One account's API client. Cheap to share behind an `Arc`; all tasks of a process should
/// use the same one so that they share its token.
#[derive(Debug)]
pub struct ApiClient {
    account: String,
    kind: AccountKind,
    api_base: String,
    agent_id: Option<i64>,
    http: Client,
    tokens: Tokens,
}

impl ApiClient {
    pub fn new(settings: ApiSettings, store: Arc<dyn Store>) -> Result<ApiClient, ApiError> {
        let http = Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| ApiError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        let api_base = settings.api_base.trim_end_matches('/').to_string();
        let source = TokenSource {
            account: settings.account.clone(),
            kind: settings.kind,
            app_id: settings.app_id,
            secret: settings.secret,
            api_base: api_base.clone(),
            use_stable_token: settings.use_stable_token,
        };
        Ok(ApiClient {
            account: settings.account,
            kind: settings.kind,
            api_base,
            agent_id: settings.agent_id,
            tokens: Tokens::new(source, http.clone(), store),
            http,
        })
    }

    /// Official account or WeCom.
    pub fn kind(&self) -> AccountKind {
        self.kind
    }

    /// The current access token (cached, stored, or fetched by one task for all).
    pub async fn access_token(&self) -> Result<Secret, ApiError> {
        self.tokens.current().await
    }

    // --- Official accounts (§9, §10) ---

    /// A customer-service message; fails with `OutOfWindow` / `OverResponseCount` outside
    /// the window the follower opened.
    pub async fn send_custom(&self, openid: &str, message: &CustomMessage) -> Result<(), ApiError> {
        self.require(AccountKind::Official, "send_custom")?;
        self.post::<IgnoredAny, _>("/cgi-bin/message/custom/send", &message.body(openid))
            .await
            .map(drop)
    }

    /// Sends a template message; returns WeChat's `msgid` (reported again in
    /// TEMPLATESENDJOBFINISH).
    pub async fn send_template(&self, message: &TemplateMessage) -> Result<i64, ApiError> {
        self.require(AccountKind::Official, "send_template")?;
        #[derive(Deserialize)]
        struct Sent {
            msgid: i64,
        }
        let sent: Sent = self.post("/cgi-bin/message/template/send", message).await?;
        Ok(sent.msgid)
    }

    /// A text mass send to 2–10,000 followers; returns the job's `msg_id` (reported again
    /// by MASSSENDJOBFINISH). `clientmsgid` makes a repeat fail with 45065 instead of
    /// sending twice.
    pub async fn mass_send_text(
        &self,
        openids: &[String],
        text: &str,
        clientmsgid: &str,
    ) -> Result<i64, ApiError> {
        self.require(AccountKind::Official, "mass_send")?;
        if !(2..=10_000).contains(&openids.len()) {
            return Err(ApiError::Invalid(format!(
                "a mass send takes 2 to 10,000 openids, not {}",
                openids.len()
            )));
        }
        #[derive(Deserialize)]
        struct Sent {
            msg_id: i64,
        }
        let sent: Sent = self
            .post(
                "/cgi-bin/message/mass/send",
                &json!({
                    "touser": openids,
                    "msgtype": "text",
                    "text": { "content": text },
                    "clientmsgid": clientmsgid,
                }),
            )
            .await?;
        Ok(sent.msg_id)
    }

    pub async fn user_info(&self, openid: &str) -> Result<UserInfo, ApiError> {
        self.require(AccountKind::Official, "user_info")?;
        self.call(
            Method::GET,
            "/cgi-bin/user/info",
            &[("openid", openid), ("lang", "zh_CN")],
            None::<&()>,
        )
        .await
    }

    /// One page of the account's follower list (§10): up to 10,000 openids after
    /// `next_openid` (`None`: from the start). A page with no openids is the end.
    pub async fn follower_page(&self, next_openid: Option<&str>) -> Result<FollowerPage, ApiError> {
        self.require(AccountKind::Official, "follower_page")?;
        #[derive(Deserialize)]
        struct Openids {
            #[serde(default)]
            openid: Vec<String>,
        }
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            total: u64,
            #[serde(default)]
            data: Option<Openids>,
            #[serde(default)]
            next_openid: String,
        }
        let page: Page = self
            .call(
                Method::GET,
                "/cgi-bin/user/get",
                &[("next_openid", next_openid.unwrap_or(""))],
                None::<&()>,
            )
            .await?;
        Ok(FollowerPage {
            total: page.total,
            openids: page.data.map(|d| d.openid).unwrap_or_default(),
            next_openid: page.next_openid,
        })
    }

    /// What WeChat knows of up to 100 followers (§10), in the order asked.
    pub async fn user_info_batch(&self, openids: &[String]) -> Result<Vec<UserInfo>, ApiError> {
        self.require(AccountKind::Official, "user_info_batch")?;
        if openids.is_empty() || openids.len() > MAX_OPENIDS_PER_INFO_BATCH {
            return Err(ApiError::Invalid(format!(
                "user/info/batchget takes 1 to {MAX_OPENIDS_PER_INFO_BATCH} openids, not {}",
                openids.len()
            )));
        }
        #[derive(Deserialize)]
        struct Infos {
            user_info_list: Vec<UserInfo>,
        }
        let list: Vec<_> = openids
            .iter()
            .map(|o| json!({ "openid": o, "lang": "zh_CN" }))
            .collect();
        let infos: Infos = self
            .post("/cgi-bin/user/info/batchget", &json!({ "user_list": list }))
            .await?;
        Ok(infos.user_info_list)
    }

    /// Creates a follower tag; returns its id.
    pub async fn create_tag(&self, name: &str) -> Result<i64, ApiError> {
        self.require(AccountKind::Official, "create_tag")?;
        // WeChat's limit is in bytes (a CJK character is three).
        if name.is_empty() || name.len() > 30 {
            return Err(ApiError::Invalid(format!(
                "a tag name is 1 to 30 bytes, `{name}` is {}",
                name.len()
            )));
        }
        #[derive(Deserialize)]
        struct Created {
            tag: Tag,
        }
        let created: Created = self
            .post("/cgi-bin/tags/create", &json!({ "tag": { "name": name } }))
            .await?;
        Ok(created.tag.id)
    }

    pub async fn list_tags(&self) -> Result<Vec<Tag>, ApiError> {
        self.require(AccountKind::Official, "list_tags")?;
        #[derive(Deserialize)]
        struct Tags {
            tags: Vec<Tag>,
        }
        let tags: Tags = self
            .call(Method::GET, "/cgi-bin/tags/get", &[], None::<&()>)
            .await?;
        Ok(tags.tags)
    }

    /// Puts `tag_id` on every follower in `openids`, in calls of at most 50. Stops at the
    /// first failed call: the batches before it are applied (tagging twice is harmless, so
    /// the caller may simply retry the whole list).
    pub async fn batch_tag(&self, tag_id: i64, openids: &[String]) -> Result<(), ApiError> {
        self.batch("/cgi-bin/tags/members/batchtagging", tag_id, openids)
            .await
    }

    /// Removes `tag_id` from every follower in `openids`, like [`ApiClient::batch_tag`].
    pub async fn batch_untag(&self, tag_id: i64, openids: &[String]) -> Result<(), ApiError> {
        self.batch("/cgi-bin/tags/members/batchuntagging", tag_id, openids)
            .await
    }

    /// A parametric QR code for `scene_str` (1–64 characters): temporary for
    /// `expire_seconds` (at most 30 days) or permanent (at most 100,000 per account).
    pub async fn create_qrcode(
        &self,
        scene_str: &str,
        permanent: bool,
        expire_seconds: u32,
    ) -> Result<QrTicket, ApiError> {
        self.require(AccountKind::Official, "create_qrcode")?;
        let chars = scene_str.chars().count();
        if !(1..=64).contains(&chars) {
            return Err(ApiError::Invalid(format!(
                "a QR scene is 1 to 64 characters, this one is {chars}"
            )));
        }
        let scene = json!({ "scene": { "scene_str": scene_str } });
        let body = if permanent {
            json!({ "action_name": "QR_LIMIT_STR_SCENE", "action_info": scene })
        } else {
            if !(1..=MAX_QR_EXPIRE_SECONDS).contains(&expire_seconds) {
                return Err(ApiError::Invalid(format!(
                    "a temporary QR code lives 1 to {MAX_QR_EXPIRE_SECONDS} seconds, not {expire_seconds}"
                )));
            }
            json!({
                "expire_seconds": expire_seconds,
                "action_name": "QR_STR_SCENE",
                "action_info": scene,
            })
        };
        #[derive(Deserialize)]
        struct Created {
            ticket: String,
            expire_seconds: Option<u32>,
            url: String,
        }
        let created: Created = self.post("/cgi-bin/qrcode/create", &body).await?;
        let image_url = url(SHOW_QRCODE, "", &[("ticket", &created.ticket)])?.to_string();
        Ok(QrTicket {
            ticket: created.ticket,
            expire_seconds: created.expire_seconds,
            url: created.url,
            image_url,
        })
    }

    /// Uploads an image as temporary media (`media/upload?type=image`, multipart field
    /// `media`); WeChat keeps it 3 days. The form is written here: one part, a fixed
    /// boundary that cannot occur in the header lines (the PNG bytes may hold anything,
    /// which multipart allows since the part's end is the boundary on its own line,
    /// chosen long and random enough not to appear).
    pub async fn upload_image(
        &self,
        file_name: &str,
        png: &[u8],
    ) -> Result<crate::api::model::UploadedMedia, ApiError> {
        self.require(AccountKind::Official, "upload_image")?;
        let boundary = format!("siyu-{}", hex::encode(rand::random::<[u8; 16]>()));
        let mut body = Vec::with_capacity(png.len() + 256);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; \
                 filename=\"{file_name}\"\r\nContent-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(png);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let send = |token: Secret| {
            let body = body.clone();
            let content_type = content_type.clone();
            async move {
                let pairs = [("access_token", token.expose()), ("type", "image")];
                let request = self
                    .http
                    .post(url(&self.api_base, "/cgi-bin/media/upload", &pairs)?)
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body);
                exchange(request).await
            }
        };
        let token = self.tokens.current().await?;
        match send(token.clone()).await {
            Err(e) if e.is_token_error() => {
                let token = self.tokens.replace(&token).await?;
                send(token).await
            }
            other => other,
        }
    }

    // --- WeCom (§11) ---

    /// The staff members with customer contact (`get_follow_user_list`).
    pub async fn follow_users(&self) -> Result<Vec<String>, ApiError> {
        self.require(AccountKind::Wecom, "follow_users")?;
        #[derive(Deserialize)]
        struct Users {
            #[serde(default)]
            follow_user: Vec<String>,
        }
        let users: Users = self
            .call(
                Method::GET,
                "/cgi-bin/externalcontact/get_follow_user_list",
                &[],
                None::<&()>,
            )
            .await?;
        Ok(users.follow_user)
    }

    /// One page of the external contacts of up to 100 staff members
    /// (`batch/get_by_user`): one entry per (contact, staff member); `cursor` empty for
    /// the first page, the answer's `next_cursor` empty after the last.
    pub async fn contacts_by_user(
        &self,
        userids: &[String],
        cursor: &str,
    ) -> Result<ContactsPage, ApiError> {
        self.require(AccountKind::Wecom, "contacts_by_user")?;
        if userids.is_empty() || userids.len() > MAX_USERIDS_PER_CONTACT_BATCH {
            return Err(ApiError::Invalid(format!(
                "batch/get_by_user takes 1 to {MAX_USERIDS_PER_CONTACT_BATCH} staff members, not {}",
                userids.len()
            )));
        }
        self.post(
            "/cgi-bin/externalcontact/batch/get_by_user",
            &json!({ "userid_list": userids, "cursor": cursor, "limit": 100 }),
        )
        .await
    }

    /// The corp's customer tags, id → name, every group (`get_corp_tag_list`).
    pub async fn corp_tags(&self) -> Result<Vec<(String, String)>, ApiError> {
        self.require(AccountKind::Wecom, "corp_tags")?;
        #[derive(Deserialize)]
        struct CorpTag {
            id: String,
            name: String,
        }
        #[derive(Deserialize)]
        struct Group {
            #[serde(default)]
            tag: Vec<CorpTag>,
        }
        #[derive(Deserialize)]
        struct Groups {
            #[serde(default)]
            tag_group: Vec<Group>,
        }
        let groups: Groups = self
            .post("/cgi-bin/externalcontact/get_corp_tag_list", &json!({}))
            .await?;
        Ok(groups
            .tag_group
            .into_iter()
            .flat_map(|g| g.tag)
            .map(|t| (t.id, t.name))
            .collect())
    }

    /// A text app message to `touser` (`"UserID1|UserID2"`) from the configured agent;
    /// returns the user ids WeCom reported invalid.
    pub async fn send_app_message(
        &self,
        touser: &str,
        text: &str,
    ) -> Result<Vec<String>, ApiError> {
        self.require(AccountKind::Wecom, "send_app_message")?;
        let agentid = self.agent_id.ok_or_else(|| {
            ApiError::Invalid("app messages need the WeCom app's agent_id".into())
        })?;
        #[derive(Deserialize)]
        struct Sent {
            #[serde(default)]
            invaliduser: String,
        }
        let sent: Sent = self
            .post(
                "/cgi-bin/message/send",
                &json!({
                    "touser": touser,
                    "agentid": agentid,
                    "msgtype": "text",
                    "text": { "content": text },
                }),
            )
            .await?;
        Ok(sent
            .invaliduser
            .split('|')
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Adds and removes corp tags on an external contact, as seen by staff member `userid`.
    pub async fn mark_tag(
        &self,
        userid: &str,
        external_userid: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<(), ApiError> {
        self.require(AccountKind::Wecom, "mark_tag")?;
        self.post::<IgnoredAny, _>(
            "/cgi-bin/externalcontact/mark_tag",
            &json!({
                "userid": userid,
                "external_userid": external_userid,
                "add_tag": add,
                "remove_tag": remove,
            }),
        )
        .await
        .map(drop)
    }

    /// A "contact me" QR code (`scene` 2) adding one of `staff` (one: `type` 1, several:
    /// `type` 2), with `state` (at most 30 characters) coming back in the
    /// `add_external_contact` event of everyone who adds through it.
    pub async fn add_contact_way(
        &self,
        state: &str,
        staff: &[String],
    ) -> Result<ContactWay, ApiError> {
        self.require(AccountKind::Wecom, "add_contact_way")?;
        let chars = state.chars().count();
        if !(1..=30).contains(&chars) {
            return Err(ApiError::Invalid(format!(
                "a contact code's state is 1 to 30 characters, this one is {chars}"
            )));
        }
        if staff.is_empty() {
            return Err(ApiError::Invalid(
                "a contact code needs at least one staff member".into(),
            ));
        }
        let kind = if staff.len() == 1 { 1 } else { 2 };
        self.post(
            "/cgi-bin/externalcontact/add_contact_way",
            &json!({ "type": kind, "scene": 2, "state": state, "user": staff }),
        )
        .await
    }

    /// Answers an `add_external_contact` event's WelcomeCode (valid 20 seconds, once).
    pub async fn send_welcome_msg(&self, welcome_code: &str, text: &str) -> Result<(), ApiError> {
        self.require(AccountKind::Wecom, "send_welcome_msg")?;
        self.post::<IgnoredAny, _>(
            "/cgi-bin/externalcontact/send_welcome_msg",
            &json!({ "welcome_code": welcome_code, "text": { "content": text } }),
        )
        .await
        .map(drop)
    }

    /// A text message through a group robot's webhook (`webhook_base` is normally
    /// [`WECOM_API_BASE`]). No token: the key is the credential. 20 messages a minute per
    /// robot.
    pub async fn robot_send(
        &self,
        webhook_base: &str,
        key: &Secret,
        text: &str,
    ) -> Result<(), ApiError> {
        let target = url(
            webhook_base,
            "/cgi-bin/webhook/send",
            &[("key", key.expose())],
        )?;
        let request = self
            .http
            .post(target)
            .json(&json!({ "msgtype": "text", "text": { "content": text } }));
        exchange::<IgnoredAny>(request).await.map(drop)
    }

    // --- The call machinery ---

    async fn batch(&self, path: &str, tag_id: i64, openids: &[String]) -> Result<(), ApiError> {
        self.require(AccountKind::Official, path)?;
        for chunk in openids.chunks(MAX_OPENIDS_PER_BATCH) {
            self.post::<IgnoredAny, _>(path, &json!({ "openid_list": chunk, "tagid": tag_id }))
                .await?;
        }
        Ok(())
    }

    async fn post<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.call(Method::POST, path, &[], Some(body)).await
    }

    /// Token → call → on a token error, one refresh and one retry.
    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let token = self.tokens.current().await?;
        match self.once(&method, path, query, body, &token).await {
            Err(e) if e.is_token_error() => {
                tracing::info!(account = %self.account, path, error = %e, "token refused; refreshing and retrying once");
                let token = self.tokens.replace(&token).await?;
                self.once(&method, path, query, body, &token).await
            }
            other => other,
        }
    }

    async fn once<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
        token: &Secret,
    ) -> Result<T, ApiError> {
        let mut pairs = vec![("access_token", token.expose())];
        pairs.extend_from_slice(query);
        let mut request = self
            .http
            .request(method.clone(), url(&self.api_base, path, &pairs)?);
        if let Some(body) = body {
            request = request.json(body);
        }
        let result = exchange(request).await;
        if let Err(e) = &result {
            tracing::debug!(account = %self.account, path, error = %e, "API call failed");
        }
        result
    }

    fn require(&self, kind: AccountKind, call: &str) -> Result<(), ApiError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(ApiError::Invalid(format!(
                "{call} is a {kind:?} API; account `{}` is {:?}",
                self.account, self.kind
            )))
        }
    }
}
