//! What users see when something fails: a page with the right status, never internals.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use crate::db::DbError;
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

    /// Renders the error as a page; 500s are logged with their chain, users see a plain line.
    pub fn render(&self, req: &HttpRequest) -> HttpResponse {
        let message = match self {
            PageError::Unavailable => {
                "Latchkey cannot reach its database right now. Try again in a few seconds."
            }
            PageError::NotFound => "There is nothing here.",
            PageError::Forbidden => "You do not have access to this page.",
            PageError::Unexpected(err) => {
                log::error!("{err:#}");
                "Something went wrong on our side."
            }
        };
        let mut response = Page::new("error", "Error")
            .with("message", message)
            .status(self.status())
            .render(req);
        if matches!(self, PageError::Unavailable) {
            response.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("5"),
            );
        }
        response
    }
}

/// Handlers return `PageResult`; the error renders with the request it belongs to.
pub type PageResult = Result<HttpResponse, PageError>;

pub fn respond(req: &HttpRequest, result: PageResult) -> HttpResponse {
    result.unwrap_or_else(|err| err.render(req))
}
