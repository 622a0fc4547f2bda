//! `/oidc/token`, `/oidc/revoke` and `/oidc/introspect` authenticate the app the same way
//! ([`authenticate`]), and answer errors as RFC 6749 §5.2 says ([`TokenError`]).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use crate::domain::digests::ClientSecretDigest;
use crate::models::app::{by_client_id, AppRule};

/// The form fields of the three endpoints (each reads what it needs).
#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Revocation and introspection: the token in question.
    pub token: Option<String>,
}

/// An RFC 6749 §5.2 error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid_request: {0}")]
    InvalidRequest(&'static str),
    /// Answered 401 with `WWW-Authenticate`.
    #[error("invalid_client: {0}")]
    InvalidClient(&'static str),
    #[error("invalid_grant: {0}")]
    InvalidGrant(&'static str),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::InvalidRequest(_) => "invalid_request",
            TokenError::InvalidClient(_) => "invalid_client",
            TokenError::InvalidGrant(_) => "invalid_grant",
            TokenError::UnsupportedGrantType => "unsupported_grant_type",
        }
    }

    pub fn description(&self) -> &'static str {
        match self {
            TokenError::InvalidRequest(why)
            | TokenError::InvalidClient(why)
            | TokenError::InvalidGrant(why) => why,
            TokenError::UnsupportedGrantType => {
                "only authorization_code and refresh_token are supported"
            }
        }
    }
}

/// The longest client id or secret read from a request; longer ones are not ours.
const MAX_CREDENTIAL: usize = 256;

/// The credentials a request carried: `client_secret_basic` or `client_secret_post`, or a
/// bare `client_id` (a public client).
fn credentials(
    authorization: Option<&str>,
    form: &TokenForm,
) -> Result<(String, Option<String>), TokenError> {
    let basic = match authorization {
        Some(value) => {
            let Some(encoded) = value
                .strip_prefix("Basic ")
                .or_else(|| value.strip_prefix("basic "))
            else {
                return Err(TokenError::InvalidClient(
                    "unsupported authentication scheme",
                ));
            };
            let decoded = STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or(TokenError::InvalidClient("malformed Basic credentials"))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or(TokenError::InvalidClient("malformed Basic credentials"))?;
            // RFC 6749 §2.3.1: each half is form-urlencoded before joining.
            let unescape = |text: &str| -> String {
                url::form_urlencoded::parse(format!("x={text}").as_bytes())
                    .next()
                    .map(|(_, value)| value.into_owned())
                    .unwrap_or_default()
            };
            Some((unescape(id), unescape(secret)))
        }
        None => None,
    };
    match (basic, &form.client_id, &form.client_secret) {
        (Some(_), _, Some(_)) => Err(TokenError::InvalidRequest(
            "use one client authentication method, not two",
        )),
        (Some((id, _)), Some(form_id), None) if *form_id != id => Err(TokenError::InvalidClient(
            "client_id differs from the credentials",
        )),
        (Some((id, secret)), _, None) => Ok((id, Some(secret))),
        (None, Some(id), secret) => Ok((id.clone(), secret.clone())),
        (None, None, _) => Err(TokenError::InvalidClient("no client authentication")),
    }
}

/// A client authentication that failed, and the app it named, if one is registered (its
/// refusal is then audited).
#[derive(Debug)]
pub struct ClientRefused<'a> {
    pub error: TokenError,
    pub named: Option<&'a AppRule>,
}

/// The app a request authenticates as. A confidential client must present its secret
/// (compared as digests, in constant time); a public client presents none.
pub fn authenticate<'a>(
    authorization: Option<&str>,
    form: &TokenForm,
    apps: &'a [AppRule],
) -> Result<&'a AppRule, ClientRefused<'a>> {
    let refused = |error, named| ClientRefused { error, named };
    let (id, secret) = credentials(authorization, form).map_err(|error| refused(error, None))?;
    if id.len() > MAX_CREDENTIAL || secret.as_ref().is_some_and(|s| s.len() > MAX_CREDENTIAL) {
        return Err(refused(TokenError::InvalidClient("unknown client"), None));
    }
    let Some((app, client)) = by_client_id(apps, &id) else {
        return Err(refused(TokenError::InvalidClient("unknown client"), None));
    };
    let wrong = |why| Err(refused(TokenError::InvalidClient(why), Some(app)));
    match (&client.secret, secret) {
        (None, None) => Ok(app),
        (None, Some(_)) => wrong("a public client has no secret"),
        (Some(_), None) => wrong("the client secret is missing"),
        (Some(expected), Some(sent)) => {
            let sent = ClientSecretDigest::sha256(sent.as_bytes());
            if bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
                Ok(app)
            } else {
                wrong("wrong client secret")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_unescaped_and_never_doubled() {
        let header = format!("Basic {}", STANDARD.encode("my%20id:s%3Acret"));
        let (id, secret) = credentials(Some(&header), &TokenForm::default()).unwrap();
        assert_eq!((id.as_str(), secret.as_deref()), ("my id", Some("s:cret")));
        let both = TokenForm {
            client_secret: Some("x".into()),
            ..TokenForm::default()
        };
        assert!(matches!(
            credentials(Some(&header), &both),
            Err(TokenError::InvalidRequest(_))
        ));
        assert!(matches!(
            credentials(Some("Basic !!!"), &TokenForm::default()),
            Err(TokenError::InvalidClient(_))
        ));
        assert!(matches!(
            credentials(None, &TokenForm::default()),
            Err(TokenError::InvalidClient(_))
        ));
    }
}
