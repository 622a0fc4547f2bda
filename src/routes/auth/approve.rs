//! `POST /auth/approve`: on another device, type the number the asking browser shows.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use super::{no_store, refusal_page};
use crate::domain::approval_number::ApprovalNumber;
use crate::signin::ApprovalOutcome;
use crate::state::AppState;
use crate::web::client::Client;
use crate::web::errors::PageResult;
use crate::web::pages::Page;

#[derive(Deserialize)]
pub struct ApproveForm {
    token: Option<String>,
    number: Option<String>,
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    Client(client): Client,
    form: web::Form<ApproveForm>,
) -> PageResult {
    let token_id = state.signin.verify_token(form.token.as_deref());
    let number = form
        .number
        .as_deref()
        .and_then(|n| ApprovalNumber::parse(n).ok());
    let outcome = state
        .signin
        .approve(token_id, number, client, Utc::now())
        .await;
    let page: PageResult = outcome.map_err(Into::into).map(|outcome| match outcome {
        ApprovalOutcome::Approved => message(&req, StatusCode::OK, "Approved",
            "Go back to the other device: it is signing in now. This browser stays signed out."),
        ApprovalOutcome::Mismatch { locked } => {
            message(&req, StatusCode::FORBIDDEN, "Sign-in cancelled", if locked {
                "That was not the number the other device shows, so the request has been cancelled and the administrators have been told. After three wrong numbers today, approving from another device is locked for this account until tomorrow; the link and the code still work in the browser that asked."
            } else {
                "That was not the number the other device shows, so the request has been cancelled and the administrators have been told. If you were signing in, ask for a new link."
            })
        }
        ApprovalOutcome::Locked => message(&req, StatusCode::FORBIDDEN, "Approval is locked",
            "Too many wrong numbers were typed for this account today, so approving from another device is refused until tomorrow. Open the link in the browser where you asked for it, or type the code there."),
        ApprovalOutcome::Refused(refusal) => refusal_page(&req, refusal),
    });
    page.map(no_store)
}

fn message(req: &HttpRequest, status: StatusCode, heading: &str, text: &str) -> HttpResponse {
    Page::new("message", heading)
        .with("heading", heading)
        .with("message", text)
        .with("link", "/login")
        .with("link_text", "Ask for a new link")
        .status(status)
        .render(req)
}
