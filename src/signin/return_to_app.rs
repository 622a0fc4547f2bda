//! `GET /auth/return?rd=URL`: the last step of a sign-in that came from an app. Only a URL on
//! a registered app's origin is followed.

use super::SignIn;
use crate::db::DbError;
use crate::domain::app_origin::AppUrl;
use crate::models::app;

impl SignIn {
    /// Whether the browser may be sent on to `url`: its origin is a registered app's.
    pub async fn may_return_to(&self, url: &AppUrl) -> Result<bool, DbError> {
        let origin = url.origin().clone();
        self.db
            .query(move |conn| app::is_registered(conn, &origin))
            .await
    }
}
