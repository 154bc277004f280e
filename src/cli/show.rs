//! `siyu followers show --account ID OPENID`: one follower as siyu knows them, and the same
//! person's other identities (by unionid, from the people index): their openids on the
//! brand's other official accounts and their WeCom contact ids.

use std::path::Path;
use std::process::ExitCode;

use super::remote::{Failure, Server};
use super::{StoreOrServer, EXIT_INVALID};
use crate::config::Role;
use crate::follower::Follower;
use crate::local_time::UtcOffset;

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The account id (as in config.toml).
    #[arg(long)]
    pub account: String,
    /// The follower's openid (a WeCom contact's external_userid).
    pub openid: String,
    /// Print the follower and the identities as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Another identity of the person: (account, id, the follower there).
type Identity = (String, String, Option<Follower>);

pub fn run(config: &Path, args: &ShowArgs) -> ExitCode {
    let settings = match super::settings_with_account(config, &args.account) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let found = match super::store_or_server(&settings, Role::Viewer) {
        Ok(StoreOrServer::Local(store)) => local(store.as_ref(), args),
        Ok(StoreOrServer::Remote(server)) => remote(&server, args),
        Err(code) => return code,
    };
    match found {
        Ok(Some((f, others))) => {
            print(&args.account, &f, &others, args.json, settings.utc_offset);
            ExitCode::SUCCESS
        }
        Ok(None) => {
            errln!(
                "error: no follower `{}` in account `{}` (未找到该粉丝)",
                args.openid,
                args.account
            );
            ExitCode::from(EXIT_INVALID)
        }
        Err(f) => f.exit(),
    }
}

fn local(
    store: &dyn crate::store::Store,
    args: &ShowArgs,
) -> Result<Option<(Follower, Vec<Identity>)>, Failure> {
    let runtime = |e: crate::store::StoreError| Failure::Runtime(e.to_string());
    let Some(f) = store
        .follower(&args.account, &args.openid)
        .map_err(runtime)?
    else {
        return Ok(None);
    };
    let mut others = Vec::new();
    if let Some(u) = &f.unionid {
        for (account, id) in store.people(u).map_err(runtime)? {
            if (account.as_str(), id.as_str()) != (args.account.as_str(), args.openid.as_str()) {
                let there = store.follower(&account, &id).map_err(runtime)?;
                others.push((account, id, there));
            }
        }
    }
    Ok(Some((f, others)))
}

fn remote(server: &Server, args: &ShowArgs) -> Result<Option<(Follower, Vec<Identity>)>, Failure> {
    let f: Follower = match server.get(
        &["admin", "v1", "followers", &args.account, &args.openid],
        &[],
    ) {
        Ok(f) => f,
        Err(Failure::Refused { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut others = Vec::new();
    if let Some(u) = &f.unionid {
        let person: serde_json::Value = server.get(&["admin", "v1", "people", u], &[])?;
        for i in person["identities"].as_array().into_iter().flatten() {
            let account = i["account"].as_str().unwrap_or_default().to_string();
            let id = i["id"].as_str().unwrap_or_default().to_string();
            if (account.as_str(), id.as_str()) != (args.account.as_str(), args.openid.as_str()) {
                let there = serde_json::from_value(i["follower"].clone()).ok();
                others.push((account, id, there));
            }
        }
    }
    Ok(Some((f, others)))
}

fn print(account: &str, f: &Follower, others: &[Identity], json: bool, zone: UtcOffset) {
    if json {
        let identities: Vec<_> = others
            .iter()
            .map(|(a, id, there)| serde_json::json!({ "account": a, "id": id, "follower": there }))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "account": account, "follower": f, "other_identities": identities,
            }))
            .unwrap_or_default()
        );
        return;
    }
    let time = |t: Option<i64>| t.map_or("-".to_string(), |t| zone.date_time(t));
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    outln!("follower   {} ({account})", f.openid);
    outln!(
        "subscribed {}",
        if f.subscribed {
            "yes 已关注"
        } else {
            "no 未关注"
        }
    );
    outln!(
        "since      {} (first {})",
        time(f.last_subscribed_at),
        time(f.first_subscribed_at)
    );
    if !f.subscribed {
        outln!("left       {}", time(f.unsubscribed_at));
    }
    outln!("channel    {}", or_dash(&f.first_scene));
    outln!("scene      {}", or_dash(&f.subscribe_scene));
    outln!("unionid    {}", or_dash(&f.unionid));
    if let Some(name) = &f.name {
        outln!("name       {name}");
    }
    if let Some(remark) = &f.remark {
        outln!("remark     {remark}");
    }
    let tags: Vec<&str> = f.tags.iter().map(String::as_str).collect();
    outln!(
        "tags       {}",
        if tags.is_empty() {
            "-".into()
        } else {
            tags.join(", ")
        }
    );
    for (k, v) in &f.counters {
        outln!("counter    {k} = {v}");
    }
    for (k, v) in &f.attributes {
        outln!("attribute  {k} = {v}");
    }
    for l in &f.staff {
        outln!(
            "staff      {} (added {}{}{})",
            l.userid,
            zone.date_time(l.added_at),
            if l.state.is_empty() {
                String::new()
            } else {
                format!(", state {}", l.state)
            },
            if l.remark.is_empty() {
                String::new()
            } else {
                format!(", remark {}", l.remark)
            }
        );
    }
    outln!(
        "messages   {} (last {})",
        f.messages_in,
        time(f.last_inbound_at)
    );
    if let Some(m) = &f.synced {
        outln!("synced     {}", zone.date_time(m.at));
    }
    if others.is_empty() {
        outln!("other identities: none known (其他身份：无)");
    } else {
        outln!("other identities (同一人的其他身份):");
        for (a, id, there) in others {
            let state = match there {
                Some(t) if t.subscribed => "subscribed",
                Some(_) => "not subscribed",
                None => "unknown",
            };
            outln!("  {a:<12} {id}  {state}");
        }
    }
}
