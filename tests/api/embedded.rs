use diesel::{Connection as _, PgConnection, RunQueryDsl as _};
use latchkey::db::embedded::EmbeddedPostgres;

#[test]
fn a_private_cluster_is_created_reused_and_stopped() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "embedded-{}",
        hex::encode(latchkey::crypto::random_bytes::<6>())
    ));
    let url = {
        let cluster = EmbeddedPostgres::start(&dir).expect("starting the private cluster");
        let url = cluster.database_url();
        let mut conn = PgConnection::establish(url.expose()).expect("the latchkey database exists");
        diesel::sql_query("CREATE TABLE kept (x int)")
            .execute(&mut conn)
            .unwrap();
        url
    };
    // Dropped: the cluster this process started is stopped.
    assert!(PgConnection::establish(url.expose()).is_err());

    let mut cluster = EmbeddedPostgres::start(&dir).expect("starting it again");
    let mut conn = PgConnection::establish(cluster.database_url().expose()).unwrap();
    diesel::sql_query("SELECT x FROM kept")
        .execute(&mut conn)
        .expect("the data survived a restart");
    drop(conn);
    cluster.stop();
    std::fs::remove_dir_all(&dir).ok();
}
