//! The attacks of the adversarial review, each performed as described and shown to fail:
//! guessing the approval number, telling members from strangers by the later steps,
//! guessing codes without end, flooding the audit with link fetches, and planting a
//! sign-in cookie.

use latchkey::domain::role::Role;
use std::time::Duration;

use crate::helpers::{
    form_value, one, parse_page, select, spawn_app_with, Browser, TestApp, TestSettings,
};

/// Limits out of the way: these tests make many requests from one address on purpose.
fn generous() -> TestSettings {
    TestSettings::new()
        .login_rate(1000, Duration::from_secs(60))
        .email_rate(1000, Duration::from_secs(60))
        .admins(&["boss@example.org"])
}

async fn text(res: reqwest::Response) -> String {
    res.text().await.unwrap()
}

/// The number the asking browser's waiting page shows.
async fn shown_number(browser: &Browser) -> String {
    let html = text(browser.get("/auth/wait").await).await;
    let page = parse_page(&html);
    let numbers = select(&page, ".number");
    assert_eq!(numbers.len(), 1, "one number on the waiting page: {html}");
    crate::helpers::text(numbers[0])
}

/// Opens the link on another device and types `number` into the approval form.
async fn approve_with(app: &TestApp, token: &str, number: &str) -> reqwest::Response {
    let phone = app.visitor();
    let page = text(
        phone
            .get(&format!(
                "/auth/verify?token={}",
                crate::helpers::urlencode(token)
            ))
            .await,
    )
    .await;
    assert!(
        page.contains("self-reported"),
        "the asking browser's own description is marked as such: {page}"
    );
    let csrf = form_value(&page, "csrf_token").unwrap();
    phone
        .post("/auth/approve")
        .form(&[("token", token), ("number", number)])
        .csrf(&csrf)
        .await
}

fn other_number(number: &str) -> String {
    let n: u8 = number.parse().unwrap();
    (if n == 99 { 10 } else { n + 1 }).to_string()
}

fn alerts_to(app: &TestApp, subject: &str) -> Vec<String> {
    let mut to: Vec<String> = app
        .smtp
        .received()
        .iter()
        .filter(|m| m.header("Subject").is_some_and(|s| s.contains(subject)))
        .filter_map(|m| m.header("To"))
        .collect();
    to.sort();
    to
}

async fn wait_for_alerts(app: &TestApp, subject: &str, count: usize) -> Vec<String> {
    for _ in 0..200 {
        let to = alerts_to(app, subject);
        if to.len() >= count {
            return to;
        }
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
    alerts_to(app, subject)
}

#[actix_web::test]
async fn approval_needs_the_typed_number_and_three_wrong_numbers_lock_it() {
    let app = spawn_app_with(generous()).await;
    app.add_member("ann@example.org", Role::Member);

    // An attacker asks for Ann's link three times; Ann, on her phone, cannot know the number
    // the attacker's page shows, and every guess cancels that request.
    for round in 1..=3 {
        let attacker = app.visitor();
        let before = app.smtp.received().len();
        attacker.request_link("ann@example.org").await;
        let mail = app.next_sign_in_mail(before).await;
        let shown = shown_number(&attacker).await;
        let res = approve_with(&app, &mail.token, &other_number(&shown)).await;
        assert_eq!(res.status(), 403, "round {round}");
        let after = text(attacker.get("/auth/wait").await).await;
        assert!(after.contains("no longer open"), "round {round}: {after}");
        assert_eq!(app.count("sessions WHERE member_id IS NOT NULL"), 0);
    }
    let events = app.audit_events();
    assert_eq!(
        events.iter().filter(|e| *e == "approval_mismatch").count(),
        3
    );
    assert_eq!(events.iter().filter(|e| *e == "approval_locked").count(), 1);
    let told = wait_for_alerts(&app, "Sign-in approval failed", 6).await;
    assert_eq!(
        told.iter()
            .filter(|t| t.contains("ann@example.org"))
            .count(),
        3,
        "the member is told of each: {told:?}"
    );
    assert_eq!(
        told.iter()
            .filter(|t| t.contains("boss@example.org"))
            .count(),
        3,
        "so are the admins: {told:?}"
    );

    // Locked: even the right number no longer approves anything today.
    let attacker = app.visitor();
    let before = app.smtp.received().len();
    attacker.request_link("ann@example.org").await;
    let mail = app.next_sign_in_mail(before).await;
    let shown = shown_number(&attacker).await;
    let res = approve_with(&app, &mail.token, &shown).await;
    assert_eq!(res.status(), 403);
    assert!(text(res).await.contains("Approval is locked"));
    let waiting = attacker.get("/auth/wait").await;
    assert!(waiting.headers().get("hx-redirect").is_none());
    assert_eq!(app.count("sessions WHERE member_id IS NOT NULL"), 0);
    assert_eq!(
        app.audit_events()
            .iter()
            .filter(|e| *e == "approval_locked")
            .count(),
        2,
        "the refusal is audited too"
    );

    // Ann's own browser still signs in by link.
    let ann = app.visitor();
    assert_eq!(app.sign_in(&ann, "ann@example.org").await.status(), 303);
}

/// What a browser sees of one answer: status, headers (sorted) and body.
type Seen = (u16, Vec<(String, String)>, String);

/// A response with what differs between any two requests masked: addresses, numbers,
/// tokens, cookie values and dates.
async fn masked(res: reqwest::Response) -> Seen {
    let status = res.status().as_u16();
    let mut headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or_default();
            let value = match name.as_str() {
                "set-cookie" => {
                    let (cookie, attributes) = value.split_once(';').unwrap_or((value, ""));
                    let name = cookie.split('=').next().unwrap_or_default();
                    format!("{name}=VALUE;{attributes}")
                }
                _ => value.to_string(),
            };
            (name.to_string(), value)
        })
        .collect();
    headers.sort();
    let body = res.text().await.unwrap();
    let body = mask(&body);
    (status, headers, body)
}

/// Masks e-mail addresses, CSRF tokens (in the meta tag, hidden inputs and hx-headers) and
/// every run of digits.
fn mask(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    for word in body.split_inclusive(['"', '>', '<', ' ']) {
        if word.contains('@') && word.contains('.') {
            out.push_str("EMAIL");
            out.push(word.chars().last().unwrap_or(' '));
        } else if word.len() > 30 && !word.contains(' ') && !word.contains('/') {
            out.push_str("TOKEN");
            out.push(word.chars().last().unwrap_or(' '));
        } else {
            out.push_str(word);
        }
    }
    out.chars()
        .map(|c| if c.is_ascii_digit() { '0' } else { c })
        .collect()
}

#[actix_web::test]
async fn a_member_and_addresses_that_may_not_sign_in_look_the_same_at_every_step() {
    let app = spawn_app_with(generous()).await;
    app.add_member("ann@example.org", Role::Member);
    let gone = app.add_member("cat@example.org", Role::Member);
    latchkey::models::member::deactivate(&mut app.conn(), gone, "test").unwrap();

    // Addresses of one length, so that content lengths compare as they are.
    let addresses = ["ann@example.org", "bob@example.org", "cat@example.org"];
    let browsers: Vec<_> = addresses.iter().map(|_| app.visitor()).collect();
    let mut steps: Vec<Vec<(String, Seen)>> = vec![Vec::new(); addresses.len()];
    for (i, (browser, address)) in browsers.iter().zip(addresses).enumerate() {
        let login = browser.request_link(address).await;
        steps[i].push(("POST /login".into(), masked(login).await));
        let wait = browser.get("/auth/wait").htmx().await;
        steps[i].push(("GET /auth/wait".into(), masked(wait).await));
        let csrf = browser.csrf("/login").await;
        for try_number in 1..=5 {
            let res = browser
                .post("/auth/code")
                .form(&[("code", "000000")])
                .csrf(&csrf)
                .await;
            steps[i].push((format!("POST /auth/code #{try_number}"), masked(res).await));
        }
        let wait = browser.get("/auth/wait").await;
        steps[i].push(("GET /auth/wait after".into(), masked(wait).await));
    }
    let member = &steps[0];
    for (i, other) in steps.iter().enumerate().skip(1) {
        for ((step, a), (_, b)) in member.iter().zip(other) {
            assert_eq!(a.0, b.0, "{step}: status differs for {}", addresses[i]);
            assert_eq!(a.1, b.1, "{step}: headers differ for {}", addresses[i]);
            assert_eq!(a.2, b.2, "{step}: body differs for {}", addresses[i]);
        }
    }
    // And the member's answers are the real ones: waiting with a number, counting down.
    let answer = |step: usize| &member[step].1;
    assert_eq!(answer(1).0, 200);
    let waiting = parse_page(&answer(1).2);
    let number = crate::helpers::text(one(&waiting, ".number"));
    assert_eq!(number, "00", "{}", answer(1).2);
    assert_eq!(answer(2).0, 400);
    assert!(answer(2).2.contains("0 tries left"), "{}", answer(2).2);
    assert_eq!(answer(6).0, 410, "the fifth wrong code ends the request");
    assert!(answer(7).2.contains("no longer open"));
}

#[actix_web::test]
async fn ten_wrong_codes_in_a_day_lock_codes_for_the_member_but_not_the_link() {
    let app = spawn_app_with(generous()).await;
    app.add_member("ann@example.org", Role::Member);
    let attacker = app.visitor();
    let stranger = app.visitor();
    let csrf = attacker.csrf("/login").await;
    let stranger_csrf = stranger.csrf("/login").await;
    let mut last = None;
    let mut stranger_last = None;
    // Two requests of five wrong codes each: the tenth wrong code locks codes.
    for _ in 0..2 {
        attacker.request_link("ann@example.org").await;
        stranger.request_link("nobody@example.org").await;
        for _ in 0..5 {
            let res = attacker
                .post("/auth/code")
                .form(&[("code", "000000")])
                .csrf(&csrf)
                .await;
            last = Some((res.status().as_u16(), text(res).await));
            let res = stranger
                .post("/auth/code")
                .form(&[("code", "000000")])
                .csrf(&stranger_csrf)
                .await;
            stranger_last = Some((res.status().as_u16(), text(res).await));
        }
    }
    let (status, page) = last.unwrap();
    assert_eq!(status, 410);
    assert!(page.contains("Codes are locked for this address"), "{page}");
    let (stranger_status, stranger_page) = stranger_last.unwrap();
    assert_eq!(stranger_status, status, "a stranger locks alike");
    assert!(stranger_page.contains("Codes are locked for this address"));
    let locked: Vec<_> = app
        .audit()
        .into_iter()
        .filter(|r| r.event == "code_locked")
        .collect();
    assert_eq!(
        locked.len(),
        2,
        "one for Ann, one for the stranger's address"
    );
    let told = wait_for_alerts(&app, "Sign-in codes locked", 2).await;
    assert_eq!(told.len(), 2, "Ann and the admin: {told:?}");
    assert!(told.iter().any(|t| t.contains("ann@example.org")));
    assert!(told.iter().any(|t| t.contains("boss@example.org")));

    // A new request brings no new tries: even the right code is refused today.
    let before = app.smtp.received().len();
    attacker.request_link("ann@example.org").await;
    let mail = app.next_sign_in_mail(before).await;
    let res = attacker
        .post("/auth/code")
        .form(&[("code", &mail.code)])
        .csrf(&csrf)
        .await;
    assert_eq!(res.status(), 410);
    assert!(text(res).await.contains("Codes are locked"));
    assert_eq!(app.count("sessions WHERE member_id IS NOT NULL"), 0);
    // The link of that same mail still signs in, in the browser that asked.
    assert_eq!(attacker.confirm_link(&mail.token).await.status(), 303);
}

#[actix_web::test]
async fn a_flood_of_link_fetches_is_audited_once_per_request_and_address() {
    let app = spawn_app_with(generous().trusted_proxies(&["127.0.0.1/32"])).await;
    app.add_member("ann@example.org", Role::Member);
    app.visitor().request_link("ann@example.org").await;
    let mail = app.sign_in_mail(1).await;
    let fetches = (0..60).map(|i| {
        let link = mail.link.clone();
        let scanner = app.visitor();
        async move {
            let mut get = scanner.get(&link);
            if i % 2 == 1 {
                get = get.header("X-Forwarded-For", "198.51.100.7");
            }
            get.await.status()
        }
    });
    let statuses = futures_util::future::join_all(fetches).await;
    assert!(statuses.iter().all(|s| s.as_u16() == 200), "{statuses:?}");
    let prefetched: Vec<_> = app
        .audit()
        .into_iter()
        .filter(|r| r.event == "link_prefetched")
        .collect();
    let mut ips: Vec<_> = prefetched.iter().map(|r| r.ip.clone()).collect();
    ips.sort();
    assert_eq!(
        ips,
        vec![
            Some("127.0.0.1".to_string()),
            Some("198.51.100.7".to_string())
        ],
        "one row per address, however often the link is fetched"
    );
    // Nothing was used up, and no scanner was signed in.
    assert_eq!(app.count("sessions WHERE member_id IS NOT NULL"), 0);
}

#[actix_web::test]
async fn a_planted_sign_in_cookie_wins_nothing() {
    let app = spawn_app_with(generous()).await;
    app.add_member("ann@example.org", Role::Member);
    app.add_member("mallory@example.org", Role::Member);

    // Mallory gets a valid sign-in cookie of her own and plants it in Ann's browser.
    let mallory = app.visitor();
    mallory.request_link("mallory@example.org").await;
    let planted = {
        let cookies = mallory.cookie_header().unwrap();
        cookies
            .split("; ")
            .find(|c| c.starts_with("latchkey_signin="))
            .unwrap()
            .to_string()
    };
    let ann = app.visitor();
    ann.get("/login").await;
    ann.add_cookie(&planted);

    let res = ann.request_link("ann@example.org").await;
    let fresh = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("latchkey_signin="))
        .expect("every request sets its own binding")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(fresh, planted, "the planted binding is not reused");
    let mail = (1..=2)
        .map(|n| app.sign_in_mail(n))
        .collect::<futures_util::future::JoinAll<_>>()
        .await
        .into_iter()
        .find(|mail| mail.to.contains("ann@example.org"))
        .unwrap();

    // Ann approves her own request from her phone; Mallory is polling with the planted cookie.
    let shown = shown_number(&ann).await;
    let approved = approve_with(&app, &mail.token, &shown).await;
    assert_eq!(approved.status(), 200, "{}", text(approved).await);
    let polled = mallory.get("/auth/wait").htmx().await;
    assert!(polled.headers().get("hx-redirect").is_none());
    assert_eq!(mallory.get("/").await.status(), 303);
    let done = ann.get("/auth/wait").htmx().await;
    assert_eq!(done.headers()["hx-redirect"], "/");
    // Mallory cannot post Ann's code from her browser either: it holds no binding of Ann's.
    let csrf = mallory.csrf("/login").await;
    let res = mallory
        .post("/auth/code")
        .form(&[("code", &mail.code)])
        .csrf(&csrf)
        .await;
    assert_ne!(res.status(), 303);
    let sessions: Vec<String> = app
        .audit()
        .into_iter()
        .filter(|r| r.event == "signed_in")
        .filter_map(|r| r.email)
        .collect();
    assert_eq!(sessions, vec!["ann@example.org".to_string()]);
}
