//! Latchkey: a passwordless sign-in gateway and admin dashboard for small trusted teams.

pub mod audit;
pub mod cli;
pub mod crypto;
pub mod dashboard;
pub mod db;
pub mod domain;
pub mod forward_auth;
pub mod keys;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod middleware;
pub mod models;
pub mod oidc;
pub mod passkeys;
pub mod private_fs;
pub mod purge;
pub mod routes;
pub mod schema;
pub mod session;
pub mod settings;
pub mod signin;
pub mod startup;
pub mod state;
pub mod team;
pub mod web;
