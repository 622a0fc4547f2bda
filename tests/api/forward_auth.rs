//! `/auth/check` and `/auth/forward` as a proxy calls them (the proxy forwards the browser's
//! cookie; here the test browser's own cookie store stands in for it).

use diesel::prelude::*;
use latchkey::domain::app_origin::AppOrigin;
use latchkey::domain::email_address::EmailAddress;
use latchkey::domain::ids::AppId;
use latchkey::domain::role::Role;
use latchkey::models::app::{self, Access};
use latchkey::schema::sessions;

use crate::helpers::{spawn_app, urlencode, Browser, TestApp};

pub fn register(
    app: &TestApp,
    name: &str,
    origin: &str,
    roles: &[Role],
    members: &[&str],
) -> AppId {
    let access = Access {
        roles: roles.to_vec(),
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

/// `GET path` as a proxy asks it about `original`, with `browser`'s cookies.
pub async fn check(browser: &Browser, path: &str, original: &str) -> reqwest::Response {
    browser.get(path).header("X-Original-URL", original).await
}

fn count_events(app: &TestApp, event: &str) -> usize {
    app.audit_events().iter().filter(|e| *e == event).count()
}

#[actix_web::test]
async fn a_check_without_the_original_url_is_a_bad_request() {
    let app = spawn_app().await;
    for path in ["/auth/check", "/auth/forward"] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 400, "{path}");
        let res = app
            .browser
            .get(path)
            .header("X-Forwarded-Proto", "https")
            .await;
        assert_eq!(res.status(), 400, "{path}: host missing");
    }
}

#[actix_web::test]
async fn not_signed_in_gets_the_sign_in_page_with_the_original_url() {
    let app = spawn_app().await;
    let visitor = app.visitor();
    register(
        &app,
        "wiki",
        "https://wiki.example.org",
        &[Role::Member],
        &[],
    );
    let original = "https://wiki.example.org/page?a=1&b=2";
    let res = check(&visitor, "/auth/check", original).await;
    assert_eq!(res.status(), 401);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        app.url(&format!("/login?rd={}", urlencode(original)))
    );
    assert!(res.text().await.unwrap().is_empty());
    let res = check(&visitor, "/auth/forward", original).await;
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"].to_str().unwrap(), location);
    // The X-Forwarded-* trio, as Traefik and Caddy send it.
    let res = visitor
        .get("/auth/forward")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "wiki.example.org")
        .header("X-Forwarded-Uri", "/page?a=1&b=2")
        .header("X-Forwarded-Method", "GET")
        .await;
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"].to_str().unwrap(), location);
    // A forged or foreign cookie is no session.
    let res = visitor
        .get("/auth/check")
        .header("X-Original-URL", original)
        .header("Cookie", "latchkey_session=forged")
        .await;
    assert_eq!(res.status(), 401);
}

#[actix_web::test]
async fn an_admitted_member_passes_with_identity_headers_and_nothing_is_written_per_check() {
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
    let res = check(&browser, "/auth/check", "https://wiki.example.org/").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["remote-user"], "ann@example.org");
    assert_eq!(res.headers()["remote-email"], "ann@example.org");
    assert_eq!(res.headers()["remote-groups"], "member");
    let assertion = res.headers()["latchkey-assertion"].to_str().unwrap();
    assert_eq!(assertion.split('.').count(), 3);
    assert!(res.text().await.unwrap().is_empty());
    assert_eq!(count_events(&app, "app_opened"), 1);

    let audit_rows = app.audit().len();
    let session_before: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sessions::table
            .filter(sessions::member_id.eq(ann))
            .select((sessions::last_seen_at, sessions::expires_at))
            .first(&mut app.conn())
            .unwrap();
    for method in [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::PUT,
    ] {
        for path in ["/auth/check", "/auth/forward"] {
            let res = browser
                .request(method.clone(), path)
                .header("X-Original-URL", "https://wiki.example.org/edit")
                .body("a body that is never read")
                .await;
            assert_eq!(res.status(), 200, "{method} {path}");
        }
    }
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
    assert_eq!(app.count("session_apps"), 1);
    assert_eq!(count_events(&app, "app_opened"), 1);
    let opened = app
        .audit()
        .into_iter()
        .find(|row| row.event == "app_opened")
        .unwrap();
    assert_eq!(opened.email.as_deref(), Some("ann@example.org"));
    assert_eq!(opened.detail, "wiki");
}

#[actix_web::test]
async fn members_an_app_does_not_admit_and_unknown_apps_get_403_audited_once_a_minute() {
    let app = spawn_app().await;
    app.add_member("boss@example.org", Role::Admin);
    let browser = app.member(Role::Member, "ann@example.org").await;
    register(
        &app,
        "wiki",
        "https://wiki.example.org",
        &[Role::Admin],
        &["boss@example.org"],
    );
    for _ in 0..3 {
        let res = check(&browser, "/auth/check", "https://wiki.example.org/").await;
        assert_eq!(res.status(), 403);
        let page = res.text().await.unwrap();
        assert!(page.contains("wiki"), "{page}");
        assert!(
            page.contains("boss@example.org"),
            "says whom to ask: {page}"
        );
    }
    assert_eq!(count_events(&app, "app_denied"), 1);
    for lookalike in [
        "https://wiki.example.org.evil.test/",
        "https://evil.test/?https://wiki.example.org",
        "http://wiki.example.org/",
    ] {
        let res = check(&browser, "/auth/forward", lookalike).await;
        assert_eq!(res.status(), 403, "{lookalike}");
        assert!(res.text().await.unwrap().contains("not an app"));
    }
    assert_eq!(
        count_events(&app, "app_denied"),
        1,
        "one a minute per member, whatever the app"
    );
    assert_eq!(count_events(&app, "app_opened"), 0);
    // Listed by address, an admin passes; so does a member listed by name.
    let boss = app.member(Role::Admin, "boss@example.org").await;
    let res = check(&boss, "/auth/check", "https://wiki.example.org/").await;
    assert_eq!(res.status(), 200);
}

/// A shared cache may keep what these answer (the JWK set says `public`), so they must not
/// hand one browser's pre-sign-in cookie (its CSRF binding) to every browser behind it.
#[actix_web::test]
async fn the_jwk_set_static_files_health_and_checks_set_no_cookie() {
    let app = spawn_app().await;
    for path in [
        "/.well-known/jwks.json",
        "/static/htmx.min.js",
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

/// The review's flood: one member naming a thousand unregistered origins, text of their
/// choosing in each. One row a minute, holding the host alone.
#[actix_web::test]
async fn a_thousand_unknown_origins_write_one_row_that_keeps_only_the_host() {
    let app = spawn_app().await;
    let mallory = app.member(Role::Member, "mallory@example.org").await;
    let filler = "x".repeat(200);
    for n in 0..1000 {
        let origin = format!("https://evil{n}.test/{filler}?{filler}");
        let res = check(&mallory, "/auth/check", &origin).await;
        assert_eq!(res.status(), 403, "{origin}");
    }
    let denied: Vec<_> = app
        .audit()
        .into_iter()
        .filter(|row| row.event == "app_denied")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].detail, "evil0.test is not a registered app");
}

#[actix_web::test]
async fn logout_revocation_deactivation_and_removal_are_refused_by_the_next_check() {
    let app = spawn_app().await;
    app.add_member("boss@example.org", Role::Admin);
    let wiki = register(
        &app,
        "wiki",
        "https://wiki.example.org",
        &[Role::Member],
        &[],
    );
    let url = "https://wiki.example.org/";

    // Logout.
    let ann = app.member(Role::Member, "ann@example.org").await;
    assert_eq!(check(&ann, "/auth/check", url).await.status(), 200);
    let res = ann.post("/logout").await;
    assert_eq!(res.status(), 303);
    assert_eq!(check(&ann, "/auth/check", url).await.status(), 401);

    // Revocation by an admin.
    let ann = app.member(Role::Member, "ann@example.org").await;
    let boss = app.member(Role::Admin, "boss@example.org").await;
    assert_eq!(check(&ann, "/auth/check", url).await.status(), 200);
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
    assert_eq!(check(&ann, "/auth/check", url).await.status(), 401);

    // Deactivation.
    let ann = app.member(Role::Member, "ann@example.org").await;
    assert_eq!(check(&ann, "/auth/check", url).await.status(), 200);
    latchkey::models::member::deactivate(&mut app.conn(), ann_id, "test").unwrap();
    app.sync_cache().await;
    assert_eq!(check(&ann, "/auth/check", url).await.status(), 401);

    // Removal of the app.
    assert_eq!(check(&boss, "/auth/check", url).await.status(), 403);
    register(
        &app,
        "blog",
        "https://blog.example.org",
        &[Role::Admin],
        &[],
    );
    let blog = "https://blog.example.org/admin";
    assert_eq!(check(&boss, "/auth/check", blog).await.status(), 200);
    let blog_id = app::find_by_name(&mut app.conn(), "blog")
        .unwrap()
        .unwrap()
        .id;
    app::remove(&mut app.conn(), blog_id, "test").unwrap();
    app.sync_cache().await;
    assert_eq!(check(&boss, "/auth/check", blog).await.status(), 403);
    let _ = wiki;
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
        "http://metrics.example.org:8081",
        &[Role::Auditor],
        &[],
    );
    let res = check(
        &browser,
        "/auth/check",
        "http://metrics.example.org:8081/d/1",
    )
    .await;
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
    assert_eq!(claims["aud"], "http://metrics.example.org:8081");
    assert_eq!(claims["sub"], ann.to_string());
    assert_eq!(claims["email"], "ann@example.org");
    assert_eq!(claims["role"], "auditor");
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

/// Asks for a link with `rd` (as the login form carries it) and follows it; the final Location.
async fn sign_in_with_rd(app: &TestApp, email: &str, rd: &str, next: Option<&str>) -> String {
    let browser = app.visitor();
    let page = browser
        .get(&format!("/login?rd={}", urlencode(rd)))
        .await
        .text()
        .await
        .unwrap();
    let carried = crate::helpers::form_value(&page, "rd");
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
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let Some(rd) = location.strip_prefix("/auth/return?rd=") else {
        return location;
    };
    // The form post's redirect stays on Latchkey (CSP form-action); this page sends it on.
    let res = browser.get(&location).await;
    assert_eq!(res.status(), 200);
    let target = crate::helpers::urldecode(rd);
    assert_eq!(
        res.headers()["refresh"].to_str().unwrap(),
        format!("0; url={target}")
    );
    let page = res.text().await.unwrap();
    let refresh = crate::helpers::parse_page(&page);
    let refresh = crate::helpers::one(&refresh, r#"meta[http-equiv="refresh"]"#);
    assert_eq!(
        crate::helpers::attr(refresh, "content"),
        format!("0; url={target}"),
        "{page}"
    );
    target
}

#[actix_web::test]
async fn after_sign_in_rd_returns_to_a_registered_app_and_nowhere_else() {
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
        back
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

/// The exchange Traefik's ForwardAuth middleware makes (no Traefik binary in Debian): a GET to
/// `address` with the browser's headers (its cookie among them) and `X-Forwarded-Method`,
/// `-Proto`, `-Host`, `-Uri` and `-For`; a 2xx lets the request through with
/// `authResponseHeaders` copied onto it, anything else goes back to the browser as it is.
async fn traefik_asks(browser: &Browser) -> reqwest::Response {
    browser
        .get("/auth/forward")
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "wiki.example.org")
        .header("X-Forwarded-Uri", "/page?x=1")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("Accept", "text/html")
        .await
}

#[actix_web::test]
async fn the_traefik_forward_auth_exchange() {
    let app = spawn_app().await;
    let wiki = register(
        &app,
        "wiki",
        "https://wiki.example.org",
        &[Role::Member],
        &[],
    );
    let signed_out = app.visitor();
    let res = traefik_asks(&signed_out).await;
    assert_eq!(res.status(), 302);
    assert_eq!(
        res.headers()["location"],
        app.url(&format!(
            "/login?rd={}",
            urlencode("https://wiki.example.org/page?x=1")
        ))
        .as_str()
    );
    assert!(
        res.headers().get("set-cookie").is_none(),
        "nothing for the app's origin"
    );
    let ann = app.member(Role::Member, "ann@example.org").await;
    let res = traefik_asks(&ann).await;
    assert_eq!(res.status(), 200);
    for name in [
        "remote-user",
        "remote-email",
        "remote-groups",
        "latchkey-assertion",
    ] {
        assert!(res.headers().contains_key(name), "{name}");
    }
    let access = Access {
        roles: vec![Role::Admin],
        members: vec![],
    };
    let origin = AppOrigin::parse("https://wiki.example.org").unwrap();
    app::update(&mut app.conn(), wiki, "wiki", &origin, &access, "test").unwrap();
    app.sync_cache().await;
    let res = traefik_asks(&ann).await;
    assert_eq!(res.status(), 403);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
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
    let url = "https://wiki.example.org/";
    let ann = app.member(Role::Member, "ann@example.org").await;
    let first = check(&ann, "/auth/check", url).await;
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
        let again = check(&ann, "/auth/check", url).await;
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
    let after = check(&ann, "/auth/check", url).await;
    assert_eq!(after.status(), 200);
    let (new_token, claims) = assertion_claims(&after);
    assert_ne!(new_token, token);
    assert_eq!(claims["role"], "auditor");
}
