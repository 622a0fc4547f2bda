//! The operator's commands against a real database: `members`, `audit verify`, `purge` and
//! the break-glass `link`, run as the real binary; and the audit chain they rely on.

use latchkey::domain::role::Role;
use std::process::Output;
use std::time::Duration;

use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bytea, Text};
use latchkey::audit::chain::{self, BreakReason, CheckpointProblem, Verification};
use latchkey::audit::checkpoint::{self, Checkpoint, Checkpointer, Publisher, SignedHead};
use latchkey::audit::rows::{AuditEvent, AuditRow, NewAuditRow};
use latchkey::domain::ids::AuditId;
use latchkey::keys::Keys;
use latchkey::schema::{login_audit, members};
use secrecy::{ExposeSecret as _, SecretSlice};

use crate::helpers::{spawn_app, urldecode, TestApp, TestDatabase};

/// Runs `latchkey ARGS` against `database` with a clean environment plus `env`, from a
/// directory with no `.env` above it.
pub fn latchkey(database: &TestDatabase, args: &[&str], env: &[(&str, &str)]) -> Output {
    let scratch = std::env::temp_dir().join("latchkey-cli-tests");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database.url.expose_secret())
        .env("LATCHKEY_DATA_DIR", scratch.join("data"))
        .env("RUST_LOG", "warn")
        .env("LATCHKEY_SECRET_KEY", TEST_SECRET_KEY)
        .current_dir(&scratch);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("running latchkey")
}

/// The secret the binary runs with here (a test may pass another), so that checkpoints it
/// signs verify in-process too.
pub const TEST_SECRET_KEY: &str =
    "6c617463686b65792d61756469742d746573742d7365637265742d6b65792121";

fn keys_for(secret_hex: &str) -> Keys {
    Keys::derive(&SecretSlice::from(hex::decode(secret_hex).unwrap()))
}

fn audit_key() -> ring::hmac::Key {
    keys_for(TEST_SECRET_KEY).audit
}

fn app_audit_key(app: &TestApp) -> ring::hmac::Key {
    let secret_key = app.settings.secret_key.as_ref();
    Keys::derive(secret_key.expect("tests always set a secret key")).audit
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn members_list(database: &TestDatabase) -> String {
    let out = latchkey(database, &["members", "list"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

fn audit_rows(conn: &mut PgConnection) -> Vec<AuditRow> {
    login_audit::table
        .order(login_audit::id.asc())
        .select(AuditRow::as_select())
        .load(conn)
        .unwrap()
}

fn append(conn: &mut PgConnection, detail: &str) -> AuditId {
    NewAuditRow::new(AuditEvent::LinkSent)
        .email("ann@example.org")
        .detail(detail)
        .insert(conn)
        .unwrap()
}

/// Appends `count` rows dated `days_ago` days back (the chain trigger keeps a given time).
fn append_dated(conn: &mut PgConnection, count: usize, days_ago: i64) -> Vec<AuditId> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: AuditId,
    }
    (0..count)
        .map(|i| {
            diesel::sql_query(
                "INSERT INTO login_audit (occurred_at, event, email, detail) \
                 VALUES (now() - make_interval(days => $1::int), 'signed_in', $2, $3) \
                 RETURNING id",
            )
            .bind::<BigInt, _>(days_ago)
            .bind::<Text, _>(format!("user{i}@example.org"))
            .bind::<Text, _>(format!("old row {i}"))
            .get_result::<Id>(conn)
            .unwrap()
            .id
        })
        .collect()
}

/// Runs `sql` with the append-only trigger off, as someone with the owner's rights could.
fn tamper(conn: &mut PgConnection, sql: &str) {
    conn.batch_execute(&format!(
        "ALTER TABLE login_audit DISABLE TRIGGER login_audit_append_only; {sql}; \
         ALTER TABLE login_audit ENABLE TRIGGER login_audit_append_only;"
    ))
    .unwrap();
}

fn verify_with_binary(database: &TestDatabase) -> Output {
    latchkey(database, &["audit", "verify"], &[])
}

#[test]
fn members_add_list_remove_round_trip() {
    let database = TestDatabase::migrated();

    let out = latchkey(
        &database,
        &["members", "add", " Ann@Example.ORG ", "--role", "admin"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "added Ann@example.org as admin\n");
    let out = latchkey(&database, &["members", "add", "bob@example.org"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "added bob@example.org as member\n");
    assert_eq!(
        members_list(&database),
        "Ann@example.org\tadmin\tactive\t\t\nbob@example.org\tmember\tactive\t\t\n"
    );

    // The only admin cannot be removed.
    let out = latchkey(&database, &["members", "remove", "Ann@EXAMPLE.org"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("last active admin"),
        "{}",
        stderr(&out)
    );

    let out = latchkey(&database, &["members", "remove", "bob@example.org"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("deactivated bob@example.org"));
    assert_eq!(
        members_list(&database),
        "Ann@example.org\tadmin\tactive\t\t\nbob@example.org\tmember\tinactive\t\t\n"
    );
    let out = latchkey(&database, &["members", "remove", "bob@example.org"], &[]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "bob@example.org is already inactive\n");

    // Adding again re-activates, with the new role.
    let out = latchkey(
        &database,
        &["members", "add", "bob@example.org", "--role", "auditor"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "re-activated bob@example.org as auditor\n");

    // Bad input: a clear error, a non-zero exit, and nothing changed.
    let before = members_list(&database);
    for args in [
        &["members", "add", "not an address"][..],
        &["members", "add", "carol@example.org", "--role", "root"],
        &["members", "remove", "@example.org"],
    ] {
        let out = latchkey(&database, args, &[]);
        assert!(!out.status.success(), "{args:?}");
        assert!(!stderr(&out).is_empty(), "{args:?}");
    }
    let out = latchkey(&database, &["members", "remove", "carol@example.org"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a member"), "{}", stderr(&out));
    assert_eq!(members_list(&database), before);
    assert_eq!(
        before,
        "Ann@example.org\tadmin\tactive\t\t\nbob@example.org\tauditor\tactive\t\t\n"
    );

    // Every change is audited as done by the command line.
    let rows = audit_rows(&mut database.connect());
    let summary: Vec<(&str, Option<&str>, Option<&str>)> = rows
        .iter()
        .map(|r| (r.event.as_str(), r.email.as_deref(), r.actor.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            ("member_added", Some("Ann@example.org"), Some("cli")),
            ("member_added", Some("bob@example.org"), Some("cli")),
            ("member_deactivated", Some("bob@example.org"), Some("cli")),
            ("member_added", Some("bob@example.org"), Some("cli")),
        ]
    );
    assert!(
        rows[3].detail.contains("re-activated"),
        "{}",
        rows[3].detail
    );
    let out = verify_with_binary(&database);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "audit chain intact: 4 rows\n");
}

#[test]
fn verify_passes_on_an_empty_chain() {
    let database = TestDatabase::migrated();
    assert_eq!(
        chain::verify(&mut database.connect(), &audit_key()).unwrap(),
        Verification::Intact { rows: 0 }
    );
    let out = verify_with_binary(&database);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "audit chain intact: 0 rows\n");
}

#[test]
fn verify_passes_on_a_chain_written_from_many_connections_at_once() {
    let database = TestDatabase::migrated();
    const THREADS: usize = 8;
    const PER_THREAD: usize = 40;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let database = &database;
            scope.spawn(move || {
                let mut conn = database.connect();
                for i in 0..PER_THREAD / 2 {
                    append(&mut conn, &format!("thread {thread} row {i}"));
                    // Half of them two to a transaction, as handlers write them.
                    conn.transaction(|conn| {
                        append(conn, &format!("thread {thread} tx {i} a"));
                        append(conn, &format!("thread {thread} tx {i} b"));
                        Ok::<_, diesel::result::Error>(())
                    })
                    .unwrap();
                }
            });
        }
    });
    // A transaction that rolls back leaves a gap in the ids, not a break in the chain.
    let mut conn = database.connect();
    let _ = conn.transaction(|conn| {
        append(conn, "rolled back");
        Err::<(), _>(diesel::result::Error::RollbackTransaction)
    });
    append(&mut conn, "after the rollback");

    let total = (THREADS * PER_THREAD / 2 * 3 + 1) as u64;
    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::Intact { rows: total }
    );
    let out = verify_with_binary(&database);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("audit chain intact: {total} rows\n"));
}

#[test]
fn verify_names_an_altered_row() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    // More than one batch, so the walk crosses a batch boundary before the break.
    let ids: Vec<AuditId> = (0..1205)
        .map(|i| append(&mut conn, &format!("row {i}")))
        .collect();
    let altered = ids[1100];
    tamper(
        &mut conn,
        &format!("UPDATE login_audit SET detail = 'nothing happened' WHERE id = {altered}"),
    );

    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::Broken {
            id: altered,
            reason: BreakReason::HashMismatch
        }
    );
    let out = verify_with_binary(&database);
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&format!("audit chain broken at row {altered}:")),
        "{message}"
    );
    assert!(message.contains("altered"), "{message}");
}

#[test]
fn verify_names_the_row_after_one_rewritten_with_a_fresh_hash() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    let ids: Vec<AuditId> = (0..10)
        .map(|i| append(&mut conn, &format!("row {i}")))
        .collect();
    // A forger who recomputes the row's own hash still breaks the link from the next row.
    tamper(
        &mut conn,
        &format!(
            "UPDATE login_audit SET detail = 'forged' WHERE id = {id}; \
             UPDATE login_audit SET hash = login_audit_row_hash(prev_hash, login_audit) \
             WHERE id = {id}",
            id = ids[4]
        ),
    );
    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::Broken {
            id: ids[5],
            reason: BreakReason::PrevHashMismatch { first: false }
        }
    );
}

#[test]
fn verify_catches_deleted_rows_in_the_middle_at_the_start_and_at_the_end() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    let ids: Vec<AuditId> = (0..10)
        .map(|i| append(&mut conn, &format!("row {i}")))
        .collect();

    tamper(
        &mut conn,
        &format!("DELETE FROM login_audit WHERE id = {}", ids[5]),
    );
    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::Broken {
            id: ids[6],
            reason: BreakReason::PrevHashMismatch { first: false }
        }
    );
    let out = verify_with_binary(&database);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("broken at row {}:", ids[6])),
        "{}",
        stderr(&out)
    );

    // Deleting everything from the broken point on leaves a chain whose head is missing.
    tamper(
        &mut conn,
        &format!("DELETE FROM login_audit WHERE id > {}", ids[4]),
    );
    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::Truncated {
            after: Some(ids[4]),
            rows: 5
        }
    );
    let out = verify_with_binary(&database);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("after row {}", ids[4])),
        "{}",
        stderr(&out)
    );

    // Deleting the oldest row outside of purge leaves the next pointing at nothing known.
    tamper(
        &mut conn,
        &format!("DELETE FROM login_audit WHERE id = {}", ids[0]),
    );
    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::Broken {
            id: ids[1],
            reason: BreakReason::PrevHashMismatch { first: true }
        }
    );

    tamper(&mut conn, "DELETE FROM login_audit");
    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::Truncated {
            after: None,
            rows: 0
        }
    );
}

#[test]
fn the_database_refuses_to_update_delete_or_truncate_audit_rows() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    let id = append(&mut conn, "original");
    for sql in [
        format!("UPDATE login_audit SET detail = 'changed' WHERE id = {id}"),
        format!("DELETE FROM login_audit WHERE id = {id}"),
        "TRUNCATE login_audit".to_string(),
        // The purge switch is per transaction; set for a session it does nothing elsewhere...
        format!(
            "BEGIN; SET LOCAL latchkey.audit_purge = 'on'; COMMIT; \
             DELETE FROM login_audit WHERE id = {id}"
        ),
    ] {
        let err = conn.batch_execute(&sql).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        let _ = conn.batch_execute("ROLLBACK");
    }
    let rows = audit_rows(&mut conn);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].detail, "original");
    assert!(chain::verify(&mut conn, &audit_key()).unwrap().is_intact());
}

#[test]
fn purge_removes_exactly_the_rows_past_retention_and_the_rest_still_verifies() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    let old = append_dated(&mut conn, 5, 500);
    let kept_old = append_dated(&mut conn, 2, 300);
    let member = latchkey::models::member::add_or_reactivate(
        &mut conn,
        &latchkey::domain::email_address::EmailAddress::parse("ann@example.org").unwrap(),
        latchkey::domain::role::Role::Member,
        "test",
    )
    .unwrap()
    .0;
    let recent: Vec<AuditId> = (0..3)
        .map(|i| append(&mut conn, &format!("new {i}")))
        .collect();
    // An expired session of Ann's, and a sign-in request that expired two days ago.
    conn.batch_execute(&format!(
        "INSERT INTO sessions (key_digest, member_id, state, expires_at) \
         VALUES (decode(repeat('ab', 32), 'hex'), {id}, '{{}}', now() - interval '1 minute'), \
                (decode(repeat('cd', 32), 'hex'), {id}, '{{}}', now() + interval '1 hour'); \
         INSERT INTO sign_in_requests (member_id, requested_email, token_digest, code_digest, approval_number, expires_at) \
         VALUES ({id}, 'ann@example.org', decode(repeat('01', 32), 'hex'), decode(repeat('02', 32), 'hex'), 42, now() - interval '2 days'), \
                ({id}, 'ann@example.org', decode(repeat('03', 32), 'hex'), decode(repeat('04', 32), 'hex'), 42, now() + interval '5 minutes')",
        id = member.id
    ))
    .unwrap();

    let out = latchkey(
        &database,
        &["purge"],
        &[("LATCHKEY_AUDIT_RETENTION", "400d")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "deleted 1 expired sessions, 1 expired sign-in requests, 5 audit rows past retention\n"
    );

    let rows = audit_rows(&mut conn);
    let ids: Vec<AuditId> = rows.iter().map(|r| r.id).collect();
    assert!(old.iter().all(|id| !ids.contains(id)));
    let mut expected = kept_old.clone();
    expected.extend(
        rows.iter()
            .filter(|r| r.event == "member_added")
            .map(|r| r.id),
    );
    expected.extend(&recent);
    let expired = rows.last().unwrap();
    assert_eq!(expired.event, "session_expired");
    assert_eq!(expired.email.as_deref(), Some("ann@example.org"));
    expected.push(expired.id);
    assert_eq!(ids, expected);
    let (start, _) = chain::start_and_head(&mut conn).unwrap();
    assert_eq!(start, rows[0].prev_hash);

    let out = verify_with_binary(&database);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("audit chain intact: {} rows\n", rows.len())
    );
    // The chain goes on from where it was.
    append(&mut conn, "after the purge");
    assert!(chain::verify(&mut conn, &audit_key()).unwrap().is_intact());

    let out = latchkey(&database, &["purge"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "deleted 0 expired sessions, 0 expired sign-in requests, 0 audit rows past retention\n"
    );
    let counts: i64 = diesel::sql_query("SELECT count(*) AS n FROM sessions")
        .get_result::<Count>(&mut conn)
        .unwrap()
        .n;
    assert_eq!(counts, 1, "the live session stays");
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[test]
fn purge_stops_at_the_first_row_inside_retention() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    let old = append_dated(&mut conn, 3, 500);
    let recent = append(&mut conn, "recent");
    // Stamped old but written after a recent row (a clock stepped back): it stays, or the
    // chain would break in the middle.
    let late_old = append_dated(&mut conn, 1, 500);

    let deleted =
        chain::purge_older_than(&mut conn, Duration::from_secs(400 * 86400), &audit_key());
    assert_eq!(deleted.unwrap(), 3);
    let ids: Vec<AuditId> = audit_rows(&mut conn).iter().map(|r| r.id).collect();
    assert_eq!(ids, [recent, late_old[0]]);
    assert!(old.iter().all(|id| !ids.contains(id)));
    assert!(chain::verify(&mut conn, &audit_key()).unwrap().is_intact());
}

#[test]
fn purging_every_row_leaves_an_empty_chain_that_goes_on() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    append_dated(&mut conn, 4, 500);
    let deleted =
        chain::purge_older_than(&mut conn, Duration::from_secs(400 * 86400), &audit_key());
    assert_eq!(deleted.unwrap(), 4);
    assert!(audit_rows(&mut conn).is_empty());
    let (start, head) = chain::start_and_head(&mut conn).unwrap();
    assert_eq!(start, head);
    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::Intact { rows: 0 }
    );
    append(&mut conn, "first after the purge");
    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::Intact { rows: 1 }
    );
}

#[test]
fn the_sweeper_records_sessions_that_timed_out() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    let member = latchkey::models::member::add_or_reactivate(
        &mut conn,
        &latchkey::domain::email_address::EmailAddress::parse("bob@example.org").unwrap(),
        latchkey::domain::role::Role::Member,
        "test",
    )
    .unwrap()
    .0;
    diesel::sql_query(
        "INSERT INTO sessions (key_digest, member_id, state, expires_at) VALUES \
         ($1, $2, '{}', now() - interval '1 second'), \
         ($3, NULL, '{}', now() - interval '1 second')",
    )
    .bind::<Bytea, _>(vec![1u8; 32])
    .bind::<BigInt, _>(member.id)
    .bind::<Bytea, _>(vec![2u8; 32])
    .execute(&mut conn)
    .unwrap();

    let counts = latchkey::purge::delete_expired_transient(&mut conn).unwrap();
    assert_eq!(counts.sessions, 2);
    let rows = audit_rows(&mut conn);
    let expired: Vec<&AuditRow> = rows
        .iter()
        .filter(|r| r.event == "session_expired")
        .collect();
    assert_eq!(expired.len(), 1, "only a member's session is recorded");
    assert_eq!(expired[0].email.as_deref(), Some("bob@example.org"));
    assert!(chain::verify(&mut conn, &audit_key()).unwrap().is_intact());
}

#[actix_web::test]
async fn break_glass_link_signs_in_from_any_browser_and_is_audited_with_the_reason() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    app.add_member("gone@example.org", Role::Member);
    let gone = members::table
        .filter(members::email.eq("gone@example.org"))
        .select(members::id)
        .first::<latchkey::domain::ids::MemberId>(&mut app.conn())
        .unwrap();
    latchkey::models::member::deactivate(&mut app.conn(), gone, "test").unwrap();

    // The operator runs the command line with the deployment's own environment.
    let run = |args: Vec<&'static str>| latchkey(&app.database, &args, &app.environment.vars());

    let out = run(vec![
        "link",
        "ann@example.org",
        "--reason",
        "lost phone, ticket 7",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert_eq!(printed.lines().count(), 1, "{printed}");
    let link = printed.trim_end();
    let prefix = app.url("/auth/verify?token=");
    assert!(link.starts_with(&prefix), "{link}");
    let token = urldecode(&link[prefix.len()..]);
    assert!(
        !stderr(&out).contains(&token),
        "the link goes to stdout only"
    );

    let rows = app.audit();
    let requested = rows.last().unwrap();
    assert_eq!(requested.event, "link_requested");
    assert_eq!(requested.email.as_deref(), Some("ann@example.org"));
    assert_eq!(requested.actor.as_deref(), Some("cli"));
    assert_eq!(requested.detail, "break-glass: lost phone, ticket 7");
    assert!(requested.request_id.is_some());
    assert!(rows.iter().all(|r| !r.detail.contains(&token)));

    // Any browser may use it (binding `any`), once.
    let browser = app.visitor();
    let res = browser.confirm_link(&token).await;
    assert_eq!(res.status(), 303);
    let signed_in = app.audit().into_iter().last().unwrap();
    assert_eq!(signed_in.event, "signed_in");
    assert_eq!(signed_in.request_id, requested.request_id);
    let res = app.visitor().get(link).await;
    assert_eq!(res.status(), 410, "a link signs in once");

    // Only for active members, and never without a reason.
    let audited = app.audit().len();
    for args in [
        vec!["link", "gone@example.org", "--reason", "x"],
        vec!["link", "nobody@example.org", "--reason", "x"],
        vec!["link", "ann@example.org"],
        vec!["link", "ann@example.org", "--reason", "   "],
    ] {
        let out = run(args.clone());
        assert!(!out.status.success(), "{args:?}");
        assert!(stdout(&out).is_empty(), "{args:?}");
        assert!(!stderr(&out).is_empty(), "{args:?}");
    }
    assert_eq!(app.audit().len(), audited);
    assert!(chain::verify(&mut app.conn(), &app_audit_key(&app))
        .unwrap()
        .is_intact());
}

/// `latchkey audit checkpoint`, checked to succeed and print one line.
fn checkpoint_with_binary(database: &TestDatabase) -> String {
    let out = latchkey(database, &["audit", "checkpoint"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert_eq!(printed.lines().count(), 1, "{printed}");
    printed
}

fn checkpoints(conn: &mut PgConnection) -> Vec<Checkpoint> {
    use latchkey::schema::login_audit_checkpoints as c;
    c::table
        .order(c::id.asc())
        .select(Checkpoint::as_select())
        .load(conn)
        .unwrap()
}

/// What the reviewer did as the application's own role: the purge switch lets the newest row
/// be deleted, and the chain's head is moved back to the row before it.
fn drop_newest_row_with_the_purge_switch(conn: &mut PgConnection) {
    conn.batch_execute(
        "BEGIN; \
         SET LOCAL latchkey.audit_purge = 'on'; \
         DELETE FROM login_audit WHERE seq = (SELECT max(seq) FROM login_audit); \
         UPDATE login_audit_chain SET \
             head_hash = (SELECT hash FROM login_audit ORDER BY seq DESC LIMIT 1), \
             head_seq = (SELECT max(seq) FROM login_audit); \
         COMMIT;",
    )
    .unwrap();
}

#[test]
fn audit_checkpoint_prints_one_line_and_verify_passes_after_it() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    for i in 0..3 {
        append(&mut conn, &format!("row {i}"));
    }
    let printed = checkpoint_with_binary(&database);
    let stored = checkpoints(&mut conn);
    assert_eq!(stored.len(), 1);
    assert_eq!(printed, format!("{}\n", stored[0].line()));
    assert!(printed.starts_with("audit checkpoint "), "{printed}");
    assert!(printed.contains(" seq=3 "), "{printed}");
    let rows = audit_rows(&mut conn);
    assert_eq!(stored[0].head_hash, rows[2].hash);
    assert!(stored[0].signature_is_valid(&audit_key()));
    let out = verify_with_binary(&database);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "audit chain intact: 3 rows\n");
    // The seq numbers the rows without gaps.
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn dropping_the_newest_rows_with_the_purge_switch_is_caught_by_the_checkpoint() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    for i in 0..10 {
        append(&mut conn, &format!("row {i}"));
    }
    checkpoint_with_binary(&database);
    let signed = checkpoints(&mut conn).pop().unwrap();
    assert_eq!(signed.seq, 10);

    drop_newest_row_with_the_purge_switch(&mut conn);
    let expected = Verification::BadCheckpoint {
        id: signed.id,
        seq: 10,
        problem: CheckpointProblem::RowMissing,
    };
    assert_eq!(chain::verify(&mut conn, &audit_key()).unwrap(), expected);
    let out = verify_with_binary(&database);
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&format!("audit checkpoint {} (seq 10) broken", signed.id)),
        "{message}"
    );
    assert!(message.contains("no row with that seq"), "{message}");

    // A command that writes refuses to sign over the cut; one that only reads still works.
    let out = latchkey(&database, &["members", "add", "cy@example.org"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no longer extends the checkpoint of seq 10"),
        "{}",
        stderr(&out)
    );
    for reading in [
        &["members", "list"][..],
        &["apps", "list"],
        &["groups", "list"],
    ] {
        let out = latchkey(&database, reading, &[]);
        assert!(out.status.success(), "{reading:?}: {}", stderr(&out));
    }
    drop_newest_row_with_the_purge_switch(&mut conn);

    // New rows take the dropped row's seq, but not its hash.
    let replacement = append(&mut conn, "written after the tampering");
    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::BadCheckpoint {
            id: signed.id,
            seq: 10,
            problem: CheckpointProblem::HashMismatch {
                row_id: replacement,
                after_seq: 0
            },
        }
    );
}

#[test]
fn rewriting_a_row_in_the_middle_and_rebuilding_the_chain_is_caught_by_the_checkpoint() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    let mut ids: Vec<AuditId> = (0..3)
        .map(|i| append(&mut conn, &format!("row {i}")))
        .collect();
    checkpoint_with_binary(&database);
    ids.extend((3..10).map(|i| append(&mut conn, &format!("row {i}"))));
    checkpoint_with_binary(&database);
    ids.extend((10..12).map(|i| append(&mut conn, &format!("row {i}"))));
    let signed = checkpoints(&mut conn);
    assert_eq!(signed.iter().map(|c| c.seq).collect::<Vec<_>>(), [3, 10]);

    // As the owner: delete row 5 under the purge switch, write a new one in its place, and
    // rebuild the chain from there with the database's own hash function.
    conn.batch_execute(&format!(
        "BEGIN; \
         SET LOCAL latchkey.audit_purge = 'on'; \
         DELETE FROM login_audit WHERE id = {id}; \
         ALTER TABLE login_audit DISABLE TRIGGER login_audit_chain_insert; \
         INSERT INTO login_audit (id, seq, occurred_at, event, email, detail, prev_hash, hash) \
         VALUES ({id}, 5, now(), 'link_sent', 'ann@example.org', 'nothing happened', '', ''); \
         ALTER TABLE login_audit ENABLE TRIGGER login_audit_chain_insert; \
         ALTER TABLE login_audit DISABLE TRIGGER login_audit_append_only; \
         DO $$ \
         DECLARE r login_audit; prev BYTEA; \
         BEGIN \
             SELECT hash INTO prev FROM login_audit WHERE seq = 4; \
             FOR r IN SELECT * FROM login_audit WHERE seq >= 5 ORDER BY seq LOOP \
                 r.prev_hash := prev; \
                 r.hash := login_audit_row_hash(prev, r); \
                 UPDATE login_audit SET prev_hash = r.prev_hash, hash = r.hash WHERE id = r.id; \
                 prev := r.hash; \
             END LOOP; \
             UPDATE login_audit_chain SET head_hash = prev; \
         END $$; \
         ALTER TABLE login_audit ENABLE TRIGGER login_audit_append_only; \
         COMMIT;",
        id = ids[4]
    ))
    .unwrap();
    assert_eq!(audit_rows(&mut conn)[4].detail, "nothing happened");

    // The chain itself is whole again; the checkpoint after the rewrite is not, and the one
    // before it bounds where the rewrite happened.
    let expected = Verification::BadCheckpoint {
        id: signed[1].id,
        seq: 10,
        problem: CheckpointProblem::HashMismatch {
            row_id: ids[9],
            after_seq: 3,
        },
    };
    assert_eq!(chain::verify(&mut conn, &audit_key()).unwrap(), expected);
    let out = verify_with_binary(&database);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains(&format!(
            "audit checkpoint {} (seq 10) broken",
            signed[1].id
        )),
        "{message}"
    );
    assert!(message.contains(&format!("row {}", ids[9])), "{message}");
    assert!(message.contains("seq after 3"), "{message}");
}

#[test]
fn a_forged_checkpoint_is_named() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    for i in 0..4 {
        append(&mut conn, &format!("row {i}"));
    }
    checkpoint_with_binary(&database);
    // Signed with a guess instead of the key derived from LATCHKEY_SECRET_KEY.
    let guess = keys_for(&"00".repeat(32)).audit;
    let forged = checkpoint::write(&mut conn, &guess).unwrap();
    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::BadCheckpoint {
            id: forged.id,
            seq: 4,
            problem: CheckpointProblem::BadSignature
        }
    );
    // So is a real one whose fields were changed afterwards.
    diesel::sql_query("DELETE FROM login_audit_checkpoints WHERE id = $1")
        .bind::<BigInt, _>(forged.id)
        .execute(&mut conn)
        .unwrap();
    let real = checkpoints(&mut conn).pop().unwrap();
    diesel::sql_query("UPDATE login_audit_checkpoints SET signed_at = now() + interval '1 day'")
        .execute(&mut conn)
        .unwrap();
    let out = verify_with_binary(&database);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains(&format!("audit checkpoint {} (seq 4) broken", real.id)),
        "{message}"
    );
    assert!(message.contains("signature does not verify"), "{message}");
}

#[test]
fn rows_left_unsigned_longer_than_the_limit_are_named_and_the_unsigned_tail_is_the_known_limit() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    // The last minute's rows are not signed yet: tampering with them is the known limit.
    for i in 0..3 {
        append(&mut conn, &format!("row {i}"));
    }
    drop_newest_row_with_the_purge_switch(&mut conn);
    assert_eq!(
        chain::verify(&mut conn, &audit_key()).unwrap(),
        Verification::Intact { rows: 2 }
    );

    // Rows from a day ago that no checkpoint covers: one was deleted, or Latchkey died.
    let old = append_dated(&mut conn, 2, 1);
    checkpoint_with_binary(&database);
    let more = append_dated(&mut conn, 2, 1);
    checkpoint_with_binary(&database);
    assert!(chain::verify(&mut conn, &audit_key()).unwrap().is_intact());
    let newest = checkpoints(&mut conn).pop().unwrap();
    diesel::sql_query("DELETE FROM login_audit_checkpoints WHERE id = $1")
        .bind::<BigInt, _>(newest.id)
        .execute(&mut conn)
        .unwrap();
    let verification = chain::verify(&mut conn, &audit_key()).unwrap();
    assert!(
        matches!(verification, Verification::Unsigned { id, seq: 5, .. } if id == more[0]),
        "{verification:?}"
    );
    let out = verify_with_binary(&database);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains(&format!("unsigned from row {} (seq 5", more[0])),
        "{message}"
    );
    assert!(old
        .iter()
        .all(|id| !message.contains(&format!("row {id} "))));
}

#[test]
fn purge_signs_the_new_start_and_a_purge_by_hand_is_caught() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    append_dated(&mut conn, 3, 500);
    checkpoint_with_binary(&database);
    let kept = append_dated(&mut conn, 2, 300);
    checkpoint_with_binary(&database);
    append(&mut conn, "recent");

    let out = latchkey(&database, &["purge"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("3 audit rows past retention"),
        "{}",
        stdout(&out)
    );
    let signed = checkpoints(&mut conn);
    // The checkpoint about purged rows went with them; the purge signed the new start.
    assert_eq!(signed.iter().map(|c| c.seq).collect::<Vec<_>>(), [5, 6]);
    assert!(signed[1].id > signed[0].id);
    let newest = signed.last().unwrap();
    assert_eq!(newest.start_seq, 3);
    assert_eq!(newest.start_hash, audit_rows(&mut conn)[0].prev_hash);
    let out = verify_with_binary(&database);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "audit chain intact: 3 rows\n");

    // Deleting the oldest row as purge would, and moving the start, is not a purge.
    conn.batch_execute(&format!(
        "BEGIN; \
         SET LOCAL latchkey.audit_purge = 'on'; \
         DELETE FROM login_audit WHERE id = {id}; \
         UPDATE login_audit_chain SET \
             start_prev_hash = (SELECT prev_hash FROM login_audit ORDER BY seq LIMIT 1), \
             start_seq = 4; \
         COMMIT;",
        id = kept[0]
    ))
    .unwrap();
    let verification = chain::verify(&mut conn, &audit_key()).unwrap();
    assert!(
        matches!(
            verification,
            Verification::BadCheckpoint {
                problem: CheckpointProblem::StartMismatch {
                    signed_start_seq: 3
                },
                ..
            }
        ),
        "{verification:?}"
    );
    let out = verify_with_binary(&database);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("outside of `latchkey purge`"),
        "{}",
        stderr(&out)
    );
}

#[actix_web::test]
async fn the_checkpoint_task_signs_new_rows_and_does_nothing_while_none_are_added() {
    let database = TestDatabase::migrated();
    let db = latchkey::db::Db::connect_lazy(&database.url, 2);
    Checkpointer::new(db, audit_key(), Publisher::default(), Box::new(|_, _| {}))
        .spawn(Duration::from_millis(200));
    let mut conn = database.connect();
    for i in 0..3 {
        append(&mut conn, &format!("row {i}"));
    }
    actix_web::rt::time::sleep(Duration::from_millis(700)).await;
    let signed = checkpoints(&mut conn);
    assert_eq!(signed.len(), 1, "{signed:?}");
    assert_eq!(signed[0].seq, 3);
    actix_web::rt::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(checkpoints(&mut conn).len(), 1, "idle: no new checkpoint");
    append(&mut conn, "one more");
    actix_web::rt::time::sleep(Duration::from_millis(700)).await;
    let signed = checkpoints(&mut conn);
    assert_eq!(signed.len(), 2, "{signed:?}");
    assert_eq!(signed[1].seq, 4);
    assert!(chain::verify(&mut conn, &audit_key()).unwrap().is_intact());
}

#[actix_web::test]
async fn a_server_that_stops_signs_what_it_wrote() {
    let database = TestDatabase::migrated();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scratch = std::env::temp_dir().join("latchkey-cli-tests");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database.url.expose_secret())
        .env("LATCHKEY_BIND", format!("127.0.0.1:{port}"))
        .env("LATCHKEY_SECRET_KEY", TEST_SECRET_KEY)
        .env("LATCHKEY_ADMINS", "boss@example.org")
        .env("RUST_LOG", "warn")
        .current_dir(&scratch)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        let health = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await;
        if health.is_ok_and(|r| r.status() == 200) {
            up = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "latchkey serve did not come up");
    // Start-up made boss@example.org an admin (audited, and signed at the task's first
    // tick); this row is another writer's, which the task leaves alone and stopping signs.
    let mut conn = database.connect();
    append(&mut conn, "written while the server runs");
    let pid = libc::pid_t::try_from(server.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let rows = audit_rows(&mut conn);
    assert_eq!(rows.len(), 2);
    let newest = checkpoints(&mut conn)
        .pop()
        .expect("a checkpoint on shutdown");
    assert_eq!(newest.seq, 2);
    assert!(chain::verify(&mut conn, &audit_key()).unwrap().is_intact());
}

/// The review's first tampering, as the database's owner: the newest rows deleted together
/// with the checkpoints that signed them, and the head moved back (to seq 6).
fn cut_the_end_off(conn: &mut PgConnection) {
    conn.batch_execute(
        "BEGIN; \
         SET LOCAL latchkey.audit_purge = 'on'; \
         DELETE FROM login_audit WHERE seq > 6; \
         DELETE FROM login_audit_checkpoints WHERE seq > 6; \
         UPDATE login_audit_chain SET head_seq = 6, \
             head_hash = (SELECT hash FROM login_audit WHERE seq = 6); \
         COMMIT;",
    )
    .unwrap();
}

/// The second: the whole audit and its checkpoints gone, the chain reset to empty.
fn truncate_everything(conn: &mut PgConnection) {
    conn.batch_execute(
        "BEGIN; \
         SET LOCAL latchkey.audit_purge = 'on'; \
         DELETE FROM login_audit; \
         DELETE FROM login_audit_checkpoints; \
         UPDATE login_audit_chain SET head_seq = start_seq, head_hash = start_prev_hash; \
         COMMIT;",
    )
    .unwrap();
}

/// The third: rows from seq 8 on rewritten (deleted and written again, so the database
/// chains the forged ones), and the checkpoints after seq 6 deleted.
fn rewrite_from_seq_8(conn: &mut PgConnection) {
    conn.batch_execute(
        "BEGIN; \
         SET LOCAL latchkey.audit_purge = 'on'; \
         DELETE FROM login_audit WHERE seq >= 8; \
         DELETE FROM login_audit_checkpoints WHERE seq > 6; \
         UPDATE login_audit_chain SET head_seq = 7, \
             head_hash = (SELECT hash FROM login_audit WHERE seq = 7); \
         COMMIT;",
    )
    .unwrap();
    for i in 8..=10 {
        append(conn, &format!("forged row {i}"));
    }
}

/// Ten rows, signed at seq 6 and at seq 10 by the binary; both lines printed.
fn ten_rows_signed_twice(database: &TestDatabase) -> (String, String) {
    let mut conn = database.connect();
    for i in 0..6 {
        append(&mut conn, &format!("row {i}"));
    }
    let at_6 = checkpoint_with_binary(database);
    for i in 6..10 {
        append(&mut conn, &format!("row {i}"));
    }
    let at_10 = checkpoint_with_binary(database);
    (at_6.trim().to_string(), at_10.trim().to_string())
}

#[test]
fn each_of_the_reviews_tamperings_passes_verify_alone_and_is_named_by_an_anchor() {
    type Tampering = fn(&mut PgConnection);
    let cases: [(&str, Tampering, &str); 3] = [
        (
            "cut off the end",
            cut_the_end_off,
            "the chain now ends at seq 6, before it",
        ),
        (
            "truncated",
            truncate_everything,
            "the chain now ends at seq 0, before it",
        ),
        (
            "rewritten from seq 8",
            rewrite_from_seq_8,
            "the row with that seq has another hash",
        ),
    ];
    for (name, tamper_with, named) in cases {
        let database = TestDatabase::migrated();
        let (at_6, at_10) = ten_rows_signed_twice(&database);
        let intact = latchkey(&database, &["audit", "verify", "--anchor", &at_10], &[]);
        assert!(intact.status.success(), "{name}: {}", stderr(&intact));

        tamper_with(&mut database.connect());
        // What the review saw: the database alone checks out.
        let alone = verify_with_binary(&database);
        assert!(alone.status.success(), "{name}: {}", stderr(&alone));
        // The line kept outside names it.
        let out = latchkey(&database, &["audit", "verify", "--anchor", &at_10], &[]);
        assert!(!out.status.success(), "{name}");
        let message = stderr(&out);
        assert!(
            message.contains("audit anchor seq=10") && message.contains(named),
            "{name}: {message}"
        );
        // The older anchor still holds where the rows it signed are untouched.
        let older = latchkey(&database, &["audit", "verify", "--anchor", &at_6], &[]);
        assert_eq!(
            older.status.success(),
            name != "truncated",
            "{name}: {}",
            stderr(&older)
        );
    }
}

#[test]
fn checkpoints_go_to_the_anchors_file_and_the_log_and_verify_reads_them_back() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    for i in 0..10 {
        append(&mut conn, &format!("row {i}"));
    }
    let dir = std::env::temp_dir().join(format!(
        "latchkey-anchors-{}",
        hex::encode(latchkey::crypto::random_bytes::<6>())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let anchors = dir.join("anchors");
    let anchors_env = anchors.to_str().unwrap();
    let out = latchkey(
        &database,
        &["audit", "checkpoint"],
        &[
            ("LATCHKEY_AUDIT_ANCHORS", anchors_env),
            ("RUST_LOG", "info"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out).trim().to_string();
    assert_eq!(
        std::fs::read_to_string(&anchors).unwrap(),
        format!("{line}\n")
    );
    assert!(
        stderr(&out)
            .lines()
            .any(|l| l.contains("INFO") && l.ends_with(&line)),
        "logged at info: {}",
        stderr(&out)
    );
    // A log copied as it is works as an anchors file too.
    std::fs::write(dir.join("log"), stderr(&out)).unwrap();
    let from_log = dir.join("log");
    for file in [&anchors, &from_log] {
        let out = latchkey(
            &database,
            &["audit", "verify", "--anchors", file.to_str().unwrap()],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    cut_the_end_off(&mut conn);
    let out = latchkey(
        &database,
        &["audit", "verify", "--anchors", anchors_env],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("audit anchor seq=10"),
        "{}",
        stderr(&out)
    );
    // A forged anchor is refused, not believed.
    let forged = line.replace("seq=10 ", "seq=11 ");
    let out = latchkey(&database, &["audit", "verify", "--anchor", &forged], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("signature does not verify"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[actix_web::test]
async fn a_running_signer_refuses_a_chain_cut_or_rewritten_under_it() {
    type Tampering = fn(&mut PgConnection);
    let cases: [(&str, Tampering); 3] = [
        ("cut off the end", cut_the_end_off),
        ("truncated", truncate_everything),
        ("rewritten from seq 8", rewrite_from_seq_8),
    ];
    for (name, tamper_with) in cases {
        let database = TestDatabase::migrated();
        let mut conn = database.connect();
        let db = latchkey::db::Db::connect_lazy(&database.url, 2);
        let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::<SignedHead>::new()));
        let tell = told.clone();
        let signer = Checkpointer::new(
            db,
            audit_key(),
            Publisher::default(),
            Box::new(move |_, head| tell.lock().unwrap().push(head.clone())),
        );
        for i in 0..10 {
            append(&mut conn, &format!("row {i}"));
        }
        let signed = signer.sign_if_behind().await.unwrap().unwrap();
        assert_eq!(signed.seq, 10, "{name}");

        tamper_with(&mut conn);
        append(&mut conn, "written after the tampering");
        assert!(
            signer.sign_if_behind().await.unwrap().is_none(),
            "{name}: signed a chain that does not extend seq 10"
        );
        append(&mut conn, "and another");
        assert!(signer.sign_if_behind().await.unwrap().is_none(), "{name}");
        assert!(
            checkpoints(&mut conn)
                .iter()
                .all(|c| c.seq <= 6 || c.id == signed.id),
            "{name}: no new checkpoint"
        );
        let broken: Vec<AuditRow> = audit_rows(&mut conn)
            .into_iter()
            .filter(|row| row.event == "audit_chain_broken")
            .collect();
        assert_eq!(broken.len(), 1, "{name}: audited once: {broken:?}");
        assert!(
            broken[0].detail.contains("seq 10"),
            "{name}: {}",
            broken[0].detail
        );
        let told = told.lock().unwrap();
        assert_eq!(told.len(), 1, "{name}: the admins are told once");
        assert_eq!((told[0].seq, &told[0].hash), (10, &signed.head_hash));
    }
}

#[actix_web::test]
async fn a_running_signer_follows_checkpoints_another_process_signed() {
    let database = TestDatabase::migrated();
    let mut conn = database.connect();
    let db = latchkey::db::Db::connect_lazy(&database.url, 2);
    let signer = Checkpointer::new(db, audit_key(), Publisher::default(), Box::new(|_, _| {}));
    for i in 0..3 {
        append(&mut conn, &format!("row {i}"));
    }
    assert_eq!(signer.sign_if_behind().await.unwrap().unwrap().seq, 3);
    // Another instance (here the command line) signs what it added.
    append(&mut conn, "from elsewhere");
    checkpoint_with_binary(&database);
    assert!(
        signer.sign_if_behind().await.unwrap().is_none(),
        "up to date"
    );
    assert_eq!(signer.last_head().unwrap().seq, 4);
    append(&mut conn, "mine again");
    assert_eq!(signer.sign_if_behind().await.unwrap().unwrap().seq, 5);
}
