//! Record layouts of earlier versions, read once and converted: postcard is not
//! self-describing, so every layout ever written must stay decodable here.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{Answer, Delivery, Record};
use crate::follower::{CsWindow, Follower, HistoryEntry, SceneVisit};

/// Version 2: the whole record in postcard, the follower's history inside it, every
/// cached answer decoded with it.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct RecordV2 {
    pub follower: Option<FollowerV3>,
    pub deliveries: Vec<DeliveryV2>,
}

/// A delivery as versions 1 and 2 stored it.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct DeliveryV2 {
    pub key: String,
    pub expires_at: i64,
    pub answer: Answer,
}

impl From<DeliveryV2> for Delivery {
    fn from(d: DeliveryV2) -> Delivery {
        Delivery {
            key: d.key,
            expires_at: d.expires_at,
            answer: d.answer,
        }
    }
}

impl From<RecordV2> for Record {
    fn from(r: RecordV2) -> Record {
        Record {
            follower: r.follower.map(Follower::from),
            deliveries: r.deliveries.into_iter().map(Delivery::from).collect(),
        }
    }
}

/// Version 1: `Follower` without `cs_window`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct RecordV1 {
    pub follower: Option<FollowerV1>,
    pub deliveries: Vec<DeliveryV2>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct FollowerV1 {
    pub openid: String,
    pub subscribed: bool,
    pub first_subscribed_at: Option<i64>,
    pub last_subscribed_at: Option<i64>,
    pub unsubscribed_at: Option<i64>,
    pub first_scene: Option<String>,
    pub scenes: Vec<SceneVisit>,
    pub tags: BTreeSet<String>,
    pub attributes: BTreeMap<String, String>,
    pub counters: BTreeMap<String, i64>,
    pub messages_in: u64,
    pub last_inbound_at: Option<i64>,
    pub last_interaction_at: Option<i64>,
    pub history: Vec<HistoryEntry>,
}

impl From<RecordV1> for Record {
    fn from(r: RecordV1) -> Record {
        Record {
            follower: r.follower.map(|f| Follower {
                openid: f.openid,
                subscribed: f.subscribed,
                first_subscribed_at: f.first_subscribed_at,
                last_subscribed_at: f.last_subscribed_at,
                unsubscribed_at: f.unsubscribed_at,
                first_scene: f.first_scene,
                scenes: f.scenes,
                tags: f.tags,
                attributes: f.attributes,
                counters: f.counters,
                messages_in: f.messages_in,
                last_inbound_at: f.last_inbound_at,
                last_interaction_at: f.last_interaction_at,
                history: f.history,
                // Unknown to version 1: treated as closed until the follower acts again.
                cs_window: None,
                ..Follower::default()
            }),
            deliveries: r.deliveries.into_iter().map(Delivery::from).collect(),
        }
    }
}

/// Versions 2 and 3: `Follower` before the platform's profile fields (unionid, remark,
/// language, subscribe scene, WeCom name and staff, the sync mark).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct FollowerV3 {
    pub openid: String,
    pub subscribed: bool,
    pub first_subscribed_at: Option<i64>,
    pub last_subscribed_at: Option<i64>,
    pub unsubscribed_at: Option<i64>,
    pub first_scene: Option<String>,
    pub scenes: Vec<SceneVisit>,
    pub tags: BTreeSet<String>,
    pub attributes: BTreeMap<String, String>,
    pub counters: BTreeMap<String, i64>,
    pub messages_in: u64,
    pub last_inbound_at: Option<i64>,
    pub last_interaction_at: Option<i64>,
    pub history: Vec<HistoryEntry>,
    pub cs_window: Option<CsWindow>,
}

impl From<FollowerV3> for Follower {
    fn from(f: FollowerV3) -> Follower {
        Follower {
            openid: f.openid,
            subscribed: f.subscribed,
            first_subscribed_at: f.first_subscribed_at,
            last_subscribed_at: f.last_subscribed_at,
            unsubscribed_at: f.unsubscribed_at,
            first_scene: f.first_scene,
            scenes: f.scenes,
            tags: f.tags,
            attributes: f.attributes,
            counters: f.counters,
            messages_in: f.messages_in,
            last_inbound_at: f.last_inbound_at,
            last_interaction_at: f.last_interaction_at,
            history: f.history,
            cs_window: f.cs_window,
            // Unknown before version 4: filled in by the first sync.
            ..Follower::default()
        }
    }
}

#[cfg(test)]
impl From<&Follower> for FollowerV3 {
    fn from(f: &Follower) -> FollowerV3 {
        FollowerV3 {
            openid: f.openid.clone(),
            subscribed: f.subscribed,
            first_subscribed_at: f.first_subscribed_at,
            last_subscribed_at: f.last_subscribed_at,
            unsubscribed_at: f.unsubscribed_at,
            first_scene: f.first_scene.clone(),
            scenes: f.scenes.clone(),
            tags: f.tags.clone(),
            attributes: f.attributes.clone(),
            counters: f.counters.clone(),
            messages_in: f.messages_in,
            last_inbound_at: f.last_inbound_at,
            last_interaction_at: f.last_interaction_at,
            history: f.history.clone(),
            cs_window: f.cs_window,
        }
    }
}
