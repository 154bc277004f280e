//! Rules shared by the instances on one store (PostgreSQL): each rule folder's versions,
//! so that a change made through one instance is in force on all of them. A store one
//! process owns (sled) has no other instance to tell and offers none.

use super::StoreError;
use crate::rulebook::RuleFile;

/// The newest version of one rule folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleVersion {
    /// The folder as the config names it, relative to the config's folder.
    pub dir: String,
    /// Counts up from 1 per folder.
    pub version: i64,
    /// The rule book's version hash of these files.
    pub hash: String,
}

pub trait SharedRules: Send + Sync {
    /// Adds `files` as the folder's newest version, unless the newest has this hash
    /// already; returns the newest version afterwards. Instances publishing at the same
    /// moment take turns: versions never repeat.
    fn publish_rules(
        &self,
        dir: &str,
        hash: &str,
        files: &[RuleFile],
        who: &str,
        now: i64,
    ) -> Result<RuleVersion, StoreError>;

    /// The newest version of every folder.
    fn newest_rules(&self) -> Result<Vec<RuleVersion>, StoreError>;

    /// The files of one version.
    fn rule_files(&self, dir: &str, version: i64) -> Result<Vec<RuleFile>, StoreError>;

    /// Whether any version of the folder had this hash (a folder left behind by an
    /// instance that was down while others moved on).
    fn rules_seen(&self, dir: &str, hash: &str) -> Result<bool, StoreError>;
}
