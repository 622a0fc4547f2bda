//! A silent network cut between one instance and PostgreSQL: the listener's connection stops
//! carrying packets but never closes (a relay in between holds it open and forwards nothing).
//! Its heartbeat then goes unanswered, and within seconds that instance reads every session
//! from the database again, so a session revoked elsewhere is refused there too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use latchkey::domain::role::Role;
use latchkey::schema::sessions;
use latchkey::session::cache::LISTENER_APPLICATION_NAME;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::helpers::{spawn_app, wait_until_listening};

/// Where the relay reaches PostgreSQL: the test server's TCP port, or the private cluster's
/// Unix socket.
#[derive(Clone)]
enum Upstream {
    Tcp(String),
    Unix(std::path::PathBuf),
}

type ServerRead = Box<dyn AsyncRead + Unpin + Send>;
type ServerWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// A TCP relay to PostgreSQL that can stop forwarding the listener's connection (recognised
/// by its `application_name`) while keeping it open.
struct Relay {
    port: u16,
    /// The database URL's user and database, for the URL that goes through the relay.
    user: String,
    database: String,
    frozen: Arc<AtomicBool>,
    listener_seen: Arc<AtomicBool>,
}

impl Relay {
    async fn start(database_url: &SecretString) -> Self {
        let url = url::Url::parse(database_url.expose_secret()).unwrap();
        let socket_dir = url
            .query_pairs()
            .find(|(key, _)| key == "host")
            .map(|(_, value)| value.into_owned());
        let upstream = match socket_dir {
            Some(dir) => {
                let port = url
                    .query_pairs()
                    .find(|(key, _)| key == "port")
                    .map_or_else(|| "5432".to_string(), |(_, value)| value.into_owned());
                Upstream::Unix(std::path::Path::new(&dir).join(format!(".s.PGSQL.{port}")))
            }
            None => Upstream::Tcp(format!(
                "{}:{}",
                url.host_str().unwrap(),
                url.port().unwrap_or(5432)
            )),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let listener_seen = Arc::new(AtomicBool::new(false));
        let (frozen_in, seen_in) = (frozen.clone(), listener_seen.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, frozen, seen) =
                    (upstream.clone(), frozen_in.clone(), seen_in.clone());
                tokio::spawn(async move {
                    let is_listener = Arc::new(AtomicBool::new(false));
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write): (ServerRead, ServerWrite) = match upstream {
                        Upstream::Tcp(address) => {
                            let server = tokio::net::TcpStream::connect(address).await.unwrap();
                            let (read, write) = server.into_split();
                            (Box::new(read), Box::new(write))
                        }
                        Upstream::Unix(path) => {
                            let server = tokio::net::UnixStream::connect(path).await.unwrap();
                            let (read, write) = server.into_split();
                            (Box::new(read), Box::new(write))
                        }
                    };
                    pump_both(
                        (client_read, client_write),
                        (server_read, server_write),
                        is_listener,
                        frozen,
                        seen,
                    )
                    .await;
                });
            }
        });
        Self {
            port,
            user: url.username().to_string(),
            database: url.path().trim_start_matches('/').to_string(),
            frozen,
            listener_seen,
        }
    }

    /// Without TLS, so that the relay can read the listener's name on its connection.
    fn url(&self) -> SecretString {
        SecretString::from(format!(
            "postgres://{}@127.0.0.1:{}/{}?sslmode=disable",
            self.user, self.port, self.database
        ))
    }
}

async fn pump_both<CR, CW, SR, SW>(
    (client_read, client_write): (CR, CW),
    (server_read, server_write): (SR, SW),
    is_listener: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    seen: Arc<AtomicBool>,
) where
    CR: AsyncRead + Unpin + Send + 'static,
    CW: AsyncWrite + Unpin + Send + 'static,
    SR: AsyncRead + Unpin + Send + 'static,
    SW: AsyncWrite + Unpin + Send + 'static,
{
    let up = pump(
        client_read,
        server_write,
        is_listener.clone(),
        frozen.clone(),
        Some(seen),
    );
    let down = pump(server_read, client_write, is_listener, frozen, None);
    let _ = tokio::join!(up, down);
}

/// Copies `from` to `to`; once the connection is the listener's and the relay is frozen, it
/// holds both ends open and forwards nothing (a silent cut).
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    is_listener: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    // Set on the client-to-server direction: where the listener names itself.
    seen: Option<Arc<AtomicBool>>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            return;
        }
        if let Some(seen) = &seen {
            let needle = LISTENER_APPLICATION_NAME.as_bytes();
            if buffer[..n].windows(needle.len()).any(|w| w == needle) {
                is_listener.store(true, Ordering::SeqCst);
                seen.store(true, Ordering::SeqCst);
            }
        }
        while is_listener.load(Ordering::SeqCst) && frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Relay {
    /// A failed test must not leave the listener's connection frozen: whatever waits on it
    /// (the listener thread, the database's DROP at the end) would wait for ever.
    fn drop(&mut self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}

// Run on its own by scripts/test (`--ignored`, one test at a time): amid the 200 other tests
// running in parallel it stalled twice in CI (at near-zero CPU, cause not yet found; see the
// steps it prints), while it passes alone in about 9 s.
#[test]
#[ignore = "run alone by scripts/test: it stalled amid the parallel suite"]
fn a_silently_cut_listener_stops_the_cache_within_seconds() {
    // The body runs on a thread and runtime of its own, watched from here by the wall clock:
    // a timer inside the runtime cannot fire while a blocking call holds its thread, and a
    // stall here once held a whole CI run until its time ran out.
    let (done, finished) = std::sync::mpsc::channel();
    let body = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(silently_cut_listener());
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(120)) {
        Ok(()) => body.join().unwrap(),
        // The body panicked (the channel closed without a message): show its panic.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = body.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the silent-cut test took over two minutes")
        }
    }
}

async fn silently_cut_listener() {
    let began = Instant::now();
    let step = |what: &str| eprintln!("silent cut, {:?}: {what}", began.elapsed());
    let app = spawn_app().await;
    let relay = Relay::start(&app.database.url).await;
    step("relay started");
    let cut_off = app.another_instance_through(relay.url()).await;
    step("the instance behind the relay started");
    assert!(relay.listener_seen.load(Ordering::SeqCst));

    let ann = app.member(Role::Member, "ann@example.org").await;
    let status = |path: &'static str| {
        let url = cut_off.url(path);
        let ann = &ann;
        async move { ann.get(&url).await.status().as_u16() }
    };
    assert_eq!(status("/").await, 200);
    let before = cut_off.live.db().round_trips();
    assert_eq!(status("/").await, 200);
    assert_eq!(
        cut_off.live.db().round_trips(),
        before,
        "served from the cut-off instance's cache"
    );

    // The cut: the listener's connection stays open and carries nothing from now on...
    step("cutting");
    relay.frozen.store(true, Ordering::SeqCst);
    // ...and the session ends behind the instance's back (its notification never arrives).
    diesel::delete(sessions::table)
        .execute(&mut app.conn())
        .unwrap();
    let started = Instant::now();
    loop {
        let got = status("/").await;
        if got == 303 {
            break;
        }
        assert_eq!(got, 200);
        assert!(
            // Issue #23 asks 6 s: the heartbeat's deadline is 3 s after the last answer, and
            // this test runs alone, so the rest is slack enough.
            started.elapsed() < Duration::from_secs(6),
            "a revoked session still served {:?} after the cut",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!cut_off.live.cache().is_listening());
    step("refused after the cut");

    // The network heals: the late heartbeat counts as a lost connection, the listener
    // reconnects, and the cache is used again (and starts empty).
    relay.frozen.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        if cut_off.live.cache().is_listening() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    wait_until_listening(&cut_off.live).await;
    step("listening again");
    let bea = app.member(Role::Member, "bea@example.org").await;
    let dashboard = cut_off.url("/");
    assert_eq!(bea.get(&dashboard).await.status(), 200);
    let before = cut_off.live.db().round_trips();
    assert_eq!(bea.get(&dashboard).await.status(), 200);
    assert_eq!(cut_off.live.db().round_trips(), before, "cached again");
    assert_eq!(status("/").await, 303, "ann stays signed out");
}
