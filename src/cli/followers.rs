//! `siyu followers --where "…"`: count, list or export (CSV) the followers of a segment.
//! Walks the store page by page (a million followers never sit in memory, and a closed pipe
//! stops the walk); while `siyu serve` holds the store, the server walks it
//! (`GET /admin/v1/segments/{account}`) and this prints what it streams. Both give the
//! same bytes: one format, in [`crate::export`] (a CSV for Excel: a UTF-8 byte-order mark,
//! which `--no-bom` leaves out, and local date-times).

use std::process::ExitCode;

use super::output::{self, Buffered};
use super::remote::{Failure, Server};
use super::{ConfigArg, StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::{Role, Settings};
use crate::export::{self, Format, CSV_HEADER, UTF8_BOM};
use crate::segment::Segment;
use crate::store::Store;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct FollowersArgs {
    #[command(subcommand)]
    pub action: Option<FollowersAction>,
    #[command(flatten)]
    pub config: ConfigArg,
    /// The account id (as in config.toml).
    #[arg(long, required = true)]
    pub account: Option<String>,
    /// The segment, e.g. "tag:vip AND last_message_before 30d"; default: everyone.
    #[arg(long = "where")]
    pub segment: Option<String>,
    /// Print the matching openids, one per line.
    #[arg(long, conflicts_with = "csv")]
    pub list: bool,
    /// Print the matching followers as CSV (openid, subscribed, first scene, tags,
    /// messages, last message time as a local date-time in `[display] utc_offset`), UTF-8
    /// with a byte-order mark so that Excel shows Chinese text.
    #[arg(long)]
    pub csv: bool,
    /// Leave the byte-order mark out of the CSV (for tools that do not expect one).
    #[arg(long, requires = "csv")]
    pub no_bom: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum FollowersAction {
    /// Import the account's existing followers from WeChat (resumable; README "Importing
    /// followers").
    Sync(super::sync::SyncArgs),
    /// One follower, and the same person's identities on the brand's other accounts.
    Show(super::show::ShowArgs),
    /// Import tags, attributes and counters from a CSV file (`openid,tags,attributes,
    /// counters`; README "Behaviour from the shop").
    Import(super::import::ImportArgs),
}

pub fn run(args: &FollowersArgs) -> ExitCode {
    let account = match (&args.action, &args.account) {
        (Some(FollowersAction::Sync(a)), _) => return super::sync::run(&args.config.config, a),
        (Some(FollowersAction::Show(a)), _) => return super::show::run(&args.config.config, a),
        (Some(FollowersAction::Import(a)), _) => return super::import::run(&args.config.config, a),
        (None, Some(account)) => account,
        // clap requires --account without a subcommand.
        (None, None) => return ExitCode::from(super::EXIT_USAGE),
    };
    let settings = match super::settings_with_account(&args.config.config, account) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let segment = match args.segment.as_deref().map(Segment::parse).transpose() {
        Ok(s) => s,
        Err(e) => {
            let text = args.segment.as_deref().unwrap_or("");
            errln!(
                "error: --where {e}\n  {text}\n  {}^",
                " ".repeat(e.column - 1)
            );
            return ExitCode::from(EXIT_INVALID);
        }
    };
    if let Some(s) = &segment {
        if let Err(e) = crate::person::check_accounts(s, &|a| settings.account(a).is_some()) {
            errln!("error: --where {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    }
    let format = if args.list {
        Format::List
    } else if args.csv {
        Format::Csv
    } else {
        Format::Count
    };
    match super::store_or_server(&settings, Role::Viewer) {
        Ok(StoreOrServer::Local(store)) => local(
            store.as_ref(),
            account,
            args,
            segment.as_ref(),
            format,
            &settings,
        ),
        Ok(StoreOrServer::Remote(server)) => remote(&server, account, args, format),
        Err(code) => code,
    }
}

fn local(
    store: &dyn Store,
    account: &str,
    args: &FollowersArgs,
    segment: Option<&Segment>,
    format: Format,
    settings: &Settings,
) -> ExitCode {
    let now = crate::outbox::now_ms() / 1000;
    let zone = settings.utc_offset;
    let mut out = Buffered::new();
    if format == Format::Csv {
        if !args.no_bom {
            out.bytes(UTF8_BOM);
        }
        out.write(format_args!("{CSV_HEADER}"));
    }
    let mut line = String::new();
    let walked = export::walk(store, account, segment, now, &mut |f| {
        line.clear();
        export::write_row(&mut line, format, f, zone);
        out.write(format_args!("{line}"));
        // Until the reader of a listing has gone (a count needs them all).
        format == Format::Count || !output::closed()
    });
    match walked {
        Ok(count) => {
            if format == Format::Count {
                out.write(format_args!("{count}\n"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The same through `GET /admin/v1/segments/{account}`: the count as JSON, a listing
/// streamed to stdout as the server writes it.
fn remote(server: &Server, account: &str, args: &FollowersArgs, format: Format) -> ExitCode {
    let path = ["admin", "v1", "segments", account];
    let mut query = vec![];
    if let Some(w) = &args.segment {
        query.push(("where", w.as_str()));
    }
    let result = match format {
        Format::Count => {
            query.push(("format", "count"));
            server
                .get::<serde_json::Value>(&path, &query)
                .and_then(|v| {
                    v.get("count").and_then(|c| c.as_u64()).ok_or_else(|| {
                        Failure::Runtime(format!("the server's count is not a number: {v}"))
                    })
                })
                .map(|count| outln!("{count}"))
        }
        Format::List | Format::Csv => {
            query.push((
                "format",
                if format == Format::List {
                    "list"
                } else {
                    "csv"
                },
            ));
            if args.no_bom {
                query.push(("bom", "false"));
            }
            let mut out = Buffered::new();
            server.stream(&path, &query, &mut |bytes| {
                out.bytes(bytes);
                !output::closed()
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.exit(),
    }
}
