//! Mail delivery end to end: the real worker, a real SMTP server, a real database.

use std::time::Duration;

use chrono::Utc;
use latchkey::audit::rows::{for_request, AuditRow};
use latchkey::db::{Db, DbError};
use latchkey::domain::email_address::EmailAddress;
use latchkey::domain::ids::RequestId;
use latchkey::mail::{sign_in_mail, MailError, Mailer, OutgoingMail, SignInMail, Transport};
use latchkey::settings::{EmailBackend, Settings};
use lettre::message::Mailbox;

use crate::helpers::{one, parse_page, select, text, TestDatabase};
use crate::smtp_server::{self, ReceivedMail};

pub(crate) const WAIT: Duration = Duration::from_secs(10);
pub(crate) const LINK_PREFIX: &str = "http://127.0.0.1:8080/auth/verify?token=";

/// Parsed by the real settings code, so the tests use the URLs people write.
pub(crate) fn backend(value: &str) -> EmailBackend {
    Settings::from_lookup(|name| (name == "LATCHKEY_EMAIL").then(|| value.to_string()))
        .unwrap()
        .email
}

pub(crate) fn from() -> Mailbox {
    "Latchkey <login@example.org>".parse().unwrap()
}

fn ann() -> EmailAddress {
    EmailAddress::parse("ann@example.org").unwrap()
}

pub(crate) fn short_retries() -> Vec<Duration> {
    vec![
        Duration::from_millis(10),
        Duration::from_millis(20),
        Duration::from_millis(40),
    ]
}

pub(crate) fn sign_in(request_id: i64, user_agent: &str) -> OutgoingMail {
    let now = Utc::now();
    sign_in_mail(
        &latchkey::settings::OrgName::default(),
        &ann(),
        &SignInMail {
            link: format!("{LINK_PREFIX}tok{request_id}.sig"),
            cancel_link: format!("http://127.0.0.1:8080/auth/cancel?token=tok{request_id}.sig"),
            code: "493027".into(),
            expires_at: now + chrono::Duration::minutes(10),
            ttl_minutes: 10,
            requested_at: now,
            ip: Some("192.0.2.10".parse().unwrap()),
            user_agent: Some(user_agent.into()),
            request_id: RequestId::new(request_id),
            app_name: None,
        },
    )
    .unwrap()
}

pub(crate) async fn audit_rows(db: &Db, request_id: i64) -> Vec<AuditRow> {
    db.run(move |conn| for_request(conn, RequestId::new(request_id)).map_err(DbError::from))
        .await
        .unwrap()
}

/// Waits for the worker to write `event` about the request.
pub(crate) async fn wait_for_audit(db: &Db, request_id: i64, event: &str) -> AuditRow {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = audit_rows(db, request_id).await;
        if let Some(row) = rows.into_iter().find(|row| row.event == event) {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {event} row for request {request_id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn assert_sign_in_mail(mail: &ReceivedMail) {
    let from = mail.header("from").unwrap();
    assert!(
        from.contains("Latchkey") && from.ends_with("<login@example.org>"),
        "{from}"
    );
    assert_eq!(mail.header("to").unwrap(), "ann@example.org");
    assert_eq!(
        mail.header("subject").unwrap(),
        "Your Latchkey sign-in link"
    );
    assert!(mail
        .header("content-type")
        .unwrap()
        .starts_with("multipart/alternative"));
    let types: Vec<String> = mail
        .message()
        .leaves()
        .iter()
        .map(|part| part.content_type())
        .collect();
    assert_eq!(types, ["text/plain", "text/html"]);
    assert!(mail.extract_link(LINK_PREFIX).starts_with(LINK_PREFIX));
    assert_eq!(mail.extract_code(), "493027");
    assert!(mail.html().contains("493027"));
}

#[actix_web::test]
async fn sign_in_mail_arrives_as_multipart_with_link_code_and_escaped_html() {
    let server = smtp_server::start().await;
    let database = TestDatabase::migrated();
    let db = Db::connect_lazy(&database.url, 2);
    let mailer =
        Mailer::start_with_retry(&backend(&server.url()), from(), db.clone(), short_retries())
            .unwrap();

    mailer.queue(sign_in(1, "<script>alert(1)</script>"));

    let mails = server.wait_for(1, WAIT).await;
    let mail = &mails[0];
    assert_eq!(mail.from, "login@example.org");
    assert_eq!(mail.to, ["ann@example.org"]);
    assert_sign_in_mail(mail);
    assert_eq!(
        mail.extract_link(LINK_PREFIX),
        format!("{LINK_PREFIX}tok1.sig")
    );
    let html = mail.html();
    let page = parse_page(&html);
    assert!(select(&page, "script").is_empty(), "{html}");
    assert_eq!(
        text(one(&page, "td.browser")),
        "unknown browser (it calls itself “<script>alert(1)</script>”)",
        "{html}"
    );
    assert!(mail.text().contains("192.0.2.10"));

    let sent = wait_for_audit(&db, 1, "link_sent").await;
    assert_eq!(sent.email.as_deref(), Some("ann@example.org"));
    assert!(!sent.detail.contains("tok1"));
}

#[actix_web::test]
async fn failed_delivery_is_retried_then_audited_and_later_mail_goes_through() {
    let server = smtp_server::start().await;
    server.set_failing(true);
    let database = TestDatabase::migrated();
    let db = Db::connect_lazy(&database.url, 2);
    let mailer =
        Mailer::start_with_retry(&backend(&server.url()), from(), db.clone(), short_retries())
            .unwrap();

    mailer.queue(sign_in(1, "Firefox"));
    let failed = wait_for_audit(&db, 1, "link_send_failed").await;
    assert!(failed.detail.contains("451"), "{}", failed.detail);
    assert!(failed.detail.contains("4 attempt"), "{}", failed.detail);
    let attempts = server.commands().iter().filter(|c| *c == "MAIL").count();
    assert_eq!(attempts, 4, "one try and three retries");
    assert!(server.received().is_empty());

    server.set_failing(false);
    mailer.queue(sign_in(2, "Firefox"));
    let mails = server.wait_for(1, WAIT).await;
    assert_eq!(
        mails[0].extract_link(LINK_PREFIX),
        format!("{LINK_PREFIX}tok2.sig")
    );
    wait_for_audit(&db, 2, "link_sent").await;
    let first: Vec<String> = audit_rows(&db, 1)
        .await
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(first, ["link_send_failed"]);
}

#[actix_web::test]
async fn delivery_rides_out_a_server_restart() {
    let server = smtp_server::start().await;
    let database = TestDatabase::migrated();
    let db = Db::connect_lazy(&database.url, 2);
    let delays = vec![
        Duration::from_millis(300),
        Duration::from_millis(600),
        Duration::from_millis(1200),
    ];
    let mailer =
        Mailer::start_with_retry(&backend(&server.url()), from(), db.clone(), delays).unwrap();
    mailer.queue(sign_in(1, "Firefox"));
    server.wait_for(1, WAIT).await;

    // The pooled connection dies with the server; the next mail must not be lost with it.
    server.shutdown().await;
    mailer.queue(sign_in(2, "Firefox"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.restart().await;

    let mails = server.wait_for(2, WAIT).await;
    assert_eq!(
        mails[1].extract_link(LINK_PREFIX),
        format!("{LINK_PREFIX}tok2.sig")
    );
    wait_for_audit(&db, 2, "link_sent").await;
}

#[actix_web::test]
async fn file_backend_writes_a_parseable_eml() {
    let dir = std::env::temp_dir().join(format!(
        "latchkey-mail-{}",
        hex::encode(latchkey::crypto::random_bytes::<6>())
    ));
    let database = TestDatabase::migrated();
    let db = Db::connect_lazy(&database.url, 2);
    let mailer = Mailer::start_with_retry(
        &backend(&format!("file:{}", dir.display())),
        from(),
        db.clone(),
        short_retries(),
    )
    .unwrap();

    mailer.queue(sign_in(1, "Firefox"));
    wait_for_audit(&db, 1, "link_sent").await;

    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().unwrap(), "eml");
    let data = std::fs::read_to_string(&files[0]).unwrap();
    assert!(data.contains("\r\n"), "RFC 5322 lines end in CRLF");
    let mail = ReceivedMail {
        from: String::new(),
        to: Vec::new(),
        data,
    };
    assert_sign_in_mail(&mail);
    assert!(mail
        .header("message-id")
        .unwrap()
        .ends_with("@example.org>"));
    assert!(mail.header("date").is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[actix_web::test]
async fn plain_smtp_url_requires_starttls_and_never_sends_in_clear() {
    let server = smtp_server::start().await;
    let url = format!("smtp://127.0.0.1:{}", server.port());

    let transport = Transport::from_backend(&backend(&url)).unwrap();
    let err = transport
        .send(&from(), &sign_in(1, "Firefox"))
        .await
        .unwrap_err();
    assert!(matches!(err, MailError::Smtp(_)), "{err:?}");
    assert!(
        err.audit_detail().contains("STARTTLS"),
        "{}",
        err.audit_detail()
    );

    // Through the worker, the failure is audited like any other.
    let database = TestDatabase::migrated();
    let db = Db::connect_lazy(&database.url, 2);
    let mailer =
        Mailer::start_with_retry(&backend(&url), from(), db.clone(), short_retries()).unwrap();
    mailer.queue(sign_in(2, "Firefox"));
    let failed = wait_for_audit(&db, 2, "link_send_failed").await;
    assert!(failed.detail.contains("STARTTLS"), "{}", failed.detail);

    let commands = server.commands();
    assert!(commands.contains(&"EHLO".to_string()), "{commands:?}");
    for verb in ["MAIL", "RCPT", "DATA"] {
        assert!(
            !commands.iter().any(|c| c == verb),
            "sent {verb} in clear: {commands:?}"
        );
    }
    assert!(server.received().is_empty());
}
