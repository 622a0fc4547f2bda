//! `spawn_app()` and friends: each test gets its own database, copied from a migrated
//! template, and the real application listening on a free port.

mod browser;
mod html;
mod settings;

use std::net::TcpListener;
use std::sync::OnceLock;

use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use latchkey::audit::rows::AuditRow;
use latchkey::db;
use latchkey::db::embedded::EmbeddedPostgres;
use latchkey::domain::email_address::EmailAddress;
use latchkey::domain::ids::MemberId;
use latchkey::domain::role::Role;
use latchkey::models::member;
use latchkey::settings::Settings;
use latchkey::startup::{Application, Database};
use secrecy::{ExposeSecret as _, SecretString};

use crate::smtp_server::SmtpServer;
pub use browser::{assert_redirect_to, Browser, Request};
pub use html::{attr, form_value, one, parse_page, select, text, texts, texts_within, within};
use settings::Harness;
pub use settings::{Environment, TestSettings};

/// The server the tests use: the one on 127.0.0.1:5432 when it answers, else a private one.
enum TestServer {
    /// A URL prefix to which `/<database>` is appended.
    Tcp(String),
    Private(EmbeddedPostgres),
}

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        // As `latchkey` does first thing: this process exits with listener threads still
        // inside TLS reads, which OpenSSL's exit handler would otherwise crash.
        latchkey::db::init_tls();
        if let Ok(url) = std::env::var("LATCHKEY_TEST_POSTGRES") {
            return TestServer::Tcp(url.trim_end_matches('/').to_string());
        }
        if std::net::TcpStream::connect("127.0.0.1:5432").is_ok() {
            return TestServer::Tcp("postgres://postgres@127.0.0.1:5432".into());
        }
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-postgres");
        TestServer::Private(EmbeddedPostgres::start(&dir).expect("starting a private PostgreSQL"))
    })
}

pub fn database_url(name: &str) -> SecretString {
    match server() {
        TestServer::Tcp(base) => SecretString::from(format!("{base}/{name}")),
        TestServer::Private(cluster) => cluster.url_for(name),
    }
}

pub fn admin_connection() -> PgConnection {
    PgConnection::establish(database_url("postgres").expose_secret())
        .expect("connecting to PostgreSQL")
}

/// The template's name changes whenever a migration changes, so a stale one is never used,
/// and depends on nothing else (not where the checkout is).
fn template_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut entries: Vec<_> = walk(&root);
        entries.sort();
        let mut all = Vec::new();
        for path in entries {
            // Relative to the folder, so every clone of the same migrations shares one
            // template instead of leaving one per checkout on a shared server.
            let relative = path.strip_prefix(&root).unwrap_or(&path);
            all.extend_from_slice(relative.to_string_lossy().as_bytes());
            all.extend(std::fs::read(&path).expect("reading a migration"));
        }
        let digest = latchkey::crypto::sha256(&all);
        format!("latchkey_tpl_{}", hex::encode(&digest[..8]))
    })
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reading migrations") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn database_exists(conn: &mut PgConnection, name: &str) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count: Count = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM pg_database WHERE datname = '{name}'"
    ))
    .get_result(conn)
    .expect("querying pg_database");
    count.n > 0
}

/// Creates the migrated template once, across all test processes (an advisory lock
/// serialises the first creation).
fn ensure_template() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    let name = template_name();
    READY.get_or_init(|| {
        let mut conn = admin_connection();
        diesel::sql_query("SELECT pg_advisory_lock(727274)")
            .execute(&mut conn)
            .expect("locking");
        if !database_exists(&mut conn, name) {
            let building = format!("{name}_building");
            diesel::sql_query(format!("DROP DATABASE IF EXISTS {building}"))
                .execute(&mut conn)
                .expect("dropping a half-built template");
            diesel::sql_query(format!("CREATE DATABASE {building}"))
                .execute(&mut conn)
                .expect("creating the template");
            {
                let mut tpl = PgConnection::establish(database_url(&building).expose_secret())
                    .expect("connecting to the template");
                db::migrations::run_pending(&mut tpl).expect("migrating the template");
            }
            diesel::sql_query(format!("ALTER DATABASE {building} RENAME TO {name}"))
                .execute(&mut conn)
                .expect("publishing the template");
        }
        diesel::sql_query("SELECT pg_advisory_unlock(727274)")
            .execute(&mut conn)
            .expect("unlocking");
    });
    name
}

/// A database of its own for one test, dropped when the guard is.
pub struct TestDatabase {
    pub name: String,
    pub url: SecretString,
}

impl TestDatabase {
    /// A copy of the migrated template.
    pub fn migrated() -> Self {
        let template = ensure_template();
        Self::create(Some(template))
    }

    /// An empty database, for migration tests.
    pub fn empty() -> Self {
        Self::create(None)
    }

    fn create(template: Option<&str>) -> Self {
        let name = format!(
            "latchkey_test_{}",
            hex::encode(latchkey::crypto::random_bytes::<8>())
        );
        let mut conn = admin_connection();
        let sql = match template {
            Some(template) => format!("CREATE DATABASE {name} TEMPLATE {template}"),
            None => format!("CREATE DATABASE {name}"),
        };
        // Copies from one template cannot run at the same moment; retry briefly.
        let mut attempts = 0;
        loop {
            match diesel::sql_query(&sql).execute(&mut conn) {
                Ok(_) => break,
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => panic!("creating {name}: {e}"),
            }
        }
        let url = database_url(&name);
        Self { name, url }
    }

    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(self.url.expose_secret()).expect("connecting to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside an async test; do the blocking work on a plain thread.
        let _ = std::thread::spawn(move || {
            let mut conn = admin_connection();
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn);
        })
        .join();
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub database: TestDatabase,
    /// The default browser: a cookie store, redirects off.
    pub browser: Browser,
    /// The real SMTP server the app sends to.
    pub smtp: SmtpServer,
    /// The app's session cache.
    pub live: latchkey::session::cache::Live,
    /// What the app was started with, for the command line to act on the same deployment.
    pub environment: Environment,
    /// The same, as the app read it.
    pub settings: Settings,
    /// What the test asked for, so that another instance is configured alike.
    test_settings: TestSettings,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestSettings::new()).await
}

pub async fn spawn_app_with(test_settings: TestSettings) -> TestApp {
    init_test_log();
    let database = TestDatabase::migrated();
    let smtp = crate::smtp_server::start().await;
    let Started {
        instance,
        environment,
        settings,
    } = start_instance(&database, &smtp, &test_settings).await;
    let browser = Browser::new(&instance.address, "LatchkeyTest/1.0");
    TestApp {
        address: instance.address,
        port: instance.port,
        database,
        browser,
        smtp,
        live: instance.live,
        environment,
        settings,
        test_settings,
    }
}

/// One Latchkey process (in this test process): its address and its session cache.
pub struct Instance {
    pub address: String,
    pub port: u16,
    pub live: latchkey::session::cache::Live,
}

impl Instance {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }
}

async fn start_instance(
    database: &TestDatabase,
    smtp: &SmtpServer,
    test_settings: &TestSettings,
) -> Started {
    start_instance_at(&database.name, &database.url, smtp, test_settings).await
}

/// An instance on the database `name`, reached at `url`.
async fn start_instance_at(
    name: &str,
    url: &SecretString,
    smtp: &SmtpServer,
    test_settings: &TestSettings,
) -> Started {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let port = listener.local_addr().unwrap().port();
    let environment = test_settings.environment(Harness {
        port,
        database_url: url.expose_secret().to_string(),
        // One per test database, so that every instance on it signs and encrypts alike.
        secret_key: hex::encode(latchkey::crypto::sha256(name.as_bytes())),
        email: smtp.url(),
    });
    let settings = environment.settings();
    let prepared = settings.clone();
    tokio::task::spawn_blocking(move || {
        latchkey::startup::prepare_database(&prepared, prepared.database_url.as_ref().unwrap())
    })
    .await
    .unwrap()
    .expect("preparing the database");
    let app = Application::build_on(
        settings.clone(),
        Database {
            url: settings
                .database_url
                .clone()
                .expect("tests always set DATABASE_URL"),
            embedded: None,
        },
        listener,
    )
    .expect("building the app");
    let live = app.live();
    actix_web::rt::spawn(app.run_until_stopped());
    wait_until_listening(&live).await;
    Started {
        instance: Instance {
            address: format!("http://127.0.0.1:{port}"),
            port,
            live,
        },
        environment,
        settings,
    }
}

struct Started {
    instance: Instance,
    environment: Environment,
    settings: Settings,
}

impl TestApp {
    /// A second Latchkey process on the same database, with the same test settings (a public
    /// URL on the harness's port names its own port).
    pub async fn another_instance(&self) -> Instance {
        start_instance(&self.database, &self.smtp, &self.test_settings)
            .await
            .instance
    }

    /// Another process on the same database, reaching it through `database_url` (a relay).
    pub async fn another_instance_through(&self, database_url: SecretString) -> Instance {
        start_instance_at(
            &self.database.name,
            &database_url,
            &self.smtp,
            &self.test_settings,
        )
        .await
        .instance
    }
}

/// The session cache is in use once its listener is connected; tests start from there.
pub async fn wait_until_listening(live: &latchkey::session::cache::Live) {
    for _ in 0..500 {
        if live.cache().is_listening() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the session cache's listener did not connect");
}

/// A public URL the tests do not serve: an https one, as behind a TLS proxy.
pub const HTTPS_URL: &str = "https://login.example.org";

/// Set-Cookie headers of a response, as sent.
pub fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// Writes `request` as is and reads the answer until the server closes; returns the status
/// and the raw response.
pub async fn raw_request(port: u16, request: impl AsRef<[u8]>) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // The server may answer and close before reading everything; that is its right.
    let _ = stream.write_all(request.as_ref()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    )
    .await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// What a sign-in email carried.
#[derive(Debug, Clone)]
pub struct SignInMailParts {
    pub link: String,
    pub token: String,
    pub code: String,
    pub cancel_link: String,
    pub to: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.browser.get(path).await
    }

    /// Waits until the app has applied every invalidation committed so far: for a test that
    /// changed the database behind the app's back (another process's change reaches it within
    /// milliseconds, not before the test's next request).
    pub async fn sync_cache(&self) {
        let n = self.live.cache().next_sync();
        diesel::sql_query(format!(
            "NOTIFY {}, 'sync:{n}'",
            latchkey::session::cache::CHANNEL
        ))
        .execute(&mut self.conn())
        .expect("sending the barrier");
        for _ in 0..1000 {
            if self.live.cache().synced_up_to() >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("the session cache did not see barrier {n}");
    }

    pub fn conn(&self) -> PgConnection {
        self.database.connect()
    }

    /// Adds (or re-activates) a member directly, as `latchkey members add` does.
    pub fn add_member(&self, email: &str, role: Role) -> MemberId {
        let email = EmailAddress::parse(email).unwrap();
        let (member, _) =
            member::add_or_reactivate(&mut self.conn(), &email, role, "test").unwrap();
        member.id
    }

    /// Waits for the `n`th mail (1-based) and pulls the sign-in parts out of it.
    pub async fn sign_in_mail(&self, n: usize) -> SignInMailParts {
        let mails = self
            .smtp
            .wait_for(n, std::time::Duration::from_secs(10))
            .await;
        assert!(mails.len() >= n, "expected {n} mails, got {}", mails.len());
        self.parts_of(&mails[n - 1])
    }

    /// The first sign-in-link mail after the first `after` mails (other mails, such as a
    /// "new sign-in" notice, may arrive in between).
    pub async fn next_sign_in_mail(&self, after: usize) -> SignInMailParts {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mails = self.smtp.received();
            if let Some(mail) = mails.iter().skip(after).find(|m| {
                m.header("Subject")
                    .is_some_and(|s| s.contains(latchkey::mail::SIGN_IN_SUBJECT))
            }) {
                return self.parts_of(mail);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no sign-in mail arrived"
            );
            actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits for the newest sign-in mail to `email`, whose links start with `base`; returns
    /// its token and code.
    pub async fn sign_in_mail_to(&self, email: &str, base: &str) -> (String, String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let found = self.smtp.received().into_iter().rev().find(|mail| {
                mail.to.iter().any(|to| to.contains(email)) && mail.data.contains("/auth/verify")
            });
            if let Some(mail) = found {
                let link = mail.extract_link(&format!("{base}/auth/verify?token="));
                let token = urldecode(link.split("token=").nth(1).unwrap());
                return (token, mail.extract_code());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no sign-in mail to {email}"
            );
            actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    fn parts_of(&self, mail: &crate::smtp_server::ReceivedMail) -> SignInMailParts {
        let link = mail.extract_link(&format!("{}/auth/verify?token=", self.address));
        let cancel_link = mail.extract_link(&format!("{}/auth/cancel?token=", self.address));
        let token = link.split("token=").nth(1).unwrap().to_string();
        SignInMailParts {
            token: urldecode(&token),
            link,
            code: mail.extract_code(),
            cancel_link,
            to: mail.header("To").unwrap_or_default(),
        }
    }

    /// The whole flow by link in `browser`; returns the response to the confirming POST.
    pub async fn sign_in(&self, browser: &Browser, email: &str) -> reqwest::Response {
        let before = self.smtp.received().len();
        let res = browser.request_link(email).await;
        assert_eq!(res.status(), 200);
        let mail = self.next_sign_in_mail(before).await;
        browser.confirm_link(&mail.token).await
    }

    /// A visitor: a fresh browser on this app, signed in as nobody.
    pub fn visitor(&self) -> Browser {
        self.visitor_as("LatchkeyTest/1.0")
    }

    /// A visitor whose browser names itself `user_agent`.
    pub fn visitor_as(&self, user_agent: &str) -> Browser {
        Browser::new(&self.address, user_agent)
    }

    /// Adds `email` as a member of `role` and signs them in, by link, in a new browser.
    pub async fn member(&self, role: Role, email: &str) -> Browser {
        self.add_member(email, role);
        self.signed_in(self.visitor(), email).await
    }

    /// Signs an existing member in, by link, in `browser`.
    pub async fn signed_in(&self, browser: Browser, email: &str) -> Browser {
        let res = self.sign_in(&browser, email).await;
        assert_eq!(res.status(), 303, "sign-in failed");
        browser
    }

    /// Audit rows, oldest first.
    pub fn audit(&self) -> Vec<AuditRow> {
        use diesel::prelude::*;
        latchkey::schema::login_audit::table
            .order(latchkey::schema::login_audit::id.asc())
            .select(AuditRow::as_select())
            .load(&mut self.conn())
            .unwrap()
    }

    pub fn audit_events(&self) -> Vec<String> {
        self.audit().into_iter().map(|row| row.event).collect()
    }

    pub fn count(&self, table_sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(format!("SELECT count(*) AS n FROM {table_sql}"))
            .get_result::<Count>(&mut self.conn())
            .unwrap()
            .n
    }
}

/// What must not change when a request is refused: the rows a request could write, and
/// the mail it could send.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    audit: i64,
    sessions: i64,
    members: Vec<(String, String, bool)>,
    requests: Vec<String>,
    mails: usize,
}

impl TestApp {
    pub fn snapshot(&self) -> Snapshot {
        #[derive(diesel::QueryableByName)]
        struct MemberRow {
            #[diesel(sql_type = diesel::sql_types::Text)]
            email: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            role: String,
            #[diesel(sql_type = diesel::sql_types::Bool)]
            active: bool,
        }
        #[derive(diesel::QueryableByName)]
        struct RequestRow {
            #[diesel(sql_type = diesel::sql_types::Text)]
            state: String,
        }
        let members = diesel::sql_query("SELECT email, role, active FROM members ORDER BY id")
            .load::<MemberRow>(&mut self.conn())
            .unwrap()
            .into_iter()
            .map(|m| (m.email, m.role, m.active))
            .collect();
        let requests = diesel::sql_query(
            "SELECT concat_ws('|', id, consumed_at, cancelled_at, approved_at, code_failures) AS state \
             FROM sign_in_requests ORDER BY id",
        )
        .load::<RequestRow>(&mut self.conn())
        .unwrap()
        .into_iter()
        .map(|r| r.state)
        .collect();
        Snapshot {
            audit: self.count("login_audit"),
            sessions: self.count("sessions"),
            members,
            requests,
            mails: self.smtp.received().len(),
        }
    }
}

pub fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

pub fn urldecode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn init_test_log() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = env_logger::builder().is_test(true).try_init();
        }
    });
}

/// The real app on a free port whose database can never be reached (nothing is migrated);
/// returns its address.
pub async fn spawn_app_with_unreachable_database(test_settings: TestSettings) -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let settings = test_settings
        .environment(Harness {
            port,
            database_url: format!("postgres://postgres@127.0.0.1:{closed_port}/nothing"),
            secret_key: hex::encode(latchkey::crypto::random_bytes::<32>()),
            // `console` is refused for a public URL that is not loopback; no mail is sent here.
            email: format!("file:{}/unreachable-mail", env!("CARGO_TARGET_TMPDIR")),
        })
        .settings();
    let url = settings.database_url.clone().unwrap();
    let app = Application::build_on(
        settings,
        Database {
            url,
            embedded: None,
        },
        listener,
    )
    .unwrap();
    actix_web::rt::spawn(app.run_until_stopped());
    format!("http://127.0.0.1:{port}")
}
