use diesel::RunQueryDsl as _;
use latchkey::db::migrations::{revert_all, revert_last, run_pending};

use crate::helpers::TestDatabase;

#[derive(diesel::QueryableByName, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    #[diesel(sql_type = diesel::sql_types::Text)]
    table_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    column_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    data_type: String,
}

fn public_columns(conn: &mut diesel::PgConnection) -> Vec<Column> {
    diesel::sql_query(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations' \
         ORDER BY 1, 2",
    )
    .load(conn)
    .unwrap()
}

#[test]
fn every_migration_runs_up_down_and_up_again() {
    let database = TestDatabase::empty();
    let mut conn = database.connect();
    let applied = run_pending(&mut conn).unwrap();
    let count = diesel_migrations::MigrationHarness::applied_migrations(&mut conn)
        .unwrap()
        .len();
    assert_eq!(applied.len(), count);
    assert!(count >= 2, "expected the schema's migrations, got {count}");
    let schema_after_first_run = public_columns(&mut conn);
    assert!(!schema_after_first_run.is_empty());

    // Down one at a time, so every down.sql runs on the schema it was written for.
    for _ in 0..count {
        assert!(revert_last(&mut conn).unwrap().is_some());
    }
    assert_eq!(revert_last(&mut conn).unwrap(), None);
    assert!(
        public_columns(&mut conn).is_empty(),
        "down.sql left tables behind"
    );

    run_pending(&mut conn).unwrap();
    assert_eq!(public_columns(&mut conn), schema_after_first_run);
}

#[test]
fn revert_all_leaves_an_empty_schema() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    assert!(revert_all(&mut conn).unwrap() >= 2);
    assert!(public_columns(&mut conn).is_empty());
}

#[derive(diesel::QueryableByName)]
struct KeyedEmail {
    #[diesel(sql_type = diesel::sql_types::Text)]
    email: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    mailbox_key: String,
}

#[test]
fn the_mailbox_key_backfill_is_the_rust_rule() {
    use latchkey::domain::email_address::EmailAddress;

    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    // Back to the schema before `mailbox_key` (and whatever came after it).
    while !revert_last(&mut conn)
        .unwrap()
        .expect("the mailbox_key migration is applied")
        .contains("20261202000003")
    {}
    let spellings = [
        "carol@corp.test",
        "Carol@corp.test",
        "CAROL+y@corp.test",
        "carol+x+z@corp.test",
        "+tag@corp.test",
        r#""Carol+q"@corp.test"#,
        r#""a\"b"@corp.test"#,
        r#""at@sign"@corp.test"#,
        "Ann@xn--exmple-cua.org",
    ];
    for spelling in spellings {
        let canonical = EmailAddress::parse(spelling).unwrap();
        diesel::sql_query("INSERT INTO members (email, role) VALUES ($1, 'member')")
            .bind::<diesel::sql_types::Text, _>(canonical.as_str())
            .execute(&mut conn)
            .unwrap();
    }
    run_pending(&mut conn).unwrap();

    let rows: Vec<KeyedEmail> =
        diesel::sql_query("SELECT email, mailbox_key FROM members ORDER BY id")
            .load(&mut conn)
            .unwrap();
    assert_eq!(rows.len(), spellings.len());
    for row in rows {
        let expected = EmailAddress::parse(&row.email).unwrap().mailbox_key();
        assert_eq!(row.mailbox_key, expected.as_str(), "{}", row.email);
    }
}

/// Back to the schema before client addresses became `inet`.
fn before_inet(conn: &mut diesel::PgConnection) {
    while !revert_last(conn)
        .unwrap()
        .expect("the inet migration is applied")
        .contains("20261203000001")
    {}
}

fn audit_key() -> ring::hmac::Key {
    let secret = secrecy::SecretSlice::from(vec![7u8; 32]);
    latchkey::keys::Keys::derive(&secret).audit
}

#[derive(diesel::QueryableByName)]
struct TextValue {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

fn ip_column_type(conn: &mut diesel::PgConnection) -> String {
    diesel::sql_query(
        "SELECT data_type::text AS value FROM information_schema.columns \
         WHERE table_name = 'login_audit' AND column_name = 'ip'",
    )
    .get_result::<TextValue>(conn)
    .unwrap()
    .value
}

fn audit_with_text_ip(conn: &mut diesel::PgConnection, ip: Option<&str>) {
    diesel::sql_query(
        "INSERT INTO login_audit (event, ip, detail) VALUES ('link_requested', $1, '')",
    )
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(ip)
    .execute(conn)
    .unwrap();
}

#[test]
fn client_addresses_become_inet_and_the_audit_chain_still_verifies() {
    use diesel::prelude::*;
    use latchkey::audit::chain::{self, Verification};
    use latchkey::audit::rows::AuditRow;
    use latchkey::domain::client_ip::ClientIp;
    use latchkey::schema::{login_audit, sessions};

    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    before_inet(&mut conn);
    // As the older version wrote them: `IpAddr`'s spelling, or none.
    let addresses = [
        Some("192.0.2.7"),
        Some("2001:db8::1"),
        Some("::ffff:192.0.2.8"),
        None,
    ];
    for ip in addresses {
        audit_with_text_ip(&mut conn, ip);
    }
    diesel::sql_query(
        "INSERT INTO sessions (key_digest, state, ip, expires_at) \
         VALUES (sha256('k'), '{}', '2001:db8::2', now() + interval '1 hour')",
    )
    .execute(&mut conn)
    .unwrap();

    run_pending(&mut conn).unwrap();
    assert_eq!(ip_column_type(&mut conn), "inet");
    // The rows the old trigger hashed (over the text) verify now, over `host(ip)`.
    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::Intact { rows: 4 }
    );
    let read: Vec<Option<String>> = login_audit::table
        .order(login_audit::id)
        .select(AuditRow::as_select())
        .load(&mut conn)
        .unwrap()
        .into_iter()
        .map(|row| row.ip)
        .collect();
    assert_eq!(read, addresses.map(|ip| ip.map(String::from)));
    let session_ip: Option<ClientIp> = sessions::table
        .select(sessions::ip)
        .first(&mut conn)
        .unwrap();
    assert_eq!(session_ip, Some("2001:db8::2".parse().unwrap()));
    // A row that is not an address cannot be written any more.
    assert!(diesel::sql_query(
        "INSERT INTO login_audit (event, ip, detail) VALUES ('link_requested', 'somewhere', '')"
    )
    .execute(&mut conn)
    .is_err());
}

#[test]
fn an_address_spelled_otherwise_stops_the_inet_migration_and_changes_nothing() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    before_inet(&mut conn);
    audit_with_text_ip(&mut conn, Some("192.0.2.7"));
    // PostgreSQL spells it `2001:db8::1`: rehashed that way, this row would break the chain.
    audit_with_text_ip(&mut conn, Some("2001:DB8::1"));

    let err = run_pending(&mut conn).unwrap_err().to_string();
    assert!(err.contains("would break the audit chain"), "{err}");
    assert_eq!(ip_column_type(&mut conn), "text");
    let kept: Vec<String> = diesel::sql_query("SELECT ip AS value FROM login_audit ORDER BY id")
        .load::<TextValue>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|row| row.value)
        .collect();
    assert_eq!(kept, ["192.0.2.7", "2001:DB8::1"]);
}
