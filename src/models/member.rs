//! Members of the team, and every change of access (each audited in its own transaction).

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::DbError;
use crate::domain::email_address::{EmailAddress, MailboxRule};
use crate::domain::group_name::GroupName;
use crate::domain::ids::MemberId;
use crate::domain::member_name::MemberName;
use crate::domain::role::Role;
use crate::schema::{members, sessions, sign_in_requests};

/// The names of the groups of the member on the row being read, in one array. Read with the
/// row, so that everything that reads a member (the session cache above all, which a
/// forward-auth check reads instead of the database) has their groups without a second query.
pub type GroupsOfMember =
    diesel::expression::SqlLiteral<diesel::sql_types::Array<diesel::sql_types::Text>>;

pub fn groups_of_member() -> GroupsOfMember {
    diesel::dsl::sql(
        "ARRAY(SELECT lk_g.name FROM group_members lk_gm \
         JOIN groups lk_g ON lk_g.id = lk_gm.group_id \
         WHERE lk_gm.member_id = members.id ORDER BY lk_g.name)",
    )
}

#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = members, check_for_backend(diesel::pg::Pg))]
pub struct Member {
    pub id: MemberId,
    pub email: EmailAddress,
    role: Role,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Shown on pages and handed to apps (`Remote-Name`, the assertion's `name`).
    pub name: Option<MemberName>,
    /// By name; apps may let groups in (`Remote-Groups` lists them after the role).
    #[diesel(select_expression = groups_of_member(), select_expression_type = GroupsOfMember)]
    pub groups: Vec<GroupName>,
}

impl Member {
    pub fn role(&self) -> Role {
        self.role
    }
}

#[cfg(test)]
impl Member {
    /// An active member, for unit tests of what reads members.
    pub fn for_test(id: i64, email: &str, role: Role, groups: &[&str]) -> Self {
        let now = Utc::now();
        Self {
            id: MemberId::new(id),
            email: EmailAddress::parse(email).expect("a test address"),
            role,
            active: true,
            created_at: now,
            updated_at: now,
            name: None,
            groups: groups
                .iter()
                .map(|group| GroupName::parse(group).expect("a test group"))
                .collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("no such member")]
    NotFound,
    #[error("the last active admin cannot be deactivated or demoted")]
    LastAdmin,
    /// The database failed (or could not be reached): not the request's fault.
    #[error(transparent)]
    Query(#[from] DbError),
}

impl crate::db::DbFailure for MemberError {
    fn is_database_failure(&self) -> bool {
        matches!(self, MemberError::Query(_))
    }
}

/// Model functions use `?` on diesel's results; `Db::run` adds pool and task failures.
impl From<diesel::result::Error> for MemberError {
    fn from(err: diesel::result::Error) -> Self {
        MemberError::Query(DbError::Query(err))
    }
}

/// Who changes someone's access, as the audit's `actor` column names them.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// A signed-in member: an admin on the team or apps page, anyone ending a session or
    /// managing their passkeys.
    Member(&'a Member),
    /// Not a member: the command line (`cli`) or a setting (`LATCHKEY_ADMINS`).
    Operator(&'static str),
}

/// A setting's or the command line's name (and the tests' own).
impl From<&'static str> for Actor<'_> {
    fn from(name: &'static str) -> Self {
        Actor::Operator(name)
    }
}

impl<'a> From<&'a Member> for Actor<'a> {
    fn from(member: &'a Member) -> Self {
        Actor::Member(member)
    }
}

impl AsRef<str> for Actor<'_> {
    fn as_ref(&self) -> &str {
        match self {
            Actor::Member(member) => member.email.as_str(),
            Actor::Operator(name) => name,
        }
    }
}

/// What [`add_or_reactivate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Created,
    Reactivated,
    RoleChanged,
    Unchanged,
}

pub fn find(conn: &mut PgConnection, id: MemberId) -> QueryResult<Option<Member>> {
    members::table
        .find(id)
        .select(Member::as_select())
        .first(conn)
        .optional()
}

pub fn find_by_email(conn: &mut PgConnection, email: &EmailAddress) -> QueryResult<Option<Member>> {
    members::table
        .filter(members::email.eq(email.as_str()))
        .select(Member::as_select())
        .first(conn)
        .optional()
}

/// As [`find_by_email`], holding the row until the transaction ends so that a deactivation
/// waits for what is being decided about the member.
pub fn find_by_email_for_share(
    conn: &mut PgConnection,
    email: &EmailAddress,
) -> QueryResult<Option<Member>> {
    members::table
        .filter(members::email.eq(email.as_str()))
        .select(Member::as_select())
        .for_share()
        .first(conn)
        .optional()
}

/// A member as the table holds them, for lists: the address as stored text, so that a row
/// written past Latchkey (a careless import) still shows on the team page, escaped, for an
/// admin to see, instead of taking the page down. Everything that acts on a member (sign-in,
/// mail, the guard) reads a [`Member`], whose address is parsed.
#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = members, check_for_backend(diesel::pg::Pg))]
pub struct ListedMember {
    pub id: MemberId,
    pub email: String,
    pub role: Role,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub name: Option<String>,
    #[diesel(select_expression = groups_of_member(), select_expression_type = GroupsOfMember)]
    pub groups: Vec<String>,
}

pub fn list(conn: &mut PgConnection) -> QueryResult<Vec<ListedMember>> {
    members::table
        .order(members::email.asc())
        .select(ListedMember::as_select())
        .load(conn)
}

/// Whether anyone can sign in by being a member (start-up warns when nobody can).
pub fn any_active(conn: &mut PgConnection) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        members::table.filter(members::active.eq(true)),
    ))
    .get_result(conn)
}

pub fn active_admin_emails(conn: &mut PgConnection) -> QueryResult<Vec<EmailAddress>> {
    members::table
        .filter(members::active.eq(true))
        .filter(members::role.eq(Role::Admin))
        .select(members::email)
        .load(conn)
}

/// Adds a member, or re-activates one and sets the role; audited with `actor`.
pub fn add_or_reactivate<'a>(
    conn: &mut PgConnection,
    email: &EmailAddress,
    role: Role,
    actor: impl Into<Actor<'a>>,
) -> Result<(Member, Added), MemberError> {
    let actor = actor.into();
    conn.transaction(|conn| {
        let existing = members::table
            .filter(members::email.eq(email.as_str()))
            .select(Member::as_select())
            .for_update()
            .first(conn)
            .optional()?;
        let (member, added) = match existing {
            None => {
                let member = diesel::insert_into(members::table)
                    .values((
                        members::email.eq(email.as_str()),
                        members::mailbox_key.eq(email.mailbox_key().as_str()),
                        members::role.eq(role),
                    ))
                    .returning(Member::as_returning())
                    .get_result(conn)?;
                (member, Added::Created)
            }
            Some(member) if member.active && member.role() == role => (member, Added::Unchanged),
            Some(member) => {
                if member.active && member.role() == Role::Admin {
                    ensure_another_admin(conn, member.id)?;
                }
                let added = if member.active {
                    Added::RoleChanged
                } else {
                    Added::Reactivated
                };
                let member = diesel::update(members::table.find(member.id))
                    .set((
                        members::role.eq(role),
                        members::active.eq(true),
                        members::updated_at.eq(diesel::dsl::now),
                    ))
                    .returning(Member::as_returning())
                    .get_result(conn)?;
                (member, added)
            }
        };
        let event = match added {
            Added::Created | Added::Reactivated => Some(AuditEvent::MemberAdded),
            Added::RoleChanged => Some(AuditEvent::MemberRoleChanged),
            Added::Unchanged => None,
        };
        if let Some(event) = event {
            let detail = match added {
                Added::Reactivated => format!("role {role}, re-activated"),
                _ => format!("role {role}"),
            };
            NewAuditRow::new(event)
                .email(&member.email)
                .actor(actor)
                .detail(detail)
                .insert(conn)?;
        }
        Ok((member, added))
    })
}

pub fn change_role<'a>(
    conn: &mut PgConnection,
    id: MemberId,
    role: Role,
    actor: impl Into<Actor<'a>>,
) -> Result<Member, MemberError> {
    let actor = actor.into();
    conn.transaction(|conn| {
        let member = lock(conn, id)?;
        if member.role() == role {
            return Ok(member);
        }
        if member.active && member.role() == Role::Admin {
            ensure_another_admin(conn, member.id)?;
        }
        let updated = diesel::update(members::table.find(id))
            .set((
                members::role.eq(role),
                members::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Member::as_returning())
            .get_result(conn)?;
        NewAuditRow::new(AuditEvent::MemberRoleChanged)
            .email(&updated.email)
            .actor(actor)
            .detail(format!("{} -> {}", member.role(), role))
            .insert(conn)?;
        Ok(updated)
    })
}

/// Sets or clears a member's display name; audited `member_renamed` with before and after,
/// unless it is the name they have.
pub fn rename<'a>(
    conn: &mut PgConnection,
    id: MemberId,
    name: Option<&MemberName>,
    actor: impl Into<Actor<'a>>,
) -> Result<Member, MemberError> {
    let actor = actor.into();
    conn.transaction(|conn| {
        let member = lock(conn, id)?;
        if member.name.as_ref() == name {
            return Ok(member);
        }
        let updated = diesel::update(members::table.find(id))
            .set((
                members::name.eq(name),
                members::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Member::as_returning())
            .get_result(conn)?;
        NewAuditRow::new(AuditEvent::MemberRenamed)
            .email(&updated.email)
            .actor(actor)
            .detail(format!(
                "{} -> {}",
                describe_name(member.name.as_ref()),
                describe_name(name)
            ))
            .insert(conn)?;
        Ok(updated)
    })
}

/// A name as the audit quotes it, so that spaces and an absent name read plainly.
fn describe_name(name: Option<&MemberName>) -> String {
    name.map_or_else(
        || "(no name)".to_string(),
        |name| format!("{:?}", name.as_str()),
    )
}

/// Deactivates (never deletes) a member, ending their sessions and pending sign-ins at once.
pub fn deactivate<'a>(
    conn: &mut PgConnection,
    id: MemberId,
    actor: impl Into<Actor<'a>>,
) -> Result<Member, MemberError> {
    let actor = actor.into();
    conn.transaction(|conn| {
        let member = lock(conn, id)?;
        if !member.active {
            return Ok(member);
        }
        if member.role() == Role::Admin {
            ensure_another_admin(conn, member.id)?;
        }
        let updated = diesel::update(members::table.find(id))
            .set((
                members::active.eq(false),
                members::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Member::as_returning())
            .get_result(conn)?;
        let ended =
            diesel::delete(sessions::table.filter(sessions::member_id.eq(id))).execute(conn)?;
        let cancelled = diesel::update(
            sign_in_requests::table
                .filter(sign_in_requests::member_id.eq(id))
                .filter(sign_in_requests::consumed_at.is_null())
                .filter(sign_in_requests::cancelled_at.is_null()),
        )
        .set(sign_in_requests::cancelled_at.eq(diesel::dsl::now))
        .execute(conn)?;
        NewAuditRow::new(AuditEvent::MemberDeactivated)
            .email(&updated.email)
            .actor(actor)
            .detail(format!(
                "{ended} sessions ended, {cancelled} pending links cancelled"
            ))
            .insert(conn)?;
        Ok(updated)
    })
}

fn lock(conn: &mut PgConnection, id: MemberId) -> Result<Member, MemberError> {
    members::table
        .find(id)
        .select(Member::as_select())
        .for_update()
        .first(conn)
        .optional()?
        .ok_or(MemberError::NotFound)
}

/// Refuses when `id` is the only active admin. The other admins' rows are locked, so two
/// admins demoting each other at once cannot both succeed.
fn ensure_another_admin(conn: &mut PgConnection, id: MemberId) -> Result<(), MemberError> {
    let others: Vec<MemberId> = members::table
        .filter(members::active.eq(true))
        .filter(members::role.eq(Role::Admin))
        .filter(members::id.ne(id))
        .select(members::id)
        .for_update()
        .load(conn)?;
    if others.is_empty() {
        Err(MemberError::LastAdmin)
    } else {
        Ok(())
    }
}

/// Admits an address at one of `LATCHKEY_ALLOWED_DOMAINS` as a `member` on its first request.
///
/// Returns the member who may ask for a link, or `None` when admission is refused. An address
/// whose local part is not plain ASCII ([`EmailAddress::has_plain_local_part`]) is refused
/// whatever the members are. A member with exactly this address (even deactivated) is
/// returned as is. Otherwise, when any member's address reduces under `rule`
/// (`LATCHKEY_MAILBOX_KEY`) to the address's
/// [`MailboxKey`](crate::domain::email_address::MailboxKey), nobody is admitted: a deactivated
/// member must not come back as `Carol@…`, `carol+x@…` (or `c.arol@…` where the rule says
/// `dots`), and an active member is not doubled by a second spelling of their own mailbox —
/// they sign in with the address they are listed under. The caller answers a refusal as it
/// answers any address that may not sign in.
///
/// The members' keys are computed here, under the rule in force, from their addresses; the
/// stored `members.mailbox_key` is not read. That column holds the key under the default
/// rule, written when the row was (by this instance, another one, or `latchkey members add`
/// run with its own environment), so under any other rule, or after the rule changes, it would
/// compare one spelling by the old rule and let the next one in. Reading every member at the
/// address's domain costs one scan of `members` per refused or new address at an allowed
/// domain, which a team's size and `LATCHKEY_LOGIN_RATE` keep small.
pub fn admit_from_allowed_domain(
    conn: &mut PgConnection,
    email: &EmailAddress,
    rule: MailboxRule,
) -> QueryResult<Option<Member>> {
    // The caller checks this too; here it holds for every way into this function.
    if !email.has_plain_local_part() {
        return Ok(None);
    }
    let mailbox_key = email.mailbox_key_by(rule);
    conn.transaction(|conn| {
        // Admissions to one mailbox are decided one at a time, so two spellings asking at
        // once cannot both become members.
        diesel::sql_query("SELECT pg_advisory_xact_lock(7302, hashtext($1))")
            .bind::<diesel::sql_types::Text, _>(mailbox_key.as_str())
            .execute(conn)?;
        let same_mailbox: Vec<Member> = members_at_domain(conn, email.domain())?
            .into_iter()
            .filter(|member| member.email.mailbox_key_by(rule) == mailbox_key)
            .collect();
        if let Some(member) = same_mailbox.iter().find(|m| m.email == *email) {
            return Ok(Some(member.clone()));
        }
        if !same_mailbox.is_empty() {
            return Ok(None);
        }
        let inserted = diesel::insert_into(members::table)
            .values((
                members::email.eq(email.as_str()),
                // The column's one meaning, whatever the rule in force (see above).
                members::mailbox_key.eq(email.mailbox_key().as_str()),
                members::role.eq(Role::Member),
            ))
            // An admin may list this very address meanwhile; theirs is the row that counts.
            .on_conflict(members::email)
            .do_nothing()
            .returning(Member::as_returning())
            .get_result(conn)
            .optional()?;
        match inserted {
            Some(member) => {
                NewAuditRow::new(AuditEvent::MemberAdded)
                    .email(&member.email)
                    .actor(Actor::Operator("LATCHKEY_ALLOWED_DOMAINS"))
                    .detail("role member, admitted by domain")
                    .insert(conn)?;
                Ok(Some(member))
            }
            None => find_by_email(conn, email),
        }
    })
}

/// Every member, deactivated ones included, whose address is at `domain` (canonical).
fn members_at_domain(conn: &mut PgConnection, domain: &str) -> QueryResult<Vec<Member>> {
    // A canonical domain is letters, digits, `-` and `.`; escaping keeps LIKE literal anyway.
    let escaped = domain
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let members = members::table
        .filter(members::email.like(format!("%@{escaped}")).escape('\\'))
        .select(Member::as_select())
        .load(conn)?;
    // LIKE is the index-free coarse cut; the parsed domain is what decides.
    Ok(members
        .into_iter()
        .filter(|member| member.email.domain() == domain)
        .collect())
}

/// `LATCHKEY_ADMINS` are always active admins.
pub fn ensure_admins(conn: &mut PgConnection, admins: &[EmailAddress]) -> Result<(), MemberError> {
    for email in admins {
        add_or_reactivate(conn, email, Role::Admin, "LATCHKEY_ADMINS")?;
    }
    Ok(())
}
