//! Where a ceremony waits between its start and its finish: a row of `passkey_ceremonies`,
//! named by a random handle that only the session holds (the table keeps its digest). A finish
//! consumes the row in one statement, so one challenge is answered once, whatever the
//! authenticator's signature counter says and however many requests race (the session's state
//! could not promise that: each request reads its own copy).

use diesel::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::CEREMONY_SECS;
use crate::domain::digests::CeremonyDigest;
use crate::domain::ids::MemberId;
use crate::models::passkey_ceremony;

pub use crate::models::passkey_ceremony::CeremonyKind;

/// The session's handle on a ceremony: 32 random bytes, base64url.
#[derive(Clone, PartialEq, Eq)]
pub struct CeremonyHandle(String);

impl CeremonyHandle {
    fn generate() -> Self {
        use base64::Engine as _;
        Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(crate::crypto::random_bytes::<32>()),
        )
    }

    /// As the session kept it. Any text will do: one that was never handed out finds no row.
    pub fn from_session(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn digest(&self) -> CeremonyDigest {
        CeremonyDigest::sha256(self.0.as_bytes())
    }
}

/// It opens a ceremony under way: logs have no use for it.
impl std::fmt::Debug for CeremonyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CeremonyHandle(..)")
    }
}

/// Keeps `ceremony` for [`CEREMONY_SECS`] and returns the handle for the session; `Err` with
/// the reason when the state does not serialise (ours to fix, not the member's).
pub fn begin(
    conn: &mut PgConnection,
    kind: CeremonyKind,
    member: Option<MemberId>,
    ceremony: &impl Serialize,
) -> QueryResult<Result<CeremonyHandle, String>> {
    let state = match serde_json::to_value(ceremony) {
        Ok(state) => state,
        Err(err) => return Ok(Err(format!("keeping the ceremony: {err}"))),
    };
    let handle = CeremonyHandle::generate();
    passkey_ceremony::insert(conn, &handle.digest(), kind, member, &state, CEREMONY_SECS)?;
    Ok(Ok(handle))
}

/// Consumes the ceremony `handle` names, if it is of `kind`, started by `member` and not
/// expired. `None` also for a state that no longer reads (written by another version).
pub fn take<T: DeserializeOwned>(
    conn: &mut PgConnection,
    handle: Option<&CeremonyHandle>,
    kind: CeremonyKind,
    member: Option<MemberId>,
) -> QueryResult<Option<T>> {
    let Some(handle) = handle else {
        return Ok(None);
    };
    let state = passkey_ceremony::consume(conn, &handle.digest(), kind, member)?;
    Ok(state.and_then(|state| serde_json::from_value(state).ok()))
}
