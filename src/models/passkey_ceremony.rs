//! Passkey ceremonies under way: the challenge (webauthn-rs's state) between a ceremony's start
//! and its finish. A session keeps only a random handle; the row is found by the handle's
//! digest and consumed by one `DELETE … RETURNING`, so that of two racing finishes only one
//! gets the challenge.

use chrono::{Duration, Utc};
use diesel::dsl::now;
use diesel::prelude::*;

use crate::domain::digests::CeremonyDigest;
use crate::domain::ids::MemberId;
use crate::schema::passkey_ceremonies;

/// Which ceremony a row belongs to (`passkey_ceremonies.kind`): a handle made for one kind
/// never finishes another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyKind {
    SignIn,
    Registration,
    Confirmation,
}

impl CeremonyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CeremonyKind::SignIn => "sign_in",
            CeremonyKind::Registration => "registration",
            CeremonyKind::Confirmation => "confirmation",
        }
    }
}

/// Keeps a ceremony's state for `lifetime_secs`. `member` is who started it (`None` for a
/// sign-in, which has nobody yet).
pub fn insert(
    conn: &mut PgConnection,
    digest: &CeremonyDigest,
    kind: CeremonyKind,
    member: Option<MemberId>,
    state: &serde_json::Value,
    lifetime_secs: i64,
) -> QueryResult<()> {
    diesel::insert_into(passkey_ceremonies::table)
        .values((
            passkey_ceremonies::handle_digest.eq(digest),
            passkey_ceremonies::kind.eq(kind.as_str()),
            passkey_ceremonies::member_id.eq(member),
            passkey_ceremonies::state.eq(state),
            passkey_ceremonies::expires_at.eq(Utc::now() + Duration::seconds(lifetime_secs)),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Takes the ceremony out, if it is of this kind, this member's and not expired: one
/// statement, so a challenge is handed out once however many requests race for it. A row of
/// another kind or member stays where it is (and expires).
pub fn consume(
    conn: &mut PgConnection,
    digest: &CeremonyDigest,
    kind: CeremonyKind,
    member: Option<MemberId>,
) -> QueryResult<Option<serde_json::Value>> {
    let mine = passkey_ceremonies::table
        .filter(passkey_ceremonies::handle_digest.eq(digest))
        .filter(passkey_ceremonies::kind.eq(kind.as_str()))
        .filter(passkey_ceremonies::expires_at.gt(now));
    let deleted = match member {
        Some(member) => diesel::delete(mine.filter(passkey_ceremonies::member_id.eq(member)))
            .returning(passkey_ceremonies::state)
            .get_result(conn),
        None => diesel::delete(mine.filter(passkey_ceremonies::member_id.is_null()))
            .returning(passkey_ceremonies::state)
            .get_result(conn),
    };
    deleted.optional()
}

/// What the sweeper removes: ceremonies nobody finished in time.
pub fn delete_expired(conn: &mut PgConnection) -> QueryResult<usize> {
    diesel::delete(passkey_ceremonies::table.filter(passkey_ceremonies::expires_at.le(now)))
        .execute(conn)
}
