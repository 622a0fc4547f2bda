//! `/apps` for apps that sign in through OpenID Connect: how each app connects, what to paste
//! into Grafana, Gitea and any other client, a new client secret shown once (the old one
//! refused by `/oidc/token` at once), and adding an OIDC app from the form.

use latchkey::domain::app_origin::AppOrigin;
use latchkey::domain::ids::AppId;
use latchkey::domain::oidc::RedirectUri;
use latchkey::domain::role::Role;
use latchkey::models::app::{self, Access};
use latchkey::models::oidc::{self as oidc_rows, Registration};

use crate::helpers::{attr, one, parse_page, select, spawn_app, text, texts, urlencode, TestApp};

/// A well-formed code (43 base64url characters) that was never issued: the token endpoint
/// authenticates the client first, then refuses the grant.
const BOGUS_CODE: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// An OIDC app registered as `latchkey apps add NAME URL --oidc` does; its id, client id and
/// secret (none for a public client).
fn oidc_app(app: &TestApp, name: &str, public: bool) -> (AppId, String, Option<String>) {
    let mut conn = app.conn();
    let origin = AppOrigin::parse_registrable(&format!("https://{name}.example.org")).unwrap();
    let access = Access {
        roles: vec![Role::Member],
        ..Access::default()
    };
    let saved = app::add(&mut conn, name, &origin, &access, "test").unwrap();
    let registration = Registration {
        public,
        redirect_uris: vec![RedirectUri::parse(&format!(
            "https://{name}.example.org/login/generic_oauth"
        ))
        .unwrap()],
        post_logout_redirect_uris: vec![RedirectUri::parse(&format!(
            "https://{name}.example.org/signed-out"
        ))
        .unwrap()],
        backchannel_logout_uri: None,
    };
    let registered = oidc_rows::register(&mut conn, saved.id, &registration, "test").unwrap();
    (
        saved.id,
        registered.client_id.as_str().to_string(),
        registered.new_secret,
    )
}

fn proxy_app(app: &TestApp, name: &str) -> AppId {
    let origin = AppOrigin::parse_registrable(&format!("https://{name}.example.org")).unwrap();
    let access = Access {
        roles: vec![Role::Member],
        ..Access::default()
    };
    app::add(&mut app.conn(), name, &origin, &access, "test")
        .unwrap()
        .id
}

/// `POST /oidc/token` as an app's server sends it: `client_secret_basic`, an authorization
/// code grant for a code that was never issued. A right secret gets past client
/// authentication to `invalid_grant` (400); a wrong one is `invalid_client` (401).
async fn exchange_bogus_code(app: &TestApp, client_id: &str, secret: &str) -> (u16, String) {
    let body = format!(
        "grant_type=authorization_code&code={BOGUS_CODE}&redirect_uri={}",
        urlencode("https://grafana.example.org/login/generic_oauth")
    );
    let res = reqwest::Client::new()
        .post(app.url("/oidc/token"))
        .basic_auth(client_id, Some(secret))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let json: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    (
        status,
        json["error"].as_str().unwrap_or_default().to_string(),
    )
}

/// `LATCHKEY_PUBLIC_URL` as the provider announces it.
async fn issuer(app: &TestApp) -> String {
    let res = app.get("/.well-known/openid-configuration").await;
    let json: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    json["issuer"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn the_apps_page_says_how_each_app_connects_and_what_to_paste_into_an_oidc_app() {
    let app = spawn_app().await;
    let (grafana, client_id, _) = oidc_app(&app, "grafana", false);
    let (spa, spa_client_id, _) = oidc_app(&app, "spa", true);
    let wiki = proxy_app(&app, "wiki");
    let issuer = issuer(&app).await;
    assert!(!issuer.ends_with('/'), "{issuer}");

    let admin = app.member(Role::Admin, "boss@example.org").await;
    let html = admin.get("/apps").await.text().await.unwrap();
    let page = parse_page(&html);
    assert_eq!(
        texts(&page, "td.connects"),
        ["OpenID Connect", "OpenID Connect", "proxy"],
        "by name: grafana, spa, wiki"
    );

    let section = format!("#oidc-{grafana}");
    assert_eq!(
        text(one(&page, &format!("{section} code.client-id"))),
        client_id
    );
    assert!(text(one(&page, &format!("{section} .client-type"))).starts_with("confidential"));
    assert_eq!(
        text(one(&page, &format!("{section} .redirect-uris"))),
        "https://grafana.example.org/login/generic_oauth"
    );
    assert_eq!(
        text(one(&page, &format!("{section} .post-logout-uris"))),
        "https://grafana.example.org/signed-out"
    );
    assert_eq!(
        text(one(&page, &format!("{section} .backchannel-uri"))),
        "none"
    );
    let guide = |client: &str| {
        text(one(
            &page,
            &format!(r#"{section} pre.oidc-config[data-client="{client}"]"#),
        ))
    };

    let grafana_ini = guide("grafana");
    for line in [
        "[auth.generic_oauth]".to_string(),
        format!("client_id = {client_id}"),
        "scopes = openid email profile groups".into(),
        format!("auth_url = {issuer}/oidc/authorize"),
        format!("token_url = {issuer}/oidc/token"),
        format!("api_url = {issuer}/oidc/userinfo"),
        "groups_attribute_path = groups".into(),
        "use_pkce = true".into(),
    ] {
        assert!(
            grafana_ini.lines().any(|l| l == line),
            "{line:?} in\n{grafana_ini}"
        );
    }
    assert!(
        grafana_ini
            .contains("role_attribute_path = contains(groups[*], 'latchkey:admin') && 'Admin'"),
        "{grafana_ini}"
    );
    assert!(
        grafana_ini.contains(&format!(
            "signout_redirect_url = {issuer}/oidc/logout?client_id={client_id}&post_logout_redirect_uri={}",
            urlencode("https://grafana.example.org/signed-out")
        )),
        "{grafana_ini}"
    );

    let gitea = guide("gitea");
    for line in [
        "OAuth2 provider: OpenID Connect".to_string(),
        format!("Client ID (key): {client_id}"),
        format!("OpenID Connect auto discovery URL: {issuer}/.well-known/openid-configuration"),
        "Additional scopes: email profile groups".into(),
        "Claim name providing group names for this source: groups".into(),
        "Group claim value for administrator users: latchkey:admin".into(),
    ] {
        assert!(gitea.lines().any(|l| l == line), "{line:?} in\n{gitea}");
    }
    let gitea_cli = guide("gitea-cli");
    assert!(
        gitea_cli.contains(&format!("--key {client_id}"))
            && gitea_cli.contains("--group-claim-name groups"),
        "{gitea_cli}"
    );

    let generic = guide("generic");
    for line in [
        format!("Issuer URL: {issuer}"),
        format!("Discovery URL: {issuer}/.well-known/openid-configuration"),
        format!("Client ID: {client_id}"),
    ] {
        assert!(generic.lines().any(|l| l == line), "{line:?} in\n{generic}");
    }
    assert!(generic.contains("Groups claim: groups"), "{generic}");
    assert!(generic.contains("openid email profile groups"), "{generic}");

    // A public client: no secret to paste, no secret to renew.
    let spa_section = format!("#oidc-{spa}");
    assert_eq!(
        text(one(&page, &format!("{spa_section} code.client-id"))),
        spa_client_id
    );
    assert!(text(one(&page, &format!("{spa_section} .client-type"))).starts_with("public"));
    assert!(select(&page, &format!("{spa_section} form.new-secret")).is_empty());
    assert!(text(one(
        &page,
        &format!(r#"{spa_section} pre.oidc-config[data-client="generic"]"#)
    ))
    .contains("PKCE with S256 is required"));

    // The proxy configurations are for the proxy app only.
    assert_eq!(select(&page, &format!("#proxy-config-{wiki}")).len(), 1);
    assert!(select(&page, &format!("#proxy-config-{grafana}")).is_empty());
    assert!(select(&page, &format!("#proxy-config-{spa}")).is_empty());
    assert!(select(&page, &format!("#oidc-{wiki}")).is_empty());
    // The admin may renew the confidential client's secret.
    let form = one(&page, &format!("{section} form.new-secret"));
    assert_eq!(attr(form, "action"), format!("/apps/{grafana}/secret"));
    assert_eq!(attr(form, "method"), "post");

    // An auditor reads the same, without the button.
    let auditor = app.member(Role::Auditor, "aud@example.org").await;
    let html = auditor.get("/apps").await.text().await.unwrap();
    let page = parse_page(&html);
    assert_eq!(
        text(one(&page, &format!("{section} code.client-id"))),
        client_id
    );
    assert!(select(&page, "form.new-secret").is_empty());
}

#[actix_web::test]
async fn a_new_secret_is_shown_once_and_the_old_one_stops_working_at_once() {
    let app = spawn_app().await;
    let (grafana, client_id, old_secret) = oidc_app(&app, "grafana", false);
    let old_secret = old_secret.expect("a confidential client has a secret");
    assert_eq!(
        exchange_bogus_code(&app, &client_id, &old_secret).await,
        (400, "invalid_grant".into()),
        "the secret authenticates the client"
    );
    let path = format!("/apps/{grafana}/secret");

    // Auditors read the apps but cannot post this; members cannot reach it at all.
    let auditor = app
        .member(Role::Auditor, "aud@example.org")
        .await
        .csrf_from("/apps");
    assert_eq!(auditor.post(&path).await.status(), 403);
    let member = app
        .member(Role::Member, "ann@example.org")
        .await
        .csrf_from("/");
    assert_eq!(member.post(&path).await.status(), 403);
    // No CSRF token, no new secret.
    let admin = app
        .member(Role::Admin, "boss@example.org")
        .await
        .csrf_from("/apps");
    assert_eq!(admin.post(&path).without_csrf().await.status(), 403);
    assert_eq!(
        exchange_bogus_code(&app, &client_id, &old_secret).await,
        (400, "invalid_grant".into()),
        "nothing changed"
    );
    assert!(!app.audit_events().contains(&"app_secret_rotated".into()));

    let res = admin.post(&path).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap(),
        "no-store"
    );
    let html = res.text().await.unwrap();
    let page = parse_page(&html);
    let new_secret = text(one(&page, "#credentials code.client-secret"));
    assert_eq!(text(one(&page, "#credentials code.client-id")), client_id);
    assert!(new_secret.len() >= 43, "256 bits: {new_secret}");
    assert_ne!(new_secret, old_secret);
    let warning = text(one(&page, "#credentials .warning"));
    assert!(
        warning.contains("shown this once") && warning.contains("old secret stopped working"),
        "{warning}"
    );

    // The old secret is refused at once, the new one works.
    let (status, error) = exchange_bogus_code(&app, &client_id, &old_secret).await;
    assert_eq!((status, error.as_str()), (401, "invalid_client"));
    assert_eq!(
        exchange_bogus_code(&app, &client_id, &new_secret).await,
        (400, "invalid_grant".into())
    );

    // Shown once: not on the apps page afterwards, nowhere in the audit.
    let html = admin.get("/apps").await.text().await.unwrap();
    assert!(!html.contains(&new_secret));
    assert!(select(&parse_page(&html), "code.client-secret").is_empty());
    let rows = app.audit();
    let rotated: Vec<_> = rows
        .iter()
        .filter(|row| row.event == "app_secret_rotated")
        .collect();
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0].actor.as_deref(), Some("boss@example.org"));
    assert!(
        rotated[0].detail.contains("grafana"),
        "{}",
        rotated[0].detail
    );
    for row in &rows {
        for secret in [&new_secret, &old_secret] {
            assert!(!row.detail.contains(secret.as_str()), "{row:?}");
            assert!(
                !row.user_agent
                    .as_deref()
                    .unwrap_or("")
                    .contains(secret.as_str()),
                "{row:?}"
            );
        }
    }

    // With HTMX the section is swapped, with the secret in it; it works in turn.
    let res = admin.post(&path).htmx().await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let page = parse_page(&html);
    assert_eq!(select(&page, "section#apps").len(), 1);
    let newest = text(one(&page, "#credentials code.client-secret"));
    assert_eq!(
        exchange_bogus_code(&app, &client_id, &new_secret).await.0,
        401
    );
    assert_eq!(exchange_bogus_code(&app, &client_id, &newest).await.0, 400);

    // A public client has no secret, a proxy app no client: refused, saying why; unknown: 404.
    let (spa, _, _) = oidc_app(&app, "spa", true);
    let wiki = proxy_app(&app, "wiki");
    for (id, says) in [(spa, "public client"), (wiki, "not an OpenID Connect app")] {
        let res = admin.post(&format!("/apps/{id}/secret")).await;
        assert_eq!(res.status(), 422);
        let html = res.text().await.unwrap();
        let error = text(one(&parse_page(&html), "p.error"));
        assert!(error.contains(says), "{error}");
    }
    assert_eq!(admin.post("/apps/999999/secret").await.status(), 404);
    assert_eq!(
        app.audit_events()
            .iter()
            .filter(|event| *event == "app_secret_rotated")
            .count(),
        2
    );
}

#[actix_web::test]
async fn admins_add_an_oidc_app_from_the_form_and_bad_redirect_uris_save_nothing() {
    let app = spawn_app().await;
    let admin = app
        .member(Role::Admin, "boss@example.org")
        .await
        .csrf_from("/apps");

    let res = admin
        .post("/apps")
        .form(&[
            ("name", "grafana"),
            ("url", "https://grafana.example.org"),
            ("roles", "member"),
            ("oidc", "on"),
            (
                "redirect_uris",
                "https://grafana.example.org/login/generic_oauth\r\n\r\nhttp://127.0.0.1:3000/login/generic_oauth\r\n",
            ),
            ("post_logout_redirect_uris", "https://grafana.example.org/"),
            ("backchannel_logout_uri", "https://grafana.example.org/bc"),
        ])
        .await;
    assert_eq!(
        res.status(),
        200,
        "the answer shows the secret: no redirect"
    );
    assert_eq!(
        res.headers()
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap(),
        "no-store"
    );
    let html = res.text().await.unwrap();
    let page = parse_page(&html);
    let client_id = text(one(&page, "#credentials code.client-id"));
    let secret = text(one(&page, "#credentials code.client-secret"));
    assert!(text(one(&page, "#credentials .warning")).contains("shown this once"));

    let saved = app::find_by_name(&mut app.conn(), "grafana")
        .unwrap()
        .unwrap();
    let client = saved.oidc().expect("registered as a client");
    assert_eq!(client.client_id.as_str(), client_id);
    assert!(!client.is_public());
    let uris: Vec<&str> = client.redirect_uris.iter().map(|u| u.as_str()).collect();
    assert_eq!(
        uris,
        [
            "https://grafana.example.org/login/generic_oauth",
            "http://127.0.0.1:3000/login/generic_oauth"
        ]
    );
    assert_eq!(
        client.backchannel_logout_uri.as_ref().map(|u| u.as_str()),
        Some("https://grafana.example.org/bc")
    );
    assert_eq!(
        exchange_bogus_code(&app, &client_id, &secret).await,
        (400, "invalid_grant".into()),
        "the secret shown is the client's"
    );
    // Shown once.
    let html = admin.get("/apps").await.text().await.unwrap();
    assert!(!html.contains(&secret));

    // A public client, with HTMX: its client id, and no secret.
    let res = admin
        .post("/apps")
        .htmx()
        .form(&[
            ("name", "spa"),
            ("url", "https://spa.example.org"),
            ("roles", "member"),
            ("oidc", "on"),
            ("public", "on"),
            ("redirect_uris", "https://spa.example.org/cb"),
        ])
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let page = parse_page(&html);
    let spa_client_id = text(one(&page, "#credentials code.client-id"));
    assert!(select(&page, "#credentials code.client-secret").is_empty());
    let spa = app::find_by_name(&mut app.conn(), "spa").unwrap().unwrap();
    let spa_client = spa.oidc().unwrap();
    assert!(spa_client.is_public());
    assert_eq!(spa_client.client_id.as_str(), spa_client_id);

    let audit_before = app.count("login_audit");
    let refusals: [(&[(&str, &str)], &str); 6] = [
        (
            &[("redirect_uris", "http://example.org/cb")],
            "must use https",
        ),
        (&[("redirect_uris", "https://a.example.org/*")], "wildcard"),
        (
            &[
                ("redirect_uris", "https://a.example.org/cb"),
                ("post_logout_redirect_uris", "https://a.example.org/out#x"),
            ],
            "fragment",
        ),
        (
            &[
                ("redirect_uris", "https://a.example.org/cb"),
                ("backchannel_logout_uri", "http://a.example.org/bc"),
            ],
            "Back-channel logout URI",
        ),
        (&[("redirect_uris", "")], "at least one redirect URI"),
        (
            &[("oidc", ""), ("redirect_uris", "https://a.example.org/cb")],
            "Tick",
        ),
    ];
    for htmx in [false, true] {
        for (extra, says) in refusals {
            let mut fields = vec![
                ("name", "blog"),
                ("url", "https://blog.example.org"),
                ("roles", "member"),
            ];
            if !extra.iter().any(|(name, _)| *name == "oidc") {
                fields.push(("oidc", "on"));
            }
            fields.extend(extra.iter().copied().filter(|(_, value)| !value.is_empty()));
            let res = admin.post("/apps").htmx_if(htmx).form(&fields).await;
            assert_eq!(res.status(), 422, "{fields:?}");
            let html = res.text().await.unwrap();
            let page = parse_page(&html);
            let error = text(one(&page, "p.error"));
            assert!(error.contains(says), "{fields:?}: {error}");
            assert!(select(&page, "#credentials").is_empty());
            // What was typed stays in the form.
            let typed = text(one(&page, r#"form.add-app textarea[name="redirect_uris"]"#));
            let sent = extra
                .iter()
                .find(|(name, _)| *name == "redirect_uris")
                .map(|(_, value)| *value)
                .unwrap_or_default();
            assert_eq!(typed, sent);
        }
    }
    assert_eq!(app.count("apps"), 2, "nothing saved");
    assert_eq!(app.count("login_audit"), audit_before, "nothing audited");
    let events: Vec<String> = app
        .audit_events()
        .into_iter()
        .filter(|event| event.starts_with("app_"))
        .collect();
    assert_eq!(
        events,
        ["app_added", "app_changed", "app_added", "app_changed"],
        "each app added, then registered as a client"
    );
    for row in app.audit() {
        assert!(!row.detail.contains(&secret), "{row:?}");
    }
}

#[actix_web::test]
async fn an_oidc_apps_registration_changes_on_its_form_and_keeps_its_client_id() {
    let app = spawn_app().await;
    let (grafana, client_id, secret) = oidc_app(&app, "grafana", false);
    let secret = secret.unwrap();
    let admin = app
        .member(Role::Admin, "boss@example.org")
        .await
        .csrf_from("/apps");
    let path = format!("/apps/{grafana}");
    let registration = || {
        app::find_by_name(&mut app.conn(), "grafana")
            .unwrap()
            .unwrap()
            .oidc()
            .unwrap()
    };
    let uris = |list: &[RedirectUri]| -> Vec<String> {
        list.iter().map(|uri| uri.as_str().to_string()).collect()
    };

    // The change form shows the registration as it is.
    let html = admin.get("/apps").await.text().await.unwrap();
    let page = parse_page(&html);
    let form = one(&page, &format!(r#"form[action="{path}"]"#));
    assert_eq!(
        crate::helpers::texts_within(form, r#"textarea[name="redirect_uris"]"#),
        ["https://grafana.example.org/login/generic_oauth"]
    );
    assert_eq!(
        crate::helpers::within(form, r#"input[name="oidc"][type="hidden"]"#).len(),
        1
    );

    let fields = |redirects: &'static str, public: bool| {
        let mut fields = vec![
            ("name", "grafana"),
            ("url", "https://grafana.example.org"),
            ("roles", "member"),
            ("oidc", "on"),
            ("redirect_uris", redirects),
            (
                "post_logout_redirect_uris",
                "https://grafana.example.org/signed-out",
            ),
        ];
        if public {
            fields.push(("public", "on"));
        }
        fields
    };

    // New redirect URIs: saved (303), the client id and the secret kept.
    let res = admin
        .post(&path)
        .form(&fields(
            "https://grafana.example.org/login/generic_oauth\nhttps://grafana.example.org/alt",
            false,
        ))
        .await;
    assert_eq!(res.status(), 303);
    let client = registration();
    assert_eq!(client.client_id.as_str(), client_id);
    assert_eq!(
        uris(&client.redirect_uris),
        [
            "https://grafana.example.org/login/generic_oauth",
            "https://grafana.example.org/alt"
        ]
    );
    assert_eq!(
        exchange_bogus_code(&app, &client_id, &secret).await.0,
        400,
        "the secret still works"
    );

    // Saved again as it is: nothing audited.
    let audited = app.count("login_audit");
    let res = admin
        .post(&path)
        .form(&fields(
            "https://grafana.example.org/login/generic_oauth\r\nhttps://grafana.example.org/alt",
            false,
        ))
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.count("login_audit"), audited);

    // A bad URI: 422 saying why, nothing changed.
    let res = admin
        .post(&path)
        .htmx()
        .form(&fields("https://grafana.example.org/*", false))
        .await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(text(one(&parse_page(&html), "p.error")).contains("wildcard"));
    assert_eq!(registration().redirect_uris.len(), 2);
    assert_eq!(app.count("login_audit"), audited);

    // Public: the secret is gone (a secret is refused); confidential again: a new one, shown once.
    let res = admin
        .post(&path)
        .form(&fields(
            "https://grafana.example.org/login/generic_oauth",
            true,
        ))
        .await;
    assert_eq!(res.status(), 303);
    assert!(registration().is_public());
    assert_eq!(
        exchange_bogus_code(&app, &client_id, &secret).await,
        (401, "invalid_client".into())
    );
    let res = admin
        .post(&path)
        .form(&fields(
            "https://grafana.example.org/login/generic_oauth",
            false,
        ))
        .await;
    assert_eq!(res.status(), 200, "the new secret is on the answer");
    let html = res.text().await.unwrap();
    let page = parse_page(&html);
    assert_eq!(text(one(&page, "#credentials code.client-id")), client_id);
    let new_secret = text(one(&page, "#credentials code.client-secret"));
    assert_ne!(new_secret, secret);
    assert_eq!(
        exchange_bogus_code(&app, &client_id, &new_secret).await,
        (400, "invalid_grant".into())
    );
    assert_eq!(registration().client_id.as_str(), client_id);
    for row in app.audit() {
        assert!(!row.detail.contains(&new_secret), "{row:?}");
    }
}
