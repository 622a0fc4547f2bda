//! `latchkey apps add|list|remove`, and the `apps` table behind them.

use latchkey::domain::role::Role;
use std::process::Output;

use crate::helpers::{parse_page, select, spawn_app, texts, urlencode, TestApp};
use secrecy::ExposeSecret as _;

pub(crate) fn latchkey(app: &TestApp, args: &[&str]) -> Output {
    let scratch = std::env::temp_dir().join("latchkey-cli-tests");
    std::fs::create_dir_all(&scratch).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", app.database.url.expose_secret())
        .env("LATCHKEY_DATA_DIR", scratch.join("data"))
        .env("RUST_LOG", "warn")
        .current_dir(&scratch)
        .output()
        .expect("running latchkey")
}

pub(crate) fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[actix_web::test]
async fn apps_are_added_listed_changed_and_removed_from_the_command_line_audited() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let out = ok(&latchkey(
        &app,
        &[
            "apps",
            "add",
            "wiki",
            "https://Wiki.Example.org/",
            "--roles",
            "admin",
            "--member",
            "ann@example.org",
        ],
    ));
    assert!(
        out.starts_with("added wiki https://wiki.example.org"),
        "{out}"
    );
    let list = ok(&latchkey(&app, &["apps", "list"]));
    assert_eq!(
        list.trim(),
        "wiki\thttps://wiki.example.org\tproxy\troles admin; members ann@example.org"
    );
    // The same name again updates it.
    let out = ok(&latchkey(
        &app,
        &[
            "apps",
            "add",
            "wiki",
            "https://wiki.example.org",
            "--roles",
            "member",
        ],
    ));
    assert!(out.starts_with("changed wiki"), "{out}");
    let list = ok(&latchkey(&app, &["apps", "list"]));
    assert_eq!(
        list.trim(),
        "wiki\thttps://wiki.example.org\tproxy\troles member"
    );

    // Nobody may open it, an unknown member, a bad URL, a taken origin: refused, saying why.
    for args in [
        &["apps", "add", "blog", "https://blog.example.org"][..],
        &[
            "apps",
            "add",
            "blog",
            "https://blog.example.org",
            "--member",
            "nobody@example.org",
        ],
        &[
            "apps",
            "add",
            "blog",
            "https://user@blog.example.org",
            "--roles",
            "admin",
        ],
        &[
            "apps",
            "add",
            "blog2",
            "https://wiki.example.org",
            "--roles",
            "admin",
        ],
    ] {
        let out = latchkey(&app, args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?}: says nothing");
    }

    let out = ok(&latchkey(&app, &["apps", "remove", "wiki"]));
    assert!(out.starts_with("removed wiki"), "{out}");
    assert!(!latchkey(&app, &["apps", "remove", "wiki"]).status.success());
    assert_eq!(app.count("apps"), 0);

    let rows: Vec<_> = app
        .audit()
        .into_iter()
        .filter(|row| row.event.starts_with("app_"))
        .collect();
    let events: Vec<&str> = rows.iter().map(|row| row.event.as_str()).collect();
    assert_eq!(events, ["app_added", "app_changed", "app_removed"]);
    assert!(rows.iter().all(|row| row.actor.as_deref() == Some("cli")));
    assert!(
        rows[1]
            .detail
            .contains("-> wiki https://wiki.example.org (roles member)"),
        "{}",
        rows[1].detail
    );

    // Plain http off loopback: refused with why (the app's secure cookie would never come
    // back, so nobody could sign in); on loopback it is the way to try an app locally.
    let out = latchkey(
        &app,
        &[
            "apps",
            "add",
            "blog",
            "http://blog.example.org",
            "--roles",
            "admin",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("http:// is for loopback hosts only") && stderr.contains("cookie"),
        "{stderr}"
    );
    ok(&latchkey(
        &app,
        &[
            "apps",
            "add",
            "local",
            "http://wiki.localhost:8081",
            "--roles",
            "admin",
        ],
    ));
    ok(&latchkey(&app, &["apps", "remove", "local"]));
}

#[actix_web::test]
async fn admins_manage_apps_on_the_apps_pages_and_auditors_only_read() {
    let app = spawn_app().await;
    let admin = app.member(Role::Admin, "boss@example.org").await;
    app.add_member("ann@example.org", Role::Member);
    let csrf = admin.csrf("/apps").await;
    let body = format!(
        "name=wiki&url={}&roles=member&roles=auditor&members={}&csrf_token={}",
        urlencode("https://wiki.example.org"),
        urlencode("ann@example.org\r\n\r\n"),
        urlencode(&csrf)
    );
    let res = admin
        .post("/apps")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .await;
    assert_eq!(res.status(), 303);
    let page = admin.get("/apps").await.text().await.unwrap();
    assert!(page.contains("https://wiki.example.org"), "{page}");
    assert!(page.contains("auditor, member"), "{page}");
    assert!(page.contains("ann@example.org"));
    let id = latchkey::models::app::find_by_name(&mut app.conn(), "wiki")
        .unwrap()
        .unwrap()
        .id;

    // Refusals re-render the form with the reason (HTMX swaps the section).
    for (fields, status) in [
        (
            vec![("name", "blog"), ("url", "https://blog.example.org")],
            422,
        ),
        (
            vec![
                ("name", "blog"),
                ("url", "ftp://blog.example.org"),
                ("roles", "admin"),
            ],
            422,
        ),
        (
            vec![
                ("name", "wiki"),
                ("url", "https://other.example.org"),
                ("roles", "admin"),
            ],
            409,
        ),
        (
            vec![
                ("name", "b"),
                ("url", "https://b.example.org"),
                ("members", "nobody@example.org"),
            ],
            422,
        ),
        // Plain http off loopback: its secure cookie would never come back.
        (
            vec![
                ("name", "blog"),
                ("url", "http://blog.example.org"),
                ("roles", "admin"),
            ],
            422,
        ),
    ] {
        let res = admin.post("/apps").htmx().form(&fields).csrf(&csrf).await;
        assert_eq!(res.status(), status, "{fields:?}");
        let html = res.text().await.unwrap();
        assert!(!select(&parse_page(&html), ".error").is_empty(), "{html}");
    }

    // Change, then the member sees it in the launcher and the session list shows it opened.
    let res = admin
        .post(&format!("/apps/{id}"))
        .form(&[
            ("name", "Wiki"),
            ("url", "https://wiki.example.org/"),
            ("roles", "member"),
        ])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 303);
    let ann = app.member(Role::Member, "ann@example.org").await;
    let dashboard = ann.get("/").await.text().await.unwrap();
    let launcher = r#"a[href="https://wiki.example.org/"][rel="noopener"]"#;
    assert_eq!(
        texts(&parse_page(&dashboard), launcher),
        ["Wiki"],
        "{dashboard}"
    );
    let wiki = crate::forward_auth::AppHost::new(&app, "Wiki", "https://wiki.example.org");
    wiki.open(&ann, "/x").await;
    let res = wiki.check("/auth/check", "/x").await;
    assert_eq!(res.status(), 200);
    let sessions = ann.get("/sessions").await.text().await.unwrap();
    assert_eq!(
        texts(&parse_page(&sessions), "td.apps-opened"),
        ["Wiki"],
        "{sessions}"
    );

    // Auditors read, members do not; neither may change; no CSRF token, no change.
    let auditor = app.member(Role::Auditor, "aud@example.org").await;
    assert_eq!(auditor.get("/apps").await.status(), 200);
    let auditor_page = auditor.get("/apps").await.text().await.unwrap();
    assert!(!auditor_page.contains("Add an app"));
    let auditor_csrf = auditor.csrf("/apps").await;
    let res = auditor
        .post(&format!("/apps/{id}/remove"))
        .csrf(&auditor_csrf)
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(ann.get("/apps").await.status(), 403);
    let res = admin
        .post(&format!("/apps/{id}/remove"))
        .form(&[("x", "y")])
        .without_csrf()
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(app.count("apps"), 1);

    let res = admin.post(&format!("/apps/{id}/remove")).csrf(&csrf).await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.count("apps"), 0);
    let res = wiki.check("/auth/check", "/x").await;
    assert_eq!(res.status(), 403, "no app of that name any more");
    let events: Vec<(String, Option<String>)> = app
        .audit()
        .into_iter()
        .filter(|row| row.event.starts_with("app_"))
        .map(|row| (row.event, row.actor))
        .collect();
    let boss = Some("boss@example.org".to_string());
    assert_eq!(
        events,
        [
            ("app_added".into(), boss.clone()),
            ("app_changed".into(), boss.clone()),
            ("app_opened".into(), None),
            // A check for an app that no longer exists names nobody: nothing to audit.
            ("app_removed".into(), boss),
        ]
    );
}
