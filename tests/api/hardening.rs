//! Web hardening through HTTP against the real app: CSRF, security headers and cookies,
//! request limits, token shape checks before the database, `next` and `Host`.

use std::time::{Duration, Instant};

use diesel::RunQueryDsl as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{
    form_value, new_browser, spawn_app, spawn_app_with, spawn_app_with_unreachable_database,
    urlencode, TestApp, TestSettings,
};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const HTTPS_URL: &str = "https://login.example.org";

/// What must not change when a request is refused.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    audit: i64,
    sessions: i64,
    members: Vec<(String, String, bool)>,
    requests: Vec<String>,
    mails: usize,
}

#[derive(diesel::QueryableByName)]
struct MemberRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    email: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    role: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    active: bool,
}

#[derive(diesel::QueryableByName)]
struct RequestRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    state: String,
}

fn snapshot(app: &TestApp) -> Snapshot {
    let members = diesel::sql_query("SELECT email, role, active FROM members ORDER BY id")
        .load::<MemberRow>(&mut app.conn())
        .unwrap()
        .into_iter()
        .map(|m| (m.email, m.role, m.active))
        .collect();
    let requests = diesel::sql_query(
        "SELECT concat_ws('|', id, consumed_at, cancelled_at, approved_at, code_failures) AS state \
         FROM sign_in_requests ORDER BY id",
    )
    .load::<RequestRow>(&mut app.conn())
    .unwrap()
    .into_iter()
    .map(|r| r.state)
    .collect();
    Snapshot {
        audit: app.count("login_audit"),
        sessions: app.count("sessions"),
        members,
        requests,
        mails: app.smtp.received().len(),
    }
}

async fn post_with(
    app: &TestApp,
    browser: &reqwest::Client,
    path: &str,
    fields: &[(&str, &str)],
    csrf: Option<&str>,
) -> reqwest::Response {
    let mut form = fields.to_vec();
    if let Some(csrf) = csrf {
        form.push(("csrf_token", csrf));
    }
    browser
        .post(app.url(path))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Waits for the newest sign-in mail to `email`; returns (token, code).
async fn mail_for(app: &TestApp, email: &str, prefix: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = app.smtp.received().into_iter().rev().find(|mail| {
            mail.to.iter().any(|to| to.contains(email)) && mail.data.contains("/auth/verify")
        });
        if let Some(mail) = found {
            let link = mail.extract_link(&format!("{prefix}/auth/verify?token="));
            let token = crate::helpers::urldecode(link.split("token=").nth(1).unwrap());
            return (token, mail.extract_code());
        }
        assert!(Instant::now() < deadline, "no sign-in mail to {email}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// CSRF

#[actix_web::test]
async fn state_changing_posts_without_the_right_token_get_403_and_change_nothing() {
    let app = spawn_app().await;
    let admin = app.signed_in_browser("admin@example.org", "admin").await;
    let admin_csrf = app.csrf(&admin, "/").await;
    app.add_member("bob@example.org", "member");
    let asking = new_browser();
    assert_eq!(
        app.request_link(&asking, "bob@example.org").await.status(),
        200
    );
    let (token, code) = mail_for(&app, "bob@example.org", &app.address).await;
    let stranger_csrf = app.csrf(&new_browser(), "/login").await;
    app.smtp.wait_for(2, Duration::from_secs(10)).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let before = snapshot(&app);

    let anonymous: [(&str, Vec<(&str, &str)>); 5] = [
        ("/login", vec![("email", "bob@example.org")]),
        ("/auth/verify", vec![("token", &token)]),
        ("/auth/code", vec![("code", &code)]),
        ("/auth/approve", vec![("token", &token), ("number", "42")]),
        ("/auth/cancel", vec![("token", &token)]),
    ];
    let signed_in: [(&str, Vec<(&str, &str)>); 3] = [
        ("/logout", vec![]),
        (
            "/team",
            vec![("email", "carol@example.org"), ("role", "admin")],
        ),
        ("/sessions/revoke-all", vec![]),
    ];
    let bad_tokens = [
        None,
        Some(""),
        Some("wrong"),
        // A real token, but another browser's.
        Some(stranger_csrf.as_str()),
    ];
    for bad in bad_tokens {
        for (path, fields) in &anonymous {
            let res = post_with(&app, &asking, path, fields, bad).await;
            assert_eq!(res.status(), 403, "{path} with {bad:?}");
        }
        for (path, fields) in &signed_in {
            let res = post_with(&app, &admin, path, fields, bad).await;
            assert_eq!(res.status(), 403, "{path} with {bad:?}");
        }
    }
    // The signed-in member's token is no good in another browser either.
    for (path, fields) in &anonymous {
        let res = post_with(&app, &asking, path, fields, Some(&admin_csrf)).await;
        assert_eq!(res.status(), 403, "{path} with the admin's token");
    }
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(snapshot(&app), before, "a refused post changes nothing");

    // Everything still works with the right tokens.
    assert_eq!(app.get("/").await.status(), 303);
    assert_eq!(admin.get(app.url("/")).send().await.unwrap().status(), 200);
    let res = app
        .post_form(&asking, "/auth/code", &[("code", &code)])
        .await;
    assert_eq!(res.status(), 303, "the request survived every forged post");
}

#[actix_web::test]
async fn the_csrf_header_works_instead_of_the_field() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", "member");
    let browser = new_browser();
    let csrf = app.csrf(&browser, "/login").await;
    let res = browser
        .post(app.url("/login"))
        .header("X-CSRF-Token", &csrf)
        .form(&[("email", "ann@example.org")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (_, code) = mail_for(&app, "ann@example.org", &app.address).await;
    // HTMX sends only the header; a JSON-free plain post works the same way.
    let res = browser
        .post(app.url("/auth/code"))
        .header("X-CSRF-Token", &csrf)
        .header("HX-Request", "true")
        .form(&[("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["hx-redirect"], "/");

    // A wrong header is not rescued by a right field.
    let session_csrf = app.csrf(&browser, "/").await;
    let res = browser
        .post(app.url("/logout"))
        .header("X-CSRF-Token", "wrong")
        .form(&[("csrf_token", session_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(app.count("sessions"), 1);

    let res = browser
        .post(app.url("/logout"))
        .header("X-CSRF-Token", &session_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(app.count("sessions"), 0);
}

#[actix_web::test]
async fn a_foreign_origin_or_a_cross_site_fetch_is_refused_even_with_a_valid_token() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", "member");
    let browser = new_browser();
    let csrf = app.csrf(&browser, "/login").await;
    let form = [("email", "ann@example.org"), ("csrf_token", csrf.as_str())];
    let before = snapshot(&app);
    let refused: [(&str, &str); 6] = [
        ("Origin", "https://evil.example"),
        ("Origin", "null"),
        // Same host, other scheme or port: another origin.
        ("Origin", "https://127.0.0.1"),
        ("Origin", &format!("{}.evil.example", app.address)),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ];
    for (name, value) in refused {
        let res = browser
            .post(app.url("/login"))
            .header(name, value)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{name}: {value}");
    }
    // `Origin: null` (what browsers send under no-referrer) counts only when Sec-Fetch-Site
    // vouches for the request.
    let res = browser
        .post(app.url("/login"))
        .header("Origin", "null")
        .header("Sec-Fetch-Site", "cross-site")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // Origin is believed over Sec-Fetch-Site when both are present.
    let res = browser
        .post(app.url("/login"))
        .header("Origin", "https://evil.example")
        .header("Sec-Fetch-Site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(snapshot(&app), before);

    // A plain form post from one of this site's pages, as Chromium sends it.
    let res = browser
        .post(app.url("/login"))
        .header("Origin", "null")
        .header("Sec-Fetch-Site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // This site's own origin is fine.
    let res = browser
        .post(app.url("/login"))
        .header("Origin", &app.address)
        .header("Sec-Fetch-Site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn after_sign_in_the_sessions_token_is_required() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", "member");
    let browser = new_browser();
    let before_sign_in = app.csrf(&browser, "/login").await;
    assert_eq!(app.sign_in(&browser, "ann@example.org").await.status(), 303);
    let session_csrf = app.csrf(&browser, "/").await;
    assert_ne!(
        session_csrf, before_sign_in,
        "signing in issues a new token"
    );

    let res = app
        .post_form_with_csrf(&browser, "/logout", &[], &before_sign_in)
        .await;
    assert_eq!(res.status(), 403, "the pre-sign-in token is dead");
    assert_eq!(app.count("sessions"), 1);
    assert!(!app.audit_events().contains(&"signed_out".to_string()));
    assert_eq!(
        browser.get(app.url("/")).send().await.unwrap().status(),
        200
    );

    let res = app
        .post_form_with_csrf(&browser, "/logout", &[], &session_csrf)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.count("sessions"), 0);
}

#[actix_web::test]
async fn state_changing_routes_do_not_accept_get() {
    let app = spawn_app().await;
    let admin = app.signed_in_browser("admin@example.org", "admin").await;
    let member_id = app.add_member("bob@example.org", "member");
    let before = snapshot(&app);
    let deactivate = format!("/team/{member_id}/deactivate");
    let role = format!("/team/{member_id}/role?role=admin");
    for path in [
        "/logout",
        "/auth/code?code=123456",
        "/auth/approve?token=x&number=12",
        "/sessions/revoke-all",
        deactivate.as_str(),
        role.as_str(),
        "/team?email=carol@example.org&role=admin",
    ] {
        let res = admin.get(app.url(path)).send().await.unwrap();
        let status = res.status().as_u16();
        if path.starts_with("/team?") {
            // GET /team is the member list: a page, whatever the query says.
            assert!(status == 200 || status == 404, "GET {path}: {status}");
        } else {
            assert!(status == 404 || status == 405, "GET {path}: {status}");
        }
        let res = admin.head(app.url(path)).send().await.unwrap();
        assert!(
            matches!(res.status().as_u16(), 200 | 404 | 405),
            "HEAD {path}: {}",
            res.status()
        );
    }
    assert_eq!(snapshot(&app), before, "no GET changes anything");
    assert_eq!(admin.get(app.url("/")).send().await.unwrap().status(), 200);
}

#[actix_web::test]
async fn percent_encoded_paths_get_the_same_access_policy() {
    let app = spawn_app().await;
    let member = app.signed_in_browser("ann@example.org", "member").await;
    for path in ["/audit", "/%61udit", "/team", "/%74eam", "/%74eam/1/role"] {
        let res = member.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 403, "GET {path} as a member");
    }
    let res = app.get("/%74eam").await;
    assert_eq!(res.status(), 303, "signed out");
}

// ---------------------------------------------------------------------------------------
// Headers and cookies

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
    let browser = app.signed_in_browser("ann@example.org", "member").await;
    check_every_kind_of_response(&app, false).await;
    // Signed-in pages and HTMX partials too.
    for htmx in [false, true] {
        let mut request = browser.get(app.url("/"));
        if htmx {
            request = request.header("HX-Request", "true");
        }
        let res = request.send().await.unwrap();
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
    let browser = app.signed_in_browser("ann@example.org", "member").await;
    for (client, path) in [(&app.client, "/login"), (&browser, "/")] {
        let html = client
            .get(app.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let marker = r#"<meta name="htmx-config" content='"#;
        let start = html.find(marker).expect("an htmx-config meta") + marker.len();
        let end = html[start..].find('\'').unwrap() + start;
        let config: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(config["allowEval"], false, "{path}");
        assert_eq!(config["selfRequestsOnly"], true, "{path}");
        assert_eq!(config["historyCacheSize"], 0, "{path}");
        assert_eq!(config["includeIndicatorStyles"], false, "{path}");
        assert!(html.contains(r#"<script src="/static/htmx.min.js""#));
        assert!(!html.contains("<script>"), "no inline script");
        assert!(html.contains(r#"<meta name="csrf-token" content=""#));
    }
}

/// Set-Cookie headers of a response, as sent.
fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn assert_cookie_attributes(cookie: &str, https: bool) {
    let attributes: Vec<String> = cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    let has = |a: &str| attributes.iter().any(|x| x == a);
    assert!(has("httponly"), "{cookie}");
    assert!(has("samesite=lax"), "{cookie}");
    assert!(has("path=/"), "{cookie}");
    assert!(
        !attributes.iter().any(|a| a.starts_with("domain")),
        "{cookie}"
    );
    let name = cookie.split('=').next().unwrap();
    if https {
        assert!(has("secure"), "{cookie}");
        assert!(name.starts_with("__Host-"), "{cookie}");
    } else {
        assert!(!has("secure"), "{cookie}");
        assert!(!name.starts_with("__Host-"), "{cookie}");
    }
}

/// A browser that keeps its cookies by hand, from the Set-Cookie headers as sent, so that
/// `Secure` cookies of the https settings can be used over the test's plain HTTP.
struct HandBrowser {
    client: reqwest::Client,
    jar: Vec<(String, String)>,
    /// Every Set-Cookie header seen, in order.
    seen: Vec<String>,
}

impl HandBrowser {
    fn new() -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn keep(&mut self, res: &reqwest::Response) {
        for cookie in set_cookies(res) {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.jar.retain(|(n, _)| n != name);
            let removed = value.is_empty() || cookie.to_ascii_lowercase().contains("max-age=0");
            if !removed {
                self.jar.push((name.to_string(), value.to_string()));
            }
            self.seen.push(cookie);
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, url: String) -> reqwest::Response {
        let res = self
            .client
            .get(url)
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&res);
        res
    }

    async fn page(&mut self, url: String) -> String {
        self.get(url).await.text().await.unwrap()
    }

    async fn post(&mut self, url: String, form: &[(&str, &str)]) -> reqwest::Response {
        let res = self
            .client
            .post(url)
            .header("Cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(&res);
        res
    }
}

#[actix_web::test]
async fn with_an_https_public_url_cookies_are_secure_and_host_prefixed() {
    let app = spawn_app_with(TestSettings::new().public_url(HTTPS_URL)).await;
    app.add_member("ann@example.org", "member");
    let mut browser = HandBrowser::new();

    let res = browser.get(app.url("/login")).await;
    let first = set_cookies(&res);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("__Host-latchkey_browser="));
    let html = res.text().await.unwrap();
    let csrf = form_value(&html, "csrf_token").unwrap();

    let res = browser
        .post(
            app.url("/login"),
            &[("email", "ann@example.org"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(set_cookies(&res)
        .iter()
        .any(|c| c.starts_with("__Host-latchkey_signin=")));
    let (token, _) = mail_for(&app, "ann@example.org", HTTPS_URL).await;

    let html = browser
        .page(app.url(&format!("/auth/verify?token={}", urlencode(&token))))
        .await;
    let csrf = form_value(&html, "csrf_token").unwrap();
    let res = browser
        .post(
            app.url("/auth/verify"),
            &[("token", &token), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert!(set_cookies(&res)
        .iter()
        .any(|c| c.starts_with("__Host-latchkey_session=")));
    let res = browser.get(app.url("/")).await;
    assert_eq!(res.status(), 200, "signed in through the __Host- cookies");
    let html = res.text().await.unwrap();
    let csrf = form_value(&html, "csrf_token").unwrap();

    // Logging out removes the session cookie: a removal a browser accepts needs the same
    // name, `Secure` and `Path=/`.
    let res = browser
        .post(app.url("/logout"), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(res.status(), 303);

    assert!(browser.seen.len() >= 3, "{:?}", browser.seen);
    for cookie in &browser.seen {
        assert_cookie_attributes(cookie, true);
    }
}

#[actix_web::test]
async fn over_http_cookies_are_http_only_lax_and_path_root() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", "member");
    let mut browser = HandBrowser::new();
    let res = browser.get(app.url("/login")).await;
    assert!(set_cookies(&res)[0].starts_with("latchkey_browser="));
    let csrf = form_value(&res.text().await.unwrap(), "csrf_token").unwrap();
    browser
        .post(
            app.url("/login"),
            &[("email", "ann@example.org"), ("csrf_token", &csrf)],
        )
        .await;
    let (token, _) = mail_for(&app, "ann@example.org", &app.address).await;
    let html = browser
        .page(app.url(&format!("/auth/verify?token={}", urlencode(&token))))
        .await;
    let csrf = form_value(&html, "csrf_token").unwrap();
    let res = browser
        .post(
            app.url("/auth/verify"),
            &[("token", &token), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(res.status(), 303);
    let names: Vec<_> = browser
        .seen
        .iter()
        .map(|c| c.split('=').next().unwrap().to_string())
        .collect();
    for expected in ["latchkey_browser", "latchkey_signin", "latchkey_session"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    for cookie in &browser.seen {
        assert_cookie_attributes(cookie, false);
    }
    // Static files and health checks set no cookie at all.
    for path in ["/static/app.css", "/healthz"] {
        let res = reqwest::get(app.url(path)).await.unwrap();
        assert!(set_cookies(&res).is_empty(), "{path}");
    }
}

#[actix_web::test]
async fn head_works_on_pages_without_a_body() {
    let app = spawn_app().await;
    let browser = app.signed_in_browser("ann@example.org", "member").await;
    for (path, status) in [
        ("/login", 200),
        ("/", 200),
        ("/static/htmx.min.js", 200),
        ("/healthz", 200),
        ("/auth/verify?token=garbage", 400),
        ("/auth/cancel?token=garbage", 400),
        ("/no-such-page", 404),
    ] {
        let get = browser.get(app.url(path)).send().await.unwrap();
        assert_eq!(get.status(), status, "GET {path}");
        let get_type = get.headers().get("content-type").cloned();
        let res = browser.head(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), status, "HEAD {path}");
        assert_eq!(
            res.headers().get("content-type").cloned(),
            get_type,
            "{path}"
        );
        assert!(res.bytes().await.unwrap().is_empty(), "HEAD {path}");
    }
}

// ---------------------------------------------------------------------------------------
// Limits

#[actix_web::test]
async fn bodies_over_16_kib_get_413_and_write_nothing() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", "member");
    let browser = new_browser();
    let csrf = app.csrf(&browser, "/login").await;
    let padding = format!("/{}", "a".repeat(17 * 1024));
    let before = snapshot(&app);

    // With a Content-Length: refused before a byte is read.
    let res = browser
        .post(app.url("/login"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("email", "ann@example.org"),
            ("next", padding.as_str()),
        ])
        .send()
        .await
        .unwrap();
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
    assert_eq!(snapshot(&app), before, "nothing written");

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
        .post(app.url("/login"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("email", "ann@example.org"),
            ("filler", fill.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn a_body_still_arriving_10_s_after_the_head_gets_408_and_the_connection_closes() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", "member");
    let (cookie, csrf) = browser_cookie_header(&app).await;
    let body = format!("csrf_token={}&email=ann%40example.org", urlencode(&csrf));
    let before = snapshot(&app);

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
    assert_eq!(snapshot(&app), before, "nothing written");
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

/// Writes `request` as is and reads the answer until the server closes.
async fn raw_request(port: u16, request: impl AsRef<[u8]>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // The server may answer and close before reading everything; that is its right.
    let _ = stream.write_all(request.as_ref()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
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
    let browser = new_browser();
    let before = snapshot(&app);
    let too_long = format!("{}@{long_domain}", "a".repeat(64));
    assert!(too_long.len() > 254);
    let much_too_long = format!("{}@example.org", "a".repeat(5000));
    for email in [too_long.as_str(), much_too_long.as_str()] {
        let res = app.request_link(&browser, email).await;
        assert_eq!(res.status(), 422, "{} characters", email.len());
        let html = res.text().await.unwrap();
        assert!(html.contains(r#"name="email""#));
        assert!(!html.contains(&"a".repeat(300)), "the echo is bounded");
    }
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(snapshot(&app), before, "nothing written");

    // At the limit, an address of an allowed domain does get in: the length is what refused.
    let fits = format!("{}@{short_domain}", "a".repeat(64));
    assert!(fits.len() <= 254);
    assert_eq!(app.request_link(&browser, &fits).await.status(), 200);
    assert_eq!(app.count("sign_in_requests"), 1);
}

// ---------------------------------------------------------------------------------------
// Where links and redirects point

#[actix_web::test]
async fn next_values_that_leave_the_site_end_on_the_dashboard() {
    let app = spawn_app().await;
    let cases = [
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),
        ("/sessions?x=1", "/sessions?x=1"),
    ];
    for (n, (next, expected)) in cases.into_iter().enumerate() {
        let email = format!("user{n}@example.org");
        app.add_member(&email, "member");
        let browser = new_browser();
        // Carried in the form of GET /login?next=…, as a page would.
        let html = browser
            .get(app.url(&format!("/login?next={}", urlencode(next))))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if expected == "/" {
            assert!(!html.contains("evil"), "{next}: {html}");
        }
        let res = app
            .post_form(&browser, "/login", &[("email", &email), ("next", next)])
            .await;
        assert_eq!(res.status(), 200);
        let (token, _) = mail_for(&app, &email, &app.address).await;
        let res = app.confirm_link(&browser, &token).await;
        assert_eq!(res.status(), 303, "{next}");
        let location = res.headers()["location"].to_str().unwrap();
        assert_eq!(location, expected, "{next}");
        let resolved = url::Url::parse(&app.address)
            .unwrap()
            .join(location)
            .unwrap();
        assert_eq!(
            resolved.origin(),
            url::Url::parse(&app.address).unwrap().origin()
        );
    }
}

#[actix_web::test]
async fn a_forged_host_header_does_not_change_the_link_in_the_email() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", "member");
    let browser = new_browser();
    let csrf = app.csrf(&browser, "/login").await;
    let res = browser
        .post(app.url("/login"))
        .header("Host", "evil.example")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "https")
        .header("Forwarded", "host=evil.example;proto=https")
        .form(&[("email", "ann@example.org"), ("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mail = app.sign_in_mail(1).await;
    assert!(
        mail.link
            .starts_with(&format!("{}/auth/verify?token=", app.address)),
        "{}",
        mail.link
    );
    assert!(mail.cancel_link.starts_with(&app.address));
    let raw = &app.smtp.received()[0].data;
    assert!(!raw.contains("evil.example"), "{raw}");
}
