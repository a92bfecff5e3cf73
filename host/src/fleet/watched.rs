//! A strategy's heartbeat, as the host sees it from outside the run loop.
//!
//! [`Watched`] wraps the strategy's venue and [`ProgressStore`] wraps its
//! store; between them they see every tick handed to the run loop (events
//! now waiting), every event journaled (one handled), and every checkpoint.
//! [`Progress`] keeps what they saw for the registry, the stuck detector and
//! the heartbeats. Owns nothing else: it changes no call it forwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::contract::{EventKind, OrderUpdate, PlaceOrder};
use crate::store::{StateStore, StoreError, Write, wall_clock_ms};
use crate::venue::{MarketTick, PortfolioSummary, Venue, VenueError, VenueStateError, VenueTrade};

/// What one strategy has been seen doing. All wall times are ms since the
/// Unix epoch; 0 means never.
#[derive(Debug, Default)]
pub struct Progress {
    /// Seq of the newest event journaled.
    pub last_seq: AtomicU64,
    /// Event time of the newest event journaled.
    pub last_event_ms: AtomicU64,
    /// Wall time the newest event was journaled.
    pub last_handled_wall_ms: AtomicU64,
    /// Seq and wall time of the newest checkpoint written.
    pub last_checkpoint_seq: AtomicU64,
    pub last_checkpoint_wall_ms: AtomicU64,
    /// A tick is in the run loop's hands: its events wait to be handled.
    pub in_hand: AtomicBool,
    /// How many events the tick in hand brought.
    pub queue_depth: AtomicU64,
    /// Wall time the tick in hand was handed over.
    pub in_hand_since_ms: AtomicU64,
}

impl Progress {
    /// How long events have waited with none handled, at `now_ms`: `None`
    /// while nothing waits.
    pub fn waiting_ms(&self, now_ms: u64) -> Option<u64> {
        if !self.in_hand.load(Ordering::Acquire) {
            return None;
        }
        let since = self
            .in_hand_since_ms
            .load(Ordering::Relaxed)
            .max(self.last_handled_wall_ms.load(Ordering::Relaxed));
        Some(now_ms.saturating_sub(since))
    }

    /// Forgets the tick in hand (a new attempt starts from the journal).
    pub fn reset_in_hand(&self) {
        self.in_hand.store(false, Ordering::Release);
        self.queue_depth.store(0, Ordering::Relaxed);
    }

    fn saw(&self, seen: Seen) {
        match seen {
            Seen::Journal { seq, at_ms } => {
                self.last_seq.store(seq, Ordering::Relaxed);
                self.last_event_ms.store(at_ms, Ordering::Relaxed);
                self.last_handled_wall_ms
                    .store(wall_clock_ms(), Ordering::Relaxed);
            }
            Seen::Checkpoint { seq } => {
                self.last_checkpoint_seq.store(seq, Ordering::Relaxed);
                self.last_checkpoint_wall_ms
                    .store(wall_clock_ms(), Ordering::Relaxed);
            }
        }
    }
}

/// What a write tells about progress.
enum Seen {
    Journal { seq: u64, at_ms: u64 },
    Checkpoint { seq: u64 },
}

impl Seen {
    fn of(write: &Write) -> Option<Seen> {
        match write {
            Write::Journal { entry, .. } => Some(Seen::Journal {
                seq: entry.event.seq,
                at_ms: entry.event.timestamp_ms,
            }),
            Write::Checkpoint { checkpoint, .. } => Some(Seen::Checkpoint {
                seq: checkpoint.seq,
            }),
            _ => None,
        }
    }
}

/// A venue whose ticks are noted in a [`Progress`]; every call is forwarded
/// unchanged.
pub struct Watched<'a, V> {
    inner: &'a mut V,
    progress: &'a Progress,
}

impl<'a, V: Venue> Watched<'a, V> {
    pub fn new(inner: &'a mut V, progress: &'a Progress) -> Self {
        Watched { inner, progress }
    }
}

// Forwards every method of `Venue`, the provided ones included: a venue's
// own versions of those (state saving, order preparation) must stay in force.
impl<V: Venue> Venue for Watched<'_, V> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn next_tick(&mut self) -> Result<Option<MarketTick>, VenueError> {
        // Asked for the next tick: the one in hand is done.
        self.progress.reset_in_hand();
        let tick = self.inner.next_tick().await;
        if let Ok(Some(tick)) = &tick {
            self.progress
                .queue_depth
                .store(tick.events.len() as u64, Ordering::Relaxed);
            self.progress
                .in_hand_since_ms
                .store(wall_clock_ms(), Ordering::Relaxed);
            self.progress.in_hand.store(true, Ordering::Release);
        }
        tick
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

    fn replays_history(&self) -> bool {
        self.inner.replays_history()
    }

    fn set_catching_up(&mut self, catching_up: bool) {
        self.inner.set_catching_up(catching_up);
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        self.inner.save_state()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), VenueStateError> {
        self.inner.restore_state(state)
    }

    fn prepare_order(&mut self, intent_id: &str, order: &PlaceOrder) -> Option<String> {
        self.inner.prepare_order(intent_id, order)
    }

    fn adopt_order(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
        venue_ref: &str,
        filled: f64,
        reversed: f64,
    ) {
        self.inner
            .adopt_order(intent_id, order, venue_ref, filled, reversed);
    }

    fn rate_limit_warnings(&self) -> u64 {
        self.inner.rate_limit_warnings()
    }

    async fn trades_since(&mut self, since_ms: u64) -> Result<Vec<VenueTrade>, VenueError> {
        self.inner.trades_since(since_ms).await
    }
}

/// A store whose journal and checkpoint writes are noted in a [`Progress`];
/// every call is forwarded unchanged.
pub struct ProgressStore {
    inner: Arc<dyn StateStore>,
    progress: Arc<Progress>,
}

impl ProgressStore {
    pub fn new(inner: Arc<dyn StateStore>, progress: Arc<Progress>) -> Self {
        ProgressStore { inner, progress }
    }
}

crate::store::forward_store_reads!(ProgressStore, inner, {
    async fn write(&self, write: Write) -> Result<(), StoreError> {
        let seen = Seen::of(&write);
        let result = self.inner.write(write).await;
        if let (Some(seen), Ok(())) = (seen, &result) {
            self.progress.saw(seen);
        }
        result
    }
});
