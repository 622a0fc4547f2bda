//! The apps page's work: list the protected apps, add one, change one, remove one. The
//! checks (a name, somebody who may open it, listed members and existing groups only) and
//! the audit rows live in [`crate::models::app`]; forward auth reads the apps through the
//! cache, which each change clears here.

use crate::db::{Db, DbError};
use crate::domain::app_origin::AppOrigin;
use crate::domain::ids::AppId;
use crate::models::app::{self, Access, App, AppEntry, AppError, Saved};
use crate::models::group::{self, Group};
use crate::models::member::Member;
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
