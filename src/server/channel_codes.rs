//! Channel codes in `siyu serve` (`code = "auto"` in `channels.toml`, see
//! `crate::channel_code`): a look every `[channels] check_secs` queues the code of each
//! such channel without one, and re-issues a temporary code before it runs out; the
//! outbox worker makes the call. The admin API lists the channels with their codes
//! (`GET /admin/v1/channels`, viewer) and queues one by hand (`POST
//! /admin/v1/channels/{name}/issue`, operator, audited).
//!
//! Several instances on PostgreSQL: the look runs under the lease `channel-codes`, so one
//! instance looks at a time; queuing itself is atomic per channel
//! ([`crate::store::ChannelCodes::queue_channel_code`]), so neither a second look nor an
//! operator's issue racing it queues a second item.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use super::admin::{authorize, on_pool, AdminError};
use super::reload::audit;
use super::AppState;
use crate::channel::{CodeOrder, CodeRequest};
use crate::channel_code::{need, ChannelCode, State};
use crate::config::{Role, Settings};
use crate::outbox::{now_ms, Effect, NewItem};
use crate::store::{Store, StoreError};

/// The lease a look runs under (PostgreSQL: one instance at a time).
const LEASE: &str = "channel-codes";
/// Long enough for a look over every channel, short enough for another instance to take
/// over soon after one is killed mid-look.
const LEASE_MS: i64 = 60_000;
/// Who the look is, in outbox items' origin.
pub const BY: &str = "channels";
/// WeChat's own rendering of an official QR code, by ticket.
const SHOW_QRCODE: &str = "https://mp.weixin.qq.com/cgi-bin/showqrcode";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/channels", web::get().to(list))
        .route("/channels/{name}/issue", web::post().to(issue));
}

/// One channel of the file with its code, as the admin API and `siyu channels` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listed {
    pub account: String,
    pub name: String,
    pub kind: String,
    pub title: String,
    /// `auto` or `manual`.
    pub code: String,
    /// `manual`, `none`, `queued`, `issued`, `expired` or `failed`.
    pub state: String,
    pub url: Option<String>,
    pub ticket: Option<String>,
    /// WeChat's image of an official code (showqrcode).
    pub image_url: Option<String>,
    pub config_id: Option<String>,
    /// Unix seconds.
    pub issued_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub queued_at: Option<i64>,
    pub last_error: Option<String>,
}

/// Every channel of the file, in file order, with what the store holds for it.
pub fn list_channels(
    settings: &Settings,
    store: &dyn Store,
    now: i64,
) -> Result<Vec<Listed>, StoreError> {
    let stored = store.all_channel_codes()?;
    Ok(settings
        .channels
        .iter()
        .map(|c| {
            let entry = stored
                .iter()
                .find(|e| e.account == c.account && e.channel == c.name);
            let auto = settings.channel_code(&c.account, &c.name).is_some();
            let issued = entry.and_then(|e| e.issued.as_ref());
            let ticket = issued.and_then(|i| i.ticket.clone());
            Listed {
                account: c.account.clone(),
                name: c.name.clone(),
                kind: c.kind.to_string(),
                title: c.title.clone(),
                code: if auto { "auto" } else { "manual" }.into(),
                state: State::of(entry, auto, now).as_str().into(),
                url: issued.map(|i| i.url.clone()),
                image_url: ticket.as_deref().and_then(|t| {
                    reqwest::Url::parse_with_params(SHOW_QRCODE, &[("ticket", t)])
                        .ok()
                        .map(String::from)
                }),
                ticket,
                config_id: issued.and_then(|i| i.config_id.clone()),
                issued_at: issued.map(|i| i.issued_at),
                expires_at: issued.and_then(|i| i.expires_at),
                queued_at: entry.and_then(|e| e.queued_at),
                last_error: entry.and_then(|e| e.last_error.clone()),
            }
        })
        .collect())
}

/// Queues the call making `order`'s code; `None` when one is queued already.
pub fn queue(
    store: &dyn Store,
    order: &CodeOrder,
    origin: &str,
    now_ms: i64,
) -> Result<Option<u64>, StoreError> {
    let item = NewItem {
        effect: Effect::ChannelCode {
            channel: order.channel.clone(),
            request: order.request.clone(),
        },
        origin: origin.to_string(),
        not_before_ms: now_ms,
    };
    store.queue_channel_code(&order.account, &order.channel, item, now_ms)
}

/// One look: what it queued, as (channel, why).
pub fn look(
    settings: &Settings,
    store: &dyn Store,
    can_call: &dyn Fn(&str) -> bool,
    now_ms: i64,
) -> Result<Vec<(String, &'static str)>, StoreError> {
    let reissue_before = (settings.channel_code_settings.reissue_days_before * 86_400.0) as i64;
    let mut queued = Vec::new();
    for order in &settings.channel_codes {
        if !can_call(&order.account) {
            continue;
        }
        let stored: Option<ChannelCode> = store.channel_code(&order.account, &order.channel)?;
        let Some(why) = need(stored.as_ref(), now_ms.div_euclid(1000), reissue_before) else {
            continue;
        };
        let origin = format!("{BY}:{}", why.as_str());
        if let Some(id) = queue(store, order, &origin, now_ms)? {
            tracing::info!(account = %order.account, channel = %order.channel, why = why.as_str(), id, "channel code queued (渠道码已排队)");
            queued.push((order.channel.clone(), why.as_str()));
        }
    }
    Ok(queued)
}

/// The look every `check_secs`, until `stopped` turns true; no task when no channel has
/// `code = "auto"`.
pub fn spawn(
    state: web::Data<AppState>,
    mut stopped: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if state.settings.channel_codes.is_empty() {
        return None;
    }
    let every = Duration::from_secs(state.settings.channel_code_settings.check_secs);
    Some(tokio::spawn(async move {
        let owner = crate::outbox::worker::instance_id();
        while !*stopped.borrow() {
            let looked = on_pool(&state, move |s| {
                let now = now_ms();
                if !s.store.lease(LEASE, owner, now, LEASE_MS)? {
                    return Ok(Vec::new());
                }
                let can_call = |account: &str| s.clients.contains_key(account);
                let queued = look(&s.settings, s.store.as_ref(), &can_call, now);
                // Released at once: the queue's own atomicity keeps the next look (here or
                // elsewhere) from queueing twice.
                let _ = s.store.release(LEASE, owner);
                Ok(queued?)
            })
            .await;
            match looked {
                Ok(queued) if !queued.is_empty() => state.outbox_wake.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "channel codes: cannot look at the store; looking again later")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                changed = stopped.changed() => if changed.is_err() { break },
            }
        }
    }))
}

async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, AdminError> {
    authorize(&state, &req, Role::Viewer)?;
    let channels = on_pool(&state, |s| {
        Ok(list_channels(
            &s.settings,
            s.store.as_ref(),
            now_ms().div_euclid(1000),
        )?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "channels": channels })))
}

#[derive(Debug, Deserialize)]
struct IssueQuery {
    account: Option<String>,
}

/// What `POST /admin/v1/channels/{name}/issue` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issued {
    pub account: String,
    pub name: String,
    /// False: an item was queued already (nothing more queued).
    pub queued: bool,
    /// The outbox item making the code, when queued now.
    pub id: Option<u64>,
}

/// Finds the channel `name` (of `account`, when several accounts have one of that name)
/// and the code siyu makes for it; the error says what is wrong in the operator's terms.
pub fn order_for<'s>(
    settings: &'s Settings,
    name: &str,
    account: Option<&str>,
) -> Result<&'s CodeOrder, IssueRefused> {
    let found: Vec<_> = settings
        .channels
        .iter()
        .filter(|c| c.name == name && account.is_none_or(|a| a == c.account))
        .collect();
    let channel = match found.as_slice() {
        [] => return Err(IssueRefused::Unknown(name.to_string())),
        [one] => one,
        many => {
            return Err(IssueRefused::Ambiguous {
                name: name.to_string(),
                accounts: many.iter().map(|c| c.account.clone()).collect(),
            })
        }
    };
    settings
        .channel_code(&channel.account, &channel.name)
        .ok_or_else(|| IssueRefused::Manual(name.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum IssueRefused {
    #[error("no channel `{0}` in the channels file (渠道文件中没有该渠道)")]
    Unknown(String),
    #[error("channel `{name}` is defined for several accounts ({}): name one with --account (多个账号有同名渠道，请指定账号)", accounts.join(", "))]
    Ambiguous { name: String, accounts: Vec<String> },
    #[error("channel `{0}` has no code = \"auto\" in the channels file: siyu does not make its code (add code = \"auto\", or use `siyu qrcode`) (该渠道不是自动生成渠道码)")]
    Manual(String),
}

async fn issue(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<IssueQuery>,
) -> Result<HttpResponse, AdminError> {
    let who = authorize(&state, &req, Role::Operator)?.name.clone();
    let name = path.into_inner();
    let order = order_for(&state.settings, &name, q.account.as_deref())
        .map_err(|e| match e {
            IssueRefused::Unknown(_) => AdminError::NotFound(e.to_string()),
            other => AdminError::BadRequest(other.to_string()),
        })?
        .clone();
    if !state.clients.contains_key(&order.account) {
        return Err(AdminError::BadRequest(format!(
            "account `{}` has no [account.api] settings: nothing can make the code (账号未配置 API)",
            order.account
        )));
    }
    let o = order.clone();
    let id = on_pool(&state, move |s| {
        Ok(queue(s.store.as_ref(), &o, "admin", now_ms())?)
    })
    .await?;
    if id.is_some() {
        state.outbox_wake.notify_one();
        let detail = match &order.request {
            CodeRequest::Qr {
                permanent: true, ..
            } => "qr_permanent".to_string(),
            CodeRequest::Qr { expire_seconds, .. } => format!("qr_temporary {expire_seconds} s"),
            CodeRequest::ContactWay { staff } => format!("contact_way {}", staff.join(",")),
        };
        audit(
            &state,
            &who,
            "channel.issue",
            &format!("{}/{}", order.account, order.channel),
            detail,
        );
    }
    Ok(HttpResponse::Ok().json(Issued {
        account: order.account,
        name: order.channel,
        queued: id.is_some(),
        id,
    }))
}
