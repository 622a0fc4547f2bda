//! Members' passkeys. The row keeps webauthn-rs's serialised `Passkey` (what verifying an
//! assertion needs) and, beside it, the credential id and counter as plain columns, so that
//! the lookup is an index and the replay check one compare-and-set UPDATE.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::domain::ids::{MemberId, PasskeyId};
use crate::schema::passkeys;

#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = passkeys, check_for_backend(diesel::pg::Pg))]
pub struct PasskeyRow {
    pub id: PasskeyId,
    pub member_id: MemberId,
    pub credential_id: Vec<u8>,
    pub user_handle: Vec<u8>,
    pub passkey: serde_json::Value,
    pub counter: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = passkeys)]
pub struct NewPasskey {
    pub member_id: MemberId,
    pub credential_id: Vec<u8>,
    pub user_handle: Vec<u8>,
    pub passkey: serde_json::Value,
    pub counter: i64,
    pub name: String,
}

/// A member's passkeys, oldest first.
pub fn list_for_member(
    conn: &mut PgConnection,
    member_id: MemberId,
) -> QueryResult<Vec<PasskeyRow>> {
    passkeys::table
        .filter(passkeys::member_id.eq(member_id))
        .order(passkeys::id.asc())
        .select(PasskeyRow::as_select())
        .load(conn)
}

/// How many passkeys each member has (members without any are absent), for the team page.
pub fn counts_by_member(conn: &mut PgConnection) -> QueryResult<Vec<(MemberId, i64)>> {
    passkeys::table
        .group_by(passkeys::member_id)
        .select((passkeys::member_id, diesel::dsl::count_star()))
        .load(conn)
}

pub fn find_by_credential(
    conn: &mut PgConnection,
    credential_id: &[u8],
) -> QueryResult<Option<PasskeyRow>> {
    passkeys::table
        .filter(passkeys::credential_id.eq(credential_id))
        .select(PasskeyRow::as_select())
        .first(conn)
        .optional()
}

/// The WebAuthn user handle the member's passkeys already carry, if they have any.
pub fn user_handle_of(
    conn: &mut PgConnection,
    member_id: MemberId,
) -> QueryResult<Option<Vec<u8>>> {
    passkeys::table
        .filter(passkeys::member_id.eq(member_id))
        .order(passkeys::id.asc())
        .select(passkeys::user_handle)
        .first(conn)
        .optional()
}

/// `None` when the credential is registered already (to anyone).
pub fn insert(conn: &mut PgConnection, new: &NewPasskey) -> QueryResult<Option<PasskeyRow>> {
    diesel::insert_into(passkeys::table)
        .values(new)
        .on_conflict(passkeys::credential_id)
        .do_nothing()
        .returning(PasskeyRow::as_returning())
        .get_result(conn)
        .optional()
}

/// Deletes one of the member's own passkeys; `None` when there is no such passkey of theirs.
pub fn delete_own(
    conn: &mut PgConnection,
    id: PasskeyId,
    member_id: MemberId,
) -> QueryResult<Option<PasskeyRow>> {
    diesel::delete(
        passkeys::table
            .filter(passkeys::id.eq(id))
            .filter(passkeys::member_id.eq(member_id)),
    )
    .returning(PasskeyRow::as_returning())
    .get_result(conn)
    .optional()
}

/// Deletes every passkey of the member (an admin's or the command line's reset), oldest first.
pub fn delete_all_of(conn: &mut PgConnection, member_id: MemberId) -> QueryResult<Vec<PasskeyRow>> {
    let mut removed: Vec<PasskeyRow> =
        diesel::delete(passkeys::table.filter(passkeys::member_id.eq(member_id)))
            .returning(PasskeyRow::as_returning())
            .get_results(conn)?;
    removed.sort_by_key(|row| row.id);
    Ok(removed)
}

/// Records a verified use: the new counter and credential, and when. Only if the row still
/// holds the counter the assertion was checked against, so of two racing uses of one
/// counter value only one counts.
pub fn record_use(
    conn: &mut PgConnection,
    id: PasskeyId,
    checked_counter: i64,
    counter: i64,
    passkey: &serde_json::Value,
) -> QueryResult<bool> {
    diesel::update(
        passkeys::table
            .filter(passkeys::id.eq(id))
            .filter(passkeys::counter.eq(checked_counter)),
    )
    .set((
        passkeys::counter.eq(counter),
        passkeys::passkey.eq(passkey),
        passkeys::last_used_at.eq(diesel::dsl::now),
    ))
    .execute(conn)
    .map(|n| n == 1)
}
