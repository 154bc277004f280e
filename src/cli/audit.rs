//! `siyu audit`: the audit trail, newest first (who changed which rule file or follower,
//! and every reload). Reads the store, or while `siyu serve` holds it `GET
//! /admin/v1/audit` (an admin token in `SIYU_ADMIN_TOKEN`). Times are local, at
//! `[display] utc_offset`.

use std::process::ExitCode;

use serde::Deserialize;

use super::{StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::audit::AuditEntry;
use crate::config::{Role, Settings};
use crate::local_time::UtcOffset;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// How many entries.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// The most the admin API lists at once.
const API_LIMIT: usize = 1000;

pub fn run(args: &AuditArgs) -> ExitCode {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let entries = match super::store_or_server(&settings, Role::Admin) {
        Ok(StoreOrServer::Local(store)) => match store.audit(args.limit) {
            Ok(entries) => entries,
            Err(e) => {
                errln!("error: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
        Ok(StoreOrServer::Remote(server)) => {
            #[derive(Deserialize)]
            struct Entries {
                entries: Vec<AuditEntry>,
            }
            if args.limit > API_LIMIT {
                errln!("note: the server lists at most {API_LIMIT} entries at once");
            }
            let limit = args.limit.to_string();
            match server.get::<Entries>(&["admin", "v1", "audit"], &[("limit", &limit)]) {
                Ok(e) => e.entries,
                Err(e) => return e.exit(),
            }
        }
        Err(code) => return code,
    };
    print(&entries, settings.utc_offset);
    ExitCode::SUCCESS
}

fn print(entries: &[AuditEntry], zone: UtcOffset) {
    if entries.is_empty() {
        outln!("(no audit entries)");
    }
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
}
