//! Counts every answered request into [`Metrics`]: its route, method, status and latency, and
//! for a forward-auth check, its answer.
//!
//! Not a layer of its own: the access log's layer calls [`record`] with the time it measured
//! anyway, since every layer costs every request a boxed future of its own.

use std::time::Duration;

use actix_web::dev::ServiceResponse;
use actix_web::web;

use crate::metrics::{method_label, ForwardAuthAnswer, Route};
use crate::state::AppState;
use crate::web::policy::rule_of;

/// `took` is the time to the response head, as in the access log: a streamed export's body
/// is not the server's latency.
pub fn record<B>(res: &ServiceResponse<B>, took: Duration) {
    let request = res.request();
    // A service assembled without the state (a unit test's) has nothing to count into.
    let Some(state) = request.app_data::<web::Data<AppState>>() else {
        return;
    };
    let status = res.status().as_u16();
    let route = match request.match_pattern() {
        Some(pattern) => Route::Matched(pattern),
        None => Route::Unmatched,
    };
    let method = method_label(request.method().as_str());
    state.metrics.observe_request(route, method, status, took);
    if rule_of(request).forward_auth {
        state
            .metrics
            .forward_auth_answered(ForwardAuthAnswer::from_status(status));
    }
}
