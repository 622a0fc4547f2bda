//! `/auth/check` and `/auth/forward` as a proxy calls them, `/auth/app` and the app host's
//! `/.latchkey/` routes: each app's own session. An [`AppHost`] stands in for an app's host
//! behind its proxy (it names the app, reports the original URL, and keeps the app host's
//! cookie); the real proxies run in `proxies.rs`.

use std::sync::Mutex;

use diesel::prelude::*;
use latchkey::domain::app_origin::AppOrigin;
use latchkey::domain::email_address::EmailAddress;
use latchkey::domain::ids::AppId;
use latchkey::domain::role::Role;
use latchkey::models::app::{self, Access};
use latchkey::schema::{app_sessions, sessions};

use crate::helpers::{form_value, spawn_app, urlencode, Browser, TestApp};

pub fn register(
    app: &TestApp,
    name: &str,
    origin: &str,
    roles: &[Role],
    members: &[&str],
) -> AppId {
    let access = Access {
        roles: roles.to_vec(),
        groups: vec![],
        members: members
            .iter()
            .map(|m| EmailAddress::parse(m).unwrap())
            .collect(),
    };
    let id = app::add(
        &mut app.conn(),
        name,
        &AppOrigin::parse(origin).unwrap(),
        &access,
        "test",
    )
    .unwrap()
    .id;
    // Set-up, not what a test is about: the app's next check sees the new app at once,
    // rather than when the notification comes back.
    app.live.cache().forget_apps();
    id
}

/// An app's host as its proxy presents it to Latchkey: every request names the app in
/// `X-Latchkey-App`, and carries the app host's own cookie (one jar per app host).
pub struct AppHost {
    /// Latchkey's address, as the proxy reaches it.
    latchkey: String,
    pub name: String,
    pub origin: String,
    cookie: Mutex<Option<String>>,
}

impl AppHost {
    pub fn new(app: &TestApp, name: &str, origin: &str) -> Self {
        Self::on(&app.address, name, origin)
    }

    /// The same for a Latchkey at `latchkey` (a process the test started itself).
    pub fn on(latchkey: &str, name: &str, origin: &str) -> Self {
        Self {
            latchkey: latchkey.to_string(),
            name: name.to_string(),
            origin: origin.to_string(),
            cookie: Mutex::new(None),
        }
    }

    pub fn cookie_name(&self) -> &'static str {
        if self.origin.starts_with("https://") {
            "__Host-latchkey_app"
        } else {
            "latchkey_app"
        }
    }

    /// `name=value` of the app cookie this host's browser holds.
    pub fn cookie(&self) -> Option<String> {
        self.cookie.lock().unwrap().clone()
    }

    pub fn set_cookie(&self, pair: Option<String>) {
        *self.cookie.lock().unwrap() = pair;
    }

    /// A fresh client, as the proxy is.
    fn proxy(&self) -> Browser {
        Browser::new(&self.latchkey, "test-proxy")
    }

    /// A request to Latchkey as this app's proxy sends it.
    fn proxied<'b>(&self, browser: &'b Browser, url: &str) -> crate::helpers::Request<'b> {
        let request = browser.get(url).header("X-Latchkey-App", &self.name);
        match self.cookie() {
            Some(cookie) => request.header("Cookie", &cookie),
            None => request,
        }
    }

    /// The proxy asks `path` (`/auth/check`, `/auth/forward`) about `page` on this app.
    pub async fn check(&self, path: &str, page: &str) -> reqwest::Response {
        self.check_at(&format!("{}{path}", self.latchkey), page)
            .await
    }

    /// The same, of the Latchkey instance at `url`.
    pub async fn check_at(&self, url: &str, page: &str) -> reqwest::Response {
        let visitor = self.proxy();
        self.proxied(&visitor, url)
            .header("X-Original-URL", &format!("{}{page}", self.origin))
            .await
    }

    /// `browser` (signed in at Latchkey) goes to `/auth/app` for `page`; the answer.
    pub async fn ask(&self, browser: &Browser, page: &str) -> reqwest::Response {
        let rd = format!("{}{page}", self.origin);
        browser
            .get(&format!(
                "/auth/app?app={}&rd={}",
                urlencode(&self.name),
                urlencode(&rd)
            ))
            .await
    }

    /// The app's `/.latchkey/callback` with this query, on the app's host.
    pub async fn callback(&self, query: &str) -> reqwest::Response {
        let visitor = self.proxy();
        let res = self
            .proxied(
                &visitor,
                &format!("{}/.latchkey/callback?{query}", self.latchkey),
            )
            .await;
        if let Some(set) = res.headers().get("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_string();
            self.set_cookie(Some(pair));
        }
        res
    }

    /// `browser` opens `page` on this app: `/auth/app`, then the callback on the app's host,
    /// which leaves the app cookie in this host's jar. Returns the callback's answer.
    pub async fn open(&self, browser: &Browser, page: &str) -> reqwest::Response {
        let res = self.ask(browser, page).await;
        assert_eq!(res.status(), 303, "{:?}", res.text().await);
        let location = res.headers()["location"].to_str().unwrap().to_string();
        let query = location
            .strip_prefix(&format!("{}/.latchkey/callback?", self.origin))
            .unwrap_or_else(|| panic!("not to the app's callback: {location}"))
            .to_string();
        self.callback(&query).await
    }
}

/// Waits until both instances have applied every invalidation committed so far.
pub async fn sync_everywhere(app: &TestApp, other: &crate::helpers::Instance) {
    let n = app
        .live
        .cache()
        .next_sync()
        .max(other.live.cache().next_sync());
    diesel::sql_query(format!(
        "NOTIFY {}, 'sync:{n}'",
        latchkey::session::cache::CHANNEL
    ))
    .execute(&mut app.conn())
    .unwrap();
    for _ in 0..2000 {
        if app.live.cache().synced_up_to() >= n && other.live.cache().synced_up_to() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("the caches did not see barrier {n}");
}

fn count_events(app: &TestApp, event: &str) -> usize {
    app.audit_events().iter().filter(|e| *e == event).count()
}

fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

#[actix_web::test]
async fn a_check_that_cannot_tell_its_app_is_a_bad_request_and_never_passes() {
    let app = spawn_app().await;
    let ann = app.member(Role::Member, "ann@example.org").await;
    register(
        &app,
        "wiki",
        "https://wiki.example.org",
        &[Role::Member],
        &[],
    );
    register(
        &app,
        "admin",
        "https://admin.example.org",
        &[Role::Admin],
        &[],
    );
    let wiki = AppHost::new(&app, "wiki", "https://wiki.example.org");
    assert_eq!(wiki.open(&ann, "/").await.status(), 303);
    let ask = |headers: Vec<(&'static str, String)>| {
        let app = &app;
        let cookie = wiki.cookie().unwrap();
        async move {
            let visitor = app.visitor();
            let mut request = visitor.get("/auth/check").header("Cookie", &cookie);
            for (name, value) in &headers {
                request = request.header(name, value);
            }
            request.await.status().as_u16()
        }
    };
    let wiki_url = || ("X-Original-URL", "https://wiki.example.org/".to_string());
    assert_eq!(ask(vec![wiki_url()]).await, 200, "the well-formed check");
    assert_eq!(
        ask(vec![("X-Latchkey-App", "wiki".into())]).await,
        400,
        "no URL"
    );
    // The review's Caddy attack: the client's X-Original-URL names an app open to it while
    // the proxy reports the admin-only host it is really serving.
    let caddy = vec![
        wiki_url(),
        ("X-Forwarded-Proto", "https".into()),
        ("X-Forwarded-Host", "admin.example.org".into()),
        ("X-Forwarded-Uri", "/".into()),
    ];
    assert_eq!(ask(caddy.clone()).await, 400, "disagreeing forms");
    let mut named = caddy;
    named.push(("X-Latchkey-App", "admin".into()));
    assert_eq!(ask(named).await, 400, "disagreeing forms, app named");
    // The proxy names the app: a URL of another app is refused, not judged under it.
    let wrong = vec![("X-Latchkey-App", "admin".into()), wiki_url()];
    assert_eq!(ask(wrong).await, 400, "a URL off the named app's origin");
    // Hosts that only decoding or IDNA mapping turn into the wiki's.
    for host in [
        "%77iki.example.org",
        "w\u{ad}iki.example.org",
        "wiki.example.org.",
        "ｗiki.example.org",
    ] {
        let forwarded = vec![
            ("X-Forwarded-Proto", "https".into()),
            ("X-Forwarded-Host", host.to_string()),
            ("X-Forwarded-Uri", "/".into()),
        ];
        assert_eq!(ask(forwarded).await, 400, "{host:?}");
    }
    let original = vec![("X-Original-URL", "https://%77iki.example.org/".to_string())];
    assert_eq!(ask(original).await, 400);
    assert_eq!(count_events(&app, "app_denied"), 0);
}

#[actix_web::test]
async fn not_signed_in_to_the_app_goes_to_auth_app_with_the_original_url() {
    let app = spawn_app().await;
    register(
        &app,
        "wiki",
        "https://wiki.example.org",
        &[Role::Member],
        &[],
    );
    let wiki = AppHost::new(&app, "wiki", "https://wiki.example.org");
    let res = wiki.check("/auth/check", "/page?a=1&b=2").await;
    assert_eq!(res.status(), 401);
    let expected = app.url(&format!(
        "/auth/app?app=wiki&rd={}",
        urlencode("https://wiki.example.org/page?a=1&b=2")
    ));
    assert_eq!(location(&res), expected);
    assert!(res.text().await.unwrap().is_empty());
    let res = wiki.check("/auth/forward", "/page?a=1&b=2").await;
    assert_eq!(res.status(), 302);
    assert_eq!(location(&res), expected);
    // The X-Forwarded-* trio, as Traefik and Caddy send it.
    let res = app
        .visitor()
        .get("/auth/forward")
        .header("X-Latchkey-App", "wiki")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "wiki.example.org")
        .header("X-Forwarded-Uri", "/page?a=1&b=2")
        .header("X-Forwarded-Method", "GET")
        .await;
    assert_eq!(res.status(), 302);
    assert_eq!(location(&res), expected);
    // A forged app cookie, and Latchkey's own session cookie, open nothing.
    let ann = app.member(Role::Member, "ann@example.org").await;
    for cookie in [
        format!("__Host-latchkey_app={}", "A".repeat(43)),
        "__Host-latchkey_app=forged".to_string(),
        ann.cookie_header().unwrap(),
    ] {
        wiki.set_cookie(Some(cookie.clone()));
        let res = wiki.check("/auth/check", "/").await;
        assert_eq!(res.status(), 401, "{cookie}");
    }
}

#[actix_web::test]
async fn a_member_opens_an_app_with_a_cookie_of_its_own_and_checks_write_nothing() {
    let app = spawn_app().await;
    let browser = app.member(Role::Member, "ann@example.org").await;
    let ann = app.add_member("ann@example.org", Role::Member);
    register(
        &app,
        "wiki",
        "https://wiki.example.org",
        &[Role::Member],
        &[],
    );
    let wiki = AppHost::new(&app, "wiki", "https://wiki.example.org");
    let res = wiki.ask(&browser, "/page?x=1").await;
    assert_eq!(res.status(), 303);
    assert!(
        res.headers().get("set-cookie").is_none(),
        "nothing for Latchkey's host"
    );
    let to_callback = location(&res);
    assert!(
        to_callback.starts_with("https://wiki.example.org/.latchkey/callback?code="),
        "{to_callback}"
    );
    assert!(to_callback.ends_with(&format!("&rd={}", urlencode("/page?x=1"))));
    let query = to_callback.split_once('?').unwrap().1.to_string();
    let res = wiki.callback(&query).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/page?x=1", "back on the exact page");
    let set: Vec<_> = res.headers().get_all("set-cookie").iter().collect();
    assert_eq!(set.len(), 1, "{set:?}");
    let set = set[0].to_str().unwrap();
    assert!(
        set.starts_with(&format!("{}=", wiki.cookie_name())),
        "{set}"
    );
    for attribute in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(set.contains(attribute), "{attribute}: {set}");
    }
    assert!(!set.contains("Domain"), "host-only: {set}");
    assert_eq!(count_events(&app, "app_opened"), 1);

    let res = wiki.check("/auth/check", "/page").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["remote-user"], "ann@example.org");
    assert_eq!(res.headers()["remote-email"], "ann@example.org");
    assert_eq!(res.headers()["remote-groups"], "member");
    assert_eq!(
        res.headers()["latchkey-assertion"]
            .to_str()
            .unwrap()
            .split('.')
            .count(),
        3
    );
    assert!(res.headers().get("set-cookie").is_none());

    // The app's cookie is no Latchkey session, and the code was spent.
    let stranger = app.visitor();
    let res = stranger
        .get("/")
        .header("Cookie", &wiki.cookie().unwrap())
        .await;
    assert_eq!(
        res.status(),
        303,
        "Latchkey's pages stay closed to the app's cookie"
    );
    let res = wiki.callback(&query).await;
    assert_eq!(res.status(), 400, "a spent code");

    let audit_rows = app.audit().len();
    let session_before: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sessions::table
            .filter(sessions::member_id.eq(ann))
            .select((sessions::last_seen_at, sessions::expires_at))
            .first(&mut app.conn())
            .unwrap();
    // A loaded machine can hold the cache listener's heartbeat past its deadline, and the
    // cache is then rightly unused for a moment: up to three rounds, of which the last must
    // read nothing. A check that reads the database does so in every round.
    let mut round_trips_per_round = Vec::new();
    for _ in 0..3 {
        crate::helpers::wait_until_listening(&app.live).await;
        let round_trips = app.live.db().round_trips();
        for method in [
            reqwest::Method::GET,
            reqwest::Method::POST,
            reqwest::Method::PUT,
        ] {
            for path in ["/auth/check", "/auth/forward"] {
                let visitor = app.visitor();
                let res = visitor
                    .request(method.clone(), path)
                    .header("X-Latchkey-App", "wiki")
                    .header("X-Original-URL", "https://wiki.example.org/edit")
                    .header("Cookie", &wiki.cookie().unwrap())
                    .body("a body that is never read")
                    .await;
                assert_eq!(res.status(), 200, "{method} {path}");
            }
        }
        let used = app.live.db().round_trips() - round_trips;
        round_trips_per_round.push(used);
        if used == 0 {
            break;
        }
    }
    assert_eq!(
        round_trips_per_round.last(),
        Some(&0),
        "no database round trip per check (rounds: {round_trips_per_round:?})"
    );
    assert_eq!(app.audit().len(), audit_rows, "no audit row per check");
    let session_after: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sessions::table
            .filter(sessions::member_id.eq(ann))
            .select((sessions::last_seen_at, sessions::expires_at))
            .first(&mut app.conn())
            .unwrap();
    assert_eq!(
        session_before, session_after,
        "the session is not written per check"
    );
    let opened = app
        .audit()
        .into_iter()
        .find(|row| row.event == "app_opened")
        .unwrap();
    assert_eq!(opened.email.as_deref(), Some("ann@example.org"));
    assert_eq!(opened.detail, "wiki");
}

#[actix_web::test]
async fn an_app_cookie_opens_its_own_app_and_nothing_else() {
    let app = spawn_app().await;
    let ann = app.member(Role::Member, "ann@example.org").await;
    register(
        &app,
        "wiki",
        "http://wiki.localhost:8081",
        &[Role::Member],
        &[],
    );
    register(
        &app,
        "blog",
        "http://blog.localhost:8082",
        &[Role::Member],
        &[],
    );
    let wiki = AppHost::new(&app, "wiki", "http://wiki.localhost:8081");
    let res = wiki.open(&ann, "/").await;
    assert_eq!(res.status(), 303);
    let cookie = wiki.cookie().unwrap();
    assert!(
        cookie.starts_with("latchkey_app="),
        "plain name on loopback http: {cookie}"
    );
    assert_eq!(wiki.check("/auth/check", "/").await.status(), 200);
    // The wiki's cookie carried to the blog's host opens nothing there...
    let blog = AppHost::new(&app, "blog", "http://blog.localhost:8082");
    blog.set_cookie(Some(cookie));
    assert_eq!(blog.check("/auth/check", "/").await.status(), 401);
    // ...and SSO needs no typing: the member passes /auth/app in one redirect.
    blog.set_cookie(None);
    assert_eq!(blog.open(&ann, "/").await.status(), 303);
    assert_eq!(blog.check("/auth/check", "/").await.status(), 200);
    // A code made for the wiki is refused by the blog's callback, and then still works
    // for the wiki once.
    let res = wiki.ask(&ann, "/").await;
    let query = location(&res).split_once('?').unwrap().1.to_string();
    let foreign = blog.callback(&query).await;
    assert_eq!(foreign.status(), 400);
    assert!(foreign.headers().get("set-cookie").is_none());
    assert_eq!(wiki.callback(&query).await.status(), 303);
    // Truncated, forged and missing codes: a page, no cookie.
    for query in [
        "code=abc&rd=/",
        &query[..20],
        "rd=/",
        &format!("code={}&rd=/", "B".repeat(43)),
    ] {
        let res = blog.callback(query).await;
        assert_eq!(res.status(), 400, "{query}");
        assert!(res.headers().get("set-cookie").is_none());
        let page = res.text().await.unwrap();
        assert!(page.contains("/.latchkey/static/app.css"), "styled: {page}");
        let parsed = crate::helpers::parse_page(&page);
        let retry = crate::helpers::attr(crate::helpers::one(&parsed, "a#retry"), "href");
        assert!(
            retry.contains("/auth/app?app=blog"),
            "a way to try again: {retry}"
        );
    }
    // An expired code.
    let res = wiki.ask(&ann, "/").await;
    let query = location(&res).split_once('?').unwrap().1.to_string();
    diesel::update(app_sessions::table.filter(app_sessions::code_digest.is_not_null()))
        .set(app_sessions::code_expires_at.eq(chrono::Utc::now() - chrono::Duration::seconds(1)))
        .execute(&mut app.conn())
        .unwrap();
    assert_eq!(wiki.callback(&query).await.status(), 400);
    // rd is a path on the app: anything else becomes its front page.
    let res = wiki.callback("code=x&rd=//evil.test").await;
    assert_eq!(res.status(), 400);
    let res = ann
        .get(&format!(
            "/auth/app?app=wiki&rd={}",
            urlencode("https://evil.test/x")
        ))
        .await;
    assert!(location(&res).ends_with("&rd=%2F"), "{}", location(&res));
}

#[actix_web::test]
async fn auth_app_sends_the_signed_out_to_sign_in_for_the_app_and_refuses_the_not_allowed() {
    let app = spawn_app().await;
    app.add_member("boss@example.org", Role::Admin);
    register(
        &app,
        "Wiki",
        "https://wiki.example.org",
        &[Role::Admin],
        &["boss@example.org"],
    );
    let wiki = AppHost::new(&app, "Wiki", "https://wiki.example.org");
    let visitor = app.visitor();
    let res = wiki.ask(&visitor, "/page").await;
    assert_eq!(res.status(), 303);
    let sign_in = location(&res);
    assert_eq!(
        sign_in,
        format!("/login?rd={}", urlencode("https://wiki.example.org/page"))
    );
    let page = visitor.get(&sign_in).await.text().await.unwrap();
    assert!(page.contains("to continue to Wiki"), "{page}");
    // Not allowed: the styled 403 page, naming the app, the member and whom to ask.
    let ann = app.member(Role::Member, "ann@example.org").await;
    let res = wiki.ask(&ann, "/page").await;
    assert_eq!(res.status(), 403);
    let page = res.text().await.unwrap();
    for needle in [
        "Wiki",
        "ann@example.org",
        "boss@example.org",
        "/.latchkey/static/app.css",
        "switch=1",
    ] {
        assert!(page.contains(needle), "{needle}: {page}");
    }
    assert_eq!(count_events(&app, "app_denied"), 1);
    let res = ann
        .get(&format!(
            "/auth/app?app=Wiki&rd={}&switch=1",
            urlencode("https://wiki.example.org/page")
        ))
        .await;
    assert_eq!(location(&res), sign_in, "sign in as someone else");
    // No app of that name.
    assert_eq!(ann.get("/auth/app?app=nope&rd=/").await.status(), 403);
    assert_eq!(app.count("app_sessions"), 0);
}

#[actix_web::test]
async fn a_policy_change_ends_the_app_session_and_refusals_are_audited_once_a_minute() {
    let app = spawn_app().await;
    app.add_member("boss@example.org", Role::Admin);
    let ann = app.member(Role::Member, "ann@example.org").await;
    let wiki_id = register(
        &app,
        "wiki",
        "https://wiki.example.org",
        &[Role::Member],
        &[],
    );
    let wiki = AppHost::new(&app, "wiki", "https://wiki.example.org");
    wiki.open(&ann, "/").await;
    assert_eq!(wiki.check("/auth/check", "/").await.status(), 200);
    let access = Access {
        roles: vec![Role::Admin],
        groups: vec![],
        members: vec![EmailAddress::parse("boss@example.org").unwrap()],
    };
    let origin = AppOrigin::parse("https://wiki.example.org").unwrap();
    app::update(&mut app.conn(), wiki_id, "wiki", &origin, &access, "test").unwrap();
    app.sync_cache().await;
    let res = wiki.check("/auth/forward", "/").await;
    assert_eq!(res.status(), 403);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("boss@example.org"),
        "says whom to ask: {page}"
    );
    assert_eq!(
        app.count("app_sessions"),
        0,
        "the refused app session ended"
    );
    // Let in again, the old cookie stays dead: a new sign-in to the app is needed.
    let access = Access {
        roles: vec![Role::Member],
        groups: vec![],
        members: vec![],
    };
    app::update(&mut app.conn(), wiki_id, "wiki", &origin, &access, "test").unwrap();
    app.sync_cache().await;
    assert_eq!(wiki.check("/auth/check", "/").await.status(), 401);
    assert_eq!(count_events(&app, "app_denied"), 1);
    // An unknown app is refused whoever asks, and audits nothing.
    let nope = AppHost::new(&app, "nope", "https://nope.example.org");
    nope.set_cookie(wiki.cookie());
    assert_eq!(nope.check("/auth/check", "/").await.status(), 403);
    let res = app
        .visitor()
        .get("/auth/check")
        .header("X-Original-URL", "https://evil.test/")
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(count_events(&app, "app_denied"), 1);
}

/// A shared cache may keep what these answer (the JWK set says `public`), so they must not
/// hand one browser's pre-sign-in cookie (its CSRF binding) to every browser behind it.
#[actix_web::test]
async fn the_jwk_set_static_files_health_and_checks_set_no_cookie() {
    let app = spawn_app().await;
    for path in [
        "/.well-known/jwks.json",
        "/static/htmx.min.js",
        "/.latchkey/static/app.css",
        "/.latchkey/logout",
        "/healthz",
        "/readyz",
        "/auth/check",
        "/auth/forward",
    ] {
        let visitor = app.visitor();
        let res = visitor
            .get(path)
            .header("X-Original-URL", "https://wiki.example.org/")
            .await;
        assert!(res.status().as_u16() < 500, "{path}: {}", res.status());
        let cookies: Vec<_> = res.headers().get_all("set-cookie").iter().collect();
        assert!(cookies.is_empty(), "{path} set {cookies:?}");
    }
    let res = app.visitor().get("/login").await;
    assert_eq!(
        res.headers().get_all("set-cookie").iter().count(),
        1,
        "a page does set the browser cookie"
    );
}

#[actix_web::test]
async fn logout_revocation_deactivation_and_removal_end_app_sessions_on_every_instance() {
    let app = spawn_app().await;
    let other = app.another_instance().await;
    app.add_member("boss@example.org", Role::Admin);
    register(
        &app,
        "wiki",
        "https://wiki.example.org",
        &[Role::Member, Role::Admin],
        &[],
    );
    let wiki = AppHost::new(&app, "wiki", "https://wiki.example.org");
    let elsewhere = other.url("/auth/check");
    let passes = |status: u16| status == 200;

    // Latchkey logout.
    let ann = app.member(Role::Member, "ann@example.org").await;
    wiki.open(&ann, "/").await;
    assert!(passes(
        wiki.check_at(&elsewhere, "/").await.status().as_u16()
    ));
    assert_eq!(ann.post("/logout").await.status(), 303);
    sync_everywhere(&app, &other).await;
    assert_eq!(wiki.check("/auth/check", "/").await.status(), 401);
    assert_eq!(wiki.check_at(&elsewhere, "/").await.status(), 401);

    // Revocation by an admin.
    let ann = app.member(Role::Member, "ann@example.org").await;
    let boss = app.member(Role::Admin, "boss@example.org").await;
    wiki.open(&ann, "/").await;
    assert!(passes(
        wiki.check_at(&elsewhere, "/").await.status().as_u16()
    ));
    let ann_id = app.add_member("ann@example.org", Role::Member);
    let session: i64 = sessions::table
        .filter(sessions::member_id.eq(ann_id))
        .select(sessions::id)
        .first(&mut app.conn())
        .unwrap();
    let csrf = boss.csrf("/sessions").await;
    let res = boss
        .post(&format!("/sessions/{session}/revoke"))
        .csrf(&csrf)
        .await;
    assert!(
        res.status().is_success() || res.status() == 303,
        "{}",
        res.status()
    );
    sync_everywhere(&app, &other).await;
    assert_eq!(wiki.check_at(&elsewhere, "/").await.status(), 401);

    // Deactivation.
    let ann = app.member(Role::Member, "ann@example.org").await;
    wiki.open(&ann, "/").await;
    assert!(passes(
        wiki.check_at(&elsewhere, "/").await.status().as_u16()
    ));
    latchkey::models::member::deactivate(&mut app.conn(), ann_id, "test").unwrap();
    sync_everywhere(&app, &other).await;
    assert_eq!(wiki.check_at(&elsewhere, "/").await.status(), 401);

    // The app's own sign-out: a page with a button; the POST needs the app's Origin.
    wiki.open(&boss, "/").await;
    assert!(passes(
        wiki.check_at(&elsewhere, "/").await.status().as_u16()
    ));
    let visitor = app.visitor();
    let page = visitor
        .get("/.latchkey/logout")
        .header("X-Latchkey-App", "wiki")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"action="/.latchkey/logout""#), "{page}");
    let parsed = crate::helpers::parse_page(&page);
    assert!(
        crate::helpers::attr(crate::helpers::one(&parsed, "a#everywhere"), "href")
            == app.url("/sessions"),
        "sign out everywhere: {page}"
    );
    let sign_out = |origin: &'static str| {
        let cookie = wiki.cookie().unwrap();
        let visitor = app.visitor();
        async move {
            visitor
                .post("/.latchkey/logout")
                .without_csrf()
                .header("X-Latchkey-App", "wiki")
                .header("Cookie", &cookie)
                .header("Origin", origin)
                .await
        }
    };
    assert_eq!(sign_out("https://evil.test").await.status(), 403);
    assert!(passes(
        wiki.check("/auth/check", "/").await.status().as_u16()
    ));
    let res = sign_out("https://wiki.example.org").await;
    assert_eq!(res.status(), 200);
    let removal = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(removal.starts_with("__Host-latchkey_app=;"), "{removal}");
    sync_everywhere(&app, &other).await;
    assert_eq!(wiki.check_at(&elsewhere, "/").await.status(), 401);
    assert_eq!(wiki.check("/auth/check", "/").await.status(), 401);

    // Removal of the app.
    wiki.open(&boss, "/").await;
    assert!(passes(
        wiki.check_at(&elsewhere, "/").await.status().as_u16()
    ));
    let wiki_id = app::find_by_name(&mut app.conn(), "wiki")
        .unwrap()
        .unwrap()
        .id;
    app::remove(&mut app.conn(), wiki_id, "test").unwrap();
    sync_everywhere(&app, &other).await;
    assert_eq!(wiki.check_at(&elsewhere, "/").await.status(), 403);
    assert_eq!(app.count("app_sessions"), 0);
}

/// Verifies a compact JWS with Python's `cryptography` (an implementation that shares nothing
/// with ring) against the JWK set; prints the claims as JSON.
const VERIFY_PY: &str = r#"
import base64, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
def b64(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
token, jwks = sys.argv[1], json.loads(sys.argv[2])
head, body, sig = token.split(".")
header = json.loads(b64(head))
assert header == {"alg": "EdDSA", "typ": "JWT", "kid": header["kid"]}, header
key = [k for k in jwks["keys"] if k["kid"] == header["kid"]][0]
assert (key["kty"], key["crv"], key["use"], key["alg"]) == ("OKP", "Ed25519", "sig", "EdDSA"), key
Ed25519PublicKey.from_public_bytes(b64(key["x"])).verify(b64(sig), (head + "." + body).encode())
print(json.dumps(json.loads(b64(body))))
"#;

fn python_with_cryptography() -> bool {
    let has = || {
        std::process::Command::new("python3")
            .args(["-c", "import cryptography"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has() {
        return true;
    }
    let _ = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "cryptography"])
        .status();
    has()
}

#[actix_web::test]
async fn the_assertion_verifies_with_an_independent_implementation_against_the_jwks() {
    assert!(
        python_with_cryptography(),
        "python3 with `cryptography` is needed (python3 -m pip install cryptography)"
    );
    let app = spawn_app().await;
    let browser = app.member(Role::Auditor, "ann@example.org").await;
    let ann = app.add_member("ann@example.org", Role::Auditor);
    register(
        &app,
        "metrics",
        "http://metrics.localhost:8081",
        &[Role::Auditor],
        &[],
    );
    let metrics = AppHost::new(&app, "metrics", "http://metrics.localhost:8081");
    metrics.open(&browser, "/d/1").await;
    let res = metrics.check("/auth/check", "/d/1").await;
    assert_eq!(res.status(), 200);
    let token = res.headers()["latchkey-assertion"]
        .to_str()
        .unwrap()
        .to_string();
    let res = app.get("/.well-known/jwks.json").await;
    assert_eq!(res.status(), 200);
    let jwks = res.text().await.unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", VERIFY_PY, &token, &jwks])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["iss"], app.address);
    assert_eq!(claims["aud"], "http://metrics.localhost:8081");
    assert_eq!(claims["sub"], ann.to_string());
    assert_eq!(claims["email"], "ann@example.org");
    assert_eq!(claims["role"], "auditor");
    assert_eq!(claims["groups"], serde_json::json!(["auditor"]));
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["exp"].as_i64().unwrap(), iat + 60);
    assert!((chrono::Utc::now().timestamp() - iat).abs() < 30);

    // A tampered token fails the same verification.
    let mut forged = token.clone();
    forged.insert(token.find('.').unwrap() + 2, 'x');
    let out = std::process::Command::new("python3")
        .args(["-c", VERIFY_PY, &forged, &jwks])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// Asks for a link with `rd` (as the login form carries it) and follows it; where the browser
/// is sent after signing in.
async fn sign_in_with_rd(app: &TestApp, email: &str, rd: &str, next: Option<&str>) -> String {
    let browser = app.visitor();
    let page = browser
        .get(&format!("/login?rd={}", urlencode(rd)))
        .await
        .text()
        .await
        .unwrap();
    let carried = form_value(&page, "rd");
    let before = app.smtp.received().len();
    let mut fields = vec![("email", email), ("rd", carried.as_deref().unwrap_or(rd))];
    if let Some(next) = next {
        fields.push(("next", next));
    }
    let res = browser.post("/login").form(&fields).await;
    assert_eq!(res.status(), 200);
    let mail = app.next_sign_in_mail(before).await;
    let res = browser.confirm_link(&mail.token).await;
    assert_eq!(res.status(), 303);
    let location = location(&res);
    if !location.starts_with("/auth/return?rd=") {
        return location;
    }
    // The form post's redirect stays on Latchkey (CSP form-action); this page sends it on,
    // through /auth/app, which opens the app's own session.
    let res = browser.get(&location).await;
    assert_eq!(res.status(), 200);
    let refresh = res.headers()["refresh"].to_str().unwrap().to_string();
    let target = refresh.strip_prefix("0; url=").unwrap().to_string();
    let page = res.text().await.unwrap();
    let parsed = crate::helpers::parse_page(&page);
    let meta = crate::helpers::one(&parsed, r#"meta[http-equiv="refresh"]"#);
    assert_eq!(crate::helpers::attr(meta, "content"), refresh, "{page}");
    target
}

#[actix_web::test]
async fn after_sign_in_rd_goes_on_to_a_registered_app_and_nowhere_else() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    register(
        &app,
        "wiki",
        "https://wiki.example.org",
        &[Role::Member],
        &[],
    );
    let back = "https://wiki.example.org/page?a=1#top";
    assert_eq!(
        sign_in_with_rd(&app, "ann@example.org", back, None).await,
        format!("/auth/app?app=wiki&rd={}", urlencode(back))
    );
    let mail = app.smtp.received().last().unwrap().clone();
    assert!(
        format!("{mail:?}").contains("to continue to"),
        "the mail says which app"
    );
    // The origin decides, exactly; lookalikes and tricks land on the dashboard (or `next`).
    for bad in [
        "https://wiki.example.org.evil.test/",
        "https://evil.test/?https://wiki.example.org",
        "https://evil.test/#https://wiki.example.org",
        "https://wiki.example.org@evil.test/",
        "https://wiki.example.org:x@evil.test/",
        "//wiki.example.org/",
        "//evil.test",
        "/\\evil.test",
        "https:\\\\wiki.example.org\\",
        "https://wiki.example.org\\@evil.test/",
        "javascript:alert(1)//https://wiki.example.org",
        "http://wiki.example.org/",
        "https://wiki.example.org:444/",
        "data:text/html,<script>alert(1)</script>",
        "",
    ] {
        assert_eq!(
            sign_in_with_rd(&app, "ann@example.org", bad, None).await,
            "/",
            "{bad:?}"
        );
    }
    assert_eq!(
        sign_in_with_rd(
            &app,
            "ann@example.org",
            "https://evil.test/",
            Some("/sessions")
        )
        .await,
        "/sessions",
        "next keeps working"
    );
}

fn assertion_claims(res: &reqwest::Response) -> (String, serde_json::Value) {
    use base64::Engine as _;
    let token = res.headers()["latchkey-assertion"]
        .to_str()
        .unwrap()
        .to_string();
    let claims = token.split('.').nth(1).unwrap();
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .unwrap();
    (token, serde_json::from_slice(&claims).unwrap())
}

#[actix_web::test]
async fn a_fresh_assertion_is_handed_out_again_but_never_after_a_role_change() {
    let app = spawn_app().await;
    app.add_member("boss@example.org", Role::Admin);
    register(
        &app,
        "wiki",
        "https://wiki.example.org",
        &[Role::Member, Role::Auditor],
        &[],
    );
    let wiki = AppHost::new(&app, "wiki", "https://wiki.example.org");
    let ann = app.member(Role::Member, "ann@example.org").await;
    wiki.open(&ann, "/").await;
    let first = wiki.check("/auth/check", "/").await;
    assert_eq!(first.status(), 200);
    let (token, claims) = assertion_claims(&first);
    assert_eq!(claims["role"], "member");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
    // A page load's burst of checks: the same signed assertion, not one signature each
    // (a second later, so a new signature would carry another `iat`).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for _ in 0..5 {
        let again = wiki.check("/auth/check", "/").await;
        assert_eq!(assertion_claims(&again).0, token);
    }
    // The role changes: the very next check signs what is true now.
    let boss = app.member(Role::Admin, "boss@example.org").await;
    let ann_id = app.add_member("ann@example.org", Role::Member);
    let csrf = boss.csrf("/team").await;
    let res = boss
        .post(&format!("/team/{ann_id}/role"))
        .form(&[("role", "auditor")])
        .csrf(&csrf)
        .await;
    assert!(res.status().is_success() || res.status() == 303);
    let after = wiki.check("/auth/check", "/").await;
    assert_eq!(after.status(), 200);
    let (new_token, claims) = assertion_claims(&after);
    assert_ne!(new_token, token);
    assert_eq!(claims["role"], "auditor");
}
