//! The dashboard's numbers, counted once per view every few seconds and shared by every
//! worker ([`cache`]), and how they are counted ([`numbers`]). The page around them is
//! `routes::dashboard`'s.

pub mod cache;
pub mod numbers;
