//! A local server speaking the CLOB V2 REST API, the Gamma `/markets` listing and the market
//! WebSocket, with fault injection — the thing tests (and offline runs) point the real clients at.
//!
//! Owns: starting and stopping the server ([`SimServer::start`]), the [`FeedHandle`] through
//! which embedding code drives market data, the [`SimHandle`] to inspect and fault it, and the
//! dead-man switch timer. Routes live in `routes` (REST) and `ws` (socket); state and matching in
//! `state`; fault plans in `faults`.
//!
//! Does not own: anything the clients do. It binds where it is told (tests use 127.0.0.1:0) and
//! never reaches out to the network.

mod faults;
mod routes;
mod state;
mod ws;

pub use faults::{Fault, FaultPlan, FaultPlanError, FaultRule};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::types::{Level, MarketEvent, OpenOrder, OrderBook, Side, TickSizeChange};
use faults::FaultEngine;
use state::{Frame, SimState};

/// Which key `/midpoint` answers with (the docs and the official SDK disagree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MidpointShape {
    #[default]
    Mid,
    MidPrice,
}

/// The one API credential the server accepts for L2 requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCredentials {
    pub api_key: String,
    /// base64url, as the venue issues it.
    pub secret: String,
    pub passphrase: String,
}

impl SimCredentials {
    /// A fixed test credential (matches nothing real).
    pub fn test() -> Self {
        SimCredentials {
            api_key: "00000000-0000-4000-8000-000000000001".into(),
            secret: "c2ltLXNlY3JldC1ub3QtcmVhbC0xMjM0NTY3ODkw".into(),
            passphrase: "sim-passphrase".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub midpoint_shape: MidpointShape,
    pub credentials: SimCredentials,
    /// Check that each posted order's signature recovers to its `signer`.
    pub verify_signatures: bool,
    /// Once a heartbeat was received, this long without one cancels every open order.
    pub heartbeat_timeout: Duration,
    /// Items per page of `/markets`, `/data/orders` and `/data/trades`.
    pub page_size: usize,
    pub faults: FaultPlan,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            midpoint_shape: MidpointShape::Mid,
            credentials: SimCredentials::test(),
            verify_signatures: true,
            // The venue's documented 10 s plus its 5 s grace.
            heartbeat_timeout: Duration::from_secs(15),
            page_size: 100,
            faults: FaultPlan::default(),
        }
    }
}

/// State shared by every route and handle.
pub(crate) struct Shared {
    state: Mutex<SimState>,
    faults: Mutex<FaultEngine>,
    events: broadcast::Sender<Arc<Frame>>,
    opts: SimOptions,
    dead_man: watch::Sender<u64>,
    /// Market WebSocket connections that have subscribed (each counted once).
    pub(crate) ws_subscribers: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// The state lock. A poisoned lock only means a handler panicked mid-update; the server
    /// keeps serving what is there rather than failing every later request.
    pub(crate) fn state(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, FaultEngine> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a frame to subscribed sockets; no subscribers is not an error.
    pub(crate) fn broadcast(&self, frame: Option<Frame>) {
        if let Some(f) = frame {
            let _ = self.events.send(Arc::new(f));
        }
    }
}

pub struct SimServer;

impl SimServer {
    /// Binds `addr` (use port 0 for a free port) and serves until the [`SimHandle`] is dropped.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start(
        addr: SocketAddr,
        options: SimOptions,
    ) -> std::io::Result<(SimHandle, FeedHandle)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            state: Mutex::new(SimState::default()),
            faults: Mutex::new(FaultEngine::new(options.faults.clone())),
            events,
            dead_man: watch::channel(0).0,
            ws_subscribers: std::sync::atomic::AtomicU64::new(0),
            opts: options,
        });
        let app = routes::router(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "local CLOB server stopped");
            }
        });
        let dead_man = tokio::spawn(dead_man_switch(shared.clone()));
        Ok((
            SimHandle {
                addr,
                shared: shared.clone(),
                tasks: vec![server, dead_man],
            },
            FeedHandle { shared },
        ))
    }
}

/// Cancels every open order when heartbeats stop. Checks at a tenth of the timeout so the
/// cancel happens within 110 % of it.
async fn dead_man_switch(shared: Arc<Shared>) {
    let timeout = shared.opts.heartbeat_timeout;
    let mut tick = tokio::time::interval((timeout / 10).max(Duration::from_millis(5)));
    loop {
        tick.tick().await;
        let fired = {
            let mut st = shared.state();
            match &st.heartbeat {
                Some(hb) if hb.last.elapsed() > timeout => {
                    let ids = st.live_ids(None, None);
                    st.cancel(ids.iter().map(String::as_str));
                    st.heartbeat = None;
                    tracing::info!(canceled = ids.len(), "dead-man switch: heartbeats stopped");
                    true
                }
                _ => false,
            }
        };
        if fired {
            shared.dead_man.send_modify(|n| *n += 1);
        }
    }
}

/// Owns the running server; dropping it stops it.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many market WebSocket connections have subscribed so far.
    pub fn ws_subscribers(&self) -> u64 {
        self.shared
            .ws_subscribers
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// CLOB REST base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Gamma base URL (`/markets` under it).
    pub fn gamma_url(&self) -> String {
        format!("http://{}/gamma", self.addr)
    }

    /// Market WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/market", self.addr)
    }

    pub fn credentials(&self) -> &SimCredentials {
        &self.shared.opts.credentials
    }

    /// Replaces the fault plan (same as `POST /admin/faults`).
    pub fn set_faults(&self, plan: FaultPlan) {
        *self.shared.faults() = FaultEngine::new(plan);
    }

    /// Removes every fault (same as `DELETE /admin/faults`).
    pub fn clear_faults(&self) {
        self.set_faults(FaultPlan::default());
    }

    /// The plan with its remaining counts.
    pub fn faults(&self) -> FaultPlan {
        self.shared.faults().plan().clone()
    }

    /// Counts dead-man firings; `changed().await` to wait for the next one.
    pub fn dead_man_fired(&self) -> watch::Receiver<u64> {
        self.shared.dead_man.subscribe()
    }

    /// Another participant takes `size` of the resting order `order_id` at
    /// its price (the order is the maker of a new trade). Returns the trade
    /// id, or `None` when the order is not live.
    pub fn fill_resting(&self, order_id: &str, size: f64) -> Option<String> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.shared.state().fill_resting(order_id, size, now_ms)
    }

    /// Turns the post-only window after a matching-engine restart on or off:
    /// while on, fill-and-kill and fill-or-kill orders are refused with
    /// `INVALID_POST_ONLY_ORDER`. (The 425 itself is a fault: `too_early`.)
    pub fn set_post_only(&self, on: bool) {
        self.shared.state().post_only = on;
    }

    /// Moves a trade's settlement on: `MATCHED → MINED → CONFIRMED`, or
    /// `RETRYING → FAILED` when settlement does not go through. `GET
    /// /data/trades` shows the new status. Returns false for an unknown trade.
    pub fn set_trade_status(&self, trade_id: &str, status: &str) -> bool {
        let mut st = self.shared.state();
        match st
            .trades
            .iter_mut()
            .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(trade_id))
        {
            Some(t) => {
                t["status"] = serde_json::Value::String(status.to_ascii_uppercase());
                true
            }
            None => false,
        }
    }

    /// Every trade the server recorded, as `GET /data/trades` serves them.
    pub fn trades(&self) -> Vec<crate::types::Trade> {
        let st = self.shared.state();
        let body = serde_json::json!({
            "limit": st.trades.len(),
            "count": st.trades.len(),
            "next_cursor": "LTE=",
            "data": st.trades,
        });
        crate::types::parse_trades(body.to_string().as_bytes())
            .map(|p| p.data)
            .unwrap_or_default()
    }

    /// Every order the server knows, in arrival order.
    pub fn orders(&self) -> Vec<OpenOrder> {
        let st = self.shared.state();
        st.order_ids
            .iter()
            .filter_map(|id| st.orders.get(id))
            .filter_map(|o| {
                crate::types::parse_open_order(o.to_json().to_string().as_bytes())
                    .ok()
                    .flatten()
            })
            .collect()
    }
}

/// Drives market data: what is published here is what REST serves and the socket streams.
#[derive(Clone)]
pub struct FeedHandle {
    shared: Arc<Shared>,
}

fn levels(pairs: &[(f64, f64)]) -> Vec<Level> {
    pairs
        .iter()
        .filter(|(p, s)| p.is_finite() && s.is_finite() && *s > 0.0)
        .map(|&(price, size)| Level { price, size })
        .collect()
}

impl FeedHandle {
    /// Sets a token's book from `(price, size)` pairs in any order. The first book of a token
    /// is streamed as a `book` event, later ones as a `price_change` with the differences.
    pub fn publish_book(
        &self,
        token_id: &str,
        market: &str,
        bids: &[(f64, f64)],
        asks: &[(f64, f64)],
        timestamp_ms: u64,
    ) {
        self.publish(token_id, market, bids, asks, timestamp_ms, false);
    }

    /// Like [`FeedHandle::publish_book`] but always streamed as a full `book` event.
    pub fn publish_snapshot(
        &self,
        token_id: &str,
        market: &str,
        bids: &[(f64, f64)],
        asks: &[(f64, f64)],
        timestamp_ms: u64,
    ) {
        self.publish(token_id, market, bids, asks, timestamp_ms, true);
    }

    fn publish(
        &self,
        token_id: &str,
        market: &str,
        bids: &[(f64, f64)],
        asks: &[(f64, f64)],
        ts: u64,
        snapshot: bool,
    ) {
        let mut book = OrderBook {
            market: market.to_string(),
            asset_id: token_id.to_string(),
            timestamp_ms: ts,
            bids: Vec::new(),
            asks: Vec::new(),
            min_order_size: None,
            tick_size: None,
            neg_risk: None,
            hash: None,
            last_trade_price: None,
        };
        for l in levels(bids) {
            book.apply_level(Side::Buy, l.price, l.size);
        }
        for l in levels(asks) {
            book.apply_level(Side::Sell, l.price, l.size);
        }
        let mut st = self.shared.state();
        if !st.books.contains_key(token_id) {
            book.tick_size = Some(0.01);
            book.min_order_size = Some(1.0);
            book.neg_risk = Some(false);
        }
        let frame = st.publish_book(book, snapshot);
        self.shared.broadcast(frame);
    }

    /// Sets tick size, minimum order size and neg-risk for a published token.
    pub fn set_market_params(
        &self,
        token_id: &str,
        tick_size: f64,
        min_order_size: f64,
        neg_risk: bool,
    ) {
        let mut st = self.shared.state();
        let frame = st.books.get_mut(token_id).and_then(|b| {
            let old = b.tick_size.unwrap_or(0.01);
            b.tick_size = Some(tick_size);
            b.min_order_size = Some(min_order_size);
            b.neg_risk = Some(neg_risk);
            ((old - tick_size).abs() > 1e-12).then(|| {
                Frame::of(&[MarketEvent::TickSizeChange(TickSizeChange {
                    asset_id: token_id.to_string(),
                    market: b.market.clone(),
                    old_tick_size: old,
                    new_tick_size: tick_size,
                    timestamp_ms: b.timestamp_ms,
                })])
            })
        });
        self.shared.broadcast(frame);
    }

    /// A trade by other participants: streamed as `last_trade_price`.
    pub fn publish_trade(
        &self,
        token_id: &str,
        side: Side,
        price: f64,
        size: f64,
        timestamp_ms: u64,
    ) {
        let mut st = self.shared.state();
        let frame = st.publish_trade(token_id, side, price, size, timestamp_ms);
        self.shared.broadcast(Some(frame));
    }

    /// Sends arbitrary events as one frame (an array when there are several), without
    /// changing state — for testing how clients handle what the venue may send.
    pub fn publish_raw(&self, events: &[MarketEvent]) {
        // Held so this frame is ordered with snapshots taken by subscribing sockets.
        let _st = self.shared.state();
        self.shared.broadcast(Some(Frame::of(events)));
    }

    /// The server's current book for a token.
    pub fn book(&self, token_id: &str) -> Option<OrderBook> {
        self.shared.state().books.get(token_id).cloned()
    }
}
