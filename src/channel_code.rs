//! Channel codes siyu makes itself (`code = "auto"` in `channels.toml`): what is stored
//! per (account, channel), and when a code is to be made or made again (PURE: the clock
//! is an argument).
//!
//! The life of a code: a look of the server (`src/server/channel_codes.rs`) finds an
//! `auto` channel without a code and queues an outbox item ([`crate::outbox::Effect::ChannelCode`]),
//! marking the channel *queued* in the same atomic write, so a second look (or a second
//! instance) queues nothing more while that item waits; the worker makes the call and
//! stores the code it got (*issued*), which clears the mark. A temporary code is queued
//! again when it nears its end. A call that fails for good (a dead letter) marks the
//! channel *failed* with the reason: the server leaves it alone until an operator issues
//! it again (`siyu channels issue NAME`), so a refused call is not repeated every look.

use serde::{Deserialize, Serialize};

/// What the store holds for one channel's code.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelCode {
    pub account: String,
    pub channel: String,
    /// The code in use (the newest one made).
    #[serde(default)]
    pub issued: Option<IssuedCode>,
    /// Unix seconds an outbox item asking for a code was queued, while it is queued.
    #[serde(default)]
    pub queued_at: Option<i64>,
    /// Why the last item asking for a code died (cleared by the next code made).
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A code as WeChat or WeCom made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedCode {
    /// An official QR code's ticket (for WeChat's `showqrcode` image).
    #[serde(default)]
    pub ticket: Option<String>,
    /// What the QR code encodes (official: the `url` of `qrcode/create`, drawn by
    /// `siyu channels png`); WeCom: the `qr_code` image link of `add_contact_way`.
    pub url: String,
    /// A WeCom contact code's `config_id` (to edit or delete it at WeCom).
    #[serde(default)]
    pub config_id: Option<String>,
    /// Unix seconds; `None`: the code lasts.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub issued_at: i64,
}

/// Why a look queues a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No code yet.
    First,
    /// The code in use runs out soon.
    Reissue,
}

impl Need {
    pub fn as_str(self) -> &'static str {
        match self {
            Need::First => "first",
            Need::Reissue => "reissue",
        }
    }
}

/// Whether the server's look queues a code for a channel with `code = "auto"`, given
/// what is stored (`None`: nothing yet). A temporary code is re-issued when less than
/// `reissue_before_secs` are left, or less than half its life if that is shorter (a
/// code living a day is not re-issued at every look). Nothing while one is queued, nor
/// after a failure (an operator's `channels issue` clears it).
pub fn need(stored: Option<&ChannelCode>, now: i64, reissue_before_secs: i64) -> Option<Need> {
    let Some(stored) = stored else {
        return Some(Need::First);
    };
    if stored.queued_at.is_some() || stored.last_error.is_some() {
        return None;
    }
    let Some(code) = &stored.issued else {
        return Some(Need::First);
    };
    let expires_at = code.expires_at?;
    let life = (expires_at - code.issued_at).max(0);
    let margin = reissue_before_secs.min(life / 2);
    (expires_at - now < margin).then_some(Need::Reissue)
}

/// The code's state in a word or a few, for `siyu channels` and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not `auto`, and nothing stored.
    Manual,
    /// `auto`, no code yet, nothing queued.
    None,
    Queued,
    Issued,
    /// Issued, and past its end.
    Expired,
    Failed,
}

impl State {
    pub fn of(stored: Option<&ChannelCode>, auto: bool, now: i64) -> State {
        let Some(s) = stored else {
            return if auto { State::None } else { State::Manual };
        };
        if s.queued_at.is_some() {
            State::Queued
        } else if s.last_error.is_some() {
            State::Failed
        } else {
            match &s.issued {
                Some(c) if c.expires_at.is_some_and(|e| e <= now) => State::Expired,
                Some(_) => State::Issued,
                None if auto => State::None,
                None => State::Manual,
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Manual => "manual",
            State::None => "none",
            State::Queued => "queued",
            State::Issued => "issued",
            State::Expired => "expired",
            State::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn issued(issued_at: i64, expires_at: Option<i64>) -> ChannelCode {
        ChannelCode {
            account: "demo".into(),
            channel: "c".into(),
            issued: Some(IssuedCode {
                ticket: Some("t".into()),
                url: "http://weixin.qq.com/q/x".into(),
                config_id: None,
                expires_at,
                issued_at,
            }),
            ..ChannelCode::default()
        }
    }

    #[test]
    fn when_a_code_is_queued() {
        let queued = ChannelCode {
            queued_at: Some(5),
            ..issued(0, Some(DAY))
        };
        let failed = ChannelCode {
            last_error: Some("45157".into()),
            issued: None,
            ..issued(0, None)
        };
        let blank = ChannelCode::default();
        for (name, stored, now, want) in [
            ("nothing stored", None, 0, Some(Need::First)),
            ("stored without a code", Some(&blank), 0, Some(Need::First)),
            ("queued already", Some(&queued), 30 * DAY, None),
            ("failed: left to the operator", Some(&failed), 0, None),
            ("permanent", Some(&issued(0, None)), 900 * DAY, None),
            (
                "30 days, 4 left",
                Some(&issued(0, Some(30 * DAY))),
                26 * DAY,
                None,
            ),
            (
                "30 days, 3 left exactly",
                Some(&issued(0, Some(30 * DAY))),
                27 * DAY,
                None,
            ),
            (
                "30 days, under 3 left",
                Some(&issued(0, Some(30 * DAY))),
                27 * DAY + 1,
                Some(Need::Reissue),
            ),
            (
                "expired",
                Some(&issued(0, Some(30 * DAY))),
                31 * DAY,
                Some(Need::Reissue),
            ),
            (
                "a 2-day code: at half its life, not at once",
                Some(&issued(0, Some(2 * DAY))),
                DAY - 1,
                None,
            ),
            (
                "a 2-day code past half its life",
                Some(&issued(0, Some(2 * DAY))),
                DAY + 1,
                Some(Need::Reissue),
            ),
        ] {
            assert_eq!(need(stored, now, 3 * DAY), want, "{name}");
        }
    }

    #[test]
    fn states() {
        let queued = ChannelCode {
            queued_at: Some(5),
            ..issued(0, Some(DAY))
        };
        let failed = ChannelCode {
            last_error: Some("refused".into()),
            ..issued(0, Some(DAY))
        };
        for (name, stored, auto, want) in [
            ("manual", None, false, State::Manual),
            ("auto, nothing", None, true, State::None),
            ("queued", Some(&queued), true, State::Queued),
            ("failed", Some(&failed), true, State::Failed),
            ("issued", Some(&issued(0, Some(DAY))), true, State::Issued),
            ("expired", Some(&issued(0, Some(10))), true, State::Expired),
            ("permanent", Some(&issued(0, None)), false, State::Issued),
        ] {
            assert_eq!(State::of(stored, auto, 100), want, "{name}");
        }
    }
}
