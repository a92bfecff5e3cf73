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
//! execution layer around it (`crate::exec`). What a venue owes that layer is
//! the *class* of every failure ([`VenueError`]): whether the same request may
//! be sent again, whether the venue refused it, whether its outcome is unknown
//! (look it up before anything is re-sent), whether the venue is in a window
//! (425, 503 cancel-only or disabled), or whether nothing will work (auth).
//!
//! The run loop drives a [`Venue`] directly. The execution layer speaks to two
//! object-safe halves, [`MarketFeed`] and [`ExecutionClient`], so a host can
//! pick venues at run time as `Box<dyn …>`; every [`Venue`] is both.

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

/// Which venue window refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Halt {
    /// 425 Too Early: the matching engine is restarting (about 90 s, weekly),
    /// followed by a few minutes in which only post-only orders are accepted.
    TooEarly,
    /// 503 cancel-only mode: cancels go, new orders do not.
    CancelOnly,
    /// 503 trading disabled.
    Disabled,
}

impl std::fmt::Display for Halt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Halt::TooEarly => "too early (425): matching engine restarting",
            Halt::CancelOnly => "cancel-only (503)",
            Halt::Disabled => "trading disabled (503)",
        })
    }
}

/// Why the outcome of a request that may have reached the venue is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// No answer within the request timeout.
    Timeout,
    /// The connection broke after the request was sent.
    ConnectionLost,
    /// The venue processed the request but the answer did not arrive (or did
    /// not parse).
    LostResponse,
}

/// The class of a failure, without its details: what retry and circuit
/// breaking decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Retryable,
    Rejected,
    OutcomeUnknown,
    Halted(Halt),
    Fatal,
}

/// Errors a venue reports, each keeping its class up to the caller.
///
/// Refusals of an order by the venue's rules usually come back as
/// `order-update` events with status `rejected`; [`VenueError::Rejected`] is a
/// request the venue refused at the protocol level (bad request, unknown order).
#[derive(Debug, thiserror::Error)]
pub enum VenueError {
    /// May succeed if the same request is sent again later (429, 5xx, a
    /// connection that could not be made). `retry_after` is the venue's own
    /// `Retry-After` when it sent one.
    #[error("venue {venue}: {message}")]
    Retryable {
        venue: String,
        message: String,
        retry_after: Option<std::time::Duration>,
    },
    /// The venue refused the request; sending it again gives the same answer.
    #[error("venue {venue}: {reason}")]
    Rejected {
        venue: String,
        reason: String,
        code: Option<String>,
    },
    /// The request may or may not have taken effect: look it up before
    /// anything is sent again.
    #[error("venue {venue}: outcome unknown ({cause:?}): {message}")]
    OutcomeUnknown {
        venue: String,
        cause: Unknown,
        message: String,
    },
    /// The venue is in a window in which it refuses this kind of request.
    #[error("venue {venue}: {halt}: {message}")]
    Halted {
        venue: String,
        halt: Halt,
        message: String,
    },
    /// Nothing will work until an operator acts (credentials, configuration).
    #[error("venue {venue}: {message}")]
    Fatal { venue: String, message: String },
}

impl VenueError {
    /// A transient failure without a `Retry-After`: the constructor callers
    /// used before errors had classes.
    pub fn unavailable(venue: impl Into<String>, message: impl std::fmt::Display) -> Self {
        VenueError::Retryable {
            venue: venue.into(),
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// A failure that no retry can fix (bad configuration or credentials).
    pub fn fatal(venue: impl Into<String>, message: impl std::fmt::Display) -> Self {
        VenueError::Fatal {
            venue: venue.into(),
            message: message.to_string(),
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            VenueError::Retryable { .. } => ErrorClass::Retryable,
            VenueError::Rejected { .. } => ErrorClass::Rejected,
            VenueError::OutcomeUnknown { .. } => ErrorClass::OutcomeUnknown,
            VenueError::Halted { halt, .. } => ErrorClass::Halted(*halt),
            VenueError::Fatal { .. } => ErrorClass::Fatal,
        }
    }

    /// The venue's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            VenueError::Retryable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// One of the strategy's trades as the venue records it: what reconciliation
/// uses to find fills missed while the host was away (deduplicated by `id`).
#[derive(Debug, Clone, PartialEq)]
pub struct VenueTrade {
    /// The venue's trade id: unique, the key fills are deduplicated by.
    pub id: String,
    pub intent_id: String,
    pub market: String,
    pub side: crate::contract::Side,
    pub price: f64,
    pub size: f64,
    /// Settlement state as the venue reports it (`MATCHED`, `MINED`,
    /// `CONFIRMED`, `RETRYING`, `FAILED`), when it reports one.
    pub status: Option<String>,
    /// Match time in milliseconds since the Unix epoch, when known.
    pub time_ms: Option<u64>,
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

    /// Fixes the order intent `intent_id` will be sent as, before it is sent,
    /// and returns the venue's reference to it (Polymarket: the order hash),
    /// so the reference can be made durable first. `None`: the venue has no
    /// such reference (paper), or the order cannot be prepared (it is then
    /// refused when placed).
    fn prepare_order(&mut self, intent_id: &str, order: &PlaceOrder) -> Option<String> {
        let _ = (intent_id, order);
        None
    }

    /// Makes an order sent by an earlier process known again by its
    /// reference, so lookups, heartbeats, polls and settlement cover it after
    /// a restart: `filled` shares of it matched, `reversed` of those were
    /// already taken back (their trades failed to settle).
    fn adopt_order(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
        venue_ref: &str,
        filled: f64,
        reversed: f64,
    ) {
        let _ = (intent_id, order, venue_ref, filled, reversed);
    }

    /// How many answers so far said a rate limit is near
    /// (`Poly-RateLimit-Warning`); 0 for venues without such a signal.
    fn rate_limit_warnings(&self) -> u64 {
        0
    }

    /// The strategy's trades at the venue matched at or after `since_ms`.
    /// A venue whose fills all come back as events at once (paper execution)
    /// has nothing to add and answers empty.
    fn trades_since(
        &mut self,
        since_ms: u64,
    ) -> impl std::future::Future<Output = Result<Vec<VenueTrade>, VenueError>> + Send {
        let _ = since_ms;
        async { Ok(Vec::new()) }
    }
}

/// The market-data half of a venue, object-safe.
#[async_trait::async_trait]
pub trait MarketFeed: Send {
    fn feed_name(&self) -> &str;
    /// Waits for the next moment of market activity; `Ok(None)` when the feed ended.
    async fn next(&mut self) -> Result<Option<MarketTick>, VenueError>;
}

/// The execution half of a venue, object-safe: what the execution layer
/// drives. Orders are named by intent id; sending the same intent again sends
/// the same order (the venue keeps what it signed).
#[async_trait::async_trait]
pub trait ExecutionClient: Send {
    fn venue_name(&self) -> &str;
    /// Sends the order named `intent_id`; its order updates and fills so far.
    async fn place(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
    ) -> Result<Vec<EventKind>, VenueError>;
    /// Cancels the order named `intent_id`; the resulting order update.
    async fn cancel(&mut self, intent_id: &str) -> Result<Vec<EventKind>, VenueError>;
    /// The venue's record of the order named `intent_id`; `None` if it never saw it.
    ///
    /// A venue reports every matched share of its orders as fill events once
    /// it learns of them (in a `place` answer, its own polls or stream, or
    /// after a lookup found size it had not reported), each followed by the
    /// order's update; the execution layer tells each share once.
    async fn lookup(&mut self, intent_id: &str) -> Result<Option<OrderUpdate>, VenueError>;
    /// Orders the venue holds open for the strategy.
    async fn open(&mut self) -> Result<Vec<OrderUpdate>, VenueError>;
    /// The strategy's trades matched at or after `since_ms`.
    async fn trades(&mut self, since_ms: u64) -> Result<Vec<VenueTrade>, VenueError>;
    /// Answers so far that warned of a rate limit (`Poly-RateLimit-Warning`).
    fn rate_limit_warnings(&self) -> u64 {
        0
    }
    /// The venue's reference to the order of `intent_id`, fixed before it is
    /// sent (see [`Venue::prepare_order`]).
    fn prepare(&mut self, intent_id: &str, order: &PlaceOrder) -> Option<String> {
        let _ = (intent_id, order);
        None
    }
    /// An order sent by an earlier process (see [`Venue::adopt_order`]).
    fn adopt(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
        venue_ref: &str,
        filled: f64,
        reversed: f64,
    ) {
        let _ = (intent_id, order, venue_ref, filled, reversed);
    }
}

#[async_trait::async_trait]
impl<V: Venue> MarketFeed for V {
    fn feed_name(&self) -> &str {
        self.name()
    }

    async fn next(&mut self) -> Result<Option<MarketTick>, VenueError> {
        self.next_tick().await
    }
}

#[async_trait::async_trait]
impl<V: Venue> ExecutionClient for V {
    fn venue_name(&self) -> &str {
        self.name()
    }

    async fn place(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
    ) -> Result<Vec<EventKind>, VenueError> {
        self.place_order(intent_id, order).await
    }

    async fn cancel(&mut self, intent_id: &str) -> Result<Vec<EventKind>, VenueError> {
        self.cancel_order(intent_id).await
    }

    async fn lookup(&mut self, intent_id: &str) -> Result<Option<OrderUpdate>, VenueError> {
        self.lookup_order(intent_id).await
    }

    async fn open(&mut self) -> Result<Vec<OrderUpdate>, VenueError> {
        self.open_orders().await
    }

    async fn trades(&mut self, since_ms: u64) -> Result<Vec<VenueTrade>, VenueError> {
        self.trades_since(since_ms).await
    }

    fn rate_limit_warnings(&self) -> u64 {
        Venue::rate_limit_warnings(self)
    }

    fn prepare(&mut self, intent_id: &str, order: &PlaceOrder) -> Option<String> {
        self.prepare_order(intent_id, order)
    }

    fn adopt(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
        venue_ref: &str,
        filled: f64,
        reversed: f64,
    ) {
        self.adopt_order(intent_id, order, venue_ref, filled, reversed);
    }
}

/// Why a saved venue state cannot be restored.
#[derive(Debug, Clone, thiserror::Error)]
#[error("venue state: {0}")]
pub struct VenueStateError(pub String);
