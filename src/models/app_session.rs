//! `app_sessions`: each app's own session, tied to one Latchkey session and one app. A row is
//! made by `/auth/app` holding a one-time code, and traded once, by the app's
//! `/.latchkey/callback`, for the digest of the app's cookie. It ends with its Latchkey session
//! and its app (both cascade), or by the app's own sign-out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bytea, Int8, Text, Timestamptz};

use crate::domain::digests::{AppCodeDigest, AppKeyDigest, SessionKeyDigest};
use crate::domain::ids::{AppId, AppSessionId, SessionId};
use crate::schema::{app_sessions, apps, oidc_codes, sessions};

/// Writes the one-time code `/auth/app` hands to the app's callback.
pub fn issue_code(
    conn: &mut PgConnection,
    session_id: SessionId,
    app_id: AppId,
    code: &AppCodeDigest,
    expires_at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::insert_into(app_sessions::table)
        .values((
            app_sessions::session_id.eq(session_id),
            app_sessions::app_id.eq(app_id),
            app_sessions::code_digest.eq(code),
            app_sessions::code_expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(drop)
}

/// An app session just opened by its callback.
#[derive(Debug, QueryableByName)]
pub struct Redeemed {
    #[diesel(sql_type = Int8)]
    pub id: AppSessionId,
    #[diesel(sql_type = Int8)]
    pub session_id: SessionId,
    /// The member's stored address, for the audit.
    #[diesel(sql_type = Text)]
    pub email: String,
}

/// Trades a code for the app cookie's digest, in one statement: a code works once, only for
/// the app it was issued for, before it expires, and only while its Latchkey session and
/// member are live. Two racing callbacks cannot both win.
pub fn redeem(
    conn: &mut PgConnection,
    code: &AppCodeDigest,
    app_id: AppId,
    key: &AppKeyDigest,
    now: DateTime<Utc>,
) -> QueryResult<Option<Redeemed>> {
    diesel::sql_query(
        "UPDATE app_sessions AS a \
         SET code_digest = NULL, key_digest = $3, opened_at = $4 \
         FROM sessions AS s JOIN members AS m ON m.id = s.member_id \
         WHERE a.code_digest = $1 AND a.app_id = $2 AND a.code_expires_at > $4 \
           AND s.id = a.session_id AND s.expires_at > $4 AND m.active \
         RETURNING a.id, a.session_id, m.email",
    )
    .bind::<Bytea, _>(code)
    .bind::<Int8, _>(app_id)
    .bind::<Bytea, _>(key)
    .bind::<Timestamptz, _>(now)
    .get_result(conn)
    .optional()
}

/// A live app session as a check needs it: which app it opens, and the Latchkey session whose
/// life it shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAppSession {
    pub id: AppSessionId,
    pub app_id: AppId,
    pub session_key: SessionKeyDigest,
}

/// The app session whose cookie has this digest, while its Latchkey session has not expired.
pub fn find_live(
    conn: &mut PgConnection,
    key: &AppKeyDigest,
) -> QueryResult<Option<LiveAppSession>> {
    app_sessions::table
        .inner_join(sessions::table)
        .filter(app_sessions::key_digest.eq(key))
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .select((app_sessions::id, app_sessions::app_id, sessions::key_digest))
        .first::<(AppSessionId, AppId, SessionKeyDigest)>(conn)
        .optional()
        .map(|row| {
            row.map(|(id, app_id, session_key)| LiveAppSession {
                id,
                app_id,
                session_key,
            })
        })
}

/// Ends the app session with this cookie digest on this app (the app's sign-out); false when
/// there was none.
pub fn end(conn: &mut PgConnection, key: &AppKeyDigest, app_id: AppId) -> QueryResult<bool> {
    diesel::delete(
        app_sessions::table
            .filter(app_sessions::key_digest.eq(key))
            .filter(app_sessions::app_id.eq(app_id)),
    )
    .execute(conn)
    .map(|deleted| deleted > 0)
}

/// Ends one app session (its member is no longer let in).
pub fn end_by_id(conn: &mut PgConnection, id: AppSessionId) -> QueryResult<()> {
    diesel::delete(app_sessions::table.find(id))
        .execute(conn)
        .map(drop)
}

/// Deletes codes that were never redeemed and have expired (`purge`).
pub fn purge_unredeemed(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(
        app_sessions::table
            .filter(app_sessions::key_digest.is_null())
            .filter(app_sessions::code_expires_at.le(now)),
    )
    .execute(conn)
}

/// The names of the apps each of these sessions has opened (through its proxy or by OpenID
/// Connect), by session id.
pub fn opened_by_sessions(
    conn: &mut PgConnection,
    session_ids: &[SessionId],
) -> QueryResult<BTreeMap<SessionId, Vec<String>>> {
    let rows: Vec<(SessionId, String)> = app_sessions::table
        .inner_join(apps::table)
        .filter(app_sessions::session_id.eq_any(session_ids))
        .filter(app_sessions::key_digest.is_not_null())
        .order((app_sessions::session_id, apps::name.asc()))
        .select((app_sessions::session_id, apps::name))
        .distinct()
        .load(conn)?;
    // Apps signed in to through OpenID Connect: a code of the session that was exchanged.
    let oidc: Vec<(SessionId, String)> = oidc_codes::table
        .inner_join(apps::table)
        .filter(oidc_codes::session_id.eq_any(session_ids))
        .filter(oidc_codes::used_at.is_not_null())
        .select((oidc_codes::session_id, apps::name))
        .distinct()
        .load(conn)?;
    let mut by_session: BTreeMap<SessionId, Vec<String>> = BTreeMap::new();
    for (session_id, name) in rows.into_iter().chain(oidc) {
        let names = by_session.entry(session_id).or_default();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    for names in by_session.values_mut() {
        names.sort();
    }
    Ok(by_session)
}
