//! The zero-configuration database: a private PostgreSQL cluster under the data dir.
//!
//! Used when `DATABASE_URL` is unset (and by the tests when no server answers on
//! 127.0.0.1:5432). The cluster listens on loopback TCP only, on a free port chosen at start.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use diesel::{Connection as _, PgConnection, RunQueryDsl as _};

use crate::secret::Secret;

/// The account PostgreSQL runs as when Latchkey itself runs as root (PostgreSQL refuses root).
const UNPRIVILEGED_USER: &str = "postgres";
const DATABASE_NAME: &str = "latchkey";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "DATABASE_URL is not set and no PostgreSQL server binaries (initdb, pg_ctl) were found. \
         Install them (Debian/Ubuntu: `apt-get install -y postgresql`) or set DATABASE_URL."
    )]
    NotInstalled,
    #[error(
        "PostgreSQL refuses to run as root and there is no `{UNPRIVILEGED_USER}` account to run \
         it as. Create one (`useradd -r postgres`), run Latchkey as another user, or set DATABASE_URL."
    )]
    NoUnprivilegedUser,
    #[error("{step} failed: {detail}")]
    Step { step: String, detail: String },
}

fn step_error(step: impl Into<String>, detail: impl Into<String>) -> EmbeddedError {
    EmbeddedError::Step {
        step: step.into(),
        detail: detail.into(),
    }
}

/// A running private cluster. It is stopped by [`EmbeddedPostgres::stop`] (or on drop)
/// only if this process started it.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    cluster_dir: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
    started_here: bool,
}

impl EmbeddedPostgres {
    /// Creates the cluster on first use, starts it (or joins it if it is already running),
    /// and makes sure the `latchkey` database exists.
    pub fn start(data_dir: &Path) -> Result<Self, EmbeddedError> {
        let bin_dir = find_bin_dir().ok_or(EmbeddedError::NotInstalled)?;
        let run_as = if is_root() {
            let user = user_exists(UNPRIVILEGED_USER)
                .then_some(UNPRIVILEGED_USER)
                .ok_or(EmbeddedError::NoUnprivilegedUser)?;
            Some(user)
        } else {
            None
        };
        std::fs::create_dir_all(data_dir)
            .map_err(|e| step_error(format!("creating {}", data_dir.display()), e.to_string()))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(|e| step_error(format!("resolving {}", data_dir.display()), e.to_string()))?;
        let cluster_dir = data_dir.join("postgres");

        let mut cluster = Self {
            bin_dir,
            cluster_dir,
            port: 0,
            run_as,
            started_here: false,
        };
        if !cluster.cluster_dir.join("PG_VERSION").exists() {
            cluster.init()?;
        }
        match cluster.running_port() {
            Some(port) => cluster.port = port,
            None => cluster.launch(&data_dir)?,
        }
        cluster.ensure_database()?;
        Ok(cluster)
    }

    pub fn database_url(&self) -> Secret<String> {
        self.url_for(DATABASE_NAME)
    }

    pub fn url_for(&self, database: &str) -> Secret<String> {
        Secret::new(format!(
            "postgres://{UNPRIVILEGED_USER}@127.0.0.1:{}/{database}",
            self.port
        ))
    }

    pub fn stop(&mut self) {
        if !self.started_here {
            return;
        }
        self.started_here = false;
        let dir = self.cluster_dir.clone();
        match self.pg(
            "pg_ctl",
            [
                OsStr::new("stop"),
                OsStr::new("-D"),
                dir.as_os_str(),
                OsStr::new("-m"),
                OsStr::new("fast"),
                OsStr::new("-w"),
            ],
        ) {
            Ok(_) => log::info!("stopped the private PostgreSQL cluster"),
            Err(e) => log::warn!("stopping the private PostgreSQL cluster: {e}"),
        }
    }

    fn init(&self) -> Result<(), EmbeddedError> {
        std::fs::create_dir_all(&self.cluster_dir)
            .map_err(|e| step_error("creating the cluster directory", e.to_string()))?;
        if self.run_as.is_some() {
            chown_to(&self.cluster_dir, UNPRIVILEGED_USER)?;
        }
        log::info!(
            "creating a private PostgreSQL cluster in {}",
            self.cluster_dir.display()
        );
        let dir = self.cluster_dir.clone();
        self.pg(
            "initdb",
            [
                OsStr::new("-D"),
                dir.as_os_str(),
                OsStr::new("-U"),
                OsStr::new(UNPRIVILEGED_USER),
                OsStr::new("--auth=trust"),
                OsStr::new("--encoding=UTF8"),
                OsStr::new("--locale=C"),
            ],
        )?;
        Ok(())
    }

    /// The port of a cluster that is already running from this directory, if any.
    fn running_port(&self) -> Option<u16> {
        let dir = self.cluster_dir.clone();
        self.pg(
            "pg_ctl",
            [OsStr::new("status"), OsStr::new("-D"), dir.as_os_str()],
        )
        .ok()?;
        // postmaster.pid: pid, data dir, start time, port, ...
        let pid_file = std::fs::read_to_string(self.cluster_dir.join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    fn launch(&mut self, data_dir: &Path) -> Result<(), EmbeddedError> {
        self.port = free_port()?;
        let log_file = data_dir.join("postgres.log");
        if self.run_as.is_some() && !log_file.exists() {
            std::fs::write(&log_file, b"")
                .map_err(|e| step_error("creating postgres.log", e.to_string()))?;
            chown_to(&log_file, UNPRIVILEGED_USER)?;
        }
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
            self.port
        );
        let dir = self.cluster_dir.clone();
        self.pg(
            "pg_ctl",
            [
                OsStr::new("start"),
                OsStr::new("-D"),
                dir.as_os_str(),
                OsStr::new("-l"),
                log_file.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("-o"),
                OsStr::new(&options),
            ],
        )?;
        self.started_here = true;
        log::info!(
            "started the private PostgreSQL cluster on 127.0.0.1:{}",
            self.port
        );
        Ok(())
    }

    fn ensure_database(&self) -> Result<(), EmbeddedError> {
        let mut conn = PgConnection::establish(self.url_for("postgres").expose())
            .map_err(|e| step_error("connecting to the private cluster", e.to_string()))?;
        let exists: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
            "EXISTS (SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}')"
        )))
        .get_result(&mut conn)
        .map_err(|e| step_error("looking for the latchkey database", e.to_string()))?;
        if !exists {
            diesel::sql_query(format!("CREATE DATABASE {DATABASE_NAME}"))
                .execute(&mut conn)
                .map_err(|e| step_error("creating the latchkey database", e.to_string()))?;
        }
        Ok(())
    }

    fn pg<I, S>(&self, program: &str, args: I) -> Result<Output, EmbeddedError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let binary = self.bin_dir.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        command.args(args).stdin(std::process::Stdio::null());
        let output = command
            .output()
            .map_err(|e| step_error(program, e.to_string()))?;
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

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
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

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn user_ids(name: &str) -> Option<(libc::uid_t, libc::gid_t)> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns null or a pointer to static storage valid until the next
    // call; both fields are copied out at once.
    unsafe {
        let entry = libc::getpwnam(name.as_ptr());
        (!entry.is_null()).then(|| ((*entry).pw_uid, (*entry).pw_gid))
    }
}

fn user_exists(name: &str) -> bool {
    user_ids(name).is_some()
}

fn chown_to(path: &Path, user: &str) -> Result<(), EmbeddedError> {
    let (uid, gid) = user_ids(user).ok_or(EmbeddedError::NoUnprivilegedUser)?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| step_error(format!("chown {} to {user}", path.display()), e.to_string()))
}

fn free_port() -> Result<u16, EmbeddedError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| step_error("finding a free port", e.to_string()))
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
