//! The sign-in flow through HTTP: real app, real PostgreSQL, real SMTP.

use crate::helpers::{form_value, new_browser, spawn_app, spawn_app_with, urlencode};

#[actix_web::test]
async fn a_member_signs_in_by_link_and_lands_on_the_dashboard() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", "member");
    let browser = new_browser();

    let res = app.request_link(&browser, "  ann@Example.ORG ").await;
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
    let page = browser.get(&mail.link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign in as ann@example.org?"), "{html}");
    assert_eq!(app.count("sessions"), 0, "GET must not sign in");

    let csrf = form_value(&html, "csrf_token").unwrap();
    let res = app
        .post_form_with_csrf(&browser, "/auth/verify", &[("token", &mail.token)], &csrf)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/");

    let dashboard = browser.get(app.url("/")).send().await.unwrap();
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
    app.add_member("ann@example.org", "member");
    let browser = new_browser();
    app.request_link(&browser, "ann@example.org").await;
    let mail = app.sign_in_mail(1).await;
    let res = app
        .post_form(&browser, "/auth/code", &[("code", &mail.code)])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        browser.get(app.url("/")).send().await.unwrap().status(),
        200
    );
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
    app.add_member("ann@example.org", "member");
    let browser = new_browser();
    assert_eq!(app.sign_in(&browser, "ann@example.org").await.status(), 303);
    let mail = app.sign_in_mail(1).await;
    let again = app.confirm_link(&browser, &mail.token).await;
    assert_eq!(again.status(), 410);
    assert!(again.text().await.unwrap().contains("already been used"));
    assert!(app.audit_events().contains(&"link_reused".to_string()));
}

#[actix_web::test]
async fn unknown_and_allowed_addresses_get_the_same_answer() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", "member");
    let a = app.request_link(&new_browser(), "ann@example.org").await;
    let b = app.request_link(&new_browser(), "nobody@example.org").await;
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
    app.smtp
        .wait_for(1, std::time::Duration::from_secs(5))
        .await;
    actix_web::rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.smtp.received().len(), 1, "only the member gets mail");
    assert!(app.audit_events().contains(&"login_denied".to_string()));
}

#[actix_web::test]
async fn a_malformed_address_gets_422_with_the_form() {
    let app = spawn_app().await;
    let res = app.request_link(&new_browser(), "not an address").await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"name="email""#));
    assert!(html.contains("does not look like an email address"));
    assert_eq!(app.count("sign_in_requests"), 0);
    let long = format!("{}@example.org", "a".repeat(250));
    assert_eq!(app.request_link(&new_browser(), &long).await.status(), 422);
}

#[actix_web::test]
async fn the_link_in_another_browser_offers_approval_and_never_burns_the_token() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", "member");
    let asking = new_browser();
    app.request_link(&asking, "ann@example.org").await;
    let mail = app.sign_in_mail(1).await;

    let other = new_browser();
    let page = other.get(&mail.link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("on another device"), "{html}");
    assert!(app.audit_events().contains(&"link_prefetched".to_string()));

    // Posting the link from the wrong browser: 403, nothing used up.
    let csrf = form_value(&html, "csrf_token").unwrap();
    let res = app
        .post_form_with_csrf(&other, "/auth/verify", &[("token", &mail.token)], &csrf)
        .await;
    assert_eq!(res.status(), 403);
    assert!(app
        .audit_events()
        .contains(&"link_wrong_browser".to_string()));

    // The asking browser can still use it.
    assert_eq!(app.confirm_link(&asking, &mail.token).await.status(), 303);
}

#[actix_web::test]
async fn forged_tampered_and_truncated_tokens_are_refused_without_a_session() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", "member");
    let browser = new_browser();
    app.request_link(&browser, "ann@example.org").await;
    let mail = app.sign_in_mail(1).await;
    let mut tampered = mail.token.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let truncated = &mail.token[..mail.token.len() - 2];
    let oversized = "A".repeat(5000);
    let csrf = app.csrf(&browser, "/login").await;
    for token in [
        tampered.as_str(),
        truncated,
        "garbage",
        oversized.as_str(),
        "",
    ] {
        let res = app
            .post_form_with_csrf(&browser, "/auth/verify", &[("token", token)], &csrf)
            .await;
        assert_eq!(res.status(), 400, "{token}");
        let page = browser
            .get(app.url(&format!("/auth/verify?token={}", urlencode(token))))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 400);
    }
    assert_eq!(app.count("sessions"), 0);
    // The real token still works.
    assert_eq!(app.confirm_link(&browser, &mail.token).await.status(), 303);
}

#[actix_web::test]
async fn an_expired_link_gets_410() {
    let app = spawn_app_with(|vars| {
        vars.insert("LATCHKEY_LINK_TTL".into(), "1s".into());
    })
    .await;
    app.add_member("ann@example.org", "member");
    let browser = new_browser();
    app.request_link(&browser, "ann@example.org").await;
    let mail = app.sign_in_mail(1).await;
    actix_web::rt::time::sleep(std::time::Duration::from_millis(1500)).await;
    let res = app.confirm_link(&browser, &mail.token).await;
    assert_eq!(res.status(), 410);
    assert!(res.text().await.unwrap().contains("expired"));
    assert_eq!(app.count("sessions"), 0);
    assert!(app.audit_events().contains(&"link_expired".to_string()));
}

#[actix_web::test]
async fn logout_ends_the_session_server_side() {
    let app = spawn_app().await;
    let browser = app.signed_in_browser("ann@example.org", "member").await;
    assert_eq!(app.count("sessions"), 1);
    let csrf = app.csrf(&browser, "/").await;
    let res = app
        .post_form_with_csrf(&browser, "/logout", &[], &csrf)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/login");
    assert!(res.headers().contains_key("clear-site-data"));
    assert_eq!(app.count("sessions"), 0);
    let after = browser.get(app.url("/")).send().await.unwrap();
    assert_eq!(after.status(), 303);
}
