//! `GET /passkeys` (the member's passkeys), `POST /passkeys/register/start` and `/finish`
//! (adding one; JSON for `static/passkeys.js`), `POST /passkeys/{id}/remove` (only from a
//! session that proved a passkey in the last 10 minutes; otherwise the member is sent to
//! confirm one, as the guard sends admins, and comes back here), and `GET /passkeys/confirm`
//! with `POST /passkeys/confirm/start` and `/finish`: proving a passkey in a session signed in
//! by email. The steps themselves are [`crate::passkeys::manage`]; each ceremony's state
//! waits in `passkey_ceremonies`, the session holding only a handle on it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::domain::ids::PasskeyId;
use crate::domain::next_path::NextPath;
use crate::middleware::guard::CurrentMember;
use crate::models::member::Member;
use crate::models::passkey::PasskeyRow;
use crate::passkeys::ceremony::CeremonyHandle;
use crate::passkeys::manage::{
    self, AddGate, Confirmation, ConfirmationStart, Registration, RegistrationStart, Removal,
};
use crate::passkeys::{proved_recently, PasskeyName};
use crate::session::{Ceremony, SessionData};
use crate::state::AppState;
use crate::web::client::Client;
use crate::web::errors::{PageError, PageResult};
use crate::web::json;
use crate::web::pages::{is_htmx, Page};
use crate::web::policy::passkey_confirm_location;
use crate::web::redirect::{redirect, see_other};

#[derive(Debug, Serialize)]
struct PasskeyView {
    id: PasskeyId,
    name: String,
    added: String,
    last_used: Option<String>,
}

impl From<PasskeyRow> for PasskeyView {
    fn from(row: PasskeyRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            added: row.created_at.format("%Y-%m-%d %H:%M").to_string(),
            last_used: row
                .last_used_at
                .map(|at| at.format("%Y-%m-%d %H:%M").to_string()),
        }
    }
}

/// What this session brings to the question whether it may add a passkey now.
fn add_gate(session: &SessionData) -> AddGate {
    AddGate {
        signed_in_at: session.signed_in_at(),
        proved_passkey: session.proved_passkey(),
        now: chrono::Utc::now().timestamp(),
    }
}

async fn render(
    req: &HttpRequest,
    state: &AppState,
    member: &Member,
    notice: Option<String>,
) -> PageResult {
    let rows = manage::list(&state.db, member.id).await?;
    let session = SessionData::of(req);
    let blocked = if state.webauthn.is_none() {
        Some("Passkeys are not available on this server: its public URL has no host name.")
    } else {
        manage::why_not_add(&add_gate(&session), !rows.is_empty())
    };
    let may_remove = proved_recently(session.passkey_proved_at(), chrono::Utc::now().timestamp());
    let views: Vec<PasskeyView> = rows.into_iter().map(PasskeyView::from).collect();
    Ok(Page::new("passkeys", "Passkeys")
        .with("passkeys", views)
        .with("blocked", blocked)
        .with("proved", session.proved_passkey())
        .with("may_remove", may_remove)
        .with("notice", notice)
        .render(req))
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(member): CurrentMember,
) -> PageResult {
    render(&req, &state, &member, None).await
}

/// Keeps the handle on the ceremony (its state is in the database) in the session for the
/// finish, and answers the browser's options.
fn begin(
    session: &SessionData,
    kind: Ceremony,
    options: &impl Serialize,
    handle: &CeremonyHandle,
) -> HttpResponse {
    match session.put_ceremony_handle(kind, handle.as_str()) {
        Ok(()) => json::ok(options),
        Err(err) => json::page_error(&err.into()),
    }
}

/// The handle this session keeps on its ceremony of that kind, if any.
fn handle_of(session: &SessionData, kind: Ceremony) -> Option<CeremonyHandle> {
    session
        .ceremony_handle(kind)
        .map(CeremonyHandle::from_session)
}

/// The library could not build the options: ours to fix, not the member's.
fn could_not_start(what: &str, reason: impl std::fmt::Display) -> HttpResponse {
    json::page_error(&PageError::Unexpected(anyhow::anyhow!(
        "starting a passkey {what}: {reason}"
    )))
}

/// Body: form field `name`. Answers the options for `navigator.credentials.create`.
pub async fn register_start(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(member): CurrentMember,
    body: web::Bytes,
) -> HttpResponse {
    let Some(webauthn) = &state.webauthn else {
        return json::unavailable();
    };
    let name = match PasskeyName::parse(&json::form_field(&body, "name").unwrap_or_default()) {
        Ok(name) => name,
        Err(problem) => return json::error(StatusCode::UNPROCESSABLE_ENTITY, problem),
    };
    let session = SessionData::of(&req);
    let gate = add_gate(&session);
    let started = manage::start_registration(&state.db, webauthn, &member, name, gate).await;
    match started {
        Ok(RegistrationStart::NotNow(reason)) => json::error(StatusCode::FORBIDDEN, reason),
        Ok(RegistrationStart::Started(started)) => {
            let (options, handle) = *started;
            begin(&session, Ceremony::Registration, &options, &handle)
        }
        Ok(RegistrationStart::Failed(reason)) => could_not_start("registration", reason),
        Err(err) => json::page_error(&err.into()),
    }
}

/// Body: the `PublicKeyCredential` from `navigator.credentials.create`, as JSON.
pub async fn register_finish(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(member): CurrentMember,
    Client(client): Client,
    body: web::Bytes,
) -> HttpResponse {
    let Some(webauthn) = &state.webauthn else {
        return json::unavailable();
    };
    let session = SessionData::of(&req);
    let handle = handle_of(&session, Ceremony::Registration);
    let credential = serde_json::from_slice(&body).ok();
    let outcome = manage::finish_registration(
        &state.db,
        &state.mailer,
        webauthn,
        &member,
        handle,
        credential,
        client,
    )
    .await;
    match outcome {
        Ok(Registration::Added(_)) => json::redirect("/passkeys"),
        Ok(Registration::Duplicate) => {
            json::error(StatusCode::CONFLICT, "That passkey is registered already.")
        }
        Ok(Registration::Refused(reason)) => json::error(StatusCode::BAD_REQUEST, reason),
        Err(err) => json::page_error(&err.into()),
    }
}

pub async fn remove(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(member): CurrentMember,
    Client(client): Client,
    id: web::Path<String>,
) -> PageResult {
    // Someone else's passkey is "not found": its existence is not the member's to know.
    let id = PasskeyId::parse(&id).ok_or(PageError::NotFound)?;
    let session = SessionData::of(&req);
    let recent = proved_recently(session.passkey_proved_at(), chrono::Utc::now().timestamp());
    let removed = match manage::remove(&state.db, &member, id, recent, client).await? {
        Removal::Removed(row) => row,
        // A mailbox alone must not take a passkey away: confirm one first, as the guard asks
        // of admins, then come back to this list (a post is not repeated on the way back).
        Removal::NeedsProof => {
            let location = passkey_confirm_location(Some("/passkeys"));
            return Ok(redirect(&req, &location, false));
        }
        Removal::NotFound => return Err(PageError::NotFound),
    };
    if !is_htmx(&req) {
        return Ok(see_other("/passkeys"));
    }
    let notice = format!("The passkey \u{201c}{}\u{201d} was removed.", removed.name);
    render(&req, &state, &member, Some(notice)).await
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /passkeys/confirm?next=…`: where `LATCHKEY_ADMIN_PASSKEY=required` sends an admin
/// whose session has not proved a passkey.
pub async fn confirm_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(member): CurrentMember,
    query: web::Query<NextQuery>,
) -> PageResult {
    let next = NextPath::parse(query.next.as_deref());
    let passkeys = manage::list(&state.db, member.id).await?;
    Ok(Page::new("passkey_confirm", "Confirm with a passkey")
        .with("next", next.as_str())
        .with("has_passkeys", !passkeys.is_empty())
        .with("available", state.webauthn.is_some())
        .with("proved", SessionData::of(&req).proved_passkey())
        .render(&req))
}

/// Body: optional form field `next`. Answers the options for `navigator.credentials.get`,
/// limited to the member's own passkeys.
pub async fn confirm_start(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(member): CurrentMember,
    body: web::Bytes,
) -> HttpResponse {
    let Some(webauthn) = &state.webauthn else {
        return json::unavailable();
    };
    let next = NextPath::parse(json::form_field(&body, "next").as_deref());
    let started = manage::start_confirmation(&state.db, webauthn, &member, next).await;
    match started {
        Ok(ConfirmationStart::Started(started)) => {
            let (options, handle) = *started;
            begin(&SessionData::of(&req), Ceremony::Confirm, &options, &handle)
        }
        Ok(ConfirmationStart::NoPasskeys) => json::error(
            StatusCode::CONFLICT,
            "You have no passkey yet: add one first.",
        ),
        Ok(ConfirmationStart::Failed(reason)) => could_not_start("confirmation", reason),
        Err(err) => json::page_error(&err.into()),
    }
}

/// Body: the `PublicKeyCredential` from `navigator.credentials.get`, as JSON.
pub async fn confirm_finish(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(member): CurrentMember,
    Client(client): Client,
    body: web::Bytes,
) -> HttpResponse {
    let Some(webauthn) = &state.webauthn else {
        return json::unavailable();
    };
    let session = SessionData::of(&req);
    let handle = handle_of(&session, Ceremony::Confirm);
    let credential = serde_json::from_slice(&body).ok();
    let outcome =
        manage::finish_confirmation(&state.db, webauthn, &member, handle, credential, client).await;
    match outcome {
        Ok(Confirmation::Confirmed(_, next)) => {
            // More power for this session: a new id, as at sign-in.
            session.renew();
            match session.mark_passkey_proved(chrono::Utc::now().timestamp()) {
                Ok(()) => json::redirect(next.as_str()),
                Err(err) => json::page_error(&err.into()),
            }
        }
        Ok(Confirmation::Refused(_)) => json::error(
            StatusCode::UNAUTHORIZED,
            "That passkey could not be confirmed. Try again with one of your own passkeys.",
        ),
        Err(err) => json::page_error(&err.into()),
    }
}
