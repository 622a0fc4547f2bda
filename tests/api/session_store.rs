use std::collections::HashMap;

use actix_session::storage::{SessionKey, SessionStore as _};
use actix_web::cookie::time::Duration;
use diesel::prelude::*;
use latchkey::db::Db;
use latchkey::domain::client_ip::ClientIp;
use latchkey::schema::sessions;
use latchkey::session::cache::Live;
use latchkey::session::store::PgSessionStore;

use crate::helpers::TestDatabase;

// The names a stored state uses, as actix-identity and Latchkey write them (part of every
// stored session, so spelled here rather than taken from the code under test).
const IDENTITY_KEY: &str = "actix_identity.user_id";
const IP_KEY: &str = "latchkey.ip";
const USER_AGENT_KEY: &str = "latchkey.user_agent";

/// A store as the server has it: with the session cache and its listener.
fn store(database: &TestDatabase) -> PgSessionStore {
    let db = Db::connect_lazy(&database.url, 2);
    let live = Live::start(db.clone(), database.url.clone()).unwrap();
    PgSessionStore::new(db, live)
}

fn state(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::to_string(v).unwrap()))
        .collect()
}

fn same_key(key: &SessionKey) -> SessionKey {
    key.as_ref().to_string().try_into().unwrap()
}

#[actix_web::test]
async fn save_then_load_returns_the_state() {
    let database = TestDatabase::migrated();
    let store = store(&database);
    let saved = state(&[("theme", "dark")]);
    let key = store
        .save(saved.clone(), &Duration::minutes(5))
        .await
        .unwrap();
    assert!(key.as_ref().len() >= 22, "a key needs at least 128 bits");
    assert_eq!(store.load(&key).await.unwrap(), Some(saved));
}

#[actix_web::test]
async fn unknown_keys_load_as_none() {
    let database = TestDatabase::migrated();
    let store = store(&database);
    let key: SessionKey = "no-such-session-key".to_string().try_into().unwrap();
    assert_eq!(store.load(&key).await.unwrap(), None);
}

#[actix_web::test]
async fn the_key_is_never_stored_in_clear() {
    let database = TestDatabase::migrated();
    let store = store(&database);
    let key = store
        .save(state(&[("a", "b")]), &Duration::minutes(5))
        .await
        .unwrap();
    let mut conn = database.connect();
    let digests: Vec<Vec<u8>> = sessions::table
        .select(sessions::key_digest)
        .load(&mut conn)
        .unwrap();
    assert_eq!(digests.len(), 1);
    assert_eq!(
        digests[0],
        latchkey::crypto::sha256(key.as_ref().as_bytes())
    );
    let dump: String = diesel::sql_query("SELECT s::text AS row FROM sessions s")
        .get_result::<Row>(&mut conn)
        .unwrap()
        .row;
    assert!(!dump.contains(key.as_ref()), "the raw key is in the table");
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Text)]
    row: String,
}

#[actix_web::test]
async fn update_replaces_the_state_and_fills_the_member_columns() {
    let database = TestDatabase::migrated();
    let store = store(&database);
    let key = store
        .save(state(&[("step", "1")]), &Duration::minutes(5))
        .await
        .unwrap();
    let mut conn = database.connect();
    let member_id: i64 = diesel::sql_query(
        "INSERT INTO members (email, mailbox_key, role) \
         VALUES ('ann@example.org', 'ann@example.org', 'member') RETURNING id",
    )
    .get_result::<Id>(&mut conn)
    .unwrap()
    .id;
    let new_state = state(&[
        (IDENTITY_KEY, &member_id.to_string()),
        (IP_KEY, "192.0.2.7"),
        (USER_AGENT_KEY, "Firefox"),
    ]);
    let same = store
        .update(same_key(&key), new_state.clone(), &Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(same.as_ref(), key.as_ref(), "a live session keeps its key");
    assert_eq!(store.load(&key).await.unwrap(), Some(new_state));
    let (stored_member, ip, agent): (Option<i64>, Option<ClientIp>, Option<String>) =
        sessions::table
            .select((sessions::member_id, sessions::ip, sessions::user_agent))
            .first(&mut conn)
            .unwrap();
    assert_eq!(stored_member, Some(member_id));
    assert_eq!(ip, Some("192.0.2.7".parse().unwrap()));
    assert_eq!(agent.as_deref(), Some("Firefox"));
}

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

#[actix_web::test]
async fn update_of_a_vanished_session_saves_under_a_new_key() {
    let database = TestDatabase::migrated();
    let store = store(&database);
    let key = store
        .save(state(&[("a", "1")]), &Duration::minutes(5))
        .await
        .unwrap();
    store.delete(&key).await.unwrap();
    let new_key = store
        .update(same_key(&key), state(&[("a", "2")]), &Duration::minutes(5))
        .await
        .unwrap();
    assert_ne!(new_key.as_ref(), key.as_ref());
    assert_eq!(store.load(&key).await.unwrap(), None);
    assert_eq!(
        store.load(&new_key).await.unwrap(),
        Some(state(&[("a", "2")]))
    );
}

#[actix_web::test]
async fn expired_sessions_load_as_none_and_cannot_be_updated_back_to_life() {
    let database = TestDatabase::migrated();
    let store = store(&database);
    let key = store
        .save(state(&[("a", "1")]), &Duration::seconds(1))
        .await
        .unwrap();
    assert!(store.load(&key).await.unwrap().is_some());
    actix_web::rt::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(store.load(&key).await.unwrap(), None);
    store.update_ttl(&key, &Duration::minutes(5)).await.unwrap();
    assert_eq!(
        store.load(&key).await.unwrap(),
        None,
        "update_ttl revived it"
    );
}

#[actix_web::test]
async fn update_ttl_extends_the_expiry() {
    let database = TestDatabase::migrated();
    let store = store(&database);
    let key = store
        .save(state(&[("a", "1")]), &Duration::seconds(2))
        .await
        .unwrap();
    store.update_ttl(&key, &Duration::minutes(5)).await.unwrap();
    actix_web::rt::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(store.load(&key).await.unwrap().is_some());
}

#[actix_web::test]
async fn delete_removes_the_session() {
    let database = TestDatabase::migrated();
    let store = store(&database);
    let key = store
        .save(state(&[("a", "1")]), &Duration::minutes(5))
        .await
        .unwrap();
    store.delete(&key).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap(), None);
}

#[actix_web::test]
async fn purge_deletes_only_expired_rows() {
    let database = TestDatabase::migrated();
    let store = store(&database);
    let short = store
        .save(state(&[("a", "1")]), &Duration::seconds(1))
        .await
        .unwrap();
    let long = store
        .save(state(&[("a", "2")]), &Duration::minutes(5))
        .await
        .unwrap();
    actix_web::rt::time::sleep(std::time::Duration::from_millis(2100)).await;
    let mut conn = database.connect();
    let counts = latchkey::purge::delete_expired_transient(&mut conn).unwrap();
    assert_eq!(counts.sessions, 1);
    assert!(store.load(&long).await.unwrap().is_some());
    assert_eq!(store.load(&short).await.unwrap(), None);
}

#[actix_web::test]
async fn a_revoked_signed_in_session_is_not_brought_back_by_an_update() {
    let database = TestDatabase::migrated();
    let store = store(&database);
    let mut conn = database.connect();
    let member_id: i64 = diesel::sql_query(
        "INSERT INTO members (email, mailbox_key, role) \
         VALUES ('ann@example.org', 'ann@example.org', 'member') RETURNING id",
    )
    .get_result::<Id>(&mut conn)
    .unwrap()
    .id;
    let signed_in = state(&[
        (IDENTITY_KEY, &member_id.to_string()),
        ("latchkey.csrf", "t"),
        ("theme", "dark"),
    ]);
    let key = store
        .save(signed_in.clone(), &Duration::minutes(5))
        .await
        .unwrap();
    // Revoked (by an admin, or "sign out everywhere") while a request was in flight...
    store.delete(&key).await.unwrap();
    // ...which then writes its session.
    let new_key = store
        .update(same_key(&key), signed_in, &Duration::minutes(5))
        .await
        .unwrap();
    let kept = store.load(&new_key).await.unwrap().unwrap();
    assert!(!kept.contains_key(IDENTITY_KEY), "{kept:?}");
    assert!(!kept.contains_key("latchkey.csrf"));
    assert_eq!(kept.get("theme"), Some(&"\"dark\"".to_string()));
    let members: Vec<Option<i64>> = sessions::table
        .select(sessions::member_id)
        .load(&mut conn)
        .unwrap();
    assert_eq!(members, vec![None]);
}
