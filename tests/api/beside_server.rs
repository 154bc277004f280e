//! The command line beside a running `siyu serve` (sled: the server holds the store): every
//! command goes through the admin API with `SIYU_ADMIN_TOKEN` and prints exactly what it
//! prints on its own, with the same exit code; without a usable token it says what to do
//! and exits 3. The real binaries on both sides, over real HTTP.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use siyu::audit::AuditEntry;
use siyu::follower::Follower;
use siyu::local_time::UtcOffset;
use siyu::outbox::{Effect, NewItem};
use siyu::store::Store;

use crate::helpers::*;

/// Five hours west of UTC: neither China time nor UTC passes by chance.
const ZONE: &str = "-05:00";
/// Enough followers with long openids to fill a pipe's buffer (64 KiB) several times.
const MANY: usize = 2500;

/// `siyu serve` on `config` (port 0: whatever is free), stopped with SIGTERM on drop.
pub(crate) struct Server {
    child: Child,
    /// `SIYU_BIND` for the commands beside it: the port it logged.
    pub(crate) bind: String,
}

impl Server {
    /// Starts it; a store this test closed a moment ago may still be locked by sled's
    /// background threads, so a start refused for that is tried again (see `open_store`).
    pub(crate) fn start(config: &str) -> Server {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(env!("CARGO_BIN_EXE_siyu"))
                .args(["serve", "--config", config])
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .env_remove("SIYU_BIND")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
            let mut seen = String::new();
            let port = lines.by_ref().map_while(Result::ok).find_map(|line| {
                seen.push_str(&line);
                seen.push('\n');
                let rest = line.split("port=").nth(1)?;
                rest.split_whitespace().next()?.parse::<u16>().ok()
            });
            match port {
                Some(port) => {
                    // Keep draining stderr so the server never blocks on a full pipe.
                    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
                    return Server {
                        child,
                        bind: format!("127.0.0.1:{port}"),
                    };
                }
                None => {
                    let _ = child.wait();
                    assert!(
                        seen.contains("locked") && Instant::now() < until,
                        "serve did not start:\n{seen}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// SIGTERM, and waits for the clean exit that releases the store.
    pub(crate) fn stop(mut self) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited {status:?}");
    }
}

impl Drop for Server {
    /// A failing test leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with coupons, campaigns (the `safe` account can send: its API is an address
/// nothing listens on, and nothing is sent to it), and times shown at `ZONE`.
fn config(dir: &Path) -> String {
    std::fs::write(
        dir.join("coupons.toml"),
        "[[batch]]\nname = \"new-guest\"\ntitle = \"新客礼\"\nvalue = \"满 30 减 10\"\nstock = 100\nvalid_days = 7\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("campaigns.toml"),
        r#"
[[campaign]]
name = "comeback"
account = "safe"
audience = "tag:vip AND NOT tag:blocked"
[campaign.message]
text = "好久不见 {openid}"

[[campaign]]
name = "nobody"
account = "safe"
audience = "tag:nobody-has-this"
[campaign.message]
text = "…"

[[campaign]]
name = "later"
account = "safe"
audience = "tag:vip"
start = 2099-01-01T10:00:00+08:00
[campaign.message]
text = "…"
"#,
    )
    .unwrap();
    let path = config_in(dir, &fixtures().join("replies"));
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "mode = \"safe\"\n",
        "mode = \"safe\"\n[account.api]\nsecret = \"app-secret-for-tests\"\napi_base = \"http://127.0.0.1:1\"\n",
        1,
    ) + &format!(
        "\n[coupons]\nfile = \"coupons.toml\"\n\n[campaigns]\nfile = \"campaigns.toml\"\n\n[display]\nutc_offset = \"{ZONE}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Followers (a few with everything the CSV quotes or converts, then many plain ones), two
/// audit entries, a dead letter and a claimed coupon; returns (dead letter id, coupon code,
/// its issue time).
fn seed(dir: &Path, config: &str) -> (u64, String, i64) {
    let settings = siyu::config::Settings::load(Path::new(config)).unwrap();
    let store = open_store(&dir.join("data/siyu.sled"));
    // 2026-12-01 00:00:00 China time.
    let at = 1_796_054_400;
    // (openid, tags, first scene, last message at)
    type Seeded<'a> = (String, Vec<&'a str>, Option<&'a str>, Option<i64>);
    let mut followers: Vec<Seeded> = vec![
        (
            "o_a".into(),
            vec!["vip", "会员"],
            Some("spring,poster"),
            Some(at),
        ),
        (
            "o_b".into(),
            vec!["vip", "blocked"],
            None,
            Some(at - 86_400),
        ),
        ("o_c".into(), vec![], Some("say \"hi\""), None),
    ];
    followers.extend((0..MANY).map(|i| {
        (
            format!("o_follower_with_a_long_openid_{i:05}"),
            vec!["bulk"],
            None,
            Some(at),
        )
    }));
    for (openid, tags, scene, last) in &followers {
        let mut f = Follower::new(openid);
        f.subscribed = true;
        f.tags = tags.iter().map(|t| t.to_string()).collect();
        f.first_scene = scene.map(str::to_string);
        f.last_inbound_at = *last;
        f.messages_in = 3;
        siyu::store::put_follower(&store, "safe", &f).unwrap();
    }
    for (i, who) in ["ops-li", "boss-zhao"].iter().enumerate() {
        store
            .append_audit(&AuditEntry {
                at: at + i as i64,
                who: who.to_string(),
                action: "rules.write".into(),
                target: "extra.toml".into(),
                detail: "+1 −0 lines".into(),
            })
            .unwrap();
    }
    let now_ms = siyu::outbox::now_ms();
    let item = NewItem {
        effect: Effect::Tag {
            openid: "o_a".into(),
            tag: "vip".into(),
            add: true,
        },
        origin: "rule:make-vip".into(),
        not_before_ms: now_ms,
    };
    let ids = store.enqueue("safe", vec![item], now_ms).unwrap();
    let queued = store.outbox_page(None, 10).unwrap();
    store
        .outbox_bury(&queued[0], "43004 the follower has unsubscribed", now_ms)
        .unwrap();
    let batch = settings.coupon_batch("new-guest").unwrap();
    let coupon = store
        .claim_coupon(batch, "safe", "o_a", now(), None)
        .unwrap()
        .unwrap();
    store.flush().unwrap();
    (ids[0], coupon.code, coupon.issued_at)
}

/// Runs `siyu` with `args` (after the subcommand's `--config`).
fn run(config: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut all = vec![args[0], "--config", config];
    all.extend_from_slice(&args[1..]);
    siyu_env(&all, env)
}

/// Every reading command: beside the server, then on its own after the server stopped,
/// prints the same (stdout, stderr and exit code). Then the writing ones through the server,
/// and what they wrote, read back on their own.
#[test]
fn commands_beside_a_running_server_print_what_they_print_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (dead, code, issued_at) = seed(dir.path(), &config);
    let dead = dead.to_string();
    let reading: &[(&str, Vec<&str>)] = &[
        ("count everyone", vec!["followers", "--account", "safe"]),
        (
            "count a segment",
            vec![
                "followers",
                "--account",
                "safe",
                "--where",
                "tag:vip AND NOT tag:blocked",
            ],
        ),
        (
            "list a segment",
            vec![
                "followers",
                "--account",
                "safe",
                "--where",
                "tag:vip",
                "--list",
            ],
        ),
        (
            "the whole CSV",
            vec!["followers", "--account", "safe", "--csv"],
        ),
        (
            "a CSV without the byte-order mark",
            vec![
                "followers",
                "--account",
                "safe",
                "--where",
                "NOT tag:bulk",
                "--csv",
                "--no-bom",
            ],
        ),
        (
            "refused: a bad segment",
            vec!["followers", "--account", "safe", "--where", "tag:"],
        ),
        (
            "refused: an unknown account",
            vec!["followers", "--account", "nope"],
        ),
        ("audit", vec!["audit"]),
        ("audit, one entry", vec!["audit", "--limit", "1"]),
        ("outbox", vec!["outbox"]),
        ("outbox of one account", vec!["outbox", "--account", "safe"]),
        ("coupon stats", vec!["coupon", "stats", "new-guest"]),
        ("refused: unknown batch", vec!["coupon", "stats", "nope"]),
        (
            "refused: unknown code",
            vec!["coupon", "redeem", "NOPE2345"],
        ),
        (
            "refused: no such dead letter",
            vec!["outbox", "retry", "424242"],
        ),
        ("campaign list", vec!["campaign", "list"]),
        ("campaign plan", vec!["campaign", "plan", "comeback"]),
        (
            "refused: the report of a campaign never started",
            vec!["campaign", "status", "comeback"],
        ),
        (
            "refused: pausing a campaign never started",
            vec!["campaign", "pause", "comeback"],
        ),
        (
            "refused: an unknown campaign",
            vec!["campaign", "status", "nope"],
        ),
        (
            "a dry run",
            vec![
                "simulate",
                "--account",
                "safe",
                "--from",
                "o_a",
                "--seed",
                "1",
                "我要优惠券",
            ],
        ),
    ];
    let server = Server::start(&config);
    let env = [
        ("SIYU_ADMIN_TOKEN", ADMIN),
        ("SIYU_BIND", server.bind.as_str()),
    ];
    let beside: Vec<_> = reading
        .iter()
        .map(|(_, args)| run(&config, args, &env))
        .collect();
    server.stop();
    for ((case, args), remote) in reading.iter().zip(beside) {
        let alone = run(&config, args, &[]);
        assert_eq!(
            remote, alone,
            "{case}: {args:?}\n(beside the server, then alone)"
        );
    }
    // Not only equal, but what was seeded (so that both paths were not equally wrong).
    let (_, count, _) = run(&config, &reading[0].1, &[]);
    assert_eq!(count.trim(), (MANY + 3).to_string());
    let (_, csv, _) = run(&config, &reading[4].1, &[]);
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        [
            "openid,subscribed,first_scene,tags,messages_in,last_message_at",
            "o_a,true,\"spring,poster\",vip 会员,3,2026-11-30 11:00:00",
            "o_b,true,,blocked vip,3,2026-11-29 11:00:00",
            "o_c,true,\"say \"\"hi\"\"\",,3,",
        ]
    );
    let (_, audit, _) = run(&config, &["audit"], &[]);
    assert!(
        audit.starts_with("2026-11-30 11:00:01  boss-zhao"),
        "{audit}"
    );
    let (_, outbox, _) = run(&config, &["outbox"], &[]);
    assert!(
        outbox.contains("43004 the follower has unsubscribed"),
        "{outbox}"
    );
    let (_, stats, _) = run(&config, &["coupon", "stats", "new-guest"], &[]);
    assert_eq!(
        stats.trim(),
        "new-guest: issued 1, redeemed 0, expired 0, left 99"
    );
    let (_, list, _) = run(&config, &["campaign", "list"], &[]);
    assert!(list.contains("starts 2098-12-31 21:00:00"), "{list}");

    // Writing through the server.
    let server = Server::start(&config);
    let env = [
        ("SIYU_ADMIN_TOKEN", ADMIN),
        ("SIYU_BIND", server.bind.as_str()),
    ];
    let zone: UtcOffset = ZONE.parse().unwrap();
    let (status, out, err) = run(&config, &["coupon", "redeem", &code], &env);
    assert_eq!(status, 0, "{err}");
    assert_eq!(
        out.trim(),
        format!(
            "redeemed {code} (new-guest) of safe/o_a, issued at {}",
            zone.date_time(issued_at)
        )
    );
    let again_beside = run(&config, &["coupon", "redeem", &code], &env);
    assert_eq!(again_beside.0, 1, "{again_beside:?}");
    assert!(
        again_beside.2.contains("already redeemed at"),
        "{again_beside:?}"
    );
    let define = [
        "campaign",
        "define",
        "flash",
        "--account",
        "safe",
        "--audience",
        "tag:vip",
        "--text",
        "今晚秒杀",
    ];
    let (status, out, err) = run(&config, &define, &env);
    assert_eq!(status, 0, "{err}");
    assert!(
        out.starts_with("campaign flash defined (start it with"),
        "{out}"
    );
    let define_again_beside = run(&config, &define, &env);
    assert_eq!(define_again_beside.0, 1, "{define_again_beside:?}");
    let (status, out, err) = run(&config, &["outbox", "retry", &dead], &env);
    assert_eq!(status, 0, "{err}");
    assert_eq!(out.trim(), format!("requeued #{dead}: add tag vip to o_a"));
    let commit = [
        "simulate",
        "--account",
        "plain",
        "--from",
        "o_sim",
        "--seed",
        "1",
        "--commit",
        "我要优惠券",
    ];
    let (status, out, err) = run(&config, &commit, &env);
    assert_eq!(status, 0, "{err}");
    assert!(
        out.contains("领券成功，第 1 次") && out.ends_with("(committed to the store)\n"),
        "{out}"
    );
    // A campaign nobody is in: started on the server, done by its runner, and the
    // report printed as `campaign status` prints it.
    let (status, started, err) = run(&config, &["campaign", "start", "nobody"], &env);
    assert_eq!(status, 0, "{err}");
    server.stop();

    // What they wrote, read back alone; the refusals are worded alike.
    let again_alone = run(&config, &["coupon", "redeem", &code], &[]);
    assert_eq!(again_beside, again_alone);
    assert_eq!(define_again_beside, run(&config, &define, &[]));
    let (_, list, _) = run(&config, &["campaign", "list"], &[]);
    assert!(list.contains("flash"), "{list}");
    let (_, out, _) = run(
        &config,
        &[
            "simulate",
            "--account",
            "plain",
            "--from",
            "o_sim",
            "--seed",
            "1",
            "我要优惠券",
        ],
        &[],
    );
    assert!(
        out.contains("领券成功，第 2 次"),
        "the commit was kept: {out}"
    );
    let (_, status_alone, _) = run(&config, &["campaign", "status", "nobody"], &[]);
    assert_eq!(
        started,
        "campaign nobody running (account safe, audience: tag:nobody-has-this)\n".to_string()
            + &status_alone
    );
    let (_, audit, _) = run(&config, &["audit"], &[]);
    for action in [
        "coupon.redeem",
        "campaign.define",
        "outbox.retry",
        "simulate.commit",
        "campaign.start",
    ] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains("boss-zhao") && l.contains(action)),
            "{action} audited under the token's name:\n{audit}"
        );
    }
}

/// Without a usable token, or a way to the server, a command says what to do (in Chinese
/// and English) and exits 3, printing nothing on stdout.
#[test]
fn without_a_usable_token_commands_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = Server::start(&config);
    let bind = server.bind.as_str();
    // (case, arguments, environment, what the message must say)
    type Case<'a> = (
        &'a str,
        Vec<&'a str>,
        Vec<(&'a str, &'a str)>,
        &'a [&'a str],
    );
    let cases: &[Case] = &[
        (
            "no token: followers needs a viewer",
            vec!["followers", "--account", "safe"],
            vec![("SIYU_BIND", bind)],
            &[
                "服务正在运行并占用存储",
                "set SIYU_ADMIN_TOKEN",
                "role viewer",
                "stop `siyu serve`",
            ],
        ),
        (
            "no token: audit needs an admin",
            vec!["audit"],
            vec![("SIYU_BIND", bind)],
            &["SIYU_ADMIN_TOKEN", "role admin"],
        ),
        (
            "no token: a redemption needs an operator",
            vec!["coupon", "redeem", "X2345678"],
            vec![("SIYU_BIND", bind)],
            &["SIYU_ADMIN_TOKEN", "role operator"],
        ),
        (
            "a viewer cannot read the audit trail",
            vec!["audit"],
            vec![("SIYU_BIND", bind), ("SIYU_ADMIN_TOKEN", VIEWER)],
            &["too low a role", "needs admin", "角色不足"],
        ),
        (
            "a viewer cannot requeue",
            vec!["outbox", "retry", "1"],
            vec![("SIYU_BIND", bind), ("SIYU_ADMIN_TOKEN", VIEWER)],
            &["needs operator"],
        ),
        (
            "a viewer cannot commit a simulation",
            vec!["simulate", "--account", "plain", "--commit", "你好"],
            vec![("SIYU_BIND", bind), ("SIYU_ADMIN_TOKEN", VIEWER)],
            &["needs operator"],
        ),
        (
            "a token the server does not know",
            vec!["followers", "--account", "safe"],
            vec![
                ("SIYU_BIND", bind),
                ("SIYU_ADMIN_TOKEN", "not-a-known-secret-0000"),
            ],
            &["does not know the token", "服务不认识"],
        ),
        (
            "no address: the config binds port 0",
            vec!["followers", "--account", "safe"],
            vec![("SIYU_ADMIN_TOKEN", ADMIN)],
            &["SIYU_BIND=host:port", "没有固定端口"],
        ),
    ];
    for (case, args, env, want) in cases {
        let (code, out, err) = run(&config, args, env);
        assert_eq!((code, out.as_str()), (3, ""), "{case}: {err}");
        for w in *want {
            assert!(err.contains(w), "{case}: missing {w:?} in:\n{err}");
        }
    }
    // A viewer's token is enough to read.
    let (code, out, err) = run(
        &config,
        &["followers", "--account", "safe"],
        &[("SIYU_BIND", bind), ("SIYU_ADMIN_TOKEN", VIEWER)],
    );
    assert_eq!((code, out.trim()), (0, "0"), "{err}");
    server.stop();
    // The store held, and nobody answering where the config says: still a clear word.
    let held = open_store(&dir.path().join("data/siyu.sled"));
    let (code, out, err) = run(
        &config,
        &["followers", "--account", "safe"],
        &[("SIYU_BIND", "127.0.0.1:1"), ("SIYU_ADMIN_TOKEN", ADMIN)],
    );
    assert_eq!((code, out.as_str()), (3, ""), "{err}");
    assert!(
        err.contains("no `siyu serve` answers at http://127.0.0.1:1/"),
        "{err}"
    );
    drop(held);
}

/// A listing streamed from the server stops quietly when the reader closes the pipe.
#[test]
fn a_closed_pipe_ends_a_streamed_listing_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    seed(dir.path(), &config);
    let server = Server::start(&config);
    let env = [
        ("SIYU_ADMIN_TOKEN", ADMIN),
        ("SIYU_BIND", server.bind.as_str()),
    ];
    for (args, keep) in [
        (vec!["followers", "--account", "safe", "--csv"], 300),
        (vec!["followers", "--account", "safe", "--list"], 0),
    ] {
        let mut all = vec![args[0], "--config", &config];
        all.extend_from_slice(&args[1..]);
        let (code, read, err) = siyu_closing_stdout_env(&all, keep, &env);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(read.len() <= keep);
        assert!(err.trim().is_empty(), "{args:?}: {err}");
    }
    server.stop();
}
