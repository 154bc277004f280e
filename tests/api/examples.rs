//! The shipped examples work as the README says: every shipped config passes `siyu check`
//! run from the repository root with relative paths, every `check` (and store-free
//! `simulate --tests`) command of the README runs as written, and the example campaigns
//! and coupons are loaded by a config that names them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shipped configs: `config.toml`, and every file of `examples/` with an `[[account]]`.
#[test]
fn every_shipped_config_passes_check_from_the_repository_root() {
    let mut configs = vec!["config.toml".to_string()];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    examples.sort();
    for path in examples {
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("[[account]]") {
            let name = path.file_name().unwrap().to_str().unwrap();
            configs.push(format!("examples/{name}"));
        }
    }
    assert!(
        configs.contains(&"examples/wecom.toml".to_string()),
        "{configs:?}"
    );
    for config in &configs {
        let (code, out, err) = siyu_at_root(&["check", "--config", config]);
        assert_eq!(code, 0, "{config}:\nstdout: {out}\nstderr: {err}");
        assert!(err.is_empty(), "{config}: {err}");
    }
}

#[test]
fn the_wecom_example_loads_every_example_file_and_draws_no_warning() {
    let (code, out, err) = siyu_at_root(&["check", "--config", "examples/wecom.toml"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    for want in [
        "account demo: official account",
        "account corp: wecom app",
        "rules from examples/wecom",
        "coupons: 1 batch(es): new-guest",
        // Every campaign of examples/campaigns.toml.
        "campaign vip-comeback: account demo",
        "campaign seckill-reminder: account demo",
        "campaign double-12: account demo",
        "campaign stocktake: account corp",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // Both accounts have [account.api]: the demo's follow-up goes out, the WeCom welcome too.
    assert!(!out.contains("warning:"), "{out}");
}

/// Every `cargo run -- check …` of the README, and every `cargo run -- simulate … --tests`
/// (which needs no store), as written: from the repository root, relative paths.
#[test]
fn the_readme_check_commands_run_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let commands: Vec<Vec<String>> = shell_lines(&readme)
        .into_iter()
        .filter_map(|line| {
            let args = words(line.strip_prefix("cargo run -- ")?);
            let store_free = match args.first().map(String::as_str) {
                Some("check") => true,
                Some("simulate") => args.iter().any(|a| a == "--tests"),
                _ => false,
            };
            store_free.then_some(args)
        })
        .collect();
    assert!(commands.len() >= 4, "found only {commands:?}");
    for args in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = siyu_at_root(&args);
        assert_eq!(code, 0, "siyu {args:?}:\nstdout: {out}\nstderr: {err}");
    }
}

/// Runs `siyu` in the repository root, as the README's commands are run.
fn siyu_at_root(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_siyu"))
        .args(args)
        .current_dir(root())
        .env_remove("SIYU_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("siyu runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of the README's ```sh blocks, trimmed.
fn shell_lines(markdown: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut in_sh = false;
    for line in markdown.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = !in_sh && trimmed == "```sh";
        } else if in_sh {
            lines.push(trimmed);
        }
    }
    lines
}

/// A command line split as a shell would for the README's simple commands: words
/// separated by spaces, "double quotes" grouping, a `#` starting a word ends the line.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            c if c.is_whitespace() && !quoted => words.extend(word.take()),
            '#' if !quoted && word.is_none() => break,
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

#[test]
fn words_are_split_like_a_shell_would() {
    let cases = [
        (
            "plain",
            "check --config x.toml",
            vec!["check", "--config", "x.toml"],
        ),
        ("comment", "check   # validate it", vec!["check"]),
        (
            "quoted, with a space and a #",
            "simulate \"优惠 #券\" x",
            vec!["simulate", "优惠 #券", "x"],
        ),
        ("empty quotes", "a \"\"", vec!["a", ""]),
    ];
    for (name, line, expected) in cases {
        assert_eq!(words(line), expected, "{name}: {line:?}");
    }
}
