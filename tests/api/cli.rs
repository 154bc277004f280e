//! The `siyu` binary: `check` on good and broken rule folders, `simulate` against a real
//! store, and the shipped config and rules.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;

fn siyu(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_siyu"))
        .args(args)
        .env_remove("SIYU_CONFIG")
        .output()
        .expect("siyu runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config in `dir` whose rules come from `replies` and whose store is in `dir`.
fn config_in(dir: &Path, replies: &Path) -> String {
    let text = std::fs::read_to_string(fixtures().join("config.toml"))
        .unwrap()
        .replace(
            "[storage]",
            &format!(
                "[replies]\ndir = {:?}\n\n[storage]",
                replies.display().to_string()
            ),
        );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

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
