//! Latchkey's own sessions, in one room: the typed state a request reads and writes
//! ([`SessionData`]), the PostgreSQL store behind actix-session ([`store`]), the in-memory
//! cache and its `LISTEN` thread ([`cache`]), the rows the sessions page lists and revokes
//! ([`rows`]) and that page's work ([`page`]), and the one rule that says whether a session
//! still holds ([`validity`]). The names of the keys inside a stored state are private to
//! this room.

pub mod cache;
pub mod page;
pub mod rows;
mod state;
pub mod store;
pub mod validity;

pub use state::{signed_in_by_in, Ceremony, SessionData, SessionWriteError, Started};

/// The names in a session's state map.
mod keys {
    /// Where actix-identity keeps the signed-in member's id.
    pub(super) const IDENTITY: &str = "actix_identity.user_id";
    /// The signed-in session's CSRF token (before sign-in it comes from the browser cookie).
    pub(super) const CSRF: &str = "latchkey.csrf";
    pub(super) const SIGNED_IN_AT: &str = "latchkey.signed_in_at";
    pub(super) const SEEN_AT: &str = "latchkey.seen_at";
    /// How the sign-in was completed (`link`, `code`, `approval`, `passkey`): OpenID Connect's
    /// `amr`.
    pub(super) const SIGNED_IN_BY: &str = "latchkey.signed_in_by";
    /// Copied by the store into the `sessions` row's own columns, for the sessions page.
    pub(super) const IP: &str = "latchkey.ip";
    pub(super) const USER_AGENT: &str = "latchkey.user_agent";
    /// Set once the session proved a passkey (signed in with one, or confirmed one since).
    pub(super) const PASSKEY_PROVED_AT: &str = "latchkey.passkey_proved_at";
    pub(super) const PASSKEY_REGISTRATION: &str = "latchkey.passkey_registration";
    pub(super) const PASSKEY_SIGN_IN: &str = "latchkey.passkey_sign_in";
    pub(super) const PASSKEY_CONFIRM: &str = "latchkey.passkey_confirm";

    /// A key that belongs to a sign-in: dropped when the session signs out.
    pub(super) fn is_sign_in_key(key: &str) -> bool {
        key.starts_with("actix_identity.") || key.starts_with("latchkey.")
    }
}
