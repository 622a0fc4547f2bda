//! Where a protected app lives: its origin (`https://wiki.example.org`), and URLs on it.

use std::fmt;

use url::Url;

/// `scheme://host[:port]` of an http or https URL, as the `url` crate serialises it (host
/// lower-cased and in punycode, the default port left out), so two spellings of one origin
/// compare equal byte for byte.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AppOrigin(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppUrlError {
    #[error("the address is too long")]
    TooLong,
    #[error("the address contains spaces, backslashes or control characters")]
    BadCharacters,
    #[error("not an absolute URL (write https://wiki.example.org)")]
    NotAUrl,
    #[error("the URL must start with http:// or https://")]
    Scheme,
    #[error("the URL has no host name")]
    NoHost,
    #[error("the URL must not carry a user name or password")]
    UserInfo,
    #[error("an app is registered by its origin alone: no query or fragment")]
    QueryOrFragment,
    #[error("the host is not in canonical form (percent-escapes, non-ASCII, a trailing dot, or a spelling the URL parser would change)")]
    NonCanonicalHost,
}

const MAX_URL_LEN: usize = 2048;

/// An absolute http(s) URL, parsed once: no user info, no backslash, no control character or
/// whitespace anywhere (browsers rewrite those in ways that can move the host).
fn parse_strict(text: &str) -> Result<Url, AppUrlError> {
    if text.len() > MAX_URL_LEN {
        return Err(AppUrlError::TooLong);
    }
    if text
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return Err(AppUrlError::BadCharacters);
    }
    let url = Url::parse(text).map_err(|_| AppUrlError::NotAUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(AppUrlError::Scheme);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(AppUrlError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(AppUrlError::UserInfo);
    }
    Ok(url)
}

impl AppOrigin {
    /// The origin an app is registered by: `https://wiki.example.org` (a trailing `/` or a
    /// path is accepted and dropped; a query, fragment or user info is refused).
    pub fn parse(text: &str) -> Result<Self, AppUrlError> {
        let url = parse_strict(text.trim())?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(AppUrlError::QueryOrFragment);
        }
        Ok(Self::of(&url))
    }

    fn of(url: &Url) -> Self {
        Self(url.origin().ascii_serialization())
    }

    /// An origin read back from the `apps` table, which only ever holds parsed ones.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host alone (`wiki.example.org`, `[::1]`), without scheme or port.
    pub fn host(&self) -> &str {
        let rest = self
            .0
            .split_once("://")
            .map_or(self.0.as_str(), |(_, rest)| rest);
        match rest.strip_prefix('[') {
            Some(v6) => v6.find(']').map_or(rest, |end| &rest[..end + 2]),
            None => rest.split(':').next().unwrap_or(rest),
        }
    }
}

impl fmt::Display for AppOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AppOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppOrigin({})", self.0)
    }
}

/// A whole URL on some app (a page the browser asked for), with its origin.
#[derive(Clone, PartialEq, Eq)]
pub struct AppUrl {
    url: Url,
    origin: AppOrigin,
}

impl AppUrl {
    /// Strict: what may be redirected to after sign-in (`rd`). Whether the origin is a
    /// registered app's is for the caller to ask the `apps` table.
    pub fn parse(text: &str) -> Result<Self, AppUrlError> {
        let url = parse_strict(text)?;
        let origin = AppOrigin::of(&url);
        Ok(Self { url, origin })
    }

    /// The URL a proxy says the browser asked for (`X-Original-URL`), refused unless its host
    /// is written as the proxy itself would have matched it: the proxy picked the app's
    /// server block by the raw `Host`, and a host that only an IDNA mapping or a
    /// percent-decoding turns into another app's must not be judged as that app.
    pub fn parse_reported(text: &str) -> Result<Self, AppUrlError> {
        let authority = text
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(rest))
            .ok_or(AppUrlError::NotAUrl)?;
        let url = Self::parse(text)?;
        if !is_canonical_authority(authority, &url.url) {
            return Err(AppUrlError::NonCanonicalHost);
        }
        Ok(url)
    }

    /// The same from the `X-Forwarded-Proto` + `X-Forwarded-Host` + `X-Forwarded-Uri` trio.
    pub fn from_forwarded(proto: &str, host: &str, uri: &str) -> Result<Self, AppUrlError> {
        let uri = if uri.is_empty() { "/" } else { uri };
        if !uri.starts_with('/') {
            return Err(AppUrlError::NotAUrl);
        }
        Self::parse_reported(&format!("{proto}://{host}{uri}"))
    }

    pub fn origin(&self) -> &AppOrigin {
        &self.origin
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The path and query (`/page?x=1`), without the fragment.
    pub fn path_and_query(&self) -> String {
        match self.url.query() {
            Some(query) => format!("{}?{query}", self.url.path()),
            None => self.url.path().to_string(),
        }
    }
}

/// Whether `authority` (`host[:port]` as sent) is the host the parsed URL ended up with, up
/// to ASCII case: plain ASCII letters, digits, `-` and `.` (or an IP literal the parser leaves
/// as written), no trailing dot, no escapes, nothing IDNA maps or drops.
fn is_canonical_authority(authority: &str, url: &Url) -> bool {
    let Some(parsed_host) = url.host_str() else {
        return false;
    };
    let host = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((inner, _)) => &authority[..inner.len() + 2],
            None => return false,
        },
        None => authority.split(':').next().unwrap_or(authority),
    };
    let plain = host.bytes().all(|b| {
        b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'[' || b == b']' || b == b':'
    });
    plain && !host.ends_with('.') && host.eq_ignore_ascii_case(parsed_host)
}

impl fmt::Debug for AppUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppUrl({})", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_names_its_host() {
        let host = |text: &str| AppOrigin::parse(text).unwrap().host().to_string();
        assert_eq!(host("https://wiki.example.org"), "wiki.example.org");
        assert_eq!(host("http://127.0.0.1:8081/"), "127.0.0.1");
        assert_eq!(host("http://[::1]:8081"), "[::1]");
        assert_eq!(host("https://WIKI.example.org:443"), "wiki.example.org");
    }
    use proptest::prelude::*;

    #[test]
    fn origins_are_normalised() {
        for (input, origin) in [
            ("https://wiki.example.org", "https://wiki.example.org"),
            ("https://Wiki.Example.ORG/", "https://wiki.example.org"),
            (
                "https://wiki.example.org:443/start",
                "https://wiki.example.org",
            ),
            ("http://wiki.localhost:8081", "http://wiki.localhost:8081"),
            ("https://bücher.example", "https://xn--bcher-kva.example"),
        ] {
            assert_eq!(AppOrigin::parse(input).unwrap().as_str(), origin, "{input}");
        }
    }

    #[test]
    fn bad_origins_are_refused() {
        for bad in [
            "wiki.example.org",
            "ftp://wiki.example.org",
            "javascript:alert(1)",
            "https://user@wiki.example.org",
            "https://wiki.example.org/?x",
            "https://wiki.example.org/#x",
            "https:\\\\wiki.example.org",
            "//wiki.example.org",
            "https://",
        ] {
            assert!(AppOrigin::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lookalikes_have_other_origins() {
        let wiki = AppOrigin::parse("https://wiki.example.org").unwrap();
        for other in [
            "https://wiki.example.org.evil.test/",
            "https://evil.test/?https://wiki.example.org",
            "https://evil.test/https://wiki.example.org",
            "https://evil.test#https://wiki.example.org",
            "http://wiki.example.org/",
            "https://wiki.example.org:8443/",
            "https://xwiki.example.org/",
        ] {
            let url = AppUrl::parse(other).unwrap();
            assert_ne!(url.origin(), &wiki, "{other}");
        }
        for refused in [
            "https://wiki.example.org@evil.test/",
            "https://wiki.example.org:pw@evil.test/",
            "//wiki.example.org/",
            "/\\wiki.example.org",
            "https://wiki.example.org\\@evil.test/",
            "https:/\\evil.test",
            "javascript://wiki.example.org/%0aalert(1)",
            "data:text/html,x",
            "https://wiki.example.org/\tx",
        ] {
            assert!(AppUrl::parse(refused).is_err(), "{refused:?}");
        }
        let fine = AppUrl::parse("https://wiki.example.org/page?q=1#top").unwrap();
        assert_eq!(fine.origin(), &wiki);
    }

    #[test]
    fn the_forwarded_trio_builds_a_url() {
        let url = AppUrl::from_forwarded("https", "wiki.example.org", "/a?b=c").unwrap();
        assert_eq!(url.as_str(), "https://wiki.example.org/a?b=c");
        assert!(AppUrl::from_forwarded("https", "wiki.example.org", "@evil.test/").is_err());
        assert!(AppUrl::from_forwarded("https", "evil.test@wiki.example.org", "/").is_err());
    }

    #[test]
    fn reported_hosts_must_be_canonical() {
        for fine in [
            "https://wiki.example.org/a",
            "https://WIKI.Example.org/a",
            "http://wiki.lk.localhost:8081/",
            "http://127.0.0.1:8081/x",
            "http://[::1]:8081/x",
            "https://xn--bcher-kva.example/",
        ] {
            assert!(AppUrl::parse_reported(fine).is_ok(), "{fine}");
        }
        for bad in [
            "https://%6eiki.example.org/",
            "https://nwi\u{ad}ki.example.org/",
            "https://bücher.example/",
            "https://wiki.example.org./",
            "https://ｗiki.example.org/",
            "http://127.1:8081/",
            "http://[0:0::1]:8081/",
            "http://0x7f000001/",
        ] {
            assert_eq!(
                AppUrl::parse_reported(bad),
                Err(AppUrlError::NonCanonicalHost),
                "{bad:?}"
            );
        }
        assert_eq!(
            AppUrl::from_forwarded("https", "%6eiki.example.org", "/"),
            Err(AppUrlError::NonCanonicalHost)
        );
    }

    proptest! {
        #[test]
        fn a_parsed_url_is_on_its_origin(input in ".{0,120}") {
            let text = format!("https://wiki.example.org{input}");
            if let Ok(url) = AppUrl::parse(&text) {
                let reparsed = Url::parse(url.as_str()).unwrap();
                prop_assert_eq!(reparsed.origin().ascii_serialization(), url.origin().as_str());
            }
        }
    }
}
