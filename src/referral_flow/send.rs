//! The outbox worker's half of referral programmes: each WeChat call it needs is made
//! here, never on the webhook's path.
//!
//! A poster ([`Effect::ReferralPoster`]): the participant is recorded (`id → openid`, a
//! second openid for a taken id is refused), their temporary code is made
//! (`qrcode/create`, `QR_STR_SCENE`, scene `ref:<programme>:<id>`) or reused until
//! [`QR_RENEW_SECS`] before it expires, the poster is drawn and uploaded as temporary
//! media (`media/upload`, kept by WeChat 3 days: reused until [`MEDIA_RENEW_SECS`] before
//! that) and sent as a customer-service image; without a poster the code's link goes as
//! text. Each step's result is stored before the next, so a retried item reuses the code
//! and the upload.
//!
//! A reward notice ([`Effect::ReferralNotice`]): the coupon is claimed with the reward's
//! idempotency key (a retried item gets the same code), and the notice goes as a
//! customer-service message while the inviter's window is open, else as a template
//! message with the programme's `template_id`, else it is kept on the participant and sent
//! after their next message (`callback.rs`).

use crate::api::TemplateMessage;
use crate::outbox::now_ms;
use crate::outbox::worker::{Channel, Failure, Worker};
use crate::protocol::Reply;
use crate::referral::{
    draw_poster, reward_key, reward_notice, scene, tally, ParticipantId, Programme, Reward,
};
use crate::rules::CouponView;
use crate::store::{Participant, PosterMedia, QrCode};

/// A code is made again once it has less than a day (or a quarter of its lifetime, if
/// that is shorter) to live: a poster handed out now should scan for a while.
pub const QR_RENEW_SECS: i64 = 86_400;
/// WeChat keeps temporary media 3 days; an upload is reused until an hour before that.
pub const MEDIA_SECS: i64 = 3 * 86_400;
pub const MEDIA_RENEW_SECS: i64 = 3_600;

impl Worker {
    fn programme(&self, name: &str) -> Result<&Programme, Failure> {
        self.referrals
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                Failure::Final(format!("no referral programme `{name}` in referrals.toml"))
            })
    }

    pub(crate) async fn deliver_poster(
        &self,
        channel: &Channel,
        account: &str,
        programme: &str,
        openid: &str,
    ) -> Result<(), Failure> {
        let p = self.programme(programme)?;
        let id = ParticipantId::of(account, openid);
        let now = now_ms() / 1000;
        let mut taken = false;
        let known =
            self.store
                .update_referral_participant(account, programme, &id, &mut |known| match known {
                    Some(k) => {
                        taken = k.openid != openid;
                        (None, Vec::new())
                    }
                    None => (
                        Some(Participant {
                            programme: programme.to_string(),
                            id: id.clone(),
                            account: account.to_string(),
                            openid: openid.to_string(),
                            created_at: now,
                            qr: None,
                            poster: None,
                            notices: Vec::new(),
                        }),
                        Vec::new(),
                    ),
                })?;
        let Some(mut known) = known.filter(|_| !taken) else {
            return Err(Failure::Final(format!(
                "participant id {id} of `{programme}` stands for another follower: refused \
                 (参与者编号已被占用)"
            )));
        };
        let qr = match known
            .qr
            .clone()
            .filter(|q| q.expires_at - now > QR_RENEW_SECS)
        {
            Some(qr) => qr,
            None => {
                let scene = scene(programme, &id).map_err(|e| Failure::Final(e.to_string()))?;
                channel.limiter.acquire().await;
                self.count_call();
                let t = channel
                    .client
                    .create_qrcode(&scene, false, p.qr_expire_secs)
                    .await?;
                let qr = QrCode {
                    ticket: t.ticket,
                    url: t.url,
                    expires_at: now + i64::from(t.expire_seconds.unwrap_or(p.qr_expire_secs)),
                };
                known = self.store_participant(account, &id, programme, |k| {
                    k.qr = Some(qr.clone());
                    k.poster = None;
                })?;
                qr
            }
        };
        let invitation = p.texts.invitation.render(&super::plain_values(p));
        let message = match &p.poster {
            None => Reply::Text {
                content: format!("{invitation}\n{}", qr.url),
            },
            Some(poster) => {
                let reusable = known.poster.clone().filter(|m| {
                    m.ticket == qr.ticket && m.uploaded_at + MEDIA_SECS - MEDIA_RENEW_SECS > now
                });
                let media_id = match reusable {
                    Some(m) => m.media_id,
                    None => {
                        let background = std::fs::read(&poster.background).map_err(|e| {
                            Failure::Final(format!(
                                "cannot read {}: {e}",
                                poster.background.display()
                            ))
                        })?;
                        let png =
                            draw_poster(&background, &qr.url, poster.x, poster.y, poster.size)
                                .map_err(|e| Failure::Final(e.to_string()))?;
                        channel.limiter.acquire().await;
                        self.count_call();
                        let up = channel.client.upload_image("poster.png", &png).await?;
                        let media = PosterMedia {
                            media_id: up.media_id.clone(),
                            uploaded_at: up.created_at,
                            ticket: qr.ticket.clone(),
                        };
                        self.store_participant(account, &id, programme, |k| {
                            k.poster = Some(media.clone());
                        })?;
                        up.media_id
                    }
                };
                Reply::Image { media_id }
            }
        };
        channel.limiter.acquire().await;
        self.send_custom(channel, account, openid, &message).await
    }

    fn store_participant(
        &self,
        account: &str,
        id: &ParticipantId,
        programme: &str,
        mut change: impl FnMut(&mut Participant),
    ) -> Result<Participant, Failure> {
        self.store
            .update_referral_participant(account, programme, id, &mut |known| {
                (
                    known.map(|mut k| {
                        change(&mut k);
                        k
                    }),
                    Vec::new(),
                )
            })?
            .ok_or_else(|| Failure::Final(format!("participant {id} of `{programme}` vanished")))
    }

    pub(crate) async fn deliver_notice(
        &self,
        channel: &Channel,
        account: &str,
        programme: &str,
        inviter: &str,
        tier: u32,
    ) -> Result<(), Failure> {
        let p = self.programme(programme)?;
        let now = now_ms() / 1000;
        let Some(t) = p.tiers.iter().find(|t| t.invites == tier) else {
            return Err(Failure::Final(format!(
                "`{programme}` has no tier at {tier} invites"
            )));
        };
        let reward = Reward {
            programme: programme.to_string(),
            inviter: inviter.to_string(),
            tier,
            coupon: t.coupon.clone(),
            request: reward_key(programme, inviter, tier),
        };
        let coupon = self.claim_reward(account, &reward, now)?;
        let records = self.store.referral_invites(programme)?;
        let valid = tally(programme, inviter, &records).valid;
        let text = p
            .texts
            .reward
            .render(&reward_notice(p, &reward, valid, Some(&coupon)));
        let follower = self.store.follower(account, inviter)?;
        let open = follower.as_ref().is_some_and(|f| f.cs_open(now).is_ok());
        if open {
            channel.limiter.acquire().await;
            return self
                .send_custom(channel, account, inviter, &Reply::Text { content: text })
                .await;
        }
        if let Some(template_id) = &p.template_id {
            let mut message = TemplateMessage::new(inviter, template_id)
                .field("first", p.title.clone())
                .field("keyword1", coupon.title.clone())
                .field("keyword2", coupon.code.clone())
                .field("remark", text);
            message.client_msg_id = Some(reward.request.clone());
            channel.limiter.acquire().await;
            self.count_call();
            return channel
                .client
                .send_template(&message)
                .await
                .map(drop)
                .map_err(Failure::Api);
        }
        let id = ParticipantId::of(account, inviter);
        let kept =
            self.store
                .update_referral_participant(account, programme, &id, &mut |known| {
                    (
                        known.map(|mut k| {
                            if !k.notices.contains(&text) {
                                k.notices.push(text.clone());
                            }
                            k
                        }),
                        Vec::new(),
                    )
                })?;
        if kept.is_none() {
            return Err(Failure::Final(format!(
                "inviter {inviter} is no participant of `{programme}`"
            )));
        }
        tracing::info!(
            programme,
            inviter,
            tier,
            "referral: reward notice kept for the inviter's next message"
        );
        Ok(())
    }

    /// The reward's coupon, claimed once per (programme, inviter, tier) by its key.
    fn claim_reward(
        &self,
        account: &str,
        reward: &Reward,
        now: i64,
    ) -> Result<CouponView, Failure> {
        let Some(batch) = self.coupons.iter().find(|b| b.name == reward.coupon) else {
            return Err(Failure::Final(format!(
                "no coupon batch `{}`",
                reward.coupon
            )));
        };
        match self.store.claim_coupon(
            batch,
            account,
            &reward.inviter,
            now,
            Some(&reward.request),
        )? {
            Ok(c) => Ok(CouponView {
                code: c.code,
                title: batch.title.clone(),
                value: batch.value.clone(),
                expires: crate::coupon::china_date(c.expires_at - 1),
                refused: String::new(),
            }),
            Err(why) => Err(Failure::Final(format!(
                "the coupon of tier {} cannot be claimed: {}",
                reward.tier,
                crate::coupon::refusal_text(&why)
            ))),
        }
    }
}
