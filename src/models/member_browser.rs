//! `member_browsers`: the browsers each member has signed in from, for "new sign-in" mails.

use diesel::prelude::*;

use crate::domain::digests::DeviceDigest;
use crate::domain::ids::MemberId;
use crate::schema::member_browsers;

/// Records the browser (or notes it was seen again); true when the member has other
/// browsers but not this one, the case worth a mail. A member's first browser is not news.
pub fn remember(
    conn: &mut PgConnection,
    member_id: MemberId,
    digest: &DeviceDigest,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(member_browsers::table)
        .values((
            member_browsers::member_id.eq(member_id),
            member_browsers::browser_digest.eq(digest),
        ))
        .on_conflict((member_browsers::member_id, member_browsers::browser_digest))
        .do_update()
        .set(member_browsers::last_seen_at.eq(diesel::dsl::now))
        // `xmax = 0` only on a row this statement inserted, not on one it updated.
        .returning(diesel::dsl::sql::<diesel::sql_types::Bool>("(xmax = 0)"))
        .get_result::<bool>(conn)?;
    if !inserted {
        return Ok(false);
    }
    let known: i64 = member_browsers::table
        .filter(member_browsers::member_id.eq(member_id))
        .count()
        .get_result(conn)?;
    Ok(known > 1)
}
