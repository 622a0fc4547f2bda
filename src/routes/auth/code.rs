//! `POST /auth/code`: the 6-digit code, typed into the browser that asked for it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{refusal_page, start_session};
use crate::domain::code::SignInCode;
use crate::models::audit::ClientInfo;
use crate::models::member;
use crate::models::sign_in_request;
use crate::signin::{self, CodeOutcome, Refusal};
use crate::state::AppState;
use crate::web::browser::Browser;
use crate::web::client::Client;
use crate::web::errors::{respond, PageResult};
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
) -> HttpResponse {
    let result = submit_inner(&req, &state, browser, client, form.into_inner().code).await;
    super::no_store(respond(&req, result))
}

async fn submit_inner(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    browser: Browser,
    client: ClientInfo,
    typed: String,
) -> PageResult {
    let Some(binding) = browser.binding.as_ref().map(|b| b.digest()) else {
        return Ok(refusal_page(req, Refusal::Used));
    };
    let code = SignInCode::parse(&typed).ok();
    let device = browser.id.device_digest();
    let token_key = state.keys.token.clone();
    let audit_client = client.clone();
    let found = state
        .db
        .run(move |conn| {
            let Some(request) = sign_in_request::latest_pending_for_browser(conn, &binding)? else {
                return Ok(None);
            };
            let email = member::find(conn, request.member_id)?
                .map(|m| m.email)
                .unwrap_or_default();
            let outcome = signin::try_code(
                conn,
                &token_key,
                &request,
                code.as_ref(),
                &audit_client,
                &device,
                &email,
            )?;
            Ok::<_, crate::db::DbError>(Some((outcome, email)))
        })
        .await?;
    let Some((outcome, email)) = found else {
        return Ok(refusal_page(req, Refusal::Used));
    };
    let ttl_minutes = state.settings.link_ttl_minutes();
    let retry = |message: String| {
        Page::new("check_inbox", "Check your inbox")
            .with("email", &email)
            .with("ttl_minutes", ttl_minutes)
            .with("error", message)
            .status(StatusCode::BAD_REQUEST)
            .render(req)
    };
    match outcome {
        CodeOutcome::SignedIn(signed_in) => start_session(req, state, &signed_in, &client),
        CodeOutcome::Wrong { tries_left } => Ok(retry(format!(
            "That code is not right. {tries_left} {} left.",
            if tries_left == 1 { "try" } else { "tries" }
        ))),
        CodeOutcome::Exhausted => Ok(Page::new("link_problem", "Too many wrong codes")
            .with("heading", "Too many wrong codes")
            .with(
                "explanation",
                "This code no longer works, and neither does the link in the same email. Ask for a new one.",
            )
            .status(StatusCode::GONE)
            .render(req)),
        CodeOutcome::Refused(refusal) => Ok(refusal_page(req, refusal)),
    }
}
