//! `siyu simulate`: try a message or event against the rules before it goes live.
//!
//! Runs the engine's own path (`engine::dry_run`, or `engine::handle` with `--commit`)
//! against the real store, so the follower's real tags and counters decide conditions.
//! A dry run writes nothing. With `--tests FILE` it runs an operator regression suite
//! against the account's rules instead: the rules alone, no store (see `rules::Suite`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use super::check::{read_suite, run_suite};
use super::{EXIT_INVALID, EXIT_RUNTIME};
use crate::config::{AccountKind, Settings};
use crate::engine::{self, Context, Outcome};
use crate::follower::Follower;
use crate::protocol::{Inbound, Reply};
use crate::rulebook;
use crate::server::webhook::Entropy;
use crate::trial::Trial;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// The account id (as in config.toml).
    #[arg(long)]
    pub account: String,
    /// The follower's openid (WeCom: UserID, or the external user id for contact events).
    #[arg(long, default_value = "o_simulated_follower")]
    pub from: String,
    /// Simulate an event instead of a text message.
    #[arg(long, value_enum)]
    pub event: Option<SimEvent>,
    /// The QR scene (subscribe, scan) or channel-code state (add_external_contact).
    #[arg(long)]
    pub scene: Option<String>,
    /// The menu key (click, view).
    #[arg(long)]
    pub key: Option<String>,
    /// Apply the state change for real (as if WeChat had called); default: a dry run.
    #[arg(long)]
    pub commit: bool,
    /// Picks among reply variants; random by default.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Instead of one message, run this regression suite (a TOML file of `[[case]]` test
    /// messages, each with the rule expected to answer it); exit 1 on any mismatch.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["text", "event", "scene", "key", "commit", "seed"]
    )]
    pub tests: Option<PathBuf>,
    /// The text of the message.
    pub text: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SimEvent {
    Subscribe,
    Unsubscribe,
    Scan,
    Click,
    View,
    EnterAgent,
    AddExternalContact,
    DelExternalContact,
}

pub fn run(args: &SimulateArgs) -> ExitCode {
    match simulate(args) {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn simulate(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let settings = match Settings::load(&args.config.config) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let Some(account) = settings.account(&args.account) else {
        let ids: Vec<&str> = settings.accounts.iter().map(|a| a.id.as_str()).collect();
        errln!(
            "error: no account `{}` (configured: {})",
            args.account,
            ids.join(", ")
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    };
    let table = match rulebook::load_dir(&account.replies_dir, &settings.rule_context()) {
        Ok(t) => t,
        Err(e) => {
            errln!("rules {}: refused\n{e}", account.replies_dir.display());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    if let Some(path) = &args.tests {
        let passed =
            read_suite(path).is_some_and(|suite| run_suite(&table, &suite, &account.replies_dir));
        return Ok(if passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_INVALID)
        });
    }
    let msg = match build_message(args, account.kind, &account.receive_id) {
        Ok(m) => m,
        Err(e) => {
            errln!("error: {e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let store = crate::store::open(&settings)?;
    let entropy = Entropy::fresh();
    let ctx = Context {
        account: &account.id,
        rules: &table,
        now: entropy.now,
        now_ms: entropy.now_ms,
        seed: args.seed.unwrap_or(entropy.seed),
        dedupe_ttl_secs: settings.dedupe_ttl_secs,
        coupons: &settings.coupons,
        outbound: account.outbound(),
    };
    let (outcome, after) = if args.commit {
        let o = engine::handle(store.as_ref(), ctx, &msg)?;
        store.flush()?;
        let after = store.follower(&account.id, &o.follower_id)?;
        (o, after)
    } else {
        engine::dry_run(store.as_ref(), ctx, &msg)?
    };
    print_outcome(&account.id, &outcome, after.as_ref(), args.commit);
    Ok(ExitCode::SUCCESS)
}

fn build_message(
    args: &SimulateArgs,
    kind: AccountKind,
    receive_id: &str,
) -> Result<Inbound, String> {
    let entropy = Entropy::fresh();
    let trial = Trial {
        from: Some(args.from.clone()),
        text: args.text.clone(),
        event: args.event.map(|e| {
            e.to_possible_value()
                .map(|v| v.get_name().replace('-', "_"))
                .unwrap_or_default()
        }),
        scene: args.scene.clone(),
        key: args.key.clone(),
    };
    trial.message(kind, receive_id, entropy.now, entropy.seed)
}

fn print_outcome(account: &str, o: &Outcome, after: Option<&Follower>, committed: bool) {
    outln!("account   {account}");
    outln!("follower  {}", o.follower_id);
    if o.answer.rules.is_empty() {
        outln!("rules     (none matched)");
    } else {
        outln!("rules     {}", o.answer.rules.join(" → "));
    }
    match &o.answer.reply {
        None => outln!("reply     (none: answered `success`)"),
        Some(r) => outln!("reply     {}", describe(r)),
    }
    if o.actions.is_empty() {
        outln!("actions   (none)");
    } else {
        for (i, a) in o.actions.iter().enumerate() {
            outln!("{}{a}", if i == 0 { "actions   " } else { "          " });
        }
    }
    let now_ms = o
        .effects
        .iter()
        .map(|e| e.not_before_ms)
        .min()
        .unwrap_or_default();
    for (i, e) in o.effects.iter().enumerate() {
        let wait = (e.not_before_ms - now_ms) / 1000;
        let when = if wait > 0 {
            format!(" (after {wait} s)")
        } else {
            String::new()
        };
        outln!(
            "{}{}{when}",
            if i == 0 { "to WeChat " } else { "          " },
            e.effect.describe()
        );
    }
    if let Some(f) = after {
        let tags: Vec<&str> = f.tags.iter().map(String::as_str).collect();
        outln!(
            "state     subscribed={} tags=[{}] messages_in={} first_scene={}",
            f.subscribed,
            tags.join(", "),
            f.messages_in,
            f.first_scene.as_deref().unwrap_or("-")
        );
        for (k, v) in &f.counters {
            outln!("          counter {k} = {v}");
        }
        for (k, v) in &f.attributes {
            outln!("          attribute {k} = {v}");
        }
    }
    if committed {
        outln!("(committed to the store)");
    } else {
        outln!("(dry run: nothing written; --commit applies it)");
    }
}

fn describe(r: &Reply) -> String {
    match r {
        Reply::Text { content } => format!("text: {content}"),
        Reply::Image { media_id } => format!("image: {media_id}"),
        Reply::Voice { media_id } => format!("voice: {media_id}"),
        Reply::Video {
            media_id, title, ..
        } => {
            format!("video: {media_id} {}", title.as_deref().unwrap_or(""))
        }
        Reply::Music { title, .. } => format!("music: {}", title.as_deref().unwrap_or("")),
        Reply::News { articles } => {
            let titles: Vec<&str> = articles.iter().map(|a| a.title.as_str()).collect();
            format!("news: {}", titles.join(" | "))
        }
        Reply::TransferCustomerService { kf_account } => format!(
            "transfer to customer service{}",
            kf_account
                .as_deref()
                .map(|k| format!(" ({k})"))
                .unwrap_or_default()
        ),
    }
}
