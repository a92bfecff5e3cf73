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
//! - [`store`]: the journal, checkpoints and system events behind one trait.
//! - [`venue`]: market data and order execution; the simulated market and
//!   paper execution.
//! - [`runner`]: the event loop joining a cell to a venue.
//! - [`config`]: the TOML config file.
//! - [`cli`]: the `polybot-host` command line.

pub mod cli;
pub mod config;
pub mod contract;
pub mod lease;
pub mod redact;
pub mod runner;
pub mod sandbox;
pub mod store;
pub mod supervisor;
pub mod venue;
