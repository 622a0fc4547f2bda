//! The dashboard's two summaries that read across the audit: sign-ins and failed attempts per
//! day, and the members whose access goes unused. Both are answered from indexes (see the
//! `dashboard_indexes` migration): neither reads more than the rows it counts, and neither
//! grows with the length of the audit.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, Nullable, Text, Timestamptz};

use crate::audit::query::FAILED_ATTEMPTS;
use crate::audit::rows::AuditEvent;
use crate::domain::ids::MemberId;

/// Days the chart shows, today (UTC) included.
pub const CHART_DAYS: i64 = 30;
/// A member who has not signed in for this long holds access they do not use.
pub const UNUSED_AFTER_DAYS: i64 = 90;

/// One day of the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCount {
    pub day: NaiveDate,
    pub sign_ins: i64,
    pub failed: i64,
}

#[derive(QueryableByName)]
struct DayEventCount {
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = Text)]
    event: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The first day of a chart that ends on `today`.
pub fn chart_start(today: NaiveDate) -> NaiveDate {
    today - Duration::days(CHART_DAYS - 1)
}

/// Sign-ins and failed attempts for each of the [`CHART_DAYS`] days up to `now` (UTC days),
/// every day present, oldest first; for one address or everyone.
///
/// Counted per `(day, event)` from `login_audit_event_occurred_at_idx`: an index-only range
/// scan for each event over the 30 days, whatever the audit holds before them.
pub fn sign_ins_per_day(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    email: Option<&str>,
) -> QueryResult<Vec<DayCount>> {
    let today = now.date_naive();
    let first = chart_start(today);
    let since = first.and_time(chrono::NaiveTime::MIN).and_utc();
    let mut events = vec![AuditEvent::SignedIn.as_str()];
    events.extend(FAILED_ATTEMPTS.iter().map(|event| event.as_str()));
    let rows: Vec<DayEventCount> = match email {
        None => diesel::sql_query(TEAM_SIGN_INS_PER_DAY)
            .bind::<Array<Text>, _>(events)
            .bind::<Timestamptz, _>(since)
            .load(conn)?,
        Some(email) => diesel::sql_query(MEMBER_SIGN_INS_PER_DAY)
            .bind::<Array<Text>, _>(events)
            .bind::<Timestamptz, _>(since)
            .bind::<Text, _>(email)
            .load(conn)?,
    };
    let mut days: Vec<DayCount> = (0..CHART_DAYS)
        .map(|offset| DayCount {
            day: first + Duration::days(offset),
            sign_ins: 0,
            failed: 0,
        })
        .collect();
    for row in rows {
        let Some(day) = days.iter_mut().find(|day| day.day == row.day) else {
            // A row stamped after `now` (another instance's clock): not on this chart.
            continue;
        };
        if row.event == AuditEvent::SignedIn.as_str() {
            day.sign_ins += row.n;
        } else {
            day.failed += row.n;
        }
    }
    Ok(days)
}

/// Two statements rather than one with `$3 IS NULL OR email = $3`: the team's count is then
/// an index-only scan (the address is not in the index), and a prepared statement's generic
/// plan cannot lose that.
pub const TEAM_SIGN_INS_PER_DAY: &str = "\
SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, event, count(*) AS n \
FROM login_audit \
WHERE event = ANY($1) AND occurred_at >= $2 \
GROUP BY 1, 2";

/// A member's own chart: their rows in the window, through the same index.
pub const MEMBER_SIGN_INS_PER_DAY: &str = "\
SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, event, count(*) AS n \
FROM login_audit \
WHERE event = ANY($1) AND occurred_at >= $2 AND email = $3 \
GROUP BY 1, 2";

/// An active member who has not signed in for [`UNUSED_AFTER_DAYS`] days.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
#[diesel(check_for_backend(Pg))]
pub struct UnusedAccess {
    #[diesel(sql_type = BigInt)]
    pub id: MemberId,
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Text)]
    pub role: String,
    #[diesel(sql_type = Timestamptz)]
    pub added_at: DateTime<Utc>,
    /// `None`: no sign-in in the audit (never, or before the retention purge).
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_signed_in_at: Option<DateTime<Utc>>,
}

/// Active members with no sign-in in the last [`UNUSED_AFTER_DAYS`] days, who have been
/// members at least that long (someone added last week has not had the chance yet).
/// Never-signed-in first, then the longest unused.
///
/// One probe per active member into the partial index `login_audit_sign_ins_idx`
/// (`(email, occurred_at) WHERE event = 'signed_in'`), reading one index entry each.
pub fn unused_access(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> QueryResult<Vec<UnusedAccess>> {
    diesel::sql_query(UNUSED_ACCESS)
        .bind::<Timestamptz, _>(now - Duration::days(UNUSED_AFTER_DAYS))
        .load(conn)
}

pub const UNUSED_ACCESS: &str = "\
SELECT m.id, m.email, m.role, m.created_at AS added_at, last.at AS last_signed_in_at \
FROM members m \
LEFT JOIN LATERAL ( \
    SELECT max(a.occurred_at) AS at FROM login_audit a \
    WHERE a.event = 'signed_in' AND a.email = m.email \
) last ON true \
WHERE m.active AND m.created_at < $1 AND (last.at IS NULL OR last.at < $1) \
ORDER BY last.at ASC NULLS FIRST, m.email";
