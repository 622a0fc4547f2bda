//! Issue #23's fourth point on a running server: while `latchkey serve` runs, the database's
//! owner deletes the audit's newest rows together with their checkpoints. At its next periodic
//! checkpoint the server must refuse to sign the cut chain, audit `audit_chain_broken` once,
//! mail every active admin, and log an error. The real binary, so that the mail goes through
//! its own mailer to a real SMTP server and the error is a line of its own log.
//!
//! The periodic checkpoint runs every `checkpoint::INTERVAL` (60 s); the test stops the server
//! instead (SIGTERM), whose last checkpoint finds the cut, and checks that the stopping server
//! still sends what it queued: the alarm, and the sign-in link asked for just before the stop.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use latchkey::mail::CHAIN_BROKEN_SUBJECT;
use secrecy::ExposeSecret as _;

use crate::audit_chain::{latchkey, TEST_SECRET_KEY};
use crate::helpers::{Browser, TestDatabase};
use crate::no_secrets_in_logs::{free_port, wait_until_serving, Server};

/// What `latchkey ARGS` must do for the set-up to hold.
fn run(database: &TestDatabase, args: &[&str]) {
    let out = latchkey(database, args, &[]);
    assert!(
        out.status.success(),
        "latchkey {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn newest_checkpoint_seq(database: &TestDatabase) -> i64 {
    use latchkey::schema::login_audit_checkpoints as c;
    c::table
        .select(diesel::dsl::max(c::seq))
        .first::<Option<i64>>(&mut database.connect())
        .unwrap()
        .unwrap()
}

fn events(database: &TestDatabase) -> Vec<String> {
    use latchkey::schema::login_audit as a;
    a::table
        .order(a::seq.asc())
        .select(a::event)
        .load(&mut database.connect())
        .unwrap()
}

#[actix_web::test]
async fn a_running_server_that_finds_the_chain_cut_audits_it_mails_the_admins_and_logs_an_error() {
    // Three admins (one of them deactivated) and a member, each command signing what it
    // appended: the chain ends in a signed checkpoint.
    let database = TestDatabase::migrated();
    for (email, role) in [
        ("ann@example.org", "admin"),
        ("bea@example.org", "admin"),
        ("cid@example.org", "admin"),
        ("dan@example.org", "member"),
    ] {
        run(&database, &["members", "add", email, "--role", role]);
    }
    run(&database, &["members", "remove", "cid@example.org"]);

    let smtp = crate::smtp_server::start().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "chain-alarm-{}",
        hex::encode(latchkey::crypto::random_bytes::<6>())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("latchkey.log");
    let child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("serve")
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", database.url.expose_secret())
        .env("LATCHKEY_DATA_DIR", dir.join("data"))
        .env("LATCHKEY_BIND", format!("127.0.0.1:{port}"))
        // The key the command line signed with, so the server starts from that checkpoint.
        .env("LATCHKEY_SECRET_KEY", TEST_SECRET_KEY)
        .env("LATCHKEY_EMAIL", smtp.url())
        .env("RUST_LOG", "info")
        .env("LATCHKEY_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log_path).unwrap())
        .spawn()
        .expect("starting latchkey serve");
    let started = Instant::now();
    let mut server = Server(child);
    wait_until_serving(&base, &mut server, &log_path).await;
    // The head the server started from (it read the newest signed checkpoint at start-up).
    let signed = newest_checkpoint_seq(&database);
    assert!(signed >= 5, "{signed}");

    // The attack: the two newest rows and the checkpoint that signed them go, and the chain's
    // head moves back, as the database's owner can do. `audit verify` alone calls what is
    // left intact.
    let keep = signed - 2;
    database
        .connect()
        .batch_execute(&format!(
            "BEGIN; \
             SET LOCAL latchkey.audit_purge = 'on'; \
             DELETE FROM login_audit WHERE seq > {keep}; \
             DELETE FROM login_audit_checkpoints WHERE seq > {keep}; \
             UPDATE login_audit_chain SET head_seq = {keep}, \
                 head_hash = (SELECT hash FROM login_audit WHERE seq = {keep}); \
             COMMIT;"
        ))
        .unwrap();
    // The server appends a row of its own (a sign-in link asked for), so that its next
    // periodic checkpoint has something to sign.
    let dan = Browser::new(&base, "LatchkeyChainAlarmTest/1.0");
    assert_eq!(dan.request_link("dan@example.org").await.status(), 200);

    // Stopped at once: the checkpoint on shutdown is the one that finds the cut, and the
    // server sends its queued mail before it exits.
    let pid = i32::try_from(server.0.id()).unwrap();
    // SAFETY: signalling a child this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let exit_deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < exit_deadline, "the server did not stop");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert!(
        events(&database).iter().any(|e| e == "audit_chain_broken"),
        "no audit_chain_broken row {:?} after start-up; the log:\n{}",
        started.elapsed(),
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    // The link dan asked for just before the stop went out too.
    assert!(
        smtp.received()
            .iter()
            .any(|m| m.to.iter().any(|to| to == "dan@example.org")),
        "the sign-in link queued before the stop was sent"
    );

    // A mail to each active admin: ann and bea, not the deactivated cid, not the member dan.
    let alarm_recipients = || {
        let mut to: Vec<String> = smtp
            .received()
            .iter()
            .filter(|m| m.header("Subject").as_deref() == Some(CHAIN_BROKEN_SUBJECT))
            .flat_map(|m| m.to.clone())
            .collect();
        to.sort();
        to
    };
    assert_eq!(
        alarm_recipients(),
        ["ann@example.org", "bea@example.org"],
        "sent before the server exited"
    );

    let broken = events(&database)
        .iter()
        .filter(|e| *e == "audit_chain_broken")
        .count();
    assert_eq!(broken, 1, "audited once");
    assert!(
        newest_checkpoint_seq(&database) <= keep,
        "nothing signed over the cut"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(" ERROR ") && line.contains("audit chain broken"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line; the log:\n{log}");
    assert!(
        errors[0].contains(&format!("seq={signed} ")),
        "names the head it no longer extends: {}",
        errors[0]
    );
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}
