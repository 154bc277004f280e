//! Shared rules on PostgreSQL: `rule_versions`, one row per version of each folder.

use tokio_postgres::types::Type;

use super::{from_json, to_json, PgStore, Sql};
use crate::rulebook::RuleFile;
use crate::store::shared_rules::{RuleVersion, SharedRules};
use crate::store::StoreError;

const T: Type = Type::TEXT;

impl SharedRules for PgStore {
    fn publish_rules(
        &self,
        dir: &str,
        hash: &str,
        files: &[RuleFile],
        who: &str,
        now: i64,
    ) -> Result<RuleVersion, StoreError> {
        // The folder's lock, for this transaction: two instances publishing at once take
        // turns, so the second sees the first's version.
        const LOCK: Sql = Sql {
            text: "SELECT pg_advisory_xact_lock(hashtext('siyu-rules:' || $1))",
            types: &[T],
        };
        const ADD: Sql = Sql {
            text: "INSERT INTO rule_versions (dir, version, hash, files, by_who, at) \
                   SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5 \
                   FROM rule_versions WHERE dir = $1 \
                   HAVING coalesce((SELECT hash FROM rule_versions WHERE dir = $1 \
                                    ORDER BY version DESC LIMIT 1), '') <> $2",
            types: &[T, T, Type::JSONB, T, Type::INT8],
        };
        const NEWEST: Sql = Sql {
            text: "SELECT version, hash FROM rule_versions WHERE dir = $1 \
                   ORDER BY version DESC LIMIT 1",
            types: &[T],
        };
        let files = to_json(&files);
        let rows = self.timed(
            "rules_publish",
            self.atomically(&[
                (&LOCK, vec![&dir]),
                (&ADD, vec![&dir, &hash, &files, &who, &now]),
                (&NEWEST, vec![&dir]),
            ]),
        )?;
        let newest = rows
            .get(2)
            .and_then(|r| r.first())
            .ok_or_else(|| StoreError::Backend("no rule version after publishing".into()))?;
        Ok(RuleVersion {
            dir: dir.to_string(),
            version: newest.get(0),
            hash: newest.get(1),
        })
    }

    fn newest_rules(&self) -> Result<Vec<RuleVersion>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT DISTINCT ON (dir) dir, version, hash FROM rule_versions \
                   ORDER BY dir, version DESC",
            types: &[],
        };
        let rows = self.timed("rules_newest", self.query(&SQL, &[]))?;
        Ok(rows
            .iter()
            .map(|r| RuleVersion {
                dir: r.get(0),
                version: r.get(1),
                hash: r.get(2),
            })
            .collect())
    }

    fn rule_files(&self, dir: &str, version: i64) -> Result<Vec<RuleFile>, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT files FROM rule_versions WHERE dir = $1 AND version = $2",
            types: &[T, Type::INT8],
        };
        let rows = self.timed("rules_files", self.query(&SQL, &[&dir, &version]))?;
        match rows.first() {
            Some(r) => from_json("rule_versions", &format!("{dir}/{version}"), r.get(0)),
            None => Err(StoreError::Backend(format!(
                "rule folder {dir} has no version {version}"
            ))),
        }
    }

    fn rules_seen(&self, dir: &str, hash: &str) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            text: "SELECT 1 FROM rule_versions WHERE dir = $1 AND hash = $2 LIMIT 1",
            types: &[T, T],
        };
        let rows = self.block(self.query(&SQL, &[&dir, &hash]))?;
        Ok(!rows.is_empty())
    }
}
