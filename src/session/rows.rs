//! Signed-in sessions as the sessions page sees them: list, find the current one, revoke.
//! The rows themselves are written by the session store ([`super::store`]).

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::domain::client_info::ClientInfo;
use crate::domain::client_ip::ClientIp;
use crate::domain::digests::SessionKeyDigest;
use crate::domain::ids::{MemberId, SessionId};
use crate::models::member::{Actor, Member};
use crate::schema::{members, sessions};

/// A live session of a member, with the member's address.
#[derive(Debug, Clone, Queryable, PartialEq, Eq)]
pub struct ActiveSession {
    pub id: SessionId,
    pub member_id: MemberId,
    pub email: String,
    pub ip: Option<ClientIp>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The session signed in with a passkey, or confirmed one since.
    pub proved_passkey: bool,
}

/// Whose sessions a query may see or touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everyone's (admins).
    Everyone,
    /// One member's own.
    Member(MemberId),
}

type Columns = (
    sessions::id,
    members::id,
    members::email,
    sessions::ip,
    sessions::user_agent,
    sessions::created_at,
    sessions::last_seen_at,
    diesel::expression::SqlLiteral<diesel::sql_types::Bool>,
);

fn columns() -> Columns {
    (
        sessions::id,
        members::id,
        members::email,
        sessions::ip,
        sessions::user_agent,
        sessions::created_at,
        sessions::last_seen_at,
        // The key is a constant of ours, not input.
        diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
            "jsonb_exists(sessions.state, '{}')",
            super::keys::PASSKEY_PROVED_AT
        )),
    )
}

fn active(scope: Scope) -> sessions::BoxedQuery<'static, diesel::pg::Pg> {
    let query = sessions::table
        .filter(sessions::member_id.is_not_null())
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .into_boxed();
    match scope {
        Scope::Everyone => query,
        Scope::Member(id) => query.filter(sessions::member_id.eq(id)),
    }
}

/// Live sessions in `scope`, most recently seen first.
pub fn list_active(conn: &mut PgConnection, scope: Scope) -> QueryResult<Vec<ActiveSession>> {
    let mut query = sessions::table
        .inner_join(members::table)
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .into_boxed();
    if let Scope::Member(id) = scope {
        query = query.filter(sessions::member_id.eq(id));
    }
    query
        .order((sessions::last_seen_at.desc(), sessions::id.desc()))
        .select(columns())
        .load(conn)
}

pub fn count_active(conn: &mut PgConnection, scope: Scope) -> QueryResult<i64> {
    active(scope).count().get_result(conn)
}

/// The id of the session whose state holds this CSRF token.
///
/// A handler cannot see its session key (actix-session keeps it private), but each session's
/// CSRF token is random, made at sign-in and stored in its state, so it names the row just as
/// well; this reads it without writing anything on every request.
pub fn current_id(
    conn: &mut PgConnection,
    member_id: MemberId,
    csrf_token: &str,
) -> QueryResult<Option<SessionId>> {
    // The store keeps each state value JSON-encoded, so the token is stored in quotes.
    let encoded = serde_json::Value::String(csrf_token.to_string()).to_string();
    active(Scope::Member(member_id))
        .filter(
            sessions::state
                .retrieve_as_text(super::keys::CSRF)
                .eq(encoded),
        )
        .select(sessions::id)
        .first(conn)
        .optional()
}

/// Ends one live session in `scope` and audits `session_revoked`; `None` when there is no such
/// session (or it is not in scope).
pub fn revoke(
    conn: &mut PgConnection,
    id: SessionId,
    scope: Scope,
    actor: &Member,
    client: &ClientInfo,
) -> QueryResult<Option<ActiveSession>> {
    conn.transaction(|conn| {
        let mut query = sessions::table
            .inner_join(members::table)
            .filter(sessions::id.eq(id))
            .filter(sessions::expires_at.gt(diesel::dsl::now))
            .into_boxed();
        if let Scope::Member(member_id) = scope {
            query = query.filter(sessions::member_id.eq(member_id));
        }
        let Some(session) = query
            .select(columns())
            .first::<ActiveSession>(conn)
            .optional()?
        else {
            return Ok(None);
        };
        // Of two racing revocations (or a revocation and a sign-out) only one deletes the
        // row, and only that one is audited.
        if diesel::delete(sessions::table.find(session.id)).execute(conn)? == 0 {
            return Ok(None);
        }
        NewAuditRow::new(AuditEvent::SessionRevoked)
            .email(&session.email)
            .client(client)
            .actor(Actor::Member(actor))
            .detail(format!(
                "session signed in {} from {} ({})",
                session.created_at.format("%Y-%m-%d %H:%M UTC"),
                session.ip.map_or("unknown IP".into(), |ip| ip.to_string()),
                session.user_agent.as_deref().unwrap_or("unknown browser"),
            ))
            .insert(conn)?;
        Ok(Some(session))
    })
}

/// Ends every session of `member` ("sign out everywhere") and audits it once.
pub fn revoke_all(
    conn: &mut PgConnection,
    member: &Member,
    client: &ClientInfo,
) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let ended = diesel::delete(sessions::table.filter(sessions::member_id.eq(member.id)))
            .execute(conn)?;
        NewAuditRow::new(AuditEvent::SessionRevoked)
            .email(&member.email)
            .client(client)
            .actor(Actor::Member(member))
            .detail(format!("signed out everywhere: {ended} sessions ended"))
            .insert(conn)?;
        Ok(ended)
    })
}

/// A live session row with its member (if signed in), as the session cache keeps it.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
pub struct LiveRow {
    pub id: SessionId,
    pub member_id: Option<MemberId>,
    pub state: serde_json::Value,
    pub expires_at: DateTime<Utc>,
    #[diesel(embed)]
    pub member: Option<Member>,
}

/// The live session whose key has this digest, and its member, in one statement.
pub fn find_live(
    conn: &mut PgConnection,
    key_digest: &SessionKeyDigest,
) -> QueryResult<Option<LiveRow>> {
    sessions::table
        .left_join(members::table)
        .filter(sessions::key_digest.eq(key_digest))
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .select(LiveRow::as_select())
        .first(conn)
        .optional()
}

/// Sets a live session's "last seen" (the state's JSON-encoded `seen_at`, and the column) and
/// moves its idle expiry forward, touching nothing else in the state.
pub fn touch(
    conn: &mut PgConnection,
    key_digest: &SessionKeyDigest,
    seen_at: &str,
    expires_at: DateTime<Utc>,
) -> QueryResult<()> {
    use diesel::sql_types::{Bytea, Text, Timestamptz};
    diesel::sql_query(
        "UPDATE sessions \
         SET state = jsonb_set(state, ARRAY[$2], to_jsonb($3::text)), \
             last_seen_at = now(), expires_at = GREATEST(expires_at, $4) \
         WHERE key_digest = $1 AND expires_at > now()",
    )
    .bind::<Bytea, _>(key_digest)
    .bind::<Text, _>(super::keys::SEEN_AT)
    .bind::<Text, _>(seen_at)
    .bind::<Timestamptz, _>(expires_at)
    .execute(conn)?;
    Ok(())
}
