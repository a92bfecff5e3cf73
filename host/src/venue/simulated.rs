//! The offline venue: the simulated market with paper execution, optionally
//! paced against the wall clock.
//!
//! [`SimVenue`] owns the glue: it steps a [`SimMarket`], shows each book to a
//! [`PaperExchange`] so resting orders fill, and decides how fast event time
//! runs relative to real time ([`Pacing`]). Market behaviour lives in
//! [`super::sim`], execution and accounting in [`super::paper`]; retries,
//! circuit breaking and journaling belong to the layers around a venue.
//!
//! While the runner catches it up with a journal it runs unpaced whatever its
//! pacing ([`Venue::set_catching_up`]); pacing starts again with the first
//! live tick. Its state (market and paper account) saves to bytes and
//! restores into a venue of the same configuration ([`Venue::save_state`]).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::paper::{PaperConfig, PaperExchange};
use super::sim::SimMarketState;
use super::sim::{SimConfig, SimMarket};
use super::{MarketTick, PortfolioSummary, Venue, VenueError, VenueStateError, VenueTrade};
use crate::contract::{EventKind, OrderUpdate, PlaceOrder};

/// How event time relates to wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Event time runs this many times faster than real time (must be > 0).
    Realtime(f64),
    /// Ticks are produced as fast as they are asked for.
    Unpaced,
}

/// Simulated market plus paper execution; see the module docs.
#[derive(Debug)]
pub struct SimVenue {
    market: SimMarket,
    paper: PaperExchange,
    /// Speed multiplier, or `None` when unpaced.
    speed: Option<f64>,
    /// Catching up with a journal: unpaced until the first live tick.
    catching_up: bool,
    /// Wall-clock instant and event time of the first tick: pacing is measured
    /// from there so waits do not accumulate drift tick by tick.
    origin: Option<(Instant, u64)>,
    /// A stepped tick not yet delivered. `next_tick` may be dropped while it
    /// waits (e.g. in a `select!`); keeping the tick here makes that safe: the
    /// next call waits for the same tick instead of skipping it.
    pending: Option<(u64, Vec<EventKind>)>,
    /// The newest paper fills as venue trades (what `trades_since` answers),
    /// at most [`TRADES_KEPT`]; not part of a saved state.
    trades: VecDeque<VenueTrade>,
    /// Event time of the newest tick, the time of the trades it causes.
    now_ms: u64,
    /// Fills made so far, for unique trade ids.
    fills_made: u64,
}

/// Paper fills kept for `trades_since`.
const TRADES_KEPT: usize = 4096;

impl SimVenue {
    pub fn new(sim: SimConfig, paper: PaperConfig, speed: Pacing) -> Self {
        Self {
            market: SimMarket::new(sim),
            paper: PaperExchange::new(paper),
            speed: Self::speed_of(speed),
            catching_up: false,
            origin: None,
            pending: None,
            trades: VecDeque::new(),
            now_ms: 0,
            fills_made: 0,
        }
    }

    /// Changes the pacing from the next tick on; the market itself is
    /// untouched, so the events are the same whatever the pacing.
    pub fn set_pacing(&mut self, pacing: Pacing) {
        self.speed = Self::speed_of(pacing);
        self.origin = None;
    }

    fn speed_of(pacing: Pacing) -> Option<f64> {
        match pacing {
            Pacing::Realtime(x) if x.is_finite() && x > 0.0 => Some(x),
            Pacing::Realtime(x) => {
                // Not worth failing a run over: an unusable speed means "as fast as possible".
                tracing::warn!(
                    speed = x,
                    "realtime speed must be positive and finite; running unpaced"
                );
                None
            }
            Pacing::Unpaced => None,
        }
    }

    /// The simulated market, for inspection.
    pub fn market(&self) -> &SimMarket {
        &self.market
    }

    /// The paper exchange, for inspection.
    pub fn paper(&self) -> &PaperExchange {
        &self.paper
    }

    /// When the tick at event time `ts` is due on the wall clock, or `None` if
    /// it is due now (unpaced, or the first tick, which starts the clock).
    fn deadline(&mut self, ts: u64) -> Option<Instant> {
        if self.catching_up {
            return None;
        }
        let speed = self.speed?;
        let Some((start, first_ts)) = self.origin else {
            self.origin = Some((Instant::now(), ts));
            return None;
        };
        let elapsed_event_ms = ts.saturating_sub(first_ts) as f64;
        Some(start + Duration::from_secs_f64(elapsed_event_ms / 1000.0 / speed))
    }
}

impl SimVenue {
    /// Keeps the fills among `events` as venue trades.
    fn keep_trades(&mut self, events: &[EventKind]) {
        for e in events {
            if let EventKind::Fill(f) = e {
                self.fills_made += 1;
                self.trades.push_back(VenueTrade {
                    id: format!("paper-{}", self.fills_made),
                    intent_id: f.intent_id.clone(),
                    market: f.market.clone(),
                    side: f.side,
                    price: f.price,
                    size: f.size,
                    status: None,
                    time_ms: Some(self.now_ms),
                });
                if self.trades.len() > TRADES_KEPT {
                    self.trades.pop_front();
                }
            }
        }
    }
}

impl Venue for SimVenue {
    fn name(&self) -> &str {
        "sim"
    }

    async fn next_tick(&mut self) -> Result<Option<MarketTick>, VenueError> {
        let timestamp_ms = match &self.pending {
            Some((ts, _)) => *ts,
            None => {
                let (ts, events) = self.market.step();
                self.pending = Some((ts, events));
                ts
            }
        };
        if let Some(deadline) = self.deadline(timestamp_ms) {
            tokio::time::sleep_until(deadline).await;
        }
        // Taken only after the wait, so a cancelled wait leaves the tick pending.
        let market_events = self.pending.take().map(|(_, e)| e).unwrap_or_default();
        self.now_ms = timestamp_ms;
        let mut events = Vec::with_capacity(market_events.len());
        for event in market_events {
            // Fills a book causes happen right after that book, before anything else.
            let fills = match &event {
                EventKind::Book(book) => self.paper.on_book(book),
                _ => Vec::new(),
            };
            events.push(event);
            self.keep_trades(&fills);
            events.extend(fills);
        }
        Ok(Some(MarketTick {
            timestamp_ms,
            events,
        }))
    }

    async fn place_order(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
    ) -> Result<Vec<EventKind>, VenueError> {
        let events = self.paper.place(intent_id, order);
        self.keep_trades(&events);
        Ok(events)
    }

    /// The paper fills at or after `since_ms` still kept, oldest first.
    async fn trades_since(&mut self, since_ms: u64) -> Result<Vec<VenueTrade>, VenueError> {
        Ok(self
            .trades
            .iter()
            .filter(|t| t.time_ms.is_some_and(|ms| ms >= since_ms))
            .cloned()
            .collect())
    }

    async fn cancel_order(&mut self, intent_id: &str) -> Result<Vec<EventKind>, VenueError> {
        Ok(self.paper.cancel(intent_id))
    }

    async fn open_orders(&mut self) -> Result<Vec<OrderUpdate>, VenueError> {
        Ok(self.paper.open_order_updates())
    }

    async fn lookup_order(&mut self, intent_id: &str) -> Result<Option<OrderUpdate>, VenueError> {
        Ok(self.paper.order(intent_id))
    }

    fn portfolio(&self) -> PortfolioSummary {
        self.paper.summary()
    }

    fn replays_history(&self) -> bool {
        // Same seed, same market: the journal's history can be replayed exactly.
        true
    }

    fn set_catching_up(&mut self, catching_up: bool) {
        if self.catching_up && !catching_up {
            // The first live tick starts the clock again.
            self.origin = None;
        }
        self.catching_up = catching_up;
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        let saved = SavedSimVenue {
            market: self.market.state(),
            paper: self.paper.clone(),
            pending: self.pending.clone(),
        };
        postcard::to_allocvec(&saved)
            .inspect_err(|e| tracing::warn!("cannot encode the simulated venue's state: {e}"))
            .ok()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), VenueStateError> {
        let saved: SavedSimVenue = postcard::from_bytes(state)
            .map_err(|e| VenueStateError(format!("does not decode: {e}")))?;
        self.market.restore(saved.market).map_err(VenueStateError)?;
        self.paper = saved.paper;
        self.pending = saved.pending;
        self.origin = None;
        Ok(())
    }
}

/// What [`SimVenue::save_state`] encodes.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedSimVenue {
    market: SimMarketState,
    paper: PaperExchange,
    /// A tick stepped but not delivered (a wait for it was dropped).
    pending: Option<(u64, Vec<EventKind>)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{OrderStatus, OrderType, Side};

    fn venue(pacing: Pacing) -> SimVenue {
        SimVenue::new(SimConfig::default(), PaperConfig::default(), pacing)
    }

    #[tokio::test]
    async fn unpaced_ticks_follow_the_simulated_market() {
        let mut v = venue(Pacing::Unpaced);
        let mut reference = SimMarket::new(SimConfig::default());
        assert_eq!(v.name(), "sim");
        for _ in 0..1_000 {
            let tick = v
                .next_tick()
                .await
                .unwrap()
                .expect("the simulation never ends");
            let (ts, events) = reference.step();
            assert_eq!(tick.timestamp_ms, ts);
            assert_eq!(tick.events, events, "no orders, so no fills are added");
        }
    }

    #[tokio::test]
    async fn orders_go_to_paper_and_fills_follow_their_book() {
        let mut v = venue(Pacing::Unpaced);
        let market = v.market().markets()[0].clone();
        let mut order = PlaceOrder {
            market: market.clone(),
            side: Side::Buy,
            price: 0.01,
            size: 10.0,
            order_type: OrderType::Gtc,
        };
        // No book has been shown to the paper exchange yet.
        let ev = v.place_order("early", &order).await.unwrap();
        assert!(matches!(&ev[0], EventKind::OrderUpdate(u) if u.status == OrderStatus::Rejected));

        // The first tick updates the first market.
        let tick = v.next_tick().await.unwrap().unwrap();
        assert!(matches!(&tick.events[0], EventKind::Book(b) if b.market == market));

        let ev = v.place_order("rest", &order).await.unwrap();
        assert!(matches!(&ev[0], EventKind::OrderUpdate(u) if u.status == OrderStatus::Open));
        let ev = v.cancel_order("rest").await.unwrap();
        assert!(matches!(&ev[0], EventKind::OrderUpdate(u) if u.status == OrderStatus::Cancelled));

        // Buy more than the touch offers at the touch price: the touch fills now,
        // the rest rests and fills on a later book of the market.
        let touch = v.market().book(&market).unwrap().asks[0];
        order.price = touch.price;
        order.size = touch.size + 5.0;
        let ev = v.place_order("cross", &order).await.unwrap();
        let Some(EventKind::OrderUpdate(u)) = ev.last() else {
            panic!("expected an order update last, got {ev:?}");
        };
        assert_eq!(u.status, OrderStatus::PartiallyFilled);
        assert_eq!((u.filled_size, u.remaining_size), (touch.size, 5.0));

        let mut found = None;
        for _ in 0..10_000 {
            let tick = v.next_tick().await.unwrap().unwrap();
            let at = tick
                .events
                .iter()
                .position(|e| matches!(e, EventKind::Fill(f) if f.intent_id == "cross"));
            if let Some(at) = at {
                found = Some((at, tick.events));
                break;
            }
        }
        let (at, events) = found.expect("the walk comes back to the resting buy");
        assert!(
            matches!(&events[at - 1], EventKind::Book(b) if b.market == market),
            "a fill must directly follow the book that caused it: {events:?}"
        );
        assert!(
            matches!(&events[at + 1], EventKind::OrderUpdate(u) if u.status == OrderStatus::Filled)
        );
        let p = v.portfolio();
        assert_eq!(p.fills, 2);
        assert_eq!(p.volume, touch.size + 5.0);
        assert_eq!(v.paper().position(&market), touch.size + 5.0);
    }

    #[tokio::test]
    async fn open_orders_and_lookups_come_from_paper() {
        let mut v = venue(Pacing::Unpaced);
        let market = v.market().markets()[0].clone();
        let mut order = PlaceOrder {
            market: market.clone(),
            side: Side::Buy,
            price: 0.01,
            size: 10.0,
            order_type: OrderType::Gtc,
        };
        // Rejected before any book: looked up as rejected, never open.
        v.place_order("early", &order).await.unwrap();
        let u = v.lookup_order("early").await.unwrap().expect("known");
        assert_eq!(u.status, OrderStatus::Rejected);
        assert!(v.open_orders().await.unwrap().is_empty());

        v.next_tick().await.unwrap().unwrap();
        v.place_order("rest", &order).await.unwrap();
        let touch = v.market().book(&market).unwrap().asks[0];
        order.price = touch.price;
        order.size = touch.size + 5.0;
        v.place_order("cross", &order).await.unwrap();
        let open = v.open_orders().await.unwrap();
        let states: Vec<_> = open
            .iter()
            .map(|u| (u.intent_id.as_str(), u.status, u.remaining_size))
            .collect();
        assert_eq!(
            states,
            vec![
                ("rest", OrderStatus::Open, 10.0),
                ("cross", OrderStatus::PartiallyFilled, 5.0)
            ]
        );
        assert_eq!(
            v.lookup_order("cross").await.unwrap().as_ref(),
            Some(&open[1])
        );

        // Once the resting rest of "cross" fills, only "rest" is open.
        for _ in 0..10_000 {
            v.next_tick().await.unwrap().unwrap();
            if v.paper().open_orders() < 2 {
                break;
            }
        }
        let open = v.open_orders().await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].intent_id, "rest");
        let u = v.lookup_order("cross").await.unwrap().expect("known");
        assert_eq!(u.status, OrderStatus::Filled);
        assert_eq!((u.filled_size, u.remaining_size), (touch.size + 5.0, 0.0));
        assert_eq!(v.lookup_order("never").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_restored_venue_continues_exactly() {
        let mut original = venue(Pacing::Unpaced);
        let market = original.market().markets()[0].clone();
        original.next_tick().await.unwrap().unwrap();
        let touch = original.market().book(&market).unwrap().asks[0];
        let order = PlaceOrder {
            market: market.clone(),
            side: Side::Buy,
            price: touch.price,
            size: touch.size + 5.0,
            order_type: OrderType::Gtc,
        };
        original.place_order("cross", &order).await.unwrap();
        for _ in 0..11 {
            original.next_tick().await.unwrap().unwrap();
        }
        let saved = original.save_state().expect("a simulated venue saves");

        let mut restored = venue(Pacing::Unpaced);
        restored.restore_state(&saved).unwrap();
        assert_eq!(restored.paper(), original.paper());
        for _ in 0..2_000 {
            assert_eq!(
                restored.next_tick().await.unwrap(),
                original.next_tick().await.unwrap()
            );
        }
        assert_eq!(restored.portfolio(), original.portfolio());

        // Another seed's venue refuses it and is left as it was.
        let mut other = SimVenue::new(
            SimConfig {
                seed: 1,
                ..SimConfig::default()
            },
            PaperConfig::default(),
            Pacing::Unpaced,
        );
        let err = other.restore_state(&saved).unwrap_err().to_string();
        assert!(err.contains("another simulated market"), "{err}");
        assert!(other.restore_state(b"garbage").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn catching_up_runs_unpaced_then_pacing_resumes() {
        let mut v = venue(Pacing::Realtime(1.0));
        v.set_catching_up(true);
        let start = tokio::time::Instant::now();
        for _ in 0..100 {
            v.next_tick().await.unwrap().unwrap();
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "no waits while catching up"
        );
        v.set_catching_up(false);
        let live = tokio::time::Instant::now();
        for _ in 0..3 {
            v.next_tick().await.unwrap().unwrap();
        }
        // The first live tick starts the clock; two more 200 ms ticks follow.
        let ms = live.elapsed().as_millis();
        assert!((400..500).contains(&ms), "{ms} ms");
    }

    #[test]
    fn realtime_deadlines_scale_event_time() {
        let mut v = venue(Pacing::Realtime(2.0));
        let mut deadlines = Vec::new();
        for _ in 0..10 {
            let (ts, _) = v.market.step();
            deadlines.push(v.deadline(ts));
        }
        assert_eq!(deadlines[0], None, "the first tick starts the clock");
        let (start, _) = v.origin.unwrap();
        let offsets: Vec<_> = deadlines[1..]
            .iter()
            .map(|d| d.unwrap().duration_since(start).as_millis())
            .collect();
        // 200 ms of event time at speed 2 is 100 ms of wall time per tick.
        assert_eq!(offsets, (1..10).map(|n| n * 100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_dropped_wait_does_not_lose_the_tick() {
        // Event time ten thousand times slower than real time: the second tick
        // is far in the future, so its wait is certainly pending.
        let mut v = venue(Pacing::Realtime(1e-4));
        let mut reference = SimMarket::new(SimConfig::default());
        let first = v.next_tick().await.unwrap().unwrap();
        assert_eq!(first.timestamp_ms, reference.step().0);
        {
            let fut = std::pin::pin!(v.next_tick());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(fut.poll(&mut cx).is_pending());
        }
        // Stop pacing so the test does not wait, then collect the dropped tick.
        v.speed = None;
        let (ts, events) = reference.step();
        let tick = v.next_tick().await.unwrap().unwrap();
        assert_eq!((tick.timestamp_ms, tick.events), (ts, events));
        assert_eq!(
            v.next_tick().await.unwrap().unwrap().timestamp_ms,
            reference.step().0
        );
    }

    #[test]
    fn unusable_speed_runs_unpaced() {
        for speed in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut v = venue(Pacing::Realtime(speed));
            for _ in 0..3 {
                let (ts, _) = v.market.step();
                assert_eq!(v.deadline(ts), None);
            }
        }
        let mut v = venue(Pacing::Unpaced);
        let (ts, _) = v.market.step();
        assert_eq!(v.deadline(ts), None);
    }

    #[tokio::test(start_paused = true)]
    async fn realtime_pacing_waits_in_event_time() {
        let mut v = venue(Pacing::Realtime(2.0));
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            v.next_tick().await.unwrap().unwrap();
        }
        // 10 ticks of 200 ms event time at 2× speed: the first is immediate, then 9 × 100 ms.
        let ms = start.elapsed().as_millis();
        assert!((900..1000).contains(&ms), "{ms} ms");
    }
}
