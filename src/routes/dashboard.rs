//! `GET /`: the dashboard.

use actix_web::{HttpRequest, HttpResponse};

use crate::web::pages::Page;

pub async fn show(req: HttpRequest) -> HttpResponse {
    Page::new("dashboard", "Dashboard").render(&req)
}
