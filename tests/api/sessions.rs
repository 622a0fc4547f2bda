//! `/sessions` through HTTP: who sees which sessions, the current one, revoking one, signing
//! out everywhere, and escaping of what browsers send.

use diesel::prelude::*;
use latchkey::domain::ids::MemberId;
use latchkey::domain::role::Role;
use latchkey::schema::sessions;

use scraper::{ElementRef, Html};

use crate::helpers::{
    assert_redirect_to, attr, one, parse_page, select, spawn_app, text, within, Browser, TestApp,
};

/// A browser named `user_agent` signed in as `email`; its posts carry the token of `/sessions`.
async fn signed_in_as(app: &TestApp, email: &str, user_agent: &str) -> Browser {
    let browser = app.visitor_as(user_agent).csrf_from("/sessions");
    app.signed_in(browser, email).await
}

/// Session ids of a member, by the user agent that signed them in.
fn session_of(app: &TestApp, member_id: MemberId, user_agent: &str) -> i64 {
    sessions::table
        .filter(sessions::member_id.eq(member_id))
        .filter(sessions::user_agent.eq(user_agent))
        .select(sessions::id)
        .first(&mut app.conn())
        .unwrap()
}

async fn html(browser: &Browser, path: &str) -> String {
    let res = browser.get(path).await;
    assert_eq!(res.status(), 200, "{path}");
    res.text().await.unwrap()
}

fn row(page: &Html, session_id: i64) -> Option<ElementRef<'_>> {
    select(page, &format!("tr#session-{session_id}"))
        .into_iter()
        .next()
}

/// The user agent a row's browser cell keeps on hover: the string the browser sent.
fn user_agent_of(row: ElementRef<'_>) -> &str {
    let cells = within(row, "td.agent");
    assert_eq!(cells.len(), 1, "{}", row.html());
    attr(cells[0], "title")
}

#[actix_web::test]
async fn members_see_their_own_sessions_and_this_one_is_marked() {
    let app = spawn_app().await;
    let mo = app.add_member("mo@example.org", Role::Member);
    app.add_member("ann@example.org", Role::Member);
    let laptop = signed_in_as(&app, "mo@example.org", "Laptop/1.0").await;
    let _phone = signed_in_as(&app, "mo@example.org", "Phone/2.0").await;
    let _other = signed_in_as(&app, "ann@example.org", "Elsewhere/3.0").await;

    let page = html(&laptop, "/sessions").await;
    let sessions = parse_page(&page);
    let laptop_row = row(&sessions, session_of(&app, mo, "Laptop/1.0")).expect("laptop listed");
    let phone_row = row(&sessions, session_of(&app, mo, "Phone/2.0")).expect("phone listed");
    assert!(text(laptop_row).contains("this browser") && text(laptop_row).contains("127.0.0.1"));
    assert!(
        !text(phone_row).contains("this browser"),
        "{}",
        phone_row.html()
    );
    assert_eq!(user_agent_of(phone_row), "Phone/2.0");
    assert_eq!(
        text(one(&sessions, "main")).matches("this browser").count(),
        1
    );
    assert!(!page.contains("Elsewhere"), "only their own");
    assert!(!page.contains("ann@example.org"));
}

#[actix_web::test]
async fn admins_see_everyones_sessions_with_the_address() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let ada = app.add_member("ada@example.org", Role::Admin);
    let admin = signed_in_as(&app, "ada@example.org", "AdminBrowser/1.0").await;
    let _ann = signed_in_as(&app, "ann@example.org", "AnnBrowser/1.0").await;

    let page = html(&admin, "/sessions").await;
    let sessions = parse_page(&page);
    let anns = select(&sessions, r#"tr[id^="session-"]"#)
        .into_iter()
        .find(|row| user_agent_of(*row) == "AnnBrowser/1.0")
        .expect("Ann's session listed");
    assert!(text(anns).contains("ann@example.org"), "{page}");
    let current = sessions::table
        .filter(sessions::member_id.eq(ada))
        .order(sessions::id.desc())
        .select(sessions::id)
        .first::<i64>(&mut app.conn())
        .unwrap();
    assert!(text(row(&sessions, current).unwrap()).contains("this browser"));
}

#[actix_web::test]
async fn revoking_ends_the_other_browsers_session() {
    let app = spawn_app().await;
    let mo = app.add_member("mo@example.org", Role::Member);
    let laptop = signed_in_as(&app, "mo@example.org", "Laptop/1.0").await;
    let phone = signed_in_as(&app, "mo@example.org", "Phone/2.0").await;
    let phone_session = session_of(&app, mo, "Phone/2.0");
    assert_eq!(phone.get("/").await.status(), 200);

    let res = laptop
        .post(&format!("/sessions/{phone_session}/revoke"))
        .await;
    assert_redirect_to(&res, "/sessions");

    let res = phone.get("/").await;
    assert_redirect_to(&res, "/login?next=%2F");
    assert_eq!(laptop.get("/").await.status(), 200);

    let revoked = app
        .audit()
        .into_iter()
        .find(|row| row.event == "session_revoked")
        .expect("audited");
    assert_eq!(revoked.email.as_deref(), Some("mo@example.org"));
    assert_eq!(revoked.actor.as_deref(), Some("mo@example.org"));
    assert!(revoked.detail.contains("Phone/2.0"), "{}", revoked.detail);

    // Once gone, it is gone.
    let res = laptop
        .post(&format!("/sessions/{phone_session}/revoke"))
        .await;
    assert_eq!(res.status(), 404);
}

#[actix_web::test]
async fn revoking_inline_answers_with_the_list() {
    let app = spawn_app().await;
    let mo = app.add_member("mo@example.org", Role::Member);
    let laptop = signed_in_as(&app, "mo@example.org", "Laptop/1.0").await;
    let _phone = signed_in_as(&app, "mo@example.org", "Phone/2.0").await;
    let phone_session = session_of(&app, mo, "Phone/2.0");
    let res = laptop
        .post(&format!("/sessions/{phone_session}/revoke"))
        .htmx()
        .await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(!page.contains("<html"));
    assert!(page.trim_start().starts_with(r#"<section id="sessions">"#));
    assert!(page.contains("has ended"), "{page}");
    assert!(row(&parse_page(&page), phone_session).is_none());
}

#[actix_web::test]
async fn members_cannot_revoke_someone_elses_session_but_admins_can() {
    let app = spawn_app().await;
    let ann = app.add_member("ann@example.org", Role::Member);
    app.add_member("ada@example.org", Role::Admin);
    app.add_member("mo@example.org", Role::Member);
    let mo = signed_in_as(&app, "mo@example.org", "Mo/1.0").await;
    let ann_browser = signed_in_as(&app, "ann@example.org", "Ann/1.0").await;
    let ann_session = session_of(&app, ann, "Ann/1.0");

    let res = mo.post(&format!("/sessions/{ann_session}/revoke")).await;
    assert_eq!(res.status(), 404);
    assert_eq!(ann_browser.get("/").await.status(), 200);

    let admin = signed_in_as(&app, "ada@example.org", "Ada/1.0").await;
    let res = admin.post(&format!("/sessions/{ann_session}/revoke")).await;
    assert_eq!(res.status(), 303);
    assert_eq!(ann_browser.get("/").await.status(), 303);
    let revoked = app
        .audit()
        .into_iter()
        .find(|row| row.event == "session_revoked")
        .unwrap();
    assert_eq!(revoked.email.as_deref(), Some("ann@example.org"));
    assert_eq!(revoked.actor.as_deref(), Some("ada@example.org"));
}

#[actix_web::test]
async fn revoking_this_browsers_own_session_signs_it_out() {
    let app = spawn_app().await;
    let mo = app.add_member("mo@example.org", Role::Member);
    let laptop = signed_in_as(&app, "mo@example.org", "Laptop/1.0").await;
    let own = session_of(&app, mo, "Laptop/1.0");
    let res = laptop.post(&format!("/sessions/{own}/revoke")).await;
    assert_redirect_to(&res, "/login");
    assert_eq!(laptop.get("/").await.status(), 303);
    assert_eq!(app.count(&format!("sessions WHERE member_id = {mo}")), 0);
}

#[actix_web::test]
async fn signing_out_everywhere_ends_every_session_of_the_member_only() {
    let app = spawn_app().await;
    let mo = app.add_member("mo@example.org", Role::Member);
    app.add_member("ann@example.org", Role::Member);
    let laptop = signed_in_as(&app, "mo@example.org", "Laptop/1.0").await;
    let phone = signed_in_as(&app, "mo@example.org", "Phone/2.0").await;
    let ann = signed_in_as(&app, "ann@example.org", "Ann/1.0").await;

    let res = laptop.post("/sessions/revoke-all").await;
    assert_redirect_to(&res, "/login");
    assert!(res.headers().contains_key("clear-site-data"));
    for browser in [&laptop, &phone] {
        assert_eq!(browser.get("/").await.status(), 303);
    }
    assert_eq!(ann.get("/").await.status(), 200);
    assert_eq!(app.count(&format!("sessions WHERE member_id = {mo}")), 0);
    let revoked = app
        .audit()
        .into_iter()
        .find(|row| row.event == "session_revoked")
        .unwrap();
    assert_eq!(revoked.email.as_deref(), Some("mo@example.org"));
    assert!(revoked.detail.contains("2 sessions"), "{}", revoked.detail);

    // With HTMX the whole page goes to the sign-in form.
    let again = signed_in_as(&app, "mo@example.org", "Laptop/1.0").await;
    let res = again.post("/sessions/revoke-all").htmx().await;
    assert_eq!(res.headers()["hx-redirect"], "/login");
}

#[actix_web::test]
async fn hostile_user_agents_show_as_text() {
    let app = spawn_app().await;
    app.add_member("mo@example.org", Role::Member);
    let agent = "<script>alert(1)</script>";
    let browser = signed_in_as(&app, "mo@example.org", agent).await;
    // Header values cannot carry CR/LF; a row can (an old or imported one).
    let _other = signed_in_as(&app, "mo@example.org", "Other/1.0").await;
    diesel::update(sessions::table.filter(sessions::user_agent.eq("Other/1.0")))
        .set(sessions::user_agent.eq("<img src=x>\r\nSet-Cookie: a=b"))
        .execute(&mut app.conn())
        .unwrap();
    let page = html(&browser, "/sessions").await;
    let sessions = parse_page(&page);
    assert!(select(&sessions, "script:not([src])").is_empty(), "{page}");
    assert!(select(&sessions, "img").is_empty(), "{page}");
    let mut agents: Vec<&str> = select(&sessions, r#"tr[id^="session-"]"#)
        .into_iter()
        .map(user_agent_of)
        .collect();
    agents.sort();
    // HTML parsing reads CRLF as LF; the bytes show that the CR was kept, not dropped.
    assert_eq!(
        agents,
        ["<img src=x>\nSet-Cookie: a=b", "<script>alert(1)</script>"]
    );
    assert!(page.contains("\r\nSet-Cookie: a=b"));
}
