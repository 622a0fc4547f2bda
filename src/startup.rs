//! The one place where the database, the keys, the middleware and the routes are wired.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::audit::checkpoint::{self, Checkpointer, OnBroken, Publisher, SignedHead};
use crate::dashboard::cache::DashboardCache;
use crate::db::embedded::EmbeddedPostgres;
use crate::db::{self, Db};
use crate::keys::{load_or_create_dev_secret, Keys};
use actix_identity::IdentityMiddleware;
use actix_session::config::BrowserSession;
use actix_session::SessionMiddleware;
use actix_web::cookie::{time::Duration as CookieDuration, SameSite};

use crate::forward_auth::ForwardAuth;
use crate::mail::{ChainBrokenMail, Letter, Mailer};
use crate::metrics::Metrics;
use crate::middleware::access_log::access_log;
use crate::middleware::anonymous::UnlessAnonymousView;
use crate::middleware::availability::database_availability;
use crate::middleware::body_limit::{body_limit, MAX_BODY_BYTES};
use crate::middleware::browser_cookie::browser_cookie;
use crate::middleware::check_cookie::take_check_cookie;
use crate::middleware::csrf::csrf_protect;
use crate::middleware::guard::guard;
use crate::middleware::rate_limit::LoginRate;
use crate::middleware::security_headers::security_headers;
use crate::models::member;
use crate::oidc::keys::SigningKeys;
use crate::oidc::Oidc;
use crate::routes;
use crate::session::cache::Live;
use crate::session::store::PgSessionStore;
use crate::settings::Settings;
use crate::signin::SignIn;
use crate::state::AppState;
use crate::web::browser::session_cookie_name;
use crate::web::errors::error_pages;
use crate::web::policy::resolve_policy;
use secrecy::{SecretSlice, SecretString};

/// Connections per process; a small team's traffic never needs more, and PostgreSQL's
/// default of 100 connections leaves room for several instances.
const POOL_SIZE: u32 = 16;
const SWEEP_INTERVAL: Duration = Duration::from_secs(300);
/// How long a stop waits for the requests in flight.
const DRAIN_SECONDS: u64 = 10;
/// How long a stopping server waits for its queued mail to go out.
const MAIL_SETTLE: Duration = Duration::from_secs(5);

/// Where the data lives: the configured server, or a private cluster this process runs.
pub struct Database {
    pub url: SecretString,
    /// Kept alive for as long as Latchkey runs; dropping it stops the cluster.
    pub embedded: Option<EmbeddedPostgres>,
}

/// Blocking: may create and start a PostgreSQL cluster.
pub fn open_database(settings: &Settings) -> anyhow::Result<Database> {
    match &settings.database_url {
        Some(url) => Ok(Database {
            url: url.clone(),
            embedded: None,
        }),
        None => {
            let cluster = EmbeddedPostgres::start(&settings.data_dir)?;
            Ok(Database {
                url: cluster.database_url(),
                embedded: Some(cluster),
            })
        }
    }
}

/// The configured secret, or (for a localhost URL only, as settings enforce) the generated one.
pub fn resolve_secret(settings: &Settings) -> anyhow::Result<SecretSlice<u8>> {
    match &settings.secret_key {
        Some(secret) => Ok(secret.clone()),
        None => load_or_create_dev_secret(&settings.data_dir),
    }
}

/// Blocking: applies pending migrations and makes sure `LATCHKEY_ADMINS` are active admins.
pub fn prepare_database(settings: &Settings, url: &SecretString) -> anyhow::Result<()> {
    let mut conn = db::connect_once(url)?;
    for name in db::migrations::run_pending(&mut conn)? {
        log::info!("applied migration {name}");
    }
    member::ensure_admins(&mut conn, &settings.admins).context("ensuring LATCHKEY_ADMINS")?;
    let anyone = member::any_active(&mut conn).context("counting active members")?;
    if !anyone && settings.allowed_domains.is_empty() {
        log::warn!("{NOBODY_CAN_SIGN_IN}");
    }
    Ok(())
}

/// The start-up warning when no member can sign in yet, saying how to add one.
pub const NOBODY_CAN_SIGN_IN: &str = "nobody can sign in yet: no active member, no \
     LATCHKEY_ADMINS and no LATCHKEY_ALLOWED_DOMAINS; add one with \
     LATCHKEY_ADMINS=you@example.org or `latchkey members add you@example.org --role admin`";

/// The one start-up line that lists the effective settings (secrets as set or unset).
pub fn settings_line(settings: &Settings) -> String {
    let listed: Vec<String> = settings
        .effective()
        .into_iter()
        .map(|(name, value)| {
            if value.contains(char::is_whitespace) || value.is_empty() {
                format!("{name}={value:?}")
            } else {
                format!("{name}={value}")
            }
        })
        .collect();
    format!("settings: {}", listed.join(" "))
}

pub struct Application {
    port: u16,
    server: Server,
    database: Database,
    live: Live,
    /// Signs the last audit checkpoint when the server stops.
    checkpointer: Arc<Checkpointer>,
    /// Sends what is still queued when the server stops.
    mailer: Mailer,
}

impl Application {
    /// Opens the database, applies pending migrations, and binds `LATCHKEY_BIND`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.bind)
            .with_context(|| format!("LATCHKEY_BIND: cannot listen on {}", settings.bind))?;
        let prepared = settings.clone();
        let database = web::block(move || {
            let database = open_database(&prepared)?;
            prepare_database(&prepared, &database.url)?;
            Ok::<_, anyhow::Error>(database)
        })
        .await
        .context("preparing the database")??;
        Self::build_on(settings, database, listener)
    }

    /// Serves on an already bound listener (tests bind port 0) with a prepared database.
    pub fn build_on(
        settings: Settings,
        database: Database,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let port = listener.local_addr()?.port();
        let keys = Keys::derive(&resolve_secret(&settings)?);
        let db = Db::connect_lazy(&database.url, POOL_SIZE);
        let live = Live::start(db.clone(), database.url.clone())
            .context("starting the session cache's listener")?;
        spawn_sweeper(db.clone());
        let mailer = Mailer::start(
            &settings.email,
            settings.email_from.clone(),
            settings.org_name.clone(),
            db.clone(),
        )?;
        let checkpointer = Checkpointer::new(
            db.clone(),
            keys.audit.clone(),
            Publisher::new(settings.audit_anchors.clone()),
            tell_admins_the_chain_broke(mailer.clone()),
        );
        checkpointer.spawn(checkpoint::INTERVAL);

        let https = settings.public_url.is_https();
        // One set of counters for the whole process, shared by every worker.
        let login_rate = LoginRate::new(settings.login_rate)?;
        let idle = CookieDuration::seconds(
            i64::try_from(settings.session_idle.as_secs()).unwrap_or(i64::MAX),
        );
        let webauthn = settings
            .passkey_rp
            .as_ref()
            .map(crate::passkeys::webauthn)
            .transpose()
            .map_err(|e| anyhow::anyhow!("LATCHKEY_PUBLIC_URL: no passkey relying party ({e})"))?;
        let forward_auth = ForwardAuth::new(&keys.assertion_seed)
            .map_err(|e| anyhow::anyhow!("making the assertion key: {e}"))?;
        let oidc = Arc::new(Oidc::new(SigningKeys::new(&keys.signing_key_seal)));
        crate::oidc::outbox::spawn(oidc.clone(), db.clone(), live.clone(), settings.clone());
        let app_live = live.clone();
        let app_mailer = mailer.clone();
        let signin = SignIn::new(
            db.clone(),
            settings.clone(),
            keys.token.clone(),
            mailer.clone(),
        );
        let state = web::Data::new(AppState {
            settings,
            db,
            live,
            keys,
            mailer,
            signin,
            forward_auth,
            oidc,
            webauthn,
            metrics: Arc::new(Metrics::new()),
            checkpointer: checkpointer.clone(),
        });
        let dashboard_cache = web::Data::new(DashboardCache::default());
        let login_page = web::Data::new(
            routes::LoginPage::new(state.webauthn.is_some(), &state.settings.org_name)
                .context("rendering the sign-in page")?,
        );
        let server = HttpServer::new(move || {
            let store = PgSessionStore::new(state.db.clone(), state.live.clone());
            let session_cookie = session_cookie_name(https);
            let sessions = SessionMiddleware::builder(store, state.keys.cookie.clone())
                .cookie_name(session_cookie.clone())
                .cookie_secure(https)
                .cookie_http_only(true)
                .cookie_same_site(SameSite::Lax)
                .cookie_path("/".into())
                // The cookie lives as long as the browser; the server decides when the session
                // ends (idle expiry on the row, absolute lifetime in the guard).
                .session_lifecycle(BrowserSession::default().state_ttl(idle))
                .build();
            App::new()
                .app_data(state.clone())
                .app_data(dashboard_cache.clone())
                .app_data(login_page.clone())
                .app_data(web::FormConfig::default().limit(MAX_BODY_BYTES))
                .configure(routes::configure)
                .wrap(from_fn(error_pages))
                .wrap(from_fn(guard))
                .wrap(from_fn(csrf_protect))
                .wrap(from_fn(browser_cookie))
                .wrap(UnlessAnonymousView::new(
                    IdentityMiddleware::default(),
                    &session_cookie,
                ))
                .wrap(UnlessAnonymousView::new(sessions, &session_cookie))
                .wrap(from_fn(take_check_cookie))
                .wrap(from_fn(body_limit))
                // actix-governor counts; the layer inside it answers what it marked as over.
                .wrap(from_fn({
                    let refusals = login_rate.refusals();
                    move |req, next| refusals.clone().answer(req, next)
                }))
                .wrap(login_rate.counter())
                .wrap(from_fn(database_availability))
                .wrap(from_fn(resolve_policy))
                .wrap(from_fn(security_headers))
                .wrap(from_fn(access_log))
        })
        .listen(listener)?
        // Signals are ours (`StopSignals`): actix's own would stop on SIGINT without draining,
        // and not at all on SIGHUP.
        .disable_signals()
        .shutdown_timeout(DRAIN_SECONDS)
        .run();
        Ok(Self {
            port,
            server,
            database,
            live: app_live,
            checkpointer,
            mailer: app_mailer,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The session cache this instance serves from.
    pub fn live(&self) -> Live {
        self.live.clone()
    }

    /// Serves until one of `signals` comes (see [`StopSignals`]), then stops as
    /// [`Application::run_until_stopped`] does.
    pub async fn run_until_signalled(self, mut signals: StopSignals) -> std::io::Result<()> {
        let server = self.server.handle();
        let watcher = actix_web::rt::spawn(async move {
            let name = signals.next().await;
            log::info!(
                "{name}: finishing the requests in flight (up to {DRAIN_SECONDS} s), then stopping"
            );
            let draining = actix_web::rt::spawn(server.stop(true));
            let name = signals.next().await;
            log::info!("{name} again: stopping now, without waiting for requests in flight");
            server.stop(false).await;
            draining.await.ok();
        });
        let result = self.run_until_stopped().await;
        watcher.abort();
        result
    }

    /// Serves until the server is stopped, drains requests, signs the audit rows written
    /// since the last checkpoint, then stops a private cluster if any.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            server,
            database,
            checkpointer,
            live,
            mailer,
            ..
        } = self;
        let result = server.await;
        // Published (logged, appended to the anchors) by the checkpointer itself.
        if let Err(err) = checkpointer.sign_if_behind().await {
            log::error!("writing the audit checkpoint on shutdown: {err}");
        }
        // The links asked for just before the stop, and any alarm the last checkpoint raised.
        if !mailer.settle(MAIL_SETTLE).await {
            log::warn!(
                "stopping with mail still queued (waited {} s)",
                MAIL_SETTLE.as_secs()
            );
        }
        // Before the database goes: its listener would report the lost connection as a fault.
        live.cache().close();
        if let Some(mut cluster) = database.embedded {
            web::block(move || cluster.stop()).await.ok();
        }
        result
    }
}

/// The signals that stop the server: SIGTERM (service managers, `docker stop`), SIGINT
/// (Ctrl-C) and SIGHUP (the terminal closed). The first drains the requests in flight; a
/// second one stops at once.
pub struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
    /// `None` when the process was started ignoring SIGHUP (`nohup`): it asked to outlive
    /// its terminal.
    hangup: Option<Signal>,
}

impl StopSignals {
    /// Watches them from now on: call it before start-up, so that a signal that comes while
    /// the database starts is kept for when the server runs rather than killing the process
    /// and leaving a private cluster behind.
    pub fn watch() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: if ignored(libc::SIGHUP) {
                None
            } else {
                Some(signal(SignalKind::hangup())?)
            },
        })
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        let hangup = async {
            match &mut self.hangup {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
            _ = hangup => "SIGHUP",
        }
    }
}

/// Whether `signal` is ignored (as `nohup` leaves SIGHUP); watching it would undo that.
fn ignored(signal: libc::c_int) -> bool {
    // SAFETY: a null new action only reads the current one into `current`, which is a
    // plain-data struct that zeroed memory initialises validly.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_IGN
    }
}

/// Expired rows are invisible to every query already; this only keeps the table small.
fn spawn_sweeper(db: Db) {
    actix_web::rt::spawn(async move {
        let mut interval = actix_web::rt::time::interval(SWEEP_INTERVAL);
        loop {
            interval.tick().await;
            match db.run(crate::purge::delete_expired_transient).await {
                Ok(counts) => log::debug!("swept {counts}"),
                Err(err) => log::warn!("sweeping expired sessions: {err}"),
            }
        }
    });
}

/// The checkpointer found the chain no longer extending a head it signed or saw signed: every
/// active admin gets a mail (queued; the mail worker sends it off this thread).
fn tell_admins_the_chain_broke(mailer: Mailer) -> OnBroken {
    Box::new(move |conn, head: &SignedHead| {
        match crate::models::member::active_admin_emails(conn) {
            Ok(admins) => {
                for admin in admins {
                    mailer.queue(Letter::ChainBroken(
                        admin,
                        ChainBrokenMail {
                            seq: head.seq,
                            head: hex::encode(&head.hash),
                            signed_at: head.signed_at,
                        },
                    ));
                }
            }
            Err(err) => log::error!("finding the admins to tell the audit chain broke: {err}"),
        }
    })
}
