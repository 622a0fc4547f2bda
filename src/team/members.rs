//! The team page's work: list the members, add (or re-activate) one, change a role, a name or
//! someone's groups, deactivate, remove a member's passkeys. The last-admin rule and the audit rows live in
//! [`crate::models::member`]; removing passkeys is [`crate::passkeys::manage::remove_all_of`].

use std::collections::HashMap;

use crate::audit::rows::AuditEvent;
use crate::db::{Db, DbError};
use crate::domain::client_info::ClientInfo;
use crate::domain::email_address::EmailAddress;
use crate::domain::group_name::GroupName;
use crate::domain::ids::MemberId;
use crate::domain::member_name::MemberName;
use crate::domain::role::Role;
use crate::models::group::{self, Group, GroupError, GroupsSet};
use crate::models::member::{self, Actor, Added, ListedMember, Member, MemberError};
use crate::models::passkey::{self, PasskeyRow};
use crate::passkeys::manage::remove_all_of;
use crate::session::cache::Live;

/// What the team page lists.
#[derive(Debug)]
pub struct Team {
    /// Every member, by address, with their name and groups.
    pub members: Vec<ListedMember>,
    /// How many passkeys each member has (absent: none).
    pub passkeys: HashMap<MemberId, i64>,
    /// Every group, by name: what a member can be put in.
    pub groups: Vec<Group>,
}

pub async fn list(db: &Db) -> Result<Team, DbError> {
    db.query(|conn| {
        Ok(Team {
            members: member::list(conn)?,
            passkeys: passkey::counts_by_member(conn)?.into_iter().collect(),
            groups: group::all(conn)?,
        })
    })
    .await
}

/// Removes every passkey of member `id` (one who lost theirs asks an admin), each audited
/// `passkey_removed` with the admin as actor. The member is returned with what was removed
/// (nothing when they had none).
pub async fn remove_passkeys(
    db: &Db,
    admin: &Member,
    id: MemberId,
    client: ClientInfo,
) -> Result<(Member, Vec<PasskeyRow>), MemberError> {
    let admin = admin.clone();
    db.run(move |conn| {
        let Some(member) = member::find(conn, id).map_err(DbError::from)? else {
            return Err(MemberError::NotFound);
        };
        let removed = remove_all_of(
            conn,
            &member,
            Actor::Member(&admin),
            AuditEvent::PasskeyRemoved,
            "removed by an admin on the team page",
            Some(&client),
        )
        .map_err(DbError::from)?;
        Ok((member, removed))
    })
    .await
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

/// Sets or clears a member's display name.
pub async fn rename(
    live: &Live,
    admin: &Member,
    id: MemberId,
    name: Option<MemberName>,
) -> Result<Member, MemberError> {
    let admin = admin.clone();
    let renamed = live
        .db()
        .run(move |conn| member::rename(conn, id, name.as_ref(), &admin))
        .await;
    live.cache().forget_member(id);
    renamed
}

/// Puts a member in exactly these groups.
pub async fn set_groups(
    live: &Live,
    admin: &Member,
    id: MemberId,
    groups: Vec<GroupName>,
) -> Result<GroupsSet, GroupError> {
    let admin = admin.clone();
    let set = live
        .db()
        .run(move |conn| group::set_groups_of(conn, id, &groups, &admin))
        .await;
    live.cache().forget_member(id);
    set
}
