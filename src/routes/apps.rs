//! `GET /apps` (admins and auditors), `POST /apps`, `POST /apps/{id}`, `POST /apps/{id}/remove`
//! and `POST /apps/{id}/secret` (admins): the apps, how each connects (through its proxy, or
//! signing in through OpenID Connect) and who may open each. Each form works as a plain post
//! (303 back to `/apps`) and with HTMX (the section is swapped); an answer that carries a new
//! client secret is rendered at once instead, since the secret is shown that one time. The
//! changes are [`crate::team::apps`] and `models::oidc`; their audit rows live in the models.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use serde::Serialize;

use crate::domain::app_origin::AppOrigin;
use crate::domain::email_address::EmailAddress;
use crate::domain::group_name::GroupName;
use crate::domain::ids::AppId;
use crate::domain::oidc::RedirectUri;
use crate::domain::role::Role;
use crate::forward_auth::proxy_config::{self, AppUpstream, Upstream};
use crate::middleware::guard::CurrentMember;
use crate::models::app::{Access, App, AppEntry, AppError, OidcClient};
use crate::models::oidc::Registration;
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
    /// Set for an app that signs in through OpenID Connect; its proxy configurations are
    /// then not shown (it has no proxy in front of it).
    oidc: Option<OidcView>,
    proxy_configs: Vec<ProxyConfigView>,
}

/// An app's OpenID Connect registration, as the page shows it, with what its guides need.
#[derive(Debug, Serialize)]
struct OidcView {
    client_id: String,
    public: bool,
    redirect_uris: Vec<String>,
    post_logout_redirect_uris: Vec<String>,
    backchannel_logout_uri: Option<String>,
    /// Where the app sends the browser to sign out of Latchkey too (RP-initiated logout):
    /// with its client id, and its first post-logout URI when it registered one.
    end_session_url: String,
}

impl OidcView {
    fn of(client: &OidcClient, issuer: &str) -> Self {
        let texts = |uris: &[RedirectUri]| -> Vec<String> {
            uris.iter().map(|uri| uri.as_str().to_string()).collect()
        };
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("client_id", client.client_id.as_str());
        if let Some(uri) = client.post_logout_redirect_uris.first() {
            query.append_pair("post_logout_redirect_uri", uri.as_str());
        }
        Self {
            client_id: client.client_id.as_str().to_string(),
            public: client.is_public(),
            redirect_uris: texts(&client.redirect_uris),
            post_logout_redirect_uris: texts(&client.post_logout_redirect_uris),
            backchannel_logout_uri: client
                .backchannel_logout_uri
                .as_ref()
                .map(|uri| uri.as_str().to_string()),
            end_session_url: format!("{issuer}/oidc/logout?{}", query.finish()),
        }
    }
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
    /// `latchkey` is where the proxies reach Latchkey: the command's default, `LATCHKEY_BIND`;
    /// `issuer` is the OpenID Provider's issuer, `LATCHKEY_PUBLIC_URL`.
    fn of(entry: AppEntry, latchkey: &Upstream, issuer: &str) -> Self {
        let origin = entry.app.origin();
        let oidc = entry.app.oidc().map(|client| OidcView::of(&client, issuer));
        let proxy_configs = if oidc.is_some() {
            Vec::new()
        } else {
            Self::proxy_configs(&entry.app, latchkey)
        };
        Self {
            id: entry.app.id,
            origin: origin.to_string(),
            roles: entry.app.roles().into_iter().map(Role::as_str).collect(),
            groups: entry.groups.iter().map(ToString::to_string).collect(),
            name: entry.app.name,
            members: entry.members,
            oidc,
            proxy_configs,
        }
    }

    fn proxy_configs(app: &App, latchkey: &Upstream) -> Vec<ProxyConfigView> {
        proxy_config::render_each(
            &app.name,
            &app.origin(),
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
        .collect()
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
    /// "OpenID Connect" ticked: the app signs its users in itself, with Latchkey as provider.
    oidc: bool,
    /// One URI a line, as the three fields below.
    redirect_uris: String,
    public: bool,
    post_logout_redirect_uris: String,
    backchannel_logout_uri: String,
}

/// A client's credentials, shown on the answer page this once: the secret is neither stored
/// (only its digest is) nor logged nor audited.
#[derive(Serialize)]
struct Credentials {
    app_name: String,
    client_id: String,
    client_secret: Option<String>,
    /// A new secret replaced the old one, which stopped working.
    rotated: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("app_name", &self.app_name)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "redacted"),
            )
            .field("rotated", &self.rotated)
            .finish()
    }
}

#[derive(Debug, Default)]
struct Outcome {
    add: Typed,
    notice: Option<String>,
    error: Option<String>,
    credentials: Option<Credentials>,
    status: Option<StatusCode>,
}

async fn render(req: &HttpRequest, state: &AppState, outcome: Outcome) -> PageResult {
    let latchkey = Upstream::from_bind(state.settings.bind);
    let issuer = crate::oidc::Context {
        db: &state.db,
        live: &state.live,
        settings: &state.settings,
    }
    .issuer();
    let (apps, groups) = apps::list_with_groups(&state.db).await?;
    let apps: Vec<AppView> = apps
        .into_iter()
        .map(|entry| AppView::of(entry, &latchkey, &issuer))
        .collect();
    let has_oidc = apps.iter().any(|app| app.oidc.is_some());
    let has_proxy = apps.iter().any(|app| app.oidc.is_none());
    let groups: Vec<String> = groups.iter().map(|g| g.name.to_string()).collect();
    Ok(Page::new("apps", "Apps")
        .with("apps", apps)
        .with("has_oidc", has_oidc)
        .with("has_proxy", has_proxy)
        .with("issuer", issuer)
        .with("roles", Role::ALL.map(Role::as_str))
        .with("groups", groups)
        .with("latchkey_upstream", latchkey.to_string())
        .with("add", outcome.add)
        .with("notice", outcome.notice)
        .with("error", outcome.error)
        .with("credentials", outcome.credentials)
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
            "oidc" => typed.oidc = !value.is_empty(),
            "redirect_uris" => typed.redirect_uris = value.chars().take(8 * 1024).collect(),
            "public" => typed.public = !value.is_empty(),
            "post_logout_redirect_uris" => {
                typed.post_logout_redirect_uris = value.chars().take(8 * 1024).collect();
            }
            "backchannel_logout_uri" => {
                typed.backchannel_logout_uri = value.chars().take(2048).collect();
            }
            _ => {}
        }
    }
    typed
}

/// What the add and change forms say, parsed: where the app is, who may open it, and, for an
/// app that signs in through OpenID Connect, its registration.
struct Parsed {
    origin: AppOrigin,
    access: Access,
    registration: Option<Registration>,
}

/// The URIs of a field, one a line (blank lines skipped), each as a redirect URI must be.
fn uris(field: &str, lines: &str) -> Result<Vec<RedirectUri>, String> {
    lines
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| RedirectUri::parse(line).map_err(|e| format!("{field}: {e}.")))
        .collect()
}

/// The OpenID Connect part of the add form, or nothing when "OpenID Connect" is not ticked
/// (then its fields must be empty: a URI typed for nothing is a mistake worth saying).
fn registration(typed: &Typed) -> Result<Option<Registration>, String> {
    let redirect_uris = uris("Redirect URIs", &typed.redirect_uris)?;
    let post_logout_redirect_uris = uris(
        "Post-logout redirect URIs",
        &typed.post_logout_redirect_uris,
    )?;
    let backchannel_logout_uri = match typed.backchannel_logout_uri.trim() {
        "" => None,
        uri => Some(RedirectUri::parse(uri).map_err(|e| format!("Back-channel logout URI: {e}."))?),
    };
    let any_uri = !redirect_uris.is_empty()
        || !post_logout_redirect_uris.is_empty()
        || backchannel_logout_uri.is_some();
    if !typed.oidc {
        return if any_uri || typed.public {
            Err("Tick \"OpenID Connect\" for an app that signs in through it, or leave its fields empty.".into())
        } else {
            Ok(None)
        };
    }
    if redirect_uris.is_empty() {
        return Err(
            "An OpenID Connect app needs at least one redirect URI (where it receives its code)."
                .into(),
        );
    }
    Ok(Some(Registration {
        public: typed.public,
        redirect_uris,
        post_logout_redirect_uris,
        backchannel_logout_uri,
    }))
}

/// Parsed once here: an origin, roles, groups and addresses, or what to tell the admin.
fn parse(typed: &Typed) -> Result<Parsed, String> {
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
    Ok(Parsed {
        origin,
        access: Access {
            roles,
            groups,
            members,
        },
        registration: registration(typed)?,
    })
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
    let parsed = match parse(&typed) {
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
    let Parsed {
        origin,
        access,
        registration,
    } = parsed;
    let result = apps::add_with_registration(
        &state.live,
        &viewer,
        typed.name.clone(),
        origin,
        access,
        registration,
    )
    .await;
    let outcome = match result {
        Ok((app, None)) => Ok(Outcome {
            notice: Some(format!("Added {} ({}).", app.name, app.origin())),
            ..Outcome::default()
        }),
        // The client id, and a confidential client's secret, are shown on this answer.
        Ok((app, Some(registered))) => Ok(Outcome {
            notice: Some(format!(
                "Added {} ({}), signing in through OpenID Connect.",
                app.name,
                app.origin()
            )),
            credentials: Some(Credentials {
                app_name: app.name,
                client_id: registered.client_id.as_str().to_string(),
                client_secret: registered.new_secret,
                rotated: false,
            }),
            status: Some(StatusCode::OK),
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
    let parsed = match parse(&typed) {
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
    let Parsed {
        origin,
        access,
        registration,
    } = parsed;
    let result = apps::change_with_registration(
        &state.live,
        &viewer,
        id,
        typed.name,
        origin,
        access,
        registration,
    )
    .await;
    let outcome = match result {
        Ok(apps::Changed {
            app,
            credentials: Some(registered),
        }) => Ok(Outcome {
            notice: Some(format!("Saved {} ({}).", app.name, app.origin())),
            credentials: Some(Credentials {
                app_name: app.name,
                client_id: registered.client_id.as_str().to_string(),
                client_secret: registered.new_secret,
                rotated: false,
            }),
            status: Some(StatusCode::OK),
            ..Outcome::default()
        }),
        Ok(apps::Changed { app, .. }) => Ok(Outcome {
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

/// `POST /apps/{id}/secret`: a new client secret for a confidential OpenID Connect app; the
/// old one stops working at once, on every instance. The answer shows the new secret this
/// once (`Cache-Control: no-store`, as every page).
pub async fn rotate_secret(
    req: HttpRequest,
    state: web::Data<AppState>,
    CurrentMember(viewer): CurrentMember,
    id: web::Path<String>,
) -> PageResult {
    let Some(id) = AppId::parse(&id) else {
        return Err(PageError::NotFound);
    };
    let rotated = apps::rotate_secret(&state.live, &viewer, id).await;
    let outcome = match rotated {
        Ok((app, secret)) => Ok(Outcome {
            credentials: Some(Credentials {
                client_id: app
                    .oidc()
                    .map(|client| client.client_id.as_str().to_string())
                    .unwrap_or_default(),
                app_name: app.name,
                client_secret: Some(secret),
                rotated: true,
            }),
            status: Some(StatusCode::OK),
            ..Outcome::default()
        }),
        Err(apps::RotateError::NotFound) => Err(PageError::NotFound),
        Err(apps::RotateError::Refused(message)) => Ok(Outcome {
            error: Some(message),
            status: Some(StatusCode::UNPROCESSABLE_ENTITY),
            ..Outcome::default()
        }),
        Err(apps::RotateError::Db(err)) => Err(err.into()),
    };
    finish(&req, &state, outcome).await
}
