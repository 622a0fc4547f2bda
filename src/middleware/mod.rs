//! Cross-cutting request handling, each concern in its own module.

pub mod availability;
pub mod security_headers;
