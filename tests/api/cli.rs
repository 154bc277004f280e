//! The `siyu` binary: `check` on good and broken rule folders, `simulate` against a real
//! store, the shipped config and rules, and the Unix-tool manners of every subcommand (exit
//! codes, a closed pipe, local times, CSV for Excel).

use std::path::Path;

use crate::helpers::*;

#[test]
fn check_accepts_the_shipped_config_and_rules() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let (code, out, err) = siyu(&["check", "--config", shipped.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("account demo"), "{out}");
    assert!(out.contains("rules"), "{out}");
}

#[test]
fn check_lists_every_rule_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &fixtures().join("bad_replies"));
    let (code, _out, err) = siyu(&["check", "--config", &config]);
    assert_eq!(code, 1, "{err}");
    for want in [
        "b_broken.toml:5:", // undefined intent
        "greting",
        "b_broken.toml:9:",  // duplicate name
        "a_ok.toml:5",       // ...pointing at the first definition
        "b_broken.toml:15:", // bad regex
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn serve_refuses_to_start_on_broken_rules() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &fixtures().join("bad_replies"));
    let (code, _out, err) = siyu(&["serve", "--config", &config]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("b_broken.toml:5:"), "{err}");
}

#[test]
fn simulate_dry_runs_and_commits_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &fixtures().join("replies"));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "simulate",
            "--config",
            &config,
            "--account",
            "safe",
            "--from",
            "o_sim",
        ];
        args.extend_from_slice(extra);
        siyu(&args)
    };
    let (code, out, err) = run(&["我要优惠券"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rules     coupon"), "{out}");
    assert!(out.contains("领券成功，第 1 次"), "{out}");
    assert!(out.contains("add tag coupon-seeker"), "{out}");
    assert!(out.contains("dry run"), "{out}");
    // A dry run wrote nothing: committing now is still the first time.
    let (code, out, _) = run(&["--commit", "我要优惠券"]);
    assert_eq!(code, 0);
    assert!(out.contains("领券成功，第 1 次"), "{out}");
    let (_, out, _) = run(&["我要优惠券"]);
    assert!(
        out.contains("领券成功，第 2 次"),
        "state was committed: {out}"
    );

    let (code, out, _) = run(&["--event", "subscribe", "--scene", "spring-poster"]);
    assert_eq!(code, 0);
    assert!(out.contains("rules     welcome-spring"), "{out}");
    let (code, out, _) = run(&["--event", "click", "--key", "MENU_COUPON"]);
    assert_eq!(code, 0);
    assert!(out.contains("news: 本周优惠"), "{out}");
    let (code, _, err) = run(&["--event", "click"]);
    assert_eq!(code, 1, "click without --key is refused");
    assert!(err.contains("--key"), "{err}");
}

/// The real binary: serves, answers, takes an admin write, and on SIGTERM finishes, flushes
/// and exits 0; the audit trail then shows the write.
#[tokio::test]
async fn serve_shuts_down_gracefully_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &fixtures().join("replies"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_siyu"))
        .args(["serve", "--config", &config])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port: u16 = loop {
        let line = lines.next().expect("serve logs its port").unwrap();
        if let Some(rest) = line.split("port=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    let logs = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let (query, body) = PLAIN.request(&PLAIN.text("o_term", "优惠券", 1), now(), "5");
    let r = client
        .post(format!("{base}/wx/plain?{query}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .put(format!("{base}/admin/v1/rules/extra.toml"))
        .header("authorization", format!("Bearer {OPERATOR}"))
        .body("[[rule]]\nname = \"extra\"\nkeywords = [\"额外\"]\nreply = \"extra\"\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let logs = logs.join().unwrap().join("\n");
    assert!(logs.contains("callback"), "{logs}");
    assert!(
        !logs.contains("siyutoken") && !logs.contains(OPERATOR),
        "secrets never logged"
    );

    let (code, out, err) = siyu(&["audit", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ops-li") && out.contains("rules.write") && out.contains("extra.toml"),
        "{out}"
    );
    let store = open_store(&dir.path().join("data/siyu.sled"));
    use siyu::store::Store;
    let f = store
        .follower("plain", "o_term")
        .unwrap()
        .expect("flushed before exit");
    assert_eq!(f.counters.get("coupon_asks"), Some(&1));
}

/// `siyu qrcode` against the fake WeChat API: temporary and permanent codes, and the access
/// token shared across runs through the store (one fetch for two runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qrcode_creates_channel_codes_with_one_shared_token() {
    let fake = siyu::fake_wechat::FakeWechat::start("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &fixtures().join("replies"));
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "mode = \"safe\"\n",
        &format!(
            "mode = \"safe\"\n[account.api]\nsecret = \"app-secret-for-tests\"\napi_base = \"{}\"\n",
            fake.base_url()
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            siyu(&args)
        })
    };
    let base = |extra: &[&str]| {
        let mut v: Vec<String> = ["qrcode", "--config", &config, "--scene", "spring-poster"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let (code, out, err) = run(base(&["--account", "safe"])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("expires   in 2592000 s"), "{out}");
    assert!(
        out.contains("image     https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket="),
        "{out}"
    );
    let (code, out, err) = run(base(&["--account", "safe", "--permanent"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("never (permanent)"), "{out}");

    assert_eq!(
        fake.calls_to("/cgi-bin/token"),
        1,
        "the token is kept in the store"
    );
    assert_eq!(fake.calls_to("/cgi-bin/qrcode/create"), 2);
    let bodies = format!("{:?}", fake.calls());
    assert!(
        bodies.contains("QR_STR_SCENE") && bodies.contains("QR_LIMIT_STR_SCENE"),
        "{bodies}"
    );

    // Drawn for print: a PNG a scanner reads as the code's url. A bad size is refused
    // before any code is made.
    let (code, _, err) = run(base(&[
        "--account",
        "safe",
        "--png",
        "x.png",
        "--module-px",
        "0",
    ]))
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("--module-px must be 1 to 64"), "{err}");
    assert_eq!(fake.calls_to("/cgi-bin/qrcode/create"), 2);
    let png = dir.path().join("poster.png");
    let png_arg = png.display().to_string();
    let (code, out, err) = run(base(&["--account", "safe", "--png", &png_arg]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("png       {png_arg}")), "{out}");
    let url = out
        .lines()
        .find_map(|l| l.strip_prefix("url       "))
        .expect("the url line");
    assert_eq!(read_qr(&std::fs::read(&png).unwrap()), url);
    let (code, _, err) = run(base(&["--account", "plain"])).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("no [account.api]"), "{err}");
    fake.stop().await;
}

/// The text of the one QR code in a PNG, read by a decoder independent of siyu's encoder.
fn read_qr(bytes: &[u8]) -> String {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one code");
    grids[0].decode().unwrap().1
}

#[test]
fn outbox_lists_the_queue_and_requeues_dead_letters() {
    use siyu::outbox::{Effect, NewItem};
    use siyu::store::Store;

    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &fixtures().join("replies"));
    let (code, out, err) = siyu(&["outbox", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("the outbox is empty"), "{out}");

    let now = siyu::outbox::now_ms();
    let ids = {
        let store = open_store(&dir.path().join("data/siyu.sled"));
        let item = |openid: &str| NewItem {
            effect: Effect::Tag {
                openid: openid.into(),
                tag: "vip".into(),
                add: true,
            },
            origin: "rule:make-vip".into(),
            not_before_ms: now,
        };
        let ids = store
            .enqueue("safe", vec![item("o_a"), item("o_b"), item("o_c")], now)
            .unwrap();
        let queued = store.outbox_page(None, 10).unwrap();
        let mut retrying = queued[1].clone();
        retrying.attempts = 1;
        retrying.last_error = Some("-1 WeChat system busy".into());
        store.outbox_retry_later(&retrying).unwrap();
        store
            .outbox_bury(&queued[2], "43004 the follower has unsubscribed", now)
            .unwrap();
        store.flush().unwrap();
        ids
    };
    let (code, out, err) = siyu(&["outbox", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    let row = out.lines().find(|l| l.starts_with("safe")).expect(&out);
    let counts: Vec<&str> = row.split_whitespace().take(4).collect();
    assert_eq!(counts, ["safe", "1", "1", "1"], "{out}");
    assert!(out.contains("-1 WeChat system busy"), "{out}");
    assert!(out.contains("add tag vip to o_c"), "{out}");
    assert!(out.contains("43004 the follower has unsubscribed"), "{out}");
    let china_today = siyu::local_time::UtcOffset::CHINA.date(now / 1000);
    assert!(
        out.contains(&format!("dead since {china_today} ")),
        "a local date-time, China time by default: {out}"
    );

    let dead = ids[2].to_string();
    let (code, out, err) = siyu(&["outbox", "--config", &config, "retry", &dead]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("requeued #{dead}")), "{out}");
    let (code, _, err) = siyu(&["outbox", "--config", &config, "retry", &dead]);
    assert_eq!(code, 1, "not dead any more");
    assert!(err.contains(&format!("no dead letter #{dead}")), "{err}");
    let (_, out, _) = siyu(&["outbox", "--config", &config, "--account", "safe"]);
    let row = out.lines().find(|l| l.starts_with("safe")).expect(&out);
    let counts: Vec<&str> = row.split_whitespace().take(4).collect();
    assert_eq!(counts, ["safe", "2", "1", "0"], "{out}");
    let (code, _, err) = siyu(&["outbox", "--config", &config, "--account", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no account `nope`"), "{err}");
}

#[test]
fn followers_where_counts_lists_and_exports_a_segment() {
    use siyu::follower::Follower;
    use siyu::store::Store;

    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &fixtures().join("replies"));
    {
        let store = open_store(&dir.path().join("data/siyu.sled"));
        for (openid, tags, orders) in [
            ("o_a", vec!["vip"], 5),
            ("o_b", vec!["vip", "blocked"], 9),
            ("o_c", vec![], 1),
            ("o_d", vec!["vip"], 0),
        ] {
            let mut f = Follower::new(openid);
            f.subscribed = true;
            f.tags = tags.iter().map(|t| t.to_string()).collect();
            f.counters.insert("orders".into(), orders);
            siyu::store::put_follower(&store, "safe", &f).unwrap();
        }
        store.flush().unwrap();
    }
    let run = |extra: &[&str]| {
        let mut args = vec!["followers", "--config", &config, "--account", "safe"];
        args.extend_from_slice(extra);
        siyu(&args)
    };
    let (code, out, err) = run(&[]);
    assert_eq!((code, out.trim()), (0, "4"), "{err}");
    let segment = "tag:vip AND NOT tag:blocked AND counter.orders >= 1";
    let (code, out, err) = run(&["--where", segment]);
    assert_eq!((code, out.trim()), (0, "1"), "{err}");
    let (_, out, _) = run(&["--where", "tag:vip", "--list"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["o_a", "o_b", "o_d"]);
    let (_, out, _) = run(&["--where", "counter.orders < 1 OR tag:blocked", "--csv"]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(
        rows[0],
        "\u{feff}openid,subscribed,first_scene,tags,messages_in,last_message_at"
    );
    assert_eq!(rows[1..], ["o_b,true,,blocked vip,0,", "o_d,true,,vip,0,"]);

    let (code, _, err) = run(&["--where", "tag:vip AND counter.orders >= lots"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("column 31: `lots` is not a whole number"),
        "{err}"
    );
}

/// Followers straight into the store of `dir` (as `config_in` lays it out): (openid, tags,
/// last message at).
fn store_followers(dir: &Path, followers: &[(String, Vec<&str>, Option<i64>)]) {
    use siyu::follower::Follower;
    use siyu::store::Store;
    let store = open_store(&dir.join("data/siyu.sled"));
    for (openid, tags, last) in followers {
        let mut f = Follower::new(openid);
        f.subscribed = true;
        f.tags = tags.iter().map(|t| t.to_string()).collect();
        f.last_inbound_at = *last;
        siyu::store::put_follower(&store, "safe", &f).unwrap();
    }
    store.flush().unwrap();
}

/// `siyu … | head` closes the pipe early: every command stops quietly with its own exit
/// code (here 0), never "failed printing to stdout: Broken pipe" and exit 101.
#[test]
fn a_closed_pipe_ends_commands_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &fixtures().join("replies"));
    // Long enough to fill the pipe's buffer (64 KiB) many times over.
    let many: Vec<(String, Vec<&str>, Option<i64>)> = (0..6000)
        .map(|i| {
            (
                format!("o_follower_with_a_long_openid_{i:05}"),
                vec!["vip"],
                Some(1),
            )
        })
        .collect();
    store_followers(dir.path(), &many);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let shipped = shipped.to_str().unwrap();
    let followers = ["followers", "--config", &config, "--account", "safe"];
    let cases: &[(&str, Vec<&str>, usize)] = &[
        (
            "check, closed before it writes",
            vec!["check", "--config", shipped],
            0,
        ),
        (
            "check, after a few bytes",
            vec!["check", "--config", shipped],
            10,
        ),
        ("audit", vec!["audit", "--config", &config], 0),
        ("outbox", vec!["outbox", "--config", &config], 0),
        (
            "followers --list",
            [&followers[..], &["--list"]].concat(),
            300,
        ),
        (
            "followers --csv",
            [&followers[..], &["--csv"]].concat(),
            300,
        ),
        ("help", vec!["--help"], 5),
    ];
    for (case, args, keep) in cases {
        let (code, read, err) = siyu_closing_stdout(args, *keep);
        assert_eq!(code, 0, "{case}: {err}");
        assert!(read.len() <= *keep, "{case}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe") && err.trim().is_empty(),
            "{case}: {err}"
        );
    }
}

/// One exit-code table for every subcommand: 0 done, 1 the input was refused, 2 usage,
/// 3 a runtime failure.
#[test]
fn exit_codes_mean_the_same_in_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &fixtures().join("replies"));
    // An API base nothing listens on: a scene refused before sending never gets there.
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "mode = \"safe\"\n",
        "mode = \"safe\"\n[account.api]\nsecret = \"app-secret-for-tests\"\napi_base = \"http://127.0.0.1:1\"\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let c = config.as_str();
    let long_scene = "s".repeat(65);
    let scene_64 = "s".repeat(64);
    let cases: &[(&str, Vec<&str>, i32)] = &[
        ("help", vec!["--help"], 0),
        ("a good check", vec!["check", "--config", c], 0),
        ("usage: unknown subcommand", vec!["nope"], 2),
        (
            "usage: unknown flag",
            vec!["check", "--config", c, "--nope"],
            2,
        ),
        (
            "usage: missing --account",
            vec!["followers", "--config", c],
            2,
        ),
        (
            "usage: --no-bom without --csv",
            vec!["followers", "--config", c, "--account", "safe", "--no-bom"],
            2,
        ),
        (
            "usage: outbox retry of a non-number",
            vec!["outbox", "--config", c, "retry", "x"],
            2,
        ),
        (
            "refused: no config file",
            vec!["check", "--config", "/nonexistent/siyu.toml"],
            1,
        ),
        (
            "refused: unknown account",
            vec!["followers", "--config", c, "--account", "nope"],
            1,
        ),
        (
            "refused: a bad segment",
            vec![
                "followers",
                "--config",
                c,
                "--account",
                "safe",
                "--where",
                "tag:",
            ],
            1,
        ),
        (
            "refused: a QR scene over 64 characters",
            vec![
                "qrcode",
                "--config",
                c,
                "--account",
                "safe",
                "--scene",
                &long_scene,
            ],
            1,
        ),
        (
            "refused: a temporary QR code past 30 days",
            vec![
                "qrcode",
                "--config",
                c,
                "--account",
                "safe",
                "--scene",
                "x",
                "--expire-seconds",
                "2592001",
            ],
            1,
        ),
        (
            "runtime: 64 characters is allowed, and WeChat is unreachable",
            vec![
                "qrcode",
                "--config",
                c,
                "--account",
                "safe",
                "--scene",
                &scene_64,
            ],
            3,
        ),
        (
            "refused: unknown campaign",
            vec!["campaign", "--config", c, "status", "nope"],
            1,
        ),
        (
            "refused: unknown coupon code",
            vec!["coupon", "--config", c, "redeem", "NOPE1234"],
            1,
        ),
        (
            "refused: no such dead letter",
            vec!["outbox", "--config", c, "retry", "42"],
            1,
        ),
    ];
    for (case, args, want) in cases {
        let (code, out, err) = siyu(args);
        assert_eq!(
            code, *want,
            "{case}: {args:?}\nstdout: {out}\nstderr: {err}"
        );
    }
    // The store held by another process (as by a running `siyu serve`): a runtime failure.
    let held = open_store(&dir.path().join("data/siyu.sled"));
    for args in [
        vec!["audit", "--config", c],
        vec!["followers", "--config", c, "--account", "safe"],
        vec!["outbox", "--config", c],
    ] {
        let (code, _, err) = siyu(&args);
        assert_eq!(code, 3, "store in use: {args:?}: {err}");
    }
    drop(held);
}

/// People read times in the configured offset: audit trail, CSV, outbox dead letters; the
/// CSV opens with a UTF-8 byte-order mark for Excel unless `--no-bom`.
#[test]
fn listings_show_local_times_and_the_csv_is_for_excel() {
    use siyu::audit::AuditEntry;
    use siyu::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &fixtures().join("replies"));
    // Five hours west of UTC, so neither China time nor UTC passes by chance.
    let text = std::fs::read_to_string(&config).unwrap() + "\n[display]\nutc_offset = \"-05:00\"\n";
    std::fs::write(&config, text).unwrap();
    // 2026-12-01 00:00:00 in China is 2026-11-30 11:00:00 at -05:00.
    let at = 1_796_054_400;
    store_followers(
        dir.path(),
        &[
            ("o_cn".to_string(), vec!["会员", "vip"], Some(at)),
            ("o_never".to_string(), vec![], None),
        ],
    );
    {
        let store = open_store(&dir.path().join("data/siyu.sled"));
        store
            .append_audit(&AuditEntry {
                at,
                who: "ops-li".into(),
                action: "rules.write".into(),
                target: "extra.toml".into(),
                detail: "+1 −0 lines".into(),
            })
            .unwrap();
        store.flush().unwrap();
    }
    let (code, out, err) = siyu(&["audit", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("2026-11-30 11:00:00  ops-li"), "{out}");

    let csv = |extra: &[&str]| {
        let mut args = vec![
            "followers",
            "--config",
            &config,
            "--account",
            "safe",
            "--csv",
        ];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_siyu"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let with_bom = csv(&[]);
    assert_eq!(with_bom[..3], [0xEF, 0xBB, 0xBF], "UTF-8 byte-order mark");
    let text = std::str::from_utf8(&with_bom[3..]).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "openid,subscribed,first_scene,tags,messages_in,last_message_at",
            "o_cn,true,,vip 会员,0,2026-11-30 11:00:00",
            "o_never,true,,,0,",
        ]
    );
    let without = csv(&["--no-bom"]);
    assert_eq!(
        without,
        text.as_bytes(),
        "--no-bom: the same, without the mark"
    );
}
