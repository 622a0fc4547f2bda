//! The sign-in flow, free of HTTP. One public function per step, each running its own
//! transaction, writing its own audit rows (in the same transaction as the change they
//! record: no sign-in without its `signed_in` row), and returning one outcome for that step:
//!
//! | step | function | outcome |
//! |---|---|---|
//! | `POST /login` | [`request_link`] | [`LinkRequest`] |
//! | `GET /auth/verify` | [`show_link`] | [`LinkView`] |
//! | `POST /auth/verify` | [`redeem_link`] | [`Redemption`] |
//! | `POST /auth/code` | [`redeem_code`] | [`CodeOutcome`] |
//! | `POST /auth/approve` | [`approve`] | [`ApprovalOutcome`] |
//! | `GET /auth/wait` | [`poll_wait`] | [`WaitOutcome`] |
//! | `POST /auth/cancel` | [`cancel`] | [`CancelOutcome`] |
//! | `POST /auth/passkey/start` | [`start_passkey_sign_in`] | [`PasskeySignInStart`] |
//! | `POST /auth/passkey/finish` | [`sign_in_with_passkey`] | [`PasskeySignIn`] |
//! | `latchkey link` | [`break_glass`] | [`BreakGlass`] |
//!
//! Nothing a browser can see tells a member from a stranger: an address that may not sign in
//! gets a decoy request, bound to the asking browser like a real one, whose token and code
//! nobody knows. Its browser waits with a number and counts down code tries like a member's.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use diesel::prelude::*;
use ring::hmac;
use subtle::ConstantTimeEq as _;

use crate::audit::rows::{AuditEvent, ClientInfo, NewAuditRow};
use crate::domain::approval_number::ApprovalNumber;
use crate::domain::break_glass_reason::BreakGlassReason;
use crate::domain::client_ip::ClientIp;
use crate::domain::code::SignInCode;
use crate::domain::digests::{BindingDigest, CodeDigest, DeviceDigest, TokenDigest};
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::{MemberId, RequestId};
use crate::domain::next_path::NextPath;
use crate::domain::token::{SignInToken, TokenId};
use crate::mail::AlertMail;
use crate::models::member::{self, Member};
use crate::models::sign_in_request::{
    self, CompletedBy, LockScope, NewSignInRequest, RequestState, SignInRequest, MAX_CODE_FAILURES,
};
use crate::schema::member_browsers;
use crate::settings::{LinkBinding, Settings};
use secrecy::SecretString;

/// Wrong codes for one member (or decoy address) within [`LOCK_WINDOW`] that lock codes.
pub const CODE_LOCK_FAILURES: i64 = 10;
/// Wrong approval numbers for one member within [`LOCK_WINDOW`] that lock approval.
pub const APPROVAL_LOCK_MISMATCHES: i64 = 3;
pub const LOCK_WINDOW: ChronoDuration = ChronoDuration::hours(24);

/// Advisory lock namespaces: one member's requests, code tries and approvals are decided one
/// at a time, across every Latchkey instance.
const LOCK_REQUESTS: i32 = 7301;
const LOCK_CODES: i32 = 7302;
const LOCK_APPROVALS: i32 = 7303;

/// The browser a step is taken in.
#[derive(Debug, Clone)]
pub struct Asker {
    /// Digests of the binding secrets of the sign-in cookies the browser sent.
    pub bindings: Vec<BindingDigest>,
    /// Digest of the long-lived browser id, for "new sign-in" mails.
    pub device: DeviceDigest,
    pub client: ClientInfo,
}

/// A warning mail a step asks for, to the member and every active admin. The route queues it:
/// the database work runs on a blocking thread, where the mailer's runtime is not.
#[derive(Debug, Clone)]
pub struct Alert {
    /// Stored addresses, the member's first, without duplicates.
    pub recipients: Vec<EmailAddress>,
    pub mail: AlertMail,
}

/// What `POST /login` decided. Both answers look the same to the browser.
#[derive(Debug)]
pub enum LinkRequest {
    /// A link was made; the secrets go into the email and nowhere else.
    Created(Box<IssuedLink>),
    /// The address may not sign in, or is over its mail limit: a decoy stands in.
    Decoy,
}

#[derive(Debug)]
pub struct IssuedLink {
    pub member: Member,
    pub request: SignInRequest,
    pub token: SignInToken,
    pub code: SignInCode,
}

pub fn request_link(
    conn: &mut PgConnection,
    settings: &Settings,
    token_key: &hmac::Key,
    email: &EmailAddress,
    binding: &BindingDigest,
    next: &NextPath,
    client: &ClientInfo,
) -> QueryResult<LinkRequest> {
    let mut member = member::find_by_email(conn, email)?;
    if member.is_none() && settings.allowed_domains.iter().any(|d| d == email.domain()) {
        member = member::admit_from_allowed_domain(conn, email)?;
    }
    conn.transaction(|conn| {
        let decoy = NewSignInRequest::decoy(settings, email, binding, next, client);
        let Some(member) = member.filter(|m| m.active) else {
            NewAuditRow::new(AuditEvent::LoginDenied)
                .email(email)
                .client(client)
                .detail("address may not sign in")
                .insert(conn)?;
            sign_in_request::insert(conn, &decoy)?;
            return Ok(LinkRequest::Decoy);
        };
        advisory_lock(conn, LOCK_REQUESTS, member.id.get())?;
        let window = to_chrono(settings.email_rate.per);
        let recent = sign_in_request::count_since(conn, member.id, Utc::now() - window)?;
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
            sign_in_request::insert(conn, &decoy)?;
            return Ok(LinkRequest::Decoy);
        }
        let IssuedRequest {
            request,
            token,
            code,
        } = issue_request(
            conn,
            settings,
            token_key,
            &member,
            Some(*binding),
            next,
            client,
        )?;
        NewAuditRow::new(AuditEvent::LinkRequested)
            .email(&member.email)
            .client(client)
            .request(request.id)
            .insert(conn)?;
        Ok(LinkRequest::Created(Box::new(IssuedLink {
            member,
            request,
            token,
            code,
        })))
    })
}

/// A new sign-in request: the secrets, of which the database keeps only digests.
struct IssuedRequest {
    pub request: SignInRequest,
    pub token: SignInToken,
    pub code: SignInCode,
}

/// Inserts a request for `member` with a fresh token, code and approval number. The caller
/// decides who may ask, and writes the audit row in the same transaction.
fn issue_request(
    conn: &mut PgConnection,
    settings: &Settings,
    token_key: &hmac::Key,
    member: &Member,
    binding: Option<BindingDigest>,
    next: &NextPath,
    client: &ClientInfo,
) -> QueryResult<IssuedRequest> {
    let (token, token_id) = SignInToken::generate(token_key);
    let code = SignInCode::generate();
    let token_digest = token_id.digest();
    let request = sign_in_request::insert(
        conn,
        &NewSignInRequest {
            member_id: Some(member.id),
            requested_email: member.email.to_string(),
            code_digest: code.digest(token_key, &token_digest),
            token_digest,
            browser_digest: binding,
            approval_number: ApprovalNumber::generate().value(),
            next_path: next.as_str().to_string(),
            requested_ip: client.ip,
            requested_user_agent: client.user_agent.clone(),
            expires_at: Utc::now() + to_chrono(settings.link_ttl),
        },
    )?;
    Ok(IssuedRequest {
        request,
        token,
        code,
    })
}

/// What the command line shows as "asked for from" a break-glass link.
const BREAK_GLASS_AGENT: &str = "latchkey link (command line, break-glass)";

/// What `latchkey link` did.
#[derive(Debug)]
pub enum BreakGlass {
    Issued(Box<BreakGlassLink>),
    NotAMember,
    Inactive,
}

/// A break-glass link. The link is the credential: it is printed once, for the operator, and
/// never logged or stored.
#[derive(Debug)]
pub struct BreakGlassLink {
    pub link: SecretString,
    pub member: Member,
    pub request: SignInRequest,
}

/// `latchkey link`: a sign-in request for an active member that any browser may complete (no
/// browser asked for it, so none is bound), without mail and outside the per-address rate,
/// audited as `link_requested` by `actor` with the reason.
pub fn break_glass(
    conn: &mut PgConnection,
    settings: &Settings,
    token_key: &hmac::Key,
    email: &EmailAddress,
    reason: &BreakGlassReason,
    actor: &str,
) -> QueryResult<BreakGlass> {
    conn.transaction(|conn| {
        // Locked, so a deactivation running now either comes first (and we refuse) or waits
        // and then cancels this request with the member's others.
        let Some(member) = member::find_by_email_for_share(conn, email)? else {
            return Ok(BreakGlass::NotAMember);
        };
        if !member.active {
            return Ok(BreakGlass::Inactive);
        }
        // The code is of no use without an asking browser, but every request carries one.
        let client = ClientInfo::new(None, Some(BREAK_GLASS_AGENT));
        let IssuedRequest { request, token, .. } = issue_request(
            conn,
            settings,
            token_key,
            &member,
            None,
            &NextPath::root(),
            &client,
        )?;
        NewAuditRow::new(AuditEvent::LinkRequested)
            .email(&member.email)
            .actor(actor)
            .request(request.id)
            .detail(format!("break-glass: {reason}"))
            .insert(conn)?;
        Ok(BreakGlass::Issued(Box::new(BreakGlassLink {
            link: SecretString::from(link_with_token(settings, "/auth/verify", &token)),
            member,
            request,
        })))
    })
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
    ) -> Self {
        Self {
            member_id: None,
            requested_email: email.as_str().to_string(),
            token_digest: TokenDigest::unmatchable(),
            code_digest: CodeDigest::unmatchable(),
            browser_digest: Some(*binding),
            approval_number: ApprovalNumber::generate().value(),
            next_path: next.as_str().to_string(),
            requested_ip: client.ip,
            requested_user_agent: client.user_agent.clone(),
            expires_at: Utc::now() + to_chrono(settings.link_ttl),
        }
    }
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

/// A request found by its (already verified) token, with its member.
pub struct FoundRequest {
    pub request: SignInRequest,
    pub member: Member,
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
    row.insert(conn).map(drop)
}

/// The ladder every step that holds a link climbs first: a token that passed its HMAC, a
/// request it names, still open. Each refusal is audited with what was being tried.
fn open_request(
    conn: &mut PgConnection,
    token_id: Option<&TokenId>,
    client: &ClientInfo,
    attempt: &str,
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
    if let Some(refusal) = refusal_for_state(&found.request, Utc::now()) {
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

/// What `GET /auth/verify` shows. It consumes nothing: mail scanners follow links.
#[derive(Debug)]
pub enum LinkView {
    /// "Sign in as x@y?" with a POST form.
    Confirm {
        email: EmailAddress,
    },
    /// Opened elsewhere than in the asking browser: approve that browser by typing its number.
    Approve {
        email: EmailAddress,
        requested_at: DateTime<Utc>,
        requested_ip: Option<ClientIp>,
        /// As the asking device described itself: self-reported, so shown as such.
        requested_user_agent: Option<String>,
    },
    Refused(Refusal),
}

pub fn show_link(
    conn: &mut PgConnection,
    settings: &Settings,
    token_id: &TokenId,
    asker: &Asker,
) -> QueryResult<LinkView> {
    let Some(FoundRequest { request, member }) = find_by_token(conn, token_id)? else {
        return Ok(LinkView::Refused(Refusal::Invalid));
    };
    if let Some(refusal) = refusal_for_state(&request, Utc::now()) {
        return Ok(LinkView::Refused(refusal));
    }
    let asking_browser = is_asking_browser(&request, &asker.bindings);
    if !asking_browser {
        // A mail scanner, or the person on another device: audited once per address, since
        // a scanner (or a flood) may fetch the link hundreds of times.
        // With no address (never over TCP) there is nothing to count by: audit each fetch.
        let first_from_there = match asker.client.ip {
            Some(ip) => sign_in_request::record_prefetch(conn, request.id, ip)?,
            None => true,
        };
        if first_from_there {
            NewAuditRow::new(AuditEvent::LinkPrefetched)
                .email(&member.email)
                .client(&asker.client)
                .request(request.id)
                .detail("link opened without the asking browser's cookie")
                .insert(conn)?;
        }
    }
    let needs_approval = !asking_browser
        && settings.link_binding == LinkBinding::Browser
        && request.browser_digest.is_some();
    Ok(if needs_approval {
        LinkView::Approve {
            email: member.email,
            requested_at: request.created_at,
            requested_ip: request.requested_ip,
            requested_user_agent: request.requested_user_agent,
        }
    } else {
        LinkView::Confirm {
            email: member.email,
        }
    })
}

/// A completed sign-in, ready to become a session.
#[derive(Debug)]
pub struct SignedIn {
    pub member: Member,
    pub request: SignInRequest,
    /// The member has signed in before, but never from this browser.
    pub new_browser: bool,
}

/// What `POST /auth/verify` did.
#[derive(Debug)]
pub enum Redemption {
    SignedIn(Box<SignedIn>),
    Refused(Refusal),
}

pub fn redeem_link(
    conn: &mut PgConnection,
    settings: &Settings,
    token_id: Option<&TokenId>,
    asker: &Asker,
) -> QueryResult<Redemption> {
    let found = match open_request(conn, token_id, &asker.client, "sign-in by link")? {
        Ok(found) => found,
        Err(refusal) => return Ok(Redemption::Refused(refusal)),
    };
    if !browser_may_complete(settings, &found.request, &asker.bindings) {
        audit_refusal(
            conn,
            Refusal::WrongBrowser,
            Some(&found),
            &asker.client,
            "link posted from a browser that did not ask for it; not used up",
        )?;
        return Ok(Redemption::Refused(Refusal::WrongBrowser));
    }
    let redemption = complete(conn, found.request.id, CompletedBy::Link, asker)?;
    if let Redemption::Refused(refusal) = &redemption {
        // Lost a race with another request for the same token.
        audit_refusal(
            conn,
            *refusal,
            Some(&found),
            &asker.client,
            "sign-in by link",
        )?;
    }
    Ok(redemption)
}

/// Consumes the request (atomically: of any number of racing calls, one wins) and writes the
/// `signed_in` row in the same transaction.
fn complete(
    conn: &mut PgConnection,
    request_id: RequestId,
    how: CompletedBy,
    asker: &Asker,
) -> QueryResult<Redemption> {
    conn.transaction(|conn| {
        let Some(request) = sign_in_request::consume(conn, request_id, how)? else {
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
        let new_browser = remember_browser(conn, member.id, &asker.device)?;
        Ok(Redemption::SignedIn(Box::new(SignedIn {
            member,
            request,
            new_browser,
        })))
    })
}

/// Records the browser; true when the member has other browsers but not this one.
fn remember_browser(
    conn: &mut PgConnection,
    member_id: MemberId,
    digest: &DeviceDigest,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(member_browsers::table)
        .values((
            member_browsers::member_id.eq(member_id),
            member_browsers::browser_digest.eq(digest),
        ))
        .on_conflict((member_browsers::member_id, member_browsers::browser_digest))
        .do_update()
        .set(member_browsers::last_seen_at.eq(diesel::dsl::now))
        .returning(diesel::dsl::sql::<diesel::sql_types::Bool>("(xmax = 0)"))
        .get_result::<bool>(conn)?;
    if !inserted {
        return Ok(false);
    }
    let known: i64 = member_browsers::table
        .filter(member_browsers::member_id.eq(member_id))
        .count()
        .get_result(conn)?;
    Ok(known > 1)
}

/// What `POST /auth/code` did. A decoy's browser gets the same answers, try for try.
#[derive(Debug)]
pub enum CodeOutcome {
    SignedIn(Box<SignedIn>),
    Wrong {
        /// The address the request was asked for, to show on the page again.
        email: String,
        tries_left: i16,
    },
    /// The fifth wrong try: the request (its link too) is dead.
    Exhausted,
    /// Too many wrong codes for this member within a day: codes are refused for the rest of
    /// the window, right or wrong. Links still work.
    Locked {
        alert: Option<Alert>,
    },
    /// This browser has no open request.
    NoRequest,
    Refused(Refusal),
}

pub fn redeem_code(
    conn: &mut PgConnection,
    token_key: &hmac::Key,
    code: Option<&SignInCode>,
    asker: &Asker,
) -> QueryResult<CodeOutcome> {
    conn.transaction(|conn| {
        let Some(request) = sign_in_request::latest_pending_for_browser(conn, &asker.bindings)?
        else {
            return Ok(CodeOutcome::NoRequest);
        };
        let scope = LockScope::of(&request);
        advisory_lock(conn, LOCK_CODES, lock_key(&scope))?;
        let since = Utc::now() - LOCK_WINDOW;
        let failures = sign_in_request::code_failures_since(conn, &scope, since)?;
        if failures >= CODE_LOCK_FAILURES {
            NewAuditRow::new(AuditEvent::CodeLocked)
                .email(&request.requested_email)
                .client(&asker.client)
                .request(request.id)
                .detail(format!(
                    "code refused: {CODE_LOCK_FAILURES} wrong codes within 24 h"
                ))
                .insert(conn)?;
            return Ok(CodeOutcome::Locked { alert: None });
        }
        let matches = code.is_some_and(|code| {
            let digest = code.digest(token_key, &request.token_digest);
            digest.ct_eq(&request.code_digest)
        });
        if matches {
            return Ok(match complete(conn, request.id, CompletedBy::Code, asker)? {
                Redemption::SignedIn(signed_in) => CodeOutcome::SignedIn(signed_in),
                Redemption::Refused(refusal) => CodeOutcome::Refused(refusal),
            });
        }
        let Some(tries) = sign_in_request::record_code_failure(conn, request.id)? else {
            return Ok(CodeOutcome::NoRequest);
        };
        let decoy = if request.member_id.is_none() {
            " (decoy request: the address may not sign in)"
        } else {
            ""
        };
        NewAuditRow::new(AuditEvent::CodeFailed)
            .email(&request.requested_email)
            .client(&asker.client)
            .request(request.id)
            .detail(format!(
                "wrong code, try {tries} of {MAX_CODE_FAILURES}{decoy}"
            ))
            .insert(conn)?;
        if failures + 1 >= CODE_LOCK_FAILURES {
            NewAuditRow::new(AuditEvent::CodeLocked)
                .email(&request.requested_email)
                .client(&asker.client)
                .request(request.id)
                .detail(format!(
                    "{CODE_LOCK_FAILURES} wrong codes within 24 h: codes refused for the rest of the 24 h{decoy}"
                ))
                .insert(conn)?;
            let alert = match request.member_id {
                Some(member_id) => Some(alert_for(
                    conn,
                    member_id,
                    &request,
                    "Sign-in codes locked",
                    vec![format!(
                        "Someone typed {CODE_LOCK_FAILURES} wrong sign-in codes for {} within 24 hours, so codes are refused for this account for the rest of that time. Sign-in links still work.",
                        request.requested_email
                    )],
                )?),
                None => None,
            };
            return Ok(CodeOutcome::Locked { alert });
        }
        Ok(if tries >= MAX_CODE_FAILURES {
            CodeOutcome::Exhausted
        } else {
            CodeOutcome::Wrong {
                email: request.requested_email.clone(),
                tries_left: MAX_CODE_FAILURES - tries,
            }
        })
    })
}

/// What `POST /auth/approve` did.
#[derive(Debug)]
pub enum ApprovalOutcome {
    /// The asking browser signs in through `/auth/wait`; this one stays signed out.
    Approved,
    /// A wrong number: the request is cancelled, and the member and the admins are told.
    Mismatch {
        alert: Alert,
        locked: bool,
    },
    /// Too many wrong numbers for this member within a day.
    Locked,
    Refused(Refusal),
}

pub fn approve(
    conn: &mut PgConnection,
    token_id: Option<&TokenId>,
    number: Option<ApprovalNumber>,
    client: &ClientInfo,
) -> QueryResult<ApprovalOutcome> {
    conn.transaction(|conn| {
        let found = match open_request(conn, token_id, client, "approval")? {
            Ok(found) => found,
            Err(refusal) => return Ok(ApprovalOutcome::Refused(refusal)),
        };
        let FoundRequest { request, member } = &found;
        advisory_lock(conn, LOCK_APPROVALS, member.id.get())?;
        let since = Utc::now() - LOCK_WINDOW;
        let mismatches = sign_in_request::approval_mismatches_since(conn, member.id, since)?;
        if mismatches >= APPROVAL_LOCK_MISMATCHES {
            NewAuditRow::new(AuditEvent::ApprovalLocked)
                .email(&member.email)
                .client(client)
                .request(request.id)
                .detail(format!(
                    "approval refused: {APPROVAL_LOCK_MISMATCHES} wrong numbers within 24 h"
                ))
                .insert(conn)?;
            return Ok(ApprovalOutcome::Locked);
        }
        let right = ApprovalNumber::from_stored(request.approval_number);
        if number == Some(right) {
            if !sign_in_request::approve(conn, request.id)? {
                return Ok(ApprovalOutcome::Refused(Refusal::Used));
            }
            return Ok(ApprovalOutcome::Approved);
        }
        sign_in_request::cancel_for_mismatch(conn, request.id)?;
        NewAuditRow::new(AuditEvent::ApprovalMismatch)
            .email(&member.email)
            .client(client)
            .request(request.id)
            .detail("wrong number typed; the request was cancelled")
            .insert(conn)?;
        let locked = mismatches + 1 >= APPROVAL_LOCK_MISMATCHES;
        let mut lines = vec![format!(
            "A sign-in request for {} was approved from another device with the wrong number, so it was cancelled. If you were signing in, ask for a new link; if not, someone else asked for it.",
            member.email
        )];
        if locked {
            NewAuditRow::new(AuditEvent::ApprovalLocked)
                .email(&member.email)
                .client(client)
                .request(request.id)
                .detail(format!(
                    "{APPROVAL_LOCK_MISMATCHES} wrong numbers within 24 h: approval refused for the rest of the 24 h"
                ))
                .insert(conn)?;
            lines.push(format!(
                "That was the {APPROVAL_LOCK_MISMATCHES}rd wrong number within 24 hours: approving from another device is refused for this account for the rest of that time. The link and the code still work in the browser that asked."
            ));
        }
        let alert = alert_for(conn, member.id, request, "Sign-in approval failed", lines)?;
        Ok(ApprovalOutcome::Mismatch { alert, locked })
    })
}

/// What `GET /auth/wait` answers the asking browser.
#[derive(Debug)]
pub enum WaitOutcome {
    /// Show this number; the device holding the link types it.
    Waiting(ApprovalNumber),
    SignedIn(Box<SignedIn>),
    /// No open request for this browser.
    Closed,
}

pub fn poll_wait(conn: &mut PgConnection, asker: &Asker) -> QueryResult<WaitOutcome> {
    let Some(request) = sign_in_request::latest_pending_for_browser(conn, &asker.bindings)? else {
        return Ok(WaitOutcome::Closed);
    };
    if request.approved_at.is_none() {
        return Ok(WaitOutcome::Waiting(ApprovalNumber::from_stored(
            request.approval_number,
        )));
    }
    Ok(
        match complete(conn, request.id, CompletedBy::Approval, asker)? {
            Redemption::SignedIn(signed_in) => WaitOutcome::SignedIn(signed_in),
            Redemption::Refused(_) => WaitOutcome::Closed,
        },
    )
}

/// What `POST /auth/cancel` ("Not you?") did.
#[derive(Debug)]
pub enum CancelOutcome {
    /// Cancelled; the admins are to be told.
    Cancelled(Box<Cancelled>),
    /// Already used, cancelled or expired.
    NotOpen,
    Invalid,
}

#[derive(Debug)]
pub struct Cancelled {
    pub request: SignInRequest,
    pub member: Member,
    /// The active admins' stored addresses.
    pub admins: Vec<EmailAddress>,
}

pub fn cancel(
    conn: &mut PgConnection,
    token_id: &TokenId,
    client: &ClientInfo,
) -> QueryResult<CancelOutcome> {
    conn.transaction(|conn| {
        let Some(FoundRequest { request, member }) = find_by_token(conn, token_id)? else {
            return Ok(CancelOutcome::Invalid);
        };
        if !sign_in_request::cancel(conn, request.id)? {
            return Ok(CancelOutcome::NotOpen);
        }
        NewAuditRow::new(AuditEvent::LinkCancelled)
            .email(&member.email)
            .client(client)
            .request(request.id)
            .detail("cancelled by the recipient (\"Not you?\")")
            .insert(conn)?;
        let admins = member::active_admin_emails(conn)?;
        Ok(CancelOutcome::Cancelled(Box::new(Cancelled {
            request,
            member,
            admins,
        })))
    })
}

fn alert_for(
    conn: &mut PgConnection,
    member_id: MemberId,
    request: &SignInRequest,
    subject: &str,
    lines: Vec<String>,
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
            subject: subject.to_string(),
            lines,
            requested_at: request.created_at,
            ip: request.requested_ip,
            user_agent: request.requested_user_agent.clone(),
        },
    })
}

fn lock_key(scope: &LockScope) -> i64 {
    match scope {
        LockScope::Member(id) => id.get(),
        LockScope::Address(email) => {
            let digest = crate::crypto::sha256(email.as_bytes());
            i64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
        }
    }
}

/// Serialises work on one key (in `namespace`) until the transaction ends.
fn advisory_lock(conn: &mut PgConnection, namespace: i32, key: i64) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock($1, $2::int)")
        .bind::<diesel::sql_types::Integer, _>(namespace)
        .bind::<diesel::sql_types::Integer, _>((key % i64::from(i32::MAX)) as i32)
        .execute(conn)
        .map(drop)
}

/// The state `POST /auth/passkey/start` leaves in the (anonymous) session for the finish.
/// The `next` path is kept as text and parsed again on the way out.
pub type PasskeySignInCeremony =
    crate::passkeys::Ceremony<webauthn_rs::prelude::DiscoverableAuthentication, String>;

/// What `POST /auth/passkey/start` decided: the options for `navigator.credentials.get`
/// (no address asked: the authenticator offers the passkeys it holds for this site).
pub enum PasskeySignInStart {
    Started(
        Box<(
            webauthn_rs::prelude::RequestChallengeResponse,
            PasskeySignInCeremony,
        )>,
    ),
    Failed(String),
}

/// Writes nothing: the ceremony lives in the session until the finish.
pub fn start_passkey_sign_in(
    webauthn: &webauthn_rs::prelude::Webauthn,
    next: NextPath,
) -> PasskeySignInStart {
    match webauthn.start_discoverable_authentication() {
        Ok((options, state)) => PasskeySignInStart::Started(Box::new((
            options,
            crate::passkeys::Ceremony::new(state, next.as_str().to_string()),
        ))),
        Err(err) => PasskeySignInStart::Failed(err.to_string()),
    }
}

/// What `POST /auth/passkey/finish` did.
#[derive(Debug)]
pub enum PasskeySignIn {
    SignedIn(Box<SignedIn>),
    Refused(crate::passkeys::UseRefusal),
}

/// Signs in with a discoverable passkey: the credential names its passkey, the passkey its
/// member; the user handle the authenticator returns must be that member's, the assertion must
/// verify against this session's challenge (used once: the route takes it out of the session
/// before calling this), and the counter must move forward. The sign-in is recorded as a
/// request completed by `passkey` at once, so its `signed_in` row names a request like
/// every other sign-in. Refusals are audited `passkey_failed`.
pub fn sign_in_with_passkey(
    conn: &mut PgConnection,
    webauthn: &webauthn_rs::prelude::Webauthn,
    ceremony: Option<PasskeySignInCeremony>,
    credential: Option<webauthn_rs::prelude::PublicKeyCredential>,
    asker: &Asker,
) -> QueryResult<PasskeySignIn> {
    use crate::models::passkey;
    use crate::passkeys::{verify_use, UseRefusal};
    use webauthn_rs::prelude::DiscoverableKey;

    let refuse = |conn: &mut PgConnection, refusal: UseRefusal, email: Option<&str>| {
        let mut row = NewAuditRow::new(AuditEvent::PasskeyFailed)
            .client(&asker.client)
            .detail(format!("sign-in with a passkey: {}", refusal.reason()));
        if let Some(email) = email {
            row = row.email(email);
        }
        row.insert(conn).map(|_| PasskeySignIn::Refused(refusal))
    };
    let Some(ceremony) = ceremony.filter(|c| !c.is_expired(Utc::now().timestamp())) else {
        return refuse(conn, UseRefusal::NoCeremony, None);
    };
    let Some(credential) = credential else {
        return refuse(conn, UseRefusal::Malformed, None);
    };
    let Ok((user_handle, credential_id)) =
        webauthn.identify_discoverable_authentication(&credential)
    else {
        return refuse(conn, UseRefusal::Malformed, None);
    };
    let Some(row) = passkey::find_by_credential(conn, credential_id)? else {
        return refuse(conn, UseRefusal::UnknownPasskey, None);
    };
    let Some(member) = member::find(conn, row.member_id)? else {
        return refuse(conn, UseRefusal::UnknownPasskey, None);
    };
    if !bool::from(user_handle.as_bytes().ct_eq(&row.user_handle)) {
        return refuse(conn, UseRefusal::WrongMember, Some(member.email.as_str()));
    }
    if !member.active {
        return refuse(conn, UseRefusal::Deactivated, Some(member.email.as_str()));
    }
    let Some(stored) = crate::passkeys::stored_passkey(&row) else {
        return refuse(
            conn,
            UseRefusal::UnknownPasskey,
            Some(member.email.as_str()),
        );
    };
    let key = DiscoverableKey::from(&stored);
    let Ok(result) = webauthn.finish_discoverable_authentication(
        &credential,
        ceremony.state,
        std::slice::from_ref(&key),
    ) else {
        return refuse(conn, UseRefusal::Invalid, Some(member.email.as_str()));
    };
    conn.transaction(|conn| {
        if let Err(refusal) = verify_use(conn, &row, &result)? {
            return refuse(conn, refusal, Some(member.email.as_str()));
        }
        let request = sign_in_request::insert(
            conn,
            &NewSignInRequest {
                member_id: Some(member.id),
                requested_email: member.email.to_string(),
                // Nobody holds a token or code for this request: it is completed at once.
                token_digest: TokenDigest::unmatchable(),
                code_digest: CodeDigest::unmatchable(),
                browser_digest: None,
                approval_number: ApprovalNumber::generate().value(),
                next_path: NextPath::parse(Some(&ceremony.extra)).as_str().to_string(),
                requested_ip: asker.client.ip,
                requested_user_agent: asker.client.user_agent.clone(),
                expires_at: Utc::now() + ChronoDuration::minutes(1),
            },
        )?;
        Ok(
            match complete(conn, request.id, CompletedBy::Passkey, asker)? {
                Redemption::SignedIn(signed_in) => PasskeySignIn::SignedIn(signed_in),
                // Deactivated between the check above and now.
                Redemption::Refused(_) => {
                    return refuse(conn, UseRefusal::Deactivated, Some(member.email.as_str()))
                }
            },
        )
    })
}
