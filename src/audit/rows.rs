//! The login audit: append-only rows in a hash chain. The database keeps the chain (its
//! `login_audit_row_hash`, last defined by the `client_ips_as_inet` migration), and
//! [`AuditRow::expected_hash`] recomputes the same hash for `latchkey audit verify`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::crypto::sha256;
use crate::domain::client_info::ClientInfo;
use crate::domain::client_ip::ClientIp;
use crate::domain::ids::{AuditId, RequestId};
use crate::domain::text::cut_to;
use crate::schema::login_audit;

/// Rows this process has appended (counted when the insert succeeds, even if its transaction
/// later rolls back): the checkpoint task compares it between ticks to do nothing while idle.
static APPENDED: AtomicU64 = AtomicU64::new(0);

/// How many audit rows this process has appended so far (see [`APPENDED`]).
pub fn appended_by_this_process() -> u64 {
    APPENDED.load(Ordering::Relaxed)
}

/// [`APPENDED`] by event, at the event's place in [`AuditEvent::ALL`]: `/metrics` counts the
/// refusals from here, the one place every audit row passes through.
static APPENDED_BY_EVENT: [AtomicU64; AuditEvent::ALL.len()] =
    [const { AtomicU64::new(0) }; AuditEvent::ALL.len()];

/// How many `event` rows this process has appended so far (counted as [`APPENDED`] is).
pub fn appended_of(event: AuditEvent) -> u64 {
    APPENDED_BY_EVENT[event as usize].load(Ordering::Relaxed)
}

/// Every event the audit knows, by its contract name, which is what `login_audit.event`
/// holds: diesel writes this type directly. Rows are read back as text (`AuditRow::event`),
/// so an audit written by another version, with a name this one does not know, still reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, diesel::expression::AsExpression)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum AuditEvent {
    LinkRequested,
    LinkSent,
    LinkSendFailed,
    LoginDenied,
    LoginThrottled,
    LinkPrefetched,
    SignedIn,
    LinkInvalid,
    LinkExpired,
    LinkReused,
    LinkWrongBrowser,
    CodeFailed,
    ApprovalMismatch,
    LinkCancelled,
    SignedOut,
    SessionExpired,
    SessionRevoked,
    MemberAdded,
    MemberRoleChanged,
    MemberDeactivated,
    CodeLocked,
    ApprovalLocked,
    AppAdded,
    AppChanged,
    AppRemoved,
    AppOpened,
    AppDenied,
    PasskeyAdded,
    PasskeyRemoved,
    PasskeyFailed,
    PasskeysReset,
    AuditChainBroken,
    GroupAdded,
    GroupRemoved,
    GroupMemberAdded,
    GroupMemberRemoved,
    MemberRenamed,
    AppSecretRotated,
    SigningKeyRotated,
    OidcRefused,
    OidcCodeReused,
    OidcLogoutSent,
    OidcLogoutFailed,
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 43] = [
        AuditEvent::LinkRequested,
        AuditEvent::LinkSent,
        AuditEvent::LinkSendFailed,
        AuditEvent::LoginDenied,
        AuditEvent::LoginThrottled,
        AuditEvent::LinkPrefetched,
        AuditEvent::SignedIn,
        AuditEvent::LinkInvalid,
        AuditEvent::LinkExpired,
        AuditEvent::LinkReused,
        AuditEvent::LinkWrongBrowser,
        AuditEvent::CodeFailed,
        AuditEvent::ApprovalMismatch,
        AuditEvent::LinkCancelled,
        AuditEvent::SignedOut,
        AuditEvent::SessionExpired,
        AuditEvent::SessionRevoked,
        AuditEvent::MemberAdded,
        AuditEvent::MemberRoleChanged,
        AuditEvent::MemberDeactivated,
        AuditEvent::CodeLocked,
        AuditEvent::ApprovalLocked,
        AuditEvent::AppAdded,
        AuditEvent::AppChanged,
        AuditEvent::AppRemoved,
        AuditEvent::AppOpened,
        AuditEvent::AppDenied,
        AuditEvent::PasskeyAdded,
        AuditEvent::PasskeyRemoved,
        AuditEvent::PasskeyFailed,
        AuditEvent::PasskeysReset,
        AuditEvent::AuditChainBroken,
        AuditEvent::GroupAdded,
        AuditEvent::GroupRemoved,
        AuditEvent::GroupMemberAdded,
        AuditEvent::GroupMemberRemoved,
        AuditEvent::MemberRenamed,
        AuditEvent::AppSecretRotated,
        AuditEvent::SigningKeyRotated,
        AuditEvent::OidcRefused,
        AuditEvent::OidcCodeReused,
        AuditEvent::OidcLogoutSent,
        AuditEvent::OidcLogoutFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::LinkRequested => "link_requested",
            AuditEvent::LinkSent => "link_sent",
            AuditEvent::LinkSendFailed => "link_send_failed",
            AuditEvent::LoginDenied => "login_denied",
            AuditEvent::LoginThrottled => "login_throttled",
            AuditEvent::LinkPrefetched => "link_prefetched",
            AuditEvent::SignedIn => "signed_in",
            AuditEvent::LinkInvalid => "link_invalid",
            AuditEvent::LinkExpired => "link_expired",
            AuditEvent::LinkReused => "link_reused",
            AuditEvent::LinkWrongBrowser => "link_wrong_browser",
            AuditEvent::CodeFailed => "code_failed",
            AuditEvent::ApprovalMismatch => "approval_mismatch",
            AuditEvent::LinkCancelled => "link_cancelled",
            AuditEvent::SignedOut => "signed_out",
            AuditEvent::SessionExpired => "session_expired",
            AuditEvent::SessionRevoked => "session_revoked",
            AuditEvent::MemberAdded => "member_added",
            AuditEvent::MemberRoleChanged => "member_role_changed",
            AuditEvent::MemberDeactivated => "member_deactivated",
            AuditEvent::CodeLocked => "code_locked",
            AuditEvent::ApprovalLocked => "approval_locked",
            AuditEvent::AppAdded => "app_added",
            AuditEvent::AppChanged => "app_changed",
            AuditEvent::AppRemoved => "app_removed",
            AuditEvent::AppOpened => "app_opened",
            AuditEvent::AppDenied => "app_denied",
            AuditEvent::PasskeyAdded => "passkey_added",
            AuditEvent::PasskeyRemoved => "passkey_removed",
            AuditEvent::PasskeyFailed => "passkey_failed",
            AuditEvent::PasskeysReset => "passkeys_reset",
            AuditEvent::AuditChainBroken => "audit_chain_broken",
            AuditEvent::GroupAdded => "group_added",
            AuditEvent::GroupRemoved => "group_removed",
            AuditEvent::GroupMemberAdded => "group_member_added",
            AuditEvent::GroupMemberRemoved => "group_member_removed",
            AuditEvent::MemberRenamed => "member_renamed",
            AuditEvent::AppSecretRotated => "app_secret_rotated",
            AuditEvent::SigningKeyRotated => "signing_key_rotated",
            AuditEvent::OidcRefused => "oidc_refused",
            AuditEvent::OidcCodeReused => "oidc_code_reused",
            AuditEvent::OidcLogoutSent => "oidc_logout_sent",
            AuditEvent::OidcLogoutFailed => "oidc_logout_failed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == name)
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for AuditEvent {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(
            self.as_str(),
            out,
        )
    }
}

/// One audit row to write. Build it with [`NewAuditRow::new`] and the `with_*` methods.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = login_audit)]
pub struct NewAuditRow {
    event: AuditEvent,
    email: Option<String>,
    ip: Option<ClientIp>,
    user_agent: Option<String>,
    actor: Option<String>,
    detail: String,
    request_id: Option<RequestId>,
}

impl NewAuditRow {
    pub fn new(event: AuditEvent) -> Self {
        Self {
            event,
            email: None,
            ip: None,
            user_agent: None,
            actor: None,
            detail: String::new(),
            request_id: None,
        }
    }

    pub fn email(mut self, email: impl AsRef<str>) -> Self {
        self.email = Some(cut_to(email.as_ref(), 320).to_string());
        self
    }

    pub fn client(mut self, client: &ClientInfo) -> Self {
        self.ip = client.ip;
        self.user_agent.clone_from(&client.user_agent);
        self
    }

    pub fn actor(mut self, actor: impl AsRef<str>) -> Self {
        self.actor = Some(actor.as_ref().to_string());
        self
    }

    /// Free text for people; never a token, code or session id.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = cut_to(&detail.into(), 1000).to_string();
        self
    }

    pub fn request(mut self, request_id: RequestId) -> Self {
        self.request_id = Some(request_id);
        self
    }

    /// Appends the row; call it inside the transaction that makes the change it records.
    pub fn insert(&self, conn: &mut PgConnection) -> QueryResult<AuditId> {
        let id = diesel::insert_into(login_audit::table)
            .values(self)
            .returning(login_audit::id)
            .get_result(conn)?;
        APPENDED.fetch_add(1, Ordering::Relaxed);
        APPENDED_BY_EVENT[self.event as usize].fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }
}

#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = login_audit, check_for_backend(diesel::pg::Pg))]
pub struct AuditRow {
    pub id: AuditId,
    /// Gapless position in the chain, from 1 (ids may skip values; seq never does).
    pub seq: i64,
    pub occurred_at: DateTime<Utc>,
    pub event: String,
    pub email: Option<String>,
    /// As the chain hashes it: `host(ip)`, the address as PostgreSQL spells it.
    #[diesel(select_expression = diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::Text>>("host(login_audit.ip)"))]
    #[diesel(select_expression_type = diesel::expression::SqlLiteral<diesel::sql_types::Nullable<diesel::sql_types::Text>>)]
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub actor: Option<String>,
    pub detail: String,
    pub request_id: Option<RequestId>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

fn field(out: &mut String, value: Option<&str>) {
    match value {
        None => out.push_str("-;"),
        Some(value) => {
            out.push_str(&value.len().to_string());
            out.push(':');
            out.push_str(value);
            out.push(';');
        }
    }
}

impl AuditRow {
    /// The chain hash of this row given its predecessor's, exactly as the database's
    /// `login_audit_row_hash` computes it.
    pub fn expected_hash(&self, prev_hash: &[u8]) -> Vec<u8> {
        let mut canonical = format!(
            "{}|{}|{}|{}|",
            hex::encode(prev_hash),
            self.id,
            self.seq,
            self.occurred_at.timestamp_micros()
        );
        field(&mut canonical, Some(&self.event));
        field(&mut canonical, self.email.as_deref());
        field(&mut canonical, self.ip.as_deref());
        field(&mut canonical, self.user_agent.as_deref());
        field(&mut canonical, self.actor.as_deref());
        field(&mut canonical, Some(&self.detail));
        field(
            &mut canonical,
            self.request_id.map(|id| id.to_string()).as_deref(),
        );
        sha256(canonical.as_bytes()).to_vec()
    }
}

/// Rows about one sign-in request, oldest first (requested → sent → signed in).
pub fn for_request(conn: &mut PgConnection, request_id: RequestId) -> QueryResult<Vec<AuditRow>> {
    login_audit::table
        .filter(login_audit::request_id.eq(request_id))
        .order(login_audit::id.asc())
        .select(AuditRow::as_select())
        .load(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_name_round_trips() {
        for event in AuditEvent::ALL {
            assert_eq!(AuditEvent::parse(event.as_str()), Some(event));
        }
        assert_eq!(AuditEvent::parse("nope"), None);
    }

    #[test]
    fn every_event_counts_at_its_own_place() {
        for (place, event) in AuditEvent::ALL.into_iter().enumerate() {
            assert_eq!(event as usize, place, "{event}");
        }
    }
}
