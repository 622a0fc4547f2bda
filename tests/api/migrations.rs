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
