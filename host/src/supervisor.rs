//! Supervision: one [`Cell`] per strategy keeps it running through faults.
//!
//! A cell owns a strategy's live instance and its journal. It feeds events in,
//! and when the strategy traps, overruns its deadline or hits its memory cap it
//! drops the instance, waits out a jittered exponential backoff, instantiates
//! afresh, restores the newest checkpoint and replays the journal after it —
//! so the state after recovery is the state at the moment of failure.
//!
//! The words users see, in order:
//! `starting → running → (fault) → backoff → recovering → running`, `fatal`
//! after more than `max_restarts` restarts within `restart_window` (counted in
//! a sliding window, OTP style, so a strategy that crashes every minute does
//! not restart forever), and `stopped`. An event that makes the strategy fault
//! `quarantine_after` times in a row is quarantined: recorded with the error
//! and skipped, so one poison event cannot crash-loop a strategy.

mod cell;
mod policy;
mod shutdown;
mod timers;

pub use cell::{
    Cell, CellError, CellSpec, CellState, CellStats, PlannedAction, StartError, Step, SwapError,
    plan,
};
pub use policy::{CheckpointPolicy, Pace, RestartPolicy};
pub use shutdown::Shutdown;
