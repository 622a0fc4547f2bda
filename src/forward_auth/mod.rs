//! Forward auth, in one room: which app a proxy asks about ([`target`]), each app's own
//! session ([`app_sessions`]), whether a request to it may pass ([`check`]), what the room
//! remembers so that a check writes nothing per request ([`memory`]), and the
//! `Latchkey-Assertion` it hands the app ([`assertion`]). The HTTP side (reading headers and
//! cookies, how each proxy wants "not signed in" answered) stays in `routes::forward_auth` and
//! `routes::app_access`.

pub mod app_sessions;
pub mod assertion;
pub mod check;
pub mod memory;
pub mod proxy_config;
pub mod target;

use assertion::AssertionKey;
use memory::ForwardAuthMemory;

/// The room's state, one per process.
#[derive(Debug)]
pub struct ForwardAuth {
    key: AssertionKey,
    memory: ForwardAuthMemory,
}

impl ForwardAuth {
    /// `seed` is derived from `LATCHKEY_SECRET_KEY` (`Keys::assertion_seed`), so every instance
    /// signs alike.
    pub fn new(seed: &[u8; 32]) -> Result<Self, ring::error::KeyRejected> {
        Ok(Self {
            key: AssertionKey::from_seed(seed)?,
            memory: ForwardAuthMemory::default(),
        })
    }

    /// The JWK set that verifies `Latchkey-Assertion`.
    pub fn jwks(&self) -> serde_json::Value {
        self.key.jwks()
    }
}
