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

    /// The scene of the latest visit, falling back to the first scene.
    pub fn latest_scene(&self) -> Option<&str> {
        self.scenes
            .last()
            .map(|v| v.scene.as_str())
            .or(self.first_scene.as_deref())
    }
}
