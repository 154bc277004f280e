//! Coupons: stock and per-follower limits hold however many claims race, from however
//! many instances.
//!
//! A batch of generated codes is every campaign's batch, so its row is the hottest lock
//! in a campaign: a claim first takes a lock of the follower's own (an advisory lock on
//! batch, account and openid), decides, and only then takes the batch's row, in one
//! statement that counts the code against the stock and writes it, sent together with
//! the COMMIT. The batch stays locked for one round trip instead of four. A batch of
//! imported codes hands them out in file order (the next code depends on the count), so
//! its claims lock the batch's row first, as before.

use deadpool_postgres::Object;
use tokio_postgres::types::Type;

use super::{db, from_json, rollback, to_json, PgStore, Sql};
use crate::coupon::{
    claim, redeem, Batch, BatchState, ClaimRefused, CodeSource, Coupon, CouponStats, RedeemRefused,
};
use crate::store::StoreError;

const T: Type = Type::TEXT;

const ENSURE_BATCH: Sql = Sql {
    text: "INSERT INTO coupon_batches (batch) VALUES ($1) ON CONFLICT DO NOTHING",
    types: &[T],
};
const LOCK_BATCH: Sql = Sql {
    text: "SELECT issued, redeemed FROM coupon_batches WHERE batch = $1 FOR UPDATE",
    types: &[T],
};
const BY_REQUEST: Sql = Sql {
    text: "SELECT c.coupon FROM coupon_requests r JOIN coupons c ON c.code = r.code \
           WHERE r.account = $1 AND r.openid = $2 AND r.batch = $3 AND r.request = $4",
    types: &[T, T, T, T],
};
const HELD: Sql = Sql {
    text: "SELECT held FROM coupon_holders WHERE batch = $1 AND account = $2 AND openid = $3",
    types: &[T, T, T],
};
const TAKEN: Sql = Sql {
    text: "SELECT 1 FROM coupons WHERE code = $1",
    types: &[T],
};
const ISSUE: Sql = Sql {
    text: "UPDATE coupon_batches SET issued = issued + 1 WHERE batch = $1",
    types: &[T],
};
const HOLD: Sql = Sql {
    text: "INSERT INTO coupon_holders (batch, account, openid, held) VALUES ($1, $2, $3, 1) \
           ON CONFLICT (batch, account, openid) DO UPDATE SET held = coupon_holders.held + 1",
    types: &[T, T, T],
};
const INSERT_CODE: Sql = Sql {
    text: "INSERT INTO coupons (code, batch, coupon, expires_at) VALUES ($1, $2, $3, $4)",
    types: &[T, T, Type::JSONB, Type::INT8],
};
const REMEMBER_REQUEST: Sql = Sql {
    text: "INSERT INTO coupon_requests (account, openid, batch, request, code) \
           VALUES ($1, $2, $3, $4, $5)",
    types: &[T, T, T, T, T],
};

/// Claims of one follower from one batch wait for each other (generated codes).
const LOCK_FOLLOWER: Sql = Sql {
    text: "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2 || chr(31) || $3, 0))",
    types: &[T, T, T],
};
const READ_BATCH: Sql = Sql {
    text: "SELECT issued, redeemed FROM coupon_batches WHERE batch = $1",
    types: &[T],
};
/// Counts the code against the stock (locking the batch's row till COMMIT) and, only if
/// there was stock, writes the code, the holder's count and the request.
const ISSUE_IF_STOCK: Sql = Sql {
    text: "WITH issued AS (\
             UPDATE coupon_batches SET issued = issued + 1 WHERE batch = $1 AND issued < $2 \
             RETURNING batch), \
           hold AS (\
             INSERT INTO coupon_holders (batch, account, openid, held) \
             SELECT $1, $3, $4, 1 FROM issued \
             ON CONFLICT (batch, account, openid) DO UPDATE SET held = coupon_holders.held + 1 \
             RETURNING 1), \
           code AS (\
             INSERT INTO coupons (code, batch, coupon, expires_at) \
             SELECT $5, $1, $6, $7 FROM issued RETURNING 1), \
           req AS (\
             INSERT INTO coupon_requests (account, openid, batch, request, code) \
             SELECT $3, $4, $1, $8, $5 FROM issued WHERE $8 <> '' RETURNING 1) \
           SELECT count(*) FROM issued",
    types: &[T, Type::INT8, T, T, T, Type::JSONB, Type::INT8, T],
};

/// The batch's counts from `SELECT issued, redeemed` (no row yet: nothing issued).
fn batch_state(rows: &[tokio_postgres::Row]) -> BatchState {
    rows.first()
        .map(|r| BatchState {
            issued: r.get::<_, i64>(0).max(0) as u64,
            redeemed: r.get::<_, i64>(1).max(0) as u64,
        })
        .unwrap_or_default()
}

/// The follower's count from `SELECT held` (no row: none held).
fn held_of(rows: &[tokio_postgres::Row]) -> u32 {
    rows.first().map_or(0, |r| r.get::<_, i32>(0).max(0) as u32)
}

/// The lock a claim's first look takes: the batch's row (imported codes, handed out in
/// file order) or the follower's own (generated codes; the batch's row comes last).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClaimLock {
    Batch,
    Follower,
}

/// What a claim's first look found.
enum Found {
    Before(Coupon),
    State(BatchState, u32),
}

impl PgStore {
    pub(super) fn pg_claim_coupon(
        &self,
        batch: &Batch,
        account: &str,
        openid: &str,
        now: i64,
        request: Option<&str>,
    ) -> Result<Result<Coupon, ClaimRefused>, StoreError> {
        // Inside a callback's decision: its transaction, committed with the callback.
        if let Some(c) = self.take_callback_conn() {
            let result = match batch.codes {
                CodeSource::Generate { .. } => {
                    self.claim_generated(&c, batch, account, openid, now, request, false)
                }
                CodeSource::Imported { .. } => {
                    self.claim_on(&c, batch, account, openid, now, request)
                }
            };
            self.lend_callback_conn(c);
            return result;
        }
        let c = self.block(self.conn())?;
        self.block(c.batch_execute("BEGIN")).map_err(db)?;
        if let CodeSource::Generate { .. } = batch.codes {
            return self.claim_generated(&c, batch, account, openid, now, request, true);
        }
        let result = self.claim_on(&c, batch, account, openid, now, request);
        match &result {
            Ok(Ok(_)) => {
                if let Err(e) = self.block(c.batch_execute("COMMIT")) {
                    self.block(rollback(&c));
                    return Err(db(e));
                }
            }
            _ => self.block(rollback(&c)),
        }
        result
    }

    /// A claim from a batch of generated codes inside an open transaction on `c` (see the
    /// module's comment). `commit`: the transaction is the claim's own, committed (or
    /// rolled back) here; else it is a callback's, which commits it.
    #[allow(clippy::too_many_arguments)]
    fn claim_generated(
        &self,
        c: &Object,
        batch: &Batch,
        account: &str,
        openid: &str,
        now: i64,
        request: Option<&str>,
        commit: bool,
    ) -> Result<Result<Coupon, ClaimRefused>, StoreError> {
        let result = self.try_claim_generated(c, batch, account, openid, now, request, commit);
        if commit && !matches!(result, Ok(Ok(_))) {
            self.block(rollback(c));
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn try_claim_generated(
        &self,
        c: &Object,
        batch: &Batch,
        account: &str,
        openid: &str,
        now: i64,
        request: Option<&str>,
        commit: bool,
    ) -> Result<Result<Coupon, ClaimRefused>, StoreError> {
        let name = batch.name.as_str();
        let req = request.unwrap_or("");
        let found = self.first_look(c, batch, account, openid, request, ClaimLock::Follower)?;
        let (state, held) = match found {
            Found::Before(coupon) => {
                if commit {
                    self.block(c.batch_execute("COMMIT")).map_err(db)?;
                }
                return Ok(Ok(coupon));
            }
            Found::State(state, held) => (state, held),
        };
        let coupon = match self.decide(c, batch, state, held, account, openid, now)? {
            Ok(coupon) => coupon,
            Err(refused) => return Ok(Err(refused)),
        };
        let json = to_json(&coupon);
        let stock = batch.stock as i64;
        let issued = self.timed("coupon_claim", async {
            let issue = self.ready(c, &ISSUE_IF_STOCK).await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
                &name,
                &stock,
                &account,
                &openid,
                &coupon.code,
                &json,
                &coupon.expires_at,
                &req,
            ];
            if commit {
                let (rows, _) =
                    futures_util::future::try_join(PgStore::run(c, &issue, &params), async {
                        c.batch_execute("COMMIT").await.map_err(db)
                    })
                    .await?;
                Ok::<_, StoreError>(rows)
            } else {
                PgStore::run(c, &issue, &params).await
            }
        })?;
        let counted = issued.first().map_or(0, |r| r.get::<_, i64>(0));
        if counted == 0 {
            // The last codes went to claims that were decided meanwhile.
            return Ok(Err(ClaimRefused::OutOfStock(batch.name.clone())));
        }
        Ok(Ok(coupon))
    }

    /// A claim's first round trip, in this order on the wire: the batch made sure of, the
    /// lock, then what the lock guards (an earlier answer to this request, the follower's
    /// count) and the batch's counts (read with the lock when it is the batch's row).
    fn first_look(
        &self,
        c: &Object,
        batch: &Batch,
        account: &str,
        openid: &str,
        request: Option<&str>,
        lock: ClaimLock,
    ) -> Result<Found, StoreError> {
        let name = batch.name.as_str();
        let req = request.unwrap_or("");
        self.timed("coupon_claim", async {
            let ensure = self.ready(c, &ENSURE_BATCH).await?;
            let by_request = self.ready(c, &BY_REQUEST).await?;
            let held = self.ready(c, &HELD).await?;
            let read = self.ready(c, &READ_BATCH).await?;
            let (locking, lock_params): (_, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>) =
                match lock {
                    ClaimLock::Batch => (self.ready(c, &LOCK_BATCH).await?, vec![&name]),
                    ClaimLock::Follower => (
                        self.ready(c, &LOCK_FOLLOWER).await?,
                        vec![&name, &account, &openid],
                    ),
                };
            let (_, locked, before, held, read) = futures_util::future::try_join5(
                PgStore::run(c, &ensure, &[&name]),
                PgStore::run(c, &locking, &lock_params),
                async {
                    if request.is_some() {
                        PgStore::run(c, &by_request, &[&account, &openid, &name, &req]).await
                    } else {
                        Ok(Vec::new())
                    }
                },
                PgStore::run(c, &held, &[&name, &account, &openid]),
                async {
                    match lock {
                        ClaimLock::Batch => Ok(Vec::new()),
                        ClaimLock::Follower => PgStore::run(c, &read, &[&name]).await,
                    }
                },
            )
            .await?;
            if let Some(row) = before.first() {
                return Ok(Found::Before(from_json("coupons", name, row.get(0))?));
            }
            // With the follower's lock the counts are not locked: enough for validity
            // and a first look at the stock, checked again when the code is counted.
            let state = match lock {
                ClaimLock::Batch => batch_state(&locked),
                ClaimLock::Follower => batch_state(&read),
            };
            Ok(Found::State(state, held_of(&held)))
        })
    }

    /// Decides a claim (`coupon::claim`), looking generated codes up on `c` so that none
    /// is given twice.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        c: &Object,
        batch: &Batch,
        state: BatchState,
        held: u32,
        account: &str,
        openid: &str,
        now: i64,
    ) -> Result<Result<Coupon, ClaimRefused>, StoreError> {
        let mut lookup_failed = None;
        let mut taken = |code: &str| match self.block(async {
            let taken = self.ready(c, &TAKEN).await?;
            PgStore::run(c, &taken, &[&code]).await
        }) {
            Ok(rows) => !rows.is_empty(),
            Err(e) => {
                lookup_failed = Some(e);
                true
            }
        };
        let decided = claim(batch, state, held, account, openid, now, &mut taken);
        match lookup_failed {
            Some(e) => Err(e),
            None => Ok(decided),
        }
    }

    /// The claim inside an open transaction on `c`.
    fn claim_on(
        &self,
        c: &Object,
        batch: &Batch,
        account: &str,
        openid: &str,
        now: i64,
        request: Option<&str>,
    ) -> Result<Result<Coupon, ClaimRefused>, StoreError> {
        let name = batch.name.as_str();
        let found = self.first_look(c, batch, account, openid, request, ClaimLock::Batch)?;
        let (state, held) = match found {
            Found::Before(coupon) => return Ok(Ok(coupon)),
            Found::State(state, held) => (state, held),
        };
        let coupon = match self.decide(c, batch, state, held, account, openid, now)? {
            Ok(coupon) => coupon,
            Err(refused) => return Ok(Err(refused)),
        };
        let json = to_json(&coupon);
        self.timed("coupon_claim", async {
            let issue = self.ready(c, &ISSUE).await?;
            let hold = self.ready(c, &HOLD).await?;
            let insert = self.ready(c, &INSERT_CODE).await?;
            let remember = self.ready(c, &REMEMBER_REQUEST).await?;
            let req = request.unwrap_or("");
            futures_util::future::try_join4(
                PgStore::run(c, &issue, &[&name]),
                PgStore::run(c, &hold, &[&name, &account, &openid]),
                PgStore::run(
                    c,
                    &insert,
                    &[&coupon.code, &name, &json, &coupon.expires_at],
                ),
                async {
                    if request.is_some() {
                        PgStore::run(
                            c,
                            &remember,
                            &[&account, &openid, &name, &req, &coupon.code],
                        )
                        .await
                    } else {
                        Ok(Vec::new())
                    }
                },
            )
            .await
            .map(drop)
        })?;
        Ok(Ok(coupon))
    }

    pub(super) fn pg_redeem_coupon(
        &self,
        code: &str,
        now: i64,
        zone: crate::local_time::UtcOffset,
    ) -> Result<Result<Coupon, RedeemRefused>, StoreError> {
        const LOCK: Sql = Sql {
            text: "SELECT coupon FROM coupons WHERE code = $1 FOR UPDATE",
            types: &[T],
        };
        const USE: Sql = Sql {
            text: "UPDATE coupons SET coupon = $2, redeemed_at = $3 WHERE code = $1",
            types: &[T, Type::JSONB, Type::INT8],
        };
        const COUNT: Sql = Sql {
            text:
                "INSERT INTO coupon_batches (batch, redeemed) VALUES ($1, 1) ON CONFLICT (batch) \
                   DO UPDATE SET redeemed = coupon_batches.redeemed + 1",
            types: &[T],
        };
        const HOLDER: Sql = Sql {
            text: "SELECT record FROM followers WHERE account = $1 AND openid = $2",
            types: &[T, T],
        };
        let c = self.block(self.conn())?;
        let found = self.timed("coupon_redeem", async {
            let lock = self.ready(&c, &LOCK).await?;
            c.batch_execute("BEGIN").await.map_err(db)?;
            PgStore::run(&c, &lock, &[&code]).await
        });
        let coupon: Coupon = match found {
            Ok(rows) => match rows.first() {
                Some(row) => match from_json("coupons", code, row.get(0)) {
                    Ok(coupon) => coupon,
                    Err(e) => {
                        self.block(rollback(&c));
                        return Err(e);
                    }
                },
                None => {
                    self.block(rollback(&c));
                    return Ok(Err(RedeemRefused::Unknown(code.to_string())));
                }
            },
            Err(e) => {
                self.block(rollback(&c));
                return Err(e);
            }
        };
        let used = match redeem(coupon, now) {
            Ok(used) => used,
            Err(refused) => {
                self.block(rollback(&c));
                return Ok(Err(refused));
            }
        };
        let json = to_json(&used);
        let written = self.timed("coupon_redeem", async {
            // The holder's first touch, for the report's count in this transaction.
            let holder = self.ready(&c, &HOLDER).await?;
            let rows = PgStore::run(&c, &holder, &[&used.account, &used.openid]).await?;
            let follower = match rows.first().map(|r| r.get::<_, Vec<u8>>(0)) {
                Some(bytes) if !bytes.is_empty() => {
                    let k = crate::store::key(&used.account, &used.openid);
                    crate::store::decode_record(&k, &bytes)?.follower
                }
                _ => None,
            };
            let counts =
                crate::report::merge(crate::report::redeem_counts(follower.as_ref(), now, zone));
            let mark = self.ready(&c, &USE).await?;
            let count = self.ready(&c, &COUNT).await?;
            let counting = self.ready_counts(&c).await?;
            let (m, n, k, commit) = futures_util::future::join4(
                PgStore::run(&c, &mark, &[&code, &json, &now]),
                PgStore::run(&c, &count, &[&used.batch]),
                PgStore::write_counts(&c, &counting, &used.account, &used.openid, &counts),
                c.batch_execute("COMMIT"),
            )
            .await;
            m.and(n).map(drop).and(k).and(commit.map_err(db))
        });
        if let Err(e) = written {
            self.block(rollback(&c));
            return Err(e);
        }
        Ok(Ok(used))
    }

    pub(super) fn pg_coupon(&self, code: &str) -> Result<Option<Coupon>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT coupon FROM coupons WHERE code = $1",
            types: &[T],
        };
        let rows = self.timed("coupon", self.query(&SQL, &[&code]))?;
        rows.into_iter()
            .next()
            .map(|r| from_json("coupons", code, r.get(0)))
            .transpose()
    }

    pub(super) fn pg_coupon_stats(
        &self,
        batch: &Batch,
        now: i64,
    ) -> Result<CouponStats, StoreError> {
        const STATE: Sql = Sql {
            text: "SELECT issued, redeemed FROM coupon_batches WHERE batch = $1",
            types: &[T],
        };
        const EXPIRED: Sql = Sql {
            text: "SELECT count(*) FROM coupons WHERE batch = $1 AND redeemed_at IS NULL \
                   AND expires_at <= $2",
            types: &[T, Type::INT8],
        };
        let name = batch.name.as_str();
        let (state, expired) = self.timed("coupon_stats", async {
            let c = self.conn().await?;
            let (s, e) = (
                self.ready(&c, &STATE).await?,
                self.ready(&c, &EXPIRED).await?,
            );
            futures_util::future::try_join(
                PgStore::run(&c, &s, &[&name]),
                PgStore::run(&c, &e, &[&name, &now]),
            )
            .await
        })?;
        let (issued, redeemed) = state.first().map_or((0, 0), |r| {
            (
                r.get::<_, i64>(0).max(0) as u64,
                r.get::<_, i64>(1).max(0) as u64,
            )
        });
        let expired = expired
            .first()
            .map_or(0, |r| r.get::<_, i64>(0).max(0) as u64);
        Ok(CouponStats {
            issued,
            redeemed,
            expired,
            left: batch.stock.saturating_sub(issued),
        })
    }
}
