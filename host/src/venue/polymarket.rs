//! The Polymarket venue: live market data from the CLOB V2 market WebSocket,
//! with paper execution (the default) or live, signed orders.
//!
//! [`PolymarketVenue`] owns the glue between the `polybot-polymarket` clients
//! and the contract. Market data: every book change of a configured token
//! becomes an [`EventKind::Book`] (the token id is the contract's market, both
//! sides best-first) stamped with the venue's own timestamp; last-trade prices
//! become [`EventKind::Trade`]; the stream's stalls, disconnects and reconnects
//! become [`EventKind::VenueStatus`] (`degraded`, then `recovered`), so a
//! strategy learns when its view of the market may be stale.
//!
//! Execution, chosen at construction ([`Execution`]):
//! - **paper**: orders go to a [`PaperExchange`] that is shown every book, so
//!   resting orders fill against the live market exactly as on the simulated
//!   venue (fills follow the book that caused them, in the same tick).
//! - **live**: an order is signed with [`OrderSigner`] using the intent id, so
//!   its hash (the venue's `orderID`) is fixed and remembered *before* it is
//!   sent; a re-send of the same intent is byte-identical and the venue answers
//!   `INVALID_ORDER_DUPLICATED`, which is treated as "already placed" and
//!   answered by looking the order up. While orders rest, a background task
//!   sends the dead-man heartbeat every 5 s and polls those orders, so fills
//!   and venue-side cancels come back as events.
//!
//! **Settlement** (live): a fill is provisional until its trade is final.
//! While any matched size of this process's orders waits for that, the
//! upkeep task also reads `GET /data/trades`: `CONFIRMED` settles a trade;
//! `FAILED` reverses its fill — a `fill` event of the same side, market and
//! price with the size negated (the contract's reversal, see
//! `wit/strategy.wit`), booked in the ledger as a reversal, then an order
//! update whose reason begins with [`TRADE_FAILED`].
//!
//! Open orders and lookups by intent id ([`Venue::open_orders`],
//! [`Venue::lookup_order`]) come from the paper exchange, or live from the
//! venue (`GET /data/orders`, `GET /data/order/{hash}`) for the orders this
//! process placed, mapped to contract [`OrderUpdate`]s.
//!
//! Event time never goes backwards: a venue timestamp older than the last one
//! (a REST backfill racing the socket) is stamped with the last one. A signed
//! order's timestamp is the event time of the tick in hand, which is the event
//! time of the intent for every intent raised by market data.
//!
//! Does not own: retries, backoff or circuit breaking (the execution layer
//! around a venue decides; every error here names its endpoint and is returned
//! once), reconciling intents journaled before a restart (the venue keeps its
//! order map in memory, so it looks up only orders this process placed;
//! [`Venue::replays_history`] stays false so the runner continues live), credentials storage (they come from
//! [`Credentials::from_env`] or [`Credentials::from_file`] and are never logged
//! nor shown to strategies).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use polybot_polymarket::auth::Credentials;
use polybot_polymarket::order::{
    OrderIntent, OrderSigner, OrderType as WireOrderType, SignedOrder,
};
use polybot_polymarket::rest::{ClobClient, ClobConfig, ClobError, RejectCode, TransportKind};
use polybot_polymarket::types::{
    OpenOrder, OrderBook, OrderStatus as WireStatus, PostOrderResponse, Side as WireSide,
};
use polybot_polymarket::ws::{MarketStream, MarketStreamConfig, StreamMessage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::paper::{PaperConfig, PaperExchange};
use super::{Halt, MarketTick, PortfolioSummary, Unknown, Venue, VenueError, VenueTrade};
use crate::contract::{
    Book, EventKind, Fill, Level, OrderStatus, OrderType, OrderUpdate, PlaceOrder, Side,
    TradePrint, VenueHealth, VenueStatus,
};
use crate::contract::{order_rejected as rejected, order_update as update};
use crate::ledger::Ledger;

pub mod feed;
mod settlement;
use feed::{SharedFeed, Subscription};
use settlement::{Settlement, our_trades};

/// The venue's name in events, logs and errors.
pub const VENUE: &str = "polymarket";
/// Production endpoints (defaults of the command line).
pub const CLOB_URL: &str = polybot_polymarket::rest::CLOB_URL;
pub const GAMMA_URL: &str = polybot_polymarket::rest::GAMMA_URL;
pub const WS_URL: &str = polybot_polymarket::ws::MARKET_WS_URL;

/// How often resting live orders are kept alive (dead-man heartbeat) and
/// polled. The venue cancels everything ~10 s (+5 s grace) after the last
/// heartbeat, so 5 s leaves room for one lost request.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// How a `venue-status` event about a failed dead-man heartbeat begins: the
/// venue may cancel every resting order, so the execution layer holds
/// placement and reconciles once heartbeats are back.
pub const HEARTBEAT_LOST: &str = "dead-man heartbeat failed";
/// How the `venue-status` event that ends a heartbeat loss begins: the
/// execution layer then reconciles and lifts its hold on placement.
pub const HEARTBEAT_BACK: &str = "dead-man heartbeat restored";
/// How the reason of the order update after a reversed fill begins.
pub const TRADE_FAILED: &str = "trade failed to settle";
/// Sizes closer than this are equal (amounts have 6 decimals).
const EPS: f64 = 1e-6;

/// Where to connect and what to trade.
#[derive(Debug, Clone)]
pub struct PolymarketConfig {
    pub clob_url: String,
    pub ws_url: String,
    pub gamma_url: String,
    /// Outcome token ids to stream (and trade): the contract's market ids.
    pub tokens: Vec<String>,
    /// No market data for this long while connected: the feed counts as
    /// stalled and is reconnected (a quiet market trips it too).
    pub stall_timeout: Duration,
    pub execution: Execution,
}

impl PolymarketConfig {
    /// Production endpoints, paper execution.
    pub fn new(tokens: Vec<String>) -> Self {
        PolymarketConfig {
            clob_url: CLOB_URL.into(),
            ws_url: WS_URL.into(),
            gamma_url: GAMMA_URL.into(),
            tokens,
            stall_timeout: Duration::from_secs(30),
            execution: Execution::Paper(PaperConfig::default()),
        }
    }
}

/// How orders are executed.
#[derive(Debug, Clone)]
pub enum Execution {
    /// Simulated fills against the live books; nothing is sent to the venue.
    Paper(PaperConfig),
    /// Real, signed orders.
    Live(LiveConfig),
}

/// What live trading needs. `Debug` keeps the secrets redacted.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Strategy name: with the intent id it fixes each order's salt, hence its hash.
    pub strategy: String,
    pub credentials: Credentials,
}

/// Tick size and exchange of a token, needed to sign its orders.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TokenParams {
    tick_size: f64,
    neg_risk: bool,
}

impl TokenParams {
    fn update(&mut self, book: &OrderBook) {
        if let Some(t) = book.tick_size {
            self.tick_size = t;
        }
        if let Some(n) = book.neg_risk {
            self.neg_risk = n;
        }
    }
}

impl Default for TokenParams {
    fn default() -> Self {
        TokenParams {
            tick_size: 0.01,
            neg_risk: false,
        }
    }
}

/// Live market data plus paper or live execution; see the module docs.
pub struct PolymarketVenue {
    tokens: Vec<String>,
    stream: Source,
    /// The first stream message, read while connecting, not yet delivered.
    first: Option<StreamMessage>,
    /// Current book per configured token, kept from the messages in the order
    /// they are delivered (so each Book event is the book as of that message).
    books: HashMap<String, OrderBook>,
    params: HashMap<String, TokenParams>,
    /// Event time of the last tick delivered.
    now_ms: u64,
    degraded: bool,
    exec: Exec,
    /// Order events found by the live upkeep task (`None` in paper mode).
    updates: Option<mpsc::Receiver<Vec<EventKind>>>,
}

/// Where market data comes from: the venue's own stream, or a feed shared
/// with the host's other strategies (see [`feed`]).
enum Source {
    Own(MarketStream),
    Shared(Subscription),
}

impl Source {
    async fn recv(&mut self) -> Option<StreamMessage> {
        match self {
            Source::Own(stream) => stream.recv().await,
            Source::Shared(sub) => sub.recv().await,
        }
    }
}

enum Exec {
    Paper(Box<PaperExchange>),
    Live(Box<Live>),
}

struct Live {
    client: ClobClient,
    signer: OrderSigner,
    strategy: String,
    /// The API key, sent as the order's `owner`.
    owner: String,
    /// Every order placed, by intent id; shared with the upkeep task.
    orders: Tracked,
    /// Where order events this process learns of outside the upkeep task
    /// (a lookup's newly matched size) are reported, as the upkeep reports its own.
    reports: mpsc::Sender<Vec<EventKind>>,
    ledger: Ledger,
    _upkeep: AbortOnDrop,
}

/// An order this venue placed live.
#[derive(Debug, Clone, PartialEq)]
struct LiveOrder {
    hash: String,
    /// The order as signed: every re-send is these bytes.
    signed: Option<SignedOrder>,
    market: String,
    side: Side,
    price: f64,
    size: f64,
    matched: f64,
    /// Shares of `matched` an earlier run reversed (their trades failed to
    /// settle): settlement here takes that much of its failed trades as done.
    reversed_before: f64,
    /// Still open on the venue: kept alive by heartbeats and polled.
    resting: bool,
    /// The venue's refusal (status and reason), if it refused the order: it
    /// then keeps no record of it, so lookups answer from here.
    refused: Option<(OrderStatus, String)>,
}

#[derive(Clone, Default)]
struct Tracked(Arc<Mutex<HashMap<String, LiveOrder>>>);

impl Tracked {
    /// The map; a poisoned lock only means a panic elsewhere mid-update, and
    /// the entries are still the best knowledge there is.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, LiveOrder>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A problem no retry fixes: configuration, credentials, a malformed URL.
fn fatal(message: impl std::fmt::Display) -> VenueError {
    VenueError::fatal(VENUE, message)
}

/// Keeps the connector's classification of a failed request: `context` (may
/// be empty) says what was being done.
fn classify(e: &ClobError, context: &str) -> VenueError {
    let venue = VENUE.to_string();
    let message = if context.is_empty() {
        e.to_string()
    } else {
        format!("{context}: {e}")
    };
    // A request that changes state may have taken effect when its answer is lost.
    let mutating = e.endpoint().starts_with("POST") || e.endpoint().starts_with("DELETE");
    match e {
        ClobError::RateLimited { retry_after, .. } => VenueError::Retryable {
            venue,
            message,
            retry_after: *retry_after,
        },
        ClobError::TooEarly { .. } => VenueError::Halted {
            venue,
            halt: Halt::TooEarly,
            message,
        },
        ClobError::Unavailable { cancel_only, .. } => VenueError::Halted {
            venue,
            halt: if *cancel_only {
                Halt::CancelOnly
            } else {
                Halt::Disabled
            },
            message,
        },
        ClobError::Server { .. } => VenueError::Retryable {
            venue,
            message,
            retry_after: None,
        },
        ClobError::Unauthorized { .. }
        | ClobError::NoCredentials { .. }
        | ClobError::Auth { .. } => VenueError::Fatal { venue, message },
        ClobError::Rejected { code, .. } => VenueError::Rejected {
            venue,
            reason: message,
            code: code.map(|c| format!("{c:?}")),
        },
        ClobError::Malformed { .. } if mutating => VenueError::OutcomeUnknown {
            venue,
            cause: Unknown::LostResponse,
            message,
        },
        ClobError::Transport {
            kind: TransportKind::Timeout,
            ..
        } if mutating => VenueError::OutcomeUnknown {
            venue,
            cause: Unknown::Timeout,
            message,
        },
        ClobError::Transport {
            kind: TransportKind::Interrupted,
            ..
        } if mutating => VenueError::OutcomeUnknown {
            venue,
            cause: Unknown::ConnectionLost,
            message,
        },
        ClobError::Malformed { .. } | ClobError::Transport { .. } => VenueError::Retryable {
            venue,
            message,
            retry_after: None,
        },
    }
}

/// Checks a URL's scheme and that it names a host, so a typo is reported at
/// start rather than as an endless reconnect loop.
fn check_url(flag: &str, url: &str, schemes: &[&str]) -> Result<(), VenueError> {
    let rest = schemes
        .iter()
        .find_map(|s| url.strip_prefix(s).and_then(|r| r.strip_prefix("://")));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(fatal(format!(
            "{flag} `{url}` is not a {} URL",
            schemes.join("/")
        ))),
    }
}

impl PolymarketVenue {
    /// Checks the endpoints and token ids, opens the market stream and, for
    /// live execution, checks the credentials.
    ///
    /// # Errors
    /// A malformed URL, a CLOB that does not answer `GET /ok`, a token without
    /// a book (`GET /book`), a market WebSocket that cannot be reached, or for
    /// live execution missing or rejected credentials — each naming what failed.
    pub async fn connect(cfg: PolymarketConfig) -> Result<Self, VenueError> {
        Self::connect_to(cfg, None).await
    }

    /// [`Self::connect`], with market data from a feed shared with other
    /// strategies instead of a stream of its own.
    ///
    /// # Errors
    /// As [`Self::connect`].
    pub async fn connect_shared(
        cfg: PolymarketConfig,
        feed: Arc<SharedFeed>,
    ) -> Result<Self, VenueError> {
        Self::connect_to(cfg, Some(feed)).await
    }

    async fn connect_to(
        cfg: PolymarketConfig,
        shared: Option<Arc<SharedFeed>>,
    ) -> Result<Self, VenueError> {
        check_url("--clob-url", &cfg.clob_url, &["http", "https"])?;
        check_url("--gamma-url", &cfg.gamma_url, &["http", "https"])?;
        check_url("--ws-url", &cfg.ws_url, &["ws", "wss"])?;
        if cfg.tokens.is_empty() {
            return Err(fatal("no token ids to stream"));
        }
        let client =
            ClobClient::new(ClobConfig::new(&cfg.clob_url, &cfg.gamma_url)).map_err(fatal)?;
        client
            .ok()
            .await
            .map_err(|e| classify(&e, &format!("CLOB at {}", cfg.clob_url)))?;
        let mut params = HashMap::new();
        let mut books = HashMap::new();
        for token in &cfg.tokens {
            let book = client
                .book(token)
                .await
                .map_err(|e| classify(&e, &format!("token {token}")))?;
            params
                .entry(token.clone())
                .or_insert_with(TokenParams::default)
                .update(&book);
            // A base for deltas; strategies see books from the socket's snapshot on.
            books.insert(token.clone(), book);
        }

        let (exec, updates) = match cfg.execution {
            Execution::Paper(paper) => (Exec::Paper(Box::new(PaperExchange::new(paper))), None),
            Execution::Live(live) => {
                let (live, updates) = Live::start(&client, live, &cfg.tokens).await?;
                (Exec::Live(Box::new(live)), Some(updates))
            }
        };

        let mode = if updates.is_some() { "live" } else { "paper" };
        if let Some(feed) = shared {
            tracing::info!(
                venue = VENUE,
                tokens = cfg.tokens.len(),
                mode,
                "connected (shared market feed)"
            );
            return Ok(PolymarketVenue {
                stream: Source::Shared(feed.subscribe(&cfg.tokens)),
                tokens: cfg.tokens,
                first: None,
                books,
                params,
                now_ms: 0,
                degraded: false,
                exec,
                updates,
            });
        }
        let mut ws = MarketStreamConfig::new(&cfg.ws_url);
        ws.stall_timeout = cfg.stall_timeout;
        let connect_wait = ws.connect_timeout + Duration::from_secs(1);
        let mut stream = MarketStream::spawn(ws, client, cfg.tokens.clone());
        // The stream reports its first connection either way; a failure here
        // is a configuration problem, not an outage to ride out.
        let first = match tokio::time::timeout(connect_wait, stream.recv()).await {
            Ok(Some(StreamMessage::Connected { .. })) => None,
            Ok(Some(StreamMessage::Disconnected { reason })) => {
                return Err(VenueError::unavailable(
                    VENUE,
                    format!("market WebSocket: {reason}"),
                ));
            }
            Ok(Some(other)) => Some(other),
            Ok(None) => {
                return Err(VenueError::unavailable(
                    VENUE,
                    "market WebSocket: stream ended",
                ));
            }
            Err(_) => {
                return Err(VenueError::unavailable(
                    VENUE,
                    format!(
                        "market WebSocket {}: no answer within {connect_wait:?}",
                        cfg.ws_url
                    ),
                ));
            }
        };
        tracing::info!(venue = VENUE, tokens = cfg.tokens.len(), mode, "connected");
        Ok(PolymarketVenue {
            tokens: cfg.tokens,
            stream: Source::Own(stream),
            first,
            books,
            params,
            now_ms: 0,
            degraded: false,
            exec,
            updates,
        })
    }

    /// The paper exchange, in paper mode.
    pub fn paper(&self) -> Option<&PaperExchange> {
        match &self.exec {
            Exec::Paper(p) => Some(p),
            Exec::Live(_) => None,
        }
    }

    /// The venue order hash of a live order, known from before it was sent.
    pub fn order_hash(&self, intent_id: &str) -> Option<String> {
        match &self.exec {
            Exec::Live(live) => live.orders.lock().get(intent_id).map(|o| o.hash.clone()),
            Exec::Paper(_) => None,
        }
    }

    fn is_token(&self, token: &str) -> bool {
        self.tokens.iter().any(|t| t == token)
    }

    /// Turns one stream message into events; returns the venue time it carries.
    fn on_message(&mut self, msg: StreamMessage) -> (Option<u64>, Vec<EventKind>) {
        let mut events = Vec::new();
        let ts = match msg {
            StreamMessage::Book { book, .. } => {
                if !self.is_token(&book.asset_id) {
                    return (None, events);
                }
                self.params
                    .entry(book.asset_id.clone())
                    .or_default()
                    .update(&book);
                let ts = book.timestamp_ms;
                let token = book.asset_id.clone();
                self.books.insert(token.clone(), book);
                self.push_book(&token, &mut events);
                Some(ts)
            }
            StreamMessage::PriceChange(pc) => {
                let mut changed: Vec<String> = Vec::new();
                for c in &pc.changes {
                    let Some(book) = self.books.get_mut(&c.asset_id) else {
                        continue;
                    };
                    book.apply_level(c.side, c.price, c.size);
                    if !changed.contains(&c.asset_id) {
                        changed.push(c.asset_id.clone());
                    }
                }
                for token in &changed {
                    self.push_book(token, &mut events);
                }
                Some(pc.timestamp_ms)
            }
            StreamMessage::LastTrade(t) => {
                let Some(side) = t.side.filter(|_| self.is_token(&t.asset_id)) else {
                    // A print without an aggressor side cannot be stated in the contract.
                    return (None, events);
                };
                events.push(EventKind::Trade(TradePrint {
                    market: t.asset_id,
                    price: t.price,
                    size: t.size,
                    side: side_from_wire(side),
                }));
                Some(t.timestamp_ms)
            }
            StreamMessage::TickSizeChange(t) => {
                if let Some(p) = self.params.get_mut(&t.asset_id) {
                    p.tick_size = t.new_tick_size;
                }
                None
            }
            StreamMessage::Stalled { silent_for } => {
                self.health(
                    VenueHealth::Degraded,
                    format!(
                        "market feed silent for {:.1} s; reconnecting",
                        silent_for.as_secs_f64()
                    ),
                    &mut events,
                );
                None
            }
            StreamMessage::Disconnected { reason } => {
                self.health(
                    VenueHealth::Degraded,
                    format!("market feed disconnected ({reason}); reconnecting"),
                    &mut events,
                );
                None
            }
            StreamMessage::Reconnected { failed, .. } => {
                let detail = if failed.is_empty() {
                    "market feed reconnected; books refreshed".to_string()
                } else {
                    format!(
                        "market feed reconnected; books of {} catch up from the socket",
                        failed.join(", ")
                    )
                };
                self.health(VenueHealth::Recovered, detail, &mut events);
                None
            }
            StreamMessage::Connected { .. }
            | StreamMessage::BestBidAsk(_)
            | StreamMessage::Other { .. } => None,
        };
        (ts.filter(|&t| t > 0), events)
    }

    /// Appends the token's current book and, in paper mode, the fills it causes.
    fn push_book(&mut self, token: &str, events: &mut Vec<EventKind>) {
        let Some(book) = self.books.get(token) else {
            return;
        };
        let book = contract_book(book);
        let fills = match &mut self.exec {
            Exec::Paper(paper) => paper.on_book(&book),
            Exec::Live(_) => Vec::new(),
        };
        events.push(EventKind::Book(book));
        events.extend(fills);
    }

    /// A venue-status event on a change of health only: a reconnect loop that
    /// keeps failing is one degradation, not one event per attempt.
    fn health(&mut self, health: VenueHealth, detail: String, events: &mut Vec<EventKind>) {
        let degraded = health == VenueHealth::Degraded;
        if degraded == self.degraded {
            tracing::debug!(venue = VENUE, "{detail}");
            return;
        }
        tracing::warn!(venue = VENUE, health = ?health, "{detail}");
        self.degraded = degraded;
        events.push(EventKind::VenueStatus(VenueStatus {
            venue: VENUE.into(),
            health,
            detail,
        }));
    }

    fn mids(&self) -> impl Fn(&str) -> Option<f64> + '_ {
        |token| self.books.get(token).and_then(OrderBook::midpoint)
    }
}

impl Venue for PolymarketVenue {
    fn name(&self) -> &str {
        VENUE
    }

    async fn next_tick(&mut self) -> Result<Option<MarketTick>, VenueError> {
        loop {
            // Each branch completes a whole message before any state changes,
            // so a dropped wait (the runner's `select!`) loses nothing.
            let (ts, events) = if let Some(msg) = self.first.take() {
                self.on_message(msg)
            } else {
                let updates = async {
                    match self.updates.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    msg = self.stream.recv() => match msg {
                        Some(msg) => self.on_message(msg),
                        // The stream's task never ends on its own; if it did, so has the feed.
                        None => return Ok(None),
                    },
                    Some(events) = updates => {
                        if let Exec::Live(live) = &mut self.exec {
                            book_fills(&mut live.ledger, &events);
                        }
                        (None, events)
                    }
                }
            };
            if events.is_empty() {
                continue;
            }
            // Venue time; never backwards, and messages without a time of
            // their own (health, order polls) take the last one.
            if let Some(ts) = ts {
                self.now_ms = self.now_ms.max(ts);
            } else if self.now_ms == 0 {
                self.now_ms = crate::store::wall_clock_ms();
            }
            return Ok(Some(MarketTick {
                timestamp_ms: self.now_ms,
                events,
            }));
        }
    }

    async fn place_order(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
    ) -> Result<Vec<EventKind>, VenueError> {
        match &mut self.exec {
            Exec::Paper(paper) => Ok(paper.place(intent_id, order)),
            Exec::Live(live) => {
                let Some(params) = self.params.get(&order.market).copied() else {
                    return Ok(vec![rejected(
                        intent_id,
                        order,
                        format!("unknown market {}: not a streamed token", order.market),
                    )]);
                };
                live.place(intent_id, order, params, self.now_ms).await
            }
        }
    }

    async fn cancel_order(&mut self, intent_id: &str) -> Result<Vec<EventKind>, VenueError> {
        match &mut self.exec {
            Exec::Paper(paper) => Ok(paper.cancel(intent_id)),
            Exec::Live(live) => live.cancel(intent_id).await,
        }
    }

    /// Paper: the paper exchange's resting orders. Live: the venue's open
    /// orders (`GET /data/orders`, per token traded) that this process placed;
    /// other orders on the account are not the strategy's.
    async fn open_orders(&mut self) -> Result<Vec<OrderUpdate>, VenueError> {
        match &self.exec {
            Exec::Paper(paper) => Ok(paper.open_order_updates()),
            Exec::Live(live) => live.open_orders().await,
        }
    }

    /// Paper: the paper exchange's record. Live: the venue's record
    /// (`GET /data/order/{hash}`), found by the hash kept since the order was
    /// signed; an order the venue refused has no record there and is answered
    /// from memory.
    ///
    /// The order map lives in memory, so an intent id this process never
    /// placed is `Ok(None)`. After a restart, a live lookup of an earlier
    /// intent needs its order hash, which the host can recompute from the
    /// journal: the order is signed deterministically from the strategy name,
    /// the intent id, the order and the event time of its intent.
    async fn lookup_order(&mut self, intent_id: &str) -> Result<Option<OrderUpdate>, VenueError> {
        match &self.exec {
            Exec::Paper(paper) => Ok(paper.order(intent_id)),
            Exec::Live(live) => live.lookup(intent_id).await,
        }
    }

    /// Live: signs the order now and returns its hash, which is then durable
    /// with the intent before the order is sent.
    fn prepare_order(&mut self, intent_id: &str, order: &PlaceOrder) -> Option<String> {
        let params = self.params.get(&order.market).copied()?;
        let now_ms = self.now_ms;
        match &mut self.exec {
            Exec::Paper(_) => None,
            Exec::Live(live) => match live.signed(intent_id, order, params, now_ms) {
                Ok(Ok(signed)) => Some(signed.order_hash),
                _ => None,
            },
        }
    }

    /// Live: an order an earlier run sent, known again by its hash, so
    /// lookups find it and, once found resting, heartbeats keep it alive.
    fn adopt_order(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
        venue_ref: &str,
        filled: f64,
        reversed: f64,
    ) {
        if let Exec::Live(live) = &mut self.exec {
            live.orders
                .lock()
                .entry(intent_id.to_string())
                .or_insert_with(|| LiveOrder {
                    hash: venue_ref.to_string(),
                    signed: None,
                    market: order.market.clone(),
                    side: order.side,
                    price: order.price,
                    size: order.size,
                    matched: filled,
                    reversed_before: reversed,
                    resting: false,
                    refused: None,
                });
        }
    }

    fn rate_limit_warnings(&self) -> u64 {
        match &self.exec {
            Exec::Paper(_) => 0,
            Exec::Live(live) => live.client.rate_limit_warnings(),
        }
    }

    /// Paper: nothing (every paper fill comes back as an event at once).
    /// Live: `GET /data/trades`, the trades of orders this process placed, as
    /// taker or maker, matched at or after `since_ms`.
    async fn trades_since(&mut self, since_ms: u64) -> Result<Vec<VenueTrade>, VenueError> {
        match &self.exec {
            Exec::Paper(_) => Ok(Vec::new()),
            Exec::Live(live) => live.trades(since_ms).await,
        }
    }

    fn portfolio(&self) -> PortfolioSummary {
        match &self.exec {
            Exec::Paper(paper) => paper.summary(),
            Exec::Live(live) => live.ledger.summary(self.mids()),
        }
    }
}

impl Live {
    async fn start(
        client: &ClobClient,
        cfg: LiveConfig,
        tokens: &[String],
    ) -> Result<(Live, mpsc::Receiver<Vec<EventKind>>), VenueError> {
        let creds = cfg.credentials;
        let key = creds
            .private_key
            .as_ref()
            .ok_or_else(|| fatal("live trading needs POLYMARKET_PRIVATE_KEY"))?;
        let signer = OrderSigner::from_private_key(key.expose()).map_err(fatal)?;
        let address = signer.address().to_checksum(None);
        if !address.eq_ignore_ascii_case(creds.address.trim()) {
            return Err(fatal(format!(
                "POLYMARKET_ADDRESS {} is not the address of POLYMARKET_PRIVATE_KEY ({address}); \
                 only wallets that sign for themselves (EOA) are supported",
                creds.address
            )));
        }
        let owner = creds.api_key.clone();
        let client = client.clone().with_credentials(creds);
        // An authenticated read: bad credentials stop the start here, and
        // orders left open by someone else are worth a warning.
        for token in tokens {
            let open = client
                .open_orders(None, Some(token))
                .await
                .map_err(|e| classify(&e, "credentials check"))?;
            if !open.is_empty() {
                tracing::warn!(
                    venue = VENUE,
                    token = %token,
                    open = open.len(),
                    "orders already open on this token; this run does not manage them"
                );
            }
        }
        let orders = Tracked::default();
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(upkeep(client.clone(), orders.clone(), tx.clone()));
        Ok((
            Live {
                client,
                signer,
                strategy: cfg.strategy,
                owner,
                orders,
                reports: tx,
                ledger: Ledger::default(),
                _upkeep: AbortOnDrop(task),
            },
            rx,
        ))
    }

    /// The signed order of an intent: signed once, remembered (by hash)
    /// before anything is sent, and the same bytes on every later call.
    ///
    /// `Ok(Err(reason))`: the order cannot be signed as asked (a refusal for
    /// the strategy).
    ///
    /// # Errors
    /// The intent was sent by an earlier run, whose bytes are gone: it is
    /// looked up, never signed again.
    fn signed(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
        params: TokenParams,
        now_ms: u64,
    ) -> Result<Result<SignedOrder, String>, VenueError> {
        if let Some(o) = self.orders.lock().get(intent_id) {
            match &o.signed {
                Some(signed) if o.refused.is_none() => return Ok(Ok(signed.clone())),
                Some(_) => {}
                None => {
                    return Err(VenueError::OutcomeUnknown {
                        venue: VENUE.into(),
                        cause: Unknown::LostResponse,
                        message: format!(
                            "intent {intent_id} was sent by an earlier run as order {}; look it up",
                            o.hash
                        ),
                    });
                }
            }
        }
        // The signer rounds to the nearest tick, which could buy above the
        // limit; an off-tick price is refused instead, as paper does.
        let ticks = order.price / params.tick_size;
        if (ticks - ticks.round()).abs() > 1e-6 {
            return Ok(Err(format!(
                "price {} is not on the {} tick",
                order.price, params.tick_size
            )));
        }
        let intent = OrderIntent {
            strategy: self.strategy.clone(),
            intent_id: intent_id.to_string(),
            token_id: order.market.clone(),
            side: side_to_wire(order.side),
            price: order.price,
            size: order.size,
            tick_size: params.tick_size,
            neg_risk: params.neg_risk,
            timestamp_ms: now_ms,
            order_type: match order.order_type {
                OrderType::Gtc => WireOrderType::Gtc,
                OrderType::Fak => WireOrderType::Fak,
                OrderType::Fok => WireOrderType::Fok,
            },
            expiration: 0,
            post_only: false,
        };
        let signed = match self.signer.sign(&intent, &self.owner) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e.to_string())),
        };
        // Remembered before sending: whatever happens to the request, the
        // order can be found by this hash.
        self.orders.lock().insert(
            intent_id.to_string(),
            LiveOrder {
                hash: signed.order_hash.clone(),
                signed: Some(signed.clone()),
                market: order.market.clone(),
                side: order.side,
                price: order.price,
                size: order.size,
                matched: 0.0,
                reversed_before: 0.0,
                resting: false,
                refused: None,
            },
        );
        Ok(Ok(signed))
    }

    async fn place(
        &mut self,
        intent_id: &str,
        order: &PlaceOrder,
        params: TokenParams,
        now_ms: u64,
    ) -> Result<Vec<EventKind>, VenueError> {
        let signed = match self.signed(intent_id, order, params, now_ms)? {
            Ok(signed) => signed,
            Err(reason) => return Ok(vec![rejected(intent_id, order, reason)]),
        };
        tracing::debug!(venue = VENUE, intent = intent_id, hash = %signed.order_hash, "posting order");
        let outcome = match self.client.post_order(&signed).await {
            Ok(resp) => on_posted(intent_id, order, &resp),
            Err(e) if e.is_duplicate() => {
                // Already placed: the venue's record is the answer.
                match self.client.get_order(&signed.order_hash).await {
                    Ok(Some(found)) => on_found(intent_id, order, &found),
                    Ok(None) => {
                        return Err(VenueError::OutcomeUnknown {
                            venue: VENUE.into(),
                            cause: Unknown::LostResponse,
                            message: format!(
                                "{e}, yet GET /data/order does not know {}",
                                signed.order_hash
                            ),
                        });
                    }
                    Err(lookup) => {
                        return Err(VenueError::OutcomeUnknown {
                            venue: VENUE.into(),
                            cause: Unknown::LostResponse,
                            message: format!("{e}; then {lookup}"),
                        });
                    }
                }
            }
            Err(ClobError::Rejected { code, message, .. }) => {
                // The venue refused this order: an answer for the strategy, not an outage.
                let status = if code == Some(RejectCode::FokOrderNotFilled) {
                    OrderStatus::Cancelled
                } else {
                    OrderStatus::Rejected
                };
                if let Some(o) = self.orders.lock().get_mut(intent_id) {
                    o.refused = Some((status, message.clone()));
                }
                Outcome {
                    events: vec![update(
                        intent_id,
                        &order.market,
                        status,
                        0.0,
                        order.size,
                        Some(message),
                    )],
                    matched: 0.0,
                    resting: false,
                }
            }
            Err(e) => {
                let err = classify(&e, "");
                if matches!(err, VenueError::OutcomeUnknown { .. })
                    && let Some(o) = self.orders.lock().get_mut(intent_id)
                {
                    // May rest at the venue: kept alive by heartbeats and
                    // polled until the caller looks it up.
                    o.resting = true;
                }
                return Err(err);
            }
        };
        if let Some(o) = self.orders.lock().get_mut(intent_id) {
            o.matched = outcome.matched;
            o.resting = outcome.resting;
        }
        book_fills(&mut self.ledger, &outcome.events);
        Ok(outcome.events)
    }

    async fn cancel(&mut self, intent_id: &str) -> Result<Vec<EventKind>, VenueError> {
        let Some(o) = self.orders.lock().get(intent_id).cloned() else {
            return Ok(vec![update(
                intent_id,
                "",
                OrderStatus::Rejected,
                0.0,
                0.0,
                Some("unknown order".into()),
            )]);
        };
        let resp = self
            .client
            .cancel_order(&o.hash)
            .await
            .map_err(|e| classify(&e, ""))?;
        let remaining = clean(o.size - o.matched);
        if resp.canceled.iter().any(|h| h == &o.hash) {
            if let Some(o) = self.orders.lock().get_mut(intent_id) {
                o.resting = false;
            }
            return Ok(vec![update(
                intent_id,
                &o.market,
                OrderStatus::Cancelled,
                o.matched,
                remaining,
                Some("cancelled on request".into()),
            )]);
        }
        let reason = resp
            .not_canceled
            .get(&o.hash)
            .cloned()
            .unwrap_or_else(|| "the venue did not cancel it".into());
        Ok(vec![update(
            intent_id,
            &o.market,
            OrderStatus::Rejected,
            o.matched,
            remaining,
            Some(reason),
        )])
    }

    async fn open_orders(&self) -> Result<Vec<OrderUpdate>, VenueError> {
        let (intents, tokens) = {
            let orders = self.orders.lock();
            let intents: HashMap<String, String> = orders
                .iter()
                .map(|(id, o)| (o.hash.clone(), id.clone()))
                .collect();
            let mut tokens: Vec<String> = orders.values().map(|o| o.market.clone()).collect();
            tokens.sort();
            tokens.dedup();
            (intents, tokens)
        };
        let mut open = Vec::new();
        // Only tokens this process traded: no order placed, nothing of ours open.
        for token in &tokens {
            let found = self
                .client
                .open_orders(None, Some(token))
                .await
                .map_err(|e| classify(&e, ""))?;
            open.extend(
                found
                    .iter()
                    .filter_map(|f| Some(venue_update(intents.get(&f.id)?, f))),
            );
        }
        Ok(open)
    }

    async fn trades(&self, since_ms: u64) -> Result<Vec<VenueTrade>, VenueError> {
        let all = self.client.trades().await.map_err(|e| classify(&e, ""))?;
        Ok(our_trades(&self.orders, all, since_ms))
    }

    async fn lookup(&self, intent_id: &str) -> Result<Option<OrderUpdate>, VenueError> {
        let Some(o) = self.orders.lock().get(intent_id).cloned() else {
            return Ok(None);
        };
        if let Some((status, reason)) = o.refused {
            return Ok(Some(OrderUpdate {
                intent_id: intent_id.to_string(),
                market: o.market,
                status,
                filled_size: 0.0,
                remaining_size: o.size,
                reason: Some(reason),
            }));
        }
        match self
            .client
            .get_order(&o.hash)
            .await
            .map_err(|e| classify(&e, ""))?
        {
            Some(found) => {
                let update = venue_update(intent_id, &found);
                if let Some(o) = self.orders.lock().get_mut(intent_id) {
                    // Heartbeats and polls follow what the venue holds.
                    o.resting = matches!(
                        update.status,
                        OrderStatus::Open | OrderStatus::PartiallyFilled
                    );
                    // Matched size this process never reported (its answer was
                    // lost, or it matched while no process watched): reported
                    // like a poll's finding, so an order that is no longer
                    // polled still has its fill told. The execution layer
                    // tells each share once.
                    let matched = found.size_matched.min(o.size);
                    let new = clean(matched - o.matched);
                    if new > 0.0 {
                        let events = vec![
                            EventKind::Fill(Fill {
                                intent_id: intent_id.to_string(),
                                market: o.market.clone(),
                                side: o.side,
                                price: found.price,
                                size: new,
                                fee: 0.0,
                            }),
                            EventKind::OrderUpdate(update.clone()),
                        ];
                        // A full channel leaves the mark where it was: the next
                        // lookup or poll reports the size again.
                        if self.reports.try_send(events).is_ok() {
                            o.matched = matched;
                        }
                    }
                }
                Ok(Some(update))
            }
            // Accepted as delayed: the venue has it but does not show it yet.
            None if o.resting => Ok(Some(OrderUpdate {
                intent_id: intent_id.to_string(),
                market: o.market,
                status: OrderStatus::Open,
                filled_size: o.matched,
                remaining_size: clean(o.size - o.matched),
                reason: Some("accepted, not yet visible on the venue".into()),
            })),
            // Sent, but the request never reached the venue.
            None => Ok(None),
        }
    }
}

/// Keeps resting live orders alive and watches them: every [`UPKEEP_EVERY`],
/// if any order rests, one dead-man heartbeat and one lookup per resting order.
/// Each call is made once; a failure waits for the next round.
async fn upkeep(client: ClobClient, orders: Tracked, tx: mpsc::Sender<Vec<EventKind>>) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat_id = String::new();
    let mut failing = false;
    let mut settlement = Settlement::default();
    loop {
        every.tick().await;
        let (resting, unsettled) = {
            let orders = orders.lock();
            let resting: Vec<(String, String)> = orders
                .iter()
                .filter(|(_, o)| o.resting)
                .map(|(id, o)| (id.clone(), o.hash.clone()))
                .collect();
            (resting, settlement.pending(&orders))
        };
        if unsettled {
            match client.trades().await {
                Ok(all) => {
                    let events = settlement.follow(&orders, our_trades(&orders, all, 0));
                    if !events.is_empty() && tx.send(events).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(venue = VENUE, "settlement: {e}"),
            }
        }
        if resting.is_empty() && !failing {
            // Nothing to protect; the next resting order starts a new session.
            heartbeat_id.clear();
            continue;
        }
        // While heartbeats fail they are tried even with nothing resting:
        // placement is held until one succeeds.
        let status = match client.heartbeat(&heartbeat_id).await {
            Ok(r) => {
                heartbeat_id = r.heartbeat_id;
                std::mem::take(&mut failing).then(|| {
                    (
                        VenueHealth::Recovered,
                        format!("{HEARTBEAT_BACK}; reconcile resting orders"),
                    )
                })
            }
            Err(e) => {
                tracing::warn!(venue = VENUE, "{e}");
                heartbeat_id.clear();
                (!std::mem::replace(&mut failing, true)).then(|| {
                    (
                        VenueHealth::Degraded,
                        format!("{HEARTBEAT_LOST}: {e}; the venue may cancel resting orders"),
                    )
                })
            }
        };
        // Heartbeat trouble reaches the strategy (and the execution layer, which
        // holds placement and reconciles), once per change.
        if let Some((health, detail)) = status {
            let event = EventKind::VenueStatus(VenueStatus {
                venue: VENUE.into(),
                health,
                detail,
            });
            if tx.send(vec![event]).await.is_err() {
                return;
            }
        }
        for (intent_id, hash) in resting {
            let found = match client.get_order(&hash).await {
                Ok(Some(found)) => found,
                // Not visible yet (a delayed order): look again next round.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(venue = VENUE, intent = %intent_id, "{e}");
                    continue;
                }
            };
            let events = match orders.lock().get_mut(&intent_id) {
                // Cancelled on request meanwhile: that answer was already given.
                Some(o) if o.resting => reconcile(&intent_id, o, &found),
                _ => continue,
            };
            if !events.is_empty() && tx.send(events).await.is_err() {
                return;
            }
        }
    }
}

/// What placing an order produced.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    events: Vec<EventKind>,
    matched: f64,
    resting: bool,
}

/// Maps a `POST /order` answer: a fill for what matched at once (at the
/// average price of the matched amounts), then the order's state.
fn on_posted(intent_id: &str, order: &PlaceOrder, resp: &PostOrderResponse) -> Outcome {
    let (usdc, shares) = match order.side {
        Side::Buy => (resp.making_amount, resp.taking_amount),
        Side::Sell => (resp.taking_amount, resp.making_amount),
    };
    let status = resp.status.clone().unwrap_or(WireStatus::Live);
    let shares = match shares.filter(|s| *s > EPS) {
        Some(s) => s.min(order.size),
        // A match reported without amounts filled the whole order at its limit.
        None if status == WireStatus::Matched => order.size,
        None => 0.0,
    };
    let price = match usdc {
        Some(u) if shares > EPS && u > 0.0 => ((u / shares) * 1e6).round() / 1e6,
        _ => order.price,
    };
    let mut events = Vec::new();
    if shares > EPS {
        events.push(fill(intent_id, order, price, shares));
    }
    let remaining = clean(order.size - shares);
    let (state, reason, resting) = match status {
        WireStatus::Matched if remaining <= 0.0 => (OrderStatus::Filled, None, false),
        WireStatus::Matched => (
            OrderStatus::Cancelled,
            Some(format!("fill-and-kill: unfilled {remaining} cancelled")),
            false,
        ),
        WireStatus::Unmatched => (
            OrderStatus::Cancelled,
            Some(format!(
                "unmatched: nothing available at {} or better",
                order.price
            )),
            false,
        ),
        WireStatus::Canceled => (
            OrderStatus::Cancelled,
            Some("cancelled by the venue".into()),
            false,
        ),
        WireStatus::Live if shares > EPS => (OrderStatus::PartiallyFilled, None, true),
        WireStatus::Live => (OrderStatus::Open, None, true),
        WireStatus::Delayed => (OrderStatus::Open, Some("delayed by the venue".into()), true),
        WireStatus::Other(s) => (OrderStatus::Open, Some(format!("venue status {s}")), true),
    };
    events.push(update(
        intent_id,
        &order.market,
        state,
        shares,
        remaining,
        reason,
    ));
    Outcome {
        events,
        matched: shares,
        resting,
    }
}

/// Maps the venue's record of an order this venue sent but got no answer
/// for (a duplicate, or a lost acknowledgement).
fn on_found(intent_id: &str, order: &PlaceOrder, found: &OpenOrder) -> Outcome {
    let mut o = LiveOrder {
        hash: found.id.clone(),
        signed: None,
        market: order.market.clone(),
        side: order.side,
        price: order.price,
        size: order.size,
        matched: 0.0,
        reversed_before: 0.0,
        resting: true,
        refused: None,
    };
    let mut events = reconcile(intent_id, &mut o, found);
    if events.is_empty() {
        events.push(update(
            intent_id,
            &order.market,
            OrderStatus::Open,
            0.0,
            order.size,
            Some("already placed".into()),
        ));
    }
    Outcome {
        events,
        matched: o.matched,
        resting: o.resting,
    }
}

/// Brings `o` up to the venue's record: a fill for newly matched size (at the
/// order's price: a resting order fills at its limit), and an update when its
/// state changed.
fn reconcile(intent_id: &str, o: &mut LiveOrder, found: &OpenOrder) -> Vec<EventKind> {
    let mut events = Vec::new();
    let matched = found.size_matched.min(o.size);
    let new = clean(matched - o.matched);
    if new > 0.0 {
        events.push(EventKind::Fill(Fill {
            intent_id: intent_id.to_string(),
            market: o.market.clone(),
            side: o.side,
            price: found.price,
            size: new,
            fee: 0.0,
        }));
        o.matched = matched;
    }
    let remaining = clean(o.size - o.matched);
    let (status, reason) = match &found.status {
        WireStatus::Matched => (Some(OrderStatus::Filled), None),
        WireStatus::Canceled | WireStatus::Unmatched => (
            Some(OrderStatus::Cancelled),
            Some("cancelled by the venue".to_string()),
        ),
        WireStatus::Live if new > 0.0 => (Some(OrderStatus::PartiallyFilled), None),
        _ => (None, None),
    };
    if let Some(status) = status {
        if status != OrderStatus::PartiallyFilled {
            o.resting = false;
        }
        events.push(update(
            intent_id, &o.market, status, o.matched, remaining, reason,
        ));
    }
    events
}

/// The venue's record of an order as a contract order update, stated the way
/// [`on_posted`] states the answer to placing it.
fn venue_update(intent_id: &str, found: &OpenOrder) -> OrderUpdate {
    let filled = clean(found.size_matched.min(found.original_size));
    let remaining = clean(found.original_size - filled);
    let (status, reason) = match &found.status {
        WireStatus::Matched if remaining <= 0.0 => (OrderStatus::Filled, None),
        WireStatus::Matched => (
            OrderStatus::Cancelled,
            Some(format!("fill-and-kill: unfilled {remaining} cancelled")),
        ),
        WireStatus::Canceled | WireStatus::Unmatched => (
            OrderStatus::Cancelled,
            Some(format!("venue status {}", found.status.as_str())),
        ),
        WireStatus::Live if filled > 0.0 => (OrderStatus::PartiallyFilled, None),
        WireStatus::Live => (OrderStatus::Open, None),
        WireStatus::Delayed => (OrderStatus::Open, Some("delayed by the venue".into())),
        WireStatus::Other(s) => (OrderStatus::Open, Some(format!("venue status {s}"))),
    };
    OrderUpdate {
        intent_id: intent_id.to_string(),
        market: found.asset_id.clone(),
        status,
        filled_size: filled,
        remaining_size: remaining,
        reason,
    }
}

/// Books every fill among `events` (a negative size is a reversal) in `ledger`.
fn book_fills(ledger: &mut Ledger, events: &[EventKind]) {
    for e in events {
        if let EventKind::Fill(f) = e {
            ledger.apply(f);
        }
    }
}

fn contract_book(book: &OrderBook) -> Book {
    let levels = |ls: &[polybot_polymarket::types::Level]| {
        ls.iter()
            .map(|l| Level {
                price: l.price,
                size: l.size,
            })
            .collect()
    };
    Book {
        market: book.asset_id.clone(),
        bids: levels(&book.bids),
        asks: levels(&book.asks),
    }
}

fn side_to_wire(side: Side) -> WireSide {
    match side {
        Side::Buy => WireSide::Buy,
        Side::Sell => WireSide::Sell,
    }
}

fn side_from_wire(side: WireSide) -> Side {
    match side {
        WireSide::Buy => Side::Buy,
        WireSide::Sell => Side::Sell,
    }
}

fn clean(x: f64) -> f64 {
    if x.abs() <= EPS { 0.0 } else { x }
}

fn fill(intent_id: &str, order: &PlaceOrder, price: f64, size: f64) -> EventKind {
    EventKind::Fill(Fill {
        intent_id: intent_id.to_string(),
        market: order.market.clone(),
        side: order.side,
        price,
        size,
        fee: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use polybot_polymarket::auth::Secret;
    use polybot_polymarket::server::{FeedHandle, SimHandle, SimOptions, SimServer};

    use super::*;

    /// Hardhat's first well-known test key; holds nothing anywhere.
    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const YES: &str = "1001";
    const NO: &str = "1002";

    async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
        match tokio::time::timeout(Duration::from_secs(10), fut).await {
            Ok(v) => v,
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }

    async fn sim() -> (SimHandle, FeedHandle) {
        let (server, feed) =
            SimServer::start("127.0.0.1:0".parse().expect("addr"), SimOptions::default())
                .await
                .expect("local server");
        feed.publish_book(YES, "0xc1", &[(0.48, 30.0)], &[(0.52, 25.0)], 1_000);
        feed.publish_book(NO, "0xc1", &[(0.47, 20.0)], &[(0.53, 20.0)], 1_000);
        (server, feed)
    }

    fn config(server: &SimHandle, execution: Execution) -> PolymarketConfig {
        PolymarketConfig {
            clob_url: server.base_url(),
            ws_url: server.ws_url(),
            gamma_url: server.gamma_url(),
            tokens: vec![YES.into()],
            stall_timeout: Duration::from_secs(30),
            execution,
        }
    }

    fn live(server: &SimHandle) -> Execution {
        let c = server.credentials();
        let address = OrderSigner::from_private_key(KEY)
            .expect("key")
            .address()
            .to_checksum(None);
        Execution::Live(LiveConfig {
            strategy: "unit".into(),
            credentials: Credentials {
                api_key: c.api_key.clone(),
                secret: Secret::new(c.secret.clone()),
                passphrase: Secret::new(c.passphrase.clone()),
                address,
                private_key: Some(Secret::new(KEY)),
            },
        })
    }

    fn order(side: Side, price: f64, size: f64, order_type: OrderType) -> PlaceOrder {
        PlaceOrder {
            market: YES.into(),
            side,
            price,
            size,
            order_type,
        }
    }

    fn last_update(events: &[EventKind]) -> &OrderUpdate {
        match events.last() {
            Some(EventKind::OrderUpdate(u)) => u,
            other => panic!("expected an order update last, got {other:?}"),
        }
    }

    fn response(status: &str, making: Option<f64>, taking: Option<f64>) -> PostOrderResponse {
        PostOrderResponse {
            success: true,
            error_msg: String::new(),
            order_id: "0xabc".into(),
            status: Some(WireStatus::parse(status)),
            making_amount: making,
            taking_amount: taking,
            transactions_hashes: Vec::new(),
            trade_ids: Vec::new(),
        }
    }

    #[test]
    fn post_responses_map_to_fills_and_updates() {
        let buy = order(Side::Buy, 0.53, 30.0, OrderType::Fak);
        // 25 @ 0.52 + 5 @ 0.53: one fill at the average price, then filled.
        let out = on_posted("1.0", &buy, &response("matched", Some(15.65), Some(30.0)));
        let EventKind::Fill(f) = &out.events[0] else {
            panic!("{:?}", out.events)
        };
        assert_eq!((f.price, f.size, f.side), (0.521667, 30.0, Side::Buy));
        assert_eq!(last_update(&out.events).status, OrderStatus::Filled);
        assert!(!out.resting);

        // A partial fill-and-kill: the rest is cancelled.
        let out = on_posted("1.1", &buy, &response("matched", Some(5.2), Some(10.0)));
        let u = last_update(&out.events);
        assert_eq!(u.status, OrderStatus::Cancelled);
        assert_eq!((u.filled_size, u.remaining_size), (10.0, 20.0));

        // A sell's amounts are the other way round.
        let sell = order(Side::Sell, 0.48, 10.0, OrderType::Gtc);
        let out = on_posted("1.2", &sell, &response("live", Some(4.0), Some(1.92)));
        let EventKind::Fill(f) = &out.events[0] else {
            panic!("{:?}", out.events)
        };
        assert_eq!((f.price, f.size), (0.48, 4.0));
        assert_eq!(
            last_update(&out.events).status,
            OrderStatus::PartiallyFilled
        );
        assert!(out.resting);

        let out = on_posted("1.3", &sell, &response("live", None, None));
        assert_eq!(out.events.len(), 1);
        assert_eq!(last_update(&out.events).status, OrderStatus::Open);
        let out = on_posted("1.4", &sell, &response("delayed", None, None));
        assert_eq!(last_update(&out.events).status, OrderStatus::Open);
        assert!(out.resting);
        let out = on_posted("1.5", &buy, &response("unmatched", None, None));
        assert_eq!(last_update(&out.events).status, OrderStatus::Cancelled);
        assert!(!out.resting);
    }

    #[test]
    fn polled_orders_report_new_fills_and_their_end() {
        let mut o = LiveOrder {
            hash: "0xabc".into(),
            signed: None,
            market: YES.into(),
            side: Side::Buy,
            price: 0.40,
            size: 10.0,
            matched: 2.0,
            reversed_before: 0.0,
            resting: true,
            refused: None,
        };
        let mut found = OpenOrder {
            id: "0xabc".into(),
            status: WireStatus::Live,
            market: "0xc1".into(),
            asset_id: YES.into(),
            side: WireSide::Buy,
            original_size: 10.0,
            size_matched: 2.0,
            price: 0.40,
            created_at: None,
            expiration: None,
            order_type: None,
        };
        assert!(reconcile("1.0", &mut o, &found).is_empty(), "nothing new");
        found.size_matched = 6.0;
        let ev = reconcile("1.0", &mut o, &found);
        assert!(matches!(&ev[0], EventKind::Fill(f) if f.size == 4.0 && f.price == 0.40));
        assert_eq!(last_update(&ev).status, OrderStatus::PartiallyFilled);
        assert!(o.resting);
        found.status = WireStatus::Canceled;
        let ev = reconcile("1.0", &mut o, &found);
        let u = last_update(&ev);
        assert_eq!(ev.len(), 1);
        assert_eq!(u.status, OrderStatus::Cancelled);
        assert_eq!((u.filled_size, u.remaining_size), (6.0, 4.0));
        assert!(!o.resting);
    }

    #[test]
    fn venue_records_map_to_order_updates() {
        let record = |status: &str, matched: f64| OpenOrder {
            id: "0xabc".into(),
            status: WireStatus::parse(status),
            market: "0xc1".into(),
            asset_id: YES.into(),
            side: WireSide::Buy,
            original_size: 10.0,
            size_matched: matched,
            price: 0.40,
            created_at: None,
            expiration: None,
            order_type: None,
        };
        let state = |status: &str, matched: f64| {
            let u = venue_update("1.0", &record(status, matched));
            assert_eq!((u.intent_id.as_str(), u.market.as_str()), ("1.0", YES));
            (u.status, u.filled_size, u.remaining_size)
        };
        assert_eq!(state("LIVE", 0.0), (OrderStatus::Open, 0.0, 10.0));
        assert_eq!(state("LIVE", 4.0), (OrderStatus::PartiallyFilled, 4.0, 6.0));
        assert_eq!(state("MATCHED", 10.0), (OrderStatus::Filled, 10.0, 0.0));
        // A fill-and-kill that matched part: the rest was cancelled.
        assert_eq!(state("MATCHED", 4.0), (OrderStatus::Cancelled, 4.0, 6.0));
        assert_eq!(state("CANCELED", 4.0), (OrderStatus::Cancelled, 4.0, 6.0));
        assert_eq!(state("UNMATCHED", 0.0), (OrderStatus::Cancelled, 0.0, 10.0));
        assert_eq!(state("DELAYED", 0.0), (OrderStatus::Open, 0.0, 10.0));
    }

    #[test]
    fn urls_are_checked() {
        assert!(
            check_url(
                "--clob-url",
                "https://clob.polymarket.com",
                &["http", "https"]
            )
            .is_ok()
        );
        assert!(check_url("--ws-url", "ws://127.0.0.1:9/ws/market", &["ws", "wss"]).is_ok());
        for bad in [
            "clob.polymarket.com",
            "ftp://x",
            "http://",
            "http:///x",
            "ws://a b",
        ] {
            let err = check_url("--clob-url", bad, &["http", "https"]).expect_err(bad);
            assert!(err.to_string().contains("--clob-url"), "{err}");
        }
    }

    #[test]
    fn live_ledger_follows_fills() {
        let mut l = Ledger::default();
        let f = |side, price, size| Fill {
            intent_id: "x".into(),
            market: YES.into(),
            side,
            price,
            size,
            fee: 0.0,
        };
        l.apply(&f(Side::Buy, 0.40, 10.0));
        l.apply(&f(Side::Buy, 0.50, 10.0));
        l.apply(&f(Side::Sell, 0.60, 10.0));
        let s = l.summary(|_| Some(0.70));
        assert!((s.realized_pnl - 1.5).abs() < 1e-9, "{s:?}");
        assert!((s.unrealized_pnl - 2.5).abs() < 1e-9, "{s:?}");
        assert!((s.cash - (-9.0 + 6.0)).abs() < 1e-9, "{s:?}");
        assert_eq!((s.fills, s.volume), (3, 30.0));
    }

    #[tokio::test]
    async fn paper_books_fills_and_health_come_as_events() {
        let (server, feed) = sim().await;
        let mut v = within(
            "connect",
            PolymarketVenue::connect(config(&server, Execution::Paper(PaperConfig::default()))),
        )
        .await
        .expect("connect");
        // The subscription's snapshot; the unconfigured token is not shown.
        let tick = within("book", v.next_tick())
            .await
            .expect("tick")
            .expect("feed");
        assert_eq!(tick.timestamp_ms, 1_000);
        let [EventKind::Book(b)] = tick.events.as_slice() else {
            panic!("{:?}", tick.events)
        };
        assert_eq!(
            (b.market.as_str(), b.best_bid(), b.best_ask()),
            (YES, Some(0.48), Some(0.52))
        );

        // A resting paper buy fills on the book that crosses it, right after it.
        let ev = v
            .place_order("1.0", &order(Side::Buy, 0.50, 10.0, OrderType::Gtc))
            .await
            .expect("place");
        assert_eq!(last_update(&ev).status, OrderStatus::Open);
        feed.publish_book(YES, "0xc1", &[(0.45, 30.0)], &[(0.50, 25.0)], 2_000);
        let tick = within("crossing book", v.next_tick())
            .await
            .expect("tick")
            .expect("feed");
        assert_eq!(tick.timestamp_ms, 2_000);
        assert!(matches!(&tick.events[0], EventKind::Book(b) if b.best_ask() == Some(0.50)));
        assert!(
            matches!(&tick.events[1], EventKind::Fill(f) if f.intent_id == "1.0" && f.size == 10.0)
        );
        assert_eq!(last_update(&tick.events).status, OrderStatus::Filled);
        assert_eq!(v.portfolio().fills, 1);
        assert!(server.orders().is_empty(), "paper orders stay in the host");

        // Health: one degraded per outage, however many notices; then recovered.
        let (_, ev) = v.on_message(StreamMessage::Stalled {
            silent_for: Duration::from_secs(30),
        });
        assert!(
            matches!(&ev[..], [EventKind::VenueStatus(s)] if s.health == VenueHealth::Degraded)
        );
        let (_, ev) = v.on_message(StreamMessage::Disconnected {
            reason: "refused".into(),
        });
        assert!(ev.is_empty());
        let (_, ev) = v.on_message(StreamMessage::Reconnected {
            attempt: 2,
            failed: Vec::new(),
        });
        assert!(
            matches!(&ev[..], [EventKind::VenueStatus(s)] if s.health == VenueHealth::Recovered)
        );

        // Event time never goes back.
        feed.publish_book(YES, "0xc1", &[(0.44, 30.0)], &[(0.50, 25.0)], 1_500);
        let tick = within("late book", v.next_tick())
            .await
            .expect("tick")
            .expect("feed");
        assert_eq!(tick.timestamp_ms, 2_000);
    }

    #[tokio::test]
    async fn live_orders_are_known_by_hash_before_sending_and_sent_once() {
        let (server, _feed) = sim().await;
        let mut v = within(
            "connect",
            PolymarketVenue::connect(config(&server, live(&server))),
        )
        .await
        .expect("connect");
        within("book", v.next_tick())
            .await
            .expect("tick")
            .expect("feed");

        // Resting: open, known by the hash the venue uses.
        let rest = order(Side::Buy, 0.40, 10.0, OrderType::Gtc);
        let ev = v.place_order("5.0", &rest).await.expect("place");
        assert_eq!(last_update(&ev).status, OrderStatus::Open);
        let hash = v.order_hash("5.0").expect("hash");
        assert_eq!(
            server
                .orders()
                .iter()
                .map(|o| o.id.clone())
                .collect::<Vec<_>>(),
            std::slice::from_ref(&hash)
        );

        // The same intent again is the same order: recognised, not placed twice.
        let ev = v.place_order("5.0", &rest).await.expect("place again");
        assert_eq!(last_update(&ev).status, OrderStatus::Open);
        assert_eq!(server.orders().len(), 1);

        let ev = v.cancel_order("5.0").await.expect("cancel");
        assert_eq!(last_update(&ev).status, OrderStatus::Cancelled);
        let ev = v.cancel_order("5.0").await.expect("cancel again");
        assert_eq!(last_update(&ev).status, OrderStatus::Rejected);

        // Marketable fill-and-kill: filled at once from the book.
        let ev = v
            .place_order("6.0", &order(Side::Buy, 0.52, 10.0, OrderType::Fak))
            .await
            .expect("take");
        assert!(matches!(&ev[0], EventKind::Fill(f) if f.price == 0.52 && f.size == 10.0));
        assert_eq!(last_update(&ev).status, OrderStatus::Filled);
        assert_eq!(v.portfolio().fills, 1);

        // A refusal is an answer for the strategy, not an error.
        let ev = v
            .place_order("7.0", &order(Side::Buy, 0.523, 10.0, OrderType::Gtc))
            .await
            .expect("refused");
        assert_eq!(last_update(&ev).status, OrderStatus::Rejected);
        let ev = v
            .place_order("8.0", &order(Side::Buy, 0.40, 0.5, OrderType::Gtc))
            .await
            .expect("refused by the venue");
        let u = last_update(&ev);
        assert_eq!(u.status, OrderStatus::Rejected);
        assert!(
            u.reason.as_deref().unwrap_or_default().contains("MIN_SIZE"),
            "{u:?}"
        );
    }

    /// A trade that ends `FAILED` reverses its fill: a negative fill and an
    /// order update come as events, and the ledger's cash and position are
    /// as if it never happened; a `CONFIRMED` trade stays booked.
    #[tokio::test]
    async fn a_failed_trade_reverses_its_fill_and_a_confirmed_one_stays() {
        let (server, _feed) = sim().await;
        let mut v = within(
            "connect",
            PolymarketVenue::connect(config(&server, live(&server))),
        )
        .await
        .expect("connect");
        within("book", v.next_tick())
            .await
            .expect("tick")
            .expect("feed");
        let take = order(Side::Buy, 0.52, 10.0, OrderType::Fak);
        for id in ["1.0", "2.0"] {
            let ev = v.place_order(id, &take).await.expect("take");
            assert_eq!(last_update(&ev).status, OrderStatus::Filled);
        }
        assert!((v.portfolio().cash + 10.4).abs() < 1e-9);
        let trade_of = |id: &str| {
            let hash = v.order_hash(id).expect("hash");
            server
                .trades()
                .into_iter()
                .find(|t| t.taker_order_id.as_deref() == Some(hash.as_str()))
                .expect("a trade of the order")
                .id
        };
        let (kept, failed) = (trade_of("1.0"), trade_of("2.0"));
        for status in ["MINED", "CONFIRMED"] {
            assert!(server.set_trade_status(&kept, status));
        }
        assert!(server.set_trade_status(&failed, "RETRYING"));
        assert!(server.set_trade_status(&failed, "FAILED"));

        // The upkeep task reads the trades within a round or two.
        let events = within("the reversal", async {
            loop {
                let tick = tokio::time::timeout(UPKEEP_EVERY * 3, v.next_tick())
                    .await
                    .expect("a reversal within three upkeep rounds")
                    .expect("tick")
                    .expect("feed");
                if tick
                    .events
                    .iter()
                    .any(|e| matches!(e, EventKind::Fill(f) if f.size < 0.0))
                {
                    return tick.events;
                }
            }
        })
        .await;
        let reversals: Vec<&Fill> = events
            .iter()
            .filter_map(|e| match e {
                EventKind::Fill(f) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(reversals.len(), 1, "{events:?}");
        let f = reversals[0];
        assert_eq!((f.intent_id.as_str(), f.side), ("2.0", Side::Buy));
        assert_eq!((f.price, f.size), (0.52, -10.0));
        let u = last_update(&events);
        assert_eq!(u.intent_id, "2.0");
        assert_eq!((u.status, u.filled_size), (OrderStatus::Cancelled, 0.0));
        assert!(
            u.reason
                .as_deref()
                .unwrap_or_default()
                .starts_with(TRADE_FAILED),
            "{u:?}"
        );
        // Cash and position: the confirmed buy only.
        let s = v.portfolio();
        assert!((s.cash + 5.2).abs() < 1e-9, "{s:?}");
        assert_eq!((s.fills, s.volume), (1, 10.0));
        let Exec::Live(live) = &v.exec else {
            panic!("live")
        };
        assert!((live.ledger.position(YES) - 10.0).abs() < 1e-9);
        // Final trades are not reported again.
        assert!(live.ledger.uncovered() == 0.0);
    }

    #[tokio::test]
    async fn bad_endpoints_and_credentials_fail_at_connect() {
        let (server, _feed) = sim().await;
        let mut cfg = config(&server, Execution::Paper(PaperConfig::default()));
        cfg.tokens = vec!["999".into()];
        let err = PolymarketVenue::connect(cfg)
            .await
            .err()
            .expect("unknown token");
        assert!(err.to_string().contains("token 999"), "{err}");

        let mut cfg = config(&server, Execution::Paper(PaperConfig::default()));
        cfg.ws_url = format!("ws://{}/nowhere", server.addr());
        let err = PolymarketVenue::connect(cfg)
            .await
            .err()
            .expect("no socket there");
        assert!(err.to_string().contains("market WebSocket"), "{err}");

        let Execution::Live(mut bad) = live(&server) else {
            unreachable!()
        };
        bad.credentials.passphrase = Secret::new("wrong");
        let err = PolymarketVenue::connect(config(&server, Execution::Live(bad)))
            .await
            .err()
            .expect("bad credentials");
        assert!(err.to_string().contains("401"), "{err}");
        assert!(!err.to_string().contains(KEY), "no secrets in errors");
    }
}
