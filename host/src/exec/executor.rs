//! The executor: one strategy's orders from intent to terminal state, through
//! risk limits, rate limits, circuit breakers, venue windows and retries.
//!
//! Owns the sequence of one submission (risk check → durable intent → gates →
//! send → classify → retry, look up or give up), of one cancel, and of a
//! reconciliation with the venue. Everything it decides comes back as an
//! [`ExecOutput`]: the events the strategy must get (fills, order updates,
//! `venue-status`) and the notes an operator must see (system events).
//!
//! Rules it keeps:
//! - An intent is durable (its first record in the [`IntentLog`]) before its
//!   order is sent; every state change is recorded.
//! - Only transient classes are retried; an order is re-sent only as the same
//!   intent (the venue re-sends the bytes it signed), and an `unknown` outcome
//!   is looked up before anything is sent again.
//! - Every intent ends in exactly one terminal state, or stays `unknown` (it
//!   may exist at the venue) until a lookup or [`Executor::reconcile`] settles
//!   it. Refusals (risk, retries exhausted, waits too long) are `rejected`
//!   updates with the reason.
//!
//! Does not own: the venue protocol ([`ExecutionClient`]), persistence (the
//! log behind [`IntentLog`]), the journal or the run loop (its caller turns
//! the output into journaled events and system events).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{BreakerState, CircuitBreaker, EndpointGroup, Gate};
use super::intent::{IllegalTransition, Intent, IntentLog, IntentLogError, IntentState};
use super::limits::RateLimits;
use super::risk::{Exposure, RiskConfig, RiskGate};
use super::retry::Backoff;
use super::ExecConfig;
use crate::contract::{
    EventKind, Fill, OrderStatus, OrderType, OrderUpdate, PlaceOrder, Side, VenueHealth,
    VenueStatus,
};
use crate::venue::{ErrorClass, ExecutionClient, Halt, VenueError};

/// Sizes closer than this are equal.
const EPS: f64 = 1e-6;

/// What kind of thing an operator is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// A risk limit refused an order.
    Risk,
    /// A circuit breaker changed state.
    Breaker,
    /// The venue entered or left a window (425, 503).
    Window,
    /// An order's outcome is not known yet.
    Unknown,
    /// An order was refused after retries or waits.
    GaveUp,
    /// The venue holds an order no intent knows.
    UnknownOrder,
    /// Reconciliation changed an intent or found missed fills.
    Reconciled,
    /// Venue information that contradicts what is recorded (ignored).
    Stale,
}

impl NoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteKind::Risk => "exec-risk",
            NoteKind::Breaker => "exec-breaker",
            NoteKind::Window => "exec-window",
            NoteKind::Unknown => "exec-unknown",
            NoteKind::GaveUp => "exec-gave-up",
            NoteKind::UnknownOrder => "exec-unknown-order",
            NoteKind::Reconciled => "exec-reconciled",
            NoteKind::Stale => "exec-stale",
        }
    }
}

/// A system event for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemNote {
    pub kind: NoteKind,
    pub detail: String,
}

/// What one executor call produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExecOutput {
    /// For the strategy, in order: fills, order updates, venue status.
    pub events: Vec<EventKind>,
    /// For operators (system events).
    pub notes: Vec<SystemNote>,
}

impl ExecOutput {
    fn note(&mut self, kind: NoteKind, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(kind = kind.as_str(), "{detail}");
        self.notes.push(SystemNote { kind, detail });
    }

    /// The order updates in this output.
    pub fn updates(&self) -> impl Iterator<Item = &OrderUpdate> {
        self.events.iter().filter_map(|e| match e {
            EventKind::OrderUpdate(u) => Some(u),
            _ => None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The intent could not be made durable: nothing was sent.
    #[error(transparent)]
    Log(#[from] IntentLogError),
}

/// A window in which the venue refuses new orders.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Window {
    /// Placement paused; one order probes at `probe_at`.
    Halted { halt: Halt, probe_at: Instant },
    /// After a 425: only resting (GTC) orders until `until`.
    PostOnly { until: Instant },
}

/// Why an attempt loop stopped.
enum Stop {
    Done,
    GaveUp(String),
}

/// One strategy's execution; see the module docs.
pub struct Executor {
    strategy: String,
    cfg: ExecConfig,
    log: Box<dyn IntentLog>,
    /// Intents not yet terminal.
    intents: HashMap<String, Intent>,
    /// Terminal intents (a cancel of one is answered from here).
    finished: HashMap<String, Intent>,
    /// Shares reported to the strategy as fills, per intent.
    told: HashMap<String, f64>,
    /// Signed position per market, from fills.
    positions: HashMap<String, f64>,
    pnl_today: f64,
    risk: RiskGate,
    breakers: [CircuitBreaker; 3],
    limits: RateLimits,
    window: Option<Window>,
    degraded: bool,
    /// Placement held until the next reconciliation (heartbeat lost).
    hold: bool,
    venue: String,
    seeds: u64,
    /// Rate-limit warnings the venue had reported when last looked at.
    warnings_seen: u64,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("strategy", &self.strategy)
            .field("intents", &self.intents.len())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Executor {
    pub fn new(strategy: &str, venue: &str, cfg: ExecConfig, risk: RiskConfig, log: Box<dyn IntentLog>) -> Self {
        let b = |g| CircuitBreaker::new(g, cfg.breaker.clone());
        Executor {
            strategy: strategy.to_string(),
            breakers: [
                b(EndpointGroup::Orders),
                b(EndpointGroup::Cancels),
                b(EndpointGroup::MarketData),
            ],
            limits: RateLimits::new(&cfg.limits),
            cfg,
            log,
            intents: HashMap::new(),
            finished: HashMap::new(),
            told: HashMap::new(),
            positions: HashMap::new(),
            pnl_today: 0.0,
            risk: RiskGate::new(risk),
            window: None,
            degraded: false,
            hold: false,
            venue: venue.to_string(),
            seeds: 0,
            warnings_seen: 0,
        }
    }

    /// Loads the strategy's non-terminal intents from the log (after a
    /// restart); [`Executor::reconcile`] then settles them with the venue.
    ///
    /// # Errors
    /// The log could not be read.
    pub async fn load(&mut self) -> Result<usize, ExecError> {
        let open = self.log.open_intents(&self.strategy).await?;
        let n = open.len();
        for i in open {
            self.told.insert(i.id.clone(), i.filled);
            self.intents.insert(i.id.clone(), i);
        }
        if n > 0 {
            self.hold = true;
        }
        Ok(n)
    }

    pub fn intent(&self, id: &str) -> Option<&Intent> {
        self.intents.get(id).or_else(|| self.finished.get(id))
    }

    /// Every intent this executor knows, open and finished.
    pub fn intents(&self) -> impl Iterator<Item = &Intent> {
        self.intents.values().chain(self.finished.values())
    }

    fn state_of(&self, id: &str) -> Option<IntentState> {
        self.intent(id).map(|i| i.state)
    }

    pub fn breaker_state(&self, group: EndpointGroup) -> BreakerState {
        self.breakers[group_index(group)].state()
    }

    /// The day's profit and loss, for `max_daily_loss` (the caller's ledger).
    pub fn set_pnl_today(&mut self, pnl: f64) {
        self.pnl_today = pnl;
    }

    /// The venue answered with `Poly-RateLimit-Warning`.
    pub fn on_rate_limit_warning(&mut self) {
        self.limits.on_warning();
    }

    /// The outside world decides for the gates (breaker, limiter): the cost
    /// of one placement's decision, without sending. For benchmarks.
    pub fn gate_decision(&mut self) -> bool {
        let now = Instant::now();
        self.limits.check(EndpointGroup::Orders) == Gate::Go
            && self.breakers[0].permit(now) == Gate::Go
    }

    /// Heartbeats failed: the venue may have cancelled every resting order.
    /// Resting intents become `unknown` and placement holds until
    /// [`Executor::reconcile`].
    ///
    /// # Errors
    /// A record could not be written.
    pub async fn heartbeat_lost(&mut self, now_ms: u64) -> Result<ExecOutput, ExecError> {
        let mut out = ExecOutput::default();
        self.hold = true;
        let resting: Vec<String> = self
            .intents
            .values()
            .filter(|i| matches!(i.state, IntentState::Acknowledged | IntentState::PartiallyFilled))
            .map(|i| i.id.clone())
            .collect();
        for id in &resting {
            let filled = self.intents.get(id).map_or(0.0, |i| i.filled);
            self.move_to(id, IntentState::Unknown, filled, Some("heartbeat lost".into()), now_ms, &mut out)
                .await?;
        }
        self.status(VenueHealth::Degraded, format!("heartbeat lost: {} resting orders unknown, placement held until reconciled", resting.len()), &mut out);
        Ok(out)
    }

    /// Places `order` as intent `intent_id`. A second submission of a known
    /// intent id does nothing (a replay sends nothing twice).
    ///
    /// # Errors
    /// Only when the intent could not be recorded (then nothing was sent).
    pub async fn submit(
        &mut self,
        client: &mut dyn ExecutionClient,
        intent_id: &str,
        order: PlaceOrder,
        now_ms: u64,
    ) -> Result<ExecOutput, ExecError> {
        let mut out = ExecOutput::default();
        if self.intent(intent_id).is_some() {
            return Ok(out);
        }
        let exposure = self.exposure(&order.market);
        let verdict = self.risk.check(&order, &exposure, now_ms);
        let (intent, first) = Intent::new(&self.strategy, intent_id, order, now_ms);
        self.log.append(&first).await?;
        self.intents.insert(intent_id.to_string(), intent);
        if let Err(reason) = verdict {
            out.note(NoteKind::Risk, format!("strategy {}: intent {intent_id}: {reason}", self.strategy));
            self.move_to(intent_id, IntentState::Rejected, 0.0, Some(reason), now_ms, &mut out)
                .await?;
            return Ok(out);
        }
        match self.place_loop(client, intent_id, now_ms, &mut out).await? {
            Stop::Done => {}
            Stop::GaveUp(reason) => self.give_up(intent_id, reason, now_ms, &mut out).await?,
        }
        Ok(out)
    }

    /// Runs a batch: cancels first (they have priority), then new orders.
    ///
    /// # Errors
    /// As [`Executor::submit`].
    pub async fn run_batch(
        &mut self,
        client: &mut dyn ExecutionClient,
        places: Vec<(String, PlaceOrder)>,
        cancels: Vec<String>,
        now_ms: u64,
    ) -> Result<ExecOutput, ExecError> {
        let mut out = ExecOutput::default();
        for id in cancels {
            let o = self.cancel(client, &id, now_ms).await?;
            out.events.extend(o.events);
            out.notes.extend(o.notes);
        }
        for (id, order) in places {
            let o = self.submit(client, &id, order, now_ms).await?;
            out.events.extend(o.events);
            out.notes.extend(o.notes);
        }
        Ok(out)
    }

    async fn place_loop(
        &mut self,
        client: &mut dyn ExecutionClient,
        id: &str,
        now_ms: u64,
        out: &mut ExecOutput,
    ) -> Result<Stop, ExecError> {
        let Some(order) = self.intents.get(id).map(|i| i.order.clone()) else {
            return Ok(Stop::Done);
        };
        let start = Instant::now();
        let max_wait = Duration::from_millis(self.cfg.max_wait_ms);
        let mut backoff = self.backoff();
        loop {
            let state = self.state_of(id).unwrap_or(IntentState::Rejected);
            if state.is_terminal() {
                return Ok(Stop::Done);
            }
            if state == IntentState::Unknown {
                match self.lookup(client, id).await {
                    Ok(Some(u)) => {
                        self.apply_found(id, &u, now_ms, out).await?;
                        return Ok(Stop::Done);
                    }
                    // Never reached the venue: safe to send the same order again.
                    Ok(None) => {}
                    Err(e) => match self.delay(&mut backoff, &e, start) {
                        Some(d) => {
                            tokio::time::sleep(d).await;
                            continue;
                        }
                        None => {
                            out.note(NoteKind::Unknown, format!("intent {id}: outcome unknown and the lookup failed ({e}); reconciliation settles it"));
                            return Ok(Stop::Done);
                        }
                    },
                }
            }
            match self.gate_place(&order, out) {
                Err(reason) => return Ok(Stop::GaveUp(reason)),
                Ok(Gate::Wait(d)) => {
                    if start.elapsed() + d > max_wait {
                        return Ok(Stop::GaveUp(format!(
                            "not sent: {} for longer than {} ms",
                            self.why_waiting(),
                            self.cfg.max_wait_ms
                        )));
                    }
                    tokio::time::sleep(d).await;
                    continue;
                }
                Ok(Gate::Go) => {}
            }
            if state == IntentState::Pending {
                self.move_to(id, IntentState::Sent, 0.0, None, now_ms, out).await?;
            }
            let t0 = Instant::now();
            let result = client.place(id, &order).await;
            let took = t0.elapsed();
            self.check_warnings(client, out);
            match result {
                Ok(events) => {
                    self.record(EndpointGroup::Orders, false, took, out);
                    self.window_passed(out);
                    self.apply_events(events, now_ms, out).await?;
                    // A venue that answered without a state for the order: it holds it.
                    if self.intents.get(id).is_some_and(|i| i.state == IntentState::Sent) {
                        self.move_to(id, IntentState::Acknowledged, 0.0, None, now_ms, out).await?;
                    }
                    return Ok(Stop::Done);
                }
                Err(e) => match e.class() {
                    ErrorClass::Rejected => {
                        self.record(EndpointGroup::Orders, false, took, out);
                        self.window_passed(out);
                        let reason = rejection_reason(&e);
                        self.move_to(id, IntentState::Rejected, 0.0, Some(reason), now_ms, out).await?;
                        return Ok(Stop::Done);
                    }
                    ErrorClass::Fatal => {
                        self.record(EndpointGroup::Orders, true, took, out);
                        out.note(NoteKind::GaveUp, format!("intent {id}: {e}"));
                        return Ok(Stop::GaveUp(e.to_string()));
                    }
                    ErrorClass::Halted(halt) => {
                        self.enter_window(halt, &e, out);
                    }
                    ErrorClass::OutcomeUnknown => {
                        self.record(EndpointGroup::Orders, true, took, out);
                        self.move_to(id, IntentState::Unknown, 0.0, Some(e.to_string()), now_ms, out)
                            .await?;
                    }
                    ErrorClass::Retryable => {
                        self.record(EndpointGroup::Orders, true, took, out);
                        match self.delay(&mut backoff, &e, start) {
                            Some(d) => tokio::time::sleep(d).await,
                            None => {
                                return Ok(Stop::GaveUp(format!(
                                    "retries exhausted after {} attempts: {e}",
                                    backoff.attempts()
                                )));
                            }
                        }
                    }
                },
            }
        }
    }

    /// Cancels the order of intent `intent_id`. Cancelling an order that has
    /// already ended (filled, say) is a normal outcome: nothing to do.
    ///
    /// # Errors
    /// Only when a record could not be written.
    pub async fn cancel(
        &mut self,
        client: &mut dyn ExecutionClient,
        intent_id: &str,
        now_ms: u64,
    ) -> Result<ExecOutput, ExecError> {
        let mut out = ExecOutput::default();
        let Some(state) = self.state_of(intent_id) else {
            // The contract's answer to a cancel of a name it never gave.
            out.events.push(crate::contract::order_update(
                intent_id,
                "",
                OrderStatus::Rejected,
                0.0,
                0.0,
                Some("unknown order".into()),
            ));
            return Ok(out);
        };
        if state.is_terminal() {
            return Ok(out);
        }
        let start = Instant::now();
        let max_wait = Duration::from_millis(self.cfg.max_wait_ms);
        let mut backoff = self.backoff();
        loop {
            if self.state_of(intent_id).is_some_and(IntentState::is_terminal) {
                return Ok(out);
            }
            let mut gate = self.limits.check(EndpointGroup::Cancels);
            if gate == Gate::Go {
                gate = self.breakers[1].permit(Instant::now());
            }
            if let Gate::Wait(d) = gate {
                if start.elapsed() + d > max_wait {
                    out.note(NoteKind::GaveUp, format!("cancel of intent {intent_id} not sent: cancels circuit open or rate limited for longer than {} ms", self.cfg.max_wait_ms));
                    return Ok(out);
                }
                tokio::time::sleep(d).await;
                continue;
            }
            let t0 = Instant::now();
            let result = client.cancel(intent_id).await;
            let took = t0.elapsed();
            let failed = result.as_ref().err().is_some_and(|e| {
                matches!(e.class(), ErrorClass::Retryable | ErrorClass::OutcomeUnknown | ErrorClass::Fatal)
            });
            self.record(EndpointGroup::Cancels, failed, took, &mut out);
            match result {
                Ok(events) => {
                    let cancelled = events.iter().any(|e| {
                        matches!(e, EventKind::OrderUpdate(u) if u.intent_id == intent_id && u.status == OrderStatus::Cancelled)
                    });
                    // Fills first; a refused cancel is settled by the order's own state.
                    let (updates, rest): (Vec<_>, Vec<_>) = events
                        .into_iter()
                        .partition(|e| matches!(e, EventKind::OrderUpdate(u) if u.status == OrderStatus::Rejected));
                    self.apply_events(rest, now_ms, &mut out).await?;
                    if !cancelled {
                        let why = updates.iter().find_map(|e| match e {
                            EventKind::OrderUpdate(u) => u.reason.clone(),
                            _ => None,
                        });
                        self.settle_by_lookup(client, intent_id, why, now_ms, &mut out).await?;
                    }
                    return Ok(out);
                }
                Err(e) => match e.class() {
                    ErrorClass::Retryable | ErrorClass::Halted(_) | ErrorClass::OutcomeUnknown => {
                        match self.delay(&mut backoff, &e, start) {
                            Some(d) => tokio::time::sleep(d).await,
                            None => {
                                out.note(NoteKind::GaveUp, format!("cancel of intent {intent_id}: retries exhausted: {e}"));
                                return Ok(out);
                            }
                        }
                    }
                    ErrorClass::Rejected | ErrorClass::Fatal => {
                        self.settle_by_lookup(client, intent_id, Some(e.to_string()), now_ms, &mut out)
                            .await?;
                        return Ok(out);
                    }
                },
            }
        }
    }

    /// After a refused cancel: the order's true state decides (filled is a
    /// normal outcome); if it is still open, operators are told why.
    async fn settle_by_lookup(
        &mut self,
        client: &mut dyn ExecutionClient,
        id: &str,
        why: Option<String>,
        now_ms: u64,
        out: &mut ExecOutput,
    ) -> Result<(), ExecError> {
        match self.lookup(client, id).await {
            Ok(Some(u)) => {
                self.apply_found(id, &u, now_ms, out).await?;
                if !self.state_of(id).is_some_and(IntentState::is_terminal) {
                    out.note(
                        NoteKind::GaveUp,
                        format!("cancel of intent {id} refused: {}", why.unwrap_or_default()),
                    );
                }
            }
            Ok(None) => {
                let state = self.state_of(id);
                if matches!(state, Some(IntentState::Pending | IntentState::Sent | IntentState::Unknown)) {
                    self.move_to(id, IntentState::Rejected, 0.0, Some("never reached the venue".into()), now_ms, out)
                        .await?;
                } else {
                    out.note(NoteKind::Stale, format!("cancel of intent {id}: the venue has no record of it"));
                }
            }
            Err(e) => out.note(NoteKind::Unknown, format!("cancel of intent {id}: lookup failed: {e}")),
        }
        Ok(())
    }

    /// Settles every non-terminal intent with the venue, journals fills missed
    /// since `since_ms` once (by trade id), and reports (and, when configured,
    /// cancels) venue orders no intent knows. Lifts a placement hold.
    ///
    /// # Errors
    /// Only when a record could not be written.
    pub async fn reconcile(
        &mut self,
        client: &mut dyn ExecutionClient,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<ExecOutput, ExecError> {
        let mut out = ExecOutput::default();
        let mut open: Vec<String> = self
            .intents
            .values()
            .filter(|i| !i.state.is_terminal())
            .map(|i| i.id.clone())
            .collect();
        open.sort();
        let mut complete = true;
        // The venue's trades, grouped by intent, new ones only.
        let mut trades: BTreeMap<String, Vec<crate::venue::VenueTrade>> = BTreeMap::new();
        match client.trades(since_ms).await {
            Ok(ts) => {
                for t in ts {
                    if self.log.record_trade(&self.strategy, &t.id).await? {
                        trades.entry(t.intent_id.clone()).or_default().push(t);
                    }
                }
            }
            Err(e) => {
                complete = false;
                out.note(NoteKind::Unknown, format!("reconcile: trades since {since_ms}: {e}"));
            }
        }
        for id in &open {
            let mut backoff = self.backoff();
            let start = Instant::now();
            let found = loop {
                match self.lookup(client, id).await {
                    Ok(f) => break Some(f),
                    Err(e) => match self.delay(&mut backoff, &e, start) {
                        Some(d) => tokio::time::sleep(d).await,
                        None => {
                            out.note(NoteKind::Unknown, format!("reconcile: intent {id}: {e}"));
                            break None;
                        }
                    },
                }
            };
            let Some(found) = found else {
                complete = false;
                continue;
            };
            let before = self.state_of(id);
            match found {
                Some(u) => {
                    let new_trades = trades.remove(id).unwrap_or_default();
                    self.fills_up_to(id, u.filled_size, &new_trades, &mut out);
                    self.apply_found(id, &u, now_ms, &mut out).await?;
                }
                None => {
                    let (to, why) = match before {
                        Some(IntentState::Pending | IntentState::Sent | IntentState::Unknown) => {
                            (IntentState::Rejected, "never reached the venue")
                        }
                        _ => (IntentState::Cancelled, "the venue has no record of it"),
                    };
                    let filled = self.intents.get(id).map_or(0.0, |i| i.filled);
                    self.move_to(id, to, filled, Some(why.into()), now_ms, &mut out).await?;
                }
            }
            let after = self.state_of(id);
            if before != after {
                out.note(
                    NoteKind::Reconciled,
                    format!(
                        "intent {id}: {} → {}",
                        before.map_or("?", IntentState::as_str),
                        after.map_or("?", IntentState::as_str)
                    ),
                );
            }
        }
        // Trades of intents that were already settled: fills not yet told.
        for (id, ts) in std::mem::take(&mut trades) {
            if let Some(filled) = self.intent(&id).map(|i| i.filled) {
                self.fills_up_to(&id, filled, &ts, &mut out);
            }
        }
        match client.open().await {
            Ok(orders) => {
                for o in orders.iter().filter(|o| self.intent(&o.intent_id).is_none()) {
                    out.note(
                        NoteKind::UnknownOrder,
                        format!(
                            "venue order {} in {} ({} open) is not one of strategy {}'s intents{}",
                            o.intent_id,
                            o.market,
                            o.remaining_size,
                            self.strategy,
                            if self.cfg.cancel_unknown_orders { "; cancelling it" } else { "" }
                        ),
                    );
                    if self.cfg.cancel_unknown_orders
                        && let Err(e) = client.cancel(&o.intent_id).await
                    {
                        out.note(NoteKind::UnknownOrder, format!("cancel of venue order {}: {e}", o.intent_id));
                    }
                }
            }
            Err(e) => {
                complete = false;
                out.note(NoteKind::Unknown, format!("reconcile: open orders: {e}"));
            }
        }
        if complete && self.hold {
            self.hold = false;
            self.status(VenueHealth::Recovered, "reconciled with the venue; placement resumes".into(), &mut out);
        }
        Ok(out)
    }

    /// Fills the strategy has not been told, up to `venue_filled` shares in
    /// all for intent `id`: from the venue's trades first, then (no trade
    /// data) one fill at the order's price for the rest.
    fn fills_up_to(&mut self, id: &str, venue_filled: f64, trades: &[crate::venue::VenueTrade], out: &mut ExecOutput) {
        let Some(intent) = self.intent(id) else {
            return;
        };
        let order = intent.order.clone();
        let mut told = self.told.get(id).copied().unwrap_or(0.0);
        let mut fills = Vec::new();
        for t in trades {
            if told + EPS >= venue_filled {
                break;
            }
            let size = t.size.min(venue_filled - told);
            told += size;
            fills.push(Fill {
                intent_id: id.to_string(),
                market: order.market.clone(),
                side: order.side,
                price: t.price,
                size,
                fee: 0.0,
            });
        }
        if venue_filled - told > EPS {
            fills.push(Fill {
                intent_id: id.to_string(),
                market: order.market.clone(),
                side: order.side,
                price: order.price,
                size: venue_filled - told,
                fee: 0.0,
            });
        }
        for f in fills {
            out.note(NoteKind::Reconciled, format!("intent {id}: missed fill of {} at {}", f.size, f.price));
            self.on_fill(&f);
            out.events.push(EventKind::Fill(f));
        }
    }

    async fn lookup(&mut self, client: &mut dyn ExecutionClient, id: &str) -> Result<Option<OrderUpdate>, VenueError> {
        if let Gate::Wait(d) = self.limits.check(EndpointGroup::MarketData) {
            tokio::time::sleep(d).await;
        }
        let t0 = Instant::now();
        let r = client.lookup(id).await;
        let failed = r.is_err();
        let mut sink = ExecOutput::default();
        self.record(EndpointGroup::MarketData, failed, t0.elapsed(), &mut sink);
        r
    }

    /// Applies the venue's record of an order: the state it names.
    async fn apply_found(&mut self, id: &str, u: &OrderUpdate, now_ms: u64, out: &mut ExecOutput) -> Result<(), ExecError> {
        let to = IntentState::from_contract(u.status);
        self.move_to(id, to, u.filled_size, u.reason.clone(), now_ms, out).await?;
        Ok(())
    }

    /// Venue events: fills are passed on (and counted); order updates move
    /// intents, and the strategy gets the update of each move.
    async fn apply_events(&mut self, events: Vec<EventKind>, now_ms: u64, out: &mut ExecOutput) -> Result<(), ExecError> {
        for e in events {
            match e {
                EventKind::Fill(f) => {
                    self.on_fill(&f);
                    out.events.push(EventKind::Fill(f));
                }
                EventKind::OrderUpdate(u) if self.state_of(&u.intent_id).is_some() => {
                    self.apply_found(&u.intent_id.clone(), &u, now_ms, out).await?;
                }
                other => out.events.push(other),
            }
        }
        Ok(())
    }

    /// Order events the venue reported on its own (a poll found fills or a
    /// venue-side cancel): moves the intents and passes the events on.
    ///
    /// # Errors
    /// Only when a record could not be written.
    pub async fn on_venue_events(&mut self, events: Vec<EventKind>, now_ms: u64) -> Result<ExecOutput, ExecError> {
        let mut out = ExecOutput::default();
        self.apply_events(events, now_ms, &mut out).await?;
        Ok(out)
    }

    fn on_fill(&mut self, f: &Fill) {
        *self.told.entry(f.intent_id.clone()).or_default() += f.size;
        let signed = match f.side {
            Side::Buy => f.size,
            Side::Sell => -f.size,
        };
        *self.positions.entry(f.market.clone()).or_default() += signed;
    }

    /// Moves intent `id`; a repeat of the state it is in (or a stale venue
    /// state) changes nothing.
    async fn move_to(
        &mut self,
        id: &str,
        to: IntentState,
        filled: f64,
        reason: Option<String>,
        now_ms: u64,
        out: &mut ExecOutput,
    ) -> Result<(), ExecError> {
        let Some(intent) = self.intents.get_mut(id) else {
            // Finished already: a late or repeated venue report changes nothing.
            return Ok(());
        };
        let same = intent.state == to
            && (to != IntentState::PartiallyFilled || filled <= intent.filled + EPS)
            && to != IntentState::Sent;
        if same || (to == IntentState::Sent && intent.state == IntentState::Sent) {
            return Ok(());
        }
        match intent.transition(to, filled, reason, now_ms) {
            Ok(t) => {
                self.log.append(&t.record).await?;
                if let Some(u) = t.update {
                    out.events.push(EventKind::OrderUpdate(u));
                }
                if to.is_terminal()
                    && let Some(done) = self.intents.remove(id)
                {
                    self.finished.insert(id.to_string(), done);
                }
            }
            Err(IllegalTransition { from, to, .. }) => {
                out.note(NoteKind::Stale, format!("intent {id}: venue reports {to} while it is {from}; kept {from}"));
            }
        }
        Ok(())
    }

    /// An intent that could not be placed: rejected with the reason if it
    /// never reached the venue; left `unknown` if it may have.
    async fn give_up(&mut self, id: &str, reason: String, now_ms: u64, out: &mut ExecOutput) -> Result<(), ExecError> {
        match self.intents.get(id).map(|i| i.state) {
            Some(IntentState::Pending | IntentState::Sent) => {
                out.note(NoteKind::GaveUp, format!("strategy {}: intent {id} rejected: {reason}", self.strategy));
                self.move_to(id, IntentState::Rejected, 0.0, Some(reason), now_ms, out).await
            }
            Some(IntentState::Unknown) => {
                out.note(NoteKind::Unknown, format!("intent {id}: {reason}; it may rest at the venue, reconciliation settles it"));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Window, breaker, limiter: may an order go now?
    fn gate_place(&mut self, order: &PlaceOrder, out: &mut ExecOutput) -> Result<Gate, String> {
        let now = Instant::now();
        if self.hold {
            return Ok(Gate::Wait(Duration::from_millis(50)));
        }
        match self.window {
            Some(Window::Halted { probe_at, .. }) if now < probe_at => return Ok(Gate::Wait(probe_at - now)),
            Some(Window::PostOnly { until }) if now < until => {
                if order.order_type != OrderType::Gtc {
                    return Err(format!(
                        "the venue accepts only resting orders for {} s after a matching-engine restart",
                        (until - now).as_secs()
                    ));
                }
            }
            Some(Window::PostOnly { .. }) => {
                self.window = None;
                out.note(NoteKind::Window, "post-only window over");
            }
            _ => {}
        }
        // The limiter first: a half-open breaker's probe permit is not wasted on a wait.
        if let Gate::Wait(d) = self.limits.check(EndpointGroup::Orders) {
            return Ok(Gate::Wait(d));
        }
        let gate = self.breakers[0].permit(now);
        self.report_breaker(0, out);
        Ok(gate)
    }

    fn why_waiting(&self) -> String {
        if self.hold {
            return "placement held until reconciliation".into();
        }
        if let Some(Window::Halted { halt, .. }) = self.window {
            return format!("venue {halt}");
        }
        if self.breakers[0].state() != BreakerState::Closed {
            return "orders circuit open".into();
        }
        "rate limited".into()
    }

    fn enter_window(&mut self, halt: Halt, e: &VenueError, out: &mut ExecOutput) {
        let probe = Duration::from_millis(match halt {
            Halt::TooEarly => self.cfg.windows.too_early_probe_ms,
            Halt::CancelOnly | Halt::Disabled => self.cfg.windows.halted_probe_ms,
        });
        let first = !matches!(self.window, Some(Window::Halted { .. }));
        self.window = Some(Window::Halted {
            halt,
            probe_at: Instant::now() + probe,
        });
        if first {
            out.note(NoteKind::Window, format!("{e}: placement paused, cancels still go"));
            self.status(VenueHealth::Degraded, format!("{halt}: placement paused, cancels still go"), out);
        }
    }

    /// An order went through: a halt window is over.
    fn window_passed(&mut self, out: &mut ExecOutput) {
        if let Some(Window::Halted { halt, .. }) = self.window {
            self.window = (halt == Halt::TooEarly).then(|| Window::PostOnly {
                until: Instant::now() + Duration::from_millis(self.cfg.windows.post_only_ms),
            });
            let detail = match halt {
                Halt::TooEarly => format!(
                    "matching engine back; post-only for {} s",
                    self.cfg.windows.post_only_ms / 1000
                ),
                _ => "trading re-enabled; placement resumes".to_string(),
            };
            out.note(NoteKind::Window, detail.clone());
            self.status(VenueHealth::Recovered, detail, out);
        }
    }

    /// New `Poly-RateLimit-Warning`s: new orders pause, cancels go on.
    fn check_warnings(&mut self, client: &dyn ExecutionClient, out: &mut ExecOutput) {
        let n = client.rate_limit_warnings();
        if n > self.warnings_seen {
            self.warnings_seen = n;
            self.limits.on_warning();
            out.note(
                NoteKind::Window,
                format!(
                    "venue warns of its rate limit: new orders pause {} ms, cancels go on",
                    self.cfg.limits.warning_pause_ms
                ),
            );
        }
    }

    fn record(&mut self, group: EndpointGroup, failed: bool, took: Duration, out: &mut ExecOutput) {
        let i = group_index(group);
        self.breakers[i].record(Instant::now(), failed, took);
        self.report_breaker(i, out);
    }

    fn report_breaker(&mut self, i: usize, out: &mut ExecOutput) {
        for t in self.breakers[i].take_transitions() {
            out.note(NoteKind::Breaker, t.detail());
            match t.to {
                BreakerState::Open => self.status(VenueHealth::CircuitOpen, t.detail(), out),
                BreakerState::Closed => self.status(VenueHealth::Recovered, t.detail(), out),
                BreakerState::HalfOpen => {}
            }
        }
    }

    fn status(&mut self, health: VenueHealth, detail: String, out: &mut ExecOutput) {
        self.degraded = !matches!(health, VenueHealth::Recovered | VenueHealth::Healthy);
        out.events.push(EventKind::VenueStatus(VenueStatus {
            venue: self.venue.clone(),
            health,
            detail,
        }));
    }

    fn backoff(&mut self) -> Backoff {
        self.seeds = self.seeds.wrapping_add(1);
        self.cfg.retry.backoff(self.seeds)
    }

    /// The wait before retrying after `e`, or `None` when the budget is spent.
    fn delay(&self, backoff: &mut Backoff, e: &VenueError, start: Instant) -> Option<Duration> {
        let d = backoff.next_delay(e.retry_after())?;
        (start.elapsed() + d <= self.cfg.retry.max_elapsed()).then_some(d)
    }

    fn exposure(&self, market: &str) -> Exposure {
        let mut e = Exposure {
            position: self.positions.get(market).copied().unwrap_or(0.0),
            pnl_today: self.pnl_today,
            ..Exposure::default()
        };
        for i in self.intents.values().filter(|i| !i.state.is_terminal()) {
            e.open_orders += 1;
            if i.order.market == market {
                let rest = i.remaining();
                e.open_in_market += match i.order.side {
                    Side::Buy => rest,
                    Side::Sell => -rest,
                };
            }
        }
        e
    }
}

fn group_index(g: EndpointGroup) -> usize {
    match g {
        EndpointGroup::Orders => 0,
        EndpointGroup::Cancels => 1,
        EndpointGroup::MarketData => 2,
    }
}

fn rejection_reason(e: &VenueError) -> String {
    match e {
        VenueError::Rejected { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
