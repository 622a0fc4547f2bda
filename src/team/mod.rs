//! Administering the team, free of HTTP: who is a member and with which role ([`members`]),
//! and which apps are protected and who may open each ([`apps`]). Each change is one call
//! that writes the change and its audit row in one transaction (in `models`), then drops
//! what this instance cached about it, so that its next request does not wait for the
//! notification to come back.

pub mod apps;
pub mod members;
