//! The physical reference for `GET /login`: actix-web with one handler that answers a static
//! page of the same size as Latchkey's sign-in page, with no middleware, no templates, no
//! cookies. Same worker count as Latchkey (actix's default: one per core).
//!
//! Usage: latchkey-bench-bare 127.0.0.1:PORT [BODY_BYTES]

use actix_web::{web, App, HttpResponse, HttpServer};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let size: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1345);
    let body: &'static str = Box::leak(page(size).into_boxed_str());
    HttpServer::new(move || {
        App::new().route(
            "/",
            web::get().to(move || async move {
                HttpResponse::Ok()
                    .content_type("text/html; charset=utf-8")
                    .body(body)
            }),
        )
    })
    .bind(bind)?
    .run()
    .await
}

/// An HTML page of exactly `size` bytes.
fn page(size: usize) -> String {
    let head = "<!doctype html><html><head><title>Sign in</title></head><body><p>";
    let tail = "</p></body></html>\n";
    let fill = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(fill))
}
