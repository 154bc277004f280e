//! Writing shop events through the store: the one code path for a live event
//! (`POST /ingest/v1/events`) and for an event kept for a person not known yet, applied
//! once a sync links their unionid.
//!
//! The only part of `ingest` that does I/O, and only through `&dyn Store` (no HTTP, no
//! clock: `now` is an argument), so the server and `siyu followers sync` share it. Exactly
//! once: every apply is one [`Store::ingest_event`], which records the id, writes the
//! follower and drops a kept copy of the event in one atomic write.

use serde_json::{Map, Value};

use super::{Change, Event, Identity, IngestSettings, Refusal, UnknownFollower};
use crate::engine::{self, Outbound};
use crate::follower::Follower;
use crate::outbox::NewItem;
use crate::report;
use crate::rules::RuleTable;
use crate::store::{Ingested, KeptEvent, Store, StoreError};

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied now; `queued`: tags it added were queued for WeChat.
    Applied {
        queued: bool,
    },
    /// Applied (or kept) before: nothing written.
    Duplicate,
    /// By a unionid no follower of the account has yet: kept, applied when a sync links it.
    Kept,
    Refused(Refusal),
}

impl Outcome {
    /// The status in the answer to the shop.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Kept => "kept",
            Outcome::Refused(_) => "refused",
        }
    }
}

/// One account's events, written with its rules in force and its way to WeChat.
pub struct Writer<'a> {
    pub store: &'a dyn Store,
    pub settings: &'a IngestSettings,
    pub account: &'a str,
    /// The account's rules now: their `[[autotag]]`s are re-evaluated in the event's write.
    pub rules: &'a RuleTable,
    /// How tags an event adds reach WeChat (`None`: the account has no `[account.api]`).
    pub outbound: Option<Outbound>,
    /// The offset of the local day reports count in (`[display] utc_offset`).
    pub zone: crate::local_time::UtcOffset,
}

impl Writer<'_> {
    /// A checked event of this account (`raw`: as posted, kept as it is if it must wait).
    pub fn ingest(
        &self,
        raw: &Map<String, Value>,
        event: &Event,
        change: &Change,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        let unionid = match &event.who {
            Identity::OpenId(openid) => return self.apply(event, change, openid, now),
            Identity::UnionId(u) => u,
        };
        if let Some(openid) = self.resolve(unionid)? {
            return self.apply(event, change, &openid, now);
        }
        if self.settings.unknown == UnknownFollower::Refuse {
            return Ok(Outcome::Refused(Refusal(format!(
                "no follower of account `{}` is known with unionid `{unionid}`: sync the account first (`siyu followers sync`), or send the openid ([ingest] unknown = \"refuse\") (未找到该 unionid 的粉丝)",
                self.account
            ))));
        }
        let kept = KeptEvent {
            id: event.id.clone(),
            unionid: unionid.clone(),
            event: Value::Object(raw.clone()),
            kept_at: now,
        };
        if !self.store.keep_event(self.account, &kept)? {
            return Ok(Outcome::Duplicate);
        }
        // A sync may have linked the unionid between the look above and the keep, and
        // looked for kept events before this one was: look again, so the event never
        // waits for the next sync (applying twice is impossible, see the module doc).
        match self.resolve(unionid)? {
            Some(openid) => self.apply(event, change, &openid, now),
            None => Ok(Outcome::Kept),
        }
    }

    /// Applies the kept events of `unionids` that now reach a follower of the account, as
    /// live events (checked again against the mapping in force); how many were applied,
    /// and whether tags were queued. An event the mapping no longer takes stays kept and
    /// is logged.
    pub fn apply_kept(&self, unionids: &[String], now: i64) -> Result<(usize, bool), StoreError> {
        let (mut applied, mut queued) = (0, false);
        if unionids.is_empty() {
            return Ok((0, false));
        }
        for kept in self.store.kept_events(self.account, unionids)? {
            let Some(openid) = self.resolve(&kept.unionid)? else {
                continue;
            };
            let checked = kept
                .event
                .as_object()
                .ok_or_else(|| Refusal("not an object".into()))
                .and_then(|raw| Event::parse(raw, |a| a == self.account, now))
                .and_then(|e| self.settings.mapping.change(&e).map(|c| (e, c)));
            let (event, change) = match checked {
                Ok(ok) => ok,
                Err(Refusal(reason)) => {
                    tracing::warn!(account = %self.account, event = %kept.id, %reason, "a kept shop event cannot be applied; it stays kept (暂存的事件无法应用)");
                    continue;
                }
            };
            if let Outcome::Applied { queued: q } = self.apply(&event, &change, &openid, now)? {
                applied += 1;
                queued |= q;
            }
        }
        if applied > 0 {
            tracing::info!(account = %self.account, applied, "kept shop events applied (暂存事件已应用)");
        }
        Ok((applied, queued))
    }

    /// The event's change to the follower `openid`, with the autotags, in one atomic
    /// write with its id; then the tags it added queued for WeChat.
    fn apply(
        &self,
        event: &Event,
        change: &Change,
        openid: &str,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        let unknown = self.settings.unknown;
        let ingested = self
            .store
            .ingest_event(self.account, openid, &event.id, &mut |stored| {
                let mut f = match (stored, unknown) {
                    (Some(f), _) => f,
                    (None, UnknownFollower::Keep) => Follower::new(openid),
                    (None, UnknownFollower::Refuse) => return None,
                };
                let ordered = f.counters.get(report::ORDER_COUNTER).copied().unwrap_or(0) > 0;
                added = change.apply(&mut f);
                let (auto, auto_removed) = self.rules.autotag(&mut f, now);
                added.extend(auto);
                removed = auto_removed;
                let counts = report::shop_counts(ordered, &f, &change.add, event.at, self.zone);
                Some((f, counts))
            })?;
        Ok(match ingested {
            Ingested::Applied(f) => Outcome::Applied {
                queued: self.mirror_tags(&f, &added, &removed, now)?,
            },
            Ingested::Duplicate => Outcome::Duplicate,
            Ingested::Declined => Outcome::Refused(Refusal(format!(
                "unknown follower `{openid}` of account `{}` ([ingest] unknown = \"refuse\")",
                self.account
            ))),
        })
    }

    /// The openid of the person in this account, from the people index.
    fn resolve(&self, unionid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .people(unionid)?
            .into_iter()
            .find(|(a, _)| a == self.account)
            .map(|(_, openid)| openid))
    }

    /// Tags an event added, and automatic tags it took off (`remove = true`), are mirrored
    /// to WeChat like an operator's edit (queued right after the follower's write, so a
    /// crash between the two leaves that change unsynced). Only for subscribed followers:
    /// WeChat cannot tag an openid that does not follow the account. Whether anything was
    /// queued.
    fn mirror_tags(
        &self,
        f: &Follower,
        added: &[String],
        removed: &[String],
        now: i64,
    ) -> Result<bool, StoreError> {
        let changes = added
            .iter()
            .map(|t| (t.clone(), true))
            .chain(removed.iter().map(|t| (t.clone(), false)));
        let now_ms = now * 1000;
        let items: Vec<NewItem> = engine::tag_items(self.outbound, f, changes, "ingest", now_ms);
        if items.is_empty() {
            return Ok(false);
        }
        self.store.enqueue(self.account, items, now_ms)?;
        Ok(true)
    }
}
