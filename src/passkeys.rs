//! Passkeys (WebAuthn, through webauthn-rs), free of HTTP: the relying party, what the session
//! keeps between the two halves of a ceremony, and the steps of managing one's passkeys. As in
//! [`crate::signin`], each step is one function with its own outcome, and writes its own audit
//! rows in the same transaction as the change they record:
//!
//! | step | function | outcome |
//! |---|---|---|
//! | `POST /passkeys/register/start` | [`start_registration`] | [`RegistrationStart`] |
//! | `POST /passkeys/register/finish` | [`finish_registration`] | [`Registration`] |
//! | `POST /passkeys/{id}/remove` | [`remove`] | `Option<PasskeyRow>` |
//! | `POST /passkeys/confirm/start` | [`start_confirmation`] | [`ConfirmationStart`] |
//! | `POST /passkeys/confirm/finish` | [`finish_confirmation`] | [`Confirmation`] |
//!
//! Signing in with a passkey is a sign-in step, in `signin` ([`crate::signin::start_passkey_sign_in`],
//! [`crate::signin::SignIn::finish_passkey`]). Every assertion, for signing in or confirming,
//! is checked by [`verify_use`].

use chrono::Utc;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AuthenticationResult, CredentialID, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Uuid, Webauthn,
    WebauthnBuilder, WebauthnResult,
};

use crate::domain::ids::PasskeyId;
use crate::domain::next_path::NextPath;
use crate::models::audit::{AuditEvent, ClientInfo, NewAuditRow};
use crate::models::member::Member;
use crate::models::passkey::{self, NewPasskey, PasskeyRow};
use crate::settings::RelyingParty;

// The ceremony states live in the server-side session (the PostgreSQL store), never in a
// cookie the browser could replay or edit: `crate::session::Ceremony`.

/// How long the browser has between a ceremony's start and its finish.
pub const CEREMONY_SECS: i64 = 300;
/// A session signed in by email may add a passkey only this soon after signing in: a stolen
/// session cookie alone should not be able to plant a lasting way in.
pub const FRESH_SIGN_IN_SECS: i64 = 600;
pub const MAX_NAME_CHARS: usize = 64;

pub fn webauthn(rp: &RelyingParty) -> WebauthnResult<Webauthn> {
    WebauthnBuilder::new(&rp.id, &rp.origin)?
        .rp_name("Latchkey")
        .timeout(std::time::Duration::from_secs(
            u64::try_from(CEREMONY_SECS).unwrap_or(300),
        ))
        .build()
}

/// Whether a session signed in at `signed_in_at` may add a passkey now.
pub fn may_add(signed_in_at: i64, proved_passkey: bool, now: i64) -> bool {
    proved_passkey || now.saturating_sub(signed_in_at) < FRESH_SIGN_IN_SECS
}

/// A passkey's name as the member typed it: trimmed, one line, at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyName(String);

impl PasskeyName {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let name = text.trim();
        if name.is_empty() {
            return Ok(Self("Passkey".into()));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err("A passkey name has at most 64 characters.");
        }
        if name.chars().any(char::is_control) {
            return Err("A passkey name is one line of text.");
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A ceremony under way, as the session keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ceremony<S, E> {
    pub state: S,
    pub started_at: i64,
    /// What the finish needs besides the state (the name, the `next` path).
    pub extra: E,
}

impl<S, E> Ceremony<S, E> {
    pub fn new(state: S, extra: E) -> Self {
        Self {
            state,
            started_at: Utc::now().timestamp(),
            extra,
        }
    }

    pub fn is_expired(&self, now: i64) -> bool {
        now.saturating_sub(self.started_at) >= CEREMONY_SECS || now < self.started_at
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewKey {
    pub name: PasskeyName,
    pub user_handle: Uuid,
}

pub type RegistrationCeremony = Ceremony<PasskeyRegistration, NewKey>;
/// With the `next` path as text, parsed again on the way out.
pub type ConfirmationCeremony = Ceremony<PasskeyAuthentication, String>;

/// Reads a stored passkey back; a row the library cannot read is as good as absent.
pub fn stored_passkey(row: &PasskeyRow) -> Option<Passkey> {
    serde_json::from_value(row.passkey.clone()).ok()
}

/// What `POST /passkeys/register/start` decided.
pub enum RegistrationStart {
    /// The options for `navigator.credentials.create` (as JSON), and the state to keep.
    Started(Box<(serde_json::Value, RegistrationCeremony)>),
    Failed(String),
}

pub fn start_registration(
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
    let ceremony = Ceremony::new(state, NewKey { name, user_handle });
    Ok(RegistrationStart::Started(Box::new((options, ceremony))))
}

/// What `POST /passkeys/register/finish` did.
#[derive(Debug)]
pub enum Registration {
    Added(Box<PasskeyRow>),
    /// Registered already (to this member or another).
    Duplicate,
    Refused(&'static str),
}

pub fn finish_registration(
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
        return failed(conn, "no registration under way in this session");
    };
    if ceremony.is_expired(Utc::now().timestamp()) {
        return failed(conn, "the registration took too long");
    }
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
            .actor(&member.email)
            .detail(format!("passkey {:?} (id {})", row.name, row.id))
            .insert(conn)?;
        Ok(Registration::Added(Box::new(row)))
    })
}

/// `POST /passkeys/{id}/remove`: the member's own passkey only (anyone else's is "not found").
pub fn remove(
    conn: &mut PgConnection,
    member: &Member,
    id: PasskeyId,
    client: &ClientInfo,
) -> QueryResult<Option<PasskeyRow>> {
    conn.transaction(|conn| {
        let Some(row) = passkey::delete_own(conn, id, member.id)? else {
            return Ok(None);
        };
        NewAuditRow::new(AuditEvent::PasskeyRemoved)
            .email(&member.email)
            .client(client)
            .actor(&member.email)
            .detail(format!("passkey {:?} (id {})", row.name, row.id))
            .insert(conn)?;
        Ok(Some(row))
    })
}

/// Why an assertion was not accepted. Audited as `passkey_failed` by the step that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseRefusal {
    /// No ceremony in this session, or it took too long: also what a replayed assertion gets,
    /// since finishing removes the ceremony.
    NoCeremony,
    Malformed,
    UnknownPasskey,
    /// The passkey belongs to another member than the one it has to prove.
    WrongMember,
    Deactivated,
    /// The signature, the challenge, the origin or user verification did not check out.
    Invalid,
    /// The signature counter did not move forward: a cloned authenticator, or a replay.
    CounterRegressed,
}

impl UseRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            UseRefusal::NoCeremony => {
                "no passkey ceremony under way in this session (expired, or already finished)"
            }
            UseRefusal::Malformed => "the browser's answer is malformed",
            UseRefusal::UnknownPasskey => "no such passkey (removed, or never registered here)",
            UseRefusal::WrongMember => "the passkey belongs to someone else",
            UseRefusal::Deactivated => "the member is deactivated",
            UseRefusal::Invalid => "the assertion did not verify",
            UseRefusal::CounterRegressed => {
                "the signature counter did not increase (a replay or a cloned authenticator)"
            }
        }
    }
}

/// Checks `result` (a verified assertion) against the stored row and records the use: the
/// counter must move forward (unless the authenticator keeps none), atomically.
pub fn verify_use(
    conn: &mut PgConnection,
    row: &PasskeyRow,
    result: &AuthenticationResult,
) -> QueryResult<Result<(), UseRefusal>> {
    let Some(mut stored) = stored_passkey(row) else {
        return Ok(Err(UseRefusal::UnknownPasskey));
    };
    let counter = i64::from(result.counter());
    if (counter > 0 || row.counter > 0) && counter <= row.counter {
        return Ok(Err(UseRefusal::CounterRegressed));
    }
    stored.update_credential(result);
    let Ok(serialised) = serde_json::to_value(&stored) else {
        return Ok(Err(UseRefusal::UnknownPasskey));
    };
    if !passkey::record_use(conn, row.id, row.counter, counter, &serialised)? {
        return Ok(Err(UseRefusal::CounterRegressed));
    }
    Ok(Ok(()))
}

/// What `POST /passkeys/confirm/start` decided.
pub enum ConfirmationStart {
    Started(Box<(RequestChallengeResponse, ConfirmationCeremony)>),
    /// The member has no passkey to confirm with: add one first.
    NoPasskeys,
    Failed(String),
}

/// A signed-in member proves a passkey of theirs (after an email sign-in, for admin work).
pub fn start_confirmation(
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
    Ok(match webauthn.start_passkey_authentication(&keys) {
        Ok((options, state)) => {
            let ceremony = Ceremony::new(state, next.as_str().to_string());
            ConfirmationStart::Started(Box::new((options, ceremony)))
        }
        Err(err) => ConfirmationStart::Failed(err.to_string()),
    })
}

/// What `POST /passkeys/confirm/finish` did.
#[derive(Debug)]
pub enum Confirmation {
    Confirmed(Box<PasskeyRow>),
    Refused(UseRefusal),
}

pub fn finish_confirmation(
    conn: &mut PgConnection,
    webauthn: &Webauthn,
    member: &Member,
    ceremony: Option<ConfirmationCeremony>,
    credential: Option<PublicKeyCredential>,
    client: &ClientInfo,
) -> QueryResult<Confirmation> {
    let outcome = confirmation(conn, webauthn, member, ceremony, credential)?;
    if let Err(refusal) = &outcome {
        NewAuditRow::new(AuditEvent::PasskeyFailed)
            .email(&member.email)
            .client(client)
            .detail(format!("confirming a passkey: {}", refusal.reason()))
            .insert(conn)?;
    }
    Ok(match outcome {
        Ok(row) => Confirmation::Confirmed(Box::new(row)),
        Err(refusal) => Confirmation::Refused(refusal),
    })
}

fn confirmation(
    conn: &mut PgConnection,
    webauthn: &Webauthn,
    member: &Member,
    ceremony: Option<ConfirmationCeremony>,
    credential: Option<PublicKeyCredential>,
) -> QueryResult<Result<PasskeyRow, UseRefusal>> {
    let Some(ceremony) = ceremony.filter(|c| !c.is_expired(Utc::now().timestamp())) else {
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
    conn.transaction(|conn| Ok(verify_use(conn, &row, &result)?.map(|()| row.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_short_line() {
        assert_eq!(PasskeyName::parse("  Laptop ").unwrap().as_str(), "Laptop");
        assert_eq!(PasskeyName::parse("").unwrap().as_str(), "Passkey");
        assert!(PasskeyName::parse(&"x".repeat(65)).is_err());
        assert!(PasskeyName::parse(&"é".repeat(64)).is_ok());
        assert!(PasskeyName::parse("a\nb").is_err());
    }

    #[test]
    fn adding_needs_a_fresh_sign_in_or_a_proved_passkey() {
        let now = 10_000;
        assert!(may_add(now - 60, false, now));
        assert!(!may_add(now - FRESH_SIGN_IN_SECS, false, now));
        assert!(may_add(now - 3 * FRESH_SIGN_IN_SECS, true, now));
    }

    #[test]
    fn ceremonies_expire() {
        let ceremony = Ceremony::new((), ());
        let now = ceremony.started_at;
        assert!(!ceremony.is_expired(now + CEREMONY_SECS - 1));
        assert!(ceremony.is_expired(now + CEREMONY_SECS));
        assert!(ceremony.is_expired(now - 1));
    }

    #[test]
    fn the_relying_party_builds_for_localhost_and_https_hosts() {
        let rp = |id: &str, origin: &str| RelyingParty {
            id: id.into(),
            origin: url::Url::parse(origin).unwrap(),
        };
        assert!(webauthn(&rp("localhost", "http://localhost:8080")).is_ok());
        assert!(webauthn(&rp("login.example.org", "https://login.example.org")).is_ok());
        assert!(webauthn(&rp("example.org", "https://login.example.org")).is_ok());
        assert!(webauthn(&rp("other.org", "https://login.example.org")).is_err());
    }
}
