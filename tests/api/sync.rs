//! `siyu followers sync` against the fake WeChat API over real HTTP: every follower
//! imported once, the merge rules, a second run that changes nothing, the sweep of
//! followers WeChat no longer lists, a run killed with SIGKILL or stopped with Ctrl-C that
//! goes on where it stopped, the server running it while it holds the store, and the
//! refusals. The real binary, started from the config's folder with relative paths.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use siyu::fake_wechat::{
    ContactsRequest, CorpTagSpec, FakeWechat, FakeWechatHandle, PopulationRequest,
};
use siyu::follower::Follower;
use siyu::store::Store;

use crate::helpers::*;

const BATCHGET: &str = "/cgi-bin/user/info/batchget";

/// `config.toml` in `dir` whose `safe` account talks to the fake, unpaced; its store is
/// `data/siyu.sled` beside it (a relative path).
fn config(dir: &Path, fake: &FakeWechatHandle, rate: f64) -> String {
    let config = config_in(dir, &fixtures().join("replies"));
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "mode = \"safe\"\n",
        &format!(
            "mode = \"safe\"\n[account.api]\nsecret = \"app-secret-for-tests\"\napi_base = \"{}\"\nrate_per_sec = {rate:.1}\ntimeout_ms = 2000\n",
            fake.base_url()
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn sync_command(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut args = vec!["followers", "sync", "--account", "safe"];
    if !extra.contains(&"--config") {
        args.extend(["--config", "config.toml"]);
    }
    args.extend_from_slice(extra);
    let mut c = siyu_command(&args, env);
    c.current_dir(dir);
    c
}

/// Runs a sync to its end: (exit code, the run as JSON, stderr).
async fn sync(dir: &Path, extra: &[&str]) -> (i32, Value, String) {
    sync_env(dir, extra, &[]).await
}

async fn sync_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
    let dir = dir.to_path_buf();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut args: Vec<&str> = vec!["--json"];
        args.extend(extra.iter().map(String::as_str));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = sync_command(&dir, &args, &env).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_str(&stdout).unwrap_or(Value::String(stdout));
        (out.status.code().unwrap_or(-1), json, stderr)
    })
    .await
    .unwrap()
}

fn counts(run: &Value) -> [u64; 5] {
    ["new", "updated", "unchanged", "unsubscribed", "failed"].map(|k| {
        run["counts"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {run}"))
    })
}

fn followers(dir: &Path) -> Vec<Follower> {
    let store = open_store(&dir.join("data/siyu.sled"));
    let mut all = Vec::new();
    store
        .for_each_follower("safe", &mut |f| all.push(f))
        .unwrap();
    all
}

fn population(count: u64, tags: &[(&str, u64)]) -> PopulationRequest {
    let mut p = PopulationRequest::new(count, 7);
    p.tags = tags.iter().map(|(t, n)| (t.to_string(), *n)).collect();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_imports_every_follower_merges_and_sweeps() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.populate(population(2500, &[("老客", 10)])).unwrap();
    let listed = fake.followers(None, 0, 2500);
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &fake, 0.0);
    // A follower only siyu knows (written by a callback long ago): not on WeChat's list.
    {
        let store = open_store(&dir.path().join("data/siyu.sled"));
        let mut f = Follower::new("o_siyu_only");
        f.subscribed = true;
        f.last_subscribed_at = Some(1_600_000_000);
        siyu::store::put_follower(&store, "safe", &f).unwrap();
    }

    let (code, run, err) = sync(dir.path(), &[]).await;
    assert_eq!(code, 0, "{run}\n{err}");
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(run["total"], 2500);
    // The follower siyu alone knew is marked unsubscribed by the sweep.
    assert_eq!(counts(&run), [2500, 0, 0, 1, 0], "{run}");
    assert_eq!(
        fake.calls_to(BATCHGET),
        25,
        "2,500 followers in calls of 100"
    );
    let all = followers(dir.path());
    assert_eq!(all.len(), 2501);
    let by_openid = |o: &str| all.iter().find(|f| f.openid == o).cloned().unwrap();
    let first = by_openid(&listed.openids[0]);
    assert!(first.subscribed);
    assert_eq!(first.unionid.as_deref(), Some(listed.unionids[0].as_str()));
    assert!(first.has_tag("老客"), "index 0 carries the tag: {first:?}");
    assert!(first.subscribe_scene.is_some() && first.first_subscribed_at.is_some());
    assert!(!by_openid(&listed.openids[1]).has_tag("老客"));
    assert_eq!(all.iter().filter(|f| f.has_tag("老客")).count(), 250);
    let gone = by_openid("o_siyu_only");
    assert!(!gone.subscribed && gone.unsubscribed_at.is_some());

    // Again: nothing changes.
    let (code, run, err) = sync(dir.path(), &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(counts(&run), [0, 0, 2500, 0, 0], "{run}");

    // Since: siyu tagged follower 10 and untagged follower 20 (both 老客 in WeChat);
    // WeChat added a tag to every 7th follower and lost five followers.
    {
        let store = open_store(&dir.path().join("data/siyu.sled"));
        store
            .update_follower("safe", &listed.openids[10], &mut |f| {
                f.tags.insert("coupon-hunter".into());
            })
            .unwrap()
            .unwrap();
        store
            .update_follower("safe", &listed.openids[20], &mut |f| {
                f.tags.remove("老客");
            })
            .unwrap()
            .unwrap();
    }
    fake.populate(population(2500, &[("老客", 10), ("新客", 7)]))
        .unwrap();
    let left: Vec<String> = listed.openids[2491..2496].to_vec();
    fake.unsubscribe(None, &left).unwrap();
    let (code, run, err) = sync(dir.path(), &[]).await;
    assert_eq!(code, 0, "{err}");
    let still_listed = |i: &usize| !(2491..2496).contains(i);
    let sevens = (0..2500).filter(|i| i % 7 == 0 && still_listed(i)).count() as u64;
    assert_eq!(counts(&run), [0, sevens, 2495 - sevens, 5, 0], "{run}");
    let all = followers(dir.path());
    let by_openid = |o: &str| all.iter().find(|f| f.openid == o).cloned().unwrap();
    let ten = by_openid(&listed.openids[10]);
    assert!(
        ten.has_tag("coupon-hunter") && ten.has_tag("老客"),
        "{ten:?}"
    );
    let twenty = by_openid(&listed.openids[20]);
    assert!(
        !twenty.has_tag("老客"),
        "removed in siyu since the last sync: stays removed"
    );
    assert!(by_openid(&listed.openids[14]).has_tag("新客"), "imported");
    for o in &left {
        let f = by_openid(o);
        assert!(!f.subscribed && f.unsubscribed_at.is_some(), "{f:?}");
        assert!(
            f.has_tag("老客") == (listed.openids.iter().position(|x| x == o).unwrap() % 10 == 0)
        );
    }
    fake.stop().await;
}

/// Spawns a sync that the test stops; stdout and stderr piped.
fn spawn_sync(dir: &Path) -> Child {
    sync_command(dir, &[], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait_held(fake: &FakeWechatHandle) {
    let until = Instant::now() + Duration::from_secs(60);
    while fake.held() == 0 {
        assert!(Instant::now() < until, "the sync never reached the hold");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_or_interrupted_sync_goes_on_where_it_stopped() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    // Three pages of WeChat's list (10,000 a page).
    fake.populate(population(25_000, &[])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &fake, 0.0);

    // SIGKILL in the middle of the second page.
    fake.hold(BATCHGET, 150);
    let mut child = spawn_sync(dir.path());
    wait_held(&fake).await;
    child.kill().unwrap();
    child.wait().unwrap();
    fake.release();
    // The released call lets go of the fake's count a moment later: wait for it, or the
    // next wait would see it and interrupt the next process before it is under way.
    let until = Instant::now() + Duration::from_secs(10);
    while fake.held() > 0 {
        assert!(Instant::now() < until, "the held call was never let go");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Ctrl-C (SIGINT) in the third page: the batch in hand is given up, the run kept.
    fake.hold(BATCHGET, 220);
    let child = spawn_sync(dir.path());
    wait_held(&fake).await;
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    fake.release();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("goes on from here"), "{stdout}");

    let (code, run, err) = sync(dir.path(), &[]).await;
    assert_eq!(code, 0, "{run}\n{err}");
    // One run across the three processes, each follower counted once.
    assert_eq!(counts(&run), [25_000, 0, 0, 0, 0], "{run}");
    assert_eq!(followers(dir.path()).len(), 25_000);
    let asked = fake.accepted(BATCHGET).len();
    // 250 calls if nothing is asked twice; what the killed process had written but not yet
    // flushed to the file (sled writes out twice a second) is asked again.
    assert!((250..=350).contains(&asked), "{asked} batchget calls");

    // `--restart` starts a new run: everyone is there already.
    let (code, run, _) = sync(dir.path(), &["--restart"]).await;
    assert_eq!(code, 0);
    assert_eq!(counts(&run), [0, 0, 25_000, 0, 0], "{run}");
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_refuses_what_it_cannot_do_and_stops_on_what_will_not_pass() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.populate(population(300, &[])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &fake, 0.0);
    let run = |account: &str| {
        let (dir, account) = (dir.path().to_path_buf(), account.to_string());
        tokio::task::spawn_blocking(move || {
            let out = siyu_command(
                &[
                    "followers",
                    "sync",
                    "--account",
                    &account,
                    "--config",
                    "config.toml",
                ],
                &[],
            )
            .current_dir(&dir)
            .output()
            .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let (code, _, err) = run("nope").await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("`nope` is not in the config"), "{err}");
    let (code, _, err) = run("plain").await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("no [account.api]"), "{err}");
    let (code, _, err) = run("corp").await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("`corp` has no [account.api]"), "{err}");

    // A wrong secret: the run stops, says why, and nothing was imported.
    fake.inject([siyu::fake_wechat::Fault::errcode(40125)]);
    let (code, out, _) = run("safe").await.unwrap();
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("40125"), "{out}");
    assert!(followers(dir.path()).is_empty());

    // WeChat busy twice on one batch: retried, nothing lost.
    fake.inject([
        siyu::fake_wechat::Fault {
            path: Some(BATCHGET.into()),
            errcode: Some(-1),
            ..Default::default()
        },
        siyu::fake_wechat::Fault {
            path: Some(BATCHGET.into()),
            status: Some(502),
            ..Default::default()
        },
    ]);
    let (code, run, err) = sync(dir.path(), &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(run["state"], "done");
    assert_eq!(counts(&run), [300, 0, 0, 0, 0], "{run}");
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_sync_imports_once_and_sweeps() {
    let Some(db) = siyu::store::postgres::testing::TestDatabase::new() else {
        return;
    };
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.populate(population(1200, &[("老客", 4)])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::postgres::on_postgres(&config(dir.path(), &fake, 0.0));
    let env = [("SIYU_DATABASE_URL", db.url.as_str())];
    let (code, run, err) = sync_env(dir.path(), &["--config", &config], &env).await;
    assert_eq!(code, 0, "{run}\n{err}");
    assert_eq!(counts(&run), [1200, 0, 0, 0, 0], "{run}");
    let listed = fake.followers(None, 0, 1200);
    fake.unsubscribe(None, &listed.openids[..3]).unwrap();
    let (code, run, err) = sync_env(dir.path(), &["--config", &config], &env).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(counts(&run), [0, 0, 1197, 3, 0], "{run}");
    let store = siyu::store::PgStore::open(&db.settings(2)).unwrap();
    let f = store.follower("safe", &listed.openids[0]).unwrap().unwrap();
    assert!(!f.subscribed && f.has_tag("老客"), "{f:?}");
    let f = store.follower("safe", &listed.openids[4]).unwrap().unwrap();
    assert!(
        f.subscribed && f.has_tag("老客") && f.unionid.is_some(),
        "{f:?}"
    );
    fake.stop().await;
}

/// While `siyu serve` holds the (sled) store, the command asks the server to run the sync
/// and shows its progress; the server's run is readable from the admin API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_running_server_the_server_runs_the_sync() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.populate(population(1500, &[])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &fake, 0.0);
    let server = crate::beside_server::Server::start(&config);
    let env = [
        ("SIYU_BIND", server.bind.as_str()),
        ("SIYU_ADMIN_TOKEN", "operator-secret-0123456789"),
    ];
    let (code, run, err) = sync_env(dir.path(), &[], &env).await;
    assert_eq!(code, 0, "{run}\n{err}");
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(counts(&run), [1500, 0, 0, 0, 0], "{run}");

    let client = reqwest::Client::new();
    let base = format!("http://{}/admin/v1/followers/safe/sync", server.bind);
    let status = client
        .get(&base)
        .bearer_auth("viewer-secret-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let body: Value = status.json().await.unwrap();
    assert_eq!(
        (body["state"].clone(), body["live"].clone()),
        ("done".into(), false.into())
    );
    assert_eq!(body["by"], "ops-li", "{body}");
    // One person's identities, from the people index the sync wrote.
    let person = fake.followers(None, 0, 1);
    let found: Value = client
        .get(format!(
            "http://{}/admin/v1/people/{}",
            server.bind, person.unionids[0]
        ))
        .bearer_auth("viewer-secret-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["identities"][0]["account"], "safe", "{found}");
    assert_eq!(
        found["identities"][0]["id"],
        person.openids[0].as_str(),
        "{found}"
    );
    assert_eq!(found["identities"][0]["subscribed"], true, "{found}");
    let missing = client
        .get(format!("http://{}/admin/v1/people/ou_nobody", server.bind))
        .bearer_auth("viewer-secret-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // A viewer may look but not start one; stopping nothing is a conflict.
    let refused = client
        .post(&base)
        .bearer_auth("viewer-secret-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let stop = client
        .post(format!("{base}/stop"))
        .bearer_auth("operator-secret-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), 409);
    let wecom = client
        .post(format!(
            "http://{}/admin/v1/followers/corp/sync",
            server.bind
        ))
        .bearer_auth("operator-secret-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(wecom.status(), 400);
    server.stop();
    let f = followers(dir.path());
    assert_eq!(f.len(), 1500, "on disk after the server stopped");
    fake.stop().await;
}

/// WeCom: every staff member's external contacts, a contact several staff members added
/// imported once with each staff member's side, and contacts no longer anyone's marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_contacts_sync_once_per_person_with_every_staff_members_side() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    let contacts = |count| {
        let mut c = ContactsRequest::new(&["zhangsan", "lisi", "wangwu"], count, 3);
        c.shared_every = 5;
        c.tags = vec![CorpTagSpec {
            name: "老客".into(),
            group: "客户等级".into(),
            every: 3,
            id: None,
        }];
        c
    };
    fake.populate_contacts(contacts(600)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &fake, 0.0);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n",
        &format!(
            "encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n[account.api]\nsecret = \"corp-secret\"\napi_base = \"{}\"\n",
            fake.base_url()
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let wecom = |extra: &'static [&'static str]| {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "followers",
                "sync",
                "--account",
                "corp",
                "--config",
                "config.toml",
                "--json",
            ];
            args.extend_from_slice(extra);
            let out = siyu_command(&args, &[]).current_dir(&dir).output().unwrap();
            let run: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out.stderr).into()));
            (out.status.code(), run)
        })
    };
    let (code, run) = wecom(&[]).await.unwrap();
    assert_eq!(code, Some(0), "{run}");
    assert_eq!(counts(&run), [600, 0, 0, 0, 0], "{run}");
    let listed = fake.contacts(None, 0, 600);
    let store = open_store(&dir.path().join("data/siyu.sled"));
    let first = store
        .follower("corp", &listed.external_userids[0])
        .unwrap()
        .unwrap();
    let staff: Vec<&str> = first.staff.iter().map(|l| l.userid.as_str()).collect();
    assert_eq!(
        staff.len(),
        2,
        "contact 0 was added by two staff members: {staff:?}"
    );
    assert!(first.has_tag("老客") && first.subscribed && first.name.is_some());
    assert_eq!(first.unionid.as_deref(), Some(listed.unionids[0].as_str()));
    let one = store
        .follower("corp", &listed.external_userids[1])
        .unwrap()
        .unwrap();
    assert_eq!(one.staff.len(), 1);
    assert!(!one.has_tag("老客"));
    drop(store);

    let (code, run) = wecom(&[]).await.unwrap();
    assert_eq!(code, Some(0), "{run}");
    assert_eq!(counts(&run), [0, 0, 600, 0, 0], "{run}");

    // Ten contacts are no longer anyone's.
    fake.populate_contacts(contacts(590)).unwrap();
    let (code, run) = wecom(&[]).await.unwrap();
    assert_eq!(code, Some(0), "{run}");
    assert_eq!(counts(&run), [0, 0, 590, 10, 0], "{run}");
    let store = open_store(&dir.path().join("data/siyu.sled"));
    let gone = store
        .follower("corp", &listed.external_userids[595])
        .unwrap()
        .unwrap();
    assert!(!gone.subscribed && gone.staff.is_empty(), "{gone:?}");
    drop(store);

    // The same people follow the official account: one person, two identities.
    fake.populate(population(300, &[])).unwrap();
    let (code, run, err) = sync(dir.path(), &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(counts(&run)[0], 300, "{run}");
    let official = fake.followers(None, 0, 1);
    assert_eq!(
        official.unionids[0], listed.unionids[0],
        "the fake's person 0"
    );
    let store = open_store(&dir.path().join("data/siyu.sled"));
    let mut people = store.people(&listed.unionids[0]).unwrap();
    people.sort();
    assert_eq!(
        people,
        vec![
            ("corp".to_string(), listed.external_userids[0].clone()),
            ("safe".to_string(), official.openids[0].clone())
        ]
    );
    drop(store);
    let (dir2, openid) = (dir.path().to_path_buf(), official.openids[0].clone());
    let out = tokio::task::spawn_blocking(move || {
        siyu_command(
            &[
                "followers",
                "show",
                "--account",
                "safe",
                &openid,
                "--config",
                "config.toml",
            ],
            &[],
        )
        .current_dir(&dir2)
        .output()
        .unwrap()
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("unionid    {}", listed.unionids[0])),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "corp         {}  subscribed",
            listed.external_userids[0]
        )),
        "{shown}"
    );
    fake.stop().await;
}

/// The account's `[[autotag]]`s apply to what a sync brings in, in the same write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_applies_the_accounts_autotags() {
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.populate(population(300, &[("老客", 3)])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let replies = dir.path().join("replies");
    std::fs::create_dir_all(&replies).unwrap();
    std::fs::write(
        replies.join("auto.toml"),
        "[[autotag]]\ntag = \"regular\"\nwhen = \"tag:老客 AND subscribed\"\n",
    )
    .unwrap();
    config(dir.path(), &fake, 0.0);
    // `config` points the rules at the fixtures; point them at this folder instead.
    let path = dir.path().join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("[replies]\ndir = ").unwrap();
    let end = at + text[at..].find('\n').unwrap() + 1;
    let end = end + text[end..].find('\n').unwrap() + 1;
    let text = format!(
        "{}[replies]\ndir = \"replies\"\n{}",
        &text[..at],
        &text[end..]
    );
    std::fs::write(&path, text).unwrap();
    let (code, run, err) = sync(dir.path(), &[]).await;
    assert_eq!(code, 0, "{run}\n{err}");
    let all = followers(dir.path());
    let regulars = all.iter().filter(|f| f.has_tag("regular")).count();
    assert_eq!(regulars, 100, "every 3rd of 300 carries 老客");
    assert!(all
        .iter()
        .all(|f| f.has_tag("regular") == f.has_tag("老客")));
    // Mirrored to WeChat: one queued tag item per autotagged follower, written with them
    // (the next `siyu serve` sends them); WeChat's own tags are not sent back.
    let store = open_store(&dir.path().join("data/siyu.sled"));
    let mut tagged = std::collections::BTreeSet::new();
    let mut after = None;
    loop {
        let page = store.outbox_page(after, 256).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for item in page {
            match &item.effect {
                siyu::outbox::Effect::Tag { openid, tag, add } => {
                    assert_eq!(
                        (tag.as_str(), *add, item.origin.as_str()),
                        ("regular", true, "autotag:sync")
                    );
                    assert!(tagged.insert(openid.clone()), "{openid} queued twice");
                }
                other => panic!("only autotags are mirrored: {other:?}"),
            }
        }
    }
    assert_eq!(tagged.len(), 100, "{tagged:?}");
    drop(store);
    // A second run changes nothing, so it queues nothing more.
    let (code, _, err) = sync(dir.path(), &[]).await;
    assert_eq!(code, 0, "{err}");
    let store = open_store(&dir.path().join("data/siyu.sled"));
    assert_eq!(store.outbox_page(None, 1000).unwrap().len(), 100);
    fake.stop().await;
}

/// Two official accounts of one brand share followers (the same unionids): segments ask
/// about the person (`person.follows`), and a campaign over both reaches each person
/// once, through the account listed first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_over_two_accounts_reaches_each_person_once() {
    two_accounts_each_person_once(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_campaign_over_two_accounts_reaches_each_person_once() {
    let Some(db) = siyu::store::postgres::testing::TestDatabase::new() else {
        return;
    };
    two_accounts_each_person_once(Some(&db.url)).await;
}

async fn two_accounts_each_person_once(database_url: Option<&str>) {
    const SAFE: &str = "wx0123456789abcdef";
    const SHOP: &str = "wx00000000000000b2";
    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    // Persons 0..30 follow `safe`; persons 0..20 also follow `shop2` (other openids).
    for (appid, count, seed) in [(SAFE, 30, 1), (SHOP, 20, 2)] {
        let mut p = PopulationRequest::new(count, seed);
        p.appid = Some(appid.into());
        p.union_seed = 9;
        fake.populate(p).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &fake, 0.0);
    let text = std::fs::read_to_string(&path).unwrap()
        + &format!(
            "\n[[account]]\nid = \"shop2\"\nkind = \"official\"\napp_id = \"{SHOP}\"\ntoken = \"siyutoken\"\nmode = \"plaintext\"\n\
             [account.api]\nsecret = \"shop2-secret\"\napi_base = \"{}\"\nrate_per_sec = 0.0\n",
            fake.base_url()
        );
    std::fs::write(&path, text).unwrap();
    let (config, env) = match database_url {
        None => ("config.toml".to_string(), vec![]),
        Some(url) => (
            crate::postgres::on_postgres(&path),
            vec![("SIYU_DATABASE_URL".to_string(), url.to_string())],
        ),
    };
    let run = |args: &[&str]| {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(["--config".into(), config.clone()]);
        let (dir, env) = (dir.path().to_path_buf(), env.clone());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let out = siyu_command(&args, &env)
                .current_dir(&dir)
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    for account in ["safe", "shop2"] {
        let (code, out, err) = run(&["followers", "sync", "--account", account, "--json"])
            .await
            .unwrap();
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let count = |expr: &'static str| {
        let run = run(&["followers", "--account", "safe", "--where", expr]);
        async move {
            let (code, out, err) = run.await.unwrap();
            assert_eq!(code, 0, "{expr}: {err}");
            out.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{expr}: {out}"))
        }
    };
    assert_eq!(count("person.follows = shop2").await, 20);
    assert_eq!(count("NOT person.follows = shop2").await, 10);
    assert_eq!(count("person.follows = safe").await, 30);
    // WeChat says person 0 left shop2: the person is read as they are now.
    let shop = fake.followers(Some(SHOP), 0, 20);
    fake.unsubscribe(Some(SHOP), &shop.openids[..1]).unwrap();
    let (code, _, err) = run(&["followers", "sync", "--account", "shop2"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(count("person.follows = shop2").await, 19);
    // A wrong account is said plainly, and a rule cannot ask about the person.
    let (code, _, err) = run(&[
        "followers",
        "--account",
        "safe",
        "--where",
        "person.follows = shop3",
    ])
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("no account `shop3` in the config"), "{err}");

    // Preferring shop2: its 19 followers there, then the 11 persons only `safe` reaches.
    let (code, out, err) = run(&[
        "campaign",
        "define",
        "both",
        "--account",
        "shop2",
        "--account",
        "safe",
        "--audience",
        "subscribed",
        "--template-id",
        "TPL-NEW",
        "--data",
        "first=新品 {openid}",
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = run(&["campaign", "plan", "both"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("audience  30"), "{out}");
    assert!(out.contains("19  more left out: the same person"), "{out}");
    let (code, out, err) = run(&["campaign", "start", "both"]).await.unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    let (_, out, _) = run(&["campaign", "status", "both", "--json"])
        .await
        .unwrap();
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            report["sent"].as_u64(),
            report["same_person"].as_u64(),
            report["state"].as_str()
        ),
        (Some(30), Some(19), Some("done")),
        "{report}"
    );
    let safe = fake.followers(Some(SAFE), 0, 30);
    let shop_now = fake.followers(Some(SHOP), 0, 20);
    let person_of = |openid: &str| -> (&str, String) {
        if let Some(i) = safe.openids.iter().position(|o| o == openid) {
            return ("safe", safe.unionids[i].clone());
        }
        let i = shop_now
            .openids
            .iter()
            .position(|o| o == openid)
            .unwrap_or_else(|| panic!("{openid} follows neither account"));
        ("shop2", shop_now.unionids[i].clone())
    };
    let mut reached = std::collections::BTreeMap::new();
    for call in fake.accepted("/cgi-bin/message/template/send") {
        let (account, person) = person_of(call.body["touser"].as_str().unwrap());
        assert!(
            reached.insert(person.clone(), account).is_none(),
            "{person} reached twice"
        );
    }
    assert_eq!(reached.len(), 30, "every person once");
    let through_shop = reached.values().filter(|a| **a == "shop2").count();
    assert_eq!(
        through_shop, 19,
        "shop2 first, for everyone still following it"
    );
    assert_eq!(reached[&safe.unionids[0]], "safe", "person 0 left shop2");
    fake.stop().await;
}

/// `[account.sync] daily_at`: `siyu serve` starts the sync itself once the day's time has
/// come (here: this very minute, China time, so it is due as the server comes up, as for
/// a server that was down at the time), through the admin API's code path; a restart the
/// same day starts nothing more. The decision itself, before and after the time, across
/// midnight, is `sync::schedule`'s table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_the_daily_sync_once_a_day() {
    // The test must not straddle China's midnight (16:00 UTC), where "the same day" ends.
    let local = (now() + 8 * 3600).rem_euclid(86_400);
    if local >= 86_400 - 120 {
        std::thread::sleep(Duration::from_secs((86_400 - local + 2) as u64));
    }
    let local = (now() + 8 * 3600).rem_euclid(86_400);
    let daily_at = format!("{:02}:{:02}", local / 3600, local / 60 % 60);
    let today = siyu::sync::schedule::day(now());

    let fake = FakeWechat::start("127.0.0.1:0").unwrap();
    fake.populate(population(250, &[])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &fake, 0.0);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "timeout_ms = 2000\n",
        &format!("timeout_ms = 2000\n[account.sync]\ndaily_at = \"{daily_at}\"\n"),
        1,
    );
    std::fs::write(&config, text).unwrap();

    let client = reqwest::Client::new();
    // The status once `done` holds: the scheduled run finished, or (after the restart)
    // the schedule has looked and decided.
    let status_when = |bind: String, done: fn(&Value) -> bool| {
        let client = client.clone();
        async move {
            let until = Instant::now() + Duration::from_secs(60);
            loop {
                let r = client
                    .get(format!("http://{bind}/admin/v1/followers/safe/sync"))
                    .bearer_auth(VIEWER)
                    .send()
                    .await
                    .unwrap();
                let code = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                if code == 200 && done(&body) {
                    return body;
                }
                assert!(Instant::now() < until, "status stayed {code} {body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    let server = crate::beside_server::Server::start(&config);
    let first = status_when(server.bind.clone(), |b| {
        b["state"] == "done" && !b["schedule"]["looked_at"].is_null()
    })
    .await;
    assert_eq!(first["by"], "schedule", "{first}");
    assert_eq!(first["scheduled_on"], today.as_str(), "{first}");
    assert_eq!(counts(&first), [250, 0, 0, 0, 0], "{first}");
    assert_eq!(first["schedule"]["daily_at"], daily_at.as_str(), "{first}");
    let next_at = first["schedule"]["next_at"].as_i64().unwrap();
    assert!(
        next_at > now() && next_at <= now() + 86_400,
        "the next start is tomorrow's: {first}"
    );
    server.stop();
    assert_eq!(followers(dir.path()).len(), 250, "the followers are in");

    // A restart the same day: the schedule looks, sees today's start, starts nothing.
    let server = crate::beside_server::Server::start(&config);
    let again = status_when(server.bind.clone(), |b| {
        !b["schedule"]["looked_at"].is_null()
    })
    .await;
    assert_eq!(
        (again["id"].clone(), again["started_at"].clone()),
        (first["id"].clone(), first["started_at"].clone()),
        "no second run the same day: {again}"
    );
    assert_eq!(again["live"], false, "{again}");
    assert_eq!(again["schedule"]["next_at"], next_at, "{again}");
    server.stop();
    fake.stop().await;
}
