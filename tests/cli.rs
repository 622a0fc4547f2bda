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
        "serve", "migrate", "members", "purge", "audit", "link", "passkeys", "groups",
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
fn a_malformed_group_or_name_is_refused_before_the_database_is_touched() {
    for (args, says) in [
        (&["groups", "add", "Ops"][..], "lower-case"),
        (
            &["groups", "members", "ops team", "--add", "a@x.org"],
            "lower-case",
        ),
        // `=` takes a leading `-` past clap to the parser, which refuses it.
        (&["members", "add", "a@x.org", "--group=-ops"], "lower-case"),
        (
            &["members", "add", "a@x.org", "--name", "Ann\rLee"],
            "one line",
        ),
        (
            &["apps", "add", "w", "https://w.x.org", "--groups", "ops,"],
            "name",
        ),
    ] {
        let out = latchkey(args, &[NO_DATABASE]);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
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

#[test]
fn a_misspelled_setting_stops_start_up_naming_the_closest() {
    for args in [&["serve"][..], &["settings"], &["migrate"]] {
        let out = latchkey(args, &[("LATCHKEY_EMAL_FROM", "Acme <a@example.org>")]);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "latchkey: LATCHKEY_EMAL_FROM is not a setting; did you mean LATCHKEY_EMAIL_FROM?\n"
        );
    }
}

#[test]
fn a_misspelled_setting_in_dot_env_is_refused_too() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dot-env-typo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "LATCHKEY_ORG_NAMES=Acme\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("settings")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("LATCHKEY_ORG_NAMES is not a setting; did you mean LATCHKEY_ORG_NAME?"),
        "{stderr}"
    );
}

#[test]
fn the_retired_cookie_domain_stops_start_up_saying_what_replaced_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LATCHKEY_COOKIE_DOMAIN", "example.org")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("LATCHKEY_COOKIE_DOMAIN is no longer read: per-app sessions replaced it"),
        "{stderr}"
    );
}

#[test]
fn the_repositorys_tooling_variables_and_kept_settings_do_not_stop_start_up() {
    let out = latchkey(
        &["settings"],
        &[
            ("LATCHKEY_E2E", "0"),
            ("LATCHKEY_BIN", "/tmp/latchkey"),
            ("LATCHKEY_E2E_CHROMIUM", "/usr/bin/chromium"),
            ("LATCHKEY_E2E_PRIVATE_CLUSTER", "1"),
            ("LATCHKEY_TEST_POSTGRES", "postgres://x@127.0.0.1/y"),
            ("LATCHKEY_LOG_FORMAT", "text"),
            ("LATCHKEY_PUBLIC_URL", "http://login.lk.localhost:8080"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("LATCHKEY_E2E"), "{stdout}");
}

#[test]
fn email_from_is_required_with_an_https_public_url() {
    let key = "ab".repeat(32);
    let mut vars = vec![
        ("LATCHKEY_PUBLIC_URL", "https://login.example.org"),
        ("LATCHKEY_SECRET_KEY", key.as_str()),
        ("LATCHKEY_EMAIL", "smtps://mail.example.org:465"),
    ];
    let out = latchkey(&["serve"], &vars);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("latchkey: LATCHKEY_EMAIL_FROM: required"),
        "{stderr}"
    );
    vars.push(("LATCHKEY_EMAIL_FROM", "Acme <login@example.org>"));
    let out = latchkey(&["settings"], &vars);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_org_name_is_refused_naming_it() {
    let long = "x".repeat(65);
    let out = latchkey(&["settings"], &[("LATCHKEY_ORG_NAME", &long)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("latchkey: LATCHKEY_ORG_NAME: "),
        "{stderr}"
    );
}

#[test]
fn settings_prints_every_setting_in_order_and_never_a_secret() {
    let key = "5ec4e7".repeat(11);
    let password = "hunter2-smtp";
    let metrics_token = "m3tr1cs".repeat(6);
    let email = format!("smtps://mailer:{password}@mail.example.org:465");
    let out = latchkey(
        &["settings"],
        &[
            ("LATCHKEY_PUBLIC_URL", "https://login.example.org"),
            ("LATCHKEY_SECRET_KEY", &key),
            ("LATCHKEY_EMAIL", &email),
            ("LATCHKEY_EMAIL_FROM", "Acme <login@example.org>"),
            ("LATCHKEY_ORG_NAME", "Acme"),
            ("LATCHKEY_METRICS_TOKEN", &metrics_token),
            (
                "DATABASE_URL",
                "postgres://latchkey:dbsecret@db.internal/latchkey",
            ),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = stdout
        .lines()
        .map(|line| line.split_once('=').unwrap().0)
        .collect();
    assert_eq!(names, latchkey::settings::SETTING_NAMES, "{stdout}");
    for secret in [key.as_str(), password, "dbsecret", "mailer", &metrics_token] {
        assert!(!stdout.contains(secret), "{secret}: {stdout}");
    }
    for line in [
        "DATABASE_URL=set",
        "LATCHKEY_SECRET_KEY=set",
        "LATCHKEY_EMAIL=smtps://mail.example.org:465 (TLS, credentials set)",
        "LATCHKEY_EMAIL_FROM=Acme <login@example.org>",
        "LATCHKEY_ORG_NAME=Acme",
        "LATCHKEY_PUBLIC_URL=https://login.example.org",
        "LATCHKEY_LINK_TTL=10m",
        "LATCHKEY_AUDIT_RETENTION=400d",
        "LATCHKEY_LOG_FORMAT=text",
        "LATCHKEY_METRICS_TOKEN=set",
        "RUST_LOG=info",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line}: {stdout}");
    }
    let out = latchkey(&["settings"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("LATCHKEY_SECRET_KEY=unset\n"), "{stdout}");
    assert!(
        stdout.contains("LATCHKEY_METRICS_TOKEN=unset\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("DATABASE_URL=unset (private cluster)\n"),
        "{stdout}"
    );
}
