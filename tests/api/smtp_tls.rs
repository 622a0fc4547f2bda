//! SMTP as production uses it: STARTTLS or implicit TLS to a certificate from a private CA
//! (trusted with `ca=PATH`), AUTH with the URL's user and password. And the ways it goes
//! wrong, each audited in words an operator can act on, without the password.

use latchkey::db::Db;
use latchkey::mail::{MailError, Mailer, Transport};

use crate::helpers::TestDatabase;
use crate::mail::{
    assert_sign_in_mail, audit_rows, backend, from, short_retries, sign_in, wait_for_audit,
    LINK_PREFIX, WAIT,
};
use crate::smtp_server::{self, pki, Options, SmtpServer, Tls};

const USER: &str = "mailer@example.org";
/// Needs %-escapes in the URL, so decoding is tested too.
const PASSWORD: &str = "s3cret:p@ss/w+rd%";
const PASSWORD_IN_URL: &str = "s3cret%3Ap%40ss%2Fw+rd%25";

async fn server(tls: Tls) -> SmtpServer {
    smtp_server::start_with(Options {
        tls: Some(tls),
        auth: Some((USER.into(), PASSWORD.into())),
    })
    .await
}

/// `scheme://user:password@127.0.0.1:PORT`, then `?ca=` when a CA file is given.
fn url(server: &SmtpServer, password: &str, ca: Option<&std::path::Path>) -> String {
    let base = server.url();
    let (scheme, address) = base.split_once("://").unwrap();
    let user = USER.replace('@', "%40");
    let query = ca.map_or_else(String::new, |ca| format!("?ca={}", ca.display()));
    format!("{scheme}://{user}:{password}@{address}{query}")
}

/// The error and its causes, as the worker logs them.
fn chain(err: &MailError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn delivered_with_auth(tls: Tls) {
    let server = server(tls).await;
    let database = TestDatabase::migrated();
    let db = Db::connect_lazy(&database.url, 2);
    let url = url(&server, PASSWORD_IN_URL, Some(&pki().ca));
    let mailer =
        Mailer::start_with_retry(&backend(&url), from(), db.clone(), short_retries()).unwrap();

    mailer.queue(sign_in(1, "Firefox"));

    let mails = server.wait_for(1, WAIT).await;
    assert_eq!(mails[0].from, "login@example.org");
    assert_eq!(mails[0].to, ["ann@example.org"]);
    assert_sign_in_mail(&mails[0]);
    assert_eq!(
        mails[0].extract_link(LINK_PREFIX),
        format!("{LINK_PREFIX}tok1.sig")
    );
    wait_for_audit(&db, 1, "link_sent").await;
    let commands = server.commands();
    let at = |verb: &str| commands.iter().position(|c| c == verb);
    let (auth, mail) = (at("AUTH").unwrap(), at("MAIL").unwrap());
    assert!(auth < mail, "{commands:?}");
    match tls {
        Tls::StartTls => assert!(at("STARTTLS").unwrap() < auth, "{commands:?}"),
        Tls::Implicit => assert_eq!(at("STARTTLS"), None, "{commands:?}"),
    }
}

#[actix_web::test]
async fn sign_in_mail_goes_over_starttls_with_auth_to_a_server_of_a_private_ca() {
    delivered_with_auth(Tls::StartTls).await;
}

#[actix_web::test]
async fn sign_in_mail_goes_over_smtps_with_auth_to_a_server_of_a_private_ca() {
    delivered_with_auth(Tls::Implicit).await;
}

#[actix_web::test]
async fn a_wrong_password_is_audited_as_rejected_credentials_without_the_password() {
    let server = server(Tls::StartTls).await;
    let wrong = "wr0ng-hunter2";
    let url = url(&server, wrong, Some(&pki().ca));

    let err = Transport::from_backend(&backend(&url))
        .unwrap()
        .send(&from(), &sign_in(1, "Firefox"))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "a 535 will not get better: {err:?}");
    let logged = chain(&err);
    assert!(
        !logged.contains(wrong) && !logged.contains(PASSWORD),
        "{logged}"
    );

    let database = TestDatabase::migrated();
    let db = Db::connect_lazy(&database.url, 2);
    let mailer =
        Mailer::start_with_retry(&backend(&url), from(), db.clone(), short_retries()).unwrap();
    mailer.queue(sign_in(2, "Firefox"));
    let failed = wait_for_audit(&db, 2, "link_send_failed").await;
    assert!(
        failed
            .detail
            .starts_with("the SMTP server rejected the credentials (535)"),
        "{}",
        failed.detail
    );
    assert!(
        failed.detail.contains("(1 attempt(s))"),
        "{}",
        failed.detail
    );
    for row in audit_rows(&db, 2).await {
        let text = format!("{row:?}");
        assert!(!text.contains(wrong) && !text.contains("wr0ng"), "{text}");
    }
    assert!(server.received().is_empty());
}

#[actix_web::test]
async fn an_untrusted_certificate_is_audited_and_neither_password_nor_mail_is_sent() {
    let other_ca = pki().other_ca.clone();
    for tls in [Tls::StartTls, Tls::Implicit] {
        // No ca= (only the public roots), and a CA that did not issue the certificate.
        for ca in [None, Some(other_ca.as_path())] {
            let server = server(tls).await;
            let url = url(&server, PASSWORD_IN_URL, ca);
            let case = format!("{tls:?} with ca={ca:?}");

            let err = Transport::from_backend(&backend(&url))
                .unwrap()
                .send(&from(), &sign_in(1, "Firefox"))
                .await
                .unwrap_err();
            assert_eq!(
                err.audit_detail(),
                "the SMTP server's certificate is not trusted (is its CA in ca=PATH?)",
                "{case}: {err:?}"
            );
            assert!(!err.is_retryable(), "{case}");
            assert!(!chain(&err).contains(PASSWORD), "{case}");

            let database = TestDatabase::migrated();
            let db = Db::connect_lazy(&database.url, 2);
            let mailer =
                Mailer::start_with_retry(&backend(&url), from(), db.clone(), short_retries())
                    .unwrap();
            mailer.queue(sign_in(2, "Firefox"));
            let failed = wait_for_audit(&db, 2, "link_send_failed").await;
            assert!(
                failed
                    .detail
                    .starts_with("the SMTP server's certificate is not trusted"),
                "{case}: {}",
                failed.detail
            );
            assert!(!failed.detail.contains(PASSWORD), "{case}");

            let commands = server.commands();
            for verb in ["AUTH", "MAIL", "RCPT", "DATA"] {
                assert!(!commands.iter().any(|c| c == verb), "{case}: {commands:?}");
            }
            assert!(server.received().is_empty(), "{case}");
        }
    }
}

#[actix_web::test]
async fn credentials_never_go_to_a_server_that_offers_no_starttls() {
    // Plain text, no STARTTLS, no AUTH: what a man-in-the-middle who strips the offer shows.
    let server = smtp_server::start().await;
    let url = format!(
        "smtp://mailer:{PASSWORD_IN_URL}@127.0.0.1:{}?ca={}",
        server.port(),
        pki().ca.display()
    );
    let database = TestDatabase::migrated();
    let db = Db::connect_lazy(&database.url, 2);
    let mailer =
        Mailer::start_with_retry(&backend(&url), from(), db.clone(), short_retries()).unwrap();
    mailer.queue(sign_in(1, "Firefox"));
    let failed = wait_for_audit(&db, 1, "link_send_failed").await;
    assert!(failed.detail.contains("STARTTLS"), "{}", failed.detail);
    let commands = server.commands();
    assert!(commands.iter().any(|c| c == "EHLO"), "{commands:?}");
    for verb in ["AUTH", "MAIL", "RCPT", "DATA"] {
        assert!(!commands.iter().any(|c| c == verb), "{commands:?}");
    }
    assert!(server.received().is_empty());
}
