//! The link from the mail: `GET /auth/verify` shows what it would do and consumes nothing
//! (mail scanners follow links); `POST /auth/verify` signs in.

use chrono::{DateTime, Utc};

use super::{
    audit_refusal, browser_may_complete, complete, find_by_token, is_asking_browser, open_request,
    refusal_for_state, Asker, FoundRequest, Refusal, SignIn, SignedIn,
};
use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::DbError;
use crate::domain::client_ip::ClientIp;
use crate::domain::email_address::EmailAddress;
use crate::domain::token::TokenId;
use crate::models::sign_in_request::{self, CompletedBy};
use crate::settings::LinkBinding;

/// What `GET /auth/verify` shows.
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

/// What `POST /auth/verify` did.
#[derive(Debug)]
pub enum Redemption {
    SignedIn(Box<SignedIn>),
    Refused(Refusal),
}

impl SignIn {
    pub async fn show_link(
        &self,
        token_id: TokenId,
        asker: Asker,
        now: DateTime<Utc>,
    ) -> Result<LinkView, DbError> {
        self.transaction(move |conn, settings| {
            let Some(FoundRequest { request, member }) = find_by_token(conn, &token_id)? else {
                return Ok(LinkView::Refused(Refusal::Invalid));
            };
            if let Some(refusal) = refusal_for_state(&request, now) {
                return Ok(LinkView::Refused(refusal));
            }
            let asking_browser = is_asking_browser(&request, &asker.bindings);
            if !asking_browser {
                // A mail scanner, or the person on another device: audited once per address,
                // since a scanner (or a flood) may fetch the link hundreds of times. With no
                // address (never over TCP) there is nothing to count by: audit each fetch.
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
        })
        .await
    }

    /// `token_id` is `None` when the posted token failed its shape or signature check: that
    /// is audited too.
    pub async fn redeem_link(
        &self,
        token_id: Option<TokenId>,
        asker: Asker,
        now: DateTime<Utc>,
    ) -> Result<Redemption, DbError> {
        let client = asker.client.clone();
        let redemption = self
            .transaction(move |conn, settings| {
                let attempt = "sign-in by link";
                let found =
                    match open_request(conn, token_id.as_ref(), &asker.client, attempt, now)? {
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
                let redemption = complete(conn, found.request.id, CompletedBy::Link, &asker, now)?;
                if let Redemption::Refused(refusal) = &redemption {
                    // Lost a race with another request for the same token.
                    audit_refusal(conn, *refusal, Some(&found), &asker.client, attempt)?;
                }
                Ok(redemption)
            })
            .await?;
        if let Redemption::SignedIn(signed_in) = &redemption {
            self.send_new_browser_notice(signed_in, &client, now);
        }
        Ok(redemption)
    }
}
