//! Browsers as typed actors: `app.visitor()` and `app.member(Role::Admin, email)` give a
//! `Browser` that knows the app's address, keeps its cookies and fills in the CSRF token of
//! its forms, so that a test reads as what a person does:
//! `admin.post("/team").form(&[("role", "member")]).await`.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::cookie::{CookieStore as _, Jar};

use super::{form_value, urlencode};

/// One browser: its own cookie jar, redirects not followed, requests relative to `base`.
pub struct Browser {
    base: String,
    client: reqwest::Client,
    jar: Arc<Jar>,
    /// The page whose form supplies the CSRF token of `post`, unless the request names one.
    csrf_page: String,
}

impl Browser {
    /// A fresh browser for the server at `base`, named `user_agent`.
    pub fn new(base: &str, user_agent: &str) -> Self {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar.clone())
            .user_agent(user_agent)
            .build()
            .unwrap();
        Self {
            base: base.to_string(),
            client,
            jar,
            csrf_page: "/login".into(),
        }
    }

    /// The same browser, reading the token of its posts from `path` (`/login` unless told).
    pub fn csrf_from(mut self, path: &str) -> Self {
        self.csrf_page = path.to_string();
        self
    }

    /// `path` on this browser's server; an absolute URL (a link from a mail) stays as it is.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            return path.to_string();
        }
        format!("{}{path}", self.base)
    }

    /// `GET path`; `.htmx()` or `.header(..)` before awaiting.
    pub fn get(&self, path: &str) -> Request<'_> {
        self.request(reqwest::Method::GET, path)
    }

    pub fn head(&self, path: &str) -> Request<'_> {
        self.request(reqwest::Method::HEAD, path)
    }

    /// `POST path` with the CSRF token of this browser's page added to the form; see
    /// `Request::csrf` and `Request::without_csrf` for the other cases.
    pub fn post(&self, path: &str) -> Request<'_> {
        self.request(reqwest::Method::POST, path)
    }

    /// `method path`, for the methods without a shortcut.
    pub fn request(&self, method: reqwest::Method, path: &str) -> Request<'_> {
        Request {
            browser: self,
            method,
            path: path.to_string(),
            headers: Vec::new(),
            fields: None,
            body: None,
            csrf: Csrf::FromPage(self.csrf_page.clone()),
        }
    }

    /// The CSRF token the page at `path` carries for this browser (a `GET`).
    pub async fn csrf(&self, path: &str) -> String {
        let html = self.get(path).await.text().await.unwrap();
        form_value(&html, "csrf_token").expect("the page carries a CSRF token")
    }

    /// Asks for a sign-in link: `POST /login` with `email` (the token read from `/login`).
    pub async fn request_link(&self, email: &str) -> reqwest::Response {
        self.post("/login")
            .form(&[("email", email)])
            .csrf(&self.csrf("/login").await)
            .await
    }

    /// Opens the confirmation page of `token` and posts its form, as a person would.
    pub async fn confirm_link(&self, token: &str) -> reqwest::Response {
        let page = format!("/auth/verify?token={}", urlencode(token));
        let csrf = self.csrf(&page).await;
        self.post("/auth/verify")
            .form(&[("token", token)])
            .csrf(&csrf)
            .await
    }

    /// The `Cookie` header this browser sends its server (`a=1; b=2`), if it holds any.
    pub fn cookie_header(&self) -> Option<String> {
        let url = reqwest::Url::parse(&self.base).unwrap();
        let header = self.jar.cookies(&url)?;
        Some(header.to_str().unwrap().to_string())
    }

    /// Puts `cookie` (`name=value`) in this browser's jar for its server, as if it had set it.
    pub fn add_cookie(&self, cookie: &str) {
        let url = reqwest::Url::parse(&self.base).unwrap();
        self.jar.add_cookie_str(cookie, &url);
    }

    /// The values of every cookie this browser holds for its server.
    pub fn cookie_values(&self) -> Vec<String> {
        let Some(header) = self.cookie_header() else {
            return Vec::new();
        };
        header
            .split("; ")
            .filter_map(|pair| pair.split_once('=').map(|(_, v)| v.to_string()))
            .collect()
    }
}

/// Where a post's CSRF token comes from.
enum Csrf {
    /// Read from this page just before posting (one `GET`), as the old helpers did.
    FromPage(String),
    Token(String),
    Without,
}

/// A request being put together; awaiting it sends it.
pub struct Request<'b> {
    browser: &'b Browser,
    method: reqwest::Method,
    path: String,
    headers: Vec<(String, String)>,
    /// `None`: no form was given (a post then carries only its token, if any).
    fields: Option<Vec<(String, String)>>,
    /// A body sent as it is, instead of a form.
    body: Option<reqwest::Body>,
    csrf: Csrf,
}

impl Request<'_> {
    /// As HTMX sends it: `HX-Request: true`.
    pub fn htmx(self) -> Self {
        self.header("HX-Request", "true")
    }

    /// `.htmx()` when `on`.
    pub fn htmx_if(self, on: bool) -> Self {
        if on {
            self.htmx()
        } else {
            self
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The form's fields (the CSRF token goes after them).
    pub fn form(mut self, fields: &[(&str, &str)]) -> Self {
        self.fields = Some(
            fields
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        );
        self
    }

    /// Posts `token` as the CSRF token instead of reading one from a page.
    pub fn csrf(mut self, token: &str) -> Self {
        self.csrf = Csrf::Token(token.to_string());
        self
    }

    /// Sends `body` as it is (with whatever `Content-Type` a `.header(..)` gives): no form,
    /// and no CSRF token added; one that belongs in the body or a header is the caller's.
    pub fn body(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.body = Some(body.into());
        self.csrf = Csrf::Without;
        self
    }

    /// Posts no CSRF token at all.
    pub fn without_csrf(mut self) -> Self {
        self.csrf = Csrf::Without;
        self
    }

    async fn send(self) -> reqwest::Response {
        let browser = self.browser;
        let mut request = browser
            .client
            .request(self.method.clone(), browser.url(&self.path));
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(body) = self.body {
            assert!(
                self.fields.is_none() && matches!(self.csrf, Csrf::Without),
                "a raw body carries no form and no added CSRF token"
            );
            return request.body(body).send().await.expect("sending a request");
        }
        if self.method == reqwest::Method::POST {
            let token = match self.csrf {
                Csrf::FromPage(page) => Some(browser.csrf(&page).await),
                Csrf::Token(token) => Some(token),
                Csrf::Without => None,
            };
            let mut fields = self.fields;
            if let Some(token) = token {
                fields
                    .get_or_insert_with(Vec::new)
                    .push(("csrf_token".into(), token));
            }
            if let Some(fields) = fields {
                request = request.form(&fields);
            }
        } else {
            assert!(
                self.fields.is_none(),
                "a form is posted, not sent with a GET"
            );
        }
        request.send().await.expect("sending a request")
    }
}

impl<'b> IntoFuture for Request<'b> {
    type Output = reqwest::Response;
    type IntoFuture = Pin<Box<dyn Future<Output = reqwest::Response> + Send + 'b>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A `303 See Other` to `location`.
#[track_caller]
pub fn assert_redirect_to(response: &reqwest::Response, location: &str) {
    assert_eq!(response.status(), 303, "a redirect to {location}");
    assert_eq!(response.headers()["location"], location);
}
