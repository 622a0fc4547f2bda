//! Answers for the JSON endpoints of the passkey ceremonies (called by `static/passkeys.js`):
//! never cached, and errors as `{"error": "…"}` with the page error's status.

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use serde::Serialize;

use crate::web::errors::PageError;

pub fn ok(value: &impl Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(value)
}

pub fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "error": message }))
}

/// Where to go once a ceremony succeeded.
pub fn redirect(location: &str) -> HttpResponse {
    ok(&serde_json::json!({ "redirect": location }))
}

pub fn page_error(err: &PageError) -> HttpResponse {
    err.json()
}

/// The passkey routes answer this when the public URL cannot have passkeys.
pub fn unavailable() -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "Passkeys are not available on this server (its public URL has no host name).",
    )
}

/// Fields of a form-encoded body (the ceremonies' start posts), read leniently: an empty or
/// non-form body simply has no fields.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}
