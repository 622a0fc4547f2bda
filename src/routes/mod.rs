//! One module per resource; `configure` is the route table. How the middleware treats each
//! path is [`crate::web::policy::POLICY`].

mod app_access;
mod apps;
mod audit;
mod auth;
mod dashboard;
mod forward_auth;
mod health;
mod login;
mod logout;
mod metrics;
mod oidc;
mod passkeys;
mod sessions;
mod static_files;
mod team;

use actix_web::{guard, web, HttpRequest, HttpResponse};

pub use login::LoginPage;

use crate::web::errors::PageError;

/// Every page answers HEAD as well as GET (actix drops the body of a HEAD response).
fn page() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(page().to(health::healthz)))
        .service(web::resource("/readyz").route(page().to(health::readyz)))
        .service(web::resource("/metrics").route(page().to(metrics::show)))
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
        .service(web::resource("/.well-known/jwks.json").route(page().to(oidc::jwks)))
        .service(
            web::resource("/.well-known/openid-configuration").route(page().to(oidc::discovery)),
        )
        .service(
            web::resource("/oidc/authorize")
                .route(page().to(oidc::authorize_get))
                .route(web::post().to(oidc::authorize_post)),
        )
        .service(web::resource("/oidc/token").route(web::post().to(oidc::token)))
        .service(
            web::resource("/oidc/userinfo")
                .route(page().to(oidc::userinfo))
                .route(web::post().to(oidc::userinfo)),
        )
        .service(web::resource("/oidc/revoke").route(web::post().to(oidc::revoke)))
        .service(web::resource("/oidc/introspect").route(web::post().to(oidc::introspect)))
        .service(
            web::resource("/oidc/logout")
                .route(page().to(oidc::logout_form))
                .route(web::post().to(oidc::logout)),
        )
        .service(web::resource("/auth/app").route(page().to(app_access::open)))
        // On each app's host: its proxy routes /.latchkey/ here and names the app.
        .service(web::resource("/.latchkey/callback").route(page().to(app_access::callback)))
        .service(
            web::resource("/.latchkey/logout")
                .route(page().to(app_access::logout_form))
                .route(web::post().to(app_access::logout)),
        )
        .service(web::resource("/.latchkey/static/{name}").route(page().to(static_files::serve)))
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
        .service(web::resource("/team/{id}/name").route(web::post().to(team::rename)))
        .service(web::resource("/team/{id}/groups").route(web::post().to(team::change_groups)))
        .service(web::resource("/team/{id}/deactivate").route(web::post().to(team::deactivate)))
        .service(
            web::resource("/team/{id}/passkeys/remove")
                .route(web::post().to(team::remove_passkeys)),
        )
        .service(
            web::resource("/apps")
                .route(page().to(apps::show))
                .route(web::post().to(apps::add)),
        )
        .service(web::resource("/apps/{id}").route(web::post().to(apps::change)))
        .service(web::resource("/apps/{id}/remove").route(web::post().to(apps::remove)))
        .service(web::resource("/apps/{id}/secret").route(web::post().to(apps::rotate_secret)))
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
