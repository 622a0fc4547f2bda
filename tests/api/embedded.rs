//! The private cluster that `DATABASE_URL` unset gives: it starts wherever the checkout is,
//! listens on no TCP port, and no other local account can connect to it or read its files.
//! As root it runs as the system account `latchkey`, which Latchkey makes on first use.
//!
//! Switching accounts needs root, so the parts that do are skipped (with a line saying so)
//! when the tests run as another user; CI runs them as root.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use latchkey::db::embedded::EmbeddedPostgres;
use secrecy::ExposeSecret as _;

/// A folder of mode 0700 with a space in its name, as a home directory or `mktemp -d` is,
/// holding `checkout with spaces/.latchkey`.
fn private_home() -> (PathBuf, PathBuf) {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "home {}",
        hex::encode(latchkey::crypto::random_bytes::<6>())
    ));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data_dir = home.join("checkout with spaces").join(".latchkey");
    (home, data_dir)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_private_cluster_starts_in_a_0700_folder_and_is_reused_and_stopped() {
    let (home, dir) = private_home();
    let url = {
        let cluster = EmbeddedPostgres::start(&dir).expect("starting the private cluster");
        let url = cluster.database_url();
        let mut conn =
            PgConnection::establish(url.expose_secret()).expect("the latchkey database exists");
        diesel::sql_query("CREATE TABLE kept (x int)")
            .execute(&mut conn)
            .unwrap();
        url
    };
    // Dropped: the cluster this process started is stopped.
    assert!(PgConnection::establish(url.expose_secret()).is_err());
    assert_eq!(mode(&home), 0o700, "the home folder was not loosened");

    let mut cluster = EmbeddedPostgres::start(&dir).expect("starting it again");
    let mut conn = PgConnection::establish(cluster.database_url().expose_secret()).unwrap();
    diesel::sql_query("SELECT x FROM kept")
        .execute(&mut conn)
        .expect("the data survived a restart");
    drop(conn);
    let root = cluster.root().to_path_buf();
    cluster.stop();
    std::fs::remove_dir_all(&home).ok();
    if is_root() {
        std::fs::remove_dir_all(root).ok();
    }
}

#[derive(diesel::QueryableByName)]
struct Setting {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

fn show(conn: &mut PgConnection, name: &str) -> String {
    diesel::sql_query(format!("SELECT current_setting('{name}') AS value"))
        .get_result::<Setting>(conn)
        .unwrap()
        .value
}

/// `psql -c 'SELECT 1'` through the cluster's socket, as `user` (or as this process).
fn psql_as(user: Option<&str>, url: &str) -> std::process::Output {
    let mut command = match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--", "psql"]);
            c
        }
        None => Command::new("psql"),
    };
    command
        .args(["-X", "-At", "-c", "SELECT 1", url])
        .current_dir("/")
        .output()
        .expect("running psql")
}

fn cat_as(user: &str, path: &Path) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", user, "--", "cat"])
        .arg(path)
        .current_dir("/")
        .output()
        .expect("running cat")
}

#[test]
fn no_other_account_can_connect_to_the_private_cluster_or_read_its_files() {
    let (home, dir) = private_home();
    let mut cluster = EmbeddedPostgres::start(&dir).expect("starting the private cluster");
    let url = cluster.url_for("postgres");
    let mut conn = PgConnection::establish(url.expose_secret()).unwrap();
    assert_eq!(show(&mut conn, "listen_addresses"), "", "no TCP listener");
    assert_eq!(show(&mut conn, "unix_socket_permissions"), "0700");
    let pid_file = std::fs::read_to_string(cluster.root().join("data/postmaster.pid")).unwrap();
    assert_eq!(
        pid_file.lines().nth(5),
        Some(""),
        "postmaster.pid lists no TCP address"
    );
    drop(conn);

    for path in [cluster.root(), cluster.socket_dir()] {
        assert_eq!(mode(path), 0o700, "{} is its owner's alone", path.display());
    }
    assert_eq!(mode(cluster.log_file()), 0o600);
    assert_eq!(mode(&dir), 0o700, "the data dir is its owner's alone");

    // This process (the owner, or root) gets in, so the refusals below are not an accident
    // of a broken command line.
    let own = psql_as(None, url.expose_secret());
    assert!(own.status.success(), "{own:?}");
    let log = std::fs::read_to_string(cluster.log_file()).unwrap();
    assert!(!log.is_empty());

    if is_root() {
        // The system's `postgres` account is a stranger too: the cluster is not its.
        let postgres = psql_as(Some("postgres"), url.expose_secret());
        assert!(
            !postgres.status.success(),
            "postgres connected: {postgres:?}"
        );
        let stranger = psql_as(Some("nobody"), url.expose_secret());
        assert!(!stranger.status.success(), "nobody connected: {stranger:?}");
        let said = String::from_utf8_lossy(&stranger.stderr);
        assert!(said.contains("Permission denied"), "{said}");
        for path in [
            cluster.log_file().to_path_buf(),
            cluster.root().join("data/PG_VERSION"),
        ] {
            let read = cat_as("nobody", &path);
            assert!(!read.status.success(), "nobody read {}", path.display());
        }
    } else {
        eprintln!("not root: cannot switch to another account here (CI runs this as root)");
    }

    let root = cluster.root().to_path_buf();
    cluster.stop();
    std::fs::remove_dir_all(&home).ok();
    if is_root() {
        std::fs::remove_dir_all(root).ok();
    }
}

/// The fields of `name`'s line in the password (or group) database, as `getent` prints them.
fn getent(database: &str, name: &str) -> Vec<String> {
    let output = Command::new("getent")
        .args([database, name])
        .output()
        .expect("running getent");
    assert!(output.status.success(), "no {database} entry {name}");
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .split(':')
        .map(str::to_string)
        .collect()
}

/// Every file and folder under `dir` (itself included), symlinks not followed. Files that
/// the running cluster removes meanwhile are skipped.
fn walk(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut found = vec![(dir.to_path_buf(), std::fs::symlink_metadata(dir).unwrap())];
    let mut index = 0;
    while index < found.len() {
        let (path, meta) = found[index].clone();
        index += 1;
        if !meta.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&path).unwrap().filter_map(Result::ok) {
            if let Ok(meta) = std::fs::symlink_metadata(entry.path()) {
                found.push((entry.path(), meta));
            }
        }
    }
    found
}

#[test]
fn as_root_the_cluster_runs_as_latchkeys_own_account_which_postgres_cannot_reach() {
    if !is_root() {
        eprintln!(
            "not root: the cluster runs as this user, no account is made (CI runs this as root)"
        );
        return;
    }
    let (home, dir) = private_home();
    let mut cluster = EmbeddedPostgres::start(&dir).expect("starting the private cluster");
    let url = cluster.url_for("postgres");

    // The account: a system one, its own group, no login shell, no home.
    let account = getent("passwd", "latchkey");
    let (uid, gid) = (
        account[2].parse::<u32>().unwrap(),
        account[3].parse::<u32>().unwrap(),
    );
    assert!((1..1000).contains(&uid), "a system uid: {account:?}");
    assert_eq!(
        account[6], "/usr/sbin/nologin",
        "no login shell: {account:?}"
    );
    assert_eq!(account[5], "/nonexistent", "no home: {account:?}");
    assert!(!Path::new(&account[5]).exists(), "the home does not exist");
    let group = getent("group", "latchkey");
    assert_eq!(group[2].parse::<u32>().unwrap(), gid, "its own group");
    assert_eq!(group[3], "", "nobody else is in that group");
    let postgres_uid: u32 = getent("passwd", "postgres")[2].parse().unwrap();
    assert_ne!(uid, postgres_uid);

    // Its files: the account's alone.
    for path in [
        cluster.root().to_path_buf(),
        cluster.root().join("data"),
        cluster.socket_dir().to_path_buf(),
    ] {
        assert_eq!(mode(&path), 0o700, "{}", path.display());
    }
    for (path, meta) in walk(cluster.root())
        .into_iter()
        .chain(walk(cluster.socket_dir()))
    {
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, gid),
            "{} belongs to latchkey",
            path.display()
        );
        assert_eq!(
            meta.mode() & 0o077,
            0,
            "{} is for its owner only",
            path.display()
        );
    }

    // Latchkey's own connection works, so the refusals below are not a broken command line.
    let mut conn = PgConnection::establish(url.expose_secret()).expect("Latchkey connects");
    diesel::sql_query("SELECT 1").execute(&mut conn).unwrap();
    let own = psql_as(None, url.expose_secret());
    assert!(own.status.success(), "{own:?}");

    // The `postgres` account (what a superuser of the system's server runs programs as) is
    // kept out at the socket directory, whichever way it names the socket.
    let by_url = psql_as(Some("postgres"), url.expose_secret());
    let by_host = Command::new("runuser")
        .args(["-u", "postgres", "--", "psql", "-X", "-At", "-h"])
        .arg(cluster.socket_dir())
        .args([
            "-p", "5432", "-U", "postgres", "-d", "latchkey", "-c", "SELECT 1",
        ])
        .current_dir("/")
        .output()
        .expect("running psql");
    for attempt in [by_url, by_host] {
        assert!(!attempt.status.success(), "postgres connected: {attempt:?}");
        let said = String::from_utf8_lossy(&attempt.stderr);
        assert!(said.contains("Permission denied"), "{said}");
    }
    let read = cat_as("postgres", &cluster.root().join("data/PG_VERSION"));
    assert!(!read.status.success(), "postgres read the cluster's files");

    drop(conn);
    let root = cluster.root().to_path_buf();
    cluster.stop();
    std::fs::remove_dir_all(&home).ok();
    std::fs::remove_dir_all(root).ok();
}

#[test]
fn as_root_a_cluster_an_earlier_latchkey_ran_as_postgres_is_refused_and_left_alone() {
    if !is_root() {
        eprintln!(
            "not root: clusters are never the postgres account's here (CI runs this as root)"
        );
        return;
    }
    let (home, dir) = private_home();
    std::fs::create_dir_all(&dir).unwrap();
    let id = hex::encode(latchkey::crypto::random_bytes::<16>());
    std::fs::write(dir.join("cluster-id"), &id).unwrap();
    // What an earlier version left: the cluster's folder and files, all `postgres`'s.
    let old = Path::new("/var/lib/latchkey/clusters").join(&id);
    std::fs::create_dir_all(old.join("data")).unwrap();
    std::fs::write(old.join("data/PG_VERSION"), "15\n").unwrap();
    let postgres = getent("passwd", "postgres");
    let (uid, gid) = (postgres[2].parse().unwrap(), postgres[3].parse().unwrap());
    for (path, _) in walk(&old) {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).unwrap();
    }

    let refused = EmbeddedPostgres::start(&dir).unwrap_err().to_string();
    for what in [
        old.display().to_string(),
        "`postgres`".to_string(),
        "chown -R latchkey:latchkey".to_string(),
        dir.join("cluster-id").display().to_string(),
    ] {
        assert!(refused.contains(&what), "{what} missing from: {refused}");
    }
    for (path, meta) in walk(&old) {
        assert_eq!(meta.uid(), uid, "{} was left alone", path.display());
    }

    std::fs::remove_dir_all(&home).ok();
    std::fs::remove_dir_all(&old).ok();
}
