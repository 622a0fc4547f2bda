//! The real binary, at `RUST_LOG=debug`, signs two browsers in (by link and by code), refuses
//! a used link, a wrong code and a forward-auth check; then its whole output is searched for
//! every secret the flow handled. None may appear. Once with each `LATCHKEY_LOG_FORMAT`: the
//! JSON run also parses every line and finds the sign-in and refusal lines naming the member
//! and the app.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use latchkey::domain::app_origin::AppOrigin;
use latchkey::domain::role::Role;
use latchkey::models::app::{self, Access};
use secrecy::ExposeSecret as _;

use crate::forward_auth::AppHost;
use crate::helpers::{urldecode, urlencode, Browser, TestDatabase};

/// Stops the server however the test ends.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A browser of this test's own: it names itself apart from the other tests' browsers.
fn browser(base: &str) -> Browser {
    Browser::new(base, "LatchkeyLogTest/1.0")
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub async fn wait_until_serving(base: &str, server: &mut Server, log: &PathBuf) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(res) = reqwest::get(format!("{base}/healthz")).await {
            if res.status() == 200 {
                return;
            }
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!(
                "latchkey exited with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "latchkey did not start in time");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Positions of `code` in `text` that are not part of a longer number.
fn standalone_occurrences(text: &str, code: &str) -> Vec<usize> {
    text.match_indices(code)
        .map(|(at, _)| at)
        .filter(|&at| {
            let before = text[..at].chars().next_back();
            let after = text[at + code.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_digit())
                && !after.is_some_and(|c| c.is_ascii_digit())
        })
        .collect()
}

/// What a run of the flow left: the server's output, and what must not be in it.
struct Run {
    /// Standard error: the log.
    log: String,
    /// Standard output and error.
    output: String,
    /// Named secrets of at least 16 characters.
    secrets: Vec<(String, String)>,
    /// The 6-digit codes, found only where no longer number holds them.
    codes: Vec<(String, String)>,
    dir: PathBuf,
}

/// Starts the binary with `LATCHKEY_LOG_FORMAT=format`, and goes through the flow: ann signs
/// in by link in browser one (an admin) and opens the wiki (`app_opened`) but not payroll,
/// which admits members only (`app_denied`);
/// browser three posts her used link (`link_reused`); browser two types a wrong code
/// (`code_failed`), then the right one; a scanner opens the used link; browser one signs out;
/// a forged post is refused.
async fn run_the_flow(format: &str) -> Run {
    let database = TestDatabase::migrated();
    // Registered before the server reads its apps: wiki admits admins (ann), payroll members.
    for (name, origin, roles) in [
        ("wiki", "https://wiki.example.org", vec![Role::Admin]),
        ("payroll", "https://payroll.example.org", vec![Role::Member]),
    ] {
        let access = Access {
            roles,
            groups: vec![],
            members: vec![],
        };
        app::add(
            &mut database.connect(),
            name,
            &AppOrigin::parse(origin).unwrap(),
            &access,
            "test",
        )
        .unwrap();
    }
    let port = free_port();
    // An OpenID Connect client too; its secret is one of the run's secrets.
    let grafana = app::add(
        &mut database.connect(),
        "grafana",
        &AppOrigin::parse("http://grafana.localhost:9").unwrap(),
        &Access {
            roles: vec![Role::Admin],
            groups: vec![],
            members: vec![],
        },
        "test",
    )
    .unwrap();
    let redirect = "http://127.0.0.1:9/cb";
    let registered = latchkey::models::oidc::register(
        &mut database.connect(),
        grafana.id,
        &latchkey::models::oidc::Registration {
            public: false,
            redirect_uris: vec![latchkey::domain::oidc::RedirectUri::parse(redirect).unwrap()],
            post_logout_redirect_uris: vec![],
            backchannel_logout_uri: None,
        },
        "test",
    )
    .unwrap();
    let client_id = registered.client_id.to_string();
    let client_secret = registered.new_secret.unwrap();
    let smtp = crate::smtp_server::start().await;
    let base = format!("http://127.0.0.1:{port}");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "no-secrets-{}",
        hex::encode(latchkey::crypto::random_bytes::<6>())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // The log is stderr; stdout apart, so that every line of the log can be parsed.
    let log_path = dir.join("latchkey.log");
    let log = File::create(&log_path).unwrap();
    let stdout_path = dir.join("latchkey.out");
    let secret_key = hex::encode(latchkey::crypto::random_bytes::<32>());
    let child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("serve")
        // No `.env` of the developer's is read, and nothing of this process leaks in.
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", database.url.expose_secret())
        .env("LATCHKEY_DATA_DIR", dir.join("data"))
        .env("LATCHKEY_BIND", format!("127.0.0.1:{port}"))
        .env("LATCHKEY_SECRET_KEY", &secret_key)
        .env("LATCHKEY_EMAIL", smtp.url())
        .env("LATCHKEY_ADMINS", "ann@example.org")
        .env("RUST_LOG", "debug")
        .env("LATCHKEY_LOG_FORMAT", format)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(log)
        .spawn()
        .expect("starting latchkey serve");
    let mut server = Server(child);
    wait_until_serving(&base, &mut server, &log_path).await;

    let mut secrets: Vec<(String, String)> = vec![("LATCHKEY_SECRET_KEY".into(), secret_key)];
    let link_prefix = format!("{base}/auth/verify?token=");

    // Browser one: by link.
    let one = browser(&base);
    let csrf = one.csrf("/login").await;
    let res = one
        .post("/login")
        .form(&[("email", "ann@example.org")])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 200);
    let mails = smtp.wait_for(1, Duration::from_secs(10)).await;
    let token_one = urldecode(
        mails[0]
            .extract_link(&link_prefix)
            .split("token=")
            .nth(1)
            .unwrap(),
    );
    let code_one = mails[0].extract_code();
    let page = format!("/auth/verify?token={}", urlencode(&token_one));
    let csrf = one.csrf(&page).await;
    let res = one
        .post("/auth/verify")
        .form(&[("token", &token_one)])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(one.get("/").await.status(), 200);
    let session_csrf_one = one.csrf("/").await;
    for value in one.cookie_values() {
        secrets.push(("a cookie of browser one".into(), value));
    }
    // Forward auth: the wiki lets ann in (once logged), payroll does not.
    let wiki = AppHost::on(&base, "wiki", "https://wiki.example.org");
    let to_callback = wiki.ask(&one, "/page").await;
    let code = to_callback.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    let code = code
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    secrets.push(("the app callback's code".into(), code.to_string()));
    wiki.open(&one, "/page").await;
    let app_cookie = wiki.cookie().unwrap();
    secrets.push((
        "the app cookie".into(),
        app_cookie.split_once('=').unwrap().1.to_string(),
    ));
    for _ in 0..2 {
        let res = wiki.check("/auth/check", "/page").await;
        assert_eq!(res.status(), 200);
    }
    let payroll = AppHost::on(&base, "payroll", "https://payroll.example.org");
    let res = payroll.ask(&one, "/").await;
    assert_eq!(res.status(), 403);
    // OpenID Connect: a code, a wrong secret, the exchange, userinfo, the code replayed.
    secrets.push(("the client secret".into(), client_secret.clone()));
    let authorize = format!(
        "/oidc/authorize?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid%20email%20offline_access&state=s&nonce=n",
        urlencode(redirect)
    );
    let res = one.get(&authorize).await;
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let oidc_code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "code")
        .unwrap()
        .1
        .into_owned();
    secrets.push(("the OIDC code".into(), oidc_code.clone()));
    let exchange = |secret: String| {
        let code = oidc_code.clone();
        let client_id = client_id.clone();
        let url = format!("{base}/oidc/token");
        async move {
            reqwest::Client::new()
                .post(url)
                .basic_auth(client_id, Some(secret))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", redirect),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        exchange("a-wrong-secret-of-some-length".into())
            .await
            .status(),
        401
    );
    let res = exchange(client_secret.clone()).await;
    assert_eq!(res.status(), 200);
    let tokens: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    for name in ["access_token", "refresh_token", "id_token"] {
        secrets.push((
            format!("the OIDC {name}"),
            tokens[name].as_str().unwrap().to_string(),
        ));
    }
    let res = reqwest::Client::new()
        .get(format!("{base}/oidc/userinfo"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        exchange(client_secret.clone()).await.status(),
        400,
        "the replay"
    );
    // The used link, posted again from another browser.
    let three = browser(&base);
    let csrf = three.csrf(&page).await;
    let res = three
        .post("/auth/verify")
        .form(&[("token", &token_one)])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 410);

    // Browser two: a wrong code, then the right one.
    let two = browser(&base);
    let csrf = two.csrf("/login").await;
    let res = two
        .post("/login")
        .form(&[("email", "ann@example.org")])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 200);
    let mails = smtp.wait_for(2, Duration::from_secs(10)).await;
    let mail = mails
        .iter()
        .skip(1)
        .find(|m| m.text().contains(&link_prefix))
        .expect("the second sign-in mail");
    let token_two = urldecode(
        mail.extract_link(&link_prefix)
            .split("token=")
            .nth(1)
            .unwrap(),
    );
    let code_two = mail.extract_code();
    let wrong = if code_two == "000000" {
        "111111"
    } else {
        "000000"
    };
    let res = two
        .post("/auth/code")
        .form(&[("code", wrong)])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 400);
    let res = two
        .post("/auth/code")
        .form(&[("code", &code_two)])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(two.get("/").await.status(), 200);
    for value in two.cookie_values() {
        secrets.push(("a cookie of browser two".into(), value));
    }
    // A mail scanner opening the used link, and browser one signing out.
    let res = reqwest::get(format!(
        "{base}/auth/verify?token={}",
        urlencode(&token_two)
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 410);
    let res = one.post("/logout").csrf(&session_csrf_one).await;
    assert_eq!(res.status(), 303);

    for (name, token) in [("token one", &token_one), ("token two", &token_two)] {
        secrets.push((name.into(), token.clone()));
        // Either half alone would identify or prove the token.
        let (payload, mac) = token.split_once('.').unwrap();
        secrets.push((format!("{name} (payload)"), payload.to_string()));
        secrets.push((format!("{name} (MAC)"), mac.to_string()));
    }
    secrets.push(("browser one's session CSRF token".into(), session_csrf_one));

    // A refused form post: the refusal's own log line and the access line share its id.
    let refused = browser(&base).post("/logout").csrf("forged").await;
    assert_eq!(refused.status(), 403);

    // Give the mail queue and the access log a moment, then stop the server.
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    drop(server);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let output = log.clone() + &std::fs::read_to_string(&stdout_path).unwrap();
    Run {
        log,
        output,
        secrets,
        codes: vec![("code one".into(), code_one), ("code two".into(), code_two)],
        dir,
    }
}

/// Every secret of the run that appears in its output, named.
fn leaks(run: &Run) -> Vec<String> {
    let output = &run.output;
    let mut leaks = Vec::new();
    for (name, value) in &run.secrets {
        assert!(value.len() >= 16, "{name} is too short to search for");
        if output.contains(value.as_str()) {
            leaks.push(name.clone());
        }
    }
    for (name, code) in &run.codes {
        let found = standalone_occurrences(output, code);
        if !found.is_empty() {
            let context: Vec<_> = found
                .iter()
                .map(|&at| {
                    let start = at.saturating_sub(80);
                    let end = (at + 86).min(output.len());
                    output.get(start..end).unwrap_or(code.as_str())
                })
                .collect();
            leaks.push(format!("{name} at {context:?}"));
        }
    }
    leaks
}

#[actix_web::test]
async fn no_token_code_or_session_id_reaches_the_log() {
    let run = run_the_flow("text").await;
    let output = &run.output;
    // The access log was captured (paths only: the query string carries the token).
    assert!(
        output.contains("POST /auth/verify") && output.contains("GET /auth/verify"),
        "the server's output was captured:\n{output}"
    );

    let request_of = |needle: &str| -> String {
        let line = output
            .lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{output}"));
        line.split(" req=")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .unwrap_or_else(|| panic!("no request id on {line:?}"))
            .to_string()
    };
    assert_eq!(
        request_of("refused a state-changing request"),
        request_of("\"POST /logout\" 403"),
        "the refusal and its access line name the same request"
    );
    assert_ne!(
        request_of("\"POST /logout\" 403"),
        request_of("\"POST /logout\" 303"),
        "each request has an id of its own"
    );

    let leaks = leaks(&run);
    assert!(leaks.is_empty(), "secrets in the log: {leaks:?}");
    assert!(
        output
            .lines()
            .any(|line| line.contains("signed_in via link member=ann@example.org")),
        "the text sign-in line names the member:\n{output}"
    );
    let _ = std::fs::remove_dir_all(&run.dir);
}

#[actix_web::test]
async fn json_lines_name_member_and_app_and_hold_no_secret() {
    let run = run_the_flow("json").await;
    let mut lines = Vec::new();
    for line in run.log.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line:?}"));
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        for field in ["time", "level", "target", "message"] {
            assert!(
                object.get(field).is_some_and(serde_json::Value::is_string),
                "{field} missing from {line}"
            );
        }
        lines.push(value);
    }
    assert!(lines.len() > 20, "the run logged:\n{}", run.output);
    let find = |target: &str, message: &str| -> &serde_json::Value {
        lines
            .iter()
            .find(|line| line["target"] == target && line["message"] == message)
            .unwrap_or_else(|| panic!("no {target} line {message:?}:\n{}", run.output))
    };
    let ann = "ann@example.org";
    for how in ["link", "code"] {
        let line = find("latchkey::signin", &format!("signed_in via {how}"));
        assert_eq!(line["member"], ann, "{line}");
        assert!(line["request_id"].is_string(), "{line}");
    }
    for refusal in ["link_reused", "code_failed"] {
        assert_eq!(find("latchkey::signin", refusal)["member"], ann);
    }
    let opened = find("latchkey::forward_auth", "app_opened");
    assert_eq!(
        (&opened["member"], &opened["app"]),
        (&ann.into(), &"wiki".into())
    );
    let denied = find("latchkey::forward_auth", "app_denied");
    assert_eq!(
        (&denied["member"], &denied["app"]),
        (&ann.into(), &"payroll".into())
    );
    let opened_lines = lines
        .iter()
        .filter(|line| {
            line["target"] == "latchkey::forward_auth" && line["message"] == "app_opened"
        })
        .count();
    // The OpenID Connect sign-in and the refused token requests name the app (and the
    // member where the request says).
    let oidc_opened = find("latchkey::oidc", "app_opened");
    assert_eq!(
        (&oidc_opened["member"], &oidc_opened["app"]),
        (&ann.into(), &"grafana".into())
    );
    let refused: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|line| {
            line["target"] == "latchkey::oidc"
                && line["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("oidc_refused"))
        })
        .collect();
    assert_eq!(refused.len(), 2, "the wrong secret and the replay");
    assert!(refused.iter().all(|line| line["app"] == "grafana"));
    assert!(
        refused.iter().any(|line| line["member"] == ann),
        "the replay names her"
    );
    assert_eq!(
        opened_lines, 1,
        "an allowed check logs once per session and app"
    );
    // The access line's fields.
    let access = lines
        .iter()
        .find(|line| line["target"] == "latchkey::access" && line["path"] == "/auth/verify")
        .unwrap_or_else(|| panic!("no access line for /auth/verify:\n{}", run.output));
    assert!(
        access["status"].is_u64() && access["ms"].is_number(),
        "{access}"
    );
    assert_eq!(access["client"], "127.0.0.1");
    assert_eq!(access["user_agent"], "LatchkeyLogTest/1.0");
    let leaks = leaks(&run);
    assert!(leaks.is_empty(), "secrets in the log: {leaks:?}");
    let _ = std::fs::remove_dir_all(&run.dir);
}
