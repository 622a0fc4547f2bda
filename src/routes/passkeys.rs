//! `GET /passkeys` (the member's passkeys), `POST /passkeys/register/start` and `/finish`
//! (adding one; JSON for `static/passkeys.js`), `POST /passkeys/{id}/remove`, and
//! `GET /passkeys/confirm` with `POST /passkeys/confirm/start` and `/finish`: proving a
//! passkey in a session signed in by email (what `LATCHKEY_ADMIN_PASSKEY=required` asks of
//! admins). The steps themselves live in [`crate::passkeys`].

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::domain::ids::PasskeyId;
use crate::domain::next_path::NextPath;
use crate::mail::{Letter, PasskeyAddedMail};
use crate::middleware::guard::CurrentMember;
use crate::models::member::Member;
use crate::models::passkey::{self, PasskeyRow};
use crate::passkeys::{
    self as steps, Confirmation, ConfirmationCeremony, ConfirmationStart, PasskeyName,
    Registration, RegistrationCeremony, RegistrationStart,
};
use crate::session::{Ceremony, SessionData};
use crate::settings::AdminPasskey;
use crate::state::AppState;
use crate::web::client::Client;
use crate::web::errors::{PageError, PageResult};
use crate::web::json;
use crate::web::pages::{is_htmx, Page};
use crate::web::redirect::see_other;

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

/// Why this session may not add a passkey right now, if it may not.
fn why_not_add(
    state: &AppState,
    session: &SessionData,
    member: &Member,
    has_passkeys: bool,
) -> Option<&'static str> {
    if state.webauthn.is_none() {
        return Some("Passkeys are not available on this server: its public URL has no host name.");
    }
    let proved = session.proved_passkey();
    let now = chrono::Utc::now().timestamp();
    if !steps::may_add(session.signed_in_at(), proved, now) {
        return Some(
            "To add a passkey, sign in again: adding one needs a sign-in from the last 10 minutes.",
        );
    }
    // Once an admin has a passkey, under `required` the mailbox alone may not add another.
    if state.settings.admin_passkey == AdminPasskey::Required
        && member.role().is_admin()
        && has_passkeys
        && !proved
    {
        return Some("Confirm with one of your passkeys first: then you can add another.");
    }
    None
}

async fn render(
    req: &HttpRequest,
    state: &AppState,
    member: &Member,
    notice: Option<String>,
) -> PageResult {
    let member_id = member.id;
    let rows = state
        .db
        .query(move |conn| passkey::list_for_member(conn, member_id))
        .await?;
    let session = SessionData::of(req);
    let blocked = why_not_add(state, &session, member, !rows.is_empty());
    let views: Vec<PasskeyView> = rows.into_iter().map(PasskeyView::from).collect();
    Ok(Page::new("passkeys", "Passkeys")
        .with("passkeys", views)
        .with("blocked", blocked)
        .with("proved", session.proved_passkey())
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

/// Keeps the ceremony's state in the session for the finish, and answers the browser's
/// options.
fn begin(
    session: &SessionData,
    kind: Ceremony,
    options: &impl Serialize,
    ceremony: &impl Serialize,
) -> HttpResponse {
    match session.put_ceremony(kind, ceremony) {
        Ok(()) => json::ok(options),
        Err(err) => json::page_error(&err.into()),
    }
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
    let Some(webauthn) = state.webauthn.clone() else {
        return json::unavailable();
    };
    let name = match PasskeyName::parse(&json::form_field(&body, "name").unwrap_or_default()) {
        Ok(name) => name,
        Err(problem) => return json::error(StatusCode::UNPROCESSABLE_ENTITY, problem),
    };
    let member_id = member.id;
    let has_passkeys = state
        .db
        .query(move |conn| passkey::user_handle_of(conn, member_id).map(|handle| handle.is_some()))
        .await;
    let has_passkeys = match has_passkeys {
        Ok(has) => has,
        Err(err) => return json::page_error(&err.into()),
    };
    let session = SessionData::of(&req);
    if let Some(reason) = why_not_add(&state, &session, &member, has_passkeys) {
        return json::error(StatusCode::FORBIDDEN, reason);
    }
    let started = state
        .db
        .query(move |conn| steps::start_registration(conn, &webauthn, &member, name))
        .await;
    match started {
        Ok(RegistrationStart::Started(started)) => {
            let (options, ceremony) = *started;
            begin(&session, Ceremony::Registration, &options, &ceremony)
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
    let Some(webauthn) = state.webauthn.clone() else {
        return json::unavailable();
    };
    let session = SessionData::of(&req);
    let ceremony = session.take_ceremony::<RegistrationCeremony>(Ceremony::Registration);
    let credential = serde_json::from_slice(&body).ok();
    let email = member.email.clone();
    let mail_client = client.clone();
    let outcome = state
        .db
        .query(move |conn| {
            steps::finish_registration(conn, &webauthn, &member, ceremony, credential, &client)
        })
        .await;
    match outcome {
        Ok(Registration::Added(row)) => {
            // Mail goes to the stored address; the member hears of every passkey added.
            state.mailer.queue(Letter::PasskeyAdded(
                email,
                PasskeyAddedMail {
                    name: row.name.clone(),
                    added_at: row.created_at,
                    ip: mail_client.ip,
                    user_agent: mail_client.user_agent,
                },
            ));
            json::redirect("/passkeys")
        }
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
    let owner = member.clone();
    let removed = state
        .db
        .query(move |conn| steps::remove(conn, &owner, id, &client))
        .await?
        .ok_or(PageError::NotFound)?;
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
    let member_id = member.id;
    let count = state
        .db
        .query(move |conn| passkey::list_for_member(conn, member_id).map(|rows| rows.len()))
        .await;
    let page = count.map_err(PageError::from).map(|count| {
        Page::new("passkey_confirm", "Confirm with a passkey")
            .with("next", next.as_str())
            .with("has_passkeys", count > 0)
            .with("available", state.webauthn.is_some())
            .with("proved", SessionData::of(&req).proved_passkey())
            .render(&req)
    });
    page
}

/// Body: optional form field `next`. Answers the options for `navigator.credentials.get`,
/// limited to the member's own passkeys.
pub async fn confirm_start(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(member): CurrentMember,
    body: web::Bytes,
) -> HttpResponse {
    let Some(webauthn) = state.webauthn.clone() else {
        return json::unavailable();
    };
    let next = NextPath::parse(json::form_field(&body, "next").as_deref());
    let started = state
        .db
        .query(move |conn| steps::start_confirmation(conn, &webauthn, &member, next))
        .await;
    match started {
        Ok(ConfirmationStart::Started(started)) => {
            let (options, ceremony) = *started;
            begin(
                &SessionData::of(&req),
                Ceremony::Confirm,
                &options,
                &ceremony,
            )
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
    let Some(webauthn) = state.webauthn.clone() else {
        return json::unavailable();
    };
    let session = SessionData::of(&req);
    let ceremony = session.take_ceremony::<ConfirmationCeremony>(Ceremony::Confirm);
    let next = NextPath::parse(ceremony.as_ref().map(|c| c.extra.as_str()));
    let credential = serde_json::from_slice(&body).ok();
    let outcome = state
        .db
        .query(move |conn| {
            steps::finish_confirmation(conn, &webauthn, &member, ceremony, credential, &client)
        })
        .await;
    match outcome {
        Ok(Confirmation::Confirmed(_)) => {
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
