//! The `latchkey` binary itself, as an operator runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn latchkey(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    command.current_dir(env!("CARGO_TARGET_TMPDIR"));
    command.output().expect("running latchkey")
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let out = latchkey(&["migrate"], &[("LATCHKEY_LINK_TTL", "2h")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("LATCHKEY_LINK_TTL"), "{stderr}");
}

#[test]
fn a_public_url_without_a_secret_key_is_refused() {
    let out = latchkey(
        &["serve"],
        &[("LATCHKEY_PUBLIC_URL", "https://login.example.org")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LATCHKEY_SECRET_KEY"));
}
