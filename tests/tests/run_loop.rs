//! The run loop (`polybot_host::runner::run`) with real parts: a `faulty` or
//! momentum component in a supervisor cell, the in-memory store and the
//! simulated venue. Limits, feed end, timers, divergence and stop requests.

use std::sync::Arc;
use std::time::Duration;

use polybot_host::contract::{Action, EventKind, OrderUpdate, PlaceOrder};
use polybot_host::runner::{self, RunCounters, RunLimits, RunReport, StopReason};
use polybot_host::sandbox::SandboxLimits;
use polybot_host::store::{JournalEntry, Outcome};
use polybot_host::supervisor::{Cell, CellState, RestartPolicy, Shutdown};
use polybot_host::venue::paper::PaperConfig;
use polybot_host::venue::sim::SimConfig;
use polybot_host::venue::simulated::{Pacing, SimVenue};
use polybot_host::venue::{MarketTick, PortfolioSummary, Venue, VenueError};
use polybot_tests::{load, quick_restarts, sandbox, start_cell};
use serde_json::json;

fn sim() -> SimVenue {
    SimVenue::new(
        SimConfig::default(),
        PaperConfig::default(),
        Pacing::Unpaced,
    )
}

async fn faulty(config: serde_json::Value, restart: RestartPolicy, checkpoint_every: u64) -> Cell {
    let sandbox = sandbox(SandboxLimits::default());
    start_cell(load(&sandbox, "faulty"), config, restart, checkpoint_every).await
}

async fn run<V: Venue>(cell: &mut Cell, venue: &mut V, limits: RunLimits) -> RunReport {
    let run = runner::run(
        cell,
        venue,
        runner::VenueStart::Fresh,
        limits,
        Arc::new(RunCounters::default()),
        Shutdown::new(),
    );
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the run ended")
}

async fn journal(cell: &Cell) -> Vec<JournalEntry> {
    cell.store()
        .entries_after(cell.name(), 0)
        .await
        .expect("journal")
}

fn events(max: u64) -> RunLimits {
    RunLimits {
        max_events: Some(max),
        max_event_time: None,
    }
}

#[tokio::test]
async fn the_event_limit_holds_between_every_event_when_timers_multiply() {
    // Every event sets 3 timers due at once: each tick hands the strategy
    // three times as many timer events as the one before.
    let restart = RestartPolicy {
        max_pending_timers: 1_000_000,
        ..quick_restarts(10)
    };
    let mut cell = faulty(json!({"timers_per_event": 3}), restart, 1000).await;
    let report = run(&mut cell, &mut sim(), events(500)).await;
    assert_eq!(report.stop, StopReason::EventLimit);
    assert_eq!(report.last_seq, 500);
    assert_eq!(journal(&cell).await.len(), 500);
}

#[tokio::test]
async fn a_timer_flood_is_capped_and_the_strategy_faults_instead_of_the_host() {
    let mut cell = faulty(json!({"timers_per_event": 64}), quick_restarts(10), 1000).await;
    let report = run(&mut cell, &mut sim(), events(5000)).await;
    assert!(report.last_seq <= 5000, "{report:?}");
    assert!(cell.pending_timers() <= 1024);
    assert!(report.cell.quarantined >= 1, "{:?}", report.cell);
    let events = cell.store().system_events(10_000).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "fault" && e.message.contains("too many timers")),
        "{events:?}"
    );
}

#[tokio::test]
async fn the_time_limit_holds_between_every_event() {
    // A timer due a second after every event: timer events fall between ticks.
    let mut cell = faulty(
        json!({"timers_per_event": 1, "timer_delay_ms": 1000}),
        quick_restarts(10),
        1000,
    )
    .await;
    let limits = RunLimits {
        max_events: None,
        max_event_time: Some(Duration::from_secs(60)),
    };
    let report = run(&mut cell, &mut sim(), limits).await;
    assert_eq!(report.stop, StopReason::TimeLimit);
    let first = report.first_event_ms.expect("events");
    let last = report.last_event_ms.expect("events");
    assert!(last - first <= 60_000, "{first} .. {last}");
    let journal = journal(&cell).await;
    assert!(
        journal
            .iter()
            .any(|e| matches!(e.event.kind, EventKind::Timer(_)))
    );
    assert!(
        journal
            .iter()
            .all(|e| e.event.timestamp_ms - first <= 60_000)
    );
}

/// The simulated venue, ending its feed after a number of ticks.
struct EndingFeed {
    inner: SimVenue,
    ticks_left: u64,
    events: u64,
}

impl Venue for EndingFeed {
    fn name(&self) -> &str {
        "ending-feed"
    }

    async fn next_tick(&mut self) -> Result<Option<MarketTick>, VenueError> {
        if self.ticks_left == 0 {
            return Ok(None);
        }
        self.ticks_left -= 1;
        let tick = self.inner.next_tick().await?;
        self.events += tick.as_ref().map_or(0, |t| t.events.len() as u64);
        Ok(tick)
    }

    async fn place_order(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
    ) -> Result<Vec<EventKind>, VenueError> {
        self.inner.place_order(intent_id, order).await
    }

    async fn cancel_order(&mut self, intent_id: &str) -> Result<Vec<EventKind>, VenueError> {
        self.inner.cancel_order(intent_id).await
    }

    async fn open_orders(&mut self) -> Result<Vec<OrderUpdate>, VenueError> {
        self.inner.open_orders().await
    }

    async fn lookup_order(&mut self, intent_id: &str) -> Result<Option<OrderUpdate>, VenueError> {
        self.inner.lookup_order(intent_id).await
    }

    fn portfolio(&self) -> PortfolioSummary {
        self.inner.portfolio()
    }
}

#[tokio::test]
async fn the_run_ends_with_the_feed_and_every_event_is_journaled() {
    let mut cell = faulty(json!({}), quick_restarts(10), 1000).await;
    let mut venue = EndingFeed {
        inner: sim(),
        ticks_left: 200,
        events: 0,
    };
    let report = run(&mut cell, &mut venue, RunLimits::default()).await;
    assert_eq!(report.stop, StopReason::FeedEnded);
    assert!(venue.events >= 200);
    assert_eq!(report.last_seq, venue.events);
    assert_eq!(report.state, CellState::Stopped);
}

#[tokio::test]
async fn timers_fire_once_at_their_due_time_across_restarts() {
    // Each event sets a timer due a second later; each instance traps on its
    // 7th call, so the strategy restarts many times while timers are pending.
    let mut cell = faulty(
        json!({"fault": "panic", "after_calls": 7, "timers_per_event": 1, "timer_delay_ms": 1000}),
        quick_restarts(1000),
        1,
    )
    .await;
    let report = run(&mut cell, &mut sim(), events(400)).await;
    assert_eq!(report.stop, StopReason::EventLimit);
    assert!(report.cell.restarts >= 20, "{:?}", report.cell);
    let journal = journal(&cell).await;
    let last_time = journal.last().unwrap().event.timestamp_ms;
    let mut set = std::collections::BTreeSet::new();
    let mut fired = std::collections::BTreeSet::new();
    for entry in &journal {
        if let EventKind::Timer(id) = entry.event.kind {
            assert!(
                fired.insert((entry.event.timestamp_ms, id)),
                "timer {id} fired twice"
            );
        }
        if let Outcome::Handled(actions) = &entry.outcome {
            for action in actions {
                if let Action::SetTimer(timer) = action {
                    set.insert((timer.at_ms, timer.id));
                }
            }
        }
    }
    // Every timer that fired was set, at that time; every one due well before
    // the end fired.
    assert!(fired.is_subset(&set));
    let due: Vec<_> = set
        .iter()
        .filter(|(at, _)| *at + 1000 <= last_time)
        .copied()
        .collect();
    assert!(due.len() > 100);
    assert!(
        due.iter().all(|t| fired.contains(t)),
        "a due timer never fired"
    );
}

#[tokio::test]
async fn a_divergence_no_rebuild_reproduces_ends_the_run_as_fatal() {
    // Checkpoints after events 1, 5, 9, ... (the first is due by event time);
    // the one after event 9 traps, so event 10 needs a recovery.
    let mut cell = faulty(
        json!({"fault": "panic", "snapshot_fault_at": [9], "hidden_state": true}),
        quick_restarts(10),
        4,
    )
    .await;
    let report = run(&mut cell, &mut sim(), events(100)).await;
    let events = cell.store().system_events(10_000).await.unwrap();
    assert_eq!(report.stop, StopReason::Fatal, "{report:?} {events:?}");
    assert_eq!(report.state, CellState::Fatal);
    let fatal = report.fatal.unwrap_or_default();
    assert!(fatal.contains("even from init"), "{fatal}");
    assert_eq!(report.last_seq, 9);
}

#[tokio::test]
async fn a_stop_request_during_a_crash_loop_ends_the_run_as_shutdown() {
    // Every instance traps on its first call; repeated faults back off 10 minutes.
    let restart = RestartPolicy {
        backoff_initial: Duration::from_secs(600),
        backoff_max: Duration::from_secs(600),
        ..quick_restarts(10)
    };
    let mut cell = faulty(json!({"fault": "panic", "after_calls": 1}), restart, 1).await;
    let shutdown = Shutdown::new();
    let request = shutdown.clone();
    cell.on_state_change(Arc::new(move |state| {
        if state == CellState::Backoff {
            request.request();
        }
    }));
    let mut venue = sim();
    let started = std::time::Instant::now();
    let run = runner::run(
        &mut cell,
        &mut venue,
        runner::VenueStart::Fresh,
        RunLimits::default(),
        Arc::new(RunCounters::default()),
        shutdown,
    );
    let report = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run stopped");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.stop, StopReason::Shutdown);
    assert_eq!(report.state, CellState::Stopped);
    assert_eq!(report.fatal, None);
}
