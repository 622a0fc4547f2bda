//! Where mail goes: the console (development), a directory of `.eml` files, or SMTP.
//!
//! The console backend prints with `print!`, not through `log`: the log must never hold a
//! sign-in link, and a development mail is meant to be read by the person at the terminal.

use std::io::Write as _;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use url::Url;

use super::{MailError, OutgoingMail, MAX_IN_FLIGHT};
use crate::secret::Secret;
use crate::settings::{CaCertificates, EmailBackend};

/// Per SMTP command; lettre's 60 s default would stall a retry schedule built in seconds.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);
const SUBMISSION_PORT: u16 = 587;
const SUBMISSIONS_PORT: u16 = 465;

pub enum Transport {
    Console,
    File(PathBuf),
    /// Never dropped: lettre's pool spawns a tokio task in its `Drop`, which panics when the
    /// runtime is already shutting down (the worker lives until then). One transport per
    /// process is kept for the life of the process anyway.
    Smtp(ManuallyDrop<AsyncSmtpTransport<Tokio1Executor>>),
}

impl Transport {
    /// Needs a running tokio runtime for SMTP: lettre's pool starts its cleanup task here.
    pub fn from_backend(backend: &EmailBackend) -> Result<Self, MailError> {
        Ok(match backend {
            EmailBackend::Console => Transport::Console,
            EmailBackend::File(dir) => Transport::File(dir.clone()),
            EmailBackend::Smtp { url, ca } => Transport::Smtp(ManuallyDrop::new(smtp_transport(
                smtp_params(url)?,
                ca.as_ref(),
            )?)),
        })
    }

    /// One attempt; retrying is the worker's business.
    pub async fn send(&self, from: &Mailbox, mail: &OutgoingMail) -> Result<(), MailError> {
        match self {
            Transport::Console => {
                let printed = format!(
                    "\n===== Latchkey mail (LATCHKEY_EMAIL=console, for development) =====\n\
                     To: {}\nSubject: {}\n\n{}\n===== end of mail =====\n",
                    mail.to, mail.subject, mail.text
                );
                blocking(move || {
                    let mut out = std::io::stdout().lock();
                    out.write_all(printed.as_bytes())?;
                    out.flush()
                })
                .await?
                .map_err(MailError::Console)
            }
            Transport::File(dir) => {
                let bytes = mail.to_message(from)?.formatted();
                let dir = dir.clone();
                let path = blocking(move || write_eml(&dir, &bytes))
                    .await?
                    .map_err(MailError::File)?;
                log::info!("mail written to {}", path.display());
                Ok(())
            }
            Transport::Smtp(smtp) => {
                smtp.send(mail.to_message(from)?).await?;
                Ok(())
            }
        }
    }
}

/// Disk and terminal writes can block; they run on the blocking pool, never the executor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, MailError> {
    actix_web::web::block(work)
        .await
        .map_err(|_| MailError::Task)
}

/// Writes under a hidden temporary name and renames, so a reader never sees half a message.
/// The name starts with the time in milliseconds, so a listing sorts oldest first, and ends
/// with random bits, so two mails in the same millisecond never collide.
fn write_eml(dir: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = format!(
        "{:013}-{}.eml",
        chrono::Utc::now().timestamp_millis(),
        hex::encode(crate::crypto::random_bytes::<6>())
    );
    let temporary = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let written = crate::secret::write_private_file(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map(|()| path)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    /// `?tls=none`: plain text, for a sink on the same machine.
    None,
    /// `smtp://`: STARTTLS, and no mail at all if the server does not offer it (a
    /// man-in-the-middle can strip the offer, so falling back would defeat it).
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

#[derive(Debug, PartialEq, Eq)]
struct SmtpParams {
    host: String,
    port: u16,
    tls: TlsMode,
    credentials: Option<(String, Secret<String>)>,
}

/// Reads the URL ourselves rather than with lettre's `from_url`, whose plain `smtp://` means
/// no TLS at all; here it means STARTTLS required. Errors never quote the URL.
fn smtp_params(url: &Secret<Url>) -> Result<SmtpParams, MailError> {
    let url = url.expose();
    let implicit = match url.scheme() {
        "smtp" => false,
        "smtps" => true,
        _ => {
            return Err(MailError::Config(
                "the URL must start with smtp:// or smtps://",
            ))
        }
    };
    let host = match url.host() {
        // lettre resolves `(host, port)`, so an IPv6 address goes without its brackets.
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(host) => host.to_string(),
        None => String::new(),
    };
    if host.is_empty() {
        return Err(MailError::Config("the SMTP URL has no host"));
    }
    let mut tls = if implicit {
        TlsMode::Implicit
    } else {
        TlsMode::StartTls
    };
    for (key, value) in url.query_pairs() {
        match (key.as_ref(), value.as_ref()) {
            ("tls", "none") if !implicit => tls = TlsMode::None,
            ("tls", "required") => {}
            // Read and checked by the settings; the roots come in as `CaCertificates`.
            ("ca", _) => {}
            _ => {
                return Err(MailError::Config(
                    "unknown SMTP URL option (only ?tls=none and ?ca=PATH)",
                ))
            }
        }
    }
    let port = url.port().unwrap_or(if implicit {
        SUBMISSIONS_PORT
    } else {
        SUBMISSION_PORT
    });
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        ("", Some(_)) => return Err(MailError::Config("the SMTP URL has a password but no user")),
        (user, password) => Some((
            percent_decode(user)?,
            Secret::new(percent_decode(password.unwrap_or(""))?),
        )),
    };
    Ok(SmtpParams {
        host,
        port,
        tls,
        credentials,
    })
}

fn smtp_transport(
    params: SmtpParams,
    ca: Option<&CaCertificates>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let tls_parameters = || {
        let mut builder = TlsParameters::builder(params.host.clone());
        if let Some(ca) = ca {
            let roots = Certificate::from_pem(&ca.pem)
                .map_err(|_| MailError::Config("the ca= file holds no usable PEM certificate"))?;
            builder = builder.add_root_certificate(roots);
        }
        builder.build().map_err(|_| {
            MailError::Config(
                "cannot set up TLS for the SMTP host (is the ca= file a CA certificate?)",
            )
        })
    };
    let tls = match params.tls {
        TlsMode::None => Tls::None,
        TlsMode::StartTls => Tls::Required(tls_parameters()?),
        TlsMode::Implicit => Tls::Wrapper(tls_parameters()?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&params.host)
        .port(params.port)
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT))
        .pool_config(PoolConfig::new().max_size(MAX_IN_FLIGHT as u32));
    if let Some((user, password)) = params.credentials {
        builder = builder.credentials(Credentials::new(user, password.expose().clone()));
    }
    Ok(builder.build())
}

/// `%XX` escapes in the URL's user and password. Not `form_urlencoded`: in a URL's user info
/// a `+` is a plus, not a space.
fn percent_decode(text: &str) -> Result<String, MailError> {
    let bad = || MailError::Config("the SMTP user or password has a bad %-escape");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(url: &str) -> Result<SmtpParams, MailError> {
        smtp_params(&Secret::new(Url::parse(url).unwrap()))
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
        // The settings read the ca= file; the transport only lets the option through.
        let p = params("smtps://mail.example.org?ca=/etc/ssl/corp-ca.pem").unwrap();
        assert_eq!((p.port, p.tls), (465, TlsMode::Implicit));
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
        let (user, password) = p.credentials.unwrap();
        assert_eq!(user, "us@er");
        assert_eq!(password.expose(), "p@ss:w+rd%");
        let (user, password) = params("smtps://user@mail.example.org")
            .unwrap()
            .credentials
            .unwrap();
        assert_eq!((user.as_str(), password.expose().as_str()), ("user", ""));
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
    fn eml_files_are_written_whole_named_by_time_and_never_collide() {
        let dir = std::env::temp_dir().join(format!(
            "latchkey-eml-{}",
            hex::encode(crate::crypto::random_bytes::<6>())
        ));
        let first = write_eml(&dir, b"Subject: one\r\n\r\nbody\r\n").unwrap();
        let second = write_eml(&dir, b"Subject: two\r\n\r\nbody\r\n").unwrap();
        assert_ne!(first, second);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names.len(),
            2,
            "no temporary file is left behind: {names:?}"
        );
        assert!(names.iter().all(|name| name.ends_with(".eml")));
        let millis = chrono::Utc::now().timestamp_millis().to_string();
        assert!(names
            .iter()
            .all(|name| name[..3] == millis[..3] && name.as_bytes()[13] == b'-'));
        assert_eq!(
            std::fs::read(&first).unwrap(),
            b"Subject: one\r\n\r\nbody\r\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
