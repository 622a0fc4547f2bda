//! How the `latchkey` binary stops, as a service manager, a terminal and a crash stop it: with
//! no `DATABASE_URL`, so each run starts (or takes over) its own private cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A data dir of its own, removed (with a root cluster's folder) when the test ends.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("signals-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        Self(dir)
    }

    /// Where the private cluster keeps its data: under the data dir, or (as root) in a folder
    /// of the `latchkey` account named in `cluster-id`.
    fn cluster(&self) -> PathBuf {
        match std::fs::read_to_string(self.0.join("cluster-id")) {
            Ok(id) => Path::new("/var/lib/latchkey/clusters").join(id.trim()),
            Err(_) => self.0.join("cluster"),
        }
    }

    /// Whether a postmaster runs from the cluster (it removes this file when it stops).
    fn cluster_runs(&self) -> bool {
        self.cluster().join("data").join("postmaster.pid").exists()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let cluster = self.cluster();
        if self.cluster_runs() {
            // A failed test may leave it running; the next run must not find it. As root it
            // runs as the `latchkey` account.
            let stop = r#"exec "$(ls -d /usr/lib/postgresql/*/bin | tail -1)/pg_ctl" stop -m immediate -D "$0""#;
            let mut command = if cluster.starts_with("/var/lib/latchkey") {
                let mut runuser = Command::new("runuser");
                runuser.args(["-u", "latchkey", "--", "/bin/sh", "-c", stop]);
                runuser
            } else {
                let mut sh = Command::new("/bin/sh");
                sh.args(["-c", stop]);
                sh
            };
            let _ = command.arg(cluster.join("data")).status();
        }
        if cluster.starts_with("/var/lib/latchkey") {
            std::fs::remove_dir_all(&cluster).ok();
        }
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// `latchkey serve` on a free port, its log in `log`.
struct Server {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Server {
    fn start(data: &DataDir, run: &str) -> Self {
        Self::start_with(data, run, Command::new(env!("CARGO_BIN_EXE_latchkey")))
    }

    /// As `nohup` starts it: ignoring SIGHUP.
    fn start_ignoring_hangups(data: &DataDir, run: &str) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
        // SAFETY: between fork and exec only signal(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                Ok(())
            });
        }
        Self::start_with(data, run, command)
    }

    fn start_with(data: &DataDir, run: &str, mut command: Command) -> Self {
        std::fs::create_dir_all(&data.0).unwrap();
        let log = data.0.join(format!("{run}.log"));
        let mut child = command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LATCHKEY_DATA_DIR", &data.0)
            .env("LATCHKEY_BIND", "127.0.0.1:0")
            // Set, so that a clean run logs no warning (a generated key and "nobody can sign
            // in" both warn, rightly).
            .env("LATCHKEY_SECRET_KEY", "5e".repeat(32))
            .env("LATCHKEY_ADMINS", "admin@example.org")
            .current_dir(env!("CARGO_TARGET_TMPDIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(port) = text
                .lines()
                .find_map(|line| line.split_once("listening on port ").map(|(_, p)| p))
            {
                break port.trim().parse().unwrap();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("latchkey exited ({status}) before listening:\n{text}");
            }
            assert!(Instant::now() < deadline, "not listening in time:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        };
        Self { child, log, port }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        let sent = unsafe { libc::kill(libc::pid_t::try_from(self.pid()).unwrap(), signal) };
        assert_eq!(sent, 0, "kill({signal})");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Waits for the process to end; its exit code.
    fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.log());
            }
            if Instant::now() > deadline {
                self.child.kill().ok();
                panic!("still running 30 s after the signal:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Every line is an info (or debug) line: nothing a log watcher would page someone about.
fn assert_calm(log: &str) {
    for line in log.lines() {
        let level = line
            .strip_prefix('[')
            .and_then(|rest| rest.split_whitespace().nth(1));
        assert!(
            matches!(level, Some("INFO" | "DEBUG")),
            "not a calm line: {line}\n{log}"
        );
    }
}

#[test]
fn sigterm_sigint_and_sighup_drain_requests_stop_the_cluster_and_exit_0() {
    let data = DataDir::new("stop");
    for (signal, name) in [
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGHUP, "SIGHUP"),
    ] {
        let server = Server::start(&data, name);
        assert!(data.cluster_runs(), "{name}: the cluster was started");
        // A request in flight when the signal comes: its body is still on the way. (A
        // connection with no request started is closed at once: that is not draining.)
        let mut client = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        let body = b"email=ann%40example.org";
        client
            .write_all(
                format!(
                    "POST /login HTTP/1.1\r\nHost: localhost\r\n\
                     Content-Type: application/x-www-form-urlencoded\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .unwrap();
        client.write_all(&body[..6]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        server.signal(signal);
        std::thread::sleep(Duration::from_millis(700));
        client.write_all(&body[6..]).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        // No CSRF token: refused, but answered in full.
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "{name}: the request in flight was cut: {answer:?}"
        );
        let (code, log) = server.wait();
        assert_eq!(code, Some(0), "{name}:\n{log}");
        assert!(
            !data.cluster_runs(),
            "{name}: the cluster still runs:\n{log}"
        );
        assert!(
            log.contains(&format!("{name}: finishing the requests in flight")),
            "{log}"
        );
        assert!(
            log.contains("stopped the private PostgreSQL cluster"),
            "{log}"
        );
        assert_calm(&log);
    }
}

#[test]
fn a_cluster_left_by_a_killed_latchkey_is_taken_over_and_stopped_by_the_next() {
    let data = DataDir::new("takeover");
    let killed = Server::start(&data, "killed");
    let killed_pid = killed.pid();
    killed.signal(libc::SIGKILL);
    let (code, _) = killed.wait();
    assert_eq!(code, None, "killed by a signal");
    assert!(data.cluster_runs(), "SIGKILL leaves the cluster running");

    let next = Server::start(&data, "next");
    let log = next.log();
    assert!(
        log.contains(&format!(
            "taking over the private cluster left running by pid {killed_pid}"
        )),
        "{log}"
    );
    assert!(
        !log.contains("started the private PostgreSQL cluster"),
        "it joined the running cluster rather than start another:\n{log}"
    );
    next.signal(libc::SIGTERM);
    let (code, log) = next.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        !data.cluster_runs(),
        "the taken-over cluster was stopped:\n{log}"
    );
    assert_calm(&log);
}

#[test]
fn a_cluster_whose_latchkey_still_runs_is_joined_not_taken_over() {
    let data = DataDir::new("join");
    let first = Server::start(&data, "first");
    let second = Server::start(&data, "second");
    assert!(!second.log().contains("taking over"), "{}", second.log());
    second.signal(libc::SIGTERM);
    let (code, log) = second.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        data.cluster_runs(),
        "the second left the first's cluster running:\n{log}"
    );
    first.signal(libc::SIGTERM);
    let (code, log) = first.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(!data.cluster_runs(), "{log}");
}

#[test]
fn started_with_nohup_it_outlives_its_terminal() {
    let data = DataDir::new("nohup");
    let server = Server::start_ignoring_hangups(&data, "nohup");
    server.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let mut client = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    server.signal(libc::SIGTERM);
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("SIGHUP"), "{log}");
    assert!(!data.cluster_runs(), "{log}");
}
