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

#[test]
fn unsafe_settings_outside_loopback_stop_the_binary_with_one_line() {
    let key = "ab".repeat(32);
    for (vars, named) in [
        (
            vec![("LATCHKEY_PUBLIC_URL", "http://login.example.org")],
            "LATCHKEY_PUBLIC_URL",
        ),
        (
            vec![("LATCHKEY_PUBLIC_URL", "https://login.example.org")],
            "LATCHKEY_EMAIL",
        ),
        (
            vec![("LATCHKEY_EMAIL", "smtp://mail.example.org:25?tls=none")],
            "LATCHKEY_EMAIL",
        ),
    ] {
        let mut vars = vars;
        vars.push(("LATCHKEY_SECRET_KEY", &key));
        let out = latchkey(&["serve"], &vars);
        assert!(!out.status.success(), "{vars:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(named), "{vars:?}: {stderr}");
    }
}

/// A server nobody listens on: these commands must fail before they would need one.
const NO_DATABASE: (&str, &str) = ("DATABASE_URL", "postgres://latchkey@127.0.0.1:1/none");

#[test]
fn help_lists_every_command() {
    let out = latchkey(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "serve", "migrate", "members", "purge", "audit", "link", "passkeys",
    ] {
        assert!(help.contains(command), "{command}: {help}");
    }
    let out = latchkey(&["members", "--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["add", "list", "remove"] {
        assert!(help.contains(command), "{command}: {help}");
    }
}

#[test]
fn a_malformed_address_is_refused_before_the_database_is_touched() {
    for args in [
        &["members", "add", "not-an-address"][..],
        &["members", "remove", "a@"],
        &["link", "@example.org", "--reason", "x"],
    ] {
        let out = latchkey(args, &[NO_DATABASE]);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("email address"), "{args:?}: {stderr}");
        assert!(!stderr.contains("connecting"), "{args:?}: {stderr}");
    }
}

#[test]
fn an_unknown_role_is_refused_naming_the_choices() {
    let out = latchkey(
        &["members", "add", "a@example.org", "--role", "root"],
        &[NO_DATABASE],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin") && stderr.contains("auditor"),
        "{stderr}"
    );
}

#[test]
fn a_break_glass_link_needs_a_reason() {
    for args in [
        &["link", "a@example.org"][..],
        &["link", "a@example.org", "--reason", ""],
        &["link", "a@example.org", "--reason", "  "],
    ] {
        let out = latchkey(args, &[NO_DATABASE]);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("reason"), "{args:?}: {stderr}");
    }
}

#[test]
fn verify_without_a_database_fails_clearly() {
    let out = latchkey(&["audit", "verify"], &[NO_DATABASE]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[test]
fn audit_help_lists_verify_and_checkpoint_and_checkpoint_needs_a_database() {
    let out = latchkey(&["audit", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["verify", "checkpoint"] {
        assert!(help.contains(command), "{command}: {help}");
    }
    let out = latchkey(&["audit", "checkpoint"], &[NO_DATABASE]);
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "nothing is printed unless it was written"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}
