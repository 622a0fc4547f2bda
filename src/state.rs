//! What every handler can reach: built once at start-up, shared by all workers.

use std::sync::Arc;

use crate::audit::checkpoint::Checkpointer;
use crate::db::Db;
use crate::forward_auth::ForwardAuth;
use crate::keys::Keys;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::oidc::Oidc;
use crate::session::cache::Live;
use crate::settings::Settings;
use crate::signin::SignIn;

pub struct AppState {
    pub settings: Settings,
    pub db: Db,
    /// Sessions, members and apps through the per-instance cache.
    pub live: Live,
    pub keys: Keys,
    pub mailer: Mailer,
    /// The sign-in steps, over the same pool, settings, token key and mailer.
    pub signin: SignIn,
    pub forward_auth: ForwardAuth,
    /// The OpenID Provider: its signing keys and what it remembers.
    pub oidc: Arc<Oidc>,
    /// The WebAuthn relying party; `None` when the public URL cannot have passkeys (an IP
    /// address host).
    pub webauthn: Option<webauthn_rs::prelude::Webauthn>,
    /// What `/metrics` shows; the request paths count into it.
    pub metrics: Arc<Metrics>,
    /// The audit's signer, whose last checkpoint `/metrics` shows the age of.
    pub checkpointer: Arc<Checkpointer>,
}
