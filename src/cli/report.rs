//! `siyu report`: an account's figures from the counters (README "Reports").
//! `channels` (per channel, with the funnel) and `daily` (per day) as a table, `--csv` or
//! `--json`; `rebuild` sums every commit's counts again and compares them with the live
//! counters (`--write` replaces them, with the servers stopped). Reads the store, or while
//! `siyu serve` holds it `GET /admin/v1/reports/{channels,daily,rebuild}` (viewer).

use std::process::ExitCode;

use super::remote::Failure;
use super::{ConfigArg, StoreOrServer, EXIT_INVALID, EXIT_RUNTIME};
use crate::config::{Role, Settings};
use crate::export::csv_field;
use crate::report::query::{self, ChannelReport, DailyReport, Rebuilt};
use crate::report::Range;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub action: ReportAction,
}

#[derive(Debug, clap::Args)]
pub struct Span {
    #[arg(long)]
    pub account: String,
    /// First day, `YYYY-MM-DD` (local, `[display] utc_offset`); default 29 days before --to.
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, included; default today.
    #[arg(long)]
    pub to: Option<String>,
    /// Comma-separated values, for a spreadsheet.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReportAction {
    /// Per channel: scans, arrivals, unfollows, who stayed, messages, coupons, orders; the
    /// funnel scans → subscribed → still following after 7 days → ordered.
    Channels(Span),
    /// Per day: follows, unfollows, net, active followers, messages, rule hits, coupons,
    /// shop events, campaign sends.
    Daily(Span),
    /// Sum every commit's counts again and compare with the live counters.
    Rebuild {
        #[arg(long)]
        account: String,
        /// Replace the live counters with the sums (stop the servers first).
        #[arg(long)]
        write: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: &ReportArgs) -> ExitCode {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let account = match &args.action {
        ReportAction::Channels(s) | ReportAction::Daily(s) => &s.account,
        ReportAction::Rebuild { account, .. } => account,
    };
    if settings.account(account).is_none() {
        errln!(
            "error: no account `{account}` in {} (配置中没有该公众号)",
            settings.source.display()
        );
        return ExitCode::from(EXIT_INVALID);
    }
    let range = match &args.action {
        ReportAction::Channels(s) | ReportAction::Daily(s) => match span(s, &settings) {
            Ok(r) => Some(r),
            Err(e) => {
                errln!("error: {e}");
                return ExitCode::from(EXIT_INVALID);
            }
        },
        ReportAction::Rebuild { .. } => None,
    };
    match super::store_or_server(&settings, Role::Viewer) {
        Ok(StoreOrServer::Local(store)) => {
            let store = store.as_ref();
            let result = match (&args.action, range) {
                (ReportAction::Channels(s), Some(r)) => {
                    query::channels(store, account, r, &settings.channels)
                        .map(|rep| print_channels(&rep, s))
                }
                (ReportAction::Daily(s), Some(r)) => {
                    query::daily(store, account, r).map(|rep| print_daily(&rep, s))
                }
                (ReportAction::Rebuild { write, json, .. }, _) => {
                    query::rebuild(store, account, *write).map(|r| print_rebuilt(&r, *json))
                }
                _ => unreachable!("a range for every listing"),
            };
            result.unwrap_or_else(|e| {
                errln!("error: {e}");
                ExitCode::from(EXIT_RUNTIME)
            })
        }
        Ok(StoreOrServer::Remote(server)) => {
            let result = match (&args.action, range) {
                (ReportAction::Channels(s) | ReportAction::Daily(s), Some(r)) => {
                    let (from, to) = (
                        crate::local_time::day_date(r.from),
                        crate::local_time::day_date(r.to),
                    );
                    let query = [("account", account.as_str()), ("from", &from), ("to", &to)];
                    if matches!(args.action, ReportAction::Channels(_)) {
                        server
                            .get::<ChannelReport>(&["admin", "v1", "reports", "channels"], &query)
                            .map(|rep| print_channels(&rep, s))
                    } else {
                        server
                            .get::<DailyReport>(&["admin", "v1", "reports", "daily"], &query)
                            .map(|rep| print_daily(&rep, s))
                    }
                }
                (ReportAction::Rebuild { write: true, .. }, _) => {
                    errln!("error: `siyu serve` is running and writing counters: stop it before `report rebuild --write` (请先停止服务再重建报表)");
                    return ExitCode::from(EXIT_INVALID);
                }
                (ReportAction::Rebuild { json, .. }, _) => server
                    .get::<Rebuilt>(
                        &["admin", "v1", "reports", "rebuild"],
                        &[("account", account.as_str())],
                    )
                    .map(|r| print_rebuilt(&r, *json)),
                _ => unreachable!("a range for every listing"),
            };
            result.unwrap_or_else(Failure::exit)
        }
        Err(code) => code,
    }
}

fn span(s: &Span, settings: &Settings) -> Result<Range, crate::report::RangeError> {
    let today = settings
        .utc_offset
        .day(crate::outbox::now_ms().div_euclid(1000));
    Range::or_default(s.from.as_deref(), s.to.as_deref(), today)
}

fn json_out<T: serde::Serialize>(value: &T) -> ExitCode {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("plain data encodes")
    );
    ExitCode::SUCCESS
}

/// The shop counters any row has, in name order: one column each.
fn shop_columns<'a>(
    maps: impl Iterator<Item = &'a std::collections::BTreeMap<String, i64>>,
) -> Vec<String> {
    let mut names: Vec<String> = maps.flat_map(|m| m.keys().cloned()).collect();
    names.sort();
    names.dedup();
    names
}

/// The values of `map` under `names`, in order, 0 where missing.
fn cells<'a>(
    names: &'a [String],
    map: &'a std::collections::BTreeMap<String, i64>,
) -> impl Iterator<Item = String> + 'a {
    names
        .iter()
        .map(|k| map.get(k).copied().unwrap_or(0).to_string())
}

fn print_channels(r: &ChannelReport, s: &Span) -> ExitCode {
    if s.json {
        return json_out(r);
    }
    let shop = shop_columns(r.channels.iter().map(|c| &c.row.shop));
    let mut head: Vec<String> = [
        "channel",
        "title",
        "kind",
        "scans",
        "new",
        "returning",
        "unfollows",
        "left_1d",
        "left_7d",
        "left_30d",
        "still_7d",
        "ordered",
        "messages",
        "active",
        "coupons_claimed",
        "coupons_redeemed",
        "shop_events",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    head.extend(shop.iter().map(|c| format!("shop:{c}")));
    head.push("last_touch_shop_events".into());
    head.extend(shop.iter().map(|c| format!("last_touch_shop:{c}")));
    let lines: Vec<Vec<String>> = r
        .channels
        .iter()
        .map(|c| {
            let w = &c.row;
            let mut line = vec![
                w.channel.clone(),
                w.title.clone(),
                w.kind.clone().unwrap_or_default(),
            ];
            line.extend(
                [
                    w.scans,
                    w.new,
                    w.returning,
                    w.unfollows,
                    w.left_1d,
                    w.left_7d,
                    w.left_30d,
                    w.still_7d,
                    w.ordered,
                    w.messages,
                    w.active,
                    w.coupons_claimed,
                    w.coupons_redeemed,
                    w.shop_events,
                ]
                .iter()
                .map(i64::to_string),
            );
            line.extend(cells(&shop, &w.shop));
            line.push(w.last_touch_shop_events.to_string());
            line.extend(cells(&shop, &w.last_touch_shop));
            line
        })
        .collect();
    if s.csv {
        return csv_out(&head, &lines);
    }
    outln!(
        "{} {} … {} (first touch: a follower counts for the channel that brought them; last_touch_* = the latest scan before the order)",
        r.account,
        r.from,
        r.to
    );
    if lines.is_empty() {
        outln!("(no channel figures in this range)");
        return ExitCode::SUCCESS;
    }
    outln!(
        "{:<20} {:<16} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "channel",
        "title",
        "scans",
        "new",
        "back",
        "left_7d",
        "still_7d",
        "ordered",
        "messages"
    );
    for c in &r.channels {
        let w = &c.row;
        let name = if w.channel.is_empty() {
            "(direct)"
        } else {
            &w.channel
        };
        outln!(
            "{:<20} {:<16} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8}",
            name,
            w.title,
            w.scans,
            w.new,
            w.returning,
            w.left_7d,
            w.still_7d,
            w.ordered,
            w.messages
        );
    }
    outln!("(all columns: --csv or --json)");
    ExitCode::SUCCESS
}

fn print_daily(r: &DailyReport, s: &Span) -> ExitCode {
    if s.json {
        return json_out(r);
    }
    let shop = shop_columns(r.days.iter().map(|d| &d.shop));
    let sends = shop_columns(r.days.iter().map(|d| &d.campaign_sends));
    let mut head: Vec<String> = [
        "date",
        "new",
        "returning",
        "unfollows",
        "net",
        "active",
        "messages",
        "rule_hits",
        "coupons_claimed",
        "coupons_redeemed",
        "shop_events",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    head.extend(shop.iter().map(|c| format!("shop:{c}")));
    head.extend(sends.iter().map(|c| format!("campaign_sends:{c}")));
    let lines: Vec<Vec<String>> = r
        .days
        .iter()
        .map(|d| {
            let mut line = vec![d.date.clone()];
            line.extend(
                [
                    d.new,
                    d.returning,
                    d.unfollows,
                    d.net,
                    d.active,
                    d.messages,
                    d.rule_hits,
                    d.coupons_claimed,
                    d.coupons_redeemed,
                    d.shop_events,
                ]
                .iter()
                .map(i64::to_string),
            );
            line.extend(cells(&shop, &d.shop));
            line.extend(cells(&sends, &d.campaign_sends));
            line
        })
        .collect();
    if s.csv {
        return csv_out(&head, &lines);
    }
    outln!(
        "{:<10} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>6} {:>8} {:>8} {:>6}",
        "date",
        "new",
        "back",
        "left",
        "net",
        "active",
        "messages",
        "hits",
        "coupons",
        "redeemed",
        "shop"
    );
    for d in &r.days {
        outln!(
            "{:<10} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>6} {:>8} {:>8} {:>6}",
            d.date,
            d.new,
            d.returning,
            d.unfollows,
            d.net,
            d.active,
            d.messages,
            d.rule_hits,
            d.coupons_claimed,
            d.coupons_redeemed,
            d.shop_events
        );
    }
    ExitCode::SUCCESS
}

fn csv_out(head: &[String], lines: &[Vec<String>]) -> ExitCode {
    let row = |cells: &[String]| {
        cells
            .iter()
            .map(|c| csv_field(c))
            .collect::<Vec<_>>()
            .join(",")
    };
    outln!("{}", row(head));
    for l in lines {
        outln!("{}", row(l));
    }
    ExitCode::SUCCESS
}

fn print_rebuilt(r: &Rebuilt, json: bool) -> ExitCode {
    let agree = r.differences.is_empty();
    if json {
        json_out(r);
    } else {
        outln!(
            "{}: {} commits' counts summed again, {} counters compared",
            r.account,
            r.facts,
            r.cells
        );
        for d in &r.differences {
            let channel = if d.channel.is_empty() {
                "(direct)"
            } else {
                &d.channel
            };
            outln!(
                "  {} {channel} {}: live {}, rebuilt {}",
                d.date,
                d.metric,
                d.live,
                d.rebuilt
            );
        }
        outln!(
            "{}",
            match (agree, r.written) {
                (true, _) => "the live counters agree with the rebuild (报表计数一致)",
                (false, true) => "the counters were replaced by the rebuilt sums (已按重建结果改写)",
                (false, false) =>
                    "the live counters differ: `siyu report rebuild --write` (servers stopped) replaces them (报表计数不一致)",
            }
        );
    }
    if agree || r.written {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}
