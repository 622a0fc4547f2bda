//! The login audit, in one room: its rows and events ([`rows`]), the hash chain and its
//! verification ([`chain`]), the signed checkpoints ([`checkpoint`]), the queries the pages and
//! the dashboard run ([`query`]), the filters as people type them ([`filter`]) and the CSV
//! export ([`csv`]). It sits just above the database: every model writes its audit rows in
//! the same transaction as the change they record, so nothing here imports a model.

pub mod anchor;
pub mod chain;
pub mod checkpoint;
pub mod csv;
pub mod filter;
pub mod query;
pub mod rows;
