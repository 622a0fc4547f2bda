//! `GET /metrics`: the numbers of `crate::metrics` for a Prometheus scraper that shows
//! `LATCHKEY_METRICS_TOKEN`. Reads what the rooms keep in memory; writes nothing, and asks
//! the database nothing, so a scrape costs the same whether the database answers or not.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

use crate::crypto::sha256;
use crate::metrics::{Snapshot, CONTENT_TYPE};
use crate::state::AppState;
use crate::web::errors::PageError;

pub async fn show(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, PageError> {
    // Unset, the route answers as any path that is not one.
    let Some(token) = &state.settings.metrics_token else {
        return Err(PageError::NotFound);
    };
    if !presents(&req, token) {
        return Ok(HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .content_type("text/plain; charset=utf-8")
            .body("/metrics needs Authorization: Bearer <LATCHKEY_METRICS_TOKEN>\n"));
    }
    let cache = state.live.cache();
    let (cache_hits, cache_misses) = cache.hits_and_misses();
    let now = Snapshot {
        cache_hits,
        cache_misses,
        cache_listening: cache.is_listening(),
        cache_listener_losses: cache.connection_losses(),
        pool: state.db.pool_use(),
        mail_sent: state.mailer.sent(),
        mail_failed: state.mailer.failed(),
        checkpoint_age: state.checkpointer.last_head().map(|head| {
            (chrono::Utc::now() - head.signed_at)
                .to_std()
                .unwrap_or_default()
        }),
    };
    let text = state
        .metrics
        .render(&now)
        .map_err(|e| anyhow::anyhow!("writing the metrics: {e}"))?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
}

/// Whether the request carries `Authorization: Bearer <token>`. Both sides are digested
/// first, so the comparison takes the same time whatever the length or the first wrong byte.
fn presents(req: &HttpRequest, token: &SecretString) -> bool {
    let Some(presented) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token)
    else {
        return false;
    };
    let expected = sha256(token.expose_secret().as_bytes());
    sha256(presented.as_bytes()).ct_eq(&expected).into()
}

/// The token of a `Bearer` credential; the scheme is case-insensitive (RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn only_a_bearer_credential_carries_a_token() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
