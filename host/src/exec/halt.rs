//! The operator's halt: one durable switch per strategy that stops new
//! orders without stopping the strategy.
//!
//! Owns how a halt (or its lifting) is written: the flag in the store and the
//! system event that says who set it and why. The `halt`/`resume` commands
//! and the HTTP API both go through [`set`]. Never decides what a halted
//! strategy does: the run loop polls the flag and the executor refuses
//! placement and cancels resting orders (see `runner::execution`).

use crate::store::{HaltRecord, StateStore, StoreError, SystemEvent, Write, wall_clock_ms};

/// Halts (`halted = true`) or lets `strategy` place orders again, recording
/// `reason` and who asked (`origin`, e.g. `operator` or `api`). Returns the
/// message recorded in the system event.
///
/// # Errors
/// The store refused the write (nothing is halted then).
pub async fn set(
    store: &dyn StateStore,
    strategy: &str,
    halted: bool,
    reason: &str,
    origin: &str,
) -> Result<String, StoreError> {
    let at_ms = wall_clock_ms();
    let message = match (halted, reason.is_empty()) {
        (true, false) => format!("placement halted by {origin}: {reason}"),
        (true, true) => format!("placement halted by {origin}"),
        (false, _) => format!("placement resumed by {origin}"),
    };
    store
        .write(Write::Halt(HaltRecord {
            strategy: strategy.to_string(),
            halted,
            reason: reason.to_string(),
            at_ms,
        }))
        .await?;
    store
        .write(Write::SystemEvent(SystemEvent {
            timestamp_ms: at_ms,
            event_type: if halted { "halt" } else { "resume" }.into(),
            component: format!("{origin}/{strategy}"),
            message: message.clone(),
            id: String::new(),
        }))
        .await?;
    Ok(message)
}

/// Whether `strategy` is halted now.
///
/// # Errors
/// The store could not be read.
pub async fn is_halted(store: &dyn StateStore, strategy: &str) -> Result<bool, StoreError> {
    Ok(store.halt(strategy).await?.is_some_and(|h| h.halted))
}
