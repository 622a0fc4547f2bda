//! Counts every request into [`Metrics`]: its route, method, status and latency, and for a
//! forward-auth check, its answer.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

use crate::metrics::{method_label, ForwardAuthAnswer, Metrics, Route};
use crate::web::policy::rule_of;

/// Latency is the time to the response head, as in the access log: a streamed export's body
/// is not the server's latency.
pub async fn record_request(
    metrics: Arc<Metrics>,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method().as_str());
    // Not a clone of the request: inner layers change its head, which needs it unshared.
    let outcome = next.call(req).await;
    let took = started.elapsed();
    match &outcome {
        Ok(res) => {
            let request = res.request();
            let status = res.status().as_u16();
            let route = match request.match_pattern() {
                Some(pattern) => Route::Matched(pattern),
                None => Route::Unmatched,
            };
            metrics.observe_request(route, method, status, took);
            if rule_of(request).forward_auth {
                metrics.forward_auth_answered(ForwardAuthAnswer::from_status(status));
            }
        }
        // An error that no inner layer turned into a page (they all do, so far): the request
        // is gone with it, and so is its route.
        Err(err) => {
            let status = err.as_response_error().status_code().as_u16();
            metrics.observe_request(Route::Unknown, method, status, took);
        }
    }
    outcome
}
