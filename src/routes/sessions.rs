//! `GET /sessions`, `POST /sessions/{id}/revoke`, `POST /sessions/revoke-all`: a member's
//! live sessions (an admin's view holds everyone's), and ending them.

use actix_web::{web, HttpRequest};
use serde::Serialize;

use crate::audit::rows::ClientInfo;
use crate::db::DbError;
use crate::domain::ids::SessionId;
use crate::middleware::guard::{admin_powers, CurrentMember};
use crate::models::member::Member;
use crate::session::rows::{self, ActiveSession, Scope};
use crate::session::SessionData;
use crate::state::AppState;
use crate::web::client::Client;
use crate::web::errors::{PageError, PageResult};
use crate::web::human::Moment;
use crate::web::pages::{is_htmx, Page};
use crate::web::redirect::{redirect, see_other};

#[derive(Debug, Serialize)]
struct SessionView {
    id: SessionId,
    email: String,
    ip: Option<String>,
    user_agent: Option<String>,
    signed_in_at: Moment,
    last_seen_at: Moment,
    current: bool,
    own: bool,
    /// Names of the apps this session has opened through forward auth.
    apps: Vec<String>,
    proved_passkey: bool,
}

/// An admin sees and ends everyone's sessions; with `LATCHKEY_ADMIN_PASSKEY=required`, only
/// once this session proved a passkey (until then, their own, like a member).
fn scope_of(req: &HttpRequest, state: &AppState, member: &Member) -> Scope {
    if admin_powers(&state.settings, &SessionData::of(req), member) {
        Scope::Everyone
    } else {
        Scope::Member(member.id)
    }
}

/// The id of the session this request belongs to. Handlers never see the session key, so
/// the session is recognised by its CSRF token (random, made at sign-in, kept in its state):
/// a read, with nothing extra written per request.
async fn current_session_id(
    req: &HttpRequest,
    state: &AppState,
    member: &Member,
) -> Result<Option<SessionId>, DbError> {
    let Some(token) = SessionData::of(req).csrf_token() else {
        return Ok(None);
    };
    let member_id = member.id;
    state
        .db
        .query(move |conn| rows::current_id(conn, member_id, &token))
        .await
}

async fn render(
    req: &HttpRequest,
    state: &AppState,
    viewer: &Member,
    notice: Option<String>,
) -> PageResult {
    let current = current_session_id(req, state, viewer).await?;
    let scope = scope_of(req, state, viewer);
    let (sessions, mut opened) = state
        .db
        .query(move |conn| {
            let sessions = rows::list_active(conn, scope)?;
            let ids: Vec<SessionId> = sessions.iter().map(|s| s.id).collect();
            let opened = crate::models::app::opened_by_sessions(conn, &ids)?;
            Ok((sessions, opened))
        })
        .await?;
    let now = chrono::Utc::now();
    let views: Vec<SessionView> = sessions
        .into_iter()
        .map(|session: ActiveSession| SessionView {
            apps: opened.remove(&session.id).unwrap_or_default(),
            current: Some(session.id) == current,
            own: session.member_id == viewer.id,
            id: session.id,
            email: session.email,
            ip: session.ip.map(|ip| ip.to_string()),
            user_agent: session.user_agent,
            signed_in_at: Moment::new(session.created_at, now),
            last_seen_at: Moment::new(session.last_seen_at, now),
            proved_passkey: session.proved_passkey,
        })
        .collect();
    let everyone = scope == Scope::Everyone;
    Ok(Page::new("sessions", "Sessions")
        .with("sessions", views)
        .with("everyone", everyone)
        .with("needs_passkey", viewer.role().is_admin() && !everyone)
        .with("notice", notice)
        .render(req))
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(viewer): CurrentMember,
) -> PageResult {
    render(&req, &state, &viewer, None).await
}

pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(viewer): CurrentMember,
    Client(client): Client,
    id: web::Path<String>,
) -> PageResult {
    revoke_one(&req, &state, viewer, client, &id).await
}

async fn revoke_one(
    req: &HttpRequest,
    state: &AppState,
    viewer: Member,
    client: ClientInfo,
    id: &str,
) -> PageResult {
    // Someone else's session is "not found" to a member: its existence is not theirs to know.
    let id = SessionId::parse(id).ok_or(PageError::NotFound)?;
    let current = current_session_id(req, state, &viewer).await?;
    let scope = scope_of(req, state, &viewer);
    let actor = viewer.clone();
    let revoked = state
        .db
        .query(move |conn| rows::revoke(conn, id, scope, &actor, &client))
        .await?
        .ok_or(PageError::NotFound)?;
    // This instance's next request must not wait for the notification to come back.
    state.live.cache().forget_member(revoked.member_id);
    if Some(revoked.id) == current {
        SessionData::of(req).purge();
        return Ok(redirect(req, "/login", true));
    }
    if !is_htmx(req) {
        return Ok(see_other("/sessions"));
    }
    let whose = if revoked.member_id == viewer.id {
        "Your session".to_string()
    } else {
        format!("The session of {}", revoked.email)
    };
    let notice = format!(
        "{whose} from {} has ended.",
        revoked
            .ip
            .map_or("an unknown address".into(), |ip| ip.to_string())
    );
    render(req, state, &viewer, Some(notice)).await
}

/// Signs the member out everywhere, this browser included.
pub async fn revoke_all(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(viewer): CurrentMember,
    Client(client): Client,
) -> PageResult {
    let viewer_id = viewer.id;
    let ended = state
        .db
        .query(move |conn| rows::revoke_all(conn, &viewer, &client))
        .await;
    state.live.cache().forget_member(viewer_id);
    match ended {
        Ok(_) => {
            SessionData::of(&req).purge();
            Ok(redirect(&req, "/login", true))
        }
        Err(err) => Err(err.into()),
    }
}
