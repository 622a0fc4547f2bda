//! Managing one's own passkeys, free of HTTP. As in [`crate::signin`], each step is one call
//! with its own outcome, one round trip that writes its audit rows in the same transaction as
//! the change they record:
//!
//! | step | function | outcome |
//! |---|---|---|
//! | `GET /passkeys` | [`list`] | `Vec<PasskeyRow>` |
//! | `POST /passkeys/register/start` | [`start_registration`] | [`RegistrationStart`] |
//! | `POST /passkeys/register/finish` | [`finish_registration`] | [`Registration`] |
//! | `POST /passkeys/{id}/remove` | [`remove`] | [`Removal`] |
//! | `POST /passkeys/confirm/start` | [`start_confirmation`] | [`ConfirmationStart`] |
//! | `POST /passkeys/confirm/finish` | [`finish_confirmation`] | [`Confirmation`] |
//! | `POST /team/{id}/passkeys/remove` | [`remove_all_of`] | `Vec<PasskeyRow>` |
//! | `latchkey passkeys reset` | [`reset`] | [`Reset`] |
//!
//! A ceremony's state waits in `passkey_ceremonies` ([`super::ceremony`]), bound to the
//! member who started it, and its finish consumes it before anything else.

use diesel::prelude::*;
use webauthn_rs::prelude::{
    CredentialID, Passkey, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Uuid, Webauthn,
};

use super::ceremony::{self, CeremonyHandle, CeremonyKind};
use super::{
    may_add, stored_passkey, verify_use, Ceremony, ConfirmationCeremony, NewKey, PasskeyName,
    RegistrationCeremony, UseRefusal,
};
use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::{Db, DbError};
use crate::domain::break_glass_reason::BreakGlassReason;
use crate::domain::client_info::ClientInfo;
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::{MemberId, PasskeyId};
use crate::domain::next_path::NextPath;
use crate::mail::{Letter, Mailer, PasskeyAddedMail};
use crate::models::member::{self, Actor, Member};
use crate::models::passkey::{self, NewPasskey, PasskeyRow};

/// A member's passkeys, oldest first.
pub async fn list(db: &Db, member_id: MemberId) -> Result<Vec<PasskeyRow>, DbError> {
    db.query(move |conn| passkey::list_for_member(conn, member_id))
        .await
}

/// What a session brings to the question whether it may add a passkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddGate {
    /// When the session signed in, in seconds since the epoch.
    pub signed_in_at: i64,
    pub proved_passkey: bool,
    pub now: i64,
}

/// Why this session may not add a passkey (on a server that has passkeys), if it may not.
pub fn why_not_add(gate: &AddGate, has_passkeys: bool) -> Option<&'static str> {
    if !may_add(gate.signed_in_at, gate.proved_passkey, gate.now) {
        return Some(
            "To add a passkey, sign in again: adding one needs a sign-in from the last 10 minutes.",
        );
    }
    // Once a member has a passkey, the mailbox alone may not add another (whatever
    // `LATCHKEY_ADMIN_PASSKEY` says): else whoever holds the mailbox could plant their own.
    if has_passkeys && !gate.proved_passkey {
        return Some("Confirm with one of your passkeys first: then you can add another.");
    }
    None
}

/// The options for `navigator.credentials.create` and the ceremony to keep, if `gate` lets
/// this session add a passkey.
pub async fn start_registration(
    db: &Db,
    webauthn: &Webauthn,
    member: &Member,
    name: PasskeyName,
    gate: AddGate,
) -> Result<RegistrationStart, DbError> {
    let (webauthn, member) = (webauthn.clone(), member.clone());
    db.query(move |conn| {
        let has_passkeys = passkey::user_handle_of(conn, member.id)?.is_some();
        if let Some(reason) = why_not_add(&gate, has_passkeys) {
            return Ok(RegistrationStart::NotNow(reason));
        }
        registration_options(conn, &webauthn, &member, name)
    })
    .await
}

/// Stores the new passkey, and tells the member by mail (at their stored address: they hear
/// of every passkey added).
pub async fn finish_registration(
    db: &Db,
    mailer: &Mailer,
    webauthn: &Webauthn,
    member: &Member,
    handle: Option<CeremonyHandle>,
    credential: Option<RegisterPublicKeyCredential>,
    client: ClientInfo,
) -> Result<Registration, DbError> {
    let (webauthn, member, audit_client) = (webauthn.clone(), member.clone(), client.clone());
    let email = member.email.clone();
    let registration = db
        .query(move |conn| {
            let kept = ceremony::take(
                conn,
                handle.as_ref(),
                CeremonyKind::Registration,
                Some(member.id),
            )?;
            register(conn, &webauthn, &member, kept, credential, &audit_client)
        })
        .await?;
    if let Registration::Added(row) = &registration {
        mailer.queue(Letter::PasskeyAdded(
            email,
            PasskeyAddedMail {
                name: row.name.clone(),
                added_at: row.created_at,
                ip: client.ip,
                user_agent: client.user_agent,
            },
        ));
    }
    Ok(registration)
}

/// What `POST /passkeys/{id}/remove` did.
#[derive(Debug)]
pub enum Removal {
    Removed(Box<PasskeyRow>),
    /// The passkey is the member's, but this session proved no passkey in the last
    /// [`super::RECENT_PROOF_SECS`]: nothing was removed.
    NeedsProof,
    /// Not the member's (someone else's, or no such passkey): its existence is not theirs
    /// to know.
    NotFound,
}

/// Removes one of the member's own passkeys, if `proved_recently` (see
/// [`super::proved_recently`]): a mailbox alone must not take a passkey away.
pub async fn remove(
    db: &Db,
    member: &Member,
    id: PasskeyId,
    proved_recently: bool,
    client: ClientInfo,
) -> Result<Removal, DbError> {
    let owner = member.clone();
    db.query(move |conn| remove_own(conn, &owner, id, proved_recently, &client))
        .await
}

/// Removes every passkey of `member_id` on behalf of someone else (an admin on `/team`, or
/// `latchkey passkeys reset`), each with its audit row in one transaction: `event` with
/// `actor`, and `why` in the detail. Empty when they had none (nothing is written then).
pub fn remove_all_of(
    conn: &mut PgConnection,
    member: &Member,
    actor: Actor<'_>,
    event: AuditEvent,
    why: &str,
    client: Option<&ClientInfo>,
) -> QueryResult<Vec<PasskeyRow>> {
    conn.transaction(|conn| {
        let removed = passkey::delete_all_of(conn, member.id)?;
        for row in &removed {
            let mut audit = NewAuditRow::new(event)
                .email(&member.email)
                .actor(actor)
                .detail(format!("passkey {:?} (id {}): {why}", row.name, row.id));
            if let Some(client) = client {
                audit = audit.client(client);
            }
            audit.insert(conn)?;
        }
        Ok(removed)
    })
}

/// What `latchkey passkeys reset` did.
#[derive(Debug)]
pub enum Reset {
    Removed(Member, Vec<PasskeyRow>),
    /// They had none: nothing was written.
    NoPasskeys(Member),
    NotAMember,
}

/// `latchkey passkeys reset EMAIL --reason TEXT`: for the last admin, who has lost every
/// passkey and has nobody to ask on `/team`. Removes them all, each audited `passkeys_reset`
/// with `actor` and the reason, in one transaction. A deactivated member's go too (harmless,
/// and what the operator asked for).
pub fn reset(
    conn: &mut PgConnection,
    email: &EmailAddress,
    reason: &BreakGlassReason,
    actor: Actor<'_>,
) -> QueryResult<Reset> {
    let Some(member) = member::find_by_email(conn, email)? else {
        return Ok(Reset::NotAMember);
    };
    let why = format!("reset by hand; reason: {reason}");
    let removed = remove_all_of(conn, &member, actor, AuditEvent::PasskeysReset, &why, None)?;
    Ok(if removed.is_empty() {
        Reset::NoPasskeys(member)
    } else {
        Reset::Removed(member, removed)
    })
}

/// A signed-in member proves a passkey of theirs (after an email sign-in, for admin work):
/// the options for `navigator.credentials.get`, limited to their own passkeys.
pub async fn start_confirmation(
    db: &Db,
    webauthn: &Webauthn,
    member: &Member,
    next: NextPath,
) -> Result<ConfirmationStart, DbError> {
    let (webauthn, member) = (webauthn.clone(), member.clone());
    db.query(move |conn| confirmation_options(conn, &webauthn, &member, next))
        .await
}

/// Checks the assertion against the member's own passkeys and records the use; a refusal is
/// audited `passkey_failed`.
pub async fn finish_confirmation(
    db: &Db,
    webauthn: &Webauthn,
    member: &Member,
    handle: Option<CeremonyHandle>,
    credential: Option<PublicKeyCredential>,
    client: ClientInfo,
) -> Result<Confirmation, DbError> {
    let (webauthn, member) = (webauthn.clone(), member.clone());
    db.query(move |conn| {
        let kept = ceremony::take(
            conn,
            handle.as_ref(),
            CeremonyKind::Confirmation,
            Some(member.id),
        )?;
        confirm(conn, &webauthn, &member, kept, credential, &client)
    })
    .await
}

/// What `POST /passkeys/register/start` decided.
pub enum RegistrationStart {
    /// This session may not add a passkey now; the reason is for the member.
    NotNow(&'static str),
    /// The options for `navigator.credentials.create` (as JSON), and the handle on the
    /// ceremony kept for the finish.
    Started(Box<(serde_json::Value, CeremonyHandle)>),
    Failed(String),
}

fn registration_options(
    conn: &mut PgConnection,
    webauthn: &Webauthn,
    member: &Member,
    name: PasskeyName,
) -> QueryResult<RegistrationStart> {
    let existing = passkey::list_for_member(conn, member.id)?;
    // One member's passkeys share a random user handle: the authenticator files them under
    // one account, and the handle says nothing about the member.
    let user_handle = match passkey::user_handle_of(conn, member.id)? {
        Some(bytes) => Uuid::from_slice(&bytes).unwrap_or_else(|_| Uuid::new_v4()),
        None => Uuid::new_v4(),
    };
    let exclude: Vec<CredentialID> = existing
        .iter()
        .map(|row| CredentialID::from(row.credential_id.clone()))
        .collect();
    let started = webauthn.start_passkey_registration(
        user_handle,
        member.email.as_str(),
        member.email.as_str(),
        Some(exclude),
    );
    let (options, state) = match started {
        Ok(started) => started,
        Err(err) => return Ok(RegistrationStart::Failed(err.to_string())),
    };
    let mut options = match serde_json::to_value(options) {
        Ok(options) => options,
        Err(err) => return Ok(RegistrationStart::Failed(err.to_string())),
    };
    // Discoverable credentials, so that signing in needs no address. webauthn-rs's passkey
    // registration asks for none ("discouraged") and does not check it on finish, so asking
    // the browser is all it takes.
    if let Some(selection) = options.pointer_mut("/publicKey/authenticatorSelection") {
        selection["residentKey"] = "required".into();
        selection["requireResidentKey"] = true.into();
    }
    let kept = Ceremony::new(state, NewKey { name, user_handle });
    Ok(
        match ceremony::begin(conn, CeremonyKind::Registration, Some(member.id), &kept)? {
            Ok(handle) => RegistrationStart::Started(Box::new((options, handle))),
            Err(reason) => RegistrationStart::Failed(reason),
        },
    )
}

/// What `POST /passkeys/register/finish` did.
#[derive(Debug)]
pub enum Registration {
    Added(Box<PasskeyRow>),
    /// Registered already (to this member or another).
    Duplicate,
    Refused(&'static str),
}

fn register(
    conn: &mut PgConnection,
    webauthn: &Webauthn,
    member: &Member,
    ceremony: Option<RegistrationCeremony>,
    credential: Option<RegisterPublicKeyCredential>,
    client: &ClientInfo,
) -> QueryResult<Registration> {
    let failed = |conn: &mut PgConnection, reason: &'static str| {
        NewAuditRow::new(AuditEvent::PasskeyFailed)
            .email(&member.email)
            .client(client)
            .detail(format!("adding a passkey: {reason}"))
            .insert(conn)
            .map(|_| Registration::Refused(reason))
    };
    let Some(ceremony) = ceremony else {
        return failed(
            conn,
            "no registration under way in this session (expired, or already finished)",
        );
    };
    let Some(credential) = credential else {
        return failed(conn, "the browser's answer is malformed");
    };
    let Ok(passkey) = webauthn.finish_passkey_registration(&credential, &ceremony.state) else {
        return failed(conn, "the authenticator's answer did not verify");
    };
    let Ok(serialised) = serde_json::to_value(&passkey) else {
        return failed(conn, "the passkey could not be stored");
    };
    let NewKey { name, user_handle } = ceremony.extra;
    conn.transaction(|conn| {
        let new = NewPasskey {
            member_id: member.id,
            credential_id: passkey.cred_id().as_ref().to_vec(),
            user_handle: user_handle.as_bytes().to_vec(),
            passkey: serialised,
            counter: 0,
            name: name.as_str().to_string(),
        };
        let Some(row) = passkey::insert(conn, &new)? else {
            NewAuditRow::new(AuditEvent::PasskeyFailed)
                .email(&member.email)
                .client(client)
                .detail("adding a passkey: that passkey is registered already")
                .insert(conn)?;
            return Ok(Registration::Duplicate);
        };
        NewAuditRow::new(AuditEvent::PasskeyAdded)
            .email(&member.email)
            .client(client)
            .actor(Actor::Member(member))
            .detail(format!("passkey {:?} (id {})", row.name, row.id))
            .insert(conn)?;
        Ok(Registration::Added(Box::new(row)))
    })
}

fn remove_own(
    conn: &mut PgConnection,
    member: &Member,
    id: PasskeyId,
    proved_recently: bool,
    client: &ClientInfo,
) -> QueryResult<Removal> {
    if !proved_recently {
        let own = passkey::list_for_member(conn, member.id)?
            .iter()
            .any(|row| row.id == id);
        return Ok(if own {
            Removal::NeedsProof
        } else {
            Removal::NotFound
        });
    }
    conn.transaction(|conn| {
        let Some(row) = passkey::delete_own(conn, id, member.id)? else {
            return Ok(Removal::NotFound);
        };
        NewAuditRow::new(AuditEvent::PasskeyRemoved)
            .email(&member.email)
            .client(client)
            .actor(Actor::Member(member))
            .detail(format!("passkey {:?} (id {})", row.name, row.id))
            .insert(conn)?;
        Ok(Removal::Removed(Box::new(row)))
    })
}

/// What `POST /passkeys/confirm/start` decided.
pub enum ConfirmationStart {
    Started(Box<(RequestChallengeResponse, CeremonyHandle)>),
    /// The member has no passkey to confirm with: add one first.
    NoPasskeys,
    Failed(String),
}

fn confirmation_options(
    conn: &mut PgConnection,
    webauthn: &Webauthn,
    member: &Member,
    next: NextPath,
) -> QueryResult<ConfirmationStart> {
    let keys: Vec<Passkey> = passkey::list_for_member(conn, member.id)?
        .iter()
        .filter_map(stored_passkey)
        .collect();
    if keys.is_empty() {
        return Ok(ConfirmationStart::NoPasskeys);
    }
    let (options, state) = match webauthn.start_passkey_authentication(&keys) {
        Ok(started) => started,
        Err(err) => return Ok(ConfirmationStart::Failed(err.to_string())),
    };
    let kept = Ceremony::new(state, next.as_str().to_string());
    Ok(
        match ceremony::begin(conn, CeremonyKind::Confirmation, Some(member.id), &kept)? {
            Ok(handle) => ConfirmationStart::Started(Box::new((options, handle))),
            Err(reason) => ConfirmationStart::Failed(reason),
        },
    )
}

/// What `POST /passkeys/confirm/finish` did.
#[derive(Debug)]
pub enum Confirmation {
    /// With where the member was going when they were sent to confirm.
    Confirmed(Box<PasskeyRow>, NextPath),
    Refused(UseRefusal),
}

fn confirm(
    conn: &mut PgConnection,
    webauthn: &Webauthn,
    member: &Member,
    ceremony: Option<ConfirmationCeremony>,
    credential: Option<PublicKeyCredential>,
    client: &ClientInfo,
) -> QueryResult<Confirmation> {
    let outcome = check_confirmation(conn, webauthn, member, ceremony, credential)?;
    if let Err(refusal) = &outcome {
        NewAuditRow::new(AuditEvent::PasskeyFailed)
            .email(&member.email)
            .client(client)
            .detail(format!("confirming a passkey: {}", refusal.reason()))
            .insert(conn)?;
    }
    Ok(match outcome {
        Ok((row, next)) => Confirmation::Confirmed(Box::new(row), next),
        Err(refusal) => Confirmation::Refused(refusal),
    })
}

fn check_confirmation(
    conn: &mut PgConnection,
    webauthn: &Webauthn,
    member: &Member,
    ceremony: Option<ConfirmationCeremony>,
    credential: Option<PublicKeyCredential>,
) -> QueryResult<Result<(PasskeyRow, NextPath), UseRefusal>> {
    let Some(ceremony) = ceremony else {
        return Ok(Err(UseRefusal::NoCeremony));
    };
    let Some(credential) = credential else {
        return Ok(Err(UseRefusal::Malformed));
    };
    let Some(row) = passkey::find_by_credential(conn, credential.get_credential_id())? else {
        return Ok(Err(UseRefusal::UnknownPasskey));
    };
    if row.member_id != member.id {
        return Ok(Err(UseRefusal::WrongMember));
    }
    let Ok(result) = webauthn.finish_passkey_authentication(&credential, &ceremony.state) else {
        return Ok(Err(UseRefusal::Invalid));
    };
    let next = NextPath::parse(Some(&ceremony.extra));
    conn.transaction(|conn| Ok(verify_use(conn, &row, &result)?.map(|()| (row.clone(), next))))
}
