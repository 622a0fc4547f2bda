//! Each app's own session: `/auth/app` (on Latchkey) issues a one-time code for a signed-in
//! member, the app's `/.latchkey/callback` (on the app's host, through its proxy) trades it for
//! a host-only cookie worth that one app, and the app's `/.latchkey/logout` ends it. Latchkey's
//! own session cookie never leaves Latchkey's host, so an app's backend that reads its cookies
//! learns nothing it could use elsewhere.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use diesel::Connection as _;

use super::check::{SignedIn, LOG_TARGET};
use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::{Db, DbError};
use crate::domain::app_origin::AppOrigin;
use crate::domain::client_info::ClientInfo;
use crate::domain::digests::{AppCodeDigest, AppKeyDigest};
use crate::models::app::AppRule;
use crate::models::app_session;
use crate::session::cache::Live;

/// How long a code from `/auth/app` works: one redirect's worth.
pub const CODE_LIFETIME: chrono::Duration = chrono::Duration::seconds(60);

/// The app cookie's name: `__Host-` on an https origin (no sibling host can plant it, and it
/// is never sent over plain http), plain on a loopback http origin, where browsers refuse the
/// prefix.
pub fn app_cookie_name(origin: &AppOrigin) -> &'static str {
    if origin.as_str().starts_with("https://") {
        "__Host-latchkey_app"
    } else {
        "latchkey_app"
    }
}

/// Both names, for reading cookies before the app is known.
pub const APP_COOKIE_NAMES: [&str; 2] = ["__Host-latchkey_app", "latchkey_app"];

/// The app cookies a request to the app's host carried (both names; which one counts depends
/// on the app's scheme), taken off the request before actix-session
/// (`middleware::check_cookie`), so that no Latchkey session is loaded for the app's host.
#[derive(Debug, Clone, Default)]
pub struct AppCookies(pub Vec<(&'static str, String)>);

impl AppCookies {
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(cookie, _)| *cookie == name)
            .map(|(_, value)| value.as_str())
    }
}

/// 256 random bits, as the URL or cookie carries them.
fn random_text() -> String {
    URL_SAFE_NO_PAD.encode(crate::crypto::random_bytes::<32>())
}

/// Exactly what [`random_text`] makes: anything else is refused before a digest is taken.
fn is_well_formed(text: &str) -> bool {
    text.len() == 43
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The digest of an app cookie's value, if it could be one.
pub fn key_digest(value: &str) -> Option<AppKeyDigest> {
    is_well_formed(value).then(|| AppKeyDigest::sha256(value.as_bytes()))
}

/// A code for `app`'s callback, bound to this sign-in.
pub async fn issue_code(
    db: &Db,
    signed_in: &SignedIn,
    app: &AppRule,
    now: DateTime<Utc>,
) -> Result<String, DbError> {
    let code = random_text();
    let digest = AppCodeDigest::sha256(code.as_bytes());
    let (session_id, app_id) = (signed_in.session_id, app.id);
    db.query(move |conn| {
        app_session::issue_code(conn, session_id, app_id, &digest, now + CODE_LIFETIME)
    })
    .await?;
    Ok(code)
}

/// A new app cookie's value (the database keeps only its digest).
#[derive(Debug)]
pub struct AppCookieValue(pub String);

/// Trades a code for a new app session of `app`, audited `app_opened` in the same
/// transaction. `None`: the code is malformed, unknown, spent, expired, another app's, or its
/// sign-in has ended.
pub async fn redeem(
    db: &Db,
    code: &str,
    app: &AppRule,
    client: ClientInfo,
    now: DateTime<Utc>,
) -> Result<Option<AppCookieValue>, DbError> {
    if !is_well_formed(code) {
        return Ok(None);
    }
    let code = AppCodeDigest::sha256(code.as_bytes());
    let value = random_text();
    let key = AppKeyDigest::sha256(value.as_bytes());
    let (app_id, app_name) = (app.id, app.name.clone());
    let redeemed = db
        .query(move |conn| {
            conn.transaction(|conn| {
                let Some(redeemed) = app_session::redeem(conn, &code, app_id, &key, now)? else {
                    return Ok(None);
                };
                NewAuditRow::new(AuditEvent::AppOpened)
                    .email(&redeemed.email)
                    .client(&client)
                    .detail(app_name)
                    .insert(conn)?;
                Ok(Some(redeemed))
            })
        })
        .await?;
    Ok(redeemed.map(|redeemed| {
        log::info!(
            target: LOG_TARGET,
            member = redeemed.email.as_str(),
            app = app.name.as_str();
            "app_opened"
        );
        AppCookieValue(value)
    }))
}

/// Ends the app session behind any of `keys` on `app` (the app's own sign-out), here at once
/// and on every other instance through the table's trigger. False when there was none.
pub async fn sign_out(
    db: &Db,
    live: &Live,
    keys: Vec<AppKeyDigest>,
    app: &AppRule,
) -> Result<bool, DbError> {
    let app_id = app.id;
    let ended_keys = keys.clone();
    let ended = db
        .query(move |conn| {
            let mut ended = false;
            for key in &ended_keys {
                ended |= app_session::end(conn, key, app_id)?;
            }
            Ok(ended)
        })
        .await?;
    for key in &keys {
        live.cache().forget_app_session(key);
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_cookies_are_checked_for_shape_before_anything_else() {
        let made = random_text();
        assert!(is_well_formed(&made));
        assert!(key_digest(&made).is_some());
        for bad in [
            "",
            "short",
            &made[1..],
            &format!("{made}A"),
            &made.replace(|_| true, "%"),
        ] {
            assert!(key_digest(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_cookie_name_follows_the_apps_scheme() {
        let https = AppOrigin::parse("https://wiki.example.org").unwrap();
        let http = AppOrigin::parse("http://wiki.localhost:8081").unwrap();
        assert_eq!(app_cookie_name(&https), "__Host-latchkey_app");
        assert_eq!(app_cookie_name(&http), "latchkey_app");
    }
}
