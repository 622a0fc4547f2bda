//! `GET /auth/verify` shows a confirmation and consumes nothing (mail scanners fetch links);
//! `POST /auth/verify` signs in.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{asker, no_store, refusal_page, start_session, verify_token};
use crate::signin::{self, LinkView, Redemption, Refusal};
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
    let view = match verify_token(&state, Some(&token)) {
        None => Ok(LinkView::Refused(Refusal::Invalid)),
        Some(token_id) => {
            let (settings, asker) = (state.settings.clone(), asker(&browser, client));
            state
                .db
                .query(move |conn| signin::show_link(conn, &settings, &token_id, &asker))
                .await
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
    let token_id = verify_token(&state, form.token.as_deref());
    let (settings, asker) = (state.settings.clone(), asker(&browser, client));
    let client = asker.client.clone();
    let redemption = state
        .db
        .query(move |conn| signin::redeem_link(conn, &settings, token_id.as_ref(), &asker))
        .await;
    let page: PageResult = redemption.map_err(Into::into).and_then(|r| match r {
        Redemption::SignedIn(signed_in) => start_session(&req, &state, &signed_in, &client),
        Redemption::Refused(refusal) => Ok(refusal_page(&req, refusal)),
    });
    page.map(no_store)
}
