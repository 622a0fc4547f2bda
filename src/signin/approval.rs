//! Approval from another device: `POST /auth/approve` types the number the asking browser
//! shows, `GET /auth/wait` is that browser polling until it is approved, and
//! `POST /auth/cancel` ("Not you?") kills the request instead.

use chrono::{DateTime, Utc};

use super::locks::{self, Namespace, APPROVAL_LOCK_MISMATCHES, LOCK_WINDOW};
use super::{
    alert_for, complete, find_by_token, log_lines, open_request, Asker, FoundRequest, Redemption,
    Refusal, SignIn, SignedIn,
};
use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::DbError;
use crate::domain::approval_number::ApprovalNumber;
use crate::domain::client_info::ClientInfo;
use crate::domain::email_address::EmailAddress;
use crate::domain::token::TokenId;
use crate::mail::{Alarm, CancelledMail, Letter};
use crate::models::member::{self, Member};
use crate::models::sign_in_request::{self, CompletedBy, SignInRequest};

/// What `POST /auth/approve` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// The asking browser signs in through `/auth/wait`; this one stays signed out.
    Approved,
    /// A wrong number: the request is cancelled, and the member and the admins have been
    /// told. `locked` when this was the wrong number that locked approval.
    Mismatch {
        locked: bool,
    },
    /// Too many wrong numbers for this member within a day.
    Locked,
    Refused(Refusal),
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

/// What `POST /auth/cancel` ("Not you?") did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled, and the admins have been told.
    Cancelled,
    /// Already used, cancelled or expired.
    NotOpen,
    Invalid,
}

impl SignIn {
    /// `number` is `None` when what was typed is not a two-digit number: a wrong number.
    pub async fn approve(
        &self,
        token_id: Option<TokenId>,
        number: Option<ApprovalNumber>,
        client: ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<ApprovalOutcome, DbError> {
        let (outcome, alert) = self
            .transaction(move |conn, _| {
                let found = match open_request(conn, token_id.as_ref(), &client, "approval", now)? {
                    Ok(found) => found,
                    Err(refusal) => return Ok((ApprovalOutcome::Refused(refusal), None)),
                };
                let FoundRequest { request, member } = &found;
                locks::lock(conn, Namespace::Approvals, member.id.get())?;
                let mismatches =
                    sign_in_request::approval_mismatches_since(conn, member.id, now - LOCK_WINDOW)?;
                if mismatches >= APPROVAL_LOCK_MISMATCHES {
                    NewAuditRow::new(AuditEvent::ApprovalLocked)
                        .email(&member.email)
                        .client(&client)
                        .request(request.id)
                        .detail(format!(
                            "approval refused: {APPROVAL_LOCK_MISMATCHES} wrong numbers within 24 h"
                        ))
                        .insert(conn)?;
                    log_lines::note(AuditEvent::ApprovalLocked, Some(member.email.as_str()), Some(request));
                    return Ok((ApprovalOutcome::Locked, None));
                }
                if number == Some(request.approval_number) {
                    if !sign_in_request::approve(conn, request.id, now)? {
                        return Ok((ApprovalOutcome::Refused(Refusal::Used), None));
                    }
                    return Ok((ApprovalOutcome::Approved, None));
                }
                sign_in_request::cancel_for_mismatch(conn, request.id)?;
                NewAuditRow::new(AuditEvent::ApprovalMismatch)
                    .email(&member.email)
                    .client(&client)
                    .request(request.id)
                    .detail("wrong number typed; the request was cancelled")
                    .insert(conn)?;
                log_lines::note(AuditEvent::ApprovalMismatch, Some(member.email.as_str()), Some(request));
                let locked = mismatches + 1 >= APPROVAL_LOCK_MISMATCHES;
                if locked {
                    NewAuditRow::new(AuditEvent::ApprovalLocked)
                        .email(&member.email)
                        .client(&client)
                        .request(request.id)
                        .detail(format!(
                            "{APPROVAL_LOCK_MISMATCHES} wrong numbers within 24 h: approval refused for the rest of the 24 h"
                        ))
                        .insert(conn)?;
                    log_lines::note(AuditEvent::ApprovalLocked, Some(member.email.as_str()), Some(request));
                }
                let alarm = Alarm::ApprovalMismatch {
                    email: member.email.clone(),
                    locked_after: locked.then_some(APPROVAL_LOCK_MISMATCHES),
                };
                let alert = alert_for(conn, member.id, request, alarm)?;
                Ok((ApprovalOutcome::Mismatch { locked }, Some(alert)))
            })
            .await?;
        if let Some(alert) = alert {
            self.send_alert(alert);
        }
        Ok(outcome)
    }

    pub async fn wait(&self, asker: Asker, now: DateTime<Utc>) -> Result<WaitOutcome, DbError> {
        let client = asker.client.clone();
        let outcome = self
            .transaction(move |conn, _| {
                let Some(request) =
                    sign_in_request::latest_pending_for_browser(conn, &asker.bindings, now)?
                else {
                    return Ok(WaitOutcome::Closed);
                };
                if request.approved_at.is_none() {
                    return Ok(WaitOutcome::Waiting(request.approval_number));
                }
                Ok(
                    match complete(conn, request.id, CompletedBy::Approval, &asker, now)? {
                        Redemption::SignedIn(signed_in) => WaitOutcome::SignedIn(signed_in),
                        Redemption::Refused(_) => WaitOutcome::Closed,
                    },
                )
            })
            .await?;
        if let WaitOutcome::SignedIn(signed_in) = &outcome {
            self.send_new_browser_notice(signed_in, &client, now);
        }
        Ok(outcome)
    }

    pub async fn cancel(
        &self,
        token_id: TokenId,
        client: ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<CancelOutcome, DbError> {
        let cancelled = self
            .transaction(move |conn, _| {
                let Some(FoundRequest { request, member }) = find_by_token(conn, &token_id)? else {
                    return Ok(Err(CancelOutcome::Invalid));
                };
                if !sign_in_request::cancel(conn, request.id)? {
                    return Ok(Err(CancelOutcome::NotOpen));
                }
                NewAuditRow::new(AuditEvent::LinkCancelled)
                    .email(&member.email)
                    .client(&client)
                    .request(request.id)
                    .detail("cancelled by the recipient (\"Not you?\")")
                    .insert(conn)?;
                let admins = member::active_admin_emails(conn)?;
                Ok(Ok((request, member, admins)))
            })
            .await?;
        match cancelled {
            Ok((request, member, admins)) => {
                self.tell_admins(&request, &member, &admins, now);
                Ok(CancelOutcome::Cancelled)
            }
            Err(outcome) => Ok(outcome),
        }
    }

    fn tell_admins(
        &self,
        request: &SignInRequest,
        member: &Member,
        admins: &[EmailAddress],
        now: DateTime<Utc>,
    ) {
        let mail = CancelledMail {
            email: member.email.clone(),
            requested_at: request.created_at,
            cancelled_at: now,
            ip: request.requested_ip,
            user_agent: request.requested_user_agent.clone(),
        };
        for admin in admins {
            self.mailer
                .queue(Letter::Cancelled(admin.clone(), mail.clone()));
        }
    }
}
