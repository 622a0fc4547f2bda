use latchkey::domain::role::Role;

use crate::helpers::{spawn_app, spawn_app_with_unreachable_database, TestSettings};

#[actix_web::test]
async fn healthz_answers_without_the_database() {
    let app = spawn_app().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");
}

#[actix_web::test]
async fn readyz_answers_200_when_the_database_is_reachable() {
    let app = spawn_app().await;
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn readyz_answers_503_quickly_when_the_database_is_gone() {
    let address = spawn_app_with_unreachable_database(TestSettings::new()).await;
    let started = std::time::Instant::now();
    let res = reqwest::get(format!("{address}/readyz")).await.unwrap();
    assert_eq!(res.status(), 503);
    // Not a timing test of speed: only that the pool does not hang for its full default (30 s).
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[actix_web::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz", "/no-such-page"] {
        let res = app.get(path).await;
        let csp = res.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        assert_eq!(res.headers()["referrer-policy"], "no-referrer");
        assert!(res.headers().get("strict-transport-security").is_none());
    }
}

#[actix_web::test]
async fn the_pool_recovers_when_the_server_drops_every_connection() {
    use diesel::RunQueryDsl as _;
    use std::future::IntoFuture as _;
    let app = spawn_app().await;
    let browser = app.member(Role::Member, "ann@example.org").await;
    // Warm the pool with several connections, then have the server cut them all, as a
    // PostgreSQL restart does.
    let warm = (0..8).map(|_| browser.get("/").into_future());
    for res in futures_util::future::join_all(warm).await {
        assert_eq!(res.status(), 200);
    }
    diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{}' AND pid <> pg_backend_pid()",
        app.database.name
    ))
    .execute(&mut crate::helpers::admin_connection())
    .unwrap();
    // Each failed query drops one dead connection, so the pool (16) is clean after at most
    // as many failures; without that it never recovers.
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let res = browser.get("/").await;
        statuses.push(res.status().as_u16());
    }
    assert!(
        !statuses.contains(&500),
        "a dead connection is a 503, never a 500: {statuses:?}"
    );
    // Requests answered from the session cache and the dashboard's few-seconds numbers make
    // no query, so the failures come whenever a request first needs the database (the
    // listener noticing the cut, the numbers going stale); what matters is that there are
    // at most one pool's worth of them, and that it ends well.
    let failures = statuses.iter().filter(|&&s| s != 200).count();
    assert!(
        failures <= 16 && statuses.last() == Some(&200),
        "dead connections must leave the pool: {statuses:?}"
    );
}
