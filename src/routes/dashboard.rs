//! `GET /`: the dashboard. Auditors and admins see the whole team's numbers, a 30-day chart,
//! the latest events and the members whose access goes unused; a member sees their own
//! numbers, chart and events. HTMX polls it every 30 seconds for the partial.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{web, HttpRequest};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::audit::query::{self, FAILED_ATTEMPTS};
use crate::audit::rows::{AuditEvent, AuditRow};
use crate::db::DbError;
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::MemberId;
use crate::middleware::guard::CurrentMember;
use crate::models::dashboard::{self as summary, DayCount, UnusedAccess, UNUSED_AFTER_DAYS};
use crate::session::rows::{self, Scope};
use crate::state::AppState;
use crate::web::chart::chart;
use crate::web::errors::PageResult;
use crate::web::human::{browser_or_unknown, event_name_label, Moment};
use crate::web::pages::{render_standalone, Page};

const LATEST_EVENTS: i64 = 10;

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

struct Numbers {
    sign_ins: i64,
    failed: i64,
    sessions: i64,
    latest: Vec<AuditRow>,
    per_day: Vec<DayCount>,
    /// Only counted for the team's view (admins and auditors).
    unused: Vec<UnusedAccess>,
    counted_at: DateTime<Utc>,
}

/// How stale the dashboard's numbers may be. Counting a day of audit rows is the most
/// expensive thing a page view does; every tab polls it, and the numbers are a summary.
const NUMBERS_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// A recount that has not come back in this long was abandoned (its request went away):
/// the next view counts again.
const RECOUNT_ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

struct Entry {
    at: Instant,
    numbers: Arc<Numbers>,
    /// A view is recounting these stale numbers; the others show them meanwhile.
    recounting_since: Option<Instant>,
    /// The numbers' part of the page, rendered once (for a view without, with the
    /// deactivate links): the chart and tables are most of the page's template work.
    rendered: [Option<Arc<str>>; 2],
}

/// What a view does about its numbers.
enum Lookup {
    /// Fresh, or stale while another view recounts them; with their part of the page when
    /// a view rendered it already.
    Show(Arc<Numbers>, Option<Arc<str>>),
    /// This view counts (and puts the result).
    Count,
}

/// The dashboard's numbers per view (`None`: the team's; `Some(id)`: one member's), shared by
/// every worker of one application. When they go stale, one view recounts while the others
/// keep showing the stale ones, so many open dashboards never count all at once.
#[derive(Default)]
pub struct DashboardCache {
    entries: Mutex<HashMap<Option<MemberId>, Entry>>,
}

impl DashboardCache {
    fn lookup(&self, key: Option<MemberId>, can_deactivate: bool) -> Lookup {
        let Ok(mut entries) = self.entries.lock() else {
            return Lookup::Count;
        };
        let Some(entry) = entries.get_mut(&key) else {
            return Lookup::Count;
        };
        let show = |entry: &Entry| {
            Lookup::Show(
                Arc::clone(&entry.numbers),
                entry.rendered[usize::from(can_deactivate)].clone(),
            )
        };
        if entry.at.elapsed() < NUMBERS_FRESH_FOR {
            return show(entry);
        }
        match entry.recounting_since {
            Some(since) if since.elapsed() < RECOUNT_ABANDONED_AFTER => show(entry),
            _ => {
                entry.recounting_since = Some(Instant::now());
                Lookup::Count
            }
        }
    }

    fn put(&self, key: Option<MemberId>, numbers: Arc<Numbers>) {
        if let Ok(mut entries) = self.entries.lock() {
            // At most one entry per member and one for the team; long-stale ones go on
            // each write.
            entries.retain(|_, entry| entry.at.elapsed() < NUMBERS_FRESH_FOR * 12);
            entries.insert(
                key,
                Entry {
                    at: Instant::now(),
                    numbers,
                    recounting_since: None,
                    rendered: [None, None],
                },
            );
        }
    }

    /// Keeps the rendered part for these numbers (not for newer ones put meanwhile).
    fn keep_rendered(
        &self,
        key: Option<MemberId>,
        numbers: &Arc<Numbers>,
        can_deactivate: bool,
        html: Arc<str>,
    ) {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(entry) = entries.get_mut(&key) {
                if Arc::ptr_eq(&entry.numbers, numbers) {
                    entry.rendered[usize::from(can_deactivate)] = Some(html);
                }
            }
        }
    }

    /// A recount failed: the next view tries again.
    fn abandon_recount(&self, key: Option<MemberId>) {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(entry) = entries.get_mut(&key) {
                entry.recounting_since = None;
            }
        }
    }

    /// Forgets every view's numbers: after a change of members (a deactivation above all),
    /// "access not used" must not name someone who no longer has access, even for a few
    /// seconds. Other instances' caches catch up within [`NUMBERS_FRESH_FOR`].
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
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
        Lookup::Count => match count(state, email, scope, team_wide).await {
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
        // The numbers are cached per instance: say which one counted them.
        .with("instance", format!("process {}", std::process::id()))
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

async fn count(
    state: &AppState,
    email: Option<EmailAddress>,
    scope: Scope,
    team_wide: bool,
) -> Result<Numbers, DbError> {
    let now = Utc::now();
    let since = now - Duration::hours(24);
    state
        .db
        .query(move |conn| {
            let email = email.as_ref().map(EmailAddress::as_str);
            Ok(Numbers {
                sign_ins: query::count_since(conn, &[AuditEvent::SignedIn], since, email)?,
                failed: query::count_since(conn, &FAILED_ATTEMPTS, since, email)?,
                sessions: rows::count_active(conn, scope)?,
                latest: query::latest(conn, email, LATEST_EVENTS)?,
                per_day: summary::sign_ins_per_day(conn, now, email)?,
                unused: if team_wide {
                    summary::unused_access(conn, now)?
                } else {
                    Vec::new()
                },
                counted_at: now,
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(sign_ins: i64) -> Numbers {
        Numbers {
            sign_ins,
            failed: 0,
            sessions: 0,
            latest: Vec::new(),
            per_day: Vec::new(),
            unused: Vec::new(),
            counted_at: Utc::now(),
        }
    }

    fn shown(lookup: Lookup) -> Option<i64> {
        match lookup {
            Lookup::Show(numbers, _) => Some(numbers.sign_ins),
            Lookup::Count => None,
        }
    }

    #[test]
    fn stale_numbers_are_recounted_by_one_view_while_the_others_show_them() {
        let cache = DashboardCache::default();
        assert_eq!(shown(cache.lookup(None, true)), None, "nothing yet: count");
        cache.put(None, Arc::new(numbers(1)));
        assert_eq!(shown(cache.lookup(None, true)), Some(1));
        assert_eq!(
            shown(cache.lookup(Some(MemberId::new(7)), true)),
            None,
            "views are apart"
        );

        // Gone stale: the first view counts, every other one shows the stale numbers.
        let stale = Instant::now().checked_sub(NUMBERS_FRESH_FOR * 2).unwrap();
        cache.entries.lock().unwrap().get_mut(&None).unwrap().at = stale;
        assert_eq!(shown(cache.lookup(None, true)), None);
        for _ in 0..3 {
            assert_eq!(shown(cache.lookup(None, true)), Some(1));
        }
        // That count failed: the next view tries again.
        cache.abandon_recount(None);
        assert_eq!(shown(cache.lookup(None, true)), None);
        cache.put(None, Arc::new(numbers(2)));
        assert_eq!(shown(cache.lookup(None, true)), Some(2));
        cache.clear();
        assert_eq!(shown(cache.lookup(None, true)), None);
    }

    #[test]
    fn the_rendered_part_belongs_to_its_numbers_and_its_kind_of_view() {
        let rendered = |lookup: Lookup| match lookup {
            Lookup::Show(_, html) => html.map(|html| html.to_string()),
            Lookup::Count => None,
        };
        let cache = DashboardCache::default();
        let old = Arc::new(numbers(1));
        cache.put(None, Arc::clone(&old));
        cache.keep_rendered(None, &old, true, "admin view".into());
        assert_eq!(
            rendered(cache.lookup(None, true)).as_deref(),
            Some("admin view")
        );
        assert_eq!(
            rendered(cache.lookup(None, false)),
            None,
            "no links for auditors"
        );
        // Newer numbers arrived while a view rendered the old ones: not kept for them.
        let new = Arc::new(numbers(2));
        cache.put(None, Arc::clone(&new));
        cache.keep_rendered(None, &old, true, "stale".into());
        assert_eq!(rendered(cache.lookup(None, true)), None);
    }
}
