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
