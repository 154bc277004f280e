//! The rule workbench over the real binary: `check` prints warnings, `check --tests` and
//! `simulate --tests` run an operator regression suite and fail on a wrong expectation.

use std::path::{Path, PathBuf};

use crate::helpers::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn shipped_config() -> String {
    root().join("config.toml").display().to_string()
}

fn example_suite() -> String {
    root()
        .join("examples/rule_tests.toml")
        .display()
        .to_string()
}

#[test]
fn check_runs_the_example_suite_on_the_shipped_rules() {
    let suite = example_suite();
    let (code, out, err) = siyu(&["check", "--config", &shipped_config(), "--tests", &suite]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("0 failed"), "{out}");
    // The one warning: the demo account has no [account.api], so the `price` rule's
    // follow-up is never sent (examples/wecom.toml has the API and draws none).
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0]
            .contains("rule `price` has follow-ups, but account `demo` has no [account.api]"),
        "{out}"
    );
    assert!(err.is_empty(), "{err}");

    // The same suite through simulate, which needs no message.
    let (code, out, err) = siyu(&[
        "simulate",
        "--config",
        &shipped_config(),
        "--account",
        "demo",
        "--tests",
        &suite,
    ]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("0 failed"), "{out}");
}

#[test]
fn a_wrong_expectation_fails_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("tests.toml");
    std::fs::write(
        &suite,
        "[[case]]\ntext = \"我要优惠券\"\nexpect = \"coupon\"\n\n\
         [[case]]\nname = \"greeting\"\ntext = \"你好\"\nexpect = \"coupon\"\n",
    )
    .unwrap();
    let suite = suite.display().to_string();
    let want =
        format!("{suite}:8: case \"greeting\": expected rule `coupon`, got `greeting` (reply: \"");
    let (code, out, err) = siyu(&["check", "--config", &shipped_config(), "--tests", &suite]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("1 passed, 1 failed"), "{out}");
    assert!(err.contains(&want), "missing {want:?} in:\n{err}");

    let (code, _, err) = siyu(&[
        "simulate",
        "--config",
        &shipped_config(),
        "--account",
        "demo",
        "--tests",
        &suite,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&want), "missing {want:?} in:\n{err}");
}

#[test]
fn a_broken_suite_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("tests.toml");
    std::fs::write(&suite, "[[case]]\ntext = \"你好\"\nexpcet = \"greeting\"\n").unwrap();
    let suite = suite.display().to_string();
    let (code, out, err) = siyu(&["check", "--config", &shipped_config(), "--tests", &suite]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains(&format!("{suite}:3:1: unknown field `expcet`")),
        "{err}"
    );
    // The rules themselves are still checked.
    assert!(out.contains("rules "), "{out}");
}

#[test]
fn check_prints_warnings_and_still_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let replies = fixtures().join("warn_replies");
    let config = config_in(dir.path(), &replies);
    let (code, out, err) = siyu(&["check", "--config", &config]);
    assert_eq!(code, 0, "warnings do not fail a check: {out}\n{err}");
    let a = replies.join("a_triggers.toml").display().to_string();
    let b = replies.join("b_placeholders.toml").display().to_string();
    let expected = [
        (&a, "6:1", "intent `thanks` is not used by any rule"),
        (
            &a,
            "22:13",
            "keyword \"优惠券\" of rule `coupon` never fires: rule `discount`",
        ),
        (
            &a,
            "28:8",
            "rule `coupon-code` can never fire: rule `discount`",
        ),
        (
            &a,
            "42:12",
            "keyword \"菜单\" (exact) of rule `menu` is also a keyword of rule `menu-vip`",
        ),
        (
            &b,
            "6:13",
            "`{attr.nickname}` in rule `nickname` may be empty",
        ),
        (
            &b,
            "11:15",
            "`{match.1}` in rule `order` may be empty: group 1",
        ),
        (&b, "16:16", "`{scene}` in rule `welcome` may be empty"),
        (
            &b,
            "16:27",
            "`{content}` in rule `welcome` may be empty: events carry no text",
        ),
        (
            &b,
            "21:9",
            "regex `\\d*` of rule `digits` matches the empty string",
        ),
    ];
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(warnings.len(), expected.len(), "{out}");
    for (line, (file, at, fragment)) in warnings.iter().zip(expected) {
        let prefix = format!("{file}:{at}: warning: ");
        assert!(line.starts_with(&prefix), "wanted {prefix:?}, got {line}");
        assert!(line.contains(fragment), "wanted {fragment:?}, got {line}");
    }
    // After the folder's summary line.
    let summary = out.find("rules ").expect("summary line");
    assert!(out.find(": warning: ").unwrap() > summary, "{out}");
}

#[test]
fn check_tests_one_account_and_refuses_an_unknown_one() {
    let suite = example_suite();
    let config = shipped_config();
    let (code, out, err) = siyu(&[
        "check",
        "--config",
        &config,
        "--account",
        "demo",
        "--tests",
        &suite,
    ]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("0 failed"), "{out}");
    let (code, _, err) = siyu(&[
        "check",
        "--config",
        &config,
        "--account",
        "nope",
        "--tests",
        &suite,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no account `nope`"), "{err}");
}

/// The fixtures' folder is read by three official accounts and the WeCom app `corp`, none
/// with [account.api]: `corp` can never send the `wecom-welcome` rule's welcome.
#[test]
fn check_warns_about_effects_an_account_cannot_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let replies = fixtures().join("replies");
    let config = config_in(dir.path(), &replies);
    let (code, out, err) = siyu(&["check", "--config", &config]);
    assert_eq!(code, 0, "warnings do not fail a check: {out}\n{err}");
    let main = replies.join("main.toml").display().to_string();
    let want = format!(
        "{main}:68:8: warning: rule `wecom-welcome` welcomes new contacts, but account `corp` \
         has no [account.api]: WeCom takes a welcome only through send_welcome_msg, so it will \
         never be sent / 账号 corp 没有配置 [account.api]，欢迎语不会发送"
    );
    assert!(
        out.lines().any(|l| l == want),
        "missing {want:?} in:\n{out}"
    );
}
