//! Delivering one follower's campaign message, from the outbox worker.
//!
//! The channel is chosen at send time, on the follower's state as it is then (the window
//! may have opened or closed since the campaign started). Every outcome is recorded in
//! one atomic step with the item's removal from the queue: sent (with WeChat's msgid and
//! the coupon code), failed with the reason, skipped with the reason, or back to queued
//! for a retry.
//!
//! At most once per follower, across crashes: a template send carries a `client_msg_id`
//! derived from (campaign, follower), so WeChat ignores a repeat and resending after a
//! crash is safe. Customer-service and app messages have no such key, so `Sending` is
//! written to disk before the call: a restart that finds it does not send again and
//! reports the follower as in doubt (at most `concurrency` followers, those whose call was
//! in flight at the crash).

use std::sync::Arc;

use super::{choose_channel, client_msg_id, coupon_view, Channel, Progress, Rendered, Skip};
use crate::campaign::RunState;
use crate::config::Secret;
use crate::outbox::worker::{Channel as Way, Failure, RateLimiter, Worker};
use crate::outbox::{now_ms, verdict, OutboxItem, Verdict};
use crate::store::StoreError;

/// What one attempt came to.
enum Outcome {
    Sent {
        channel: Channel,
        msgid: Option<i64>,
        coupon: Option<String>,
    },
    Skipped(Skip),
    /// Known to fail without (more) calls.
    Failed(Option<Channel>, String),
    /// The call failed; the verdict decides between a retry and giving up.
    CallFailed(Channel, crate::api::ApiError),
    /// Leave the item queued as it is (paused meanwhile, or a store error).
    Leave,
}

impl Worker {
    /// Records progress that settles `done_item` (it leaves the queue in the same step),
    /// counting its sends for the daily report (`campaign_sends:<channel>`).
    fn record_settled(
        &self,
        account: &str,
        campaign: &str,
        records: &[(String, Progress)],
        done_item: Option<u64>,
        job: Option<&super::MassJob>,
    ) -> Result<(), StoreError> {
        let counts: Vec<crate::report::Count> = records
            .iter()
            .filter_map(|(_, p)| match p {
                Progress::Sent { channel, at, .. } if done_item.is_some() => {
                    Some(crate::report::Count::new(
                        self.zone.day(*at),
                        crate::report::TOTAL,
                        &format!(
                            "{}{}",
                            crate::report::metric::CAMPAIGN_SENDS_PREFIX,
                            channel.key()
                        ),
                        1,
                    ))
                }
                _ => None,
            })
            .collect();
        self.store
            .campaign_record_counted(account, campaign, records, done_item, job, &counts)
    }

    /// Whether a campaign's items may be sent now (paused ones wait in the queue).
    pub(crate) fn campaign_running(&self, campaign: &str) -> bool {
        match self.store.campaign_run(campaign) {
            Ok(Some(run)) => run.state != RunState::Paused && run.state != RunState::Waiting,
            // Unknown: let delivery record why.
            Ok(None) => true,
            Err(e) => {
                tracing::error!(error = %e, campaign, "outbox: cannot read a campaign");
                false
            }
        }
    }

    /// Until when (unix ms) an account's campaign sends wait for a new day's quota.
    pub(crate) fn quota_blocked(&self, account: &str, now_ms: i64) -> Option<i64> {
        let blocked = self.quota_until.lock().unwrap_or_else(|p| p.into_inner());
        blocked
            .get(account)
            .copied()
            .filter(|&until| until > now_ms)
    }

    fn campaign_limiter(&self, campaign: &str, rate: Option<f64>) -> Option<Arc<RateLimiter>> {
        let rate = rate?;
        let mut limiters = self
            .campaign_limiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Some(
            limiters
                .entry(campaign.to_string())
                .or_insert_with(|| Arc::new(RateLimiter::new(rate)))
                .clone(),
        )
    }

    pub(crate) async fn deliver_campaign(
        &self,
        way: &Way,
        item: &OutboxItem,
        campaign: &str,
        openid: &str,
    ) {
        let outcome = match self.attempt(way, item, campaign, openid).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, campaign, openid, "campaign: store error; will retry");
                Outcome::Leave
            }
        };
        if let Err(e) = self.record(item, campaign, openid, outcome).await {
            tracing::error!(error = %e, campaign, openid, "campaign: cannot record an outcome");
        }
    }

    async fn attempt(
        &self,
        way: &Way,
        item: &OutboxItem,
        campaign: &str,
        openid: &str,
    ) -> Result<Outcome, StoreError> {
        let store = &self.store;
        let account = &item.account;
        let (run, progress, follower) = store.campaign_send_state(campaign, account, openid)?;
        let Some(run) = run else {
            return Ok(Outcome::Failed(
                None,
                format!("campaign `{campaign}` is unknown"),
            ));
        };
        if run.state == RunState::Paused {
            return Ok(Outcome::Leave);
        }
        let c = &run.campaign;
        match progress {
            Some(Progress::Sending { channel }) => {
                return Ok(Outcome::Failed(Some(channel), super::IN_DOUBT.into()));
            }
            Some(Progress::Queued) | None => {}
            Some(_) => {
                // Settled already (cannot happen: settling removes the item with it).
                return Ok(Outcome::Leave);
            }
        }
        let now = now_ms() / 1000;
        let channel = match choose_channel(c, way.kind, follower.as_ref(), now) {
            Ok(ch) => ch,
            Err(skip) => return Ok(Outcome::Skipped(skip)),
        };
        let Some(follower) = follower else {
            return Ok(Outcome::Skipped(Skip::UnknownFollower));
        };
        let rendered = match Rendered::new(c) {
            Ok(r) => r,
            Err(e) => return Ok(Outcome::Failed(Some(channel), e)),
        };
        // The coupon, claimed once per (campaign, follower): a retry gets the same code.
        let coupon = match &c.coupon {
            None => None,
            Some(name) => {
                let Some(batch) = self.coupons.iter().find(|b| &b.name == name) else {
                    return Ok(Outcome::Failed(
                        Some(channel),
                        format!("coupon batch `{name}` is not in the coupons file"),
                    ));
                };
                let request = format!("campaign:{campaign}");
                match store.claim_coupon(batch, account, openid, now, Some(&request))? {
                    Ok(code) => Some(coupon_view(batch, &code)),
                    Err(refused) => {
                        return Ok(Outcome::Skipped(Skip::NoCoupon(refused.to_string())))
                    }
                }
            }
        };
        let code = coupon.as_ref().map(|v| v.code.clone());
        // Paced: the account's rate and the campaign's own.
        if let Some(limiter) = self.campaign_limiter(campaign, c.rate_per_sec) {
            limiter.acquire().await;
        }
        way.limiter.acquire().await;
        if self.quota_blocked(account, now_ms()).is_some() {
            // Another send of this account learnt meanwhile that the quota is spent.
            return Ok(Outcome::CallFailed(
                channel,
                crate::api::ApiError::DailyQuotaReached,
            ));
        }
        match channel {
            Channel::Mass => Ok(Outcome::Failed(
                Some(channel),
                "a mass campaign's followers are sent in batches, not one by one".into(),
            )),
            Channel::Template => {
                let Some(mut message) = rendered.template(&follower, coupon.as_ref()) else {
                    return Ok(Outcome::Failed(Some(channel), "no template".into()));
                };
                message.client_msg_id = Some(client_msg_id(campaign, openid));
                self.count_call();
                Ok(match way.client.send_template(&message).await {
                    Ok(msgid) => Outcome::Sent {
                        channel,
                        msgid: Some(msgid),
                        coupon: code,
                    },
                    Err(e) => Outcome::CallFailed(channel, e),
                })
            }
            Channel::Custom | Channel::App => {
                let Some(message) = rendered.message(&follower, coupon.as_ref()) else {
                    return Ok(Outcome::Failed(Some(channel), "no message".into()));
                };
                // No idempotency key on WeChat's side: durable "sending" first.
                store.campaign_record(
                    account,
                    campaign,
                    openid,
                    &Progress::Sending { channel },
                    None,
                )?;
                self.flush().await?;
                let sent = if channel == Channel::Custom {
                    self.send_custom(way, account, openid, &message).await
                } else {
                    self.send_app(way, openid, &message).await
                };
                Ok(match sent {
                    Ok(()) => Outcome::Sent {
                        channel,
                        msgid: None,
                        coupon: code,
                    },
                    Err(Failure::Api(e)) => Outcome::CallFailed(channel, e),
                    Err(Failure::Final(reason)) => Outcome::Failed(Some(channel), reason),
                    Err(Failure::Store(e)) => return Err(e),
                })
            }
        }
    }

    /// One mass send: the batch's followers still queued and still reachable, in one call.
    pub(crate) async fn deliver_mass(&self, way: &Way, item: &OutboxItem) {
        if let Err(e) = self.try_mass(way, item).await {
            tracing::error!(error = %e, id = item.id, "campaign: store error in a mass send; will retry");
        }
    }

    async fn try_mass(&self, way: &Way, item: &OutboxItem) -> Result<(), StoreError> {
        let crate::outbox::Effect::Mass {
            campaign,
            batch,
            openids,
        } = &item.effect
        else {
            return Ok(());
        };
        let store = &self.store;
        let account = &item.account;
        let at = now_ms() / 1000;
        // The whole batch failed before any call (a store written by another version).
        let fail_all = |reason: String| {
            let failed = Progress::Failed {
                channel: None,
                reason,
                at,
            };
            let records: Vec<(String, Progress)> = openids
                .iter()
                .map(|o| (o.clone(), failed.clone()))
                .collect();
            store.campaign_record_many(account, campaign, &records, Some(item.id), None)
        };
        let Some(run) = store.campaign_run(campaign)? else {
            return fail_all(format!("campaign `{campaign}` is unknown"));
        };
        if run.state == RunState::Paused {
            return Ok(());
        }
        let Some(mass) = &run.campaign.mass else {
            return fail_all("the campaign has no [campaign.mass]".into());
        };
        // Who is still to be sent, and who is skipped now (unsubscribed since, ended).
        let mut to_send = Vec::new();
        let mut records: Vec<(String, Progress)> = Vec::new();
        for openid in openids {
            if !matches!(
                store.campaign_progress(campaign, openid)?,
                Some(Progress::Queued) | None
            ) {
                continue;
            }
            let f = store.follower(account, openid)?;
            match choose_channel(&run.campaign, way.kind, f.as_ref(), at) {
                Ok(_) => to_send.push(openid.clone()),
                Err(reason) => records.push((openid.clone(), Progress::Skipped { reason, at })),
            }
        }
        if to_send.len() < super::MASS_MIN {
            records.extend(to_send.drain(..).map(|o| {
                (
                    o,
                    Progress::Skipped {
                        reason: Skip::MassTooFew,
                        at,
                    },
                )
            }));
        }
        if to_send.is_empty() {
            self.record_settled(account, campaign, &records, Some(item.id), None)?;
            return self.flush().await;
        }
        if let Some(limiter) = self.campaign_limiter(campaign, run.campaign.rate_per_sec) {
            limiter.acquire().await;
        }
        way.limiter.acquire().await;
        let clientmsgid = super::mass_client_msg_id(campaign, *batch);
        self.count_call();
        let sent = way
            .client
            .mass_send_text(&to_send, &mass.text, &clientmsgid)
            .await;
        let sent_as = |msgid| Progress::Sent {
            channel: Channel::Mass,
            at,
            msgid,
            coupon: None,
            delivery: None,
        };
        match sent {
            Ok(msg_id) => {
                records.extend(to_send.iter().map(|o| (o.clone(), sent_as(Some(msg_id)))));
                let job = super::MassJob {
                    msg_id,
                    followers: to_send.len() as u64,
                    ..super::MassJob::default()
                };
                self.record_settled(account, campaign, &records, Some(item.id), Some(&job))?;
                tracing::info!(
                    campaign,
                    msg_id,
                    followers = to_send.len(),
                    "campaign: mass send accepted"
                );
                self.bump_delivered(item);
            }
            Err(crate::api::ApiError::DuplicateClientMsgId) => {
                // Sent before a crash, its outcome not recorded: WeChat has the job.
                records.extend(to_send.iter().map(|o| (o.clone(), sent_as(None))));
                self.record_settled(account, campaign, &records, Some(item.id), None)?;
                tracing::info!(
                    campaign,
                    batch,
                    "campaign: mass send was already accepted before a restart"
                );
                self.bump_delivered(item);
            }
            Err(error) => {
                let attempts = item.attempts + 1;
                match verdict(
                    &self.settings.retry,
                    attempts,
                    &error,
                    rand::random::<f64>(),
                ) {
                    Verdict::Retry(wait) => {
                        let mut next = item.clone();
                        next.attempts = attempts;
                        next.due_ms = now_ms() + wait as i64;
                        next.last_error = Some(error.to_string());
                        store.outbox_retry_later(&next)?;
                        tracing::warn!(campaign, batch, attempt = attempts, %error, "campaign: mass send failed; will retry");
                        self.bump_retried(item);
                        return Ok(());
                    }
                    Verdict::Dead(reason) => {
                        records.extend(to_send.iter().map(|o| {
                            (
                                o.clone(),
                                Progress::Failed {
                                    channel: Some(Channel::Mass),
                                    reason: reason.clone(),
                                    at,
                                },
                            )
                        }));
                        store.campaign_record_many(
                            account,
                            campaign,
                            &records,
                            Some(item.id),
                            None,
                        )?;
                        tracing::warn!(campaign, batch, %reason, "campaign: mass send failed");
                        self.bump_dead(item);
                    }
                }
            }
        }
        self.flush().await
    }

    async fn send_app(
        &self,
        way: &Way,
        userid: &str,
        message: &crate::protocol::Reply,
    ) -> Result<(), Failure> {
        let crate::protocol::Reply::Text { content } = message else {
            return Err(Failure::Final("a WeCom app message is text".into()));
        };
        self.count_call();
        let invalid = way.client.send_app_message(userid, content).await?;
        if invalid.iter().any(|u| u == userid) {
            return Err(Failure::Final(format!(
                "WeCom reports user {userid} invalid (invaliduser)"
            )));
        }
        Ok(())
    }

    /// Writes an attempt's outcome: progress and the item's removal in one step.
    async fn record(
        &self,
        item: &OutboxItem,
        campaign: &str,
        openid: &str,
        outcome: Outcome,
    ) -> Result<(), StoreError> {
        let store = &self.store;
        let at = now_ms() / 1000;
        let settle = |p: Progress| {
            self.record_settled(
                &item.account,
                campaign,
                &[(openid.to_string(), p)],
                Some(item.id),
                None,
            )
        };
        match outcome {
            Outcome::Leave => return Ok(()),
            Outcome::Sent {
                channel,
                msgid,
                coupon,
            } => {
                settle(Progress::Sent {
                    channel,
                    at,
                    msgid,
                    coupon,
                    delivery: None,
                })?;
                tracing::info!(campaign, openid, %channel, "campaign: sent");
                self.bump_delivered(item);
            }
            Outcome::Skipped(reason) => {
                tracing::info!(campaign, openid, %reason, "campaign: skipped");
                settle(Progress::Skipped { reason, at })?;
                self.bump_delivered(item);
            }
            Outcome::Failed(channel, reason) => {
                tracing::warn!(campaign, openid, %reason, "campaign: failed");
                settle(Progress::Failed {
                    channel,
                    reason,
                    at,
                })?;
                self.bump_dead(item);
            }
            Outcome::CallFailed(channel, crate::api::ApiError::DailyQuotaReached) => {
                // WeChat's daily quota renews at midnight China time: the account's
                // campaign sends wait till then (not counted as failed attempts).
                let until = next_china_midnight_ms(now_ms());
                self.quota_until
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(item.account.clone(), until);
                store.campaign_record(&item.account, campaign, openid, &Progress::Queued, None)?;
                let mut next = item.clone();
                next.due_ms = until;
                next.last_error = Some(format!(
                    "{} ({channel}); campaign sends of this account wait for the new day",
                    crate::api::ApiError::DailyQuotaReached
                ));
                store.outbox_retry_later(&next)?;
                tracing::warn!(campaign, account = %item.account, until_ms = until, "campaign: daily API quota used up; waiting for the new day");
                self.bump_retried(item);
                return Ok(());
            }
            Outcome::CallFailed(channel, error) => {
                let attempts = item.attempts + 1;
                match verdict(
                    &self.settings.retry,
                    attempts,
                    &error,
                    rand::random::<f64>(),
                ) {
                    Verdict::Retry(wait) => {
                        // Not sent: back to queued (a restart must not call it in doubt).
                        store.campaign_record(
                            &item.account,
                            campaign,
                            openid,
                            &Progress::Queued,
                            None,
                        )?;
                        let mut next = item.clone();
                        next.attempts = attempts;
                        next.due_ms = now_ms() + wait as i64;
                        next.last_error = Some(error.to_string());
                        store.outbox_retry_later(&next)?;
                        tracing::warn!(campaign, openid, attempt = attempts, retry_in_ms = wait, %error, "campaign: transient failure");
                        self.bump_retried(item);
                        return Ok(());
                    }
                    Verdict::Dead(reason) => {
                        tracing::warn!(campaign, openid, %reason, "campaign: failed");
                        settle(Progress::Failed {
                            channel: Some(channel),
                            reason,
                            at,
                        })?;
                        self.bump_dead(item);
                    }
                }
            }
        }
        // Settled for good: on disk before the slot takes its next follower, so a crash
        // never repeats more than the calls in flight.
        self.flush().await
    }

    /// A campaign's group-robot announcement (WeCom).
    pub(crate) async fn announce(&self, way: &Way, campaign: &str) -> Result<(), Failure> {
        let run = self
            .store
            .campaign_run(campaign)?
            .ok_or_else(|| Failure::Final(format!("campaign `{campaign}` is unknown")))?;
        let robot = run
            .campaign
            .robot
            .as_ref()
            .ok_or_else(|| Failure::Final("the campaign has no [campaign.robot]".into()))?;
        let key = std::env::var(&robot.key_env).map_err(|_| {
            Failure::Final(format!(
                "environment variable {} (the robot's webhook key) is not set; set it, then `siyu outbox retry`",
                robot.key_env
            ))
        })?;
        let text = crate::rules::render::Template::parse(&robot.text)
            .map(|t| t.render(&Default::default(), &Default::default()))
            .map_err(|e| Failure::Final(e.message))?;
        self.count_call();
        way.client
            .robot_send(&way.api_base, &Secret::new(key), &text)
            .await
            .map_err(Failure::Api)
    }
}

/// The next midnight in China (UTC+8) after `now_ms`, in unix milliseconds.
pub fn next_china_midnight_ms(now_ms: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    const OFFSET: i64 = 8 * 3_600_000;
    ((now_ms + OFFSET).div_euclid(DAY) + 1) * DAY - OFFSET
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_quota_renews_at_midnight_china_time() {
        // 2026-11-23 15:00 UTC is 23:00 in China: midnight is an hour away.
        let at = 1_795_446_000_000;
        assert_eq!(super::next_china_midnight_ms(at), at + 3_600_000);
        // Exactly midnight: the next one.
        let midnight = at + 3_600_000;
        assert_eq!(
            super::next_china_midnight_ms(midnight),
            midnight + 86_400_000
        );
    }
}
