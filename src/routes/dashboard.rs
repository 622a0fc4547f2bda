//! `GET /`: the dashboard. Auditors and admins see the whole team's numbers and latest
//! events; a member sees their own. HTMX polls it every 30 seconds for the partial.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Duration, Utc};
use serde::Serialize;

use crate::db::DbError;
use crate::middleware::guard::CurrentMember;
use crate::models::audit::{AuditEvent, AuditRow};
use crate::models::audit_query::{self, FAILED_ATTEMPTS};
use crate::models::session::{self, Scope};
use crate::state::AppState;
use crate::web::errors::{respond, PageResult};
use crate::web::pages::Page;

const LATEST_EVENTS: i64 = 10;

#[derive(Debug, Serialize)]
struct EventView {
    occurred_at: String,
    event: String,
    email: Option<String>,
    email_query: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    detail: String,
}

impl From<AuditRow> for EventView {
    fn from(row: AuditRow) -> Self {
        let email_query = row.email.as_ref().map(|email| {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("email", email)
                .finish()
        });
        Self {
            occurred_at: row.occurred_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            event: row.event,
            email: row.email,
            email_query,
            ip: row.ip,
            user_agent: row.user_agent,
            detail: row.detail,
        }
    }
}

struct Numbers {
    sign_ins: i64,
    failed: i64,
    sessions: i64,
    latest: Vec<AuditRow>,
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(member): CurrentMember,
) -> HttpResponse {
    respond(&req, render(&req, &state, member).await)
}

async fn render(
    req: &HttpRequest,
    state: &AppState,
    member: crate::models::member::Member,
) -> PageResult {
    let team_wide = member.role().can_read_audit();
    // A member's view is about themselves only: their address and their sessions.
    let email = (!team_wide).then(|| member.email.clone());
    let scope = if team_wide {
        Scope::Everyone
    } else {
        Scope::Member(member.id)
    };
    let since = Utc::now() - Duration::hours(24);
    let numbers = state
        .db
        .run(move |conn| {
            let email = email.as_deref();
            Ok::<_, DbError>(Numbers {
                sign_ins: audit_query::count_since(conn, &[AuditEvent::SignedIn], since, email)?,
                failed: audit_query::count_since(conn, &FAILED_ATTEMPTS, since, email)?,
                sessions: session::count_active(conn, scope)?,
                latest: audit_query::latest(conn, email, LATEST_EVENTS)?,
            })
        })
        .await?;
    let latest: Vec<EventView> = numbers.latest.into_iter().map(EventView::from).collect();
    Ok(Page::new("dashboard", "Dashboard")
        .with("team_wide", team_wide)
        .with("sign_ins", numbers.sign_ins)
        .with("failed", numbers.failed)
        .with("sessions", numbers.sessions)
        .with("latest", latest)
        .with("updated_at", Utc::now().format("%H:%M:%S").to_string())
        .render(req))
}
