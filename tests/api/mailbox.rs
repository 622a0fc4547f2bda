//! Deactivation holds for every spelling that reaches the same mailbox (SPEC, Audit): at a
//! `LATCHKEY_ALLOWED_DOMAINS` domain, `Carol@…` and `carol+x@…` (and `carol-x@…`, `c.arol@…`
//! where `LATCHKEY_MAILBOX_KEY` says so) are not admitted beside Carol, nor is any address
//! whose local part is not plain ASCII (`carol%corp.test@…`, an invisible or a Cyrillic
//! letter); an admin may still list such an address by hand.

use latchkey::domain::email_address::{MailboxReduction, MailboxRule};
use latchkey::domain::role::Role;
use std::process::Output;
use std::time::Duration;

use diesel::prelude::*;
use latchkey::schema::members;
use secrecy::ExposeSecret as _;

use crate::helpers::{assert_redirect_to, spawn_app_with, TestApp, TestSettings};

async fn corp_app() -> TestApp {
    spawn_app_with(TestSettings::new().allowed_domains(&["corp.test"])).await
}

/// `corp.test` allowed, `LATCHKEY_MAILBOX_KEY` made of `reductions`, and Carol listed and then
/// deactivated, both with the command line (whose own environment says nothing about the
/// mailbox key: the rule in force is the server's).
async fn corp_app_without_carol(reductions: &[MailboxReduction]) -> TestApp {
    let app = spawn_app_with(
        TestSettings::new()
            .allowed_domains(&["corp.test"])
            .mailbox_key(MailboxRule::of(reductions)),
    )
    .await;
    latchkey(&app, &["members", "add", "carol@corp.test"]);
    latchkey(&app, &["members", "remove", "carol@corp.test"]);
    app
}

fn carol_deactivated_alone() -> Vec<(String, String, bool)> {
    vec![(
        "carol@corp.test".to_string(),
        "carol@corp.test".to_string(),
        false,
    )]
}

/// Runs the real `latchkey ARGS` against the app's database, as an operator would.
fn latchkey(app: &TestApp, args: &[&str]) -> Output {
    let scratch = std::env::temp_dir().join("latchkey-cli-tests");
    std::fs::create_dir_all(&scratch).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", app.database.url.expose_secret())
        .env("LATCHKEY_DATA_DIR", scratch.join("data"))
        .env("RUST_LOG", "warn")
        .current_dir(&scratch)
        .output()
        .expect("running latchkey");
    assert!(
        out.status.success(),
        "latchkey {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every member as (email, mailbox key, active), by id.
fn members(app: &TestApp) -> Vec<(String, String, bool)> {
    members::table
        .order(members::id.asc())
        .select((members::email, members::mailbox_key, members::active))
        .load(&mut app.conn())
        .unwrap()
}

fn member_id(app: &TestApp, email: &str) -> i64 {
    members::table
        .filter(members::email.eq(email))
        .select(members::id)
        .first(&mut app.conn())
        .unwrap()
}

/// Asks for a link as `spelling` in a new browser and checks it was turned away exactly as
/// any address that may not sign in is: the usual page, `login_denied`, and nothing else.
async fn assert_refused(app: &TestApp, spelling: &str) {
    let members_before = members(app);
    let mails_before = app.smtp.received().len();
    // A decoy request stands in (member_id NULL); no real one is made.
    let requests_before = app.count("sign_in_requests WHERE member_id IS NOT NULL");
    let sessions_before = app.count("sessions WHERE member_id IS NOT NULL");
    let browser = app.visitor();

    let res = browser.request_link(spelling).await;
    assert_eq!(res.status(), 200, "{spelling}");
    let html = res.text().await.unwrap();
    assert!(html.contains("Check your inbox"), "{spelling}: {html}");

    let last = app.audit().pop().unwrap();
    assert_eq!(last.event, "login_denied", "{spelling}");
    assert_eq!(last.email.as_deref(), Some(spelling));
    assert_eq!(members(app), members_before, "{spelling} became a member");
    assert_eq!(
        app.count("sign_in_requests WHERE member_id IS NOT NULL"),
        requests_before,
        "{spelling}"
    );
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.smtp.received().len(),
        mails_before,
        "{spelling} got mail"
    );
    assert_eq!(
        app.count("sessions WHERE member_id IS NOT NULL"),
        sessions_before,
        "{spelling}"
    );
    let dashboard = browser.get("/").await;
    assert_eq!(dashboard.status(), 303, "{spelling} reached the dashboard");
}

#[actix_web::test]
async fn a_removed_members_other_spellings_are_not_admitted_by_domain() {
    let app = corp_app().await;
    latchkey(&app, &["members", "add", "carol@corp.test"]);
    let carol = app.member(Role::Member, "carol@corp.test").await;
    let out = latchkey(&app, &["members", "remove", "carol@corp.test"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("deactivated carol@corp.test"));
    assert_eq!(
        carol.get("/").await.status(),
        303,
        "removing ends Carol's session"
    );

    for spelling in [
        "Carol@corp.test",
        "carol+x@corp.test",
        "CAROL+y@corp.test",
        "carol@corp.test",
    ] {
        assert_refused(&app, spelling).await;
    }
    assert_eq!(
        members(&app),
        [(
            "carol@corp.test".to_string(),
            "carol@corp.test".to_string(),
            false
        )]
    );
}

#[actix_web::test]
async fn an_admitted_member_is_not_doubled_by_another_spelling_nor_back_after_deactivation() {
    let app = corp_app().await;
    let admin = app.member(Role::Admin, "ada@example.org").await;
    // Carol comes in by the domain rule, as the first of her spellings to ask.
    let res = app.sign_in(&app.visitor(), "carol@corp.test").await;
    assert_eq!(res.status(), 303);
    let carol = member_id(&app, "carol@corp.test");

    // While she is active, her other spellings do not become second members; she signs in
    // under the address she is listed with, and her mail goes there.
    assert_refused(&app, "carol+x@corp.test").await;
    assert_refused(&app, "Carol@corp.test").await;
    let before = app.smtp.received().len();
    app.visitor().request_link("carol@corp.test").await;
    assert!(app
        .next_sign_in_mail(before)
        .await
        .to
        .contains("carol@corp.test"));

    // Deactivated on /team, she stays out under every spelling.
    let csrf = admin.csrf("/team").await;
    let res = admin
        .post(&format!("/team/{carol}/deactivate"))
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 303);
    for spelling in ["Carol@corp.test", "carol+x@corp.test", "CAROL+y@corp.test"] {
        assert_refused(&app, spelling).await;
    }
    let corp: Vec<_> = members(&app)
        .into_iter()
        .filter(|(email, _, _)| email.ends_with("@corp.test"))
        .collect();
    assert_eq!(
        corp,
        [(
            "carol@corp.test".to_string(),
            "carol@corp.test".to_string(),
            false
        )]
    );
}

#[actix_web::test]
async fn a_fresh_tagged_address_at_an_allowed_domain_is_still_admitted() {
    let app = corp_app().await;
    let browser = app.visitor();
    let before = app.smtp.received().len();
    let res = app.sign_in(&browser, "dave+x@corp.test").await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        app.smtp.received()[before].to,
        ["dave+x@corp.test"],
        "mail goes to the address as given"
    );
    assert_eq!(browser.get("/").await.status(), 200);
    assert_eq!(
        members(&app),
        [(
            "dave+x@corp.test".to_string(),
            "dave@corp.test".to_string(),
            true
        )]
    );
    let added = app
        .audit()
        .into_iter()
        .find(|row| row.event == "member_added")
        .unwrap();
    assert_eq!(added.actor.as_deref(), Some("LATCHKEY_ALLOWED_DOMAINS"));
}

#[actix_web::test]
async fn spellings_an_admin_listed_sign_in_as_listed() {
    // The key is not unique: an admin may list two spellings, and each is its own member.
    let app = corp_app().await;
    latchkey(&app, &["members", "add", "erin@corp.test"]);
    latchkey(&app, &["members", "add", "Erin+ops@corp.test"]);
    for email in ["erin@corp.test", "Erin+ops@corp.test"] {
        let res = app.sign_in(&app.visitor(), email).await;
        assert_eq!(res.status(), 303, "{email}");
    }
    let keys: Vec<String> = members(&app).into_iter().map(|(_, key, _)| key).collect();
    assert_eq!(keys, ["erin@corp.test", "erin@corp.test"]);
}

#[actix_web::test]
async fn look_alikes_of_a_deactivated_member_are_not_admitted_under_the_default_rule() {
    let app = corp_app_without_carol(&[MailboxReduction::Plus]).await;
    for spelling in [
        "carol+x@corp.test",
        // `%` routes the mail on some servers (to carol@corp.test here).
        "carol%corp.test@corp.test",
        // A zero-width space: reads as `carol@corp.test` on /team.
        "carol\u{200b}@corp.test",
        // Cyrillic `с` (U+0441) for Latin `c`.
        "\u{441}arol@corp.test",
    ] {
        assert_refused(&app, spelling).await;
    }
    // A stranger at a domain that is not allowed is answered the same way.
    assert_refused(&app, "carol@elsewhere.test").await;
    assert_eq!(members(&app), carol_deactivated_alone());
}

#[actix_web::test]
async fn with_dots_in_the_key_a_dotted_spelling_is_not_admitted() {
    let app = corp_app_without_carol(&[MailboxReduction::Plus, MailboxReduction::Dots]).await;
    for spelling in [
        "c.arol@corp.test",
        "C.a.rol+x@corp.test",
        "ca.rol@corp.test",
    ] {
        assert_refused(&app, spelling).await;
    }
    assert_eq!(members(&app), carol_deactivated_alone());
}

#[actix_web::test]
async fn with_minus_in_the_key_a_minus_tag_is_not_admitted() {
    let app = corp_app_without_carol(&[MailboxReduction::Minus]).await;
    for spelling in ["carol-x@corp.test", "Carol-x-y@corp.test"] {
        assert_refused(&app, spelling).await;
    }
    assert_eq!(members(&app), carol_deactivated_alone());
}

#[actix_web::test]
async fn without_dots_in_the_key_a_dotted_address_is_a_person_of_its_own() {
    // Most mail servers deliver `c.arol@` to whoever has that name, not to Carol; an operator
    // whose server ignores dots (Gmail, as the finding says Google Workspace does) says `dots`.
    let app = corp_app_without_carol(&[MailboxReduction::Plus]).await;
    let browser = app.visitor();
    let res = app.sign_in(&browser, "c.arol@corp.test").await;
    assert_eq!(res.status(), 303);
    assert_eq!(browser.get("/").await.status(), 200);
    assert_eq!(
        members(&app),
        [
            (
                "carol@corp.test".to_string(),
                "carol@corp.test".to_string(),
                false
            ),
            (
                "c.arol@corp.test".to_string(),
                "c.arol@corp.test".to_string(),
                true
            ),
        ]
    );
}

#[actix_web::test]
async fn a_minus_tag_is_a_person_of_its_own_unless_the_key_says_minus() {
    let app = corp_app_without_carol(&[MailboxReduction::Plus]).await;
    let res = app.sign_in(&app.visitor(), "carol-x@corp.test").await;
    assert_eq!(res.status(), 303);
    assert!(members(&app)
        .iter()
        .any(|(email, _, active)| email == "carol-x@corp.test" && *active));
}

#[actix_web::test]
async fn an_admin_can_still_list_a_look_alike_address_by_hand() {
    let app = corp_app_without_carol(&[MailboxReduction::Plus]).await;
    let cyrillic = "\u{441}arol@corp.test";
    assert_refused(&app, cyrillic).await;

    // On /team, as an admin would when this really is a colleague's address.
    let admin = app
        .member(Role::Admin, "ada@example.org")
        .await
        .csrf_from("/team");
    let res = admin
        .post("/team")
        .form(&[("email", cyrillic), ("role", "member")])
        .await;
    assert_redirect_to(&res, "/team");
    let browser = app.visitor();
    let res = app.sign_in(&browser, cyrillic).await;
    assert_eq!(res.status(), 303);
    assert_eq!(browser.get("/").await.status(), 200);

    // With the command line too, for a `%` address (which the test's mail server accepts;
    // whether a real one delivers to an invisible character is its own business).
    let routed = "carol%corp.test@corp.test";
    assert_refused(&app, routed).await;
    latchkey(&app, &["members", "add", routed]);
    let res = app.sign_in(&app.visitor(), routed).await;
    assert_eq!(res.status(), 303);

    let listed: Vec<_> = members(&app)
        .into_iter()
        .filter(|(email, _, _)| email.ends_with("@corp.test"))
        .map(|(email, _, active)| (email, active))
        .collect();
    assert_eq!(
        listed,
        [
            ("carol@corp.test".to_string(), false),
            (cyrillic.to_string(), true),
            (routed.to_string(), true),
        ]
    );
}

#[test]
fn a_bad_mailbox_key_stops_start_up_with_one_line_naming_it() {
    let scratch = std::env::temp_dir().join("latchkey-cli-tests");
    std::fs::create_dir_all(&scratch).unwrap();
    for bad in ["gmail", "plus,dot", ","] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .arg("migrate")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LATCHKEY_DATA_DIR", scratch.join("data"))
            .env("LATCHKEY_MAILBOX_KEY", bad)
            .current_dir(&scratch)
            .output()
            .expect("running latchkey");
        assert!(!out.status.success(), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{bad}: {stderr}");
        assert!(stderr.contains("LATCHKEY_MAILBOX_KEY"), "{bad}: {stderr}");
    }
}
