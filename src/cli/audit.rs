//! `siyu audit`: the audit trail, newest first (who changed which rule file or follower,
//! and every reload). Reads the store, so stop `siyu serve` first or use
//! `GET /admin/v1/audit` while it runs. Times are local, at `[display] utc_offset`.

use std::process::ExitCode;

use super::{EXIT_INVALID, EXIT_RUNTIME};
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// How many entries.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

pub fn run(args: &AuditArgs) -> ExitCode {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let entries = crate::store::open(&settings).and_then(|s| s.audit(args.limit));
    match entries {
        Ok(entries) => {
            if entries.is_empty() {
                outln!("(no audit entries)");
            }
            let zone = settings.utc_offset;
            for e in entries {
                outln!(
                    "{}  {:<14} {:<20} {}  {}",
                    zone.date_time(e.at),
                    e.who,
                    e.action,
                    e.target,
                    e.detail
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
