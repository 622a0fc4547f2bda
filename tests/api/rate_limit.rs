//! `LATCHKEY_LOGIN_RATE` (the posts that start a sign-in, per client IP, in memory) and
//! `LATCHKEY_EMAIL_RATE` (links sent per address, in PostgreSQL), through HTTP.

use latchkey::domain::role::Role;
use std::time::Duration;

use crate::helpers::{form_value, spawn_app, spawn_app_with, TestApp, TestSettings};

/// A POST to `path` with this browser's CSRF token, from an optional forwarded address.
fn throttled_rows(app: &TestApp) -> Vec<latchkey::audit::rows::AuditRow> {
    app.audit()
        .into_iter()
        .filter(|row| row.event == "login_throttled")
        .collect()
}

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds")
}

#[actix_web::test]
async fn the_post_after_the_budget_gets_429_with_retry_after_and_is_audited() {
    let app = spawn_app_with(TestSettings::new().login_rate(3, Duration::from_secs(60))).await;
    let browser = app.visitor();
    for n in 1..=3 {
        let res = browser
            .post("/login")
            .form(&[("email", "x@example.org")])
            .await;
        assert_eq!(res.status(), 200, "post {n} is within the budget");
    }
    let res = browser
        .post("/login")
        .form(&[("email", "x@example.org")])
        .await;
    assert_eq!(res.status(), 429);
    let wait = retry_after(&res);
    assert!(
        (1..=20).contains(&wait),
        "one post comes back every 20s: {wait}"
    );
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(html.contains("<html"), "a whole page: {html}");
    assert!(html.contains("Too many attempts"), "{html}");

    // HTMX gets the partial alone.
    let res = browser
        .post("/login")
        .htmx()
        .form(&[("email", "x@example.org")])
        .await;
    assert_eq!(res.status(), 429);
    assert!(retry_after(&res) >= 1);
    let partial = res.text().await.unwrap();
    assert!(partial.contains("Too many attempts"), "{partial}");
    assert!(!partial.contains("<html"), "{partial}");

    let rows = throttled_rows(&app);
    assert_eq!(rows.len(), 2, "each refusal is audited");
    let row = &rows[0];
    assert_eq!(row.ip.as_deref(), Some("127.0.0.1"));
    assert!(
        row.user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("LatchkeyTest/1.0")),
        "{:?}",
        row.user_agent
    );
    assert!(row.detail.contains("POST /login"), "{}", row.detail);
    assert!(row.detail.contains("LATCHKEY_LOGIN_RATE"), "{}", row.detail);
    // Only the three posts within the budget reached the handler.
    assert_eq!(
        app.audit_events()
            .iter()
            .filter(|e| *e == "login_denied")
            .count(),
        3
    );
}

#[actix_web::test]
async fn only_the_starts_of_a_sign_in_are_counted() {
    let app = spawn_app_with(TestSettings::new().login_rate(2, Duration::from_secs(60))).await;
    let browser = app.visitor();
    // The later steps, a passkey ceremony's start and the confirmation of a passkey by a
    // signed-in member are bounded otherwise: never counted, however many.
    let uncounted: [(&str, &[(&str, &str)]); 5] = [
        ("/auth/verify", &[("token", "garbage")]),
        ("/auth/code", &[("code", "123456")]),
        ("/auth/approve", &[("token", "garbage"), ("number", "12")]),
        ("/auth/passkey/start", &[]),
        ("/passkeys/confirm/finish", &[]),
    ];
    for _ in 0..10 {
        for (path, fields) in uncounted {
            let res = browser.post(path).form(fields).await;
            assert_ne!(res.status(), 429, "{path} is not counted");
        }
    }
    // The two starts share one budget, so an attacker cannot spread guesses across them.
    let starts: [(&str, &[(&str, &str)]); 2] = [
        ("/login", &[("email", "x@example.org")]),
        ("/auth/passkey/finish", &[]),
    ];
    for (path, fields) in starts {
        let res = browser.post(path).form(fields).await;
        assert_ne!(res.status(), 429, "{path} is within the budget");
    }
    for (path, fields) in starts {
        let res = browser.post(path).form(fields).await;
        assert_eq!(res.status(), 429, "{path} is over the shared budget");
    }
    let rows = throttled_rows(&app);
    let details: Vec<_> = rows.iter().map(|r| r.detail.as_str()).collect();
    for path in ["/login", "/auth/passkey/finish"] {
        assert!(
            details.iter().any(|d| d.contains(&format!("POST {path} "))),
            "{path}: {details:?}"
        );
    }
    // Over the budget, the later steps still answer as before.
    for (path, fields) in uncounted {
        let res = browser.post(path).form(fields).await;
        assert_ne!(res.status(), 429, "{path} is not counted");
    }
    let res = browser
        .post("/auth/cancel")
        .form(&[("token", "garbage")])
        .await;
    assert_ne!(res.status(), 429);
    // A percent-encoded path reaches the same handler, and the same budget.
    let res = browser
        .post("/%6Cogin")
        .form(&[("email", "x@example.org")])
        .await;
    assert_eq!(res.status(), 429);
}

/// With Latchkey's own rates, an office behind one address signs in without waiting: twenty
/// people by link within a minute, one counted post each. The budget is still a budget.
#[actix_web::test]
async fn twenty_members_sign_in_from_one_address_within_a_minute() {
    let app = spawn_app_with(TestSettings::new().default_rates()).await;
    let started = std::time::Instant::now();
    for n in 1..=20 {
        let email = format!("member{n}@example.org");
        app.add_member(&email, Role::Member);
        let browser = app.visitor();
        let res = app.sign_in(&browser, &email).await;
        assert_eq!(res.status(), 303, "member {n} signed in");
        assert_eq!(browser.get("/").await.status(), 200, "member {n} is in");
    }
    assert!(throttled_rows(&app).is_empty());

    // Then the same address posts on until refused: 30 in a burst, and one more for every
    // two seconds that passed since the first (30/min refills evenly).
    let browser = app.visitor();
    let mut accepted = 20u64;
    let refused = loop {
        let res = browser
            .post("/login")
            .form(&[("email", "x@example.org")])
            .await;
        if res.status() == 429 {
            break res;
        }
        assert_eq!(res.status(), 200);
        accepted += 1;
        assert!(accepted <= 60, "never refused");
    };
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    let refilled = elapsed.as_secs() / 2 + 1;
    assert!(
        (30..=30 + refilled).contains(&accepted),
        "{accepted} posts passed in {elapsed:?}"
    );
    let wait = retry_after(&refused);
    assert!(
        (1..=2).contains(&wait),
        "one post comes back every 2s: {wait}"
    );
    let html = refused.text().await.unwrap();
    assert!(html.contains("Too many attempts"), "{html}");
    let rows = throttled_rows(&app);
    assert_eq!(rows.len(), 1);
    assert!(rows[0].detail.contains("POST /login"), "{}", rows[0].detail);
    assert!(rows[0].detail.contains("(30 per 1m)"), "{}", rows[0].detail);
    assert_eq!(rows[0].ip.as_deref(), Some("127.0.0.1"));
}

#[actix_web::test]
async fn forwarded_addresses_from_an_untrusted_peer_do_not_escape_the_limit() {
    let app = spawn_app_with(TestSettings::new().login_rate(3, Duration::from_secs(60))).await;
    let browser = app.visitor();
    let mut statuses = Vec::new();
    for n in 0..6u8 {
        let forged = format!("203.0.113.{n}, 198.51.100.{}", 100 + n);
        let res = browser
            .post("/login")
            .form(&[("email", "x@example.org")])
            .header("X-Forwarded-For", &forged)
            .await;
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    for row in throttled_rows(&app) {
        assert_eq!(
            row.ip.as_deref(),
            Some("127.0.0.1"),
            "the peer is the client"
        );
    }
}

#[actix_web::test]
async fn through_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let app = spawn_app_with(
        TestSettings::new()
            .login_rate(2, Duration::from_secs(60))
            .trusted_proxies(&["127.0.0.1/32"]),
    )
    .await;
    let browser = app.visitor();
    let email = [("email", "x@example.org")];
    // What the client wrote (left) proves nothing; the proxy appended the real address.
    let first = "6.6.6.6, 198.51.100.1";
    for _ in 0..2 {
        let res = browser
            .post("/login")
            .form(&email)
            .header("X-Forwarded-For", first)
            .await;
        assert_eq!(res.status(), 200);
    }
    let res = browser
        .post("/login")
        .form(&email)
        .header("X-Forwarded-For", first)
        .await;
    assert_eq!(res.status(), 429);
    // Changing the client-written part does not help either.
    let res = browser
        .post("/login")
        .form(&email)
        .header("X-Forwarded-For", "7.7.7.7, 198.51.100.1")
        .await;
    assert_eq!(res.status(), 429);

    // Another client behind the same proxy has a budget of its own.
    for _ in 0..2 {
        let res = browser
            .post("/login")
            .form(&email)
            .header("X-Forwarded-For", "198.51.100.2")
            .await;
        assert_eq!(res.status(), 200);
    }
    let res = browser
        .post("/login")
        .form(&email)
        .header("X-Forwarded-For", "198.51.100.2")
        .await;
    assert_eq!(res.status(), 429);

    // IPv6 clients are counted by /64: rotating the host part does not help.
    for host in ["1", "2"] {
        let ip = format!("2001:db8:5:6::{host}");
        let res = browser
            .post("/login")
            .form(&email)
            .header("X-Forwarded-For", &ip)
            .await;
        assert_eq!(res.status(), 200);
    }
    let res = browser
        .post("/login")
        .form(&email)
        .header("X-Forwarded-For", "2001:db8:5:6:ffff::3")
        .await;
    assert_eq!(res.status(), 429);

    let ips: Vec<_> = throttled_rows(&app)
        .into_iter()
        .map(|row| row.ip.unwrap_or_default())
        .collect();
    assert_eq!(
        ips,
        [
            "198.51.100.1",
            "198.51.100.1",
            "198.51.100.2",
            "2001:db8:5:6:ffff::3"
        ]
    );
}

#[actix_web::test]
async fn page_views_are_never_limited() {
    let app = spawn_app_with(TestSettings::new().login_rate(2, Duration::from_secs(60))).await;
    let browser = app.visitor();
    for path in [
        "/login",
        "/login?next=/x",
        "/auth/verify?token=garbage",
        "/healthz",
    ] {
        for _ in 0..5 {
            let res = browser.get(path).await;
            assert_ne!(res.status(), 429, "GET {path}");
            let res = browser.head(path).await;
            assert_ne!(res.status(), 429, "HEAD {path}");
        }
    }
    // The views spent nothing: the whole budget is still there.
    for _ in 0..2 {
        let res = browser
            .post("/login")
            .form(&[("email", "x@example.org")])
            .await;
        assert_eq!(res.status(), 200);
    }
    // And once it is spent, pages still answer.
    let res = browser
        .post("/login")
        .form(&[("email", "x@example.org")])
        .await;
    assert_eq!(res.status(), 429);
    assert_eq!(app.get("/login").await.status(), 200);
}

/// The "check your inbox" answer without its CSRF token.
async fn answer_without_csrf(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let html = res.text().await.unwrap();
    let stripped = html
        .lines()
        .filter(|line| !line.to_lowercase().contains("csrf"))
        .collect::<Vec<_>>()
        .join("\n");
    (status, stripped)
}

#[actix_web::test]
async fn over_the_email_rate_the_answer_is_the_same_and_no_mail_is_sent() {
    let app = spawn_app_with(TestSettings::new().email_rate(2, Duration::from_secs(15 * 60))).await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    let first = answer_without_csrf(browser.request_link("ann@example.org").await).await;
    let second = answer_without_csrf(browser.request_link("ann@example.org").await).await;
    // From another browser, as an attacker flooding her inbox would.
    let third = answer_without_csrf(app.visitor().request_link("ann@example.org").await).await;
    let fourth = answer_without_csrf(browser.request_link("ann@example.org").await).await;
    assert_eq!(first.0, 200);
    assert_eq!(first, second);
    assert_eq!(first, third, "over the limit, the answer does not change");
    assert_eq!(first, fourth);

    app.smtp.wait_for(2, Duration::from_secs(10)).await;
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.smtp.received().len(), 2, "no mail over the limit");
    assert_eq!(app.count("sign_in_requests WHERE member_id IS NOT NULL"), 2);
    assert_eq!(
        app.count("sign_in_requests WHERE member_id IS NULL"),
        2,
        "over the limit, a decoy stands in so the browser still sees a pending request"
    );
    let throttled = throttled_rows(&app);
    assert_eq!(throttled.len(), 2);
    for row in &throttled {
        assert_eq!(row.email.as_deref(), Some("ann@example.org"));
        assert!(row.detail.contains("LATCHKEY_EMAIL_RATE"), "{}", row.detail);
    }
    // Another address has its own count.
    app.add_member("bob@example.org", Role::Member);
    browser.request_link("bob@example.org").await;
    app.smtp.wait_for(3, Duration::from_secs(10)).await;
}

#[actix_web::test]
async fn a_new_link_never_resets_a_dead_code() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    browser.request_link("ann@example.org").await;
    let mail = app.sign_in_mail(1).await;
    let wrong = if mail.code == "000000" {
        "111111"
    } else {
        "000000"
    };
    for n in 1..=5 {
        let res = browser.post("/auth/code").form(&[("code", wrong)]).await;
        let expected = if n < 5 { 400 } else { 410 };
        assert_eq!(res.status(), expected, "wrong code {n}");
    }
    // The sixth try, even with the right code, finds nothing to complete.
    let res = browser
        .post("/auth/code")
        .form(&[("code", &mail.code)])
        .await;
    assert_ne!(res.status(), 303);

    // A new link is a new request: the dead one stays dead, by code and by link.
    browser.request_link("ann@example.org").await;
    let second = app.sign_in_mail(2).await;
    let res = browser
        .post("/auth/code")
        .form(&[("code", &mail.code)])
        .await;
    if mail.code != second.code {
        assert_eq!(
            res.status(),
            400,
            "the old code does not work for the new request"
        );
    }
    let res = browser.confirm_link(&mail.token).await;
    assert_eq!(res.status(), 410, "the old link died with its code");
    #[derive(diesel::QueryableByName)]
    struct Failures {
        #[diesel(sql_type = diesel::sql_types::SmallInt)]
        code_failures: i16,
    }
    use diesel::RunQueryDsl as _;
    let failures: Vec<Failures> =
        diesel::sql_query("SELECT code_failures FROM sign_in_requests ORDER BY id")
            .load(&mut app.conn())
            .unwrap();
    assert_eq!(failures[0].code_failures, 5, "never reset");
    assert_eq!(app.count("sessions"), 0);
    // The new request works on its own terms.
    let res = browser
        .post("/auth/code")
        .form(&[("code", &second.code)])
        .await;
    assert_eq!(res.status(), 303);
}

#[actix_web::test]
async fn code_guesses_are_bounded_by_their_own_tries_and_new_links_by_the_ip_budget() {
    let app = spawn_app_with(TestSettings::new().login_rate(1, Duration::from_secs(60))).await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    assert_eq!(browser.request_link("ann@example.org").await.status(), 200);
    let mail = app.sign_in_mail(1).await;
    let wrong = if mail.code == "000000" {
        "111111"
    } else {
        "000000"
    };
    // The guesses are not counted against the IP; the request's own five tries end them.
    for n in 1..=5 {
        let res = browser.post("/auth/code").form(&[("code", wrong)]).await;
        let expected = if n < 5 { 400 } else { 410 };
        assert_eq!(res.status(), expected, "wrong code {n}");
    }
    // A new request, with five new tries, is a new sign-in start: over the budget.
    assert_eq!(browser.request_link("ann@example.org").await.status(), 429);
    let res = browser
        .post("/auth/code")
        .form(&[("code", &mail.code)])
        .await;
    assert_ne!(res.status(), 303, "the dead code stays dead");
    assert_eq!(app.count("sessions"), 0);
    assert_eq!(app.count("sign_in_requests"), 1);
    let page = browser.get("/login").await;
    let html = page.text().await.unwrap();
    assert!(form_value(&html, "csrf_token").is_some());
}
