//! `GET /audit` and `GET /audit.csv`: the login audit, newest first, filtered by `email`,
//! `event`, `ip`, `from`, `to` (dates, UTC, `to` inclusive) and `request`, paged by the keyset
//! cursor `before` (an id). The page answers HTMX with the rows alone; the CSV is streamed
//! ([`crate::audit::csv`]).

use std::collections::HashMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit;
use crate::audit::csv::CsvCursor;
use crate::audit::filter::{parse_query, AuditQuery, FilterError, FilterForm};
use crate::audit::query::AuditPage;
use crate::audit::rows::AuditEvent;
use crate::audit::rows::AuditRow;
use crate::domain::ids::{AuditId, RequestId};
use crate::state::AppState;
use crate::web::errors::PageResult;
use crate::web::human::{browser_or_unknown, event_name_label, event_options, Moment};
use crate::web::pages::{is_htmx, Page};

/// Rows on one page of `/audit`.
const PAGE_SIZE: i64 = 50;
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
    let AuditPage {
        rows,
        requested,
        has_older,
    } = audit::query::page_of(&state.db, query.filter.clone(), query.before, PAGE_SIZE).await?;
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
    let cursor = CsvCursor::new(state.db.clone(), query.filter, query.before);
    let body = futures_util::stream::unfold(Some(cursor), |cursor| async move {
        match cursor {
            Some(cursor) => cursor
                .next()
                .await
                .map(|(chunk, rest)| (chunk.map_err(failed), rest)),
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
