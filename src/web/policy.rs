//! The access policy: which paths are public, which need a signed-in member or a role, which
//! spend the sign-in budget, which a proxy asks on behalf of another app. One outer middleware
//! ([`resolve_policy`]) matches the path once and puts the [`Rule`] in the request's
//! extensions; the guard, the rate limiter, CSRF, the body limit and the anonymous-view layer
//! read it there ([`rule_of`]) and never the table. Below routes and middleware both.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpRequest};

use crate::domain::role::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    SignedIn,
    AuditReader,
    Admin,
    /// Auditors read (GET, HEAD), admins also change: the apps pages.
    AuditReaderAdminWrites,
}

impl Access {
    /// What a request with this method needs.
    pub fn for_method(self, method: &actix_web::http::Method) -> Self {
        use actix_web::http::Method;
        match self {
            Access::AuditReaderAdminWrites if matches!(*method, Method::GET | Method::HEAD) => {
                Access::AuditReader
            }
            Access::AuditReaderAdminWrites => Access::Admin,
            other => other,
        }
    }

    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public | Access::SignedIn => true,
            Access::AuditReader => role.can_read_audit(),
            Access::Admin | Access::AuditReaderAdminWrites => role.is_admin(),
        }
    }
}

/// Which paths a [`Rule`] covers. The path is the one the router matches on (percent-decoded:
/// `/%61udit` is `/audit`).
#[derive(Debug, Clone, Copy)]
pub enum Paths {
    Exact(&'static str),
    /// Everything below, as `/auth/`: the paths under it, not the prefix itself.
    Under(&'static str),
    /// A path and everything below it, as `/team` and `/team/4/role` (not `/teamwork`).
    Tree(&'static str),
}

impl Paths {
    fn matches(self, path: &str) -> bool {
        match self {
            Paths::Exact(exact) => path == exact,
            Paths::Under(prefix) => path.starts_with(prefix),
            Paths::Tree(root) => path
                .strip_prefix(root)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }
}

/// How the middleware treats the paths of one rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub paths: Paths,
    /// Who may use it (the guard).
    pub access: Access,
    /// Its POSTs start a sign-in, and spend the per-client sign-in budget
    /// (`LATCHKEY_LOGIN_RATE`). Only the starts: the later steps are bounded by each request's
    /// own tries and the per-member locks, and counting them too made one sign-in cost several
    /// posts.
    pub sign_in_budget: bool,
    /// Asked by a reverse proxy on behalf of a request to another app, with any method: no
    /// body is read and nothing the asking browser chose changes, so neither the body limit
    /// nor the CSRF check applies (a proxy forwards neither a token nor, usually, a body).
    pub forward_auth: bool,
    /// A GET that can sign a browser in (the waiting page's poll completes a cross-device
    /// approval), so it needs the session layer even without a session cookie.
    pub signs_in_on_get: bool,
    /// Called by an app (its server, or its page's form) with credentials of the protocol's
    /// own (a client secret, a bearer token, PKCE): no CSRF token can be asked of it, and the
    /// answer is the same for any browser.
    pub app_protocol: bool,
    /// Its answers never set a cookie: static files, health checks, the JWK set and the
    /// forward-auth answers may be cached or handed to a browser on another origin, and a
    /// shared cache must not hand one browser's cookie to many.
    pub sets_no_cookie: bool,
}

impl Rule {
    const fn new(paths: Paths, access: Access) -> Self {
        Self {
            paths,
            access,
            sign_in_budget: false,
            forward_auth: false,
            signs_in_on_get: false,
            sets_no_cookie: false,
            app_protocol: false,
        }
    }

    /// An OpenID Connect endpoint an app calls (see [`Rule::app_protocol`]).
    const fn app_protocol(self) -> Self {
        Self {
            app_protocol: true,
            ..self
        }
    }

    const fn sign_in_budget(self) -> Self {
        Self {
            sign_in_budget: true,
            ..self
        }
    }

    /// Asked by a proxy; sets no cookie either.
    const fn forward_auth(self) -> Self {
        Self {
            forward_auth: true,
            sets_no_cookie: true,
            ..self
        }
    }

    const fn sets_no_cookie(self) -> Self {
        Self {
            sets_no_cookie: true,
            ..self
        }
    }

    const fn signs_in_on_get(self) -> Self {
        Self {
            signs_in_on_get: true,
            ..self
        }
    }

    /// The path a sign-in budget is spent under, as the audit names it.
    pub fn name(&self) -> &'static str {
        match self.paths {
            Paths::Exact(path) | Paths::Under(path) | Paths::Tree(path) => path,
        }
    }
}

use Paths::{Exact, Tree, Under};

/// The whole access policy, first match wins; a path no rule names needs a signed-in member
/// ([`DEFAULT_RULE`]): new routes are closed until listed here.
pub const POLICY: &[Rule] = &[
    Rule::new(Exact("/login"), Access::Public).sign_in_budget(),
    Rule::new(Exact("/healthz"), Access::Public).sets_no_cookie(),
    Rule::new(Exact("/readyz"), Access::Public).sets_no_cookie(),
    // Its own bearer token (`LATCHKEY_METRICS_TOKEN`) guards it, not a session.
    Rule::new(Exact("/metrics"), Access::Public).sets_no_cookie(),
    // Browsers ask for it on their own; it is a plain 404, not a sign-in page.
    Rule::new(Exact("/favicon.ico"), Access::Public).sets_no_cookie(),
    Rule::new(Under("/.well-known/"), Access::Public).sets_no_cookie(),
    // An app's authorization request may be a form post from the app's own page.
    Rule::new(Exact("/oidc/authorize"), Access::Public).app_protocol(),
    Rule::new(Exact("/oidc/token"), Access::Public)
        .app_protocol()
        .sets_no_cookie(),
    Rule::new(Exact("/oidc/userinfo"), Access::Public)
        .app_protocol()
        .sets_no_cookie(),
    Rule::new(Exact("/oidc/revoke"), Access::Public)
        .app_protocol()
        .sets_no_cookie(),
    Rule::new(Exact("/oidc/introspect"), Access::Public)
        .app_protocol()
        .sets_no_cookie(),
    // The sign-out's own confirmation is a form of ours, with its CSRF token.
    Rule::new(Exact("/oidc/logout"), Access::Public),
    Rule::new(Under("/static/"), Access::Public).sets_no_cookie(),
    // Starting a passkey ceremony costs nothing (the sign-in page starts one for autofill on
    // every view); finishing one is the sign-in, and counts like `POST /login`.
    Rule::new(Exact("/auth/passkey/finish"), Access::Public).sign_in_budget(),
    Rule::new(Exact("/auth/wait"), Access::Public).signs_in_on_get(),
    Rule::new(Exact("/auth/check"), Access::Public).forward_auth(),
    Rule::new(Exact("/auth/forward"), Access::Public).forward_auth(),
    // An app's host, through its proxy: its own cookie is read there, no Latchkey cookie is
    // set, and its one POST (the app's sign-out) is checked by `Origin` in its handler.
    Rule::new(Under("/.latchkey/"), Access::Public).forward_auth(),
    Rule::new(Under("/auth/"), Access::Public),
    // Proving a passkey again (`/passkeys/confirm/finish`) is not a sign-in start: the member
    // is signed in already, and an assertion for a single-use challenge cannot be guessed.
    // It falls to the default rule (signed in, not counted).
    Rule::new(Exact("/audit"), Access::AuditReader),
    Rule::new(Exact("/audit.csv"), Access::AuditReader),
    Rule::new(Tree("/team"), Access::Admin),
    Rule::new(Tree("/apps"), Access::AuditReaderAdminWrites),
];

pub const DEFAULT_RULE: Rule = Rule::new(Under("/"), Access::SignedIn);

pub fn rule_for(path: &str) -> &'static Rule {
    POLICY
        .iter()
        .find(|rule| rule.paths.matches(path))
        .unwrap_or(&DEFAULT_RULE)
}

/// The rule [`resolve_policy`] matched for this request.
#[derive(Debug, Clone, Copy)]
struct Matched(&'static Rule);

/// Matches the request's path against [`POLICY`] once, for every layer inside it.
pub async fn resolve_policy(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // The path the router matches on (percent-decoded): `/%61udit` is `/audit`.
    let rule = rule_for(req.match_info().as_str());
    req.extensions_mut().insert(Matched(rule));
    next.call(req).await
}

/// The request's rule. A service assembled without [`resolve_policy`] (a unit test's) matches
/// the path here instead: never an open door.
pub fn rule_of(req: &HttpRequest) -> &'static Rule {
    req.extensions()
        .get::<Matched>()
        .map_or_else(|| rule_for(req.match_info().as_str()), |matched| matched.0)
}

/// Where the guard sends a request that needs a passkey proved first, and back afterwards.
pub fn passkey_confirm_location(next: Option<&str>) -> String {
    match next {
        Some(next) => {
            let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
            format!("/passkeys/confirm?next={next}")
        }
        None => "/passkeys/confirm".to_string(),
    }
}

/// Where the guard sends a page request that is not signed in, and back afterwards.
pub fn sign_in_location(next: &str) -> String {
    let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    format!("/login?next={next}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Method;

    fn access(path: &str) -> Access {
        rule_for(path).access
    }

    #[test]
    fn the_policy_is_default_deny() {
        assert_eq!(access("/login"), Access::Public);
        assert_eq!(access("/auth/verify"), Access::Public);
        assert_eq!(access("/auth/return"), Access::Public);
        assert_eq!(access("/static/htmx.min.js"), Access::Public);
        assert_eq!(access("/metrics"), Access::Public);
        assert_eq!(access("/"), Access::SignedIn);
        assert_eq!(access("/sessions"), Access::SignedIn);
        assert_eq!(access("/logout"), Access::SignedIn);
        assert_eq!(access("/anything-new"), Access::SignedIn);
        assert_eq!(access("/auth"), Access::SignedIn);
        assert_eq!(access("/audit"), Access::AuditReader);
        assert_eq!(access("/audit.csv"), Access::AuditReader);
        assert_eq!(access("/team"), Access::Admin);
        assert_eq!(access("/team/4/role"), Access::Admin);
        assert_eq!(access("/teamwork"), Access::SignedIn);
        assert_eq!(access("/auth/check"), Access::Public);
        let apps = access("/apps/3/remove");
        assert_eq!(apps.for_method(&Method::GET), Access::AuditReader);
        assert_eq!(apps.for_method(&Method::POST), Access::Admin);
        assert_eq!(access("/.well-known/jwks.json"), Access::Public);
    }

    #[test]
    fn forward_auth_the_sign_in_budget_and_sign_in_on_get_are_named_once() {
        let named = |pick: fn(&Rule) -> bool| -> Vec<&str> {
            POLICY
                .iter()
                .filter(|rule| pick(rule))
                .map(Rule::name)
                .collect()
        };
        assert_eq!(
            named(|r| r.forward_auth),
            ["/auth/check", "/auth/forward", "/.latchkey/"]
        );
        assert_eq!(named(|r| r.signs_in_on_get), ["/auth/wait"]);
        assert_eq!(
            named(|r| r.sets_no_cookie),
            [
                "/healthz",
                "/readyz",
                "/metrics",
                "/favicon.ico",
                "/.well-known/",
                "/oidc/token",
                "/oidc/userinfo",
                "/oidc/revoke",
                "/oidc/introspect",
                "/static/",
                "/auth/check",
                "/auth/forward",
                "/.latchkey/",
            ]
        );
        assert_eq!(
            named(|r| r.app_protocol),
            [
                "/oidc/authorize",
                "/oidc/token",
                "/oidc/userinfo",
                "/oidc/revoke",
                "/oidc/introspect"
            ]
        );
        assert!(rule_for("/.well-known/jwks.json").sets_no_cookie);
        assert!(rule_for("/.latchkey/callback").forward_auth);
        // The starts of a sign-in, and nothing after them.
        assert_eq!(
            named(|r| r.sign_in_budget),
            ["/login", "/auth/passkey/finish"]
        );
        for later in [
            "/auth/verify",
            "/auth/code",
            "/auth/approve",
            "/auth/passkey/start",
            "/passkeys/confirm/finish",
        ] {
            assert!(!rule_for(later).sign_in_budget, "{later}");
        }
        assert_eq!(access("/passkeys/confirm/finish"), Access::SignedIn);
        assert!(rule_for("/auth/check").forward_auth && !rule_for("/auth/verify").forward_auth);
        assert!(!rule_for("/login/extra").sign_in_budget);
    }

    #[test]
    fn roles_match_the_contract() {
        assert!(Access::AuditReader.allows(Role::Auditor));
        assert!(Access::AuditReader.allows(Role::Admin));
        assert!(!Access::AuditReader.allows(Role::Member));
        assert!(!Access::Admin.allows(Role::Auditor));
        assert!(Access::SignedIn.allows(Role::Member));
    }
}
