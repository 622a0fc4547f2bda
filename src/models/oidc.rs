//! The OpenID Provider's tables: apps' client registrations (columns on `apps`), one-time
//! codes (`oidc_codes`, each also the family of the tokens issued from it), tokens
//! (`oidc_tokens`, digests only), signing keys (`signing_keys`, sealed) and the back-channel
//! logouts owed (`oidc_logout_outbox`, filled by a trigger when a session ends).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bytea, Int8, Nullable, Text, Timestamptz};

use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::domain::digests::{
    ClientSecretDigest, OidcCodeDigest, OidcTokenDigest, SessionKeyDigest,
};
use crate::domain::ids::{AppId, MemberId, SessionId};
use crate::domain::oidc::{ClientId, RedirectUri};
use crate::models::member::Actor;
use crate::schema::{apps, oidc_codes, oidc_logout_outbox, oidc_tokens, sessions, signing_keys};

/// What `apps add --oidc` registers besides the app itself.
#[derive(Debug, Clone)]
pub struct Registration {
    pub public: bool,
    pub redirect_uris: Vec<RedirectUri>,
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    pub backchannel_logout_uri: Option<RedirectUri>,
}

/// The client an app became: its id, and its secret when one was made now (shown once).
#[derive(Debug)]
pub struct Registered {
    pub client_id: ClientId,
    pub new_secret: Option<String>,
}

fn texts(uris: &[RedirectUri]) -> Vec<String> {
    uris.iter().map(|uri| uri.as_str().to_string()).collect()
}

/// A new client secret: 256 random bits, of which only the digest is kept.
pub fn new_secret() -> (String, ClientSecretDigest) {
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(crate::crypto::random_bytes::<32>());
    let digest = ClientSecretDigest::sha256(secret.as_bytes());
    (secret, digest)
}

/// Makes `app_id` an OpenID Connect client, or changes its registration. A client id is made
/// once and kept; a confidential client without a secret gets one (a public one loses it).
pub fn register<'a>(
    conn: &mut PgConnection,
    app_id: AppId,
    registration: &Registration,
    actor: impl Into<Actor<'a>>,
) -> QueryResult<Registered> {
    let actor = actor.into();
    conn.transaction(|conn| {
        let (name, client_id, secret) = apps::table
            .find(app_id)
            .select((apps::name, apps::client_id, apps::client_secret_digest))
            .for_update()
            .first::<(String, Option<String>, Option<ClientSecretDigest>)>(conn)?;
        let client_id = client_id
            .as_deref()
            .and_then(ClientId::parse)
            .unwrap_or_else(ClientId::generate);
        let (new_secret, digest) = match (registration.public, secret) {
            (true, _) => (None, None),
            (false, Some(kept)) => (None, Some(kept)),
            (false, None) => {
                let (secret, digest) = new_secret();
                (Some(secret), Some(digest))
            }
        };
        diesel::update(apps::table.find(app_id))
            .set((
                apps::client_id.eq(client_id.as_str()),
                apps::client_secret_digest.eq(digest),
                apps::redirect_uris.eq(texts(&registration.redirect_uris)),
                apps::post_logout_redirect_uris.eq(texts(&registration.post_logout_redirect_uris)),
                apps::backchannel_logout_uri.eq(registration
                    .backchannel_logout_uri
                    .as_ref()
                    .map(RedirectUri::as_str)),
                apps::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)?;
        NewAuditRow::new(AuditEvent::AppChanged)
            .actor(actor)
            .detail(format!(
                "{name}: OpenID Connect, {} client, redirect URIs {}{}",
                if registration.public {
                    "public"
                } else {
                    "confidential"
                },
                texts(&registration.redirect_uris).join(" "),
                registration
                    .backchannel_logout_uri
                    .as_ref()
                    .map(|uri| format!(", back-channel logout {uri}"))
                    .unwrap_or_default(),
            ))
            .insert(conn)?;
        Ok(Registered {
            client_id,
            new_secret,
        })
    })
}

/// Why a secret could not be rotated.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0} is not an OpenID Connect app")]
    NotOidc(String),
    #[error("{0} is a public client: it has no secret")]
    Public(String),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// A new secret for a confidential client; the old one stops working at once (the apps
/// row's update makes every instance read the apps again). Audited `app_secret_rotated`.
pub fn rotate_secret<'a>(
    conn: &mut PgConnection,
    name: &str,
    actor: impl Into<Actor<'a>>,
) -> Result<String, SecretError> {
    let actor = actor.into();
    conn.transaction(|conn| {
        let found = apps::table
            .filter(apps::name.eq(name))
            .select((apps::id, apps::client_id, apps::client_secret_digest))
            .for_update()
            .first::<(AppId, Option<String>, Option<ClientSecretDigest>)>(conn)
            .optional()?;
        let (id, secret) = match found {
            Some((id, Some(_), secret)) => (id, secret),
            _ => return Err(SecretError::NotOidc(name.to_string())),
        };
        if secret.is_none() {
            return Err(SecretError::Public(name.to_string()));
        }
        let (secret, digest) = new_secret();
        diesel::update(apps::table.find(id))
            .set((
                apps::client_secret_digest.eq(digest),
                apps::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)?;
        NewAuditRow::new(AuditEvent::AppSecretRotated)
            .actor(actor)
            .detail(name.to_string())
            .insert(conn)?;
        Ok(secret)
    })
}

/// A code about to be handed to the app's redirect URI.
pub struct NewCode<'a> {
    pub digest: OidcCodeDigest,
    pub session_id: SessionId,
    pub app_id: AppId,
    pub member_id: MemberId,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub nonce: Option<&'a str>,
    pub code_challenge: Option<&'a str>,
    pub auth_time: DateTime<Utc>,
    pub amr: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

pub fn issue_code(conn: &mut PgConnection, code: &NewCode<'_>) -> QueryResult<()> {
    diesel::insert_into(oidc_codes::table)
        .values((
            oidc_codes::code_digest.eq(code.digest),
            oidc_codes::session_id.eq(code.session_id),
            oidc_codes::app_id.eq(code.app_id),
            oidc_codes::member_id.eq(code.member_id),
            oidc_codes::redirect_uri.eq(code.redirect_uri),
            oidc_codes::scope.eq(code.scope),
            oidc_codes::nonce.eq(code.nonce),
            oidc_codes::code_challenge.eq(code.code_challenge),
            oidc_codes::auth_time.eq(code.auth_time),
            oidc_codes::amr.eq(&code.amr),
            oidc_codes::expires_at.eq(code.expires_at),
        ))
        .execute(conn)
        .map(drop)
}

/// A code as the token endpoint checks it, with the session it was issued in.
#[derive(Debug, Clone, QueryableByName)]
pub struct CodeRow {
    #[diesel(sql_type = Int8)]
    pub id: i64,
    #[diesel(sql_type = Int8)]
    pub app_id: AppId,
    #[diesel(sql_type = Int8)]
    pub member_id: MemberId,
    #[diesel(sql_type = Int8)]
    pub session_id: SessionId,
    #[diesel(sql_type = Text)]
    pub redirect_uri: String,
    #[diesel(sql_type = Text)]
    pub scope: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub nonce: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub code_challenge: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub auth_time: DateTime<Utc>,
    #[diesel(sql_type = Array<Nullable<Text>>)]
    pub amr: Vec<Option<String>>,
    #[diesel(sql_type = Timestamptz)]
    pub expires_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub used_at: Option<DateTime<Utc>>,
    /// The session's `sid`, and until when it lives.
    #[diesel(sql_type = Text)]
    pub sid: String,
    #[diesel(sql_type = Timestamptz)]
    pub session_expires_at: DateTime<Utc>,
}

/// The code with this digest and its session, in one statement; only the code's row is
/// locked until the transaction ends, so that two exchanges of one code are decided one after
/// the other (the second then finds it used) while the session stays free for its own writes.
pub fn lock_code(conn: &mut PgConnection, digest: &OidcCodeDigest) -> QueryResult<Option<CodeRow>> {
    diesel::sql_query(
        "SELECT c.id, c.app_id, c.member_id, c.session_id, c.redirect_uri, c.scope, c.nonce, \
                c.code_challenge, c.auth_time, c.amr, c.expires_at, c.used_at, \
                s.sid, s.expires_at AS session_expires_at \
         FROM oidc_codes AS c JOIN sessions AS s ON s.id = c.session_id \
         WHERE c.code_digest = $1 \
         FOR UPDATE OF c",
    )
    .bind::<Bytea, _>(digest)
    .get_result(conn)
    .optional()
}

pub fn mark_code_used(conn: &mut PgConnection, id: i64, now: DateTime<Utc>) -> QueryResult<()> {
    diesel::update(oidc_codes::table.find(id))
        .set(oidc_codes::used_at.eq(now))
        .execute(conn)
        .map(drop)
}

/// Revokes every token of one family (issued from one code); how many there were.
pub fn revoke_family(conn: &mut PgConnection, code_id: i64) -> QueryResult<usize> {
    diesel::delete(oidc_tokens::table.filter(oidc_tokens::code_id.eq(code_id))).execute(conn)
}

/// Access or refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }

    fn parse(text: &str) -> Self {
        // The column's CHECK admits only the two.
        if text == "refresh" {
            TokenKind::Refresh
        } else {
            TokenKind::Access
        }
    }
}

pub struct NewToken<'a> {
    pub digest: OidcTokenDigest,
    pub kind: TokenKind,
    pub code_id: i64,
    pub session_id: SessionId,
    pub app_id: AppId,
    pub scope: &'a str,
    pub expires_at: DateTime<Utc>,
}

pub fn insert_token(conn: &mut PgConnection, token: &NewToken<'_>) -> QueryResult<()> {
    diesel::insert_into(oidc_tokens::table)
        .values((
            oidc_tokens::token_digest.eq(token.digest),
            oidc_tokens::kind.eq(token.kind.as_str()),
            oidc_tokens::code_id.eq(token.code_id),
            oidc_tokens::session_id.eq(token.session_id),
            oidc_tokens::app_id.eq(token.app_id),
            oidc_tokens::scope.eq(token.scope),
            oidc_tokens::expires_at.eq(token.expires_at),
        ))
        .execute(conn)
        .map(drop)
}

/// A token that has not been revoked or spent, on a session that has not ended, as
/// userinfo, introspection and the session cache need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveToken {
    pub kind: TokenKind,
    pub code_id: i64,
    pub app_id: AppId,
    pub member_id: MemberId,
    pub session_key: SessionKeyDigest,
    pub scope: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

type LiveTokenRow = (
    String,
    i64,
    AppId,
    Option<MemberId>,
    SessionKeyDigest,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);

pub fn find_live_token(
    conn: &mut PgConnection,
    digest: &OidcTokenDigest,
) -> QueryResult<Option<LiveToken>> {
    let row = oidc_tokens::table
        .inner_join(sessions::table)
        .filter(oidc_tokens::token_digest.eq(digest))
        .filter(oidc_tokens::spent_at.is_null())
        .filter(oidc_tokens::expires_at.gt(diesel::dsl::now))
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .select((
            oidc_tokens::kind,
            oidc_tokens::code_id,
            oidc_tokens::app_id,
            sessions::member_id,
            sessions::key_digest,
            oidc_tokens::scope,
            oidc_tokens::created_at,
            oidc_tokens::expires_at,
        ))
        .first::<LiveTokenRow>(conn)
        .optional()?;
    Ok(row.and_then(
        |(kind, code_id, app_id, member_id, session_key, scope, issued_at, expires_at)| {
            Some(LiveToken {
                kind: TokenKind::parse(&kind),
                code_id,
                app_id,
                member_id: member_id?,
                session_key,
                scope,
                issued_at,
                expires_at,
            })
        },
    ))
}

/// A refresh token as a refresh grant checks it, locked like a code.
#[derive(Debug, Clone)]
pub struct RefreshRow {
    pub id: i64,
    pub code_id: i64,
    pub app_id: AppId,
    pub session_id: SessionId,
    pub scope: String,
    pub expires_at: DateTime<Utc>,
    pub spent_at: Option<DateTime<Utc>>,
    pub session_expires_at: DateTime<Utc>,
    pub member_id: Option<MemberId>,
}

pub fn lock_refresh_token(
    conn: &mut PgConnection,
    digest: &OidcTokenDigest,
) -> QueryResult<Option<RefreshRow>> {
    type Locked = (
        i64,
        i64,
        AppId,
        SessionId,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let Some(token) = oidc_tokens::table
        .filter(oidc_tokens::token_digest.eq(digest))
        .filter(oidc_tokens::kind.eq(TokenKind::Refresh.as_str()))
        .select((
            oidc_tokens::id,
            oidc_tokens::code_id,
            oidc_tokens::app_id,
            oidc_tokens::session_id,
            oidc_tokens::scope,
            oidc_tokens::expires_at,
            oidc_tokens::spent_at,
        ))
        .for_update()
        .first::<Locked>(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let (session_expires_at, member_id) = sessions::table
        .find(token.3)
        .select((sessions::expires_at, sessions::member_id))
        .first::<(DateTime<Utc>, Option<MemberId>)>(conn)?;
    Ok(Some(RefreshRow {
        id: token.0,
        code_id: token.1,
        app_id: token.2,
        session_id: token.3,
        scope: token.4,
        expires_at: token.5,
        spent_at: token.6,
        session_expires_at,
        member_id,
    }))
}

pub fn spend_refresh_token(
    conn: &mut PgConnection,
    id: i64,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(oidc_tokens::table.find(id))
        .set(oidc_tokens::spent_at.eq(now))
        .execute(conn)
        .map(drop)
}

/// RFC 7009: revokes the token with this digest if it belongs to `app_id`; a refresh token
/// takes its whole family (the access tokens issued with it) along, and its family is
/// returned.
pub fn revoke_token(
    conn: &mut PgConnection,
    digest: &OidcTokenDigest,
    app_id: AppId,
) -> QueryResult<Option<i64>> {
    conn.transaction(|conn| {
        let found = oidc_tokens::table
            .filter(oidc_tokens::token_digest.eq(digest))
            .filter(oidc_tokens::app_id.eq(app_id))
            .select((oidc_tokens::id, oidc_tokens::kind, oidc_tokens::code_id))
            .first::<(i64, String, i64)>(conn)
            .optional()?;
        match found {
            None => Ok(None),
            Some((_, kind, code_id)) if TokenKind::parse(&kind) == TokenKind::Refresh => {
                revoke_family(conn, code_id).map(|_| Some(code_id))
            }
            Some((id, _, _)) => diesel::delete(oidc_tokens::table.find(id))
                .execute(conn)
                .map(|_| None),
        }
    })
}

/// Deletes what has expired: codes never exchanged (and their families' tokens) and tokens
/// past their life (`purge`).
pub fn purge(conn: &mut PgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    let tokens =
        diesel::delete(oidc_tokens::table.filter(oidc_tokens::expires_at.lt(now))).execute(conn)?;
    let codes = diesel::delete(
        oidc_codes::table
            .filter(oidc_codes::expires_at.lt(now))
            .filter(diesel::dsl::not(diesel::dsl::exists(
                oidc_tokens::table.filter(oidc_tokens::code_id.eq(oidc_codes::id)),
            ))),
    )
    .execute(conn)?;
    Ok(tokens + codes)
}

/// A signing key as stored: sealed.
#[derive(Debug, Clone, Queryable)]
pub struct StoredKey {
    pub kid: String,
    pub sealed: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// The current key and those retired after `published_since`, newest first.
pub fn published_keys(
    conn: &mut PgConnection,
    published_since: DateTime<Utc>,
) -> QueryResult<Vec<StoredKey>> {
    signing_keys::table
        .filter(
            signing_keys::retired_at
                .is_null()
                .or(signing_keys::retired_at.gt(published_since)),
        )
        .order(signing_keys::id.desc())
        .select((
            signing_keys::kid,
            signing_keys::sealed,
            signing_keys::created_at,
            signing_keys::retired_at,
        ))
        .load(conn)
}

/// Makes `kid` the current key, retiring the one before (if any), in one transaction.
/// `rotate`: whether an existing current key is retired; when false and one exists (another
/// instance made the first key meanwhile), nothing is written and false returned.
pub fn make_current<'a>(
    conn: &mut PgConnection,
    kid: &str,
    sealed: &[u8],
    rotate: bool,
    actor: impl Into<Actor<'a>>,
) -> QueryResult<bool> {
    let actor = actor.into();
    conn.transaction(|conn| {
        // One writer at a time: the first start of two instances makes one key, not two.
        diesel::sql_query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE").execute(conn)?;
        let current = signing_keys::table
            .filter(signing_keys::retired_at.is_null())
            .select(signing_keys::kid)
            .first::<String>(conn)
            .optional()?;
        if current.is_some() && !rotate {
            return Ok(false);
        }
        diesel::update(signing_keys::table.filter(signing_keys::retired_at.is_null()))
            .set(signing_keys::retired_at.eq(diesel::dsl::now))
            .execute(conn)?;
        diesel::insert_into(signing_keys::table)
            .values((signing_keys::kid.eq(kid), signing_keys::sealed.eq(sealed)))
            .execute(conn)?;
        if rotate {
            NewAuditRow::new(AuditEvent::SigningKeyRotated)
                .actor(actor)
                .detail(format!(
                    "new key {kid}; {} stays published for 24 hours",
                    current.as_deref().unwrap_or("no earlier key")
                ))
                .insert(conn)?;
        }
        Ok(true)
    })
}

/// A back-channel logout owed to an app.
#[derive(Debug, Clone, Queryable)]
pub struct Owed {
    pub id: i64,
    pub app_id: AppId,
    pub member_id: MemberId,
    pub email: Option<String>,
    pub sid: String,
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
}

/// Takes up to `limit` due deliveries, leasing each for `lease` so that another instance
/// does not send it at the same time (`SKIP LOCKED`: instances share the work).
pub fn take_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    lease: chrono::Duration,
    limit: i64,
) -> QueryResult<Vec<Owed>> {
    conn.transaction(|conn| {
        let due: Vec<Owed> = oidc_logout_outbox::table
            .filter(oidc_logout_outbox::next_attempt_at.le(now))
            .order(oidc_logout_outbox::id.asc())
            .limit(limit)
            .select((
                oidc_logout_outbox::id,
                oidc_logout_outbox::app_id,
                oidc_logout_outbox::member_id,
                oidc_logout_outbox::email,
                oidc_logout_outbox::sid,
                oidc_logout_outbox::created_at,
                oidc_logout_outbox::attempts,
            ))
            .for_update()
            .skip_locked()
            .load(conn)?;
        let ids: Vec<i64> = due.iter().map(|owed| owed.id).collect();
        diesel::update(oidc_logout_outbox::table.filter(oidc_logout_outbox::id.eq_any(&ids)))
            .set(oidc_logout_outbox::next_attempt_at.eq(now + lease))
            .execute(conn)?;
        Ok(due)
    })
}

/// Sent: the row goes, audited `oidc_logout_sent`, in one transaction.
pub fn delivered(conn: &mut PgConnection, owed: &Owed, app_name: &str) -> QueryResult<()> {
    conn.transaction(|conn| {
        diesel::delete(oidc_logout_outbox::table.find(owed.id)).execute(conn)?;
        let mut row = NewAuditRow::new(AuditEvent::OidcLogoutSent).detail(format!(
            "{app_name}: back-channel logout delivered (attempt {})",
            owed.attempts + 1
        ));
        if let Some(email) = &owed.email {
            row = row.email(email);
        }
        row.insert(conn).map(drop)
    })
}

/// Not sent: tried again at `next_attempt_at`, or, when that is `None`, given up. The first
/// failure and the giving up are audited `oidc_logout_failed`; the retries between are not,
/// so an app that is down for a day writes two rows, not fifty.
pub fn failed(
    conn: &mut PgConnection,
    owed: &Owed,
    app_name: &str,
    error: &str,
    next_attempt_at: Option<DateTime<Utc>>,
) -> QueryResult<()> {
    conn.transaction(|conn| {
        let attempts = owed.attempts + 1;
        let detail = match next_attempt_at {
            Some(_) => {
                format!("{app_name}: back-channel logout failed ({error}); retrying for 24 hours")
            }
            None => format!(
                "{app_name}: back-channel logout given up after {attempts} attempts ({error})"
            ),
        };
        match next_attempt_at {
            Some(next) => {
                diesel::update(oidc_logout_outbox::table.find(owed.id))
                    .set((
                        oidc_logout_outbox::attempts.eq(attempts),
                        oidc_logout_outbox::next_attempt_at.eq(next),
                        oidc_logout_outbox::last_error.eq(error),
                    ))
                    .execute(conn)?;
            }
            None => {
                diesel::delete(oidc_logout_outbox::table.find(owed.id)).execute(conn)?;
            }
        }
        if attempts == 1 || next_attempt_at.is_none() {
            let mut row = NewAuditRow::new(AuditEvent::OidcLogoutFailed).detail(detail);
            if let Some(email) = &owed.email {
                row = row.email(email);
            }
            row.insert(conn)?;
        }
        Ok(())
    })
}
