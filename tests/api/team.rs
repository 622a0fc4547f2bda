//! `/team` through HTTP: add, change role, deactivate; as plain forms and with HTMX; the
//! last-admin rule; what deactivation does to a live session; escaping.

use diesel::prelude::*;
use latchkey::domain::ids::MemberId;
use latchkey::domain::role::Role;
use latchkey::schema::members;

use crate::helpers::{
    assert_redirect_to, attr, one, parse_page, select, spawn_app, text, texts, TestApp,
};

fn member(app: &TestApp, email: &str) -> Option<(MemberId, String, bool)> {
    members::table
        .filter(members::email.eq(email))
        .select((members::id, members::role, members::active))
        .first(&mut app.conn())
        .optional()
        .unwrap()
}

#[actix_web::test]
async fn admins_add_change_and_deactivate_members_with_plain_forms() {
    let app = spawn_app().await;
    let admin = app
        .member(Role::Admin, "ada@example.org")
        .await
        .csrf_from("/team");

    let res = admin
        .post("/team")
        .form(&[("email", " Nia@Example.ORG "), ("role", "auditor")])
        .await;
    assert_redirect_to(&res, "/team");
    let (id, role, active) = member(&app, "Nia@example.org").expect("added, canonical");
    assert_eq!((role.as_str(), active), ("auditor", true));

    let res = admin
        .post(&format!("/team/{id}/role"))
        .form(&[("role", "member")])
        .await;
    assert_redirect_to(&res, "/team");
    assert_eq!(member(&app, "Nia@example.org").unwrap().1, "member");

    let res = admin.post(&format!("/team/{id}/deactivate")).await;
    assert_redirect_to(&res, "/team");
    assert!(!member(&app, "Nia@example.org").unwrap().2);

    let rows: Vec<_> = app
        .audit()
        .into_iter()
        .filter(|row| row.email.as_deref() == Some("Nia@example.org"))
        .collect();
    let events: Vec<&str> = rows.iter().map(|row| row.event.as_str()).collect();
    assert_eq!(
        events,
        ["member_added", "member_role_changed", "member_deactivated"]
    );
    assert!(rows
        .iter()
        .all(|row| row.actor.as_deref() == Some("ada@example.org")));

    let html = admin.get("/team").await.text().await.unwrap();
    let team = parse_page(&html);
    let row = text(one(&team, &format!("tr#member-{id}")));
    assert!(
        row.contains("Nia@example.org") && row.contains("deactivated"),
        "{row}"
    );
    assert!(row.contains("Re-activate as member"), "{row}");

    // Adding a deactivated address re-activates it.
    let res = admin
        .post("/team")
        .form(&[("email", "Nia@EXAMPLE.org"), ("role", "member")])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        member(&app, "Nia@example.org").unwrap(),
        (id, "member".into(), true)
    );
}

#[actix_web::test]
async fn team_forms_answer_htmx_with_the_part_that_changed() {
    let app = spawn_app().await;
    let admin = app
        .member(Role::Admin, "ada@example.org")
        .await
        .csrf_from("/team");

    let res = admin
        .post("/team")
        .form(&[("email", "nia@example.org"), ("role", "member")])
        .htmx()
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(!html.contains("<html"));
    assert!(
        html.trim_start().starts_with(r#"<section id="team">"#),
        "{html}"
    );
    assert!(html.contains("Added nia@example.org as member."), "{html}");
    let (id, _, _) = member(&app, "nia@example.org").unwrap();

    let res = admin
        .post(&format!("/team/{id}/role"))
        .form(&[("role", "auditor")])
        .htmx()
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(
        html.trim_start().starts_with(r#"<div id="team-rows">"#),
        "{html}"
    );
    assert!(html.contains("nia@example.org is now auditor."), "{html}");
    assert!(!html.contains("Add member"), "the rows only");

    let res = admin.post(&format!("/team/{id}/deactivate")).htmx().await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.trim_start().starts_with(r#"<div id="team-rows">"#));
    assert!(html.contains("Deactivated nia@example.org."), "{html}");
    assert!(!member(&app, "nia@example.org").unwrap().2);

    // The forms name their HTMX targets, and every form carries the token.
    let page = admin.get("/team").await.text().await.unwrap();
    assert!(page.contains(r##"hx-post="/team" hx-target="#team""##));
    assert!(page.contains(r##"hx-target="#team-rows""##));
    assert_eq!(
        page.matches("<form method=\"post\"").count(),
        page.matches("name=\"csrf_token\"").count(),
    );
}

#[actix_web::test]
async fn a_malformed_address_or_role_gets_422_and_adds_nobody() {
    let app = spawn_app().await;
    let admin = app
        .member(Role::Admin, "ada@example.org")
        .await
        .csrf_from("/team");
    let before = app.count("members");
    for (email, role, message) in [
        (
            "not an address",
            "member",
            "does not look like an email address",
        ),
        ("", "member", "Enter an email address."),
        ("bo@example.org", "superuser", "Pick a role."),
    ] {
        for htmx in [false, true] {
            let res = admin
                .post("/team")
                .form(&[("email", email), ("role", role)])
                .htmx_if(htmx)
                .await;
            assert_eq!(res.status(), 422, "{email:?} {role:?}");
            let html = res.text().await.unwrap();
            assert!(html.contains(message), "{html}");
            let form = parse_page(&html);
            let typed = one(&form, r#"form[action="/team"] input[name="email"]"#);
            assert_eq!(attr(typed, "value"), email, "what was typed comes back");
        }
    }
    let nia = app.add_member("nia@example.org", Role::Member);
    let res = admin
        .post(&format!("/team/{nia}/role"))
        .form(&[("role", "root")])
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(app.count("members"), before + 1);
    assert_eq!(member(&app, "nia@example.org").unwrap().1, "member");
}

#[actix_web::test]
async fn the_last_admin_can_be_neither_deactivated_nor_demoted() {
    let app = spawn_app().await;
    let admin = app
        .member(Role::Admin, "ada@example.org")
        .await
        .csrf_from("/team");
    let ada = app.add_member("ada@example.org", Role::Admin);
    let audit_before = app.audit().len();

    for htmx in [false, true] {
        let res = admin
            .post(&format!("/team/{ada}/deactivate"))
            .htmx_if(htmx)
            .await;
        assert_eq!(res.status(), 409);
        let html = res.text().await.unwrap();
        assert!(html.contains("without an active admin"), "{html}");
        let res = admin
            .post(&format!("/team/{ada}/role"))
            .form(&[("role", "member")])
            .htmx_if(htmx)
            .await;
        assert_eq!(res.status(), 409);
        // Nor through the add form.
        let res = admin
            .post("/team")
            .form(&[("email", "ada@example.org"), ("role", "auditor")])
            .htmx_if(htmx)
            .await;
        assert_eq!(res.status(), 409);
    }
    assert_eq!(
        member(&app, "ada@example.org").unwrap(),
        (ada, "admin".into(), true)
    );
    assert_eq!(
        app.audit().len(),
        audit_before,
        "nothing changed, nothing audited"
    );
    assert_eq!(admin.get("/team").await.status(), 200);

    // With a second admin, the first may step down (and leaves the admin-only page).
    let bea = app.add_member("bea@example.org", Role::Admin);
    let res = admin
        .post(&format!("/team/{ada}/role"))
        .form(&[("role", "auditor")])
        .await;
    assert_redirect_to(&res, "/");
    assert_eq!(admin.get("/team").await.status(), 403);
    assert_eq!(
        member(&app, "bea@example.org").unwrap(),
        (bea, "admin".into(), true)
    );
}

#[actix_web::test]
async fn unknown_member_ids_are_404() {
    let app = spawn_app().await;
    let admin = app
        .member(Role::Admin, "ada@example.org")
        .await
        .csrf_from("/team");
    for path in [
        "/team/999999/role",
        "/team/999999/deactivate",
        "/team/abc/deactivate",
        "/team/-1/role",
    ] {
        let res = admin.post(path).form(&[("role", "member")]).await;
        assert_eq!(res.status(), 404, "{path}");
    }
}

#[actix_web::test]
async fn deactivation_ends_the_members_live_session_at_once() {
    let app = spawn_app().await;
    let admin = app
        .member(Role::Admin, "ada@example.org")
        .await
        .csrf_from("/team");
    let member_browser = app.member(Role::Member, "mo@example.org").await;
    let mo = app.add_member("mo@example.org", Role::Member);
    assert_eq!(member_browser.get("/").await.status(), 200);

    let res = admin.post(&format!("/team/{mo}/deactivate")).await;
    assert_eq!(res.status(), 303);

    let res = member_browser.get("/sessions").await;
    assert_redirect_to(&res, "/login?next=%2Fsessions");
    let res = member_browser.get("/").htmx().await;
    assert_eq!(res.status(), 401);
    assert_eq!(app.count(&format!("sessions WHERE member_id = {mo}")), 0);
    let detail = app
        .audit()
        .into_iter()
        .find(|row| row.event == "member_deactivated")
        .unwrap()
        .detail;
    assert!(detail.starts_with("1 sessions ended"), "{detail}");
}

#[actix_web::test]
async fn an_admin_who_deactivates_themselves_is_signed_out() {
    let app = spawn_app().await;
    let admin = app
        .member(Role::Admin, "ada@example.org")
        .await
        .csrf_from("/team");
    app.add_member("bea@example.org", Role::Admin);
    let ada = app.add_member("ada@example.org", Role::Admin);
    let res = admin.post(&format!("/team/{ada}/deactivate")).await;
    assert_redirect_to(&res, "/login");
    assert_eq!(admin.get("/").await.status(), 303);
}

#[actix_web::test]
async fn hostile_addresses_show_as_text_on_the_team_page() {
    let app = spawn_app().await;
    let admin = app
        .member(Role::Admin, "ada@example.org")
        .await
        .csrf_from("/team");
    // Not an address the app would accept; written straight to the table, as a careless
    // import might.
    diesel::insert_into(members::table)
        .values((
            members::email.eq("<script>alert(1)</script>\r\n@example.org"),
            members::mailbox_key.eq("<script>alert(1)</script>\r\n@example.org"),
            members::role.eq("member"),
        ))
        .execute(&mut app.conn())
        .unwrap();
    let html = admin.get("/team").await.text().await.unwrap();
    let team = parse_page(&html);
    assert!(select(&team, "script:not([src])").is_empty(), "{html}");
    let hostile = "<script>alert(1)</script>\n@example.org";
    let emails = texts(&team, r#"tr[id^="member-"] td:first-child"#);
    assert!(emails.iter().any(|email| email == hostile), "{emails:?}");
    // HTML parsing reads CRLF as LF; the bytes show that the CR was kept, not dropped.
    assert!(html.contains("\r\n@example.org"));
}

#[actix_web::test]
async fn a_stored_address_that_is_not_canonical_is_listed_but_never_signs_in() {
    let app = spawn_app().await;
    let admin = app
        .member(Role::Admin, "ada@example.org")
        .await
        .csrf_from("/team");
    // Written past Latchkey (which stores only canonical addresses): the domain's case.
    let id: MemberId = diesel::insert_into(members::table)
        .values((
            members::email.eq("eve@EXAMPLE.org"),
            members::mailbox_key.eq("eve@example.org"),
            members::role.eq("member"),
        ))
        .returning(members::id)
        .get_result(&mut app.conn())
        .unwrap();
    // Whatever reads her as a member to act on gets an error, not an address to mail.
    let err = latchkey::models::member::find(&mut app.conn(), id).unwrap_err();
    assert!(
        format!("{err:?}").contains("not in canonical form"),
        "{err:?}"
    );
    // The team page still lists the row as stored, for an admin to see.
    let res = admin.get("/team").await;
    assert_eq!(res.status(), 200);
    let team = parse_page(&res.text().await.unwrap());
    let emails = texts(&team, r#"tr[id^="member-"] td:first-child"#);
    assert!(
        emails.iter().any(|email| email == "eve@EXAMPLE.org"),
        "{emails:?}"
    );
}
