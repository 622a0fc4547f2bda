//! `POST /login`: ask for a sign-in link. A member gets a request and a mail; anyone else (or
//! a member over the mail limit) gets a decoy, and the browser cannot tell which.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use ring::hmac;

use super::locks::{self, Namespace};
use super::{link_with_token, log_lines, to_chrono, SignIn};
use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::DbError;
use crate::domain::app_origin::AppUrl;
use crate::domain::approval_number::ApprovalNumber;
use crate::domain::client_info::ClientInfo;
use crate::domain::code::SignInCode;
use crate::domain::digests::{BindingDigest, CodeDigest, TokenDigest};
use crate::domain::email_address::EmailAddress;
use crate::domain::next_path::NextPath;
use crate::domain::token::SignInToken;
use crate::mail::{Letter, SignInMail};
use crate::models::member::{self, Member};
use crate::models::return_url;
use crate::models::sign_in_request::{self, NewSignInRequest, SignInRequest};
use crate::settings::Settings;

/// What `POST /login` decided. Both answers look the same to the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRequest {
    /// A request was made, and its mail queued: the secrets are in the mail and nowhere else.
    Created,
    /// The address may not sign in, or is over its mail limit: a decoy stands in.
    Decoy,
}

/// A link request, as the browser made it.
#[derive(Debug, Clone)]
pub struct LinkAsk {
    pub email: EmailAddress,
    /// The digest of the fresh binding secret the browser is about to be given.
    pub binding: BindingDigest,
    pub next: NextPath,
    /// `rd`, a URL on an app, kept only when its origin is a registered app's.
    pub return_url: Option<AppUrl>,
    pub client: ClientInfo,
}

/// A request made for a member, with the secrets its mail carries.
struct Issued {
    member: Member,
    request: SignInRequest,
    token: SignInToken,
    code: SignInCode,
    /// The app the sign-in continues to, when it came from one.
    app_name: Option<String>,
}

impl SignIn {
    pub async fn request_link(
        &self,
        ask: LinkAsk,
        now: DateTime<Utc>,
    ) -> Result<LinkRequest, DbError> {
        let token_key = self.token_key.clone();
        let issued = self
            .transaction(move |conn, settings| request(conn, settings, &token_key, &ask, now))
            .await?;
        let Some(issued) = issued else {
            return Ok(LinkRequest::Decoy);
        };
        self.send_sign_in_mail(issued);
        Ok(LinkRequest::Created)
    }

    /// Queues the email; the worker renders and sends it off the request path, so the answer
    /// takes the same time whether or not a mail goes out.
    fn send_sign_in_mail(&self, issued: Issued) {
        let Issued {
            member,
            request,
            token,
            code,
            app_name,
        } = issued;
        let settings = &self.settings;
        let mail = SignInMail {
            link: link_with_token(settings, "/auth/verify", &token),
            cancel_link: link_with_token(settings, "/auth/cancel", &token),
            code: code.as_str().to_string(),
            expires_at: request.expires_at,
            ttl_minutes: settings.link_ttl_minutes(),
            requested_at: request.created_at,
            ip: request.requested_ip,
            user_agent: request.requested_user_agent.clone(),
            request_id: request.id,
            app_name,
        };
        // Mail goes to the stored address, never to what was typed.
        self.mailer.queue(Letter::SignIn(member.email, mail));
    }
}

/// `None` when a decoy stood in.
fn request(
    conn: &mut PgConnection,
    settings: &Settings,
    token_key: &hmac::Key,
    ask: &LinkAsk,
    now: DateTime<Utc>,
) -> QueryResult<Option<Issued>> {
    let LinkAsk {
        email,
        binding,
        next,
        return_url: rd,
        client,
    } = ask;
    let mut member = member::find_by_email(conn, email)?;
    if member.is_none() && may_join_by_domain(settings, email) {
        member = member::admit_from_allowed_domain(conn, email, settings.mailbox_key)?;
    }
    let decoy = NewSignInRequest::decoy(settings, email, binding, next, client, now);
    let Some(member) = member.filter(|m| m.active) else {
        NewAuditRow::new(AuditEvent::LoginDenied)
            .email(email)
            .client(client)
            .detail("address may not sign in")
            .insert(conn)?;
        log_lines::note(AuditEvent::LoginDenied, Some(email.as_str()), None);
        sign_in_request::insert(conn, decoy)?;
        return Ok(None);
    };
    locks::lock(conn, Namespace::Requests, member.id.get())?;
    let window = to_chrono(settings.email_rate.per);
    let recent = sign_in_request::count_since(conn, member.id, now - window)?;
    if recent >= i64::from(settings.email_rate.count) {
        NewAuditRow::new(AuditEvent::LoginThrottled)
            .email(&member.email)
            .client(client)
            .detail(format!(
                "over LATCHKEY_EMAIL_RATE ({} links per {}): no mail sent",
                settings.email_rate.count,
                humantime::format_duration(settings.email_rate.per)
            ))
            .insert(conn)?;
        log_lines::note(
            AuditEvent::LoginThrottled,
            Some(member.email.as_str()),
            None,
        );
        sign_in_request::insert(conn, decoy)?;
        return Ok(None);
    }
    let (request, token, code) = issue_request(
        conn,
        settings,
        token_key,
        &member,
        Some(*binding),
        next,
        client,
        now,
    )?;
    NewAuditRow::new(AuditEvent::LinkRequested)
        .email(&member.email)
        .client(client)
        .request(request.id)
        .insert(conn)?;
    let app_name = match rd {
        Some(rd) => return_url::remember(conn, request.id, rd)?,
        None => None,
    };
    Ok(Some(Issued {
        member,
        request,
        token,
        code,
        app_name,
    }))
}

/// Whether an address that no member has may try to join through `LATCHKEY_ALLOWED_DOMAINS`:
/// its domain is allowed and its local part is plain ASCII. A `%` or `!` route, quotes, an
/// invisible or a look-alike character could reach or pose as a member's mailbox in ways no
/// mailbox key folds, so such an address joins only when an admin lists it. Whether the
/// mailbox is already someone's is decided by `admit_from_allowed_domain`.
fn may_join_by_domain(settings: &Settings, email: &EmailAddress) -> bool {
    settings.allowed_domains.iter().any(|d| d == email.domain()) && email.has_plain_local_part()
}

/// Inserts a request for `member` with a fresh token, code and approval number, of which the
/// database keeps only digests. The caller decides who may ask, and writes the audit row in
/// the same transaction.
#[allow(clippy::too_many_arguments)] // each is a different fact about the request
pub(super) fn issue_request(
    conn: &mut PgConnection,
    settings: &Settings,
    token_key: &hmac::Key,
    member: &Member,
    binding: Option<BindingDigest>,
    next: &NextPath,
    client: &ClientInfo,
    now: DateTime<Utc>,
) -> QueryResult<(SignInRequest, SignInToken, SignInCode)> {
    let (token, token_id) = SignInToken::generate(token_key);
    let code = SignInCode::generate();
    let token_digest = token_id.digest();
    let request = sign_in_request::insert(
        conn,
        NewSignInRequest {
            member_id: Some(member.id),
            requested_email: member.email.clone(),
            code_digest: code.digest(token_key, &token_digest),
            token_digest,
            browser_digest: binding,
            approval_number: ApprovalNumber::generate(),
            next_path: next.clone(),
            requested_ip: client.ip,
            requested_user_agent: client.user_agent.clone(),
            expires_at: now + to_chrono(settings.link_ttl),
        },
    )?;
    Ok((request, token, code))
}

impl NewSignInRequest {
    /// A request that can never complete: random digests that no token or code matches, and
    /// no member. It lives and answers like a real one.
    fn decoy(
        settings: &Settings,
        email: &EmailAddress,
        binding: &BindingDigest,
        next: &NextPath,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            member_id: None,
            requested_email: email.clone(),
            token_digest: TokenDigest::unmatchable(),
            code_digest: CodeDigest::unmatchable(),
            browser_digest: Some(*binding),
            approval_number: ApprovalNumber::generate(),
            next_path: next.clone(),
            requested_ip: client.ip,
            requested_user_agent: client.user_agent.clone(),
            expires_at: now + to_chrono(settings.link_ttl),
        }
    }
}
