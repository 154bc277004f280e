//! A referral programme as it runs (PURE): the validated form of one `[[referral]]`, built
//! by `config.rs` from the file. Once built it is valid: names fit the scene, tiers are
//! sorted and distinct, texts are parsed.

use std::path::PathBuf;

use super::scene::{parse_scene, ParticipantId};
use super::text::Text;
use crate::local_time::UtcOffset;

/// One referral programme (任务宝), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Programme {
    /// 1 to 43 of `a-z A-Z 0-9 - _`: part of every participant's scene.
    pub name: String,
    /// An official account (temporary QR codes are theirs alone).
    pub account: String,
    /// What followers and reports call it (default: the name).
    pub title: String,
    /// Unix seconds: scans count from `start` (inclusive) to `end` (exclusive).
    pub start: i64,
    pub end: i64,
    /// The offset the file's dates are read in, and the daily cap's days are counted in.
    pub zone: UtcOffset,
    /// By invites, ascending; no two with the same count.
    pub tiers: Vec<Tier>,
    pub counts: Counts,
    /// An invitee who unfollows within this many seconds of arriving does not count.
    pub hold_secs: i64,
    /// Valid invites per inviter per local day (see `invite::mature`).
    pub daily_cap: u32,
    pub burst: Burst,
    /// Normalised (`rules::normalise`): a message equal to one asks for the poster.
    pub keywords: Vec<String>,
    /// A template message id for the reward notice; without one it goes as a
    /// customer-service message (which needs the follower's window).
    pub template_id: Option<String>,
    /// The lifetime of each participant's temporary QR code, in seconds.
    pub qr_expire_secs: u32,
    pub poster: Option<Poster>,
    pub texts: Texts,
}

/// A reward tier: at `invites` valid invites, one code of coupon batch `coupon`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub invites: u32,
    pub coupon: String,
}

/// Which arrivals through a participant's code are invites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// Only people who never followed the account before.
    New,
    /// Also people who had followed and unfollowed.
    NewAndReturning,
}

/// More than `invites` invites to one inviter within `minutes` → that inviter's new
/// invites are held for review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    pub invites: u32,
    pub minutes: u32,
}

/// Where the QR code goes on the background: its top-left corner and side, in pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poster {
    /// Resolved against the referrals file's folder.
    pub background: PathBuf,
    pub x: u32,
    pub y: u32,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Texts {
    /// Sent with the poster.
    pub invitation: Text,
    /// The reply to the keyword once the poster was sent, and after each new invite.
    pub progress: Text,
    /// The reward notice.
    pub reward: Text,
}

impl Programme {
    /// Whether a message's text asks for the poster (exact match after normalisation).
    pub fn asks_for_poster(&self, text: &str) -> bool {
        let text = crate::rules::normalise(text);
        self.keywords.contains(&text)
    }

    /// Whether a scan at `now` falls within the programme.
    pub fn is_running(&self, now: i64) -> bool {
        (self.start..self.end).contains(&now)
    }

    /// The programme's last minute, `YYYY-MM-DD HH:MM` at its offset (`{end}`).
    pub fn end_text(&self) -> String {
        let mut s = self.zone.date_time(self.end - 1);
        s.truncate(16);
        s
    }

    /// The smallest tier above `valid` invites, if any.
    pub fn next_tier(&self, valid: u32) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.invites > valid)
    }
}

/// The programme and participant a scene names, if it is a referral scene of one of
/// `account`'s programmes (running or not: [`crate::referral::on_scan_subscribe`] checks
/// the time).
pub fn find<'a>(
    programmes: &'a [Programme],
    account: &str,
    scene: &str,
) -> Option<(&'a Programme, ParticipantId)> {
    let (name, id) = parse_scene(scene)?;
    let p = programmes
        .iter()
        .find(|p| p.account == account && p.name == name)?;
    Some((p, id))
}
