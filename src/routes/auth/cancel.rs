//! "Not you?": `GET /auth/cancel` shows a button; `POST /auth/cancel` kills the request and
//! tells the admins.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use super::{no_store, refusal_page};
use crate::signin::{CancelOutcome, Refusal};
use crate::state::AppState;
use crate::web::client::Client;
use crate::web::errors::PageResult;
use crate::web::pages::Page;

#[derive(Deserialize)]
pub struct TokenParam {
    token: Option<String>,
}

/// Only a page with a button: following a link must never change anything.
pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<TokenParam>,
) -> HttpResponse {
    let token = query.into_inner().token;
    if state.signin.verify_token(token.as_deref()).is_none() {
        return no_store(refusal_page(&req, Refusal::Invalid));
    }
    no_store(
        Page::new("cancel", "Not you?")
            .with("token", token.unwrap_or_default())
            .render(&req),
    )
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    Client(client): Client,
    form: web::Form<TokenParam>,
) -> PageResult {
    let Some(token_id) = state.signin.verify_token(form.token.as_deref()) else {
        return Ok(no_store(refusal_page(&req, Refusal::Invalid)));
    };
    let outcome = state.signin.cancel(token_id, client, Utc::now()).await;
    let page: PageResult = outcome.map_err(Into::into).map(|outcome| match outcome {
        CancelOutcome::Cancelled => Page::new("message", "Sign-in cancelled")
            .with("heading", "Sign-in request cancelled")
            .with(
                "message",
                "The link no longer works, and the administrators have been told. Thank you.",
            )
            .render(&req),
        CancelOutcome::NotOpen => Page::new("message", "Nothing to cancel")
            .with("heading", "Nothing to cancel")
            .with(
                "message",
                "This sign-in request was already used, cancelled or expired.",
            )
            .render(&req),
        CancelOutcome::Invalid => refusal_page(&req, Refusal::Invalid),
    });
    page.map(no_store)
}
