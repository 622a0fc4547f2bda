//! One access-log line per request, under the request's [`RequestId`], and the request
//! counted into `/metrics` ([`request_metrics`]).

use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;

use crate::logging::request_id::RequestId;
use crate::middleware::request_metrics;
use crate::web::client::client_ip_of;

/// The access log: client address (as the trusted-proxy rules see it), method, the path
/// without its query string (a sign-in token travels in one), status, body size, time to
/// the response head, and the User-Agent, quoted and escaped.
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = RequestId::next();
    let started = Instant::now();
    let res = id.scope(next.call(req)).await?;
    request_metrics::record(&res, started.elapsed());
    if log::log_enabled!(target: TARGET, log::Level::Info) {
        let req = res.request();
        let agent = req
            .headers()
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        let line = AccessLine {
            client: client_ip_of(req).map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            method: req.method().as_str(),
            path: req.path(),
            status: res.status().as_u16(),
            bytes: match res.response().body().size() {
                BodySize::Sized(n) => Some(n),
                BodySize::None => Some(0),
                BodySize::Stream => None,
            },
            ms: started.elapsed().as_secs_f64() * 1000.0,
            user_agent: agent.as_deref().unwrap_or("-"),
        };
        // Logged inside the request's scope, so the line carries its id too.
        id.sync_scope(|| line.log());
    }
    Ok(res)
}

pub const TARGET: &str = "latchkey::access";

/// What the access line says, as text in its message and as fields for the JSON format.
struct AccessLine<'a> {
    client: String,
    method: &'a str,
    path: &'a str,
    status: u16,
    /// `None` for a streamed body.
    bytes: Option<u64>,
    ms: f64,
    user_agent: &'a str,
}

impl AccessLine<'_> {
    fn log(&self) {
        let Self {
            client,
            method,
            path,
            status,
            bytes,
            ms,
            user_agent,
        } = self;
        let client = client.as_str();
        let ms = (ms * 1000.0).round() / 1000.0;
        match bytes {
            Some(bytes) => log::info!(
                target: TARGET,
                client, method, path, status, bytes, ms, user_agent;
                "{client} \"{method} {path}\" {status} {bytes} {ms:.3}ms {user_agent:?}"
            ),
            None => log::info!(
                target: TARGET,
                client, method, path, status, ms, user_agent;
                "{client} \"{method} {path}\" {status} - {ms:.3}ms {user_agent:?}"
            ),
        }
    }
}
