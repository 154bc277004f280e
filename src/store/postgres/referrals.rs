//! Referral programmes on PostgreSQL (`0009_referral.sql`): a write is one transaction
//! that first takes the programme's advisory transaction lock, so every instance's
//! referral writes of one programme are serialised (the read of the records a decision
//! needs cannot interleave with another's write), and the primary key (programme,
//! invitee) keeps a record unique whatever happens.

use deadpool_postgres::Object;
use tokio_postgres::types::{ToSql, Type};

use super::followers::{item_json, ENQUEUE};
use super::{db, from_json, rollback, to_json, PgStore, Sql};
use crate::referral::{InviteRecord, ParticipantId};
use crate::store::{
    InviteChange, InviteView, Participant, ParticipantChange, RewardRecord, StoreError,
};

const T: Type = Type::TEXT;

const LOCK: Sql = Sql {
    text: "SELECT pg_advisory_xact_lock(hashtextextended('siyu-referral:' || $1, 0))",
    types: &[T],
};
const PARTICIPANT: Sql = Sql {
    text: "SELECT body FROM referral_participants WHERE programme = $1 AND id = $2",
    types: &[T, T],
};
const PUT_PARTICIPANT: Sql = Sql {
    text: "INSERT INTO referral_participants (programme, id, body) VALUES ($1, $2, $3) \
           ON CONFLICT (programme, id) DO UPDATE SET body = excluded.body",
    types: &[T, T, Type::JSONB],
};
const CONCERNING: Sql = Sql {
    text: "SELECT body FROM referral_invites WHERE programme = $1 \
           AND (invitee = ANY($2) OR inviter = ANY($2))",
    types: &[T, Type::TEXT_ARRAY],
};
const REWARDS_OF: Sql = Sql {
    text: "SELECT body FROM referral_rewards WHERE programme = $1 AND inviter = ANY($2)",
    types: &[T, Type::TEXT_ARRAY],
};
const PUT_INVITE: Sql = Sql {
    text:
        "INSERT INTO referral_invites (programme, invitee, inviter, body) VALUES ($1, $2, $3, $4) \
           ON CONFLICT (programme, invitee) DO UPDATE SET body = excluded.body",
    types: &[T, T, T, Type::JSONB],
};
const PUT_REWARD: Sql = Sql {
    text: "INSERT INTO referral_rewards (programme, inviter, tier, body) VALUES ($1, $2, $3, $4) \
           ON CONFLICT DO NOTHING",
    types: &[T, T, Type::INT8, Type::JSONB],
};
const INVITES: Sql = Sql {
    text: "SELECT body FROM referral_invites WHERE programme = $1 ORDER BY invitee",
    types: &[T],
};
const REWARDS: Sql = Sql {
    text: "SELECT body FROM referral_rewards WHERE programme = $1 ORDER BY inviter, tier",
    types: &[T],
};

fn bodies<T: serde::de::DeserializeOwned>(
    table: &str,
    rows: &[tokio_postgres::Row],
) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(|r| from_json(table, "body", r.get::<_, serde_json::Value>(0)))
        .collect()
}

impl PgStore {
    async fn step(
        &self,
        c: &Object,
        sql: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let ready = self.ready(c, sql).await?;
        PgStore::run(c, &ready, params).await
    }

    /// BEGIN and the programme's lock.
    async fn begin_referral(&self, c: &Object, programme: &str) -> Result<(), StoreError> {
        c.batch_execute("BEGIN").await.map_err(db)?;
        if let Err(e) = self.step(c, &LOCK, &[&programme]).await {
            rollback(c).await;
            return Err(e);
        }
        Ok(())
    }

    pub(in crate::store) fn pg_referral_participant(
        &self,
        programme: &str,
        id: &ParticipantId,
    ) -> Result<Option<Participant>, StoreError> {
        let rows = self.timed(
            "referral_participant",
            self.query(&PARTICIPANT, &[&programme, &id.as_str()]),
        )?;
        Ok(bodies("referral_participants", &rows)?.into_iter().next())
    }

    pub(in crate::store) fn pg_update_referral_participant(
        &self,
        account: &str,
        programme: &str,
        id: &ParticipantId,
        change: &mut dyn FnMut(Option<Participant>) -> ParticipantChange,
    ) -> Result<Option<Participant>, StoreError> {
        let c = self.block(self.conn())?;
        let before = self.block(async {
            self.begin_referral(&c, programme).await?;
            match self
                .step(&c, &PARTICIPANT, &[&programme, &id.as_str()])
                .await
            {
                Ok(rows) => bodies::<Participant>("referral_participants", &rows),
                Err(e) => {
                    rollback(&c).await;
                    Err(e)
                }
            }
        });
        let before = match before {
            Ok(b) => b.into_iter().next(),
            Err(e) => {
                self.block(rollback(&c));
                return Err(e);
            }
        };
        let (after, items) = change(before.clone());
        let items = item_json(account, items, crate::outbox::now_ms());
        self.timed("referral_participant_write", async {
            let written = async {
                if let Some(p) = &after {
                    self.step(
                        &c,
                        &PUT_PARTICIPANT,
                        &[&programme, &id.as_str(), &to_json(p)],
                    )
                    .await?;
                }
                if !items.is_empty() {
                    self.step(&c, &ENQUEUE, &[&account, &items]).await?;
                }
                c.batch_execute("COMMIT").await.map_err(db)
            }
            .await;
            if written.is_err() {
                rollback(&c).await;
            }
            written
        })?;
        Ok(after.or(before))
    }

    pub(in crate::store) fn pg_referral_write(
        &self,
        account: &str,
        programme: &str,
        people: &[&str],
        change: &mut dyn FnMut(&InviteView) -> InviteChange,
    ) -> Result<InviteChange, StoreError> {
        let c = self.block(self.conn())?;
        let people: Vec<String> = people.iter().map(|p| p.to_string()).collect();
        let view = self.block(async {
            self.begin_referral(&c, programme).await?;
            let read = async {
                let records = self.step(&c, &CONCERNING, &[&programme, &people]).await?;
                let rewards = self.step(&c, &REWARDS_OF, &[&programme, &people]).await?;
                Ok(InviteView {
                    records: bodies("referral_invites", &records)?,
                    rewards: bodies("referral_rewards", &rewards)?,
                })
            }
            .await;
            if read.is_err() {
                rollback(&c).await;
            }
            read
        })?;
        let mut done = change(&view);
        done.rewards.retain(|w| {
            !view
                .rewards
                .iter()
                .any(|r| r.inviter == w.inviter && r.tier == w.tier)
        });
        let items = item_json(account, done.items.clone(), crate::outbox::now_ms());
        self.timed("referral_write", async {
            let written = async {
                for r in &done.records {
                    self.step(
                        &c,
                        &PUT_INVITE,
                        &[&programme, &r.invitee, &r.inviter, &to_json(r)],
                    )
                    .await?;
                }
                for w in &done.rewards {
                    self.step(
                        &c,
                        &PUT_REWARD,
                        &[&programme, &w.inviter, &i64::from(w.tier), &to_json(w)],
                    )
                    .await?;
                }
                if !items.is_empty() {
                    self.step(&c, &ENQUEUE, &[&account, &items]).await?;
                }
                c.batch_execute("COMMIT").await.map_err(db)
            }
            .await;
            if written.is_err() {
                rollback(&c).await;
            }
            written
        })?;
        Ok(done)
    }

    pub(in crate::store) fn pg_referral_invites(
        &self,
        programme: &str,
    ) -> Result<Vec<InviteRecord>, StoreError> {
        let rows = self.timed("referral_invites", self.query(&INVITES, &[&programme]))?;
        bodies("referral_invites", &rows)
    }

    pub(in crate::store) fn pg_referral_rewards(
        &self,
        programme: &str,
    ) -> Result<Vec<RewardRecord>, StoreError> {
        let rows = self.timed("referral_rewards", self.query(&REWARDS, &[&programme]))?;
        bodies("referral_rewards", &rows)
    }
}
