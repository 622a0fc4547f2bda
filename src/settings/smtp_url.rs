//! `LATCHKEY_EMAIL=smtp://…` read once, at start-up, into what the transport needs. Read by
//! hand rather than with lettre's `from_url`, whose plain `smtp://` means no TLS at all; here it
//! means STARTTLS required. Errors never quote the URL: it may carry a password.

use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

const SUBMISSION_PORT: u16 = 587;
const SUBMISSIONS_PORT: u16 = 465;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer {
    /// A name or an address; an IPv6 address goes without its brackets (lettre resolves
    /// `(host, port)`).
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub credentials: Option<SmtpCredentials>,
    /// `ca=PATH`: roots trusted for the server's certificate beside the default ones.
    pub ca: Option<CaCertificates>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `?tls=none`: plain text, for a sink on the same machine.
    None,
    /// `smtp://`: STARTTLS, and no mail at all if the server does not offer it (a
    /// man-in-the-middle can strip the offer, so falling back would defeat it).
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// The URL's user and password, `%XX`-decoded.
#[derive(Debug, Clone)]
pub struct SmtpCredentials {
    pub user: String,
    pub password: SecretString,
}

/// Equal users are enough for comparing settings; passwords are never compared.
impl PartialEq for SmtpCredentials {
    fn eq(&self, other: &Self) -> bool {
        self.user == other.user
    }
}

impl Eq for SmtpCredentials {}

/// The PEM file named by `ca=`, read once at start-up so a bad file stops Latchkey there.
#[derive(Clone, PartialEq, Eq)]
pub struct CaCertificates {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// The path says which file it is; the bytes would only fill the log.
impl std::fmt::Debug for CaCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaCertificates")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SmtpServer {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text).map_err(|_| {
            "must be `console`, `file:DIR`, or smtp://host:port / smtps://host:port".to_string()
        })?;
        let implicit = match url.scheme() {
            "smtp" => false,
            "smtps" => true,
            _ => return Err("an email URL must start with smtp:// or smtps://".into()),
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => String::new(),
        };
        if host.is_empty() {
            return Err("the SMTP URL has no host".into());
        }
        let mut tls = if implicit {
            TlsMode::Implicit
        } else {
            TlsMode::StartTls
        };
        let mut ca = None;
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("tls", "none") if !implicit => tls = TlsMode::None,
                ("tls", "required") => {}
                ("ca", path) if ca.is_none() => ca = Some(read_ca_file(path)?),
                _ => {
                    return Err(format!(
                        "unknown or repeated SMTP URL option `{key}` (only ?tls=none, for local sinks, and ?ca=PATH)"
                    ))
                }
            }
        }
        if tls == TlsMode::None && ca.is_some() {
            return Err("`ca=` needs TLS, so it cannot go with `tls=none`".into());
        }
        let port = url.port().unwrap_or(if implicit {
            SUBMISSIONS_PORT
        } else {
            SUBMISSION_PORT
        });
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) => return Err("the SMTP URL has a password but no user".into()),
            (user, password) => Some(SmtpCredentials {
                user: percent_decode(user)?,
                password: percent_decode(password.unwrap_or(""))?.into(),
            }),
        };
        Ok(Self {
            host,
            port,
            tls,
            credentials,
            ca,
        })
    }

    /// The server as an operator reads it, without the user or the password: the URL's
    /// scheme, host, port and options, and whether credentials are configured.
    pub fn describe(&self) -> String {
        let scheme = match self.tls {
            TlsMode::Implicit => "smtps",
            TlsMode::StartTls | TlsMode::None => "smtp",
        };
        let host = self.describe_host();
        let mut options = Vec::new();
        if self.tls == TlsMode::None {
            options.push("tls=none".to_string());
        }
        if let Some(ca) = &self.ca {
            options.push(format!("ca={}", ca.path.display()));
        }
        let query = if options.is_empty() {
            String::new()
        } else {
            format!("?{}", options.join("&"))
        };
        let tls = match self.tls {
            TlsMode::None => "no TLS",
            TlsMode::StartTls => "STARTTLS",
            TlsMode::Implicit => "TLS",
        };
        let credentials = if self.credentials.is_some() {
            "credentials set"
        } else {
            "no credentials"
        };
        format!(
            "{scheme}://{host}:{}{query} ({tls}, {credentials})",
            self.port
        )
    }

    /// The host as written in a URL (an IPv6 address in brackets).
    pub fn describe_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// Whether the host is this machine (the only place plain-text SMTP is allowed).
    pub fn is_loopback(&self) -> bool {
        crate::domain::loopback::is_loopback_host(&self.host)
    }
}

/// `%XX` escapes in the URL's user and password. Not `form_urlencoded`: in a URL's user info
/// a `+` is a plus, not a space.
fn percent_decode(text: &str) -> Result<String, String> {
    let bad = || "the SMTP user or password has a bad %-escape".to_string();
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        if byte != b'%' {
            bytes.push(byte);
            continue;
        }
        let hex = rest.get(..2).ok_or_else(bad)?;
        let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
        bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
        rest = rest.get(2..).unwrap_or_default();
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// Checked here, not at the first mail: a wrong path should stop start-up, not a sign-in.
fn read_ca_file(path: &str) -> Result<CaCertificates, String> {
    if path.is_empty() {
        return Err("`ca=` needs the path of a PEM file".into());
    }
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read the ca= file {path:?} ({e})"))?;
    // lettre skips what is not a certificate, so a file without one would trust nothing
    // new; and rustls reads each certificate only when the TLS settings are built, which is
    // tried here so that a damaged one stops start-up too.
    use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
    let has_certificate = pem
        .windows(CERTIFICATE_LABEL.len())
        .any(|window| window == CERTIFICATE_LABEL);
    let usable = has_certificate
        && Certificate::from_pem(&pem).is_ok_and(|roots| {
            TlsParameters::builder("localhost".into())
                .certificate_store(CertificateStore::None)
                .add_root_certificate(roots)
                .build()
                .is_ok()
        });
    if !usable {
        return Err(format!(
            "the ca= file {path:?} holds no usable PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(CaCertificates {
        path: PathBuf::from(path),
        pem,
    })
}

const CERTIFICATE_LABEL: &[u8] = b"-----BEGIN CERTIFICATE-----";

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    fn params(url: &str) -> Result<SmtpServer, String> {
        SmtpServer::parse(url)
    }

    #[test]
    fn smtp_means_starttls_required_on_587() {
        let p = params("smtp://mail.example.org").unwrap();
        assert_eq!(p.host, "mail.example.org");
        assert_eq!(p.port, 587);
        assert_eq!(p.tls, TlsMode::StartTls);
        assert_eq!(p.credentials, None);
        assert_eq!(params("smtp://mail.example.org:2525").unwrap().port, 2525);
        assert_eq!(
            params("smtp://mail.example.org?tls=required").unwrap().tls,
            TlsMode::StartTls
        );
    }

    #[test]
    fn smtps_means_implicit_tls_on_465() {
        let p = params("smtps://mail.example.org").unwrap();
        assert_eq!((p.port, p.tls), (465, TlsMode::Implicit));
        assert!(params("smtps://mail.example.org?tls=none").is_err());
        // The ca= file is read while parsing, so a missing one stops start-up by name.
        let missing = params("smtps://mail.example.org?ca=/nonexistent/corp-ca.pem").unwrap_err();
        assert!(missing.contains("/nonexistent/corp-ca.pem"), "{missing}");
    }

    #[test]
    fn tls_none_is_plain_text() {
        let p = params("smtp://127.0.0.1:1025?tls=none").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.tls),
            ("127.0.0.1", 1025, TlsMode::None)
        );
        assert!(params("smtp://127.0.0.1?tls=maybe").is_err());
        assert!(params("smtp://127.0.0.1?debug=1").is_err());
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let p = params("smtp://us%40er:p%40ss%3Aw+rd%25@mail.example.org").unwrap();
        let SmtpCredentials { user, password } = p.credentials.unwrap();
        assert_eq!(user, "us@er");
        assert_eq!(password.expose_secret(), "p@ss:w+rd%");
        let SmtpCredentials { user, password } = params("smtps://user@mail.example.org")
            .unwrap()
            .credentials
            .unwrap();
        assert_eq!((user.as_str(), password.expose_secret()), ("user", ""));
        assert!(params("smtp://u:%zz@mail.example.org").is_err());
        assert!(params("smtp://u:%4@mail.example.org").is_err());
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets() {
        assert_eq!(params("smtp://[::1]:25?tls=none").unwrap().host, "::1");
    }

    #[test]
    fn errors_never_quote_the_url() {
        let err = params("smtp://u:hunter2@mail.example.org?x=y").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"));
        let p = params("smtp://u:hunter2@mail.example.org").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn plain_text_is_for_this_machine_only() {
        for local in ["127.0.0.1", "[::1]", "localhost", "mail.localhost"] {
            let url = format!("smtp://{local}:2525?tls=none");
            assert!(params(&url).unwrap().is_loopback(), "{url}");
        }
        for remote in ["10.0.0.5", "mail.example.org", "localhost.example.org"] {
            let url = format!("smtp://{remote}:2525?tls=none");
            assert!(!params(&url).unwrap().is_loopback(), "{url}");
        }
    }
}
