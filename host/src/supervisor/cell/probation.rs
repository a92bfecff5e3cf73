//! Probation: a module swapped in with [`SwapMode::Probation`] is watched
//! for its first `probation_events` events. More than `probation_faults`
//! faults, or any divergence of its replays, rolls it back: the old module
//! restores the checkpoint taken just before the swap and replays the
//! journal since (the events the new module handled are kept; their
//! recorded actions were the ones sent, so replayed ones are compared only
//! for the report and never sent again). The rollback and its reason are a
//! `swap-rollback` system event with both digests.
//!
//! Owns the watch and the rollback only; the hand-over is `swap.rs`'s.

use std::time::Instant;

use super::faults::Fault;
use super::recovery::RecoverError;
use super::swap::{Replaced, micros};
use super::{Cell, CellError, CellState};
use crate::contract::StrategyInfo;
use crate::sandbox::StrategyModule;
use crate::supervisor::board::{ProbationView, SwapMode};

/// A module on probation and the one to go back to.
pub(super) struct Probation {
    old_module: StrategyModule,
    old_info: StrategyInfo,
    old_swapped_at: u64,
    /// The last seq the old module handled; its checkpoint is there.
    swap_seq: u64,
    events: u64,
    faults: u32,
    divergences_before: u64,
}

impl Cell {
    /// Starts watching the module just swapped in.
    pub(super) fn begin_probation(&mut self, replaced: Replaced) {
        self.probation = Some(Probation {
            old_module: replaced.module,
            old_info: replaced.info,
            old_swapped_at: replaced.swapped_at_seq,
            swap_seq: self.last_seq,
            events: 0,
            faults: 0,
            divergences_before: self.stats.divergences,
        });
        self.show_probation();
    }

    /// Ends a probation without a verdict (the module was replaced).
    pub(super) fn end_probation(&mut self) {
        if self.probation.take().is_some() {
            self.show_probation();
        }
    }

    fn show_probation(&self) {
        let view = self.probation.as_ref().map(|p| ProbationView {
            digest: self.module.digest(),
            previous_digest: p.old_module.digest(),
            since_seq: p.swap_seq,
            events: p.events,
            events_needed: self.probation_policy.probation_events,
            faults: p.faults,
            faults_allowed: self.probation_policy.probation_faults,
        });
        self.board.set_probation(view);
    }

    /// After an event handled by a module on probation: rolls back on a
    /// divergence, keeps the module once it handled enough events.
    pub(super) async fn probation_step(&mut self) -> Result<(), CellError> {
        let divergences = self.stats.divergences;
        let Some(p) = self.probation.as_mut() else {
            return Ok(());
        };
        p.events += 1;
        if divergences > p.divergences_before {
            let reason = format!(
                "its replays diverged from the journal within {} events of the swap",
                p.events
            );
            return self.rollback(reason).await;
        }
        if p.events >= self.probation_policy.probation_events {
            let old = p.old_module.digest();
            let message = format!(
                "module {} kept after {} events on probation ({} faults); it replaced {old}",
                self.module.digest(),
                p.events,
                p.faults
            );
            self.probation = None;
            self.system_event("swap-probation-passed", message).await;
            self.note_swap("probation-passed", SwapMode::Probation, &old, None, None);
        }
        self.show_probation();
        Ok(())
    }

    /// After a fault of the strategy: true when it rolled a module on
    /// probation back (the old module is then up and takes the event).
    pub(super) async fn probation_fault(&mut self, fault: &Fault) -> Result<bool, CellError> {
        let Some(p) = self.probation.as_mut() else {
            return Ok(false);
        };
        p.faults += 1;
        if p.faults <= self.probation_policy.probation_faults {
            self.show_probation();
            return Ok(false);
        }
        let reason = format!(
            "{} faults within {} events of the swap (at most {} allowed); last: {fault}",
            p.faults, p.events, self.probation_policy.probation_faults
        );
        self.rollback(reason).await?;
        Ok(true)
    }

    /// Whether a divergence that would make the strategy fatal is to roll
    /// a module on probation back instead.
    pub(super) fn on_probation(&self) -> bool {
        self.probation.is_some()
    }

    /// Goes back to the module before the swap: the checkpoint taken at the
    /// swap, and a replay of the journal since, by the old module.
    pub(super) async fn rollback(&mut self, reason: String) -> Result<(), CellError> {
        let Some(p) = self.probation.take() else {
            return Ok(());
        };
        let started = Instant::now();
        self.unprepare_swap();
        let bad_digest = self.module.digest();
        self.module = p.old_module;
        self.info = p.old_info;
        self.instance = None;
        // Every event so far was handled by one module or the other: the
        // old one may act differently on those the new one handled.
        self.swapped_at_seq = self.last_seq.max(p.old_swapped_at);
        self.set_state(CellState::Recovering).await;
        let recovered = loop {
            match self.recover_below(self.last_seq, p.swap_seq + 1).await {
                Ok(()) => break Ok(()),
                Err(RecoverError::Fault(fault)) => {
                    if let Err(e) = self
                        .after_fault(&fault, self.last_event_time_ms, "rolling back a swap")
                        .await
                    {
                        break Err(e);
                    }
                }
                Err(RecoverError::Shutdown) => {
                    break Err(CellError::Shutdown {
                        name: self.name.clone(),
                    });
                }
                Err(RecoverError::Diverged(why)) => break Err(self.diverged(why).await),
            }
        };
        self.board.set_module(&self.module);
        self.show_probation();
        recovered?;
        let pause_us = micros(started);
        // Later recoveries start from the old module's own state.
        if let Err(fault) = self.take_checkpoint(self.last_event_time_ms).await {
            self.checkpoint_failed(fault, "checkpoint after a rollback")
                .await;
        }
        let message = format!(
            "rolled back to module {} from module {bad_digest}: {reason}; restored the checkpoint \
             at seq {} and replayed to seq {}; swap pause {pause_us} us",
            self.module.digest(),
            p.swap_seq,
            self.last_seq
        );
        tracing::warn!(strategy = %self.name, "{message}");
        self.system_event("swap-rollback", message).await;
        self.note_swap(
            "rollback",
            SwapMode::Probation,
            &bad_digest,
            Some(pause_us),
            Some(reason),
        );
        self.set_state(CellState::Running).await;
        Ok(())
    }
}
