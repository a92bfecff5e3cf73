//! Market WebSocket client: a self-healing stream of typed market events for a set of tokens,
//! plus a local book per token kept current from `price_change` deltas.
//!
//! Owns the connection's whole life: subscribe, text `PING` keepalive (a missing `PONG` means
//! the connection is dead), reconnect with exponential backoff and jitter, re-subscribe, and the
//! **no-data watchdog**. The venue's known field failure is a socket that stays open but stops
//! delivering data; nothing errors. So if no data frame arrives for `stall_timeout`, the client
//! reports [`StreamMessage::Stalled`], drops the socket, reconnects, and **backfills** every
//! token's book from REST `/book` before resuming, so the consumer's books have no gap.
//!
//! Why the books converge: each `price_change` entry carries the *new total* size at a price,
//! not a difference, so applying a delta twice or on top of a newer snapshot is harmless. After a
//! reconnect the consumer gets the REST snapshot, then the socket's own snapshot and every delta
//! after it; the result is the venue's current book.
//!
//! A quiet market also trips the watchdog (the venue sends nothing when nothing changes); that
//! costs a reconnect and a `/book` call per token every `stall_timeout`, which is why it is
//! configurable.
//!
//! Does not own: deciding what a stall means for trading (the host's feed-staleness watchdog
//! listens for [`StreamMessage::Stalled`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::rest::ClobClient;
use crate::types::{
    BestBidAsk, LastTrade, MarketEvent, OrderBook, PriceChange, TickSizeChange, parse_ws_frame,
};

/// Production market channel. Tests use the local server's URL.
pub const MARKET_WS_URL: &str = "wss://ws-subscriptions-clob.polymarket.com/ws/market";

#[derive(Debug, Clone)]
pub struct MarketStreamConfig {
    pub ws_url: String,
    /// How often to send text `PING`.
    pub ping_interval: Duration,
    /// No `PONG` for this long: the connection is dead.
    pub pong_timeout: Duration,
    /// No data frame for this long while the socket is open: stalled.
    pub stall_timeout: Duration,
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `backoff_max`, plus jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Messages buffered for a slow consumer before the reader waits.
    pub channel_capacity: usize,
}

impl MarketStreamConfig {
    pub fn new(ws_url: impl Into<String>) -> Self {
        MarketStreamConfig {
            ws_url: ws_url.into(),
            ping_interval: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            channel_capacity: 1024,
        }
    }
}

/// Where a full book came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookSource {
    /// The socket's `book` event.
    Socket,
    /// REST `/book` after a reconnect or an unreadable frame.
    Backfill,
}

/// What the stream delivers, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamMessage {
    /// A full book; the local book was replaced by it.
    Book {
        book: OrderBook,
        source: BookSource,
    },
    /// Level changes; already applied to the local books.
    PriceChange(PriceChange),
    LastTrade(LastTrade),
    TickSizeChange(TickSizeChange),
    BestBidAsk(BestBidAsk),
    /// An event type this version does not know.
    Other {
        event_type: String,
        raw: Value,
    },
    /// Subscribed on a fresh connection (`attempt` 0 is the first).
    Connected {
        attempt: u32,
    },
    /// No data for `silent_for` while the socket was open; reconnecting.
    Stalled {
        silent_for: Duration,
    },
    /// The connection ended or could not be made; reconnecting after backoff.
    Disconnected {
        reason: String,
    },
    /// Reconnected and every book backfilled from REST (`failed` lists tokens whose backfill
    /// failed; their books catch up from the socket's own snapshot).
    Reconnected {
        attempt: u32,
        failed: Vec<String>,
    },
}

/// The current book of every subscribed token, shared with the stream's task.
#[derive(Clone, Debug, Default)]
pub struct BookCache(Arc<RwLock<HashMap<String, OrderBook>>>);

impl BookCache {
    pub fn get(&self, asset_id: &str) -> Option<OrderBook> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(asset_id)
            .cloned()
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, OrderBook>) -> R) -> R {
        f(&mut self.0.write().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A running market stream. Dropping it stops the background task.
pub struct MarketStream {
    rx: mpsc::Receiver<StreamMessage>,
    books: BookCache,
    guard: StreamGuard,
}

/// Stops the stream's background task when dropped.
#[derive(Debug)]
pub struct StreamGuard(JoinHandle<()>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl MarketStream {
    /// Starts streaming `asset_ids`; `rest` is used for backfills.
    pub fn spawn(cfg: MarketStreamConfig, rest: ClobClient, asset_ids: Vec<String>) -> Self {
        let (tx, rx) = mpsc::channel(cfg.channel_capacity.max(1));
        let books = BookCache::default();
        let task = tokio::spawn(run(cfg, rest, asset_ids, books.clone(), tx));
        MarketStream {
            rx,
            books,
            guard: StreamGuard(task),
        }
    }

    /// The next message; `None` only if the task ended (it does not end on its own).
    pub async fn recv(&mut self) -> Option<StreamMessage> {
        self.rx.recv().await
    }

    /// The current local book of a token.
    pub fn book(&self, asset_id: &str) -> Option<OrderBook> {
        self.books.get(asset_id)
    }

    /// A handle to the local books that can be shared with other tasks.
    pub fn books(&self) -> BookCache {
        self.books.clone()
    }

    /// The raw parts: the mpsc receiver, the local books, and the guard that keeps the task
    /// running (drop it to stop streaming).
    pub fn into_parts(self) -> (mpsc::Receiver<StreamMessage>, BookCache, StreamGuard) {
        (self.rx, self.books, self.guard)
    }
}

/// Why a connection ended.
enum Ended {
    Stalled(Duration),
    Dead(String),
    /// The consumer is gone: stop.
    Consumer,
}

type Tx = mpsc::Sender<StreamMessage>;

async fn run(
    cfg: MarketStreamConfig,
    rest: ClobClient,
    assets: Vec<String>,
    books: BookCache,
    tx: Tx,
) {
    let new_backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(cfg.backoff_min)
            .with_max_delay(cfg.backoff_max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    let subscribe =
        json!({ "assets_ids": assets, "type": "market", "custom_feature_enabled": true })
            .to_string();
    let mut attempt: u32 = 0;
    loop {
        let ended = match connect(&cfg, &subscribe).await {
            Err(reason) => Ended::Dead(reason),
            Ok(ws) => {
                if tx.send(StreamMessage::Connected { attempt }).await.is_err() {
                    return;
                }
                if attempt > 0 {
                    let failed = backfill(&rest, &assets, &books, &tx).await;
                    if tx
                        .send(StreamMessage::Reconnected { attempt, failed })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let (ended, got_data) = session(&cfg, ws, &rest, &assets, &books, &tx).await;
                if got_data {
                    // A connection that delivered data was healthy: start the backoff over.
                    backoff = new_backoff();
                }
                ended
            }
        };
        let notice = match ended {
            Ended::Consumer => return,
            Ended::Stalled(silent_for) => StreamMessage::Stalled { silent_for },
            Ended::Dead(reason) => StreamMessage::Disconnected { reason },
        };
        if tx.send(notice).await.is_err() {
            return;
        }
        attempt = attempt.saturating_add(1);
        let delay = backoff.next().unwrap_or(cfg.backoff_max);
        tokio::time::sleep(delay).await;
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(cfg: &MarketStreamConfig, subscribe: &str) -> Result<Ws, String> {
    let (mut ws, _) = tokio::time::timeout(
        cfg.connect_timeout,
        tokio_tungstenite::connect_async(cfg.ws_url.as_str()),
    )
    .await
    .map_err(|_| format!("connect to {} timed out", cfg.ws_url))?
    .map_err(|e| format!("connect to {}: {e}", cfg.ws_url))?;
    ws.send(Message::Text(subscribe.into()))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    Ok(ws)
}

/// Replaces every token's book with a REST snapshot; returns the tokens that failed.
async fn backfill(rest: &ClobClient, assets: &[String], books: &BookCache, tx: &Tx) -> Vec<String> {
    let mut failed = Vec::new();
    for asset in assets {
        match rest.book(asset).await {
            Ok(book) => {
                books.with(|b| b.insert(asset.clone(), book.clone()));
                let _ = tx
                    .send(StreamMessage::Book {
                        book,
                        source: BookSource::Backfill,
                    })
                    .await;
            }
            Err(e) => {
                tracing::warn!(asset = %asset, error = %e, "book backfill failed");
                failed.push(asset.clone());
            }
        }
    }
    failed
}

/// Reads one connection until it ends; the bool says whether any data frame arrived.
async fn session(
    cfg: &MarketStreamConfig,
    ws: Ws,
    rest: &ClobClient,
    assets: &[String],
    books: &BookCache,
    tx: &Tx,
) -> (Ended, bool) {
    let (mut sink, mut stream) = ws.split();
    let mut last_data = Instant::now();
    let mut last_pong = Instant::now();
    let mut got_data = false;
    // `interval` panics on a zero period and `Instant + Duration` on overflow; a bad config
    // must not take the stream down, so clamp both.
    let far = Duration::from_secs(86_400 * 365);
    let ping_every = cfg.ping_interval.clamp(Duration::from_millis(1), far);
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    loop {
        let stall_at = last_data + cfg.stall_timeout.min(far);
        tokio::select! {
            msg = stream.next() => {
                let text = match msg {
                    None => return (Ended::Dead("socket closed".into()), got_data),
                    Some(Err(e)) => return (Ended::Dead(format!("socket error: {e}")), got_data),
                    Some(Ok(Message::Close(frame))) => {
                        return (Ended::Dead(format!("closed by server: {frame:?}")), got_data);
                    }
                    Some(Ok(Message::Text(t))) => t,
                    // tungstenite answers protocol pings itself; binary is not used here.
                    Some(Ok(_)) => continue,
                };
                if text.trim() == "PONG" {
                    last_pong = Instant::now();
                    continue;
                }
                last_data = Instant::now();
                got_data = true;
                match parse_ws_frame(&text) {
                    Ok(events) => {
                        for e in events {
                            if tx.send(apply(books, e)).await.is_err() {
                                return (Ended::Consumer, got_data);
                            }
                        }
                    }
                    Err(e) => {
                        // A frame we cannot read may have been a delta: resynchronise from REST
                        // rather than carry a book that silently diverged.
                        tracing::warn!(error = %e, "unreadable market frame; backfilling");
                        backfill(rest, assets, books, tx).await;
                    }
                }
            }
            _ = ping.tick() => {
                if last_pong.elapsed() > cfg.pong_timeout {
                    return (Ended::Dead(format!("no PONG for {:?}", last_pong.elapsed())), got_data);
                }
                if let Err(e) = sink.send(Message::Text("PING".into())).await {
                    return (Ended::Dead(format!("ping: {e}")), got_data);
                }
            }
            _ = tokio::time::sleep_until(stall_at) => {
                return (Ended::Stalled(last_data.elapsed()), got_data);
            }
        }
    }
}

/// Updates the local books with one event and turns it into the message to deliver.
fn apply(books: &BookCache, e: MarketEvent) -> StreamMessage {
    match e {
        MarketEvent::Book(book) => {
            books.with(|b| b.insert(book.asset_id.clone(), book.clone()));
            StreamMessage::Book {
                book,
                source: BookSource::Socket,
            }
        }
        MarketEvent::PriceChange(pc) => {
            books.with(|b| {
                for c in &pc.changes {
                    if let Some(book) = b.get_mut(&c.asset_id) {
                        book.apply_level(c.side, c.price, c.size);
                        book.timestamp_ms = book.timestamp_ms.max(pc.timestamp_ms);
                    }
                }
            });
            StreamMessage::PriceChange(pc)
        }
        MarketEvent::LastTradePrice(t) => {
            books.with(|b| {
                if let Some(book) = b.get_mut(&t.asset_id) {
                    book.last_trade_price = Some(t.price);
                }
            });
            StreamMessage::LastTrade(t)
        }
        MarketEvent::TickSizeChange(t) => {
            books.with(|b| {
                if let Some(book) = b.get_mut(&t.asset_id) {
                    book.tick_size = Some(t.new_tick_size);
                }
            });
            StreamMessage::TickSizeChange(t)
        }
        MarketEvent::BestBidAsk(x) => StreamMessage::BestBidAsk(x),
        MarketEvent::Unknown { event_type, raw } => StreamMessage::Other { event_type, raw },
    }
}
