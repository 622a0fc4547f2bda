//! The decision behind `/auth/check` and `/auth/forward`, free of HTTP.
//!
//! A check is about one app (named by the proxy: [`super::target`]) and reads the app's own
//! cookie: the app session behind it, the Latchkey session that app session lives on, the
//! member and the apps, all through the session cache (no query when cached; an app session's
//! end, a revocation, a deactivation or an app change empties the entries it concerns on every
//! instance), asks the session room's validity rule, and decides. An app session opens only
//! the app it was made for. A check writes nothing, except a refusal at most once a minute
//! (`app_denied`, which also ends the refused app session), and the Latchkey session's idle
//! expiry at most once a minute, as pages do, off the answer's path.

use std::sync::Arc;

use super::assertion::{Claims, LIFETIME_SECS};
use super::memory::AssertionFor;
use super::target::{Target, Unknown};
use super::ForwardAuth;
use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::{Db, DbError};
use crate::domain::client_info::ClientInfo;
use crate::domain::digests::{AppKeyDigest, SessionKeyDigest};
use crate::domain::email_address::EmailAddress;
use crate::domain::ids::{AppSessionId, SessionId};
use crate::domain::text::cut_to;
use crate::models::app::AppRule;
use crate::models::app_session;
use crate::models::member::{self, Member};
use crate::session::cache::Live;
use crate::session::signed_in_by_in;
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
    /// No live app session for this app behind the cookie: through `/auth/app` first.
    NotSignedIn,
    /// The member may open the app: the proxy passes the request on, with these.
    Allowed(Grant),
    /// The app does not let this member in, or there is no such app.
    Denied(Refusal),
}

#[derive(Debug)]
pub struct Grant {
    pub member: Member,
    /// `Remote-Groups`: the role, then the member's groups.
    pub groups: Vec<String>,
    /// The signed `Latchkey-Assertion`.
    pub assertion: Arc<str>,
}

#[derive(Debug)]
pub struct Refusal {
    /// Who was refused, when the cookie said.
    pub member: Option<Member>,
    /// The app, when there is one by that name or origin.
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

/// A live sign-in at Latchkey: the session and its member.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub session_id: SessionId,
    pub member: Member,
    /// When the session signed in (Unix seconds), and how, when it says.
    pub signed_in_at: i64,
    pub signed_in_by: Option<String>,
}

/// The live, still valid sign-in behind this Latchkey session key digest, at `now` (Unix
/// seconds). Its idle expiry moves at most once a minute, off the caller's path.
pub async fn signed_in(
    live: &Live,
    settings: &Settings,
    digest: &SessionKeyDigest,
    now: i64,
) -> Result<Option<SignedIn>, DbError> {
    let Some(session) = live.session(digest).await? else {
        return Ok(None);
    };
    let Some(member_id) = session.member_id else {
        return Ok(None);
    };
    let Some(member) = live.member(member_id).await? else {
        return Ok(None);
    };
    let timeouts = Timeouts::of(settings);
    let times = SessionTimes::in_state(&session.state);
    match judge(Some(&member), times, now, timeouts) {
        Validity::Live => {}
        Validity::NeedsSeenRefresh => live.touch(digest, now, timeouts.idle),
        Validity::Expired | Validity::Gone => return Ok(None),
    }
    Ok(Some(SignedIn {
        session_id: session.id,
        member,
        signed_in_at: times.signed_in_at,
        signed_in_by: signed_in_by_in(&session.state),
    }))
}

/// The app session behind one of `keys` that opens `app`, and its live sign-in.
async fn app_signed_in(
    context: &CheckContext<'_>,
    app: &AppRule,
    keys: &[AppKeyDigest],
    now: i64,
) -> Result<Option<(AppSessionId, SignedIn)>, DbError> {
    for key in keys {
        let Some(app_session) = context.live.app_session(key).await? else {
            continue;
        };
        // A cookie made for another app is worth nothing here.
        if app_session.app_id != app.id {
            continue;
        }
        if let Some(signed_in) = signed_in(
            context.live,
            context.settings,
            &app_session.session_key,
            now,
        )
        .await?
        {
            return Ok(Some((app_session.id, signed_in)));
        }
    }
    Ok(None)
}

impl ForwardAuth {
    /// Whether the app cookie (one of `keys`: a sibling host may have planted more under the
    /// same name) opens `target` at `now` (Unix seconds). `client` is asked only when
    /// something is written to the audit.
    pub async fn decide(
        &self,
        context: &CheckContext<'_>,
        target: Result<&Target, &Unknown>,
        keys: &[AppKeyDigest],
        client: impl FnOnce() -> ClientInfo,
        now: i64,
    ) -> Result<Decision, CheckError> {
        let target = match target {
            Ok(target) => target,
            Err(unknown) => return Ok(unknown_app(unknown)),
        };
        let app = &target.app;
        let Some((app_session_id, signed_in)) = app_signed_in(context, app, keys, now).await?
        else {
            return Ok(Decision::NotSignedIn);
        };
        if app.admits(&signed_in.member) {
            self.allow(context, signed_in, app, now)
        } else {
            let refusal = self
                .refuse_ending(context, signed_in.member, Some(app_session_id), app, client)
                .await?;
            Ok(Decision::Denied(refusal))
        }
    }

    fn allow(
        &self,
        context: &CheckContext<'_>,
        signed_in: SignedIn,
        app: &AppRule,
        now: i64,
    ) -> Result<Decision, CheckError> {
        let member = signed_in.member;
        let role = member.role();
        let groups: Vec<String> = std::iter::once(role.as_str().to_string())
            .chain(member.groups.iter().map(ToString::to_string))
            .collect();
        let about = AssertionFor {
            session_id: signed_in.session_id,
            app_id: app.id,
            aud: app.origin.clone(),
            email: member.email.clone(),
            name: member.name.clone(),
            role,
            groups: groups.clone(),
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
                        name: member.name.as_ref(),
                        role,
                        groups: &groups,
                        iat: now,
                        exp: now + LIFETIME_SECS,
                    })?
                    .into();
                self.memory.remember_assertion(about, now, token.clone());
                token
            }
        };
        Ok(Decision::Allowed(Grant {
            member,
            groups,
            assertion,
        }))
    }

    /// Refuses a signed-in member an app (`/auth/app`): audited at most once a minute.
    pub async fn refuse(
        &self,
        context: &CheckContext<'_>,
        member: Member,
        app: &AppRule,
        client: impl FnOnce() -> ClientInfo,
    ) -> Result<Refusal, DbError> {
        self.refuse_ending(context, member, None, app, client).await
    }

    /// The same for a check; the member's app session for an app that no longer lets them in
    /// ends here, so that a later change of policy does not bring it back without a new
    /// sign-in to the app.
    async fn refuse_ending(
        &self,
        context: &CheckContext<'_>,
        member: Member,
        app_session_id: Option<AppSessionId>,
        app: &AppRule,
        client: impl FnOnce() -> ClientInfo,
    ) -> Result<Refusal, DbError> {
        let audit = self.memory.should_audit_denial(member.id);
        let mut detail = format!(
            "{} ({}) does not admit role {}",
            app.name,
            app.origin,
            member.role().as_str()
        );
        if !member.groups.is_empty() {
            let groups: Vec<&str> = member.groups.iter().map(|g| g.as_str()).collect();
            detail.push_str(&format!(" or groups {}", groups.join(",")));
        }
        let email = member.email.clone();
        let client = audit.then(client);
        let admins = context
            .db
            .query(move |conn| {
                if let Some(app_session_id) = app_session_id {
                    app_session::end_by_id(conn, app_session_id)?;
                }
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
            log::info!(
                target: LOG_TARGET,
                member = member.email.as_str(),
                app = app.name.as_str();
                "app_denied"
            );
        }
        Ok(Refusal {
            member: Some(member),
            app_name: Some(app.name.clone()),
            admins,
        })
    }
}

/// No app has that name or origin: refused whoever asks (default deny). Nobody is signed in
/// to an app that does not exist: nothing to audit, and the page names no one to ask.
fn unknown_app(unknown: &Unknown) -> Decision {
    log::debug!(
        target: LOG_TARGET,
        app = unknown
            .named
            .as_deref()
            .unwrap_or_else(|| cut_to(unknown.url.origin().host(), MAX_HOST));
        "check for an app that is not registered"
    );
    Decision::Denied(Refusal {
        member: None,
        app_name: None,
        admins: Vec::new(),
    })
}
