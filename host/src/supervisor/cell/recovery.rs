//! Bringing a strategy's instance back: a fresh instance, the newest usable
//! checkpoint, and a replay of the journal after it.
//!
//! **Divergence policy.** Replayed actions are compared with the journaled
//! ones. A difference means the restored state is not the state that acted:
//! the snapshot does not round-trip, or the strategy depends on something
//! outside its state. The cell then does not run on with that state:
//! 1. it rebuilds from the next older checkpoint;
//! 2. if that diverges too, from `init` and a replay from seq 1;
//! 3. if even that diverges, the strategy goes `fatal` with the seq and the
//!    reason, as no rebuild reproduces what it did.
//!
//! Each divergence is a `divergence` system event. Events handled by an
//! earlier module (before a hot swap) are exempt: a new version may
//! legitimately act differently on them; their divergences are reported only.
//! Replayed actions are never returned or sent again.
//!
//! A requested shutdown stops a recovery between two replayed events.

use std::fmt;

use super::faults::Fault;
use super::{Cell, CellError, CellState};
use crate::sandbox::{CallError, Instance};
use crate::store::Outcome;

/// Why a recovery did not bring the strategy back.
#[derive(Debug)]
pub(crate) enum RecoverError {
    /// A fault while restoring or replaying; the caller counts it and retries.
    Fault(Fault),
    /// Every rebuild diverged; the strategy cannot be trusted.
    Diverged(String),
    /// A stop was requested.
    Shutdown,
}

impl fmt::Display for RecoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoverError::Fault(fault) => fault.fmt(f),
            RecoverError::Diverged(reason) => f.write_str(reason),
            RecoverError::Shutdown => f.write_str("stopped on request"),
        }
    }
}

impl From<CallError> for RecoverError {
    fn from(e: CallError) -> Self {
        RecoverError::Fault(Fault::Call(e))
    }
}

/// Where a rebuild started.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Start {
    /// A restored checkpoint at this seq.
    Checkpoint(u64),
    /// `init`: the replay starts at seq 1.
    Init,
}

impl Start {
    fn seq(self) -> u64 {
        match self {
            Start::Checkpoint(seq) => seq,
            Start::Init => 0,
        }
    }
}

/// The first replayed event whose actions differ from the journal.
struct Divergence {
    seq: u64,
    message: String,
}

fn host_error(e: impl fmt::Display) -> RecoverError {
    RecoverError::Fault(Fault::Call(CallError::Host(wasmtime::Error::msg(
        e.to_string(),
    ))))
}

impl Cell {
    /// Recovers until the instance is back, counting each failed attempt as
    /// a fault.
    ///
    /// # Errors
    /// Fatal (restart limit or divergence) or shutdown.
    pub(super) async fn bring_up(&mut self, upto: u64, during: &str) -> Result<(), CellError> {
        loop {
            self.set_state(CellState::Recovering).await;
            match self.recover(upto).await {
                Ok(()) => return Ok(()),
                Err(RecoverError::Shutdown) => {
                    return Err(CellError::Shutdown {
                        name: self.name.clone(),
                    });
                }
                Err(RecoverError::Diverged(reason)) if self.on_probation() => {
                    return self.rollback(reason).await;
                }
                Err(RecoverError::Diverged(reason)) => return Err(self.diverged(reason).await),
                Err(RecoverError::Fault(fault)) => {
                    self.after_fault(&fault, self.last_event_time_ms, during)
                        .await?;
                }
            }
        }
    }

    /// Makes the cell fatal because no rebuild reproduces the journal.
    pub(super) async fn diverged(&mut self, reason: String) -> CellError {
        self.stats.last_fault = Some(reason.clone());
        self.diverged = Some(reason.clone());
        self.set_state(CellState::Fatal).await;
        let error = CellError::Diverged {
            name: self.name.clone(),
            reason,
        };
        tracing::error!("{error}");
        self.system_event("fatal", error.to_string()).await;
        error
    }

    /// Builds a fresh instance holding the state after the handled events up
    /// to `upto`, following the divergence policy in the module docs.
    pub(super) async fn recover(&mut self, upto: u64) -> Result<(), RecoverError> {
        self.recover_below(upto, u64::MAX).await
    }

    /// [`Cell::recover`] from a checkpoint older than seq `older_than`.
    pub(super) async fn recover_below(
        &mut self,
        upto: u64,
        mut older_than: u64,
    ) -> Result<(), RecoverError> {
        let started = std::time::Instant::now();
        // Checkpoints at or past `older_than` are not tried.
        let mut fell_back = false;
        loop {
            if self.shutdown.is_requested() {
                return Err(RecoverError::Shutdown);
            }
            let mut instance = self.module.instantiate(&self.name).await?;
            let start = self.restore_newest(&mut instance, upto, older_than).await?;
            let divergence = match self.replay(&mut instance, start, upto).await? {
                None => {
                    self.instance = Some(instance);
                    tracing::info!(
                        strategy = %self.name,
                        from_checkpoint = start.seq(),
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "recovered"
                    );
                    return Ok(());
                }
                Some(divergence) => divergence,
            };
            drop(instance);
            let next = match start {
                Start::Init => {
                    return Err(RecoverError::Diverged(format!(
                        "replay diverges from the journal at seq {} even from init and seq 1 \
                         ({}); the strategy's actions depend on something outside its state, \
                         so no restart can rebuild it",
                        divergence.seq, divergence.message
                    )));
                }
                Start::Checkpoint(seq) if !fell_back => {
                    fell_back = true;
                    older_than = seq;
                    format!("rebuilding from a checkpoint older than seq {seq}")
                }
                Start::Checkpoint(_) => {
                    older_than = 0;
                    "rebuilding from init and seq 1".to_string()
                }
            };
            self.system_event(
                "divergence",
                format!(
                    "state restored from seq {} does not reproduce the journal: {}; {next}",
                    start.seq(),
                    divergence.message
                ),
            )
            .await;
        }
    }

    /// Replays the handled events after `start` up to `upto` into `instance`;
    /// returns the first divergence, if any.
    async fn replay(
        &mut self,
        instance: &mut Instance,
        start: Start,
        upto: u64,
    ) -> Result<Option<Divergence>, RecoverError> {
        let entries = self
            .store
            .entries_after(&self.name, start.seq())
            .await
            .map_err(host_error)?;
        for entry in entries.iter().take_while(|e| e.event.seq <= upto) {
            if self.shutdown.is_requested() {
                return Err(RecoverError::Shutdown);
            }
            let recorded = match &entry.outcome {
                Outcome::Quarantined { .. } => continue,
                Outcome::Handled(actions) => actions,
            };
            let event = &entry.event;
            let actions = instance.on_event(event).await?;
            self.stats.replayed += 1;
            if recorded == &actions {
                continue;
            }
            self.stats.divergences += 1;
            let message = format!(
                "replay of event {} returned {} actions ({:?}) where {} were recorded ({:?}); \
                 nothing re-sent",
                event.seq,
                actions.len(),
                actions.first(),
                recorded.len(),
                recorded.first()
            );
            tracing::warn!(strategy = %self.name, "divergence: {message}");
            if event.seq <= self.swapped_at_seq {
                // Recorded by the module this one replaced: expected to differ.
                self.system_event(
                    "divergence",
                    format!("{message} (recorded by the module before a hot swap)"),
                )
                .await;
                continue;
            }
            return Ok(Some(Divergence {
                seq: event.seq,
                message,
            }));
        }
        Ok(None)
    }

    /// Restores the newest checkpoint below `older_than` (and at or before
    /// `upto`) that is intact and that the strategy accepts. Falls back to
    /// older ones, then to `init` and a replay from the start.
    async fn restore_newest(
        &mut self,
        instance: &mut Instance,
        upto: u64,
        older_than: u64,
    ) -> Result<Start, RecoverError> {
        let checkpoints = self
            .store
            .checkpoints(&self.name)
            .await
            .map_err(host_error)?;
        // A checkpoint past the journal (its events were lost with a crash) cannot be used.
        for checkpoint in checkpoints
            .into_iter()
            .filter(|c| c.seq <= upto && c.seq < older_than)
        {
            if !checkpoint.is_intact() {
                self.system_event(
                    "checkpoint-rejected",
                    format!(
                        "checkpoint at seq {} fails its checksum; trying an older one",
                        checkpoint.seq
                    ),
                )
                .await;
                continue;
            }
            match instance
                .restore(&checkpoint.state, checkpoint.state_version)
                .await?
            {
                Ok(()) => return Ok(Start::Checkpoint(checkpoint.seq)),
                Err(reason) => {
                    self.system_event(
                        "checkpoint-rejected",
                        format!(
                            "strategy refused the checkpoint at seq {} (state version {}): {reason}",
                            checkpoint.seq, checkpoint.state_version
                        ),
                    )
                    .await
                }
            }
        }
        // No usable checkpoint: start from init and replay the whole journal.
        match instance.init(&self.config_json).await? {
            Ok(()) => {
                self.system_event(
                    "replay-from-start",
                    if older_than == 0 {
                        "rebuilding from init; replaying the journal from seq 1".into()
                    } else {
                        "no usable checkpoint; replaying the journal from seq 1".into()
                    },
                )
                .await;
                Ok(Start::Init)
            }
            Err(message) => Err(host_error(format!(
                "no usable checkpoint and init now refuses the configuration: {message}"
            ))),
        }
    }
}
