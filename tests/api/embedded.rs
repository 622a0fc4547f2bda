//! The private cluster that `DATABASE_URL` unset gives: it starts wherever the checkout is,
//! listens on no TCP port, and no other local account can connect to it or read its files.

use std::os::unix::fs::PermissionsExt as _;
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
