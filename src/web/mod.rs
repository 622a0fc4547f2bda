//! HTTP-facing building blocks shared by the routes: who the client is, the browser
//! cookies, CSRF tokens, page rendering and page errors.

pub mod browser;
pub mod chart;
pub mod client;
pub mod errors;
pub mod human;
pub mod json;
pub mod pages;
pub mod policy;
pub mod redirect;
