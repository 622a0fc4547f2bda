//! `GET /sessions`, `POST /sessions/{id}/revoke`, `POST /sessions/revoke-all`: a member's
//! live sessions (an admin's view holds everyone's), and ending them.
//! The work is [`crate::session::page`].

use actix_web::{web, HttpRequest};
use serde::Serialize;

use crate::domain::client_info::ClientInfo;
use crate::domain::ids::SessionId;
use crate::middleware::guard::{admin_powers, CurrentMember};
use crate::models::member::Member;
use crate::session::page::{self, ListedSession, Revoked};
use crate::session::rows::Scope;
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

async fn render(
    req: &HttpRequest,
    state: &AppState,
    viewer: &Member,
    notice: Option<String>,
) -> PageResult {
    let scope = scope_of(req, state, viewer);
    let csrf_token = SessionData::of(req).csrf_token();
    let sessions = page::list(&state.db, viewer.id, csrf_token, scope).await?;
    let now = chrono::Utc::now();
    let views: Vec<SessionView> = sessions
        .into_iter()
        .map(
            |ListedSession {
                 session,
                 apps,
                 current,
             }| SessionView {
                apps,
                current,
                own: session.member_id == viewer.id,
                id: session.id,
                email: session.email,
                ip: session.ip.map(|ip| ip.to_string()),
                user_agent: session.user_agent,
                signed_in_at: Moment::new(session.created_at, now),
                last_seen_at: Moment::new(session.last_seen_at, now),
                proved_passkey: session.proved_passkey,
            },
        )
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
    let scope = scope_of(req, state, &viewer);
    let csrf_token = SessionData::of(req).csrf_token();
    let Revoked {
        session: revoked,
        was_current,
    } = page::revoke(&state.live, id, scope, &viewer, csrf_token, client)
        .await?
        .ok_or(PageError::NotFound)?;
    if was_current {
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
    page::revoke_all(&state.live, &viewer, client).await?;
    SessionData::of(&req).purge();
    Ok(redirect(&req, "/login", true))
}
