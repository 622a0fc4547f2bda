//! Integration tests: the real app on port 0, a fresh PostgreSQL database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod smtp_server;

mod apps;
mod apps_oidc;
mod attacks;
mod audit_chain;
mod audit_chain_alarm;
mod audit_flood;
mod audit_pages;
mod cookies;
mod csrf;
mod embedded;
mod forward_auth;
mod groups;
mod health;
mod links_and_hosts;
mod listener_cut;
mod mail;
mod mailbox;
mod metrics;
mod migrations;
mod no_secrets_in_logs;
mod oidc;
mod operations;
mod pages;
mod passkeys;
mod proxies;
mod rate_limit;
mod request_limits;
mod roles;
mod security_headers;
mod session_cache;
mod session_store;
mod sessions;
mod sign_in;
mod signin_steps;
mod smtp_tls;
mod team;
