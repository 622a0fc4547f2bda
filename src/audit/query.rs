//! Reading the login audit for pages: filtered keyset pages (newest first), the rows that
//! explain a sign-in, and the dashboard's counts. Writing stays in `audit.rs`.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;

use std::collections::HashSet;

use super::rows::{AuditEvent, AuditRow};
use crate::db::{Db, DbError};
use crate::domain::client_ip::ClientIp;
use crate::domain::ids::{AuditId, RequestId};
use crate::schema::login_audit;

/// Events that count as a failed sign-in attempt on the dashboard.
pub const FAILED_ATTEMPTS: [AuditEvent; 8] = [
    AuditEvent::LinkInvalid,
    AuditEvent::LinkExpired,
    AuditEvent::LinkReused,
    AuditEvent::LinkWrongBrowser,
    AuditEvent::CodeFailed,
    AuditEvent::ApprovalMismatch,
    AuditEvent::LoginDenied,
    AuditEvent::LoginThrottled,
];

/// What the audit pages filter by; every field already validated. `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Canonical address, compared exactly.
    pub email: Option<String>,
    pub event: Option<AuditEvent>,
    pub ip: Option<ClientIp>,
    /// Inclusive lower bound.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub until: Option<DateTime<Utc>>,
    /// The sign-in request the rows belong to.
    pub request: Option<RequestId>,
}

type BoxedAudit<'a> = login_audit::BoxedQuery<'a, Pg>;

impl AuditFilter {
    fn apply<'a>(&'a self, mut query: BoxedAudit<'a>) -> BoxedAudit<'a> {
        if let Some(email) = &self.email {
            query = query.filter(login_audit::email.eq(email));
        }
        if let Some(event) = self.event {
            query = query.filter(login_audit::event.eq(event));
        }
        if let Some(ip) = self.ip {
            query = query.filter(login_audit::ip.eq(ip));
        }
        if let Some(from) = self.from {
            query = query.filter(login_audit::occurred_at.ge(from));
        }
        if let Some(until) = self.until {
            query = query.filter(login_audit::occurred_at.lt(until));
        }
        if let Some(request) = self.request {
            query = query.filter(login_audit::request_id.eq(request));
        }
        query
    }
}

/// Up to `limit` rows matching `filter`, newest first, strictly older than `before` (an id).
///
/// Ids only grow, so a page keyed on the last id shown neither skips nor repeats rows when
/// new ones arrive between fetches (they land before the first page, not inside later ones).
///
/// With a date range the rows are ordered by `(occurred_at, id)` instead, and the cursor
/// compares on both: the planner does not know that ids and times rise together, and walking
/// the primary key back from the newest row would read every row newer than the range
/// (seconds on 10 million rows; through the `occurred_at` index it is a fraction of a
/// millisecond, see docs/audit-indexes.md).
pub fn page(
    conn: &mut PgConnection,
    filter: &AuditFilter,
    before: Option<AuditId>,
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    let mut query = filter.apply(login_audit::table.into_boxed());
    let by_time = filter.from.is_some() || filter.until.is_some();
    if by_time {
        if let Some(before) = before {
            let cursor_time: Option<DateTime<Utc>> = login_audit::table
                .find(before)
                .select(login_audit::occurred_at)
                .first(conn)
                .optional()?;
            query = match cursor_time {
                Some(at) => query.filter(
                    login_audit::occurred_at.lt(at).or(login_audit::occurred_at
                        .eq(at)
                        .and(login_audit::id.lt(before))),
                ),
                // The cursor row was purged meanwhile: everything it could point past is older.
                None => query.filter(login_audit::id.lt(before)),
            };
        }
        query = query.order((login_audit::occurred_at.desc(), login_audit::id.desc()));
    } else {
        if let Some(before) = before {
            query = query.filter(login_audit::id.lt(before));
        }
        query = query.order(login_audit::id.desc());
    }
    query.limit(limit).select(AuditRow::as_select()).load(conn)
}

/// The `link_requested` rows of these sign-in requests: where each request was asked from.
pub fn link_requests(
    conn: &mut PgConnection,
    request_ids: &[RequestId],
) -> QueryResult<Vec<AuditRow>> {
    if request_ids.is_empty() {
        return Ok(Vec::new());
    }
    login_audit::table
        .filter(login_audit::event.eq(AuditEvent::LinkRequested))
        .filter(login_audit::request_id.eq_any(request_ids))
        .order(login_audit::id.asc())
        .select(AuditRow::as_select())
        .load(conn)
}

/// How many rows of these events occurred since `since`, for one address or everyone.
pub fn count_since(
    conn: &mut PgConnection,
    events: &[AuditEvent],
    since: DateTime<Utc>,
    email: Option<&str>,
) -> QueryResult<i64> {
    let mut query = login_audit::table
        .filter(login_audit::event.eq_any(events))
        .filter(login_audit::occurred_at.ge(since))
        .into_boxed();
    if let Some(email) = email {
        query = query.filter(login_audit::email.eq(email));
    }
    query.count().get_result(conn)
}

/// The latest `limit` rows, for one address or everyone.
pub fn latest(
    conn: &mut PgConnection,
    email: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    let filter = AuditFilter {
        email: email.map(str::to_string),
        ..AuditFilter::default()
    };
    page(conn, &filter, None, limit)
}

/// One page of the audit, newest first, with the `link_requested` rows its `signed_in` rows
/// redeemed (to tell whether the device that asked and the one that signed in differ).
#[derive(Debug)]
pub struct AuditPage {
    pub rows: Vec<AuditRow>,
    pub requested: Vec<AuditRow>,
    /// There is an older page after this one.
    pub has_older: bool,
}

pub async fn page_of(
    db: &Db,
    filter: AuditFilter,
    before: Option<AuditId>,
    size: i64,
) -> Result<AuditPage, DbError> {
    db.query(move |conn| {
        // One more than a page tells whether there is an older page.
        let mut rows = page(conn, &filter, before, size + 1)?;
        let request_ids: Vec<RequestId> = rows
            .iter()
            .filter(|row| row.event == AuditEvent::SignedIn.as_str())
            .filter_map(|row| row.request_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let requested = link_requests(conn, &request_ids)?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let has_older = rows.len() > size;
        rows.truncate(size);
        Ok(AuditPage {
            rows,
            requested,
            has_older,
        })
    })
    .await
}
