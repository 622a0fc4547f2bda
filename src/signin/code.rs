//! `POST /auth/code`: the 6-digit code from the mail, typed into the browser that asked.

use chrono::{DateTime, Utc};

use super::locks::{self, Namespace, CODE_LOCK_FAILURES, LOCK_WINDOW};
use super::{alert_for, complete, log_lines, Alert, Asker, Redemption, Refusal, SignIn, SignedIn};
use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::DbError;
use crate::domain::code::SignInCode;
use crate::domain::email_address::EmailAddress;
use crate::mail::Alarm;
use crate::models::sign_in_request::{self, CompletedBy, LockScope, MAX_CODE_FAILURES};

/// What `POST /auth/code` did. A decoy's browser gets the same answers, try for try.
#[derive(Debug)]
pub enum CodeOutcome {
    SignedIn(Box<SignedIn>),
    Wrong {
        /// The address the request was asked for, to show on the page again.
        email: EmailAddress,
        tries_left: i16,
    },
    /// The fifth wrong try: the request (its link too) is dead.
    Exhausted,
    /// Too many wrong codes for this member within a day: codes are refused for the rest of
    /// the window, right or wrong. Links still work. The member and the admins are told when
    /// this try is the one that locked.
    Locked,
    /// This browser has no open request.
    NoRequest,
    Refused(Refusal),
}

impl SignIn {
    /// `code` is `None` when what was typed is not a code at all: a wrong try like any other.
    pub async fn redeem_code(
        &self,
        code: Option<SignInCode>,
        asker: Asker,
        now: DateTime<Utc>,
    ) -> Result<CodeOutcome, DbError> {
        let token_key = self.token_key.clone();
        let client = asker.client.clone();
        let (outcome, alert) = self
            .transaction(move |conn, _| {
                let Some(request) =
                    sign_in_request::latest_pending_for_browser(conn, &asker.bindings, now)?
                else {
                    return Ok((CodeOutcome::NoRequest, None));
                };
                let scope = LockScope::of(&request);
                locks::lock(conn, Namespace::Codes, locks::key_of(&scope))?;
                let failures = sign_in_request::code_failures_since(conn, &scope, now - LOCK_WINDOW)?;
                if failures >= CODE_LOCK_FAILURES {
                    NewAuditRow::new(AuditEvent::CodeLocked)
                        .email(&request.requested_email)
                        .client(&asker.client)
                        .request(request.id)
                        .detail(format!(
                            "code refused: {CODE_LOCK_FAILURES} wrong codes within 24 h"
                        ))
                        .insert(conn)?;
                    log_lines::note(AuditEvent::CodeLocked, Some(request.requested_email.as_str()), Some(&request));
                    return Ok((CodeOutcome::Locked, None));
                }
                let matches = code.as_ref().is_some_and(|code| {
                    let digest = code.digest(&token_key, &request.token_digest);
                    digest.ct_eq(&request.code_digest)
                });
                if matches {
                    let outcome = match complete(conn, request.id, CompletedBy::Code, &asker, now)? {
                        Redemption::SignedIn(signed_in) => CodeOutcome::SignedIn(signed_in),
                        Redemption::Refused(refusal) => CodeOutcome::Refused(refusal),
                    };
                    return Ok((outcome, None));
                }
                let Some(tries) = sign_in_request::record_code_failure(conn, request.id)? else {
                    return Ok((CodeOutcome::NoRequest, None));
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
                log_lines::note(AuditEvent::CodeFailed, Some(request.requested_email.as_str()), Some(&request));
                if failures + 1 >= CODE_LOCK_FAILURES {
                    NewAuditRow::new(AuditEvent::CodeLocked)
                        .email(&request.requested_email)
                        .client(&asker.client)
                        .request(request.id)
                        .detail(format!(
                            "{CODE_LOCK_FAILURES} wrong codes within 24 h: codes refused for the rest of the 24 h{decoy}"
                        ))
                        .insert(conn)?;
                    log_lines::note(AuditEvent::CodeLocked, Some(request.requested_email.as_str()), Some(&request));
                    let alert: Option<Alert> = match request.member_id {
                        Some(member_id) => Some(alert_for(
                            conn,
                            member_id,
                            &request,
                            Alarm::CodesLocked {
                                email: request.requested_email.clone(),
                                failures: CODE_LOCK_FAILURES,
                            },
                        )?),
                        None => None,
                    };
                    return Ok((CodeOutcome::Locked, alert));
                }
                Ok((
                    if tries >= MAX_CODE_FAILURES {
                        CodeOutcome::Exhausted
                    } else {
                        CodeOutcome::Wrong {
                            email: request.requested_email.clone(),
                            tries_left: MAX_CODE_FAILURES - tries,
                        }
                    },
                    None,
                ))
            })
            .await?;
        if let Some(alert) = alert {
            self.send_alert(alert);
        }
        if let CodeOutcome::SignedIn(signed_in) = &outcome {
            self.send_new_browser_notice(signed_in, &client, now);
        }
        Ok(outcome)
    }
}
