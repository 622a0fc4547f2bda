//! Leaving a page: 303 for a plain form, `HX-Redirect` for HTMX.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use crate::web::pages::is_htmx;

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// Leaves the page: 303 for a form post, `HX-Redirect` for HTMX (the whole page navigates).
pub fn redirect(req: &HttpRequest, location: &str, signed_out: bool) -> HttpResponse {
    let mut response = if is_htmx(req) {
        HttpResponse::Ok()
            .insert_header(("HX-Redirect", location))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish()
    } else {
        see_other(location)
    };
    if signed_out {
        response.headers_mut().insert(
            header::HeaderName::from_static("clear-site-data"),
            header::HeaderValue::from_static("\"cache\", \"cookies\", \"storage\""),
        );
    }
    response
}
