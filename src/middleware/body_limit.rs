//! Request bodies over 16 KiB are refused with 413 before any handler sees them, and a body
//! that has not fully arrived [`BODY_TIMEOUT`] after the request head gets 408 and the
//! connection is closed. The body is buffered (it is small by construction) so the CSRF check
//! can read a form field from it.
//!
//! The server's `client_request_timeout` covers only the head; without a deadline here, a
//! client sending one byte every few seconds would hold a connection (and a worker's attention)
//! for as long as it liked.

use std::time::Duration;

use crate::web::policy::rule_of;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{HttpMessage as _, HttpResponse};
use futures_util::StreamExt as _;
use tokio::time::{timeout_at, Instant};

pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How long a body may take to arrive, counted from when the head was read.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The buffered body of a state-changing request.
#[derive(Debug, Clone)]
pub struct BufferedBody(pub Bytes);

pub async fn body_limit(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // Forward-auth checks never read the body (a proxy may forward an upload's length).
    if rule_of(req.request()).forward_auth {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Ok(req.into_response(too_large()));
    }
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    // The head has just been read: the deadline counts from here, not per chunk.
    let deadline = Instant::now() + BODY_TIMEOUT;
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    loop {
        let Ok(next) = timeout_at(deadline, payload.next()).await else {
            return Ok(req.into_response(too_slow()));
        };
        let Some(chunk) = next else { break };
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Ok(req.into_response(too_large()));
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    req.extensions_mut().insert(BufferedBody(body.clone()));
    req.set_payload(Payload::from(body));
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// Closes the connection too: the rest of the body may still be on its way.
fn too_slow() -> HttpResponse {
    HttpResponse::RequestTimeout()
        .force_close()
        .content_type("text/plain; charset=utf-8")
        .body("The request body did not arrive in time.")
}

fn too_large() -> HttpResponse {
    HttpResponse::PayloadTooLarge()
        .content_type("text/plain; charset=utf-8")
        .body("The request is too large (at most 16 KiB).")
}
