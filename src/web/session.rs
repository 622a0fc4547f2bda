//! What a Latchkey session holds, in one place. Handlers and middleware read and write it
//! through [`SessionData`]; the store, the cache and the queries that look inside a stored
//! state use the key names in [`keys`], which are part of every stored session.

use actix_session::{Session, SessionExt as _};
use actix_web::HttpRequest;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::domain::client_ip::ClientIp;
use crate::web::errors::PageError;

/// The names in a session's state map.
pub mod keys {
    /// Where actix-identity keeps the signed-in member's id.
    pub const IDENTITY: &str = "actix_identity.user_id";
    /// The signed-in session's CSRF token (before sign-in it comes from the browser cookie).
    pub const CSRF: &str = "latchkey.csrf";
    pub const SIGNED_IN_AT: &str = "latchkey.signed_in_at";
    pub const SEEN_AT: &str = "latchkey.seen_at";
    /// Copied by the store into the `sessions` row's own columns, for the sessions page.
    pub const IP: &str = "latchkey.ip";
    pub const USER_AGENT: &str = "latchkey.user_agent";
    /// Set once the session proved a passkey (signed in with one, or confirmed one since).
    pub const PASSKEY_PROVED_AT: &str = "latchkey.passkey_proved_at";
    pub const PASSKEY_REGISTRATION: &str = "latchkey.passkey_registration";
    pub const PASSKEY_SIGN_IN: &str = "latchkey.passkey_sign_in";
    pub const PASSKEY_CONFIRM: &str = "latchkey.passkey_confirm";

    /// A key that belongs to a sign-in: dropped when the session signs out.
    pub fn is_sign_in_key(key: &str) -> bool {
        key.starts_with("actix_identity.") || key.starts_with("latchkey.")
    }
}

/// A passkey ceremony whose server-side state waits in the session between its two steps.
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
    pub ip: Option<ClientIp>,
    pub user_agent: Option<&'a str>,
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

    fn put(&self, key: &str, value: impl Serialize) -> Result<(), PageError> {
        self.0
            .insert(key, value)
            .map_err(|e| PageError::Unexpected(anyhow::anyhow!("writing the session: {e}")))
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

    pub fn proved_passkey(&self) -> bool {
        self.get::<i64>(keys::PASSKEY_PROVED_AT).is_some()
    }

    /// The sign-in's own state, next to the member id actix-identity writes.
    pub fn start(&self, started: &Started<'_>) -> Result<(), PageError> {
        self.put(keys::CSRF, started.csrf_token)?;
        self.put(keys::SIGNED_IN_AT, started.at)?;
        self.put(keys::SEEN_AT, started.at)?;
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

    pub fn mark_passkey_proved(&self, at: i64) -> Result<(), PageError> {
        self.put(keys::PASSKEY_PROVED_AT, at)
    }

    pub fn put_ceremony(
        &self,
        ceremony: Ceremony,
        state: &impl Serialize,
    ) -> Result<(), PageError> {
        self.put(ceremony.key(), state)
    }

    /// Takes the ceremony's state out: whatever happens next, its challenge is spent.
    pub fn take_ceremony<T: DeserializeOwned>(&self, ceremony: Ceremony) -> Option<T> {
        self.0.remove_as::<T>(ceremony.key()).and_then(Result::ok)
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

/// A Unix-seconds stamp from a stored state map (the session cache's copy), 0 if absent.
pub fn stamp_in(state: &std::collections::HashMap<String, String>, key: &str) -> i64 {
    state
        .get(key)
        .and_then(|raw| serde_json::from_str(raw).ok())
        .unwrap_or(0)
}
