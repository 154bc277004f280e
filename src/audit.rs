//! The audit trail: who changed what, and when. Every change through the admin API and
//! every rule reload is recorded in the store, newest read first.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Seconds since the epoch.
    pub at: i64,
    /// The admin token's name, or `file-watcher`, `sighup`, `startup`.
    pub who: String,
    /// `rules.write`, `rules.reload`, `rules.reload_failed`, `follower.tag_add`, …
    pub action: String,
    /// The file, folder or `account/openid` changed.
    pub target: String,
    /// A short summary: a diff's line counts, the new version, the tag, the error.
    pub detail: String,
}

/// `+added −removed lines` between two texts, counted as multisets of lines: enough for
/// a reviewer to see the size of a change without storing whole files twice.
pub fn diff_summary(old: &str, new: &str) -> String {
    use std::collections::HashMap;
    let mut count: HashMap<&str, i64> = HashMap::new();
    for l in old.lines() {
        *count.entry(l).or_default() -= 1;
    }
    for l in new.lines() {
        *count.entry(l).or_default() += 1;
    }
    let added: i64 = count.values().filter(|v| **v > 0).sum();
    let removed: i64 = -count.values().filter(|v| **v < 0).sum::<i64>();
    format!("+{added} −{removed} lines")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_summary_counts_changed_lines() {
        assert_eq!(diff_summary("a\nb\n", "a\nc\nd\n"), "+2 −1 lines");
        assert_eq!(diff_summary("", "x"), "+1 −0 lines");
        assert_eq!(diff_summary("same", "same"), "+0 −0 lines");
    }
}
