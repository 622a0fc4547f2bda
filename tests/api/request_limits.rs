//! Limits on what a request may send: a body over 16 KiB (413), a body that trickles in
//! (408), an address over 254 characters (422); each refused before anything is written.

use latchkey::domain::role::Role;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{
    form_value, parse_page, raw_request, select, set_cookies, spawn_app, spawn_app_with, urlencode,
    TestApp, TestSettings,
};

#[actix_web::test]
async fn bodies_over_16_kib_get_413_and_write_nothing() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    let csrf = browser.csrf("/login").await;
    let padding = format!("/{}", "a".repeat(17 * 1024));
    let before = app.snapshot();

    // With a Content-Length: refused before a byte is read.
    let res = browser
        .post("/login")
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("email", "ann@example.org"),
            ("next", padding.as_str()),
        ])
        // The token is already in the form, and first.
        .without_csrf()
        .await;
    assert_eq!(res.status(), 413);

    // Chunked, without a Content-Length: refused once the count passes 16 KiB.
    let jar_cookie = browser_cookie_header(&app).await;
    let body = format!(
        "csrf_token={}&email=ann%40example.org&next={}",
        urlencode(&jar_cookie.1),
        urlencode(&padding)
    );
    let (status, _) = chunked_post(app.port, "/login", &jar_cookie.0, body.as_bytes()).await;
    assert_eq!(status, 413);

    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.snapshot(), before, "nothing written");

    // The same chunked post under the limit goes through: the limit is what stopped it.
    let body = format!(
        "csrf_token={}&email=ann%40example.org&next=%2Fsessions",
        urlencode(&jar_cookie.1)
    );
    let (status, _) = chunked_post(app.port, "/login", &jar_cookie.0, body.as_bytes()).await;
    assert_eq!(status, 200);
    // Just under 16 KiB with a Content-Length is fine too.
    let fill = "b".repeat(16 * 1024 - 200);
    let res = browser
        .post("/login")
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("email", "ann@example.org"),
            ("filler", fill.as_str()),
        ])
        // The token is already in the form, and first.
        .without_csrf()
        .await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn a_body_still_arriving_10_s_after_the_head_gets_408_and_the_connection_closes() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let (cookie, csrf) = browser_cookie_header(&app).await;
    let body = format!("csrf_token={}&email=ann%40example.org", urlencode(&csrf));
    let before = app.snapshot();

    let stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\n\r\n",
        port = app.port,
        len = body.len()
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // One byte every 2 s: the whole body would take minutes.
    let trickle = actix_web::rt::spawn(async move {
        for byte in body.into_bytes() {
            actix_web::rt::time::sleep(Duration::from_secs(2)).await;
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
        }
    });
    let mut response = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(12), reader.read_to_end(&mut response)).await;
    let elapsed = started.elapsed();
    trickle.abort();
    let text = String::from_utf8_lossy(&response);
    assert!(
        read.is_ok(),
        "the connection was still open after {elapsed:?}: {text}"
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        elapsed >= Duration::from_millis(9500) && elapsed <= Duration::from_secs(12),
        "{elapsed:?}"
    );
    assert_eq!(app.snapshot(), before, "nothing written");
}

/// A fresh browser's cookie header and CSRF token, read from `GET /login`.
async fn browser_cookie_header(app: &TestApp) -> (String, String) {
    let res = reqwest::get(app.url("/login")).await.unwrap();
    let cookie = set_cookies(&res)[0].split(';').next().unwrap().to_string();
    let csrf = form_value(&res.text().await.unwrap(), "csrf_token").unwrap();
    (cookie, csrf)
}

/// A form post with `Transfer-Encoding: chunked`, written by hand; returns the status and
/// the raw response.
async fn chunked_post(port: u16, path: &str, cookie: &str, body: &[u8]) -> (u16, String) {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(4096) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    raw_request(port, request).await
}

#[actix_web::test]
async fn emails_over_254_characters_get_422_and_write_nothing() {
    let short_domain = format!(
        "{}.{}.{}.org",
        "b".repeat(60),
        "c".repeat(60),
        "d".repeat(60)
    );
    let long_domain = format!(
        "{}.{}.{}.{}.org",
        "b".repeat(60),
        "c".repeat(60),
        "d".repeat(60),
        "e".repeat(5)
    );
    let app =
        spawn_app_with(TestSettings::new().allowed_domains(&[&short_domain, &long_domain])).await;
    let browser = app.visitor();
    let before = app.snapshot();
    let too_long = format!("{}@{long_domain}", "a".repeat(64));
    assert!(too_long.len() > 254);
    let much_too_long = format!("{}@example.org", "a".repeat(5000));
    for email in [too_long.as_str(), much_too_long.as_str()] {
        let res = browser.request_link(email).await;
        assert_eq!(res.status(), 422, "{} characters", email.len());
        let html = res.text().await.unwrap();
        assert_eq!(
            select(&parse_page(&html), r#"input[name="email"]"#).len(),
            1
        );
        assert!(!html.contains(&"a".repeat(300)), "the echo is bounded");
    }
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.snapshot(), before, "nothing written");

    // At the limit, an address of an allowed domain does get in: the length is what refused.
    let fits = format!("{}@{short_domain}", "a".repeat(64));
    assert!(fits.len() <= 254);
    assert_eq!(browser.request_link(&fits).await.status(), 200);
    assert_eq!(app.count("sign_in_requests"), 1);
}
