//! Follower and external-contact populations: an official account's existing followers
//! (`user/get`, `user/info/batchget`) and a WeCom corp's external contacts
//! (`get_follow_user_list`, `batch/get_by_user`, `get_corp_tag_list`), configured with
//! `POST /fake/followers` and `POST /fake/contacts`.
//!
//! Nothing is stored per follower: follower `i` of a population is a pure function of
//! `(seed, i)`. Its openid ends in an invertible mix of `i` (so an openid maps back to its
//! index without a table, and openids are unique and in no sorted order); the other
//! fields come from cheap hashes of `(seed, i)`. Unionids depend on `(union_seed, i)` only,
//! so follower `i` of an official population and contact `i` of a WeCom population with
//! the same `union_seed` are the same person. Only unsubscribed followers are remembered
//! (a set of indices), and population tags are rules in the tag table (every Nth
//! follower), so a million followers cost next to nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::official::MAX_TAGS;
use super::routes::{err, nonempty};
use super::state::{FakeTag, State};
use super::Shared;

/// `user/get` pages (WeChat: 10,000 openids per call).
const USER_GET_PAGE: usize = 10_000;
/// `user/info/batchget` takes at most 100 openids. The errcode past that is not in
/// protocol.md nor in the SDK sources searched (WxJava, wechatpy); the fake answers
/// 40032 "invalid openid list size", WeChat's code for an openid list of the wrong size.
const BATCHGET_MAX: usize = 100;
const ERR_OPENID_LIST_SIZE: i64 = 40032;
/// WeCom's "userid not found" (WxJava's WxCpErrorMsgEnum.CODE_60111).
const ERR_USERID_NOT_FOUND: i64 = 60111;
/// WeCom's "invalid parameter", for list sizes and limits out of range and unknown
/// cursors (the real code for a stale cursor is not documented where we looked).
const ERR_INVALID_PARAM: i64 = 40058;

const SCENES: [&str; 9] = [
    "ADD_SCENE_SEARCH",
    "ADD_SCENE_ACCOUNT_MIGRATION",
    "ADD_SCENE_PROFILE_CARD",
    "ADD_SCENE_QR_CODE",
    "ADD_SCENE_PROFILE_LINK",
    "ADD_SCENE_PROFILE_ITEM",
    "ADD_SCENE_PAID",
    "ADD_SCENE_WECHAT_ADVERTISEMENT",
    "ADD_SCENE_OTHERS",
];
const QR_SCENES: [&str; 4] = ["poster-2026", "store-sh-01", "store-bj-02", "event-0618"];
const NAMES: [&str; 12] = [
    "王芳", "李娜", "张伟", "刘洋", "陈静", "杨帆", "赵磊", "黄丽", "周杰", "吴敏", "徐婷", "孙浩",
];
/// WeCom `add_way`s: 1 scanned a QR code (most), 2 phone search, 3 card share, 4 group
/// chat, 5 phone contacts, 6 WeChat contacts, 16 acquisition link, 202 assigned.
const ADD_WAYS: [i64; 10] = [1, 1, 1, 1, 2, 3, 4, 5, 6, 16];
const WELCOME_STATES: [&str; 2] = ["poster-2026", "store-sh-01"];

// --- Requests and answers ---

/// `POST /fake/followers`: replaces an official account's follower population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopulationRequest {
    /// `None`: the population of every AppID without its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    pub count: u64,
    #[serde(default)]
    pub seed: u64,
    /// Unionids derive from `(union_seed, index)` only: populations sharing it share persons.
    #[serde(default)]
    pub union_seed: u64,
    /// Whether followers carry a unionid.
    #[serde(default = "yes")]
    pub unionid: bool,
    /// Tag name → N: followers whose index is a multiple of N carry it.
    #[serde(default)]
    pub tags: BTreeMap<String, u64>,
}

impl PopulationRequest {
    /// `count` followers from `seed`, with unionids (union seed 0) and no tags, for
    /// every AppID without its own population.
    pub fn new(count: u64, seed: u64) -> PopulationRequest {
        PopulationRequest {
            appid: None,
            count,
            seed,
            union_seed: 0,
            unionid: true,
            tags: BTreeMap::new(),
        }
    }
}

/// `POST /fake/followers/unsubscribe` and `/subscribe`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    #[serde(default)]
    pub appid: Option<String>,
    pub openids: Vec<String>,
}

/// `GET /fake/followers`: subscribed followers in the population's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowersPage {
    /// Subscribed followers in all.
    pub total: u64,
    pub openids: Vec<String>,
    /// Parallel to `openids`; empty when the population carries no unionids.
    pub unionids: Vec<String>,
}

/// A corp tag of a contact population: contacts whose index is a multiple of `every`
/// carry it (on every staff member's follow relation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpTagSpec {
    pub name: String,
    #[serde(default = "default_group")]
    pub group: String,
    pub every: u64,
    /// Default: `et` + 20 characters derived from the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `POST /fake/contacts`: replaces a WeCom corp's external contacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactsRequest {
    /// `None`: the contacts of every CorpID without its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpid: Option<String>,
    /// Staff members with customer contact; contact `i` is added by `staff[i % len]`.
    pub staff: Vec<String>,
    pub count: u64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub union_seed: u64,
    #[serde(default = "yes")]
    pub unionid: bool,
    /// Every Nth contact is also added by the next staff member (0: none).
    #[serde(default)]
    pub shared_every: u64,
    #[serde(default)]
    pub tags: Vec<CorpTagSpec>,
}

impl ContactsRequest {
    pub fn new(staff: &[&str], count: u64, seed: u64) -> ContactsRequest {
        ContactsRequest {
            corpid: None,
            staff: staff.iter().map(|s| s.to_string()).collect(),
            count,
            seed,
            union_seed: 0,
            unionid: true,
            shared_every: 0,
            tags: Vec::new(),
        }
    }
}

/// `GET /fake/contacts`: contacts in the population's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactsPage {
    pub total: u64,
    pub external_userids: Vec<String>,
    /// Parallel to `external_userids`; empty when the contacts carry no unionids.
    pub unionids: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_group() -> String {
    "客户标签".to_string()
}

// --- Deterministic identifiers ---

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const C1: u64 = 0xbf58_476d_1ce4_e5b9;
const C2: u64 = 0x94d0_49bb_1331_11eb;
const SALT_OPENID: u64 = 0x6f70_656e_6964;
const SALT_UNIONID: u64 = 0x756e_696f_6e69;
const SALT_WM: u64 = 0x776d_7573_6572;
/// Characters of the mixed index at the end of an identifier (64 bits, 6 per char).
const TAIL: usize = 11;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(C1);
    x = (x ^ (x >> 27)).wrapping_mul(C2);
    x ^ (x >> 31)
}

/// A hash of `(a, b, c)`.
fn hash(a: u64, b: u64, c: u64) -> u64 {
    splitmix(splitmix(splitmix(a) ^ b) ^ c)
}

fn hash_str(s: &str) -> u64 {
    // FNV-1a, then mixed.
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    splitmix(h)
}

/// A bijection of u64 keyed by `key` (splitmix's finaliser), and its inverse.
fn mix(key: u64, i: u64) -> u64 {
    let mut x = i ^ key;
    x = (x ^ (x >> 30)).wrapping_mul(C1);
    x = (x ^ (x >> 27)).wrapping_mul(C2);
    x ^ (x >> 31)
}

fn unmix(key: u64, mut x: u64) -> u64 {
    x = unxorshift(x, 31).wrapping_mul(mod_inverse(C2));
    x = unxorshift(x, 27).wrapping_mul(mod_inverse(C1));
    unxorshift(x, 30) ^ key
}

fn unxorshift(y: u64, shift: u32) -> u64 {
    let mut x = y;
    for _ in 0..=(64 / shift) {
        x = y ^ (x >> shift);
    }
    x
}

/// The inverse of an odd number modulo 2^64 (Newton's iteration).
fn mod_inverse(c: u64) -> u64 {
    let mut v = c;
    for _ in 0..6 {
        v = v.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(v)));
    }
    v
}

/// `prefix`, `fill` characters hashed from `(key, mixed)`, then `mixed` in 11 characters.
fn identifier(prefix: &str, fill: usize, key: u64, mixed: u64) -> String {
    let mut s = String::with_capacity(prefix.len() + fill + TAIL);
    s.push_str(prefix);
    let mut bits = 0;
    let mut left = 0;
    for n in 0..fill {
        if left < 6 {
            bits = hash(key, mixed, n as u64);
            left = 60;
        }
        s.push(ALPHABET[(bits & 63) as usize] as char);
        bits >>= 6;
        left -= 6;
    }
    for k in (0..TAIL).rev() {
        s.push(ALPHABET[((mixed >> (6 * k)) & 63) as usize] as char);
    }
    s
}

/// The mixed value at the end of an identifier.
fn tail_value(id: &str) -> Option<u64> {
    let tail = id.as_bytes().get(id.len().checked_sub(TAIL)?..)?;
    let mut v: u64 = 0;
    for (n, c) in tail.iter().enumerate() {
        let d = ALPHABET.iter().position(|a| a == c)? as u64;
        // The first character carries the top 4 bits only.
        if n == 0 && d >= 16 {
            return None;
        }
        v = (v << 6) | d;
    }
    Some(v)
}

/// Follower `i`'s openid: `o` + 27 URL-safe characters (28 in all, like WeChat's). The
/// second character is never `u`, which marks unionids.
pub(crate) fn openid(seed: u64, i: u64) -> String {
    let key = splitmix(seed ^ SALT_OPENID);
    let mut s = identifier("o", 16, key, mix(key, i));
    if s.as_bytes()[1] == b'u' {
        s.replace_range(1..2, "v");
    }
    s
}

/// The index of `openid` in a population of `count` from `seed`.
pub(crate) fn openid_index(seed: u64, count: u64, id: &str) -> Option<u64> {
    if id.len() != 28 || !id.starts_with('o') {
        return None;
    }
    let key = splitmix(seed ^ SALT_OPENID);
    let i = unmix(key, tail_value(id)?);
    (i < count && openid(seed, i) == id).then_some(i)
}

/// Person `i`'s unionid: `ou` + 26 URL-safe characters.
pub(crate) fn unionid(union_seed: u64, i: u64) -> String {
    let key = splitmix(union_seed ^ SALT_UNIONID);
    identifier("ou", 15, key, mix(key, i))
}

/// Contact `i`'s external_userid: `wm` + 30 URL-safe characters.
pub(crate) fn external_userid(seed: u64, i: u64) -> String {
    let key = splitmix(seed ^ SALT_WM);
    identifier("wm", 19, key, mix(key, i))
}

fn tag_id_for(name: &str) -> String {
    let h = hash_str(name);
    identifier("et", 9, h, h)
}

// --- Official accounts ---

/// A follower population: `count` followers derived from `seed`.
pub(crate) struct Followers {
    pub seed: u64,
    pub union_seed: u64,
    pub unionid: bool,
    pub count: u64,
    pub unsubscribed: HashSet<u64>,
}

impl Followers {
    pub fn openid(&self, i: u64) -> String {
        openid(self.seed, i)
    }

    pub fn index_of(&self, id: &str) -> Option<u64> {
        openid_index(self.seed, self.count, id)
    }

    pub fn unionid(&self, i: u64) -> Option<String> {
        self.unionid.then(|| unionid(self.union_seed, i))
    }

    pub fn subscribed(&self) -> u64 {
        self.count - self.unsubscribed.len() as u64
    }

    /// Subscribed followers' indices from `start`, in order.
    fn subscribed_from(&self, start: u64) -> impl Iterator<Item = u64> + '_ {
        (start..self.count).filter(|i| !self.unsubscribed.contains(i))
    }

    /// `user/info`'s answer for follower `i`.
    fn info(&self, i: u64, tags: &BTreeMap<i64, FakeTag>) -> Value {
        let openid = self.openid(i);
        if self.unsubscribed.contains(&i) {
            // WeChat's shape for a follower who left: no profile, no tags.
            let mut v = json!({ "subscribe": 0, "openid": openid, "tagid_list": [] });
            if let Some(u) = self.unionid(i) {
                v["unionid"] = json!(u);
            }
            return v;
        }
        let h = hash(self.seed, i, 1);
        let scene = SCENES[(h % SCENES.len() as u64) as usize];
        let qr_scene_str = if scene == "ADD_SCENE_QR_CODE" {
            QR_SCENES[((h >> 8) % QR_SCENES.len() as u64) as usize]
        } else {
            ""
        };
        let remark = match (h >> 16) % 20 {
            0 => "老客户",
            1 => "店长朋友",
            _ => "",
        };
        let tagids: Vec<i64> = tags
            .iter()
            .filter(|(_, t)| t.contains(&openid))
            .map(|(id, _)| *id)
            .collect();
        let mut v = json!({
            "subscribe": 1, "openid": openid, "language": "zh_CN",
            "subscribe_time": 1_500_000_000 + hash(self.seed, i, 2) % 200_000_000,
            "remark": remark, "groupid": 0, "tagid_list": tagids,
            "subscribe_scene": scene, "qr_scene": 0, "qr_scene_str": qr_scene_str,
        });
        if let Some(u) = self.unionid(i) {
            v["unionid"] = json!(u);
        }
        v
    }
}

/// A tag over a population: its followers whose index is a multiple of `every`.
pub(crate) struct TagRule {
    /// The population's key in `State::followers` (`""`: the default one).
    pub appid: String,
    pub seed: u64,
    pub count: u64,
    pub every: u64,
}

impl TagRule {
    pub fn matches(&self, openid: &str) -> bool {
        openid_index(self.seed, self.count, openid).is_some_and(|i| i.is_multiple_of(self.every))
    }

    pub fn members(&self) -> u64 {
        self.count.div_ceil(self.every)
    }
}

impl State {
    /// The population an AppID reads: its own, else the default one.
    pub fn followers_of(&self, appid: &str) -> Option<&Followers> {
        self.followers.get(appid).or_else(|| self.followers.get(""))
    }

    fn followers_key(&self, appid: Option<&str>) -> String {
        match appid {
            Some(a) if self.followers.contains_key(a) => a.to_string(),
            _ => String::new(),
        }
    }

    /// Replaces a population; answers its tags' ids by name.
    pub fn populate(&mut self, req: &PopulationRequest) -> Result<BTreeMap<String, i64>, String> {
        if let Some((name, _)) = req.tags.iter().find(|(_, n)| **n == 0) {
            return Err(format!("tag {name:?}: every must be at least 1"));
        }
        if req.tags.keys().any(|n| n.is_empty()) {
            return Err("tag names must not be empty".into());
        }
        let new_tags = req
            .tags
            .keys()
            .filter(|n| !self.tags.values().any(|t| &t.name == *n))
            .count();
        if self.tags.len() + new_tags > MAX_TAGS {
            return Err(format!("an account has at most {MAX_TAGS} tags"));
        }
        let key = req.appid.clone().unwrap_or_default();
        for tag in self.tags.values_mut() {
            tag.rules.retain(|r| r.appid != key);
        }
        let mut ids = BTreeMap::new();
        for (name, every) in &req.tags {
            let id = match self.tags.iter().find(|(_, t)| &t.name == name) {
                Some((id, _)) => *id,
                None => {
                    let id = self.next_tag_id;
                    self.next_tag_id += 1;
                    self.tags.insert(id, FakeTag::new(name));
                    id
                }
            };
            if let Some(tag) = self.tags.get_mut(&id) {
                tag.rules.push(TagRule {
                    appid: key.clone(),
                    seed: req.seed,
                    count: req.count,
                    every: *every,
                });
            }
            ids.insert(name.clone(), id);
        }
        self.tags.values_mut().for_each(FakeTag::normalise);
        self.followers.insert(
            key,
            Followers {
                seed: req.seed,
                union_seed: req.union_seed,
                unionid: req.unionid,
                count: req.count,
                unsubscribed: HashSet::new(),
            },
        );
        Ok(ids)
    }

    /// Unsubscribes (or resubscribes) followers of the population `appid` reads; answers
    /// how many changed. Every openid must be in it.
    pub fn set_subscribed(
        &mut self,
        appid: Option<&str>,
        openids: &[String],
        subscribed: bool,
    ) -> Result<usize, String> {
        let key = self.followers_key(appid);
        let Some(pop) = self.followers.get_mut(&key) else {
            return Err("no follower population".into());
        };
        let mut indices = Vec::with_capacity(openids.len());
        for o in openids {
            match pop.index_of(o) {
                Some(i) => indices.push(i),
                None => return Err(format!("{o} is not in the population")),
            }
        }
        let changed = indices
            .into_iter()
            .filter(|i| {
                if subscribed {
                    pop.unsubscribed.remove(i)
                } else {
                    pop.unsubscribed.insert(*i)
                }
            })
            .count();
        Ok(changed)
    }

    /// Subscribed followers `offset..offset + limit` of the population `appid` reads.
    pub fn followers_page(&self, appid: Option<&str>, offset: u64, limit: u64) -> FollowersPage {
        let Some(pop) = self.followers.get(&self.followers_key(appid)) else {
            return FollowersPage {
                total: 0,
                openids: Vec::new(),
                unionids: Vec::new(),
            };
        };
        let indices: Vec<u64> = pop
            .subscribed_from(0)
            .skip(offset as usize)
            .take(limit as usize)
            .collect();
        FollowersPage {
            total: pop.subscribed(),
            openids: indices.iter().map(|i| pop.openid(*i)).collect(),
            unionids: indices.iter().filter_map(|i| pop.unionid(*i)).collect(),
        }
    }
}

/// `GET /cgi-bin/user/get?next_openid=`: 10,000 subscribed followers per page.
pub(super) fn user_get(state: &mut State, owner: &str, q: &HashMap<String, String>) -> Value {
    let pop = state.followers_of(owner);
    let start = match nonempty(q, "next_openid") {
        None => 0,
        Some(o) => match pop.and_then(|p| p.index_of(o)) {
            Some(i) => i + 1,
            None => return err(40003, "invalid next_openid"),
        },
    };
    let Some(pop) = pop else {
        return json!({ "total": 0, "count": 0, "next_openid": "" });
    };
    let page: Vec<String> = pop
        .subscribed_from(start)
        .take(USER_GET_PAGE)
        .map(|i| pop.openid(i))
        .collect();
    let total = pop.subscribed();
    match page.last() {
        None => json!({ "total": total, "count": 0, "next_openid": "" }),
        Some(last) => json!({
            "total": total, "count": page.len(), "data": { "openid": page }, "next_openid": last,
        }),
    }
}

/// `user/info` for a follower of the owner's population; `None` for other openids.
pub(super) fn user_info(state: &State, owner: &str, openid: &str) -> Option<Value> {
    let pop = state.followers_of(owner)?;
    let i = pop.index_of(openid)?;
    Some(pop.info(i, &state.tags))
}

/// `POST /cgi-bin/user/info/batchget`: up to 100 followers, in request order.
pub(super) fn user_batchget(state: &mut State, owner: &str, b: &Value) -> Value {
    let Some(list) = b["user_list"].as_array().filter(|l| !l.is_empty()) else {
        return err(47001, "data format error");
    };
    if list.len() > BATCHGET_MAX {
        return err(ERR_OPENID_LIST_SIZE, "invalid openid list size");
    }
    if list.iter().any(|u| !u.is_object()) {
        return err(47001, "data format error");
    }
    let Some(pop) = state.followers_of(owner) else {
        return err(40003, "invalid openid");
    };
    let mut infos = Vec::with_capacity(list.len());
    for u in list {
        let Some(i) = u["openid"].as_str().and_then(|o| pop.index_of(o)) else {
            return err(40003, "invalid openid");
        };
        infos.push(pop.info(i, &state.tags));
    }
    json!({ "user_info_list": infos })
}

// --- WeCom ---

pub(crate) struct CorpTag {
    pub id: String,
    pub name: String,
    pub group: String,
    pub every: u64,
}

/// A corp's external contacts: `count` contacts derived from `seed`.
pub(crate) struct Contacts {
    pub seed: u64,
    pub union_seed: u64,
    pub unionid: bool,
    pub count: u64,
    pub staff: Vec<String>,
    pub shared_every: u64,
    pub tags: Vec<CorpTag>,
}

impl Contacts {
    /// Whether staff member `s` follows contact `i`: the owner `i % len`, and for every
    /// `shared_every`th contact the next one too.
    fn follows(&self, i: u64, s: usize) -> bool {
        let len = self.staff.len() as u64;
        let s = s as u64;
        i % len == s
            || (len > 1
                && self.shared_every > 0
                && i.is_multiple_of(self.shared_every)
                && (i + 1) % len == s)
    }

    /// The next contact from `i` that staff member `s` follows.
    fn next_followed(&self, mut i: u64, s: usize) -> Option<u64> {
        while i < self.count {
            if self.follows(i, s) {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    fn unionid(&self, i: u64) -> Option<String> {
        self.unionid.then(|| unionid(self.union_seed, i))
    }

    fn entry(&self, i: u64, s: usize) -> Value {
        let name = format!(
            "{}{}",
            NAMES[(hash(self.seed, i, 3) % NAMES.len() as u64) as usize],
            i
        );
        let mut contact = json!({
            "external_userid": external_userid(self.seed, i), "name": name, "type": 1,
        });
        if let Some(u) = self.unionid(i) {
            contact["unionid"] = json!(u);
        }
        let h = hash(self.seed, i, 10 + s as u64);
        let add_way = ADD_WAYS[(h % ADD_WAYS.len() as u64) as usize];
        let state = if add_way == 1 && !(h >> 8).is_multiple_of(3) {
            WELCOME_STATES[((h >> 12) % 2) as usize]
        } else {
            ""
        };
        let remark = if (h >> 16).is_multiple_of(5) {
            "老客户"
        } else {
            ""
        };
        let tag_ids: Vec<&str> = self
            .tags
            .iter()
            .filter(|t| i.is_multiple_of(t.every))
            .map(|t| t.id.as_str())
            .collect();
        json!({
            "external_contact": contact,
            "follow_info": {
                "userid": self.staff[s], "remark": remark,
                "createtime": 1_600_000_000 + (h >> 20) % 100_000_000,
                "tag_id": tag_ids, "add_way": add_way, "state": state,
            },
        })
    }
}

impl State {
    /// The contacts a CorpID reads: its own, else the default ones.
    pub fn contacts_of(&self, corpid: &str) -> Option<&Contacts> {
        self.contacts.get(corpid).or_else(|| self.contacts.get(""))
    }

    /// Replaces a corp's contacts; answers its tags as (id, name).
    pub fn populate_contacts(
        &mut self,
        req: &ContactsRequest,
    ) -> Result<Vec<(String, String)>, String> {
        if req.staff.is_empty() || req.staff.iter().any(|s| s.is_empty()) {
            return Err("staff must name at least one userid".into());
        }
        let distinct: HashSet<&String> = req.staff.iter().collect();
        if distinct.len() != req.staff.len() {
            return Err("staff userids must be distinct".into());
        }
        let mut tags = Vec::with_capacity(req.tags.len());
        for t in &req.tags {
            if t.every == 0 || t.name.is_empty() {
                return Err(format!("tag {:?}: needs a name and every ≥ 1", t.name));
            }
            let id = t.id.clone().unwrap_or_else(|| tag_id_for(&t.name));
            if tags.iter().any(|c: &CorpTag| c.id == id) {
                return Err(format!("tag id {id} twice"));
            }
            tags.push(CorpTag {
                id,
                name: t.name.clone(),
                group: t.group.clone(),
                every: t.every,
            });
        }
        let answer = tags
            .iter()
            .map(|t| (t.id.clone(), t.name.clone()))
            .collect();
        self.contacts.insert(
            req.corpid.clone().unwrap_or_default(),
            Contacts {
                seed: req.seed,
                union_seed: req.union_seed,
                unionid: req.unionid,
                count: req.count,
                staff: req.staff.clone(),
                shared_every: req.shared_every,
                tags,
            },
        );
        Ok(answer)
    }

    /// Contacts `offset..offset + limit` of the population `corpid` reads.
    pub fn contacts_page(&self, corpid: Option<&str>, offset: u64, limit: u64) -> ContactsPage {
        let Some(c) = self.contacts_of(corpid.unwrap_or("")) else {
            return ContactsPage {
                total: 0,
                external_userids: Vec::new(),
                unionids: Vec::new(),
            };
        };
        let end = offset.saturating_add(limit).min(c.count);
        let range = offset.min(end)..end;
        ContactsPage {
            total: c.count,
            external_userids: range.clone().map(|i| external_userid(c.seed, i)).collect(),
            unionids: range.filter_map(|i| c.unionid(i)).collect(),
        }
    }
}

/// `GET /cgi-bin/externalcontact/get_follow_user_list`.
pub(super) fn follow_user_list(state: &mut State, owner: &str) -> Value {
    let staff: &[String] = state.contacts_of(owner).map_or(&[], |c| &c.staff);
    json!({ "errcode": 0, "errmsg": "ok", "follow_user": staff })
}

/// A `batch/get_by_user` cursor: where the next page starts (position in `userid_list`,
/// contact index), with a check tied to the population and the list, so a made-up or
/// foreign cursor is refused.
fn cursor(c: &Contacts, list_hash: u64, k: usize, i: u64) -> String {
    let check = hash(c.seed ^ list_hash, k as u64, i) & 0xffff_ffff;
    format!("{check:08x}{k:04x}{i:016x}")
}

fn parse_cursor(c: &Contacts, list_hash: u64, s: &str) -> Option<(usize, u64)> {
    if s.len() != 28 || !s.is_ascii() {
        return None;
    }
    let k = usize::from_str_radix(&s[8..12], 16).ok()?;
    let i = u64::from_str_radix(&s[12..], 16).ok()?;
    (cursor(c, list_hash, k, i) == s).then_some((k, i))
}

/// `POST /cgi-bin/externalcontact/batch/get_by_user`: one entry per (contact, staff
/// member) pair, staff members in `userid_list` order, contacts in population order.
pub(super) fn get_by_user(state: &mut State, owner: &str, b: &Value) -> Value {
    let Some(list) = b["userid_list"].as_array() else {
        return err(ERR_INVALID_PARAM, "invalid userid_list");
    };
    if list.is_empty() || list.len() > 100 {
        return err(ERR_INVALID_PARAM, "invalid userid_list size");
    }
    let limit = match &b["limit"] {
        Value::Null => 50,
        v => match v.as_u64().filter(|l| (1..=100).contains(l)) {
            Some(l) => l as usize,
            None => return err(ERR_INVALID_PARAM, "invalid limit"),
        },
    };
    let Some(c) = state.contacts_of(owner) else {
        return err(ERR_USERID_NOT_FOUND, "userid not found");
    };
    let mut staff = Vec::with_capacity(list.len());
    for u in list {
        match u.as_str().and_then(|u| c.staff.iter().position(|s| s == u)) {
            Some(s) => staff.push(s),
            None => return err(ERR_USERID_NOT_FOUND, "userid not found"),
        }
    }
    let list_hash = hash_str(
        &staff
            .iter()
            .map(|s| c.staff[*s].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let (k, i) = match b["cursor"].as_str().unwrap_or_default() {
        "" => (0, 0),
        s => match parse_cursor(c, list_hash, s) {
            Some(pos) => pos,
            None => return err(ERR_INVALID_PARAM, "invalid cursor"),
        },
    };
    // The next pair at or after (k, i), if any.
    let next = |mut k: usize, i: u64| -> Option<(usize, u64)> {
        let mut from = i;
        while k < staff.len() {
            if let Some(found) = c.next_followed(from, staff[k]) {
                return Some((k, found));
            }
            k += 1;
            from = 0;
        }
        None
    };
    let mut entries = Vec::with_capacity(limit);
    let mut at = next(k, i);
    while let Some((pk, pi)) = at {
        if entries.len() == limit {
            break;
        }
        entries.push(c.entry(pi, staff[pk]));
        at = next(pk, pi + 1);
    }
    let next_cursor = match at {
        Some((pk, pi)) => cursor(c, list_hash, pk, pi),
        None => String::new(),
    };
    json!({
        "errcode": 0, "errmsg": "ok", "external_contact_list": entries, "next_cursor": next_cursor,
    })
}

/// `POST /cgi-bin/externalcontact/get_corp_tag_list`, optionally filtered by `tag_id` or
/// `group_id` lists.
pub(super) fn corp_tag_list(state: &mut State, owner: &str, b: &Value) -> Value {
    let wanted = |field: &str| -> Vec<String> {
        b[field]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (tag_ids, group_ids) = (wanted("tag_id"), wanted("group_id"));
    let tags: &[CorpTag] = state.contacts_of(owner).map_or(&[], |c| &c.tags);
    let mut groups: Vec<(String, &str, Vec<Value>)> = Vec::new();
    for (order, t) in tags.iter().enumerate() {
        let group_id = tag_id_for(&format!("group:{}", t.group));
        if (!tag_ids.is_empty() && !tag_ids.contains(&t.id))
            || (!group_ids.is_empty() && !group_ids.contains(&group_id))
        {
            continue;
        }
        let tag = json!({
            "id": t.id, "name": t.name, "create_time": 1_600_000_000, "order": order, "deleted": false,
        });
        match groups.iter_mut().find(|(id, _, _)| *id == group_id) {
            Some((_, _, members)) => members.push(tag),
            None => groups.push((group_id, &t.group, vec![tag])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .enumerate()
        .map(|(order, (id, name, tags))| {
            json!({
                "group_id": id, "group_name": name, "create_time": 1_600_000_000,
                "order": order, "deleted": false, "tag": tags,
            })
        })
        .collect();
    json!({ "errcode": 0, "errmsg": "ok", "tag_group": groups })
}

// --- The /fake endpoints ---

fn bad_request(e: String) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": e }))
}

pub(super) async fn http_populate(
    shared: web::Data<Shared>,
    body: web::Json<PopulationRequest>,
) -> HttpResponse {
    match shared.lock().populate(&body) {
        Ok(tags) => HttpResponse::Ok().json(json!({
            "appid": body.appid, "count": body.count, "tags": tags,
        })),
        Err(e) => bad_request(e),
    }
}

async fn set_subscribed(
    shared: web::Data<Shared>,
    body: web::Json<SubscriptionRequest>,
    subscribed: bool,
) -> HttpResponse {
    let result = shared
        .lock()
        .set_subscribed(body.appid.as_deref(), &body.openids, subscribed);
    match result {
        Ok(changed) => HttpResponse::Ok().json(json!({ "changed": changed })),
        Err(e) => bad_request(e),
    }
}

pub(super) async fn http_unsubscribe(
    shared: web::Data<Shared>,
    body: web::Json<SubscriptionRequest>,
) -> HttpResponse {
    set_subscribed(shared, body, false).await
}

pub(super) async fn http_subscribe(
    shared: web::Data<Shared>,
    body: web::Json<SubscriptionRequest>,
) -> HttpResponse {
    set_subscribed(shared, body, true).await
}

#[derive(Deserialize)]
pub(super) struct PageQuery {
    appid: Option<String>,
    corpid: Option<String>,
    #[serde(default)]
    offset: u64,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    100
}

pub(super) async fn http_followers(
    shared: web::Data<Shared>,
    q: web::Query<PageQuery>,
) -> HttpResponse {
    let page = shared
        .lock()
        .followers_page(q.appid.as_deref(), q.offset, q.limit);
    HttpResponse::Ok().json(page)
}

pub(super) async fn http_populate_contacts(
    shared: web::Data<Shared>,
    body: web::Json<ContactsRequest>,
) -> HttpResponse {
    match shared.lock().populate_contacts(&body) {
        Ok(tags) => {
            let tags: Vec<Value> = tags
                .into_iter()
                .map(|(id, name)| json!({ "id": id, "name": name }))
                .collect();
            HttpResponse::Ok().json(json!({
                "corpid": body.corpid, "count": body.count, "tags": tags,
            }))
        }
        Err(e) => bad_request(e),
    }
}

pub(super) async fn http_contacts(
    shared: web::Data<Shared>,
    q: web::Query<PageQuery>,
) -> HttpResponse {
    let page = shared
        .lock()
        .contacts_page(q.corpid.as_deref(), q.offset, q.limit);
    HttpResponse::Ok().json(page)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn state() -> State {
        State::new(Duration::from_secs(7200))
    }

    fn q(next: &str) -> HashMap<String, String> {
        HashMap::from([("next_openid".to_string(), next.to_string())])
    }

    fn batchget(s: &mut State, openids: &[String]) -> Value {
        let list: Vec<Value> = openids
            .iter()
            .map(|o| json!({ "openid": o, "lang": "zh_CN" }))
            .collect();
        user_batchget(s, "wxA", &json!({ "user_list": list }))
    }

    #[test]
    fn mix_is_a_bijection_and_openids_map_back() {
        for key in [0, 1, u64::MAX, 0x1234_5678] {
            for i in [0, 1, 2, 999_999, u64::MAX] {
                assert_eq!(unmix(key, mix(key, i)), i);
            }
        }
        for i in 0..2000 {
            let o = openid(7, i);
            assert_eq!(o.len(), 28);
            assert!(o.starts_with('o') && !o.starts_with("ou"), "{o}");
            assert!(o.bytes().all(|b| ALPHABET.contains(&b)));
            assert_eq!(openid_index(7, 2000, &o), Some(i));
            assert_eq!(openid_index(7, i, &o), None, "beyond count");
            assert_eq!(openid_index(8, 2000, &o), None, "another seed");
            let u = unionid(0, i);
            assert!(u.len() == 28 && u.starts_with("ou"), "{u}");
            let w = external_userid(7, i);
            assert!(w.len() == 32 && w.starts_with("wm"), "{w}");
        }
        assert_eq!(openid_index(7, 10, "oXXXXXXXXXXXXXXXXXXXXXXXXXXX"), None);
        assert_eq!(openid_index(7, 10, "短"), None);
    }

    #[test]
    fn same_seed_same_followers_and_not_sorted() {
        let (mut a, mut b) = (state(), state());
        a.populate(&PopulationRequest::new(500, 3)).unwrap();
        b.populate(&PopulationRequest::new(500, 3)).unwrap();
        let pa = a.followers_page(None, 0, 1000);
        assert_eq!(pa, b.followers_page(None, 0, 1000));
        assert_eq!(pa.total, 500);
        let distinct: HashSet<&String> = pa.openids.iter().collect();
        assert_eq!(distinct.len(), 500);
        let mut sorted = pa.openids.clone();
        sorted.sort();
        assert_ne!(sorted, pa.openids);
        b.populate(&PopulationRequest::new(500, 4)).unwrap();
        assert_ne!(b.followers_page(None, 0, 10).openids, pa.openids[..10]);
        // Same union seed: same persons.
        assert_eq!(b.followers_page(None, 0, 10).unionids, pa.unionids[..10]);
        // And the per-follower fields are the same too.
        let mut c = state();
        c.populate(&PopulationRequest::new(500, 3)).unwrap();
        let o = &pa.openids[17];
        assert_eq!(user_info(&a, "wxA", o), user_info(&c, "wxA", o));
        assert!(user_info(&a, "wxA", o).is_some());
    }

    #[test]
    fn user_get_pages_cover_every_follower_once() {
        let mut s = state();
        s.populate(&PopulationRequest::new(25_001, 1)).unwrap();
        let mut seen = Vec::new();
        let mut next = String::new();
        let mut pages = 0;
        loop {
            let page = user_get(&mut s, "wxA", &q(&next));
            assert_eq!(page["total"], 25_001);
            let count = page["count"].as_u64().unwrap();
            if count == 0 {
                assert_eq!(page["next_openid"], "");
                assert!(page.get("data").is_none());
                break;
            }
            let ids: Vec<String> = page["data"]["openid"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert_eq!(ids.len() as u64, count);
            assert!(count <= 10_000);
            assert_eq!(page["next_openid"], ids[ids.len() - 1].as_str());
            next = ids.last().unwrap().clone();
            seen.extend(ids);
            pages += 1;
        }
        assert_eq!(pages, 3);
        assert_eq!(seen.len(), 25_001);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25_001);
        assert_eq!(seen, s.followers_page(None, 0, 30_000).openids);
    }

    #[test]
    fn user_get_errors_and_empty() {
        let mut s = state();
        assert_eq!(
            user_get(&mut s, "wxA", &HashMap::new()),
            json!({ "total": 0, "count": 0, "next_openid": "" })
        );
        assert_eq!(user_get(&mut s, "wxA", &q(&openid(1, 0)))["errcode"], 40003);
        s.populate(&PopulationRequest::new(10, 1)).unwrap();
        assert_eq!(
            user_get(&mut s, "wxA", &q("oNotAFollower"))["errcode"],
            40003
        );
        assert_eq!(
            user_get(&mut s, "wxA", &q(&openid(1, 10)))["errcode"],
            40003
        );
        // An AppID with its own population does not read the default one.
        s.populate(&PopulationRequest {
            appid: Some("wxB".into()),
            ..PopulationRequest::new(3, 2)
        })
        .unwrap();
        assert_eq!(user_get(&mut s, "wxB", &HashMap::new())["total"], 3);
        assert_eq!(user_get(&mut s, "wxA", &HashMap::new())["total"], 10);
        assert_eq!(user_get(&mut s, "wxB", &q(&openid(1, 0)))["errcode"], 40003);
    }

    #[test]
    fn batchget_limits_errors_and_shape() {
        let mut s = state();
        s.populate(&PopulationRequest::new(300, 1)).unwrap();
        let ids = s.followers_page(None, 0, 300).openids;
        let ok = batchget(&mut s, &ids[..100]);
        let list = ok["user_info_list"].as_array().unwrap();
        assert_eq!(list.len(), 100);
        for (info, id) in list.iter().zip(&ids) {
            assert_eq!(info["openid"], id.as_str());
            assert_eq!(info["subscribe"], 1);
            assert_eq!(info["language"], "zh_CN");
            assert_eq!(info["groupid"], 0);
            let t = info["subscribe_time"].as_u64().unwrap();
            assert!((1_500_000_000..1_700_000_000).contains(&t));
            let scene = info["subscribe_scene"].as_str().unwrap();
            assert!(SCENES.contains(&scene));
            assert_eq!(
                info["qr_scene_str"] != "",
                scene == "ADD_SCENE_QR_CODE",
                "{info}"
            );
            assert!(info["unionid"].as_str().unwrap().starts_with("ou"));
        }
        assert!(list.iter().any(|i| i["remark"] != ""));
        // Request order, not population order.
        let reversed: Vec<String> = ids[..5].iter().rev().cloned().collect();
        let back = batchget(&mut s, &reversed);
        assert_eq!(back["user_info_list"][0]["openid"], ids[4].as_str());

        assert_eq!(batchget(&mut s, &ids[..101])["errcode"], 40032);
        assert_eq!(batchget(&mut s, &[])["errcode"], 47001);
        assert_eq!(user_batchget(&mut s, "wxA", &json!({}))["errcode"], 47001);
        let mut with_stranger = ids[..3].to_vec();
        with_stranger.push("oStrangerXXXXXXXXXXXXXXXXXXX".into());
        assert_eq!(batchget(&mut s, &with_stranger)["errcode"], 40003);

        // Without unionids.
        s.populate(&PopulationRequest {
            unionid: false,
            ..PopulationRequest::new(300, 1)
        })
        .unwrap();
        assert!(batchget(&mut s, &ids[..1])["user_info_list"][0]
            .get("unionid")
            .is_none());
        assert!(s.followers_page(None, 0, 10).unionids.is_empty());
    }

    #[test]
    fn unsubscribe_hides_from_user_get_and_changes_batchget() {
        let mut s = state();
        s.populate(&PopulationRequest::new(20, 1)).unwrap();
        let ids = s.followers_page(None, 0, 20).openids;
        let gone = vec![ids[0].clone(), ids[19].clone()];
        assert_eq!(s.set_subscribed(Some("wxA"), &gone, false), Ok(2));
        assert_eq!(s.set_subscribed(None, &gone, false), Ok(0));
        assert!(s
            .set_subscribed(None, &["oNope".to_string()], false)
            .is_err());
        let page = user_get(&mut s, "wxA", &HashMap::new());
        assert_eq!(page["total"], 18);
        assert_eq!(page["count"], 18);
        let listed: Vec<&str> = page["data"]["openid"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            listed,
            ids[1..19].iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(s.followers_page(None, 0, 100).total, 18);
        // A cursor on a follower who left still works.
        assert_eq!(user_get(&mut s, "wxA", &q(&ids[0]))["count"], 18);
        let info = &batchget(&mut s, &gone[..1])["user_info_list"][0];
        assert_eq!(
            *info,
            json!({ "subscribe": 0, "openid": ids[0], "unionid": unionid(0, 0), "tagid_list": [] })
        );
        assert_eq!(s.set_subscribed(None, &gone, true), Ok(2));
        assert_eq!(user_get(&mut s, "wxA", &HashMap::new())["total"], 20);
    }

    #[test]
    fn population_tags_in_tag_table_and_tagid_list() {
        let mut s = state();
        // An existing tag is reused.
        s.tags.insert(100, FakeTag::new("vip"));
        s.next_tag_id = 101;
        let ids = s
            .populate(&PopulationRequest {
                tags: BTreeMap::from([("老客".to_string(), 10), ("vip".to_string(), 3)]),
                ..PopulationRequest::new(100, 1)
            })
            .unwrap();
        assert_eq!(ids["vip"], 100);
        let old = ids["老客"];
        assert_eq!(old, 101);
        let listed = super::super::official::list_tags(&mut s);
        assert_eq!(
            listed,
            json!({ "tags": [
                { "id": 100, "name": "vip", "count": 34 },
                { "id": 101, "name": "老客", "count": 10 },
            ] })
        );
        let o0 = openid(1, 0);
        let o3 = openid(1, 3);
        let o1 = openid(1, 1);
        let infos = batchget(&mut s, &[o0.clone(), o3.clone(), o1.clone()]);
        assert_eq!(infos["user_info_list"][0]["tagid_list"], json!([100, 101]));
        assert_eq!(infos["user_info_list"][1]["tagid_list"], json!([100]));
        assert_eq!(infos["user_info_list"][2]["tagid_list"], json!([]));
        // batchtagging / batchuntagging work on the same membership.
        let untag = json!({ "openid_list": [o0], "tagid": 100 });
        assert_eq!(
            super::super::official::batch(&mut s, &untag, false)["errcode"],
            0
        );
        let tag = json!({ "openid_list": [o1], "tagid": 100 });
        assert_eq!(
            super::super::official::batch(&mut s, &tag, true)["errcode"],
            0
        );
        let infos = batchget(&mut s, &[o0.clone(), o1.clone()]);
        assert_eq!(infos["user_info_list"][0]["tagid_list"], json!([101]));
        assert_eq!(infos["user_info_list"][1]["tagid_list"], json!([100]));
        assert_eq!(s.tags[&100].count(), 34);
        let q = HashMap::from([("openid".to_string(), o1.clone())]);
        let info = super::super::official::user_info(&mut s, "wxA", &q);
        assert_eq!(info["tagid_list"], json!([100]));
        assert_eq!(info["openid"], o1.as_str());
        // A stranger still gets the plain answer.
        let q = HashMap::from([("openid".to_string(), "o-stranger".to_string())]);
        let info = super::super::official::user_info(&mut s, "wxA", &q);
        assert_eq!(info["subscribe_time"], 1_700_000_000);
        // Repopulating replaces the rules.
        s.populate(&PopulationRequest::new(100, 1)).unwrap();
        assert_eq!(s.tags[&100].count(), 1);
        assert_eq!(s.tags[&101].count(), 0);
        assert!(s
            .populate(&PopulationRequest {
                tags: BTreeMap::from([("x".to_string(), 0)]),
                ..PopulationRequest::new(1, 1)
            })
            .is_err());
    }

    #[test]
    fn a_million_followers_are_cheap() {
        let mut s = state();
        s.populate(&PopulationRequest {
            tags: BTreeMap::from([("all".to_string(), 1)]),
            ..PopulationRequest::new(1_000_000, 9)
        })
        .unwrap();
        let last = openid(9, 999_999);
        assert_eq!(user_get(&mut s, "wx", &q(&openid(9, 999_990)))["count"], 9);
        assert_eq!(user_get(&mut s, "wx", &q(&last))["count"], 0);
        assert_eq!(s.tags.values().next().unwrap().count(), 1_000_000);
    }

    fn get_by_user_all(s: &mut State, staff: &[&str], limit: u64) -> Vec<(String, String)> {
        let mut cursor = String::new();
        let mut pairs = Vec::new();
        loop {
            let page = get_by_user(
                s,
                "wwCorp",
                &json!({ "userid_list": staff, "cursor": cursor, "limit": limit }),
            );
            assert_eq!(page["errcode"], 0, "{page}");
            let list = page["external_contact_list"].as_array().unwrap();
            assert!(list.len() as u64 <= limit);
            for e in list {
                pairs.push((
                    e["external_contact"]["external_userid"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    e["follow_info"]["userid"].as_str().unwrap().to_string(),
                ));
            }
            cursor = page["next_cursor"].as_str().unwrap().to_string();
            if cursor.is_empty() {
                return pairs;
            }
            assert_eq!(list.len() as u64, limit, "only the last page is short");
        }
    }

    #[test]
    fn wecom_cursor_paging_covers_every_pair_once() {
        let mut s = state();
        s.populate_contacts(&ContactsRequest {
            shared_every: 5,
            tags: vec![CorpTagSpec {
                name: "VIP".into(),
                group: "客户等级".into(),
                every: 4,
                id: None,
            }],
            ..ContactsRequest::new(&["zhangsan", "lisi", "wangwu"], 1000, 1)
        })
        .unwrap();
        let pairs = get_by_user_all(&mut s, &["zhangsan", "lisi", "wangwu"], 100);
        // 1000 contacts, every 5th (200) shared with a second staff member.
        assert_eq!(pairs.len(), 1200);
        assert_eq!(pairs.iter().collect::<HashSet<_>>().len(), 1200);
        let contacts: HashSet<&String> = pairs.iter().map(|(c, _)| c).collect();
        assert_eq!(contacts.len(), 1000);
        let one = get_by_user_all(&mut s, &["lisi"], 7);
        assert_eq!(
            one,
            pairs
                .iter()
                .filter(|(_, u)| u == "lisi")
                .cloned()
                .collect::<Vec<_>>()
        );
        // Default limit 50; entry shape.
        let page = get_by_user(&mut s, "wwCorp", &json!({ "userid_list": ["zhangsan"] }));
        let list = page["external_contact_list"].as_array().unwrap();
        assert_eq!(list.len(), 50);
        let e = &list[0];
        assert_eq!(e["external_contact"]["type"], 1);
        assert_eq!(e["external_contact"]["unionid"], unionid(0, 0).as_str());
        assert!(e["external_contact"]["name"]
            .as_str()
            .unwrap()
            .ends_with('0'));
        assert_eq!(e["follow_info"]["tag_id"].as_array().unwrap().len(), 1);
        assert!(e["follow_info"]["createtime"].as_u64().is_some());
        assert!(e["follow_info"]["add_way"].as_i64().is_some());
        assert!(list.iter().any(|e| e["follow_info"]["state"] != ""));
        assert!(list.iter().any(|e| e["follow_info"]["state"] == ""));

        // Errors.
        let call = |s: &mut State, b: Value| get_by_user(s, "wwCorp", &b)["errcode"].clone();
        assert_eq!(call(&mut s, json!({ "userid_list": ["nobody"] })), 60111);
        assert_eq!(call(&mut s, json!({ "userid_list": [] })), 40058);
        assert_eq!(call(&mut s, json!({})), 40058);
        let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
        assert_eq!(call(&mut s, json!({ "userid_list": many })), 40058);
        assert_eq!(
            call(&mut s, json!({ "userid_list": ["lisi"], "limit": 101 })),
            40058
        );
        assert_eq!(
            call(&mut s, json!({ "userid_list": ["lisi"], "limit": 0 })),
            40058
        );
        assert_eq!(
            call(
                &mut s,
                json!({ "userid_list": ["lisi"], "cursor": "garbage" })
            ),
            40058
        );
        // A cursor from another userid_list is refused.
        let other = get_by_user(&mut s, "wwCorp", &json!({ "userid_list": ["lisi"] }));
        let cursor = other["next_cursor"].as_str().unwrap();
        assert_eq!(
            call(
                &mut s,
                json!({ "userid_list": ["zhangsan"], "cursor": cursor })
            ),
            40058
        );

        assert_eq!(
            follow_user_list(&mut s, "wwCorp")["follow_user"],
            json!(["zhangsan", "lisi", "wangwu"])
        );
        let tags = corp_tag_list(&mut s, "wwCorp", &Value::Null);
        let group = &tags["tag_group"][0];
        assert_eq!(group["group_name"], "客户等级");
        assert_eq!(group["tag"][0]["name"], "VIP");
        assert_eq!(group["tag"][0]["id"], e["follow_info"]["tag_id"][0]);
        assert!(group["tag"][0]["id"].as_str().unwrap().starts_with("et"));
        let none = corp_tag_list(&mut s, "wwCorp", &json!({ "tag_id": ["etNope"] }));
        assert_eq!(none["tag_group"], json!([]));
    }

    #[test]
    fn union_seed_shared_between_official_and_wecom() {
        let mut s = state();
        s.populate(&PopulationRequest {
            union_seed: 42,
            ..PopulationRequest::new(50, 1)
        })
        .unwrap();
        s.populate_contacts(&ContactsRequest {
            union_seed: 42,
            ..ContactsRequest::new(&["zhangsan"], 30, 2)
        })
        .unwrap();
        let official = s.followers_page(None, 0, 100).unionids;
        let wecom = s.contacts_page(None, 0, 100).unionids;
        assert_eq!(wecom.len(), 30);
        assert_eq!(official[..30], wecom[..]);
        let openids: HashSet<String> = s.followers_page(None, 0, 100).openids.into_iter().collect();
        assert!(official.iter().all(|u| !openids.contains(u)));
    }

    #[tokio::test]
    async fn http_round_trip() {
        let fake = super::super::FakeWechat::start("127.0.0.1:0").unwrap();
        let base = fake.base_url().to_string();
        let http = reqwest::Client::new();
        let answer = http
            .post(format!("{base}/fake/followers"))
            .json(&json!({ "appid": "wxA", "count": 150, "seed": 5, "tags": { "vip": 2 } }))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
        let tags: Value = answer.json().await.unwrap();
        let vip = tags["tags"]["vip"].as_i64().unwrap();
        let token: Value = http
            .get(format!(
                "{base}/cgi-bin/token?grant_type=client_credential&appid=wxA&secret=s"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["access_token"].as_str().unwrap();
        let page: Value = http
            .get(format!(
                "{base}/cgi-bin/user/get?access_token={token}&next_openid="
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["total"], 150);
        let first = page["data"]["openid"][0].as_str().unwrap().to_string();
        let unsub: Value = http
            .post(format!("{base}/fake/followers/unsubscribe"))
            .json(&json!({ "appid": "wxA", "openids": [first] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(unsub["changed"], 1);
        let listed: FollowersPage = http
            .get(format!("{base}/fake/followers?appid=wxA&offset=0&limit=5"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed.total, 149);
        assert_eq!(listed.openids.len(), 5);
        let second = listed.openids[0].clone();
        let infos: Value = http
            .post(format!(
                "{base}/cgi-bin/user/info/batchget?access_token={token}"
            ))
            .json(&json!({ "user_list": [{ "openid": first }, { "openid": second }] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(infos["user_info_list"][0]["subscribe"], 0);
        assert_eq!(infos["user_info_list"][1]["subscribe"], 1);
        // Follower 1 (second) is odd: not a vip; the tag is listed.
        assert_eq!(infos["user_info_list"][1]["tagid_list"], json!([]));
        let tags: Value = http
            .get(format!("{base}/cgi-bin/tags/get?access_token={token}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(tags["tags"][0]["id"], vip);
        assert_eq!(tags["tags"][0]["count"], 75);

        let answer = http
            .post(format!("{base}/fake/contacts"))
            .json(&json!({ "staff": ["zhangsan", "lisi"], "count": 10, "seed": 1 }))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
        let token: Value = http
            .get(format!("{base}/cgi-bin/gettoken?corpid=wwC&corpsecret=s"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["access_token"].as_str().unwrap();
        let page: Value = http
            .post(format!(
                "{base}/cgi-bin/externalcontact/batch/get_by_user?access_token={token}"
            ))
            .json(&json!({ "userid_list": ["zhangsan", "lisi"], "cursor": "", "limit": 100 }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["external_contact_list"].as_array().unwrap().len(), 10);
        assert_eq!(page["next_cursor"], "");
        let bad = http
            .post(format!("{base}/fake/contacts"))
            .json(&json!({ "staff": [], "count": 10 }))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(fake.followers(Some("wxA"), 0, 1).total, 149);
        fake.stop().await;
    }
}
