//! `POST /auth/code`: the 6-digit code, typed into the browser that asked for it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use super::{asker, no_store, refusal_page, start_session};
use crate::domain::code::SignInCode;
use crate::signin::{CodeOutcome, Refusal};
use crate::state::AppState;
use crate::web::browser::Browser;
use crate::web::client::Client;
use crate::web::errors::PageResult;
use crate::web::pages::Page;

#[derive(Deserialize)]
pub struct CodeForm {
    code: String,
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
    Client(client): Client,
    form: web::Form<CodeForm>,
) -> PageResult {
    let code = SignInCode::parse(&form.code).ok();
    let asker = asker(&browser, client);
    let client = asker.client.clone();
    let outcome = state.signin.redeem_code(code, asker, Utc::now()).await;
    let page: PageResult = outcome.map_err(Into::into).and_then(|outcome| match outcome {
        CodeOutcome::SignedIn(signed_in) => start_session(&req, &signed_in, &client),
        CodeOutcome::Wrong { email, tries_left } => Ok(Page::new("check_inbox", "Check your inbox")
            .with("email", email.as_str())
            .with("ttl_minutes", state.settings.link_ttl_minutes())
            .with(
                "error",
                format!(
                    "That code is not right. {tries_left} {} left.",
                    if tries_left == 1 { "try" } else { "tries" }
                ),
            )
            .status(StatusCode::BAD_REQUEST)
            .render(&req)),
        CodeOutcome::Exhausted => Ok(problem(
            &req,
            "Too many wrong codes",
            "This code no longer works, and neither does the link in the same email. Ask for a new one.",
        )),
        CodeOutcome::Locked => Ok(problem(
            &req,
            "Codes are locked for this address",
            "Too many wrong codes were typed for this address today, so codes are refused for now. The link in the email still works: open it in this browser.",
        )),
        CodeOutcome::NoRequest => Ok(refusal_page(&req, Refusal::Used)),
        CodeOutcome::Refused(refusal) => Ok(refusal_page(&req, refusal)),
    });
    page.map(no_store)
}

fn problem(req: &HttpRequest, heading: &str, explanation: &str) -> HttpResponse {
    Page::new("link_problem", heading)
        .with("heading", heading)
        .with("explanation", explanation)
        .status(StatusCode::GONE)
        .render(req)
}
