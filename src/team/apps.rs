//! The apps page's work: list the apps, add one, change one (with its OpenID Connect
//! registration, in the same transaction), remove one, renew a client's secret. The
//! checks (a name, somebody who may open it, listed members and existing groups only) and
//! the audit rows live in [`crate::models::app`]; forward auth reads the apps through the
//! cache, which each change clears here.

use diesel::Connection as _;

use crate::db::{Db, DbError, DbFailure};
use crate::domain::app_origin::AppOrigin;
use crate::domain::ids::AppId;
use crate::models::app::{self, Access, App, AppEntry, AppError, OidcClient, Saved};
use crate::models::group::{self, Group};
use crate::models::member::Member;
use crate::models::oidc::{self, Registration, SecretError};
use crate::session::cache::Live;

/// Every app with its listed members, by name.
pub async fn list(db: &Db) -> Result<Vec<AppEntry>, DbError> {
    db.query(app::list).await
}

/// The same, with every group (what an app may let in), for the apps page's forms.
pub async fn list_with_groups(db: &Db) -> Result<(Vec<AppEntry>, Vec<Group>), DbError> {
    db.query(|conn| Ok((app::list(conn)?, group::all(conn)?)))
        .await
}

pub async fn add(
    live: &Live,
    admin: &Member,
    name: String,
    origin: AppOrigin,
    access: Access,
) -> Result<App, AppError> {
    let admin = admin.clone();
    let added = live
        .db()
        .run(move |conn| app::add(conn, &name, &origin, &access, &admin))
        .await;
    live.cache().forget_apps();
    added
}

/// Changes an app's name, origin and who may open it.
pub async fn change(
    live: &Live,
    admin: &Member,
    id: AppId,
    name: String,
    origin: AppOrigin,
    access: Access,
) -> Result<(App, Saved), AppError> {
    let admin = admin.clone();
    let changed = live
        .db()
        .run(move |conn| app::update(conn, id, &name, &origin, &access, &admin))
        .await;
    live.cache().forget_apps();
    changed
}

/// Removes an app: its sign-ins are refused from then on.
pub async fn remove(live: &Live, admin: &Member, id: AppId) -> Result<App, AppError> {
    let admin = admin.clone();
    let removed = live
        .db()
        .run(move |conn| app::remove(conn, id, &admin))
        .await;
    live.cache().forget_apps();
    removed
}

/// Saves a new app and, for an OpenID Connect app, its registration, in one transaction: a
/// registration that fails leaves no app behind.
pub async fn add_with_registration(
    live: &Live,
    admin: &Member,
    name: String,
    origin: AppOrigin,
    access: Access,
    registration: Option<Registration>,
) -> Result<(App, Option<oidc::Registered>), AppError> {
    let Some(registration) = registration else {
        let app = add(live, admin, name, origin, access).await?;
        return Ok((app, None));
    };
    let admin = admin.clone();
    let added = live
        .db()
        .run(move |conn| {
            conn.transaction(|conn| {
                let app = app::add(conn, &name, &origin, &access, &admin)?;
                let registered = oidc::register(conn, app.id, &registration, &admin)?;
                Ok((app, Some(registered)))
            })
        })
        .await;
    live.cache().forget_apps();
    added
}

/// What a change saved, and the client's credentials when they are news to the admin: an app
/// that became an OpenID Connect client, or a client that got a secret (it was public).
pub struct Changed {
    pub app: App,
    pub credentials: Option<oidc::Registered>,
}

/// Changes an app and, when the form carried one, its OpenID Connect registration, in one
/// transaction: a registration the form left as it was is not written again (nor audited).
pub async fn change_with_registration(
    live: &Live,
    admin: &Member,
    id: AppId,
    name: String,
    origin: AppOrigin,
    access: Access,
    registration: Option<Registration>,
) -> Result<Changed, AppError> {
    let Some(registration) = registration else {
        let (app, _) = change(live, admin, id, name, origin, access).await?;
        return Ok(Changed {
            app,
            credentials: None,
        });
    };
    let admin = admin.clone();
    let changed = live
        .db()
        .run(move |conn| {
            conn.transaction(|conn| {
                let (app, _) = app::update(conn, id, &name, &origin, &access, &admin)?;
                let before = app.oidc();
                if before
                    .as_ref()
                    .is_some_and(|client| registers_as(client, &registration))
                {
                    return Ok(Changed {
                        app,
                        credentials: None,
                    });
                }
                let registered = oidc::register(conn, app.id, &registration, &admin)?;
                let news = before.is_none() || registered.new_secret.is_some();
                Ok(Changed {
                    app,
                    credentials: news.then_some(registered),
                })
            })
        })
        .await;
    live.cache().forget_apps();
    changed
}

/// Whether `client` is registered as `registration` says already.
fn registers_as(client: &OidcClient, registration: &Registration) -> bool {
    client.is_public() == registration.public
        && client.redirect_uris == registration.redirect_uris
        && client.post_logout_redirect_uris == registration.post_logout_redirect_uris
        && client.backchannel_logout_uri == registration.backchannel_logout_uri
}

/// Why a new secret was not made.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("no such app")]
    NotFound,
    /// Not an OpenID Connect app, or a public client (which has no secret).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for RotateError {
    fn from(err: diesel::result::Error) -> Self {
        RotateError::Db(DbError::from(err))
    }
}

impl DbFailure for RotateError {
    fn is_database_failure(&self) -> bool {
        matches!(self, RotateError::Db(_))
    }
}

/// The app `id`, and a new secret for it (`models::oidc::rotate_secret`, audited
/// `app_secret_rotated` with the app's name and never the secret).
fn rotate_in(
    conn: &mut diesel::PgConnection,
    id: AppId,
    admin: &Member,
) -> Result<(App, String), RotateError> {
    conn.transaction(|conn| {
        let app = app::find(conn, id)?.ok_or(RotateError::NotFound)?;
        match oidc::rotate_secret(conn, &app.name, admin) {
            Ok(secret) => Ok((app, secret)),
            Err(SecretError::Query(err)) => Err(err.into()),
            Err(refused) => Err(RotateError::Refused(format!("{refused}."))),
        }
    })
}

/// A new secret for app `id` (a confidential OpenID Connect client); the old one stops at
/// once: this instance reads the apps again now, the others when they hear.
pub async fn rotate_secret(
    live: &Live,
    admin: &Member,
    id: AppId,
) -> Result<(App, String), RotateError> {
    let admin = admin.clone();
    let rotated = live.db().run(move |conn| rotate_in(conn, id, &admin)).await;
    live.cache().forget_apps();
    rotated
}
