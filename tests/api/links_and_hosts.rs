//! Where links and redirects point: a `next` that would leave the site ends on the dashboard,
//! and a forged `Host` does not reach the link in the mail (the public URL is the only base).

use crate::helpers::{spawn_app, urlencode};
use latchkey::domain::role::Role;

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
        app.add_member(&email, Role::Member);
        let browser = app.visitor();
        // Carried in the form of GET /login?next=…, as a page would.
        let html = browser
            .get(&format!("/login?next={}", urlencode(next)))
            .await
            .text()
            .await
            .unwrap();
        if expected == "/" {
            assert!(!html.contains("evil"), "{next}: {html}");
        }
        let res = browser
            .post("/login")
            .form(&[("email", &email), ("next", next)])
            .await;
        assert_eq!(res.status(), 200);
        let (token, _) = app.sign_in_mail_to(&email, &app.address).await;
        let res = browser.confirm_link(&token).await;
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
    app.add_member("ann@example.org", Role::Member);
    let browser = app.visitor();
    let csrf = browser.csrf("/login").await;
    let res = browser
        .post("/login")
        .header("Host", "evil.example")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "https")
        .header("Forwarded", "host=evil.example;proto=https")
        .form(&[("email", "ann@example.org")])
        .csrf(&csrf)
        .await;
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
