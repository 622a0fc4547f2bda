//! The dashboard's numbers: sign-ins and failed attempts in the last day, live sessions, the
//! latest events, a 30-day chart and (for the team's view) the access nobody uses, counted in
//! one round trip.

use chrono::{DateTime, Duration, Utc};

use crate::audit::query::{self, FAILED_ATTEMPTS};
use crate::audit::rows::{AuditEvent, AuditRow};
use crate::db::{Db, DbError};
use crate::domain::email_address::EmailAddress;
use crate::models::dashboard::{self as summary, DayCount, UnusedAccess};
use crate::session::rows::{self, Scope};

/// How many of the latest events a view shows.
const LATEST_EVENTS: i64 = 10;

/// What the dashboard counts for one view.
#[derive(Debug)]
pub struct Numbers {
    pub sign_ins: i64,
    pub failed: i64,
    pub sessions: i64,
    pub latest: Vec<AuditRow>,
    pub per_day: Vec<DayCount>,
    /// Only counted for the team's view (admins and auditors).
    pub unused: Vec<UnusedAccess>,
    pub counted_at: DateTime<Utc>,
}

pub async fn count(
    db: &Db,
    email: Option<EmailAddress>,
    scope: Scope,
    team_wide: bool,
) -> Result<Numbers, DbError> {
    let now = Utc::now();
    let since = now - Duration::hours(24);
    db.query(move |conn| {
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
