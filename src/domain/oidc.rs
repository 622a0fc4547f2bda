//! What an OpenID Connect client registers and sends, parsed once at the edge: client ids,
//! redirect URIs, scopes, PKCE challenges and verifiers.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::domain::loopback::is_loopback_host;

/// A client's public identifier: random, URL-safe, shown on `/apps` and pasted into the app.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    pub fn generate() -> Self {
        Self(URL_SAFE_NO_PAD.encode(crate::crypto::random_bytes::<18>()))
    }

    /// The stored and sent form: 16 to 64 URL-safe characters (the column's CHECK says the
    /// same).
    pub fn parse(text: &str) -> Option<Self> {
        let ok = (16..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a URI cannot be registered as a redirect, post-logout or back-channel URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error("{0:?} is not an absolute URL")]
    NotAUrl(String),
    #[error("{0:?} must use https (http only to a loopback host such as 127.0.0.1)")]
    NotHttps(String),
    #[error("{0:?} has a fragment (#…), which a redirect cannot carry")]
    Fragment(String),
    #[error("{0:?} has a wildcard; register each URI exactly")]
    Wildcard(String),
    #[error("{0:?} carries user or password information")]
    Credentials(String),
}

/// A URI an app registered: https, or http to a loopback host; no fragment, no wildcard, no
/// credentials. Kept exactly as registered, since requests must name it character for
/// character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri(String);

const MAX_URI_LEN: usize = 2000;

impl RedirectUri {
    pub fn parse(text: &str) -> Result<Self, RedirectUriError> {
        let owned = || text.to_string();
        if text.len() > MAX_URI_LEN || text.trim() != text {
            return Err(RedirectUriError::NotAUrl(owned()));
        }
        if text.contains('*') {
            return Err(RedirectUriError::Wildcard(owned()));
        }
        if text.contains('#') {
            return Err(RedirectUriError::Fragment(owned()));
        }
        let url = url::Url::parse(text).map_err(|_| RedirectUriError::NotAUrl(owned()))?;
        let host = url
            .host_str()
            .ok_or_else(|| RedirectUriError::NotAUrl(owned()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RedirectUriError::Credentials(owned()));
        }
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(host) => {}
            _ => return Err(RedirectUriError::NotHttps(owned())),
        }
        Ok(Self(text.to_string()))
    }

    /// A URI read back from the database, which only ever stores parsed ones.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This URI with `pairs` added to its query (the authorization response, the
    /// post-logout redirect).
    pub fn with_query(&self, pairs: &[(&str, &str)]) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) => {
                {
                    let mut query = url.query_pairs_mut();
                    for (name, value) in pairs {
                        query.append_pair(name, value);
                    }
                }
                url.to_string()
            }
            Err(_) => self.0.clone(),
        }
    }
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The scopes Latchkey knows; others a client asks for are ignored, as OpenID Connect allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes {
    pub openid: bool,
    pub email: bool,
    pub profile: bool,
    pub groups: bool,
    pub offline_access: bool,
}

impl Scopes {
    pub const SUPPORTED: [&'static str; 5] =
        ["openid", "email", "profile", "groups", "offline_access"];

    pub fn parse(text: &str) -> Self {
        let mut scopes = Self::default();
        for scope in text.split(' ') {
            match scope {
                "openid" => scopes.openid = true,
                "email" => scopes.email = true,
                "profile" => scopes.profile = true,
                "groups" => scopes.groups = true,
                "offline_access" => scopes.offline_access = true,
                _ => {}
            }
        }
        scopes
    }

    /// The granted scopes, space-separated, in a fixed order.
    pub fn as_string(self) -> String {
        let granted = [
            self.openid,
            self.email,
            self.profile,
            self.groups,
            self.offline_access,
        ];
        Self::SUPPORTED
            .iter()
            .zip(granted)
            .filter(|(_, on)| *on)
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A PKCE `S256` challenge: base64url of a SHA-256, 43 characters (RFC 7636 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == 43
            && URL_SAFE_NO_PAD
                .decode(text)
                .is_ok_and(|bytes| bytes.len() == 32);
        ok.then(|| Self(text.to_string()))
    }

    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `verifier` is the one this challenge was made from. A verifier of the wrong
    /// length or alphabet (RFC 7636 §4.1: 43 to 128 unreserved characters) never is.
    pub fn is_met_by(&self, verifier: &str) -> bool {
        let well_formed = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !well_formed {
            return false;
        }
        let digest = URL_SAFE_NO_PAD.encode(crate::crypto::sha256(verifier.as_bytes()));
        bool::from(subtle::ConstantTimeEq::ct_eq(
            digest.as_bytes(),
            self.0.as_bytes(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_https_or_loopback_http_without_fragments_or_wildcards() {
        assert!(RedirectUri::parse("https://grafana.example.org/login/generic_oauth").is_ok());
        assert!(RedirectUri::parse("http://127.0.0.1:8081/cb").is_ok());
        assert!(RedirectUri::parse("http://app.localhost/cb").is_ok());
        assert!(matches!(
            RedirectUri::parse("http://grafana.example.org/cb"),
            Err(RedirectUriError::NotHttps(_))
        ));
        assert!(matches!(
            RedirectUri::parse("https://a.example.org/cb#x"),
            Err(RedirectUriError::Fragment(_))
        ));
        assert!(matches!(
            RedirectUri::parse("https://*.example.org/cb"),
            Err(RedirectUriError::Wildcard(_))
        ));
        assert!(RedirectUri::parse("javascript:alert(1)").is_err());
        assert!(RedirectUri::parse("https://user:pw@a.example.org/").is_err());
        assert!(RedirectUri::parse(" https://a.example.org/cb").is_err());
    }

    #[test]
    fn the_response_is_added_to_the_redirect_uris_own_query() {
        let uri = RedirectUri::parse("https://a.example.org/cb?tenant=1").unwrap();
        assert_eq!(
            uri.with_query(&[("code", "c d"), ("state", "s")]),
            "https://a.example.org/cb?tenant=1&code=c+d&state=s"
        );
    }

    #[test]
    fn scopes_keep_only_what_latchkey_knows() {
        let scopes = Scopes::parse("openid profile weird email");
        assert_eq!(scopes.as_string(), "openid email profile");
        assert!(!Scopes::parse("profile").openid);
    }

    #[test]
    fn pkce_s256_as_rfc_7636_appendix_b() {
        let challenge =
            CodeChallenge::parse("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM").unwrap();
        assert!(challenge.is_met_by("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!challenge.is_met_by("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj"));
        assert!(!challenge.is_met_by("short"));
        assert!(CodeChallenge::parse("plain-verifier").is_none());
    }

    #[test]
    fn client_ids_are_url_safe() {
        let id = ClientId::generate();
        assert_eq!(ClientId::parse(id.as_str()), Some(id));
        assert!(ClientId::parse("has space in it oh no").is_none());
        assert!(ClientId::parse("short").is_none());
    }
}
