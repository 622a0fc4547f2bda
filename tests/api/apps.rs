//! `latchkey apps add|list|remove`, and the `apps` table behind them.

use std::process::Output;

use crate::helpers::{spawn_app, TestApp};

fn latchkey(app: &TestApp, args: &[&str]) -> Output {
    let scratch = std::env::temp_dir().join("latchkey-cli-tests");
    std::fs::create_dir_all(&scratch).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", app.database.url.expose())
        .env("LATCHKEY_DATA_DIR", scratch.join("data"))
        .env("RUST_LOG", "warn")
        .current_dir(&scratch)
        .output()
        .expect("running latchkey")
}

fn ok(out: &Output) -> String {
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
    app.add_member("ann@example.org", "member");
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
        "wiki\thttps://wiki.example.org\troles admin; members ann@example.org"
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
    assert_eq!(list.trim(), "wiki\thttps://wiki.example.org\troles member");

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
}
