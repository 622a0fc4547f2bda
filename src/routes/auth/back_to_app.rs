//! `GET /auth/return?rd=URL`: the last step of a sign-in that came from an app. The browser
//! arrives here by a redirect of its sign-in form post (which the CSP keeps on this origin);
//! this page sends it on to the app with a refresh (a navigation of its own), and shows the
//! link too. Only a URL on a registered app's origin is followed; anything else goes to `/`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::no_store;
use crate::domain::app_origin::AppUrl;
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
    let registered = state.signin.may_return_to(&url).await;
    let page: PageResult = match registered {
        Ok(true) => {
            let mut response = Page::new("back_to_app", "Signed in")
                .with("url", url.as_str())
                .with("origin", url.origin().as_str())
                .render(&req);
            // The same refresh as the page's, for browsers that ignore it in the body.
            if let Ok(value) = header::HeaderValue::from_str(&format!("0; url={}", url.as_str())) {
                response
                    .headers_mut()
                    .insert(header::HeaderName::from_static("refresh"), value);
            }
            Ok(response)
        }
        Ok(false) => return Ok(home()),
        Err(err) => Err(err.into()),
    };
    page.map(no_store)
}

fn home() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}
