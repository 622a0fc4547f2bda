//! Passkeys (WebAuthn, through webauthn-rs), free of HTTP: the relying party, what the session
//! keeps between the two halves of a ceremony, and how an assertion is checked. Managing
//! one's passkeys is [`manage`]; signing in with one is a sign-in step, in `signin`
//! ([`crate::signin::start_passkey_sign_in`], [`crate::signin::SignIn::finish_passkey`]). Every
//! assertion, for signing in or confirming, is checked by [`verify_use`].

pub mod ceremony;
pub mod manage;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AuthenticationResult, Passkey, PasskeyAuthentication, PasskeyRegistration, Uuid, Webauthn,
    WebauthnBuilder, WebauthnResult,
};

use crate::models::passkey::{self, PasskeyRow};
use crate::settings::RelyingParty;

/// How long the browser has between a ceremony's start and its finish.
pub const CEREMONY_SECS: i64 = 300;
/// A session signed in by email may add a passkey only this soon after signing in: a stolen
/// session cookie alone should not be able to plant a lasting way in.
pub const FRESH_SIGN_IN_SECS: i64 = 600;
/// Removing a passkey needs a passkey proved this recently in the same session, whatever
/// `LATCHKEY_ADMIN_PASSKEY` says: a mailbox alone must not take a member's passkeys away.
pub const RECENT_PROOF_SECS: i64 = 600;
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

/// Whether a session that proved a passkey at `proved_at` (Unix seconds, if ever) may remove
/// one now. A time in the future is not trusted.
pub fn proved_recently(proved_at: Option<i64>, now: i64) -> bool {
    proved_at.is_some_and(|at| at <= now && now - at < RECENT_PROOF_SECS)
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

/// A ceremony under way, as `passkey_ceremonies.state` keeps it (see [`ceremony`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ceremony<S, E> {
    pub state: S,
    /// What the finish needs besides the state (the name, the `next` path).
    pub extra: E,
}

impl<S, E> Ceremony<S, E> {
    pub fn new(state: S, extra: E) -> Self {
        Self { state, extra }
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

/// Why an assertion was not accepted. Audited as `passkey_failed` by the step that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseRefusal {
    /// No ceremony in this session, or it took too long: also what a replayed (or racing)
    /// assertion gets, since a finish consumes the ceremony's row.
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
    fn removing_needs_a_passkey_proved_in_the_last_ten_minutes() {
        let now = 10_000;
        assert!(!proved_recently(None, now));
        assert!(proved_recently(Some(now), now));
        assert!(proved_recently(Some(now - RECENT_PROOF_SECS + 1), now));
        assert!(!proved_recently(Some(now - RECENT_PROOF_SECS), now));
        assert!(!proved_recently(Some(now + 5), now));
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
