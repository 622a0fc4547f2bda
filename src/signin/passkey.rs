//! Signing in with a discoverable passkey: `POST /auth/passkey/start` hands out a challenge
//! (kept in `passkey_ceremonies`, the session holding only a handle on it),
//! `POST /auth/passkey/finish` consumes it, checks the assertion and signs in.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use diesel::prelude::*;
use subtle::ConstantTimeEq as _;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, PublicKeyCredential, RequestChallengeResponse,
    Webauthn,
};

use super::{complete, log_lines, Asker, Redemption, SignIn, SignedIn};
use crate::audit::rows::{AuditEvent, NewAuditRow};
use crate::db::DbError;
use crate::domain::approval_number::ApprovalNumber;
use crate::domain::digests::{CodeDigest, TokenDigest};
use crate::domain::next_path::NextPath;
use crate::models::member;
use crate::models::passkey;
use crate::models::sign_in_request::{self, CompletedBy, NewSignInRequest};
use crate::passkeys::ceremony::{self, CeremonyHandle, CeremonyKind};
use crate::passkeys::{verify_use, Ceremony, UseRefusal};

/// The state `POST /auth/passkey/start` keeps for the finish. The `next` path is kept as text
/// and parsed again on the way out.
pub type PasskeySignInCeremony = Ceremony<DiscoverableAuthentication, String>;

/// What `POST /auth/passkey/start` decided: the options for `navigator.credentials.get`
/// (no address asked: the authenticator offers the passkeys it holds for this site), and the
/// handle the session keeps for the finish.
pub enum PasskeySignInStart {
    Started(Box<(RequestChallengeResponse, CeremonyHandle)>),
    Failed(String),
}

/// What `POST /auth/passkey/finish` did.
#[derive(Debug)]
pub enum PasskeySignIn {
    SignedIn(Box<SignedIn>),
    Refused(UseRefusal),
}

impl SignIn {
    /// Hands out a challenge and keeps it (with `next`) until the finish consumes it.
    pub async fn start_passkey(
        &self,
        webauthn: &Webauthn,
        next: NextPath,
    ) -> Result<PasskeySignInStart, DbError> {
        let (options, state) = match webauthn.start_discoverable_authentication() {
            Ok(started) => started,
            Err(err) => return Ok(PasskeySignInStart::Failed(err.to_string())),
        };
        let kept = Ceremony::new(state, next.as_str().to_string());
        let handle = self
            .transaction(move |conn, _| ceremony::begin(conn, CeremonyKind::SignIn, None, &kept))
            .await?;
        Ok(match handle {
            Ok(handle) => PasskeySignInStart::Started(Box::new((options, handle))),
            Err(reason) => PasskeySignInStart::Failed(reason),
        })
    }

    /// Signs in with a discoverable passkey: the credential names its passkey, the passkey its
    /// member; the user handle the authenticator returns must be that member's, the assertion
    /// must verify against this session's challenge (consumed first, in this transaction, by
    /// one statement: of racing finishes only one finds it), and the counter must move
    /// forward (unless the authenticator keeps none, as synced passkeys do). The sign-in is
    /// recorded as a request completed by `passkey` at once, so its `signed_in` row names a
    /// request like every other sign-in. Refusals are audited `passkey_failed`.
    pub async fn finish_passkey(
        &self,
        webauthn: Webauthn,
        handle: Option<CeremonyHandle>,
        credential: Option<PublicKeyCredential>,
        asker: Asker,
        now: DateTime<Utc>,
    ) -> Result<PasskeySignIn, DbError> {
        let client = asker.client.clone();
        let outcome = self
            .transaction(move |conn, _| {
                let kept = ceremony::take(conn, handle.as_ref(), CeremonyKind::SignIn, None)?;
                finish(conn, &webauthn, kept, credential, &asker, now)
            })
            .await?;
        if let PasskeySignIn::SignedIn(signed_in) = &outcome {
            self.send_new_browser_notice(signed_in, &client, now);
        }
        Ok(outcome)
    }
}

fn finish(
    conn: &mut PgConnection,
    webauthn: &Webauthn,
    ceremony: Option<PasskeySignInCeremony>,
    credential: Option<PublicKeyCredential>,
    asker: &Asker,
    now: DateTime<Utc>,
) -> QueryResult<PasskeySignIn> {
    let refuse = |conn: &mut PgConnection, refusal: UseRefusal, email: Option<&str>| {
        let mut row = NewAuditRow::new(AuditEvent::PasskeyFailed)
            .client(&asker.client)
            .detail(format!("sign-in with a passkey: {}", refusal.reason()));
        if let Some(email) = email {
            row = row.email(email);
        }
        row.insert(conn)?;
        log_lines::note(AuditEvent::PasskeyFailed, email, None);
        Ok(PasskeySignIn::Refused(refusal))
    };
    let Some(ceremony) = ceremony else {
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
    let email = Some(member.email.as_str());
    if !bool::from(user_handle.as_bytes().ct_eq(&row.user_handle)) {
        return refuse(conn, UseRefusal::WrongMember, email);
    }
    if !member.active {
        return refuse(conn, UseRefusal::Deactivated, email);
    }
    let Some(stored) = crate::passkeys::stored_passkey(&row) else {
        return refuse(conn, UseRefusal::UnknownPasskey, email);
    };
    let key = DiscoverableKey::from(&stored);
    let Ok(result) = webauthn.finish_discoverable_authentication(
        &credential,
        ceremony.state,
        std::slice::from_ref(&key),
    ) else {
        return refuse(conn, UseRefusal::Invalid, email);
    };
    if let Err(refusal) = verify_use(conn, &row, &result)? {
        return refuse(conn, refusal, email);
    }
    let request = sign_in_request::insert(
        conn,
        NewSignInRequest {
            member_id: Some(member.id),
            requested_email: member.email.clone(),
            // Nobody holds a token or code for this request: it is completed at once.
            token_digest: TokenDigest::unmatchable(),
            code_digest: CodeDigest::unmatchable(),
            browser_digest: None,
            approval_number: ApprovalNumber::generate(),
            next_path: NextPath::parse(Some(&ceremony.extra)),
            requested_ip: asker.client.ip,
            requested_user_agent: asker.client.user_agent.clone(),
            expires_at: now + ChronoDuration::minutes(1),
        },
    )?;
    match complete(conn, request.id, CompletedBy::Passkey, asker, now)? {
        Redemption::SignedIn(signed_in) => Ok(PasskeySignIn::SignedIn(signed_in)),
        // Deactivated between the check above and now.
        Redemption::Refused(_) => refuse(conn, UseRefusal::Deactivated, email),
    }
}
