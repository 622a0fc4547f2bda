//! Removing what has outlived its use: expired sessions and sign-in tokens, and audit rows
//! past the retention setting.

use std::fmt;

use diesel::prelude::*;

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::DbError;
use crate::domain::ids::MemberId;
use crate::models::{app_session, passkey_ceremony, sign_in_request};
use crate::schema::{members, sessions};
use crate::settings::Settings;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCounts {
    pub sessions: usize,
    pub sign_in_requests: usize,
    pub audit_rows: usize,
}

impl fmt::Display for PurgeCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} expired sessions, {} expired sign-in requests, {} audit rows past retention",
            self.sessions, self.sign_in_requests, self.audit_rows
        )
    }
}

/// What the periodic sweeper removes: state that is already dead. A signed-in member's
/// session that timed out gets its `session_expired` row in the same transaction (the guard
/// records the absolute lifetime itself; an idle timeout is only noticed here).
pub fn delete_expired_transient(conn: &mut PgConnection) -> Result<PurgeCounts, DbError> {
    let counts = conn.transaction(|conn| {
        let owners: Vec<Option<MemberId>> =
            diesel::delete(sessions::table.filter(sessions::expires_at.le(diesel::dsl::now)))
                .returning(sessions::member_id)
                .get_results(conn)?;
        let member_ids: Vec<MemberId> = owners.iter().flatten().copied().collect();
        if !member_ids.is_empty() {
            let emails: Vec<(MemberId, String)> = members::table
                .filter(members::id.eq_any(&member_ids))
                .select((members::id, members::email))
                .load(conn)?;
            for member_id in &member_ids {
                if let Some((_, email)) = emails.iter().find(|(id, _)| id == member_id) {
                    NewAuditRow::new(AuditEvent::SessionExpired)
                        .email(email)
                        .detail("idle timeout reached; the session was removed")
                        .insert(conn)?;
                }
            }
        }
        let sign_in_requests = sign_in_request::delete_expired(conn)?;
        // Passkey ceremonies nobody finished: a challenge is dead once expired, and these
        // rows say nothing worth counting.
        passkey_ceremony::delete_expired(conn)?;
        // Codes for an app's callback that nobody redeemed (a redeemed one is the app
        // session, which ends with its Latchkey session).
        app_session::purge_unredeemed(conn, chrono::Utc::now())?;
        // OpenID Connect codes never exchanged and tokens past their life.
        crate::models::oidc::purge(conn, chrono::Utc::now())?;
        Ok::<_, diesel::result::Error>(PurgeCounts {
            sessions: owners.len(),
            sign_in_requests,
            audit_rows: 0,
        })
    })?;
    Ok(counts)
}

/// `latchkey purge`: the sweeper's work, then audit rows past `LATCHKEY_AUDIT_RETENTION`
/// (see [`crate::audit::chain::purge_older_than`], which also signs a checkpoint of the
/// chain's new start with `audit_key`).
pub fn purge(
    conn: &mut PgConnection,
    settings: &Settings,
    audit_key: &ring::hmac::Key,
) -> Result<PurgeCounts, DbError> {
    let transient = delete_expired_transient(conn)?;
    let audit_rows =
        crate::audit::chain::purge_older_than(conn, settings.audit_retention, audit_key)?;
    Ok(PurgeCounts {
        audit_rows,
        ..transient
    })
}
