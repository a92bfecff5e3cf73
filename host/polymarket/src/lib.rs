//! Polymarket CLOB V2 for polybot: typed API shapes, a REST client, a self-healing market
//! WebSocket client, deterministic order signing, and a local server that speaks the same API
//! with fault injection.
//!
//! This crate is the venue boundary and nothing more. It classifies every failure precisely but
//! never retries, backs off (except the WebSocket's own reconnect loop) or breaks circuits:
//! those policies belong to the host's execution layer, which wraps every call here.
//!
//! # Layout
//! - [`types`]: every response shape and its parser; untrusted bytes in, typed values or a
//!   [`types::ParseError`] naming the shape and field out — never a panic.
//! - [`auth`]: [`auth::Credentials`] (env or permission-checked file, secrets redacted in
//!   `Debug`) and the L2 HMAC headers.
//! - [`order`]: V2 order amounts, EIP-712 hashing and signing. An intent's identity fixes the
//!   salt and timestamp, so the order hash (the venue's `orderID`) is known before sending and
//!   a re-send is byte-identical.
//! - [`rest`]: [`rest::ClobClient`], one request per call, errors classified for retry policy
//!   ([`rest::ClobError::is_retryable`]).
//! - [`ws`]: [`ws::MarketStream`], market channel with keepalive, reconnect + backoff, and a
//!   no-data watchdog that reconnects and backfills books from REST.
//! - [`server`]: [`server::SimServer`], the local CLOB (REST, Gamma, WebSocket, matching,
//!   dead-man switch) with a [`server::FaultPlan`]; what the contract tests run the clients against.
//!
//! Nothing in this crate contacts Polymarket unless given its URLs ([`rest::CLOB_URL`],
//! [`ws::MARKET_WS_URL`]); the tests use only 127.0.0.1.

pub mod auth;
pub mod order;
pub mod rest;
pub mod server;
pub mod types;
pub mod ws;
