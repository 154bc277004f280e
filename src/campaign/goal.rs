//! Campaign goals (KPIs set in advance): `goals = [{ metric = "coupons_redeemed",
//! at_least = 500, by = "2026-11-11" }]`, checked with the campaign file, and measured in
//! its report against the campaign's own figures or the account's report counters.

use serde::{Deserialize, Serialize};

use crate::local_time::parse_day;
use crate::report::{metric, TOTAL};
use crate::store::{Store, StoreError};

/// The campaign's own figures a goal may name (from its report).
pub const CAMPAIGN_METRICS: [&str; 4] = ["targeted", "sent", "coupons_issued", "coupons_redeemed"];

/// One goal, as checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goal {
    pub metric: String,
    pub at_least: i64,
    /// The last local day that counts, `YYYY-MM-DD`.
    pub by: String,
}

/// How far a goal has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoalProgress {
    pub metric: String,
    pub at_least: i64,
    pub by: String,
    pub value: i64,
    /// `met` (reached, whenever), `open` (not yet, still time), `missed` (the day passed).
    pub status: String,
}

/// Why a goal was refused (the campaign file reports it at its place).
pub fn check(metric_name: &str, at_least: i64, by: &str) -> Result<Goal, String> {
    let known = CAMPAIGN_METRICS.contains(&metric_name)
        || metric::DAILY.contains(&metric_name)
        || metric_name == "net"
        || metric_name
            .strip_prefix(metric::SHOP_PREFIX)
            .is_some_and(|c| !c.is_empty());
    if !known {
        return Err(format!(
            "goal metric `{metric_name}`: use one of the campaign's {} or the account's daily {}, net, shop:<counter> (目标指标未知)",
            CAMPAIGN_METRICS.join(", "),
            metric::DAILY.join(", ")
        ));
    }
    if at_least <= 0 {
        return Err("goal at_least must be a whole number above 0".into());
    }
    if parse_day(by).is_none() {
        return Err(format!(
            "goal by = `{by}`: write the last day as YYYY-MM-DD, e.g. \"2026-11-11\""
        ));
    }
    Ok(Goal {
        metric: metric_name.to_string(),
        at_least,
        by: by.to_string(),
    })
}

/// The goals' progress. The campaign's figures come from `own` (its report: `targeted`,
/// `sent`, `coupons_issued`, `coupons_redeemed` of its own coupon); any other metric is
/// the campaign's accounts' daily counters summed from `first_day` through the goal's day
/// (or today, if earlier).
pub fn progress(
    store: &dyn Store,
    goals: &[Goal],
    accounts: &[&str],
    own: &dyn Fn(&str) -> Option<i64>,
    first_day: i64,
    today: i64,
) -> Result<Vec<GoalProgress>, StoreError> {
    let mut out = Vec::with_capacity(goals.len());
    for g in goals {
        let by = parse_day(&g.by).unwrap_or(today);
        let value = match own(&g.metric) {
            Some(v) => v,
            None => {
                let last = by.min(today);
                let mut totals = Vec::new();
                for a in accounts {
                    totals.extend(
                        store
                            .report_counts(a, first_day, last)?
                            .into_iter()
                            .filter(|c| c.channel == TOTAL),
                    );
                }
                let sum =
                    |m: &str| -> i64 { totals.iter().filter(|c| c.metric == m).map(|c| c.n).sum() };
                if g.metric == "net" {
                    sum(metric::NEW) + sum(metric::RETURNING) - sum(metric::UNFOLLOWS)
                } else {
                    sum(&g.metric)
                }
            }
        };
        let status = if value >= g.at_least {
            "met"
        } else if today > by {
            "missed"
        } else {
            "open"
        };
        out.push(GoalProgress {
            metric: g.metric.clone(),
            at_least: g.at_least,
            by: g.by.clone(),
            value,
            status: status.into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Count;
    use crate::store::MemoryStore;

    #[test]
    fn goals_are_checked() {
        assert!(check("coupons_redeemed", 500, "2026-11-11").is_ok());
        assert!(check("shop:spend_fen", 1, "2026-11-11").is_ok());
        assert!(check("net", 1, "2026-11-11").is_ok());
        assert!(check("likes", 1, "2026-11-11")
            .unwrap_err()
            .contains("likes"));
        assert!(check("sent", 0, "2026-11-11")
            .unwrap_err()
            .contains("above 0"));
        assert!(check("sent", 1, "11/11")
            .unwrap_err()
            .contains("YYYY-MM-DD"));
    }

    #[test]
    fn progress_reads_the_campaign_and_the_counters_and_says_met_open_or_missed() {
        let store = MemoryStore::default();
        let d = parse_day("2026-11-10").unwrap();
        store
            .replace_report_counts(
                "demo",
                &[
                    Count::new(d - 1, TOTAL, "new", 100), // before the campaign
                    Count::new(d, TOTAL, "new", 30),
                    Count::new(d, TOTAL, "unfollows", 5),
                    Count::new(d + 1, TOTAL, "new", 20),
                    Count::new(d + 1, "poster", "new", 20),
                    Count::new(d + 2, TOTAL, "new", 1000), // after the goal's day
                ],
            )
            .unwrap();
        let goals = vec![
            check("new", 50, "2026-11-11").unwrap(),
            check("net", 50, "2026-11-11").unwrap(),
            check("sent", 10, "2026-11-20").unwrap(),
        ];
        let own = |m: &str| (m == "sent").then_some(7);
        let p = progress(&store, &goals, &["demo"], &own, d, d + 3).unwrap();
        let got: Vec<(i64, &str)> = p.iter().map(|g| (g.value, g.status.as_str())).collect();
        assert_eq!(got, [(50, "met"), (45, "missed"), (7, "open")]);
        // Before the day, the same shortfall is still open.
        let p = progress(&store, &goals[1..2], &["demo"], &own, d, d + 1).unwrap();
        assert_eq!((p[0].value, p[0].status.as_str()), (45, "open"));
    }
}
