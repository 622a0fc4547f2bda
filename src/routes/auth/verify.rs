//! `GET /auth/verify` shows a confirmation and consumes nothing (mail scanners fetch links);
//! `POST /auth/verify` signs in.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use super::{asker, no_store, refusal_page, start_session};
use crate::signin::{LinkView, Redemption, Refusal};
use crate::state::AppState;
use crate::web::browser::Browser;
use crate::web::client::Client;
use crate::web::errors::PageResult;
use crate::web::pages::Page;

#[derive(Deserialize)]
pub struct TokenParam {
    token: Option<String>,
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
    Client(client): Client,
    query: web::Query<TokenParam>,
) -> PageResult {
    let token = query.into_inner().token.unwrap_or_default();
    let view = match state.signin.verify_token(Some(&token)) {
        None => Ok(LinkView::Refused(Refusal::Invalid)),
        Some(token_id) => {
            let asker = asker(&browser, client);
            state.signin.show_link(token_id, asker, Utc::now()).await
        }
    };
    let page: PageResult = view
        .map_err(Into::into)
        .map(|view| link_page(&req, view, &token));
    page.map(no_store)
}

fn link_page(req: &HttpRequest, view: LinkView, token: &str) -> HttpResponse {
    match view {
        LinkView::Confirm { email } => Page::new("confirm", "Sign in")
            .with("email", &email)
            .with("token", token)
            .render(req),
        LinkView::Approve {
            email,
            requested_at,
            requested_ip,
            requested_user_agent,
        } => Page::new("approve", "Approve sign-in")
            .with("email", &email)
            .with("token", token)
            .with(
                "requested_at",
                requested_at.format("%Y-%m-%d %H:%M").to_string(),
            )
            .with("requested_ip", requested_ip)
            .with("requested_user_agent", &requested_user_agent)
            .render(req),
        LinkView::Refused(refusal) => refusal_page(req, refusal),
    }
}

pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
    Client(client): Client,
    form: web::Form<TokenParam>,
) -> PageResult {
    let token_id = state.signin.verify_token(form.token.as_deref());
    let asker = asker(&browser, client);
    let client = asker.client.clone();
    let redemption = state.signin.redeem_link(token_id, asker, Utc::now()).await;
    let page: PageResult = redemption.map_err(Into::into).and_then(|r| match r {
        Redemption::SignedIn(signed_in) => start_session(&req, &signed_in, &client),
        Redemption::Refused(refusal) => Ok(refusal_page(&req, refusal)),
    });
    page.map(no_store)
}
