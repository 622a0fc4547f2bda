//! `GET /auth/return?rd=URL`: the last step of a sign-in that came from an app. The browser
//! arrives here by a redirect of its sign-in form post (which the CSP keeps on this origin);
//! this page sends it on to the app with a refresh (a navigation of its own), and shows the
//! link too, by way of `/auth/app`, which opens the app's own session. Only a URL on a
//! registered app's origin is followed; anything else goes to `/`.

use actix_web::{web, HttpRequest};
use serde::Deserialize;

use crate::domain::app_origin::AppUrl;
use crate::routes::app_access::{app_for, auth_app_path};
use crate::state::AppState;
use crate::web::errors::PageResult;
use crate::web::redirect::{onward_page, see_other};

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
        return Ok(see_other("/"));
    };
    let Some(app) = app_for(&state, &url).await? else {
        return Ok(see_other("/"));
    };
    // On to the app's own session: `/auth/app` hands the browser to the app's callback.
    let next = auth_app_path(&app.name, url.as_str());
    Ok(onward_page(&req, &next, &app.name))
}
