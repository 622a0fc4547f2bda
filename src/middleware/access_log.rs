//! One access-log line per request, under the request's [`RequestId`].

use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;

use crate::logging::request_id::RequestId;
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
    if log::log_enabled!(target: TARGET, log::Level::Info) {
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let size = match res.response().body().size() {
            BodySize::Sized(n) => n.to_string(),
            BodySize::None => "0".to_string(),
            BodySize::Stream => "-".to_string(),
        };
        let req = res.request();
        let agent = req
            .headers()
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        // Logged inside the request's scope, so the line carries its id too.
        id.sync_scope(|| {
            log::info!(
                target: TARGET,
                "{} \"{} {}\" {} {size} {elapsed:.3}ms {:?}",
                client_ip_of(req).map_or_else(|| "-".to_string(), |ip| ip.to_string()),
                req.method(),
                req.path(),
                res.status().as_u16(),
                agent.as_deref().unwrap_or("-"),
            );
        });
    }
    Ok(res)
}

pub const TARGET: &str = "latchkey::access";
