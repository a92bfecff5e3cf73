//! The run loop: venue ticks in, strategy actions out, fills back in.
//!
//! Each market tick's events go to the strategy's cell one by one. The orders
//! and cancels it returns go through the execution layer (`runner::execution`,
//! over [`crate::exec::Executor`]) to the venue, and the order updates, fills
//! and venue statuses that come back are queued as further events at the same
//! event time, so the strategy learns of its fills (and of every refusal,
//! with its reason) before the next market data. Fills and order updates the
//! venue reports by itself go through the execution layer too; what it tells
//! operators becomes system events. Timers the
//! strategy set fire when event time reaches them: live, the cell keeps the
//! pending timers (they survive restarts of the strategy and are capped
//! there); at each tick the loop takes the ones due and queues them ahead of
//! the tick's market data, each at its due time. While catching up, the loop
//! tracks the journal's timers itself and hands what is still pending to the
//! cell when it goes live.
//!
//! **Limits.** The event limit, the event-time limit and a stop request are
//! checked before every event the strategy is handed — market data, fills and
//! timer events alike — so nothing a strategy does between two ticks can
//! carry a run past them.
//!
//! **Resuming.** When the strategy's journal already holds events (the host was
//! killed or stopped), the cell has restored its state from them; the runner
//! then *catches the venue up*: it restores the newest host state (market,
//! paper account, timers, ledger; see `runner::resume`) and drives the venue
//! through the journal after it, checking each event against the journal and
//! re-applying the journaled actions instead of asking the strategy again.
//! For the simulated venue this rebuilds the market and the paper account
//! exactly; the first event past the journal is where live handling (and
//! pacing) continues, so a resumed run produces the same events as one that
//! was never interrupted. Orders and fills are written to the store
//! idempotently, so re-applying them never records them twice. Host states
//! are saved at tick boundaries as the run goes.
//!
//! Shutdown is a [`Shutdown`] request passed in and handed to the cell: once
//! requested the loop finishes the event in hand (a cell in backoff or
//! recovery stops at once), takes a final checkpoint and returns its report.
//!
//! Every step that awaits takes the cell (and the execution path) by `&mut`,
//! even to read: a `Cell` is `Send` but not `Sync` (its wasmtime store holds
//! WASI objects), so a shared borrow held across an await would make the
//! run's future, and a fleet task's, unable to move between threads.

mod execution;
mod resume;
pub mod telemetry;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::execution::Execution;
pub use self::execution::{ExecSetup, HALTED_REASON};
pub use self::resume::{CatchUpReport, HOST_STATE_EVERY, VenueStart};
use crate::contract::{Action, EventKind, Fill, PlaceOrder, Side};
use crate::ledger::Ledger;
use crate::store::{OrderRecord, Outcome, TradeRecord, Write, wall_clock_ms};
use crate::supervisor::{Cell, CellError, CellState, CellStats, Shutdown};
use crate::venue::{PortfolioSummary, Venue};

/// Events between two updates of the live counters.
const PUBLISH_EVERY: u64 = 64;

/// When a run ends by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunLimits {
    /// Stop once the strategy's journal holds this many events (a resumed run
    /// counts the events before it).
    pub max_events: Option<u64>,
    /// Stop after this much event time from the journal's first event.
    pub max_event_time: Option<Duration>,
}

/// Live counters, shared with the progress display.
#[derive(Debug, Default)]
pub struct RunCounters {
    pub events: AtomicU64,
    pub orders: AtomicU64,
    pub fills: AtomicU64,
    pub restarts: AtomicU64,
    /// The supervisor's restarts within its restart window.
    pub restarts_in_window: AtomicU64,
    pub quarantined: AtomicU64,
    /// Total PnL as `f64` bits.
    pub pnl_bits: AtomicU64,
    /// Rebuilds that did not reproduce the journal (see the cell's recovery).
    pub divergences: AtomicU64,
    /// Wall time the venue last gave a tick (0: none yet).
    pub last_tick_wall_ms: AtomicU64,
    /// Linear memory of the strategy's instance.
    pub instance_memory_bytes: AtomicU64,
    /// Wall time each live event took the strategy to handle. Shared across
    /// a strategy's attempts (see [`RunCounters::next_attempt`]).
    pub handle_seconds: Arc<telemetry::Histogram>,
    /// The executor's intents, breakers, waits and positions.
    pub exec: Mutex<crate::exec::ExecFigures>,
}

impl RunCounters {
    pub fn pnl(&self) -> f64 {
        f64::from_bits(self.pnl_bits.load(Ordering::Relaxed))
    }

    /// Fresh counters for another attempt of the same strategy; the latency
    /// histogram goes on.
    pub fn next_attempt(&self) -> RunCounters {
        RunCounters {
            handle_seconds: self.handle_seconds.clone(),
            ..RunCounters::default()
        }
    }

    pub fn exec_figures(&self) -> crate::exec::ExecFigures {
        *self
            .exec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    EventLimit,
    TimeLimit,
    Shutdown,
    FeedEnded,
    Fatal,
    /// The venue's history did not match the journal while catching up.
    Diverged,
}

/// Fills and order updates a live run still hands over once it stops inside
/// a tick (a strategy answering each fill with a new marketable order could
/// otherwise keep it going).
const STOP_DRAIN: usize = 1000;

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub strategy: String,
    pub state: CellState,
    pub stop: StopReason,
    /// Journal length when the run started (0 on a fresh start).
    pub resumed_at_seq: u64,
    /// Journal length when it ended.
    pub last_seq: u64,
    /// Events handled live in this run.
    pub events: u64,
    /// Orders, cancels and fills over the whole journal (re-applied ones included).
    pub orders: u64,
    pub cancels: u64,
    pub fills: u64,
    pub first_event_ms: Option<u64>,
    pub last_event_ms: Option<u64>,
    pub portfolio: PortfolioSummary,
    pub cell: CellStats,
    /// The error that ended the run, if one did.
    pub fatal: Option<String>,
    /// How the venue was caught up with the journal, when it was.
    pub catch_up: Option<CatchUpReport>,
}

impl RunLimits {
    /// Whether the run must stop before handing the strategy an event at
    /// `at_ms`, with `last_seq` events journaled and the run's event time
    /// starting at `first_ms`.
    fn reached(&self, last_seq: u64, first_ms: u64, at_ms: u64) -> Option<StopReason> {
        if self.max_events.is_some_and(|max| last_seq >= max) {
            return Some(StopReason::EventLimit);
        }
        let max_ms = self
            .max_event_time
            .map(|max| u64::try_from(max.as_millis()).unwrap_or(u64::MAX));
        if max_ms.is_some_and(|max| at_ms.saturating_sub(first_ms) > max) {
            return Some(StopReason::TimeLimit);
        }
        None
    }
}

/// [`run_with`] with the default `[exec]` and no `[risk]` limits.
pub async fn run<V: Venue>(
    cell: &mut Cell,
    venue: &mut V,
    start: VenueStart,
    limits: RunLimits,
    counters: Arc<RunCounters>,
    shutdown: Shutdown,
) -> RunReport {
    let setup = ExecSetup::default();
    run_with(cell, venue, start, limits, counters, shutdown, &setup).await
}

/// Runs `cell` against `venue` until a limit, the feed's end, a fatal strategy
/// or `shutdown`, its orders going through an executor built from `setup`. A
/// [`VenueStart::Fresh`] venue is first caught up with the strategy's
/// journal; see the module docs.
pub async fn run_with<V: Venue>(
    cell: &mut Cell,
    venue: &mut V,
    start: VenueStart,
    limits: RunLimits,
    counters: Arc<RunCounters>,
    shutdown: Shutdown,
    setup: &ExecSetup,
) -> RunReport {
    cell.set_shutdown(shutdown.clone());
    let resumed_at_seq = cell.last_seq();
    let (mut pending, mut restored) = resume::prepare(cell, venue, start).await;
    let mut catching_up = pending.is_needed();
    // Seq of the newest host state this run knows of.
    let mut host_state_seq = if catching_up {
        pending.report().from_seq
    } else {
        resumed_at_seq
    };
    let mut queue: VecDeque<(u64, EventKind)> = VecDeque::new();
    // The journal's pending timers while catching up; live, the cell keeps them.
    let mut timers = restored.timers;
    if !catching_up {
        cell.add_pending_timers(std::mem::take(&mut timers));
    }
    let mut ledger = restored.ledger;
    let mut report = RunReport {
        strategy: cell.name().to_string(),
        state: cell.state(),
        stop: StopReason::FeedEnded,
        resumed_at_seq,
        last_seq: cell.last_seq(),
        events: 0,
        orders: restored.orders,
        cancels: restored.cancels,
        fills: restored.fills,
        first_event_ms: restored.first_event_ms,
        last_event_ms: None,
        portfolio: venue.portfolio(),
        cell: cell.stats().clone(),
        fatal: None,
        catch_up: None,
    };
    let exec_state = restored.exec.take();
    let (mut execution, mut carry) = match Execution::start(
        cell,
        venue,
        setup,
        exec_state,
        restored.rebuilt_from_ms,
        catching_up,
    )
    .await
    {
        Ok(started) => started,
        Err(e) => {
            let fatal = format!("cannot start the execution layer: {e}");
            return fatal_at_start(cell, report, fatal).await;
        }
    };

    if let Some((seq, at_ms, actions)) = restored.last_entry.take() {
        let (mut places, mut cancels) = (Vec::new(), Vec::new());
        for planned in crate::supervisor::plan(seq, actions) {
            match planned.action {
                Action::PlaceOrder(order) => places.push((planned.intent_id, order)),
                Action::CancelOrder(id) => cancels.push(id),
                Action::SetTimer(_) => {}
            }
        }
        match execution
            .settle_unfinished(venue, places, cancels, at_ms)
            .await
        {
            Ok((events, refused)) => {
                for (id, order) in refused {
                    let order = order_record(&id, seq, &order);
                    let write = Write::Order {
                        strategy: cell.name().to_string(),
                        order,
                    };
                    record(cell, write).await;
                }
                carry.extend(events);
            }
            Err(e) => {
                let fatal = format!("cannot settle the last event's orders: {e}");
                return fatal_at_start(cell, report, fatal).await;
            }
        }
    }

    // The run stopped with part of a tick unhandled: no host state then (one
    // is valid only between ticks); a resume catches up through the journal.
    let mut mid_tick = false;
    'run: loop {
        // A tick boundary: every event so far is through the venue.
        if catching_up && pending.is_done() {
            catching_up = false;
            venue.set_catching_up(false);
            let done = pending.report();
            tracing::info!(
                strategy = %cell.name(),
                from_seq = done.from_seq,
                to_seq = done.to_seq,
                entries = done.entries,
                elapsed_ms = done.wall_ms,
                "caught up with the journal; continuing live"
            );
            report.catch_up = Some(done);
            cell.add_pending_timers(std::mem::take(&mut timers));
        }
        if !catching_up && cell.last_seq() >= host_state_seq + HOST_STATE_EVERY {
            host_state_seq = cell.last_seq();
            save_host_state(cell, venue, &report, &ledger, &mut execution).await;
        }
        if pending.is_done() && limits.max_events.is_some_and(|max| cell.last_seq() >= max) {
            report.stop = StopReason::EventLimit;
            break;
        }
        let tick = tokio::select! {
            biased;
            () = shutdown.requested() => {
                report.stop = StopReason::Shutdown;
                break;
            }
            tick = venue.next_tick() => tick,
        };
        let tick = match tick {
            Ok(Some(tick)) => {
                counters
                    .last_tick_wall_ms
                    .store(wall_clock_ms(), Ordering::Relaxed);
                tick
            }
            Ok(None) => {
                report.stop = StopReason::FeedEnded;
                break;
            }
            Err(e) => {
                tracing::warn!("market data: {e}");
                continue;
            }
        };
        let first = *report.first_event_ms.get_or_insert(tick.timestamp_ms);
        if pending.is_done()
            && let Some(stop) = limits.reached(cell.last_seq(), first, tick.timestamp_ms)
        {
            report.stop = stop;
            break;
        }
        if catching_up {
            while let Some(&(at, id)) = timers.first()
                && at <= tick.timestamp_ms
            {
                timers.pop_first();
                queue.push_back((at, EventKind::Timer(id)));
            }
        } else {
            let due = cell.take_due_timers(tick.timestamp_ms);
            queue.extend(due.into_iter().map(|(at, id)| (at, EventKind::Timer(id))));
            match execution.poll_halt(venue, tick.timestamp_ms).await {
                Ok(events) => carry.extend(events),
                Err(e) => {
                    report.fatal = Some(format!("cannot record an order intent: {e}"));
                    report.stop = StopReason::Fatal;
                    break;
                }
            }
        }
        // What the executor produced between ticks (a reconciliation, a
        // halt) comes first, at this tick's time.
        queue.extend(carry.drain(..).map(|kind| (tick.timestamp_ms, kind)));
        // Fills and order updates the venue reported by itself move intents.
        match execution
            .venue_events(venue, tick.events, tick.timestamp_ms, catching_up)
            .await
        {
            Ok(events) => queue.extend(events.into_iter().map(|kind| (tick.timestamp_ms, kind))),
            Err(e) => {
                report.fatal = Some(format!("cannot record an order intent: {e}"));
                report.stop = StopReason::Fatal;
                break;
            }
        }

        // A limit reached or a stop requested inside a tick ends the run
        // there. On a venue that keeps its own state, the tick's fills and
        // order updates (they already moved intents) still reach the journal
        // and the strategy first — at most [`STOP_DRAIN`] of them; market
        // data and timers left are dropped (the next start rebuilds the
        // timers from the journal). A venue that replays history stops at
        // once: the next start catches up through the journal and goes on.
        let mut stopping: Option<(StopReason, usize)> = None;
        while let Some((timestamp_ms, kind)) = queue.pop_front() {
            if pending.is_done() {
                if stopping.is_none()
                    && let Some(stop) = limits
                        .reached(cell.last_seq(), first, timestamp_ms)
                        .or_else(|| shutdown.is_requested().then_some(StopReason::Shutdown))
                {
                    if venue.replays_history() {
                        report.stop = stop;
                        mid_tick = true;
                        break 'run;
                    }
                    stopping = Some((stop, 0));
                }
                if let Some((_, drained)) = &mut stopping {
                    let moved_an_intent = matches!(
                        kind,
                        EventKind::Fill(_) | EventKind::OrderUpdate(_) | EventKind::VenueStatus(_)
                    );
                    if !moved_an_intent {
                        continue;
                    }
                    *drained += 1;
                    if *drained > STOP_DRAIN {
                        break;
                    }
                }
            }
            let fill = match &kind {
                EventKind::Fill(fill) => Some(fill.clone()),
                _ => None,
            };
            // From the journal while catching up, from the strategy after.
            let next = match pending.next().await {
                Ok(next) => next,
                Err(e) => {
                    report.fatal = Some(e.to_string());
                    report.stop = StopReason::Fatal;
                    break 'run;
                }
            };
            let from_journal = next.is_some();
            let (seq, actions) = match next {
                Some(entry) => {
                    if entry.event.kind != kind || entry.event.timestamp_ms != timestamp_ms {
                        report.stop = StopReason::Diverged;
                        report.fatal = Some(format!(
                            "the venue's history does not match the journal at seq {} (was the \
                             seed or the market configuration changed since this strategy's \
                             data was written?)",
                            entry.event.seq
                        ));
                        break 'run;
                    }
                    let actions = match entry.outcome {
                        Outcome::Handled(actions) => actions,
                        Outcome::Quarantined { .. } => Vec::new(),
                    };
                    (
                        entry.event.seq,
                        crate::supervisor::plan(entry.event.seq, actions),
                    )
                }
                None => match timed(&counters, cell.handle(timestamp_ms, kind)).await {
                    Ok(step) => {
                        report.events += 1;
                        (step.seq, step.actions)
                    }
                    Err(CellError::Shutdown { .. }) => {
                        report.stop = StopReason::Shutdown;
                        mid_tick = true;
                        break 'run;
                    }
                    Err(e) => {
                        report.fatal = Some(e.to_string());
                        report.stop = StopReason::Fatal;
                        break 'run;
                    }
                },
            };
            report.last_event_ms = Some(timestamp_ms);
            if let Some(fill) = fill {
                report.fills += 1;
                let trade = book_trade(cell, &mut ledger, seq, &fill, timestamp_ms).await;
                execution.on_pnl(timestamp_ms, trade.pnl);
                record(
                    cell,
                    Write::Trade {
                        strategy: cell.name().to_string(),
                        trade,
                    },
                )
                .await;
            }
            let (mut places, mut cancels) = (Vec::new(), Vec::new());
            for planned in actions {
                match planned.action {
                    Action::PlaceOrder(order) => {
                        report.orders += 1;
                        let record_write = Write::Order {
                            strategy: cell.name().to_string(),
                            order: order_record(&planned.intent_id, seq, &order),
                        };
                        record(cell, record_write).await;
                        places.push((planned.intent_id, order));
                    }
                    Action::CancelOrder(id) => {
                        report.cancels += 1;
                        cancels.push(id);
                    }
                    Action::SetTimer(timer) => {
                        // Live, the cell has taken the timer already.
                        if from_journal {
                            timers.insert((timer.at_ms.max(timestamp_ms), timer.id));
                        }
                    }
                }
            }
            if !places.is_empty() || !cancels.is_empty() {
                // Through the execution layer: every order ends in a known
                // state the strategy is told of, at this event's time.
                // A live venue's batch may wait (an open circuit, a window):
                // a stop request ends the wait. What was sent is durable as
                // `sent` and the next start reconciles it; a venue that
                // replays history never waits and is never cut short.
                let stoppable = !venue.replays_history();
                let batch = execution.batch(venue, places, cancels, timestamp_ms, from_journal);
                let result = tokio::select! {
                    biased;
                    result = batch => result,
                    () = shutdown.requested(), if stoppable => {
                        report.stop = StopReason::Shutdown;
                        mid_tick = true;
                        break 'run;
                    }
                };
                match result {
                    Ok(events) => queue.extend(events.into_iter().map(|k| (timestamp_ms, k))),
                    Err(e) => {
                        report.fatal = Some(format!("cannot record an order intent: {e}"));
                        report.stop = StopReason::Fatal;
                        break 'run;
                    }
                }
            }
            // The counters feed a display redrawn a few times a second;
            // valuing the portfolio on every event would be wasted work.
            if pending.is_done() && seq % PUBLISH_EVERY == 0 {
                publish(
                    &counters,
                    &report,
                    cell,
                    &execution,
                    venue.portfolio().total_pnl(),
                );
            }
        }
        if let Some((stop, _)) = stopping {
            report.stop = stop;
            mid_tick = true;
            break;
        }
    }

    if pending.is_done()
        && !mid_tick
        && cell.last_seq() > host_state_seq
        && !matches!(report.stop, StopReason::Fatal | StopReason::Diverged)
    {
        // Ended at a tick boundary: the next run resumes from exactly here.
        save_host_state(cell, venue, &report, &ledger, &mut execution).await;
    }
    if catching_up {
        report.catch_up = Some(pending.report());
    }
    cell.stop().await;
    report.state = cell.state();
    report.last_seq = cell.last_seq();
    report.portfolio = venue.portfolio();
    report.cell = cell.stats().clone();
    publish(
        &counters,
        &report,
        cell,
        &execution,
        report.portfolio.total_pnl(),
    );
    report
}

async fn save_host_state<V: Venue>(
    cell: &mut Cell,
    venue: &V,
    report: &RunReport,
    ledger: &Ledger,
    execution: &mut Execution,
) {
    let run = resume::RunState {
        exec: Some(execution.snapshot()),
        timers: cell.pending_timer_set().clone(),
        ledger: ledger.clone(),
        orders: report.orders,
        cancels: report.cancels,
        fills: report.fills,
        first_event_ms: report.first_event_ms,
        rebuilt_from_ms: None,
        last_entry: None,
    };
    resume::save(cell, venue, run).await;
}

async fn record(cell: &mut Cell, write: Write) {
    if let Err(e) = cell.store().write(write).await {
        tracing::warn!(strategy = %cell.name(), "cannot record: {e}");
    }
}

/// Ends a run that could not start its execution layer: the cell stops and
/// the report says why.
async fn fatal_at_start(cell: &mut Cell, mut report: RunReport, fatal: String) -> RunReport {
    report.fatal = Some(fatal);
    report.stop = StopReason::Fatal;
    cell.stop().await;
    report.state = cell.state();
    report.last_seq = cell.last_seq();
    report.cell = cell.stats().clone();
    report
}

fn order_record(intent_id: &str, seq: u64, order: &PlaceOrder) -> OrderRecord {
    OrderRecord::placed(intent_id.to_string(), seq, order, wall_clock_ms())
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// The `trades` row of `fill`, booked in `ledger` (a negative size is the
/// reversal of a trade that failed to settle). A sell larger than the position
/// is clamped by the ledger and reported here as a system event.
async fn book_trade(
    cell: &mut Cell,
    ledger: &mut Ledger,
    seq: u64,
    fill: &Fill,
    executed_at_ms: u64,
) -> TradeRecord {
    let booked = ledger.apply(fill);
    if booked.uncovered > 0.0 {
        resume::system_event(
            cell,
            "ledger-uncovered",
            format!(
                "fill at seq {seq} ({} {} of {} at {}) exceeds the position by {}; \
                 booked as flat (outcome tokens cannot be sold short)",
                side_name(fill.side),
                fill.size,
                fill.market,
                fill.price,
                booked.uncovered
            ),
        )
        .await;
    }
    TradeRecord {
        seq,
        intent_id: fill.intent_id.clone(),
        market: fill.market.clone(),
        side: side_name(fill.side).to_string(),
        price: fill.price,
        size: fill.size,
        fee: fill.fee,
        pnl: booked.realized_pnl,
        executed_at_ms,
    }
}

/// Awaits `handling`, recording how long it took in the latency histogram.
async fn timed<T>(counters: &RunCounters, handling: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = handling.await;
    counters.handle_seconds.record(started.elapsed());
    out
}

fn publish(
    counters: &RunCounters,
    report: &RunReport,
    cell: &Cell,
    execution: &Execution,
    pnl: f64,
) {
    let stats = cell.stats();
    counters
        .divergences
        .store(stats.divergences, Ordering::Relaxed);
    counters
        .instance_memory_bytes
        .store(cell.instance_memory_bytes(), Ordering::Relaxed);
    *counters
        .exec
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = execution.figures();
    counters
        .events
        .store(report.last_seq.max(report.events), Ordering::Relaxed);
    counters.orders.store(report.orders, Ordering::Relaxed);
    counters.fills.store(report.fills, Ordering::Relaxed);
    counters.restarts.store(stats.restarts, Ordering::Relaxed);
    counters
        .restarts_in_window
        .store(stats.restarts_in_window, Ordering::Relaxed);
    counters
        .quarantined
        .store(stats.quarantined, Ordering::Relaxed);
    counters.pnl_bits.store(pnl.to_bits(), Ordering::Relaxed);
}
