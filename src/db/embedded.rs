//! The zero-configuration database: a private PostgreSQL cluster that only its owner can use.
//!
//! Used when `DATABASE_URL` is unset (and by the tests when no server answers on
//! 127.0.0.1:5432). The cluster listens on no TCP port: only on a Unix socket in a directory
//! of mode 0700 owned by the cluster's account, so trust authentication admits nobody but
//! that account (and root). Its data and log sit in another 0700 directory of that account.
//!
//! Where the cluster lives:
//! - Latchkey not root: `<data dir>/cluster/` (`data/`, `socket/`, `postgres.log`).
//! - Latchkey root: PostgreSQL refuses root, so the cluster runs as the system account
//!   `latchkey`, made on first use ([`account`]), which cannot enter the checkout (a 0700
//!   home, a `mktemp -d` folder). Its files then live in `/var/lib/latchkey/clusters/<id>/`,
//!   where `<id>` is a random name kept in `<data dir>/cluster-id`; nothing outside the data
//!   dir is loosened to reach the checkout. A cluster there that an earlier Latchkey made as
//!   `postgres` is refused, not taken over: see [`EmbeddedError::OldCluster`].

use std::ffi::OsStr;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use diesel::{Connection as _, PgConnection, RunQueryDsl as _};

use crate::private_fs::{create_private_dir, write_private_file};
use secrecy::{ExposeSecret as _, SecretString};

mod account;

/// The cluster's superuser role, as `initdb -U` makes it. Only a role name: trust
/// authentication lets in whoever reaches the socket, and only the cluster's account (and
/// root) can. Kept as `postgres` so clusters of every Latchkey version answer the same URL.
const SUPERUSER_ROLE: &str = "postgres";
/// The account that earlier versions ran root's clusters as; such a cluster is refused.
const OLD_ROOT_ACCOUNT: &str = "postgres";
const DATABASE_NAME: &str = "latchkey";
/// Where root's clusters live, since the cluster's account cannot reach the data dir.
const ROOT_CLUSTERS: &str = "/var/lib/latchkey/clusters";
/// Only names the socket file (`.s.PGSQL.5432`); nothing listens on a TCP port.
const SOCKET_PORT: u16 = 5432;
/// `sun_path` holds 107 bytes; the socket file's name takes 14 of them.
const MAX_SOCKET_DIR_LEN: usize = 107 - "/.s.PGSQL.5432".len();
/// Settings written on every start, included from `postgresql.conf`.
const SETTINGS_FILE: &str = "latchkey.conf";
/// In the cluster's folder: which Latchkey process started the running cluster and will stop
/// it (`<pid> <start time>`), so that the next start can tell a cluster whose Latchkey died
/// from one that another Latchkey still serves from.
const OWNER_FILE: &str = "latchkey.pid";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "DATABASE_URL is not set and no PostgreSQL server binaries (initdb, pg_ctl) were found. \
         Install them (Debian/Ubuntu: `apt-get install -y postgresql`) or set DATABASE_URL."
    )]
    NotInstalled,
    #[error(
        "PostgreSQL refuses to run as root, so Latchkey runs its private cluster as the system \
         account `latchkey`; an account of that name exists (uid {uid}, gid {gid}, shell {shell}) \
         but is not one (a uid from 1 to 999, a group other than root's, a shell that refuses \
         logins), and Latchkey will not hand its cluster to what may be a person's account. \
         Rename that account, run Latchkey as another user, or set DATABASE_URL."
    )]
    AccountNotOurs {
        uid: libc::uid_t,
        gid: libc::gid_t,
        shell: String,
    },
    /// Refused rather than taken over: the files were the `postgres` account's to change,
    /// so what is in them (settings that run programs, say) is for a person to check before
    /// Latchkey's own account runs it, and a cluster an older Latchkey still runs must not
    /// change owner under it.
    #[error(
        "the private cluster in {root} was made by an earlier Latchkey as the `postgres` \
         account, which the system's PostgreSQL may share; Latchkey now runs it as `latchkey` \
         and does not take it over by itself. To keep its data: stop it if it runs \
         (`runuser -u postgres -- {pg_ctl} stop -D {root}/data`), check it, then \
         `chown -R latchkey:latchkey {root}`. To start afresh instead: remove {cluster_id} \
         (and {root})."
    )]
    OldCluster {
        root: String,
        pg_ctl: String,
        cluster_id: String,
    },
    #[error("{step} failed: {detail}")]
    Step { step: String, detail: String },
}

fn step_error(step: impl Into<String>, detail: impl ToString) -> EmbeddedError {
    EmbeddedError::Step {
        step: step.into(),
        detail: detail.to_string(),
    }
}

/// The account that owns and runs the cluster.
#[derive(Debug, Clone, Copy)]
struct Account {
    uid: libc::uid_t,
    gid: libc::gid_t,
    /// `Some` when Latchkey is root and must switch to this account to run PostgreSQL.
    switch_to: Option<&'static str>,
}

/// The cluster's files; every directory here is 0700 and owned by the cluster's account.
#[derive(Debug, Clone)]
struct Layout {
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
}

/// A running private cluster. It is stopped by [`EmbeddedPostgres::stop`] (or on drop)
/// only if this process started it.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    layout: Layout,
    account: Account,
    started_here: bool,
}

impl EmbeddedPostgres {
    /// Creates the cluster on first use, starts it (or joins it if it is already running),
    /// and makes sure the `latchkey` database exists.
    pub fn start(data_dir: &Path) -> Result<Self, EmbeddedError> {
        let bin_dir = find_bin_dir().ok_or(EmbeddedError::NotInstalled)?;
        let account = cluster_account()?;
        create_private_dir(data_dir)
            .map_err(|e| step_error(format!("creating {}", data_dir.display()), e))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(|e| step_error(format!("resolving {}", data_dir.display()), e))?;
        let layout = prepare_layout(&data_dir, account, &bin_dir)?;

        let mut cluster = Self {
            bin_dir,
            layout,
            account,
            started_here: false,
        };
        if !cluster.layout.data.join("PG_VERSION").exists() {
            cluster.init()?;
        }
        cluster.write_settings()?;
        if !cluster.is_running()? {
            cluster.launch()?;
        } else {
            // Its Latchkey was killed (SIGKILL, a crash), so nobody else would stop it: this
            // process does, as if it had started it.
            match cluster.owner() {
                Owner::Running => {}
                Owner::Died(pid) => {
                    log::info!("taking over the private cluster left running by pid {pid}");
                    cluster.own()?;
                }
                Owner::Unrecorded if !cluster.served_by_a_latchkey()? => {
                    log::info!(
                        "taking over the private cluster left running by an earlier Latchkey \
                         or started by hand"
                    );
                    cluster.own()?;
                }
                Owner::Unrecorded => {}
            }
        }
        cluster.ensure_database()?;
        Ok(cluster)
    }

    pub fn database_url(&self) -> SecretString {
        self.url_for(DATABASE_NAME)
    }

    /// A libpq URL that reaches `database` through the private socket (no host, no port).
    pub fn url_for(&self, database: &str) -> SecretString {
        let socket_dir = percent_encoding::percent_encode(
            self.layout.socket_dir.as_os_str().as_encoded_bytes(),
            percent_encoding::NON_ALPHANUMERIC,
        );
        SecretString::from(format!(
            "postgres://{SUPERUSER_ROLE}@/{database}?host={socket_dir}&port={SOCKET_PORT}"
        ))
    }

    /// The directory holding the cluster's data, socket and log.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    pub fn socket_dir(&self) -> &Path {
        &self.layout.socket_dir
    }

    pub fn log_file(&self) -> &Path {
        &self.layout.log
    }

    pub fn stop(&mut self) {
        if !self.started_here {
            return;
        }
        self.started_here = false;
        let data = self.layout.data.clone();
        match self.pg(
            "pg_ctl",
            [
                OsStr::new("stop"),
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-m"),
                OsStr::new("fast"),
                OsStr::new("-w"),
            ],
        ) {
            Ok(_) => {
                std::fs::remove_file(self.layout.root.join(OWNER_FILE)).ok();
                log::info!("stopped the private PostgreSQL cluster");
            }
            Err(e) => log::warn!("stopping the private PostgreSQL cluster: {e}"),
        }
    }

    /// Records this process as the one that stops the cluster.
    fn own(&mut self) -> Result<(), EmbeddedError> {
        // First: should the record fail, the error drops this value, which then stops the
        // cluster rather than leave it running without an owner.
        self.started_here = true;
        let path = self.layout.root.join(OWNER_FILE);
        std::fs::remove_file(&path).ok();
        write_private_file(&path, ProcessId::this().to_string().as_bytes())
            .map_err(|e| step_error(format!("writing {}", path.display()), e))?;
        // Like every file in the cluster's folder, its account's.
        chown(&path, self.account)
    }

    /// Which process will stop the running cluster.
    fn owner(&self) -> Owner {
        match std::fs::read_to_string(self.layout.root.join(OWNER_FILE)) {
            Ok(text) => match ProcessId::parse(&text) {
                Some(owner) if owner.is_running() => Owner::Running,
                Some(owner) => Owner::Died(owner.pid),
                None => Owner::Unrecorded,
            },
            Err(_) => Owner::Unrecorded,
        }
    }

    /// Whether a Latchkey server is connected (an earlier version records no owner, and
    /// must not lose its database to a command run beside it): each holds the session
    /// cache's listener connection, named `latchkey-listener` (`session::cache`).
    fn served_by_a_latchkey(&self) -> Result<bool, EmbeddedError> {
        let mut conn = PgConnection::establish(self.url_for("postgres").expose_secret())
            .map_err(|e| step_error("connecting to the private cluster", e))?;
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'latchkey-listener')",
        ))
        .get_result(&mut conn)
        .map_err(|e| step_error("looking for a Latchkey using the private cluster", e))
    }

    fn init(&self) -> Result<(), EmbeddedError> {
        log::info!(
            "creating a private PostgreSQL cluster in {}",
            self.layout.root.display()
        );
        let data = self.layout.data.clone();
        self.pg(
            "initdb",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-U"),
                OsStr::new(SUPERUSER_ROLE),
                // Safe only because the socket directory admits the owner alone (and root).
                OsStr::new("--auth=trust"),
                OsStr::new("--encoding=UTF8"),
                OsStr::new("--locale=C"),
            ],
        )?;
        let conf = self.layout.data.join("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&conf).map_err(|e| step_error("reading postgresql.conf", e))?;
        text.push_str(&format!("\ninclude_if_exists '{SETTINGS_FILE}'\n"));
        std::fs::write(&conf, text).map_err(|e| step_error("writing postgresql.conf", e))
    }

    /// Written on every start (rather than passed with `pg_ctl -o`, which goes through a
    /// shell) so any path works, and a moved socket directory is picked up.
    fn write_settings(&self) -> Result<(), EmbeddedError> {
        let socket_dir = self.layout.socket_dir.to_string_lossy().replace('\'', "''");
        let settings = format!(
            "# Written by Latchkey at every start: no TCP, one owner-only Unix socket.\n\
             listen_addresses = ''\n\
             port = {SOCKET_PORT}\n\
             unix_socket_directories = '{socket_dir}'\n\
             unix_socket_permissions = 0700\n"
        );
        let path = self.layout.data.join(SETTINGS_FILE);
        std::fs::remove_file(&path).ok();
        write_private_file(&path, settings.as_bytes())
            .map_err(|e| step_error(format!("writing {}", path.display()), e))?;
        chown(&path, self.account)
    }

    /// True when a cluster already runs from this data directory (another Latchkey process,
    /// or one left running). It must be listening where this layout expects it.
    fn is_running(&self) -> Result<bool, EmbeddedError> {
        let data = self.layout.data.clone();
        if self
            .pg(
                "pg_ctl",
                [OsStr::new("status"), OsStr::new("-D"), data.as_os_str()],
            )
            .is_err()
        {
            return Ok(false);
        }
        // postmaster.pid: pid, data dir, start time, port, socket dir, listen address, ...
        let pid_file = std::fs::read_to_string(self.layout.data.join("postmaster.pid"))
            .map_err(|e| step_error("reading postmaster.pid", e))?;
        let socket_dir = pid_file.lines().nth(4).unwrap_or_default();
        if Path::new(socket_dir) != self.layout.socket_dir {
            return Err(step_error(
                "joining the running private cluster",
                format!(
                    "it listens in {socket_dir:?}, not {}; stop it with `pg_ctl stop -D {}`",
                    self.layout.socket_dir.display(),
                    self.layout.data.display()
                ),
            ));
        }
        Ok(true)
    }

    fn launch(&mut self) -> Result<(), EmbeddedError> {
        if !self.layout.log.exists() {
            write_private_file(&self.layout.log, b"")
                .map_err(|e| step_error("creating postgres.log", e))?;
            chown(&self.layout.log, self.account)?;
        }
        let data = self.layout.data.clone();
        let log = self.layout.log.clone();
        self.pg(
            "pg_ctl",
            [
                OsStr::new("start"),
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-w"),
            ],
        )?;
        self.own()?;
        log::info!(
            "started the private PostgreSQL cluster in {} (Unix socket only)",
            self.layout.root.display()
        );
        Ok(())
    }

    fn ensure_database(&self) -> Result<(), EmbeddedError> {
        let mut conn = PgConnection::establish(self.url_for("postgres").expose_secret())
            .map_err(|e| step_error("connecting to the private cluster", e))?;
        let exists: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
            "EXISTS (SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}')"
        )))
        .get_result(&mut conn)
        .map_err(|e| step_error("looking for the latchkey database", e))?;
        if !exists {
            diesel::sql_query(format!("CREATE DATABASE {DATABASE_NAME}"))
                .execute(&mut conn)
                .map_err(|e| step_error("creating the latchkey database", e))?;
        }
        Ok(())
    }

    fn pg<I, S>(&self, program: &str, args: I) -> Result<Output, EmbeddedError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let binary = self.bin_dir.join(program);
        let mut command = match self.account.switch_to {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        // PostgreSQL's programs return to their working directory, which the cluster's
        // account may not be allowed to enter (the checkout, as root): run them from its own.
        command
            .args(args)
            .current_dir(&self.layout.root)
            .stdin(std::process::Stdio::null());
        let output = command.output().map_err(|e| step_error(program, e))?;
        if output.status.success() {
            Ok(output)
        } else {
            let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_string();
            if detail.is_empty() {
                detail = String::from_utf8_lossy(&output.stdout).trim().to_string();
            }
            Err(step_error(program, detail))
        }
    }
}

/// Who stops a running cluster, as its owner file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The Latchkey that started (or took over) it still runs: this one, or another serving
    /// from the same data dir.
    Running,
    /// It was started by this pid, which is gone.
    Died(u32),
    /// No owner recorded: an earlier version started it, or a person did.
    Unrecorded,
}

/// A process as the owner file records it: a pid alone could name another program by the
/// time it is read (pids are reused), so the process's start time goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessId {
    pid: u32,
    /// Clock ticks after boot (`/proc/<pid>/stat`, field 22); `None` where it cannot be read.
    started: Option<u64>,
}

impl ProcessId {
    fn this() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            started: start_time(pid),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let pid = words.next()?.parse().ok()?;
        let started = match words.next() {
            Some(word) => Some(word.parse().ok()?),
            None => None,
        };
        Some(Self { pid, started })
    }

    fn is_running(self) -> bool {
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
        let exists = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        exists && (self.started.is_none() || start_time(self.pid) == self.started)
    }
}

impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.started {
            Some(started) => write!(f, "{} {started}", self.pid),
            None => write!(f, "{}", self.pid),
        }
    }
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn cluster_account() -> Result<Account, EmbeddedError> {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid != 0 {
        return Ok(Account {
            uid,
            gid,
            switch_to: None,
        });
    }
    let entry = account::ensure()?;
    Ok(Account {
        uid: entry.uid,
        gid: entry.gid,
        switch_to: Some(account::NAME),
    })
}

/// Creates (or checks) the cluster's directories, each 0700 and owned by `account`.
fn prepare_layout(
    data_dir: &Path,
    account: Account,
    bin_dir: &Path,
) -> Result<Layout, EmbeddedError> {
    let root = match account.switch_to {
        None => data_dir.join("cluster"),
        Some(_) => Path::new(ROOT_CLUSTERS).join(cluster_id(data_dir)?),
    };
    if account.switch_to.is_some() {
        std::fs::create_dir_all(ROOT_CLUSTERS)
            .map_err(|e| step_error(format!("creating {ROOT_CLUSTERS}"), e))?;
        refuse_old_cluster(&root, data_dir, bin_dir)?;
    }
    owned_private_dir(&root, account)?;
    let data = root.join("data");
    let mut socket_dir = root.join("socket");
    if socket_dir.as_os_str().len() > MAX_SOCKET_DIR_LEN {
        // A deep checkout: the socket path would not fit in `sun_path`. A short private
        // directory under /tmp, checked below to belong to the cluster's account alone.
        let digest = crate::crypto::sha256(root.as_os_str().as_encoded_bytes());
        socket_dir = std::env::temp_dir().join(format!(
            "latchkey-{}-{}",
            account.uid,
            hex::encode(&digest[..8])
        ));
    }
    owned_private_dir(&socket_dir, account)?;
    let log = root.join("postgres.log");
    Ok(Layout {
        root,
        data,
        socket_dir,
        log,
    })
}

/// Refuses a cluster that an earlier Latchkey made as `postgres` (see
/// [`EmbeddedError::OldCluster`]); any other stranger's folder is refused by
/// [`owned_private_dir`].
fn refuse_old_cluster(root: &Path, data_dir: &Path, bin_dir: &Path) -> Result<(), EmbeddedError> {
    let owner = match std::fs::symlink_metadata(root) {
        Ok(meta) => meta.uid(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(step_error(format!("checking {}", root.display()), e)),
    };
    match account::lookup(OLD_ROOT_ACCOUNT)? {
        Some(old) if old.uid == owner => Err(EmbeddedError::OldCluster {
            root: root.display().to_string(),
            pg_ctl: bin_dir.join("pg_ctl").display().to_string(),
            cluster_id: data_dir.join("cluster-id").display().to_string(),
        }),
        _ => Ok(()),
    }
}

/// The random name of root's cluster for this data dir, made on first use.
fn cluster_id(data_dir: &Path) -> Result<String, EmbeddedError> {
    let path = data_dir.join("cluster-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            let valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                return Err(step_error(
                    format!("reading {}", path.display()),
                    "not a cluster id; delete the file to make a new cluster",
                ));
            }
            Ok(id.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = hex::encode(crate::crypto::random_bytes::<16>());
            write_private_file(&path, id.as_bytes())
                .map_err(|e| step_error(format!("writing {}", path.display()), e))?;
            Ok(id)
        }
        Err(e) => Err(step_error(format!("reading {}", path.display()), e)),
    }
}

/// Makes `dir` a 0700 directory of `account`, or refuses one that someone else controls.
fn owned_private_dir(dir: &Path, account: Account) -> Result<(), EmbeddedError> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            chown(dir, account)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(step_error(format!("creating {}", dir.display()), e)),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| step_error(format!("checking {}", dir.display()), e))?;
    if !meta.is_dir() || meta.uid() != account.uid {
        return Err(step_error(
            format!("checking {}", dir.display()),
            format!(
                "it must be a directory owned by uid {}; remove it and start again",
                account.uid
            ),
        ));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| step_error(format!("chmod 0700 {}", dir.display()), e))
}

fn find_bin_dir() -> Option<PathBuf> {
    find_bin_dir_in(
        std::env::var_os("PATH").as_deref(),
        Path::new("/usr/lib/postgresql"),
    )
}

/// `initdb` and `pg_ctl` on the PATH, or the newest Debian-style install under `versions_root`.
fn find_bin_dir_in(path: Option<&OsStr>, versions_root: &Path) -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = path {
        if let Some(dir) = std::env::split_paths(&path).find(|dir| has_both(dir)) {
            // Resolve symlinks so sibling binaries (postgres itself) are found by pg_ctl.
            let initdb = dir.join("initdb").canonicalize().ok()?;
            return initdb.parent().map(Path::to_path_buf);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(versions_root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn chown(path: &Path, account: Account) -> Result<(), EmbeddedError> {
    if account.switch_to.is_none() {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
        .map_err(|e| step_error(format!("chown {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_binaries_anywhere_is_reported_with_what_to_do() {
        let empty = std::env::temp_dir();
        assert_eq!(
            find_bin_dir_in(Some(OsStr::new("/nonexistent")), &empty.join("nothing")),
            None
        );
        let message = EmbeddedError::NotInstalled.to_string();
        assert!(
            message.contains("apt-get install -y postgresql"),
            "{message}"
        );
        assert!(message.contains("DATABASE_URL"), "{message}");
    }

    #[test]
    fn an_owner_is_running_only_while_its_process_is() {
        let this = ProcessId::this();
        assert!(this.started.is_some(), "Linux has /proc");
        assert_eq!(ProcessId::parse(&this.to_string()), Some(this));
        assert!(this.is_running());
        let reused = ProcessId {
            started: this.started.map(|t| t + 1),
            ..this
        };
        assert!(!reused.is_running(), "the same pid, another process");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!ProcessId { pid, started: None }.is_running());
        assert_eq!(ProcessId::parse("12 x"), None);
        assert_eq!(ProcessId::parse(""), None);
    }

    #[test]
    fn the_newest_installed_version_is_chosen() {
        let root = std::env::temp_dir().join(format!(
            "latchkey-pgroot-{}",
            hex::encode(crate::crypto::random_bytes::<6>())
        ));
        for version in ["9", "15", "13"] {
            let bin = root.join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("initdb"), b"").unwrap();
            std::fs::write(bin.join("pg_ctl"), b"").unwrap();
        }
        assert_eq!(
            find_bin_dir_in(None, &root),
            Some(root.join("15").join("bin"))
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
