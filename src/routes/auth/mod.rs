//! Completing a sign-in: by link (`/auth/verify`), by code (`/auth/code`), by approval from
//! another device (`/auth/approve` + `/auth/wait`), or refusing it (`/auth/cancel`).

pub mod approve;
pub mod back_to_app;
pub mod cancel;
pub mod code;
pub mod passkey;
pub mod verify;
pub mod wait;

use actix_identity::Identity;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use base64::Engine as _;

use crate::domain::client_info::ClientInfo;
use crate::domain::next_path::NextPath;
use crate::session::{SessionData, Started};
use crate::signin::{Asker, Refusal, SignedIn};
use crate::state::AppState;
use crate::web::browser::{BindingSecret, Browser};
use crate::web::errors::PageError;
use crate::web::pages::{is_htmx, Page};

/// Turns a completed sign-in into a session: a new session id (the old one is discarded), a
/// fresh CSRF token, and the timestamps the guard enforces timeouts with.
pub fn start_session(
    req: &HttpRequest,
    signed_in: &SignedIn,
    client: &ClientInfo,
) -> Result<HttpResponse, PageError> {
    let next = establish_session(req, signed_in, client)?;
    // An app's URL was checked against the registered apps when the link was asked for, and
    // parsed again when read (`models::return_url`).
    match &signed_in.request.return_url {
        // HTMX navigates by script, which the CSP allows anywhere. A form post may only be
        // redirected to this origin (`form-action 'self'`, which browsers apply to every
        // redirect of the submission), so it goes through `/auth/return`, a page of ours that
        // sends the browser on.
        Some(url) if is_htmx(req) => Ok(redirect_after_sign_in(req, url.as_str())),
        Some(url) => {
            let rd: String =
                url::form_urlencoded::byte_serialize(url.as_str().as_bytes()).collect();
            Ok(redirect_after_sign_in(
                req,
                &format!("/auth/return?rd={rd}"),
            ))
        }
        None => Ok(redirect_after_sign_in(req, next.as_str())),
    }
}

/// The session half of [`start_session`], for a caller that answers in its own way (the
/// passkey ceremony answers JSON). Returns where the member goes next.
pub fn establish_session(
    req: &HttpRequest,
    signed_in: &SignedIn,
    client: &ClientInfo,
) -> Result<NextPath, PageError> {
    Identity::login(&req.extensions(), signed_in.member.id.to_string())
        .map_err(|e| anyhow::anyhow!("starting the session: {e}"))?;
    // Every completed sign-in passes here, after its step committed.
    if let (Some(state), Some(how)) = (
        req.app_data::<web::Data<AppState>>(),
        signed_in.request.completed_by,
    ) {
        state.metrics.signed_in(how);
    }
    let csrf = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(crate::crypto::random_bytes::<32>());
    SessionData::of(req).start(&Started {
        csrf_token: &csrf,
        at: chrono::Utc::now().timestamp(),
        by: signed_in.request.completed_by.map(|how| how.as_str()),
        ip: client.ip,
        user_agent: client.user_agent.as_deref(),
    })?;
    Ok(signed_in.request.next_path.clone())
}

/// A page POST gets 303; an HTMX request gets `HX-Redirect` so the whole page navigates.
fn redirect_after_sign_in(req: &HttpRequest, next: &str) -> HttpResponse {
    if is_htmx(req) {
        HttpResponse::Ok()
            .insert_header(("HX-Redirect", next))
            .finish()
    } else {
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, next))
            .finish()
    }
}

/// The browser a sign-in step is taken in, as the sign-in steps see it.
pub fn asker(browser: &Browser, client: ClientInfo) -> Asker {
    Asker {
        bindings: browser.bindings.iter().map(BindingSecret::digest).collect(),
        device: browser.id.device_digest(),
        client,
    }
}

/// The page for a link or code that did not sign anyone in.
pub fn refusal_page(req: &HttpRequest, refusal: Refusal) -> HttpResponse {
    let (status, heading, explanation) = match refusal {
        Refusal::Invalid => (
            StatusCode::BAD_REQUEST,
            "This sign-in link is not valid",
            "The link may have been copied incompletely. Ask for a new one.",
        ),
        Refusal::Expired => (
            StatusCode::GONE,
            "This sign-in link has expired",
            "Sign-in links work for a few minutes only. Ask for a new one.",
        ),
        Refusal::Used => (
            StatusCode::GONE,
            "This sign-in link has already been used",
            "Each link works once, and a cancelled request cannot be used. Ask for a new one.",
        ),
        Refusal::WrongBrowser => (
            StatusCode::FORBIDDEN,
            "Open this link in the browser where you asked for it",
            "For your safety, this link only works in the browser that asked for it. Open it there, type the code from the email there, or ask for a new link here.",
        ),
        Refusal::Denied => (
            StatusCode::FORBIDDEN,
            "This account cannot sign in",
            "Ask an administrator if you think this is wrong.",
        ),
    };
    Page::new("link_problem", heading)
        .with("heading", heading)
        .with("explanation", explanation)
        .status(status)
        .render(req)
}

pub fn no_store(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}
