//! `siyu check`: validate the config and every rule folder, print a summary and the
//! folder's warnings, exit 1 on any error (all rule errors are listed, each with
//! file:line:column). Warnings never fail a check. With `--tests FILE`, also run an
//! operator regression suite against each folder and exit 1 on any failed case.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{ConfigArg, EXIT_INVALID};
use crate::config::{AccountKind, Settings};
use crate::rulebook;
use crate::rules::{RuleTable, Suite};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also run this regression suite (a TOML file of `[[case]]` test messages, each with
    /// the rule expected to answer it) against the rule folder of each account.
    #[arg(long, value_name = "FILE")]
    pub tests: Option<PathBuf>,
    /// Check only this account's rule folder (the config is checked whole).
    #[arg(long)]
    pub account: Option<String>,
}

pub fn run(args: &CheckArgs) -> ExitCode {
    let config = &args.config.config;
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    outln!("config {}: ok", config.display());
    for a in &settings.accounts {
        let kind = match a.kind {
            AccountKind::Official => "official account",
            AccountKind::Wecom => "wecom app",
        };
        outln!(
            "  account {}: {kind}, {} mode, /wx/{}, rules from {}",
            a.id,
            format!("{:?}", a.mode).to_lowercase(),
            a.id,
            a.replies_dir.display()
        );
    }
    if !settings.coupons.is_empty() {
        let names: Vec<&str> = settings.coupons.iter().map(|b| b.name.as_str()).collect();
        outln!("  coupons: {} batch(es): {}", names.len(), names.join(", "));
    }
    for c in &settings.campaigns {
        let when = c
            .start_at
            .map(|t| format!(", starts {}", settings.utc_offset.date_time(t)))
            .unwrap_or_default();
        outln!(
            "  campaign {}: account {}, audience: {}{when}",
            c.name,
            c.accounts().collect::<Vec<_>>().join(", "),
            c.audience
        );
    }
    for c in &settings.channels {
        let tags = if c.tags.is_empty() {
            String::new()
        } else {
            format!(", arrival tags: {}", c.tags.join(" "))
        };
        let code = match settings
            .channel_code(&c.account, &c.name)
            .map(|o| &o.request)
        {
            None => String::new(),
            Some(crate::channel::CodeRequest::Qr {
                permanent: false,
                expire_seconds,
            }) => format!(
                ", code made by siyu ({} days, re-issued)",
                expire_seconds / 86_400
            ),
            Some(_) => ", code made by siyu".to_string(),
        };
        outln!(
            "  channel {} ({}): account {}, {}{tags}{code}",
            c.name,
            c.title,
            c.account,
            c.kind
        );
    }
    for p in &settings.referrals {
        let tiers: Vec<String> = p
            .tiers
            .iter()
            .map(|t| format!("{}→{}", t.invites, t.coupon))
            .collect();
        outln!(
            "  referral {} ({}): account {}, {} to {}, tiers {}, hold {} h{}",
            p.name,
            p.title,
            p.account,
            p.zone.date_time(p.start),
            p.end_text(),
            tiers.join(" "),
            p.hold_secs / 3600,
            if p.poster.is_some() { ", poster" } else { "" }
        );
    }
    let mut dirs = settings.rule_dirs();
    if let Some(id) = &args.account {
        let Some(account) = settings.account(id) else {
            let ids: Vec<&str> = settings.accounts.iter().map(|a| a.id.as_str()).collect();
            errln!("error: no account `{id}` (configured: {})", ids.join(", "));
            return ExitCode::from(EXIT_INVALID);
        };
        dirs.retain(|dir, _| *dir == account.replies_dir);
    }
    // Read before the folders so that a broken suite is reported once, not per folder.
    let mut failed = false;
    let suite = match &args.tests {
        None => None,
        Some(path) => {
            let suite = read_suite(path);
            failed |= suite.is_none();
            suite
        }
    };
    // The context every compile of a server uses (startup, reloads, the admin API), so a
    // folder passes here exactly when `siyu serve` would take it.
    let context = settings.rule_context();
    for (dir, accounts) in dirs {
        match rulebook::load_dir(&dir, &context) {
            Ok(table) => {
                outln!(
                    "rules {}: ok, {} (accounts: {})",
                    dir.display(),
                    table.summary(),
                    accounts.join(", ")
                );
                for warning in table.warnings() {
                    outln!("{warning}");
                }
                for warning in rulebook::undeliverable(&table, &settings, &accounts) {
                    outln!("{warning}");
                }
                if let Some(suite) = &suite {
                    failed |= !run_suite(&table, suite, &dir);
                }
            }
            Err(e) => {
                failed = true;
                errln!("rules {}: refused", dir.display());
                errln!("{e}");
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads and parses a suite file, printing why not if it can't (`None`).
pub(crate) fn read_suite(path: &Path) -> Option<Suite> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            errln!("error: cannot read tests {}: {e}", path.display());
            return None;
        }
    };
    match Suite::parse(&path.display().to_string(), &text) {
        Ok(suite) => Some(suite),
        Err(e) => {
            errln!("tests {}: refused", path.display());
            errln!("{e}");
            None
        }
    }
}

/// Runs `suite` against the rules of `dir`, prints a summary and every failure; whether
/// every case passed.
pub(crate) fn run_suite(table: &RuleTable, suite: &Suite, dir: &Path) -> bool {
    let report = table.run_suite(suite);
    outln!(
        "tests {} on rules {}: {} passed, {} failed",
        suite.name(),
        dir.display(),
        report.passed,
        report.failures.len()
    );
    for failure in &report.failures {
        errln!("{failure}");
    }
    report.failures.is_empty()
}
