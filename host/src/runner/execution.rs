//! The run loop's side of the execution layer: every order and cancel a
//! strategy asks for goes through one [`Executor`], on every venue.
//!
//! Owns how a run sets its executor up (intents in the store; on a venue
//! that replays history, the executor's state from the host state and the
//! refusals a replay must repeat; on any other, the open intents loaded and
//! reconciled with the venue before anything new is sent), how venue events
//! and heartbeat trouble reach it, the operator's halt (read at the start of
//! live handling and polled about once a second), and how its output becomes
//! events for the strategy and system events for operators.
//!
//! Never decides an order's fate (the executor does) and never journals
//! (the events it returns are queued by the run loop, which journals them
//! as the strategy handles them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::contract::{EventKind, PlaceOrder, VenueHealth};
use crate::exec::store_log::StoreIntentLog;
use crate::exec::{
    ExecConfig, ExecError, ExecOutput, ExecSnapshot, Executor, RiskConfig, SETTLE_WINDOW_MS,
};
use crate::store::{StateStore, SystemEvent, Write, wall_clock_ms};
use crate::supervisor::Cell;
use crate::venue::Venue;
use crate::venue::polymarket::{HEARTBEAT_BACK, HEARTBEAT_LOST};

/// How often a live run looks for an operator's halt or resume.
const HALT_POLL: Duration = Duration::from_secs(1);

/// The rejection reason of orders placed while the operator halts the strategy.
pub const HALTED_REASON: &str = "strategy halted by operator";

/// What a run's execution layer is built from (`[exec]` and `[risk]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecSetup {
    pub exec: ExecConfig,
    pub risk: RiskConfig,
}

/// A run's executor and what the run loop needs around it.
pub(super) struct Execution {
    exec: Executor,
    strategy: String,
    store: Arc<dyn StateStore>,
    /// The venue replays history (simulated): orders never leave the host,
    /// and the executor's state travels in host states.
    replays: bool,
    halt_checked: Option<Instant>,
    /// Event-time day (days since the epoch) `pnl_today` belongs to.
    pub day: u64,
    pub pnl_today: f64,
}

impl Execution {
    /// Sets the executor up; see the module docs. Events the start produced
    /// (a reconciliation's) are returned for the strategy.
    ///
    /// # Errors
    /// The store cannot be read or written: the run cannot keep its intents.
    pub async fn start<V: Venue>(
        cell: &mut Cell,
        venue: &mut V,
        setup: &ExecSetup,
        restored: Option<(ExecSnapshot, u64)>,
        untold_since_ms: Option<u64>,
        catching_up: bool,
    ) -> Result<(Self, Vec<EventKind>), ExecError> {
        let replays = venue.replays_history();
        let store = cell.store().clone();
        let name = cell.name().to_string();
        // A replaying venue is never reconciled: no trade ids to read (and
        // a store in an outage could not answer).
        let log = if replays {
            StoreIntentLog::without_trades(store.clone(), &name)
        } else {
            StoreIntentLog::open(store.clone(), &name, true).await?
        };
        let mut exec = Executor::new(
            &name,
            venue.name(),
            setup.exec.clone(),
            setup.risk.clone(),
            Box::new(log),
        );
        let (mut pnl_today, mut day) = (0.0, 0);
        let mut restored = restored;
        if replays {
            exec = exec.without_rate_limits().forwarding_unknown_cancels();
            if let Some((snapshot, saved_day)) = restored.take() {
                pnl_today = snapshot.pnl_today;
                day = saved_day;
                exec.restore(snapshot);
            }
            if catching_up {
                // Orders refused before they were sent (risk, halt) are
                // refused again, with the reason they got: the journal holds it.
                match store.intents(Some(&name)).await {
                    Ok(rows) => exec.set_refusals(rows.into_iter().filter_map(|r| {
                        (r.step == 1 && r.state == "rejected")
                            .then(|| (r.intent_id, r.reason.unwrap_or_default()))
                    })),
                    // The database is away (the run resumes from local
                    // files): orders are decided afresh; if one was refused
                    // before, the catch-up reports the divergence.
                    Err(e) => {
                        let event = SystemEvent {
                            timestamp_ms: wall_clock_ms(),
                            event_type: "exec-refusals-unread".into(),
                            component: format!("exec/{name}"),
                            message: format!(
                                "cannot read earlier refusals ({e}); orders replayed are decided afresh"
                            ),
                            id: String::new(),
                        };
                        tracing::warn!(strategy = %name, "{}", event.message);
                        let _ = store.write(Write::SystemEvent(event)).await;
                    }
                }
            }
        }
        if let Some((snapshot, saved_day)) = restored {
            // Live: intents come from the log and are reconciled below; the
            // risk gate's exposure and day's PnL come from the ledger the
            // runner rebuilt from its host state and the journal.
            pnl_today = snapshot.pnl_today;
            day = saved_day;
            exec.restore_exposure(snapshot);
        }
        let mut me = Execution {
            exec,
            strategy: name,
            store,
            replays,
            halt_checked: None,
            day,
            pnl_today,
        };
        let mut events = Vec::new();
        if !replays {
            let open = me.exec.load().await?;
            let now = wall_clock_ms();
            let (untold, settling) = me
                .exec
                .load_filled(untold_since_ms, now.saturating_sub(SETTLE_WINDOW_MS))
                .await?;
            if untold > 0 {
                tracing::info!(strategy = %me.strategy, untold, "intents with fills the journal lacks");
            }
            if settling > 0 {
                tracing::info!(strategy = %me.strategy, settling, "following the settlement of filled orders of an earlier run");
            }
            let since = me
                .exec
                .intents()
                .map(|i| i.created_ms)
                .min()
                .unwrap_or(now)
                .min(now);
            if open > 0 {
                tracing::info!(strategy = %me.strategy, open, "reconciling intents of an earlier run");
            }
            // Before anything new is sent.
            let out = me.exec.reconcile(venue, since, now).await?;
            events = me.absorb(out, false).await;
        }
        Ok((me, events))
    }

    /// Live restart: the actions of the journal's last entry, which the
    /// stopped run may never have carried out. An order without an intent
    /// record was never sent (an intent is durable before its order leaves):
    /// it is recorded as rejected and the strategy told. A cancel of an
    /// intent still open is sent now. Returns the events for the strategy and
    /// the orders refused (their `orders` rows are the run loop's to write).
    ///
    /// # Errors
    /// The store cannot be read or an intent cannot be recorded.
    pub async fn settle_unfinished<V: Venue>(
        &mut self,
        venue: &mut V,
        places: Vec<(String, PlaceOrder)>,
        cancels: Vec<String>,
        now_ms: u64,
    ) -> Result<(Vec<EventKind>, Vec<(String, PlaceOrder)>), ExecError> {
        if self.replays || (places.is_empty() && cancels.is_empty()) {
            return Ok((Vec::new(), Vec::new()));
        }
        let recorded: std::collections::HashSet<String> = if places.is_empty() {
            Default::default()
        } else {
            self.store
                .intents(Some(&self.strategy))
                .await
                .map_err(|e| crate::exec::IntentLogError(e.to_string()))?
                .into_iter()
                .map(|r| r.intent_id)
                .collect()
        };
        let unsent: Vec<(String, PlaceOrder)> = places
            .into_iter()
            .filter(|(id, _)| !recorded.contains(id))
            .collect();
        let open: Vec<String> = cancels
            .into_iter()
            .filter(|id| self.exec.intent(id).is_some_and(|i| !i.state.is_terminal()))
            .collect();
        if unsent.is_empty() && open.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        tracing::info!(
            strategy = %self.strategy,
            unsent = unsent.len(),
            cancels = open.len(),
            "settling the last journaled event's actions"
        );
        self.exec.set_refusals(unsent.iter().map(|(id, _)| {
            (
                id.clone(),
                "never sent: the host stopped before recording it".to_string(),
            )
        }));
        let out = self
            .exec
            .run_batch(venue, unsent.clone(), open, now_ms)
            .await?;
        Ok((self.absorb(out, false).await, unsent))
    }

    /// One event's orders and cancels (cancels first); the events the
    /// strategy gets for them. Notes become system events unless `replaying`
    /// (they were recorded when the events were first handled).
    ///
    /// # Errors
    /// An intent could not be recorded (nothing of it was sent).
    pub async fn batch<V: Venue>(
        &mut self,
        venue: &mut V,
        places: Vec<(String, PlaceOrder)>,
        cancels: Vec<String>,
        now_ms: u64,
        replaying: bool,
    ) -> Result<Vec<EventKind>, ExecError> {
        let out = self.exec.run_batch(venue, places, cancels, now_ms).await?;
        Ok(self.absorb(out, replaying).await)
    }

    /// Events a venue reported by itself (a tick's fills and order updates,
    /// heartbeat trouble): intents follow them; what the strategy gets.
    ///
    /// # Errors
    /// A record could not be written.
    pub async fn venue_events<V: Venue>(
        &mut self,
        venue: &mut V,
        events: Vec<EventKind>,
        now_ms: u64,
        replaying: bool,
    ) -> Result<Vec<EventKind>, ExecError> {
        let mut told = Vec::with_capacity(events.len());
        for event in events {
            match event {
                EventKind::Fill(_) | EventKind::OrderUpdate(_) => {
                    let out = self.exec.on_venue_events(vec![event], now_ms).await?;
                    told.extend(self.absorb(out, replaying).await);
                }
                EventKind::VenueStatus(s) if !self.replays => {
                    let lost =
                        s.health == VenueHealth::Degraded && s.detail.starts_with(HEARTBEAT_LOST);
                    let back =
                        s.health == VenueHealth::Recovered && s.detail.starts_with(HEARTBEAT_BACK);
                    told.push(EventKind::VenueStatus(s));
                    if lost {
                        let out = self.exec.heartbeat_lost(now_ms).await?;
                        told.extend(self.absorb(out, replaying).await);
                    } else if back {
                        let since = self
                            .exec
                            .intents()
                            .filter(|i| !i.state.is_terminal())
                            .map(|i| i.created_ms)
                            .min()
                            .unwrap_or(now_ms);
                        let out = self.exec.reconcile(venue, since, now_ms).await?;
                        told.extend(self.absorb(out, replaying).await);
                    }
                }
                other => told.push(other),
            }
        }
        Ok(told)
    }

    /// Looks for an operator's halt or resume (at most once per
    /// [`HALT_POLL`]); the events the change produced.
    ///
    /// # Errors
    /// A record could not be written while cancelling resting orders.
    pub async fn poll_halt<V: Venue>(
        &mut self,
        venue: &mut V,
        now_ms: u64,
    ) -> Result<Vec<EventKind>, ExecError> {
        if self.halt_checked.is_some_and(|t| t.elapsed() < HALT_POLL) {
            return Ok(Vec::new());
        }
        self.halt_checked = Some(Instant::now());
        let halt = match self.store.halt(&self.strategy).await {
            Ok(halt) => halt.filter(|h| h.halted),
            Err(e) => {
                // The flag cannot be read: what was last read stands.
                tracing::warn!(strategy = %self.strategy, "cannot read the halt flag: {e}");
                return Ok(Vec::new());
            }
        };
        let out = match (halt, self.exec.halted().is_some()) {
            (Some(h), false) => {
                let reason = if h.reason.is_empty() {
                    HALTED_REASON.to_string()
                } else {
                    format!("{HALTED_REASON}: {}", h.reason)
                };
                // Resting paper orders on a simulated venue stay: cancels the
                // journal does not hold could not be replayed.
                self.exec
                    .halt(venue, &reason, !self.replays, now_ms)
                    .await?
            }
            (None, true) => self.exec.resume(),
            _ => ExecOutput::default(),
        };
        Ok(self.absorb(out, false).await)
    }

    /// A fill's realised profit, for `max_daily_loss` (a new event-time day
    /// starts from zero).
    pub fn on_pnl(&mut self, at_ms: u64, pnl: f64) {
        let day = at_ms / 86_400_000;
        if day != self.day {
            self.day = day;
            self.pnl_today = 0.0;
        }
        self.pnl_today += pnl;
        self.exec.set_pnl_today(self.pnl_today);
    }

    /// The executor's figures, for metrics.
    pub fn figures(&self) -> crate::exec::ExecFigures {
        self.exec.figures()
    }

    /// The executor's state for a host state.
    pub fn snapshot(&self) -> (ExecSnapshot, u64) {
        (self.exec.snapshot(), self.day)
    }

    /// The strategy's events of `out`; its notes written as system events.
    async fn absorb(&mut self, out: ExecOutput, replaying: bool) -> Vec<EventKind> {
        if !replaying {
            for note in out.notes {
                let event = SystemEvent {
                    timestamp_ms: wall_clock_ms(),
                    event_type: note.kind.as_str().to_string(),
                    component: format!("exec/{}", self.strategy),
                    message: note.detail,
                    id: String::new(),
                };
                if let Err(e) = self.store.write(Write::SystemEvent(event)).await {
                    tracing::warn!(strategy = %self.strategy, "cannot keep system event: {e}");
                }
            }
        }
        out.events
    }
}
