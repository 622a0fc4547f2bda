//! actix-session's `SessionStore`, backed by the `sessions` table.
//!
//! Modelled on actix-session's Redis store: `load` of a missing or expired key is `Ok(None)`,
//! `save` generates the key, and `update` falls back to `save` under a new key when the row has
//! gone (expired, revoked). The cookie carries the key; the table only its SHA-256 digest.
//!
//! Reads go through the session cache (`session_cache`): a signed-in request whose session is
//! cached costs no query, and a write that only moves "last seen" is made off the request's
//! path.

use std::collections::HashMap;

use actix_session::storage::{
    generate_session_key, LoadError, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_web::cookie::time::Duration as CookieDuration;
use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::keys;
use crate::db::{Db, DbError};
use crate::domain::client_ip::ClientIp;
use crate::domain::digests::SessionKeyDigest;
use crate::schema::sessions;
use crate::session::cache::Live;

pub type SessionState = HashMap<String, String>;

#[derive(Clone)]
pub struct PgSessionStore {
    db: Db,
    live: Live,
}

impl PgSessionStore {
    pub fn new(db: Db, live: Live) -> Self {
        Self { db, live }
    }
}

/// The columns derived from a session's state.
#[derive(AsChangeset, Insertable)]
#[diesel(table_name = sessions, treat_none_as_null = true)]
struct StateColumns {
    member_id: Option<i64>,
    state: serde_json::Value,
    ip: Option<ClientIp>,
    user_agent: Option<String>,
}

impl StateColumns {
    fn from_state(state: &SessionState) -> Result<Self, serde_json::Error> {
        // actix-identity stores the id JSON-encoded ("\"42\"").
        let member_id = match state.get(keys::IDENTITY) {
            Some(raw) => serde_json::from_str::<String>(raw)?.parse().ok(),
            None => None,
        };
        let decoded = |key: &str| {
            state
                .get(key)
                .and_then(|raw| serde_json::from_str::<String>(raw).ok())
        };
        Ok(Self {
            member_id,
            ip: decoded(keys::IP).and_then(|ip| ip.parse().ok()),
            user_agent: decoded(keys::USER_AGENT),
            state: serde_json::to_value(state)?,
        })
    }
}

/// The state without anything that belongs to a sign-in (actix-identity's keys and ours).
fn signed_out(mut state: SessionState) -> SessionState {
    state.retain(|key, _| !keys::is_sign_in_key(key));
    state
}

/// The new "last seen" when it is the only difference between two states (the once-a-minute
/// write of every signed-in session).
fn only_seen_at_moved(old: &SessionState, new: &SessionState) -> Option<i64> {
    let seen = new.get(keys::SEEN_AT)?;
    let same_otherwise = old.len() + usize::from(!old.contains_key(keys::SEEN_AT)) == new.len()
        && new
            .iter()
            .all(|(key, value)| key == keys::SEEN_AT || old.get(key) == Some(value));
    same_otherwise
        .then(|| serde_json::from_str(seen).ok())
        .flatten()
}

fn key_digest(key: &SessionKey) -> SessionKeyDigest {
    SessionKeyDigest::sha256(key.as_ref().as_bytes())
}

fn expiry(ttl: &CookieDuration) -> DateTime<Utc> {
    let ttl = chrono::Duration::seconds(ttl.whole_seconds().max(0));
    Utc::now() + ttl
}

fn idle(ttl: &CookieDuration) -> std::time::Duration {
    std::time::Duration::from_secs(ttl.whole_seconds().max(0).unsigned_abs())
}

fn other(err: impl Into<anyhow::Error>) -> anyhow::Error {
    err.into()
}

impl PgSessionStore {
    /// Inserts under a fresh key; shared by `save` and the fallback in `update`.
    async fn insert(
        &self,
        columns: StateColumns,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, DbError> {
        let key = generate_session_key();
        let digest = key_digest(&key);
        let expires_at = expiry(ttl);
        self.db
            .query(move |conn| {
                diesel::insert_into(sessions::table)
                    .values((
                        sessions::key_digest.eq(digest),
                        &columns,
                        sessions::expires_at.eq(expires_at),
                    ))
                    .execute(conn)
            })
            .await?;
        Ok(key)
    }
}

impl SessionStore for PgSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<SessionState>, LoadError> {
        let session = self
            .live
            .session(&key_digest(session_key))
            .await
            .map_err(|e| LoadError::Other(other(e)))?;
        Ok(session.map(|session| session.state))
    }

    async fn save(
        &self,
        session_state: SessionState,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, SaveError> {
        let columns = StateColumns::from_state(&session_state)
            .map_err(|e| SaveError::Serialization(other(e)))?;
        self.insert(columns, ttl)
            .await
            .map_err(|e| SaveError::Other(other(e)))
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: SessionState,
        ttl: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        let digest = key_digest(&session_key);
        let cached = self.live.cache().session(&digest);
        if let Some(seen_at) = cached.and_then(|old| only_seen_at_moved(&old.state, &session_state))
        {
            self.live.touch(&digest, seen_at, idle(ttl));
            return Ok(session_key);
        }
        let columns = StateColumns::from_state(&session_state)
            .map_err(|e| UpdateError::Serialization(other(e)))?;
        let expires_at = expiry(ttl);
        let updated = self
            .db
            .query(move |conn| {
                diesel::update(
                    sessions::table
                        .filter(sessions::key_digest.eq(digest))
                        .filter(sessions::expires_at.gt(diesel::dsl::now)),
                )
                .set((
                    &columns,
                    sessions::last_seen_at.eq(diesel::dsl::now),
                    sessions::expires_at.eq(expires_at),
                ))
                .execute(conn)
            })
            .await;
        // After the write (whatever its outcome), so that no read racing it stays cached.
        self.live.cache().forget_session(&digest);
        if updated.map_err(|e| UpdateError::Other(other(e)))? > 0 {
            return Ok(session_key);
        }
        // The row expired or was revoked while this request ran. Like the Redis store, keep the
        // state under a new key, but never a sign-in: a revoked session must not come back
        // because a request that was already in flight wrote to it.
        let anonymous = signed_out(session_state);
        let columns = StateColumns::from_state(&anonymous)
            .map_err(|e| UpdateError::Serialization(other(e)))?;
        self.insert(columns, ttl)
            .await
            .map_err(|e| UpdateError::Other(other(e)))
    }

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        ttl: &CookieDuration,
    ) -> Result<(), anyhow::Error> {
        let digest = key_digest(session_key);
        let seen_at = Utc::now().timestamp();
        self.live.touch(&digest, seen_at, idle(ttl));
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        let digest = key_digest(session_key);
        let deleted = self
            .db
            .query(move |conn| {
                diesel::delete(sessions::table.filter(sessions::key_digest.eq(digest)))
                    .execute(conn)
            })
            .await;
        self.live.cache().forget_session(&digest);
        deleted.map_err(other)?;
        Ok(())
    }
}
