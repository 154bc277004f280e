//! A follower's state: what siyu knows about one openid of one account.
//!
//! Pure data with the small state transitions the engine applies. Stored whole (one value
//! per follower) so that one callback's change is one atomic write.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// How many recent inbound messages a follower keeps. Bounded so a chatty follower's
/// record stays small and the per-callback write stays cheap.
pub const HISTORY_LEN: usize = 10;

/// Missing fields read as their defaults, so records written by an older version load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Follower {
    pub openid: String,
    pub subscribed: bool,
    pub first_subscribed_at: Option<i64>,
    pub last_subscribed_at: Option<i64>,
    pub unsubscribed_at: Option<i64>,
    /// The scene of the first `qrscene_` subscribe (or WeCom channel-code state): the
    /// channel that brought this follower in.
    pub first_scene: Option<String>,
    /// Every scene seen since, in order (subscribes via QR and later SCANs).
    pub scenes: Vec<SceneVisit>,
    pub tags: BTreeSet<String>,
    pub attributes: BTreeMap<String, String>,
    pub counters: BTreeMap<String, i64>,
    pub messages_in: u64,
    /// Time of the last inbound message or window-opening event; WeChat's 48-hour
    /// customer-service window is counted from it.
    pub last_inbound_at: Option<i64>,
    /// Time of the last subscribe, QR scan or menu click: each opens WeChat's shorter
    /// customer-service allowance (3 messages within a minute).
    pub last_interaction_at: Option<i64>,
    /// The most recent inbound callbacks, newest last, at most `HISTORY_LEN`.
    pub history: Vec<HistoryEntry>,
    /// What is left of WeChat's customer-service window (protocol.md §9), as far as siyu
    /// knows: opened by the follower's acts, used by the customer-service messages siyu
    /// sends. `None`: never opened.
    pub cs_window: Option<CsWindow>,
    /// The person behind this identity across the brand's accounts (WeChat's unionid),
    /// when the platform tells it (a sync, a WeCom contact).
    pub unionid: Option<String>,
    /// The remark the account gave this follower in WeChat (`user/info`'s `remark`).
    pub remark: Option<String>,
    /// The follower's language as WeChat reports it (e.g. `zh_CN`).
    pub language: Option<String>,
    /// How the follower came to the account, in WeChat's words (`ADD_SCENE_QR_CODE`, …).
    pub subscribe_scene: Option<String>,
    /// WeCom contacts: the contact's name (WeCom still returns it; official accounts do not).
    pub name: Option<String>,
    /// WeCom contacts: each staff member who has added this contact.
    pub staff: Vec<StaffLink>,
    /// What the last sync from the platform saw (`siyu followers sync`); `None`: never
    /// synced. Its tags are the base of the next sync's three-way merge.
    pub synced: Option<SyncMark>,
}

/// One staff member's side of a WeCom external contact (`follow_info`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StaffLink {
    pub userid: String,
    pub remark: String,
    /// Unix seconds.
    pub added_at: i64,
    /// WeCom's `add_way` (1: scanned a QR code, …).
    pub add_way: i64,
    /// The "contact me" code's state, the WeCom twin of a QR scene.
    pub state: String,
    /// Corp tags this staff member put on the contact, by name.
    pub tags: BTreeSet<String>,
    /// The sync run that last saw this link (0: known from a callback only).
    pub seen_run: i64,
}

/// What one sync run saw of a follower.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncMark {
    /// The sync run (its start, unix milliseconds) that wrote this mark.
    pub run: i64,
    /// Unix seconds.
    pub at: i64,
    /// The platform's tags for the follower as that run read them.
    pub tags: BTreeSet<String>,
    /// What that run did to the follower, so a resumed run counts it once.
    pub outcome: SyncOutcome,
}

/// What a sync did to one follower.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncOutcome {
    New,
    Updated,
    #[default]
    Unchanged,
    Unsubscribed,
}

/// How many customer-service messages WeChat still accepts for a follower, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsWindow {
    pub remaining: u32,
    /// Unix seconds; the window is closed from this second on.
    pub until: i64,
}

/// After a message: 5 customer-service messages within 48 hours.
pub const CS_AFTER_MESSAGE: (u32, i64) = (5, 48 * 3600);
/// After a subscribe, a QR scan or a menu click: 3 within a minute.
pub const CS_AFTER_INTERACTION: (u32, i64) = (3, 60);

/// Why a customer-service message may not be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsClosed {
    #[error("outside the customer-service window: the follower has not written within 48 hours (or interacted within a minute)")]
    Expired,
    #[error(
        "the customer-service window's allowance is used up: wait for the follower's next message"
    )]
    UsedUp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneVisit {
    pub scene: String,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: i64,
    /// `text`, `image`, `event:subscribe`, …
    pub kind: String,
    /// The text (truncated) or event key, if any.
    pub detail: Option<String>,
    /// The rule that answered, if any.
    pub rule: Option<String>,
}

impl Follower {
    pub fn new(openid: impl Into<String>) -> Self {
        Follower {
            openid: openid.into(),
            ..Follower::default()
        }
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.contains(tag)
    }

    /// The follower acted (`allowance` = (count, seconds), e.g. [`CS_AFTER_MESSAGE`]).
    /// Allowances do not add up (protocol.md §9): the count and the end each become the
    /// new act's if that is larger than what is left.
    pub fn open_cs_window(&mut self, (limit, period): (u32, i64), now: i64) {
        let fresh = CsWindow {
            remaining: limit,
            until: now.saturating_add(period),
        };
        self.cs_window = Some(match self.cs_window {
            Some(w) if w.until > now => CsWindow {
                remaining: w.remaining.max(fresh.remaining),
                until: w.until.max(fresh.until),
            },
            _ => fresh,
        });
    }

    /// Whether WeChat would accept a customer-service message now.
    pub fn cs_open(&self, now: i64) -> Result<(), CsClosed> {
        match self.cs_window {
            Some(w) if w.until <= now => Err(CsClosed::Expired),
            Some(w) if w.remaining == 0 => Err(CsClosed::UsedUp),
            Some(_) => Ok(()),
            None => Err(CsClosed::Expired),
        }
    }

    /// Uses one message of the window, or says why there is none.
    pub fn take_cs_slot(&mut self, now: i64) -> Result<(), CsClosed> {
        self.cs_open(now)?;
        if let Some(w) = self.cs_window.as_mut() {
            w.remaining -= 1;
        }
        Ok(())
    }

    /// Gives back a slot taken for a message WeChat did not accept.
    pub fn return_cs_slot(&mut self, now: i64) {
        if let Some(w) = self.cs_window.as_mut().filter(|w| w.until > now) {
            w.remaining += 1;
        }
    }

    /// The scene of the latest visit, falling back to the first scene.
    pub fn latest_scene(&self) -> Option<&str> {
        self.scenes
            .last()
            .map(|v| v.scene.as_str())
            .or(self.first_scene.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cs_window_opens_takes_and_expires() {
        let mut f = Follower::new("o");
        assert_eq!(f.take_cs_slot(0), Err(CsClosed::Expired), "never opened");

        // A subscribe: 3 within a minute.
        f.open_cs_window(CS_AFTER_INTERACTION, 1000);
        for _ in 0..3 {
            assert_eq!(f.take_cs_slot(1010), Ok(()));
        }
        assert_eq!(f.take_cs_slot(1010), Err(CsClosed::UsedUp));
        assert_eq!(f.cs_open(1060), Err(CsClosed::Expired), "60 s later");

        // A message after the subscribe: 5 within 48 hours, replacing the smaller allowance.
        f.open_cs_window(CS_AFTER_INTERACTION, 2000);
        f.take_cs_slot(2001).unwrap();
        f.open_cs_window(CS_AFTER_MESSAGE, 2002);
        assert_eq!(
            f.cs_window,
            Some(CsWindow {
                remaining: 5,
                until: 2002 + 48 * 3600
            })
        );
        // A click later does not shrink it: each part keeps the larger value.
        f.take_cs_slot(2003).unwrap();
        f.take_cs_slot(2003).unwrap();
        f.open_cs_window(CS_AFTER_INTERACTION, 2004);
        assert_eq!(
            f.cs_window,
            Some(CsWindow {
                remaining: 3,
                until: 2002 + 48 * 3600
            })
        );
        // A slot given back counts again, but not once the window has closed.
        f.take_cs_slot(2005).unwrap();
        f.return_cs_slot(2006);
        assert_eq!(f.cs_window.unwrap().remaining, 3);
        f.return_cs_slot(2002 + 48 * 3600);
        assert_eq!(f.cs_window.unwrap().remaining, 3);
        assert_eq!(f.cs_open(2002 + 48 * 3600), Err(CsClosed::Expired));
    }
}
