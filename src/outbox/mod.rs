//! The durable outbox: every call siyu makes to WeChat's or WeCom's API on its own
//! initiative (tag sync, follow-up messages, welcome messages, later campaign sends) is
//! first an [`OutboxItem`] in the store, written in the same atomic write as the follower
//! change that caused it, and then delivered by the background [`worker`].
//!
//! This module is the pure part: what an item says, when a failed one is tried again, and
//! which failures are final. The worker does the I/O.

pub mod channel_code;
pub mod report;
pub mod worker;

use serde::{Deserialize, Serialize};

use crate::api::ApiError;
use crate::protocol::Reply;

/// Unix milliseconds now: the outbox's clock (due times, ages).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What an outbox item asks WeChat to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Effect {
    /// Official account: mirror one local tag change onto the follower's WeChat user tags
    /// (batched: the worker tags up to 50 followers per call).
    Tag {
        openid: String,
        tag: String,
        add: bool,
    },
    /// WeCom: mirror one local tag change onto an external contact's corp tags (mark_tag,
    /// as the staff member who added them).
    CorpTag {
        staff: String,
        external_userid: String,
        tag: String,
        add: bool,
    },
    /// A customer-service message, sent only while the follower's window is open.
    Custom { openid: String, message: Reply },
    /// WeCom's welcome message for a new external contact: the code is usable once and
    /// only until `expires_at` (unix seconds; 20 s after the event).
    Welcome {
        welcome_code: String,
        text: String,
        expires_at: i64,
    },
    /// One follower's campaign message: the channel and the personalised content are
    /// chosen when it is sent (`src/campaign/send.rs`).
    Campaign { campaign: String, openid: String },
    /// A campaign's WeCom group-robot announcement (one post, no follower).
    Announcement { campaign: String },
    /// One mass send of a campaign: up to 10,000 followers in one call. `batch` numbers
    /// the campaign's mass sends (their idempotency key on WeChat's side).
    Mass {
        campaign: String,
        batch: u64,
        openids: Vec<String>,
    },
    /// The code of a channel with `code = "auto"` (`crate::channel_code`): made at WeChat
    /// (a parametric QR code) or WeCom (a "contact me" code) and stored for the channel.
    ChannelCode {
        channel: String,
        request: crate::channel::CodeRequest,
    },
    /// A referral participant's personal code (`src/referral_flow/send.rs`): made or
    /// reused (`qrcode/create`), drawn on the poster and uploaded (`media/upload`), sent
    /// as a customer-service image (or the code's link as text, without a poster).
    ReferralPoster { programme: String, openid: String },
    /// A reward tier reached: the coupon claimed (its idempotent key), then the notice by
    /// customer service, a template message, or kept for the inviter's next message.
    ReferralNotice {
        programme: String,
        inviter: String,
        tier: u32,
    },
}

impl Effect {
    /// The follower the effect is about.
    pub fn follower(&self) -> &str {
        match self {
            Effect::Tag { openid, .. }
            | Effect::Custom { openid, .. }
            | Effect::Campaign { openid, .. }
            | Effect::ReferralPoster { openid, .. }
            | Effect::ReferralNotice {
                inviter: openid, ..
            } => openid,
            Effect::CorpTag {
                external_userid, ..
            } => external_userid,
            Effect::Welcome { .. }
            | Effect::Announcement { .. }
            | Effect::Mass { .. }
            | Effect::ChannelCode { .. } => "",
        }
    }

    /// A short name for listings and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::Tag { .. } => "tag",
            Effect::CorpTag { .. } => "corp_tag",
            Effect::Custom { .. } => "custom",
            Effect::Welcome { .. } => "welcome",
            Effect::Campaign { .. } => "campaign",
            Effect::Announcement { .. } => "announcement",
            Effect::Mass { .. } => "mass",
            Effect::ChannelCode { .. } => "channel_code",
            Effect::ReferralPoster { .. } => "referral_poster",
            Effect::ReferralNotice { .. } => "referral_notice",
        }
    }

    /// One line for `siyu outbox` and logs (no secrets: none are in effects).
    pub fn describe(&self) -> String {
        match self {
            Effect::Tag { openid, tag, add }
            | Effect::CorpTag {
                external_userid: openid,
                tag,
                add,
                ..
            } => format!("{} tag {tag} {} {openid}", sign(*add), to_or_from(*add)),
            Effect::Custom { openid, message } => {
                format!(
                    "{} message to {openid}",
                    crate::rules::followup_kind(message)
                )
            }
            Effect::Welcome { text, .. } => {
                let short: String = text.chars().take(24).collect();
                format!("welcome message \"{short}\"")
            }
            Effect::Campaign { campaign, openid } => {
                format!("campaign {campaign} message to {openid}")
            }
            Effect::Announcement { campaign } => {
                format!("campaign {campaign} group-robot announcement")
            }
            Effect::Mass {
                campaign,
                batch,
                openids,
            } => format!(
                "campaign {campaign} mass send #{batch} to {} followers",
                openids.len()
            ),
            Effect::ChannelCode { channel, request } => match request {
                crate::channel::CodeRequest::Qr {
                    permanent: true, ..
                } => format!("channel {channel}: a permanent QR code"),
                crate::channel::CodeRequest::Qr { expire_seconds, .. } => format!(
                    "channel {channel}: a QR code for {} days",
                    expire_seconds / 86_400
                ),
                crate::channel::CodeRequest::ContactWay { staff } => format!(
                    "channel {channel}: a contact code for {} staff",
                    staff.len()
                ),
            },
            Effect::ReferralPoster { programme, openid } => {
                format!("referral {programme} poster to {openid}")
            }
            Effect::ReferralNotice {
                programme,
                inviter,
                tier,
            } => format!("referral {programme} tier {tier} notice to {inviter}"),
        }
    }
}

fn sign(add: bool) -> &'static str {
    if add {
        "add"
    } else {
        "remove"
    }
}

fn to_or_from(add: bool) -> &'static str {
    if add {
        "to"
    } else {
        "from"
    }
}

/// An effect about to be queued: the engine's (or a campaign's) request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewItem {
    pub effect: Effect,
    /// Why: `rule:NAME`, `campaign:NAME`, `admin`.
    pub origin: String,
    /// Unix milliseconds before which it must not be sent (follow-ups are spaced out).
    pub not_before_ms: i64,
}

/// A queued effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Unique and increasing: the queue's order.
    pub id: u64,
    pub account: String,
    pub effect: Effect,
    pub origin: String,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Not to be tried before this (unix milliseconds).
    pub due_ms: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl OutboxItem {
    pub fn new(id: u64, account: &str, item: NewItem, now_ms: i64) -> OutboxItem {
        OutboxItem {
            id,
            account: account.to_string(),
            due_ms: item.not_before_ms.max(now_ms),
            effect: item.effect,
            origin: item.origin,
            created_ms: now_ms,
            attempts: 0,
            last_error: None,
        }
    }

    pub fn state(&self) -> &'static str {
        if self.attempts == 0 {
            "pending"
        } else {
            "retrying"
        }
    }
}

/// An item given up on, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadItem {
    pub item: OutboxItem,
    pub reason: String,
    /// Unix milliseconds.
    pub died_ms: i64,
}

impl DeadItem {
    /// The item back in the queue (`siyu outbox retry`): due now, attempts reset, and why it
    /// had died kept as its last error. Every backend requeues through this.
    pub fn requeued(self, now_ms: i64) -> OutboxItem {
        OutboxItem {
            attempts: 0,
            due_ms: now_ms,
            last_error: Some(format!("requeued after: {}", self.reason)),
            ..self.item
        }
    }
}

/// How the worker retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The first retry waits about this long; each next one twice as long.
    pub base_ms: u64,
    pub max_ms: u64,
    /// Attempts in all (the first included) before an item goes to the dead letters.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 1_000,
            max_ms: 10 * 60 * 1_000,
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempts + 1`, after `attempts` failures (≥ 1): exponential,
    /// capped, with "equal jitter" (half fixed, half random, `jitter` in [0, 1)) so that
    /// items failing together do not retry together.
    pub fn backoff_ms(&self, attempts: u32, jitter: f64) -> u64 {
        let exp = attempts.saturating_sub(1).min(40);
        let full = self.base_ms.saturating_mul(1u64 << exp).min(self.max_ms);
        let half = full / 2;
        half + (half as f64 * jitter.clamp(0.0, 1.0)) as u64
    }
}

/// What to do with an item after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Try again after this many milliseconds.
    Retry(u64),
    /// Give up, for this reason.
    Dead(String),
}

/// Transient failures (busy, quota, timeouts, dropped connections, 5xx) are retried with
/// backoff until `max_attempts`; everything else (invalid openid, out of window,
/// unsubscribed, a refused request) fails the same way again and goes straight to the dead
/// letters.
pub fn verdict(policy: &RetryPolicy, attempts: u32, error: &ApiError, jitter: f64) -> Verdict {
    if !error.is_transient() {
        return Verdict::Dead(error.to_string());
    }
    if attempts >= policy.max_attempts {
        return Verdict::Dead(format!("gave up after {attempts} attempts: {error}"));
    }
    Verdict::Retry(policy.backoff_ms(attempts, jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let p = RetryPolicy {
            base_ms: 100,
            max_ms: 1_000,
            max_attempts: 5,
        };
        assert_eq!(p.backoff_ms(1, 0.0), 50);
        assert_eq!(p.backoff_ms(1, 0.999), 99);
        assert_eq!(p.backoff_ms(2, 0.0), 100);
        assert_eq!(p.backoff_ms(3, 0.5), 300);
        assert_eq!(p.backoff_ms(4, 0.0), 400);
        assert_eq!(p.backoff_ms(5, 0.0), 500, "capped at max_ms");
        assert_eq!(p.backoff_ms(60, 0.0), 500, "no overflow");
    }

    #[test]
    fn verdicts_by_error_class() {
        let p = RetryPolicy {
            base_ms: 100,
            max_ms: 1_000,
            max_attempts: 3,
        };
        let transient = [
            ApiError::SystemBusy,
            ApiError::DailyQuotaReached,
            ApiError::MinuteQuotaReached,
            ApiError::Timeout,
            ApiError::Network("reset".into()),
            ApiError::Http(502),
        ];
        for e in &transient {
            assert_eq!(verdict(&p, 1, e, 0.0), Verdict::Retry(50), "{e}");
            let Verdict::Dead(reason) = verdict(&p, 3, e, 0.0) else {
                panic!("{e}: must give up after max_attempts")
            };
            assert!(reason.contains("gave up after 3 attempts"), "{reason}");
        }
        let permanent = [
            ApiError::InvalidOpenid,
            ApiError::OutOfWindow,
            ApiError::OverResponseCount,
            ApiError::Unsubscribed,
            ApiError::Http(404),
            ApiError::Invalid("too long".into()),
        ];
        for e in &permanent {
            assert_eq!(verdict(&p, 1, e, 0.0), Verdict::Dead(e.to_string()), "{e}");
        }
    }

    #[test]
    fn items_start_due_no_earlier_than_asked() {
        let new = |not_before_ms| NewItem {
            effect: Effect::Tag {
                openid: "o".into(),
                tag: "vip".into(),
                add: true,
            },
            origin: "rule:r".into(),
            not_before_ms,
        };
        let now = OutboxItem::new(7, "demo", new(0), 5_000);
        assert_eq!((now.due_ms, now.state()), (5_000, "pending"));
        assert_eq!(OutboxItem::new(8, "demo", new(9_000), 5_000).due_ms, 9_000);
        assert_eq!(now.effect.describe(), "add tag vip to o");
    }
}
