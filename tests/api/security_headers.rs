//! What every response carries, whoever rendered it: the CSP, `nosniff`, `no-referrer`, HSTS
//! when the public URL is https; pages that load HTMX from this site under that CSP; HEAD
//! answering with GET's headers; and token shape checks that answer before the database.

use latchkey::domain::role::Role;
use std::time::{Duration, Instant};

use crate::helpers::{
    attr, one, parse_page, raw_request, select, spawn_app, spawn_app_with,
    spawn_app_with_unreachable_database, urlencode, TestApp, TestSettings, HTTPS_URL,
};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn assert_security_headers(res: &reqwest::Response, what: &str, https: bool) {
    let headers = res.headers();
    assert_eq!(
        headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{what}: no CSP")),
        CSP,
        "{what}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(
        headers.get_all("content-security-policy").iter().count(),
        1,
        "{what}: one CSP"
    );
    match headers.get("strict-transport-security") {
        Some(hsts) if https => {
            let hsts = hsts.to_str().unwrap();
            assert!(hsts.starts_with("max-age="), "{what}: {hsts}");
            let age: u64 = hsts["max-age=".len()..]
                .split(';')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(age >= 15_552_000, "{what}: at least 180 days ({hsts})");
        }
        None if !https => {}
        other => panic!("{what}: HSTS {other:?} with https={https}"),
    }
}

/// Every kind of response the app gives, each checked for the security headers.
async fn check_every_kind_of_response(app: &TestApp, https: bool) {
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut seen = Vec::new();
    for path in [
        "/login",
        "/login?next=/audit",
        "/static/htmx.min.js",
        "/static/app.css",
        "/static/nothing.js",
        "/no-such-page",
        "/",
        "/healthz",
        "/readyz",
        "/auth/verify?token=garbage",
        "/auth/cancel?token=garbage",
        "/auth/wait",
    ] {
        let res = plain.get(app.url(path)).send().await.unwrap();
        seen.push(res.status().as_u16());
        assert_security_headers(&res, &format!("GET {path}"), https);
        let res = plain
            .get(app.url(path))
            .header("HX-Request", "true")
            .send()
            .await
            .unwrap();
        assert_security_headers(&res, &format!("HTMX GET {path}"), https);
        let res = plain.head(app.url(path)).send().await.unwrap();
        assert_security_headers(&res, &format!("HEAD {path}"), https);
    }
    // 403: no CSRF token.
    let res = plain
        .post(app.url("/login"))
        .form(&[("email", "x@example.org")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_security_headers(&res, "403", https);
    // 413: too large.
    let res = plain
        .post(app.url("/login"))
        .form(&[("email", "x".repeat(20_000))])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_security_headers(&res, "413", https);
    // 400 from a broken chunked body (to a route the login rate does not count): an error
    // that no handler rendered still gets the headers.
    let (status, raw) = raw_request(
        app.port,
        "POST /auth/cancel HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nemail\r\nzz\r\n",
    )
    .await;
    assert_eq!(status, 400, "{raw}");
    let head = raw.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(
        head.contains(&format!("content-security-policy: {CSP}")),
        "{raw}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{raw}");
    assert!(head.contains("referrer-policy: no-referrer"), "{raw}");
    assert_eq!(head.contains("strict-transport-security"), https, "{raw}");
    // 429: over the login rate (the app runs with a small one).
    let mut throttled = None;
    for _ in 0..10 {
        let res = plain
            .post(app.url("/login"))
            .form(&[("email", "x@example.org")])
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            throttled = Some(res);
            break;
        }
    }
    let res = throttled.expect("a 429 within ten posts");
    assert_security_headers(&res, "429", https);
    let res = plain
        .post(app.url("/login"))
        .header("HX-Request", "true")
        .form(&[("email", "x@example.org")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_security_headers(&res, "HTMX 429", https);
    assert!(seen.contains(&404) && seen.contains(&303) && seen.contains(&400));
}

#[actix_web::test]
async fn every_response_carries_the_security_headers_and_no_hsts_over_http() {
    // Two posts to sign in, the 403 and the 413, then the 429.
    let app = spawn_app_with(TestSettings::new().login_rate(4, Duration::from_secs(60))).await;
    // Signed in first: the checks below use up the login rate.
    let browser = app.member(Role::Member, "ann@example.org").await;
    check_every_kind_of_response(&app, false).await;
    // Signed-in pages and HTMX partials too.
    for htmx in [false, true] {
        let res = browser.get("/").htmx_if(htmx).await;
        assert_eq!(res.status(), 200);
        assert_security_headers(&res, &format!("dashboard (htmx: {htmx})"), false);
    }
}

#[actix_web::test]
async fn with_an_https_public_url_every_response_carries_hsts() {
    let app = spawn_app_with(
        TestSettings::new()
            .public_url(HTTPS_URL)
            .login_rate(3, Duration::from_secs(60)),
    )
    .await;
    check_every_kind_of_response(&app, true).await;
}

#[actix_web::test]
async fn a_503_carries_the_security_headers_and_garbage_tokens_never_reach_the_database() {
    let address =
        spawn_app_with_unreachable_database(TestSettings::new().public_url(HTTPS_URL)).await;
    let plain = reqwest::Client::new();

    let res = plain.get(format!("{address}/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_security_headers(&res, "503", true);

    let well_shaped_forgery = format!(
        "{}.{}",
        "A".repeat(23),
        "B".repeat(latchkey::domain::token::TOKEN_LEN - 24)
    );
    let wrong_alphabet = "!".repeat(latchkey::domain::token::TOKEN_LEN);
    let too_long = "A".repeat(10_000);
    for token in [
        "garbage",
        "",
        wrong_alphabet.as_str(),
        too_long.as_str(),
        well_shaped_forgery.as_str(),
    ] {
        let started = Instant::now();
        let res = plain
            .get(format!("{address}/auth/verify?token={}", urlencode(token)))
            .send()
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(res.status(), 400, "token {token:?}: not 503");
        assert_security_headers(&res, "400", true);
        // The pool waits 2 s for a connection before giving up: a request that answered
        // faster than that never asked for one.
        assert!(
            elapsed < Duration::from_millis(1900),
            "{token:?}: {elapsed:?}"
        );
    }
    // The sign-in form needs no database either.
    let res = plain.get(format!("{address}/login")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn pages_carry_the_htmx_config_and_load_htmx_from_this_site() {
    let app = spawn_app().await;
    let browser = app.member(Role::Member, "ann@example.org").await;
    for (member, path) in [(None, "/login"), (Some(&browser), "/")] {
        let res = match member {
            Some(member) => member.get(path).await,
            None => app.get(path).await,
        };
        let html = res.text().await.unwrap();
        let page = parse_page(&html);
        let config = attr(one(&page, r#"meta[name="htmx-config"]"#), "content");
        let config: serde_json::Value = serde_json::from_str(config).unwrap();
        assert_eq!(config["allowEval"], false, "{path}");
        assert_eq!(config["selfRequestsOnly"], true, "{path}");
        assert_eq!(config["historyCacheSize"], 0, "{path}");
        assert_eq!(config["includeIndicatorStyles"], false, "{path}");
        assert_eq!(
            select(&page, r#"script[src="/static/htmx.min.js"]"#).len(),
            1
        );
        assert!(
            select(&page, "script:not([src])").is_empty(),
            "no inline script"
        );
        let csrf = one(&page, r#"meta[name="csrf-token"]"#);
        assert!(!attr(csrf, "content").is_empty(), "{path}");
    }
}

#[actix_web::test]
async fn head_works_on_pages_without_a_body() {
    let app = spawn_app().await;
    let browser = app.member(Role::Member, "ann@example.org").await;
    for (path, status) in [
        ("/login", 200),
        ("/", 200),
        ("/static/htmx.min.js", 200),
        ("/healthz", 200),
        ("/auth/verify?token=garbage", 400),
        ("/auth/cancel?token=garbage", 400),
        ("/no-such-page", 404),
    ] {
        let get = browser.get(path).await;
        assert_eq!(get.status(), status, "GET {path}");
        let get_type = get.headers().get("content-type").cloned();
        let res = browser.head(path).await;
        assert_eq!(res.status(), status, "HEAD {path}");
        assert_eq!(
            res.headers().get("content-type").cloned(),
            get_type,
            "{path}"
        );
        assert!(res.bytes().await.unwrap().is_empty(), "HEAD {path}");
    }
}
