//! `GET /auth/wait`: polled by the "check your inbox" page. Answers "still waiting" until the
//! request is approved from another device, then signs this browser in.

use actix_web::{web, HttpRequest, HttpResponse};

use super::start_session;
use crate::models::sign_in_request::{self, CompletedBy};
use crate::signin;
use crate::state::AppState;
use crate::web::browser::Browser;
use crate::web::client::Client;
use crate::web::errors::{respond, PageResult};
use crate::web::pages::Page;

pub async fn poll(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
    Client(client): Client,
) -> HttpResponse {
    let result = poll_inner(&req, &state, browser, client).await;
    super::no_store(respond(&req, result))
}

async fn poll_inner(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    browser: Browser,
    client: crate::models::audit::ClientInfo,
) -> PageResult {
    let Some(binding) = browser.binding.as_ref().map(|b| b.digest()) else {
        return Ok(Page::new("waiting", "Waiting")
            .with("waiting", false)
            .render(req));
    };
    let device = browser.id.device_digest();
    let audit_client = client.clone();
    let outcome = state
        .db
        .run(move |conn| {
            let Some(request) = sign_in_request::latest_pending_for_browser(conn, &binding)? else {
                return Ok(None);
            };
            if request.approved_at.is_none() {
                return Ok(Some(Err(request.approval_number)));
            }
            let completed = signin::complete(
                conn,
                request.id,
                CompletedBy::Approval,
                &audit_client,
                &device,
            )?;
            Ok::<_, crate::db::DbError>(completed.ok().map(Ok))
        })
        .await?;
    match outcome {
        Some(Ok(signed_in)) => start_session(req, state, &signed_in, &client),
        Some(Err(number)) => Ok(Page::new("waiting", "Waiting")
            .with("waiting", true)
            .with("number", number)
            .render(req)),
        None => Ok(Page::new("waiting", "Waiting")
            .with("waiting", false)
            .render(req)),
    }
}
