//! The registry of running strategies: what each is doing, read by `serve`'s
//! summaries, the stuck detector, the heartbeats (and the HTTP API later),
//! and a control handle to stop or restart each.
//!
//! Owns the views and the handles only; a strategy's own task does the
//! stopping and restarting it is asked for.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc;

use super::watched::Progress;
use crate::exec::intent::IntentState;
use crate::exec::{BreakerState, EndpointGroup};
use crate::runner::RunCounters;
use crate::runner::telemetry::HistogramReading;
use crate::store::wall_clock_ms;
use crate::supervisor::{CellState, SwapBoard, SwapMode, SwapStatus};

/// What a strategy's task can be asked to do.
pub enum Control {
    /// Finish the event in hand, checkpoint, let go of the lease, end.
    Stop,
    /// Start again from the store (journal and checkpoints), giving the
    /// reason. The event in hand is given `grace` to finish; past it the
    /// cell is dropped mid-event, as a crash would (the journal has
    /// everything handled, so the restart is exact all the same).
    Restart {
        reason: String,
        grace: std::time::Duration,
    },
    /// The stuck detector found the strategy stuck: drop it mid-event and
    /// start again from the store, as `Restart` does, unless it has been
    /// stuck more than the supervisor's `max_restarts` times within its
    /// `restart_window` (wall time, as stuck is judged): then it is `fatal`.
    Stuck { reason: String },
    /// Hot-swap the module (checked already), in the given mode.
    Swap {
        module: crate::sandbox::StrategyModule,
        mode: SwapMode,
        /// A shadow's own configuration (JSON), see [`crate::supervisor::SwapRequest`].
        config: Option<String>,
        /// Told the outcome; a request the run ends before is answered
        /// with the reason, never dropped.
        answer: Option<crate::supervisor::SwapAnswer>,
    },
    /// Swap the shadow's module in and drop the shadow.
    Promote,
    /// Drop the shadow.
    Discard,
    /// Finish the event in hand, checkpoint, and wait (keeping the lease)
    /// for `Resume`, `Restart` or `Stop`.
    Pause,
    /// Start a paused strategy again from the store; nothing otherwise.
    Resume,
}

/// Where a strategy stands, as users see it: the cell's states, and
/// `restarting` while the host brings a whole strategy up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyState {
    Starting,
    Running,
    Backoff,
    Recovering,
    Restarting,
    /// Paused on request: checkpointed, holding its lease, handling nothing.
    Paused,
    Fatal,
    Stopped,
}

impl From<CellState> for StrategyState {
    fn from(state: CellState) -> Self {
        match state {
            CellState::Starting => StrategyState::Starting,
            CellState::Running => StrategyState::Running,
            CellState::Backoff => StrategyState::Backoff,
            CellState::Recovering => StrategyState::Recovering,
            CellState::Fatal => StrategyState::Fatal,
            CellState::Stopped => StrategyState::Stopped,
        }
    }
}

impl std::fmt::Display for StrategyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&text)
    }
}

/// One strategy's entry: shared by its task (which writes it) and every reader.
pub struct Slot {
    pub name: String,
    state: Mutex<StrategyState>,
    pub progress: Arc<Progress>,
    /// Counters of the current attempt (the run loop publishes into them).
    counters: Mutex<Arc<RunCounters>>,
    /// Cell restarts in attempts before the current one, plus host restarts.
    restarts_before: AtomicU64,
    /// Restarts by the stuck detector.
    pub stuck_restarts: AtomicU64,
    /// Restarts by the stuck detector within the restart window.
    pub stuck_in_window: AtomicU64,
    last_fault: Mutex<Option<String>>,
    module_digest: Mutex<String>,
    /// The cell's swaps, probation and shadow, and the module it runs.
    pub swap: SwapBoard,
    control: mpsc::UnboundedSender<Control>,
}

impl Slot {
    pub(super) fn new(
        name: &str,
        module_digest: String,
    ) -> (Arc<Slot>, mpsc::UnboundedReceiver<Control>) {
        let (control, receiver) = mpsc::unbounded_channel();
        let slot = Slot {
            name: name.to_string(),
            state: Mutex::new(StrategyState::Starting),
            progress: Arc::new(Progress::default()),
            counters: Mutex::new(Arc::new(RunCounters::default())),
            restarts_before: AtomicU64::new(0),
            stuck_restarts: AtomicU64::new(0),
            stuck_in_window: AtomicU64::new(0),
            last_fault: Mutex::new(None),
            module_digest: Mutex::new(module_digest),
            swap: SwapBoard::default(),
            control,
        };
        (Arc::new(slot), receiver)
    }

    pub fn state(&self) -> StrategyState {
        *lock(&self.state)
    }

    pub(super) fn set_state(&self, state: StrategyState) {
        *lock(&self.state) = state;
    }

    pub(super) fn set_fault(&self, fault: Option<String>) {
        if fault.is_some() {
            *lock(&self.last_fault) = fault;
        }
    }

    pub(super) fn set_digest(&self, digest: String) {
        *lock(&self.module_digest) = digest;
    }

    /// Fresh counters for a new attempt; the restarts of the one before are kept.
    pub(super) fn new_attempt(&self, host_restart: bool) -> Arc<RunCounters> {
        let mut counters = lock(&self.counters);
        let before = counters.restarts.load(Ordering::Relaxed) + u64::from(host_restart);
        self.restarts_before.fetch_add(before, Ordering::Relaxed);
        let fresh = Arc::new(counters.next_attempt());
        *counters = fresh.clone();
        fresh
    }

    /// Asks the strategy's task to do something; false when it has ended.
    pub fn send(&self, control: Control) -> bool {
        self.control.send(control).is_ok()
    }

    /// Wall time each live event took to handle, over every attempt.
    pub fn handle_seconds(&self) -> HistogramReading {
        lock(&self.counters).handle_seconds.read()
    }

    /// The strategy as it stands now.
    pub fn view(&self) -> StrategyView {
        let now = wall_clock_ms();
        let p = &self.progress;
        let counters = lock(&self.counters).clone();
        let last_handled = p.last_handled_wall_ms.load(Ordering::Relaxed);
        let checkpoint_at = p.last_checkpoint_wall_ms.load(Ordering::Relaxed);
        let last_tick = counters.last_tick_wall_ms.load(Ordering::Relaxed);
        let exec = counters.exec_figures();
        StrategyView {
            name: self.name.clone(),
            state: self.state(),
            last_seq: p.last_seq.load(Ordering::Relaxed),
            last_event_ms: Some(p.last_event_ms.load(Ordering::Relaxed)).filter(|&t| t > 0),
            last_handled_age_ms: (last_handled > 0).then(|| now.saturating_sub(last_handled)),
            last_checkpoint_seq: p.last_checkpoint_seq.load(Ordering::Relaxed),
            checkpoint_age_ms: (checkpoint_at > 0).then(|| now.saturating_sub(checkpoint_at)),
            queue_depth: if p.in_hand.load(Ordering::Relaxed) {
                p.queue_depth.load(Ordering::Relaxed)
            } else {
                0
            },
            waiting_ms: p.waiting_ms(now),
            restarts: self.restarts_before.load(Ordering::Relaxed)
                + counters.restarts.load(Ordering::Relaxed),
            restarts_in_window: counters.restarts_in_window.load(Ordering::Relaxed)
                + self.stuck_in_window.load(Ordering::Relaxed),
            stuck_restarts: self.stuck_restarts.load(Ordering::Relaxed),
            quarantined: counters.quarantined.load(Ordering::Relaxed),
            orders: counters.orders.load(Ordering::Relaxed),
            fills: counters.fills.load(Ordering::Relaxed),
            pnl: counters.pnl(),
            last_fault: lock(&self.last_fault).clone(),
            module_digest: self
                .swap
                .module()
                .map_or_else(|| lock(&self.module_digest).clone(), |m| m.digest()),
            swap: self.swap.status(),
            divergences: counters.divergences.load(Ordering::Relaxed),
            feed_age_ms: (last_tick > 0).then(|| now.saturating_sub(last_tick)),
            instance_memory_bytes: counters.instance_memory_bytes.load(Ordering::Relaxed),
            intents: IntentState::ALL
                .iter()
                .zip(exec.intents)
                .map(|(state, n)| (state.as_str(), n))
                .collect(),
            breakers: EndpointGroup::ALL
                .iter()
                .zip(exec.breakers)
                .map(|(group, state)| (group.as_str(), state))
                .collect(),
            rate_limit_waits: exec.rate_limit_waits,
            open_positions: exec.open_positions,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A strategy as the registry shows it (serializable for heartbeats and APIs).
/// Orders, fills and PnL are refreshed by the run loop every few dozen events.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StrategyView {
    pub name: String,
    pub state: StrategyState,
    /// Seq of the newest event journaled.
    pub last_seq: u64,
    /// Event time of that event (ms since the Unix epoch).
    pub last_event_ms: Option<u64>,
    /// Wall time since an event was last handled.
    pub last_handled_age_ms: Option<u64>,
    pub last_checkpoint_seq: u64,
    pub checkpoint_age_ms: Option<u64>,
    /// Events of the tick in hand (waiting or being handled).
    pub queue_depth: u64,
    /// How long events have waited with none handled (`None`: none wait).
    pub waiting_ms: Option<u64>,
    /// Restarts: the supervisor's (traps, deadlines) and the host's (stuck, on request).
    pub restarts: u64,
    /// Restarts counting towards `fatal`: the supervisor's within its
    /// restart window, plus the stuck detector's within the same window.
    pub restarts_in_window: u64,
    pub stuck_restarts: u64,
    /// Events quarantined by the current attempt.
    pub quarantined: u64,
    pub orders: u64,
    pub fills: u64,
    pub pnl: f64,
    pub last_fault: Option<String>,
    /// sha256 of the running module's component bytes.
    pub module_digest: String,
    /// The last swap (with its pause), a running probation, a running
    /// shadow (beside the live `pnl`, its would-be PnL).
    #[serde(flatten)]
    pub swap: SwapStatus,
    /// Rebuilds by the current attempt that did not reproduce the journal.
    pub divergences: u64,
    /// Wall time since the venue last gave a tick (`None`: none yet).
    pub feed_age_ms: Option<u64>,
    /// Linear memory of the strategy's instance.
    pub instance_memory_bytes: u64,
    /// Intents the executor holds, per state (refreshed with the orders).
    pub intents: BTreeMap<&'static str, u64>,
    /// Circuit breaker per endpoint group.
    pub breakers: BTreeMap<&'static str, BreakerState>,
    /// Rate-limiter checks of the current attempt answered with a wait.
    pub rate_limit_waits: u64,
    /// Markets with a non-zero position.
    pub open_positions: u64,
}

/// Every strategy of a host, by name.
#[derive(Default)]
pub struct Registry {
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    pub(super) fn insert(&self, slot: Arc<Slot>) {
        self.slots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(slot.name.clone(), slot);
    }

    pub(super) fn remove(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
    }

    /// The strategy named `name`, to read or to control.
    pub fn get(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every strategy, by name.
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Every strategy as it stands now, by name.
    pub fn snapshot(&self) -> Vec<StrategyView> {
        self.slots().iter().map(|s| s.view()).collect()
    }

    /// One line for a service manager: how many strategies in each state.
    pub fn summary(&self) -> String {
        let views = self.snapshot();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for v in &views {
            *counts.entry(v.state.to_string()).or_default() += 1;
        }
        let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        format!("{} strategies: {}", views.len(), parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_count_restarts_across_attempts_and_the_summary_counts_states() {
        let registry = Registry::new();
        let (a, _control_a) = Slot::new("a", "d".into());
        let (b, _control_b) = Slot::new("b", "d".into());
        registry.insert(a.clone());
        registry.insert(b.clone());
        let counters = a.new_attempt(false);
        counters.restarts.store(2, Ordering::Relaxed);
        a.set_state(StrategyState::Running);
        // A host restart: the cell's two, plus the host's own.
        let counters = a.new_attempt(true);
        counters.restarts.store(1, Ordering::Relaxed);
        assert_eq!(a.view().restarts, 4);
        b.set_state(StrategyState::Fatal);
        b.set_fault(Some("trap".into()));
        b.set_fault(None);
        assert_eq!(
            b.view().last_fault.as_deref(),
            Some("trap"),
            "a fault is kept"
        );
        assert_eq!(registry.summary(), "2 strategies: 1 fatal, 1 running");
        assert_eq!(
            registry
                .snapshot()
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn events_wait_from_the_tick_or_the_last_event_handled() {
        let p = Progress::default();
        assert_eq!(p.waiting_ms(10_000), None, "nothing in hand");
        p.in_hand_since_ms.store(1_000, Ordering::Relaxed);
        p.in_hand.store(true, Ordering::Relaxed);
        assert_eq!(p.waiting_ms(4_000), Some(3_000));
        p.last_handled_wall_ms.store(3_500, Ordering::Relaxed);
        assert_eq!(
            p.waiting_ms(4_000),
            Some(500),
            "an event handled is progress"
        );
        p.reset_in_hand();
        assert_eq!(p.waiting_ms(4_000), None);
    }
}
