//! `GET /audit` and `GET /audit.csv`: the login audit, newest first, filtered by `email`,
//! `event`, `ip`, `from`, `to` (dates, UTC, `to` inclusive) and `request`, paged by the keyset
//! cursor `before` (an id). The page answers HTMX with the rows alone; the CSV is streamed a
//! batch at a time, so an export of any size holds at most one batch in memory.

use std::collections::{HashMap, HashSet};

use actix_web::http::{header, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;

use crate::domain::client_ip::ClientIp;
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::{AuditId, RequestId};
use crate::models::audit::{AuditEvent, AuditRow};
use crate::models::audit_query::{self, AuditFilter};
use crate::state::AppState;
use crate::web::errors::PageResult;
use crate::web::human::{browser_or_unknown, event_name_label, event_options, Moment};
use crate::web::pages::{is_htmx, Page};

/// Rows on one page of `/audit`.
const PAGE_SIZE: i64 = 50;
/// Rows fetched per database round trip while streaming the CSV.
const CSV_BATCH: i64 = 1000;

const CSV_HEADER: [&str; 9] = [
    "id",
    "occurred_at",
    "event",
    "email",
    "ip",
    "user_agent",
    "actor",
    "detail",
    "request_id",
];

/// The filter fields as typed, to fill the form again (and to build links that keep them).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FilterForm {
    email: String,
    event: String,
    ip: String,
    from: String,
    to: String,
    request: String,
}

impl FilterForm {
    /// The filters as a query string, with `before` appended when given; empty fields left out.
    fn query(&self, before: Option<AuditId>) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("email", &self.email),
            ("event", &self.event),
            ("ip", &self.ip),
            ("from", &self.from),
            ("to", &self.to),
            ("request", &self.request),
        ] {
            if !value.is_empty() {
                out.append_pair(name, value);
            }
        }
        if let Some(before) = before {
            out.append_pair("before", &before.to_string());
        }
        out.finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("Email: {0}")]
    Email(crate::domain::email_address::EmailAddressError),
    #[error("Event: pick one of the listed events.")]
    Event,
    #[error("IP: enter a whole IPv4 or IPv6 address, such as 203.0.113.7.")]
    Ip,
    #[error("From: enter a date as YYYY-MM-DD.")]
    From,
    #[error("To: enter a date as YYYY-MM-DD.")]
    To,
    #[error("The From date is after the To date.")]
    Range,
    #[error("Request: enter a request number.")]
    Request,
    #[error("The page cursor is not valid; start again from the newest events.")]
    Before,
}

/// A validated query: the filter, the cursor, and the fields as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub filter: AuditFilter,
    pub before: Option<AuditId>,
    pub form: FilterForm,
}

/// Parses `/audit`'s query string. Empty fields mean "any"; a repeated field keeps its last
/// value; unknown fields are ignored. Always returns the form as typed, for the error page.
pub fn parse_query(query: &str) -> (FilterForm, Result<AuditQuery, FilterError>) {
    let mut form = FilterForm::default();
    let mut before = String::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim().chars().take(320).collect::<String>();
        match &*name {
            "email" => form.email = value,
            "event" => form.event = value,
            "ip" => form.ip = value,
            "from" => form.from = value,
            "to" => form.to = value,
            "request" => form.request = value,
            "before" => before = value,
            _ => {}
        }
    }
    let parsed = validate(&form, &before).map(|(filter, before)| AuditQuery {
        filter,
        before,
        form: form.clone(),
    });
    (form, parsed)
}

fn validate(
    form: &FilterForm,
    before: &str,
) -> Result<(AuditFilter, Option<AuditId>), FilterError> {
    let optional = |value: &str| (!value.is_empty()).then(|| value.to_string());
    let email = optional(&form.email)
        .map(|email| EmailAddress::parse(&email).map_err(FilterError::Email))
        .transpose()?
        .map(|email| email.as_str().to_string());
    let event = optional(&form.event)
        .map(|name| AuditEvent::parse(&name).ok_or(FilterError::Event))
        .transpose()?;
    let ip = optional(&form.ip)
        .map(|ip| ip.parse::<ClientIp>().map_err(|_| FilterError::Ip))
        .transpose()?;
    let from = optional(&form.from)
        .map(|date| parse_date(&date).ok_or(FilterError::From))
        .transpose()?;
    let to = optional(&form.to)
        .map(|date| parse_date(&date).ok_or(FilterError::To))
        .transpose()?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(FilterError::Range);
        }
    }
    let request = optional(&form.request)
        .map(|id| RequestId::parse(&id).ok_or(FilterError::Request))
        .transpose()?;
    let before = optional(before)
        .map(|id| AuditId::parse(&id).ok_or(FilterError::Before))
        .transpose()?;
    let filter = AuditFilter {
        email,
        event,
        ip,
        from: from.map(start_of_day),
        // `to` names a whole day: everything before the next midnight.
        until: match to {
            Some(to) => Some(start_of_day(to.succ_opt().ok_or(FilterError::To)?)),
            None => None,
        },
        request,
    };
    Ok((filter, before))
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shaped {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

fn start_of_day(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// One row as the page shows it.
#[derive(Debug, Serialize)]
struct RowView {
    id: AuditId,
    at: Moment,
    /// The contract's name (in `data-event` and the row's class); `label` is what people read.
    event: String,
    label: String,
    email: Option<String>,
    /// The query string of this address's timeline.
    email_query: Option<String>,
    ip: Option<String>,
    browser: String,
    user_agent: Option<String>,
    actor: Option<String>,
    detail: String,
    request_id: Option<RequestId>,
    /// A `signed_in` row whose browser (IP or user agent) differs from the one that asked.
    different_device: bool,
}

/// Builds the rows for the page: `signed_in` rows are compared with the `link_requested`
/// row of the same request, so the page can flag a sign-in completed on another device.
fn row_views(rows: Vec<AuditRow>, requested: &[AuditRow], now: DateTime<Utc>) -> Vec<RowView> {
    let origins: HashMap<RequestId, &AuditRow> = requested
        .iter()
        .filter_map(|row| row.request_id.map(|id| (id, row)))
        .collect();
    rows.into_iter()
        .map(|row| {
            // Computed from the two rows, never read back out of `detail`. Once retention has
            // purged the `link_requested` row there is nothing to compare and no flag; the
            // `signed_in` row's own detail still names where the link was asked for.
            let different_device = row.event == AuditEvent::SignedIn.as_str()
                && row
                    .request_id
                    .and_then(|id| origins.get(&id))
                    .is_some_and(|origin| {
                        origin.ip != row.ip || origin.user_agent != row.user_agent
                    });
            let email_query = row.email.as_ref().map(|email| {
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("email", email)
                    .finish()
            });
            RowView {
                id: row.id,
                at: Moment::new(row.occurred_at, now),
                label: event_name_label(&row.event).into_owned(),
                event: row.event,
                email: row.email,
                email_query,
                ip: row.ip,
                browser: browser_or_unknown(row.user_agent.as_deref()),
                user_agent: row.user_agent,
                actor: row.actor,
                detail: row.detail,
                request_id: row.request_id,
                different_device,
            }
        })
        .collect()
}

/// The page (or, for HTMX, the rows alone) with the filter error and no rows: 400.
fn bad_filter(req: &HttpRequest, form: &FilterForm, error: &FilterError) -> HttpResponse {
    let partial = if is_htmx(req) { "audit_rows" } else { "audit" };
    Page::new(partial, "Login audit")
        .with("form", form)
        .with("events", event_options())
        .with("error", error.to_string())
        .with("rows", Vec::<RowView>::new())
        .status(StatusCode::BAD_REQUEST)
        .render(req)
}

pub async fn show(req: HttpRequest, state: web::Data<AppState>) -> PageResult {
    let (form, parsed) = parse_query(req.query_string());
    match parsed {
        Ok(query) => show_page(&req, &state, query).await,
        Err(error) => Ok(bad_filter(&req, &form, &error)),
    }
}

async fn show_page(req: &HttpRequest, state: &AppState, query: AuditQuery) -> PageResult {
    let filter = query.filter.clone();
    let before = query.before;
    let (mut rows, requested) = state
        .db
        .query(move |conn| {
            // One more than a page tells whether there is an older page.
            let rows = audit_query::page(conn, &filter, before, PAGE_SIZE + 1)?;
            let request_ids: Vec<RequestId> = rows
                .iter()
                .filter(|row| row.event == AuditEvent::SignedIn.as_str())
                .filter_map(|row| row.request_id)
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let requested = audit_query::link_requests(conn, &request_ids)?;
            Ok((rows, requested))
        })
        .await?;
    let page_size = usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX);
    let has_older = rows.len() > page_size;
    rows.truncate(page_size);
    let older = has_older
        .then(|| rows.last().map(|row| query.form.query(Some(row.id))))
        .flatten();
    let partial = if is_htmx(req) { "audit_rows" } else { "audit" };
    Ok(Page::new(partial, "Login audit")
        .with("form", &query.form)
        .with("events", event_options())
        .with("rows", row_views(rows, &requested, Utc::now()))
        .with("older", older)
        .with("filters_query", query.form.query(None))
        .with("first_page", query.before.is_none())
        .render(req))
}

/// Spreadsheets run cells that start like a formula; a leading `'` makes them text.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

fn csv_bytes(
    write: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>,
) -> anyhow::Result<Bytes> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    write(&mut writer)?;
    let bytes = writer
        .into_inner()
        .map_err(|err| anyhow::anyhow!("flushing CSV: {err}"))?;
    Ok(Bytes::from(bytes))
}

fn csv_rows(rows: &[AuditRow]) -> anyhow::Result<Bytes> {
    csv_bytes(|writer| {
        for row in rows {
            let id = row.id.to_string();
            let occurred_at = row.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true);
            let request_id = row.request_id.map(|id| id.to_string()).unwrap_or_default();
            let cells = [
                id.as_str(),
                occurred_at.as_str(),
                row.event.as_str(),
                row.email.as_deref().unwrap_or(""),
                row.ip.as_deref().unwrap_or(""),
                row.user_agent.as_deref().unwrap_or(""),
                row.actor.as_deref().unwrap_or(""),
                row.detail.as_str(),
                request_id.as_str(),
            ];
            writer.write_record(cells.iter().map(|cell| neutralise(cell).into_owned()))?;
        }
        Ok(())
    })
}

/// Where the export has got to: the next batch is older than `before`.
struct CsvCursor {
    state: web::Data<AppState>,
    filter: AuditFilter,
    before: Option<AuditId>,
    header_sent: bool,
}

impl CsvCursor {
    /// The next chunk and the cursor after it; `None` when the export is complete.
    async fn next(mut self) -> Option<(Result<Bytes, actix_web::Error>, Option<Self>)> {
        if !self.header_sent {
            self.header_sent = true;
            return Some((
                csv_bytes(|writer| writer.write_record(CSV_HEADER)).map_err(failed),
                Some(self),
            ));
        }
        let filter = self.filter.clone();
        let before = self.before;
        let fetched = self
            .state
            .db
            .query(move |conn| audit_query::page(conn, &filter, before, CSV_BATCH))
            .await;
        let rows = match fetched {
            Ok(rows) => rows,
            // The status line has gone out: all that is left is to cut the download short.
            Err(err) => return Some((Err(failed(anyhow::Error::new(err))), None)),
        };
        let last = rows.last()?.id;
        let chunk = csv_rows(&rows).map_err(failed);
        let more = i64::try_from(rows.len()).is_ok_and(|n| n == CSV_BATCH);
        self.before = Some(last);
        Some((chunk, more.then_some(self)))
    }
}

fn failed(err: anyhow::Error) -> actix_web::Error {
    log::error!("streaming the audit CSV: {err:#}");
    actix_web::error::ErrorInternalServerError("export failed")
}

pub async fn export_csv(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (form, parsed) = parse_query(req.query_string());
    let query = match parsed {
        Ok(query) => query,
        Err(error) => return bad_filter(&req, &form, &error),
    };
    let cursor = CsvCursor {
        state,
        filter: query.filter,
        before: query.before,
        header_sent: false,
    };
    let body = futures_util::stream::unfold(Some(cursor), |cursor| async move {
        match cursor {
            Some(cursor) => cursor.next().await,
            None => None,
        }
    });
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"latchkey-audit.csv\"",
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<AuditQuery, FilterError> {
        parse_query(query).1
    }

    #[test]
    fn an_empty_query_filters_nothing() {
        let query = parse("").unwrap();
        assert_eq!(query.filter, AuditFilter::default());
        assert_eq!(query.before, None);
        let query = parse("email=&event=&ip=&from=&to=").unwrap();
        assert_eq!(query.filter, AuditFilter::default());
    }

    #[test]
    fn filters_are_parsed_into_canonical_values() {
        let query =
            parse("email=+Ann%40Example.ORG+&event=signed_in&ip=%3A%3A1&from=2026-03-01&to=2026-03-02&before=77")
                .unwrap();
        assert_eq!(query.filter.email.as_deref(), Some("Ann@example.org"));
        assert_eq!(query.filter.event, Some(AuditEvent::SignedIn));
        assert_eq!(query.filter.ip, Some("::1".parse().unwrap()));
        assert_eq!(
            query.filter.from.unwrap().to_rfc3339(),
            "2026-03-01T00:00:00+00:00"
        );
        // `to` is inclusive: the whole of March 2nd.
        assert_eq!(
            query.filter.until.unwrap().to_rfc3339(),
            "2026-03-03T00:00:00+00:00"
        );
        assert_eq!(query.before, Some(AuditId::new(77)));
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        assert!(matches!(parse("email=nope"), Err(FilterError::Email(_))));
        assert_eq!(parse("event=signed_up"), Err(FilterError::Event));
        assert_eq!(parse("ip=10.0.0"), Err(FilterError::Ip));
        assert_eq!(parse("from=2026-13-01"), Err(FilterError::From));
        assert_eq!(parse("from=2026-1-01"), Err(FilterError::From));
        assert_eq!(parse("to=yesterday"), Err(FilterError::To));
        assert_eq!(
            parse("from=2026-03-02&to=2026-03-01"),
            Err(FilterError::Range)
        );
        assert_eq!(parse("before=-4"), Err(FilterError::Before));
        assert_eq!(parse("before=abc"), Err(FilterError::Before));
        assert_eq!(parse("request=0"), Err(FilterError::Request));
    }

    #[test]
    fn the_older_link_keeps_the_filters() {
        let query = parse("email=ann%40example.org&event=signed_in&ip=&before=9").unwrap();
        assert_eq!(
            query.form.query(Some(AuditId::new(5))),
            "email=ann%40example.org&event=signed_in&before=5"
        );
    }

    #[test]
    fn formula_cells_are_neutralised() {
        for cell in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(cell), format!("'{cell}"));
        }
        assert_eq!(neutralise("ann@example.org"), "ann@example.org");
        assert_eq!(neutralise(""), "");
    }
}
