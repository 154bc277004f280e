//! Campaigns: a message pushed to a segment of an account's followers, through the
//! outbox, at most once per follower, resumable after any crash.
//!
//! This module is the pure part: what a campaign is (read from `campaigns.toml` or
//! defined from the CLI), which channel WeChat allows for one follower, what the follower
//! is sent, and how progress adds up to a report. [`runner`] puts the audience into the
//! outbox (in chunks, each chunk one atomic write with the campaign's cursor);
//! [`send`] delivers one follower's message from the outbox worker.
//!
//! Channel choice (protocol.md §9, §11), per follower at send time:
//! official account: a customer-service message while the follower's window is open and
//! has messages left; otherwise the template message if the campaign has one; otherwise
//! the follower is skipped with the reason. WeCom: an app message to the user; a group
//! robot announcement is one post per campaign, not per follower.

pub mod goal;
pub mod runner;
pub mod send;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::AccountKind;
use crate::coupon::Batch;
use crate::follower::{CsClosed, Follower};
use crate::located::FileError;
use crate::rules::render::{Context, CouponField, Field, Template};
use crate::rules::CouponView;
use crate::segment::Segment;

/// A campaign as defined by operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub name: String,
    /// The account sent through (the first of `accounts = [...]`).
    pub account: String,
    /// Further accounts, in order of preference (`accounts = ["a", "b"]`): one person (a
    /// unionid) in several of them is reached once, through the first that has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
    /// A segment expression (`siyu followers --where`), as written.
    pub audience: String,
    /// Unix seconds: `siyu serve` starts it by itself then. None: started by hand.
    pub start_at: Option<i64>,
    /// Unix seconds: nothing is sent from then on; followers not reached are skipped.
    pub end_at: Option<i64>,
    /// Sends per second for this campaign (the account's own pace applies as well).
    pub rate_per_sec: Option<f64>,
    /// A coupon batch: one code per follower, issued when their message is sent.
    pub coupon: Option<String>,
    /// Official: the customer-service message; WeCom: the app message.
    pub message: Option<Content>,
    /// Official: the template message for followers outside the window.
    pub template: Option<TemplateContent>,
    /// WeCom: one group-robot announcement when the campaign starts.
    pub robot: Option<RobotContent>,
    /// Official: a mass send instead of one message per follower (no window needed; the
    /// same text for everyone, up to 10,000 followers a call; WeChat lets each follower
    /// receive 4 a month and filters the rest, as MASSSENDJOBFINISH reports).
    #[serde(default)]
    pub mass: Option<MassContent>,
    /// KPIs set in advance, measured in the report (`goal.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub goals: Vec<goal::Goal>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MassContent {
    pub text: String,
}

impl Campaign {
    /// Every account the campaign reaches, in order of preference.
    pub fn accounts(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.account.as_str()).chain(self.also.iter().map(String::as_str))
    }
}

/// The most followers one mass send takes (protocol.md §9), and the fewest.
pub const MASS_MAX: usize = 10_000;
pub const MASS_MIN: usize = 2;

/// What a follower reads. Text fields may hold placeholders (`{attr.name}`, `{coupon.code}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    Text(String),
    Image {
        media_id: String,
    },
    News {
        title: String,
        description: String,
        url: String,
        picurl: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateContent {
    pub id: String,
    pub url: Option<String>,
    /// Template field → value (placeholders allowed).
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobotContent {
    /// The environment variable holding the robot's webhook key (the key is a secret).
    pub key_env: String,
    pub text: String,
}

/// How one follower is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Customer-service message (official, inside the window).
    Custom,
    /// Template message (official).
    Template,
    /// WeCom app message.
    App,
    /// Mass send (official), many followers a call.
    Mass,
}

impl Channel {
    /// Its name in files, JSON and the report's metrics (`campaign_sends:custom`).
    pub fn key(self) -> &'static str {
        match self {
            Channel::Custom => "custom",
            Channel::Template => "template",
            Channel::App => "app",
            Channel::Mass => "mass",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Custom => "customer-service message",
            Channel::Template => "template message",
            Channel::App => "app message",
            Channel::Mass => "mass message",
        })
    }
}

/// Why a follower gets nothing.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, thiserror::Error,
)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    #[error("not a known follower")]
    UnknownFollower,
    #[error("unsubscribed")]
    Unsubscribed,
    #[error("outside the 48-hour window and the campaign has no template")]
    OutsideWindow,
    #[error("the window's messages are used up and the campaign has no template")]
    WindowUsedUp,
    #[error("no coupon: {0}")]
    NoCoupon(String),
    #[error("the campaign ended before this follower's turn")]
    Ended,
    #[error("a mass send takes at least 2 followers; this one was left alone in the last batch")]
    MassTooFew,
    #[error("an external contact: WeCom app messages reach members of the corp only")]
    ExternalContact,
}

/// Where one follower stands in a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Progress {
    /// In the outbox.
    Queued,
    /// A call without an idempotency key was under way (customer-service and app
    /// messages). Found so after a restart, the follower may or may not have the message:
    /// it is not sent again (at most once) and is reported as in doubt.
    Sending {
        channel: Channel,
    },
    Sent {
        channel: Channel,
        at: i64,
        /// WeChat's message id (template messages), reported again by
        /// TEMPLATESENDJOBFINISH.
        msgid: Option<i64>,
        coupon: Option<String>,
        /// What TEMPLATESENDJOBFINISH said (`success`, `failed:user block`…).
        delivery: Option<String>,
    },
    Failed {
        channel: Option<Channel>,
        reason: String,
        at: i64,
    },
    Skipped {
        reason: Skip,
        at: i64,
    },
}

/// Reported for followers whose send was under way when siyu stopped.
pub const IN_DOUBT: &str =
    "in doubt: siyu stopped while the message was being sent; not sent again (at most once)";

/// Where a campaign stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Defined (from the CLI) or scheduled, not started.
    Waiting,
    Running,
    Paused,
    /// Every follower of the audience was queued and settled (or the end time passed).
    Done,
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunState::Waiting => "waiting",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Done => "done",
        })
    }
}

/// A campaign as the store keeps it: the definition it was started with (a later edit
/// of the file does not change a running campaign), its state and its cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRun {
    pub campaign: Campaign,
    pub state: RunState,
    /// The last openid put into the outbox (followers are walked in key order).
    pub cursor: Option<String>,
    /// Every follower of the audience is in the outbox (or was skipped).
    pub enqueued_all: bool,
    /// Followers of the audience queued so far.
    pub targeted: u64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Whether the robot announcement was queued.
    pub announced: bool,
    /// Defined with `siyu campaign define` (else: from the campaigns file).
    pub from_cli: bool,
    /// Mass sends queued so far.
    #[serde(default)]
    pub mass_batches: u64,
    /// Which of the campaign's accounts is being queued (an index into `accounts()`);
    /// `cursor` is an openid of that account.
    #[serde(default)]
    pub walking: usize,
    /// Followers of a later account left out because the same person was queued through
    /// an earlier one.
    #[serde(default)]
    pub same_person: u64,
}

impl CampaignRun {
    pub fn new(campaign: Campaign, from_cli: bool) -> CampaignRun {
        CampaignRun {
            campaign,
            state: RunState::Waiting,
            cursor: None,
            enqueued_all: false,
            targeted: 0,
            started_at: None,
            finished_at: None,
            announced: false,
            from_cli,
            mass_batches: 0,
            walking: 0,
            same_person: 0,
        }
    }

    /// The account whose followers are being queued.
    pub fn walking_account(&self) -> &str {
        self.campaign
            .accounts()
            .nth(self.walking)
            .unwrap_or(&self.campaign.account)
    }
}

/// The channel WeChat allows for this follower now, or why there is none.
pub fn choose_channel(
    campaign: &Campaign,
    kind: AccountKind,
    follower: Option<&Follower>,
    now: i64,
) -> Result<Channel, Skip> {
    let Some(f) = follower else {
        return Err(Skip::UnknownFollower);
    };
    if campaign.end_at.is_some_and(|end| now >= end) {
        return Err(Skip::Ended);
    }
    match kind {
        AccountKind::Wecom => {
            // WeCom users who removed the contact are marked so; app users never subscribe.
            if !f.subscribed && f.unsubscribed_at.is_some() {
                return Err(Skip::Unsubscribed);
            }
            // Customers added by a staff member (the engine records who): not corp members.
            if f.attributes.contains_key("wecom_staff") {
                return Err(Skip::ExternalContact);
            }
            Ok(Channel::App)
        }
        AccountKind::Official => {
            if !f.subscribed {
                return Err(Skip::Unsubscribed);
            }
            if campaign.mass.is_some() {
                return Ok(Channel::Mass);
            }
            let window = f.cs_open(now);
            match (&campaign.message, &campaign.template, window) {
                (Some(_), _, Ok(())) => Ok(Channel::Custom),
                (_, Some(_), _) => Ok(Channel::Template),
                (_, None, Err(CsClosed::UsedUp)) => Err(Skip::WindowUsedUp),
                (_, None, _) => Err(Skip::OutsideWindow),
            }
        }
    }
}

/// A campaign's content with its placeholders parsed (once per delivery batch).
pub struct Rendered {
    message: Option<(Content, Vec<Template>)>,
    template: Option<(TemplateContent, Vec<(String, Template)>)>,
}

impl Rendered {
    /// Parses the templates; definitions were checked when read, so errors are rare
    /// (a store written by another version) and reported as the reason.
    pub fn new(c: &Campaign) -> Result<Rendered, String> {
        let parse = |s: &str| Template::parse(s).map_err(|e| e.message);
        let message = match &c.message {
            None => None,
            Some(content) => {
                let texts = content_texts(content)
                    .into_iter()
                    .map(parse)
                    .collect::<Result<Vec<_>, _>>()?;
                Some((content.clone(), texts))
            }
        };
        let template = match &c.template {
            None => None,
            Some(t) => {
                let data = t
                    .data
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), parse(v)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                Some((t.clone(), data))
            }
        };
        Ok(Rendered { message, template })
    }

    /// The message for `f`, personalised: the passive-reply shape the outbox already
    /// knows how to send as a customer-service or app message.
    pub fn message(
        &self,
        f: &Follower,
        coupon: Option<&CouponView>,
    ) -> Option<crate::protocol::Reply> {
        use crate::protocol::{Article, Reply};
        let (content, texts) = self.message.as_ref()?;
        let ctx = Context {
            coupon,
            ..Context::default()
        };
        let r = |i: usize| texts[i].render(&ctx, f);
        Some(match content {
            Content::Text(_) => Reply::Text { content: r(0) },
            Content::Image { media_id } => Reply::Image {
                media_id: media_id.clone(),
            },
            Content::News { url, picurl, .. } => Reply::News {
                articles: vec![Article {
                    title: r(0),
                    description: Some(r(1)).filter(|d| !d.is_empty()),
                    url: Some(url.clone()),
                    pic_url: Some(picurl.clone()).filter(|p| !p.is_empty()),
                }],
            },
        })
    }

    /// The template message for `f`.
    pub fn template(
        &self,
        f: &Follower,
        coupon: Option<&CouponView>,
    ) -> Option<crate::api::TemplateMessage> {
        let (t, data) = self.template.as_ref()?;
        let ctx = Context {
            coupon,
            ..Context::default()
        };
        let mut m = crate::api::TemplateMessage::new(f.openid.clone(), t.id.clone());
        m.url = t.url.clone();
        for (key, value) in data {
            m = m.field(key.clone(), value.render(&ctx, f));
        }
        Some(m)
    }
}

/// The strings of a content that may hold placeholders, in a fixed order.
fn content_texts(c: &Content) -> Vec<&str> {
    match c {
        Content::Text(t) => vec![t],
        Content::Image { .. } => vec![],
        Content::News {
            title, description, ..
        } => vec![title, description],
    }
}

/// What a follower sees of the coupon issued with a campaign message.
pub fn coupon_view(batch: &Batch, c: &crate::coupon::Coupon) -> CouponView {
    CouponView {
        code: c.code.clone(),
        title: batch.title.clone(),
        value: batch.value.clone(),
        // The last valid day: the end is exclusive.
        expires: crate::coupon::china_date(c.expires_at - 1),
        refused: String::new(),
    }
}

/// WeChat's idempotency key for a template send: the same follower and campaign always
/// give the same id, so a send repeated after a crash is not delivered twice.
pub fn client_msg_id(campaign: &str, openid: &str) -> String {
    stable_id(&format!("siyu\0{campaign}\0{openid}"))
}

/// The `clientmsgid` of a campaign's mass-send batch: a resend after a crash is refused
/// by WeChat (45065) instead of delivered twice.
pub fn mass_client_msg_id(campaign: &str, batch: u64) -> String {
    stable_id(&format!("siyu\0mass\0{campaign}\0{batch}"))
}

/// 40 hex characters, the same for the same input (SHA-1).
fn stable_id(input: &str) -> String {
    use sha1::{Digest, Sha1};
    hex::encode(Sha1::digest(input.as_bytes()))
}

// --- Reports ---

/// A campaign's numbers, added up from its followers' progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub state: String,
    /// Followers of the audience put into the outbox so far.
    pub targeted: u64,
    /// Left out: the same person was reached through an earlier account.
    #[serde(default)]
    pub same_person: u64,
    /// Still in the outbox.
    pub queued: u64,
    pub sent: u64,
    pub sent_by_channel: BTreeMap<String, u64>,
    pub failed: u64,
    pub failed_by_reason: BTreeMap<String, u64>,
    pub skipped: u64,
    pub skipped_by_reason: BTreeMap<String, u64>,
    pub coupons_issued: u64,
    pub coupons_redeemed: u64,
    /// TEMPLATESENDJOBFINISH statuses received.
    pub deliveries: BTreeMap<String, u64>,
    /// Mass-send jobs, with what MASSSENDJOBFINISH said of each.
    pub mass_jobs: Vec<MassJob>,
    /// When it started and finished (unix seconds; `Display` leaves them to the caller,
    /// which knows the operator's display offset).
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The campaign's goals and how far each has come.
    #[serde(default)]
    pub goals: Vec<goal::GoalProgress>,
}

/// One mass send of a campaign and, once WeChat reports it, its result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MassJob {
    pub msg_id: i64,
    /// Followers in the call.
    pub followers: u64,
    /// From MASSSENDJOBFINISH: `send success`, `send fail`, `err(…)`.
    pub status: Option<String>,
    pub total_count: u64,
    /// Followers WeChat left out (their monthly allowance of 4 mass messages was used).
    pub filter_count: u64,
    pub sent_count: u64,
    pub error_count: u64,
}

impl Report {
    pub fn new(run: &CampaignRun) -> Report {
        Report {
            name: run.campaign.name.clone(),
            state: run.state.to_string(),
            targeted: run.targeted,
            same_person: run.same_person,
            started_at: run.started_at,
            finished_at: run.finished_at,
            ..Report::default()
        }
    }

    /// Counts one follower's progress; `redeemed` says whether their coupon was used.
    pub fn add(&mut self, p: &Progress, redeemed: bool) {
        match p {
            Progress::Queued => self.queued += 1,
            Progress::Sending { channel } => {
                // Still sending (the worker is at it), or in doubt after a crash.
                self.queued += 1;
                let _ = channel;
            }
            Progress::Sent {
                channel,
                coupon,
                delivery,
                ..
            } => {
                self.sent += 1;
                *self.sent_by_channel.entry(channel.to_string()).or_default() += 1;
                if coupon.is_some() {
                    self.coupons_issued += 1;
                    self.coupons_redeemed += u64::from(redeemed);
                }
                if let Some(d) = delivery {
                    *self.deliveries.entry(d.clone()).or_default() += 1;
                }
            }
            Progress::Failed { reason, .. } => {
                self.failed += 1;
                *self.failed_by_reason.entry(reason.clone()).or_default() += 1;
            }
            Progress::Skipped { reason, .. } => {
                self.skipped += 1;
                *self
                    .skipped_by_reason
                    .entry(reason.to_string())
                    .or_default() += 1;
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "campaign {} ({})", self.name, self.state)?;
        writeln!(f, "  targeted  {}", self.targeted)?;
        if self.same_person > 0 {
            writeln!(
                f,
                "    {:>7}  more left out: the same person, reached through an earlier account",
                self.same_person
            )?;
        }
        writeln!(f, "  queued    {}", self.queued)?;
        writeln!(f, "  sent      {}", self.sent)?;
        for (c, n) in &self.sent_by_channel {
            writeln!(f, "    {n:>7}  {c}")?;
        }
        for (d, n) in &self.deliveries {
            writeln!(f, "    {n:>7}  delivery reported: {d}")?;
        }
        writeln!(f, "  failed    {}", self.failed)?;
        for (r, n) in &self.failed_by_reason {
            writeln!(f, "    {n:>7}  {r}")?;
        }
        writeln!(f, "  skipped   {}", self.skipped)?;
        for (r, n) in &self.skipped_by_reason {
            writeln!(f, "    {n:>7}  {r}")?;
        }
        for j in &self.mass_jobs {
            match &j.status {
                None => writeln!(
                    f,
                    "  mass job {} ({} followers): no report yet",
                    j.msg_id, j.followers
                )?,
                Some(s) => writeln!(
                    f,
                    "  mass job {} ({} followers): {s}: total {}, filtered {}, sent {}, errors {}",
                    j.msg_id,
                    j.followers,
                    j.total_count,
                    j.filter_count,
                    j.sent_count,
                    j.error_count
                )?,
            }
        }
        write!(
            f,
            "  coupons   {} issued, {} redeemed since",
            self.coupons_issued, self.coupons_redeemed
        )?;
        for g in &self.goals {
            let status = match g.status.as_str() {
                "met" => "met (已达成)",
                "missed" => "missed (未达成)",
                _ => "open (进行中)",
            };
            write!(
                f,
                "\n  goal      {} ≥ {} by {}: {} so far, {status}",
                g.metric, g.at_least, g.by, g.value
            )?;
        }
        Ok(())
    }
}

/// A dry run: how the audience would be reached now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub audience: u64,
    /// Left out: the same person is in the audience of an earlier account.
    #[serde(default)]
    pub same_person: u64,
    pub by_channel: BTreeMap<String, u64>,
    pub unreachable: BTreeMap<String, u64>,
}

impl Plan {
    pub fn add(&mut self, choice: Result<Channel, Skip>) {
        self.audience += 1;
        match choice {
            Ok(c) => *self.by_channel.entry(c.to_string()).or_default() += 1,
            Err(s) => *self.unreachable.entry(s.to_string()).or_default() += 1,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "audience  {}", self.audience)?;
        if self.same_person > 0 {
            writeln!(
                f,
                "  {:>7}  more left out: the same person, reached through an earlier account",
                self.same_person
            )?;
        }
        for (c, n) in &self.by_channel {
            writeln!(f, "  {n:>7}  by {c}")?;
        }
        let unreachable: u64 = self.unreachable.values().sum();
        write!(f, "unreachable {unreachable}")?;
        for (r, n) in &self.unreachable {
            write!(f, "\n  {n:>7}  {r}")?;
        }
        Ok(())
    }
}

// --- The campaigns file ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    campaign: Vec<Spanned<RawCampaign>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaign {
    name: Spanned<String>,
    account: Option<Spanned<String>>,
    accounts: Option<Spanned<Vec<Spanned<String>>>>,
    audience: Spanned<String>,
    start: Option<Spanned<toml::value::Datetime>>,
    end: Option<Spanned<toml::value::Datetime>>,
    rate_per_sec: Option<Spanned<f64>>,
    coupon: Option<Spanned<String>>,
    message: Option<Spanned<RawContent>>,
    template: Option<Spanned<RawTemplate>>,
    robot: Option<Spanned<RawRobot>>,
    mass: Option<Spanned<RawMass>>,
    #[serde(default)]
    goals: Vec<Spanned<RawGoal>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGoal {
    metric: String,
    at_least: i64,
    /// `"2026-11-11"` or a TOML date `2026-11-11`.
    by: toml::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMass {
    text: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContent {
    text: Option<Spanned<String>>,
    image: Option<String>,
    news: Option<RawNews>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNews {
    title: Spanned<String>,
    description: Option<Spanned<String>>,
    url: String,
    #[serde(default)]
    picurl: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    id: String,
    url: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRobot {
    key_env: String,
    text: Spanned<String>,
}

/// What a campaigns file is checked against.
pub struct Known<'a> {
    pub accounts: &'a dyn Fn(&str) -> Option<AccountKind>,
    pub coupons: &'a [Batch],
}

/// Parses `text` (the file `file`); every mistake is reported with its place.
pub fn parse_campaigns(
    file: &str,
    text: &str,
    known: &Known<'_>,
) -> Result<Vec<Campaign>, Vec<FileError>> {
    let raw: RawFile =
        toml::from_str(text).map_err(|e| vec![FileError::from_toml(file, text, &e)])?;
    let mut errors = Vec::new();
    let mut campaigns = Vec::new();
    let mut names = BTreeSet::new();
    for raw in raw.campaign {
        let start = raw.span().start;
        let c = raw.into_inner();
        let mut err = |offset: usize, m: String| errors.push(FileError::at(file, text, offset, m));
        let name = c.name.get_ref().trim().to_string();
        if !is_name(&name) {
            err(
                c.name.span().start,
                format!("campaign name `{name}`: use letters, digits, `-` and `_` (1 to 64)"),
            );
        } else if !names.insert(name.clone()) {
            err(
                c.name.span().start,
                format!("campaign `{name}` is defined twice"),
            );
        }
        let campaign = check(
            Draft {
                name,
                account: c.account.clone(),
                accounts: c.accounts.clone(),
                audience: c.audience.clone(),
                start: c.start.clone(),
                end: c.end.clone(),
                rate_per_sec: c.rate_per_sec.clone(),
                coupon: c.coupon.clone(),
                message: c.message,
                template: c.template,
                robot: c.robot,
                mass: c.mass,
                goals: c.goals,
                at: start,
            },
            text,
            known,
            &mut err,
        );
        campaigns.extend(campaign);
    }
    if errors.is_empty() {
        Ok(campaigns)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(errors)
    }
}

struct Draft {
    name: String,
    account: Option<Spanned<String>>,
    accounts: Option<Spanned<Vec<Spanned<String>>>>,
    audience: Spanned<String>,
    start: Option<Spanned<toml::value::Datetime>>,
    end: Option<Spanned<toml::value::Datetime>>,
    rate_per_sec: Option<Spanned<f64>>,
    coupon: Option<Spanned<String>>,
    message: Option<Spanned<RawContent>>,
    template: Option<Spanned<RawTemplate>>,
    robot: Option<Spanned<RawRobot>>,
    mass: Option<Spanned<RawMass>>,
    goals: Vec<Spanned<RawGoal>>,
    at: usize,
}

/// Validates one campaign; reports mistakes through `err(offset, message)`.
fn check(
    d: Draft,
    text: &str,
    known: &Known<'_>,
    report: &mut dyn FnMut(usize, String),
) -> Option<Campaign> {
    let mut mistakes = 0usize;
    let mut err = |offset: usize, m: String| {
        mistakes += 1;
        report(offset, m)
    };
    let listed: Vec<Spanned<String>> = match (&d.account, &d.accounts) {
        (Some(a), None) => vec![a.clone()],
        (None, Some(list)) if !list.get_ref().is_empty() => list.get_ref().clone(),
        (None, Some(list)) => {
            err(
                list.span().start,
                "accounts = [] names no account: list one or more".into(),
            );
            Vec::new()
        }
        (Some(_), Some(list)) => {
            err(
                list.span().start,
                "give either account = \"ID\" or accounts = [\"ID\", ...], not both".into(),
            );
            Vec::new()
        }
        (None, None) => {
            err(
                d.at,
                "missing account: write account = \"ID\" (or accounts = [\"A\", \"B\"] to reach each person once across several)".into(),
            );
            Vec::new()
        }
    };
    let mut kind = None;
    let mut seen = BTreeSet::new();
    for (i, a) in listed.iter().enumerate() {
        let id = a.get_ref();
        match (known.accounts)(id) {
            None => err(a.span().start, format!("no account `{id}` in the config")),
            Some(k) if i == 0 => kind = Some(k),
            Some(k) if Some(k) != kind && kind.is_some() => err(
                a.span().start,
                format!(
                    "account `{id}` is {}, the first is {}: one campaign sends one kind of message, so its accounts are all official accounts or all WeCom",
                    kind_name(k),
                    kind_name(kind.unwrap_or(k))
                ),
            ),
            Some(_) => {}
        }
        if !seen.insert(id.clone()) {
            err(a.span().start, format!("account `{id}` is listed twice"));
        }
    }
    let account = listed
        .first()
        .map(|a| a.get_ref().clone())
        .unwrap_or_default();
    let also: Vec<String> = listed.iter().skip(1).map(|a| a.get_ref().clone()).collect();
    let audience = match Segment::parse(d.audience.get_ref()) {
        // Kept as written: it is the operator's text in listings.
        Ok(seg) => {
            if let Err(m) = crate::person::check_accounts(&seg, &|a| (known.accounts)(a).is_some())
            {
                err(d.audience.span().start, format!("audience: {m}"));
            }
            d.audience.get_ref().trim().to_string()
        }
        Err(e) => {
            // The column inside the string, when it is written without escapes.
            let span = d.audience.span();
            let raw = text.get(span.clone()).unwrap_or("");
            let inner = if raw.starts_with('"') || raw.starts_with('\'') {
                let byte: usize = d
                    .audience
                    .get_ref()
                    .chars()
                    .take(e.column.saturating_sub(1))
                    .map(char::len_utf8)
                    .sum();
                if raw.contains('\\') {
                    0
                } else {
                    1 + byte
                }
            } else {
                0
            };
            err(span.start + inner, format!("audience: {}", e.message));
            String::new()
        }
    };
    let instant = |v: &Option<Spanned<toml::value::Datetime>>,
                   err: &mut dyn FnMut(usize, String)|
     -> Result<Option<i64>, ()> {
        match v {
            None => Ok(None),
            Some(v) => crate::coupon::unix(v.get_ref()).map(Some).map_err(|m| {
                err(v.span().start, m);
            }),
        }
    };
    let start_at = instant(&d.start, &mut err).unwrap_or(None);
    let end_at = instant(&d.end, &mut err).unwrap_or(None);
    if let (Some(s), Some(e), Some(end)) = (start_at, end_at, &d.end) {
        if e <= s {
            err(end.span().start, "end must be after start".into());
        }
    }
    let rate_per_sec = d.rate_per_sec.as_ref().map(|r| *r.get_ref());
    if let Some(r) = &d.rate_per_sec {
        if !(*r.get_ref() > 0.0 && r.get_ref().is_finite()) {
            err(
                r.span().start,
                "rate_per_sec must be a number above 0 (leave it out for no limit)".into(),
            );
        }
    }
    let coupon = d.coupon.as_ref().map(|c| c.get_ref().clone());
    if let Some(c) = &d.coupon {
        if !known.coupons.iter().any(|b| &b.name == c.get_ref()) {
            err(
                c.span().start,
                format!(
                    "no coupon batch `{}` in the coupons file{}",
                    c.get_ref(),
                    if known.coupons.is_empty() {
                        " ([coupons] file in the config)"
                    } else {
                        ""
                    }
                ),
            );
        }
    }
    // Placeholders: checked like rule replies, minus what only a callback has.
    let mut texts: Vec<&Spanned<String>> = Vec::new();
    let message = d.message.as_ref().and_then(|m| {
        let at = m.span().start;
        let m = m.get_ref();
        let given = [m.text.is_some(), m.image.is_some(), m.news.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            err(
                at,
                "[campaign.message] takes one of text, image (a media_id) or news".into(),
            );
            return None;
        }
        if let Some(t) = &m.text {
            texts.push(t);
            return Some(Content::Text(t.get_ref().clone()));
        }
        if let Some(media_id) = &m.image {
            return Some(Content::Image {
                media_id: media_id.clone(),
            });
        }
        let n = m.news.as_ref()?;
        texts.push(&n.title);
        texts.extend(&n.description);
        Some(Content::News {
            title: n.title.get_ref().clone(),
            description: n
                .description
                .as_ref()
                .map(|d| d.get_ref().clone())
                .unwrap_or_default(),
            url: n.url.clone(),
            picurl: n.picurl.clone(),
        })
    });
    let template = d.template.as_ref().map(|t| {
        let t = t.get_ref();
        texts.extend(t.data.values());
        TemplateContent {
            id: t.id.clone(),
            url: t.url.clone(),
            data: t
                .data
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect(),
        }
    });
    let robot = d.robot.as_ref().map(|r| {
        let r = r.get_ref();
        plain_text(
            &r.text,
            "a group announcement goes to a group, not to one follower: no placeholders",
            &mut err,
        );
        RobotContent {
            key_env: r.key_env.clone(),
            text: r.text.get_ref().clone(),
        }
    });
    let mass = d.mass.as_ref().map(|m| {
        let m = m.get_ref();
        plain_text(
            &m.text,
            "a mass send is one text for everyone: no placeholders (use [campaign.message] and [campaign.template] to personalise)",
            &mut err,
        );
        MassContent {
            text: m.text.get_ref().clone(),
        }
    });
    if let Some(m) = &d.mass {
        if d.message.is_some() || d.template.is_some() || d.coupon.is_some() {
            err(
                m.span().start,
                "[campaign.mass] sends one text to everyone: leave out [campaign.message], [campaign.template] and coupon".into(),
            );
        }
    }
    for t in &texts {
        let start = t.span().start;
        match Template::parse(t.get_ref()) {
            Err(e) => err(start, e.message),
            Ok(template) => {
                for (placeholder, _) in template.placeholders() {
                    let field = &placeholder.field;
                    let why = match field {
                        Field::Content | Field::Match(_) | Field::EventKey => Some(format!(
                            "`{field}`: a campaign has no incoming message to take it from"
                        )),
                        Field::Coupon(CouponField::Refused) => Some(format!(
                            "`{field}`: a follower without a coupon is skipped, never sent a refusal"
                        )),
                        Field::Coupon(_) if coupon.is_none() => Some(format!(
                            "`{field}` needs `coupon = \"BATCH\"` in this campaign"
                        )),
                        _ => None,
                    };
                    if let Some(why) = why {
                        err(start, why);
                    }
                }
            }
        }
    }
    match kind {
        Some(AccountKind::Official) => {
            if d.robot.is_some() {
                err(
                    d.robot.as_ref().map_or(d.at, |r| r.span().start),
                    "[campaign.robot] is a WeCom group robot: not for an official account".into(),
                );
            }
            if message.is_none() && template.is_none() && d.message.is_none() && d.mass.is_none() {
                err(
                    d.at,
                    "an official-account campaign needs [campaign.message] (customer-service, inside the 48-hour window), [campaign.template], or both".into());
            }
        }
        Some(AccountKind::Wecom) => {
            if let Some(m) = &d.mass {
                err(
                    m.span().start,
                    "mass sends are for official accounts".into(),
                );
            }
            if let Some(t) = &d.template {
                err(
                    t.span().start,
                    "template messages are for official accounts; a WeCom campaign sends [campaign.message] as an app message".into());
            }
            if !matches!(message, None | Some(Content::Text(_))) {
                err(
                    d.message.as_ref().map_or(d.at, |m| m.span().start),
                    "a WeCom app message is text".into(),
                );
            }
            if d.message.is_none() && robot.is_none() {
                err(
                    d.at,
                    "a WeCom campaign needs [campaign.message] (an app message per follower), [campaign.robot] (one group announcement), or both".into());
            }
        }
        None => {}
    }
    let mut goals = Vec::new();
    for g in &d.goals {
        let raw = g.get_ref();
        let by = match &raw.by {
            toml::Value::String(s) => s.clone(),
            toml::Value::Datetime(dt) => dt.to_string(),
            other => other.to_string(),
        };
        match goal::check(raw.metric.trim(), raw.at_least, by.trim()) {
            Ok(goal) => goals.push(goal),
            Err(m) => err(g.span().start, m),
        }
    }
    (mistakes == 0).then_some(Campaign {
        name: d.name,
        account,
        also,
        audience,
        start_at,
        end_at,
        rate_per_sec,
        coupon,
        message,
        template,
        robot,
        mass,
        goals,
    })
}

fn kind_name(k: AccountKind) -> &'static str {
    match k {
        AccountKind::Official => "an official account",
        AccountKind::Wecom => "WeCom",
    }
}

/// Checks a text that goes to many at once (a group, a mass send): braces as in templates,
/// but no placeholders, since there is no one follower to fill them from.
fn plain_text(text: &Spanned<String>, why: &str, err: &mut dyn FnMut(usize, String)) {
    match Template::parse(text.get_ref()) {
        Err(e) => err(text.span().start, e.message),
        Ok(t) if t.placeholders().next().is_some() => err(text.span().start, why.into()),
        Ok(_) => {}
    }
}

pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests;
