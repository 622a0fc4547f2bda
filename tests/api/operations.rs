//! Operating Latchkey (issue 25): `latchkey mail test` against a real SMTP server with
//! STARTTLS and AUTH, the start-up line of effective settings and the warning when nobody can
//! sign in, and `LATCHKEY_ORG_NAME` on the pages and in the sign-in mail.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;

use crate::helpers::{one, parse_page, spawn_app_with, text, TestDatabase, TestSettings};
use crate::smtp_server::{self, pki, Options, Tls};

const USER: &str = "mailer@example.org";
const PASSWORD: &str = "pw-Kq7vZ2xR";

/// The binary with nothing of this process's environment but `PATH` (no developer's `.env`
/// either: it runs in a scratch folder).
fn latchkey(args: &[&str], env: &[(&str, &str)]) -> Command {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "operations-{}",
        hex::encode(latchkey::crypto::random_bytes::<6>())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command
        .args(args)
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

fn smtp_url(server: &smtp_server::SmtpServer, password: &str) -> String {
    let base = server.url();
    let (scheme, address) = base.split_once("://").unwrap();
    format!(
        "{scheme}://{}:{password}@{address}?ca={}",
        USER.replace('@', "%40"),
        pki().ca.display()
    )
}

fn mail_test(url: &str) -> Output {
    latchkey(
        &["mail", "test", "ann@example.org"],
        &[("LATCHKEY_EMAIL", url), ("LATCHKEY_ORG_NAME", "Acme")],
    )
    .output()
    .unwrap()
}

#[actix_web::test]
async fn mail_test_says_each_step_and_exits_zero_when_accepted() {
    let server = smtp_server::start_with(Options {
        tls: Some(Tls::StartTls),
        auth: Some((USER.into(), PASSWORD.into())),
    })
    .await;
    let out = mail_test(&smtp_url(&server, PASSWORD));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let steps: Vec<&str> = stdout.lines().collect();
    assert_eq!(steps.len(), 4, "{stdout}");
    assert!(steps[0].starts_with("connected to 127.0.0.1:"), "{stdout}");
    assert!(steps[1].contains("STARTTLS"), "{stdout}");
    assert_eq!(steps[2], format!("authenticated as {USER}"));
    assert!(steps[3].starts_with("accepted: 250"), "{stdout}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));
    let mails = server.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0].header("Subject").as_deref(),
        Some("Test message from Acme")
    );
}

#[actix_web::test]
async fn mail_test_with_a_wrong_password_fails_in_the_servers_words() {
    let server = smtp_server::start_with(Options {
        tls: Some(Tls::StartTls),
        auth: Some((USER.into(), PASSWORD.into())),
    })
    .await;
    let wrong = "not-the-password";
    let out = mail_test(&smtp_url(&server, wrong));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("connected") && stdout.contains("STARTTLS"));
    assert!(!stdout.contains("accepted") && !stdout.contains("authenticated"));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("authenticating as"), "{stderr}");
    assert!(stderr.contains("535"), "the server's reply code: {stderr}");
    assert!(!stderr.contains(wrong) && !stdout.contains(wrong));
    assert!(server.received().is_empty());
}

/// `latchkey serve` until it listens; returns everything it logged by then.
fn serve_log(env: &[(&str, &str)]) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = std::env::temp_dir().join(format!(
        "latchkey-serve-{}.log",
        hex::encode(latchkey::crypto::random_bytes::<6>())
    ));
    let log = File::create(&log_path).unwrap();
    let bind = format!("127.0.0.1:{port}");
    let mut env = env.to_vec();
    env.push(("LATCHKEY_BIND", &bind));
    env.push(("RUST_LOG", "info"));
    let mut child = latchkey(&["serve"], &env)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let logged = loop {
        let logged = std::fs::read_to_string(&log_path).unwrap_or_default();
        if logged.contains("listening on port") {
            break logged;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("latchkey exited with {status}:\n{logged}");
        }
        assert!(
            Instant::now() < deadline,
            "latchkey did not start:\n{logged}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_file(&log_path);
    logged
}

#[actix_web::test]
async fn start_up_lists_the_settings_without_secrets_and_warns_when_nobody_can_sign_in() {
    let database = TestDatabase::migrated();
    let secret_key = hex::encode(latchkey::crypto::random_bytes::<32>());
    let smtp = format!("smtp://{}:{PASSWORD}@127.0.0.1:2525?tls=none", "mailer");
    let database_url = database.url.expose_secret().to_string();
    let base = [
        ("DATABASE_URL", database_url.as_str()),
        ("LATCHKEY_SECRET_KEY", secret_key.as_str()),
        ("LATCHKEY_EMAIL", smtp.as_str()),
    ];
    let logged = serve_log(&base);
    let lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("settings: "))
        .collect();
    assert_eq!(lines.len(), 1, "{logged}");
    let line = lines[0];
    for shown in [
        "DATABASE_URL=set",
        "LATCHKEY_SECRET_KEY=set",
        "LATCHKEY_EMAIL=\"smtp://127.0.0.1:2525?tls=none (no TLS, credentials set)\"",
        "LATCHKEY_ORG_NAME=Latchkey",
        "LATCHKEY_LOGIN_RATE=30/1m",
    ] {
        assert!(line.contains(shown), "{shown}: {line}");
    }
    for secret in [secret_key.as_str(), PASSWORD, database_url.as_str()] {
        assert!(
            !logged.contains(secret),
            "a secret reached the log: {logged}"
        );
    }
    assert!(
        logged.contains("nobody can sign in yet")
            && logged.contains("LATCHKEY_ADMINS=you@example.org")
            && logged.contains("latchkey members add you@example.org --role admin"),
        "{logged}"
    );

    let mut with_admin = base.to_vec();
    with_admin.push(("LATCHKEY_ADMINS", "ann@example.org"));
    let logged = serve_log(&with_admin);
    assert!(logged.contains("settings: "), "{logged}");
    assert!(!logged.contains("nobody can sign in yet"), "{logged}");
    // The admin is an active member now: no warning without the setting either.
    assert!(!serve_log(&base).contains("nobody can sign in yet"));
}

#[actix_web::test]
async fn the_org_name_is_on_the_sign_in_page_and_in_the_sign_in_mail() {
    let app = spawn_app_with(TestSettings::new().org_name("Acme <&> Co")).await;
    app.add_member("ann@example.org", latchkey::domain::role::Role::Member);
    let res = app.browser.get("/login").await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("Acme &lt;&amp;&gt; Co"), "escaped: {html}");
    assert!(!html.contains("Acme <&> Co"), "{html}");
    let page = parse_page(&html);
    assert_eq!(text(one(&page, "a.brand")), "Acme <&> Co");
    assert_eq!(text(one(&page, "title")), "Sign in · Acme <&> Co");

    assert_eq!(
        app.browser.request_link("ann@example.org").await.status(),
        200
    );
    let mails = app.smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        mails[0].header("Subject").as_deref(),
        Some("Your Acme <&> Co sign-in link")
    );
    assert!(mails[0]
        .text()
        .contains("Someone asked to sign in to Acme <&> Co"));
    assert!(mails[0].text().trim_end().ends_with("-- Acme <&> Co"));
    assert!(mails[0].html().contains("Sign in to Acme &lt;&amp;&gt; Co"));
}
