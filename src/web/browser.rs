//! The two cookies a browser holds before it is signed in, both signed with a key of their
//! own (so they cannot be forged or swapped for each other):
//!
//! - the browser cookie: a random id that lives long. Before sign-in, the CSRF token is
//!   derived from it; after sign-in it tells whether a member has used this browser before.
//! - the sign-in cookie: a random binding secret that lives as long as a link. The digest of
//!   it is stored on each sign-in request this browser makes, so only this browser can
//!   complete them (`LATCHKEY_LINK_BINDING=browser`), and `/auth/code` and `/auth/wait` find
//!   the request through it.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

use crate::crypto::random_bytes;
use crate::domain::digests::{BindingDigest, DeviceDigest};

pub const SESSION_COOKIE: &str = "latchkey_session";
pub const BROWSER_COOKIE: &str = "latchkey_browser";
pub const SIGNIN_COOKIE: &str = "latchkey_signin";

const BROWSER_COOKIE_DAYS: i64 = 400;

/// With an https public URL, cookie names carry the `__Host-` prefix, which browsers only
/// accept with `Secure`, `Path=/` and no `Domain`: no sibling subdomain can plant them.
pub fn cookie_name(base: &str, https: bool) -> String {
    if https {
        format!("__Host-{base}")
    } else {
        base.to_string()
    }
}

/// The session cookie's name: `__Host-` like the others, so it never leaves Latchkey's host
/// (apps get cookies of their own: `forward_auth::app_sessions`).
pub fn session_cookie_name(https: bool) -> String {
    cookie_name(SESSION_COOKIE, https)
}

pub fn build_cookie(
    name: String,
    value: String,
    https: bool,
    max_age: CookieDuration,
) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .secure(https)
        .same_site(SameSite::Lax)
        .max_age(max_age)
        .finish()
}

fn sign(key: &hmac::Key, purpose: &str, bytes: &[u8]) -> String {
    let mut message = purpose.as_bytes().to_vec();
    message.push(b'|');
    message.extend_from_slice(bytes);
    let tag = hmac::sign(key, &message);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(bytes),
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

fn verify<const N: usize>(key: &hmac::Key, purpose: &str, value: &str) -> Option<[u8; N]> {
    if value.len() > 128 {
        return None;
    }
    let (data, tag) = value.split_once('.')?;
    let data = URL_SAFE_NO_PAD.decode(data).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let mut message = purpose.as_bytes().to_vec();
    message.push(b'|');
    message.extend_from_slice(&data);
    hmac::verify(key, &message, &tag).ok()?;
    data.try_into().ok()
}

/// The long-lived random id of one browser.
#[derive(Clone, PartialEq, Eq)]
pub struct BrowserId([u8; 16]);

impl BrowserId {
    pub fn generate() -> Self {
        Self(random_bytes())
    }

    pub fn from_cookie(key: &hmac::Key, value: &str) -> Option<Self> {
        verify(key, "browser", value).map(Self)
    }

    pub fn cookie_value(&self, key: &hmac::Key) -> String {
        sign(key, "browser", &self.0)
    }

    pub fn cookie(&self, key: &hmac::Key, https: bool) -> Cookie<'static> {
        build_cookie(
            cookie_name(BROWSER_COOKIE, https),
            self.cookie_value(key),
            https,
            CookieDuration::days(BROWSER_COOKIE_DAYS),
        )
    }

    /// The CSRF token of a browser that is not signed in.
    pub fn csrf_token(&self, key: &hmac::Key) -> String {
        let mut message = b"csrf|".to_vec();
        message.extend_from_slice(&self.0);
        URL_SAFE_NO_PAD.encode(hmac::sign(key, &message).as_ref())
    }

    /// What `member_browsers` stores.
    pub fn device_digest(&self) -> DeviceDigest {
        let mut message = b"device|".to_vec();
        message.extend_from_slice(&self.0);
        DeviceDigest::sha256(&message)
    }
}

impl std::fmt::Debug for BrowserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrowserId([redacted])")
    }
}

/// The short-lived secret that binds sign-in requests to the browser that made them.
#[derive(Clone, PartialEq, Eq)]
pub struct BindingSecret([u8; 16]);

impl BindingSecret {
    pub fn generate() -> Self {
        Self(random_bytes())
    }

    pub fn from_cookie(key: &hmac::Key, value: &str) -> Option<Self> {
        verify(key, "binding", value).map(Self)
    }

    pub fn cookie(&self, key: &hmac::Key, https: bool, max_age: CookieDuration) -> Cookie<'static> {
        build_cookie(
            cookie_name(SIGNIN_COOKIE, https),
            sign(key, "binding", &self.0),
            https,
            max_age,
        )
    }

    pub fn digest(&self) -> BindingDigest {
        BindingDigest::sha256(&self.0)
    }
}

impl std::fmt::Debug for BindingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BindingSecret([redacted])")
    }
}

/// What the browser-cookie middleware learned about this request's browser.
#[derive(Debug, Clone)]
pub struct Browser {
    pub id: BrowserId,
    /// False when the browser arrived without a valid browser cookie (a first visit, a mail
    /// scanner, another device); the middleware sets one on the response.
    pub had_cookie: bool,
    /// The sign-in cookies' binding secrets (normally one: each `POST /login` sets a fresh one).
    pub bindings: Vec<BindingSecret>,
}

impl FromRequest for Browser {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(req.extensions().get::<Browser>().cloned().ok_or_else(|| {
            actix_web::error::ErrorInternalServerError("browser middleware missing")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &[9u8; 32])
    }

    #[test]
    fn cookies_round_trip_and_reject_forgery() {
        let id = BrowserId::generate();
        let value = id.cookie_value(&key());
        assert_eq!(BrowserId::from_cookie(&key(), &value), Some(id.clone()));
        let forged = format!("{}x", value);
        assert_eq!(BrowserId::from_cookie(&key(), &forged), None);
        // A browser cookie is not a binding cookie, although both are signed with one key.
        assert_eq!(BindingSecret::from_cookie(&key(), &value), None);
    }

    #[test]
    fn the_session_cookie_is_host_only_by_name() {
        assert_eq!(session_cookie_name(true), "__Host-latchkey_session");
        assert_eq!(session_cookie_name(false), "latchkey_session");
    }

    #[test]
    fn https_cookies_use_the_host_prefix() {
        let cookie = BrowserId::generate().cookie(&key(), true);
        assert_eq!(cookie.name(), "__Host-latchkey_browser");
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.same_site(), Some(SameSite::Lax));
    }
}
