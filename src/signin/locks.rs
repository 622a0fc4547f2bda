//! The 24-hour locks on wrong codes and wrong approval numbers, and the advisory locks that
//! decide one member's requests, code tries and approvals one at a time, across every
//! Latchkey instance.

use chrono::Duration as ChronoDuration;
use diesel::prelude::*;

use crate::models::sign_in_request::LockScope;

/// Wrong codes for one member (or decoy address) within [`LOCK_WINDOW`] that lock codes.
pub const CODE_LOCK_FAILURES: i64 = 10;
/// Wrong approval numbers for one member within [`LOCK_WINDOW`] that lock approval.
pub const APPROVAL_LOCK_MISMATCHES: i64 = 3;
pub const LOCK_WINDOW: ChronoDuration = ChronoDuration::hours(24);

/// Advisory lock namespaces, one per kind of decision.
#[derive(Debug, Clone, Copy)]
pub(super) enum Namespace {
    Requests = 7301,
    Codes = 7302,
    Approvals = 7303,
}

/// The key a scope locks under: a member's id, or (for a decoy) a hash of the address.
pub(super) fn key_of(scope: &LockScope) -> i64 {
    match scope {
        LockScope::Member(id) => id.get(),
        LockScope::Address(email) => {
            let digest = crate::crypto::sha256(email.as_str().as_bytes());
            i64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
        }
    }
}

/// Serialises work on one key (in `namespace`) until the transaction ends.
pub(super) fn lock(conn: &mut PgConnection, namespace: Namespace, key: i64) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock($1, $2::int)")
        .bind::<diesel::sql_types::Integer, _>(namespace as i32)
        .bind::<diesel::sql_types::Integer, _>((key % i64::from(i32::MAX)) as i32)
        .execute(conn)
        .map(drop)
}
