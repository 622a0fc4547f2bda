//! `GET /auth/return?rd=URL`: the last step of a sign-in that came from an app. The browser
//! arrives here by a redirect of its sign-in form post (which the CSP keeps on this origin);
//! this page sends it on to the app with a refresh (a navigation of its own), and shows the
//! link too, by way of `/auth/app`, which opens the app's own session. Only a URL on a
//! registered app's origin is followed; anything else goes to `/`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::no_store;
use crate::domain::app_origin::AppUrl;
use crate::routes::app_access::{app_for, auth_app_path};
use crate::state::AppState;
use crate::web::errors::PageResult;
use crate::web::pages::Page;

#[derive(Deserialize)]
pub struct ReturnQuery {
    rd: Option<String>,
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ReturnQuery>,
) -> PageResult {
    let Some(url) = query.rd.as_deref().and_then(|rd| AppUrl::parse(rd).ok()) else {
        return Ok(home());
    };
    let Some(app) = app_for(&state, &url).await? else {
        return Ok(home());
    };
    // On to the app's own session: `/auth/app` hands the browser to the app's callback.
    let next = auth_app_path(&app.name, url.as_str());
    let mut response = Page::new("back_to_app", "Signed in")
        .with("url", &next)
        .with("app_name", &app.name)
        .render(&req);
    // The same refresh as the page's, for browsers that ignore it in the body.
    if let Ok(value) = header::HeaderValue::from_str(&format!("0; url={next}")) {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static("refresh"), value);
    }
    Ok(no_store(response))
}

fn home() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}
