//! `latchkey link`: a one-time link made on the command line, for a member locked out of
//! their mail. A plain function on a connection: the command line has no runtime for
//! [`crate::db::Db`], and the link is printed, not mailed.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use ring::hmac;
use secrecy::SecretString;

use super::link_with_token;
use super::request_link::issue_request;
use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::domain::break_glass_reason::BreakGlassReason;
use crate::domain::client_info::ClientInfo;
use crate::domain::email_address::EmailAddress;
use crate::domain::next_path::NextPath;
use crate::models::member::{self, Actor, Member};
use crate::models::sign_in_request::SignInRequest;
use crate::settings::Settings;

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

/// A sign-in request for an active member that any browser may complete (no browser asked
/// for it, so none is bound), without mail and outside the per-address rate, audited as
/// `link_requested` by `actor` with the reason.
pub fn break_glass(
    conn: &mut PgConnection,
    settings: &Settings,
    token_key: &hmac::Key,
    email: &EmailAddress,
    reason: &BreakGlassReason,
    actor: Actor<'_>,
    now: DateTime<Utc>,
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
        let (request, token, _code) = issue_request(
            conn,
            settings,
            token_key,
            &member,
            None,
            &NextPath::root(),
            &client,
            now,
        )?;
        NewAuditRow::new(AuditEvent::LinkRequested)
            .email(&member.email)
            .actor(actor.as_ref())
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
