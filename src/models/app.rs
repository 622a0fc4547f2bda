//! Apps protected through forward auth, who may open each, and which apps a session opened.
//! Every change is audited in its own transaction (`app_added`, `app_changed`, `app_removed`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::DbError;
use crate::domain::app_origin::AppOrigin;
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::{AppId, MemberId};
use crate::domain::role::Role;
use crate::models::member::{Actor, Member};
use crate::schema::{app_members, apps, members};

#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = apps, check_for_backend(diesel::pg::Pg))]
pub struct App {
    pub id: AppId,
    pub name: String,
    origin: String,
    roles: Vec<Option<String>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl App {
    pub fn origin(&self) -> AppOrigin {
        AppOrigin::from_stored(self.origin.clone())
    }

    /// The table's CHECK constraint only admits the three roles.
    pub fn roles(&self) -> Vec<Role> {
        let mut roles: Vec<Role> = self
            .roles
            .iter()
            .flatten()
            .filter_map(|role| Role::parse(role).ok())
            .collect();
        roles.sort_by_key(|role| Role::ALL.iter().position(|r| r == role));
        roles
    }
}

/// Who may open an app: members of these roles, and these members by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub roles: Vec<Role>,
    pub members: Vec<EmailAddress>,
}

impl Access {
    /// One line for people (`apps list`, the audit): `roles admin,member; members a@x.org`.
    pub fn describe(&self) -> String {
        let roles: Vec<&str> = self.roles.iter().map(|role| role.as_str()).collect();
        let members: Vec<&str> = self.members.iter().map(EmailAddress::as_str).collect();
        let mut parts = Vec::new();
        if !roles.is_empty() {
            parts.push(format!("roles {}", roles.join(",")));
        }
        if !members.is_empty() {
            parts.push(format!("members {}", members.join(",")));
        }
        parts.join("; ")
    }
}

/// An app with the addresses listed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEntry {
    pub app: App,
    pub members: Vec<String>,
}

impl AppEntry {
    pub fn describe(&self) -> String {
        let roles: Vec<&str> = self.app.roles().iter().map(|role| role.as_str()).collect();
        let mut parts = Vec::new();
        if !roles.is_empty() {
            parts.push(format!("roles {}", roles.join(",")));
        }
        if !self.members.is_empty() {
            parts.push(format!("members {}", self.members.join(",")));
        }
        parts.join("; ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("no such app")]
    NotFound,
    #[error("say who may open the app: at least one role or one member")]
    NobodyMayOpen,
    #[error("{0} is not a member of the team; add them first")]
    UnknownMember(String),
    #[error("another app already has the name {0:?}")]
    NameTaken(String),
    #[error("another app ({0}) is already registered for {1}")]
    OriginTaken(String, String),
    #[error("the name must be 1 to 100 characters of one line")]
    BadName,
    /// The database failed (or could not be reached): not the request's fault.
    #[error(transparent)]
    Query(#[from] DbError),
}

impl crate::db::DbFailure for AppError {
    fn is_database_failure(&self) -> bool {
        matches!(self, AppError::Query(_))
    }
}

/// Model functions use `?` on diesel's results; `Db::run` adds pool and task failures.
impl From<diesel::result::Error> for AppError {
    fn from(err: diesel::result::Error) -> Self {
        AppError::Query(DbError::Query(err))
    }
}

/// What [`save`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Added,
    Changed,
    Unchanged,
}

fn check_name(name: &str) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AppError::BadName);
    }
    Ok(name.to_string())
}

fn member_ids(conn: &mut PgConnection, emails: &[EmailAddress]) -> Result<Vec<MemberId>, AppError> {
    let mut ids = Vec::with_capacity(emails.len());
    for email in emails {
        let id = members::table
            .filter(members::email.eq(email.as_str()))
            .select(members::id)
            .first::<MemberId>(conn)
            .optional()?
            .ok_or_else(|| AppError::UnknownMember(email.as_str().to_string()))?;
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn listed_members(conn: &mut PgConnection, app_id: AppId) -> QueryResult<Vec<String>> {
    app_members::table
        .inner_join(members::table)
        .filter(app_members::app_id.eq(app_id))
        .order(members::email.asc())
        .select(members::email)
        .load(conn)
}

fn role_names(access: &Access) -> Vec<Option<String>> {
    Role::ALL
        .iter()
        .filter(|role| access.roles.contains(role))
        .map(|role| Some(role.as_str().to_string()))
        .collect()
}

/// Names a unique-constraint violation by what the person typed.
fn conflict(
    conn: &mut PgConnection,
    err: diesel::result::Error,
    name: &str,
    origin: &AppOrigin,
) -> AppError {
    use diesel::result::{DatabaseErrorKind, Error};
    match &err {
        Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some("apps_name_key") =>
        {
            AppError::NameTaken(name.to_string())
        }
        Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            let other = apps::table
                .filter(apps::origin.eq(origin.as_str()))
                .select(apps::name)
                .first::<String>(conn)
                .unwrap_or_default();
            AppError::OriginTaken(other, origin.to_string())
        }
        _ => AppError::from(err),
    }
}

/// Registers an app under `name`, or updates the one of that name (`latchkey apps add`).
pub fn save<'a>(
    conn: &mut PgConnection,
    name: &str,
    origin: &AppOrigin,
    access: &Access,
    actor: impl Into<Actor<'a>>,
) -> Result<(App, Saved), AppError> {
    let name = check_name(name)?;
    let actor = actor.into();
    let existing = apps::table
        .filter(apps::name.eq(&name))
        .select(apps::id)
        .first::<AppId>(conn)
        .optional()?;
    match existing {
        Some(id) => update(conn, id, &name, origin, access, actor),
        None => add(conn, &name, origin, access, actor).map(|app| (app, Saved::Added)),
    }
}

/// Registers a new app (`POST /apps`).
pub fn add<'a>(
    conn: &mut PgConnection,
    name: &str,
    origin: &AppOrigin,
    access: &Access,
    actor: impl Into<Actor<'a>>,
) -> Result<App, AppError> {
    let name = check_name(name)?;
    let actor = actor.into();
    if access.roles.is_empty() && access.members.is_empty() {
        return Err(AppError::NobodyMayOpen);
    }
    conn.transaction(|conn| {
        let ids = member_ids(conn, &access.members)?;
        let inserted = conn.transaction(|conn| {
            diesel::insert_into(apps::table)
                .values((
                    apps::name.eq(&name),
                    apps::origin.eq(origin.as_str()),
                    apps::roles.eq(role_names(access)),
                ))
                .returning(App::as_returning())
                .get_result(conn)
        });
        let app = match inserted {
            Ok(app) => app,
            Err(err) => return Err(conflict(conn, err, &name, origin)),
        };
        insert_members(conn, app.id, &ids)?;
        NewAuditRow::new(AuditEvent::AppAdded)
            .actor(actor)
            .detail(format!("{} {} ({})", app.name, origin, access.describe()))
            .insert(conn)?;
        Ok(app)
    })
}

fn insert_members(conn: &mut PgConnection, app_id: AppId, ids: &[MemberId]) -> QueryResult<()> {
    let rows: Vec<_> = ids
        .iter()
        .map(|id| {
            (
                app_members::app_id.eq(app_id),
                app_members::member_id.eq(*id),
            )
        })
        .collect();
    diesel::insert_into(app_members::table)
        .values(rows)
        .execute(conn)?;
    Ok(())
}

/// Changes an app's name, origin and who may open it (`POST /apps/{id}`); audited
/// `app_changed` with before and after, unless nothing changed.
pub fn update<'a>(
    conn: &mut PgConnection,
    id: AppId,
    name: &str,
    origin: &AppOrigin,
    access: &Access,
    actor: impl Into<Actor<'a>>,
) -> Result<(App, Saved), AppError> {
    let name = check_name(name)?;
    let actor = actor.into();
    if access.roles.is_empty() && access.members.is_empty() {
        return Err(AppError::NobodyMayOpen);
    }
    conn.transaction(|conn| {
        let before = apps::table
            .find(id)
            .select(App::as_select())
            .for_update()
            .first(conn)
            .optional()?
            .ok_or(AppError::NotFound)?;
        let before = AppEntry {
            members: listed_members(conn, id)?,
            app: before,
        };
        let ids = member_ids(conn, &access.members)?;
        let updated = conn.transaction(|conn| {
            diesel::update(apps::table.find(id))
                .set((
                    apps::name.eq(&name),
                    apps::origin.eq(origin.as_str()),
                    apps::roles.eq(role_names(access)),
                    apps::updated_at.eq(diesel::dsl::now),
                ))
                .returning(App::as_returning())
                .get_result(conn)
        });
        let app = match updated {
            Ok(app) => app,
            Err(err) => return Err(conflict(conn, err, &name, origin)),
        };
        diesel::delete(app_members::table.filter(app_members::app_id.eq(id))).execute(conn)?;
        insert_members(conn, id, &ids)?;
        let after = AppEntry {
            members: listed_members(conn, id)?,
            app: app.clone(),
        };
        let was = format!(
            "{} {} ({})",
            before.app.name,
            before.app.origin(),
            before.describe()
        );
        let now = format!(
            "{} {} ({})",
            after.app.name,
            after.app.origin(),
            after.describe()
        );
        if was == now {
            return Ok((app, Saved::Unchanged));
        }
        NewAuditRow::new(AuditEvent::AppChanged)
            .actor(actor)
            .detail(format!("{was} -> {now}"))
            .insert(conn)?;
        Ok((app, Saved::Changed))
    })
}

/// Removes an app: the next check for its origin is refused (an unknown origin).
pub fn remove<'a>(
    conn: &mut PgConnection,
    id: AppId,
    actor: impl Into<Actor<'a>>,
) -> Result<App, AppError> {
    let actor = actor.into();
    conn.transaction(|conn| {
        let app = diesel::delete(apps::table.find(id))
            .returning(App::as_returning())
            .get_result(conn)
            .optional()?
            .ok_or(AppError::NotFound)?;
        NewAuditRow::new(AuditEvent::AppRemoved)
            .actor(actor)
            .detail(format!("{} {}", app.name, app.origin()))
            .insert(conn)?;
        Ok(app)
    })
}

pub fn find_by_name(conn: &mut PgConnection, name: &str) -> QueryResult<Option<App>> {
    apps::table
        .filter(apps::name.eq(name.trim()))
        .select(App::as_select())
        .first(conn)
        .optional()
}

/// The name of the app registered for `origin`, if any.
pub fn name_for_origin(conn: &mut PgConnection, origin: &AppOrigin) -> QueryResult<Option<String>> {
    apps::table
        .filter(apps::origin.eq(origin.as_str()))
        .select(apps::name)
        .first(conn)
        .optional()
}

/// Every app with its listed members, by name.
pub fn list(conn: &mut PgConnection) -> QueryResult<Vec<AppEntry>> {
    let all: Vec<App> = apps::table
        .order(apps::name.asc())
        .select(App::as_select())
        .load(conn)?;
    let listed: Vec<(AppId, String)> = app_members::table
        .inner_join(members::table)
        .order(members::email.asc())
        .select((app_members::app_id, members::email))
        .load(conn)?;
    let mut by_app: BTreeMap<AppId, Vec<String>> = BTreeMap::new();
    for (app_id, email) in listed {
        by_app.entry(app_id).or_default().push(email);
    }
    Ok(all
        .into_iter()
        .map(|app| AppEntry {
            members: by_app.remove(&app.id).unwrap_or_default(),
            app,
        })
        .collect())
}

/// Who may open one app, as forward auth and the launcher decide it (all apps are read at
/// once and cached per instance: `session_cache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRule {
    pub id: AppId,
    pub name: String,
    pub origin: AppOrigin,
    roles: Vec<Role>,
    /// The listed members' (canonical, unique) addresses.
    member_emails: Vec<String>,
}

impl AppRule {
    pub fn admits(&self, member: &Member) -> bool {
        self.roles.contains(&member.role())
            || self
                .member_emails
                .iter()
                .any(|email| *email == member.email.as_str())
    }
}

#[cfg(test)]
impl AppRule {
    /// An app that lets members in, for unit tests of what reads rules.
    pub fn for_test(name: &str, origin: AppOrigin) -> Self {
        Self {
            id: AppId::new(name.len() as i64),
            name: name.to_string(),
            origin,
            roles: vec![Role::Member],
            member_emails: Vec::new(),
        }
    }
}

/// Every app and who may open it, by name.
pub fn rules(conn: &mut PgConnection) -> QueryResult<Vec<AppRule>> {
    Ok(list(conn)?
        .into_iter()
        .map(|entry| AppRule {
            id: entry.app.id,
            origin: entry.app.origin(),
            roles: entry.app.roles(),
            name: entry.app.name,
            member_emails: entry.members,
        })
        .collect())
}
