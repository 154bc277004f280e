//! `siyu followers --where "…"`: count, list or export (CSV) the followers of a segment.
//! Walks the store page by page (a million followers never sit in memory, and a closed pipe
//! stops the walk). Reads the store, so stop `siyu serve` first.
//!
//! The CSV is for Excel as much as for scripts: it opens with a UTF-8 byte-order mark, without
//! which Excel reads the file as the local ANSI code page and garbles Chinese tags and
//! scenes (`--no-bom` leaves it out), and times are local date-times in `[display]
//! utc_offset`, a form Excel reads as a date.

use std::process::ExitCode;

use super::output::{self, Buffered};
use super::{ConfigArg, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::Settings;
use crate::segment::Segment;

#[derive(Debug, clap::Args)]
pub struct FollowersArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The account id (as in config.toml).
    #[arg(long)]
    pub account: String,
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

/// The UTF-8 byte-order mark: how Excel knows a CSV is UTF-8.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Followers read from the store at a time.
const PAGE: usize = 1024;

pub fn run(args: &FollowersArgs) -> ExitCode {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    if settings.account(&args.account).is_none() {
        errln!(
            "error: no account `{}` in {}",
            args.account,
            settings.source.display()
        );
        return ExitCode::from(EXIT_INVALID);
    }
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
    let store = match crate::store::open(&settings) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let now = crate::outbox::now_ms() / 1000;
    let zone = settings.utc_offset;
    let mut out = Buffered::new();
    if args.csv {
        if !args.no_bom {
            out.bytes(UTF8_BOM);
        }
        out.write(format_args!(
            "openid,subscribed,first_scene,tags,messages_in,last_message_at\n"
        ));
    }
    let mut count = 0u64;
    let mut after: Option<String> = None;
    // Until the last page, or until the reader of a listing has gone (a count needs them all).
    while !(output::closed() && (args.list || args.csv)) {
        let page = match store.followers_after(&args.account, after.as_deref(), PAGE) {
            Ok(page) => page,
            Err(e) => {
                errln!("error: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        let Some(last) = page.last() else { break };
        after = Some(last.openid.clone());
        for f in page {
            if segment.as_ref().is_some_and(|s| !s.matches(&f, now)) {
                continue;
            }
            count += 1;
            if args.list {
                out.write(format_args!("{}\n", f.openid));
            } else if args.csv {
                let tags: Vec<&str> = f.tags.iter().map(String::as_str).collect();
                out.write(format_args!(
                    "{},{},{},{},{},{}\n",
                    csv(&f.openid),
                    f.subscribed,
                    csv(f.first_scene.as_deref().unwrap_or("")),
                    csv(&tags.join(" ")),
                    f.messages_in,
                    f.last_inbound_at
                        .map_or(String::new(), |t| zone.date_time(t))
                ));
            }
        }
    }
    if !args.list && !args.csv {
        out.write(format_args!("{count}\n"));
    }
    ExitCode::SUCCESS
}

/// A CSV field, quoted when it needs to be.
fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
