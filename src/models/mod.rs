//! Tables as Rust: a read struct, a `New…` insert struct, and the queries as functions
//! taking a connection. `QueryResult` here; what users see is decided by the handlers.

pub mod app;
pub mod app_session;
pub mod dashboard;
pub mod group;
pub mod member;
pub mod member_browser;
pub mod oidc;
pub mod passkey;
pub mod passkey_ceremony;
pub mod return_url;
pub mod sign_in_request;
