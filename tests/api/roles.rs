//! The role matrix through HTTP: admin, auditor, member and anonymous against every route of
//! SPEC "HTTP" that needs a sign-in; and what the dashboard shows each role.

use diesel::prelude::*;
use latchkey::audit::rows::{AuditEvent, NewAuditRow};
use latchkey::domain::ids::MemberId;
use latchkey::domain::role::Role;
use latchkey::schema::{members, sessions};

use crate::helpers::{one, parse_page, select, spawn_app, text, urlencode, Browser, TestApp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

/// Every route behind the guard, with fields a handler would accept. Ids point at a member
/// and a session that exist but belong to nobody under test.
type Fields = Vec<(&'static str, &'static str)>;

fn routes(victim: MemberId, session: i64) -> Vec<(Method, String, Fields)> {
    vec![
        (Method::Get, "/".into(), vec![]),
        (Method::Get, "/audit".into(), vec![]),
        (Method::Get, "/audit.csv".into(), vec![]),
        (Method::Get, "/team".into(), vec![]),
        (Method::Get, "/sessions".into(), vec![]),
        (
            Method::Post,
            "/team".into(),
            vec![("email", "newcomer@example.org"), ("role", "member")],
        ),
        (
            Method::Post,
            format!("/team/{victim}/role"),
            vec![("role", "auditor")],
        ),
        (
            Method::Post,
            format!("/team/{victim}/name"),
            vec![("name", "Mallory")],
        ),
        (Method::Post, format!("/team/{victim}/groups"), vec![]),
        (Method::Post, format!("/team/{victim}/deactivate"), vec![]),
        (Method::Post, format!("/sessions/{session}/revoke"), vec![]),
        (Method::Post, "/sessions/revoke-all".into(), vec![]),
        (Method::Post, "/logout".into(), vec![]),
    ]
}

async fn send(
    browser: &Browser,
    csrf: &str,
    method: Method,
    path: &str,
    fields: &[(&str, &str)],
    htmx: bool,
) -> reqwest::Response {
    match method {
        Method::Get => browser.get(path),
        Method::Post => browser.post(path).form(fields).csrf(csrf),
    }
    .htmx_if(htmx)
    .await
}

/// A session row for `member_id` that no browser holds (as if signed in elsewhere).
fn stray_session(app: &TestApp, member_id: MemberId) -> i64 {
    diesel::insert_into(sessions::table)
        .values((
            sessions::key_digest.eq(latchkey::crypto::random_bytes::<32>().to_vec()),
            sessions::member_id.eq(member_id),
            sessions::state.eq(serde_json::json!({})),
            sessions::expires_at.eq(chrono::Utc::now() + chrono::Duration::hours(1)),
        ))
        .returning(sessions::id)
        .get_result(&mut app.conn())
        .unwrap()
}

fn member_state(app: &TestApp, id: MemberId) -> (String, bool) {
    members::table
        .find(id)
        .select((members::role, members::active))
        .first(&mut app.conn())
        .unwrap()
}

fn session_ids(app: &TestApp, member_id: MemberId) -> Vec<i64> {
    sessions::table
        .filter(sessions::member_id.eq(member_id))
        .order(sessions::id.asc())
        .select(sessions::id)
        .load(&mut app.conn())
        .unwrap()
}

#[actix_web::test]
async fn anonymous_requests_go_to_sign_in_and_htmx_gets_401() {
    let app = spawn_app().await;
    let victim = app.add_member("victim@example.org", Role::Member);
    let session = stray_session(&app, victim);
    let browser = app.visitor();
    let csrf = browser.csrf("/login").await;
    let members_before = app.count("members");

    for (method, path, fields) in routes(victim, session) {
        let res = send(&browser, &csrf, method, &path, &fields, false).await;
        assert_eq!(res.status(), 303, "{method:?} {path}");
        assert_eq!(
            res.headers()["location"],
            format!("/login?next={}", urlencode(&path)).as_str(),
            "{method:?} {path}"
        );

        let res = send(&browser, &csrf, method, &path, &fields, true).await;
        assert_eq!(res.status(), 401, "HTMX {method:?} {path}");
        assert_eq!(
            res.headers()["hx-redirect"],
            "/login",
            "HTMX {method:?} {path}"
        );
    }
    let res = browser.head("/audit").await;
    assert_eq!(res.status(), 303);

    assert_eq!(app.count("members"), members_before, "nothing was added");
    assert_eq!(member_state(&app, victim), ("member".into(), true));
    assert_eq!(
        session_ids(&app, victim),
        vec![session],
        "nothing was revoked"
    );
}

#[actix_web::test]
async fn auditors_and_members_get_403_beyond_their_role() {
    let app = spawn_app().await;
    let victim = app.add_member("victim@example.org", Role::Member);
    let session = stray_session(&app, victim);
    let auditor = app.member(Role::Auditor, "audrey@example.org").await;
    let member = app.member(Role::Member, "mo@example.org").await;
    let members_before = app.count("members");

    for (browser, who, forbidden) in [
        (&auditor, Role::Auditor, vec!["/team"]),
        (&member, Role::Member, vec!["/team", "/audit", "/audit.csv"]),
    ] {
        let csrf = browser.csrf("/").await;
        for (method, path, fields) in routes(victim, session) {
            let blocked = forbidden
                .iter()
                .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")));
            if !blocked {
                continue;
            }
            for htmx in [false, true] {
                let res = send(browser, &csrf, method, &path, &fields, htmx).await;
                assert_eq!(res.status(), 403, "{who} {method:?} {path} (htmx: {htmx})");
            }
        }
    }
    assert_eq!(app.count("members"), members_before, "nothing was added");
    assert_eq!(member_state(&app, victim), ("member".into(), true));
}

#[actix_web::test]
async fn each_role_reaches_its_routes() {
    let app = spawn_app().await;
    for role in Role::ALL {
        let email = format!("{role}@example.org");
        let browser = app.member(role, &email).await;
        let member_id = app.add_member(&email, role);
        let csrf = browser.csrf("/").await;
        let reads_audit = role.can_read_audit();
        let is_admin = role.is_admin();

        for (path, allowed) in [
            ("/", true),
            ("/sessions", true),
            ("/audit", reads_audit),
            ("/audit.csv", reads_audit),
            ("/team", is_admin),
        ] {
            let res = send(&browser, &csrf, Method::Get, path, &[], false).await;
            let expected = if allowed { 200 } else { 403 };
            assert_eq!(res.status(), expected, "{role} GET {path}");
            let res = browser.head(path).await;
            assert_eq!(res.status(), expected, "{role} HEAD {path}");
        }

        if is_admin {
            let victim = app.add_member(&format!("victim-of-{role}@example.org"), Role::Member);
            for (path, fields) in [
                (
                    "/team".to_string(),
                    vec![("email", "newcomer@example.org"), ("role", "member")],
                ),
                (format!("/team/{victim}/role"), vec![("role", "auditor")]),
                (format!("/team/{victim}/deactivate"), vec![]),
            ] {
                let res = send(&browser, &csrf, Method::Post, &path, &fields, false).await;
                assert_eq!(res.status(), 303, "{role} POST {path}");
                assert_eq!(res.headers()["location"], "/team");
            }
            assert_eq!(member_state(&app, victim), ("auditor".into(), false));
        }

        // Their own other session (another browser) can be revoked.
        let other = app.signed_in(app.visitor(), &email).await;
        let other_session = *session_ids(&app, member_id).last().unwrap();
        let path = format!("/sessions/{other_session}/revoke");
        let res = send(&browser, &csrf, Method::Post, &path, &[], false).await;
        assert_eq!(res.status(), 303, "{role} POST {path}");
        assert_eq!(res.headers()["location"], "/sessions");
        assert_eq!(other.get("/").await.status(), 303);

        // Signing out of one browser.
        let third = app.signed_in(app.visitor(), &email).await;
        let third_csrf = third.csrf("/").await;
        let res = send(&third, &third_csrf, Method::Post, "/logout", &[], false).await;
        assert_eq!(res.status(), 303, "{role} POST /logout");
        assert_eq!(res.headers()["location"], "/login");

        // And everywhere, last: it ends this browser's session too.
        let res = send(
            &browser,
            &csrf,
            Method::Post,
            "/sessions/revoke-all",
            &[],
            false,
        )
        .await;
        assert_eq!(res.status(), 303, "{role} POST /sessions/revoke-all");
        assert_eq!(res.headers()["location"], "/login");
        assert!(session_ids(&app, member_id).is_empty(), "{role}");
        assert_eq!(browser.get("/").await.status(), 303);
    }
}

fn record(app: &TestApp, event: AuditEvent, email: &str) {
    NewAuditRow::new(event)
        .email(email)
        .detail("seeded")
        .insert(&mut app.conn())
        .unwrap();
}

/// The number in the dashboard's `stat-<name>` box.
fn stat(html: &str, name: &str) -> i64 {
    let page = parse_page(html);
    text(one(&page, &format!("#stat-{name} > strong")))
        .parse()
        .unwrap()
}

#[actix_web::test]
async fn the_dashboard_counts_the_teams_day_for_readers_and_only_their_own_for_members() {
    let app = spawn_app().await;
    let auditor = app.member(Role::Auditor, "audrey@example.org").await;
    let member = app.member(Role::Member, "mo@example.org").await;
    record(&app, AuditEvent::CodeFailed, "mo@example.org");
    record(&app, AuditEvent::LinkExpired, "someone@example.org");
    record(&app, AuditEvent::LoginDenied, "stranger@example.org");
    record(&app, AuditEvent::MemberAdded, "secret-project@example.org");

    let html = auditor.get("/").await.text().await.unwrap();
    assert_eq!(stat(&html, "sign-ins"), 2, "{html}");
    assert_eq!(stat(&html, "failed"), 3, "{html}");
    assert_eq!(stat(&html, "sessions"), 2, "{html}");
    assert!(
        html.contains("secret-project@example.org"),
        "latest events: {html}"
    );
    let polling = r#"[hx-get="/"][hx-trigger="every 30s"]"#;
    assert_eq!(select(&parse_page(&html), polling).len(), 1);

    let html = member.get("/").await.text().await.unwrap();
    assert_eq!(stat(&html, "sign-ins"), 1, "{html}");
    assert_eq!(stat(&html, "failed"), 1, "{html}");
    assert_eq!(stat(&html, "sessions"), 1, "{html}");
    assert!(html.contains("Your latest events"));
    assert!(!html.contains("secret-project@example.org"), "{html}");
    assert!(!html.contains("audrey@example.org"), "{html}");

    // The 30-second refresh gets the partial alone.
    let res = member.get("/").htmx().await;
    assert_eq!(res.status(), 200);
    let partial = res.text().await.unwrap();
    assert!(partial
        .trim_start()
        .starts_with("<section id=\"dashboard\""));
    assert!(!partial.contains("<html"));
}

#[actix_web::test]
async fn percent_encoded_paths_get_the_same_access_policy() {
    let app = spawn_app().await;
    let member = app.member(Role::Member, "ann@example.org").await;
    for path in ["/audit", "/%61udit", "/team", "/%74eam", "/%74eam/1/role"] {
        let res = member.get(path).await;
        assert_eq!(res.status(), 403, "GET {path} as a member");
    }
    let res = app.get("/%74eam").await;
    assert_eq!(res.status(), 303, "signed out");
}
