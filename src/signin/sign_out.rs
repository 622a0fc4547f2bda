//! `POST /logout`: the audit row that must exist before a session may end.

use super::SignIn;
use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::DbError;
use crate::domain::client_info::ClientInfo;
use crate::models::member::Member;

impl SignIn {
    /// Writes `signed_out`; the caller ends the session only once this has succeeded.
    pub async fn sign_out(&self, member: Member, client: ClientInfo) -> Result<(), DbError> {
        self.db
            .query(move |conn| {
                NewAuditRow::new(AuditEvent::SignedOut)
                    .email(&member.email)
                    .client(&client)
                    .insert(conn)
                    .map(drop)
            })
            .await
    }
}
