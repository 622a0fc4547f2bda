//! Request bodies over 16 KiB are refused with 413 before any handler sees them. The body is
//! buffered (it is small by construction) so the CSRF check can read a form field from it.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{HttpMessage as _, HttpResponse};
use futures_util::StreamExt as _;

pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The buffered body of a state-changing request.
#[derive(Debug, Clone)]
pub struct BufferedBody(pub Bytes);

pub async fn body_limit(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
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
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
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

fn too_large() -> HttpResponse {
    HttpResponse::PayloadTooLarge()
        .content_type("text/plain; charset=utf-8")
        .body("The request is too large (at most 16 KiB).")
}
