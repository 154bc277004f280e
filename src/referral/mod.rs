//! Referral programmes (任务宝): a participant asks for their poster, people subscribe
//! through the personal QR code on it, and valid invites reach reward tiers (coupons).
//!
//! PURE: no I/O but [`load`], which reads the referrals file and the poster backgrounds it
//! names. The store keeps participants (`ParticipantId → openid`) and invite records, the
//! engine calls [`on_scan_subscribe`] for a subscribe whose scene [`parse_scene`] reads,
//! and a periodic job calls [`mature`]; none of that wiring is here. See
//! `docs/referral.md`, and its warning: WeChat's platform rules forbid rewarding people for
//! sharing or following (诱导分享 / 诱导关注).
//!
//! - [`config`]: `referrals.toml` → [`Programme`]s, every mistake as `file:line:column`;
//! - [`programme`]: the validated programme, and [`find`] for a callback's scene;
//! - [`scene`]: the `ref:<programme>:<id>` scene and the participant id;
//! - [`invite`]: the invite state machine, the daily cap, tiers reached;
//! - [`text`]: the texts' placeholders (`{valid}`, `{pending}`, `{next_tier}`, `{missing}`…);
//! - [`poster`]: the QR code drawn onto the background PNG;
//! - [`report`]: a programme's figures from its records.

pub mod config;
pub mod invite;
pub mod poster;
pub mod programme;
pub mod report;
pub mod scene;
pub mod text;

#[cfg(test)]
mod config_tests;
#[cfg(test)]
mod invite_tests;

pub use config::{load, parse_programmes, Known, LoadError};
pub use invite::{
    followed_through, mature, newly_reached, on_scan_subscribe, on_unsubscribe, progress, reject,
    release, reward_key, reward_notice, tally, Arrival, Decision, Ignored, InviteRecord,
    InviteState, Refusal, Reward, Tally,
};
pub use poster::{draw as draw_poster, PosterError};
pub use programme::{find, Burst, Counts, Poster, Programme, Texts, Tier};
pub use report::{report, Report};
pub use scene::{parse_scene, scene, ParticipantId};
