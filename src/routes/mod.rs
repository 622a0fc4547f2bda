//! One module per resource; `configure` is the route table and [`POLICY`], next to it, says
//! how the middleware treats each path.

mod apps;
mod audit;
mod auth;
mod dashboard;
mod forward_auth;
mod health;
mod login;
mod logout;
mod passkeys;
mod sessions;
mod static_files;
mod team;

use actix_web::{guard, web, HttpRequest, HttpResponse};

pub use dashboard::DashboardCache;
pub use login::LoginPage;
pub use passkeys::confirm_redirect as passkey_confirm_redirect;

use crate::middleware::guard::Access;
use crate::web::errors::PageError;

/// Every page answers HEAD as well as GET (actix drops the body of a HEAD response).
fn page() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(page().to(health::healthz)))
        .service(web::resource("/readyz").route(page().to(health::readyz)))
        .service(web::resource("/static/{name}").route(page().to(static_files::serve)))
        .service(
            web::resource("/login")
                .route(page().to(login::form))
                .route(web::post().to(login::submit)),
        )
        .service(
            web::resource("/auth/verify")
                .route(page().to(auth::verify::show))
                .route(web::post().to(auth::verify::submit)),
        )
        // Any method: proxies forward the request's own (nginx's auth_request sends GET).
        .service(web::resource("/auth/check").route(web::route().to(forward_auth::check)))
        .service(web::resource("/auth/forward").route(web::route().to(forward_auth::forward)))
        .service(web::resource("/.well-known/jwks.json").route(page().to(forward_auth::jwks)))
        .service(web::resource("/auth/return").route(page().to(auth::back_to_app::show)))
        .service(web::resource("/auth/code").route(web::post().to(auth::code::submit)))
        .service(web::resource("/auth/wait").route(page().to(auth::wait::poll)))
        .service(web::resource("/auth/approve").route(web::post().to(auth::approve::submit)))
        .service(
            web::resource("/auth/cancel")
                .route(page().to(auth::cancel::show))
                .route(web::post().to(auth::cancel::submit)),
        )
        .service(web::resource("/auth/passkey/start").route(web::post().to(auth::passkey::start)))
        .service(web::resource("/auth/passkey/finish").route(web::post().to(auth::passkey::finish)))
        .service(web::resource("/logout").route(web::post().to(logout::submit)))
        .service(web::resource("/").route(page().to(dashboard::show)))
        .service(web::resource("/audit").route(page().to(audit::show)))
        .service(web::resource("/audit.csv").route(page().to(audit::export_csv)))
        .service(
            web::resource("/team")
                .route(page().to(team::show))
                .route(web::post().to(team::add)),
        )
        .service(web::resource("/team/{id}/role").route(web::post().to(team::change_role)))
        .service(web::resource("/team/{id}/deactivate").route(web::post().to(team::deactivate)))
        .service(
            web::resource("/apps")
                .route(page().to(apps::show))
                .route(web::post().to(apps::add)),
        )
        .service(web::resource("/apps/{id}").route(web::post().to(apps::change)))
        .service(web::resource("/apps/{id}/remove").route(web::post().to(apps::remove)))
        .service(web::resource("/passkeys").route(page().to(passkeys::show)))
        .service(
            web::resource("/passkeys/register/start")
                .route(web::post().to(passkeys::register_start)),
        )
        .service(
            web::resource("/passkeys/register/finish")
                .route(web::post().to(passkeys::register_finish)),
        )
        .service(web::resource("/passkeys/confirm").route(page().to(passkeys::confirm_page)))
        .service(
            web::resource("/passkeys/confirm/start").route(web::post().to(passkeys::confirm_start)),
        )
        .service(
            web::resource("/passkeys/confirm/finish")
                .route(web::post().to(passkeys::confirm_finish)),
        )
        .service(web::resource("/passkeys/{id}/remove").route(web::post().to(passkeys::remove)))
        .service(web::resource("/sessions").route(page().to(sessions::show)))
        .service(web::resource("/sessions/revoke-all").route(web::post().to(sessions::revoke_all)))
        .service(web::resource("/sessions/{id}/revoke").route(web::post().to(sessions::revoke)))
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    PageError::NotFound.render(&req)
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
    /// Its POSTs spend the per-client sign-in budget (`LATCHKEY_LOGIN_RATE`).
    pub sign_in_budget: bool,
    /// Asked by a reverse proxy on behalf of a request to another app, with any method: no
    /// body is read and nothing the asking browser chose changes, so neither the body limit
    /// nor the CSRF check applies (a proxy forwards neither a token nor, usually, a body).
    pub forward_auth: bool,
    /// A GET that can sign a browser in (the waiting page's poll completes a cross-device
    /// approval), so it needs the session layer even without a session cookie.
    pub signs_in_on_get: bool,
}

impl Rule {
    const fn new(paths: Paths, access: Access) -> Self {
        Self {
            paths,
            access,
            sign_in_budget: false,
            forward_auth: false,
            signs_in_on_get: false,
        }
    }

    const fn sign_in_budget(self) -> Self {
        Self {
            sign_in_budget: true,
            ..self
        }
    }

    const fn forward_auth(self) -> Self {
        Self {
            forward_auth: true,
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
    Rule::new(Exact("/healthz"), Access::Public),
    Rule::new(Exact("/readyz"), Access::Public),
    // Browsers ask for it on their own; it is a plain 404, not a sign-in page.
    Rule::new(Exact("/favicon.ico"), Access::Public),
    Rule::new(Exact("/.well-known/jwks.json"), Access::Public),
    Rule::new(Under("/static/"), Access::Public),
    Rule::new(Exact("/auth/verify"), Access::Public).sign_in_budget(),
    Rule::new(Exact("/auth/code"), Access::Public).sign_in_budget(),
    Rule::new(Exact("/auth/approve"), Access::Public).sign_in_budget(),
    Rule::new(Exact("/auth/passkey/start"), Access::Public).sign_in_budget(),
    Rule::new(Exact("/auth/passkey/finish"), Access::Public).sign_in_budget(),
    Rule::new(Exact("/auth/wait"), Access::Public).signs_in_on_get(),
    Rule::new(Exact("/auth/check"), Access::Public).forward_auth(),
    Rule::new(Exact("/auth/forward"), Access::Public).forward_auth(),
    Rule::new(Under("/auth/"), Access::Public),
    // Proving a passkey again is a sign-in step of its own, with its own budget.
    Rule::new(Exact("/passkeys/confirm/finish"), Access::SignedIn).sign_in_budget(),
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
        assert_eq!(named(|r| r.forward_auth), ["/auth/check", "/auth/forward"]);
        assert_eq!(named(|r| r.signs_in_on_get), ["/auth/wait"]);
        assert_eq!(
            named(|r| r.sign_in_budget),
            [
                "/login",
                "/auth/verify",
                "/auth/code",
                "/auth/approve",
                "/auth/passkey/start",
                "/auth/passkey/finish",
                "/passkeys/confirm/finish",
            ]
        );
        assert!(rule_for("/auth/check").forward_auth && !rule_for("/auth/verify").forward_auth);
        assert!(!rule_for("/auth/verify/extra").sign_in_budget);
    }
}
