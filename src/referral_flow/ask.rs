//! A programme's keyword: the participant asks for their code.
//!
//! Decided before the callback's commit (a read of the participant and their invites) and
//! carried into it through `engine::Context::referral`: the engine puts the reply in place
//! of the rules' and queues the poster ([`Effect::ReferralPoster`]) in the same commit, so
//! no WeChat call is made on the webhook's path and a retried callback queues nothing
//! again. The first time, the reply is the invitation ("the poster is on its way"); after
//! that, the progress (valid, pending, the next tier and how many are missing), and the
//! poster again (its code re-issued by the worker when it expired or is about to).

use crate::outbox::{Effect, NewItem};
use crate::protocol::{Inbound, InboundKind, Reply};
use crate::referral::{progress, tally, ParticipantId, Programme};
use crate::store::{InviteChange, Store, StoreError};

/// What a keyword message gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub programme: String,
    pub openid: String,
    /// The passive reply.
    pub reply: Reply,
    /// Whether the poster is (re)sent: not once the programme is over.
    pub poster: bool,
}

impl Ask {
    /// The outbox item of the poster, due now.
    pub fn item(&self, now_ms: i64) -> Option<NewItem> {
        self.poster.then(|| NewItem {
            effect: Effect::ReferralPoster {
                programme: self.programme.clone(),
                openid: self.openid.clone(),
            },
            origin: format!("referral:{}", self.programme),
            not_before_ms: now_ms,
        })
    }
}

/// The answer to `msg` if it is a text asking for a poster in one of `account`'s
/// programmes: while it runs, or after it for someone who took part (their progress).
pub fn ask(
    store: &dyn Store,
    programmes: &[Programme],
    account: &str,
    msg: &Inbound,
    now: i64,
) -> Result<Option<Ask>, StoreError> {
    let InboundKind::Text { content, .. } = &msg.kind else {
        return Ok(None);
    };
    let Some(p) = programmes
        .iter()
        .filter(|p| p.account == account && p.asks_for_poster(content))
        .min_by_key(|p| !p.is_running(now))
    else {
        return Ok(None);
    };
    let openid = msg.from.as_str();
    let id = ParticipantId::of(account, openid);
    let known = store
        .referral_participant(&p.name, &id)?
        .filter(|known| known.openid == openid);
    let running = p.is_running(now);
    let reply = match known {
        None if !running => return Ok(None),
        None => p.texts.invitation.render(&super::plain_values(p)),
        Some(_) => {
            let mut records = Vec::new();
            store.referral_write(account, &p.name, &[openid], &mut |view| {
                records = view.records.clone();
                InviteChange::default()
            })?;
            p.texts
                .progress
                .render(&progress(p, tally(&p.name, openid, &records)))
        }
    };
    Ok(Some(Ask {
        programme: p.name.clone(),
        openid: openid.to_string(),
        reply: Reply::Text { content: reply },
        poster: running,
    }))
}
