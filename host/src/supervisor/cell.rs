//! A supervisor cell: one strategy, its instance, its journal and its policy.
//!
//! Recovery is exact because of two invariants kept here:
//! 1. every event is appended to the journal before the strategy sees it, and
//!    its outcome (the actions returned, or quarantine) is recorded after;
//! 2. a checkpoint at seq `n` is the state after exactly the handled,
//!    non-quarantined events `1..=n`.
//!
//! So restoring checkpoint `n` and replaying the handled events after it, in
//! order, rebuilds the state the failed instance had. Replayed actions were
//! already acted on: they are compared with the recorded ones (a difference is
//! reported as divergence) and never returned to the caller again.
//!
//! This file owns the cell's lifecycle (start, handle, hot swap, stop) and
//! its records; fault handling lives in `faults`, rebuilding an instance in
//! `recovery`, the swap's hand-over in `swap` (prepared beside the running
//! module in `prepare`), probation and shadow in their own files. A cell never talks to a venue and never decides when a run ends.

mod faults;
mod prepare;
mod probation;
mod recovery;
mod shadow;
mod swap;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use self::faults::Fault;
use super::board::{ProbationPolicy, SwapBoard, SwapRequest};
use super::policy::{Backoff, CheckpointPolicy, Pace, RestartPolicy, RestartWindow};
use super::shutdown::Shutdown;
use super::timers::PendingTimers;
use crate::contract::{Action, Event, EventKind, StrategyInfo, intent_id};
use crate::sandbox::{CallError, Instance, StrategyModule};
use crate::store::{
    Checkpoint, JournalEntry, Outcome, StateStore, StoreError, SystemEvent, Write, wall_clock_ms,
};

/// The states a cell moves through; their names are what users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellState {
    Starting,
    Running,
    Backoff,
    Recovering,
    Fatal,
    Stopped,
}

impl fmt::Display for CellState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CellState::Starting => "starting",
            CellState::Running => "running",
            CellState::Backoff => "backoff",
            CellState::Recovering => "recovering",
            CellState::Fatal => "fatal",
            CellState::Stopped => "stopped",
        })
    }
}

/// Counters a cell keeps about itself.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CellStats {
    pub events: u64,
    pub restarts: u64,
    /// Restarts within the restart window, as of the last event handled.
    pub restarts_in_window: u64,
    pub quarantined: u64,
    pub divergences: u64,
    pub checkpoints: u64,
    pub replayed: u64,
    pub last_fault: Option<String>,
}

/// An action the strategy returned, with the intent id orders are known by.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAction {
    /// For `place-order`: the intent id (`<seq>.<index>`); otherwise empty.
    pub intent_id: String,
    pub action: Action,
}

/// What handling one event produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub seq: u64,
    pub actions: Vec<PlannedAction>,
    /// The event was quarantined instead of handled.
    pub quarantined: bool,
}

/// Why a strategy could not start. All of these are the strategy's or the
/// user's to fix; none is retried.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{path}: cannot instantiate: {source}")]
    Instantiate { path: String, source: CallError },
    #[error("{path}: init refused the configuration: {message}")]
    InitRefused { path: String, message: String },
    #[error("{path}: {source}")]
    Store { path: String, source: StoreError },
}

/// Why a cell stopped handling events.
#[derive(Debug, thiserror::Error)]
pub enum CellError {
    #[error(
        "strategy {name} is fatal: {restarts} restarts within {window:?} (limit {limit}); last fault: {last_fault}"
    )]
    Fatal {
        name: String,
        restarts: usize,
        window: Duration,
        limit: u32,
        last_fault: String,
    },
    /// Replay kept producing other actions than the journal recorded, even
    /// from `init` and the first event: the strategy's state cannot be trusted.
    #[error("strategy {name} is fatal: {reason}")]
    Diverged { name: String, reason: String },
    /// A stop was requested while the cell waited out a backoff or recovered.
    #[error("strategy {name}: stopped on request before the event was handled")]
    Shutdown { name: String },
    #[error("strategy {name}: {source}")]
    Store { name: String, source: StoreError },
}

/// Why a hot swap did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("hot swap refused: {0}")]
    Refused(String),
}

/// Everything needed to start a cell.
pub struct CellSpec {
    pub name: String,
    pub module: StrategyModule,
    /// Configuration passed to `init`, as JSON.
    pub config_json: String,
    pub restart: RestartPolicy,
    pub checkpoint: CheckpointPolicy,
}

/// One supervised strategy.
pub struct Cell {
    name: String,
    component: String,
    module: StrategyModule,
    config_json: String,
    info: StrategyInfo,
    restart: RestartPolicy,
    checkpoint: CheckpointPolicy,
    store: Arc<dyn StateStore>,
    instance: Option<Instance>,
    state: CellState,
    window: RestartWindow,
    backoff: Backoff,
    /// Backoff between retries after host failures (wall time, never zero).
    host_backoff: Option<backon::ExponentialBackoff>,
    timers: PendingTimers,
    pace: Pace,
    shutdown: Shutdown,
    /// Events up to this seq were handled by an earlier module (before a hot
    /// swap): a new version may act differently on them.
    swapped_at_seq: u64,
    /// Why the cell went fatal, when a divergence made it so.
    diverged: Option<String>,
    last_seq: u64,
    last_checkpoint_seq: u64,
    last_checkpoint_time_ms: u64,
    last_event_time_ms: u64,
    stats: CellStats,
    observer: Option<Arc<dyn Fn(CellState) + Send + Sync>>,
    swaps: Option<tokio::sync::mpsc::UnboundedReceiver<SwapRequest>>,
    board: SwapBoard,
    probation_policy: ProbationPolicy,
    probation: Option<probation::Probation>,
    shadow: Option<shadow::Shadow>,
    /// A swap whose new instance is brought up beside this one.
    preparing: Option<prepare::Preparing>,
}

impl Cell {
    /// Instantiates the strategy and brings it to its newest state: `init` on a
    /// fresh start, or restore + replay when the store already holds its journal.
    ///
    /// # Errors
    /// A [`StartError`] when the strategy cannot be instantiated or refuses its
    /// configuration.
    pub async fn start(spec: CellSpec, store: Arc<dyn StateStore>) -> Result<Cell, StartError> {
        let path = spec.module.path().display().to_string();
        let mut instance = spec
            .module
            .instantiate(&spec.name)
            .await
            .map_err(|source| StartError::Instantiate {
                path: path.clone(),
                source,
            })?;
        let info = instance
            .describe()
            .await
            .map_err(|source| StartError::Instantiate {
                path: path.clone(),
                source,
            })?;
        let mut cell = Cell {
            component: format!("supervisor/{}", spec.name),
            name: spec.name,
            module: spec.module,
            config_json: spec.config_json,
            info,
            restart: spec.restart,
            checkpoint: spec.checkpoint,
            store,
            instance: None,
            state: CellState::Starting,
            window: RestartWindow::default(),
            backoff: Backoff::default(),
            host_backoff: None,
            timers: PendingTimers::default(),
            pace: Pace::default(),
            shutdown: Shutdown::new(),
            swapped_at_seq: 0,
            diverged: None,
            last_seq: 0,
            last_checkpoint_seq: 0,
            last_checkpoint_time_ms: 0,
            last_event_time_ms: 0,
            stats: CellStats::default(),
            observer: None,
            swaps: None,
            board: SwapBoard::default(),
            probation_policy: ProbationPolicy::default(),
            probation: None,
            shadow: None,
            preparing: None,
        };
        cell.system_event(
            "state-change",
            format!("{} {}", cell.name, CellState::Starting),
        )
        .await;
        cell.persist_state().await;

        let last_seq =
            cell.store
                .last_seq(&cell.name)
                .await
                .map_err(|source| StartError::Store {
                    path: path.clone(),
                    source,
                })?;
        if last_seq == 0 {
            match instance.init(&cell.config_json).await {
                Ok(Ok(())) => {}
                Ok(Err(message)) => return Err(StartError::InitRefused { path, message }),
                Err(source) => return Err(StartError::Instantiate { path, source }),
            }
            cell.instance = Some(instance);
            // Checkpoint 0: the state right after init, so recovery never needs init again.
            if let Err(fault) = cell.take_checkpoint(0).await {
                cell.checkpoint_failed(fault, "checkpoint after init").await;
            }
        } else {
            cell.last_seq = last_seq;
            drop(instance);
            let last = cell
                .store
                .entries_after(&cell.name, last_seq - 1)
                .await
                .map_err(|source| StartError::Store {
                    path: path.clone(),
                    source,
                })?;
            if let Some(last) = last.last() {
                cell.last_event_time_ms = last.event.timestamp_ms;
            }
            cell.set_state(CellState::Recovering).await;
            if let Err(e) = cell.recover(last_seq).await {
                // The first event handled brings the strategy up again.
                cell.system_event("fault", format!("resuming at seq {last_seq} failed: {e}"))
                    .await;
            }
        }
        cell.set_state(CellState::Running).await;
        Ok(cell)
    }

    /// Calls `observer` on every state change (for progress displays and tests).
    pub fn on_state_change(&mut self, observer: Arc<dyn Fn(CellState) + Send + Sync>) {
        self.observer = Some(observer);
    }

    /// Requests sent on `swaps` (a module to swap in, promote, discard) are
    /// acted on (see [`Cell::swap_with`]) before the next event is handled.
    pub fn take_swaps_from(&mut self, swaps: tokio::sync::mpsc::UnboundedReceiver<SwapRequest>) {
        self.swaps = Some(swaps);
    }

    /// Where the cell shows its swaps, probation and shadow (and the module
    /// it runs after one).
    pub fn set_swap_board(&mut self, board: SwapBoard) {
        board.set_module(&self.module);
        self.board = board;
    }

    /// When a module on probation is rolled back.
    pub fn set_probation_policy(&mut self, policy: ProbationPolicy) {
        self.probation_policy = policy;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &StrategyInfo {
        &self.info
    }

    pub fn state(&self) -> CellState {
        self.state
    }

    pub fn stats(&self) -> &CellStats {
        &self.stats
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Bytes of linear memory of the live instance (0 without one).
    pub fn instance_memory_bytes(&self) -> u64 {
        self.instance
            .as_ref()
            .map_or(0, |i| i.memory_bytes() as u64)
    }

    /// Stops waits and recoveries as soon as `shutdown` is requested: a
    /// [`Cell::handle`] in backoff or recovery then ends with
    /// [`CellError::Shutdown`].
    pub fn set_shutdown(&mut self, shutdown: Shutdown) {
        self.shutdown = shutdown;
    }

    /// How the run's event time relates to wall time; backoffs are in event
    /// time and wait `backoff / speed` of wall time (default: real time).
    pub fn set_pace(&mut self, pace: Pace) {
        self.pace = pace;
    }

    /// Timers the strategy has set that are not yet due or taken.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// The pending timers, `(due time, timer id)`, for the run loop's host state.
    pub fn pending_timer_set(&self) -> &std::collections::BTreeSet<(u64, u64)> {
        self.timers.as_set()
    }

    /// Adds timers the strategy set before this cell started (after a host
    /// restart the run loop knows them from its host state and the journal).
    pub fn add_pending_timers(&mut self, timers: std::collections::BTreeSet<(u64, u64)>) {
        self.timers.extend(timers);
    }

    /// Takes the strategy's timers due at or before event time `now_ms`, as
    /// `(due time, timer id)`, earliest first. Each is to be handed back as a
    /// timer event at its due time. Host states are saved between ticks, so a
    /// timer taken but never handled (the run stopped mid-tick) is still in the
    /// saved set or set again by the journal a resumed run catches up with.
    pub fn take_due_timers(&mut self, now_ms: u64) -> Vec<(u64, u64)> {
        self.timers.take_due(now_ms)
    }

    /// The store the cell writes to.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// Journals an event and hands it to the strategy, recovering from faults
    /// until it is handled or quarantined.
    ///
    /// # Errors
    /// [`CellError::Fatal`] once the restart window is exceeded (every later
    /// call fails the same way), or a store failure.
    pub async fn handle(&mut self, timestamp_ms: u64, kind: EventKind) -> Result<Step, CellError> {
        self.check_not_fatal()?;
        self.finish_prepared_swap(false).await;
        // One swap at a time: the next request waits while one is prepared.
        while !self.keeps_for_swap()
            && let Some(request) = self.swaps.as_mut().and_then(|rx| rx.try_recv().ok())
        {
            // A refused swap is recorded and the current module goes on.
            self.apply_swap_request(request).await;
        }
        let event = Event {
            seq: self.last_seq + 1,
            timestamp_ms,
            kind,
        };

        let mut guest_faults = 0u32;
        loop {
            if self.instance.is_none() {
                self.bring_up(
                    event.seq - 1,
                    &format!("recovering before event {}", event.seq),
                )
                .await?;
            }
            let Some(instance) = self.instance.as_mut() else {
                continue;
            };
            let fault = match instance.on_event(&event).await {
                Ok(actions) => {
                    let pending = self.timers.len_after(&event, &actions);
                    if pending <= self.restart.max_pending_timers {
                        let kept = self
                            .keeps_for_swap()
                            .then(|| (event.clone(), actions.clone()));
                        let shadowed = self.shadow.is_some().then(|| event.clone());
                        let step = self.handled(event, actions).await?;
                        if let Some((event, actions)) = kept {
                            self.keep_for_swap(event, actions);
                        }
                        if let Some(event) = shadowed {
                            let live: Vec<Action> =
                                step.actions.iter().map(|p| p.action.clone()).collect();
                            self.shadow_step(&event, &live).await;
                        }
                        self.probation_step().await?;
                        return Ok(step);
                    }
                    Fault::TooManyTimers {
                        pending,
                        limit: self.restart.max_pending_timers,
                    }
                }
                Err(e) => Fault::Call(e),
            };
            // Whatever failed, this instance is never entered again.
            self.instance = None;
            if !fault.is_host() {
                if self.probation_fault(&fault).await? {
                    // Rolled back: the old module takes the event afresh.
                    guest_faults = 0;
                    continue;
                }
                guest_faults += 1;
            }
            if guest_faults >= self.restart.quarantine_after {
                return self.quarantine(&event, &fault).await;
            }
            self.after_fault(&fault, event.timestamp_ms, &format!("event {}", event.seq))
                .await?;
        }
    }

    /// Records a handled event and its actions, and takes a checkpoint when due.
    async fn handled(&mut self, event: Event, actions: Vec<Action>) -> Result<Step, CellError> {
        self.set_state(CellState::Running).await;
        self.stats.restarts_in_window =
            self.window
                .count(event.timestamp_ms, self.restart.restart_window) as u64;
        self.backoff.reset();
        self.host_backoff = None;
        let leaves_host = actions
            .iter()
            .any(|a| matches!(a, Action::PlaceOrder(_) | Action::CancelOrder(_)));
        let seq = event.seq;
        let timestamp_ms = event.timestamp_ms;
        self.journal(event, Outcome::Handled(actions.clone()))
            .await?;
        if leaves_host {
            // Write-ahead: the event and its actions are durable
            // before any order or cancel leaves the host.
            self.store.sync().await.map_err(|e| self.store_error(e))?;
        }
        self.maybe_checkpoint(seq, timestamp_ms).await?;
        Ok(Step {
            seq,
            actions: plan(seq, actions),
            quarantined: false,
        })
    }

    /// Takes a final checkpoint, stops, and waits for the store to be durable.
    pub async fn stop(&mut self) {
        if self.state != CellState::Fatal && self.instance.is_some() {
            let seq = self.last_seq;
            if seq > self.last_checkpoint_seq
                && let Err(fault) = self.take_checkpoint(self.last_event_time_ms).await
            {
                // Nothing is lost: the journal holds every event since the last checkpoint.
                let message = format!("final checkpoint at seq {seq}: {fault}");
                tracing::warn!(strategy = %self.name, "{message}");
                self.system_event("checkpoint-failed", message).await;
            }
        }
        self.instance = None;
        if self.state != CellState::Fatal {
            self.set_state(CellState::Stopped).await;
        }
        if let Err(e) = self.store.sync().await {
            tracing::error!(strategy = %self.name, "store did not confirm the final writes: {e}");
        }
    }

    /// Appends a handled or quarantined event to the journal.
    async fn journal(&mut self, event: Event, outcome: Outcome) -> Result<(), CellError> {
        let seq = event.seq;
        let time = event.timestamp_ms;
        match &outcome {
            Outcome::Handled(actions) => self.timers.record(&event, actions),
            Outcome::Quarantined { .. } => self.timers.record(&event, &[]),
        }
        let entry = JournalEntry { event, outcome };
        self.store
            .write(Write::Journal {
                strategy: self.name.clone(),
                entry,
            })
            .await
            .map_err(|e| self.store_error(e))?;
        self.last_seq = seq;
        self.last_event_time_ms = time;
        self.stats.events += 1;
        Ok(())
    }

    /// Records the cell's state and restart count in the store.
    async fn persist_state(&mut self) {
        let write = Write::StrategyState {
            strategy: self.name.clone(),
            module_digest: self.module.digest(),
            state: self.state.to_string(),
            restarts: self.stats.restarts,
            at_ms: wall_clock_ms(),
        };
        if let Err(e) = self.store.write(write).await {
            tracing::warn!(strategy = %self.name, "cannot record state: {e}");
        }
    }

    fn check_not_fatal(&self) -> Result<(), CellError> {
        if self.state == CellState::Fatal
            && let Some(reason) = &self.diverged
        {
            return Err(CellError::Diverged {
                name: self.name.clone(),
                reason: reason.clone(),
            });
        }
        if self.state == CellState::Fatal {
            return Err(CellError::Fatal {
                name: self.name.clone(),
                restarts: self.restart.max_restarts as usize + 1,
                window: self.restart.restart_window,
                limit: self.restart.max_restarts,
                last_fault: self.stats.last_fault.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }

    async fn maybe_checkpoint(&mut self, seq: u64, timestamp_ms: u64) -> Result<(), CellError> {
        let due_by_count = seq - self.last_checkpoint_seq >= self.checkpoint.every_events;
        let due_by_time = timestamp_ms.saturating_sub(self.last_checkpoint_time_ms)
            >= self.checkpoint.every_event_time.as_millis() as u64;
        if !(due_by_count || due_by_time) {
            return Ok(());
        }
        match self.take_checkpoint(timestamp_ms).await {
            Ok(()) => Ok(()),
            // The event is handled and recorded; a store failure leaves the
            // instance healthy and the checkpoint is tried again after the
            // next event.
            Err(fault) if self.instance.is_some() => {
                self.checkpoint_failed(fault, &format!("checkpoint after event {seq}"))
                    .await;
                Ok(())
            }
            Err(fault) => {
                self.after_fault(
                    &fault,
                    timestamp_ms,
                    &format!("checkpoint after event {seq}"),
                )
                .await
            }
        }
    }

    /// Snapshots the instance and stores the checkpoint. A failed `snapshot`
    /// drops the instance (a faulted instance is never entered again); a
    /// failed store write leaves it in place.
    async fn take_checkpoint(&mut self, event_time_ms: u64) -> Result<(), Fault> {
        let Some(state) = self.snapshot().await? else {
            return Ok(());
        };
        let (version, digest) = (self.info.state_version, self.module.digest());
        self.keep_checkpoint(state, event_time_ms, version, &digest)
            .await
    }

    /// The live instance's state (`None` without an instance). A failed
    /// `snapshot` drops the instance.
    async fn snapshot(&mut self) -> Result<Option<Vec<u8>>, Fault> {
        let Some(instance) = self.instance.as_mut() else {
            return Ok(None);
        };
        match instance.snapshot().await {
            Ok(state) => Ok(Some(state)),
            Err(e) => {
                self.instance = None;
                Err(Fault::Call(e))
            }
        }
    }

    /// Stores `state`, taken after event `last_seq` by a module with this
    /// state version and digest, as the checkpoint at `last_seq`.
    async fn keep_checkpoint(
        &mut self,
        state: Vec<u8>,
        event_time_ms: u64,
        state_version: u32,
        module_digest: &str,
    ) -> Result<(), Fault> {
        let checkpoint = Checkpoint::new(
            self.last_seq,
            event_time_ms,
            state_version,
            module_digest,
            state,
        );
        self.store
            .write(Write::Checkpoint {
                strategy: self.name.clone(),
                checkpoint: checkpoint.into(),
            })
            .await
            .map_err(|e| Fault::Call(CallError::Host(wasmtime::Error::msg(e.to_string()))))?;
        self.last_checkpoint_seq = self.last_seq;
        self.last_checkpoint_time_ms = event_time_ms;
        self.stats.checkpoints += 1;
        Ok(())
    }

    async fn set_state(&mut self, state: CellState) {
        if self.state == state {
            return;
        }
        tracing::info!(strategy = %self.name, from = %self.state, to = %state, "state change");
        self.state = state;
        self.system_event("state-change", format!("{} {state}", self.name))
            .await;
        self.persist_state().await;
        if let Some(observer) = &self.observer {
            observer(state);
        }
    }

    async fn system_event(&mut self, event_type: &str, message: String) {
        let event = SystemEvent {
            timestamp_ms: wall_clock_ms(),
            event_type: event_type.to_string(),
            component: self.component.clone(),
            message,
            id: String::new(),
        };
        if let Err(e) = self.store.write(Write::SystemEvent(event)).await {
            tracing::warn!(strategy = %self.name, "cannot keep system event: {e}");
        }
    }

    fn store_error(&self, source: StoreError) -> CellError {
        CellError::Store {
            name: self.name.clone(),
            source,
        }
    }
}

/// Names the actions: a `place-order` at index `i` of event `seq` is intent `seq.i`.
pub fn plan(seq: u64, actions: Vec<Action>) -> Vec<PlannedAction> {
    actions
        .into_iter()
        .enumerate()
        .map(|(index, action)| PlannedAction {
            intent_id: match action {
                Action::PlaceOrder(_) => intent_id(seq, index),
                _ => String::new(),
            },
            action,
        })
        .collect()
}
