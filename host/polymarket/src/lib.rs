//! Polymarket CLOB V2.
pub mod auth;
pub mod order;
pub mod server;
pub mod types;
