//! What a Latchkey session holds, typed: handlers and middleware read and write it through
//! [`SessionData`] and never spell a key.

use actix_session::{Session, SessionExt as _};
use actix_web::HttpRequest;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys;
use crate::domain::client_ip::ClientIp;

/// A passkey ceremony under way: the session keeps the handle on its row of
/// `passkey_ceremonies` (the state itself is in that table, consumed once by the finish).
#[derive(Debug, Clone, Copy)]
pub enum Ceremony {
    SignIn,
    Registration,
    Confirm,
}

impl Ceremony {
    fn key(self) -> &'static str {
        match self {
            Ceremony::SignIn => keys::PASSKEY_SIGN_IN,
            Ceremony::Registration => keys::PASSKEY_REGISTRATION,
            Ceremony::Confirm => keys::PASSKEY_CONFIRM,
        }
    }
}

/// What a new sign-in writes into its session.
pub struct Started<'a> {
    pub csrf_token: &'a str,
    pub at: i64,
    /// How the sign-in was completed, when known (`link`, `code`, `approval`, `passkey`).
    pub by: Option<&'a str>,
    pub ip: Option<ClientIp>,
    pub user_agent: Option<&'a str>,
}

/// A value could not be written into the session (it did not serialise).
#[derive(Debug, thiserror::Error)]
#[error("writing the session: {0}")]
pub struct SessionWriteError(String);

/// How the session in a stored state map signed in (`link`, `code`, `approval`, `passkey`),
/// when it says.
pub fn signed_in_by_in(state: &std::collections::HashMap<String, String>) -> Option<String> {
    state
        .get(keys::SIGNED_IN_BY)
        .and_then(|raw| serde_json::from_str(raw).ok())
}

/// The request's session, typed.
pub struct SessionData(Session);

impl SessionData {
    pub fn of(req: &HttpRequest) -> Self {
        Self(req.get_session())
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.0.get::<T>(key).ok().flatten()
    }

    fn put(&self, key: &str, value: impl Serialize) -> Result<(), SessionWriteError> {
        self.0
            .insert(key, value)
            .map_err(|e| SessionWriteError(e.to_string()))
    }

    pub fn csrf_token(&self) -> Option<String> {
        self.get(keys::CSRF)
    }

    /// When this session signed in (Unix seconds; 0 if unknown, which is long expired).
    pub fn signed_in_at(&self) -> i64 {
        self.get(keys::SIGNED_IN_AT).unwrap_or(0)
    }

    /// When this session was last written as seen (Unix seconds; 0 if never).
    pub fn seen_at(&self) -> i64 {
        self.get(keys::SEEN_AT).unwrap_or(0)
    }

    /// When this session last proved a passkey (Unix seconds), if it ever did.
    pub fn passkey_proved_at(&self) -> Option<i64> {
        self.get::<i64>(keys::PASSKEY_PROVED_AT)
    }

    pub fn proved_passkey(&self) -> bool {
        self.passkey_proved_at().is_some()
    }

    /// The sign-in's own state, next to the member id actix-identity writes.
    pub fn start(&self, started: &Started<'_>) -> Result<(), SessionWriteError> {
        self.put(keys::CSRF, started.csrf_token)?;
        self.put(keys::SIGNED_IN_AT, started.at)?;
        self.put(keys::SEEN_AT, started.at)?;
        if let Some(by) = started.by {
            self.put(keys::SIGNED_IN_BY, by)?;
        }
        if let Some(ip) = started.ip {
            self.put(keys::IP, ip.to_string())?;
        }
        if let Some(agent) = started.user_agent {
            self.put(keys::USER_AGENT, agent)?;
        }
        Ok(())
    }

    /// Writing the session moves its idle expiry; a failure only delays that.
    pub fn mark_seen(&self, at: i64) {
        let _ = self.put(keys::SEEN_AT, at);
    }

    pub fn mark_passkey_proved(&self, at: i64) -> Result<(), SessionWriteError> {
        self.put(keys::PASSKEY_PROVED_AT, at)
    }

    /// Keeps the handle on a ceremony just started (replacing an older one of that kind).
    pub fn put_ceremony_handle(
        &self,
        ceremony: Ceremony,
        handle: &str,
    ) -> Result<(), SessionWriteError> {
        self.put(ceremony.key(), handle)
    }

    /// The handle on this session's ceremony of that kind. Only read, never removed here:
    /// the finish consumes the ceremony's row, and a session left unwritten cannot race its
    /// own renewal.
    pub fn ceremony_handle(&self, ceremony: Ceremony) -> Option<String> {
        self.get(ceremony.key())
    }

    /// A new session key for the same state (after a privilege change).
    pub fn renew(&self) {
        self.0.renew();
    }

    /// Ends the session: the row is deleted and the cookie cleared.
    pub fn purge(&self) {
        self.0.purge();
    }
}
