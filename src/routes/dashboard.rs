//! `GET /`: the dashboard. Auditors and admins see the whole team's numbers, a 30-day chart,
//! the latest events and the members whose access goes unused; a member sees their own
//! numbers, chart and events. HTMX polls it every 30 seconds for the partial.

use std::sync::Arc;

use actix_web::{web, HttpRequest};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::rows::AuditRow;
use crate::dashboard::cache::{DashboardCache, Lookup};
use crate::dashboard::numbers::{count, Numbers};
use crate::db::DbError;
use crate::domain::ids::MemberId;
use crate::middleware::guard::CurrentMember;
use crate::models::dashboard::{UnusedAccess, UNUSED_AFTER_DAYS};
use crate::session::rows::Scope;
use crate::state::AppState;
use crate::web::chart::chart;
use crate::web::errors::PageResult;
use crate::web::human::{browser_or_unknown, event_name_label, Moment};
use crate::web::pages::{render_standalone, Page};

#[derive(Debug, Serialize)]
struct EventView {
    at: Moment,
    /// The contract's name, for `data-event` (scripts and tests read it).
    event: String,
    label: String,
    email: Option<String>,
    email_query: Option<String>,
    ip: Option<String>,
    browser: String,
    user_agent: Option<String>,
    detail: String,
}

impl EventView {
    fn new(row: AuditRow, now: DateTime<Utc>) -> Self {
        let email_query = row.email.as_ref().map(|email| {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("email", email)
                .finish()
        });
        Self {
            at: Moment::new(row.occurred_at, now),
            label: event_name_label(&row.event).into_owned(),
            event: row.event,
            email: row.email,
            email_query,
            ip: row.ip,
            browser: browser_or_unknown(row.user_agent.as_deref()),
            user_agent: row.user_agent,
            detail: row.detail,
        }
    }
}

/// A member in "access not used".
#[derive(Debug, Serialize)]
struct UnusedView {
    id: MemberId,
    email: String,
    role: String,
    added: Moment,
    /// `None`: never signed in (as far as the audit remembers).
    last_signed_in: Option<Moment>,
}

impl UnusedView {
    fn new(member: UnusedAccess, now: DateTime<Utc>) -> Self {
        Self {
            id: member.id,
            email: member.email,
            role: member.role,
            added: Moment::new(member.added_at, now),
            last_signed_in: member.last_signed_in_at.map(|at| Moment::new(at, now)),
        }
    }
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    cache: web::Data<DashboardCache>,
    CurrentMember(member): CurrentMember,
) -> PageResult {
    render(&req, &state, &cache, member).await
}

async fn render(
    req: &HttpRequest,
    state: &AppState,
    cache: &DashboardCache,
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
    let key = (!team_wide).then_some(member.id);
    let can_deactivate = member.role().is_admin();
    let (numbers, rendered) = match cache.lookup(key, can_deactivate) {
        Lookup::Show(numbers, rendered) => (numbers, rendered),
        Lookup::Count => match count(&state.db, email, scope, team_wide).await {
            Ok(numbers) => {
                let numbers = Arc::new(numbers);
                cache.put(key, Arc::clone(&numbers));
                (numbers, None)
            }
            Err(err) => {
                cache.abandon_recount(key);
                return Err(err.into());
            }
        },
    };
    let numbers_html = match rendered {
        Some(html) => html,
        None => {
            let html: Arc<str> = render_numbers(&numbers, team_wide, can_deactivate)
                .map_err(|e| anyhow::anyhow!("rendering the dashboard's numbers: {e}"))?
                .into();
            cache.keep_rendered(key, &numbers, can_deactivate, Arc::clone(&html));
            html
        }
    };
    let launcher = launcher(state, member).await?;
    Ok(Page::new("dashboard", "Dashboard")
        .with("apps", launcher)
        .with_html("numbers", numbers_html)
        // The numbers are cached per instance: say which one counted them, to those who read
        // the audit and may be asked why two instances differ. A process id means nothing to
        // a member and tells them about the servers, so members see only the time.
        .with(
            "instance",
            team_wide.then(|| format!("process {}", std::process::id())),
        )
        .with(
            "updated_at",
            numbers.counted_at.format("%H:%M:%S").to_string(),
        )
        .render(req))
}

/// The numbers' part of the page: once per count and kind of view, so relative times in it
/// ("3 minutes ago") are as of the count, at most a few seconds old.
fn render_numbers(
    numbers: &Numbers,
    team_wide: bool,
    can_deactivate: bool,
) -> Result<String, String> {
    let now = numbers.counted_at;
    let latest: Vec<EventView> = numbers
        .latest
        .iter()
        .cloned()
        .map(|row| EventView::new(row, now))
        .collect();
    let unused: Vec<UnusedView> = numbers
        .unused
        .iter()
        .cloned()
        .map(|member| UnusedView::new(member, now))
        .collect();
    let mut context = tera::Context::new();
    context.insert("team_wide", &team_wide);
    context.insert("sign_ins", &numbers.sign_ins);
    context.insert("failed", &numbers.failed);
    context.insert("sessions", &numbers.sessions);
    context.insert("latest", &latest);
    context.insert("chart", &chart(&numbers.per_day));
    context.insert("unused", &unused);
    context.insert("unused_after_days", &UNUSED_AFTER_DAYS);
    context.insert("can_deactivate", &can_deactivate);
    render_standalone("partials/dashboard_numbers.html", &context)
}

/// An app in the launcher: its name and where to open it.
#[derive(Debug, Serialize)]
struct LauncherEntry {
    name: String,
    url: String,
}

/// The apps this member may open, from the session cache (an app's change or removal
/// empties it on every instance, so a removed app disappears at once).
async fn launcher(
    state: &AppState,
    member: crate::models::member::Member,
) -> Result<Vec<LauncherEntry>, DbError> {
    let apps = state.live.apps().await?;
    Ok(apps
        .iter()
        .filter(|app| app.admits(&member))
        .map(|app| LauncherEntry {
            url: format!("{}/", app.origin),
            name: app.name.clone(),
        })
        .collect())
}
