//! Issue #23's seventh attack: one signed-in member fills the audit from the forward-auth
//! check. Before the fix, a thousand checks naming a thousand unregistered origins wrote a
//! thousand `app_denied` rows in 1.5 s, each with text of the member's choosing. Now an app
//! that is not registered audits nothing, and a refusal by a registered app is audited at most
//! once a minute per member, whatever the app.

use futures_util::stream::{self, StreamExt as _};
use latchkey::domain::role::Role;

use crate::forward_auth::{register, AppHost};
use crate::helpers::{spawn_app, Browser, TestApp};

const CHECKS: usize = 1000;
/// Checks in flight at once, as a proxy in front of a busy page sends them.
const IN_FLIGHT: usize = 32;

fn app_denied_rows(app: &TestApp) -> Vec<latchkey::audit::rows::AuditRow> {
    app.audit()
        .into_iter()
        .filter(|row| row.event == "app_denied")
        .collect()
}

/// `/auth/check` with the wiki's valid app cookie and `headers`; the status.
async fn check(proxy: &Browser, cookie: &str, headers: &[(&str, String)]) -> u16 {
    let mut request = proxy.get("/auth/check").header("Cookie", cookie);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.await.status().as_u16()
}

#[actix_web::test]
async fn a_thousand_checks_for_unregistered_apps_write_nothing_and_refusals_one_row_a_minute() {
    let app = spawn_app().await;
    let mallory = app.member(Role::Member, "mallory@example.org").await;
    for (name, origin, roles) in [
        ("wiki", "https://wiki.example.org", vec![Role::Member]),
        ("payroll", "https://payroll.example.org", vec![Role::Admin]),
        ("hr", "https://hr.example.org", vec![Role::Admin]),
    ] {
        register(&app, name, origin, &roles, &[]);
    }
    let wiki = AppHost::new(&app, "wiki", "https://wiki.example.org");
    assert_eq!(wiki.open(&mallory, "/").await.status(), 303);
    let cookie = wiki.cookie().unwrap();
    let proxy = app.visitor();
    let wiki_url = ("X-Original-URL", "https://wiki.example.org/".to_string());
    assert_eq!(
        check(&proxy, &cookie, &[wiki_url]).await,
        200,
        "the cookie is valid"
    );

    // The flood: each check reports a distinct unregistered origin carrying text of the
    // member's choosing; every other one also names an app of that name (which does not exist).
    let before = app.count("login_audit");
    let filler = "chosen-by-mallory-".repeat(12);
    let started = std::time::Instant::now();
    let statuses: Vec<(usize, u16)> = stream::iter(0..CHECKS)
        .map(|n| {
            let url = (
                "X-Original-URL",
                format!("https://app-{n}.example.net/{filler}?{filler}{n}"),
            );
            let headers = if n % 2 == 0 {
                vec![("X-Latchkey-App", format!("app-{n}")), url]
            } else {
                vec![url]
            };
            let (proxy, cookie) = (&proxy, &cookie);
            async move { (n, check(proxy, cookie, &headers).await) }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    eprintln!("{CHECKS} checks in {:?}", started.elapsed());
    for (n, status) in statuses {
        assert_eq!(status, 403, "check {n}: an unregistered app is refused");
    }
    let written = app.count("login_audit") - before;
    assert!(written <= 1, "{written} audit rows for {CHECKS} checks");
    assert!(
        app_denied_rows(&app).is_empty(),
        "an app that is not registered audits nothing"
    );
    assert!(
        app.audit()
            .iter()
            .all(|row| !row.detail.contains("chosen-by-mallory")),
        "no text of the member's choosing in the audit"
    );

    // Two registered apps refuse her within the minute, each more than once: one row.
    let payroll = AppHost::new(&app, "payroll", "https://payroll.example.org");
    let hr = AppHost::new(&app, "hr", "https://hr.example.org");
    for _ in 0..3 {
        assert_eq!(payroll.ask(&mallory, "/").await.status(), 403);
        assert_eq!(hr.ask(&mallory, "/").await.status(), 403);
    }
    let denied = app_denied_rows(&app);
    let details: Vec<&str> = denied.iter().map(|row| row.detail.as_str()).collect();
    assert_eq!(denied.len(), 1, "once a minute per member: {details:?}");
    assert_eq!(denied[0].email.as_deref(), Some("mallory@example.org"));
    assert!(
        denied[0]
            .detail
            .starts_with("payroll (https://payroll.example.org)"),
        "{}",
        denied[0].detail
    );
}
