//! `GET /metrics` as Prometheus scrapes it: read by the Python `prometheus_client`'s own
//! OpenMetrics parser (an implementation that is not ours), and only with the token.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use latchkey::domain::role::Role;

use crate::forward_auth::{register, AppHost};
use crate::helpers::{set_cookies, spawn_app, spawn_app_with, TestApp, TestSettings};

const TOKEN: &str = "metrics-token-for-the-tests-0123456789abcdef";

/// Every sample of a scrape, as `name{label="value",…}` (labels sorted) to its value.
#[derive(Debug)]
struct Samples(HashMap<String, f64>);

impl Samples {
    fn get(&self, key: &str) -> f64 {
        match self.0.get(key) {
            Some(value) => *value,
            None => {
                let mut keys: Vec<&String> = self.0.keys().collect();
                keys.sort();
                panic!("no sample {key}; the scrape has:\n{keys:#?}")
            }
        }
    }

    /// How much `key` grew since `before`.
    fn moved(&self, before: &Samples, key: &str) -> f64 {
        self.get(key) - before.get(key)
    }
}

/// Parses an exposition with `prometheus_client.openmetrics.parser`, which refuses anything
/// that is not valid OpenMetrics (a missing `# EOF`, a counter without `_total`, …).
const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        samples.append([sample.name, sample.labels, sample.value])
print(json.dumps(samples))
"#;

fn python_with_prometheus_client() -> bool {
    let has = || {
        Command::new("python3")
            .args(["-c", "import prometheus_client.openmetrics.parser"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has() {
        return true;
    }
    let _ = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "prometheus_client"])
        .status();
    has()
}

fn parse(text: &str) -> Samples {
    assert!(
        python_with_prometheus_client(),
        "python3 with `prometheus_client` is needed (python3 -m pip install prometheus_client)"
    );
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    Samples(
        parsed
            .into_iter()
            .map(|(name, labels, value)| {
                let labels: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                let key = if labels.is_empty() {
                    name
                } else {
                    format!("{name}{{{}}}", labels.join(","))
                };
                (key, value)
            })
            .collect(),
    )
}

async fn scrape_text(app: &TestApp) -> String {
    let res = app
        .visitor()
        .get("/metrics")
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .await;
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(set_cookies(&res).is_empty(), "{:?}", set_cookies(&res));
    res.text().await.unwrap()
}

async fn scrape(app: &TestApp) -> Samples {
    parse(&scrape_text(app).await)
}

const SIGN_INS_BY_LINK: &str = r#"latchkey_sign_ins_total{method="link"}"#;
const CHECKS_ALLOWED: &str = r#"latchkey_forward_auth_checks_total{answer="allowed"}"#;
const CHECKS_TO_SIGN_IN: &str = r#"latchkey_forward_auth_checks_total{answer="sign_in"}"#;
const ALLOWED_CHECK_REQUESTS: &str = r#"latchkey_http_request_duration_seconds_count{method="GET",route="/auth/check",status="200"}"#;
const LOGINS_DENIED: &str = r#"latchkey_refusals_total{reason="login_denied"}"#;

#[actix_web::test]
async fn a_scrape_parses_as_openmetrics_and_its_counts_move_with_sign_ins_and_checks() {
    let app = spawn_app_with(TestSettings::new().metrics_token(TOKEN)).await;
    let before = scrape(&app).await;
    for key in [SIGN_INS_BY_LINK, CHECKS_ALLOWED, CHECKS_TO_SIGN_IN] {
        assert_eq!(before.get(key), 0.0, "{key}");
    }
    assert_eq!(before.get("latchkey_oidc_tokens_issued_total"), 0.0);
    assert_eq!(before.get("latchkey_db_pool_max_connections"), 16.0);

    let ann = app.member(Role::Member, "ann@example.org").await;
    register(
        &app,
        "Wiki",
        "https://wiki.example.org",
        &[Role::Member],
        &[],
    );
    let wiki = AppHost::new(&app, "Wiki", "https://wiki.example.org");
    wiki.open(&ann, "/page").await;
    let res = wiki.check("/auth/check", "/page").await;
    assert_eq!(res.status(), 200);
    let signed_out = AppHost::new(&app, "Wiki", "https://wiki.example.org");
    let res = signed_out.check("/auth/check", "/").await;
    assert_eq!(res.status(), 401);
    let stranger = app.visitor();
    assert_eq!(
        stranger.request_link("nobody@example.org").await.status(),
        200
    );
    app.get("/no-such-page-7f3a").await;

    // The mail worker counts a mail once the SMTP server has answered, which may be just
    // after the test's server has the message.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = scrape(&app).await;
        if after.moved(&before, "latchkey_mail_sent_total") >= 1.0 || Instant::now() > deadline {
            break after;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after.moved(&before, SIGN_INS_BY_LINK), 1.0);
    assert_eq!(after.moved(&before, CHECKS_ALLOWED), 1.0);
    assert_eq!(after.moved(&before, CHECKS_TO_SIGN_IN), 1.0);
    assert_eq!(after.get(ALLOWED_CHECK_REQUESTS), 1.0);
    assert!(after.moved(&before, "latchkey_mail_sent_total") >= 1.0);
    // Counted for the whole test process, which runs other tests' apps beside this one.
    assert!(after.moved(&before, LOGINS_DENIED) >= 1.0);
    let lookups = |s: &Samples| {
        s.get("latchkey_session_cache_hits_total") + s.get("latchkey_session_cache_misses_total")
    };
    assert!(lookups(&after) > lookups(&before));
    assert_eq!(after.get("latchkey_oidc_tokens_issued_total"), 0.0);

    let text = scrape_text(&app).await;
    assert!(
        !text.contains("no-such-page-7f3a"),
        "a path no route matched is not a label:\n{text}"
    );
    assert!(text.contains(r#"route="unmatched""#), "{text}");
}

#[actix_web::test]
async fn a_scrape_writes_nothing() {
    let app = spawn_app_with(TestSettings::new().metrics_token(TOKEN)).await;
    let ann = app.member(Role::Member, "ann@example.org").await;
    let before = app.snapshot();
    // Even with a session cookie, which a scraper never sends.
    let res = ann
        .get("/metrics")
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .await;
    assert_eq!(res.status(), 200);
    assert!(set_cookies(&res).is_empty(), "{:?}", set_cookies(&res));
    scrape(&app).await;
    assert_eq!(app.snapshot(), before);
}

#[actix_web::test]
async fn without_the_right_token_a_scrape_is_401_and_shows_nothing() {
    let app = spawn_app_with(TestSettings::new().metrics_token(TOKEN)).await;
    for authorization in [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[1..])),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
    ] {
        let visitor = app.visitor();
        let mut request = visitor.get("/metrics");
        if let Some(value) = &authorization {
            request = request.header("Authorization", value);
        }
        let res = request.await;
        assert_eq!(res.status(), 401, "{authorization:?}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        assert!(set_cookies(&res).is_empty());
        let body = res.text().await.unwrap();
        assert!(!body.contains("latchkey_"), "{authorization:?}: {body}");
    }
    // The scheme is case-insensitive, as HTTP says.
    let res = app
        .visitor()
        .get("/metrics")
        .header("Authorization", &format!("bearer {TOKEN}"))
        .await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn without_a_token_setting_there_is_no_metrics_page_even_from_loopback() {
    let app = spawn_app().await;
    for authorization in [None, Some(format!("Bearer {TOKEN}"))] {
        let visitor = app.visitor();
        let mut request = visitor.get("/metrics");
        if let Some(value) = &authorization {
            request = request.header("Authorization", value);
        }
        let res = request.await;
        assert_eq!(res.status(), 404, "{authorization:?}");
        let body = res.text().await.unwrap();
        assert!(!body.contains("latchkey_"), "{body}");
    }
}
