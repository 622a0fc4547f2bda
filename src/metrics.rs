//! What `GET /metrics` shows, in OpenMetrics text (which Prometheus reads).
//!
//! Two kinds of numbers. What happens on a request's path (its route, status and latency, a
//! forward-auth answer, a sign-in) is counted as it happens, with `prometheus-client`'s
//! atomic counters and histograms, so the hot paths only increment. What other rooms keep
//! anyway (the session cache's hits, the pool, the mailer, the audit) is read when scraped,
//! into a [`Snapshot`] that the route fills, so those rooms know nothing of metrics.

use std::borrow::Cow;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::audit::rows::{appended_by_this_process, appended_of, AuditEvent};
use crate::db::PoolUse;
use crate::models::sign_in_request::CompletedBy;

/// The media type of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric's name starts with this.
const PREFIX: &str = "latchkey";

/// Request latencies, in seconds: a cached forward-auth check answers well under a
/// millisecond, a page that reads the database in a few, a sign-in that queues mail in tens.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The audit events that refuse someone something, shown as `refusals_total{reason}`.
pub const REFUSALS: [AuditEvent; 14] = [
    AuditEvent::LoginDenied,
    AuditEvent::LoginThrottled,
    AuditEvent::LinkInvalid,
    AuditEvent::LinkExpired,
    AuditEvent::LinkReused,
    AuditEvent::LinkWrongBrowser,
    AuditEvent::CodeFailed,
    AuditEvent::CodeLocked,
    AuditEvent::ApprovalMismatch,
    AuditEvent::ApprovalLocked,
    AuditEvent::PasskeyFailed,
    AuditEvent::AppDenied,
    AuditEvent::OidcRefused,
    AuditEvent::OidcCodeReused,
];

/// A request as the route table saw it: the matched pattern (`/team/{id}/role`), never the
/// path a client typed, so clients cannot make new series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Cow<'static, str>,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabels {
    answer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Which route answered a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The route table's pattern, as `/team/{id}/role`.
    Matched(String),
    /// No route matched the path (the not-found page).
    Unmatched,
}

impl Route {
    fn label(self) -> Cow<'static, str> {
        match self {
            Route::Matched(pattern) => Cow::Owned(pattern),
            Route::Unmatched => Cow::Borrowed("unmatched"),
        }
    }
}

/// What a forward-auth check answered a proxy, as its status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAuthAnswer {
    /// 200: the member may open the app.
    Allowed,
    /// 401 (nginx) or 302 (Caddy, Traefik): not signed in, off to sign in.
    SignIn,
    /// 403: signed in, but the app is not theirs.
    Denied,
    /// 400: the proxy sent no usable original URL.
    BadRequest,
    /// Anything else: the database was lost (503), or a fault.
    Failed,
}

impl ForwardAuthAnswer {
    pub const ALL: [ForwardAuthAnswer; 5] = [
        ForwardAuthAnswer::Allowed,
        ForwardAuthAnswer::SignIn,
        ForwardAuthAnswer::Denied,
        ForwardAuthAnswer::BadRequest,
        ForwardAuthAnswer::Failed,
    ];

    pub fn from_status(status: u16) -> Self {
        match status {
            200 => ForwardAuthAnswer::Allowed,
            401 | 302 => ForwardAuthAnswer::SignIn,
            403 => ForwardAuthAnswer::Denied,
            400 => ForwardAuthAnswer::BadRequest,
            _ => ForwardAuthAnswer::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ForwardAuthAnswer::Allowed => "allowed",
            ForwardAuthAnswer::SignIn => "sign_in",
            ForwardAuthAnswer::Denied => "denied",
            ForwardAuthAnswer::BadRequest => "bad_request",
            ForwardAuthAnswer::Failed => "failed",
        }
    }
}

/// The request method as a label: the ones Latchkey routes, and `other` for the rest, so a
/// client cannot make new series by inventing methods.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        _ => "other",
    }
}

/// The counters and histograms the request paths increment; one per process, shared by every
/// worker.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    forward_auth: Family<AnswerLabels, Counter>,
    sign_ins: Family<MethodLabels, Counter>,
    oidc_tokens: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let requests: Family<RequestLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "HTTP requests by matched route (`unmatched` for none), method and status, and the time to the response head",
            Unit::Seconds,
            requests.clone(),
        );
        let forward_auth = Family::<AnswerLabels, Counter>::default();
        // Every answer is shown from the start, at zero: a rate over a series that appears
        // only with its first event misses that event.
        for answer in ForwardAuthAnswer::ALL {
            forward_auth.get_or_create_owned(&AnswerLabels {
                answer: answer.as_str(),
            });
        }
        registry.register(
            "forward_auth_checks",
            "Forward-auth checks (/auth/check, /auth/forward) by answer",
            forward_auth.clone(),
        );
        let sign_ins = Family::<MethodLabels, Counter>::default();
        for how in CompletedBy::ALL {
            sign_ins.get_or_create_owned(&MethodLabels {
                method: how.as_str(),
            });
        }
        registry.register(
            "sign_ins",
            "Sign-ins completed, by method",
            sign_ins.clone(),
        );
        let oidc_tokens = Counter::default();
        registry.register(
            "oidc_tokens_issued",
            "OpenID Connect tokens issued (none until Latchkey signs in to apps with OIDC)",
            oidc_tokens.clone(),
        );
        Self {
            registry,
            requests,
            forward_auth,
            sign_ins,
            oidc_tokens,
        }
    }

    /// One answered request.
    pub fn observe_request(&self, route: Route, method: &'static str, status: u16, took: Duration) {
        let labels = RequestLabels {
            route: route.label(),
            method,
            status,
        };
        self.requests
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn forward_auth_answered(&self, answer: ForwardAuthAnswer) {
        self.forward_auth
            .get_or_create(&AnswerLabels {
                answer: answer.as_str(),
            })
            .inc();
    }

    pub fn signed_in(&self, how: CompletedBy) {
        self.sign_ins
            .get_or_create(&MethodLabels {
                method: how.as_str(),
            })
            .inc();
    }

    /// For the OpenID Connect provider, when it lands.
    pub fn oidc_token_issued(&self) {
        self.oidc_tokens.inc();
    }

    /// Everything, as one OpenMetrics text exposition (ending with `# EOF`).
    pub fn render(&self, now: &Snapshot) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        encode_registry(&mut text, &self.registry)?;
        encode_registry(&mut text, &now.registry())?;
        encode_eof(&mut text)?;
        Ok(text)
    }
}

/// What other rooms know at the moment of a scrape.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Whether the session cache's listener is connected (and so the cache in use).
    pub cache_listening: bool,
    pub cache_listener_losses: u64,
    pub pool: PoolUse,
    pub mail_sent: u64,
    pub mail_failed: u64,
    /// Since the newest audit checkpoint this process signed or saw; `None` before the first.
    pub checkpoint_age: Option<Duration>,
}

impl Snapshot {
    fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix(PREFIX);
        let counter = |value: u64| ConstCounter::new(value);
        registry.register(
            "session_cache_hits",
            "Lookups of sessions, members and apps answered from the session cache",
            counter(self.cache_hits),
        );
        registry.register(
            "session_cache_misses",
            "Lookups of sessions, members and apps that read the database",
            counter(self.cache_misses),
        );
        registry.register(
            "session_cache_listening",
            "1 while the session cache's listener is connected and the cache is in use, else 0",
            ConstGauge::new(i64::from(self.cache_listening)),
        );
        registry.register(
            "session_cache_listener_losses",
            "Times the session cache's listener lost its connection (each emptied the cache)",
            counter(self.cache_listener_losses),
        );
        let pool = Family::<StateLabels, prometheus_client::metrics::gauge::Gauge>::default();
        let idle = self.pool.idle;
        let in_use = self.pool.open.saturating_sub(idle);
        for (state, value) in [("idle", idle), ("in_use", in_use)] {
            pool.get_or_create(&StateLabels { state })
                .set(i64::from(value));
        }
        registry.register(
            "db_pool_connections",
            "Database connections the pool holds open, idle or lent out",
            pool,
        );
        registry.register(
            "db_pool_max_connections",
            "Database connections the pool may open at most",
            ConstGauge::new(i64::from(self.pool.max)),
        );
        registry.register(
            "mail_sent",
            "Mails the mail backend accepted",
            counter(self.mail_sent),
        );
        registry.register(
            "mail_failed",
            "Mails given up on: not queued, not rendered, or refused after every retry",
            counter(self.mail_failed),
        );
        let refusals = Family::<ReasonLabels, Counter>::default();
        for event in REFUSALS {
            refusals
                .get_or_create(&ReasonLabels {
                    reason: event.as_str(),
                })
                .inc_by(appended_of(event));
        }
        registry.register(
            "refusals",
            "Refusals by reason, as this process wrote them to the audit",
            refusals,
        );
        registry.register(
            "audit_rows_appended",
            "Audit rows this process wrote",
            counter(appended_by_this_process()),
        );
        if let Some(age) = self.checkpoint_age {
            registry.register_with_unit(
                "audit_checkpoint_age",
                "Time since the newest audit checkpoint this process signed or saw signed",
                Unit::Seconds,
                ConstGauge::new(age.as_secs_f64()),
            );
        }
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            cache_hits: 7,
            cache_misses: 3,
            cache_listening: true,
            cache_listener_losses: 0,
            pool: PoolUse {
                open: 4,
                idle: 1,
                max: 16,
            },
            mail_sent: 2,
            mail_failed: 1,
            checkpoint_age: Some(Duration::from_secs(90)),
        }
    }

    #[test]
    fn a_route_is_its_pattern_and_an_unmatched_path_makes_no_series_of_its_own() {
        let metrics = Metrics::new();
        metrics.observe_request(
            Route::Matched("/team/{id}/role".into()),
            "POST",
            303,
            Duration::from_millis(3),
        );
        metrics.observe_request(Route::Unmatched, "GET", 404, Duration::from_millis(1));
        metrics.observe_request(
            Route::Unmatched,
            method_label("BREW"),
            404,
            Duration::from_millis(1),
        );
        let text = metrics.render(&snapshot()).unwrap();
        assert!(
            text.contains(r#"latchkey_http_request_duration_seconds_count{route="/team/{id}/role",method="POST",status="303"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"latchkey_http_request_duration_seconds_count{route="unmatched",method="GET",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"{route="unmatched",method="other",status="404"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_snapshot_reads_as_counters_and_gauges() {
        let metrics = Metrics::new();
        metrics.signed_in(CompletedBy::Code);
        metrics.forward_auth_answered(ForwardAuthAnswer::from_status(302));
        let text = metrics.render(&snapshot()).unwrap();
        for line in [
            r#"latchkey_sign_ins_total{method="code"} 1"#,
            r#"latchkey_sign_ins_total{method="passkey"} 0"#,
            r#"latchkey_forward_auth_checks_total{answer="sign_in"} 1"#,
            r#"latchkey_forward_auth_checks_total{answer="denied"} 0"#,
            "latchkey_oidc_tokens_issued_total 0",
            "latchkey_session_cache_hits_total 7",
            "latchkey_session_cache_misses_total 3",
            "latchkey_session_cache_listening 1",
            r#"latchkey_db_pool_connections{state="in_use"} 3"#,
            r#"latchkey_db_pool_connections{state="idle"} 1"#,
            "latchkey_db_pool_max_connections 16",
            "latchkey_mail_sent_total 2",
            "latchkey_mail_failed_total 1",
            "latchkey_audit_checkpoint_age_seconds 90.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }
        assert!(text.contains(r#"latchkey_refusals_total{reason="login_throttled"}"#));
    }
}
