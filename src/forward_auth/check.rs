//! The decision behind `/auth/check` and `/auth/forward`, free of HTTP.
//!
//! A check reads the session (by the digest of the key in its cookie), the member and the apps
//! through the session cache (no query when they are cached; a revocation, deactivation or
//! app change empties the entries it concerns on every instance), asks the session room's
//! validity rule, and decides. It writes nothing, except the first time a session opens an
//! app (`app_opened`), a refusal at most once a minute (`app_denied`), and the session's idle
//! expiry at most once a minute, as pages do, off the answer's path.

use std::sync::Arc;

use super::assertion::{Claims, LIFETIME_SECS};
use super::memory::AssertionFor;
use super::ForwardAuth;
use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::{Db, DbError};
use crate::domain::app_origin::AppOrigin;
use crate::domain::client_info::ClientInfo;
use crate::domain::digests::SessionKeyDigest;
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::SessionId;
use crate::domain::text::cut_to;
use crate::models::app::{self, AppRule};
use crate::models::member::{self, Member};
use crate::session::cache::Live;
use crate::session::validity::{judge, SessionTimes, Timeouts, Validity};
use crate::settings::Settings;

/// The target of the `app_opened` and `app_denied` lines, each naming the member and the app.
pub const LOG_TARGET: &str = "latchkey::forward_auth";

/// The longest host name DNS allows; an unregistered origin's host is kept to this in the audit.
const MAX_HOST: usize = 253;

/// What the check needs besides the room itself.
pub struct CheckContext<'a> {
    pub db: &'a Db,
    pub live: &'a Live,
    pub settings: &'a Settings,
}

/// What a check decided.
#[derive(Debug)]
pub enum Decision {
    /// No live session behind the cookie: sign in first.
    NotSignedIn,
    /// The member may open the app: the proxy passes the request on, with these.
    Allowed(Grant),
    /// Signed in, but the app does not let this member in (or no app has that origin).
    Denied(Refusal),
}

#[derive(Debug)]
pub struct Grant {
    pub member: Member,
    /// The signed `Latchkey-Assertion`.
    pub assertion: Arc<str>,
}

#[derive(Debug)]
pub struct Refusal {
    pub member: Member,
    /// The app registered for the origin, if any.
    pub app_name: Option<String>,
    /// Whom to ask.
    pub admins: Vec<EmailAddress>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("signing the assertion: {0}")]
    Signing(#[from] serde_json::Error),
}

/// A signed-in member's check, with what the answer needs.
struct Checked {
    session_id: SessionId,
    member: Member,
    /// The app registered for the origin, if any.
    app: Option<AppRule>,
}

impl ForwardAuth {
    /// Whether the session behind `digest` may open the app at `origin` at `now` (Unix
    /// seconds). `client` is asked only when something is written to the audit.
    pub async fn decide(
        &self,
        context: &CheckContext<'_>,
        digest: Option<SessionKeyDigest>,
        origin: &AppOrigin,
        client: impl FnOnce() -> ClientInfo,
        now: i64,
    ) -> Result<Decision, CheckError> {
        let Some(digest) = digest else {
            return Ok(Decision::NotSignedIn);
        };
        let Some(checked) = signed_in(context, &digest, origin, now).await? else {
            return Ok(Decision::NotSignedIn);
        };
        match &checked.app {
            Some(app) if app.admits(&checked.member) => {
                let app = app.clone();
                self.allow(context, checked, &app, client, now).await
            }
            _ => self.deny(context, checked, origin, client).await,
        }
    }

    async fn allow(
        &self,
        context: &CheckContext<'_>,
        checked: Checked,
        app: &AppRule,
        client: impl FnOnce() -> ClientInfo,
        now: i64,
    ) -> Result<Decision, CheckError> {
        let member = checked.member;
        let session_id = checked.session_id;
        if !self.memory.has_opened(session_id, app.id) {
            let app_id = app.id;
            let (email, app_name, client) = (member.email.clone(), app.name.clone(), client());
            // The session may have ended while this check ran: then this fails, and the next
            // check refuses it.
            context
                .db
                .query(move |conn| {
                    app::record_opened(conn, session_id, app_id, email.as_str(), &app_name, &client)
                })
                .await?;
            self.memory.remember_opened(session_id, app_id);
            // Once per session and app, as the audit row: an allowed check logs nothing else.
            log::info!(
                target: LOG_TARGET,
                member = member.email.as_str(),
                app = app.name.as_str();
                "app_opened"
            );
        }
        let role = member.role();
        let about = AssertionFor {
            session_id,
            app_id: app.id,
            aud: app.origin.clone(),
            email: member.email.clone(),
            role,
        };
        let assertion = match self.memory.fresh_assertion(&about, now) {
            Some(token) => token,
            None => {
                let token: Arc<str> = self
                    .key
                    .sign(&Claims {
                        iss: context.settings.public_url.base(),
                        aud: &app.origin,
                        sub: member.id,
                        email: &member.email,
                        role,
                        iat: now,
                        exp: now + LIFETIME_SECS,
                    })?
                    .into();
                self.memory.remember_assertion(about, now, token.clone());
                token
            }
        };
        Ok(Decision::Allowed(Grant { member, assertion }))
    }

    async fn deny(
        &self,
        context: &CheckContext<'_>,
        checked: Checked,
        origin: &AppOrigin,
        client: impl FnOnce() -> ClientInfo,
    ) -> Result<Decision, CheckError> {
        let member = checked.member;
        let audit = self.memory.should_audit_denial(member.id);
        let app_name = checked.app.map(|app| app.name);
        let detail = match &app_name {
            Some(name) => format!(
                "{name} ({origin}) does not admit role {}",
                member.role().as_str()
            ),
            // The member chose this origin: the row keeps its host alone, cut to a name's length.
            None => format!(
                "{} is not a registered app",
                cut_to(origin.host(), MAX_HOST)
            ),
        };
        let email = member.email.clone();
        let client = audit.then(client);
        let admins = context
            .db
            .query(move |conn| {
                if let Some(client) = client {
                    NewAuditRow::new(AuditEvent::AppDenied)
                        .email(&email)
                        .client(&client)
                        .detail(detail)
                        .insert(conn)?;
                }
                member::active_admin_emails(conn)
            })
            .await?;
        // Logged with its audit row, at most once a minute per member: a refused page's
        // every asset is a check of its own.
        if audit {
            // The app's name, or the host of an origin no app has (cut as in the audit row).
            let app = match &app_name {
                Some(name) => name.as_str(),
                None => cut_to(origin.host(), MAX_HOST),
            };
            log::info!(
                target: LOG_TARGET,
                member = member.email.as_str(),
                app = app;
                "app_denied"
            );
        }
        Ok(Decision::Denied(Refusal {
            member,
            app_name,
            admins,
        }))
    }
}

/// The live, still valid sign-in behind this session key digest, and the app for `origin`.
async fn signed_in(
    context: &CheckContext<'_>,
    digest: &SessionKeyDigest,
    origin: &AppOrigin,
    now: i64,
) -> Result<Option<Checked>, DbError> {
    let live = context.live;
    let Some(session) = live.session(digest).await? else {
        return Ok(None);
    };
    let Some(member_id) = session.member_id else {
        return Ok(None);
    };
    let Some(member) = live.member(member_id).await? else {
        return Ok(None);
    };
    let timeouts = Timeouts::of(context.settings);
    match judge(
        Some(&member),
        SessionTimes::in_state(&session.state),
        now,
        timeouts,
    ) {
        Validity::Live => {}
        Validity::NeedsSeenRefresh => live.touch(digest, now, timeouts.idle),
        Validity::Expired | Validity::Gone => return Ok(None),
    }
    let apps = live.apps().await?;
    let app = apps.iter().find(|app| &app.origin == origin).cloned();
    Ok(Some(Checked {
        session_id: session.id,
        member,
        app,
    }))
}
