//! `GET /team`, `POST /team`, `POST /team/{id}/role`, `POST /team/{id}/name`,
//! `POST /team/{id}/groups`, `POST /team/{id}/deactivate`,
//! `POST /team/{id}/passkeys/remove` (admins): the members, and every change of access. Each form works as a plain post (303 back to
//! `/team`) and inline with HTMX (the add form swaps the whole section, a row's forms swap
//! the table). The changes themselves are [`crate::team::members`]; their audit rows and the
//! last-admin rule live in `models::member`.

use actix_session::SessionExt as _;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use serde::{Deserialize, Serialize};

use crate::dashboard::cache::DashboardCache;
use crate::domain::email_address::EmailAddress;
use crate::domain::group_name::GroupName;
use crate::domain::ids::MemberId;
use crate::domain::member_name::MemberName;
use crate::domain::role::Role;
use crate::middleware::guard::CurrentMember;
use crate::models::group::{GroupError, GroupsSet};
use crate::models::member::{Added, ListedMember, Member, MemberError};
use crate::passkeys::proved_recently;
use crate::session::SessionData;
use crate::state::AppState;
use crate::team::members;
use crate::web::client::Client;
use crate::web::errors::{PageError, PageResult};
use crate::web::pages::{is_htmx, Page};
use crate::web::policy::passkey_confirm_location;
use crate::web::redirect::{redirect, see_other};

#[derive(Debug, Serialize)]
struct MemberView {
    id: MemberId,
    email: String,
    name: Option<String>,
    role: &'static str,
    groups: Vec<String>,
    active: bool,
    added: String,
    is_self: bool,
    /// How many passkeys they have: a member who lost theirs asks an admin to remove them.
    passkeys: i64,
}

impl MemberView {
    fn new(member: &ListedMember, viewer: &Member, passkeys: i64) -> Self {
        Self {
            id: member.id,
            email: member.email.clone(),
            name: member.name.clone(),
            role: member.role.as_str(),
            groups: member.groups.clone(),
            active: member.active,
            added: member.created_at.format("%Y-%m-%d").to_string(),
            is_self: member.id == viewer.id,
            passkeys,
        }
    }
}

/// The add form as typed, with its error.
#[derive(Debug, Default, Serialize)]
struct AddForm {
    email: String,
    role: String,
    error: Option<String>,
}

/// What the page says besides the list: the add form's state and the outcome of an action.
#[derive(Debug, Default)]
struct Outcome {
    add: AddForm,
    notice: Option<String>,
    error: Option<String>,
    status: Option<StatusCode>,
}

/// Which part of the page a response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The whole section (the page, and the add form's HTMX answer).
    Section,
    /// The table (a row's HTMX answer).
    Rows,
}

async fn render(
    req: &HttpRequest,
    state: &AppState,
    viewer: &Member,
    part: Part,
    outcome: Outcome,
) -> PageResult {
    let team = members::list(&state.db).await?;
    let members: Vec<MemberView> = team
        .members
        .iter()
        .map(|member| {
            let count = team.passkeys.get(&member.id).copied().unwrap_or(0);
            MemberView::new(member, viewer, count)
        })
        .collect();
    let groups: Vec<&str> = team.groups.iter().map(|g| g.name.as_str()).collect();
    let partial = match part {
        Part::Rows if is_htmx(req) => "team_rows",
        _ => "team",
    };
    let add = AddForm {
        role: if outcome.add.role.is_empty() {
            Role::Member.as_str().to_string()
        } else {
            outcome.add.role
        },
        ..outcome.add
    };
    Ok(Page::new(partial, "Team")
        .with("members", members)
        .with("roles", Role::ALL.map(Role::as_str))
        .with("groups", groups)
        .with("add", add)
        .with("notice", outcome.notice)
        .with("error", outcome.error)
        .status(outcome.status.unwrap_or(StatusCode::OK))
        .render(req))
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(viewer): CurrentMember,
) -> PageResult {
    render(&req, &state, &viewer, Part::Section, Outcome::default()).await
}

#[derive(Debug, Deserialize)]
pub struct AddFields {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

pub async fn add(
    req: HttpRequest,
    state: web::Data<AppState>,
    dashboard: web::Data<DashboardCache>,
    CurrentMember(viewer): CurrentMember,
    form: web::Form<AddFields>,
) -> PageResult {
    let form = form.into_inner();
    let typed = AddForm {
        email: form.email.chars().take(254).collect(),
        role: form.role.trim().chars().take(20).collect(),
        error: None,
    };
    let parsed = EmailAddress::parse(&form.email)
        .map_err(|err| err.to_string())
        .and_then(|email| {
            let role = Role::parse(&form.role).map_err(|_| "Pick a role.".to_string())?;
            Ok((email, role))
        });
    let (email, role) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            let outcome = Outcome {
                add: AddForm {
                    error: Some(message),
                    ..typed
                },
                status: Some(StatusCode::UNPROCESSABLE_ENTITY),
                ..Outcome::default()
            };
            return render(&req, &state, &viewer, Part::Section, outcome).await;
        }
    };
    let result = members::add(&state.db, &viewer, email, role).await;
    // A re-activated member may belong in "access not used" again.
    dashboard.clear();
    let outcome = match result {
        Ok((member, added)) => Outcome {
            notice: Some(match added {
                Added::Created => format!("Added {} as {}.", member.email, role),
                Added::Reactivated => format!("Re-activated {} as {}.", member.email, role),
                Added::RoleChanged => format!("{} is now {}.", member.email, role),
                Added::Unchanged => format!("{} is already an active {}.", member.email, role),
            }),
            ..Outcome::default()
        },
        Err(MemberError::LastAdmin) => Outcome {
            add: AddForm {
                error: Some(last_admin_message()),
                ..typed
            },
            status: Some(StatusCode::CONFLICT),
            ..Outcome::default()
        },
        Err(err) => return Err(member_error(err)),
    };
    if outcome.status.is_none() && !is_htmx(&req) {
        return Ok(see_other("/team"));
    }
    render(&req, &state, &viewer, Part::Section, outcome).await
}

#[derive(Debug, Deserialize)]
pub struct RoleFields {
    #[serde(default)]
    role: String,
}

pub async fn change_role(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(viewer): CurrentMember,
    id: web::Path<String>,
    form: web::Form<RoleFields>,
) -> PageResult {
    let Some(id) = MemberId::parse(&id) else {
        return Err(PageError::NotFound);
    };
    let Ok(role) = Role::parse(&form.role) else {
        let outcome = Outcome {
            error: Some("Pick a role: admin, auditor or member.".into()),
            status: Some(StatusCode::UNPROCESSABLE_ENTITY),
            ..Outcome::default()
        };
        return render(&req, &state, &viewer, Part::Rows, outcome).await;
    };
    let result = members::change_role(&state.live, &viewer, id, role).await;
    let outcome = match result {
        Ok(member) => {
            if member.id == viewer.id && !role.is_admin() {
                // The admin gave up their own admin role: this page is no longer theirs.
                return Ok(redirect(&req, "/", false));
            }
            Outcome {
                notice: Some(format!("{} is now {}.", member.email, role)),
                ..Outcome::default()
            }
        }
        Err(MemberError::LastAdmin) => last_admin_outcome(),
        Err(err) => return Err(member_error(err)),
    };
    finish_row_action(&req, &state, &viewer, outcome).await
}

#[derive(Debug, Deserialize)]
pub struct NameFields {
    #[serde(default)]
    name: String,
}

/// Sets a member's display name; an empty field clears it.
pub async fn rename(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(viewer): CurrentMember,
    id: web::Path<String>,
    form: web::Form<NameFields>,
) -> PageResult {
    let Some(id) = MemberId::parse(&id) else {
        return Err(PageError::NotFound);
    };
    let name = match MemberName::parse(&form.name) {
        Ok(name) => name,
        Err(err) => return unprocessable(&req, &state, &viewer, format!("Name: {err}.")).await,
    };
    let outcome = match members::rename(&state.live, &viewer, id, name).await {
        Ok(member) => Outcome {
            notice: Some(match &member.name {
                Some(name) => format!("{} is now called {name}.", member.email),
                None => format!("{} has no name now.", member.email),
            }),
            ..Outcome::default()
        },
        Err(err) => return Err(member_error(err)),
    };
    finish_row_action(&req, &state, &viewer, outcome).await
}

/// The groups the form checked (`groups`, repeatable; none checked sends none), parsed.
fn checked_groups(body: &[u8]) -> Result<Vec<GroupName>, String> {
    url::form_urlencoded::parse(body)
        .filter(|(key, _)| key == "groups")
        .map(|(_, value)| {
            GroupName::parse(&value).map_err(|err| format!("{:?}: {err}.", cut(&value)))
        })
        .collect()
}

/// Enough of what was typed to recognise it in an error.
fn cut(text: &str) -> String {
    text.chars().take(70).collect()
}

/// Puts a member in exactly the groups checked.
pub async fn change_groups(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(viewer): CurrentMember,
    id: web::Path<String>,
    body: web::Bytes,
) -> PageResult {
    let Some(id) = MemberId::parse(&id) else {
        return Err(PageError::NotFound);
    };
    let groups = match checked_groups(&body) {
        Ok(groups) => groups,
        Err(message) => return unprocessable(&req, &state, &viewer, message).await,
    };
    let outcome = match members::set_groups(&state.live, &viewer, id, groups).await {
        Ok(set) => Outcome {
            notice: Some(groups_notice(&set)),
            ..Outcome::default()
        },
        Err(GroupError::NoSuchGroup(name)) => {
            let message = format!("There is no group {name}.");
            return unprocessable(&req, &state, &viewer, message).await;
        }
        Err(GroupError::NoSuchMember | GroupError::UnknownMember(_)) => {
            return Err(PageError::NotFound)
        }
        Err(GroupError::Query(err)) => return Err(err.into()),
    };
    finish_row_action(&req, &state, &viewer, outcome).await
}

fn groups_notice(set: &GroupsSet) -> String {
    let names = |groups: &[GroupName]| {
        groups
            .iter()
            .map(GroupName::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !set.joined.is_empty() {
        parts.push(format!("joined {}", names(&set.joined)));
    }
    if !set.left.is_empty() {
        parts.push(format!("left {}", names(&set.left)));
    }
    if parts.is_empty() {
        format!("{}'s groups are unchanged.", set.member.email)
    } else {
        format!("{} {}.", set.member.email, parts.join(" and "))
    }
}

/// A row's form that could not be read: the table again with what was wrong, and nothing
/// changed.
async fn unprocessable(
    req: &HttpRequest,
    state: &AppState,
    viewer: &Member,
    message: String,
) -> PageResult {
    let outcome = Outcome {
        error: Some(message),
        status: Some(StatusCode::UNPROCESSABLE_ENTITY),
        ..Outcome::default()
    };
    render(req, state, viewer, Part::Rows, outcome).await
}

pub async fn deactivate(
    req: HttpRequest,
    state: web::Data<AppState>,
    dashboard: web::Data<DashboardCache>,
    CurrentMember(viewer): CurrentMember,
    id: web::Path<String>,
) -> PageResult {
    let Some(id) = MemberId::parse(&id) else {
        return Err(PageError::NotFound);
    };
    let result = members::deactivate(&state.live, &viewer, id).await;
    // The dashboard's "access not used" sends admins here: it must not list them again.
    dashboard.clear();
    let outcome = match result {
        Ok(member) => {
            if member.id == viewer.id {
                // Deactivation ended every session of theirs, this one included.
                req.get_session().purge();
                return Ok(redirect(&req, "/login", true));
            }
            Outcome {
                notice: Some(format!(
                    "Deactivated {}. Their sessions and pending sign-in links have ended.",
                    member.email
                )),
                ..Outcome::default()
            }
        }
        Err(MemberError::LastAdmin) => last_admin_outcome(),
        Err(err) => return Err(member_error(err)),
    };
    finish_row_action(&req, &state, &viewer, outcome).await
}

/// Removes every passkey of a member who lost theirs. An admin's own go the way any member's
/// do: only from a session that proved a passkey in the last 10 minutes (a mailbox alone must
/// not take them away), so without that proof they are sent to confirm one first.
pub async fn remove_passkeys(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(viewer): CurrentMember,
    Client(client): Client,
    id: web::Path<String>,
) -> PageResult {
    let Some(id) = MemberId::parse(&id) else {
        return Err(PageError::NotFound);
    };
    let now = chrono::Utc::now().timestamp();
    if id == viewer.id && !proved_recently(SessionData::of(&req).passkey_proved_at(), now) {
        return Ok(redirect(
            &req,
            &passkey_confirm_location(Some("/team")),
            false,
        ));
    }
    let outcome = match members::remove_passkeys(&state.db, &viewer, id, client).await {
        Ok((member, removed)) if removed.is_empty() => Outcome {
            error: Some(format!(
                "{} has no passkeys: nothing was removed.",
                member.email
            )),
            status: Some(StatusCode::CONFLICT),
            ..Outcome::default()
        },
        Ok((member, removed)) => Outcome {
            notice: Some(format!(
                "Removed {} passkey{} of {}: they sign in by email until they add a new one.",
                removed.len(),
                if removed.len() == 1 { "" } else { "s" },
                member.email
            )),
            ..Outcome::default()
        },
        Err(err) => return Err(member_error(err)),
    };
    finish_row_action(&req, &state, &viewer, outcome).await
}

/// Success without HTMX goes back to the list (so a reload does not post again); anything
/// else renders the table (HTMX) or the page with the outcome.
async fn finish_row_action(
    req: &HttpRequest,
    state: &AppState,
    viewer: &Member,
    outcome: Outcome,
) -> PageResult {
    if outcome.status.is_none() && !is_htmx(req) {
        return Ok(see_other("/team"));
    }
    render(req, state, viewer, Part::Rows, outcome).await
}

fn last_admin_message() -> String {
    "That would leave the team without an active admin. Make someone else an admin first.".into()
}

fn last_admin_outcome() -> Outcome {
    Outcome {
        error: Some(last_admin_message()),
        status: Some(StatusCode::CONFLICT),
        ..Outcome::default()
    }
}

fn member_error(err: MemberError) -> PageError {
    match err {
        MemberError::NotFound => PageError::NotFound,
        MemberError::LastAdmin => PageError::Forbidden,
        MemberError::Query(err) => err.into(),
    }
}
