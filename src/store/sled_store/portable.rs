//! `siyu store copy` on sled: each table is a tree (or a key prefix of the coupons tree),
//! read in key order; a cursor is the last key read, in hex.

use std::sync::atomic::Ordering;

use sled::Tree;

use super::{
    backend, coupon_key, from_json, id_key, json, kept_by_unionid, kept_key, SledStore, ID_FLOOR,
};
use crate::store::portable::{Page, Portable, Row, Table};
use crate::store::{campaign_key, key, msgid_key, settled, StoreError};

fn split2(k: &[u8]) -> Option<(String, String)> {
    let at = k.iter().position(|&b| b == 0)?;
    Some((
        String::from_utf8_lossy(&k[..at]).into_owned(),
        String::from_utf8_lossy(&k[at + 1..]).into_owned(),
    ))
}

/// The key's parts after `prefix`, split on NUL into at most `n`.
fn parts(k: &[u8], prefix: &[u8], n: usize) -> Vec<String> {
    k[prefix.len().min(k.len())..]
        .splitn(n, |&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

fn corrupt(tree: &str, k: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: format!("{tree}/{}", hex::encode(k)),
        reason: reason.to_string(),
    }
}

fn be_u64(tree: &str, k: &[u8], b: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(b)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(tree, k, "expected 8 bytes"))
}

impl SledStore {
    /// The tree a table lives in, and its key prefix there.
    fn table(&self, table: Table) -> (&Tree, &'static [u8]) {
        match table {
            Table::Followers => (&self.followers, b""),
            Table::Audit => (&self.audit, b""),
            Table::Tokens => (&self.tokens, b""),
            Table::TagIds => (&self.tag_ids, b""),
            Table::Outbox => (&self.outbox, b""),
            Table::DeadLetters => (&self.dead, b""),
            Table::CouponBatches => (&self.coupons, b"b\0"),
            Table::Coupons => (&self.coupons, b"c\0"),
            Table::CouponHolders => (&self.coupons, b"h\0"),
            Table::CouponRequests => (&self.coupons, b"r\0"),
            Table::Campaigns => (&self.campaigns, b""),
            Table::CampaignProgress => (&self.progress, b""),
            Table::CampaignMsgids => (&self.msgids, b""),
            Table::CampaignJobs => (&self.jobs, b""),
            Table::SyncRuns => (&self.syncs, b""),
            Table::People => (&self.people, b""),
            Table::IngestEvents => (&self.ingested, b""),
            // The `e` keys only: the `u` keys are its index by unionid, rebuilt on import.
            Table::IngestKept => (&self.kept, b"e\0"),
            Table::ChannelCodes => (&self.channel_codes, b""),
            // Folded on open, so nothing is pending (the copy runs with the servers stopped).
            Table::ReportCounts => (&self.reports, b""),
            Table::ReportFacts => (&self.facts, b""),
        }
    }

    fn row(&self, table: Table, k: &[u8], v: &[u8]) -> Result<Row, StoreError> {
        let (_, prefix) = self.table(table);
        let name = table.name();
        Ok(match table {
            Table::Followers => {
                let (account, openid) = split2(k).ok_or_else(|| corrupt(name, k, "no NUL"))?;
                Row::Follower {
                    account,
                    openid,
                    record: v.to_vec(),
                }
            }
            Table::Audit => Row::Audit {
                id: be_u64(name, k, k.get(8..16).unwrap_or_default())?,
                entry: from_json(name, k, v)?,
            },
            Table::Tokens => Row::Token {
                account: String::from_utf8_lossy(k).into_owned(),
                token: from_json(name, k, v)?,
            },
            Table::TagIds => {
                let (account, tag) = split2(k).ok_or_else(|| corrupt(name, k, "no NUL"))?;
                Row::TagId {
                    account,
                    tag,
                    id: be_u64(name, k, v)? as i64,
                }
            }
            Table::Outbox => Row::Outbox(from_json(name, k, v)?),
            Table::DeadLetters => Row::Dead(from_json(name, k, v)?),
            Table::CouponBatches => Row::CouponBatch {
                batch: parts(k, prefix, 1).remove(0),
                state: from_json(name, k, v)?,
            },
            Table::Coupons => Row::Coupon(from_json(name, k, v)?),
            Table::CouponHolders => {
                let p = parts(k, prefix, 3);
                let [batch, account, openid] =
                    <[String; 3]>::try_from(p).map_err(|_| corrupt(name, k, "want 3 parts"))?;
                let held = <[u8; 4]>::try_from(v)
                    .map(u32::from_be_bytes)
                    .map_err(|_| corrupt(name, k, "expected 4 bytes"))?;
                Row::CouponHolder {
                    batch,
                    account,
                    openid,
                    held,
                }
            }
            Table::CouponRequests => {
                let p = parts(k, prefix, 4);
                let [account, openid, batch, request] =
                    <[String; 4]>::try_from(p).map_err(|_| corrupt(name, k, "want 4 parts"))?;
                Row::CouponRequest {
                    account,
                    openid,
                    batch,
                    request,
                    code: String::from_utf8_lossy(v).into_owned(),
                }
            }
            Table::Campaigns => Row::Campaign(Box::new(from_json(name, k, v)?)),
            Table::CampaignProgress => {
                let (campaign, openid) = split2(k).ok_or_else(|| corrupt(name, k, "no NUL"))?;
                Row::Progress {
                    campaign,
                    openid,
                    progress: from_json(name, k, v)?,
                }
            }
            Table::CampaignMsgids => {
                let at = k
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| corrupt(name, k, "no NUL"))?;
                let (campaign, openid) = split2(v).ok_or_else(|| corrupt(name, k, "no NUL"))?;
                Row::Msgid {
                    account: String::from_utf8_lossy(&k[..at]).into_owned(),
                    msgid: be_u64(name, k, &k[at + 1..])? as i64,
                    campaign,
                    openid,
                }
            }
            Table::CampaignJobs => {
                let (campaign, _) = split2(k).ok_or_else(|| corrupt(name, k, "no NUL"))?;
                Row::Job {
                    campaign,
                    job: from_json(name, k, v)?,
                }
            }
            Table::SyncRuns => Row::SyncRun(from_json(name, k, v)?),
            Table::IngestEvents => {
                let (account, event_id) = split2(k).ok_or_else(|| corrupt(name, k, "no NUL"))?;
                Row::IngestEvent {
                    account,
                    event_id,
                    openid: String::from_utf8_lossy(v).into_owned(),
                }
            }
            Table::IngestKept => {
                let p = parts(k, prefix, 2);
                let [account, _] =
                    <[String; 2]>::try_from(p).map_err(|_| corrupt(name, k, "want 2 parts"))?;
                Row::Kept {
                    account,
                    event: from_json(name, k, v)?,
                }
            }
            Table::ChannelCodes => Row::ChannelCode(from_json(name, k, v)?),
            Table::ReportCounts => {
                let (account, count) = super::reports::counter_row(k, v)
                    .ok_or_else(|| corrupt(name, k, "not a counter"))?;
                Row::ReportCount { account, count }
            }
            Table::ReportFacts => {
                let (id, account, counts) = super::reports::fact_row(k, v)
                    .ok_or_else(|| corrupt(name, k, "not a report fact"))?;
                Row::ReportFact {
                    account,
                    id,
                    counts,
                }
            }
            Table::People => {
                let (unionid, rest) = split2(k).ok_or_else(|| corrupt(name, k, "no NUL"))?;
                let (account, openid) =
                    split2(rest.as_bytes()).ok_or_else(|| corrupt(name, k, "no second NUL"))?;
                Row::Person {
                    unionid,
                    account,
                    openid,
                }
            }
        })
    }

    /// Moves the ids this store hands out past `id` (an id copied in).
    fn raise_id_floor(&self, id: u64) -> Result<(), StoreError> {
        let want = id.saturating_add(1);
        if self.id_floor.fetch_max(want, Ordering::SeqCst) < want {
            self.meta
                .insert(ID_FLOOR, &want.to_be_bytes())
                .map_err(backend)?;
        }
        Ok(())
    }
}

impl Portable for SledStore {
    fn export_page(
        &self,
        table: Table,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let (tree, prefix) = self.table(table);
        let mut from = match cursor {
            Some(c) => {
                hex::decode(c).map_err(|_| StoreError::Backend(format!("bad copy cursor {c:?}")))?
            }
            None => prefix.to_vec(),
        };
        if cursor.is_some() {
            // Just above the last key read.
            from.push(0);
        }
        let mut page = Page::default();
        let mut last = None;
        for item in tree.range(from..) {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(prefix) {
                break;
            }
            if page.rows.len() == limit {
                page.next = last.map(hex::encode);
                return Ok(page);
            }
            page.rows.push(self.row(table, &k, &v)?);
            last = Some(k);
        }
        Ok(page)
    }

    fn import(&self, rows: &[Row]) -> Result<(), StoreError> {
        let mut max_id = None::<u64>;
        for row in rows {
            match row {
                Row::Follower {
                    account,
                    openid,
                    record,
                } => {
                    self.followers
                        .insert(key(account, openid), record.as_slice())
                        .map_err(backend)?;
                }
                Row::Audit { id, entry } => {
                    let mut k = (entry.at.max(0) as u64).to_be_bytes().to_vec();
                    k.extend_from_slice(&id.to_be_bytes());
                    self.audit.insert(k, json(entry)).map_err(backend)?;
                    max_id = max_id.max(Some(*id));
                }
                Row::Token { account, token } => {
                    self.tokens
                        .insert(account.as_bytes(), json(token))
                        .map_err(backend)?;
                }
                Row::TagId { account, tag, id } => {
                    self.tag_ids
                        .insert(key(account, tag), &id.to_be_bytes())
                        .map_err(backend)?;
                }
                Row::Outbox(item) => {
                    self.outbox
                        .insert(id_key(item.id), json(item))
                        .map_err(backend)?;
                    max_id = max_id.max(Some(item.id));
                }
                Row::Dead(dead) => {
                    self.dead
                        .insert(id_key(dead.item.id), json(dead))
                        .map_err(backend)?;
                    max_id = max_id.max(Some(dead.item.id));
                }
                Row::CouponBatch { batch, state } => {
                    self.coupons
                        .insert(coupon_key(&[b"b", batch.as_bytes()]), json(state))
                        .map_err(backend)?;
                }
                Row::Coupon(c) => {
                    let ck = coupon_key(&[b"c", c.batch.as_bytes(), c.code.as_bytes()]);
                    let xk = coupon_key(&[b"x", c.code.as_bytes()]);
                    self.coupons.insert(ck, json(c)).map_err(backend)?;
                    self.coupons
                        .insert(xk, c.batch.as_bytes())
                        .map_err(backend)?;
                }
                Row::CouponHolder {
                    batch,
                    account,
                    openid,
                    held,
                } => {
                    let k = coupon_key(&[
                        b"h",
                        batch.as_bytes(),
                        account.as_bytes(),
                        openid.as_bytes(),
                    ]);
                    self.coupons
                        .insert(k, &held.to_be_bytes())
                        .map_err(backend)?;
                }
                Row::CouponRequest {
                    account,
                    openid,
                    batch,
                    request,
                    code,
                } => {
                    let k = coupon_key(&[
                        b"r",
                        account.as_bytes(),
                        openid.as_bytes(),
                        batch.as_bytes(),
                        request.as_bytes(),
                    ]);
                    self.coupons.insert(k, code.as_bytes()).map_err(backend)?;
                }
                Row::Campaign(run) => {
                    self.campaigns
                        .insert(run.campaign.name.as_bytes(), json(run))
                        .map_err(backend)?;
                }
                Row::Progress {
                    campaign,
                    openid,
                    progress,
                } => {
                    let k = campaign_key(campaign, openid);
                    self.progress
                        .insert(k.as_slice(), json(progress))
                        .map_err(backend)?;
                    if settled(progress) {
                        self.pending.remove(k).map_err(backend)?;
                    } else {
                        self.pending.insert(k, &[][..]).map_err(backend)?;
                    }
                }
                Row::Msgid {
                    account,
                    msgid,
                    campaign,
                    openid,
                } => {
                    self.msgids
                        .insert(msgid_key(account, *msgid), key(campaign, openid))
                        .map_err(backend)?;
                }
                Row::Job { campaign, job } => {
                    let mut k = campaign_key(campaign, "");
                    k.extend_from_slice(&job.msg_id.to_be_bytes());
                    self.jobs.insert(k, json(job)).map_err(backend)?;
                }
                Row::SyncRun(run) => {
                    self.syncs
                        .insert(run.account.as_bytes(), json(run))
                        .map_err(backend)?;
                }
                Row::IngestEvent {
                    account,
                    event_id,
                    openid,
                } => {
                    self.ingested
                        .insert(key(account, event_id), openid.as_bytes())
                        .map_err(backend)?;
                }
                Row::Kept { account, event } => {
                    self.kept
                        .insert(kept_key(account, &event.id), json(event))
                        .map_err(backend)?;
                    self.kept
                        .insert(kept_by_unionid(account, &event.unionid, &event.id), &[][..])
                        .map_err(backend)?;
                }
                Row::ChannelCode(code) => {
                    self.channel_codes
                        .insert(key(&code.account, &code.channel), json(code))
                        .map_err(backend)?;
                }
                Row::ReportCount { account, count } => {
                    let (k, v) = super::reports::counter_entry(account, count);
                    self.reports.insert(k, &v[..]).map_err(backend)?;
                }
                Row::ReportFact {
                    account,
                    id,
                    counts,
                } => {
                    let (k, v) = super::reports::fact_entry(*id, account, counts);
                    self.facts.insert(k, v).map_err(backend)?;
                    // Folded where it came from (its counters are copied too).
                    self.copied_fact(*id)?;
                }
                Row::Person {
                    unionid,
                    account,
                    openid,
                } => {
                    self.people
                        .insert(super::person_key(unionid, account, openid), &[][..])
                        .map_err(backend)?;
                }
            }
        }
        if let Some(id) = max_id {
            self.raise_id_floor(id)?;
        }
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        let (tree, prefix) = self.table(table);
        let mut n = 0;
        for k in tree.scan_prefix(prefix).keys() {
            k.map_err(backend)?;
            n += 1;
        }
        Ok(n)
    }

    fn meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(name.as_bytes())
            .map_err(backend)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn put_meta(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.meta
            .insert(name.as_bytes(), value.as_bytes())
            .map_err(backend)?;
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    fn describe(&self) -> String {
        let path = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        format!("sled at {}", path.display())
    }
}
