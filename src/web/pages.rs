//! Page rendering: one layout, one partial per page. An HTMX request (`HX-Request: true`)
//! gets the partial alone; any other request gets the layout wrapped around the same
//! partial, so the two can never drift apart.

use std::sync::{Arc, OnceLock};

use actix_web::http::{header, StatusCode};
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::logging::error_chain;
use crate::session::SessionData;
use crate::settings::OrgName;
use crate::state::AppState;
use crate::web::browser::Browser;

macro_rules! embedded_templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/", $name)))),*]
    };
}

/// Templates are compiled into the binary, so `latchkey` runs from any directory.
const TEMPLATES: &[(&str, &str)] = embedded_templates!(
    "layout.html",
    "app_denied.html",
    "app_host.html",
    "app_callback_failed.html",
    "app_logout.html",
    "partials/login.html",
    "partials/check_inbox.html",
    "partials/waiting.html",
    "partials/confirm.html",
    "partials/approve.html",
    "partials/link_problem.html",
    "partials/cancel.html",
    "partials/message.html",
    "partials/dashboard.html",
    "partials/dashboard_numbers.html",
    "partials/audit.html",
    "partials/audit_rows.html",
    "partials/team.html",
    "partials/team_rows.html",
    "partials/sessions.html",
    "partials/apps.html",
    "partials/back_to_app.html",
    "partials/oidc_error.html",
    "partials/oidc_logout.html",
    "partials/oidc_signed_out.html",
    "partials/passkeys.html",
    "partials/passkey_confirm.html",
    "partials/error.html",
);

#[allow(clippy::expect_used)]
fn tera() -> &'static tera::Tera {
    static TERA: OnceLock<tera::Tera> = OnceLock::new();
    TERA.get_or_init(|| {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![".html"]);
        tera.register_filter("browser", crate::web::human::browser_filter);
        // The templates are part of the binary; a broken one is a build defect that the
        // test suite renders, not a runtime condition.
        tera.add_raw_templates(TEMPLATES.iter().copied())
            .expect("embedded templates parse");
        tera
    })
}

/// Who the page is for, as shown in the navigation.
#[derive(Debug, Clone, Serialize)]
pub struct Viewer {
    pub email: String,
    /// The display name, when they have one.
    pub name: Option<String>,
    pub role: &'static str,
    pub is_admin: bool,
    pub can_read_audit: bool,
}

/// A page to render: the partial's name (under `partials/`), its title and its data.
pub struct Page {
    partial: &'static str,
    title: String,
    context: tera::Context,
    status: StatusCode,
    /// HTML rendered already (and cached), put into the page after rendering rather than
    /// copied through the template engine.
    slots: Vec<(&'static str, Arc<str>)>,
}

/// Stands in for a slot (or the partial inside the layout) while rendering: text no
/// template or escaping produces.
fn slot_marker(name: &str) -> String {
    format!("@@latchkey-slot-{name}@@")
}

/// `page` with its first `marker` replaced by `html`, copying each part once.
fn splice(page: String, marker: &str, html: &str) -> String {
    let Some(at) = page.find(marker) else {
        return page;
    };
    let mut out = String::with_capacity(page.len() - marker.len() + html.len());
    out.push_str(&page[..at]);
    out.push_str(html);
    out.push_str(&page[at + marker.len()..]);
    out
}

impl Page {
    pub fn new(partial: &'static str, title: impl Into<String>) -> Self {
        Self {
            partial,
            title: title.into(),
            context: tera::Context::new(),
            status: StatusCode::OK,
            slots: Vec::new(),
        }
    }

    /// Rendered HTML for the template variable `key` (written `{{ key | safe }}`).
    pub fn with_html(mut self, key: &'static str, html: Arc<str>) -> Self {
        self.slots.push((key, html));
        self
    }

    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.context.insert(key, &value);
        self
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn render(self, req: &HttpRequest) -> HttpResponse {
        let viewer = req.extensions().get::<Viewer>().cloned();
        let status = self.status;
        let org = org_name(req);
        match self.html(&csrf_token(req), viewer.as_ref(), is_htmx(req), &org) {
            Ok(body) => page_response(status, body),
            Err(err) => render_failure(&err),
        }
    }

    fn html(
        &self,
        csrf_token: &str,
        viewer: Option<&Viewer>,
        htmx: bool,
        org: &OrgName,
    ) -> Result<String, tera::Error> {
        let mut context = self.context.clone();
        context.insert("org", org.as_str());
        context.insert("csrf_token", csrf_token);
        context.insert("title", &self.title);
        context.insert("viewer", &viewer);
        for (name, _) in &self.slots {
            context.insert(*name, &slot_marker(name));
        }
        let partial = tera().render(&format!("partials/{}.html", self.partial), &context)?;
        let mut body = if htmx {
            partial
        } else {
            let content = slot_marker("content");
            context.insert("content", &content);
            splice(tera().render("layout.html", &context)?, &content, &partial)
        };
        for (name, html) in &self.slots {
            body = splice(body, &slot_marker(name), html);
        }
        Ok(body)
    }
}

/// `LATCHKEY_ORG_NAME`; the default where there is no app state (a test's bare service).
fn org_name(req: &HttpRequest) -> OrgName {
    req.app_data::<actix_web::web::Data<AppState>>()
        .map(|state| state.settings.org_name.clone())
        .unwrap_or_default()
}

fn page_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        // Pages hold CSRF tokens and personal data: never stored by caches.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::VARY, "HX-Request, Cookie"))
        .body(body)
}

/// An anonymous page whose only per-request value is the CSRF token (the sign-in form):
/// rendered once, as a full page and as an HTMX partial, and served by putting the token
/// between the parts, so a view costs no template work.
pub struct Prerendered {
    full: Vec<String>,
    partial: Vec<String>,
}

impl Prerendered {
    /// The token's stand-in while rendering: text no template or escaping produces.
    const TOKEN: &'static str = "@@latchkey-csrf-token@@";

    pub fn new(page: &Page, org: &OrgName) -> Result<Self, tera::Error> {
        let split = |html: String| html.split(Self::TOKEN).map(str::to_string).collect();
        Ok(Self {
            full: split(page.html(Self::TOKEN, None, false, org)?),
            partial: split(page.html(Self::TOKEN, None, true, org)?),
        })
    }

    pub fn render(&self, req: &HttpRequest) -> HttpResponse {
        let parts = if is_htmx(req) {
            &self.partial
        } else {
            &self.full
        };
        let token = tera::escape_html(&csrf_token(req));
        let mut body = String::with_capacity(
            parts.iter().map(String::len).sum::<usize>() + parts.len() * token.len(),
        );
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                body.push_str(&token);
            }
            body.push_str(part);
        }
        page_response(StatusCode::OK, body)
    }
}

/// A page of its own, without the layout (the forward-auth refusal, shown on an app's origin,
/// where Latchkey's stylesheet and script are not served).
pub fn render_standalone(template: &str, context: &tera::Context) -> Result<String, String> {
    tera()
        .render(template, context)
        .map_err(|err| error_chain(&err))
}

fn render_failure(err: &tera::Error) -> HttpResponse {
    log::error!("rendering a page: {}", error_chain(err));
    HttpResponse::InternalServerError()
        .content_type("text/plain; charset=utf-8")
        .body("Something went wrong on our side.")
}

pub fn is_htmx(req: &HttpRequest) -> bool {
    req.headers()
        .get("HX-Request")
        .is_some_and(|value| value.as_bytes() == b"true")
}

/// The session's token once signed in; before that, the one derived from the browser cookie.
pub fn csrf_token(req: &HttpRequest) -> String {
    if let Some(token) = SessionData::of(req).csrf_token() {
        return token;
    }
    let state = req.app_data::<actix_web::web::Data<AppState>>();
    match (req.extensions().get::<Browser>(), state) {
        (Some(browser), Some(state)) => browser.id.csrf_token(&state.keys.browser),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_template_parses() {
        let names: Vec<_> = tera().get_template_names().collect();
        assert_eq!(names.len(), TEMPLATES.len());
    }

    #[test]
    fn a_slot_is_spliced_in_as_it_is_once() {
        let marker = slot_marker("numbers");
        let page = format!("<main>{marker}</main><p>{marker}</p>");
        assert_eq!(
            splice(page, &marker, "<svg>&amp;</svg>"),
            format!("<main><svg>&amp;</svg></main><p>{marker}</p>")
        );
        assert_eq!(
            splice("<main></main>".into(), &marker, "x"),
            "<main></main>"
        );
    }

    #[test]
    fn a_prerendered_page_is_the_page_rendered_with_the_token() {
        let page = Page::new("login", "Sign in")
            .with("next", "/")
            .with("rd", Option::<&str>::None)
            .with("passkeys", true);
        let prerendered = Prerendered::new(&page, &OrgName::default()).unwrap();
        let token = "tok-123.abc_DEF";
        for (htmx, parts) in [(false, &prerendered.full), (true, &prerendered.partial)] {
            assert!(parts.len() > 1, "the token appears in the page");
            assert_eq!(
                parts.join(token),
                page.html(token, None, htmx, &OrgName::default()).unwrap(),
                "htmx: {htmx}"
            );
        }
    }

    #[test]
    fn no_template_carries_inline_script_or_style() {
        for (name, source) in TEMPLATES {
            let lower = source.to_lowercase();
            assert!(!lower.contains("<style"), "{name} has a <style> element");
            assert!(!lower.contains(" style="), "{name} has a style attribute");
            assert!(
                !lower.contains(" onclick") && !lower.contains(" onload"),
                "{name} has an inline handler"
            );
            for script in lower.split("<script").skip(1) {
                assert!(
                    script.trim_start().starts_with("src="),
                    "{name} has an inline script"
                );
            }
        }
    }
}
