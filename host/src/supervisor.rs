//! Supervision: one [`Cell`] per strategy keeps it running through faults.
//!
//! A cell owns a strategy's live instance, its journal and its pending
//! timers. It feeds events in, and when a call faults (trap, deadline, memory
//! cap, too many actions or timers, a failed snapshot) it drops the instance,
//! restarts at once — backing off in event time only on faults in a row —
//! restores the newest checkpoint and replays the journal after it, so the
//! state after recovery is the state at the moment of failure. A replay that
//! does not reproduce the journal is rebuilt from further back, and the
//! strategy goes `fatal` if nothing reproduces it.
//!
//! The words users see, in order:
//! `starting → running → (fault) → [backoff →] recovering → running`, `fatal`
//! after more than `max_restarts` restarts within `restart_window` of event
//! time (a sliding window, OTP style, so a strategy that crashes every minute
//! does not restart forever), and `stopped`. An event that makes the strategy
//! fault `quarantine_after` times in a row is quarantined: recorded with the
//! error and skipped, so one poison event cannot crash-loop a strategy. Host
//! failures are retried and never counted against the strategy. A
//! [`Shutdown`] request cuts any wait or recovery short.
//!
//! The supervisor never talks to a venue and never decides when a run ends.

mod board;
mod cell;
mod policy;
mod shutdown;
mod timers;
pub(crate) use timers::record_in as record_timers;

pub use board::{
    ProbationPolicy, ProbationView, ShadowView, SwapAnswer, SwapBoard, SwapMode, SwapRecord,
    SwapRequest, SwapStatus,
};
pub use cell::{
    Cell, CellError, CellSpec, CellState, CellStats, PlannedAction, StartError, Step, SwapError,
    plan,
};
pub(crate) use policy::RestartWindow;
pub use policy::{CheckpointPolicy, Pace, RestartPolicy};
pub use shutdown::Shutdown;
