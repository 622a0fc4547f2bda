//! Latchkey as an OpenID Provider, in one room: what an authorization request asks and leads
//! to ([`authorize`]), how an app authenticates and what errors it gets ([`token`]), what
//! tokens say ([`claims`]), the signing keys ([`keys`]) and the back-channel logouts
//! ([`outbox`]). The HTTP side (reading parameters, writing JSON and redirects) is
//! `routes::oidc`; the tables are `models::oidc`.
//!
//! Every code and token belongs to the Latchkey session it was issued in (the rows cascade
//! with it) and is judged with that session at each use, through the session cache: logout,
//! revocation, deactivation, the app's removal or a policy change that shuts the member out
//! end them at once, on every instance.

pub mod authorize;
pub mod claims;
pub mod keys;
pub mod outbox;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::{Db, DbError};
use crate::domain::client_info::ClientInfo;
use crate::domain::digests::{OidcCodeDigest, OidcTokenDigest};
use crate::domain::ids::AppId;
use crate::domain::oidc::{CodeChallenge, Scopes};
use crate::forward_auth::check::SignedIn;
use crate::models::app::AppRule;
use crate::models::member::Member;
use crate::models::oidc::{self as rows, LiveToken, NewCode, NewToken, TokenKind};
use crate::session::cache::Live;
use crate::settings::Settings;
use authorize::Authorize;
use claims::{IdToken, MemberClaims};
use keys::{KeyError, KeyRing, SigningKeys};
use token::TokenError;

/// The target of the provider's log lines, each naming the app (and the member when known).
pub const LOG_TARGET: &str = "latchkey::oidc";

/// A code works for this long.
pub const CODE_LIFETIME: chrono::Duration = chrono::Duration::seconds(60);
/// An access token works for this long.
pub const ACCESS_LIFETIME: chrono::Duration = chrono::Duration::minutes(10);
/// An ID token says it is valid for this long.
pub const ID_TOKEN_LIFETIME: chrono::Duration = chrono::Duration::minutes(5);
/// A logout token says it is valid for this long.
pub const LOGOUT_TOKEN_LIFETIME: chrono::Duration = chrono::Duration::minutes(2);
/// At most one `oidc_refused` row per app and reason this often: a client that retries a bad
/// secret in a loop cannot fill the audit.
const REFUSAL_AUDIT_EVERY: Duration = Duration::from_secs(60);

/// A failure that is not the app's fault.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

impl From<diesel::result::Error> for OidcError {
    fn from(err: diesel::result::Error) -> Self {
        OidcError::Db(DbError::from(err))
    }
}

/// A refused token request: the error the app gets, and whose sign-in it was about (for the
/// audit), when known.
#[derive(Debug)]
pub struct Refusal {
    pub error: TokenError,
    pub email: Option<String>,
}

impl From<TokenError> for Refusal {
    fn from(error: TokenError) -> Self {
        Self { error, email: None }
    }
}

/// A token endpoint's answer: a grant, or the app's error.
pub type TokenResult<T> = Result<Result<T, Refusal>, OidcError>;

/// What `/oidc/token` answers on success.
#[derive(Debug, Serialize)]
pub struct Tokens {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// A random 256-bit secret for a code or token, and its digest.
fn new_secret() -> (String, [u8; 32]) {
    let secret = URL_SAFE_NO_PAD.encode(crate::crypto::random_bytes::<32>());
    let digest = crate::crypto::sha256(secret.as_bytes());
    (secret, digest)
}

/// The SHA-256 of a presented code or token, after its shape was checked (43 base64url
/// characters, as every one this provider makes).
fn presented_digest(presented: &str) -> Option<[u8; 32]> {
    (presented.len() == 43 && URL_SAFE_NO_PAD.decode(presented).is_ok())
        .then(|| crate::crypto::sha256(presented.as_bytes()))
}

/// A presented access or refresh token's digest.
pub fn token_digest(presented: &str) -> Option<OidcTokenDigest> {
    presented_digest(presented).map(OidcTokenDigest::new)
}

/// The room's state, one per process.
pub struct Oidc {
    keys: Arc<SigningKeys>,
    refusals: Mutex<HashMap<(AppId, &'static str), Instant>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Oidc")
    }
}

impl crate::db::DbFailure for OidcError {
    fn is_database_failure(&self) -> bool {
        matches!(self, OidcError::Db(_))
    }
}

/// What the room's work needs besides the room itself.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub db: &'a Db,
    pub live: &'a Live,
    pub settings: &'a Settings,
}

impl Context<'_> {
    /// `LATCHKEY_PUBLIC_URL`, exactly, without a trailing slash.
    pub fn issuer(&self) -> String {
        self.settings.public_url.origin()
    }
}

/// What an issued code's exchange needs to know (kept out of the closure's borrows).
struct Exchange {
    code: OidcCodeDigest,
    app_id: AppId,
    client_id: String,
    redirect_uri: Option<String>,
    verifier: Option<String>,
    issuer: String,
    ring: Arc<KeyRing>,
}

/// The outcome of a grant inside its transaction.
enum Granted {
    Tokens(Tokens),
    Refused(TokenError, Option<String>),
    /// A replayed code or spent refresh token: its family was revoked.
    Replayed(TokenError, Option<String>, i64),
}

impl Oidc {
    pub fn new(keys: SigningKeys) -> Self {
        Self {
            keys: Arc::new(keys),
            refusals: Mutex::new(HashMap::new()),
        }
    }

    /// The key ring, read again when the signing keys changed (on the pool's thread); the
    /// first key is made here if there is none.
    pub async fn ring(&self, context: Context<'_>) -> Result<Arc<KeyRing>, OidcError> {
        let changes = context.live.cache().key_changes();
        let (ring, stale) = self.keys.ring(changes);
        if let (Some(ring), false) = (&ring, stale) {
            return Ok(ring.clone());
        }
        let keys = self.keys.clone();
        let fresh = context
            .db
            .run(move |conn| keys.reload(conn, changes).map_err(OidcError::from))
            .await;
        match (fresh, ring) {
            (Ok(fresh), _) => Ok(fresh),
            // A stale ring still signs and verifies: its keys stay valid for a day.
            (Err(err), Some(ring)) => {
                log::warn!("reading the signing keys again: {err}");
                Ok(ring)
            }
            (Err(err), None) => Err(err),
        }
    }

    /// Whether a refusal of `app` for `reason` should be audited now (and notes it).
    fn should_audit_refusal(&self, app: AppId, reason: &'static str) -> bool {
        let Ok(mut map) = self.refusals.lock() else {
            return true;
        };
        let now = Instant::now();
        if map.len() > 10_000 {
            map.retain(|_, at| now.duration_since(*at) < REFUSAL_AUDIT_EVERY);
        }
        match map.get(&(app, reason)) {
            Some(at) if now.duration_since(*at) < REFUSAL_AUDIT_EVERY => false,
            _ => {
                map.insert((app, reason), now);
                true
            }
        }
    }

    /// Audits a refused token request (`oidc_refused`), at most once a minute per app and
    /// reason. Never the code, token or secret itself.
    pub async fn audit_refusal(
        &self,
        context: Context<'_>,
        app: &AppRule,
        error: &TokenError,
        email: Option<String>,
        client: ClientInfo,
    ) -> Result<(), OidcError> {
        // Logged every time (the log is not the audit): the app and, when known, the member;
        // never the code, token or secret.
        match &email {
            Some(member) => log::info!(
                target: LOG_TARGET,
                member = member.as_str(),
                app = app.name.as_str();
                "oidc_refused: {error}"
            ),
            None => log::info!(
                target: LOG_TARGET,
                app = app.name.as_str();
                "oidc_refused: {error}"
            ),
        }
        if !self.should_audit_refusal(app.id, error.description()) {
            return Ok(());
        }
        let detail = format!("{}: {}", app.name, error);
        context
            .db
            .query(move |conn| {
                let mut row = NewAuditRow::new(AuditEvent::OidcRefused)
                    .client(&client)
                    .detail(detail);
                if let Some(email) = email {
                    row = row.email(email);
                }
                row.insert(conn).map(drop)
            })
            .await?;
        Ok(())
    }

    /// Issues a code for a signed-in member the app lets in, audited `app_opened`, and
    /// returns where the browser goes (the app's redirect URI with code, state and iss).
    pub async fn issue_code(
        &self,
        context: Context<'_>,
        request: &Authorize,
        session: &SignedIn,
        client: ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<String, OidcError> {
        let (code, digest) = new_secret();
        let scope = request.scopes.as_string();
        let redirect_uri = request.redirect_uri.as_str().to_string();
        let nonce = request.nonce.clone();
        let challenge = request.challenge.as_ref().map(|c| c.as_str().to_string());
        let session_id = session.session_id;
        let app_id = request.app.id;
        let member_id = session.member.id;
        let email = session.member.email.as_str().to_string();
        let detail = format!(
            "{} ({}) through OpenID Connect",
            request.app.name, request.app.origin
        );
        let auth_time = DateTime::from_timestamp(session.signed_in_at, 0).unwrap_or(now);
        let amr = claims::amr(session.signed_in_by.as_deref());
        context
            .db
            .query(move |conn| {
                use diesel::Connection as _;
                conn.transaction(|conn| {
                    rows::issue_code(
                        conn,
                        &NewCode {
                            digest: OidcCodeDigest::new(digest),
                            session_id,
                            app_id,
                            member_id,
                            redirect_uri: &redirect_uri,
                            scope: &scope,
                            nonce: nonce.as_deref(),
                            code_challenge: challenge.as_deref(),
                            auth_time,
                            amr,
                            expires_at: now + CODE_LIFETIME,
                        },
                    )?;
                    NewAuditRow::new(AuditEvent::AppOpened)
                        .email(email)
                        .client(&client)
                        .detail(detail)
                        .insert(conn)
                        .map(drop)
                })
            })
            .await?;
        log::info!(
            target: LOG_TARGET,
            member = session.member.email.as_str(),
            app = request.app.name.as_str();
            "app_opened"
        );
        Ok(request.success(&code, &context.issuer()))
    }

    /// `grant_type=authorization_code` for an authenticated `app`.
    pub async fn exchange_code(
        &self,
        context: Context<'_>,
        app: &AppRule,
        form: &token::TokenForm,
        now: DateTime<Utc>,
    ) -> TokenResult<Tokens> {
        let Some(code) = form.code.as_deref().and_then(presented_digest) else {
            return Ok(Err(TokenError::InvalidRequest(
                "code is missing or malformed",
            )
            .into()));
        };
        let Some(client) = app.oidc.as_ref() else {
            return Ok(Err(TokenError::InvalidClient("unknown client").into()));
        };
        let exchange = Exchange {
            code: OidcCodeDigest::new(code),
            app_id: app.id,
            client_id: client.client_id.as_str().to_string(),
            redirect_uri: form.redirect_uri.clone(),
            verifier: form.code_verifier.clone(),
            issuer: context.issuer(),
            ring: self.ring(context).await?,
        };
        let idle = self.session_idle(context);
        let live = context.live.clone();
        let granted = context
            .db
            .run(move |conn| exchange_in(conn, exchange, &live, now, idle))
            .await?;
        Ok(self.granted(context, granted))
    }

    /// `grant_type=refresh_token`: the old refresh token is spent, a new pair issued; a spent
    /// one presented again revokes its family.
    pub async fn refresh(
        &self,
        context: Context<'_>,
        app: &AppRule,
        form: &token::TokenForm,
        now: DateTime<Utc>,
    ) -> TokenResult<Tokens> {
        let Some(presented) = form.refresh_token.as_deref().and_then(token_digest) else {
            return Ok(Err(TokenError::InvalidRequest(
                "refresh_token is missing or malformed",
            )
            .into()));
        };
        let app_id = app.id;
        let idle = self.session_idle(context);
        let apps = context.live.apps().await?;
        let granted = context
            .db
            .run(move |conn| refresh_in(conn, presented, app_id, &apps, now, idle))
            .await?;
        Ok(self.granted(context, granted))
    }

    fn granted(&self, context: Context<'_>, granted: Granted) -> Result<Tokens, Refusal> {
        match granted {
            Granted::Tokens(tokens) => Ok(tokens),
            Granted::Refused(error, email) => Err(Refusal { error, email }),
            Granted::Replayed(error, email, family) => {
                // Every instance hears of each token's end; this one forgets them now.
                context.live.cache().forget_oidc_family(family);
                Err(Refusal { error, email })
            }
        }
    }

    fn session_idle(&self, context: Context<'_>) -> chrono::Duration {
        chrono::Duration::from_std(context.settings.session_idle).unwrap_or(chrono::Duration::MAX)
    }

    /// The live access token presented to userinfo, with its member, when the session it
    /// was issued in still holds and the app still lets the member in; from the session
    /// cache (no database round trip when cached).
    pub async fn bearer(
        &self,
        context: Context<'_>,
        presented: &str,
        now: i64,
    ) -> Result<Option<(LiveToken, Member)>, DbError> {
        let Some(digest) = token_digest(presented) else {
            return Ok(None);
        };
        let Some(token) = context.live.oidc_token(&digest).await? else {
            return Ok(None);
        };
        if token.kind != TokenKind::Access {
            return Ok(None);
        }
        self.still_holds(context, token, now).await
    }

    /// A token's session, member and app, judged now.
    pub async fn still_holds(
        &self,
        context: Context<'_>,
        token: LiveToken,
        now: i64,
    ) -> Result<Option<(LiveToken, Member)>, DbError> {
        let Some(signed_in) = crate::forward_auth::check::signed_in(
            context.live,
            context.settings,
            &token.session_key,
            now,
        )
        .await?
        else {
            return Ok(None);
        };
        let apps = context.live.apps().await?;
        let admitted = apps
            .iter()
            .find(|app| app.id == token.app_id)
            .is_some_and(|app| app.admits(&signed_in.member));
        Ok(admitted.then_some((token, signed_in.member)))
    }

    /// The token presented to introspection or revocation, of any kind.
    pub async fn any_token(
        &self,
        context: Context<'_>,
        presented: &str,
        now: i64,
    ) -> Result<Option<(LiveToken, Member)>, DbError> {
        let Some(digest) = token_digest(presented) else {
            return Ok(None);
        };
        let Some(token) = context.live.oidc_token(&digest).await? else {
            return Ok(None);
        };
        self.still_holds(context, token, now).await
    }

    /// RFC 7009: revokes `presented` if `app` holds it (a refresh token takes its family).
    pub async fn revoke(
        &self,
        context: Context<'_>,
        app: &AppRule,
        presented: &str,
    ) -> Result<(), DbError> {
        let Some(digest) = token_digest(presented) else {
            return Ok(());
        };
        let app_id = app.id;
        let family = context
            .db
            .query(move |conn| rows::revoke_token(conn, &digest, app_id))
            .await?;
        if let Some(family) = family {
            context.live.cache().forget_oidc_family(family);
        }
        context.live.cache().forget_oidc_token(&digest);
        Ok(())
    }

    /// Signs a logout token for a back-channel logout.
    pub async fn logout_token(
        &self,
        context: Context<'_>,
        client_id: &str,
        member_id: crate::domain::ids::MemberId,
        sid: &str,
    ) -> Result<String, OidcError> {
        let ring = self.ring(context).await?;
        let now = Utc::now().timestamp();
        let issuer = context.issuer();
        let token = claims::LogoutToken {
            iss: &issuer,
            aud: client_id,
            iat: now,
            exp: now + LOGOUT_TOKEN_LIFETIME.num_seconds(),
            jti: URL_SAFE_NO_PAD.encode(crate::crypto::random_bytes::<16>()),
            sub: member_id.to_string(),
            sid,
            events: serde_json::json!({ claims::BACKCHANNEL_LOGOUT_EVENT: {} }),
        };
        Ok(ring.current()?.sign("logout+jwt", &token)?)
    }
}

/// A code exchange that went through, before its ID token is signed.
struct Exchanged {
    code: rows::CodeRow,
    member: Member,
    access: String,
    refresh: Option<String>,
}

/// The code exchange, in one transaction: the code is locked, so a second exchange of it
/// waits and then finds it used (and revokes what the first issued). The ID token is signed
/// after the commit, with nothing locked. The member comes from the session cache when it
/// has them (a deactivation has deleted their sessions, and with them this code).
fn exchange_in(
    conn: &mut diesel::PgConnection,
    exchange: Exchange,
    live: &Live,
    now: DateTime<Utc>,
    idle: chrono::Duration,
) -> Result<Granted, OidcError> {
    use diesel::Connection as _;
    let refused = |why, email| Ok(Err(Granted::Refused(TokenError::InvalidGrant(why), email)));
    let outcome = conn.transaction(|conn| -> Result<Result<Exchanged, Granted>, OidcError> {
        let Some(code) = rows::lock_code(conn, &exchange.code)? else {
            return refused("the code is not valid", None);
        };
        let member = match live.cache().member(code.member_id) {
            Some(member) => Some(member),
            None => crate::models::member::find(conn, code.member_id)?,
        };
        let email = member.as_ref().map(|m| m.email.as_str().to_string());
        if code.app_id != exchange.app_id {
            return refused("the code was issued to another client", email);
        }
        if code.used_at.is_some() {
            let revoked = rows::revoke_family(conn, code.id)?;
            let mut row = NewAuditRow::new(AuditEvent::OidcCodeReused).detail(format!(
                "a code was presented again; {revoked} token(s) issued from it revoked"
            ));
            if let Some(email) = &email {
                row = row.email(email);
            }
            row.insert(conn)?;
            return Ok(Err(Granted::Replayed(
                TokenError::InvalidGrant("the code was already used"),
                email,
                code.id,
            )));
        }
        if code.expires_at <= now {
            return refused("the code has expired", email);
        }
        if exchange.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
            return refused("redirect_uri differs from the authorization request", email);
        }
        let verified = match (&code.code_challenge, &exchange.verifier) {
            (Some(challenge), Some(verifier)) => {
                CodeChallenge::from_stored(challenge.clone()).is_met_by(verifier)
            }
            (None, None) => true,
            _ => false,
        };
        if !verified {
            return refused("the code_verifier does not match", email);
        }
        let Some(member) = member.filter(|m| m.active) else {
            return refused("the member can no longer sign in", email);
        };
        if code.session_expires_at <= now {
            return refused("the sign-in this code was issued in has ended", email);
        }
        rows::mark_code_used(conn, code.id, now)?;
        let scopes = Scopes::parse(&code.scope);
        let (access, refresh) = issue_tokens(
            conn,
            code.id,
            code.session_id,
            code.app_id,
            &code.scope,
            scopes,
            now,
            idle,
        )?;
        Ok(Ok(Exchanged {
            code,
            member,
            access,
            refresh,
        }))
    })?;
    let exchanged = match outcome {
        Ok(exchanged) => exchanged,
        Err(granted) => return Ok(granted),
    };
    let code = &exchanged.code;
    let scopes = Scopes::parse(&code.scope);
    let amr: Vec<String> = code.amr.iter().flatten().cloned().collect();
    let id_token = IdToken {
        iss: &exchange.issuer,
        sub: claims::subject(&exchanged.member),
        aud: &exchange.client_id,
        exp: (now + ID_TOKEN_LIFETIME).timestamp(),
        iat: now.timestamp(),
        auth_time: code.auth_time.timestamp(),
        nonce: code.nonce.as_deref(),
        amr: &amr,
        sid: &code.sid,
        member: MemberClaims::of(&exchanged.member, scopes),
    };
    let signed = exchange.ring.current()?.sign("JWT", &id_token)?;
    Ok(Granted::Tokens(Tokens {
        access_token: exchanged.access,
        token_type: "Bearer",
        expires_in: ACCESS_LIFETIME.num_seconds(),
        id_token: Some(signed),
        refresh_token: exchanged.refresh,
        scope: exchanged.code.scope,
    }))
}

/// A new access token, and a refresh token when `offline_access` was granted.
#[allow(clippy::too_many_arguments)]
fn issue_tokens(
    conn: &mut diesel::PgConnection,
    code_id: i64,
    session_id: crate::domain::ids::SessionId,
    app_id: AppId,
    scope: &str,
    scopes: Scopes,
    now: DateTime<Utc>,
    refresh_lifetime: chrono::Duration,
) -> Result<(String, Option<String>), OidcError> {
    let (access, access_digest) = new_secret();
    rows::insert_token(
        conn,
        &NewToken {
            digest: OidcTokenDigest::new(access_digest),
            kind: TokenKind::Access,
            code_id,
            session_id,
            app_id,
            scope,
            expires_at: now + ACCESS_LIFETIME,
        },
    )?;
    let refresh = if scopes.offline_access {
        let (refresh, refresh_digest) = new_secret();
        rows::insert_token(
            conn,
            &NewToken {
                digest: OidcTokenDigest::new(refresh_digest),
                kind: TokenKind::Refresh,
                code_id,
                session_id,
                app_id,
                scope,
                // It dies with its session anyway; this bounds a row nobody presents again.
                expires_at: now + refresh_lifetime.max(chrono::Duration::days(1)),
            },
        )?;
        Some(refresh)
    } else {
        None
    };
    Ok((access, refresh))
}

fn refresh_in(
    conn: &mut diesel::PgConnection,
    presented: OidcTokenDigest,
    app_id: AppId,
    apps: &[AppRule],
    now: DateTime<Utc>,
    idle: chrono::Duration,
) -> Result<Granted, OidcError> {
    use diesel::Connection as _;
    conn.transaction(|conn| -> Result<Granted, OidcError> {
        let refused = |why| Ok(Granted::Refused(TokenError::InvalidGrant(why), None));
        let Some(token) = rows::lock_refresh_token(conn, &presented)? else {
            return refused("the refresh token is not valid");
        };
        if token.app_id != app_id {
            return refused("the refresh token was issued to another client");
        }
        if token.spent_at.is_some() {
            let revoked = rows::revoke_family(conn, token.code_id)?;
            NewAuditRow::new(AuditEvent::OidcRefused)
                .detail(format!(
                    "a spent refresh token was presented again; its family ({revoked} token(s)) revoked"
                ))
                .insert(conn)?;
            return Ok(Granted::Replayed(
                TokenError::InvalidGrant("the refresh token was already used"),
                None,
                token.code_id,
            ));
        }
        if token.expires_at <= now || token.session_expires_at <= now {
            return refused("the sign-in this token belongs to has ended");
        }
        let member = match token.member_id {
            Some(id) => crate::models::member::find(conn, id)?,
            None => None,
        };
        let admitted = member.as_ref().is_some_and(|member| {
            member.active
                && apps
                    .iter()
                    .find(|app| app.id == app_id)
                    .is_some_and(|app| app.admits(member))
        });
        if !admitted {
            rows::revoke_family(conn, token.code_id)?;
            return refused("the member may no longer open this app");
        }
        rows::spend_refresh_token(conn, token.id, now)?;
        let scopes = Scopes::parse(&token.scope);
        let (access, refresh) = issue_tokens(conn, token.code_id, token.session_id, app_id, &token.scope, scopes, now, idle)?;
        Ok(Granted::Tokens(Tokens {
            access_token: access,
            token_type: "Bearer",
            expires_in: ACCESS_LIFETIME.num_seconds(),
            id_token: None,
            refresh_token: refresh,
            scope: token.scope,
        }))
    })
}
