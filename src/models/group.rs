//! The team's groups and who is in each. Groups say which apps a member may open (an app lets
//! groups in: `models::app`); every change is audited in its own transaction
//! (`group_added`, `group_removed`, `group_member_added`, `group_member_removed`).
//!
//! The triggers of migration `groups` tell every instance's session cache: a change of
//! someone's groups forgets that member, a group's removal forgets everything.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::DbError;
use crate::domain::email_address::EmailAddress;
use crate::domain::group_name::GroupName;
use crate::domain::ids::{GroupId, MemberId};
use crate::models::member::{Actor, Member};
use crate::schema::{app_groups, apps, group_members, groups, members};

#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = groups, check_for_backend(diesel::pg::Pg))]
pub struct Group {
    pub id: GroupId,
    pub name: GroupName,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("there is no group {0}")]
    NoSuchGroup(GroupName),
    #[error("{0} is not a member of the team; add them first")]
    UnknownMember(String),
    #[error("no such member")]
    NoSuchMember,
    /// The database failed (or could not be reached): not the request's fault.
    #[error(transparent)]
    Query(#[from] DbError),
}

impl crate::db::DbFailure for GroupError {
    fn is_database_failure(&self) -> bool {
        matches!(self, GroupError::Query(_))
    }
}

/// Model functions use `?` on diesel's results; `Db::run` adds pool and task failures.
impl From<diesel::result::Error> for GroupError {
    fn from(err: diesel::result::Error) -> Self {
        GroupError::Query(DbError::Query(err))
    }
}

/// Whether a call changed anything (asking for what already holds is not an error: the
/// command line is run from scripts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Made,
    AlreadySo,
}

/// A group with its members' addresses, by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub group: Group,
    pub members: Vec<String>,
}

/// Every group, by name.
pub fn all(conn: &mut PgConnection) -> QueryResult<Vec<Group>> {
    groups::table
        .order(groups::name.asc())
        .select(Group::as_select())
        .load(conn)
}

/// Every group with its members (deactivated ones included: they are still in it), by name.
pub fn list(conn: &mut PgConnection) -> QueryResult<Vec<GroupEntry>> {
    let all = all(conn)?;
    let listed: Vec<(GroupId, String)> = group_members::table
        .inner_join(members::table)
        .order(members::email.asc())
        .select((group_members::group_id, members::email))
        .load(conn)?;
    let mut by_group: BTreeMap<GroupId, Vec<String>> = BTreeMap::new();
    for (group_id, email) in listed {
        by_group.entry(group_id).or_default().push(email);
    }
    Ok(all
        .into_iter()
        .map(|group| GroupEntry {
            members: by_group.remove(&group.id).unwrap_or_default(),
            group,
        })
        .collect())
}

/// The groups of these names that exist, by name, each locked until the transaction ends (so
/// that a group's removal waits for what is being added to it).
pub fn find_all(conn: &mut PgConnection, names: &[GroupName]) -> QueryResult<Vec<Group>> {
    groups::table
        .filter(groups::name.eq_any(names))
        .order(groups::name.asc())
        .select(Group::as_select())
        .for_share()
        .load(conn)
}

/// The first of `names` that [`find_all`] did not find.
pub fn first_missing<'n>(names: &'n [GroupName], found: &[Group]) -> Option<&'n GroupName> {
    names
        .iter()
        .find(|name| !found.iter().any(|group| group.name == **name))
}

/// As [`find_all`], every one of them or the first unknown name.
fn require_all(conn: &mut PgConnection, names: &[GroupName]) -> Result<Vec<Group>, GroupError> {
    let found = find_all(conn, names)?;
    match first_missing(names, &found) {
        Some(missing) => Err(GroupError::NoSuchGroup(missing.clone())),
        None => Ok(found),
    }
}

fn require_one(conn: &mut PgConnection, name: &GroupName) -> Result<Group, GroupError> {
    require_all(conn, std::slice::from_ref(name))?
        .pop()
        .ok_or_else(|| GroupError::NoSuchGroup(name.clone()))
}

/// Adds a group; one that exists already is left as it is.
pub fn add<'a>(
    conn: &mut PgConnection,
    name: &GroupName,
    actor: impl Into<Actor<'a>>,
) -> Result<(Group, Change), GroupError> {
    let actor = actor.into();
    conn.transaction(|conn| {
        let inserted = diesel::insert_into(groups::table)
            .values(groups::name.eq(name))
            .on_conflict(groups::name)
            .do_nothing()
            .returning(Group::as_returning())
            .get_result(conn)
            .optional()?;
        match inserted {
            Some(group) => {
                NewAuditRow::new(AuditEvent::GroupAdded)
                    .actor(actor)
                    .detail(group.name.as_str())
                    .insert(conn)?;
                Ok((group, Change::Made))
            }
            None => {
                let group = require_one(conn, name)?;
                Ok((group, Change::AlreadySo))
            }
        }
    })
}

/// Removes a group: its members leave it and the apps that let it in stop doing so, on every
/// instance at once. The audit row names who was in it and which apps let it in.
pub fn remove<'a>(
    conn: &mut PgConnection,
    name: &GroupName,
    actor: impl Into<Actor<'a>>,
) -> Result<GroupEntry, GroupError> {
    let actor = actor.into();
    conn.transaction(|conn| {
        let group = groups::table
            .filter(groups::name.eq(name))
            .select(Group::as_select())
            .for_update()
            .first(conn)
            .optional()?
            .ok_or_else(|| GroupError::NoSuchGroup(name.clone()))?;
        let emails: Vec<String> = group_members::table
            .inner_join(members::table)
            .filter(group_members::group_id.eq(group.id))
            .order(members::email.asc())
            .select(members::email)
            .load(conn)?;
        let app_names: Vec<String> = app_groups::table
            .inner_join(apps::table)
            .filter(app_groups::group_id.eq(group.id))
            .order(apps::name.asc())
            .select(apps::name)
            .load(conn)?;
        diesel::delete(groups::table.find(group.id)).execute(conn)?;
        let mut detail = group.name.to_string();
        if !emails.is_empty() {
            detail.push_str(&format!("; members {}", emails.join(",")));
        }
        if !app_names.is_empty() {
            detail.push_str(&format!("; let in by apps {}", app_names.join(",")));
        }
        NewAuditRow::new(AuditEvent::GroupRemoved)
            .actor(actor)
            .detail(detail)
            .insert(conn)?;
        Ok(GroupEntry {
            group,
            members: emails,
        })
    })
}

/// What [`change_members`] did, address by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembersChanged {
    pub added: Vec<EmailAddress>,
    pub removed: Vec<EmailAddress>,
    /// Asked for, and so already.
    pub unchanged: Vec<EmailAddress>,
}

/// Adds members to a group and takes others out (`latchkey groups members`), each change
/// audited with the member's address. Everyone named must be a member of the team: a typo
/// changes nothing at all.
pub fn change_members<'a>(
    conn: &mut PgConnection,
    name: &GroupName,
    add: &[EmailAddress],
    remove: &[EmailAddress],
    actor: impl Into<Actor<'a>>,
) -> Result<MembersChanged, GroupError> {
    let actor = actor.into();
    conn.transaction(|conn| {
        let group = require_one(conn, name)?;
        let mut changed = MembersChanged::default();
        for email in add {
            let id = member_id(conn, email)?;
            if insert_membership(conn, group.id, id)? {
                audit_membership(conn, AuditEvent::GroupMemberAdded, email, &group, actor)?;
                changed.added.push(email.clone());
            } else {
                changed.unchanged.push(email.clone());
            }
        }
        for email in remove {
            let id = member_id(conn, email)?;
            if delete_membership(conn, group.id, id)? {
                audit_membership(conn, AuditEvent::GroupMemberRemoved, email, &group, actor)?;
                changed.removed.push(email.clone());
            } else {
                changed.unchanged.push(email.clone());
            }
        }
        Ok(changed)
    })
}

/// What [`set_groups_of`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupsSet {
    pub member: Member,
    pub joined: Vec<GroupName>,
    pub left: Vec<GroupName>,
}

/// Puts a member in exactly these groups (`/team`): one `group_member_added` or
/// `group_member_removed` row per group joined or left.
pub fn set_groups_of<'a>(
    conn: &mut PgConnection,
    member_id: MemberId,
    names: &[GroupName],
    actor: impl Into<Actor<'a>>,
) -> Result<GroupsSet, GroupError> {
    let actor = actor.into();
    conn.transaction(|conn| {
        let before = lock_member(conn, member_id)?;
        let wanted = require_all(conn, names)?;
        let mut joined = Vec::new();
        let mut left = Vec::new();
        for group in &wanted {
            if !before.groups.contains(&group.name) {
                insert_membership(conn, group.id, member_id)?;
                audit_membership(
                    conn,
                    AuditEvent::GroupMemberAdded,
                    &before.email,
                    group,
                    actor,
                )?;
                joined.push(group.name.clone());
            }
        }
        let leaving = before
            .groups
            .iter()
            .filter(|name| !wanted.iter().any(|group| group.name == **name))
            .cloned()
            .collect::<Vec<_>>();
        for group in find_all(conn, &leaving)? {
            delete_membership(conn, group.id, member_id)?;
            audit_membership(
                conn,
                AuditEvent::GroupMemberRemoved,
                &before.email,
                &group,
                actor,
            )?;
            left.push(group.name);
        }
        let member =
            crate::models::member::find(conn, member_id)?.ok_or(GroupError::NoSuchMember)?;
        Ok(GroupsSet {
            member,
            joined,
            left,
        })
    })
}

/// Adds a member to these groups, keeping the ones they are in (`latchkey members add
/// --group`); the groups joined.
pub fn join<'a>(
    conn: &mut PgConnection,
    member_id: MemberId,
    names: &[GroupName],
    actor: impl Into<Actor<'a>>,
) -> Result<Vec<GroupName>, GroupError> {
    let actor = actor.into();
    conn.transaction(|conn| {
        let member = lock_member(conn, member_id)?;
        let mut joined = Vec::new();
        for group in require_all(conn, names)? {
            if insert_membership(conn, group.id, member_id)? {
                audit_membership(
                    conn,
                    AuditEvent::GroupMemberAdded,
                    &member.email,
                    &group,
                    actor,
                )?;
                joined.push(group.name);
            }
        }
        Ok(joined)
    })
}

/// The member's row, locked, so that two changes of their groups are made one after the other.
fn lock_member(conn: &mut PgConnection, id: MemberId) -> Result<Member, GroupError> {
    members::table
        .find(id)
        .select(Member::as_select())
        .for_update()
        .first(conn)
        .optional()?
        .ok_or(GroupError::NoSuchMember)
}

fn member_id(conn: &mut PgConnection, email: &EmailAddress) -> Result<MemberId, GroupError> {
    members::table
        .filter(members::email.eq(email.as_str()))
        .select(members::id)
        .first(conn)
        .optional()?
        .ok_or_else(|| GroupError::UnknownMember(email.to_string()))
}

/// True when the member was not in the group before.
fn insert_membership(
    conn: &mut PgConnection,
    group: GroupId,
    member: MemberId,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(group_members::table)
        .values((
            group_members::group_id.eq(group),
            group_members::member_id.eq(member),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(inserted == 1)
}

/// True when the member was in the group.
fn delete_membership(
    conn: &mut PgConnection,
    group: GroupId,
    member: MemberId,
) -> QueryResult<bool> {
    let deleted = diesel::delete(
        group_members::table
            .filter(group_members::group_id.eq(group))
            .filter(group_members::member_id.eq(member)),
    )
    .execute(conn)?;
    Ok(deleted == 1)
}

fn audit_membership(
    conn: &mut PgConnection,
    event: AuditEvent,
    email: &EmailAddress,
    group: &Group,
    actor: Actor<'_>,
) -> QueryResult<()> {
    NewAuditRow::new(event)
        .email(email)
        .actor(actor)
        .detail(group.name.as_str())
        .insert(conn)?;
    Ok(())
}
