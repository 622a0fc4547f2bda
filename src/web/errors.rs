//! What users see when something fails: a page with the right status, never internals.
//!
//! One failure type, one table of messages ([`PageError::message`]), three renderings: a
//! page ([`PageError::render`]), JSON for the passkey ceremonies ([`PageError::json`]) and
//! plain text for proxies and the layers outside the handlers ([`PageError::plain`]).
//!
//! Handlers return [`PageResult`]. actix turns a `PageError` into a bare response of its
//! status ([`actix_web::ResponseError`]), which cannot see the request; [`error_pages`], the
//! innermost middleware, finds the error on that response and renders the page for the
//! request it belongs to (full page or HTMX partial, with the viewer's navigation).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError};

use crate::db::DbError;
use crate::session::SessionWriteError;
use crate::web::pages::Page;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("the database is unavailable")]
    Unavailable,
    #[error("not found")]
    NotFound,
    #[error("forbidden")]
    Forbidden,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<DbError> for PageError {
    fn from(err: DbError) -> Self {
        if err.is_unavailable() {
            PageError::Unavailable
        } else {
            PageError::Unexpected(anyhow::Error::new(err).context("querying the database"))
        }
    }
}

impl From<SessionWriteError> for PageError {
    fn from(err: SessionWriteError) -> Self {
        PageError::Unexpected(err.into())
    }
}

impl From<diesel::result::Error> for PageError {
    fn from(err: diesel::result::Error) -> Self {
        DbError::from(err).into()
    }
}

impl PageError {
    pub fn status(&self) -> StatusCode {
        match self {
            PageError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::Forbidden => StatusCode::FORBIDDEN,
            PageError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What people read, one sentence per failure, whichever way it is rendered.
    fn message(&self) -> &'static str {
        match self {
            PageError::Unavailable => {
                "Latchkey cannot reach its database right now. Try again in a few seconds."
            }
            PageError::NotFound => "There is nothing here.",
            PageError::Forbidden => "You do not have access to this.",
            PageError::Unexpected(_) => "Something went wrong on our side.",
        }
    }

    /// Every rendering logs an unexpected failure with its chain; users see only the message.
    fn log(&self) {
        if let PageError::Unexpected(err) = self {
            log::error!("{err:#}");
        }
    }

    /// What a failure adds to any rendering: a lost database says when to try again.
    fn headers(&self, response: &mut HttpResponse) {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        if matches!(self, PageError::Unavailable) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
    }

    /// As a page (full, or the HTMX partial), for the request it belongs to.
    pub fn render(&self, req: &HttpRequest) -> HttpResponse {
        self.log();
        let mut response = Page::new("error", "Error")
            .with("message", self.message())
            .status(self.status())
            .render(req);
        self.headers(&mut response);
        response
    }

    /// As `{"error": "…"}`, for the passkey ceremonies' JSON endpoints.
    pub fn json(&self) -> HttpResponse {
        self.log();
        let mut response =
            HttpResponse::build(self.status()).json(serde_json::json!({ "error": self.message() }));
        self.headers(&mut response);
        response
    }

    /// As a line of text, for answers no person reads in a page: a proxy's forward-auth check,
    /// and a failure met outside any handler (actix-session's store).
    pub fn plain(&self) -> HttpResponse {
        self.log();
        let mut response = HttpResponse::build(self.status())
            .content_type("text/plain; charset=utf-8")
            .body(self.message());
        self.headers(&mut response);
        response
    }
}

/// Handlers return `PageResult`; the error renders with the request it belongs to.
pub type PageResult = Result<HttpResponse, PageError>;

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    /// Only the status: [`error_pages`] renders the page, with the request.
    fn error_response(&self) -> HttpResponse {
        HttpResponse::new(self.status())
    }
}

/// Renders the page of a handler's [`PageError`].
pub async fn error_pages(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = next.call(req).await?;
    let page = res
        .response()
        .error()
        .and_then(|err| err.as_error::<PageError>())
        .map(|err| err.render(res.request()));
    Ok(match page {
        Some(page) => res.into_response(page),
        None => res.map_into_boxed_body(),
    })
}
