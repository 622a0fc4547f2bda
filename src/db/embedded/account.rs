//! The system account that runs root's private cluster: `latchkey`, made on first use.
//!
//! PostgreSQL refuses to run as root, so a root Latchkey needs another account. `postgres` is
//! not a safe one: on many machines it also runs the system's PostgreSQL server, whose
//! superusers run programs as `postgres` (`COPY … TO PROGRAM`) and could then walk into the
//! private cluster's socket directory, where trust authentication lets them in. An account of
//! Latchkey's own, with its own group, no login shell and no home, is shared with nothing.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{step_error, EmbeddedError};

/// The account (and its group) that owns and runs root's private clusters.
pub const NAME: &str = "latchkey";
/// Held while the account is looked up and made, so two root starts at once make it once.
const LOCK_FILE: &str = "/var/lib/latchkey/account.lock";
/// Shells that refuse a login; the account is not a person's if it has one of these.
const NOLOGIN_SHELLS: [&str; 4] = [
    "/usr/sbin/nologin",
    "/sbin/nologin",
    "/bin/false",
    "/usr/bin/false",
];
/// Debian's line between system accounts and people (`UID_MIN` in /etc/login.defs).
const FIRST_PERSON_UID: libc::uid_t = 1000;
/// `useradd --home-dir`: a path that does not exist, as Debian's system accounts have.
const NO_HOME: &str = "/nonexistent";

/// What the cluster needs to know of an account from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// The `latchkey` account: made on first use, or an existing one checked to be a system
/// account that nobody logs into.
pub fn ensure() -> Result<Entry, EmbeddedError> {
    if let Some(entry) = lookup(NAME)? {
        return checked(entry);
    }
    let lock_path = Path::new(LOCK_FILE);
    if let Some(parent) = lock_path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| step_error(format!("creating {}", parent.display()), e))?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(lock_path)
        .map_err(|e| step_error(format!("opening {LOCK_FILE}"), e))?;
    // SAFETY: flock on a descriptor that `lock` owns until the end of this function; the
    // lock goes with the descriptor when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(step_error(
            format!("locking {LOCK_FILE}"),
            std::io::Error::last_os_error(),
        ));
    }
    // Another Latchkey may have made it while this one waited for the lock.
    if let Some(entry) = lookup(NAME)? {
        return checked(entry);
    }
    create()?;
    let entry = lookup(NAME)?.ok_or_else(|| {
        step_error(
            format!("creating the `{NAME}` account"),
            "useradd succeeded but the account cannot be found",
        )
    })?;
    log::info!(
        "created the system account `{NAME}` (uid {}, no login shell, no home) to run the \
         private PostgreSQL cluster",
        entry.uid
    );
    drop(lock);
    checked(entry)
}

fn create() -> Result<(), EmbeddedError> {
    let step = || format!("creating the `{NAME}` account");
    let shell = NOLOGIN_SHELLS
        .iter()
        .find(|shell| Path::new(shell).is_file())
        .unwrap_or(&"/bin/false");
    // root's PATH usually has /usr/sbin, but `sudo`-less shells and services may not.
    let useradd = ["/usr/sbin/useradd", "/sbin/useradd"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
        .unwrap_or("useradd");
    let output = Command::new(useradd)
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            NO_HOME,
            "--shell",
            shell,
            "--comment",
            "Latchkey private PostgreSQL",
            NAME,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            step_error(
                step(),
                format!(
                    "{useradd}: {e}. Create a system account `{NAME}` with its own group and no \
                     login shell, run Latchkey as another user, or set DATABASE_URL"
                ),
            )
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(step_error(
        step(),
        format!(
            "{useradd}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    ))
}

/// The account as it is, if it can run the cluster: a system account (not root, below the
/// first person's uid, not in root's group) whose shell refuses logins.
fn checked(entry: Entry) -> Result<Entry, EmbeddedError> {
    let system = entry.uid != 0 && entry.uid < FIRST_PERSON_UID && entry.gid != 0;
    let no_login = NOLOGIN_SHELLS
        .iter()
        .any(|shell| entry.shell == Path::new(shell));
    if system && no_login {
        return Ok(entry);
    }
    Err(EmbeddedError::AccountNotOurs {
        uid: entry.uid,
        gid: entry.gid,
        shell: entry.shell.display().to_string(),
    })
}

/// The password database's entry for `name`, through NSS like every other tool.
pub fn lookup(name: &str) -> Result<Option<Entry>, EmbeddedError> {
    let step = || format!("looking up the `{name}` account");
    let c_name = CString::new(name).map_err(|e| step_error(step(), e))?;
    let mut buffer: Vec<libc::c_char> = vec![0; 4096];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids); getpwnam_r fills it
        // with pointers into `buffer`, which outlives every read below.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the length given; `found` is set to `&entry` or
        // null.
        let status = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut found,
            )
        };
        if status == libc::ERANGE && buffer.len() < 1 << 20 {
            buffer.resize(buffer.len() * 2, 0);
            continue;
        }
        if status != 0 {
            return Err(step_error(
                step(),
                std::io::Error::from_raw_os_error(status),
            ));
        }
        if found.is_null() {
            return Ok(None);
        }
        let path = |field: *const libc::c_char| {
            if field.is_null() {
                return PathBuf::new();
            }
            // SAFETY: a non-null field of a found entry is a NUL-terminated string in `buffer`.
            let bytes = unsafe { CStr::from_ptr(field) }.to_bytes();
            PathBuf::from(OsStr::from_bytes(bytes))
        };
        return Ok(Some(Entry {
            uid: entry.pw_uid,
            gid: entry.pw_gid,
            home: path(entry.pw_dir),
            shell: path(entry.pw_shell),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: libc::uid_t, gid: libc::gid_t, shell: &str) -> Entry {
        Entry {
            uid,
            gid,
            home: PathBuf::from(NO_HOME),
            shell: PathBuf::from(shell),
        }
    }

    #[test]
    fn a_system_account_without_a_login_shell_is_used() {
        for shell in NOLOGIN_SHELLS {
            assert!(checked(entry(998, 997, shell)).is_ok(), "{shell}");
        }
    }

    #[test]
    fn an_account_that_looks_like_a_persons_is_refused_with_what_to_do() {
        for (uid, gid, shell) in [
            (1000, 1000, "/usr/sbin/nologin"),
            (998, 997, "/bin/bash"),
            (0, 0, "/usr/sbin/nologin"),
            (998, 0, "/usr/sbin/nologin"),
        ] {
            let refused = checked(entry(uid, gid, shell)).unwrap_err().to_string();
            assert!(refused.contains("`latchkey`"), "{refused}");
            assert!(refused.contains("DATABASE_URL"), "{refused}");
        }
    }

    #[test]
    fn root_is_found_and_a_missing_account_is_none() {
        let root = lookup("root").unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup("no-such-account-latchkey").unwrap(), None);
    }
}
