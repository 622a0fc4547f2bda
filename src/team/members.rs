//! The team page's work: list the members, add (or re-activate) one, change a role,
//! deactivate. The last-admin rule and the audit rows live in [`crate::models::member`].

use crate::db::{Db, DbError};
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::MemberId;
use crate::domain::role::Role;
use crate::models::member::{self, Added, ListedMember, Member, MemberError};
use crate::session::cache::Live;

/// Every member, by address.
pub async fn list(db: &Db) -> Result<Vec<ListedMember>, DbError> {
    db.query(member::list).await
}

/// Adds `email` with `role`, or re-activates them (or changes their role) if listed already.
pub async fn add(
    db: &Db,
    admin: &Member,
    email: EmailAddress,
    role: Role,
) -> Result<(Member, Added), MemberError> {
    let admin = admin.clone();
    db.run(move |conn| member::add_or_reactivate(conn, &email, role, &admin))
        .await
}

pub async fn change_role(
    live: &Live,
    admin: &Member,
    id: MemberId,
    role: Role,
) -> Result<Member, MemberError> {
    let admin = admin.clone();
    let changed = live
        .db()
        .run(move |conn| member::change_role(conn, id, role, &admin))
        .await;
    live.cache().forget_member(id);
    changed
}

/// Deactivates the member; their sessions and pending sign-in links end with it.
pub async fn deactivate(live: &Live, admin: &Member, id: MemberId) -> Result<Member, MemberError> {
    let admin = admin.clone();
    let deactivated = live
        .db()
        .run(move |conn| member::deactivate(conn, id, &admin))
        .await;
    live.cache().forget_member(id);
    deactivated
}
