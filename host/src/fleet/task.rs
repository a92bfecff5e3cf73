//! One strategy's task in a fleet: start its cell from the store, drive it
//! against its own venue, and act on its control handle — stop (finish the
//! event in hand, checkpoint), restart (from the journal, as after a crash),
//! hot-swap its module. The task holds the strategy's lease until it ends.
//!
//! Never owns the run loop (`runner`) or the cell's supervision; a restart
//! here is the host's, on top of the supervisor's own restarts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument as _;

mod idle;

use super::HostEvent;
use super::assemble::drive;
use super::config::StrategyEntry;
use super::registry::{Control, Slot, StrategyState};
use super::watched::ProgressStore;
use crate::lease::Lease;
use crate::runner::RunReport;
use crate::sandbox::StrategyModule;
use crate::store::{StateStore, SystemEvent, Write, wall_clock_ms};
use crate::supervisor::{
    Cell, CellSpec, CellState, ProbationPolicy, RestartWindow, Shutdown, SwapAnswer, SwapMode,
    SwapRequest,
};

/// Everything a strategy's task owns.
pub(super) struct Task {
    pub entry: StrategyEntry,
    pub module: StrategyModule,
    /// The shared store, fenced by the lease.
    pub store: Arc<dyn StateStore>,
    /// The shared store unfenced, for the host's own system events.
    pub system: Arc<dyn StateStore>,
    pub lease: Lease,
    pub slot: Arc<Slot>,
    pub control: mpsc::UnboundedReceiver<Control>,
    pub events: mpsc::UnboundedSender<HostEvent>,
    pub shutdown_timeout: Duration,
    /// Wall times of the stuck detector's restarts.
    pub stuck_window: RestartWindow,
    /// The host's shared market feeds.
    pub feeds: std::sync::Arc<crate::venue::polymarket::feed::Feeds>,
    /// `[swap]`: when a module on probation is rolled back.
    pub probation: ProbationPolicy,
}

/// How one attempt (a cell, from start to end) ended.
enum Attempt {
    /// The run ended by itself: a limit, the feed's end, a fatal strategy,
    /// a lost lease.
    Ended { fatal: bool },
    /// The host asked for a restart.
    Restart(String),
    /// The stuck detector asked for a restart.
    Stuck(String),
    /// The host asked it to stop.
    Stopped,
    /// The host asked it to pause: it checkpointed and waits.
    Paused,
}

/// Records a system event about the strategy; a store that refuses it is
/// logged (the store itself reports its outages as system events).
pub(super) async fn system_event(store: &dyn StateStore, name: &str, kind: &str, message: String) {
    let event = SystemEvent {
        timestamp_ms: wall_clock_ms(),
        event_type: kind.to_string(),
        component: format!("fleet/{name}"),
        message,
        id: String::new(),
    };
    if let Err(e) = store.write(Write::SystemEvent(event)).await {
        tracing::warn!(strategy = name, "cannot record a system event: {e}");
    }
}

impl Task {
    /// Runs the strategy until it is stopped, in a span named after it; a
    /// future for the multi-threaded runtime.
    pub(super) fn run(self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let span = tracing::info_span!("strategy", name = %self.entry.name);
        self.run_inner().instrument(span)
    }

    async fn run_inner(mut self) {
        // A restart counts; the first start and a resume do not.
        let mut counted = false;
        loop {
            let counters = self.slot.new_attempt(counted);
            counted = true;
            self.slot.progress.reset_in_hand();
            let attempt = match self.attempt(counters).await {
                Attempt::Stuck(reason) => self.stuck(reason).await,
                other => other,
            };
            match attempt {
                Attempt::Restart(reason) | Attempt::Stuck(reason) => {
                    tracing::warn!("restarting the strategy: {reason}");
                    self.slot.set_state(StrategyState::Restarting);
                    system_event(
                        self.system.as_ref(),
                        &self.entry.name,
                        "strategy-restart",
                        reason,
                    )
                    .await;
                    // Whatever the stopped cell buffered is durable before
                    // the next one reads the journal.
                    self.sync("before the restart").await;
                }
                Attempt::Stopped => break,
                Attempt::Paused => {
                    self.slot.progress.reset_in_hand();
                    self.slot.set_state(StrategyState::Paused);
                    system_event(
                        self.system.as_ref(),
                        &self.entry.name,
                        "strategy-paused",
                        "paused on request".into(),
                    )
                    .await;
                    self.sync("at pause").await;
                    match self.wait_paused().await {
                        Some((reason, restart)) => {
                            counted = restart;
                            let kind = if restart {
                                "strategy-restart"
                            } else {
                                "strategy-resumed"
                            };
                            system_event(self.system.as_ref(), &self.entry.name, kind, reason)
                                .await;
                        }
                        None => break,
                    }
                }
                Attempt::Ended { fatal } => {
                    let _ = self.events.send(HostEvent::Ended {
                        name: self.entry.name.clone(),
                        fatal,
                    });
                    // Stays in the registry (and keeps its lease) until the
                    // host stops it or asks for a restart.
                    match self.wait_after_end().await {
                        Some(reason) => {
                            // An operator's restart starts the stuck count afresh.
                            self.stuck_window = RestartWindow::default();
                            self.slot.set_state(StrategyState::Restarting);
                            system_event(
                                self.system.as_ref(),
                                &self.entry.name,
                                "strategy-restart",
                                reason,
                            )
                            .await;
                        }
                        None => break,
                    }
                }
            }
        }
        self.refuse_queued_controls().await;
        self.sync("at stop").await;
        if self.lease.is_lost().is_none() {
            self.lease.release().await;
        }
        let _ = self.events.send(HostEvent::Stopped {
            name: self.entry.name.clone(),
        });
    }

    async fn attempt(&mut self, counters: Arc<crate::runner::RunCounters>) -> Attempt {
        let name = self.entry.name.clone();
        self.slot.set_state(StrategyState::Starting);
        // The module the last cell ended with (after a rollback or a
        // promotion), and no shadow or probation outlives its cell.
        if let Some(module) = self.slot.swap.module() {
            self.module = module;
        }
        let status = self.slot.swap.status();
        self.slot.swap.clear_running();
        if let Some(shadow) = status.shadow {
            let message = format!(
                "shadow module {} dropped after {} events: the strategy started again",
                shadow.digest, shadow.events
            );
            system_event(self.system.as_ref(), &name, "swap-discarded", message).await;
        }
        if let Some(probation) = status.probation {
            let message = format!(
                "probation of module {} ended by a restart after {} events; the module is kept",
                probation.digest, probation.events
            );
            system_event(self.system.as_ref(), &name, "swap-probation-ended", message).await;
        }
        let venue_spec = self.entry.venue();
        let mut venue = match venue_spec.build_with(Some(&self.feeds)).await {
            Ok(venue) => venue,
            Err(e) => return self.failed(format!("venue: {e}")).await,
        };
        let store: Arc<dyn StateStore> = Arc::new(ProgressStore::new(
            self.store.clone(),
            self.slot.progress.clone(),
        ));
        let spec = CellSpec {
            name: name.clone(),
            module: self.module.clone(),
            config_json: self.entry.config.strategy_json(),
            restart: self.entry.config.supervisor.clone(),
            checkpoint: self.entry.config.checkpoint.clone(),
        };
        let mut cell = match Cell::start(spec, store).await {
            Ok(cell) => cell,
            Err(e) => return self.failed(e.to_string()).await,
        };
        // A resumed strategy journals nothing until its next event.
        self.slot
            .progress
            .last_seq
            .fetch_max(cell.last_seq(), std::sync::atomic::Ordering::Relaxed);
        let slot = self.slot.clone();
        cell.on_state_change(Arc::new(move |state: CellState| {
            slot.set_state(state.into())
        }));
        self.slot.set_state(cell.state().into());
        self.slot.set_digest(self.module.digest());
        let (swaps, swap_receiver) = mpsc::unbounded_channel();
        cell.take_swaps_from(swap_receiver);
        cell.set_swap_board(self.slot.swap.clone());
        cell.set_probation_policy(self.probation.clone());
        cell.set_pace(venue_spec.pace());
        let info = cell.info().clone();
        tracing::info!(
            strategy = %name,
            module = %self.module.path().display(),
            version = %info.version,
            "strategy running"
        );
        let _ = self.events.send(HostEvent::Running { name: name.clone() });

        let attempt = self
            .drive_cell(&mut cell, &mut venue, swaps, counters)
            .await;
        // Requests the cell had not taken yet have no next event to wait for.
        cell.refuse_pending_swaps(
            "the run ended before the swap was applied; the module is unchanged",
        )
        .await;
        attempt
    }

    /// Drives the started cell until its run ends or the host asks it to
    /// stop, restart or pause; swap requests go to the cell on `swaps`.
    async fn drive_cell(
        &mut self,
        cell: &mut Cell,
        venue: &mut super::venue::ChosenVenue,
        swaps: mpsc::UnboundedSender<SwapRequest>,
        counters: Arc<crate::runner::RunCounters>,
    ) -> Attempt {
        let shutdown = Shutdown::new();
        let progress = self.slot.progress.clone();
        let setup = self.entry.config.exec_setup();
        let run = drive(
            cell,
            venue,
            self.entry.limits,
            counters,
            shutdown.clone(),
            Some(&progress),
            &setup,
        );
        tokio::pin!(run);
        let lost = self.lease.lost();
        tokio::pin!(lost);
        loop {
            tokio::select! {
                report = &mut run => return self.finished(&report).await,
                loss = &mut lost => {
                    tracing::error!("{loss}: finishing the event in hand, then stopping");
                    shutdown.request();
                    let ended = tokio::time::timeout(self.shutdown_timeout, &mut run).await;
                    match &ended {
                        Ok(report) => {
                            self.finished(report).await;
                        }
                        Err(_) => {
                            self.failure(
                                "stop-timeout",
                                format!(
                                    "{loss}: did not finish its event within {}; stopped without a final checkpoint",
                                    humantime::format_duration(self.shutdown_timeout)
                                ),
                            )
                            .await
                        }
                    }
                    self.slot.set_fault(Some(loss.to_string()));
                    self.slot.set_state(StrategyState::Stopped);
                    return Attempt::Ended { fatal: false };
                }
                control = self.control.recv() => match control {
                    Some(Control::Swap { module, mode, config, answer }) => {
                        let _ = swaps.send(SwapRequest::Swap { module, mode, config, answer });
                    }
                    Some(Control::Promote) => {
                        let _ = swaps.send(SwapRequest::Promote);
                    }
                    Some(Control::Discard) => {
                        let _ = swaps.send(SwapRequest::Discard);
                    }
                    Some(Control::Restart { reason, grace }) => {
                        shutdown.request();
                        match tokio::time::timeout(grace, &mut run).await {
                            Ok(report) => self.note(&report),
                            Err(_) => {
                                self.failure(
                                    "restart-timeout",
                                    format!(
                                        "did not finish its event within {}; dropped mid-event for the restart (it resumes from the journal)",
                                        humantime::format_duration(grace)
                                    ),
                                )
                                .await
                            }
                        }
                        return Attempt::Restart(reason);
                    }
                    Some(Control::Stuck { reason }) => {
                        // Dropped mid-event: the journal has every event handled.
                        shutdown.request();
                        return Attempt::Stuck(reason);
                    }
                    Some(Control::Resume) => {}
                    Some(Control::Pause) => {
                        shutdown.request();
                        match tokio::time::timeout(self.shutdown_timeout, &mut run).await {
                            Ok(report) => self.note(&report),
                            Err(_) => {
                                self.failure(
                                    "pause-timeout",
                                    format!(
                                        "did not finish its event within {}; paused without a final checkpoint (it resumes from the journal)",
                                        humantime::format_duration(self.shutdown_timeout)
                                    ),
                                )
                                .await
                            }
                        }
                        return Attempt::Paused;
                    }
                    Some(Control::Stop) | None => {
                        shutdown.request();
                        match tokio::time::timeout(self.shutdown_timeout, &mut run).await {
                            Ok(report) => {
                                self.note(&report);
                                self.slot.set_state(StrategyState::Stopped);
                            }
                            Err(_) => {
                                let message = format!(
                                    "did not finish its event within {}; stopped without a final checkpoint (it resumes from the journal)",
                                    humantime::format_duration(self.shutdown_timeout)
                                );
                                self.failure("stop-timeout", message).await;
                                self.slot.set_state(StrategyState::Stopped);
                            }
                        }
                        return Attempt::Stopped;
                    }
                }
            }
        }
    }

    /// Makes everything buffered durable; a store that cannot is recorded
    /// as a system event (`when` says at which step).
    async fn sync(&self, when: &str) {
        if let Err(e) = self.store.sync().await {
            self.failure("store-sync-failed", format!("store sync {when}: {e}"))
                .await;
        }
    }

    /// Logs a failure and records it as a system event of `kind`, so an
    /// operator sees it (the log is never its only trace).
    async fn failure(&self, kind: &str, message: String) {
        tracing::error!("{message}");
        system_event(self.system.as_ref(), &self.entry.name, kind, message).await;
    }

    /// Counts a stuck restart against the supervisor's budget: the restart,
    /// or — stuck more than `max_restarts` times within `restart_window` of
    /// wall time — the strategy's end as `fatal`, recorded with the reason.
    async fn stuck(&mut self, reason: String) -> Attempt {
        let policy = &self.entry.config.supervisor;
        let (limit, window) = (policy.max_restarts, policy.restart_window);
        let stuck = self.stuck_window.record(wall_clock_ms(), window);
        self.slot
            .stuck_in_window
            .store(stuck as u64, std::sync::atomic::Ordering::Relaxed);
        if stuck <= limit as usize {
            return Attempt::Stuck(reason);
        }
        let message = format!(
            "strategy {} is fatal: stuck {stuck} times within {} (limit {limit}); last: {reason}",
            self.entry.name,
            humantime::format_duration(window)
        );
        tracing::error!("{message}");
        self.slot.set_fault(Some(message.clone()));
        self.slot.set_state(StrategyState::Fatal);
        let state = Write::StrategyState {
            strategy: self.entry.name.clone(),
            module_digest: self.module.digest(),
            state: StrategyState::Fatal.to_string(),
            restarts: self.slot.view().restarts,
            at_ms: wall_clock_ms(),
        };
        if let Err(e) = self.store.write(state).await {
            self.failure(
                "store-write-failed",
                format!("cannot record the fatal state: {e}"),
            )
            .await;
        }
        system_event(
            self.system.as_ref(),
            &self.entry.name,
            "strategy-fatal",
            message,
        )
        .await;
        self.sync("after going fatal").await;
        Attempt::Ended { fatal: true }
    }

    /// Keeps what a finished run says about the strategy.
    fn note(&self, report: &RunReport) {
        self.slot
            .progress
            .last_seq
            .store(report.last_seq, std::sync::atomic::Ordering::Relaxed);
        self.slot
            .set_fault(report.fatal.clone().or(report.cell.last_fault.clone()));
        let state = if report.fatal.is_some() {
            StrategyState::Fatal
        } else {
            report.state.into()
        };
        self.slot.set_state(state);
    }

    async fn finished(&self, report: &RunReport) -> Attempt {
        self.note(report);
        let fatal = self.slot.state() == StrategyState::Fatal;
        tracing::info!(
            stop = ?report.stop,
            last_seq = report.last_seq,
            state = %self.slot.state(),
            "strategy ended"
        );
        if let Some(fatal) = &report.fatal {
            system_event(
                self.system.as_ref(),
                &self.entry.name,
                "strategy-fatal",
                fatal.clone(),
            )
            .await;
        }
        Attempt::Ended { fatal }
    }

    async fn failed(&self, message: String) -> Attempt {
        tracing::error!("cannot start: {message}");
        self.slot.set_fault(Some(message.clone()));
        self.slot.set_state(StrategyState::Fatal);
        system_event(
            self.system.as_ref(),
            &self.entry.name,
            "strategy-fatal",
            message,
        )
        .await;
        Attempt::Ended { fatal: true }
    }
}
