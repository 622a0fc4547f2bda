//! Cross-cutting request handling, each concern in its own module.

pub mod access_log;
pub mod anonymous;
pub mod availability;
pub mod body_limit;
pub mod browser_cookie;
pub mod check_cookie;
pub mod csrf;
pub mod guard;
pub mod rate_limit;
pub mod request_metrics;
pub mod security_headers;
