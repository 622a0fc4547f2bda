//! The sessions page's work, free of HTTP: the live sessions in a scope (with the apps each
//! opened, and which is the viewer's own), ending one, and ending all of a member's. Each is
//! one round trip through [`super::rows`]; an ending drops the member from this instance's
//! cache, so that its next request does not wait for the notification to come back.

use diesel::PgConnection;

use super::cache::Live;
use super::rows::{self, ActiveSession, Scope};
use crate::db::{Db, DbError};
use crate::domain::client_info::ClientInfo;
use crate::domain::ids::{MemberId, SessionId};
use crate::models::app_session;
use crate::models::member::Member;

/// A live session as the page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSession {
    pub session: ActiveSession,
    /// Names of the apps it has opened through forward auth.
    pub apps: Vec<String>,
    /// It is the session of the request that asked.
    pub current: bool,
}

/// Live sessions in `scope`, most recently seen first. The viewer's own session is
/// recognised by its CSRF token (see [`rows::current_id`]).
pub async fn list(
    db: &Db,
    viewer: MemberId,
    csrf_token: Option<String>,
    scope: Scope,
) -> Result<Vec<ListedSession>, DbError> {
    db.query(move |conn| {
        let current = current_id(conn, viewer, csrf_token.as_deref())?;
        let sessions = rows::list_active(conn, scope)?;
        let ids: Vec<SessionId> = sessions.iter().map(|s| s.id).collect();
        let mut opened = app_session::opened_by_sessions(conn, &ids)?;
        Ok(sessions
            .into_iter()
            .map(|session| ListedSession {
                apps: opened.remove(&session.id).unwrap_or_default(),
                current: Some(session.id) == current,
                session,
            })
            .collect())
    })
    .await
}

/// A session [`revoke`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub session: ActiveSession,
    /// It was the session of the request that ended it.
    pub was_current: bool,
}

/// Ends one live session in `scope`, audited with `actor`; `None` when there is no such
/// session in scope.
pub async fn revoke(
    live: &Live,
    id: SessionId,
    scope: Scope,
    actor: &Member,
    csrf_token: Option<String>,
    client: ClientInfo,
) -> Result<Option<Revoked>, DbError> {
    let actor = actor.clone();
    let revoked = live
        .db()
        .query(move |conn| {
            let current = current_id(conn, actor.id, csrf_token.as_deref())?;
            let revoked = rows::revoke(conn, id, scope, &actor, &client)?;
            Ok(revoked.map(|session| Revoked {
                was_current: Some(session.id) == current,
                session,
            }))
        })
        .await?;
    if let Some(revoked) = &revoked {
        live.cache().forget_member(revoked.session.member_id);
    }
    Ok(revoked)
}

/// Ends every session of `member` ("sign out everywhere"), audited once; how many ended.
pub async fn revoke_all(
    live: &Live,
    member: &Member,
    client: ClientInfo,
) -> Result<usize, DbError> {
    let owner = member.clone();
    let ended = live
        .db()
        .query(move |conn| rows::revoke_all(conn, &owner, &client))
        .await;
    live.cache().forget_member(member.id);
    ended
}

fn current_id(
    conn: &mut PgConnection,
    member_id: MemberId,
    csrf_token: Option<&str>,
) -> diesel::QueryResult<Option<SessionId>> {
    match csrf_token {
        Some(token) => rows::current_id(conn, member_id, token),
        None => Ok(None),
    }
}
