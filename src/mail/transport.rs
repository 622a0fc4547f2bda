//! Where mail goes: the console (development), a directory of `.eml` files, or SMTP.
//!
//! The console backend prints with `print!`, not through `log`: the log must never hold a
//! sign-in link, and a development mail is meant to be read by the person at the terminal.

use std::io::Write as _;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use secrecy::ExposeSecret as _;

use super::{MailError, OutgoingMail, MAX_IN_FLIGHT};
use crate::settings::smtp_url::{SmtpCredentials, SmtpServer, TlsMode};
use crate::settings::EmailBackend;

/// Per SMTP command; lettre's 60 s default would stall a retry schedule built in seconds.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

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
            EmailBackend::Smtp(server) => {
                Transport::Smtp(ManuallyDrop::new(smtp_transport(server)?))
            }
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
    let written = crate::private_fs::write_private_file(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map(|()| path)
}

fn tls_parameters(server: &SmtpServer) -> Result<TlsParameters, MailError> {
    let mut builder = TlsParameters::builder(server.host.clone());
    if let Some(ca) = &server.ca {
        let roots = Certificate::from_pem(&ca.pem)
            .map_err(|_| MailError::Config("the ca= file holds no usable PEM certificate"))?;
        builder = builder.add_root_certificate(roots);
    }
    builder.build().map_err(|_| {
        MailError::Config("cannot set up TLS for the SMTP host (is the ca= file a CA certificate?)")
    })
}

/// Sends one mail through `backend` on a connection of its own, calling `step` with what
/// happened at each stage (`latchkey mail test`). An error holds lettre's words, which carry
/// the server's reply code and text; never the password.
pub async fn probe(
    backend: &EmailBackend,
    from: &Mailbox,
    mail: &OutgoingMail,
    mut step: impl FnMut(String),
) -> anyhow::Result<()> {
    let server = match backend {
        EmailBackend::Console | EmailBackend::File(_) => {
            let what = match backend {
                EmailBackend::File(dir) => {
                    format!("written as a .eml file under {}", dir.display())
                }
                _ => "printed on standard output (LATCHKEY_EMAIL=console)".to_string(),
            };
            Transport::from_backend(backend)?.send(from, mail).await?;
            step(format!("accepted: {what}"));
            return Ok(());
        }
        EmailBackend::Smtp(server) => server,
    };
    let address = format!("{}:{}", server.describe_host(), server.port);
    let hello = ClientId::default();
    let implicit = match server.tls {
        TlsMode::Implicit => Some(tls_parameters(server)?),
        TlsMode::StartTls | TlsMode::None => None,
    };
    let mut connection = AsyncSmtpConnection::connect_tokio1(
        (server.host.as_str(), server.port),
        Some(SMTP_TIMEOUT),
        &hello,
        implicit,
        None,
    )
    .await
    .map_err(|e| anyhow::anyhow!("connecting to {address}: {e}"))?;
    step(format!("connected to {address}"));
    match server.tls {
        TlsMode::Implicit => step("TLS: implicit TLS (smtps), server certificate verified".into()),
        TlsMode::StartTls => {
            if !connection.can_starttls() {
                connection.abort().await;
                anyhow::bail!("TLS: {address} does not offer STARTTLS, which smtp:// requires");
            }
            connection
                .starttls(tls_parameters(server)?, &hello)
                .await
                .map_err(|e| anyhow::anyhow!("TLS: STARTTLS failed: {e}"))?;
            step("TLS: STARTTLS, server certificate verified".into());
        }
        TlsMode::None => step("TLS: none (?tls=none, loopback only)".into()),
    }
    if let Some(SmtpCredentials { user, password }) = &server.credentials {
        let credentials = Credentials::new(user.clone(), password.expose_secret().to_string());
        if let Err(e) = connection.auth(DEFAULT_MECHANISMS, &credentials).await {
            connection.abort().await;
            anyhow::bail!("authenticating as {user}: {e}");
        }
        step(format!("authenticated as {user}"));
    }
    let message = mail.to_message(from)?;
    let response = match connection
        .send(message.envelope(), &message.formatted())
        .await
    {
        Ok(response) => response,
        Err(e) => {
            connection.abort().await;
            anyhow::bail!("sending: {e}");
        }
    };
    let words: Vec<&str> = response.message().collect();
    step(format!("accepted: {} {}", response.code(), words.join(" ")));
    let _ = connection.quit().await;
    Ok(())
}

fn smtp_transport(server: &SmtpServer) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let tls_parameters = || tls_parameters(server);
    let tls = match server.tls {
        TlsMode::None => Tls::None,
        TlsMode::StartTls => Tls::Required(tls_parameters()?),
        TlsMode::Implicit => Tls::Wrapper(tls_parameters()?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&server.host)
        .port(server.port)
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT))
        .pool_config(PoolConfig::new().max_size(MAX_IN_FLIGHT as u32));
    if let Some(SmtpCredentials { user, password }) = &server.credentials {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_string(),
        ));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

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
