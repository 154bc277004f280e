//! Referral programmes (任务宝) wired into siyu: the I/O around the PURE core in
//! `src/referral/`. See README "Referral programmes (任务宝)" and its warning: WeChat's
//! rules forbid rewarding people for sharing or following (诱导分享 / 诱导关注).
//!
//! - [`ask`]: a programme's keyword → the passive reply and the poster queued with the
//!   callback's commit (never a WeChat call on the webhook's path);
//! - [`callback`]: after a callback's commit, a subscribe or scan through a participant's
//!   code → the invite, an unfollow → its revocation, a message → the notices kept for it;
//! - [`mature`]: the periodic run that makes invites valid and queues the rewards;
//! - [`send`]: the outbox worker's half: the code, the poster, the reward notice;
//! - [`review`]: operators' release and reject of held invites;
//! - [`figures`]: a programme's report from the store.

pub mod ask;
pub mod callback;
pub mod figures;
pub mod mature;
pub mod review;
pub mod send;

pub use ask::Ask;
pub use callback::{after_callback, arrival_before};

use crate::referral::text::Values;
use crate::referral::Programme;

/// The values of a text that names no counts (the invitation).
pub fn plain_values(programme: &Programme) -> Values<'_> {
    Values {
        valid: 0,
        pending: 0,
        next_tier: None,
        tier: None,
        title: &programme.title,
        end: programme.end_text(),
        coupon: None,
    }
}
