//! `POST /auth/passkey/start`, `POST /auth/passkey/finish`: signing in with a discoverable
//! passkey, as JSON for `static/passkeys.js`. The start keeps the ceremony in
//! `passkey_ceremonies` and a handle on it in the (anonymous, server-side) session; the finish
//! consumes the row before anything else, so an assertion can be tried once, even by requests
//! that race. Both posts count against `LATCHKEY_LOGIN_RATE`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;

use super::{asker, establish_session};
use crate::domain::next_path::NextPath;
use crate::passkeys::ceremony::CeremonyHandle;
use crate::session::{Ceremony, SessionData};
use crate::signin::{PasskeySignIn, PasskeySignInStart};
use crate::state::AppState;
use crate::web::browser::Browser;
use crate::web::client::Client;
use crate::web::errors::PageError;
use crate::web::json;

/// Body: optional form field `next` (where to go once signed in).
pub async fn start(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let Some(webauthn) = &state.webauthn else {
        return json::unavailable();
    };
    let next = NextPath::parse(json::form_field(&body, "next").as_deref());
    match state.signin.start_passkey(webauthn, next).await {
        Ok(PasskeySignInStart::Started(started)) => {
            let (options, handle) = *started;
            let session = SessionData::of(&req);
            if let Err(err) = session.put_ceremony_handle(Ceremony::SignIn, handle.as_str()) {
                return json::page_error(&err.into());
            }
            json::ok(&options)
        }
        Ok(PasskeySignInStart::Failed(reason)) => json::page_error(&PageError::Unexpected(
            anyhow::anyhow!("starting a passkey sign-in: {reason}"),
        )),
        Err(err) => json::page_error(&err.into()),
    }
}

/// Body: the `PublicKeyCredential` from `navigator.credentials.get`, as JSON.
pub async fn finish(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
    Client(client): Client,
    body: web::Bytes,
) -> HttpResponse {
    let Some(webauthn) = state.webauthn.clone() else {
        return json::unavailable();
    };
    let session = SessionData::of(&req);
    // The step consumes the ceremony first: whatever happens next, this challenge is spent.
    let handle = session
        .ceremony_handle(Ceremony::SignIn)
        .map(CeremonyHandle::from_session);
    let credential = serde_json::from_slice(&body).ok();
    let asker = asker(&browser, client);
    let client = asker.client.clone();
    let outcome = state
        .signin
        .finish_passkey(webauthn, handle, credential, asker, Utc::now())
        .await;
    let signed_in = match outcome {
        Ok(PasskeySignIn::SignedIn(signed_in)) => signed_in,
        Ok(PasskeySignIn::Refused(_)) => {
            // The same answer whatever the reason: the audit has it.
            return json::error(
                StatusCode::UNAUTHORIZED,
                "That passkey did not sign you in. Try again, or sign in by email.",
            );
        }
        Err(err) => return json::page_error(&err.into()),
    };
    let started = establish_session(&req, &signed_in, &client).and_then(|next| {
        session.mark_passkey_proved(chrono::Utc::now().timestamp())?;
        Ok(next)
    });
    match started {
        Ok(next) => json::redirect(next.as_str()),
        Err(err) => json::page_error(&err),
    }
}
