//! The outbound half: typed calls to the WeChat official-account and WeCom APIs, with
//! access tokens shared by every task of a process and kept in the store across restarts.
//!
//! - `error`: [`ApiError`], every errcode siyu reacts to as a variant, and the transient /
//!   token-error classification callers base retries on.
//! - `token`: the token cache (refreshed ahead of expiry, single flight, persisted).
//! - `client`: [`ApiClient`], one per account: token → call → one refresh-and-retry.
//! - `model`: the request and answer types.
//! - `transport`: one HTTP exchange and the uniform decoding of WeChat's answers.
//!
//! Tests and local development talk to [`crate::fake_wechat`] instead of WeChat.

mod client;
mod error;
mod model;
mod token;
mod transport;

pub use client::{
    ApiClient, ApiSettings, MAX_OPENIDS_PER_BATCH, MAX_OPENIDS_PER_INFO_BATCH,
    MAX_QR_EXPIRE_SECONDS, MAX_USERIDS_PER_CONTACT_BATCH, OFFICIAL_API_BASE, WECOM_API_BASE,
};
pub use error::ApiError;
pub use model::{
    ContactEntry, ContactWay, ContactsPage, CustomMessage, ExternalContact, FollowInfo,
    FollowerPage, MiniProgramLink, QrTicket, Tag, TemplateMessage, TemplateValue, UploadedMedia,
    UserInfo,
};
pub use token::REFRESH_AHEAD_SECS;
