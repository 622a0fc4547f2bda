//! CSRF through HTTP: every state-changing post needs this browser's token (field or
//! header) and a same-origin request, the token changes at sign-in, and no GET changes state.

use latchkey::domain::role::Role;
use std::time::Duration;

use crate::helpers::{spawn_app, Browser};

/// A post with `csrf` as its token, or with none.
async fn post_with(
    browser: &Browser,
    path: &str,
    fields: &[(&str, &str)],
    csrf: Option<&str>,
) -> reqwest::Response {
    let post = browser.post(path).form(fields);
    match csrf {
        Some(csrf) => post.csrf(csrf),
        None => post.without_csrf(),
    }
    .await
}

#[actix_web::test]
async fn state_changing_posts_without_the_right_token_get_403_and_change_nothing() {
    let app = spawn_app().await;
    let admin = app.member(Role::Admin, "admin@example.org").await;
    let admin_csrf = admin.csrf("/").await;
    app.add_member("bob@example.org", Role::Member);
    let asking = app.visitor();
    assert_eq!(asking.request_link("bob@example.org").await.status(), 200);
    let (token, code) = app.sign_in_mail_to("bob@example.org", &app.address).await;
    let stranger_csrf = app.visitor().csrf("/login").await;
    app.smtp.wait_for(2, Duration::from_secs(10)).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let before = app.snapshot();

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
            let res = post_with(&asking, path, fields, bad).await;
            assert_eq!(res.status(), 403, "{path} with {bad:?}");
        }
        for (path, fields) in &signed_in {
            let res = post_with(&admin, path, fields, bad).await;
            assert_eq!(res.status(), 403, "{path} with {bad:?}");
        }
    }
    // The signed-in member's token is no good in another browser either.
    for (path, fields) in &anonymous {
        let res = post_with(&asking, path, fields, Some(&admin_csrf)).await;
        assert_eq!(res.status(), 403, "{path} with the admin's token");
    }
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.snapshot(), before, "a refused post changes nothing");

    // Everything still works with the right tokens.
    assert_eq!(app.get("/").await.status(), 303);
    assert_eq!(admin.get("/").await.status(), 200);
    let res = asking.post("/auth/code").form(&[("code", &code)]).await;
    assert_eq!(res.status(), 303, "the request survived every forged post");
}

#[actix_web::test]
async fn the_csrf_header_works_instead_of_the_field() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    let csrf = browser.csrf("/login").await;
    let res = browser
        .post("/login")
        .header("X-CSRF-Token", &csrf)
        .form(&[("email", "ann@example.org")])
        .without_csrf()
        .await;
    assert_eq!(res.status(), 200);
    let (_, code) = app.sign_in_mail_to("ann@example.org", &app.address).await;
    // HTMX sends only the header; a JSON-free plain post works the same way.
    let res = browser
        .post("/auth/code")
        .header("X-CSRF-Token", &csrf)
        .htmx()
        .form(&[("code", code.as_str())])
        .without_csrf()
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["hx-redirect"], "/");

    // A wrong header is not rescued by a right field.
    let session_csrf = browser.csrf("/").await;
    let res = browser
        .post("/logout")
        .header("X-CSRF-Token", "wrong")
        .csrf(&session_csrf)
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(app.count("sessions"), 1);

    let res = browser
        .post("/logout")
        .header("X-CSRF-Token", &session_csrf)
        .without_csrf()
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.count("sessions"), 0);
}

#[actix_web::test]
async fn a_foreign_origin_or_a_cross_site_fetch_is_refused_even_with_a_valid_token() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    let csrf = browser.csrf("/login").await;
    let form = [("email", "ann@example.org")];
    let before = app.snapshot();
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
            .post("/login")
            .header(name, value)
            .form(&form)
            .csrf(&csrf)
            .await;
        assert_eq!(res.status(), 403, "{name}: {value}");
    }
    // `Origin: null` (what browsers send under no-referrer) counts only when Sec-Fetch-Site
    // vouches for the request.
    let res = browser
        .post("/login")
        .header("Origin", "null")
        .header("Sec-Fetch-Site", "cross-site")
        .form(&form)
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 403);
    // Origin is believed over Sec-Fetch-Site when both are present.
    let res = browser
        .post("/login")
        .header("Origin", "https://evil.example")
        .header("Sec-Fetch-Site", "same-origin")
        .form(&form)
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 403);
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.snapshot(), before);

    // A plain form post from one of this site's pages, as Chromium sends it.
    let res = browser
        .post("/login")
        .header("Origin", "null")
        .header("Sec-Fetch-Site", "same-origin")
        .form(&form)
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 200);

    // This site's own origin is fine.
    let res = browser
        .post("/login")
        .header("Origin", &app.address)
        .header("Sec-Fetch-Site", "same-origin")
        .form(&form)
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn after_sign_in_the_sessions_token_is_required() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    let before_sign_in = browser.csrf("/login").await;
    assert_eq!(app.sign_in(&browser, "ann@example.org").await.status(), 303);
    let session_csrf = browser.csrf("/").await;
    assert_ne!(
        session_csrf, before_sign_in,
        "signing in issues a new token"
    );

    let res = browser.post("/logout").csrf(&before_sign_in).await;
    assert_eq!(res.status(), 403, "the pre-sign-in token is dead");
    assert_eq!(app.count("sessions"), 1);
    assert!(!app.audit_events().contains(&"signed_out".to_string()));
    assert_eq!(browser.get("/").await.status(), 200);

    let res = browser.post("/logout").csrf(&session_csrf).await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.count("sessions"), 0);
}

#[actix_web::test]
async fn state_changing_routes_do_not_accept_get() {
    let app = spawn_app().await;
    let admin = app.member(Role::Admin, "admin@example.org").await;
    let member_id = app.add_member("bob@example.org", Role::Member);
    let before = app.snapshot();
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
        let res = admin.get(path).await;
        let status = res.status().as_u16();
        if path.starts_with("/team?") {
            // GET /team is the member list: a page, whatever the query says.
            assert!(status == 200 || status == 404, "GET {path}: {status}");
        } else {
            assert!(status == 404 || status == 405, "GET {path}: {status}");
        }
        let res = admin.head(path).await;
        assert!(
            matches!(res.status().as_u16(), 200 | 404 | 405),
            "HEAD {path}: {}",
            res.status()
        );
    }
    assert_eq!(app.snapshot(), before, "no GET changes anything");
    assert_eq!(admin.get("/").await.status(), 200);
}
