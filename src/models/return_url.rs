//! `sign_in_requests.return_url`: where a sign-in that came from an app goes back to.

use diesel::deserialize::FromSql;
use diesel::pg::{Pg, PgValue};
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};

use crate::domain::app_origin::AppUrl;
use crate::domain::ids::RequestId;
use crate::models::app;
use crate::schema::sign_in_requests;

/// Stores `rd` on the request when its origin is a registered app's (exact origin match);
/// anything else is dropped, and the browser lands on `next` or the dashboard. The app's name
/// when it was stored (the mail says which app the sign-in continues to).
pub fn remember(
    conn: &mut PgConnection,
    request_id: RequestId,
    rd: &AppUrl,
) -> QueryResult<Option<String>> {
    let Some(name) = app::name_for_origin(conn, rd.origin())? else {
        return Ok(None);
    };
    diesel::update(sign_in_requests::table.find(request_id))
        .set(sign_in_requests::return_url.eq(rd.as_str()))
        .execute(conn)?;
    Ok(Some(name))
}

/// The column as read: parsed again, so that only a well-formed absolute URL is ever a
/// `Location`. A stored text that no longer parses (an edit by hand) reads as no URL, and the
/// browser goes to `next` instead, as it always has.
#[derive(diesel::deserialize::FromSqlRow)]
#[diesel(sql_type = Nullable<Text>)]
pub struct StoredReturnUrl(Option<AppUrl>);

impl FromSql<Nullable<Text>, Pg> for StoredReturnUrl {
    fn from_sql(bytes: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        Ok(Self(AppUrl::parse(&text).ok()))
    }

    fn from_nullable_sql(bytes: Option<PgValue<'_>>) -> diesel::deserialize::Result<Self> {
        match bytes {
            Some(bytes) => Self::from_sql(bytes),
            None => Ok(Self(None)),
        }
    }
}

impl From<StoredReturnUrl> for Option<AppUrl> {
    fn from(stored: StoredReturnUrl) -> Self {
        stored.0
    }
}
