//! The session cache: a cached signed-in request costs no database round trip, and every way
//! of ending or narrowing a sign-in is refused on the next request, on this instance and on
//! another one on the same database, even when the listener's connection was cut.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use latchkey::domain::ids::MemberId;
use latchkey::domain::role::Role;
use latchkey::schema::sessions;
use latchkey::session::cache::LISTENER_APPLICATION_NAME;

use crate::forward_auth::{register, AppHost};
use crate::helpers::{spawn_app, urlencode, Browser, Instance, TestApp};

const WIKI: &str = "http://wiki.localhost:8081/";

async fn status(browser: &Browser, path: &str) -> u16 {
    browser.get(path).await.status().as_u16()
}

/// The wiki's proxy asks `instance`, passing on the wiki cookie that `browser` holds (it was
/// put in the browser's jar for Latchkey's host by [`open_wiki`], so it goes along).
async fn check_on(instance: &Instance, browser: &Browser) -> reqwest::Response {
    browser
        .get(&instance.url("/auth/check"))
        .header("X-Latchkey-App", "wiki")
        .header("X-Original-URL", WIKI)
        .await
}

/// `browser` opens the wiki (its own session) and keeps the wiki's cookie.
async fn open_wiki(app: &TestApp, browser: &Browser) {
    let wiki = AppHost::new(app, "wiki", WIKI.trim_end_matches('/'));
    assert_eq!(wiki.open(browser, "/").await.status(), 303);
    browser.add_cookie(&wiki.cookie().unwrap());
}

/// Polls `instance` until `browser`'s check answers `want`; how long that took.
async fn refused_within(
    instance: &Instance,
    browser: &Browser,
    want: u16,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let got = check_on(instance, browser).await.status().as_u16();
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "still {got} after {:?}, want {want}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn a_of(app: &TestApp) -> Instance {
    Instance {
        address: app.address.clone(),
        port: app.port,
        live: app.live.clone(),
    }
}

fn session_id_of(app: &TestApp, member_id: MemberId) -> i64 {
    sessions::table
        .filter(sessions::member_id.eq(member_id))
        .select(sessions::id)
        .first(&mut app.conn())
        .unwrap()
}

#[actix_web::test]
async fn a_cached_signed_in_request_makes_no_database_round_trip() {
    let app = spawn_app().await;
    register(&app, "wiki", WIKI, &[Role::Member], &[]);
    let ann = app.member(Role::Member, "ann@example.org").await;
    // The first requests fill the cache (and the dashboard's few-seconds numbers).
    assert_eq!(status(&ann, "/").await, 200);
    assert_eq!(status(&ann, "/auth/check").await, 400);
    open_wiki(&app, &ann).await;
    assert_eq!(check_on(&a_of(&app), &ann).await.status(), 200);
    let dashboard = ann.get("/").await.text().await.unwrap();
    assert!(
        dashboard.contains("Counted by this instance"),
        "the dashboard says its numbers are per instance"
    );
    let before = app.live.db().round_trips();
    for _ in 0..10 {
        assert_eq!(status(&ann, "/").await, 200);
        let res = check_on(&a_of(&app), &ann).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["remote-user"], "ann@example.org");
    }
    assert_eq!(
        app.live.db().round_trips() - before,
        0,
        "20 cached signed-in requests went to the database"
    );
}

#[actix_web::test]
async fn two_instances_share_sign_in_and_each_hears_the_others_revocations() {
    let app = spawn_app().await;
    register(&app, "wiki", WIKI, &[Role::Member], &[]);
    let other = app.another_instance().await;
    let a = Instance {
        address: app.address.clone(),
        port: app.port,
        live: app.live.clone(),
    };
    let ann_id = app.add_member("ann@example.org", Role::Member);
    app.add_member("boss@example.org", Role::Admin);

    // A link asked for on one instance is redeemed on the other.
    let ann = app.visitor();
    let res = ann.request_link("ann@example.org").await;
    assert!(res.status().is_success() || res.status() == 303);
    let mail = app.sign_in_mail(1).await;
    let redeemed = post_page_form(
        &ann,
        &other.url(&format!("/auth/verify?token={}", urlencode(&mail.token))),
        &other.url("/auth/verify"),
        &[("token", mail.token.as_str())],
    )
    .await;
    assert_eq!(redeemed, 303, "redeemed on the other instance");
    open_wiki(&app, &ann).await;
    assert_eq!(check_on(&other, &ann).await.status(), 200);
    assert_eq!(check_on(&a, &ann).await.status(), 200);

    // Revoked on A (by an admin): refused by B within 100 ms, by A at once.
    let boss = app.member(Role::Admin, "boss@example.org").await;
    let session = session_id_of(&app, ann_id);
    let csrf = boss.csrf("/sessions").await;
    let res = boss
        .post(&format!("/sessions/{session}/revoke"))
        .csrf(&csrf)
        .await;
    assert!(res.status().is_success() || res.status() == 303);
    assert_eq!(check_on(&a, &ann).await.status(), 401);
    let took = refused_within(&other, &ann, 401, Duration::from_millis(100)).await;
    eprintln!("revocation reached the other instance in {took:?}");

    // Deactivated on A: B refuses the member's check within 100 ms.
    let ann = app.member(Role::Member, "ann@example.org").await;
    open_wiki(&app, &ann).await;
    assert_eq!(check_on(&other, &ann).await.status(), 200);
    let boss_csrf = boss.csrf("/team").await;
    let res = boss
        .post(&format!("/team/{ann_id}/deactivate"))
        .csrf(&boss_csrf)
        .await;
    assert!(res.status().is_success() || res.status() == 303);
    assert_eq!(check_on(&a, &ann).await.status(), 401);
    refused_within(&other, &ann, 401, Duration::from_millis(100)).await;

    // A role change on A: B's next answers carry the new role.
    let bea_id = app.add_member("bea@example.org", Role::Member);
    let bea = app.member(Role::Member, "bea@example.org").await;
    open_wiki(&app, &bea).await;
    assert_eq!(
        check_on(&other, &bea).await.headers()["remote-groups"],
        "member"
    );
    let res = boss
        .post(&format!("/team/{bea_id}/role"))
        .form(&[("role", "auditor")])
        .csrf(&boss_csrf)
        .await;
    assert!(res.status().is_success() || res.status() == 303);
    // The wiki admits members only: an auditor is refused.
    refused_within(&other, &bea, 403, Duration::from_millis(100)).await;

    // The app removed on A: B refuses it.
    let cy = app.member(Role::Member, "cy@example.org").await;
    open_wiki(&app, &cy).await;
    assert_eq!(check_on(&other, &cy).await.status(), 200);
    let wiki_id = latchkey::models::app::find_by_name(&mut app.conn(), "wiki")
        .unwrap()
        .unwrap()
        .id;
    let apps_csrf = boss.csrf("/apps").await;
    let res = boss
        .post(&format!("/apps/{wiki_id}/remove"))
        .csrf(&apps_csrf)
        .await;
    assert!(res.status().is_success() || res.status() == 303);
    assert_eq!(check_on(&a, &cy).await.status(), 403);
    refused_within(&other, &cy, 403, Duration::from_millis(100)).await;

    // Logout on B ends the session on A too.
    register(&app, "wiki", WIKI, &[Role::Member], &[]);
    other.live.cache().forget_apps();
    // The app's sessions went with it: a new one.
    assert_eq!(check_on(&a, &cy).await.status(), 401);
    open_wiki(&app, &cy).await;
    assert_eq!(check_on(&a, &cy).await.status(), 200);
    assert_eq!(check_on(&other, &cy).await.status(), 200);
    let csrf = cy.csrf("/").await;
    let res = cy.post(&other.url("/logout")).csrf(&csrf).await;
    assert_eq!(res.status(), 303);
    refused_within(&a, &cy, 401, Duration::from_millis(100)).await;
}

#[actix_web::test]
async fn a_cut_listener_connection_empties_the_cache_so_no_revocation_is_missed() {
    let app = spawn_app().await;
    let ann = app.member(Role::Member, "ann@example.org").await;
    assert_eq!(status(&ann, "/").await, 200);
    assert_eq!(status(&ann, "/").await, 200);
    let losses = app.live.cache().connection_losses();
    // Cut the listener's connection (and wait until its backend is gone)...
    let killed: Vec<bool> = diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid, 5000) AS killed FROM pg_stat_activity \
         WHERE datname = '{}' AND application_name = '{LISTENER_APPLICATION_NAME}'",
        app.database.name
    ))
    .load::<Killed>(&mut crate::helpers::admin_connection())
    .unwrap()
    .into_iter()
    .map(|row| row.killed)
    .collect();
    assert_eq!(killed, [true], "one listener per instance");
    // ...and until the instance noticed: the loss is seen on the listener's next read (within
    // milliseconds, longer on a loaded machine); a request in between is the known window.
    for _ in 0..500 {
        if app.live.cache().connection_losses() > losses {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(app.live.cache().connection_losses() > losses);
    // Then end the session behind the app's back: if the listener is not back yet, this
    // notification has nobody to hear it, and only the emptied cache refuses the session.
    diesel::delete(sessions::table)
        .execute(&mut app.conn())
        .unwrap();
    assert_eq!(status(&ann, "/").await, 303, "served from a stale cache");
    // The listener comes back, and the cache with it.
    crate::helpers::wait_until_listening(&app.live).await;
    let bea = app.member(Role::Member, "bea@example.org").await;
    assert_eq!(status(&bea, "/").await, 200);
    let before = app.live.db().round_trips();
    assert_eq!(status(&bea, "/sessions").await, 200);
    assert!(
        app.live.db().round_trips() > before,
        "the sessions page reads the list"
    );
}

#[derive(QueryableByName)]
struct Killed {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    killed: bool,
}

/// Opens `page` and posts its form to `action` with `fields` and the page's CSRF token, as a
/// person would; the status of the post.
async fn post_page_form(
    browser: &Browser,
    page: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> u16 {
    let csrf = browser.csrf(page).await;
    browser
        .post(action)
        .form(fields)
        .csrf(&csrf)
        .await
        .status()
        .as_u16()
}

/// The whole sign-in by link on the instance at `base`, in a new browser; the confirming
/// POST's status. The mail is found by its recipient, so sign-ins may run side by side.
async fn sign_in_on(app: &TestApp, base: &str, email: &str) -> u16 {
    let browser = app.visitor();
    let login = format!("{base}/login");
    let asked = post_page_form(&browser, &login, &login, &[("email", email)]).await;
    assert_eq!(asked, 200, "{email} asked on {base}");
    let prefix = format!("{base}/auth/verify?token=");
    let deadline = Instant::now() + Duration::from_secs(10);
    let link = loop {
        let mail = app.smtp.received().into_iter().find(|m| {
            m.header("To").is_some_and(|to| to.contains(email))
                && m.header("Subject")
                    .is_some_and(|s| s.contains(latchkey::mail::SIGN_IN_SUBJECT))
        });
        if let Some(mail) = mail {
            break mail.extract_link(&prefix);
        }
        assert!(Instant::now() < deadline, "no sign-in mail to {email}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let token = crate::helpers::urldecode(link.split("token=").nth(1).unwrap());
    let verify = format!("{base}/auth/verify");
    post_page_form(&browser, &link, &verify, &[("token", token.as_str())]).await
}

#[actix_web::test]
async fn two_instances_hold_one_mail_limit_and_one_audit_chain() {
    let app = crate::helpers::spawn_app_with(
        crate::helpers::TestSettings::new().email_rate(3, Duration::from_secs(15 * 60)),
    )
    .await;
    let other = app.another_instance().await;
    let bases = [app.address.clone(), other.address.clone()];
    app.add_member("ann@example.org", Role::Member);

    // Ten link requests for one address, five on each instance, all at once: three mails.
    let asks = (0..10).map(|i| {
        let base = bases[i % 2].clone();
        let browser = app.visitor();
        async move {
            let login = format!("{base}/login");
            post_page_form(&browser, &login, &login, &[("email", "ann@example.org")]).await
        }
    });
    let statuses = futures_util::future::join_all(asks).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        app.count("sign_in_requests WHERE member_id IS NOT NULL"),
        3,
        "the per-address limit counts both instances' requests"
    );
    app.smtp.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.smtp.received().len(), 3, "no mail over the limit");
    let events = app.audit_events();
    assert_eq!(events.iter().filter(|e| *e == "login_throttled").count(), 7);

    // Eight members sign in at the same time, half on each instance.
    let emails: Vec<String> = (0..8).map(|i| format!("m{i}@example.org")).collect();
    for email in &emails {
        app.add_member(email, Role::Member);
    }
    let sign_ins = emails
        .iter()
        .enumerate()
        .map(|(i, email)| sign_in_on(&app, &bases[i % 2], email));
    let statuses = futures_util::future::join_all(sign_ins).await;
    assert_eq!(statuses, vec![303; 8]);
    let events = app.audit_events();
    assert_eq!(events.iter().filter(|e| *e == "signed_in").count(), 8);

    // Both wrote into one chain, and the command line finds it intact.
    let out =
        crate::audit_chain::latchkey(&app.database, &["audit", "verify"], &app.environment.vars());
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
