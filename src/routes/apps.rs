//! `GET /apps` (admins and auditors), `POST /apps`, `POST /apps/{id}`, `POST /apps/{id}/remove`
//! (admins): the apps protected through forward auth and who may open each. Each form works
//! as a plain post (303 back to `/apps`) and with HTMX (the section is swapped). The changes
//! are [`crate::team::apps`]; their audit rows live in `models::app`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use serde::Serialize;

use crate::domain::app_origin::AppOrigin;
use crate::domain::email_address::EmailAddress;
use crate::domain::group_name::GroupName;
use crate::domain::ids::AppId;
use crate::domain::role::Role;
use crate::forward_auth::proxy_config::{self, AppUpstream, Upstream};
use crate::middleware::guard::CurrentMember;
use crate::models::app::{Access, AppEntry, AppError};
use crate::state::AppState;
use crate::team::apps;
use crate::web::errors::{PageError, PageResult};
use crate::web::pages::{is_htmx, Page};
use crate::web::redirect::see_other;

#[derive(Debug, Serialize)]
struct AppView {
    id: AppId,
    name: String,
    origin: String,
    roles: Vec<&'static str>,
    groups: Vec<String>,
    members: Vec<String>,
    proxy_configs: Vec<ProxyConfigView>,
}

/// One proxy's configuration for the app, as `latchkey apps proxy-config` prints it, or why
/// there is none.
#[derive(Debug, Serialize)]
struct ProxyConfigView {
    proxy: &'static str,
    text: Option<String>,
    error: Option<String>,
}

impl AppView {
    /// `latchkey` is where the proxies reach Latchkey: the command's default, `LATCHKEY_BIND`.
    fn of(entry: AppEntry, latchkey: &Upstream) -> Self {
        let origin = entry.app.origin();
        let proxy_configs = proxy_config::render_each(
            &entry.app.name,
            &origin,
            latchkey,
            &AppUpstream::Placeholder,
        )
        .into_iter()
        .map(|(proxy, rendered)| {
            let (text, error) = match rendered {
                Ok(text) => (Some(text), None),
                Err(err) => (None, Some(err.to_string())),
            };
            ProxyConfigView {
                proxy: proxy.as_str(),
                text,
                error,
            }
        })
        .collect();
        Self {
            id: entry.app.id,
            origin: origin.to_string(),
            roles: entry.app.roles().into_iter().map(Role::as_str).collect(),
            groups: entry.groups.iter().map(ToString::to_string).collect(),
            name: entry.app.name,
            members: entry.members,
            proxy_configs,
        }
    }
}

/// The add form as typed.
#[derive(Debug, Default, Serialize)]
struct Typed {
    name: String,
    url: String,
    roles: Vec<String>,
    groups: Vec<String>,
    members: String,
}

#[derive(Debug, Default)]
struct Outcome {
    add: Typed,
    notice: Option<String>,
    error: Option<String>,
    status: Option<StatusCode>,
}

async fn render(req: &HttpRequest, state: &AppState, outcome: Outcome) -> PageResult {
    let latchkey = Upstream::from_bind(state.settings.bind);
    let (apps, groups) = apps::list_with_groups(&state.db).await?;
    let apps: Vec<AppView> = apps
        .into_iter()
        .map(|entry| AppView::of(entry, &latchkey))
        .collect();
    let groups: Vec<String> = groups.iter().map(|g| g.name.to_string()).collect();
    Ok(Page::new("apps", "Apps")
        .with("apps", apps)
        .with("roles", Role::ALL.map(Role::as_str))
        .with("groups", groups)
        .with("latchkey_upstream", latchkey.to_string())
        .with("add", outcome.add)
        .with("notice", outcome.notice)
        .with("error", outcome.error)
        .status(outcome.status.unwrap_or(StatusCode::OK))
        .render(req))
}

pub async fn show(req: HttpRequest, state: web::Data<AppState>) -> PageResult {
    render(&req, &state, Outcome::default()).await
}

/// The fields of the add and change forms; `roles` repeats, so the body is read as pairs.
fn typed(body: &[u8]) -> Typed {
    let mut typed = Typed::default();
    for (key, value) in url::form_urlencoded::parse(body) {
        match key.as_ref() {
            "name" => typed.name = value.chars().take(100).collect(),
            "url" => typed.url = value.chars().take(2048).collect(),
            "roles" => typed.roles.push(value.chars().take(20).collect()),
            "groups" => typed.groups.push(value.chars().take(70).collect()),
            "members" => typed.members = value.chars().take(16 * 1024).collect(),
            _ => {}
        }
    }
    typed
}

/// Parsed once here: an origin, roles, groups and addresses, or what to tell the admin.
fn parse(typed: &Typed) -> Result<(AppOrigin, Access), String> {
    let origin = AppOrigin::parse_registrable(&typed.url).map_err(|e| format!("URL: {e}"))?;
    let roles = typed
        .roles
        .iter()
        .map(|role| {
            Role::parse(role).map_err(|_| "Pick roles among admin, auditor and member.".to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let groups = typed
        .groups
        .iter()
        .map(|group| GroupName::parse(group).map_err(|e| format!("Group {group:?}: {e}.")))
        .collect::<Result<Vec<_>, _>>()?;
    let members = typed
        .members
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| EmailAddress::parse(line).map_err(|e| format!("{line}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        origin,
        Access {
            roles,
            groups,
            members,
        },
    ))
}

fn refusal(err: AppError, add: Typed) -> Result<Outcome, PageError> {
    let message = err.to_string();
    let status = match err {
        AppError::Query(err) => return Err(err.into()),
        AppError::NotFound => return Err(PageError::NotFound),
        AppError::NameTaken(_) | AppError::OriginTaken(..) => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    Ok(Outcome {
        add,
        error: Some(message),
        status: Some(status),
        ..Outcome::default()
    })
}

/// Success without HTMX goes back to the list (a reload does not post again); anything else
/// renders the section with the outcome.
async fn finish(
    req: &HttpRequest,
    state: &AppState,
    outcome: Result<Outcome, PageError>,
) -> PageResult {
    match outcome {
        Ok(outcome) if outcome.status.is_none() && !is_htmx(req) => Ok(see_other("/apps")),
        Ok(outcome) => render(req, state, outcome).await,
        Err(err) => Err(err),
    }
}

pub async fn add(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(viewer): CurrentMember,
    body: web::Bytes,
) -> PageResult {
    let typed = typed(&body);
    let (origin, access) = match parse(&typed) {
        Ok(parsed) => parsed,
        Err(message) => {
            let outcome = Outcome {
                add: typed,
                error: Some(message),
                status: Some(StatusCode::UNPROCESSABLE_ENTITY),
                ..Outcome::default()
            };
            return finish(&req, &state, Ok(outcome)).await;
        }
    };
    let result = apps::add(&state.live, &viewer, typed.name.clone(), origin, access).await;
    let outcome = match result {
        Ok(app) => Ok(Outcome {
            notice: Some(format!("Added {} ({}).", app.name, app.origin())),
            ..Outcome::default()
        }),
        Err(err) => refusal(err, typed),
    };
    finish(&req, &state, outcome).await
}

pub async fn change(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(viewer): CurrentMember,
    id: web::Path<String>,
    body: web::Bytes,
) -> PageResult {
    let Some(id) = AppId::parse(&id) else {
        return Err(PageError::NotFound);
    };
    let typed = typed(&body);
    let (origin, access) = match parse(&typed) {
        Ok(parsed) => parsed,
        Err(message) => {
            let outcome = Outcome {
                error: Some(message),
                status: Some(StatusCode::UNPROCESSABLE_ENTITY),
                ..Outcome::default()
            };
            return finish(&req, &state, Ok(outcome)).await;
        }
    };
    let result = apps::change(&state.live, &viewer, id, typed.name, origin, access).await;
    let outcome = match result {
        Ok((app, _)) => Ok(Outcome {
            notice: Some(format!("Saved {} ({}).", app.name, app.origin())),
            ..Outcome::default()
        }),
        Err(err) => refusal(err, Typed::default()),
    };
    finish(&req, &state, outcome).await
}

pub async fn remove(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(viewer): CurrentMember,
    id: web::Path<String>,
) -> PageResult {
    let Some(id) = AppId::parse(&id) else {
        return Err(PageError::NotFound);
    };
    let result = apps::remove(&state.live, &viewer, id).await;
    let outcome = match result {
        Ok(app) => Ok(Outcome {
            notice: Some(format!(
                "Removed {} ({}): its sign-ins are refused from now on.",
                app.name,
                app.origin()
            )),
            ..Outcome::default()
        }),
        Err(err) => refusal(err, Typed::default()),
    };
    finish(&req, &state, outcome).await
}
