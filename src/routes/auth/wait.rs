//! `GET /auth/wait`: polled by the "check your inbox" page. Answers "still waiting" (with the
//! number to type on the other device) until that device approves, then signs this browser in.

use actix_web::{web, HttpRequest};
use chrono::Utc;

use super::{asker, no_store, start_session};
use crate::signin::WaitOutcome;
use crate::state::AppState;
use crate::web::browser::Browser;
use crate::web::client::Client;
use crate::web::errors::PageResult;
use crate::web::pages::Page;

pub async fn poll(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
    Client(client): Client,
) -> PageResult {
    let asker = asker(&browser, client);
    let client = asker.client.clone();
    let outcome = state.signin.wait(asker, Utc::now()).await;
    let page: PageResult = outcome
        .map_err(Into::into)
        .and_then(|outcome| match outcome {
            WaitOutcome::SignedIn(signed_in) => start_session(&req, &signed_in, &client),
            WaitOutcome::Waiting(number) => Ok(Page::new("waiting", "Waiting")
                .with("waiting", true)
                .with("number", number.value())
                .render(&req)),
            WaitOutcome::Closed => Ok(Page::new("waiting", "Waiting")
                .with("waiting", false)
                .render(&req)),
        });
    page.map(no_store)
}
