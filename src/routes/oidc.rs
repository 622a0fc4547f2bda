//! Latchkey's OpenID Provider over HTTP: discovery, `/oidc/authorize`, `/oidc/token`,
//! `/oidc/userinfo`, `/oidc/revoke`, `/oidc/introspect` and `/oidc/logout`. This file reads
//! parameters and writes answers (JSON with `Cache-Control: no-store`, redirects, pages); what
//! they mean is the [`crate::oidc`] room's.

use actix_identity::Identity;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest as _, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;

use super::app_access::session_key_digest;
use crate::domain::oidc::{RedirectUri, Scopes};
use crate::forward_auth::check::{signed_in, CheckContext};
use crate::models::app::{by_client_id, AppRule};
use crate::oidc::authorize::{error_redirect, Authorize, AuthorizeParams, Outcome, Refused};
use crate::oidc::token::{authenticate, TokenError, TokenForm};
use crate::oidc::{claims, Context, OidcError, Refusal};
use crate::state::AppState;
use crate::web::client::client_info;
use crate::web::errors::PageError;
use crate::web::pages::Page;
use crate::web::redirect::{onward_page, see_other};

fn context(state: &AppState) -> Context<'_> {
    Context {
        db: &state.db,
        live: &state.live,
        settings: &state.settings,
    }
}

/// JSON that must not be cached (tokens, claims, errors of the token endpoints).
fn no_store_json(status: StatusCode, body: &impl serde::Serialize) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}

/// A failure that is not the app's: 503 while the database is away, 500 otherwise, as
/// RFC 6749's `temporarily_unavailable` / `server_error`.
fn server_failure(err: impl Into<OidcError>) -> HttpResponse {
    let err = err.into();
    let unavailable = matches!(&err, OidcError::Db(db) if db.is_unavailable());
    if unavailable {
        let mut response = no_store_json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "temporarily_unavailable"}),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        response
    } else {
        log::error!(target: crate::oidc::LOG_TARGET, "{err}");
        no_store_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"error": "server_error"}),
        )
    }
}

fn token_error(error: &TokenError) -> HttpResponse {
    let body = serde_json::json!({
        "error": error.code(),
        "error_description": error.description(),
    });
    match error {
        TokenError::InvalidClient(_) => {
            let mut response = no_store_json(StatusCode::UNAUTHORIZED, &body);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"latchkey\""),
            );
            response
        }
        _ => no_store_json(StatusCode::BAD_REQUEST, &body),
    }
}

/// `GET /.well-known/openid-configuration`.
pub async fn discovery(state: web::Data<AppState>) -> HttpResponse {
    let issuer = context(&state).issuer();
    let at = |path: &str| format!("{issuer}{path}");
    let body = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": at("/oidc/authorize"),
        "token_endpoint": at("/oidc/token"),
        "userinfo_endpoint": at("/oidc/userinfo"),
        "jwks_uri": at("/.well-known/jwks.json"),
        "revocation_endpoint": at("/oidc/revoke"),
        "introspection_endpoint": at("/oidc/introspect"),
        "end_session_endpoint": at("/oidc/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "scopes_supported": Scopes::SUPPORTED,
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "amr", "sid",
            "email", "email_verified", "name", "preferred_username", "groups"
        ],
        "subject_types_supported": ["public"],
        "prompt_values_supported": ["none", "login"],
        "authorization_response_iss_parameter_supported": true,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    });
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(body)
}

/// `GET /.well-known/jwks.json`: the assertion key and the OpenID Connect keys.
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    let mut keys = state.forward_auth.jwks()["keys"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The assertion key needs no database: while the OpenID Connect keys cannot be read,
    // the set holds it alone, and is not to be cached.
    let cache = match state.oidc.ring(context(&state)).await {
        Ok(ring) => {
            keys.extend(ring.jwks());
            "public, max-age=300"
        }
        Err(err) => {
            log::warn!("the JWK set without the OpenID Connect keys: {err}");
            "no-store"
        }
    };
    HttpResponse::Ok()
        .content_type("application/jwk-set+json")
        .insert_header((header::CACHE_CONTROL, cache))
        .json(serde_json::json!({ "keys": keys }))
}

/// The page for a request that cannot go back to the app (no such client, or a redirect URI
/// it did not register, or a sign-out that does not hold): never a redirect.
fn error_page(req: &HttpRequest, message: &str) -> HttpResponse {
    Page::new("oidc_error", "Cannot continue")
        .with("message", message)
        .status(StatusCode::BAD_REQUEST)
        .render(req)
}

/// `GET /oidc/authorize` (query) and `POST /oidc/authorize` (form).
pub async fn authorize_get(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<AuthorizeParams>,
) -> HttpResponse {
    authorize(req, state, query.into_inner()).await
}

pub async fn authorize_post(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<AuthorizeParams>,
) -> HttpResponse {
    authorize(req, state, form.into_inner()).await
}

async fn authorize(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: AuthorizeParams,
) -> HttpResponse {
    match authorize_inner(&req, &state, params).await {
        Ok(response) => response,
        Err(err) => err.render(&req),
    }
}

async fn authorize_inner(
    req: &HttpRequest,
    state: &AppState,
    params: AuthorizeParams,
) -> Result<HttpResponse, PageError> {
    let issuer = context(state).issuer();
    let apps = state.live.apps().await?;
    let came_back = params.latchkey_after.is_some();
    let request = match Authorize::parse(params, &apps) {
        Ok(request) => request,
        Err(Refused::Page(message)) => return Ok(error_page(req, message)),
        Err(Refused::Redirect {
            to,
            state: state_param,
            error,
            description,
        }) => {
            return Ok(see_other(&error_redirect(
                &to,
                state_param.as_deref(),
                error,
                description,
                &issuer,
            )))
        }
    };
    let now = Utc::now();
    let session = match session_key_digest(req, state) {
        Some(digest) => signed_in(&state.live, &state.settings, &digest, now.timestamp()).await?,
        None => None,
    };
    // Arriving from a sign-in form's redirect, the app is reached by a page of ours (the
    // CSP's form-action keeps that post's redirects on Latchkey), whatever the answer.
    let to_app = |url: &str| {
        if came_back {
            onward_page(req, url, &request.app.name)
        } else {
            see_other(url)
        }
    };
    let back = |error: &str, description: &str| {
        to_app(&error_redirect(
            &request.redirect_uri,
            request.state.as_deref(),
            error,
            description,
            &issuer,
        ))
    };
    match request.decide(session.as_ref().map(|s| s.signed_in_at), now) {
        Outcome::SignIn { next } => {
            let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
            Ok(see_other(&format!("/login?next={next}")))
        }
        Outcome::Error { error, description } => Ok(back(error, description)),
        Outcome::Issue => {
            let Some(session) = session else {
                return Ok(back("login_required", "the member is not signed in"));
            };
            if !request.app.admits(&session.member) {
                let check = CheckContext {
                    db: &state.db,
                    live: &state.live,
                    settings: &state.settings,
                };
                state
                    .forward_auth
                    .refuse(&check, session.member, &request.app, || client_info(req))
                    .await?;
                return Ok(back("access_denied", "this app does not let the member in"));
            }
            let url = state
                .oidc
                .issue_code(context(state), &request, &session, client_info(req), now)
                .await
                .map_err(|err| match err {
                    OidcError::Db(db) => PageError::from(db),
                    other => PageError::Unexpected(anyhow::Error::new(other)),
                })?;
            Ok(to_app(&url))
        }
    }
}

fn authorization(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
}

/// The app a token-endpoint request authenticates as, or the answer that refuses it (the
/// refusal of a known app is audited).
async fn authenticated(
    req: &HttpRequest,
    state: &AppState,
    form: &TokenForm,
) -> Result<AppRule, HttpResponse> {
    let apps = state.live.apps().await.map_err(server_failure)?;
    match authenticate(authorization(req), form, &apps) {
        Ok(app) => Ok(app.clone()),
        Err(refused) => {
            if let Some(app) = refused.named {
                if let Err(err) = state
                    .oidc
                    .audit_refusal(context(state), app, &refused.error, None, client_info(req))
                    .await
                {
                    return Err(server_failure(err));
                }
            }
            Err(token_error(&refused.error))
        }
    }
}

/// `POST /oidc/token`.
pub async fn token(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    let form = form.into_inner();
    let app = match authenticated(&req, &state, &form).await {
        Ok(app) => app,
        Err(response) => return response,
    };
    let now = Utc::now();
    let outcome = match form.grant_type.as_deref() {
        Some("authorization_code") => {
            state
                .oidc
                .exchange_code(context(&state), &app, &form, now)
                .await
        }
        Some("refresh_token") => state.oidc.refresh(context(&state), &app, &form, now).await,
        Some(_) => Ok(Err(TokenError::UnsupportedGrantType.into())),
        None => Ok(Err(
            TokenError::InvalidRequest("grant_type is missing").into()
        )),
    };
    match outcome {
        Ok(Ok(tokens)) => {
            state.metrics.oidc_token_issued();
            no_store_json(StatusCode::OK, &tokens)
        }
        Ok(Err(Refusal { error, email })) => {
            if matches!(error, TokenError::InvalidGrant(_)) {
                if let Err(err) = state
                    .oidc
                    .audit_refusal(context(&state), &app, &error, email, client_info(&req))
                    .await
                {
                    return server_failure(err);
                }
            }
            token_error(&error)
        }
        Err(err) => server_failure(err),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct BearerForm {
    access_token: Option<String>,
}

fn invalid_token() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `GET /oidc/userinfo` and `POST /oidc/userinfo`: the claims the token's scopes allow,
/// from the session cache.
pub async fn userinfo(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: Option<web::Form<BearerForm>>,
) -> HttpResponse {
    let from_header = authorization(&req).and_then(|value| {
        value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
    });
    let presented = match (
        from_header,
        form.as_ref().and_then(|f| f.access_token.as_deref()),
    ) {
        (Some(token), None) | (None, Some(token)) => token.to_string(),
        (None, None) => {
            return HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish()
        }
        (Some(_), Some(_)) => return invalid_token(),
    };
    match state
        .oidc
        .bearer(context(&state), &presented, Utc::now().timestamp())
        .await
    {
        Ok(Some((token, member))) => {
            let scopes = Scopes::parse(&token.scope);
            let mut body = serde_json::to_value(claims::MemberClaims::of(&member, scopes))
                .unwrap_or_else(|_| serde_json::json!({}));
            body["sub"] = serde_json::Value::String(claims::subject(&member));
            no_store_json(StatusCode::OK, &body)
        }
        Ok(None) => invalid_token(),
        Err(err) => server_failure(err),
    }
}

/// The authenticated app and the token it asks about (introspection, revocation), or the
/// answer that refuses the request.
async fn app_and_token(
    req: &HttpRequest,
    state: &AppState,
    form: TokenForm,
) -> Result<(AppRule, String), HttpResponse> {
    let app = authenticated(req, state, &form).await?;
    let presented = form
        .token
        .ok_or_else(|| token_error(&TokenError::InvalidRequest("token is missing")))?;
    Ok((app, presented))
}

/// `POST /oidc/introspect` (RFC 7662): only the app's own tokens are active to it.
pub async fn introspect(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    let (app, presented) = match app_and_token(&req, &state, form.into_inner()).await {
        Ok(asked) => asked,
        Err(response) => return response,
    };
    let found = state
        .oidc
        .any_token(context(&state), &presented, Utc::now().timestamp())
        .await;
    match found {
        Ok(Some((token, member))) if token.app_id == app.id => {
            let client_id = app
                .oidc
                .as_ref()
                .map(|c| c.client_id.as_str().to_string())
                .unwrap_or_default();
            no_store_json(
                StatusCode::OK,
                &serde_json::json!({
                    "active": true,
                    "sub": claims::subject(&member),
                    "client_id": client_id,
                    "scope": token.scope,
                    "exp": token.expires_at.timestamp(),
                    "iat": token.issued_at.timestamp(),
                    "token_type": match token.kind {
                        crate::models::oidc::TokenKind::Access => "Bearer",
                        crate::models::oidc::TokenKind::Refresh => "refresh_token",
                    },
                }),
            )
        }
        Ok(_) => no_store_json(StatusCode::OK, &serde_json::json!({"active": false})),
        Err(err) => server_failure(err),
    }
}

/// `POST /oidc/revoke` (RFC 7009): 200 whether or not the token was known.
pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    let (app, presented) = match app_and_token(&req, &state, form.into_inner()).await {
        Ok(asked) => asked,
        Err(response) => return response,
    };
    match state.oidc.revoke(context(&state), &app, &presented).await {
        Ok(()) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Err(err) => server_failure(err),
    }
}

/// RP-initiated logout's parameters (query on GET, hidden fields on the confirming POST).
#[derive(Debug, Default, Deserialize)]
pub struct LogoutParams {
    id_token_hint: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

/// Where a sign-out goes afterwards, when the request holds: the app and its registered
/// post-logout URI.
struct LogoutTarget {
    app_name: Option<String>,
    redirect: Option<RedirectUri>,
}

/// Checks a logout request: a hint must be an ID token this provider signed (RS256 only),
/// whose audience is the client named; a post-logout URI must be one that client registered.
async fn logout_target(
    state: &AppState,
    params: &LogoutParams,
) -> Result<LogoutTarget, &'static str> {
    let apps = state
        .live
        .apps()
        .await
        .map_err(|_| "Latchkey cannot read its apps right now.")?;
    let mut client_id = params.client_id.clone();
    if let Some(hint) = params.id_token_hint.as_deref() {
        let ring = state
            .oidc
            .ring(context(state))
            .await
            .map_err(|_| "Latchkey cannot read its signing keys right now.")?;
        let audience = verify_hint(&ring, hint, &context(state).issuer())
            .ok_or("The sign-out request carries an ID token Latchkey did not sign.")?;
        match &client_id {
            Some(id) if *id != audience => {
                return Err("The sign-out request names two different apps.")
            }
            _ => client_id = Some(audience),
        }
    }
    let app = client_id
        .as_deref()
        .and_then(|id| by_client_id(&apps, id))
        .map(|(app, _)| app);
    if client_id.is_some() && app.is_none() {
        return Err("The sign-out request names an app that is not registered.");
    }
    let redirect = match (params.post_logout_redirect_uri.as_deref(), app) {
        (None, _) => None,
        (Some(uri), Some(app)) => Some(
            app.oidc
                .as_ref()
                .and_then(|c| c.post_logout_redirect_uri(uri))
                .cloned()
                .ok_or("The app asked to send you to an address it did not register.")?,
        ),
        (Some(_), None) => {
            return Err("The sign-out request does not say which app it comes from.")
        }
    };
    Ok(LogoutTarget {
        app_name: app.map(|app| app.name.clone()),
        redirect,
    })
}

/// The `aud` of an ID token this provider signed, whatever its age (a hint may have
/// expired); anything else (another algorithm, another key, another issuer) is refused.
fn verify_hint(ring: &crate::oidc::keys::KeyRing, hint: &str, issuer: &str) -> Option<String> {
    use jsonwebtoken::{Algorithm, Validation};
    if hint.len() > 8192 {
        return None;
    }
    let header = jsonwebtoken::decode_header(hint).ok()?;
    if header.alg != Algorithm::RS256 {
        return None;
    }
    let key = ring.decoding_key(header.kid.as_deref()?)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.set_issuer(&[issuer]);
    let data = jsonwebtoken::decode::<serde_json::Value>(hint, key, &validation).ok()?;
    data.claims["aud"].as_str().map(str::to_string)
}

/// `GET /oidc/logout`: asks the member to confirm.
pub async fn logout_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<LogoutParams>,
) -> HttpResponse {
    let params = query.into_inner();
    let target = match logout_target(&state, &params).await {
        Ok(target) => target,
        Err(message) => return error_page(&req, message),
    };
    Page::new("oidc_logout", "Sign out")
        .with("app_name", &target.app_name)
        .with("id_token_hint", &params.id_token_hint)
        .with("client_id", &params.client_id)
        .with("post_logout_redirect_uri", &params.post_logout_redirect_uri)
        .with("state", &params.state)
        .render(&req)
}

/// `POST /oidc/logout`: ends the Latchkey session (and with it every app session and token
/// of it; apps with a back-channel URI are told), then back to the app or a signed-out page.
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LogoutParams>,
) -> HttpResponse {
    let params = form.into_inner();
    let target = match logout_target(&state, &params).await {
        Ok(target) => target,
        Err(message) => return error_page(&req, message),
    };
    let member = match session_key_digest(&req, &state) {
        Some(digest) => signed_in(
            &state.live,
            &state.settings,
            &digest,
            Utc::now().timestamp(),
        )
        .await
        .map(|s| s.map(|s| s.member)),
        None => Ok(None),
    };
    let member = match member {
        Ok(member) => member,
        Err(err) => return PageError::from(err).render(&req),
    };
    if let Some(member) = member {
        // The audit row comes first: without it, the session stays.
        if let Err(err) = state.signin.sign_out(member, client_info(&req)).await {
            return PageError::from(err).render(&req);
        }
        if let Ok(identity) = Identity::extract(&req).into_inner() {
            identity.logout();
        }
    }
    let mut response = match &target.redirect {
        Some(uri) => {
            let url = match params.state.as_deref() {
                Some(state_param) => uri.with_query(&[("state", state_param)]),
                None => uri.as_str().to_string(),
            };
            onward_page(&req, &url, target.app_name.as_deref().unwrap_or("the app"))
        }
        None => Page::new("oidc_signed_out", "Signed out")
            .with("app_name", &target.app_name)
            .render(&req),
    };
    response.headers_mut().insert(
        header::HeaderName::from_static("clear-site-data"),
        HeaderValue::from_static("\"cache\", \"storage\""),
    );
    response
}
