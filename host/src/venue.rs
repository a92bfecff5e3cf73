//! Venues: where market data comes from and where orders go.
//!
//! A [`Venue`] is the only thing the run loop talks to about the market. The
//! simulated venue ([`simulated::SimVenue`]) is the offline default: a seeded,
//! deterministic market ([`sim::SimMarket`]) with paper execution
//! ([`paper::PaperExchange`]) at the touch. Venues report what happened as
//! contract [`EventKind`]s, so fills and order updates flow back to the strategy
//! through the same journaled event path as market data.
//!
//! Besides the market-data stream ([`Venue::next_tick`]) and order placement
//! and cancellation, a venue answers which orders it holds open
//! ([`Venue::open_orders`]) and the state of any order by its intent id
//! ([`Venue::lookup_order`]): what a restart uses to reconcile an intent whose
//! outcome it did not record.
//!
//! A venue never retries or breaks circuits itself; that policy belongs to the
//! execution layer around it.

pub mod paper;
pub mod polymarket;
pub mod sim;
pub mod simulated;

use crate::contract::{EventKind, OrderUpdate, PlaceOrder};

/// What a venue produced at one moment of event time.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketTick {
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Market data and any fills of resting orders it caused, in the order they happened.
    pub events: Vec<EventKind>,
}

/// Money and positions as the venue's execution sees them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PortfolioSummary {
    pub cash: f64,
    /// Realised profit and loss, after fees.
    pub realized_pnl: f64,
    /// Open positions marked at the last mid price.
    pub unrealized_pnl: f64,
    pub fees: f64,
    pub fills: u64,
    /// Shares traded, both sides.
    pub volume: f64,
}

impl PortfolioSummary {
    /// Realised plus unrealised profit and loss.
    pub fn total_pnl(&self) -> f64 {
        self.realized_pnl + self.unrealized_pnl
    }
}

/// Errors a venue reports. Rejections of an order are not errors: they come back
/// as `order-update` events with status `rejected`.
#[derive(Debug, thiserror::Error)]
pub enum VenueError {
    #[error("venue {venue}: {message}")]
    Unavailable { venue: String, message: String },
}

/// A source of market data and a place to send orders.
pub trait Venue: Send {
    /// A short name for logs and system events.
    fn name(&self) -> &str;

    /// Waits for the next moment of market activity. `Ok(None)` means the feed has ended.
    fn next_tick(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<MarketTick>, VenueError>> + Send;

    /// Sends an order named `intent_id`; returns its order updates and fills so far.
    fn place_order(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
    ) -> impl std::future::Future<Output = Result<Vec<EventKind>, VenueError>> + Send;

    /// Cancels the order named `intent_id`; returns the resulting order update.
    fn cancel_order(
        &mut self,
        intent_id: &str,
    ) -> impl std::future::Future<Output = Result<Vec<EventKind>, VenueError>> + Send;

    /// The orders this venue holds open for the strategy (status `open` or
    /// `partially-filled`), with their filled and remaining sizes.
    fn open_orders(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Vec<OrderUpdate>, VenueError>> + Send;

    /// The current state of the order named `intent_id`, whatever its status
    /// (filled, cancelled and rejected included); `None` if the venue never saw
    /// it. A query only: fills it reveals still reach the strategy as events.
    fn lookup_order(
        &mut self,
        intent_id: &str,
    ) -> impl std::future::Future<Output = Result<Option<OrderUpdate>, VenueError>> + Send;

    /// Current money and positions.
    fn portfolio(&self) -> PortfolioSummary;

    /// Whether the venue can be driven again through a strategy's journaled
    /// history to rebuild its state after a restart (a deterministic simulated
    /// venue can). A venue that cannot — a live market — keeps its own state
    /// and is reconciled with instead; the runner then continues live.
    fn replays_history(&self) -> bool {
        false
    }

    /// A venue that replays history runs as fast as it can while the runner
    /// catches it up with the journal (`true`), and at its configured pace
    /// again from the first live event (`false`). Others ignore it.
    fn set_catching_up(&mut self, _catching_up: bool) {}

    /// The venue's whole state, encoded, for a venue that replays history:
    /// restoring it ([`Venue::restore_state`]) into a venue built from the
    /// same configuration continues exactly where this one is. `None` for a
    /// venue that keeps its own state.
    fn save_state(&self) -> Option<Vec<u8>> {
        None
    }

    /// Restores a state [`Venue::save_state`] produced.
    ///
    /// # Errors
    /// The state does not decode or belongs to another configuration; the
    /// venue is then unchanged.
    fn restore_state(&mut self, _state: &[u8]) -> Result<(), VenueStateError> {
        Err(VenueStateError(format!(
            "venue {} does not restore saved states",
            self.name()
        )))
    }
}

/// Why a saved venue state cannot be restored.
#[derive(Debug, Clone, thiserror::Error)]
#[error("venue state: {0}")]
pub struct VenueStateError(pub String);
