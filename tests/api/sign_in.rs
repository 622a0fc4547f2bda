//! The sign-in flow through HTTP: real app, real PostgreSQL, real SMTP.

use latchkey::domain::role::Role;
use std::time::Duration;

use crate::helpers::{
    form_value, one, parse_page, select, spawn_app, spawn_app_with, text, urlencode, TestSettings,
};

#[actix_web::test]
async fn a_member_signs_in_by_link_and_lands_on_the_dashboard() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();

    let res = browser.request_link("  ann@Example.ORG ").await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("Check your inbox"), "{body}");

    let mail = app.sign_in_mail(1).await;
    assert!(
        mail.to.contains("ann@example.org"),
        "mail goes to the stored address: {}",
        mail.to
    );
    assert!(mail
        .link
        .starts_with(&format!("{}/auth/verify?token=", app.address)));
    assert_eq!(mail.code.len(), 6);
    assert!(mail.cancel_link.contains("/auth/cancel?token="));

    // Following the link only shows a confirmation page.
    let page = browser.get(&mail.link).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign in as ann@example.org?"), "{html}");
    assert_eq!(app.count("sessions"), 0, "GET must not sign in");

    let csrf = form_value(&html, "csrf_token").unwrap();
    let res = browser
        .post("/auth/verify")
        .form(&[("token", &mail.token)])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/");

    let dashboard = browser.get("/").await;
    assert_eq!(dashboard.status(), 200);
    assert!(dashboard.text().await.unwrap().contains("ann@example.org"));

    let events = app.audit_events();
    assert_eq!(
        events,
        ["member_added", "link_requested", "link_sent", "signed_in"],
        "{events:?}"
    );
    let signed_in = app
        .audit()
        .into_iter()
        .find(|r| r.event == "signed_in")
        .unwrap();
    let requested = app
        .audit()
        .into_iter()
        .find(|r| r.event == "link_requested")
        .unwrap();
    assert_eq!(signed_in.request_id, requested.request_id);
    assert!(
        signed_in.detail.contains("via link"),
        "{}",
        signed_in.detail
    );
}

#[actix_web::test]
async fn the_code_signs_in_the_asking_browser() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    browser.request_link("ann@example.org").await;
    let mail = app.sign_in_mail(1).await;
    let res = browser
        .post("/auth/code")
        .form(&[("code", &mail.code)])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(browser.get("/").await.status(), 200);
    let signed_in = app
        .audit()
        .into_iter()
        .find(|r| r.event == "signed_in")
        .unwrap();
    assert!(
        signed_in.detail.contains("via code"),
        "{}",
        signed_in.detail
    );
}

#[actix_web::test]
async fn a_link_works_once() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    assert_eq!(app.sign_in(&browser, "ann@example.org").await.status(), 303);
    let mail = app.sign_in_mail(1).await;
    let again = browser.confirm_link(&mail.token).await;
    assert_eq!(again.status(), 410);
    assert!(again.text().await.unwrap().contains("already been used"));
    assert!(app.audit_events().contains(&"link_reused".to_string()));
}

#[actix_web::test]
async fn unknown_and_allowed_addresses_get_the_same_answer() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let a = app.visitor().request_link("ann@example.org").await;
    let b = app.visitor().request_link("nobody@example.org").await;
    assert_eq!(a.status(), b.status());
    let strip = |html: String, email: &str| html.replace(email, "EMAIL");
    let csrf_free = |html: String| {
        html.lines()
            .filter(|l| !l.to_lowercase().contains("csrf"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let a = csrf_free(strip(a.text().await.unwrap(), "ann@example.org"));
    let b = csrf_free(strip(b.text().await.unwrap(), "nobody@example.org"));
    assert_eq!(a, b);
    app.smtp.wait_for(1, Duration::from_secs(5)).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.smtp.received().len(), 1, "only the member gets mail");
    assert!(app.audit_events().contains(&"login_denied".to_string()));
}

#[actix_web::test]
async fn a_malformed_address_gets_422_with_the_form() {
    let app = spawn_app().await;
    let res = app.visitor().request_link("not an address").await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert_eq!(
        select(&parse_page(&html), r#"input[name="email"]"#).len(),
        1
    );
    assert!(html.contains("does not look like an email address"));
    assert_eq!(app.count("sign_in_requests"), 0);
    let long = format!("{}@example.org", "a".repeat(250));
    assert_eq!(app.visitor().request_link(&long).await.status(), 422);
}

#[actix_web::test]
async fn the_link_in_another_browser_offers_approval_and_never_burns_the_token() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let asking = app.visitor();
    asking.request_link("ann@example.org").await;
    let mail = app.sign_in_mail(1).await;

    let other = app.visitor();
    let page = other.get(&mail.link).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("on another device"), "{html}");
    assert!(app.audit_events().contains(&"link_prefetched".to_string()));

    // Posting the link from the wrong browser: 403, nothing used up.
    let csrf = form_value(&html, "csrf_token").unwrap();
    let res = other
        .post("/auth/verify")
        .form(&[("token", &mail.token)])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 403);
    assert!(app
        .audit_events()
        .contains(&"link_wrong_browser".to_string()));

    // The asking browser can still use it.
    assert_eq!(asking.confirm_link(&mail.token).await.status(), 303);
}

#[actix_web::test]
async fn forged_tampered_and_truncated_tokens_are_refused_without_a_session() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    browser.request_link("ann@example.org").await;
    let mail = app.sign_in_mail(1).await;
    let mut tampered = mail.token.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let truncated = &mail.token[..mail.token.len() - 2];
    let oversized = "A".repeat(5000);
    let csrf = browser.csrf("/login").await;
    for token in [
        tampered.as_str(),
        truncated,
        "garbage",
        oversized.as_str(),
        "",
    ] {
        let res = browser
            .post("/auth/verify")
            .form(&[("token", token)])
            .csrf(&csrf)
            .await;
        assert_eq!(res.status(), 400, "{token}");
        let page = browser
            .get(&format!("/auth/verify?token={}", urlencode(token)))
            .await;
        assert_eq!(page.status(), 400);
    }
    assert_eq!(app.count("sessions"), 0);
    // The real token still works.
    assert_eq!(browser.confirm_link(&mail.token).await.status(), 303);
}

#[actix_web::test]
async fn an_expired_link_gets_410() {
    let app = spawn_app_with(TestSettings::new().link_ttl(Duration::from_secs(1))).await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    browser.request_link("ann@example.org").await;
    let mail = app.sign_in_mail(1).await;
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    let res = browser.confirm_link(&mail.token).await;
    assert_eq!(res.status(), 410);
    assert!(res.text().await.unwrap().contains("expired"));
    assert_eq!(app.count("sessions"), 0);
    assert!(app.audit_events().contains(&"link_expired".to_string()));
}

#[actix_web::test]
async fn logout_ends_the_session_server_side() {
    let app = spawn_app().await;
    let browser = app.member(Role::Member, "ann@example.org").await;
    assert_eq!(app.count("sessions"), 1);
    let csrf = browser.csrf("/").await;
    let res = browser.post("/logout").csrf(&csrf).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/login");
    assert!(res.headers().contains_key("clear-site-data"));
    assert_eq!(app.count("sessions"), 0);
    let after = browser.get("/").await;
    assert_eq!(after.status(), 303);
}

#[actix_web::test]
async fn twenty_concurrent_posts_of_one_token_give_exactly_one_session() {
    use std::future::IntoFuture as _;
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    browser.request_link("ann@example.org").await;
    let mail = app.sign_in_mail(1).await;
    let csrf = browser.csrf("/login").await;
    let fields = [("token", mail.token.as_str())];
    let posts = (0..20).map(|_| {
        browser
            .post("/auth/verify")
            .form(&fields)
            .csrf(&csrf)
            .into_future()
    });
    let statuses: Vec<u16> = futures_util::future::join_all(posts)
        .await
        .into_iter()
        .map(|res| res.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 303).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 410).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(app.count("sessions WHERE member_id IS NOT NULL"), 1);
    let events = app.audit_events();
    assert_eq!(events.iter().filter(|e| *e == "signed_in").count(), 1);
    assert_eq!(events.iter().filter(|e| *e == "link_reused").count(), 19);
}

#[actix_web::test]
async fn five_wrong_codes_end_the_code_and_the_link() {
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
    for attempt in 1..=4 {
        let res = browser.post("/auth/code").form(&[("code", wrong)]).await;
        assert_eq!(res.status(), 400, "attempt {attempt}");
        let html = res.text().await.unwrap();
        assert!(html.contains(&format!("{} tr", 5 - attempt)), "{html}");
    }
    let fifth = browser.post("/auth/code").form(&[("code", wrong)]).await;
    assert_eq!(fifth.status(), 410);
    // The right code no longer works, and neither does the link.
    let right = browser
        .post("/auth/code")
        .form(&[("code", &mail.code)])
        .await;
    assert_ne!(right.status(), 303);
    assert_eq!(browser.confirm_link(&mail.token).await.status(), 410);
    assert_eq!(app.count("sessions"), 0);
    let events = app.audit_events();
    assert_eq!(events.iter().filter(|e| *e == "code_failed").count(), 5);
}

#[actix_web::test]
async fn approval_with_the_right_number_signs_in_the_asking_browser_only() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let asking = app.visitor();
    asking.request_link("ann@example.org").await;
    let mail = app.sign_in_mail(1).await;

    let waiting = asking.get("/auth/wait").htmx().await;
    let html = waiting.text().await.unwrap();
    assert!(!html.contains("<html"), "HTMX gets the partial only");
    let shown = number_in(&html);

    let phone = app.visitor();
    let page = phone.get(&mail.link).await.text().await.unwrap();
    assert_approval_form_hides_the_number(&page, shown);
    let csrf = form_value(&page, "csrf_token").unwrap();
    let res = phone
        .post("/auth/approve")
        .form(&[("token", &mail.token), ("number", &shown.to_string())])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.count("sessions"),
        0,
        "approving signs nobody in by itself"
    );

    let done = asking.get("/auth/wait").htmx().await;
    assert_eq!(done.status(), 200);
    assert_eq!(done.headers()["hx-redirect"], "/");
    assert_eq!(asking.get("/").await.status(), 200);
    assert_eq!(
        phone.get("/").await.status(),
        303,
        "the approving device stays signed out"
    );
    let signed_in = app
        .audit()
        .into_iter()
        .find(|r| r.event == "signed_in")
        .unwrap();
    assert!(
        signed_in.detail.contains("via approval"),
        "{}",
        signed_in.detail
    );
}

#[actix_web::test]
async fn approval_with_a_wrong_number_cancels_the_request() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let asking = app.visitor();
    asking.request_link("ann@example.org").await;
    let mail = app.sign_in_mail(1).await;
    let html = asking.get("/auth/wait").await.text().await.unwrap();
    let shown = number_in(&html);
    let phone = app.visitor();
    let page = phone.get(&mail.link).await.text().await.unwrap();
    assert_approval_form_hides_the_number(&page, shown);
    let wrong = if shown == 99 { 10 } else { shown + 1 };
    let csrf = form_value(&page, "csrf_token").unwrap();
    let res = phone
        .post("/auth/approve")
        .form(&[("token", &mail.token), ("number", &wrong.to_string())])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 403);
    assert!(app
        .audit_events()
        .contains(&"approval_mismatch".to_string()));
    let after = asking.get("/auth/wait").await.text().await.unwrap();
    assert!(after.contains("no longer open"), "{after}");
    assert_eq!(asking.confirm_link(&mail.token).await.status(), 410);
}

fn number_in(html: &str) -> i16 {
    text(one(&parse_page(html), "strong.number"))
        .parse()
        .unwrap()
}

/// The approving page asks for the number as typed text and shows it nowhere: picking among
/// offered numbers was a 1-in-3 guess for whoever asked for the link.
fn assert_approval_form_hides_the_number(html: &str, shown: i16) {
    let page = parse_page(html);
    let inputs = select(
        &page,
        r#"form[action="/auth/approve"] input[name="number"]"#,
    );
    assert_eq!(inputs.len(), 1, "one text input for the number");
    assert_eq!(inputs[0].value().attr("value"), None, "no value filled in");
    let buttons = select(&page, r#"button[name="number"]"#);
    assert_eq!(buttons.len(), 0, "no numbers to pick from");
    assert_eq!(select(&page, ".number").len(), 0, "no number is shown");
    let shown = shown.to_string();
    for element in select(&page, "*") {
        for (name, value) in element.value().attrs() {
            assert_ne!(value, shown, "the page carries the number in {name}=");
        }
    }
}

#[actix_web::test]
async fn not_you_cancels_the_request_and_tells_the_admins() {
    let app = spawn_app_with(TestSettings::new().admins(&["boss@example.org"])).await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    browser.request_link("ann@example.org").await;
    let mail = app.sign_in_mail(1).await;

    let other = app.visitor();
    let page = other.get(&mail.cancel_link).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        !app.audit_events().contains(&"link_cancelled".to_string()),
        "GET changes nothing"
    );
    let csrf = form_value(&html, "csrf_token").unwrap();
    let res = other
        .post("/auth/cancel")
        .form(&[("token", &mail.token)])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 200);
    assert!(app.audit_events().contains(&"link_cancelled".to_string()));
    assert_eq!(browser.confirm_link(&mail.token).await.status(), 410);
    let mails = app.smtp.wait_for(2, Duration::from_secs(10)).await;
    let to_admin = mails.iter().find(|m| {
        m.header("To")
            .unwrap_or_default()
            .contains("boss@example.org")
    });
    assert!(to_admin.is_some(), "the admin was told");
}

#[actix_web::test]
async fn the_old_cookie_is_dead_after_logout() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    assert_eq!(app.sign_in(&browser, "ann@example.org").await.status(), 303);
    let cookies = browser.cookie_header().unwrap();
    assert!(cookies.contains("latchkey_session="), "{cookies}");
    let csrf = browser.csrf("/").await;
    browser.post("/logout").csrf(&csrf).await;
    // Replay the cookies from before logout in a fresh client.
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = replay
        .get(app.url("/"))
        .header("Cookie", cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
}

#[actix_web::test]
async fn a_deactivated_members_open_session_ends_at_once() {
    let app = spawn_app().await;
    let browser = app.member(Role::Member, "ann@example.org").await;
    assert_eq!(browser.get("/").await.status(), 200);
    let id = app.add_member("ann@example.org", Role::Member);
    latchkey::models::member::deactivate(&mut app.conn(), id, "test").unwrap();
    app.sync_cache().await;
    assert_eq!(browser.get("/").await.status(), 303);
    // And a deactivated member cannot ask for a new link.
    let before = app.smtp.received().len();
    browser.request_link("ann@example.org").await;
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.smtp.received().len(), before);
    assert_eq!(app.audit_events().last().unwrap(), "login_denied");
}

#[actix_web::test]
async fn a_new_browser_for_a_known_member_gets_a_new_sign_in_email() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    assert_eq!(
        app.sign_in(&app.visitor(), "ann@example.org")
            .await
            .status(),
        303
    );
    let first_count = app.smtp.received().len();
    assert_eq!(first_count, 1, "no notice on the very first sign-in");
    assert_eq!(
        app.sign_in(&app.visitor(), "ann@example.org")
            .await
            .status(),
        303
    );
    let mails = app.smtp.wait_for(3, Duration::from_secs(10)).await;
    assert!(mails.iter().any(|m| m
        .header("Subject")
        .unwrap_or_default()
        .contains("New sign-in")));
}

#[actix_web::test]
async fn allowed_domains_admit_new_members_and_admins_are_ensured() {
    let app = spawn_app_with(
        TestSettings::new()
            .allowed_domains(&["team.example"])
            .admins(&["boss@example.org"]),
    )
    .await;
    let res = app.sign_in(&app.visitor(), "newcomer@TEAM.example").await;
    assert_eq!(res.status(), 303);
    let boss = latchkey::models::member::find_by_email(
        &mut app.conn(),
        &latchkey::domain::email_address::EmailAddress::parse("boss@example.org").unwrap(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(boss.role(), latchkey::domain::role::Role::Admin);
    assert!(boss.active);
}

#[actix_web::test]
async fn the_login_form_answers_htmx_with_the_partial_and_pages_answer_head() {
    let app = spawn_app().await;
    let browser = app.visitor();
    let csrf = browser.csrf("/login").await;
    let res = browser
        .post("/login")
        .htmx()
        .form(&[("email", "x@example.org")])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(
        !html.contains("<html") && html.contains("Check your inbox"),
        "{html}"
    );
    let head = browser.head("/login").await;
    assert_eq!(head.status(), 200);
    assert!(head.text().await.unwrap().is_empty());
}

#[actix_web::test]
async fn anonymous_page_views_write_nothing() {
    let app = spawn_app().await;
    let before = (
        app.count("sessions"),
        app.count("login_audit"),
        app.count("sign_in_requests"),
    );
    for path in [
        "/login",
        "/login?next=/audit",
        "/static/htmx.min.js",
        "/healthz",
        "/readyz",
    ] {
        assert_eq!(app.visitor().get(path).await.status(), 200, "{path}");
    }
    let after = (
        app.count("sessions"),
        app.count("login_audit"),
        app.count("sign_in_requests"),
    );
    assert_eq!(before, after);
}

#[actix_web::test]
async fn not_signed_in_pages_redirect_with_next_and_htmx_gets_401() {
    let app = spawn_app().await;
    let res = app.visitor().get("/sessions?x=1").await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/login?next=%2Fsessions%3Fx%3D1");
    let res = app.visitor().get("/").htmx().await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["hx-redirect"], "/login");
}

#[actix_web::test]
async fn next_is_honoured_after_sign_in() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    browser
        .post("/login")
        .form(&[("email", "ann@example.org"), ("next", "/sessions?tab=mine")])
        .await;
    let mail = app.sign_in_mail(1).await;
    let res = browser.confirm_link(&mail.token).await;
    assert_eq!(res.headers()["location"], "/sessions?tab=mine");
}

#[actix_web::test]
async fn an_idle_session_ends_on_the_server() {
    let app = spawn_app_with(TestSettings::new().session_idle(Duration::from_secs(2))).await;
    let browser = app.member(Role::Member, "ann@example.org").await;
    assert_eq!(browser.get("/").await.status(), 200);
    actix_web::rt::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(browser.get("/").await.status(), 303);
}

#[actix_web::test]
async fn an_active_session_still_ends_at_its_absolute_lifetime() {
    let app = spawn_app_with(
        TestSettings::new()
            .session_idle(Duration::from_secs(2))
            .session_max(Duration::from_secs(4)),
    )
    .await;
    let browser = app.member(Role::Member, "ann@example.org").await;
    // Busy every 0.7 s: the idle timeout never bites, the absolute one does.
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    while started.elapsed() < Duration::from_millis(5200) {
        statuses.push(browser.get("/").await.status().as_u16());
        actix_web::rt::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(statuses[0], 200);
    assert!(
        statuses.iter().filter(|&&s| s == 200).count() >= 4,
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&303), "{statuses:?}");
    assert!(app.audit_events().contains(&"session_expired".to_string()));
    assert_eq!(
        app.count("sessions"),
        0,
        "the expired session is deleted, not kept"
    );
}

#[actix_web::test]
async fn timer_polls_do_not_keep_an_idle_session_alive() {
    let app = spawn_app_with(TestSettings::new().session_idle(Duration::from_secs(2))).await;
    let browser = app.member(Role::Member, "ann@example.org").await;
    for _ in 0..4 {
        actix_web::rt::time::sleep(Duration::from_millis(800)).await;
        browser
            .get("/")
            .htmx()
            .header("X-Latchkey-Poll", "timer")
            .await;
    }
    assert_eq!(browser.get("/").await.status(), 303);
}
