//! The sign-in flow, free of HTTP: who may ask for a link, what a link or code or approval
//! does, and the audit row that goes with each step (always in the same transaction as the
//! change it records: no sign-in without its `signed_in` row).

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use diesel::prelude::*;
use ring::hmac;

use crate::crypto::random_below;
use crate::db::DbError;
use crate::domain::code::SignInCode;
use crate::domain::email_address::EmailAddress;
use crate::domain::next_path::NextPath;
use crate::domain::token::{SignInToken, TokenId};
use crate::models::audit::{AuditEvent, ClientInfo, NewAuditRow};
use crate::models::member::{self, Member};
use crate::models::sign_in_request::{
    self, CompletedBy, NewSignInRequest, RequestState, SignInRequest, MAX_CODE_FAILURES,
};
use crate::schema::member_browsers;
use crate::settings::{LinkBinding, Settings};

/// What `POST /login` decided. All three get the same answer; only the audit differs.
// Built once per request and matched at once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum LinkRequest {
    /// A link was made; the secrets go into the email and nowhere else.
    Created {
        member: Member,
        request: SignInRequest,
        token: SignInToken,
        code: SignInCode,
    },
    Denied,
    Throttled,
}

pub fn request_link(
    conn: &mut PgConnection,
    settings: &Settings,
    token_key: &hmac::Key,
    email: &EmailAddress,
    browser_digest: Option<Vec<u8>>,
    next: &NextPath,
    client: &ClientInfo,
) -> Result<LinkRequest, DbError> {
    let mut member = member::find_by_email(conn, email)?;
    if member.is_none() && settings.allowed_domains.iter().any(|d| d == email.domain()) {
        member = member::admit_from_allowed_domain(conn, email)?;
    }
    let outcome = conn.transaction(|conn| {
        let Some(member) = member.filter(|m| m.active) else {
            NewAuditRow::new(AuditEvent::LoginDenied)
                .email(email)
                .client(client)
                .detail("address may not sign in")
                .insert(conn)?;
            return Ok(LinkRequest::Denied);
        };
        // One member's requests are counted one at a time, across every Latchkey instance.
        diesel::sql_query("SELECT pg_advisory_xact_lock(7301, $1::int)")
            .bind::<diesel::sql_types::Integer, _>((member.id % i64::from(i32::MAX)) as i32)
            .execute(conn)?;
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
            return Ok(LinkRequest::Throttled);
        }
        let IssuedRequest {
            request,
            token,
            code,
        } = issue_request(
            conn,
            settings,
            token_key,
            member.id,
            browser_digest,
            next,
            client,
        )?;
        NewAuditRow::new(AuditEvent::LinkRequested)
            .email(&member.email)
            .client(client)
            .request(request.id)
            .insert(conn)?;
        Ok::<_, diesel::result::Error>(LinkRequest::Created {
            member,
            request,
            token,
            code,
        })
    })?;
    Ok(outcome)
}

/// A new sign-in request: the secrets, of which the database keeps only digests.
pub struct IssuedRequest {
    pub request: SignInRequest,
    pub token: SignInToken,
    pub code: SignInCode,
}

/// Inserts a request for `member_id` with a fresh token, code and approval number. The
/// caller decides who may ask, and writes the audit row in the same transaction.
pub fn issue_request(
    conn: &mut PgConnection,
    settings: &Settings,
    token_key: &hmac::Key,
    member_id: i64,
    browser_digest: Option<Vec<u8>>,
    next: &NextPath,
    client: &ClientInfo,
) -> QueryResult<IssuedRequest> {
    let (token, token_id) = SignInToken::generate(token_key);
    let code = SignInCode::generate();
    let token_digest = token_id.digest();
    let request = sign_in_request::insert(
        conn,
        &NewSignInRequest {
            member_id,
            code_digest: code.digest(token_key, &token_digest),
            token_digest,
            browser_digest,
            approval_number: approval_number(),
            next_path: next.as_str().to_string(),
            requested_ip: client.ip.clone(),
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

/// `<LATCHKEY_PUBLIC_URL><path>?token=…`: the only way links are built (never from the
/// request's Host header).
pub fn link_with_token(settings: &Settings, path: &str, token: &SignInToken) -> String {
    let token_param: String =
        url::form_urlencoded::byte_serialize(token.as_str().as_bytes()).collect();
    settings
        .public_url
        .join(&format!("{path}?token={token_param}"))
}

/// A two-digit number for cross-device approval.
fn approval_number() -> i16 {
    // 10..=99, so every choice shows as two digits.
    10 + random_below(90) as i16
}

/// The three numbers the approving device offers: the right one and two decoys, in an
/// order and with decoys derived from the request, so reloading the page reveals nothing.
pub fn approval_choices(key: &hmac::Key, request: &SignInRequest) -> [i16; 3] {
    let tag = hmac::sign(key, format!("approval|{}", request.id).as_bytes());
    let bytes = tag.as_ref();
    let right = request.approval_number;
    let mut decoys = Vec::with_capacity(2);
    for byte in bytes.iter() {
        let candidate = 10 + i16::from(*byte) % 90;
        if candidate != right && !decoys.contains(&candidate) {
            decoys.push(candidate);
            if decoys.len() == 2 {
                break;
            }
        }
    }
    // 32 bytes always yield two distinct decoys in practice; fall back deterministically.
    while decoys.len() < 2 {
        let candidate = 10 + (right - 10 + 30 * (decoys.len() as i16 + 1)) % 90;
        decoys.push(candidate);
    }
    let mut choices = [right, decoys[0], decoys[1]];
    let rotation = usize::from(bytes[31] % 3);
    choices.rotate_left(rotation);
    choices
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
    pub fn audit_event(self) -> AuditEvent {
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

pub fn find_by_token(
    conn: &mut PgConnection,
    token_id: &TokenId,
) -> Result<Option<FoundRequest>, DbError> {
    let Some(request) = sign_in_request::find_by_token(conn, &token_id.digest())? else {
        return Ok(None);
    };
    let Some(member) = member::find(conn, request.member_id)? else {
        return Ok(None);
    };
    Ok(Some(FoundRequest { request, member }))
}

/// The refusal for a request that is not open, if it is not.
pub fn refusal_for_state(request: &SignInRequest, now: DateTime<Utc>) -> Option<Refusal> {
    match request.state(now) {
        RequestState::Pending => None,
        RequestState::Used | RequestState::Cancelled => Some(Refusal::Used),
        RequestState::Expired => Some(Refusal::Expired),
    }
}

/// Whether this browser may complete the request.
pub fn browser_may_complete(
    settings: &Settings,
    request: &SignInRequest,
    binding_digest: Option<&[u8]>,
) -> bool {
    match (settings.link_binding, &request.browser_digest) {
        (LinkBinding::Any, _) | (_, None) => true,
        (LinkBinding::Browser, Some(_)) => is_asking_browser(request, binding_digest),
    }
}

/// Whether this browser's binding secret is the one the request was made with (never true
/// for a break-glass request, which no browser asked for).
pub fn is_asking_browser(request: &SignInRequest, binding_digest: Option<&[u8]>) -> bool {
    match (&request.browser_digest, binding_digest) {
        (Some(expected), Some(digest)) => crate::crypto::constant_time_eq(digest, expected),
        _ => false,
    }
}

pub fn audit_refusal(
    conn: &mut PgConnection,
    refusal: Refusal,
    found: Option<&FoundRequest>,
    client: &ClientInfo,
    detail: &str,
) -> Result<(), DbError> {
    let mut row = NewAuditRow::new(refusal.audit_event())
        .client(client)
        .detail(detail);
    if let Some(found) = found {
        row = row.email(&found.member.email).request(found.request.id);
    }
    row.insert(conn)?;
    Ok(())
}

/// A completed sign-in, ready to become a session.
#[derive(Debug)]
pub struct SignedIn {
    pub member: Member,
    pub request: SignInRequest,
    /// The member has signed in before, but never from this browser.
    pub new_browser: bool,
}

/// Consumes the request (atomically: of any number of racing calls, one wins) and writes the
/// `signed_in` row in the same transaction.
pub fn complete(
    conn: &mut PgConnection,
    request_id: i64,
    how: CompletedBy,
    client: &ClientInfo,
    device_digest: &[u8],
) -> Result<Result<SignedIn, Refusal>, DbError> {
    let outcome = conn.transaction(|conn| {
        let Some(request) = sign_in_request::consume(conn, request_id, how)? else {
            return Ok(Err(Refusal::Used));
        };
        let member = match member::find(conn, request.member_id)? {
            Some(member) if member.active => member,
            // Deactivation cancels pending requests, so this is a race at most: refuse and
            // leave the request consumed.
            _ => return Ok(Err(Refusal::Denied)),
        };
        let same_device =
            request.requested_ip == client.ip && request.requested_user_agent == client.user_agent;
        NewAuditRow::new(AuditEvent::SignedIn)
            .email(&member.email)
            .client(client)
            .request(request.id)
            .detail(format!(
                "via {}; requested from {} ({}){}",
                how.as_str(),
                request.requested_ip.as_deref().unwrap_or("unknown IP"),
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
        let new_browser = remember_browser(conn, member.id, device_digest)?;
        Ok::<_, diesel::result::Error>(Ok(SignedIn {
            member,
            request,
            new_browser,
        }))
    })?;
    Ok(outcome)
}

/// Records the browser; true when the member has other browsers but not this one.
fn remember_browser(conn: &mut PgConnection, member_id: i64, digest: &[u8]) -> QueryResult<bool> {
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

/// Outcome of a typed code.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CodeOutcome {
    SignedIn(SignedIn),
    Wrong {
        tries_left: i16,
    },
    /// The fifth wrong try: the request is dead.
    Exhausted,
    Refused(Refusal),
}

pub fn try_code(
    conn: &mut PgConnection,
    token_key: &hmac::Key,
    request: &SignInRequest,
    code: Option<&SignInCode>,
    client: &ClientInfo,
    device_digest: &[u8],
    member_email: &str,
) -> Result<CodeOutcome, DbError> {
    let matches = code.is_some_and(|code| {
        let digest = code.digest(token_key, &request.token_digest);
        crate::crypto::constant_time_eq(&digest, &request.code_digest)
    });
    if matches {
        return Ok(
            match complete(conn, request.id, CompletedBy::Code, client, device_digest)? {
                Ok(signed_in) => CodeOutcome::SignedIn(signed_in),
                Err(refusal) => CodeOutcome::Refused(refusal),
            },
        );
    }
    let outcome = conn.transaction(|conn| {
        let Some(failures) = sign_in_request::record_code_failure(conn, request.id)? else {
            return Ok(CodeOutcome::Refused(Refusal::Used));
        };
        NewAuditRow::new(AuditEvent::CodeFailed)
            .email(member_email)
            .client(client)
            .request(request.id)
            .detail(format!("wrong code, try {failures} of {MAX_CODE_FAILURES}"))
            .insert(conn)?;
        Ok::<_, diesel::result::Error>(if failures >= MAX_CODE_FAILURES {
            CodeOutcome::Exhausted
        } else {
            CodeOutcome::Wrong {
                tries_left: MAX_CODE_FAILURES - failures,
            }
        })
    })?;
    Ok(outcome)
}

/// Cross-device approval: the right number approves (the asking browser then signs in
/// through `/auth/wait`); a wrong one cancels the request.
#[derive(Debug, PartialEq, Eq)]
pub enum ApprovalOutcome {
    Approved,
    Mismatch,
    Refused(Refusal),
}

pub fn approve(
    conn: &mut PgConnection,
    found: &FoundRequest,
    number: Option<i16>,
    client: &ClientInfo,
) -> Result<ApprovalOutcome, DbError> {
    let outcome = conn.transaction(|conn| {
        if number == Some(found.request.approval_number) {
            if !sign_in_request::approve(conn, found.request.id)? {
                return Ok(ApprovalOutcome::Refused(Refusal::Used));
            }
            return Ok(ApprovalOutcome::Approved);
        }
        sign_in_request::cancel(conn, found.request.id)?;
        NewAuditRow::new(AuditEvent::ApprovalMismatch)
            .email(&found.member.email)
            .client(client)
            .request(found.request.id)
            .detail("wrong number chosen; the request was cancelled")
            .insert(conn)?;
        Ok::<_, diesel::result::Error>(ApprovalOutcome::Mismatch)
    })?;
    Ok(outcome)
}

/// "Not you?": cancels the request. Returns false if it was no longer open.
pub fn cancel(
    conn: &mut PgConnection,
    found: &FoundRequest,
    client: &ClientInfo,
) -> Result<bool, DbError> {
    let cancelled = conn.transaction(|conn| {
        if !sign_in_request::cancel(conn, found.request.id)? {
            return Ok(false);
        }
        NewAuditRow::new(AuditEvent::LinkCancelled)
            .email(&found.member.email)
            .client(client)
            .request(found.request.id)
            .detail("cancelled by the recipient (\"Not you?\")")
            .insert(conn)?;
        Ok::<_, diesel::result::Error>(true)
    })?;
    Ok(cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: i64, number: i16) -> SignInRequest {
        SignInRequest {
            id,
            member_id: 1,
            token_digest: vec![0; 32],
            code_digest: vec![0; 32],
            browser_digest: None,
            approval_number: number,
            code_failures: 0,
            next_path: "/".into(),
            requested_ip: None,
            requested_user_agent: None,
            created_at: Utc::now(),
            expires_at: Utc::now(),
            consumed_at: None,
            completed_by: None,
            approved_at: None,
            cancelled_at: None,
        }
    }

    #[test]
    fn approval_choices_hold_the_right_number_once_and_are_stable() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[5u8; 32]);
        for id in 1..200 {
            let number = 10 + (id % 90) as i16;
            let r = request(id, number);
            let choices = approval_choices(&key, &r);
            assert_eq!(choices.iter().filter(|&&c| c == number).count(), 1);
            assert!(choices.iter().all(|c| (10..=99).contains(c)));
            assert_ne!(choices[0], choices[1]);
            assert_ne!(choices[1], choices[2]);
            assert_ne!(choices[0], choices[2]);
            assert_eq!(choices, approval_choices(&key, &r));
        }
    }
}
