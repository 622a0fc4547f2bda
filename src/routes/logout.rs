//! `POST /logout`: ends the session server-side.

use actix_identity::Identity;
use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::middleware::guard::CurrentMember;
use crate::state::AppState;
use crate::web::client::Client;
use crate::web::errors::PageResult;

pub async fn submit(
    state: web::Data<AppState>,
    identity: Identity,
    CurrentMember(member): CurrentMember,
    Client(client): Client,
) -> PageResult {
    let recorded = state.signin.sign_out(member, client).await;
    if let Err(err) = recorded {
        // The audit row comes first: without it, the session stays.
        return Err(err.into());
    }
    // Purges the session: the store deletes the row, the cookie is removed.
    identity.logout();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .insert_header(("Clear-Site-Data", "\"cache\", \"cookies\", \"storage\""))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
