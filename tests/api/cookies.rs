//! The cookies Latchkey sets: `HttpOnly`, `SameSite=Lax`, `Path=/` and no `Domain` always;
//! `Secure` and the `__Host-` prefix when the public URL is https.

use crate::helpers::{
    form_value, set_cookies, spawn_app, spawn_app_with, urlencode, TestSettings, HTTPS_URL,
};
use latchkey::domain::role::Role;

fn assert_cookie_attributes(cookie: &str, https: bool) {
    let attributes: Vec<String> = cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    let has = |a: &str| attributes.iter().any(|x| x == a);
    assert!(has("httponly"), "{cookie}");
    assert!(has("samesite=lax"), "{cookie}");
    assert!(has("path=/"), "{cookie}");
    assert!(
        !attributes.iter().any(|a| a.starts_with("domain")),
        "{cookie}"
    );
    let name = cookie.split('=').next().unwrap();
    if https {
        assert!(has("secure"), "{cookie}");
        assert!(name.starts_with("__Host-"), "{cookie}");
    } else {
        assert!(!has("secure"), "{cookie}");
        assert!(!name.starts_with("__Host-"), "{cookie}");
    }
}

/// A browser that keeps its cookies by hand, from the Set-Cookie headers as sent, so that
/// `Secure` cookies of the https settings can be used over the test's plain HTTP.
struct HandBrowser {
    client: reqwest::Client,
    jar: Vec<(String, String)>,
    /// Every Set-Cookie header seen, in order.
    seen: Vec<String>,
}

impl HandBrowser {
    fn new() -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn keep(&mut self, res: &reqwest::Response) {
        for cookie in set_cookies(res) {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.jar.retain(|(n, _)| n != name);
            let removed = value.is_empty() || cookie.to_ascii_lowercase().contains("max-age=0");
            if !removed {
                self.jar.push((name.to_string(), value.to_string()));
            }
            self.seen.push(cookie);
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, url: String) -> reqwest::Response {
        let res = self
            .client
            .get(url)
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&res);
        res
    }

    async fn page(&mut self, url: String) -> String {
        self.get(url).await.text().await.unwrap()
    }

    async fn post(&mut self, url: String, form: &[(&str, &str)]) -> reqwest::Response {
        let res = self
            .client
            .post(url)
            .header("Cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(&res);
        res
    }
}

#[actix_web::test]
async fn with_an_https_public_url_cookies_are_secure_and_host_prefixed() {
    let app = spawn_app_with(TestSettings::new().public_url(HTTPS_URL)).await;
    app.add_member("ann@example.org", Role::Member);
    let mut browser = HandBrowser::new();

    let res = browser.get(app.url("/login")).await;
    let first = set_cookies(&res);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("__Host-latchkey_browser="));
    let html = res.text().await.unwrap();
    let csrf = form_value(&html, "csrf_token").unwrap();

    let res = browser
        .post(
            app.url("/login"),
            &[("email", "ann@example.org"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(set_cookies(&res)
        .iter()
        .any(|c| c.starts_with("__Host-latchkey_signin=")));
    let (token, _) = app.sign_in_mail_to("ann@example.org", HTTPS_URL).await;

    let html = browser
        .page(app.url(&format!("/auth/verify?token={}", urlencode(&token))))
        .await;
    let csrf = form_value(&html, "csrf_token").unwrap();
    let res = browser
        .post(
            app.url("/auth/verify"),
            &[("token", &token), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert!(set_cookies(&res)
        .iter()
        .any(|c| c.starts_with("__Host-latchkey_session=")));
    let res = browser.get(app.url("/")).await;
    assert_eq!(res.status(), 200, "signed in through the __Host- cookies");
    let html = res.text().await.unwrap();
    let csrf = form_value(&html, "csrf_token").unwrap();

    // Logging out removes the session cookie: a removal a browser accepts needs the same
    // name, `Secure` and `Path=/`.
    let res = browser
        .post(app.url("/logout"), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(res.status(), 303);

    assert!(browser.seen.len() >= 3, "{:?}", browser.seen);
    for cookie in &browser.seen {
        assert_cookie_attributes(cookie, true);
    }
}

#[actix_web::test]
async fn over_http_cookies_are_http_only_lax_and_path_root() {
    let app = spawn_app().await;
    app.add_member("ann@example.org", Role::Member);
    let mut browser = HandBrowser::new();
    let res = browser.get(app.url("/login")).await;
    assert!(set_cookies(&res)[0].starts_with("latchkey_browser="));
    let csrf = form_value(&res.text().await.unwrap(), "csrf_token").unwrap();
    browser
        .post(
            app.url("/login"),
            &[("email", "ann@example.org"), ("csrf_token", &csrf)],
        )
        .await;
    let (token, _) = app.sign_in_mail_to("ann@example.org", &app.address).await;
    let html = browser
        .page(app.url(&format!("/auth/verify?token={}", urlencode(&token))))
        .await;
    let csrf = form_value(&html, "csrf_token").unwrap();
    let res = browser
        .post(
            app.url("/auth/verify"),
            &[("token", &token), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(res.status(), 303);
    let names: Vec<_> = browser
        .seen
        .iter()
        .map(|c| c.split('=').next().unwrap().to_string())
        .collect();
    for expected in ["latchkey_browser", "latchkey_signin", "latchkey_session"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    for cookie in &browser.seen {
        assert_cookie_attributes(cookie, false);
    }
    // Static files and health checks set no cookie at all.
    for path in ["/static/app.css", "/healthz"] {
        let res = reqwest::get(app.url(path)).await.unwrap();
        assert!(set_cookies(&res).is_empty(), "{path}");
    }
}
