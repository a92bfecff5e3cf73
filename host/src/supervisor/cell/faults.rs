//! What a cell does about a fault: count it, back off, quarantine, or give up.
//!
//! Policy, in order:
//! - A **host failure** (`CallError::Host`: the store failing during a
//!   recovery, an instance that cannot be allocated) is not the strategy's
//!   fault. It is recorded as a `host-failure` system event and retried after
//!   a wall-time backoff; it never counts towards the restart limit or
//!   towards quarantining an event.
//! - A **guest fault** (trap, deadline, memory cap, too many actions or
//!   timers) drops the instance and counts one restart in the sliding window,
//!   on event time. More than `max_restarts` in the window is `fatal`.
//! - The first restart after a handled event is immediate; repeated faults
//!   back off exponentially, in event time scaled to wall time by the run's
//!   [`Pace`](crate::supervisor::Pace). Every wait ends early on shutdown.
//! - `quarantine_after` guest faults in a row on one event quarantine it.
//!
//! Never calls into a strategy itself; bringing an instance back is `recovery`'s job.

use std::time::Duration;

use super::{Cell, CellError, CellState, Step};
use crate::contract::Event;
use crate::sandbox::CallError;
use crate::store::Outcome;

/// Why a strategy's instance had to go.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Fault {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(
        "strategy set too many timers: {pending} would be pending, the limit is {limit} \
         ([supervisor] max_pending_timers)"
    )]
    TooManyTimers { pending: usize, limit: usize },
}

impl Fault {
    /// The host's failure, not the strategy's.
    pub(crate) fn is_host(&self) -> bool {
        matches!(self, Fault::Call(CallError::Host(_)))
    }
}

impl Cell {
    /// Records a fault, counts the restart it will need and waits out the
    /// backoff. `now_ms` is the event time of the fault.
    ///
    /// # Errors
    /// [`CellError::Fatal`] when the restart window is exceeded,
    /// [`CellError::Shutdown`] when a stop is requested meanwhile.
    pub(super) async fn after_fault(
        &mut self,
        fault: &Fault,
        now_ms: u64,
        during: &str,
    ) -> Result<(), CellError> {
        self.instance = None;
        let message = format!("{during}: {fault}");
        if fault.is_host() {
            tracing::warn!(strategy = %self.name, "host failure, retrying: {message}");
            self.system_event(
                "host-failure",
                format!("{message}; retried, not counted as a restart of the strategy"),
            )
            .await;
            let restart = &self.restart;
            let delay = self
                .host_backoff
                .get_or_insert_with(|| restart.backoff())
                .next()
                .unwrap_or(self.restart.backoff_max);
            self.set_state(CellState::Backoff).await;
            return self.pause(delay).await;
        }

        tracing::warn!(strategy = %self.name, "fault: {message}");
        self.system_event("fault", message.clone()).await;
        self.stats.last_fault = Some(message);
        let restarts = self.window.record(now_ms, self.restart.restart_window);
        self.stats.restarts_in_window = restarts as u64;
        if restarts > self.restart.max_restarts as usize {
            self.set_state(CellState::Fatal).await;
            let error = CellError::Fatal {
                name: self.name.clone(),
                restarts,
                window: self.restart.restart_window,
                limit: self.restart.max_restarts,
                last_fault: self.stats.last_fault.clone().unwrap_or_default(),
            };
            tracing::error!("{error}");
            self.system_event("fatal", error.to_string()).await;
            return Err(error);
        }
        self.stats.restarts += 1;
        let delay = self.pace.wall(self.backoff.next_delay(&self.restart));
        if !delay.is_zero() {
            self.set_state(CellState::Backoff).await;
        }
        self.pause(delay).await
    }

    /// Waits `wall` unless a stop is requested first; never arms a timer for
    /// a zero wait. (`&mut self`: a future holding a shared borrow of the
    /// cell would not be `Send`.)
    async fn pause(&mut self, wall: Duration) -> Result<(), CellError> {
        let shutdown = self.shutdown.clone();
        let interrupted = if shutdown.is_requested() {
            true
        } else if wall.is_zero() {
            false
        } else {
            tokio::select! {
                () = tokio::time::sleep(wall) => false,
                () = shutdown.requested() => true,
            }
        };
        if interrupted {
            return Err(CellError::Shutdown {
                name: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Journals `event` as quarantined and brings the strategy up without it.
    pub(super) async fn quarantine(
        &mut self,
        event: &Event,
        fault: &Fault,
    ) -> Result<Step, CellError> {
        let reason = format!(
            "event {} made the strategy fault {} times in a row; last: {fault}",
            event.seq, self.restart.quarantine_after
        );
        tracing::error!(strategy = %self.name, "quarantined: {reason}");
        self.journal(
            event.clone(),
            Outcome::Quarantined {
                reason: reason.clone(),
            },
        )
        .await?;
        self.system_event("quarantine", reason.clone()).await;
        self.stats.quarantined += 1;
        // Come back up now, without the poison event, so the cell is running again.
        self.after_fault(fault, event.timestamp_ms, &format!("event {}", event.seq))
            .await?;
        self.stats.last_fault = Some(reason);
        self.bring_up(event.seq, "recovering after quarantine")
            .await?;
        self.set_state(CellState::Running).await;
        self.backoff.reset();
        Ok(Step {
            seq: event.seq,
            actions: Vec::new(),
            quarantined: true,
        })
    }

    /// Records a failed checkpoint. The instance is gone if `snapshot` itself
    /// failed: that counts as a fault of the strategy, so the next event
    /// brings up a fresh instance. A store failure is the host's: the
    /// checkpoint is retried once the next one is due.
    pub(super) async fn checkpoint_failed(&mut self, fault: Fault, during: &str) {
        if self.instance.is_some() {
            let message = format!("{during}: {fault}; tried again after the next event");
            tracing::warn!(strategy = %self.name, "{message}");
            self.system_event("checkpoint-failed", message).await;
            return;
        }
        // The error (fatal, shutdown) is the cell's state now; the next call sees it.
        if let Err(e) = self
            .after_fault(&fault, self.last_event_time_ms, during)
            .await
        {
            tracing::debug!(strategy = %self.name, "after a failed checkpoint: {e}");
        }
    }
}
