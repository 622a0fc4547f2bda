//! Outgoing mail: typed templates, the delivery backends, and the queue between them.
//!
//! Handlers never wait for a mail server, nor even render a mail. They [`Mailer::queue`] a
//! [`Letter`] (what to say), which returns at once; the background worker renders it and
//! delivers it with retries, and writes `link_sent` / `link_send_failed` for sign-in mails.
//! So `POST /login` answers in the same time whether or not a mail goes out, and a slow or
//! broken SMTP server cannot hold a request.

mod templates;
mod transport;

use crate::domain::ids::{AuditId, RequestId};
use crate::logging::error_chain;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use lettre::message::{Mailbox, MultiPart};
use lettre::Message;
use tokio::sync::mpsc;

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::{Db, DbError};
use crate::domain::email_address::EmailAddress;
use crate::settings::{EmailBackend, OrgName};

pub use templates::{
    alert_mail, cancelled_mail, chain_broken_mail, new_sign_in_mail, new_sign_in_subject,
    passkey_added_mail, passkey_added_subject, sign_in_mail, sign_in_subject, test_mail, Alarm,
    AlertMail, CancelledMail, ChainBrokenMail, NewSignInMail, PasskeyAddedMail, SignInMail,
    CHAIN_BROKEN_SUBJECT, NEW_SIGN_IN_SUBJECT, PASSKEY_ADDED_SUBJECT, SIGN_IN_SUBJECT,
};
pub use transport::{probe, Transport};

/// Mails waiting for the worker. A burst bigger than this is an attack or an outage, and
/// refusing more keeps memory bounded.
pub const QUEUE_CAPACITY: usize = 1024;
/// Waits before the 2nd, 3rd and 4th attempt: long enough to ride out a mail server restart,
/// short enough that the link (10 minutes by default) is still fresh when it arrives.
pub const DEFAULT_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(15),
];
/// Deliveries in flight at once (and SMTP connections pooled), so one message stuck in its
/// retries does not hold up the others.
const MAX_IN_FLIGHT: usize = 4;

/// A rendered mail, ready to queue.
#[derive(Clone)]
pub struct OutgoingMail {
    pub to: EmailAddress,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Set for sign-in mails, whose delivery is part of the audit trail.
    pub audit: Option<MailAudit>,
}

/// Which sign-in request a mail belongs to, for its `link_sent` / `link_send_failed` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAudit {
    pub request_id: RequestId,
    pub email: String,
}

/// The bodies hold sign-in links and codes, so they never reach a log through `{:?}`.
impl fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMail")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

impl OutgoingMail {
    /// The RFC 5322 message: multipart/alternative, plain text first so that clients which
    /// cannot show HTML (and people who prefer not to) get a readable mail.
    pub fn to_message(&self, from: &Mailbox) -> Result<Message, MailError> {
        let message_id = format!(
            "<{}@{}>",
            hex::encode(crate::crypto::random_bytes::<16>()),
            from.email.domain()
        );
        Ok(Message::builder()
            .from(from.clone())
            .to(Mailbox::new(None, self.to.to_lettre()))
            .subject(&self.subject)
            .message_id(Some(message_id))
            .multipart(MultiPart::alternative_plain_html(
                self.text.clone(),
                self.html.clone(),
            ))?)
    }
}

/// A mail to send, rendered by the worker: rendering takes long enough (about a millisecond)
/// that doing it in `POST /login` would tell a member's answer from a stranger's. No `Debug`:
/// a sign-in letter holds the link and the code.
#[derive(Clone)]
pub enum Letter {
    SignIn(EmailAddress, SignInMail),
    NewSignIn(EmailAddress, NewSignInMail),
    Cancelled(EmailAddress, CancelledMail),
    Alert(EmailAddress, AlertMail),
    PasskeyAdded(EmailAddress, PasskeyAddedMail),
    ChainBroken(EmailAddress, ChainBrokenMail),
    Rendered(OutgoingMail),
}

impl From<OutgoingMail> for Letter {
    fn from(mail: OutgoingMail) -> Self {
        Letter::Rendered(mail)
    }
}

impl Letter {
    pub fn render(self, org: &OrgName) -> Result<OutgoingMail, MailError> {
        match self {
            Letter::SignIn(to, mail) => sign_in_mail(org, &to, &mail),
            Letter::NewSignIn(to, mail) => new_sign_in_mail(org, &to, &mail),
            Letter::Cancelled(to, mail) => cancelled_mail(org, &to, &mail),
            Letter::Alert(to, mail) => alert_mail(org, &to, &mail),
            Letter::PasskeyAdded(to, mail) => passkey_added_mail(org, &to, &mail),
            Letter::ChainBroken(to, mail) => chain_broken_mail(org, &to, &mail),
            Letter::Rendered(mail) => Ok(mail),
        }
    }

    /// The audit a failure to send must leave, known before rendering.
    fn audit(&self) -> Option<MailAudit> {
        match self {
            Letter::SignIn(to, mail) => Some(MailAudit {
                request_id: mail.request_id,
                email: to.as_str().into(),
            }),
            Letter::Rendered(mail) => mail.audit.clone(),
            Letter::NewSignIn(..)
            | Letter::Cancelled(..)
            | Letter::Alert(..)
            | Letter::PasskeyAdded(..)
            | Letter::ChainBroken(..) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the mail templates do not compile: {0}")]
    Templates(String),
    #[error("rendering the mail template {template}")]
    Render {
        template: &'static str,
        #[source]
        source: tera::Error,
    },
    #[error("building the message")]
    Message(#[from] lettre::error::Error),
    /// Never holds the URL: it may carry a password.
    #[error("the email backend is misconfigured: {0}")]
    Config(&'static str),
    #[error("delivering over SMTP")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("writing the .eml file")]
    File(#[source] std::io::Error),
    #[error("writing the mail to the console")]
    Console(#[source] std::io::Error),
    #[error("the blocking write did not complete")]
    Task,
}

impl MailError {
    /// Worth another attempt later: the server or the disk may recover, a bad message won't,
    /// and neither will a certificate that is not trusted.
    pub fn is_retryable(&self) -> bool {
        match self {
            MailError::Smtp(err) => !err.is_permanent() && certificate_error(err).is_none(),
            MailError::File(_) | MailError::Console(_) | MailError::Task => true,
            MailError::Templates(_)
            | MailError::Render { .. }
            | MailError::Message(_)
            | MailError::Config(_) => false,
        }
    }

    /// A few words for the audit's `detail`, for the operator who reads it: the kind of
    /// failure, never a server's text (which may quote the message) nor the URL.
    pub fn audit_detail(&self) -> String {
        match self {
            MailError::Smtp(err) => smtp_detail(err),
            MailError::File(_) => "could not write the .eml file".into(),
            MailError::Console(_) => "could not write to the console".into(),
            MailError::Task => "the delivery task failed".into(),
            MailError::Templates(_) | MailError::Render { .. } => "template error".into(),
            MailError::Message(_) => "the message could not be built".into(),
            MailError::Config(_) => "the email backend is misconfigured".into(),
        }
    }
}

fn smtp_detail(err: &lettre::transport::smtp::Error) -> String {
    use rustls::CertificateError as Cert;
    if let Some(problem) = certificate_error(err) {
        return match problem {
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                "the SMTP server's certificate is not valid for its host name".into()
            }
            Cert::Expired | Cert::ExpiredContext { .. } => {
                "the SMTP server's certificate has expired".into()
            }
            _ => "the SMTP server's certificate is not trusted (is its CA in ca=PATH?)".into(),
        };
    }
    match err.status().map(|code| code.to_string()).as_deref() {
        Some("535") => "the SMTP server rejected the credentials (535)".into(),
        Some("530") => {
            "the SMTP server requires authentication (530; no user:pass in the URL?)".into()
        }
        Some(code) => format!("the SMTP server answered {code}"),
        None if err.is_tls() => "TLS with the SMTP server failed".into(),
        None if err.is_timeout() => "the SMTP server timed out".into(),
        None if err.is_client() => {
            "the SMTP session was refused (STARTTLS or AUTH not offered?)".into()
        }
        None if tls_error(err).is_some() => "TLS with the SMTP server failed".into(),
        None => "could not connect to the SMTP server".into(),
    }
}

/// rustls's verdict, if the TLS handshake is what failed. lettre reports a handshake as a
/// connection error around an `io::Error` around the `rustls::Error`.
fn tls_error(err: &lettre::transport::smtp::Error) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // `io::Error::source` skips the error it wraps, so look inside it.
        if let Some(tls) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        source = cause.source();
    }
    None
}

fn certificate_error(err: &lettre::transport::smtp::Error) -> Option<&rustls::CertificateError> {
    match tls_error(err)? {
        rustls::Error::InvalidCertificate(problem) => Some(problem),
        _ => None,
    }
}

/// The handle handlers hold: cloning it is cheap, and [`Mailer::queue`] never waits.
#[derive(Clone)]
pub struct Mailer {
    sender: mpsc::Sender<Letter>,
    db: Db,
    outcomes: Arc<Outcomes>,
}

/// Mails this process handed to the backend, and mails it gave up on (not queued, not
/// rendered, or refused after every retry), for `/metrics`.
#[derive(Debug, Default)]
struct Outcomes {
    sent: AtomicU64,
    failed: AtomicU64,
    /// Letters handed to the worker, and letters it is done with (sent or given up): a stop
    /// waits until they are equal.
    queued: AtomicU64,
    finished: AtomicU64,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer").finish_non_exhaustive()
    }
}

impl Mailer {
    /// Builds the backend and spawns the worker on the current actix system, so call it
    /// inside one (as `Application::build_on` is).
    pub fn start(
        backend: &EmailBackend,
        from: Mailbox,
        org: OrgName,
        db: Db,
    ) -> anyhow::Result<Self> {
        Self::spawn(backend, from, org, db, DEFAULT_RETRY_DELAYS.to_vec())
    }

    /// [`Mailer::start`] with another back-off schedule (tests use milliseconds); a mail is
    /// tried `delays.len() + 1` times.
    pub fn start_with_retry(
        backend: &EmailBackend,
        from: Mailbox,
        db: Db,
        delays: Vec<Duration>,
    ) -> anyhow::Result<Self> {
        Self::spawn(backend, from, OrgName::default(), db, delays)
    }

    fn spawn(
        backend: &EmailBackend,
        from: Mailbox,
        org: OrgName,
        db: Db,
        delays: Vec<Duration>,
    ) -> anyhow::Result<Self> {
        let transport = Transport::from_backend(backend).context("LATCHKEY_EMAIL")?;
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let outcomes = Arc::new(Outcomes::default());
        let worker = Worker {
            transport,
            from,
            org,
            db: db.clone(),
            delays,
            outcomes: outcomes.clone(),
        };
        actix_web::rt::spawn(worker.run(receiver));
        Ok(Self {
            sender,
            db,
            outcomes,
        })
    }

    /// Mails accepted by the backend since start-up.
    pub fn sent(&self) -> u64 {
        self.outcomes.sent.load(Ordering::Relaxed)
    }

    /// Mails given up on since start-up.
    pub fn failed(&self) -> u64 {
        self.outcomes.failed.load(Ordering::Relaxed)
    }

    /// Waits, up to `within`, until every queued mail was sent or given up: a stopping server
    /// still sends the sign-in links asked for just before, and the alarms its last
    /// checkpoint raised. True when the queue was empty in time.
    pub async fn settle(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let queued = self.outcomes.queued.load(Ordering::Relaxed);
            if self.outcomes.finished.load(Ordering::Relaxed) >= queued {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Hands the mail to the worker and returns at once; a mail that cannot be queued is
    /// logged and, for a sign-in mail, audited `link_send_failed`, never the caller's problem.
    pub fn queue(&self, letter: impl Into<Letter>) {
        let (reason, mail) = match self.sender.try_send(letter.into()) {
            Ok(()) => {
                self.outcomes.queued.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(mpsc::error::TrySendError::Full(mail)) => ("the mail queue is full", mail),
            Err(mpsc::error::TrySendError::Closed(mail)) => ("the mail worker has stopped", mail),
        };
        log::warn!("mail not sent: {reason}");
        self.outcomes.failed.fetch_add(1, Ordering::Relaxed);
        if let Some(audit) = mail.audit() {
            let db = self.db.clone();
            actix_web::rt::spawn(async move {
                record(&db, AuditEvent::LinkSendFailed, &audit, Some(reason.into())).await;
            });
        }
    }
}

struct Worker {
    transport: Transport,
    from: Mailbox,
    org: OrgName,
    db: Db,
    delays: Vec<Duration>,
    outcomes: Arc<Outcomes>,
}

impl Worker {
    async fn run(self, mut receiver: mpsc::Receiver<Letter>) {
        futures_util::stream::poll_fn(|cx| receiver.poll_recv(cx))
            .for_each_concurrent(MAX_IN_FLIGHT, |letter| self.render_and_deliver(letter))
            .await;
    }

    async fn render_and_deliver(&self, letter: Letter) {
        self.render_and_deliver_one(letter).await;
        self.outcomes.finished.fetch_add(1, Ordering::Relaxed);
    }

    async fn render_and_deliver_one(&self, letter: Letter) {
        let audit = letter.audit();
        match letter.render(&self.org) {
            Ok(mail) => self.deliver(mail).await,
            Err(err) => {
                log::error!("rendering a mail: {}", error_chain(&err));
                self.outcomes.failed.fetch_add(1, Ordering::Relaxed);
                if let Some(audit) = audit {
                    let detail = err.audit_detail();
                    record(&self.db, AuditEvent::LinkSendFailed, &audit, Some(detail)).await;
                }
            }
        }
    }

    async fn deliver(&self, mail: OutgoingMail) {
        let request = mail
            .audit
            .as_ref()
            .map_or_else(String::new, |a| format!(" (request {})", a.request_id));
        let mut delays = self.delays.iter();
        let mut attempts = 1;
        let outcome = loop {
            let err = match self.transport.send(&self.from, &mail).await {
                Ok(()) => break Ok(()),
                Err(err) => err,
            };
            match delays.next() {
                Some(delay) if err.is_retryable() => {
                    log::warn!(
                        "mail{request}: attempt {attempts} failed, retrying in {delay:?}: {}",
                        error_chain(&err)
                    );
                    actix_web::rt::time::sleep(*delay).await;
                    attempts += 1;
                }
                _ => break Err(err),
            }
        };
        let counter = match &outcome {
            Ok(()) => &self.outcomes.sent,
            Err(_) => &self.outcomes.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = &outcome {
            log::error!(
                "mail{request}: not sent after {attempts} attempt(s): {}",
                error_chain(err)
            );
        }
        let Some(audit) = &mail.audit else { return };
        let (event, detail) = match outcome {
            Ok(()) => (AuditEvent::LinkSent, None),
            Err(err) => (
                AuditEvent::LinkSendFailed,
                Some(format!("{} ({attempts} attempt(s))", err.audit_detail())),
            ),
        };
        record(&self.db, event, audit, detail).await;
    }
}

async fn record(db: &Db, event: AuditEvent, audit: &MailAudit, detail: Option<String>) {
    let mut row = NewAuditRow::new(event)
        .email(&audit.email)
        .request(audit.request_id);
    if let Some(detail) = detail {
        row = row.detail(detail);
    }
    let written: Result<AuditId, DbError> = db.query(move |conn| row.insert(conn)).await;
    if let Err(err) = written {
        log::error!(
            "writing the {event} audit row for request {}: {}",
            audit.request_id,
            error_chain(&err)
        );
    }
}
