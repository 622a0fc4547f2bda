//! Groups and display names: `latchkey groups …` and `members add --name --group`, `/team`'s
//! name and groups forms (plain and HTMX), `/apps`'s groups, and forward auth letting a member
//! in by a group, handing the app `Remote-Groups` and `Remote-Name`, and shutting them out on
//! every instance once they leave it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use diesel::prelude::*;
use latchkey::domain::app_origin::AppOrigin;
use latchkey::domain::email_address::EmailAddress;
use latchkey::domain::group_name::GroupName;
use latchkey::domain::ids::MemberId;
use latchkey::domain::member_name::MemberName;
use latchkey::domain::role::Role;
use latchkey::models::app::{self, Access};
use latchkey::models::group;
use latchkey::models::member;

use crate::apps::{latchkey, ok};
use crate::forward_auth::{sync_everywhere, AppHost};
use crate::helpers::{assert_redirect_to, one, parse_page, spawn_app, text, TestApp};

fn group_name(name: &str) -> GroupName {
    GroupName::parse(name).unwrap()
}

fn email(address: &str) -> EmailAddress {
    EmailAddress::parse(address).unwrap()
}

/// Set-up: a group of this name.
fn add_group(app: &TestApp, name: &str) {
    group::add(&mut app.conn(), &group_name(name), "test").unwrap();
}

/// The member's name and groups, as the table holds them.
fn name_and_groups(app: &TestApp, id: MemberId) -> (Option<String>, Vec<String>) {
    let member = member::find(&mut app.conn(), id).unwrap().unwrap();
    (
        member.name.map(|name| name.to_string()),
        member.groups.iter().map(ToString::to_string).collect(),
    )
}

/// `(event, email, actor, detail)` of every audit row of these events, oldest first.
fn rows_of(app: &TestApp, events: &[&str]) -> Vec<(String, String, String, String)> {
    app.audit()
        .into_iter()
        .filter(|row| events.contains(&row.event.as_str()))
        .map(|row| {
            (
                row.event,
                row.email.unwrap_or_default(),
                row.actor.unwrap_or_default(),
                row.detail,
            )
        })
        .collect()
}

const GROUP_EVENTS: [&str; 5] = [
    "group_added",
    "group_removed",
    "group_member_added",
    "group_member_removed",
    "member_renamed",
];

#[actix_web::test]
async fn groups_are_managed_from_the_command_line_and_audited() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    app.add_member("bob@example.org", Role::Auditor);

    assert_eq!(
        ok(&latchkey(&app, &["groups", "add", "ops"])).trim(),
        "added group ops"
    );
    assert_eq!(
        ok(&latchkey(&app, &["groups", "add", "ops"])).trim(),
        "group ops exists already"
    );
    for bad in ["Ops", "ops team", "-ops", "ops,x"] {
        let out = latchkey(&app, &["groups", "add", bad]);
        assert!(!out.status.success(), "{bad:?} was accepted");
    }
    assert_eq!(app.count("groups"), 1);

    let out = ok(&latchkey(
        &app,
        &[
            "groups",
            "members",
            "ops",
            "--add",
            "ann@EXAMPLE.org",
            "--add",
            "bob@example.org",
        ],
    ));
    assert!(out.contains("added ann@example.org to ops"), "{out}");
    assert_eq!(
        ok(&latchkey(&app, &["groups", "list"])).trim(),
        "ops\tann@example.org,bob@example.org"
    );
    ok(&latchkey(
        &app,
        &["groups", "members", "ops", "--remove", "bob@example.org"],
    ));
    // Someone who is not on the team: nothing changes, not even the valid half.
    let out = latchkey(
        &app,
        &[
            "groups",
            "members",
            "ops",
            "--add",
            "bob@example.org",
            "--add",
            "nobody@example.org",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody@example.org"));
    let out = latchkey(
        &app,
        &["groups", "members", "nope", "--add", "bob@example.org"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no group nope"));
    assert_eq!(
        ok(&latchkey(&app, &["groups", "list"])).trim(),
        "ops\tann@example.org"
    );

    // A new member with a name and a group, in one command.
    let out = ok(&latchkey(
        &app,
        &[
            "members",
            "add",
            "carol@example.org",
            "--name",
            "Carol Díaz",
            "--group",
            "ops",
        ],
    ));
    assert!(out.contains("added carol@example.org as member"), "{out}");
    assert!(out.contains("added carol@example.org to ops"), "{out}");
    // An unknown group leaves no half-added member behind.
    let out = latchkey(
        &app,
        &["members", "add", "dan@example.org", "--group", "nope"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("latchkey groups add nope"));
    assert!(!out.status.success());
    let list = ok(&latchkey(&app, &["members", "list"]));
    assert!(
        list.lines()
            .any(|line| line == "carol@example.org\tmember\tactive\tCarol Díaz\tops"),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|line| line == "bob@example.org\tauditor\tactive\t\t"),
        "{list}"
    );
    assert!(!list.contains("dan@example.org"), "{list}");
    // A name is one line; `--name ""` removes it.
    let out = latchkey(
        &app,
        &["members", "add", "carol@example.org", "--name", "C\nD"],
    );
    assert!(!out.status.success());
    ok(&latchkey(
        &app,
        &["members", "add", "carol@example.org", "--name", ""],
    ));

    // Apps let groups in.
    let out = ok(&latchkey(
        &app,
        &[
            "apps",
            "add",
            "wiki",
            "https://wiki.example.org",
            "--groups",
            "ops",
        ],
    ));
    assert!(out.contains("(groups ops)"), "{out}");
    assert_eq!(
        ok(&latchkey(&app, &["apps", "list"])).trim(),
        "wiki\thttps://wiki.example.org\tproxy\tgroups ops"
    );
    let out = latchkey(
        &app,
        &[
            "apps",
            "add",
            "pad",
            "https://pad.example.org",
            "--groups",
            "nope",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no group nope"));

    // Removing a group empties it and takes it off the apps.
    let out = ok(&latchkey(&app, &["groups", "remove", "ops"]));
    assert_eq!(out.trim(), "removed group ops (2 members left it)");
    assert_eq!(app.count("group_members"), 0);
    assert_eq!(app.count("app_groups"), 0);
    assert!(!latchkey(&app, &["groups", "remove", "ops"])
        .status
        .success());

    let rows = rows_of(&app, &GROUP_EVENTS);
    let cli = |event: &str, email: &str, detail: &str| {
        (
            event.to_string(),
            email.to_string(),
            "cli".to_string(),
            detail.to_string(),
        )
    };
    assert_eq!(
        rows,
        [
            cli("group_added", "", "ops"),
            cli("group_member_added", "ann@example.org", "ops"),
            cli("group_member_added", "bob@example.org", "ops"),
            cli("group_member_removed", "bob@example.org", "ops"),
            cli(
                "member_renamed",
                "carol@example.org",
                "(no name) -> \"Carol Díaz\""
            ),
            cli("group_member_added", "carol@example.org", "ops"),
            cli(
                "member_renamed",
                "carol@example.org",
                "\"Carol Díaz\" -> (no name)"
            ),
            cli(
                "group_removed",
                "",
                "ops; members ann@example.org,carol@example.org; let in by apps wiki"
            ),
        ]
    );
}

#[actix_web::test]
async fn admins_change_names_and_groups_on_the_team_page_with_htmx_and_plain_forms() {
    let app = spawn_app().await;
    let admin = app
        .member(Role::Admin, "ada@example.org")
        .await
        .csrf_from("/team");
    add_group(&app, "ops");
    add_group(&app, "editors");
    let nia = app.add_member("nia@example.org", Role::Member);

    let page = admin.get("/team").await.text().await.unwrap();
    let html = parse_page(&page);
    let row = one(&html, &format!("tr#member-{nia}"));
    let form = crate::helpers::within(row, &format!(r#"form[action="/team/{nia}/groups"]"#));
    assert_eq!(form.len(), 1, "{page}");
    assert_eq!(
        crate::helpers::within(form[0], r#"input[type="checkbox"][name="groups"]"#).len(),
        2
    );

    let res = admin
        .post(&format!("/team/{nia}/groups"))
        .form(&[("groups", "ops"), ("groups", "editors")])
        .htmx()
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(
        html.trim_start().starts_with(r#"<div id="team-rows">"#),
        "{html}"
    );
    assert!(
        html.contains("nia@example.org joined editors, ops."),
        "{html}"
    );
    assert_eq!(
        name_and_groups(&app, nia),
        (None, vec!["editors".into(), "ops".into()])
    );

    // A plain form: back to the list.
    let res = admin
        .post(&format!("/team/{nia}/groups"))
        .form(&[("groups", "ops")])
        .await;
    assert_redirect_to(&res, "/team");
    assert_eq!(name_and_groups(&app, nia).1, ["ops"]);

    let res = admin
        .post(&format!("/team/{nia}/name"))
        .form(&[("name", "  Nia Long ")])
        .htmx()
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("nia@example.org is now called Nia Long."),
        "{html}"
    );
    let rows = parse_page(&html);
    let row = one(&rows, &format!("tr#member-{nia}"));
    let field = crate::helpers::within(row, r#"input[name="name"]"#);
    assert_eq!(crate::helpers::attr(field[0], "value"), "Nia Long");
    assert_eq!(name_and_groups(&app, nia).0.as_deref(), Some("Nia Long"));

    // Bad input: 422 with the rows and what was wrong, and nothing changes.
    let before = app.audit().len();
    for (path, fields, says) in [
        ("groups", vec![("groups", "Ops")], "lower-case"),
        (
            "groups",
            vec![("groups", "ops"), ("groups", "a b")],
            "lower-case",
        ),
        (
            "groups",
            vec![("groups", "nope")],
            "There is no group nope.",
        ),
        (
            "name",
            vec![("name", "Nia\r\nRemote-User: ada@example.org")],
            "one line",
        ),
        ("name", vec![("name", "Nia\u{202e}gnoL")], "one line"),
        ("name", vec![("name", &*"x".repeat(101))], "at most 100"),
    ] {
        let res = admin
            .post(&format!("/team/{nia}/{path}"))
            .form(&fields)
            .htmx()
            .await;
        assert_eq!(res.status(), 422, "{fields:?}");
        let html = res.text().await.unwrap();
        assert!(
            html.trim_start().starts_with(r#"<div id="team-rows">"#),
            "{html}"
        );
        let rows = parse_page(&html);
        assert!(
            text(one(&rows, "p.error")).contains(says),
            "{fields:?}: {html}"
        );
    }
    // Without a token: refused, unchanged.
    let res = admin
        .post(&format!("/team/{nia}/name"))
        .form(&[("name", "Someone Else")])
        .without_csrf()
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(app.audit().len(), before, "nothing was written");
    assert_eq!(
        name_and_groups(&app, nia),
        (Some("Nia Long".into()), vec!["ops".into()])
    );
    assert_eq!(
        admin
            .post("/team/999999/name")
            .form(&[("name", "X")])
            .await
            .status(),
        404
    );

    // No box checked: out of every group. An empty name: no name.
    admin.post(&format!("/team/{nia}/groups")).form(&[]).await;
    admin
        .post(&format!("/team/{nia}/name"))
        .form(&[("name", " ")])
        .await;
    assert_eq!(name_and_groups(&app, nia), (None, vec![]));

    // Only admins.
    let member = app.member(Role::Member, "mo@example.org").await;
    let res = member
        .post(&format!("/team/{nia}/name"))
        .csrf(&member.csrf("/").await)
        .form(&[("name", "Mo was here")])
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(name_and_groups(&app, nia).0, None);

    let ada = |event: &str, detail: &str| {
        (
            event.to_string(),
            "nia@example.org".to_string(),
            "ada@example.org".to_string(),
            detail.to_string(),
        )
    };
    let rows: Vec<_> = rows_of(&app, &GROUP_EVENTS)
        .into_iter()
        .filter(|row| row.1 == "nia@example.org")
        .collect();
    assert_eq!(
        rows,
        [
            ada("group_member_added", "editors"),
            ada("group_member_added", "ops"),
            ada("group_member_removed", "editors"),
            ada("member_renamed", "(no name) -> \"Nia Long\""),
            ada("group_member_removed", "ops"),
            ada("member_renamed", "\"Nia Long\" -> (no name)"),
        ]
    );
}

#[actix_web::test]
async fn the_apps_form_lets_groups_in() {
    let app = spawn_app().await;
    let admin = app
        .member(Role::Admin, "ada@example.org")
        .await
        .csrf_from("/apps");
    add_group(&app, "ops");
    let page = admin.get("/apps").await.text().await.unwrap();
    assert!(
        page.contains(r#"<input type="checkbox" name="groups" value="ops">"#),
        "{page}"
    );
    for (group, says) in [("Ops!", "lower-case"), ("nope", "there is no group nope")] {
        let res = admin
            .post("/apps")
            .form(&[
                ("name", "wiki"),
                ("url", "https://wiki.example.org"),
                ("groups", group),
            ])
            .htmx()
            .await;
        assert_eq!(res.status(), 422, "{group}");
        assert!(res.text().await.unwrap().contains(says), "{group}");
    }
    assert_eq!(app.count("apps"), 0);
    let res = admin
        .post("/apps")
        .form(&[
            ("name", "wiki"),
            ("url", "https://wiki.example.org"),
            ("groups", "ops"),
        ])
        .await;
    assert_redirect_to(&res, "/apps");
    let entries = app::list(&mut app.conn()).unwrap();
    assert_eq!(entries[0].describe(), "groups ops");
    let id = entries[0].app.id;
    let page = admin.get("/apps").await.text().await.unwrap();
    let html = parse_page(&page);
    let row = one(&html, &format!("tr#app-{id}"));
    assert!(text(row).contains("ops"), "{page}");

    // The change form: another group instead, and a role; audited with before and after.
    add_group(&app, "editors");
    let res = admin
        .post(&format!("/apps/{id}"))
        .form(&[
            ("name", "wiki"),
            ("url", "https://wiki.example.org"),
            ("roles", "admin"),
            ("groups", "editors"),
        ])
        .await;
    assert_redirect_to(&res, "/apps");
    assert_eq!(
        app::list(&mut app.conn()).unwrap()[0].describe(),
        "roles admin; groups editors"
    );
    let changed = app
        .audit()
        .into_iter()
        .find(|row| row.event == "app_changed")
        .unwrap();
    assert!(
        changed.detail.ends_with(
            "(groups ops) -> wiki https://wiki.example.org (roles admin; groups editors)"
        ),
        "{}",
        changed.detail
    );
}

fn claims(assertion: &str) -> serde_json::Value {
    let body = assertion.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

#[actix_web::test]
async fn a_group_opens_an_app_with_remote_groups_and_name_until_the_member_leaves_it() {
    let app = spawn_app().await;
    let other = app.another_instance().await;
    add_group(&app, "ops");
    add_group(&app, "editors");
    let ann_id = app.add_member("ann@example.org", Role::Member);
    // Not ASCII: a header carries UTF-8 as it is (the assertion is the form to rely on).
    let ann_name = MemberName::parse("Ann Lée").unwrap();
    member::rename(&mut app.conn(), ann_id, ann_name.as_ref(), "test").unwrap();
    group::join(&mut app.conn(), ann_id, &[group_name("ops")], "test").unwrap();
    let access = Access {
        roles: vec![Role::Admin],
        groups: vec![group_name("ops")],
        members: vec![],
    };
    let origin = AppOrigin::parse("https://wiki.example.org").unwrap();
    app::add(&mut app.conn(), "wiki", &origin, &access, "test").unwrap();
    app.live.cache().forget_apps();
    let wiki = AppHost::new(&app, "wiki", "https://wiki.example.org");
    let elsewhere = other.url("/auth/check");

    let ann = app.member(Role::Member, "ann@example.org").await;
    let page = ann.get("/").await.text().await.unwrap();
    let page = parse_page(&page);
    assert_eq!(
        text(one(&page, ".who")),
        "Ann Lée · ann@example.org (member)",
        "her pages show her name"
    );
    assert_eq!(
        crate::helpers::texts(&page, "#launcher a.tile"),
        ["wiki"],
        "her launcher lists the app her group opens"
    );
    assert_eq!(wiki.open(&ann, "/").await.status(), 303);
    for res in [
        wiki.check("/auth/check", "/").await,
        wiki.check_at(&elsewhere, "/").await,
    ] {
        assert_eq!(res.status(), 200);
        let headers = res.headers();
        assert_eq!(headers["remote-user"], "ann@example.org");
        assert_eq!(headers["remote-groups"], "member,ops");
        assert_eq!(headers["remote-name"].as_bytes(), "Ann Lée".as_bytes());
        let claims = claims(headers["latchkey-assertion"].to_str().unwrap());
        assert_eq!(claims["name"], "Ann Lée");
        assert_eq!(claims["groups"], serde_json::json!(["member", "ops"]));
        assert_eq!(claims["role"], "member");
    }

    // Another group and no name: the next check says so, on both instances (the member is
    // cached on each).
    group::change_members(
        &mut app.conn(),
        &group_name("editors"),
        &[email("ann@example.org")],
        &[],
        "test",
    )
    .unwrap();
    member::rename(&mut app.conn(), ann_id, None, "test").unwrap();
    sync_everywhere(&app, &other).await;
    for res in [
        wiki.check("/auth/check", "/").await,
        wiki.check_at(&elsewhere, "/").await,
    ] {
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["remote-groups"], "member,editors,ops");
        assert!(res.headers().get("remote-name").is_none());
        let claims = claims(res.headers()["latchkey-assertion"].to_str().unwrap());
        assert!(claims.get("name").is_none(), "{claims}");
        assert_eq!(
            claims["groups"],
            serde_json::json!(["member", "editors", "ops"])
        );
    }

    // Out of the group, as another process would do it (the command line): the next check on
    // either instance refuses.
    // The refusal also ends the app session, so the instance asked next finds none: 401, on to
    // `/auth/app`, which refuses too.
    group::change_members(
        &mut app.conn(),
        &group_name("ops"),
        &[],
        &[email("ann@example.org")],
        "test",
    )
    .unwrap();
    sync_everywhere(&app, &other).await;
    assert_eq!(wiki.check_at(&elsewhere, "/").await.status(), 403);
    sync_everywhere(&app, &other).await;
    assert_eq!(wiki.check("/auth/check", "/").await.status(), 401);
    assert_eq!(wiki.ask(&ann, "/").await.status(), 403);
    let page = ann.get("/").await.text().await.unwrap();
    assert!(
        crate::helpers::texts(&parse_page(&page), "#launcher a.tile").is_empty(),
        "{page}"
    );

    // Back in, and the group removed: the same.
    group::join(&mut app.conn(), ann_id, &[group_name("ops")], "test").unwrap();
    sync_everywhere(&app, &other).await;
    assert_eq!(wiki.open(&ann, "/").await.status(), 303);
    assert_eq!(wiki.check_at(&elsewhere, "/").await.status(), 200);
    assert_eq!(wiki.check("/auth/check", "/").await.status(), 200);
    group::remove(&mut app.conn(), &group_name("ops"), "test").unwrap();
    sync_everywhere(&app, &other).await;
    assert_eq!(wiki.check("/auth/check", "/").await.status(), 403);
    sync_everywhere(&app, &other).await;
    assert_eq!(wiki.check_at(&elsewhere, "/").await.status(), 401);
    assert_eq!(wiki.ask(&ann, "/").await.status(), 403);
    assert!(app.audit_events().iter().any(|event| event == "app_denied"));
}

#[actix_web::test]
async fn the_database_refuses_a_name_or_group_that_could_not_travel_in_a_header() {
    let app = spawn_app().await;
    let id = app.add_member("ann@example.org", Role::Member);
    let mut conn = app.conn();
    for name in ["Ann\nLee", "Ann\u{85}Lee", " Ann", "", "Ann\u{2066}Lee"] {
        let refused = diesel::sql_query("UPDATE members SET name = $1 WHERE id = $2")
            .bind::<diesel::sql_types::Text, _>(name)
            .bind::<diesel::sql_types::BigInt, _>(id.get())
            .execute(&mut conn);
        assert!(refused.is_err(), "{name:?} was stored");
    }
    // What the CHECK lets through that `MemberName::parse` would have trimmed still reads.
    diesel::sql_query("UPDATE members SET name = $1 WHERE id = $2")
        .bind::<diesel::sql_types::Text, _>("Ann\u{a0}")
        .bind::<diesel::sql_types::BigInt, _>(id.get())
        .execute(&mut conn)
        .unwrap();
    let ann = member::find(&mut conn, id).unwrap().unwrap();
    assert_eq!(ann.name.unwrap().as_str(), "Ann\u{a0}");
    for name in ["Ops", "ops,admin", "-ops", "ops team", ""] {
        let refused = diesel::sql_query("INSERT INTO groups (name) VALUES ($1)")
            .bind::<diesel::sql_types::Text, _>(name)
            .execute(&mut conn);
        assert!(refused.is_err(), "{name:?} was stored");
    }
}
