//! `/oidc/authorize`: an app asks for a sign-in. The request is parsed once into
//! [`Authorize`]; what to do with it is one [`Outcome`]. An unknown client or a redirect URI it
//! did not register gets an error page (redirecting there would make Latchkey an open
//! redirector); every other mistake goes back to the app as an RFC 6749 §4.1.2.1 error.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::oidc::{CodeChallenge, RedirectUri, Scopes};
use crate::models::app::{by_client_id, AppRule, OidcClient};

/// The longest `state` or `nonce` kept: apps send 20 to 64 characters.
const MAX_OPAQUE: usize = 512;
/// The internal parameter a sign-in started here comes back with: the time it was asked for,
/// so that `prompt=login` and `max_age` are met by a sign-in made after it.
pub const SIGNED_IN_AFTER: &str = "latchkey_after";
/// Where a sign-in started by an app's authorization request comes back to.
pub const PATH: &str = "/oidc/authorize";

/// The request as sent (query or form).
#[derive(Debug, Default, Deserialize, Clone)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub latchkey_after: Option<String>,
}

/// A well-formed request from a registered client to one of its redirect URIs.
#[derive(Debug, Clone)]
pub struct Authorize {
    pub app: AppRule,
    pub client: std::sync::Arc<OidcClient>,
    pub redirect_uri: RedirectUri,
    pub scopes: Scopes,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub challenge: Option<CodeChallenge>,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    /// Set when this request comes back from a sign-in it asked for.
    pub signed_in_after: Option<i64>,
    params: AuthorizeParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    Default,
    /// Never show a page: answer `login_required` rather than ask for a sign-in.
    None,
    /// Ask for a fresh sign-in even when signed in.
    Login,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No such client, or a redirect URI it did not register: an error page, never a redirect.
    Page(&'static str),
    /// Back to the app's redirect URI with `error`, a description and the request's state.
    Redirect {
        to: RedirectUri,
        state: Option<String>,
        error: &'static str,
        description: &'static str,
    },
}

/// What a parsed request leads to, given who is signed in.
#[derive(Debug)]
pub enum Outcome {
    /// Ask the person to sign in (again), then come back to this path.
    SignIn { next: String },
    /// Refused, back to the app.
    Error {
        error: &'static str,
        description: &'static str,
    },
    /// Signed in, let in: issue a code.
    Issue,
}

impl Authorize {
    /// Parses a request against the registered apps.
    pub fn parse(params: AuthorizeParams, apps: &[AppRule]) -> Result<Self, Refused> {
        let Some((app, client)) = params
            .client_id
            .as_deref()
            .and_then(|id| by_client_id(apps, id))
        else {
            return Err(Refused::Page("This app is not registered with Latchkey."));
        };
        let client = client.clone();
        let Some(redirect_uri) = params
            .redirect_uri
            .as_deref()
            .and_then(|sent| client.redirect_uri(sent))
            .cloned()
        else {
            return Err(Refused::Page(
                "The app asked to send you to an address it did not register.",
            ));
        };
        let bad = |error: &'static str, description: &'static str| Refused::Redirect {
            to: redirect_uri.clone(),
            state: params.state.clone(),
            error,
            description,
        };
        let back = |refused: Refused| Err(refused);
        if params.state.as_ref().is_some_and(|s| s.len() > MAX_OPAQUE)
            || params.nonce.as_ref().is_some_and(|n| n.len() > MAX_OPAQUE)
        {
            return back(bad("invalid_request", "state or nonce is too long"));
        }
        match params.response_type.as_deref() {
            Some("code") => {}
            Some(_) => {
                return back(bad(
                    "unsupported_response_type",
                    "only the authorization code flow (response_type=code) is supported",
                ))
            }
            None => return back(bad("invalid_request", "response_type is missing")),
        }
        let scopes = Scopes::parse(params.scope.as_deref().unwrap_or(""));
        if !scopes.openid {
            return back(bad("invalid_scope", "the scope must include openid"));
        }
        let challenge = match (
            params.code_challenge.as_deref(),
            params.code_challenge_method.as_deref(),
        ) {
            (None, None) if client.is_public() => {
                return back(bad(
                    "invalid_request",
                    "a public client must use PKCE (S256)",
                ))
            }
            (None, None) => None,
            (Some(challenge), Some("S256")) => match CodeChallenge::parse(challenge) {
                Some(challenge) => Some(challenge),
                None => {
                    return back(bad(
                        "invalid_request",
                        "code_challenge is not an S256 challenge",
                    ))
                }
            },
            (Some(_), None) | (Some(_), Some(_)) | (None, Some(_)) => {
                return back(bad(
                    "invalid_request",
                    "only PKCE with code_challenge_method=S256 is supported",
                ))
            }
        };
        let mut prompt = Prompt::Default;
        for value in params.prompt.as_deref().unwrap_or("").split(' ') {
            match value {
                "none" if prompt == Prompt::Default => prompt = Prompt::None,
                "login" if prompt == Prompt::Default => prompt = Prompt::Login,
                "none" | "login" => {
                    return back(bad("invalid_request", "prompt=none cannot be combined"))
                }
                // No consent screen, no account chooser: an admin registered the app.
                _ => {}
            }
        }
        let max_age = match params.max_age.as_deref() {
            None => None,
            Some(text) => match text.parse::<i64>() {
                Ok(age) if age >= 0 => Some(age),
                _ => return back(bad("invalid_request", "max_age is not a number of seconds")),
            },
        };
        let signed_in_after = params
            .latchkey_after
            .as_deref()
            .and_then(|text| text.parse::<i64>().ok());
        Ok(Self {
            app: app.clone(),
            client,
            redirect_uri,
            scopes,
            state: params.state.clone(),
            nonce: params.nonce.clone(),
            challenge,
            prompt,
            max_age,
            signed_in_after,
            params,
        })
    }

    /// What to do, given the sign-in at `now` (its time, or `None` when not signed in).
    pub fn decide(&self, signed_in_at: Option<i64>, now: DateTime<Utc>) -> Outcome {
        let now = now.timestamp();
        let fresh_enough = |at: i64| {
            let after_asked = self.signed_in_after.is_some_and(|after| at >= after);
            let wants_fresh =
                self.prompt == Prompt::Login || self.max_age.is_some_and(|age| now - at > age);
            !wants_fresh || after_asked
        };
        match signed_in_at {
            Some(at) if fresh_enough(at) => Outcome::Issue,
            _ if self.prompt == Prompt::None => Outcome::Error {
                error: "login_required",
                description: "the member is not signed in",
            },
            // The way back always carries the time it was asked for: it meets `prompt=login`
            // and `max_age`, and says that the request comes back from a sign-in form, whose
            // redirects the CSP keeps on this origin (the app is then reached by a page).
            Some(_) => Outcome::SignIn {
                next: self.come_back(now),
            },
            None => Outcome::SignIn {
                next: self.come_back(self.signed_in_after.unwrap_or(now)),
            },
        }
    }

    /// This request as a path to come back to after signing in: `prompt=login` is dropped
    /// (the sign-in about to happen meets it) and the time it was asked for is added.
    fn come_back(&self, after: i64) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        let params = &self.params;
        let pairs = [
            ("response_type", &params.response_type),
            ("client_id", &params.client_id),
            ("redirect_uri", &params.redirect_uri),
            ("scope", &params.scope),
            ("state", &params.state),
            ("nonce", &params.nonce),
            ("code_challenge", &params.code_challenge),
            ("code_challenge_method", &params.code_challenge_method),
            ("max_age", &params.max_age),
        ];
        for (name, value) in pairs {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        query.append_pair(SIGNED_IN_AFTER, &after.to_string());
        format!("{PATH}?{}", query.finish())
    }

    /// The redirect back to the app: the code, `state` and `iss` (RFC 9207).
    pub fn success(&self, code: &str, issuer: &str) -> String {
        let mut pairs = vec![("code", code)];
        if let Some(state) = &self.state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", issuer));
        self.redirect_uri.with_query(&pairs)
    }
}

/// An error sent back to the app's redirect URI, with `state` and `iss`.
pub fn error_redirect(
    redirect_uri: &RedirectUri,
    state: Option<&str>,
    error: &str,
    description: &str,
    issuer: &str,
) -> String {
    let mut pairs = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        pairs.push(("state", state));
    }
    pairs.push(("iss", issuer));
    redirect_uri.with_query(&pairs)
}

/// The app a sign-in page's `next` continues to, when it is an authorization request: the
/// page says "to continue to NAME".
pub fn app_of_next<'a>(next: &str, apps: &'a [AppRule]) -> Option<&'a AppRule> {
    let query = next.strip_prefix(PATH)?.strip_prefix('?')?;
    let client_id = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "client_id")
        .map(|(_, value)| value.into_owned())?;
    by_client_id(apps, &client_id).map(|(app, _)| app)
}
