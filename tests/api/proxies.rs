//! Real proxies in front of a real app: Debian's nginx (`auth_request`) and Caddy
//! (`forward_auth`), each started by the test with the configuration from
//! docs/forward-auth.md (tests/proxies/), in front of a small app that echoes the headers it
//! receives. Host names under `lk.localhost` are mapped to 127.0.0.1 in the client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diesel::prelude::*;
use latchkey::domain::app_origin::AppOrigin;
use latchkey::domain::role::Role;
use latchkey::models::app::{self, Access};

use crate::forward_auth::register;
use crate::helpers::{form_value, spawn_app_with, urlencode, TestApp, TestSettings};

/// Kills and reaps the process when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "proxy-{name}-{}",
        hex::encode(latchkey::crypto::random_bytes::<6>())
    ));
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    dir
}

async fn wait_for_port(port: u16, what: &str, log: &Path) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{what} did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn binary(name: &str, paths: &[&str]) -> Option<PathBuf> {
    paths
        .iter()
        .map(PathBuf::from)
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .find(|p| p.is_file())
}

/// The echoing app on a free port.
async fn start_upstream(dir: &Path) -> (Running, u16) {
    let port = free_port();
    let log = dir.join("upstream.log");
    let child = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proxies/echo.py"))
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("python3");
    let running = Running(child);
    wait_for_port(port, "the echo app", &log).await;
    (running, port)
}

const APP_HOST: &str = "wiki.lk.localhost";
const LOGIN_HOST: &str = "login.lk.localhost";

/// Latchkey as `http://login.lk.localhost:PORT`, sharing its session cookie with
/// `lk.localhost`.
async fn spawn_latchkey() -> TestApp {
    spawn_app_with(TestSettings::new().public_host(LOGIN_HOST)).await
}

fn browser(app: &TestApp, proxy_port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .user_agent("LatchkeyProxyTest/1.0")
        .resolve(APP_HOST, SocketAddr::from(([127, 0, 0, 1], proxy_port)))
        .resolve(LOGIN_HOST, SocketAddr::from(([127, 0, 0, 1], app.port)))
        .build()
        .unwrap()
}

/// The whole story through one proxy at `app_url` (its origin registered for members).
async fn the_story(app: &TestApp, proxy_port: u16, proxy: &str) {
    let origin = format!("http://{APP_HOST}:{proxy_port}");
    let wiki = register(app, "wiki", &origin, &[Role::Member], &[]);
    app.add_member("ann@example.org", Role::Member);
    let browser = browser(app, proxy_port);
    let page = format!("{origin}/page?x=1");
    let login = format!("http://{LOGIN_HOST}:{}", app.port);

    // Signed out: the proxy sends the browser to Latchkey, with the way back.
    let res = browser.get(&page).send().await.unwrap();
    assert_eq!(res.status(), 302, "{proxy}");
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        format!("{login}/login?rd={}", urlencode(&page)),
        "{proxy}"
    );

    // Sign in there, by link.
    let html = browser
        .get(&location)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = form_value(&html, "csrf_token").unwrap();
    let rd = form_value(&html, "rd").expect("the form carries rd");
    let before = app.smtp.received().len();
    let res = browser
        .post(format!("{login}/login"))
        .form(&[
            ("email", "ann@example.org"),
            ("rd", &rd),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mails = app.smtp.wait_for(before + 1, Duration::from_secs(10)).await;
    let link = mails[before].extract_link(&format!("{login}/auth/verify?token="));
    let html = browser
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = form_value(&html, "csrf_token").unwrap();
    let token = form_value(&html, "token").unwrap();
    let res = browser
        .post(format!("{login}/auth/verify"))
        .form(&[("token", &token), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let session_cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("latchkey_session="))
        .expect("a session cookie");
    assert!(
        session_cookie.contains("Domain=lk.localhost"),
        "{session_cookie}"
    );
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        format!("/auth/return?rd={}", urlencode(&page))
    );
    let res = browser
        .get(format!("{login}/auth/return?rd={}", urlencode(&page)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["refresh"].to_str().unwrap(),
        format!("0; url={page}"),
        "back on the app"
    );

    // On the app, with the member's identity; a Remote-User the client sends never arrives.
    let res = browser
        .get(&page)
        .header("Remote-User", "mallory@evil.test")
        .header("Remote-Groups", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{proxy}");
    let echoed: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    let headers = &echoed["headers"];
    assert_eq!(
        headers["remote-user"],
        serde_json::json!(["ann@example.org"]),
        "{proxy}: {echoed}"
    );
    assert_eq!(
        headers["remote-email"],
        serde_json::json!(["ann@example.org"])
    );
    assert_eq!(
        headers["remote-groups"],
        serde_json::json!(["member"]),
        "{proxy}"
    );
    assert_eq!(
        headers["latchkey-assertion"][0]
            .as_str()
            .unwrap()
            .split('.')
            .count(),
        3
    );
    assert_eq!(echoed["path"], "/page?x=1");
    // Only the shared session cookie reaches the app's host; Latchkey's others are host-only.
    let cookies = headers["cookie"][0].as_str().unwrap_or_default();
    assert!(!cookies.contains("latchkey_browser"), "{proxy}: {cookies}");

    // Not admitted any more: Latchkey's 403 page, through the proxy.
    let access = Access {
        roles: vec![Role::Admin],
        groups: vec![],
        members: vec![],
    };
    app::update(
        &mut app.conn(),
        wiki,
        "wiki",
        &AppOrigin::parse(&origin).unwrap(),
        &access,
        "test",
    )
    .unwrap();
    app.sync_cache().await;
    let res = browser.get(&page).send().await.unwrap();
    assert_eq!(res.status(), 403, "{proxy}");
    let body = res.text().await.unwrap();
    assert!(body.contains("is not open to you"), "{proxy}: {body}");

    // Admitted again, then the session is revoked: the very next request is refused.
    let access = Access {
        roles: vec![Role::Member],
        groups: vec![],
        members: vec![],
    };
    app::update(
        &mut app.conn(),
        wiki,
        "wiki",
        &AppOrigin::parse(&origin).unwrap(),
        &access,
        "test",
    )
    .unwrap();
    app.sync_cache().await;
    assert_eq!(browser.get(&page).send().await.unwrap().status(), 200);
    diesel::delete(latchkey::schema::sessions::table)
        .execute(&mut app.conn())
        .unwrap();
    app.sync_cache().await;
    let res = browser.get(&page).send().await.unwrap();
    assert_eq!(res.status(), 302, "{proxy}: a revoked session");
    assert!(res.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&format!("{login}/login?rd=")));
    let events = app.audit_events();
    assert_eq!(events.iter().filter(|e| *e == "app_opened").count(), 1);
}

fn config_from(template: &str, pairs: &[(&str, String)]) -> String {
    let mut text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(template)).unwrap();
    for (key, value) in pairs {
        text = text.replace(key, value);
    }
    text
}

#[actix_web::test]
async fn nginx_auth_request_protects_an_app() {
    let Some(nginx) = binary("nginx", &["/usr/sbin/nginx"]) else {
        eprintln!("SKIPPED: nginx is not installed (apt-get install -y nginx; .ci/run does)");
        return;
    };
    let app = spawn_latchkey().await;
    let dir = scratch("nginx");
    let (_upstream, upstream_port) = start_upstream(&dir).await;
    let port = free_port();
    let conf = config_from(
        "tests/proxies/nginx.conf",
        &[
            ("@DIR@", dir.display().to_string()),
            ("@LISTEN@", format!("127.0.0.1:{port}")),
            ("@SERVER_NAME@", APP_HOST.to_string()),
            ("@LATCHKEY@", format!("http://127.0.0.1:{}", app.port)),
            ("@UPSTREAM@", format!("http://127.0.0.1:{upstream_port}")),
        ],
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let log = dir.join("error.log");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(&log)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nginx");
    let _nginx = Running(child);
    wait_for_port(port, "nginx", &log).await;
    the_story(&app, port, "nginx").await;
}

#[actix_web::test]
async fn caddy_forward_auth_protects_an_app() {
    let Some(caddy) = binary("caddy", &["/usr/bin/caddy"]) else {
        eprintln!("SKIPPED: caddy is not installed (apt-get install -y caddy; .ci/run does)");
        return;
    };
    let app = spawn_latchkey().await;
    let dir = scratch("caddy");
    let (_upstream, upstream_port) = start_upstream(&dir).await;
    let port = free_port();
    let conf = config_from(
        "tests/proxies/Caddyfile",
        &[
            ("@SITE@", format!("http://{APP_HOST}:{port}")),
            ("@LATCHKEY@", format!("127.0.0.1:{}", app.port)),
            ("@UPSTREAM@", format!("127.0.0.1:{upstream_port}")),
        ],
    );
    std::fs::write(dir.join("Caddyfile"), conf).unwrap();
    let log = dir.join("caddy.log");
    let child = Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.join("Caddyfile"))
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting caddy");
    let _caddy = Running(child);
    wait_for_port(port, "caddy", &log).await;
    the_story(&app, port, "caddy").await;
}
