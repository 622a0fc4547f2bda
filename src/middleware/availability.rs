//! Turns "the database could not be reached" into a quick 503, wherever in the request it
//! happened: in a handler, in the guard, or inside actix-session's store (which would
//! otherwise answer an opaque 500).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::HttpResponse;

use crate::db::availability;
use crate::web::errors::PageError;

pub async fn database_availability(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let (result, unavailable) = availability::watch(next.call(req)).await;
    if !unavailable {
        return result.map(ServiceResponse::map_into_boxed_body);
    }
    match result {
        Ok(res) if res.status() == StatusCode::INTERNAL_SERVER_ERROR => {
            Ok(res.into_response(unavailable_response()))
        }
        Ok(res) => Ok(res.map_into_boxed_body()),
        Err(err) => Err(InternalError::from_response(err, unavailable_response()).into()),
    }
}

fn unavailable_response() -> HttpResponse {
    PageError::Unavailable.plain()
}
