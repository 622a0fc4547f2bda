//! Integration tests: the real app on port 0, a fresh PostgreSQL database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod smtp_server;

mod embedded;
mod health;
mod mail;
mod migrations;
mod session_store;
mod sign_in;
