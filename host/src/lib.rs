//! # polybot-host
//!
//! Keeps automated trading strategies running without a human watching. Each
//! strategy is a sandboxed WebAssembly component; the host owns everything that
//! fails around it.
//!
//! # Layout
//! - [`contract`]: the strategy contract (`wit/strategy.wit`) as Rust types.
//! - [`sandbox`]: wasmtime engine, module loading and checking, instances with
//!   memory caps, call deadlines and captured stdio.
//! - [`supervisor`]: one cell per strategy — fault containment, restart with
//!   backoff in a sliding window, quarantine of poison events, exact recovery
//!   by checkpoint + journal replay.
//! - [`store`]: the journal, checkpoints, order intents, halts and system
//!   events behind one trait.
//! - [`venue`]: market data and order execution; the simulated market and
//!   paper execution.
//! - [`exec`]: the execution layer between strategies and venues: intents,
//!   retries, circuit breakers, rate limits, risk limits, reconciliation,
//!   the operator's halt; every order of a run goes through it.
//! - [`ledger`]: the one average-cost ledger (positions, cost, realised PnL,
//!   fees, cash) that paper, live and the `trades` table book fills in.
//! - [`fleet`]: many strategies in one host — one engine, one store, a task
//!   per strategy, the registry, stuck detection, heartbeats, systemd.
//! - [`api`]: the control plane over HTTP — the API, its token, the
//!   dashboard; [`metrics`]: the Prometheus text it serves.
//! - [`lease`]: one host per strategy — a lock file plus a database lease row
//!   with a fencing token.
//! - [`redact`]: credentials kept out of every message that shows a URL.
//! - [`runner`]: the event loop joining a cell to a venue through the
//!   execution layer, and resuming from a saved host state.
//! - [`config`]: the TOML config file.
//! - [`cli`]: the `polybot-host` command line.

pub mod api;
pub mod cli;
pub mod config;
pub mod contract;
pub mod exec;
pub mod fleet;
pub mod lease;
pub mod ledger;
pub mod metrics;
pub mod redact;
pub mod runner;
pub mod sandbox;
pub mod store;
pub mod supervisor;
pub mod venue;
