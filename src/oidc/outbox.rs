//! Back-channel logout (OpenID Connect Back-Channel Logout 1.0): when a session that signed
//! in to an app ends, the app is told, so it drops the member as fast as a forward-auth app.
//!
//! The row that says a logout is owed is written by a trigger on `sessions`, in the same
//! transaction as the session's end, whatever ends it (logout, revocation, deactivation, the
//! sweeper removing an expired session, psql). Every instance runs a sender that wakes when
//! the session cache's listener hears `o`, when a retry it scheduled falls due, and once a
//! minute (for rows whose sender died); it leases due rows with `SKIP LOCKED` (so instances
//! share the work and none sends a row twice at once), POSTs a signed `logout_token`, and
//! retries with back-off for 24 hours. Each delivery and each failure is audited
//! (`oidc_logout_sent`, `oidc_logout_failed`). An idle instance reads the outbox once a
//! minute and does nothing else.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{Context, Oidc};
use crate::db::Db;
use crate::models::app::AppRule;
use crate::models::oidc::{self as rows, Owed};
use crate::session::cache::Live;
use crate::settings::Settings;

/// The sender looks at the outbox at least this often, notification or not.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A leased row is not taken by another instance for this long.
const LEASE: chrono::Duration = chrono::Duration::seconds(30);
/// How long an app has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries are tried for this long after the session ended.
const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::hours(24);

/// The wait before attempt `n + 1`: 5 s, 10 s, 20 s… up to an hour.
fn backoff(attempts: i32) -> chrono::Duration {
    let exponent = u32::try_from(attempts.clamp(0, 10)).unwrap_or(10);
    chrono::Duration::seconds((5_i64 << exponent).min(3600))
}

/// Starts the sender on the server's runtime; it runs until the process ends.
pub fn spawn(oidc: Arc<Oidc>, db: Db, live: Live, settings: Settings) {
    actix_web::rt::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(client) => client,
            Err(err) => {
                log::error!("back-channel logout cannot start its HTTP client: {err}");
                return;
            }
        };
        // The first signing key is made at first start (by whichever instance comes first).
        let first = Context {
            db: &db,
            live: &live,
            settings: &settings,
        };
        if let Err(err) = oidc.ring(first).await {
            if !live.cache().is_closing() {
                log::warn!("reading the OpenID Connect signing keys: {err}");
            }
        }
        while !live.cache().is_closing() {
            let context = Context {
                db: &db,
                live: &live,
                settings: &settings,
            };
            let wait = match send_due(&oidc, context, &client).await {
                Some(retry) => retry.min(SWEEP_EVERY),
                None => SWEEP_EVERY,
            };
            let owed = live.cache().logouts_owed().notified();
            let _ = tokio::time::timeout(wait, owed).await;
        }
    });
}

/// Sends what is due now; how long until the earliest retry it scheduled, if any.
async fn send_due(oidc: &Oidc, context: Context<'_>, client: &reqwest::Client) -> Option<Duration> {
    let due = context
        .db
        .query(|conn| rows::take_due(conn, Utc::now(), LEASE, 20))
        .await;
    let due = match due {
        Ok(due) => due,
        Err(err) => {
            if !context.live.cache().is_closing() {
                log::warn!("reading the back-channel logout outbox: {err}");
            }
            return None;
        }
    };
    if due.is_empty() {
        return None;
    }
    let apps = match context.live.apps().await {
        Ok(apps) => apps,
        Err(err) => {
            log::warn!("reading the apps for back-channel logout: {err}");
            return None;
        }
    };
    let mut earliest_retry: Option<Duration> = None;
    for owed in due {
        let Some(app) = apps.iter().find(|app| app.id == owed.app_id) else {
            continue;
        };
        let outcome = deliver(oidc, context, client, app, &owed).await;
        let name = app.name.clone();
        let recorded = match outcome {
            Ok(()) => {
                log::info!(target: super::LOG_TARGET, app = name.as_str(); "back-channel logout delivered to {name}");
                context
                    .db
                    .query(move |conn| rows::delivered(conn, &owed, &name))
                    .await
            }
            Err(error) => {
                let give_up = Utc::now() - owed.created_at >= GIVE_UP_AFTER;
                let next = (!give_up).then(|| Utc::now() + backoff(owed.attempts));
                if let Some(wait) = next.and_then(|_| backoff(owed.attempts).to_std().ok()) {
                    earliest_retry = Some(earliest_retry.map_or(wait, |e| e.min(wait)));
                }
                log::warn!(target: super::LOG_TARGET, app = name.as_str(); "back-channel logout to {name} failed: {error}");
                context
                    .db
                    .query(move |conn| rows::failed(conn, &owed, &name, &error, next))
                    .await
            }
        };
        if let Err(err) = recorded {
            log::warn!("recording a back-channel logout: {err}");
        }
    }
    earliest_retry
}

/// One POST of a signed logout token to the app's back-channel URI; the app's error, if any,
/// as one line (never the token).
async fn deliver(
    oidc: &Oidc,
    context: Context<'_>,
    client: &reqwest::Client,
    app: &AppRule,
    owed: &Owed,
) -> Result<(), String> {
    let Some(registration) = app.oidc.as_ref() else {
        return Err("the app no longer signs in through OpenID Connect".into());
    };
    let Some(uri) = registration.backchannel_logout_uri.as_ref() else {
        return Err("the app no longer has a back-channel logout URI".into());
    };
    let token = oidc
        .logout_token(
            context,
            registration.client_id.as_str(),
            owed.member_id,
            &owed.sid,
        )
        .await
        .map_err(|err| err.to_string())?;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", &token)
        .finish();
    let response = client
        .post(uri.as_str())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cache-control", "no-store")
        .body(body)
        .send()
        .await
        .map_err(|err| format!("{}", err.without_url()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the app answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_an_hour() {
        assert_eq!(backoff(0).num_seconds(), 5);
        assert_eq!(backoff(1).num_seconds(), 10);
        assert_eq!(backoff(3).num_seconds(), 40);
        assert_eq!(backoff(30).num_seconds(), 3600);
    }
}
