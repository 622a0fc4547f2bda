//! `POST /auth/approve`: from another device, pick the number the asking browser shows.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{refusal_page, verify_token};
use crate::models::audit::ClientInfo;
use crate::signin::{self, ApprovalOutcome, Refusal};
use crate::state::AppState;
use crate::web::client::Client;
use crate::web::errors::{respond, PageResult};
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
) -> HttpResponse {
    let result = submit_inner(&req, &state, client, form.into_inner()).await;
    super::no_store(respond(&req, result))
}

async fn submit_inner(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    client: ClientInfo,
    form: ApproveForm,
) -> PageResult {
    let token_id = verify_token(state, form.token.as_deref());
    let number = form.number.and_then(|n| n.trim().parse::<i16>().ok());
    let outcome = state
        .db
        .run(move |conn| {
            let Some(token_id) = token_id else {
                signin::audit_refusal(
                    conn,
                    Refusal::Invalid,
                    None,
                    &client,
                    "approval with a malformed or forged token",
                )?;
                return Ok(ApprovalOutcome::Refused(Refusal::Invalid));
            };
            let Some(found) = signin::find_by_token(conn, &token_id)? else {
                signin::audit_refusal(
                    conn,
                    Refusal::Invalid,
                    None,
                    &client,
                    "approval with an unknown token",
                )?;
                return Ok(ApprovalOutcome::Refused(Refusal::Invalid));
            };
            if let Some(refusal) = signin::refusal_for_state(&found.request, chrono::Utc::now()) {
                signin::audit_refusal(conn, refusal, Some(&found), &client, "approval")?;
                return Ok(ApprovalOutcome::Refused(refusal));
            }
            signin::approve(conn, &found, number, &client)
        })
        .await?;
    Ok(match outcome {
        ApprovalOutcome::Approved => Page::new("message", "Approved")
            .with("heading", "Approved")
            .with("message", "Go back to the other device: it is signing in now. This browser stays signed out.")
            .render(req),
        ApprovalOutcome::Mismatch => Page::new("message", "Sign-in cancelled")
            .with("heading", "Sign-in cancelled")
            .with(
                "message",
                "That was not the number the other device shows, so the request has been cancelled. If you were signing in, ask for a new link.",
            )
            .with("link", "/login")
            .with("link_text", "Ask for a new link")
            .status(StatusCode::FORBIDDEN)
            .render(req),
        ApprovalOutcome::Refused(refusal) => refusal_page(req, refusal),
    })
}
