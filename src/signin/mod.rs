//! The sign-in flow, free of HTTP: a [`SignIn`] service with one method per step, each in
//! a file of its own. Every step opens its own transaction, writes its own audit rows (in
//! that transaction, with the change they record: no sign-in without its `signed_in` row),
//! queues its mail only after the commit, takes the current time from its caller, and
//! returns one outcome for that step:
//!
//! | step | method | file | outcome |
//! |---|---|---|---|
//! | `POST /login` | [`SignIn::request_link`] | `request_link.rs` | [`LinkRequest`] |
//! | `GET /auth/verify` | [`SignIn::show_link`] | `redeem_link.rs` | [`LinkView`] |
//! | `POST /auth/verify` | [`SignIn::redeem_link`] | `redeem_link.rs` | [`Redemption`] |
//! | `POST /auth/code` | [`SignIn::redeem_code`] | `code.rs` | [`CodeOutcome`] |
//! | `POST /auth/approve` | [`SignIn::approve`] | `approval.rs` | [`ApprovalOutcome`] |
//! | `GET /auth/wait` | [`SignIn::wait`] | `approval.rs` | [`WaitOutcome`] |
//! | `POST /auth/cancel` | [`SignIn::cancel`] | `approval.rs` | [`CancelOutcome`] |
//! | `POST /auth/passkey/start` | [`SignIn::start_passkey`] | `passkey.rs` | [`PasskeySignInStart`] |
//! | `POST /auth/passkey/finish` | [`SignIn::finish_passkey`] | `passkey.rs` | [`PasskeySignIn`] |
//! | `POST /logout` | [`SignIn::sign_out`] | `sign_out.rs` | `()` |
//! | `latchkey link` | [`break_glass`] | `break_glass.rs` | [`BreakGlass`] |
//!
//! Nothing a browser can see tells a member from a stranger: an address that may not sign in
//! gets a decoy request, bound to the asking browser like a real one, whose token and code
//! nobody knows. Its browser waits with a number and counts down code tries like a member's.
//!
//! The break-glass step is a plain function on a connection: the command line has no
//! runtime for [`Db`] and sends no mail.

mod approval;
mod break_glass;
mod code;
mod locks;
mod log_lines;
mod passkey;
mod redeem_link;
mod request_link;
mod sign_out;

use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use diesel::prelude::*;
use ring::hmac;

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::{Db, DbError};
use crate::domain::client_info::ClientInfo;
use crate::domain::digests::{BindingDigest, DeviceDigest};
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::{MemberId, RequestId};
use crate::domain::token::{SignInToken, TokenId};
use crate::mail::{Alarm, AlertMail, Letter, Mailer, NewSignInMail};
use crate::models::member::{self, Member};
use crate::models::member_browser;
use crate::models::sign_in_request::{self, CompletedBy, RequestState, SignInRequest};
use crate::settings::{LinkBinding, Settings};

pub use approval::{ApprovalOutcome, CancelOutcome, WaitOutcome};
pub use break_glass::{break_glass, BreakGlass, BreakGlassLink};
pub use code::CodeOutcome;
pub use locks::{APPROVAL_LOCK_MISMATCHES, CODE_LOCK_FAILURES, LOCK_WINDOW};
pub use log_lines::TARGET as LOG_TARGET;
pub use passkey::{PasskeySignIn, PasskeySignInCeremony, PasskeySignInStart};
pub use redeem_link::{LinkView, Redemption};
pub use request_link::{LinkAsk, LinkRequest};

/// What the steps need, built once at start-up from the parts the server already holds.
/// Cloning it is cheap.
#[derive(Clone)]
pub struct SignIn {
    db: Db,
    settings: Arc<Settings>,
    /// Signs and checks sign-in tokens, and keys the code digests.
    token_key: hmac::Key,
    mailer: Mailer,
}

impl SignIn {
    pub fn new(db: Db, settings: Settings, token_key: hmac::Key, mailer: Mailer) -> Self {
        Self {
            db,
            settings: Arc::new(settings),
            token_key,
            mailer,
        }
    }

    /// A token's shape and signature, before any database work: `None` for anything forged,
    /// cut short or malformed.
    pub fn verify_token(&self, text: Option<&str>) -> Option<TokenId> {
        SignInToken::verify(&self.token_key, text?).ok()
    }

    /// Runs one step's database work on the blocking pool, in one transaction.
    async fn transaction<T, F>(&self, work: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut PgConnection, &Settings) -> QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let settings = Arc::clone(&self.settings);
        self.db
            .query(move |conn| log_lines::around(|| conn.transaction(|conn| work(conn, &settings))))
            .await
    }

    /// Queues a step's warning to each of its recipients.
    fn send_alert(&self, alert: Alert) {
        for recipient in alert.recipients {
            self.mailer
                .queue(Letter::Alert(recipient, alert.mail.clone()));
        }
    }

    /// After a sign-in committed: tells the member about a browser they never used before.
    fn send_new_browser_notice(
        &self,
        signed_in: &SignedIn,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) {
        if !signed_in.new_browser {
            return;
        }
        let mail = NewSignInMail {
            signed_in_at: now,
            ip: client.ip,
            user_agent: client.user_agent.clone(),
        };
        self.mailer
            .queue(Letter::NewSignIn(signed_in.member.email.clone(), mail));
    }
}

/// The browser a step is taken in.
#[derive(Debug, Clone)]
pub struct Asker {
    /// Digests of the binding secrets of the sign-in cookies the browser sent.
    pub bindings: Vec<BindingDigest>,
    /// Digest of the long-lived browser id, for "new sign-in" mails.
    pub device: DeviceDigest,
    pub client: ClientInfo,
}

/// A completed sign-in, ready to become a session.
#[derive(Debug)]
pub struct SignedIn {
    pub member: Member,
    pub request: SignInRequest,
    /// The member has signed in before, but never from this browser (and has been told).
    pub new_browser: bool,
}

/// Why a token, code or approval did not sign anyone in. Each maps to its own page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Invalid,
    Expired,
    Used,
    WrongBrowser,
    Denied,
}

impl Refusal {
    fn audit_event(self) -> AuditEvent {
        match self {
            Refusal::Invalid => AuditEvent::LinkInvalid,
            Refusal::Expired => AuditEvent::LinkExpired,
            Refusal::Used => AuditEvent::LinkReused,
            Refusal::WrongBrowser => AuditEvent::LinkWrongBrowser,
            Refusal::Denied => AuditEvent::LoginDenied,
        }
    }
}

/// A warning mail a step sends after its commit, to the member and every active admin.
#[derive(Debug, Clone)]
struct Alert {
    /// Stored addresses, the member's first, without duplicates.
    recipients: Vec<EmailAddress>,
    mail: AlertMail,
}

/// `<LATCHKEY_PUBLIC_URL><path>?token=…`: the only way links are built (never from the
/// request's Host header).
pub fn link_with_token(settings: &Settings, path: &str, token: &SignInToken) -> String {
    let token_param: String =
        url::form_urlencoded::byte_serialize(token.as_str().as_bytes()).collect();
    settings
        .public_url
        .join(&format!("{path}?token={token_param}"))
}

pub fn to_chrono(duration: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(duration).unwrap_or(ChronoDuration::MAX)
}

/// A request found by its (already verified) token, with its member.
struct FoundRequest {
    request: SignInRequest,
    member: Member,
}

fn find_by_token(conn: &mut PgConnection, token_id: &TokenId) -> QueryResult<Option<FoundRequest>> {
    let Some(request) = sign_in_request::find_by_token(conn, &token_id.digest())? else {
        return Ok(None);
    };
    let Some(member_id) = request.member_id else {
        return Ok(None);
    };
    Ok(member::find(conn, member_id)?.map(|member| FoundRequest { request, member }))
}

fn refusal_for_state(request: &SignInRequest, now: DateTime<Utc>) -> Option<Refusal> {
    match request.state(now) {
        RequestState::Pending => None,
        RequestState::Used | RequestState::Cancelled => Some(Refusal::Used),
        RequestState::Expired => Some(Refusal::Expired),
    }
}

fn audit_refusal(
    conn: &mut PgConnection,
    refusal: Refusal,
    found: Option<&FoundRequest>,
    client: &ClientInfo,
    detail: &str,
) -> QueryResult<()> {
    let mut row = NewAuditRow::new(refusal.audit_event())
        .client(client)
        .detail(detail);
    if let Some(found) = found {
        row = row.email(&found.member.email).request(found.request.id);
    }
    row.insert(conn)?;
    log_lines::note(
        refusal.audit_event(),
        found.map(|found| found.member.email.as_str()),
        found.map(|found| &found.request),
    );
    Ok(())
}

/// The ladder every step that holds a link climbs first: a token that passed its HMAC, a
/// request it names, still open at `now`. Each refusal is audited with what was being tried.
fn open_request(
    conn: &mut PgConnection,
    token_id: Option<&TokenId>,
    client: &ClientInfo,
    attempt: &str,
    now: DateTime<Utc>,
) -> QueryResult<Result<FoundRequest, Refusal>> {
    let Some(token_id) = token_id else {
        audit_refusal(
            conn,
            Refusal::Invalid,
            None,
            client,
            &format!("{attempt}: malformed or forged token"),
        )?;
        return Ok(Err(Refusal::Invalid));
    };
    let Some(found) = find_by_token(conn, token_id)? else {
        audit_refusal(
            conn,
            Refusal::Invalid,
            None,
            client,
            &format!("{attempt}: unknown token"),
        )?;
        return Ok(Err(Refusal::Invalid));
    };
    if let Some(refusal) = refusal_for_state(&found.request, now) {
        audit_refusal(conn, refusal, Some(&found), client, attempt)?;
        return Ok(Err(refusal));
    }
    Ok(Ok(found))
}

/// Whether this browser's binding secret is the one the request was made with (never true
/// for a break-glass request, which no browser asked for).
fn is_asking_browser(request: &SignInRequest, bindings: &[BindingDigest]) -> bool {
    match &request.browser_digest {
        Some(expected) => bindings.iter().any(|digest| digest.ct_eq(expected)),
        None => false,
    }
}

/// Whether this browser may complete the request by link.
fn browser_may_complete(
    settings: &Settings,
    request: &SignInRequest,
    bindings: &[BindingDigest],
) -> bool {
    match (settings.link_binding, &request.browser_digest) {
        (LinkBinding::Any, _) | (_, None) => true,
        (LinkBinding::Browser, Some(_)) => is_asking_browser(request, bindings),
    }
}

/// Consumes the request (atomically: of any number of racing calls, one wins) and writes the
/// `signed_in` row, inside the caller's transaction.
fn complete(
    conn: &mut PgConnection,
    request_id: RequestId,
    how: CompletedBy,
    asker: &Asker,
    now: DateTime<Utc>,
) -> QueryResult<Redemption> {
    let Some(request) = sign_in_request::consume(conn, request_id, how, now)? else {
        return Ok(Redemption::Refused(Refusal::Used));
    };
    let member = match request.member_id {
        Some(id) => member::find(conn, id)?,
        None => None,
    };
    let Some(member) = member.filter(|m| m.active) else {
        // Deactivation cancels pending requests, so this is a race at most: refuse and
        // leave the request consumed.
        return Ok(Redemption::Refused(Refusal::Denied));
    };
    let client = &asker.client;
    let same_device =
        request.requested_ip == client.ip && request.requested_user_agent == client.user_agent;
    NewAuditRow::new(AuditEvent::SignedIn)
        .email(&member.email)
        .client(client)
        .request(request.id)
        .detail(format!(
            "via {}; requested from {} ({}){}",
            how.as_str(),
            request
                .requested_ip
                .map_or("unknown IP".into(), |ip| ip.to_string()),
            request
                .requested_user_agent
                .as_deref()
                .unwrap_or("unknown browser"),
            if same_device {
                ""
            } else {
                "; signed in from a different device"
            }
        ))
        .insert(conn)?;
    log_lines::note_how(
        AuditEvent::SignedIn,
        Some(how.as_str()),
        Some(member.email.as_str()),
        Some(&request),
    );
    let new_browser = member_browser::remember(conn, member.id, &asker.device)?;
    Ok(Redemption::SignedIn(Box::new(SignedIn {
        member,
        request,
        new_browser,
    })))
}

/// The warning for `about`, addressed to the member and every active admin.
fn alert_for(
    conn: &mut PgConnection,
    member_id: MemberId,
    request: &SignInRequest,
    about: Alarm,
) -> QueryResult<Alert> {
    let mut recipients: Vec<EmailAddress> = member::find(conn, member_id)?
        .map(|m| m.email)
        .into_iter()
        .collect();
    for admin in member::active_admin_emails(conn)? {
        if !recipients.contains(&admin) {
            recipients.push(admin);
        }
    }
    Ok(Alert {
        recipients,
        mail: AlertMail {
            about,
            requested_at: request.created_at,
            ip: request.requested_ip,
            user_agent: request.requested_user_agent.clone(),
        },
    })
}
