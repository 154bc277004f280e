//! Delivering a channel's code (`Effect::ChannelCode`): the call to WeChat
//! (`qrcode/create`) or WeCom (`externalcontact/add_contact_way`), then the code stored
//! for the channel before the item leaves the queue. A crash between WeChat's answer and
//! the store's write makes the code again after the restart (the outbox's one gap): the
//! first code still works, and the second is the one stored.

use super::worker::{Channel, Failure, Worker};
use super::{now_ms, verdict, OutboxItem, Verdict};
use crate::channel::CodeRequest;
use crate::channel_code::IssuedCode;

impl Worker {
    pub(crate) async fn deliver_channel_code(
        &self,
        channel: &Channel,
        item: &OutboxItem,
        name: &str,
        request: &CodeRequest,
    ) {
        channel.limiter.acquire().await;
        self.count_call();
        let made = make(&channel.client, name, request).await;
        let result = match made {
            Ok(code) => self
                .store
                .put_channel_code(&item.account, name, &code)
                .map_err(Failure::Store),
            Err(e) => Err(Failure::Api(e)),
        };
        if let Err(reason) = final_failure(self, item, &result) {
            // Before the item dies, so that the channel never shows queued with no item.
            if let Err(e) = self.store.channel_code_failed(&item.account, name, &reason) {
                tracing::error!(error = %e, channel = name, "channel code: cannot record the failure");
            }
        }
        if result.is_ok() {
            tracing::info!(account = %item.account, channel = name, "channel code issued (渠道码已生成)");
        }
        self.settle(std::slice::from_ref(item), result).await;
    }
}

/// `Err(reason)` when this attempt's failure is final (the item will be a dead letter).
fn final_failure(
    worker: &Worker,
    item: &OutboxItem,
    result: &Result<(), Failure>,
) -> Result<(), String> {
    match result {
        Err(Failure::Api(e)) => match verdict(&worker.settings.retry, item.attempts + 1, e, 0.0) {
            Verdict::Dead(reason) => Err(reason),
            Verdict::Retry(_) => Ok(()),
        },
        Err(Failure::Final(reason)) => Err(reason.clone()),
        _ => Ok(()),
    }
}

/// Makes the code at WeChat or WeCom (the worker's call; `siyu channels issue` makes it
/// with this too when no server runs).
pub async fn make(
    client: &crate::api::ApiClient,
    name: &str,
    request: &CodeRequest,
) -> Result<IssuedCode, crate::api::ApiError> {
    let issued_at = now_ms().div_euclid(1000);
    match request {
        CodeRequest::Qr {
            permanent,
            expire_seconds,
        } => {
            let t = client
                .create_qrcode(name, *permanent, *expire_seconds)
                .await?;
            Ok(IssuedCode {
                ticket: Some(t.ticket),
                url: t.url,
                config_id: None,
                // The life WeChat gave, which may differ from the one asked for.
                expires_at: t.expire_seconds.map(|s| issued_at + i64::from(s)),
                issued_at,
            })
        }
        CodeRequest::ContactWay { staff } => {
            let c = client.add_contact_way(name, staff).await?;
            Ok(IssuedCode {
                ticket: None,
                url: c.qr_code,
                config_id: Some(c.config_id),
                expires_at: None,
                issued_at,
            })
        }
    }
}
