//! Which app a check is about. The proxy names it: the configuration `latchkey apps
//! proxy-config` prints sets `X-Latchkey-App` in the app's own server block, so a client
//! cannot pick another app's policy by what it sends. The original URL must then be on that
//! app's origin. Without the header (an older configuration), the app is the one registered
//! for the original URL's origin. Either way the URL's forms must agree and its host must be
//! written canonically, or the check answers 400 and never 200.

use crate::domain::app_origin::{AppUrl, AppUrlError};
use crate::models::app::AppRule;

/// What the proxy reported about the request it asks for, header by header, as sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyReport<'a> {
    /// `X-Latchkey-App`.
    pub app: Option<&'a str>,
    /// `X-Original-URL` (nginx).
    pub original_url: Option<&'a str>,
    /// `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Forwarded-Uri` (Caddy, Traefik).
    pub forwarded: Option<Forwarded<'a>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    pub proto: &'a str,
    pub host: &'a str,
    /// `/` when the proxy sent none.
    pub uri: &'a str,
}

/// The app a check judges, and the page asked for on it.
#[derive(Debug, Clone)]
pub struct Target {
    pub app: AppRule,
    pub url: AppUrl,
}

/// Why a check could not tell which app it is about.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamingError {
    #[error("the proxy must send X-Original-URL, or X-Forwarded-Proto, X-Forwarded-Host and X-Forwarded-Uri")]
    NoUrl,
    #[error("the original URL is not usable: {0}")]
    BadUrl(#[from] AppUrlError),
    #[error("X-Original-URL and the X-Forwarded- headers name different URLs")]
    Disagree,
    #[error("the original URL is not on the origin of the app X-Latchkey-App names")]
    WrongOrigin,
}

/// Nothing registered under that name or origin: refused like any app the member may not open.
#[derive(Debug, Clone)]
pub struct Unknown {
    pub url: AppUrl,
    /// The name `X-Latchkey-App` gave, if any.
    pub named: Option<String>,
}

/// Reads the report once. `Ok(Err(_))`: well formed, but no such app.
pub fn resolve(
    report: &ProxyReport<'_>,
    apps: &[AppRule],
) -> Result<Result<Target, Unknown>, NamingError> {
    let url = original_url(report)?;
    let named = report.app.map(str::trim).filter(|name| !name.is_empty());
    let app = match named {
        Some(name) => apps.iter().find(|app| app.name == name),
        None => apps.iter().find(|app| &app.origin == url.origin()),
    };
    match app {
        Some(app) if &app.origin != url.origin() => Err(NamingError::WrongOrigin),
        Some(app) => Ok(Ok(Target {
            app: app.clone(),
            url,
        })),
        None => Ok(Err(Unknown {
            url,
            named: named.map(str::to_string),
        })),
    }
}

fn original_url(report: &ProxyReport<'_>) -> Result<AppUrl, NamingError> {
    let original = report
        .original_url
        .map(AppUrl::parse_reported)
        .transpose()?;
    let forwarded = report
        .forwarded
        .map(|f| AppUrl::from_forwarded(f.proto, f.host, f.uri))
        .transpose()?;
    match (original, forwarded) {
        (Some(original), Some(forwarded)) if original != forwarded => Err(NamingError::Disagree),
        (Some(url), _) | (None, Some(url)) => Ok(url),
        (None, None) => Err(NamingError::NoUrl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::app_origin::AppOrigin;

    fn apps() -> Vec<AppRule> {
        vec![
            AppRule::for_test(
                "wiki",
                AppOrigin::parse("https://wiki.example.org").unwrap(),
            ),
            AppRule::for_test(
                "admin",
                AppOrigin::parse("https://admin.example.org").unwrap(),
            ),
        ]
    }

    fn named(report: ProxyReport<'_>) -> Result<String, NamingError> {
        resolve(&report, &apps()).map(|target| match target {
            Ok(target) => target.app.name,
            Err(unknown) => format!("unknown {}", unknown.url.origin()),
        })
    }

    const WIKI_FORWARDED: Forwarded<'static> = Forwarded {
        proto: "https",
        host: "wiki.example.org",
        uri: "/page",
    };

    #[test]
    fn the_header_names_the_app_and_the_url_must_be_on_its_origin() {
        let report = ProxyReport {
            app: Some("admin"),
            original_url: Some("https://admin.example.org/x"),
            forwarded: None,
        };
        assert_eq!(named(report).unwrap(), "admin");
        // A client that gets a URL of another app into the check is refused, not judged
        // under that app's policy.
        let report = ProxyReport {
            original_url: Some("https://wiki.example.org/x"),
            ..report
        };
        assert_eq!(named(report), Err(NamingError::WrongOrigin));
    }

    #[test]
    fn disagreeing_forms_are_refused() {
        let report = ProxyReport {
            app: Some("admin"),
            original_url: Some("https://wiki.example.org/page"),
            forwarded: Some(Forwarded {
                host: "admin.example.org",
                ..WIKI_FORWARDED
            }),
        };
        assert_eq!(named(report), Err(NamingError::Disagree));
        let agreeing = ProxyReport {
            app: None,
            original_url: Some("https://wiki.example.org/page"),
            forwarded: Some(WIKI_FORWARDED),
        };
        assert_eq!(named(agreeing).unwrap(), "wiki");
    }

    #[test]
    fn without_the_header_the_origin_names_the_app() {
        let report = ProxyReport {
            forwarded: Some(WIKI_FORWARDED),
            ..ProxyReport::default()
        };
        assert_eq!(named(report).unwrap(), "wiki");
        let report = ProxyReport {
            original_url: Some("https://other.example.org/"),
            ..ProxyReport::default()
        };
        assert_eq!(named(report).unwrap(), "unknown https://other.example.org");
        assert_eq!(named(ProxyReport::default()), Err(NamingError::NoUrl));
    }

    #[test]
    fn escaped_or_mapped_hosts_are_refused() {
        for host in [
            "%77iki.example.org",
            "wi\u{ad}ki.example.org",
            "wiki.example.org.",
        ] {
            let report = ProxyReport {
                forwarded: Some(Forwarded {
                    host,
                    ..WIKI_FORWARDED
                }),
                ..ProxyReport::default()
            };
            assert_eq!(
                named(report),
                Err(NamingError::BadUrl(AppUrlError::NonCanonicalHost)),
                "{host:?}"
            );
        }
    }
}
