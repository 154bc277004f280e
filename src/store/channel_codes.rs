//! The codes siyu made for channels (`code = "auto"`), one entry per (account, channel):
//! the code in use, whether an outbox item asking for one is queued, and why the last
//! one failed (`crate::channel_code`). A concern of its own: every backend implements it,
//! and [`tests::contract`] is what each must pass.

use super::StoreError;
use crate::channel_code::{ChannelCode, IssuedCode};
use crate::outbox::NewItem;

pub trait ChannelCodes {
    /// What is stored for the channel (`None`: nothing ever).
    fn channel_code(&self, account: &str, channel: &str)
        -> Result<Option<ChannelCode>, StoreError>;

    /// Every channel's entry, by account and channel name.
    fn all_channel_codes(&self) -> Result<Vec<ChannelCode>, StoreError>;

    /// Queues `item` (the call making the channel's code) and marks the channel queued,
    /// in one atomic write, unless an item is queued for it already: then nothing is
    /// written and the answer is `None`. A failure recorded before is cleared. However
    /// many callers race (instances, an operator and the server's look), one item is
    /// queued.
    fn queue_channel_code(
        &self,
        account: &str,
        channel: &str,
        item: NewItem,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError>;

    /// The code made: stored as the one in use, the queued mark and any failure cleared.
    fn put_channel_code(
        &self,
        account: &str,
        channel: &str,
        code: &IssuedCode,
    ) -> Result<(), StoreError>;

    /// The item making the code died: the mark cleared, `reason` kept (the code in use,
    /// if any, stays).
    fn channel_code_failed(
        &self,
        account: &str,
        channel: &str,
        reason: &str,
    ) -> Result<(), StoreError>;
}

/// The entry after a successful [`ChannelCodes::queue_channel_code`], for backends that
/// write the whole entry.
pub(crate) fn queued(
    old: Option<ChannelCode>,
    account: &str,
    channel: &str,
    now_ms: i64,
) -> ChannelCode {
    let mut e = old.unwrap_or_else(|| ChannelCode {
        account: account.to_string(),
        channel: channel.to_string(),
        ..ChannelCode::default()
    });
    e.queued_at = Some(now_ms.div_euclid(1000));
    e.last_error = None;
    e
}

/// The entry after [`ChannelCodes::put_channel_code`]: a new code replaces all that was
/// stored.
pub(crate) fn issued(account: &str, channel: &str, code: &IssuedCode) -> ChannelCode {
    ChannelCode {
        account: account.to_string(),
        channel: channel.to_string(),
        issued: Some(code.clone()),
        queued_at: None,
        last_error: None,
    }
}

/// The entry after [`ChannelCodes::channel_code_failed`].
pub(crate) fn failed(
    old: Option<ChannelCode>,
    account: &str,
    channel: &str,
    reason: &str,
) -> ChannelCode {
    let mut e = old.unwrap_or_else(|| ChannelCode {
        account: account.to_string(),
        channel: channel.to_string(),
        ..ChannelCode::default()
    });
    e.queued_at = None;
    e.last_error = Some(reason.to_string());
    e
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::channel::CodeRequest;
    use crate::outbox::Effect;

    fn item(channel: &str) -> NewItem {
        NewItem {
            effect: Effect::ChannelCode {
                channel: channel.into(),
                request: CodeRequest::Qr {
                    permanent: false,
                    expire_seconds: 60,
                },
            },
            origin: "test".into(),
            not_before_ms: 0,
        }
    }

    fn code(ticket: &str, issued_at: i64) -> IssuedCode {
        IssuedCode {
            ticket: Some(ticket.into()),
            url: format!("http://weixin.qq.com/q/{ticket}"),
            config_id: None,
            expires_at: Some(issued_at + 60),
            issued_at,
        }
    }

    /// Queued once however often asked; issued clears the mark; a failure is kept until
    /// the next queue; entries listed by account and channel. Leaves entries behind for
    /// `siyu store copy`'s test (`cc` and `cd` of account `cc`).
    pub(crate) fn contract(store: &dyn super::super::Store) {
        let codes: &dyn ChannelCodes = store;
        assert_eq!(codes.channel_code("cc", "poster").unwrap(), None);
        let first = codes
            .queue_channel_code("cc", "poster", item("poster"), 5_000)
            .unwrap()
            .expect("queued");
        assert_eq!(
            codes
                .queue_channel_code("cc", "poster", item("poster"), 6_000)
                .unwrap(),
            None,
            "queued already: nothing more"
        );
        let queued = store
            .outbox_page(first.checked_sub(1), 10)
            .unwrap()
            .into_iter()
            .filter(
                |i| matches!(&i.effect, Effect::ChannelCode { channel, .. } if channel == "poster"),
            )
            .count();
        assert_eq!(queued, 1, "one item in the outbox");
        let e = codes.channel_code("cc", "poster").unwrap().unwrap();
        assert_eq!((e.queued_at, e.issued.as_ref()), (Some(5), None));
        codes
            .put_channel_code("cc", "poster", &code("t1", 10))
            .unwrap();
        let e = codes.channel_code("cc", "poster").unwrap().unwrap();
        assert_eq!(e.queued_at, None);
        assert_eq!(e.issued, Some(code("t1", 10)));
        // Re-issue: queued again while the old code stays in use.
        let again = codes
            .queue_channel_code("cc", "poster", item("poster"), 20_000)
            .unwrap();
        assert!(again.is_some_and(|id| id > first));
        let e = codes.channel_code("cc", "poster").unwrap().unwrap();
        assert_eq!(
            (e.queued_at, e.issued.clone()),
            (Some(20), Some(code("t1", 10)))
        );
        codes
            .channel_code_failed("cc", "poster", "45157 refused")
            .unwrap();
        let e = codes.channel_code("cc", "poster").unwrap().unwrap();
        assert_eq!(e.queued_at, None);
        assert_eq!(e.last_error.as_deref(), Some("45157 refused"));
        assert_eq!(e.issued, Some(code("t1", 10)), "the old code stays");
        // An operator's issue clears the failure.
        codes
            .queue_channel_code("cc", "poster", item("poster"), 30_000)
            .unwrap()
            .expect("queued after a failure");
        let e = codes.channel_code("cc", "poster").unwrap().unwrap();
        assert_eq!((e.queued_at, e.last_error), (Some(30), None));
        codes
            .put_channel_code("cc", "poster", &code("t2", 31))
            .unwrap();
        codes
            .put_channel_code("cc", "another", &code("t3", 32))
            .unwrap();
        codes.put_channel_code("cb", "z", &code("t4", 33)).unwrap();
        let all: Vec<(String, String)> = codes
            .all_channel_codes()
            .unwrap()
            .into_iter()
            .map(|e| (e.account, e.channel))
            .collect();
        let want: Vec<(String, String)> = [("cb", "z"), ("cc", "another"), ("cc", "poster")]
            .iter()
            .map(|(a, c)| (a.to_string(), c.to_string()))
            .collect();
        assert_eq!(all, want);
        // The items queued above, out of the way of later checks.
        for i in store.outbox_page(None, 1000).unwrap() {
            if matches!(i.effect, Effect::ChannelCode { .. }) {
                store.outbox_done(i.id).unwrap();
            }
        }
    }
}
