//! A direct or probation swap prepared beside the running module, so the
//! strategy's events wait only for the snapshot and the switch.
//!
//! Owns the hand-over in three moves:
//! 1. between two events, the running state is snapshotted — the first part
//!    of the pause — and kept as the swap's checkpoint (the durable record a
//!    rollback or restart starts from) before the next event is journaled;
//! 2. on a task of its own, a new instance of the module is made and
//!    restores that state, while the old module goes on handling events;
//!    each of those events and the actions the old module took are kept;
//! 3. before the first event after the new instance is ready, it is given
//!    the kept events (its actions must equal the old module's: the orders
//!    were sent already) and put in place — the second part of the pause.
//!
//! When the new module cannot read the state, acts differently on a kept
//! event, or faults, the swap is done the plain way at that point (see
//! [`Cell::hand_over`]: snapshot, restore or replay, with the longer pause
//! that takes), so what it decides is what a plain swap would have. Never
//! touches the journal; a swap request arriving meanwhile waits its turn.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::swap::{describe, micros};
use super::{Cell, SwapError};
use crate::contract::{Action, Event, StrategyInfo};
use crate::sandbox::{Instance, StrategyModule};
use crate::supervisor::board::{SwapAnswer, SwapMode};

/// Most events kept for the new instance to catch up with; past that the
/// swap is done the plain way at the next event.
const MAX_KEPT: usize = 10_000;

/// Longest wait for the new instance when the run ends (making it and
/// restoring the state are each bounded by the call deadline).
const READY_WAIT: Duration = Duration::from_secs(5);

/// What the task bringing the new instance up hands back: the instance and
/// what it says about itself, and whether it took the state; or why not.
type Ready = Result<(Instance, StrategyInfo, bool), String>;

/// A swap being prepared; see the module docs.
pub(super) struct Preparing {
    module: StrategyModule,
    mode: SwapMode,
    answer: Option<SwapAnswer>,
    old_digest: String,
    /// The pause the snapshot took (its checkpoint follows, off the pause,
    /// as in a plain swap).
    snapshot_us: u64,
    /// Events the old module handled since the snapshot, with its actions.
    kept: Vec<(Event, Vec<Action>)>,
    /// The snapshot no longer leads to the running state (see
    /// [`Cell::unprepare_swap`]).
    stale: bool,
    ready: oneshot::Receiver<Ready>,
}

impl Cell {
    /// Step 1 (see the module docs): snapshot, checkpoint, and the new
    /// instance started on a task of its own. A refusal is recorded and
    /// answered at once.
    pub(super) async fn prepare_swap(
        &mut self,
        module: StrategyModule,
        mode: SwapMode,
        answer: Option<SwapAnswer>,
    ) {
        let started = Instant::now();
        if let Err(e) = self.check_not_fatal() {
            return self
                .refuse_request(&module, mode, answer, e.to_string())
                .await;
        }
        let state = match self.snapshot().await {
            Ok(Some(state)) => state,
            // No instance runs (it faulted): the plain way brings one up.
            Ok(None) => {
                let outcome = self.swap_with(module, mode, None).await;
                if let Some(answer) = answer {
                    let _ = answer.send(outcome.map_err(|SwapError::Refused(r)| r));
                }
                return;
            }
            Err(fault) => {
                let reason = format!("snapshot before the swap failed: {fault}");
                self.checkpoint_failed(fault, "snapshot before a hot swap")
                    .await;
                return self.refuse_request(&module, mode, answer, reason).await;
            }
        };
        let snapshot_us = micros(started);
        let (version, old_digest) = (self.info.state_version, self.module.digest());
        // The new instance starts at once; the checkpoint is written meanwhile.
        let (tx, ready) = oneshot::channel();
        let (new, name, bytes) = (module.clone(), self.name.clone(), state.clone());
        tokio::spawn(async move {
            let ready = match describe(&new, &name).await {
                Ok((mut instance, info)) => {
                    let took = matches!(instance.restore(&bytes, version).await, Ok(Ok(())));
                    Ok((instance, info, took))
                }
                Err(reason) => Err(reason),
            };
            let _ = tx.send(ready);
        });
        if let Err(reason) = self.keep_swap_checkpoint(state).await {
            return self.refuse_request(&module, mode, answer, reason).await;
        }
        self.preparing = Some(Preparing {
            module,
            mode,
            answer,
            old_digest,
            snapshot_us,
            kept: Vec::new(),
            stale: false,
            ready,
        });
    }

    /// Step 2: keeps an event the old module handled (and journaled) while
    /// the new instance is made.
    pub(super) fn keep_for_swap(&mut self, event: Event, actions: Vec<Action>) {
        if let Some(p) = &mut self.preparing
            && p.kept.len() < MAX_KEPT
        {
            p.kept.push((event, actions));
        }
    }

    /// The running module's state no longer follows from the snapshot and
    /// the kept events (a probation rolled back): the prepared swap is done
    /// the plain way at the next event.
    pub(super) fn unprepare_swap(&mut self) {
        if let Some(p) = &mut self.preparing {
            p.stale = true;
        }
    }

    /// Whether events are being kept for a prepared swap.
    pub(super) fn keeps_for_swap(&self) -> bool {
        self.preparing.is_some()
    }

    /// Step 3, before each event: once the new instance is ready, it catches
    /// up and takes over (or the swap is done the plain way, or refused).
    /// With `wait` (the run ends: no next event), waits for it first, at
    /// most [`READY_WAIT`].
    pub(super) async fn finish_prepared_swap(&mut self, wait: bool) {
        let Some(p) = &mut self.preparing else {
            return;
        };
        let gone = || Some(Err("the task bringing the new module up ended".to_string()));
        let ready = if wait {
            match tokio::time::timeout(READY_WAIT, &mut p.ready).await {
                Ok(Ok(ready)) => Some(ready),
                Ok(Err(_)) => gone(),
                Err(_) => None,
            }
        } else {
            match p.ready.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) if p.kept.len() < MAX_KEPT => return,
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => gone(),
                Ok(ready) => Some(ready),
            }
        };
        let Some(p) = self.preparing.take() else {
            return;
        };
        if let Err(e) = self.check_not_fatal() {
            return self.refuse_prepared(p, e.to_string()).await;
        }
        let started = Instant::now();
        let (mut instance, info) = match ready {
            Some(Ok((instance, info, true))) if !p.stale => (instance, info),
            // It cannot read the state, is not ready after many events, or
            // the state moved on another way: the plain way, from the
            // running state now.
            Some(Ok(_)) | None => return self.swap_plainly(p).await,
            Some(Err(reason)) => return self.refuse_prepared(p, reason).await,
        };
        for (event, actions) in &p.kept {
            match instance.on_event(event).await {
                Ok(theirs) if theirs == *actions => {}
                // It acts differently, or faults: the plain way decides.
                _ => return self.swap_plainly(p).await,
            }
        }
        let ready_us = p.snapshot_us + micros(started);
        let Preparing {
            module,
            mode,
            answer,
            old_digest,
            ..
        } = p;
        let outcome = self
            .install(module, info, instance, true, mode, started, ready_us)
            .await;
        let outcome = match outcome {
            Ok(replaced) => {
                self.swapped(mode, &old_digest, replaced).await;
                Ok(())
            }
            Err(SwapError::Refused(reason)) => Err(reason),
        };
        if let Some(answer) = answer {
            let _ = answer.send(outcome);
        }
    }

    /// The swap done the plain way at this point (see [`Cell::hand_over`]).
    async fn swap_plainly(&mut self, p: Preparing) {
        let outcome = self.swap_with(p.module, p.mode, None).await;
        if let Some(answer) = p.answer {
            let _ = answer.send(outcome.map_err(|SwapError::Refused(r)| r));
        }
    }

    /// Refuses a prepared swap with `reason`: recorded and answered.
    async fn refuse_prepared(&mut self, p: Preparing, reason: String) {
        self.refuse_request(&p.module, p.mode, p.answer, reason)
            .await;
    }

    /// Refuses a swap to `module`: recorded, and `answer` told why.
    async fn refuse_request(
        &mut self,
        module: &StrategyModule,
        mode: SwapMode,
        answer: Option<SwapAnswer>,
        reason: String,
    ) {
        self.refused(module, mode, reason.clone()).await;
        if let Some(answer) = answer {
            let _ = answer.send(Err(reason));
        }
    }
}
