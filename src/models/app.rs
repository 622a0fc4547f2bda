//! Apps protected through forward auth, who may open each, and which apps a session opened.
//! Every change is audited in its own transaction (`app_added`, `app_changed`, `app_removed`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::DbError;
use crate::domain::app_origin::AppOrigin;
use crate::domain::digests::ClientSecretDigest;
use crate::domain::email_address::EmailAddress;
use crate::domain::group_name::GroupName;
use crate::domain::ids::{AppId, GroupId, MemberId};
use crate::domain::oidc::{ClientId, RedirectUri};
use crate::domain::role::Role;
use crate::models::group;
use crate::models::member::{Actor, Member};
use crate::schema::{app_groups, app_members, apps, groups, members};

#[derive(Debug, Clone, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = apps, check_for_backend(diesel::pg::Pg))]
pub struct App {
    pub id: AppId,
    pub name: String,
    origin: String,
    roles: Vec<Option<String>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    client_id: Option<String>,
    client_secret_digest: Option<ClientSecretDigest>,
    redirect_uris: Vec<Option<String>>,
    post_logout_redirect_uris: Vec<Option<String>>,
    backchannel_logout_uri: Option<String>,
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

    /// How the app signs its users in through OpenID Connect, when it does (it has a client
    /// id); otherwise it is protected through its proxy.
    pub fn oidc(&self) -> Option<OidcClient> {
        let client_id = ClientId::parse(self.client_id.as_deref()?)?;
        let uris = |list: &[Option<String>]| -> Vec<RedirectUri> {
            list.iter()
                .flatten()
                .map(|uri| RedirectUri::from_stored(uri.clone()))
                .collect()
        };
        Some(OidcClient {
            client_id,
            secret: self.client_secret_digest,
            redirect_uris: uris(&self.redirect_uris),
            post_logout_redirect_uris: uris(&self.post_logout_redirect_uris),
            backchannel_logout_uri: self
                .backchannel_logout_uri
                .clone()
                .map(RedirectUri::from_stored),
        })
    }
}

/// An app's OpenID Connect registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcClient {
    pub client_id: ClientId,
    /// The digest of a confidential client's secret; `None` for a public client (which must
    /// use PKCE).
    pub secret: Option<ClientSecretDigest>,
    pub redirect_uris: Vec<RedirectUri>,
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    pub backchannel_logout_uri: Option<RedirectUri>,
}

impl OidcClient {
    pub fn is_public(&self) -> bool {
        self.secret.is_none()
    }

    /// One of the registered redirect URIs, compared character for character.
    pub fn redirect_uri(&self, sent: &str) -> Option<&RedirectUri> {
        self.redirect_uris.iter().find(|uri| uri.as_str() == sent)
    }

    pub fn post_logout_redirect_uri(&self, sent: &str) -> Option<&RedirectUri> {
        self.post_logout_redirect_uris
            .iter()
            .find(|uri| uri.as_str() == sent)
    }
}

/// Who may open an app: members of these roles, of these groups, and these members by
/// address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub roles: Vec<Role>,
    pub groups: Vec<GroupName>,
    pub members: Vec<EmailAddress>,
}

impl Access {
    /// One line for people (`apps list`, the audit):
    /// `roles admin,member; groups ops; members a@x.org`.
    pub fn describe(&self) -> String {
        let roles: Vec<&str> = self.roles.iter().map(|role| role.as_str()).collect();
        let groups: Vec<&str> = self.groups.iter().map(GroupName::as_str).collect();
        let members: Vec<&str> = self.members.iter().map(EmailAddress::as_str).collect();
        describe(&roles, &groups, &members)
    }

    fn is_empty(&self) -> bool {
        self.roles.is_empty() && self.groups.is_empty() && self.members.is_empty()
    }
}

fn describe(roles: &[&str], groups: &[&str], members: &[&str]) -> String {
    let mut parts = Vec::new();
    if !roles.is_empty() {
        parts.push(format!("roles {}", roles.join(",")));
    }
    if !groups.is_empty() {
        parts.push(format!("groups {}", groups.join(",")));
    }
    if !members.is_empty() {
        parts.push(format!("members {}", members.join(",")));
    }
    parts.join("; ")
}

/// An app with the groups it lets in and the addresses listed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEntry {
    pub app: App,
    pub groups: Vec<GroupName>,
    pub members: Vec<String>,
}

impl AppEntry {
    pub fn describe(&self) -> String {
        let roles: Vec<&str> = self.app.roles().iter().map(|role| role.as_str()).collect();
        let groups: Vec<&str> = self.groups.iter().map(GroupName::as_str).collect();
        let members: Vec<&str> = self.members.iter().map(String::as_str).collect();
        describe(&roles, &groups, &members)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("no such app")]
    NotFound,
    #[error("say who may open the app: at least one role, group or member")]
    NobodyMayOpen,
    #[error("{0} is not a member of the team; add them first")]
    UnknownMember(String),
    #[error("there is no group {0}; add it first")]
    UnknownGroup(GroupName),
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

fn group_ids(conn: &mut PgConnection, names: &[GroupName]) -> Result<Vec<GroupId>, AppError> {
    let found = group::find_all(conn, names)?;
    if let Some(missing) = group::first_missing(names, &found) {
        return Err(AppError::UnknownGroup(missing.clone()));
    }
    Ok(found.into_iter().map(|group| group.id).collect())
}

fn admitted_groups(conn: &mut PgConnection, app_id: AppId) -> QueryResult<Vec<GroupName>> {
    app_groups::table
        .inner_join(groups::table)
        .filter(app_groups::app_id.eq(app_id))
        .order(groups::name.asc())
        .select(groups::name)
        .load(conn)
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
    if access.is_empty() {
        return Err(AppError::NobodyMayOpen);
    }
    conn.transaction(|conn| {
        let ids = member_ids(conn, &access.members)?;
        let group_ids = group_ids(conn, &access.groups)?;
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
        insert_groups(conn, app.id, &group_ids)?;
        NewAuditRow::new(AuditEvent::AppAdded)
            .actor(actor)
            .detail(format!("{} {} ({})", app.name, origin, access.describe()))
            .insert(conn)?;
        Ok(app)
    })
}

fn insert_groups(conn: &mut PgConnection, app_id: AppId, ids: &[GroupId]) -> QueryResult<()> {
    let rows: Vec<_> = ids
        .iter()
        .map(|id| (app_groups::app_id.eq(app_id), app_groups::group_id.eq(*id)))
        .collect();
    diesel::insert_into(app_groups::table)
        .values(rows)
        .execute(conn)?;
    Ok(())
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
    if access.is_empty() {
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
            groups: admitted_groups(conn, id)?,
            members: listed_members(conn, id)?,
            app: before,
        };
        let ids = member_ids(conn, &access.members)?;
        let group_ids = group_ids(conn, &access.groups)?;
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
        diesel::delete(app_groups::table.filter(app_groups::app_id.eq(id))).execute(conn)?;
        insert_groups(conn, id, &group_ids)?;
        let after = AppEntry {
            groups: admitted_groups(conn, id)?,
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

pub fn find(conn: &mut PgConnection, id: AppId) -> QueryResult<Option<App>> {
    apps::table
        .find(id)
        .select(App::as_select())
        .first(conn)
        .optional()
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

/// Every app with the groups it lets in and its listed members, by name.
pub fn list(conn: &mut PgConnection) -> QueryResult<Vec<AppEntry>> {
    let all: Vec<App> = apps::table
        .order(apps::name.asc())
        .select(App::as_select())
        .load(conn)?;
    let admitted: Vec<(AppId, GroupName)> = app_groups::table
        .inner_join(groups::table)
        .order(groups::name.asc())
        .select((app_groups::app_id, groups::name))
        .load(conn)?;
    let mut groups_by_app: BTreeMap<AppId, Vec<GroupName>> = BTreeMap::new();
    for (app_id, name) in admitted {
        groups_by_app.entry(app_id).or_default().push(name);
    }
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
            groups: groups_by_app.remove(&app.id).unwrap_or_default(),
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
    groups: Vec<GroupName>,
    /// The listed members' (canonical, unique) addresses.
    member_emails: Vec<String>,
    /// Set for an app that signs its users in through OpenID Connect.
    pub oidc: Option<Arc<OidcClient>>,
}

impl AppRule {
    /// A member of one of its roles, of one of its groups, or listed by address.
    pub fn admits(&self, member: &Member) -> bool {
        self.roles.contains(&member.role())
            || member
                .groups
                .iter()
                .any(|group| self.groups.contains(group))
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
            groups: Vec::new(),
            member_emails: Vec::new(),
            oidc: None,
        }
    }

    /// An app that lets in only these groups.
    pub fn for_test_groups(name: &str, origin: AppOrigin, groups: Vec<GroupName>) -> Self {
        Self {
            roles: Vec::new(),
            groups,
            ..Self::for_test(name, origin)
        }
    }
}

/// The app that signs in through OpenID Connect as client `client_id`, with its registration.
pub fn by_client_id<'a>(
    apps: &'a [AppRule],
    client_id: &str,
) -> Option<(&'a AppRule, &'a Arc<OidcClient>)> {
    apps.iter().find_map(|app| {
        app.oidc
            .as_ref()
            .filter(|client| client.client_id.as_str() == client_id)
            .map(|client| (app, client))
    })
}

/// Every app and who may open it, by name.
pub fn rules(conn: &mut PgConnection) -> QueryResult<Vec<AppRule>> {
    Ok(list(conn)?
        .into_iter()
        .map(|entry| AppRule {
            oidc: entry.app.oidc().map(Arc::new),
            id: entry.app.id,
            origin: entry.app.origin(),
            roles: entry.app.roles(),
            groups: entry.groups,
            name: entry.app.name,
            member_emails: entry.members,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(names: &[&str]) -> Vec<GroupName> {
        names
            .iter()
            .map(|name| GroupName::parse(name).unwrap())
            .collect()
    }

    #[test]
    fn an_app_admits_its_roles_its_groups_and_its_listed_members() {
        let origin = AppOrigin::parse("https://wiki.example.org").unwrap();
        let ops_only = AppRule::for_test_groups("wiki", origin.clone(), groups(&["ops"]));
        let ann = Member::for_test(1, "ann@example.org", Role::Member, &["editors", "ops"]);
        let bob = Member::for_test(2, "bob@example.org", Role::Admin, &["editors"]);
        let nobody = Member::for_test(3, "cy@example.org", Role::Member, &[]);
        assert!(ops_only.admits(&ann), "one of her groups");
        assert!(!ops_only.admits(&bob), "neither his role nor his groups");
        assert!(!ops_only.admits(&nobody));
        let by_role = AppRule::for_test("wiki", origin.clone());
        assert!(by_role.admits(&nobody) && !by_role.admits(&bob));
        let listed = AppRule {
            member_emails: vec!["bob@example.org".into()],
            ..AppRule::for_test_groups("wiki", origin, Vec::new())
        };
        assert!(listed.admits(&bob) && !listed.admits(&ann));
    }

    #[test]
    fn who_may_open_an_app_reads_in_one_line() {
        let access = Access {
            roles: vec![Role::Admin],
            groups: groups(&["ops", "on-call"]),
            members: vec![EmailAddress::parse("ann@example.org").unwrap()],
        };
        assert_eq!(
            access.describe(),
            "roles admin; groups ops,on-call; members ann@example.org"
        );
        assert!(!access.is_empty());
        assert!(Access::default().is_empty());
    }
}
