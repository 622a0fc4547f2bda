//! Leaving a page: 303 for a plain form, `HX-Redirect` for HTMX, or a page that sends the
//! browser on to an app.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use crate::web::pages::{is_htmx, Page};

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The way on to an app at the end of a sign-in form's post: a page of ours that sends the
/// browser on with a refresh (a navigation of its own), since the CSP's `form-action 'self'`
/// keeps that post's redirects on Latchkey's origin; it shows the link too.
pub fn onward_page(req: &HttpRequest, url: &str, app_name: &str) -> HttpResponse {
    let mut response = Page::new("back_to_app", "Signed in")
        .with("url", url)
        .with("app_name", app_name)
        .render(req);
    // The same refresh as the page's, for browsers that ignore it in the body.
    if let Ok(value) = header::HeaderValue::from_str(&format!("0; url={url}")) {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static("refresh"), value);
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
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
