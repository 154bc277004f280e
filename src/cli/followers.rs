//! `siyu followers --where "…"`: count, list or export (CSV) the followers of a segment.
//! Streams the store (a million followers never sit in memory). Reads the store, so stop
//! `siyu serve` first.

use std::io::Write;
use std::process::ExitCode;

use super::{ConfigArg, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::Settings;
use crate::segment::Segment;
use crate::store::{SledStore, Store};

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
    /// messages, last message time).
    #[arg(long)]
    pub csv: bool,
}

pub fn run(args: &FollowersArgs) -> ExitCode {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    if settings.account(&args.account).is_none() {
        eprintln!(
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
            eprintln!(
                "error: --where {e}\n  {text}\n  {}^",
                " ".repeat(e.column - 1)
            );
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let store = match SledStore::open(&settings.storage_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let now = crate::outbox::now_ms() / 1000;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.csv {
        let _ = writeln!(
            out,
            "openid,subscribed,first_scene,tags,messages_in,last_message_at"
        );
    }
    let mut count = 0u64;
    let scanned = store.for_each_follower(&args.account, &mut |f| {
        if segment.as_ref().is_some_and(|s| !s.matches(&f, now)) {
            return;
        }
        count += 1;
        if args.list {
            let _ = writeln!(out, "{}", f.openid);
        } else if args.csv {
            let tags: Vec<&str> = f.tags.iter().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "{},{},{},{},{},{}",
                csv(&f.openid),
                f.subscribed,
                csv(f.first_scene.as_deref().unwrap_or("")),
                csv(&tags.join(" ")),
                f.messages_in,
                f.last_inbound_at.map_or(String::new(), |t| t.to_string())
            );
        }
    });
    if let Err(e) = scanned {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_RUNTIME);
    }
    if !args.list && !args.csv {
        let _ = writeln!(out, "{count}");
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
