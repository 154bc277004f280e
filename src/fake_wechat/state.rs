//! What the fake remembers: issued tokens, open customer-service windows, tags, the call log
//! and the fault queue. Plain data behind one std `Mutex` (see `mod.rs`), no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::population::{Contacts, Followers, TagRule};

/// One API call as the fake received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedCall {
    pub method: String,
    /// Without the query.
    pub path: String,
    /// Raw, with `secret` / `corpsecret` values replaced by `***`.
    pub query: String,
    /// The JSON body (`secret` redacted), the raw text if it was not JSON, null if empty.
    pub body: Value,
    /// Unix milliseconds.
    pub at: i64,
    /// The `errcode` answered (0: accepted); `None` when the answer was a dropped
    /// connection or a bare HTTP status.
    #[serde(default)]
    pub errcode: Option<i64>,
}

/// One injected fault, applied to the next call (to the next call to `path`, if given).
/// `delay_ms` is served first; then `drop`, `status` or `errcode` replace the answer. A
/// fault with only a delay lets the call proceed normally afterwards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Close the connection without a complete answer.
    #[serde(default)]
    pub drop: bool,
    /// Answer this HTTP status (e.g. 502) with an empty body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errmsg: Option<String>,
}

impl Fault {
    pub fn errcode(code: i64) -> Fault {
        Fault {
            errcode: Some(code),
            ..Fault::default()
        }
    }
}

/// `POST /fake/hold`: calls to `path` past the first `after` hang, unanswered and not
/// recorded (WeChat never got them), until `DELETE /fake/hold` drops them. Lets a test
/// stop a client at a known point of its queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    pub path: String,
    pub after: usize,
}

/// `POST /fake/window`: the follower just wrote (5 messages in 48 hours by default).
/// `openid = "*"` opens a window for every follower without one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRequest {
    pub openid: String,
    #[serde(default = "default_messages")]
    pub messages: u32,
    #[serde(default = "default_window_secs")]
    pub seconds: u64,
}

fn default_messages() -> u32 {
    5
}

fn default_window_secs() -> u64 {
    48 * 3600
}

pub(crate) struct Issued {
    /// AppID or CorpID.
    pub owner: String,
    pub expires: Instant,
}

pub(crate) struct Window {
    pub remaining: u32,
    pub until: Instant,
}

/// A follower tag. Members are the followers tagged one by one (`batchtagging`) plus whole
/// slices of populations (`POST /fake/followers` `tags`: every Nth follower), kept as rules
/// so that a million-follower population costs no per-follower memory; `untagged` holds
/// the rule-matched followers untagged since.
pub(crate) struct FakeTag {
    pub name: String,
    pub members: BTreeSet<String>,
    pub rules: Vec<TagRule>,
    pub untagged: BTreeSet<String>,
}

impl FakeTag {
    pub fn new(name: &str) -> FakeTag {
        FakeTag {
            name: name.to_string(),
            members: BTreeSet::new(),
            rules: Vec::new(),
            untagged: BTreeSet::new(),
        }
    }

    fn ruled(&self, openid: &str) -> bool {
        self.rules.iter().any(|r| r.matches(openid))
    }

    pub fn contains(&self, openid: &str) -> bool {
        self.members.contains(openid) || (self.ruled(openid) && !self.untagged.contains(openid))
    }

    pub fn insert(&mut self, openid: &str) {
        if self.ruled(openid) {
            self.untagged.remove(openid);
        } else {
            self.members.insert(openid.to_string());
        }
    }

    pub fn remove(&mut self, openid: &str) {
        if !self.members.remove(openid) && self.ruled(openid) {
            self.untagged.insert(openid.to_string());
        }
    }

    /// How many followers carry the tag (`tags/get`'s `count`).
    pub fn count(&self) -> u64 {
        let ruled: u64 = self.rules.iter().map(TagRule::members).sum();
        self.members.len() as u64 + ruled - self.untagged.len() as u64
    }

    /// After the rules changed: members a rule now covers are no longer listed one by
    /// one, and `untagged` only keeps followers some rule still covers.
    pub fn normalise(&mut self) {
        let FakeTag {
            members,
            rules,
            untagged,
            ..
        } = self;
        members.retain(|o| !rules.iter().any(|r| r.matches(o)));
        untagged.retain(|o| rules.iter().any(|r| r.matches(o)));
    }
}

pub(crate) struct State {
    pub token_lifetime: Duration,
    /// token → who it was issued to and until when.
    pub tokens: HashMap<String, Issued>,
    /// AppID → its current stable token.
    pub stable: HashMap<String, String>,
    pub windows: HashMap<String, Window>,
    pub tags: BTreeMap<i64, FakeTag>,
    pub next_tag_id: i64,
    pub next_msgid: i64,
    /// (touser, client_msg_id) → msgid of template messages sent.
    pub template_sends: HashMap<(String, String), i64>,
    /// Template messages actually delivered (repeats by client_msg_id not counted).
    pub templates_delivered: u64,
    /// Mass sends' `clientmsgid`s seen, and followers reached by mass sends.
    pub mass_client_ids: HashSet<String>,
    pub mass_recipients: u64,
    pub used_welcome_codes: HashSet<String>,
    /// Temporary media uploaded (`media/upload`): media_id → its PNG bytes, so a test
    /// can read the poster's QR code back.
    pub media: HashMap<String, Vec<u8>>,
    /// Robot key → send times in the last minute.
    pub robot_sends: HashMap<String, VecDeque<Instant>>,
    pub calls: Vec<RecordedCall>,
    pub faults: VecDeque<Fault>,
    pub hold: Option<HoldRequest>,
    /// Calls hanging under `hold` right now.
    pub held: usize,
    /// AppID → its follower population; `""`: the one for every AppID without its own.
    pub followers: HashMap<String, Followers>,
    /// CorpID → its external contacts; `""`: the one for every CorpID without its own.
    pub contacts: HashMap<String, Contacts>,
    /// `POST /fake/qrcode {"expire_seconds": N}`: temporary QR codes are made for at most
    /// N seconds whatever was asked (WeChat answers the life it gave), so a test sees a
    /// code near its end without waiting days.
    pub qr_expire_cap: Option<u64>,
    /// "Contact me" codes made, numbering their config_ids.
    pub contact_ways: u64,
}

impl State {
    /// Ages every issued token past its expiry: the next call with one gets 42001.
    pub fn expire_tokens(&mut self) {
        let now = Instant::now();
        self.tokens.values_mut().for_each(|t| t.expires = now);
        self.stable.clear();
    }

    pub fn new(token_lifetime: Duration) -> State {
        State {
            qr_expire_cap: None,
            contact_ways: 0,
            token_lifetime,
            tokens: HashMap::new(),
            stable: HashMap::new(),
            windows: HashMap::new(),
            tags: BTreeMap::new(),
            // WeChat reserves ids 0–2 for its own tags; custom tags start above.
            next_tag_id: 100,
            next_msgid: 1_000_000,
            template_sends: HashMap::new(),
            templates_delivered: 0,
            mass_client_ids: HashSet::new(),
            mass_recipients: 0,
            used_welcome_codes: HashSet::new(),
            media: HashMap::new(),
            robot_sends: HashMap::new(),
            calls: Vec::new(),
            faults: VecDeque::new(),
            hold: None,
            held: 0,
            followers: HashMap::new(),
            contacts: HashMap::new(),
        }
    }

    /// Removes and returns the first queued fault that applies to `path`.
    pub fn take_fault(&mut self, path: &str) -> Option<Fault> {
        let i = self
            .faults
            .iter()
            .position(|f| f.path.as_deref().is_none_or(|p| p == path))?;
        self.faults.remove(i)
    }

    pub fn open_window(&mut self, w: &WindowRequest) {
        self.windows.insert(
            w.openid.clone(),
            Window {
                remaining: w.messages,
                until: Instant::now() + Duration::from_secs(w.seconds),
            },
        );
    }
}
