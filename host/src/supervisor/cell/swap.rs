//! Hot swap: replacing a running strategy's module with a new build, in one
//! of the modes of [`SwapMode`].
//!
//! Owns the hand-over (checkpoint with the old module, bring the new one up
//! from that state, or keep the old one if that fails), the measurement of
//! the swap pause, and the records of every swap (a system event with both
//! module digests, and the [`super::super::SwapBoard`]). Probation and shadow
//! live in their own files; nothing here touches the journal.

use std::time::Instant;

use super::{Cell, CellState, SwapError};
use crate::contract::StrategyInfo;
use crate::sandbox::{Instance, StrategyModule};
use crate::store::wall_clock_ms;
use crate::supervisor::board::{SwapMode, SwapRecord, SwapRequest};

/// The module a hand-over replaced, kept for a probation's rollback.
pub(super) struct Replaced {
    pub module: StrategyModule,
    pub info: StrategyInfo,
    pub swapped_at_seq: u64,
    pub pause_us: u64,
}

impl Cell {
    /// Replaces the strategy's module while it runs (a direct hot swap).
    ///
    /// The current state is checkpointed with the old module and handed to a
    /// new instance of `module`. A new version that cannot read the old
    /// state rebuilds it by replaying the journal from the start. If the new
    /// module cannot be brought up at all, the old one is kept and the swap
    /// is refused; either way the outcome is kept as a system event.
    ///
    /// # Errors
    /// [`SwapError`] when the new module could not take over; the old module
    /// keeps running.
    pub async fn swap_module(&mut self, module: StrategyModule) -> Result<(), SwapError> {
        self.swap_with(module, SwapMode::Direct, None).await
    }

    /// Brings `module` in the way `mode` says: at once (`direct`), on
    /// probation, or as a shadow beside the live module (from the live
    /// state, or from `init` with `shadow_config` and a replay).
    ///
    /// # Errors
    /// [`SwapError`] when the swap was refused; the live module keeps running.
    pub async fn swap_with(
        &mut self,
        module: StrategyModule,
        mode: SwapMode,
        shadow_config: Option<String>,
    ) -> Result<(), SwapError> {
        if let Some(shadow) = &self.shadow {
            let reason = format!(
                "a shadow ({}) runs already: promote or discard it first",
                shadow.module.digest()
            );
            self.refused(&module, mode, reason.clone()).await;
            return Err(SwapError::Refused(reason));
        }
        match mode {
            SwapMode::Shadow => self.start_shadow(module, shadow_config).await,
            SwapMode::Direct | SwapMode::Probation => {
                let old_digest = self.module.digest();
                let replaced = self.hand_over(module, mode).await?;
                self.swapped(mode, &old_digest, replaced).await;
                Ok(())
            }
        }
    }

    /// Records a swap done (system event, board) and starts the probation
    /// it asked for.
    pub(super) async fn swapped(&mut self, mode: SwapMode, old_digest: &str, replaced: Replaced) {
        let message = format!(
            "{} {} replaced {} {} ({mode}); module {} replaced {}; swap pause {} us",
            self.info.name,
            self.info.version,
            replaced.info.name,
            replaced.info.version,
            self.module.digest(),
            old_digest,
            replaced.pause_us,
        );
        tracing::info!(strategy = %self.name, "hot swap: {message}");
        self.system_event("hot-swap", message).await;
        self.note_swap("swap", mode, old_digest, Some(replaced.pause_us), None);
        if mode == SwapMode::Probation {
            self.begin_probation(replaced);
        }
    }

    /// Acts on one request taken from the swap channel; a refusal is
    /// recorded (system event, board) and the live module goes on.
    pub(super) async fn apply_swap_request(&mut self, request: SwapRequest) {
        let _ = match request {
            SwapRequest::Swap {
                module,
                mode: mode @ (SwapMode::Direct | SwapMode::Probation),
                answer,
                ..
            } if self.shadow.is_none() && self.preparing.is_none() => {
                // Brought up beside the running module; see `prepare.rs`.
                self.prepare_swap(module, mode, answer).await;
                Ok(())
            }
            SwapRequest::Swap {
                module,
                mode,
                config,
                answer,
            } => {
                let outcome = self.swap_with(module, mode, config).await;
                if let Some(answer) = answer {
                    let _ = answer.send(outcome.map_err(|SwapError::Refused(reason)| reason));
                }
                Ok(())
            }
            SwapRequest::Promote => self.promote().await,
            SwapRequest::Discard => self.discard(None).await,
        };
    }

    /// Refuses every request still waiting for the next event, giving
    /// `reason` (the run ends, so there is no next event): each is recorded
    /// (a `hot-swap-refused` system event, the board) and its requester is
    /// answered. Returns how many there were.
    pub async fn refuse_pending_swaps(&mut self, reason: &str) -> usize {
        // A swap being prepared was asked for before the last event: it is
        // finished, as a plain swap at that event would have been.
        self.finish_prepared_swap(true).await;
        let mut refused = 0;
        while let Some(request) = self.swaps.as_mut().and_then(|rx| rx.try_recv().ok()) {
            refused += 1;
            match request {
                SwapRequest::Swap {
                    module,
                    mode,
                    answer,
                    ..
                } => {
                    self.refused(&module, mode, reason.to_string()).await;
                    if let Some(answer) = answer {
                        let _ = answer.send(Err(reason.to_string()));
                    }
                }
                SwapRequest::Promote | SwapRequest::Discard => {
                    let what = if matches!(request, SwapRequest::Promote) {
                        "promote"
                    } else {
                        "discard"
                    };
                    self.system_event(
                        "hot-swap-refused",
                        format!("{what} of the shadow not done: {reason}"),
                    )
                    .await;
                }
            }
        }
        refused
    }

    /// Puts `module` in place of the running one, from the running state.
    /// Ends any probation (the module it protected is replaced).
    ///
    /// The pause (the old module's last event handled → the new one ready)
    /// holds the snapshot, the new instance and the restore only. The
    /// checkpoint of the old state — the durable record a rollback or a
    /// restart starts from — is written right after, before anything about
    /// the cell changes and before the next event is journaled: a swap cut
    /// short there leaves the old module in place with its journal, and the
    /// store's writes are ordered, so the checkpoint at the swap's seq is
    /// never behind an event the new module handled.
    pub(super) async fn hand_over(
        &mut self,
        module: StrategyModule,
        mode: SwapMode,
    ) -> Result<Replaced, SwapError> {
        let started = Instant::now();
        if let Err(e) = self.check_not_fatal() {
            let reason = e.to_string();
            self.refused(&module, mode, reason.clone()).await;
            return Err(SwapError::Refused(reason));
        }
        let state = match self.snapshot().await {
            Ok(state) => state,
            Err(fault) => {
                let reason = format!("snapshot before the swap failed: {fault}");
                self.checkpoint_failed(fault, "snapshot before a hot swap")
                    .await;
                self.refused(&module, mode, reason.clone()).await;
                return Err(SwapError::Refused(reason));
            }
        };
        let (mut instance, info) = match describe(&module, &self.name).await {
            Ok(pair) => pair,
            Err(reason) => {
                self.refused(&module, mode, reason.clone()).await;
                return Err(SwapError::Refused(reason));
            }
        };
        // The fast path: the old module's state straight into the new one.
        let direct = match &state {
            Some(state) => matches!(
                instance.restore(state, self.info.state_version).await,
                Ok(Ok(()))
            ),
            None => false,
        };
        let ready_us = micros(started);
        if let Some(state) = state
            && let Err(reason) = self.keep_swap_checkpoint(state).await
        {
            self.refused(&module, mode, reason.clone()).await;
            return Err(SwapError::Refused(reason));
        }
        self.install(module, info, instance, direct, mode, started, ready_us)
            .await
    }

    /// Puts `module` (its `instance` holding the running state when `direct`;
    /// otherwise rebuilt from the journal) in place of the running one.
    /// `ready_us` is the pause so far; a rebuild counts until `started`'s
    /// elapsed time.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn install(
        &mut self,
        module: StrategyModule,
        info: StrategyInfo,
        instance: Instance,
        direct: bool,
        mode: SwapMode,
        started: Instant,
        ready_us: u64,
    ) -> Result<Replaced, SwapError> {
        let old_module = std::mem::replace(&mut self.module, module);
        let old_info = std::mem::replace(&mut self.info, info);
        let old_instance = self.instance.take();
        let old_swapped_at = std::mem::replace(&mut self.swapped_at_seq, self.last_seq);
        let outcome = if direct {
            self.instance = Some(instance);
            Ok(())
        } else {
            // The new version cannot read the old state: it rebuilds it from
            // the journal (a longer pause, measured as such).
            drop(instance);
            self.set_state(CellState::Recovering).await;
            self.recover(self.last_seq).await
        };
        match outcome {
            Ok(()) => {
                drop(old_instance);
                let pause_us = if direct { ready_us } else { micros(started) };
                self.board.set_module(&self.module);
                self.end_probation();
                self.set_state(CellState::Running).await;
                Ok(Replaced {
                    module: old_module,
                    info: old_info,
                    swapped_at_seq: old_swapped_at,
                    pause_us,
                })
            }
            Err(e) => {
                let reason = format!("{}: {e}", self.module.path().display());
                let refused_module = std::mem::replace(&mut self.module, old_module);
                self.info = old_info;
                self.instance = old_instance;
                self.swapped_at_seq = old_swapped_at;
                self.refused(&refused_module, mode, reason.clone()).await;
                self.set_state(CellState::Running).await;
                Err(SwapError::Refused(reason))
            }
        }
    }

    /// Keeps `state`, the running module's, as the checkpoint at the swap's
    /// seq; when the store refuses it, records that and returns the reason
    /// the swap is refused.
    pub(super) async fn keep_swap_checkpoint(&mut self, state: Vec<u8>) -> Result<(), String> {
        let (version, digest) = (self.info.state_version, self.module.digest());
        match self
            .keep_checkpoint(state, self.last_event_time_ms, version, &digest)
            .await
        {
            Ok(()) => Ok(()),
            Err(fault) => {
                let reason = format!("checkpoint before the swap failed: {fault}");
                self.checkpoint_failed(fault, "checkpoint before a hot swap")
                    .await;
                Err(reason)
            }
        }
    }

    /// Records a refused swap of `module`.
    pub(super) async fn refused(
        &mut self,
        module: &StrategyModule,
        mode: SwapMode,
        reason: String,
    ) {
        tracing::warn!(strategy = %self.name, "hot swap refused: {reason}");
        self.system_event(
            "hot-swap-refused",
            format!(
                "{reason} ({mode}; module {} stays, {} refused)",
                self.module.digest(),
                module.digest()
            ),
        )
        .await;
        let record = SwapRecord {
            kind: "refused".into(),
            mode,
            old_digest: self.module.digest(),
            new_digest: module.digest(),
            at_seq: self.last_seq,
            pause_us: None,
            reason: Some(reason),
            at_ms: wall_clock_ms(),
        };
        self.board.record(record);
    }

    /// Shows a swap, rollback, promotion or discard on the board; the module
    /// brought in is the running one.
    pub(super) fn note_swap(
        &self,
        kind: &str,
        mode: SwapMode,
        old_digest: &str,
        pause_us: Option<u64>,
        reason: Option<String>,
    ) {
        self.board.record(SwapRecord {
            kind: kind.into(),
            mode,
            old_digest: old_digest.into(),
            new_digest: self.module.digest(),
            at_seq: self.last_seq,
            pause_us,
            reason,
            at_ms: wall_clock_ms(),
        });
    }
}

/// A fresh instance of `module` and what it says about itself; the reason,
/// naming the file, when it cannot be had.
pub(super) async fn describe(
    module: &StrategyModule,
    name: &str,
) -> Result<(Instance, StrategyInfo), String> {
    let fail = |e: crate::sandbox::CallError| format!("{}: {e}", module.path().display());
    let mut instance = module.instantiate(name).await.map_err(fail)?;
    let info = instance.describe().await.map_err(fail)?;
    Ok((instance, info))
}

/// Microseconds since `started`.
pub(super) fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}
