//! Executor unit tests against a scripted venue, on tokio's paused clock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::contract::{OrderStatus, OrderType, VenueHealth};
use crate::exec::{
    BreakerConfig, ExecConfig, MemoryIntentLog, RetryConfig, RiskConfig, WindowConfig,
};
use crate::venue::{Unknown, VenueTrade};

/// What the scripted venue does with the next placement.
#[derive(Debug, Clone)]
enum Step {
    Fail(fn() -> VenueError),
    /// Takes the order, then the answer is lost.
    LoseResponse,
}

fn rate_limited() -> VenueError {
    VenueError::Retryable {
        venue: "fake".into(),
        message: "POST /order: rate limited (429)".into(),
        retry_after: Some(Duration::from_millis(100)),
    }
}

fn server_error() -> VenueError {
    VenueError::unavailable("fake", "POST /order: server error 500")
}

fn too_early() -> VenueError {
    VenueError::Halted {
        venue: "fake".into(),
        halt: Halt::TooEarly,
        message: "425".into(),
    }
}

#[derive(Default)]
struct FakeState {
    script: VecDeque<Step>,
    /// The venue's records, by intent id.
    orders: HashMap<String, OrderUpdate>,
    /// Orders accepted (a duplicate is not accepted twice).
    accepted: Vec<String>,
    trades: Vec<VenueTrade>,
    cancels: Vec<String>,
    /// Lookups, open orders and trades fail (the venue's reads are down).
    reads_down: bool,
    /// Orders made known again after a restart: (intent, filled, reversed).
    adopted: Vec<(String, f64, f64)>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn script(&self, steps: impl IntoIterator<Item = Step>) {
        self.0.lock().unwrap().script.extend(steps);
    }
    fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }
}

#[async_trait::async_trait]
impl ExecutionClient for Fake {
    fn venue_name(&self) -> &str {
        "fake"
    }

    async fn place(&mut self, id: &str, order: &PlaceOrder) -> Result<Vec<EventKind>, VenueError> {
        let mut st = self.st();
        let step = st.script.pop_front();
        if let Some(Step::Fail(f)) = step {
            return Err(f());
        }
        let u = st
            .orders
            .entry(id.to_string())
            .or_insert_with(|| OrderUpdate {
                intent_id: id.into(),
                market: order.market.clone(),
                status: OrderStatus::Open,
                filled_size: 0.0,
                remaining_size: order.size,
                reason: None,
            });
        let u = u.clone();
        if !st.accepted.iter().any(|a| a == id) {
            st.accepted.push(id.to_string());
        }
        if let Some(Step::LoseResponse) = step {
            return Err(VenueError::OutcomeUnknown {
                venue: "fake".into(),
                cause: Unknown::LostResponse,
                message: "connection cut".into(),
            });
        }
        Ok(vec![EventKind::OrderUpdate(u)])
    }

    async fn cancel(&mut self, id: &str) -> Result<Vec<EventKind>, VenueError> {
        let mut st = self.st();
        st.cancels.push(id.to_string());
        let Some(u) = st.orders.get_mut(id) else {
            return Ok(vec![crate::contract::order_update(
                id,
                "",
                OrderStatus::Rejected,
                0.0,
                0.0,
                Some("unknown order".into()),
            )]);
        };
        if matches!(u.status, OrderStatus::Open | OrderStatus::PartiallyFilled) {
            u.status = OrderStatus::Cancelled;
            return Ok(vec![EventKind::OrderUpdate(u.clone())]);
        }
        let mut refused = u.clone();
        refused.status = OrderStatus::Rejected;
        refused.reason = Some("order not open".into());
        Ok(vec![EventKind::OrderUpdate(refused)])
    }

    async fn lookup(&mut self, id: &str) -> Result<Option<OrderUpdate>, VenueError> {
        if self.st().reads_down {
            return Err(server_error());
        }
        Ok(self.st().orders.get(id).cloned())
    }

    async fn open(&mut self) -> Result<Vec<OrderUpdate>, VenueError> {
        Ok(self
            .st()
            .orders
            .values()
            .filter(|u| matches!(u.status, OrderStatus::Open | OrderStatus::PartiallyFilled))
            .cloned()
            .collect())
    }

    async fn trades(&mut self, _since_ms: u64) -> Result<Vec<VenueTrade>, VenueError> {
        Ok(self.st().trades.clone())
    }

    fn prepare(&mut self, id: &str, _order: &PlaceOrder) -> Option<String> {
        Some(format!("ref-{id}"))
    }

    fn adopt(
        &mut self,
        id: &str,
        _order: &PlaceOrder,
        venue_ref: &str,
        filled: f64,
        reversed: f64,
    ) {
        assert_eq!(venue_ref, format!("ref-{id}"));
        self.st().adopted.push((id.to_string(), filled, reversed));
    }
}

type SharedLog = MemoryIntentLog;

fn cfg() -> ExecConfig {
    ExecConfig {
        retry: RetryConfig {
            initial_backoff_ms: 50,
            max_backoff_ms: 400,
            max_attempts: 30,
            max_elapsed_ms: 60_000,
        },
        breaker: BreakerConfig {
            window_size: 10,
            minimum_calls: 4,
            open_ms: 2_000,
            half_open_calls: 2,
            ..BreakerConfig::default()
        },
        windows: WindowConfig {
            too_early_probe_ms: 1_000,
            halted_probe_ms: 1_000,
            post_only_ms: 10_000,
        },
        max_wait_ms: 30_000,
        ..ExecConfig::default()
    }
}

fn gtc(size: f64) -> PlaceOrder {
    PlaceOrder {
        market: "m".into(),
        side: Side::Buy,
        price: 0.4,
        size,
        order_type: OrderType::Gtc,
    }
}

fn executor(cfg: ExecConfig, risk: RiskConfig) -> (Executor, SharedLog) {
    let log = SharedLog::default();
    (
        Executor::new("s", "fake", cfg, risk, Box::new(log.clone())),
        log,
    )
}

fn statuses(out: &ExecOutput) -> Vec<OrderStatus> {
    out.updates().map(|u| u.status).collect()
}

fn healths(out: &ExecOutput) -> Vec<VenueHealth> {
    out.events
        .iter()
        .filter_map(|e| match e {
            EventKind::VenueStatus(s) => Some(s.health),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_order_is_durable_before_it_is_sent_and_every_move_is_recorded() {
    let (mut ex, log) = executor(cfg(), RiskConfig::default());
    let mut venue = Fake::default();
    let out = ex
        .submit(&mut venue, "1.0", gtc(10.0), 5)
        .await
        .expect("submit");
    assert_eq!(statuses(&out), [OrderStatus::Open]);
    assert_eq!(
        log.path("1.0"),
        [
            IntentState::Pending,
            IntentState::Sent,
            IntentState::Acknowledged
        ]
    );
    // The same intent again sends nothing.
    let again = ex
        .submit(&mut venue, "1.0", gtc(10.0), 6)
        .await
        .expect("again");
    assert!(again.events.is_empty());
    assert_eq!(venue.st().accepted.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_429_storm_opens_the_breaker_then_probes_and_resumes() {
    let (mut ex, log) = executor(cfg(), RiskConfig::default());
    let mut venue = Fake::default();
    venue.script((0..6).map(|_| Step::Fail(rate_limited)));
    let started = Instant::now();
    let out = ex
        .submit(&mut venue, "1.0", gtc(10.0), 0)
        .await
        .expect("submit");
    assert_eq!(statuses(&out), [OrderStatus::Open], "{out:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited the open time"
    );
    // The second probe closes the half-open circuit.
    let next = ex
        .submit(&mut venue, "2.0", gtc(10.0), 1)
        .await
        .expect("submit");
    let h: Vec<_> = healths(&out).into_iter().chain(healths(&next)).collect();
    assert_eq!(h.first(), Some(&VenueHealth::CircuitOpen), "{h:?}");
    assert_eq!(h.last(), Some(&VenueHealth::Recovered), "{h:?}");
    assert_eq!(venue.st().accepted, ["1.0", "2.0"]);
    assert_eq!(
        ex.breaker_state(EndpointGroup::Orders),
        BreakerState::Closed
    );
    assert!(out.notes.iter().any(|n| n.kind == NoteKind::Breaker));
    assert_eq!(*log.path("1.0").last().unwrap(), IntentState::Acknowledged);
}

#[tokio::test(start_paused = true)]
async fn retries_exhausted_is_a_rejected_update_with_the_reason() {
    let mut c = cfg();
    c.retry.max_attempts = 3;
    c.breaker.minimum_calls = 10;
    let (mut ex, log) = executor(c, RiskConfig::default());
    let mut venue = Fake::default();
    venue.script((0..5).map(|_| Step::Fail(server_error)));
    let out = ex
        .submit(&mut venue, "1.0", gtc(10.0), 0)
        .await
        .expect("submit");
    let u: Vec<_> = out.updates().collect();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].status, OrderStatus::Rejected);
    let reason = u[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("retries exhausted after 3 attempts") && reason.contains("500"),
        "{reason}"
    );
    assert_eq!(*log.path("1.0").last().unwrap(), IntentState::Rejected);
    assert!(out.notes.iter().any(|n| n.kind == NoteKind::GaveUp));
    assert!(venue.st().accepted.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_lost_response_is_looked_up_not_sent_again() {
    let (mut ex, log) = executor(cfg(), RiskConfig::default());
    let mut venue = Fake::default();
    venue.script([Step::LoseResponse]);
    let out = ex
        .submit(&mut venue, "1.0", gtc(10.0), 0)
        .await
        .expect("submit");
    assert_eq!(statuses(&out), [OrderStatus::Open]);
    assert_eq!(
        log.path("1.0"),
        [
            IntentState::Pending,
            IntentState::Sent,
            IntentState::Unknown,
            IntentState::Acknowledged
        ]
    );
    assert_eq!(venue.st().accepted, ["1.0"]);
}

#[tokio::test(start_paused = true)]
async fn a_425_window_pauses_placement_then_post_only_refuses_takers() {
    let (mut ex, _log) = executor(cfg(), RiskConfig::default());
    let mut venue = Fake::default();
    venue.script((0..3).map(|_| Step::Fail(too_early)));
    let out = ex
        .submit(&mut venue, "1.0", gtc(10.0), 0)
        .await
        .expect("submit");
    assert_eq!(
        healths(&out),
        [VenueHealth::Degraded, VenueHealth::Recovered]
    );
    assert_eq!(statuses(&out), [OrderStatus::Open]);
    // The halt is not a failure of the orders circuit.
    assert_eq!(
        ex.breaker_state(EndpointGroup::Orders),
        BreakerState::Closed
    );
    let mut fak = gtc(5.0);
    fak.order_type = OrderType::Fak;
    let out = ex
        .submit(&mut venue, "2.0", fak.clone(), 1)
        .await
        .expect("fak");
    let u: Vec<_> = out.updates().collect();
    assert_eq!(u[0].status, OrderStatus::Rejected);
    assert!(
        u[0].reason
            .as_deref()
            .unwrap_or_default()
            .contains("only resting orders")
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    let out = ex
        .submit(&mut venue, "3.0", fak, 2)
        .await
        .expect("after post-only");
    assert_eq!(statuses(&out), [OrderStatus::Open]);
}

#[tokio::test(start_paused = true)]
async fn cancels_settle_by_the_orders_true_state() {
    let (mut ex, log) = executor(cfg(), RiskConfig::default());
    let mut venue = Fake::default();
    ex.submit(&mut venue, "1.0", gtc(10.0), 0)
        .await
        .expect("submit");
    ex.submit(&mut venue, "2.0", gtc(10.0), 0)
        .await
        .expect("submit");
    // 2.0 filled at the venue; the executor has not heard.
    if let Some(u) = venue.st().orders.get_mut("2.0") {
        u.status = OrderStatus::Filled;
        u.filled_size = 10.0;
        u.remaining_size = 0.0;
    }
    let out = ex.cancel(&mut venue, "1.0", 1).await.expect("cancel");
    assert_eq!(statuses(&out), [OrderStatus::Cancelled]);
    let out = ex
        .cancel(&mut venue, "2.0", 1)
        .await
        .expect("cancel of a filled order");
    assert_eq!(
        statuses(&out),
        [OrderStatus::Filled],
        "the true state, not an error"
    );
    assert!(
        out.notes.iter().all(|n| n.kind != NoteKind::GaveUp),
        "{:?}",
        out.notes
    );
    assert_eq!(*log.path("2.0").last().unwrap(), IntentState::Filled);
    // Once terminal, a cancel is a no-op.
    let out = ex.cancel(&mut venue, "2.0", 2).await.expect("again");
    assert!(out.events.is_empty());
    assert_eq!(venue.st().cancels, ["1.0", "2.0"]);
}

#[tokio::test(start_paused = true)]
async fn risk_limits_refuse_before_anything_is_sent() {
    let risk = RiskConfig {
        max_order_size: Some(5.0),
        max_open_orders: Some(1),
        ..RiskConfig::default()
    };
    let (mut ex, log) = executor(cfg(), risk);
    let mut venue = Fake::default();
    let out = ex
        .submit(&mut venue, "1.0", gtc(6.0), 0)
        .await
        .expect("submit");
    let u: Vec<_> = out.updates().collect();
    assert_eq!(u[0].status, OrderStatus::Rejected);
    assert!(
        u[0].reason
            .as_deref()
            .unwrap_or_default()
            .contains("max_order_size")
    );
    assert_eq!(out.notes[0].kind, NoteKind::Risk);
    assert_eq!(
        log.path("1.0"),
        [IntentState::Pending, IntentState::Rejected]
    );
    ex.submit(&mut venue, "2.0", gtc(5.0), 0).await.expect("ok");
    let out = ex
        .submit(&mut venue, "3.0", gtc(5.0), 0)
        .await
        .expect("too many");
    assert!(
        out.updates()
            .next()
            .unwrap()
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("max_open_orders")
    );
    assert_eq!(venue.st().accepted, ["2.0"]);
}

#[tokio::test(start_paused = true)]
async fn reconciliation_settles_intents_journals_missed_fills_once_and_reports_strangers() {
    let log = SharedLog::default();
    let mut venue = Fake::default();
    {
        // A previous run: 1.0 was acknowledged, 2.0 sent with no answer, 3.0 never left.
        let mut first = Executor::new(
            "s",
            "fake",
            cfg(),
            RiskConfig::default(),
            Box::new(log.clone()),
        );
        first
            .submit(&mut venue, "1.0", gtc(10.0), 0)
            .await
            .expect("1.0");
        venue.script([Step::LoseResponse, Step::Fail(server_error)]);
        let mut c = cfg();
        c.retry.max_attempts = 1;
        let mut second =
            Executor::new("s", "fake", c, RiskConfig::default(), Box::new(log.clone()));
        second
            .submit(&mut venue, "2.0", gtc(4.0), 0)
            .await
            .expect("2.0");
        let (_, r) = Intent::new("s", "3.0", gtc(1.0), 0);
        log.clone().append(&r).await.expect("3.0");
    }
    {
        let mut st = venue.st();
        let u = st.orders.get_mut("1.0").unwrap();
        u.status = OrderStatus::PartiallyFilled;
        u.filled_size = 6.0;
        u.remaining_size = 4.0;
        st.trades.push(VenueTrade {
            id: "t1".into(),
            intent_id: "1.0".into(),
            market: "m".into(),
            side: Side::Buy,
            price: 0.39,
            size: 6.0,
            status: Some("MATCHED".into()),
            time_ms: Some(1_000),
        });
        st.orders.insert(
            "stranger".into(),
            OrderUpdate {
                intent_id: "stranger".into(),
                market: "m".into(),
                status: OrderStatus::Open,
                filled_size: 0.0,
                remaining_size: 3.0,
                reason: None,
            },
        );
    }
    let mut c = cfg();
    c.cancel_unknown_orders = true;
    let mut ex = Executor::new("s", "fake", c, RiskConfig::default(), Box::new(log.clone()));
    assert_eq!(ex.load().await.expect("load"), 3);
    let out = ex.reconcile(&mut venue, 0, 2_000).await.expect("reconcile");
    let fills: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match e {
            EventKind::Fill(f) => Some((f.intent_id.clone(), f.size, f.price)),
            _ => None,
        })
        .collect();
    assert_eq!(fills, [("1.0".to_string(), 6.0, 0.39)]);
    assert_eq!(
        ex.intent("1.0").unwrap().state,
        IntentState::PartiallyFilled
    );
    assert_eq!(
        ex.intent("2.0").unwrap().state,
        IntentState::Acknowledged,
        "the lost order is there"
    );
    assert_eq!(
        ex.intent("3.0").unwrap().state,
        IntentState::Rejected,
        "never sent"
    );
    assert!(
        out.notes
            .iter()
            .any(|n| n.kind == NoteKind::UnknownOrder && n.detail.contains("stranger"))
    );
    assert_eq!(venue.st().orders["stranger"].status, OrderStatus::Cancelled);
    assert_eq!(
        healths(&out),
        [VenueHealth::Recovered],
        "the hold of a restart lifts"
    );
    // Again: the trade is not journaled twice.
    let out = ex.reconcile(&mut venue, 0, 3_000).await.expect("again");
    assert!(
        !out.events.iter().any(|e| matches!(e, EventKind::Fill(_))),
        "{out:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn heartbeat_loss_holds_placement_until_reconciled() {
    let (mut ex, _log) = executor(cfg(), RiskConfig::default());
    let mut venue = Fake::default();
    ex.submit(&mut venue, "1.0", gtc(10.0), 0)
        .await
        .expect("submit");
    // The venue's dead-man switch cancelled it.
    venue.st().orders.get_mut("1.0").unwrap().status = OrderStatus::Cancelled;
    let out = ex.heartbeat_lost(1).await.expect("lost");
    assert_eq!(healths(&out), [VenueHealth::Degraded]);
    assert_eq!(ex.intent("1.0").unwrap().state, IntentState::Unknown);
    // Refused at once, with the reason, and nothing sent: a wait would
    // block the loop that hears of the heartbeat's return.
    let out = ex
        .submit(&mut venue, "1.5", gtc(1.0), 2)
        .await
        .expect("refused");
    assert_eq!(statuses(&out), [OrderStatus::Rejected]);
    assert!(
        out.updates()
            .any(|u| u.reason.as_deref().is_some_and(|r| r.contains("heartbeat"))),
        "{out:?}"
    );
    assert!(!venue.st().accepted.iter().any(|a| a == "1.5"));
    let out = ex.reconcile(&mut venue, 0, 2).await.expect("reconcile");
    assert_eq!(
        statuses(&out),
        [OrderStatus::Cancelled],
        "the strategy sees the cancel"
    );
    let out = ex
        .submit(&mut venue, "2.0", gtc(1.0), 3)
        .await
        .expect("placement resumes");
    assert_eq!(statuses(&out), [OrderStatus::Open]);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_rejects_with_the_reason_when_the_wait_is_too_long() {
    let mut c = cfg();
    c.breaker.open_ms = 60_000;
    c.max_wait_ms = 5_000;
    let (mut ex, _log) = executor(c, RiskConfig::default());
    let mut venue = Fake::default();
    venue.script((0..4).map(|_| Step::Fail(rate_limited)));
    let out = ex
        .submit(&mut venue, "1.0", gtc(1.0), 0)
        .await
        .expect("submit");
    let u: Vec<_> = out.updates().collect();
    assert_eq!(u[0].status, OrderStatus::Rejected);
    assert!(
        u[0].reason
            .as_deref()
            .unwrap_or_default()
            .contains("orders circuit open"),
        "{u:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_venue_window_during_half_open_does_not_wedge_the_breaker() {
    let (mut ex, _log) = executor(cfg(), RiskConfig::default());
    let mut venue = Fake::default();
    // Open the circuit, then the probes meet a 425 window, then all is well.
    venue.script((0..4).map(|_| Step::Fail(rate_limited)));
    venue.script((0..3).map(|_| Step::Fail(too_early)));
    let out = ex
        .submit(&mut venue, "1.0", gtc(1.0), 0)
        .await
        .expect("submit");
    assert_eq!(statuses(&out), [OrderStatus::Open], "{out:?}");
    ex.submit(&mut venue, "2.0", gtc(1.0), 1)
        .await
        .expect("submit");
    assert_eq!(
        ex.breaker_state(EndpointGroup::Orders),
        BreakerState::Closed
    );
}

#[tokio::test]
async fn the_simulated_venue_is_driven_through_the_object_safe_halves() {
    use crate::venue::MarketFeed;
    use crate::venue::paper::PaperConfig;
    use crate::venue::sim::SimConfig;
    use crate::venue::simulated::{Pacing, SimVenue};

    let mut venue: Box<SimVenue> = Box::new(SimVenue::new(
        SimConfig::default(),
        PaperConfig::default(),
        Pacing::Unpaced,
    ));
    // Market data through `dyn MarketFeed` until sim-0 has a book.
    let ask = loop {
        let feed: &mut dyn MarketFeed = venue.as_mut();
        let tick = feed.next().await.expect("tick").expect("feed");
        if let Some(a) = tick.events.iter().find_map(|e| match e {
            EventKind::Book(b) if b.market == "sim-0" => b.best_ask(),
            _ => None,
        }) {
            break a;
        }
    };
    let (mut ex, log) = executor(cfg(), RiskConfig::default());
    let client: &mut dyn ExecutionClient = venue.as_mut();
    let taker = PlaceOrder {
        market: "sim-0".into(),
        side: Side::Buy,
        price: ask,
        size: 1.0,
        order_type: OrderType::Fak,
    };
    let out = ex.submit(client, "1.0", taker, 1).await.expect("submit");
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, EventKind::Fill(f) if f.size == 1.0)),
        "{out:?}"
    );
    assert_eq!(statuses(&out), [OrderStatus::Filled]);
    assert_eq!(
        log.path("1.0"),
        [IntentState::Pending, IntentState::Sent, IntentState::Filled]
    );
}

fn trade(id: &str, intent: &str, size: f64, status: &str) -> VenueTrade {
    VenueTrade {
        id: id.into(),
        intent_id: intent.into(),
        market: "m".into(),
        side: Side::Buy,
        price: 0.4,
        size,
        status: Some(status.into()),
        time_ms: Some(1_000),
    }
}

fn fill_sizes(out: &ExecOutput) -> Vec<f64> {
    out.events
        .iter()
        .filter_map(|e| match e {
            EventKind::Fill(f) => Some(f.size),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn reconciliation_counts_no_failed_trade_and_refills_no_reversal() {
    let (mut ex, _log) = executor(cfg(), RiskConfig::default());
    let mut venue = Fake::default();
    ex.submit(&mut venue, "1.0", gtc(10.0), 0)
        .await
        .expect("1.0");
    ex.submit(&mut venue, "2.0", gtc(10.0), 0)
        .await
        .expect("2.0");
    {
        let mut st = venue.st();
        for id in ["1.0", "2.0"] {
            let u = st.orders.get_mut(id).unwrap();
            u.status = OrderStatus::Filled;
            u.filled_size = 10.0;
            u.remaining_size = 0.0;
        }
        // 1.0: filled while the host looked away, half of it failed to settle.
        st.trades.push(trade("a1", "1.0", 5.0, "CONFIRMED"));
        st.trades.push(trade("a2", "1.0", 5.0, "failed"));
        st.trades.push(trade("b1", "2.0", 5.0, "CONFIRMED"));
        st.trades.push(trade("b2", "2.0", 5.0, "FAILED"));
    }
    // 2.0: the strategy was told the fill, then the reversal and why.
    let mut f = Fill {
        intent_id: "2.0".into(),
        market: "m".into(),
        side: Side::Buy,
        price: 0.4,
        size: 10.0,
        fee: 0.0,
    };
    let mut filled = venue.st().orders["2.0"].clone();
    let out = ex
        .on_venue_events(
            vec![
                EventKind::Fill(f.clone()),
                EventKind::OrderUpdate(filled.clone()),
            ],
            1,
        )
        .await
        .expect("fill");
    assert_eq!(statuses(&out), [OrderStatus::Filled]);
    f.size = -5.0;
    filled.status = OrderStatus::Cancelled;
    filled.filled_size = 5.0;
    filled.reason = Some("trade failed: b2 reversed".into());
    let out = ex
        .on_venue_events(vec![EventKind::Fill(f), EventKind::OrderUpdate(filled)], 2)
        .await
        .expect("reversal");
    assert_eq!(fill_sizes(&out), [-5.0]);
    assert_eq!(
        statuses(&out),
        [OrderStatus::Cancelled],
        "the strategy is told why, though the intent stays filled"
    );
    assert_eq!(ex.intent("2.0").unwrap().state, IntentState::Filled);

    let out = ex.reconcile(&mut venue, 0, 3).await.expect("reconcile");
    let fills: Vec<_> = out
        .events
        .iter()
        .filter_map(|e| match e {
            EventKind::Fill(f) => Some((f.intent_id.clone(), f.size)),
            _ => None,
        })
        .collect();
    assert_eq!(
        fills,
        [("1.0".to_string(), 5.0)],
        "the confirmed half of 1.0 only; nothing of 2.0 again"
    );
}

/// A trade that failed after its fill was told, then a live restart: the
/// intent's record still says 10 matched (the venue counts the failed
/// trade), and the venue lists no trade of it (it matched before the
/// window reconciliation reads). The reversal the journal holds keeps
/// reconciliation from telling the 10 shares again at the order's price.
#[tokio::test(start_paused = true)]
async fn a_restart_does_not_tell_a_reversed_fill_again() {
    let (mut ex, log) = executor(cfg(), RiskConfig::default());
    let mut venue = Fake::default();
    ex.submit(&mut venue, "1.0", gtc(10.0), 0)
        .await
        .expect("1.0");
    let mut filled = {
        let mut st = venue.st();
        let u = st.orders.get_mut("1.0").unwrap();
        u.status = OrderStatus::Filled;
        u.filled_size = 10.0;
        u.remaining_size = 0.0;
        u.clone()
    };
    let mut f = Fill {
        intent_id: "1.0".into(),
        market: "m".into(),
        side: Side::Buy,
        price: 0.4,
        size: 10.0,
        fee: 0.0,
    };
    ex.on_venue_events(
        vec![
            EventKind::Fill(f.clone()),
            EventKind::OrderUpdate(filled.clone()),
        ],
        1,
    )
    .await
    .expect("fill");
    f.size = -10.0;
    filled.status = OrderStatus::Cancelled;
    filled.filled_size = 0.0;
    filled.reason = Some("trade failed: a1 reversed".into());
    let out = ex
        .on_venue_events(vec![EventKind::Fill(f), EventKind::OrderUpdate(filled)], 2)
        .await
        .expect("reversal");
    assert_eq!(fill_sizes(&out), [-10.0]);

    // What the restart folds from the journal: 10 told, 10 taken back.
    let mut restarted = Executor::new("s", "fake", cfg(), RiskConfig::default(), Box::new(log));
    restarted.restore_exposure(ExecSnapshot {
        told: vec![("1.0".into(), 0.0)],
        reversed: vec![("1.0".into(), 10.0)],
        positions: vec![("m".into(), 0.0)],
        ..ExecSnapshot::default()
    });
    assert_eq!(restarted.load().await.expect("load"), 0);
    assert_eq!(
        restarted
            .load_filled(Some(0), u64::MAX)
            .await
            .expect("untold")
            .0,
        0,
        "nothing of 1.0 is untold"
    );
    let out = restarted
        .reconcile(&mut venue, 0, 3)
        .await
        .expect("reconcile");
    assert!(
        fill_sizes(&out).is_empty(),
        "the reversed shares are told again: {:?}",
        out.events
    );
}

/// Finding F: an order filled before a restart whose trades were still
/// matched, not final, when the host stopped. The restart hands it to the
/// venue again (with the shares already reversed), so a trade of it that
/// fails later is still reversed for the strategy, and one reversed before
/// is not again.
#[tokio::test(start_paused = true)]
async fn a_restart_hands_filled_orders_whose_trades_may_still_fail_to_the_venue() {
    let (mut ex, log) = executor(cfg(), RiskConfig::default());
    let mut venue = Fake::default();
    for (id, at) in [("1.0", 0), ("2.0", 10)] {
        ex.submit(&mut venue, id, gtc(10.0), at).await.expect(id);
        let filled = {
            let mut st = venue.st();
            let u = st.orders.get_mut(id).unwrap();
            u.status = OrderStatus::Filled;
            u.filled_size = 10.0;
            u.remaining_size = 0.0;
            u.clone()
        };
        let f = Fill {
            intent_id: id.into(),
            market: "m".into(),
            side: Side::Buy,
            price: 0.4,
            size: 10.0,
            fee: 0.0,
        };
        ex.on_venue_events(
            vec![EventKind::Fill(f), EventKind::OrderUpdate(filled)],
            at + 1,
        )
        .await
        .expect("fill");
    }
    // 2.0 had 4 shares reversed before the restart; 1.0 is older than the
    // window the restart follows.
    let mut restarted = Executor::new("s", "fake", cfg(), RiskConfig::default(), Box::new(log));
    restarted.restore_exposure(ExecSnapshot {
        told: vec![("2.0".into(), 6.0)],
        reversed: vec![("2.0".into(), 4.0)],
        positions: vec![("m".into(), 16.0)],
        ..ExecSnapshot::default()
    });
    assert_eq!(restarted.load().await.expect("load"), 0);
    assert_eq!(restarted.load_filled(None, 5).await.expect("settling").1, 1);
    let out = restarted
        .reconcile(&mut venue, 0, 20)
        .await
        .expect("reconcile");
    assert!(fill_sizes(&out).is_empty(), "{:?}", out.events);
    assert_eq!(venue.st().adopted, [("2.0".to_string(), 10.0, 4.0)]);
}

#[tokio::test(start_paused = true)]
async fn a_fill_reported_again_after_reconciliation_told_it_is_not_told_twice() {
    let (mut ex, _log) = executor(cfg(), RiskConfig::default());
    let mut venue = Fake::default();
    ex.submit(&mut venue, "1.0", gtc(10.0), 0)
        .await
        .expect("1.0");
    // Matched 6 while the host was away; reconciliation tells it from the trade.
    {
        let mut st = venue.st();
        let u = st.orders.get_mut("1.0").unwrap();
        u.status = OrderStatus::PartiallyFilled;
        u.filled_size = 6.0;
        u.remaining_size = 4.0;
        st.trades.push(trade("t1", "1.0", 6.0, "MATCHED"));
    }
    let out = ex.reconcile(&mut venue, 0, 1).await.expect("reconcile");
    assert_eq!(fill_sizes(&out), [6.0]);
    // The venue's own poll then reports the same 6 (its mark predates the
    // restart), and later 4 more: only the 4 are new.
    let fill = |size: f64| {
        EventKind::Fill(Fill {
            intent_id: "1.0".into(),
            market: "m".into(),
            side: Side::Buy,
            price: 0.4,
            size,
            fee: 0.01 * size,
        })
    };
    let mut update = venue.st().orders["1.0"].clone();
    let out = ex
        .on_venue_events(vec![fill(6.0), EventKind::OrderUpdate(update.clone())], 2)
        .await
        .expect("repeat");
    assert!(fill_sizes(&out).is_empty(), "{:?}", out.events);
    assert!(
        out.notes
            .iter()
            .any(|n| n.kind == NoteKind::Stale && n.detail.contains("told already")),
        "the repeat is reported: {:?}",
        out.notes
    );
    update.status = OrderStatus::Filled;
    update.filled_size = 10.0;
    update.remaining_size = 0.0;
    let out = ex
        .on_venue_events(vec![fill(4.0), EventKind::OrderUpdate(update)], 3)
        .await
        .expect("rest");
    assert_eq!(fill_sizes(&out), [4.0]);
    assert_eq!(statuses(&out), [OrderStatus::Filled]);
    // A fill no update explains is told up to the order's size, no further.
    let out = ex
        .on_venue_events(vec![fill(3.0)], 4)
        .await
        .expect("beyond");
    assert!(fill_sizes(&out).is_empty(), "{:?}", out.events);
}

/// A restart whose reconciliation could not complete (the venue's reads are
/// down) holds placement: each new order first tries to settle again and is
/// refused while that fails, without waiting; once the venue answers, the
/// earlier run's order is settled and the new one goes.
#[tokio::test(start_paused = true)]
async fn an_incomplete_restart_reconciliation_is_retried_by_the_next_order() {
    let (mut ex, log) = executor(cfg(), RiskConfig::default());
    let mut venue = Fake::default();
    ex.submit(&mut venue, "1.0", gtc(10.0), 0)
        .await
        .expect("submit");
    venue.st().reads_down = true;
    let mut ex = Executor::new(
        "s",
        "fake",
        cfg(),
        RiskConfig::default(),
        Box::new(log.clone()),
    );
    assert_eq!(ex.load().await.expect("load"), 1);
    let out = ex.reconcile(&mut venue, 0, 1_000).await.expect("reconcile");
    assert!(
        !healths(&out).contains(&VenueHealth::Recovered),
        "incomplete: the hold stays"
    );
    let out = ex
        .submit(&mut venue, "2.0", gtc(1.0), 2_000)
        .await
        .expect("refused");
    assert_eq!(statuses(&out), [OrderStatus::Rejected]);
    assert!(
        out.updates().any(|u| u
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("reconciliation incomplete"))),
        "{out:?}"
    );
    assert!(!venue.st().accepted.iter().any(|a| a == "2.0"));
    venue.st().reads_down = false;
    tokio::time::advance(Duration::from_secs(1)).await;
    let out = ex
        .submit(&mut venue, "3.0", gtc(1.0), 3_000)
        .await
        .expect("placed");
    assert!(healths(&out).contains(&VenueHealth::Recovered), "{out:?}");
    assert_eq!(ex.intent("1.0").unwrap().state, IntentState::Acknowledged);
    assert_eq!(statuses(&out).last(), Some(&OrderStatus::Open));
}
