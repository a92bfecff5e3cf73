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

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::ExecConfig;
use super::breaker::{BreakerState, CircuitBreaker, EndpointGroup, Gate};
use super::intent::{IllegalTransition, Intent, IntentLog, IntentLogError, IntentState};
use super::limits::RateLimits;
use super::output::{ExecOutput, NoteKind};
use super::retry::Backoff;
use super::risk::{Exposure, RiskConfig, RiskGate};
use crate::contract::{EventKind, Fill, OrderUpdate, PlaceOrder, Side};
use crate::venue::{ErrorClass, ExecutionClient, Halt, VenueError};

/// Sizes closer than this are equal.
const EPS: f64 = 1e-6;
/// How far back a restart follows the settlement of filled orders (see
/// [`Executor::take_settling`]): trades settle on chain within minutes; a
/// day covers a venue that is slow to confirm.
pub const SETTLE_WINDOW_MS: u64 = 24 * 3_600_000;

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

/// Why placement is held until a reconciliation completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// A restart found intents whose outcome the venue must settle, and
    /// settling them did not complete: each new order first tries again (at
    /// most every [`RECONCILE_EVERY`]) and is refused while it fails.
    Restart,
    /// Dead-man heartbeats failed: the venue may cancel every resting order.
    /// Orders are refused until the reconciliation that follows the
    /// heartbeat's return (a wait here would block the very loop that hears
    /// of it).
    Heartbeat,
}

impl Hold {
    /// The reason an order refused under this hold is `rejected` with.
    fn refusal(self) -> &'static str {
        match self {
            Hold::Restart => {
                "not sent: orders of an earlier run are not yet settled with the venue \
                 (reconciliation incomplete)"
            }
            Hold::Heartbeat => {
                "not sent: the dead-man heartbeat failed; placement is held until it is back \
                 and the venue's orders are reconciled"
            }
        }
    }
}

/// How often a held placement tries to settle with the venue itself.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

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
    /// Terminal intents (a cancel of one is answered from here), the newest
    /// [`KEPT_FINISHED`]; `finished_order` is their order of finishing.
    finished: HashMap<String, Intent>,
    finished_order: VecDeque<String>,
    /// Placement refused by the operator, with the reason strategies get.
    halted: Option<String>,
    /// Intents a replay must refuse as they were refused before (by risk
    /// limits or a halt), with the reason they got.
    refusals: HashMap<String, String>,
    /// Cancels of intents this executor does not hold go to the venue.
    forward_unknown_cancels: bool,
    /// Shares reported to the strategy as fills, per intent (net of reversals).
    told: HashMap<String, f64>,
    /// Shares reversed (negative fills of trades that failed to settle), per
    /// intent: the venue's matched size still counts them.
    reversed: HashMap<String, f64>,
    /// Intents whose reversal the strategy was told and whose explaining
    /// order update has not come yet: that update reaches the strategy even
    /// when it moves the intent nowhere.
    reversal_pending: std::collections::HashSet<String>,
    /// Terminal intents whose fills the strategy was not all told (see
    /// [`Executor::take_untold`]); the next reconciliation settles them.
    untold: Vec<String>,
    /// Orders of terminal intents whose trades may not be final yet (see
    /// [`Executor::take_settling`]): id, order, venue reference and shares
    /// matched. The next reconciliation hands them to the venue.
    settling: Vec<(String, PlaceOrder, String, f64)>,
    /// Signed position per market, from fills.
    positions: HashMap<String, f64>,
    pnl_today: f64,
    risk: RiskGate,
    breakers: [CircuitBreaker; 3],
    limits: RateLimits,
    window: Option<Window>,
    degraded: bool,
    /// Placement held until a reconciliation completes, and why.
    hold: Option<Hold>,
    /// When placement last settled with the venue itself (a restart's hold).
    reconciled_at: Option<Instant>,
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
    pub fn new(
        strategy: &str,
        venue: &str,
        cfg: ExecConfig,
        risk: RiskConfig,
        log: Box<dyn IntentLog>,
    ) -> Self {
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
            finished_order: VecDeque::new(),
            halted: None,
            refusals: HashMap::new(),
            forward_unknown_cancels: false,
            told: HashMap::new(),
            reversed: HashMap::new(),
            reversal_pending: std::collections::HashSet::new(),
            untold: Vec::new(),
            settling: Vec::new(),
            positions: HashMap::new(),
            pnl_today: 0.0,
            risk: RiskGate::new(risk),
            window: None,
            degraded: false,
            hold: None,
            reconciled_at: None,
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
            // The journal may hold fills the intent's last move does not.
            let told = self.told.entry(i.id.clone()).or_default();
            *told = told.max(i.filled);
            self.intents.insert(i.id.clone(), i);
        }
        if n > 0 {
            self.hold = Some(Hold::Restart);
        }
        Ok(n)
    }

    /// After a live restart, from one read of the log's terminal intents
    /// with fills: those created at or after `untold_since_ms` are known again
    /// and checked for untold fills (see [`Executor::take_untold`]); those
    /// created at or after `settle_since_ms` have their settlement followed
    /// (see [`Executor::take_settling`]). Returns how many of each.
    ///
    /// # Errors
    /// The log could not be read.
    pub async fn load_filled(
        &mut self,
        untold_since_ms: Option<u64>,
        settle_since_ms: u64,
    ) -> Result<(usize, usize), ExecError> {
        let since = untold_since_ms.map_or(settle_since_ms, |u| u.min(settle_since_ms));
        let filled = self.log.filled_intents_since(&self.strategy, since).await?;
        let settling: Vec<Intent> = filled
            .iter()
            .filter(|i| i.created_ms >= settle_since_ms)
            .cloned()
            .collect();
        let untold = match untold_since_ms {
            Some(u) => self.take_untold(filled.into_iter().filter(|i| i.created_ms >= u)),
            None => 0,
        };
        Ok((untold, self.take_settling(settling)))
    }

    /// The terminal intents with fills given are known again, and those whose
    /// recorded fills exceed what the journal told the strategy (the host
    /// stopped between recording the move and journaling the fill) are
    /// marked: [`Executor::reconcile`] then tells the rest, from the venue's
    /// trades. Returns how many were marked.
    fn take_untold(&mut self, filled: impl Iterator<Item = Intent>) -> usize {
        let mut n = 0;
        for i in filled {
            if self.intent(&i.id).is_some() {
                continue;
            }
            // Known again either way: a venue's late report of one of its
            // fills is then weighed against what was told. Reversed shares
            // were told and taken back; the intent's matched size still
            // counts them.
            let told = self.told.get(&i.id).copied().unwrap_or(0.0)
                + self.reversed.get(&i.id).copied().unwrap_or(0.0);
            if i.filled > told + EPS {
                self.untold.push(i.id.clone());
                n += 1;
            }
            self.finish(i);
        }
        if n > 0 {
            self.hold = Some(Hold::Restart);
        }
        n
    }

    /// The terminal intents with fills given (the newest [`KEPT_FINISHED`]
    /// of them) may still have trades matched, not final.
    /// [`Executor::reconcile`] hands their orders to the venue again, with
    /// the shares already reversed, so a trade of theirs that fails to
    /// settle after the restart is still reversed for the strategy, and one
    /// reversed before is not again. They do not become this executor's
    /// intents again: what the strategy was told of an intent older than
    /// the host state is not known here. Returns how many.
    fn take_settling(&mut self, mut filled: Vec<Intent>) -> usize {
        filled.sort_by_key(|i| std::cmp::Reverse(i.created_ms));
        self.settling = filled
            .into_iter()
            .take(KEPT_FINISHED)
            .filter_map(|i| Some((i.id, i.order, i.venue_ref?, i.filled)))
            .collect();
        self.settling.len()
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
        let (verdict, kind) = match (self.refusals.remove(intent_id), &self.halted) {
            (Some(reason), _) => (Err(reason), NoteKind::Risk),
            (None, Some(reason)) => (Err(reason.clone()), NoteKind::Halted),
            (None, None) => {
                let exposure = self.exposure(&order.market);
                (self.risk.check(&order, &exposure, now_ms), NoteKind::Risk)
            }
        };
        if self.hold == Some(Hold::Restart)
            && self
                .reconciled_at
                .is_none_or(|t| t.elapsed() >= RECONCILE_EVERY)
        {
            // Settle the earlier run's orders before this one exists (the
            // reconciliation refuses intents never sent).
            self.reconciled_at = Some(Instant::now());
            let since = self
                .intents()
                .filter(|i| !i.state.is_terminal())
                .map(|i| i.created_ms)
                .min()
                .unwrap_or(now_ms);
            let settled = self.reconcile(client, since, now_ms).await?;
            out.events.extend(settled.events);
            out.notes.extend(settled.notes);
        }
        let (intent, first) = Intent::new(&self.strategy, intent_id, order, now_ms);
        self.log.append(&first).await?;
        self.intents.insert(intent_id.to_string(), intent);
        if let Err(reason) = verdict {
            out.note(
                kind,
                format!("strategy {}: intent {intent_id}: {reason}", self.strategy),
            );
            self.move_to(
                intent_id,
                IntentState::Rejected,
                0.0,
                Some(reason),
                now_ms,
                &mut out,
            )
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
                match self.lookup(client, id, out).await {
                    Ok(Some(u)) => {
                        self.tell_found(client, id, &u, out).await;
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
            if let Some(hold) = self.hold {
                return Ok(Stop::GaveUp(hold.refusal().into()));
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
                // The venue's reference is fixed and recorded before the order leaves.
                let venue_ref = client.prepare(id, &order);
                if let Some(i) = self.intents.get_mut(id) {
                    i.venue_ref = venue_ref;
                }
                self.move_to(id, IntentState::Sent, 0.0, None, now_ms, out)
                    .await?;
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
                    if self
                        .intents
                        .get(id)
                        .is_some_and(|i| i.state == IntentState::Sent)
                    {
                        self.move_to(id, IntentState::Acknowledged, 0.0, None, now_ms, out)
                            .await?;
                    }
                    return Ok(Stop::Done);
                }
                Err(e) => match e.class() {
                    ErrorClass::Rejected => {
                        self.record(EndpointGroup::Orders, false, took, out);
                        self.window_passed(out);
                        let reason = rejection_reason(&e);
                        self.move_to(id, IntentState::Rejected, 0.0, Some(reason), now_ms, out)
                            .await?;
                        return Ok(Stop::Done);
                    }
                    ErrorClass::Fatal => {
                        self.record(EndpointGroup::Orders, true, took, out);
                        out.note(NoteKind::GaveUp, format!("intent {id}: {e}"));
                        return Ok(Stop::GaveUp(e.to_string()));
                    }
                    ErrorClass::Halted(halt) => {
                        // A window is the venue answering on purpose, not a
                        // failing endpoint; recorded so a half-open probe
                        // permit is not left without an outcome.
                        self.record(EndpointGroup::Orders, false, took, out);
                        self.enter_window(halt, &e, out);
                    }
                    ErrorClass::OutcomeUnknown => {
                        self.record(EndpointGroup::Orders, true, took, out);
                        self.move_to(
                            id,
                            IntentState::Unknown,
                            0.0,
                            Some(e.to_string()),
                            now_ms,
                            out,
                        )
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

    pub(super) async fn lookup(
        &mut self,
        client: &mut dyn ExecutionClient,
        id: &str,
        out: &mut ExecOutput,
    ) -> Result<Option<OrderUpdate>, VenueError> {
        if let Gate::Wait(d) = self.limits.check(EndpointGroup::MarketData) {
            tokio::time::sleep(d).await;
        }
        let t0 = Instant::now();
        let r = client.lookup(id).await;
        let failed = r.is_err();
        self.record(EndpointGroup::MarketData, failed, t0.elapsed(), out);
        r
    }

    /// Applies the venue's record of an order: the state it names.
    pub(super) async fn apply_found(
        &mut self,
        id: &str,
        u: &OrderUpdate,
        now_ms: u64,
        out: &mut ExecOutput,
    ) -> Result<(), ExecError> {
        let to = IntentState::from_contract(u.status);
        self.move_to(id, to, u.filled_size, u.reason.clone(), now_ms, out)
            .await?;
        Ok(())
    }

    /// Venue events: fills are told once (see the `fills` module); order
    /// updates move intents, and the strategy gets the update of each move.
    pub(super) async fn apply_events(
        &mut self,
        events: Vec<EventKind>,
        now_ms: u64,
        out: &mut ExecOutput,
    ) -> Result<(), ExecError> {
        let mut held: Vec<Fill> = Vec::new();
        for e in events {
            match e {
                EventKind::Fill(f) if self.holds(&f) => held.push(f),
                EventKind::Fill(f) => {
                    self.on_fill(&f);
                    out.events.push(EventKind::Fill(f));
                }
                EventKind::OrderUpdate(u) if self.state_of(&u.intent_id).is_some() => {
                    self.tell_held(&u, &mut held, out);
                    let before = out.events.len();
                    self.apply_found(&u.intent_id.clone(), &u, now_ms, out)
                        .await?;
                    // The update explaining a reversal: the strategy gets it
                    // even when the intent stays where it is (filled, or a
                    // smaller filled size than it reached).
                    let moved = out.events[before..].iter().any(
                        |e| matches!(e, EventKind::OrderUpdate(m) if m.intent_id == u.intent_id),
                    );
                    if self.reversal_pending.remove(&u.intent_id) && !moved {
                        out.events.push(EventKind::OrderUpdate(u));
                    }
                }
                other => out.events.push(other),
            }
        }
        self.tell_unexplained(held, out);
        Ok(())
    }

    /// Order events the venue reported on its own (a poll found fills or a
    /// venue-side cancel): moves the intents and passes the events on.
    ///
    /// # Errors
    /// Only when a record could not be written.
    pub async fn on_venue_events(
        &mut self,
        events: Vec<EventKind>,
        now_ms: u64,
    ) -> Result<ExecOutput, ExecError> {
        let mut out = ExecOutput::default();
        self.apply_events(events, now_ms, &mut out).await?;
        Ok(out)
    }

    /// Moves intent `id`; a repeat of the state it is in (or a stale venue
    /// state) changes nothing.
    pub(super) async fn move_to(
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
                    self.finish(done);
                }
            }
            Err(IllegalTransition { from, to, .. }) => {
                out.note(
                    NoteKind::Stale,
                    format!("intent {id}: venue reports {to} while it is {from}; kept {from}"),
                );
            }
        }
        Ok(())
    }

    /// An intent that could not be placed: rejected with the reason if it
    /// never reached the venue; left `unknown` if it may have.
    async fn give_up(
        &mut self,
        id: &str,
        reason: String,
        now_ms: u64,
        out: &mut ExecOutput,
    ) -> Result<(), ExecError> {
        match self.intents.get(id).map(|i| i.state) {
            Some(IntentState::Pending | IntentState::Sent) => {
                out.note(
                    NoteKind::GaveUp,
                    format!("strategy {}: intent {id} rejected: {reason}", self.strategy),
                );
                self.move_to(id, IntentState::Rejected, 0.0, Some(reason), now_ms, out)
                    .await
            }
            Some(IntentState::Unknown) => {
                out.note(
                    NoteKind::Unknown,
                    format!(
                        "intent {id}: {reason}; it may rest at the venue, reconciliation settles it"
                    ),
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(super) fn backoff(&mut self) -> Backoff {
        self.seeds = self.seeds.wrapping_add(1);
        self.cfg.retry.backoff(self.seeds)
    }

    /// The wait before retrying after `e`, or `None` when the budget is spent.
    pub(super) fn delay(
        &self,
        backoff: &mut Backoff,
        e: &VenueError,
        start: Instant,
    ) -> Option<Duration> {
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

mod cancel;
mod fills;
mod gates;
mod reconcile;
mod state;

pub use state::{ExecFigures, ExecSnapshot, KEPT_FINISHED};
#[cfg(test)]
mod tests;
