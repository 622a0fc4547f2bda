//! Passkeys over HTTP, with a software authenticator written here (ring's P-256 keys, CBOR by
//! hand): adding one, signing in with it, and what must be refused. The app runs with a
//! `localhost` public URL, since WebAuthn does not accept an IP address as relying party.

use latchkey::domain::role::Role;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::{json, Value};

use latchkey::settings::AdminPasskey;

use crate::helpers::{parse_page, select, spawn_app_with, Browser, TestApp, TestSettings};

/// The app with `http://localhost:<port>` as its public URL (and so its relying party), and
/// reached there, since a ceremony must come from that origin.
async fn spawn_localhost_app(settings: TestSettings) -> TestApp {
    let mut app = spawn_app_with(settings.public_host("localhost")).await;
    app.address = format!("http://localhost:{}", app.port);
    app
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).unwrap()
}

fn cbor_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    match bytes.len() {
        n if n < 24 => out.push(0x40 | n as u8),
        n if n < 256 => out.extend([0x58, n as u8]),
        n => {
            out.push(0x59);
            out.extend((n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(bytes);
}

fn cbor_text(out: &mut Vec<u8>, text: &str) {
    assert!(text.len() < 24);
    out.push(0x60 | text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

/// A platform authenticator holding one discoverable P-256 credential.
struct SoftPasskey {
    key: EcdsaKeyPair,
    credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    counter: u32,
    /// Synced passkeys keep no signature counter: every assertion says 0.
    keeps_counter: bool,
    origin: String,
}

impl SoftPasskey {
    fn new(origin: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self {
            key,
            credential_id: latchkey::crypto::random_bytes::<32>().to_vec(),
            user_handle: Vec::new(),
            counter: 0,
            keeps_counter: true,
            origin: origin.to_string(),
        }
    }

    /// As a synced passkey (a phone's, a password manager's): its counter stays 0.
    fn synced(origin: &str) -> Self {
        Self {
            keeps_counter: false,
            ..Self::new(origin)
        }
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        json!({"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false})
            .to_string()
            .into_bytes()
    }

    /// Answers `navigator.credentials.create` options.
    fn register(&mut self, options: &Value) -> Value {
        let pk = &options["publicKey"];
        let rp_id = pk["rp"]["id"].as_str().unwrap();
        self.user_handle = unb64(pk["user"]["id"].as_str().unwrap());
        let client_data = self.client_data("webauthn.create", pk["challenge"].as_str().unwrap());
        let public = self.key.public_key().as_ref(); // 0x04 || x || y
        let mut cose = vec![0xA5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
        cbor_bytes(&mut cose, &public[1..33]);
        cose.push(0x22);
        cbor_bytes(&mut cose, &public[33..65]);
        let mut auth_data = latchkey::crypto::sha256(rp_id.as_bytes()).to_vec();
        auth_data.push(0x45); // user present, user verified, attested credential data
        auth_data.extend(self.counter.to_be_bytes());
        auth_data.extend([0u8; 16]); // AAGUID
        auth_data.extend((self.credential_id.len() as u16).to_be_bytes());
        auth_data.extend(&self.credential_id);
        auth_data.extend(cose);
        let mut attestation = vec![0xA3];
        cbor_text(&mut attestation, "fmt");
        cbor_text(&mut attestation, "none");
        cbor_text(&mut attestation, "attStmt");
        attestation.push(0xA0);
        cbor_text(&mut attestation, "authData");
        cbor_bytes(&mut attestation, &auth_data);
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "attestationObject": b64(&attestation),
                "clientDataJSON": b64(&client_data),
                "transports": ["internal"],
            },
            "extensions": {},
        })
    }

    /// Answers `navigator.credentials.get` options (the counter moves forward each time).
    fn assert(&mut self, options: &Value) -> Value {
        let pk = &options["publicKey"];
        let rp_id = pk["rpId"].as_str().unwrap();
        let client_data = self.client_data("webauthn.get", pk["challenge"].as_str().unwrap());
        if self.keeps_counter {
            self.counter += 1;
        }
        let mut auth_data = latchkey::crypto::sha256(rp_id.as_bytes()).to_vec();
        auth_data.push(0x05); // user present, user verified
        auth_data.extend(self.counter.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend(latchkey::crypto::sha256(&client_data));
        let signature = self.key.sign(&SystemRandom::new(), &signed).unwrap();
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(signature.as_ref()),
                "userHandle": b64(&self.user_handle),
            },
            "extensions": {},
        })
    }
}

impl TestApp {
    async fn post_json_api(
        &self,
        browser: &Browser,
        path: &str,
        csrf: &str,
        body: reqwest::Body,
        content_type: &str,
    ) -> (u16, Value) {
        let res = browser
            .post(path)
            .header("X-CSRF-Token", csrf)
            .header("Content-Type", content_type)
            .body(body)
            .await;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post_fields(
        &self,
        browser: &Browser,
        path: &str,
        csrf: &str,
        fields: &[(&str, &str)],
    ) -> (u16, Value) {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.post_json_api(
            browser,
            path,
            csrf,
            body.into(),
            "application/x-www-form-urlencoded",
        )
        .await
    }

    async fn post_json(
        &self,
        browser: &Browser,
        path: &str,
        csrf: &str,
        body: &Value,
    ) -> (u16, Value) {
        self.post_json_api(
            browser,
            path,
            csrf,
            body.to_string().into(),
            "application/json",
        )
        .await
    }

    /// Adds a passkey in a signed-in browser; returns the finish's status and answer.
    async fn add_passkey(
        &self,
        browser: &Browser,
        key: &mut SoftPasskey,
        name: &str,
    ) -> (u16, Value) {
        let csrf = browser.csrf("/passkeys").await;
        let (status, options) = self
            .post_fields(
                browser,
                "/passkeys/register/start",
                &csrf,
                &[("name", name)],
            )
            .await;
        assert_eq!(status, 200, "{options}");
        let answer = key.register(&options);
        self.post_json(browser, "/passkeys/register/finish", &csrf, &answer)
            .await
    }

    /// Starts a passkey sign-in in `browser` and answers it with `key`.
    async fn passkey_sign_in(
        &self,
        browser: &Browser,
        key: &mut SoftPasskey,
    ) -> (u16, Value, Value) {
        let csrf = browser.csrf("/login").await;
        let (status, options) = self
            .post_fields(
                browser,
                "/auth/passkey/start",
                &csrf,
                &[("next", "/sessions")],
            )
            .await;
        assert_eq!(status, 200, "{options}");
        let assertion = key.assert(&options);
        let (status, answer) = self
            .post_json(browser, "/auth/passkey/finish", &csrf, &assertion)
            .await;
        (status, answer, assertion)
    }

    /// Proves `key` in a signed-in browser (`/passkeys/confirm`); returns the finish's status.
    async fn confirm_passkey(&self, browser: &Browser, key: &mut SoftPasskey) -> u16 {
        let csrf = browser.csrf("/passkeys").await;
        let (status, options) = self
            .post_fields(browser, "/passkeys/confirm/start", &csrf, &[])
            .await;
        assert_eq!(status, 200, "{options}");
        let answer = key.assert(&options);
        self.post_json(browser, "/passkeys/confirm/finish", &csrf, &answer)
            .await
            .0
    }

    fn sign_in_mail_count(&self) -> usize {
        self.smtp
            .received()
            .iter()
            .filter(|m| {
                m.header("Subject")
                    .is_some_and(|s| s.contains(latchkey::mail::SIGN_IN_SUBJECT))
            })
            .count()
    }

    fn passkey_failures(&self) -> Vec<String> {
        self.audit()
            .into_iter()
            .filter(|row| row.event == "passkey_failed")
            .map(|row| row.detail)
            .collect()
    }
}

#[actix_web::test]
async fn a_member_adds_a_passkey_and_signs_in_with_it_without_any_mail() {
    let app = spawn_localhost_app(TestSettings::new()).await;
    let browser = app.member(Role::Member, "ann@example.org").await;
    let mut key = SoftPasskey::new(&app.address);
    let (status, answer) = app.add_passkey(&browser, &mut key, "Work laptop").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["redirect"], "/passkeys");
    let page = browser.get("/passkeys").await;
    let html = page.text().await.unwrap();
    assert!(html.contains("Work laptop"), "{html}");
    assert!(app.audit_events().contains(&"passkey_added".to_string()));
    let mails = app.smtp.wait_for(2, Duration::from_secs(10)).await;
    assert!(
        mails.iter().any(|m| m
            .header("Subject")
            .is_some_and(|s| s.contains(latchkey::mail::PASSKEY_ADDED_SUBJECT))
            && m.header("To")
                .unwrap_or_default()
                .contains("ann@example.org")),
        "no passkey-added mail"
    );

    // Another browser signs in with it at once: no link, no code.
    let links_before = app.sign_in_mail_count();
    let other = app.visitor();
    let (status, answer, _) = app.passkey_sign_in(&other, &mut key).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["redirect"], "/sessions");
    let res = other.get("/sessions").await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("proved a passkey"), "{html}");
    assert_eq!(app.sign_in_mail_count(), links_before);
    let signed_in = app
        .audit()
        .into_iter()
        .rev()
        .find(|row| row.event == "signed_in")
        .unwrap();
    assert!(
        signed_in.detail.starts_with("via passkey"),
        "{}",
        signed_in.detail
    );
    assert!(signed_in.request_id.is_some());
    // The counter and "last used" moved.
    assert_eq!(
        app.count("passkeys WHERE counter = 1 AND last_used_at IS NOT NULL"),
        1
    );
}

#[actix_web::test]
async fn a_replayed_assertion_is_refused() {
    let app = spawn_localhost_app(TestSettings::new()).await;
    let browser = app.member(Role::Member, "ann@example.org").await;
    let mut key = SoftPasskey::new(&app.address);
    assert_eq!(app.add_passkey(&browser, &mut key, "Phone").await.0, 200);

    let attacker = app.visitor();
    let (status, _, assertion) = app.passkey_sign_in(&attacker, &mut key).await;
    assert_eq!(status, 200);
    // The same answer again: this session's ceremony is spent.
    let csrf = attacker.csrf("/login").await;
    let (status, _) = app
        .post_json(&attacker, "/auth/passkey/finish", &csrf, &assertion)
        .await;
    assert_eq!(status, 401);
    // Replayed into a fresh ceremony (another challenge) in another browser.
    let replayer = app.visitor();
    let csrf = replayer.csrf("/login").await;
    let (status, _) = app
        .post_fields(&replayer, "/auth/passkey/start", &csrf, &[])
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .post_json(&replayer, "/auth/passkey/finish", &csrf, &assertion)
        .await;
    assert_eq!(status, 401);
    let res = replayer.get("/").await;
    assert_eq!(res.status(), 303, "the replayer is not signed in");
    let failures = app.passkey_failures();
    assert!(
        failures.iter().any(|d| d.contains("no passkey ceremony")),
        "{failures:?}"
    );
    assert!(
        failures.iter().any(|d| d.contains("did not verify")),
        "{failures:?}"
    );
}

#[actix_web::test]
async fn a_passkey_of_one_member_cannot_sign_in_another() {
    let app = spawn_localhost_app(TestSettings::new()).await;
    let ann = app.member(Role::Admin, "ann@example.org").await;
    let bob = app.member(Role::Member, "bob@example.org").await;
    let mut ann_key = SoftPasskey::new(&app.address);
    let mut bob_key = SoftPasskey::new(&app.address);
    assert_eq!(app.add_passkey(&ann, &mut ann_key, "Ann's").await.0, 200);
    assert_eq!(app.add_passkey(&bob, &mut bob_key, "Bob's").await.0, 200);
    assert_ne!(ann_key.user_handle, bob_key.user_handle);

    // Bob's authenticator claiming to hold Ann's account (her user handle).
    let bobs_handle = bob_key.user_handle.clone();
    bob_key.user_handle = ann_key.user_handle.clone();
    let browser = app.visitor();
    let (status, _, _) = app.passkey_sign_in(&browser, &mut bob_key).await;
    assert_eq!(status, 401);
    assert!(app
        .passkey_failures()
        .iter()
        .any(|d| d.contains("belongs to someone else")));

    // Bob's real answer signs Bob in, and only Bob.
    bob_key.user_handle = bobs_handle;
    let (status, _, _) = app.passkey_sign_in(&browser, &mut bob_key).await;
    assert_eq!(status, 200);
    let html = browser.get("/").await.text().await.unwrap();
    assert!(html.contains("bob@example.org") && !html.contains("ann@example.org"));

    // Ann, signed in by email, cannot confirm with Bob's passkey either.
    let csrf = ann.csrf("/passkeys").await;
    let (status, options) = app
        .post_fields(&ann, "/passkeys/confirm/start", &csrf, &[])
        .await;
    assert_eq!(status, 200, "{options}");
    let answer = bob_key.assert(&options);
    let (status, _) = app
        .post_json(&ann, "/passkeys/confirm/finish", &csrf, &answer)
        .await;
    assert_eq!(status, 401);
}

#[actix_web::test]
async fn a_removed_passkey_no_longer_signs_in_and_nobody_else_can_remove_it() {
    let app = spawn_localhost_app(TestSettings::new()).await;
    let ann = app.member(Role::Member, "ann@example.org").await;
    let bob = app.member(Role::Admin, "bob@example.org").await;
    let mut key = SoftPasskey::new(&app.address);
    assert_eq!(app.add_passkey(&ann, &mut key, "Laptop").await.0, 200);
    let id = app_passkey_id(&app);

    let res = bob
        .post(&format!("/passkeys/{id}/remove"))
        .csrf(&bob.csrf("/passkeys").await)
        .await;
    assert_eq!(
        res.status(),
        404,
        "an admin cannot remove another's passkey"
    );
    let res = ann
        .post(&format!("/passkeys/{id}/remove"))
        .csrf("wrong")
        .await;
    assert_eq!(res.status(), 403, "CSRF");
    assert_eq!(app.count("passkeys"), 1);

    // Signed in by email, Ann has not proved a passkey: she is sent to confirm one first.
    let res = ann
        .post(&format!("/passkeys/{id}/remove"))
        .csrf(&ann.csrf("/passkeys").await)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        "/passkeys/confirm?next=%2Fpasskeys"
    );
    assert_eq!(app.count("passkeys"), 1);
    let html = ann.get("/passkeys").await.text().await.unwrap();
    assert!(html.contains("confirm with one of your passkeys"), "{html}");

    // A proof older than ten minutes is not enough either.
    assert_eq!(app.confirm_passkey(&ann, &mut key).await, 200);
    let stale = chrono::Utc::now().timestamp() - 660;
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "UPDATE sessions SET state = jsonb_set(state, '{{latchkey.passkey_proved_at}}', to_jsonb('{stale}'::text)) WHERE member_id IS NOT NULL"
        )),
        &mut app.conn(),
    )
    .unwrap();
    app.sync_cache().await;
    let res = ann
        .post(&format!("/passkeys/{id}/remove"))
        .csrf(&ann.csrf("/passkeys").await)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.count("passkeys"), 1);
    assert!(!app.audit_events().contains(&"passkey_removed".to_string()));

    // Confirmed just now: removed.
    assert_eq!(app.confirm_passkey(&ann, &mut key).await, 200);
    let res = ann
        .post(&format!("/passkeys/{id}/remove"))
        .csrf(&ann.csrf("/passkeys").await)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"].to_str().unwrap(), "/passkeys");
    assert_eq!(app.count("passkeys"), 0);
    assert!(app.audit_events().contains(&"passkey_removed".to_string()));

    let (status, _, _) = app.passkey_sign_in(&app.visitor(), &mut key).await;
    assert_eq!(status, 401);
    assert!(app
        .passkey_failures()
        .iter()
        .any(|d| d.contains("no such passkey")));
}

fn app_passkey_id(app: &TestApp) -> i64 {
    use diesel::prelude::*;
    latchkey::schema::passkeys::table
        .select(latchkey::schema::passkeys::id)
        .first(&mut app.conn())
        .unwrap()
}

#[actix_web::test]
async fn a_deactivated_members_passkeys_no_longer_work() {
    let app = spawn_localhost_app(TestSettings::new()).await;
    let ann = app.member(Role::Member, "ann@example.org").await;
    let mut key = SoftPasskey::new(&app.address);
    assert_eq!(app.add_passkey(&ann, &mut key, "Laptop").await.0, 200);
    let id = app.add_member("ann@example.org", Role::Member);
    latchkey::models::member::deactivate(&mut app.conn(), id, "test").unwrap();
    let (status, _, _) = app.passkey_sign_in(&app.visitor(), &mut key).await;
    assert_eq!(status, 401);
    assert!(app
        .passkey_failures()
        .iter()
        .any(|d| d.contains("deactivated")));
}

#[actix_web::test]
async fn adding_a_passkey_needs_a_fresh_sign_in_and_csrf() {
    let app = spawn_localhost_app(TestSettings::new()).await;
    let ann = app.member(Role::Member, "ann@example.org").await;
    let (status, _) = app
        .post_fields(&ann, "/passkeys/register/start", "wrong", &[("name", "x")])
        .await;
    assert_eq!(status, 403, "CSRF");
    let csrf = ann.csrf("/passkeys").await;
    let (status, problem) = app
        .post_fields(
            &ann,
            "/passkeys/register/start",
            &csrf,
            &[("name", &"x".repeat(65))],
        )
        .await;
    assert_eq!(status, 422, "{problem}");

    // Signed in 11 minutes ago.
    let stale = (chrono::Utc::now().timestamp() - 660).to_string();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "UPDATE sessions SET state = jsonb_set(state, '{{latchkey.signed_in_at}}', to_jsonb('{stale}'::text)) WHERE member_id IS NOT NULL"
        )),
        &mut app.conn(),
    )
    .unwrap();
    app.sync_cache().await;
    let (status, problem) = app
        .post_fields(
            &ann,
            "/passkeys/register/start",
            &csrf,
            &[("name", "Laptop")],
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    assert!(problem["error"].as_str().unwrap().contains("sign in again"));
    let html = ann.get("/passkeys").await.text().await.unwrap();
    assert!(html.contains("sign in again"), "{html}");
    assert_eq!(app.count("passkeys"), 0);
}

#[actix_web::test]
async fn with_required_an_admin_signed_in_by_email_confirms_a_passkey_before_team_work() {
    let app = spawn_localhost_app(TestSettings::new().admin_passkey(AdminPasskey::Required)).await;
    let admin = app.member(Role::Admin, "boss@example.org").await;
    let auditor = app.member(Role::Auditor, "aud@example.org").await;
    let res = admin.get("/team").await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        "/passkeys/confirm?next=%2Fteam"
    );
    let res = admin
        .post("/team")
        .form(&[("email", "new@example.org"), ("role", "admin")])
        .csrf(&admin.csrf("/").await)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.count("members WHERE email = 'new@example.org'"), 0);
    let html = admin.get("/passkeys/confirm").await.text().await.unwrap();
    assert!(html.contains("Add a passkey"), "{html}");
    // Everyone's sessions wait too; the auditor is not affected.
    let html = admin.get("/sessions").await.text().await.unwrap();
    assert!(!html.contains("aud@example.org") && html.contains("confirm with a passkey"));
    assert_eq!(auditor.get("/audit").await.status(), 200);

    // Adding a passkey is not yet proving one.
    let mut key = SoftPasskey::new(&app.address);
    assert_eq!(app.add_passkey(&admin, &mut key, "Key").await.0, 200);
    assert_eq!(admin.get("/team").await.status(), 303);
    // A second one needs the first confirmed.
    let csrf = admin.csrf("/passkeys").await;
    let (status, _) = app
        .post_fields(
            &admin,
            "/passkeys/register/start",
            &csrf,
            &[("name", "Second")],
        )
        .await;
    assert_eq!(status, 403);

    let (status, options) = app
        .post_fields(
            &admin,
            "/passkeys/confirm/start",
            &csrf,
            &[("next", "/team")],
        )
        .await;
    assert_eq!(status, 200, "{options}");
    let answer = key.assert(&options);
    let (status, done) = app
        .post_json(&admin, "/passkeys/confirm/finish", &csrf, &answer)
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["redirect"], "/team");
    assert_eq!(admin.get("/team").await.status(), 200);
    let html = admin.get("/sessions").await.text().await.unwrap();
    assert!(html.contains("aud@example.org") && html.contains("proved a passkey"));

    // Signing in with the passkey proves it at once.
    let other = app.visitor();
    assert_eq!(app.passkey_sign_in(&other, &mut key).await.0, 200);
    assert_eq!(other.get("/team").await.status(), 200);
}

/// The sign-in page starts a ceremony for autofill on every view: starting costs nothing, and
/// finishing is the sign-in that counts, like `POST /login`.
#[actix_web::test]
async fn only_finishing_a_passkey_sign_in_counts_against_the_login_rate() {
    let app = spawn_localhost_app(TestSettings::new().default_rates()).await;
    let browser = app.visitor();
    let csrf = browser.csrf("/login").await;
    for n in 1..=50 {
        let (status, _) = app
            .post_fields(&browser, "/auth/passkey/start", &csrf, &[])
            .await;
        assert_eq!(status, 200, "start {n}");
    }
    assert_eq!(
        browser.request_link("x@example.org").await.status(),
        200,
        "fifty starts spent nothing"
    );

    let app = spawn_localhost_app(TestSettings::new().login_rate(2, Duration::from_secs(60))).await;
    let browser = app.visitor();
    let csrf = browser.csrf("/login").await;
    for _ in 0..2 {
        let (status, _) = app
            .post_json(&browser, "/auth/passkey/finish", &csrf, &json!({}))
            .await;
        assert_ne!(status, 429);
    }
    let (status, _) = app
        .post_json(&browser, "/auth/passkey/finish", &csrf, &json!({}))
        .await;
    assert_eq!(status, 429);
    assert_eq!(browser.request_link("x@example.org").await.status(), 429);
}

#[actix_web::test]
async fn the_sign_in_page_offers_passkeys_only_where_they_can_work() {
    let app = spawn_localhost_app(TestSettings::new()).await;
    let html = app.get("/login").await.text().await.unwrap();
    let page = parse_page(&html);
    let email = select(&page, r#"input[autocomplete="username webauthn"]"#);
    assert_eq!(email.len(), 1, "{html}");
    assert!(
        !select(&page, "[data-passkey-sign-in]").is_empty(),
        "{html}"
    );
    assert!(!select(&page, r#"script[src="/static/passkeys.js"]"#).is_empty());
    let res = app.get("/static/passkeys.js").await;
    assert_eq!(res.status(), 200);

    // An IP public URL: no relying party, and the email form as before.
    let app = crate::helpers::spawn_app().await;
    let visitor = app.visitor();
    let html = visitor.get("/login").await.text().await.unwrap();
    assert!(!html.contains("data-passkey-sign-in"));
    let csrf = visitor.csrf("/login").await;
    let (status, _) = app
        .post_fields(&visitor, "/auth/passkey/start", &csrf, &[])
        .await;
    assert_eq!(status, 404);
}

/// Security review #23, point 1: with `required`, an attacker holding only the admin's mailbox
/// signed in by email, removed the admin's passkey, enrolled their own, confirmed it and added
/// an admin. Each step of that sequence must now stop, the first one first.
#[actix_web::test]
async fn a_mailbox_alone_cannot_swap_an_admins_passkey_for_its_own() {
    let app = spawn_localhost_app(TestSettings::new().admin_passkey(AdminPasskey::Required)).await;
    let admin = app.member(Role::Admin, "boss@example.org").await;
    let mut admins_key = SoftPasskey::new(&app.address);
    assert_eq!(
        app.add_passkey(&admin, &mut admins_key, "Boss's laptop")
            .await
            .0,
        200
    );
    let id = app_passkey_id(&app);
    let events_before = app.audit_events().len();

    // The attacker has the mailbox, nothing else: a fresh email sign-in as the admin.
    let attacker = app.signed_in(app.visitor(), "boss@example.org").await;
    let csrf = attacker.csrf("/passkeys").await;

    // 1. Remove the admin's passkey: refused, sent to confirm one of the admin's passkeys.
    let res = attacker
        .post(&format!("/passkeys/{id}/remove"))
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        "/passkeys/confirm?next=%2Fpasskeys"
    );
    assert_eq!(
        app.count("passkeys"),
        1,
        "the admin's passkey is still there"
    );
    let events: Vec<String> = app.audit_events().split_off(events_before);
    assert!(
        !events.contains(&"passkey_removed".to_string()),
        "{events:?}"
    );

    // 2. Enrol their own: refused while the admin has one.
    let (status, problem) = app
        .post_fields(
            &attacker,
            "/passkeys/register/start",
            &csrf,
            &[("name", "Mine")],
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(app.count("passkey_ceremonies"), 0);

    // 3. Confirm with their own authenticator: it is not one of the admin's.
    let mut attackers_key = SoftPasskey::new(&app.address);
    assert_eq!(
        app.confirm_passkey(&attacker, &mut attackers_key).await,
        401
    );

    // 4. Add an admin on /team: sent to confirm a passkey first, nobody added.
    let res = attacker
        .post("/team")
        .form(&[("email", "evil@example.org"), ("role", "admin")])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.count("members WHERE email = 'evil@example.org'"), 0);
    assert_eq!(app.count("passkeys"), 1);

    // Under `optional` the removal stops the same way: the rule does not depend on it.
    let app = spawn_localhost_app(TestSettings::new()).await;
    let member = app.member(Role::Member, "ann@example.org").await;
    let mut key = SoftPasskey::new(&app.address);
    assert_eq!(app.add_passkey(&member, &mut key, "Phone").await.0, 200);
    let id = app_passkey_id(&app);
    let attacker = app.signed_in(app.visitor(), "ann@example.org").await;
    let csrf = attacker.csrf("/passkeys").await;
    let res = attacker
        .post(&format!("/passkeys/{id}/remove"))
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.count("passkeys"), 1);
    let (status, _) = app
        .post_fields(
            &attacker,
            "/passkeys/register/start",
            &csrf,
            &[("name", "Mine")],
        )
        .await;
    assert_eq!(
        status, 403,
        "a member who has a passkey adds another only with it"
    );
}

/// Security review #23, point 2: one assertion of a synced passkey (counter 0), posted twenty
/// times at once with one session cookie, signs in once.
#[actix_web::test]
async fn one_assertion_signs_in_once_when_twenty_posts_race() {
    let app =
        spawn_localhost_app(TestSettings::new().login_rate(1000, Duration::from_secs(60))).await;
    let ann = app.member(Role::Member, "ann@example.org").await;
    let mut key = SoftPasskey::synced(&app.address);
    assert_eq!(app.add_passkey(&ann, &mut key, "Synced").await.0, 200);
    let signed_in_rows = |app: &TestApp| {
        app.audit_events()
            .iter()
            .filter(|event| *event == "signed_in")
            .count()
    };
    let sessions_before = app.count("sessions WHERE member_id IS NOT NULL");
    let signed_in_before = signed_in_rows(&app);

    let attacker = app.visitor();
    let csrf = attacker.csrf("/login").await;
    let (status, options) = app
        .post_fields(&attacker, "/auth/passkey/start", &csrf, &[])
        .await;
    assert_eq!(status, 200, "{options}");
    let assertion = key.assert(&options);
    let posts =
        (0..20).map(|_| app.post_json(&attacker, "/auth/passkey/finish", &csrf, &assertion));
    let answers = futures_util::future::join_all(posts).await;
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(
        app.count("sessions WHERE member_id IS NOT NULL") - sessions_before,
        1
    );
    assert_eq!(signed_in_rows(&app) - signed_in_before, 1);
    let spent = app
        .passkey_failures()
        .iter()
        .filter(|d| d.contains("no passkey ceremony"))
        .count();
    assert_eq!(spent, 19);
    assert_eq!(app.count("passkey_ceremonies"), 0);

    // Confirming is consumed the same way: twenty racing finishes, one proof.
    let csrf = ann.csrf("/passkeys").await;
    let (status, options) = app
        .post_fields(&ann, "/passkeys/confirm/start", &csrf, &[])
        .await;
    assert_eq!(status, 200, "{options}");
    let answer = key.assert(&options);
    let posts = (0..20).map(|_| app.post_json(&ann, "/passkeys/confirm/finish", &csrf, &answer));
    let answers = futures_util::future::join_all(posts).await;
    let confirmed = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(confirmed, 1, "{answers:?}");
}

#[actix_web::test]
async fn a_ceremony_is_bound_to_its_kind_its_member_and_its_time() {
    let app = spawn_localhost_app(TestSettings::new()).await;
    let ann = app.member(Role::Member, "ann@example.org").await;
    let mut key = SoftPasskey::new(&app.address);
    assert_eq!(app.add_passkey(&ann, &mut key, "Laptop").await.0, 200);
    let csrf = ann.csrf("/passkeys").await;
    let (status, options) = app
        .post_fields(&ann, "/passkeys/confirm/start", &csrf, &[])
        .await;
    assert_eq!(status, 200, "{options}");
    assert_eq!(
        app.count("passkey_ceremonies WHERE kind = 'confirmation' AND member_id IS NOT NULL"),
        1
    );
    // A confirmation's answer posted as a sign-in: that session has no sign-in ceremony.
    let answer = key.assert(&options);
    let (status, _) = app
        .post_json(&ann, "/auth/passkey/finish", &csrf, &answer)
        .await;
    assert_eq!(status, 401);
    // Expired: refused, and the sweeper's query removes it.
    diesel::RunQueryDsl::execute(
        diesel::sql_query("UPDATE passkey_ceremonies SET expires_at = now() - interval '1 second'"),
        &mut app.conn(),
    )
    .unwrap();
    let (status, _) = app
        .post_json(&ann, "/passkeys/confirm/finish", &csrf, &answer)
        .await;
    assert_eq!(status, 401);
    assert_eq!(app.count("passkey_ceremonies"), 1);
    latchkey::purge::delete_expired_transient(&mut app.conn()).unwrap();
    assert_eq!(app.count("passkey_ceremonies"), 0);
}

/// A member who lost every passkey asks an admin, who removes them from the member's row on
/// `/team`, under `required` with the admin's own passkey proved.
#[actix_web::test]
async fn an_admin_removes_a_members_passkeys_from_the_team_page() {
    let app = spawn_localhost_app(TestSettings::new().admin_passkey(AdminPasskey::Required)).await;
    let boss = app.member(Role::Admin, "boss@example.org").await;
    let mut boss_key = SoftPasskey::new(&app.address);
    assert_eq!(app.add_passkey(&boss, &mut boss_key, "Boss's").await.0, 200);
    let ann = app.member(Role::Member, "ann@example.org").await;
    let mut ann_key = SoftPasskey::new(&app.address);
    assert_eq!(
        app.add_passkey(&ann, &mut ann_key, "Ann's phone").await.0,
        200
    );
    let ann_id = app.add_member("ann@example.org", Role::Member);
    let boss_id = app.add_member("boss@example.org", Role::Admin);
    let path = format!("/team/{ann_id}/passkeys/remove");

    // Signed in by email only: the guard sends the admin to confirm first; nothing removed.
    let res = boss.post(&path).csrf(&boss.csrf("/").await).await;
    assert_eq!(res.status(), 303);
    assert!(res.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/passkeys/confirm"));
    assert_eq!(
        app.count(&format!("passkeys WHERE member_id = {ann_id}")),
        1
    );
    // Not an admin's page at all for a member.
    let res = ann.post(&path).csrf(&ann.csrf("/").await).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        app.count(&format!("passkeys WHERE member_id = {ann_id}")),
        1
    );

    assert_eq!(app.confirm_passkey(&boss, &mut boss_key).await, 200);
    let html = boss.get("/team").await.text().await.unwrap();
    let page = parse_page(&html);
    assert_eq!(
        select(&page, &format!(r#"form[action="{path}"]"#)).len(),
        1,
        "{html}"
    );
    assert!(
        select(
            &page,
            &format!(r#"form[action="/team/{boss_id}/passkeys/remove"]"#)
        )
        .is_empty(),
        "an admin's own passkeys are managed on /passkeys"
    );

    let csrf = boss.csrf("/team").await;
    let res = boss.post(&path).csrf(&csrf).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"].to_str().unwrap(), "/team");
    assert_eq!(
        app.count(&format!("passkeys WHERE member_id = {ann_id}")),
        0
    );
    assert_eq!(
        app.count(&format!("passkeys WHERE member_id = {boss_id}")),
        1
    );
    let removed = app
        .audit()
        .into_iter()
        .rev()
        .find(|row| row.event == "passkey_removed")
        .unwrap();
    assert_eq!(removed.email.as_deref(), Some("ann@example.org"));
    assert_eq!(removed.actor.as_deref(), Some("boss@example.org"));
    assert!(removed.detail.contains("Ann's phone"), "{}", removed.detail);
    let (status, _, _) = app.passkey_sign_in(&app.visitor(), &mut ann_key).await;
    assert_eq!(status, 401);

    // Ann adds a new one from an email sign-in, as a member without passkeys may.
    let mut new_key = SoftPasskey::new(&app.address);
    assert_eq!(
        app.add_passkey(&ann, &mut new_key, "New phone").await.0,
        200
    );

    // Nothing to remove, no such member, not an id: clear answers, nothing changed.
    let audit_rows = app.audit().len();
    let carl_id = app.add_member("carl@example.org", Role::Member);
    let res = boss
        .post(&format!("/team/{carl_id}/passkeys/remove"))
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("has no passkeys"));
    let res = boss.post("/team/999999/passkeys/remove").csrf(&csrf).await;
    assert_eq!(res.status(), 404);
    let res = boss.post("/team/abc/passkeys/remove").csrf(&csrf).await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        app.audit()
            .into_iter()
            .skip(audit_rows)
            .filter(|row| row.event == "passkey_removed")
            .count(),
        0
    );
}

#[actix_web::test]
async fn an_admin_signed_in_by_email_cannot_remove_their_own_passkeys_from_the_team_page() {
    let app = spawn_localhost_app(TestSettings::new()).await;
    let boss = app.member(Role::Admin, "boss@example.org").await;
    let mut key = SoftPasskey::new(&app.address);
    assert_eq!(app.add_passkey(&boss, &mut key, "Boss's").await.0, 200);
    let boss_id = app.add_member("boss@example.org", Role::Admin);
    let res = boss
        .post(&format!("/team/{boss_id}/passkeys/remove"))
        .csrf(&boss.csrf("/team").await)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        "/passkeys/confirm?next=%2Fteam"
    );
    assert_eq!(app.count("passkeys"), 1);
}

/// The last admin lost every passkey and has nobody to ask on `/team`: the operator resets
/// them from the command line, with a reason, and the audit says so.
#[actix_web::test]
async fn the_command_line_resets_the_last_admins_passkeys_with_a_reason() {
    use crate::apps::{latchkey, ok};

    let app = spawn_localhost_app(TestSettings::new().admin_passkey(AdminPasskey::Required)).await;
    let boss = app.member(Role::Admin, "boss@example.org").await;
    let mut key = SoftPasskey::new(&app.address);
    assert_eq!(app.add_passkey(&boss, &mut key, "Lost laptop").await.0, 200);

    // Refused without a reason or with a bad address, before anything changes.
    for args in [
        &["passkeys", "reset", "boss@example.org"][..],
        &["passkeys", "reset", "boss@example.org", "--reason", "  "],
        &["passkeys", "reset", "@example.org", "--reason", "lost"],
    ] {
        let out = latchkey(&app, args);
        assert!(!out.status.success(), "{args:?}");
    }
    let out = latchkey(
        &app,
        &[
            "passkeys",
            "reset",
            "nobody@example.org",
            "--reason",
            "lost",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a member"));
    assert_eq!(app.count("passkeys"), 1);

    let out = ok(&latchkey(
        &app,
        &[
            "passkeys",
            "reset",
            "boss@Example.ORG",
            "--reason",
            "lost every key, ticket 7",
        ],
    ));
    assert!(
        out.starts_with("removed 1 passkey of boss@example.org (\"Lost laptop\")"),
        "{out}"
    );
    assert_eq!(app.count("passkeys"), 0);
    let reset = app
        .audit()
        .into_iter()
        .find(|row| row.event == "passkeys_reset")
        .unwrap();
    assert_eq!(reset.actor.as_deref(), Some("cli"));
    assert_eq!(reset.email.as_deref(), Some("boss@example.org"));
    assert!(
        reset.detail.contains("lost every key, ticket 7"),
        "{}",
        reset.detail
    );

    // Again: nothing left to reset, nothing written.
    let rows = app.audit().len();
    let out = ok(&latchkey(
        &app,
        &["passkeys", "reset", "boss@example.org", "--reason", "again"],
    ));
    assert!(out.contains("has no passkeys"), "{out}");
    assert_eq!(app.audit().len(), rows);

    // The admin adds a new passkey from an email sign-in and confirms it.
    let boss = app.signed_in(app.visitor(), "boss@example.org").await;
    let mut new_key = SoftPasskey::new(&app.address);
    assert_eq!(
        app.add_passkey(&boss, &mut new_key, "New laptop").await.0,
        200
    );
    assert_eq!(app.confirm_passkey(&boss, &mut new_key).await, 200);
    assert_eq!(boss.get("/team").await.status(), 200);
}
