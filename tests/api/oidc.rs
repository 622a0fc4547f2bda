//! Latchkey as an OpenID Provider, at the protocol: discovery, the code flow with PKCE, the
//! ID token verified against the published keys, userinfo, introspection, refresh rotation,
//! revocation, logout, back-channel logout, and every error case of the contract performed
//! as an attacker or a broken client would.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use latchkey::domain::role::Role;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::apps::{latchkey, ok};
use crate::helpers::Browser;
use crate::helpers::{spawn_app, TestApp};

/// A registered OIDC client, as `latchkey apps add --oidc` printed it.
struct Client {
    id: String,
    secret: Option<String>,
    redirect: String,
}

fn register(app: &TestApp, name: &str, extra: &[&str]) -> Client {
    let redirect = format!("http://127.0.0.1:9/{name}/cb");
    let origin = format!("http://{name}.localhost:9");
    let mut args = vec![
        "apps",
        "add",
        name,
        &origin,
        "--oidc",
        "--redirect-uri",
        &redirect,
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--roles") && !extra.contains(&"--groups") {
        args.extend_from_slice(&["--roles", "member,admin"]);
    }
    let out = ok(&latchkey(app, &args));
    let field = |name: &str| {
        out.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
    };
    Client {
        id: field("client_id").expect("a client id is printed"),
        secret: field("client_secret"),
        redirect,
    }
}

/// A PKCE pair: verifier, S256 challenge.
fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(latchkey::crypto::random_bytes::<32>());
    let challenge = URL_SAFE_NO_PAD.encode(latchkey::crypto::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

fn query_of(location: &str) -> HashMap<String, String> {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs().into_owned().collect()
}

fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location in a {} answer", res.status()))
        .to_str()
        .unwrap()
        .to_string()
}

fn authorize_path(client: &Client, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", &client.id)
        .append_pair("redirect_uri", &client.redirect)
        .append_pair("scope", "openid email profile groups offline_access")
        .append_pair("state", "st-123")
        .append_pair("nonce", "n-456")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    for (name, value) in extra {
        query.append_pair(name, value);
    }
    format!("/oidc/authorize?{}", query.finish())
}

/// Authorizes in a signed-in browser and returns the code.
async fn code_for(browser: &Browser, client: &Client, challenge: &str) -> String {
    let res = browser.get(&authorize_path(client, challenge, &[])).await;
    assert_eq!(res.status(), 303, "authorize answers with the redirect");
    let location = location(&res);
    assert!(location.starts_with(&client.redirect), "{location}");
    let query = query_of(&location);
    assert_eq!(query["state"], "st-123");
    query["code"].clone()
}

async fn token(app: &TestApp, client: &Client, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(app.url("/oidc/token"))
        .form(fields);
    if let Some(secret) = &client.secret {
        request = request.basic_auth(&client.id, Some(secret));
    }
    request.send().await.unwrap()
}

async fn exchange(app: &TestApp, client: &Client, code: &str, verifier: &str) -> reqwest::Response {
    token(
        app,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &client.redirect),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn json(res: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}

async fn userinfo(app: &TestApp, access_token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(app.url("/oidc/userinfo"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
}

/// The ID token's claims, verified as a relying party would: RS256 with the published key
/// its `kid` names, issuer and audience checked.
async fn verified(app: &TestApp, id_token: &str, audience: &str) -> serde_json::Value {
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let jwks: serde_json::Value = json(
        reqwest::get(app.url("/.well-known/jwks.json"))
            .await
            .unwrap(),
    )
    .await;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == header.kid.clone().unwrap().as_str())
        .expect("the token's kid is published");
    assert_eq!(jwk["kty"], "RSA");
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[app.address.as_str()]);
    jsonwebtoken::decode::<serde_json::Value>(id_token, &key, &validation)
        .unwrap()
        .claims
}

#[actix_web::test]
async fn discovery_and_keys_say_what_the_contract_says() {
    let app = spawn_app().await;
    let res = reqwest::get(app.url("/.well-known/openid-configuration"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("set-cookie").is_none());
    let config = json(res).await;
    assert_eq!(
        config["issuer"],
        app.address.as_str(),
        "exactly the public URL"
    );
    for (name, path) in [
        ("authorization_endpoint", "/oidc/authorize"),
        ("token_endpoint", "/oidc/token"),
        ("userinfo_endpoint", "/oidc/userinfo"),
        ("jwks_uri", "/.well-known/jwks.json"),
        ("revocation_endpoint", "/oidc/revoke"),
        ("introspection_endpoint", "/oidc/introspect"),
        ("end_session_endpoint", "/oidc/logout"),
    ] {
        assert_eq!(config[name], app.url(path), "{name}");
    }
    assert_eq!(
        config["response_types_supported"],
        serde_json::json!(["code"])
    );
    assert_eq!(
        config["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        config["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    assert_eq!(
        config["authorization_response_iss_parameter_supported"],
        true
    );
    assert_eq!(config["backchannel_logout_supported"], true);
    assert_eq!(config["backchannel_logout_session_supported"], true);

    let jwks = json(
        reqwest::get(app.url("/.well-known/jwks.json"))
            .await
            .unwrap(),
    )
    .await;
    let kinds: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kty"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"OKP") && kinds.contains(&"RSA"),
        "{kinds:?}"
    );
    let rsa = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kty"] == "RSA")
        .unwrap();
    assert_eq!(rsa["alg"], "RS256");
    assert_eq!(rsa["use"], "sig");
    let modulus = URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap();
    assert!(modulus.len() >= 256, "2048 bits or more");

    // The key is sealed in the database: its private half is nowhere in clear.
    let sealed: Vec<u8> = {
        use diesel::prelude::*;
        latchkey::schema::signing_keys::table
            .select(latchkey::schema::signing_keys::sealed)
            .first(&mut app.conn())
            .unwrap()
    };
    assert!(
        !sealed
            .windows(modulus.len())
            .any(|window| window == modulus.as_slice()),
        "the stored key does not hold even its modulus in clear"
    );
}

#[actix_web::test]
async fn the_code_flow_signs_an_app_in_and_its_tokens_die_with_the_session() {
    let app = spawn_app().await;
    let client = register(&app, "grafana", &[]);
    assert!(
        client.secret.is_some(),
        "a confidential client gets a secret"
    );
    let ok_out = ok(&latchkey(
        &app,
        &[
            "members",
            "add",
            "ann@example.org",
            "--name",
            "Ann Lee",
            "--role",
            "member",
        ],
    ));
    assert!(!ok_out.is_empty());
    ok(&latchkey(&app, &["groups", "add", "ops"]));
    ok(&latchkey(
        &app,
        &["groups", "members", "ops", "--add", "ann@example.org"],
    ));

    // Not signed in: the sign-in page, which says where it continues to, then back here.
    let browser = app.visitor();
    let (verifier, challenge) = pkce();
    let res = browser.get(&authorize_path(&client, &challenge, &[])).await;
    assert_eq!(res.status(), 303);
    let login = location(&res);
    assert!(login.starts_with("/login?next="), "{login}");
    let page = browser.get(&login).await.text().await.unwrap();
    assert!(
        page.contains("to continue to grafana"),
        "the sign-in page names the app"
    );
    let browser = app.signed_in(browser, "ann@example.org").await;

    let code = code_for(&browser, &client, &challenge).await;
    let res = exchange(&app, &client, &code, &verifier).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers().get("set-cookie").is_none());
    let tokens = json(res).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 600);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();

    let claims = verified(&app, tokens["id_token"].as_str().unwrap(), &client.id).await;
    assert_eq!(claims["nonce"], "n-456");
    assert_eq!(claims["email"], "ann@example.org");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Ann Lee");
    assert_eq!(
        claims["groups"],
        serde_json::json!(["ops", "latchkey:member"])
    );
    assert_eq!(claims["amr"], serde_json::json!(["otp"]));
    let sub = claims["sub"].as_str().unwrap().to_string();
    assert!(!sub.contains('@'), "sub is not the address");
    let sid = claims["sid"].as_str().unwrap();
    assert!(sid.len() >= 22, "sid is a random handle");
    let session_id: i64 = {
        use diesel::prelude::*;
        latchkey::schema::sessions::table
            .select(latchkey::schema::sessions::id)
            .first(&mut app.conn())
            .unwrap()
    };
    assert_ne!(sid, session_id.to_string(), "never the session's id");
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() == 300);
    assert!(claims["auth_time"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());

    // Userinfo: the same claims, from the token's scopes.
    let res = userinfo(&app, &access).await;
    assert_eq!(res.status(), 200);
    let info = json(res).await;
    assert_eq!(info["sub"], sub.as_str());
    assert_eq!(info["email"], "ann@example.org");
    assert_eq!(
        info["groups"],
        serde_json::json!(["ops", "latchkey:member"])
    );

    // Introspection: active for its own client.
    let res = reqwest::Client::new()
        .post(app.url("/oidc/introspect"))
        .basic_auth(&client.id, client.secret.as_ref())
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    let answer = json(res).await;
    assert_eq!(answer["active"], true);
    assert_eq!(answer["sub"], sub.as_str());
    assert_eq!(answer["client_id"], client.id.as_str());

    // Refresh: a new pair; the old refresh token is spent, and presenting it again revokes
    // the whole family, the new tokens included.
    let res = token(
        &app,
        &client,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let renewed = json(res).await;
    let new_access = renewed["access_token"].as_str().unwrap().to_string();
    let new_refresh = renewed["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(new_refresh, refresh);
    assert_eq!(userinfo(&app, &new_access).await.status(), 200);
    let res = token(
        &app,
        &client,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["error"], "invalid_grant");
    let res = userinfo(&app, &new_access).await;
    assert_eq!(res.status(), 401, "the family went with the spent token");
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let res = token(
        &app,
        &client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &new_refresh),
        ],
    )
    .await;
    assert_eq!(json(res).await["error"], "invalid_grant");

    // A second sign-in to the app; then signing out of Latchkey ends its tokens at once.
    let (verifier, challenge) = pkce();
    let code = code_for(&browser, &client, &challenge).await;
    let tokens = json(exchange(&app, &client, &code, &verifier).await).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(userinfo(&app, &access).await.status(), 200);
    let sessions = browser.get("/sessions").await.text().await.unwrap();
    assert!(
        sessions.contains("grafana"),
        "the session list names the app it signed in to"
    );
    let res = browser.post("/logout").csrf(&browser.csrf("/").await).await;
    assert_eq!(res.status(), 303);
    assert_eq!(userinfo(&app, &access).await.status(), 401);

    // Nothing secret in the audit: no code, token or secret.
    let audit = format!("{:?}", app.audit());
    for secret in [&code, &access, &refresh, client.secret.as_ref().unwrap()] {
        assert!(!audit.contains(secret.as_str()));
    }
    assert!(app.audit_events().contains(&"app_opened".to_string()));
}

#[actix_web::test]
async fn requests_that_cannot_go_back_to_the_app_get_a_page_and_others_the_protocols_error() {
    let app = spawn_app().await;
    let client = register(&app, "wiki", &[]);
    let public = register(&app, "spa", &["--public"]);
    assert!(public.secret.is_none(), "a public client has no secret");
    let browser = app.member(Role::Member, "ann@example.org").await;
    let (_, challenge) = pkce();

    // An unknown client, or a redirect URI that differs by one character: a page, never a
    // redirect.
    let unknown = Client {
        id: "nobody-registered-this-id".into(),
        ..Client {
            id: String::new(),
            secret: None,
            redirect: client.redirect.clone(),
        }
    };
    let off_by_one = Client {
        id: client.id.clone(),
        secret: None,
        redirect: format!("{}x", client.redirect),
    };
    for wrong in [&unknown, &off_by_one] {
        let res = browser.get(&authorize_path(wrong, &challenge, &[])).await;
        assert_eq!(res.status(), 400);
        assert!(res.headers().get("location").is_none());
    }

    // Mistakes of a known client: back to it with the error, its state and iss.
    let back = |res: &reqwest::Response| -> HashMap<String, String> {
        assert_eq!(res.status(), 303);
        let location = location(res);
        assert!(location.starts_with(&client.redirect), "{location}");
        query_of(&location)
    };
    let res = browser
        .get(&authorize_path(&client, &challenge, &[]).replace("scope=openid+", "scope="))
        .await;
    let query = back(&res);
    assert_eq!(query["error"], "invalid_scope");
    assert_eq!(query["state"], "st-123");
    assert_eq!(query["iss"], app.address.as_str());
    let res = browser
        .get(&authorize_path(&client, &challenge, &[]).replace("method=S256", "method=plain"))
        .await;
    assert_eq!(back(&res)["error"], "invalid_request");
    let res = browser
        .get(
            &authorize_path(&client, &challenge, &[])
                .replace("response_type=code", "response_type=token"),
        )
        .await;
    assert_eq!(back(&res)["error"], "unsupported_response_type");
    let res = browser
        .get(&authorize_path(&client, "not-a-challenge", &[]))
        .await;
    assert_eq!(back(&res)["error"], "invalid_request");
    let long_state = "s".repeat(600);
    let res = browser
        .get(
            &authorize_path(&client, &challenge, &[])
                .replace("state=st-123", &format!("state={long_state}")),
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(query_of(&location(&res))["error"], "invalid_request");

    // A public client without PKCE.
    let no_pkce = format!(
        "/oidc/authorize?response_type=code&client_id={}&redirect_uri={}&scope=openid&state=s",
        public.id,
        crate::helpers::urlencode(&public.redirect)
    );
    let res = browser.get(&no_pkce).await;
    assert_eq!(query_of(&location(&res))["error"], "invalid_request");

    // prompt=none without a session.
    let res = app
        .visitor()
        .get(&authorize_path(&client, &challenge, &[("prompt", "none")]))
        .await;
    assert_eq!(back(&res)["error"], "login_required");

    // A member the app does not let in: access_denied, audited app_denied.
    let admins_only = register(&app, "vault", &["--roles", "admin"]);
    let res = browser
        .get(&authorize_path(&admins_only, &challenge, &[]))
        .await;
    let location = location(&res);
    assert!(location.starts_with(&admins_only.redirect));
    assert_eq!(query_of(&location)["error"], "access_denied");
    assert!(app.audit_events().contains(&"app_denied".to_string()));
}

#[actix_web::test]
async fn the_token_endpoint_refuses_replays_wrong_verifiers_secrets_and_other_clients() {
    let app = spawn_app().await;
    let client = register(&app, "wiki", &[]);
    let other = register(&app, "blog", &[]);
    let browser = app.member(Role::Member, "ann@example.org").await;

    // A wrong verifier, a verifier of the wrong length, a redirect URI off by one: refused,
    // and the code still works for the right request (a bad guess does not burn it).
    let (verifier, challenge) = pkce();
    let code = code_for(&browser, &client, &challenge).await;
    let wrong = pkce().0;
    for (verifier_sent, redirect) in [
        (wrong.as_str(), client.redirect.clone()),
        (&verifier[..20], client.redirect.clone()),
        (verifier.as_str(), format!("{}/", client.redirect)),
    ] {
        let res = token(
            &app,
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect),
                ("code_verifier", verifier_sent),
            ],
        )
        .await;
        assert_eq!(res.status(), 400);
        assert_eq!(json(res).await["error"], "invalid_grant");
    }
    assert!(app.audit_events().contains(&"oidc_refused".to_string()));

    // Another client cannot use this client's code.
    let res = exchange(&app, &other, &code, &verifier).await;
    assert_eq!(json(res).await["error"], "invalid_grant");

    // A wrong secret: 401 invalid_client with WWW-Authenticate.
    let forged = Client {
        id: client.id.clone(),
        secret: Some("not-the-secret".into()),
        redirect: client.redirect.clone(),
    };
    let res = exchange(&app, &forged, &code, &verifier).await;
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("www-authenticate").is_some());
    assert_eq!(json(res).await["error"], "invalid_client");

    // The right request works once; the replay is refused and revokes what the first issued.
    let tokens = json(exchange(&app, &client, &code, &verifier).await).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(userinfo(&app, &access).await.status(), 200);
    let res = exchange(&app, &client, &code, &verifier).await;
    assert_eq!(json(res).await["error"], "invalid_grant");
    assert_eq!(
        userinfo(&app, &access).await.status(),
        401,
        "the replay revoked it"
    );
    assert!(app.audit_events().contains(&"oidc_code_reused".to_string()));

    // A refresh token of another client.
    let (verifier, challenge) = pkce();
    let code = code_for(&browser, &client, &challenge).await;
    let tokens = json(exchange(&app, &client, &code, &verifier).await).await;
    let refresh = tokens["refresh_token"]
        .as_str()
        .unwrap_or(&refresh)
        .to_string();
    let res = token(
        &app,
        &other,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(json(res).await["error"], "invalid_grant");

    // Unknown grant types, missing fields, garbage codes, two authentication methods.
    let res = token(
        &app,
        &client,
        &[("grant_type", "password"), ("username", "x")],
    )
    .await;
    assert_eq!(json(res).await["error"], "unsupported_grant_type");
    let res = token(
        &app,
        &client,
        &[("grant_type", "authorization_code"), ("code", "x")],
    )
    .await;
    assert_eq!(json(res).await["error"], "invalid_request");
    let res = reqwest::Client::new()
        .post(app.url("/oidc/token"))
        .basic_auth(&client.id, client.secret.as_ref())
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_secret", "x"),
            ("refresh_token", &refresh),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["error"], "invalid_request");
    let huge = "x".repeat(20_000);
    let res = token(
        &app,
        &client,
        &[("grant_type", "authorization_code"), ("code", &huge)],
    )
    .await;
    assert_eq!(
        res.status(),
        413,
        "oversized bodies are refused before anything"
    );

    // Revocation: the refresh token takes its access tokens along.
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let res = reqwest::Client::new()
        .post(app.url("/oidc/revoke"))
        .basic_auth(&client.id, client.secret.as_ref())
        .form(&[("token", refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(userinfo(&app, &access).await.status(), 401);

    // A rotated secret: the old one stops at once.
    let out = ok(&latchkey(&app, &["apps", "secret", "wiki"]));
    let new_secret = out
        .strip_prefix("client_secret: ")
        .unwrap()
        .trim()
        .to_string();
    let res = token(
        &app,
        &client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &"A".repeat(43)),
        ],
    )
    .await;
    assert_eq!(res.status(), 401, "the old secret");
    let rotated = Client {
        secret: Some(new_secret),
        ..client
    };
    let res = token(
        &app,
        &rotated,
        &[
            ("grant_type", "authorization_code"),
            ("code", &"A".repeat(43)),
        ],
    )
    .await;
    assert_eq!(
        json(res).await["error"],
        "invalid_grant",
        "the new secret authenticates"
    );
    assert!(app
        .audit_events()
        .contains(&"app_secret_rotated".to_string()));
}

#[actix_web::test]
async fn logout_needs_a_hint_signed_here_and_sends_the_app_back_with_its_state() {
    let app = spawn_app().await;
    let client = register(
        &app,
        "wiki",
        &["--post-logout-redirect-uri", "http://127.0.0.1:9/wiki/bye"],
    );
    let browser = app.member(Role::Member, "ann@example.org").await;
    let (verifier, challenge) = pkce();
    let code = code_for(&browser, &client, &challenge).await;
    let tokens = json(exchange(&app, &client, &code, &verifier).await).await;
    let id_token = tokens["id_token"].as_str().unwrap().to_string();
    let access = tokens["access_token"].as_str().unwrap().to_string();

    // alg confusion: the public key as an HMAC secret; and a token signed by another key.
    let jwks = json(
        reqwest::get(app.url("/.well-known/jwks.json"))
            .await
            .unwrap(),
    )
    .await;
    let rsa = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .unwrap()
        .clone();
    let claims: serde_json::Value = {
        let payload = id_token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: rsa["kid"].as_str().map(str::to_string),
            ..jsonwebtoken::Header::new(Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(rsa["n"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    let stranger_key = openssl::rsa::Rsa::generate(2048)
        .unwrap()
        .private_key_to_der()
        .unwrap();
    let foreign = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: rsa["kid"].as_str().map(str::to_string),
            ..jsonwebtoken::Header::new(Algorithm::RS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_der(&stranger_key),
    )
    .unwrap();
    for hint in [
        &confused,
        &foreign,
        &format!("{}x", &id_token[..id_token.len() - 1]),
    ] {
        let res = browser
            .get(&format!("/oidc/logout?id_token_hint={hint}&post_logout_redirect_uri=http://127.0.0.1:9/wiki/bye"))
            .await;
        assert_eq!(res.status(), 400, "a hint signed by someone else");
    }
    assert_eq!(
        userinfo(&app, &access).await.status(),
        200,
        "still signed in"
    );

    // An unregistered post-logout URI.
    let res = browser
        .get(&format!(
            "/oidc/logout?id_token_hint={id_token}&post_logout_redirect_uri=https://evil.example/"
        ))
        .await;
    assert_eq!(res.status(), 400);

    // The real thing: a confirmation page, its POST (with CSRF) ends the session, then back
    // to the app with its state.
    let path = format!(
        "/oidc/logout?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye-1",
        crate::helpers::urlencode("http://127.0.0.1:9/wiki/bye")
    );
    let page = browser.get(&path).await;
    assert_eq!(page.status(), 200);
    let without_csrf = browser
        .post("/oidc/logout")
        .form(&[("id_token_hint", &id_token)])
        .without_csrf()
        .await;
    assert_eq!(without_csrf.status(), 403);
    let res = browser
        .post("/oidc/logout")
        .form(&[
            ("id_token_hint", id_token.as_str()),
            ("post_logout_redirect_uri", "http://127.0.0.1:9/wiki/bye"),
            ("state", "bye-1"),
        ])
        .csrf(&browser.csrf(&path).await)
        .await;
    assert_eq!(res.status(), 200);
    let refresh = res.headers()["refresh"].to_str().unwrap().to_string();
    assert_eq!(refresh, "0; url=http://127.0.0.1:9/wiki/bye?state=bye-1");
    assert_eq!(
        userinfo(&app, &access).await.status(),
        401,
        "the session ended"
    );
    assert!(app.audit_events().contains(&"signed_out".to_string()));
}

/// A one-shot HTTP server that answers `status` and hands back each request body it got.
async fn backchannel_receiver(
    status: u16,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                buffer.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buffer).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|line| {
                            line.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        let _ = tx.send(body.to_string());
                        break;
                    }
                }
            }
            let answer =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    (format!("http://127.0.0.1:{port}/backchannel"), rx)
}

#[actix_web::test]
async fn a_revoked_session_is_told_to_the_app_through_the_outbox() {
    let app = spawn_app().await;
    let (uri, mut received) = backchannel_receiver(200).await;
    let client = register(&app, "wiki", &["--backchannel-logout-uri", &uri]);
    let (failing_uri, _) = backchannel_receiver(500).await;
    let failing = register(&app, "blog", &["--backchannel-logout-uri", &failing_uri]);
    let browser = app.member(Role::Member, "ann@example.org").await;
    let mut sids = Vec::new();
    for one in [&client, &failing] {
        let (verifier, challenge) = pkce();
        let code = code_for(&browser, one, &challenge).await;
        let tokens = json(exchange(&app, one, &code, &verifier).await).await;
        let claims = verified(&app, tokens["id_token"].as_str().unwrap(), &one.id).await;
        sids.push((
            claims["sid"].as_str().unwrap().to_string(),
            claims["sub"].clone(),
        ));
    }

    // Revoked from the command line (another process): the trigger writes the outbox in the
    // same transaction, and this instance sends it within seconds.
    ok(&latchkey(&app, &["members", "remove", "ann@example.org"]));
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), received.recv())
        .await
        .expect("the logout token arrives within seconds")
        .unwrap();
    let token = url::form_urlencoded::parse(body.as_bytes())
        .find(|(name, _)| name == "logout_token")
        .map(|(_, value)| value.into_owned())
        .expect("a form field logout_token");
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    let mut claims = verified(&app, &token, &client.id).await;
    assert_eq!(claims["sid"], sids[0].0.as_str());
    assert_eq!(claims["sub"], sids[0].1);
    assert!(claims.get("nonce").is_none());
    assert!(claims["jti"].is_string());
    assert!(claims["events"]
        .as_object_mut()
        .unwrap()
        .contains_key("http://schemas.openid.net/event/backchannel-logout"));

    // Audited: delivered to one, failed (and kept for retry) for the other.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let events = app.audit_events();
        if events.contains(&"oidc_logout_sent".to_string())
            && events.contains(&"oidc_logout_failed".to_string())
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.count("oidc_logout_outbox WHERE attempts = 1"),
        1,
        "the failed one waits for its retry"
    );
}

#[actix_web::test]
async fn a_rotated_key_signs_from_then_on_and_the_old_one_stays_published() {
    let app = spawn_app().await;
    let client = register(&app, "wiki", &[]);
    let browser = app.member(Role::Member, "ann@example.org").await;
    let kid_of = |token: &serde_json::Value| {
        jsonwebtoken::decode_header(token["id_token"].as_str().unwrap())
            .unwrap()
            .kid
            .unwrap()
    };
    let (verifier, challenge) = pkce();
    let code = code_for(&browser, &client, &challenge).await;
    let before = kid_of(&json(exchange(&app, &client, &code, &verifier).await).await);
    // The command line signs with the server's own secret, as an operator's would.
    let secret = hex::encode(latchkey::crypto::sha256(app.database.name.as_bytes()));
    let out = ok(&std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["keys", "rotate"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            secrecy::ExposeSecret::expose_secret(&app.database.url),
        )
        .env("LATCHKEY_SECRET_KEY", secret)
        .env(
            "LATCHKEY_DATA_DIR",
            std::env::temp_dir().join("latchkey-cli-tests/data"),
        )
        .env("RUST_LOG", "warn")
        .output()
        .unwrap());
    assert!(out.contains("signing with key"), "{out}");
    app.sync_cache().await;
    let (verifier, challenge) = pkce();
    let code = code_for(&browser, &client, &challenge).await;
    let tokens = json(exchange(&app, &client, &code, &verifier).await).await;
    let after = kid_of(&tokens);
    assert_ne!(before, after, "the new key signs");
    verified(&app, tokens["id_token"].as_str().unwrap(), &client.id).await;
    let jwks = json(
        reqwest::get(app.url("/.well-known/jwks.json"))
            .await
            .unwrap(),
    )
    .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        kids.contains(&before.as_str()) && kids.contains(&after.as_str()),
        "{kids:?}"
    );
    assert!(app
        .audit_events()
        .contains(&"signing_key_rotated".to_string()));
}

#[actix_web::test]
async fn prompt_login_and_max_age_ask_for_a_fresh_sign_in_first() {
    let app = spawn_app().await;
    let client = register(&app, "wiki", &[]);
    let browser = app.member(Role::Member, "ann@example.org").await;
    let (verifier, challenge) = pkce();
    for extra in [("prompt", "login"), ("max_age", "0")] {
        // A few seconds pass between the sign-in and the request, as they do.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let res = browser
            .get(&authorize_path(&client, &challenge, &[extra]))
            .await;
        assert_eq!(res.status(), 303);
        let login = location(&res);
        assert!(login.starts_with("/login?next="), "{extra:?}: {login}");
        let next = crate::helpers::urldecode(login.strip_prefix("/login?next=").unwrap());
        assert!(
            !next.contains("prompt=login"),
            "the coming sign-in meets it"
        );

        // Signing in again in the same browser; the way back then issues a code, through a
        // page of ours (a sign-in form's redirects stay on Latchkey's origin).
        assert_eq!(app.sign_in(&browser, "ann@example.org").await.status(), 303);
        let res = browser.get(&next).await;
        assert_eq!(res.status(), 200, "{extra:?}");
        let refresh = res.headers()["refresh"].to_str().unwrap().to_string();
        let url = refresh.strip_prefix("0; url=").unwrap();
        assert!(url.starts_with(&client.redirect), "{url}");
        let code = query_of(url)["code"].clone();
        let tokens = json(exchange(&app, &client, &code, &verifier).await).await;
        let claims = verified(&app, tokens["id_token"].as_str().unwrap(), &client.id).await;
        assert!(claims["auth_time"].as_i64().unwrap() >= claims["iat"].as_i64().unwrap() - 5);
    }
}

#[actix_web::test]
async fn userinfo_and_introspection_are_answered_from_the_session_cache() {
    let app = spawn_app().await;
    let client = register(&app, "wiki", &[]);
    let browser = app.member(Role::Member, "ann@example.org").await;
    let (verifier, challenge) = pkce();
    let code = code_for(&browser, &client, &challenge).await;
    let tokens = json(exchange(&app, &client, &code, &verifier).await).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        userinfo(&app, &access).await.status(),
        200,
        "the first read fills the cache"
    );
    let audit_rows = app.audit().len();
    // As for forward-auth checks: a loaded machine may hold the listener's heartbeat past its
    // deadline for a moment; the last of up to three rounds must read nothing.
    let mut per_round = Vec::new();
    for _ in 0..3 {
        crate::helpers::wait_until_listening(&app.live).await;
        let before = app.live.db().round_trips();
        for _ in 0..5 {
            assert_eq!(userinfo(&app, &access).await.status(), 200);
            let res = reqwest::Client::new()
                .post(app.url("/oidc/introspect"))
                .basic_auth(&client.id, client.secret.as_ref())
                .form(&[("token", access.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(json(res).await["active"], true);
        }
        let used = app.live.db().round_trips() - before;
        per_round.push(used);
        if used == 0 {
            break;
        }
    }
    assert_eq!(per_round.last(), Some(&0), "rounds: {per_round:?}");
    assert_eq!(app.audit().len(), audit_rows, "nothing audited per request");

    // Deactivation on another process ends the token on this instance at once.
    ok(&latchkey(&app, &["members", "remove", "ann@example.org"]));
    app.sync_cache().await;
    assert_eq!(userinfo(&app, &access).await.status(), 401);
}
