//! One market WebSocket shared by every strategy of a host that streams the
//! same endpoints: [`Feeds`] opens a [`SharedFeed`] per endpoint set (for
//! every token the strategies name) and fans its messages out to each
//! strategy's venue through a broadcast channel; each venue keeps its own
//! books, execution client and ledger.
//!
//! A venue that joins a running feed, or falls so far behind that messages
//! were dropped for it, is handed the feed's current books (as backfilled
//! `Book` messages), so its view of the market is whole again. Falling
//! behind is not silent: the venue sees it as its feed disconnecting and
//! reconnecting (a `degraded` then a `recovered` status for the strategy).
//! Owns the connection and the fan-out only; never trades.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use polybot_polymarket::rest::{ClobClient, ClobConfig};
use polybot_polymarket::ws::{
    BookCache, BookSource, MarketStream, MarketStreamConfig, StreamGuard, StreamMessage,
};
use tokio::sync::broadcast;

use super::{PolymarketConfig, VENUE, fatal};
use crate::venue::VenueError;

/// Messages a slow venue may fall behind by before it is re-seeded.
const FAN_OUT_CAPACITY: usize = 4096;

/// A running market stream and its fan-out.
pub struct SharedFeed {
    ws_url: String,
    clob_url: String,
    tokens: Vec<String>,
    tx: broadcast::Sender<StreamMessage>,
    books: BookCache,
    _stream: StreamGuard,
    pump: tokio::task::JoinHandle<()>,
}

impl Drop for SharedFeed {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl SharedFeed {
    /// Connects (waiting for the first subscription like a venue's own
    /// stream) and starts fanning out.
    async fn open(cfg: &PolymarketConfig, tokens: Vec<String>) -> Result<SharedFeed, VenueError> {
        let client =
            ClobClient::new(ClobConfig::new(&cfg.clob_url, &cfg.gamma_url)).map_err(fatal)?;
        let mut ws = MarketStreamConfig::new(&cfg.ws_url);
        ws.stall_timeout = cfg.stall_timeout;
        let connect_wait = ws.connect_timeout + Duration::from_secs(1);
        let stream = MarketStream::spawn(ws, client, tokens.clone());
        let (mut rx, books, guard) = stream.into_parts();
        match tokio::time::timeout(connect_wait, rx.recv()).await {
            Ok(Some(StreamMessage::Connected { .. })) => {}
            Ok(Some(StreamMessage::Disconnected { reason })) => {
                return Err(VenueError::unavailable(
                    VENUE,
                    format!("market WebSocket: {reason}"),
                ));
            }
            // Anything else: connected, and the books are in the cache.
            Ok(Some(_)) => {}
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
        }
        let (tx, _) = broadcast::channel(FAN_OUT_CAPACITY);
        let out = tx.clone();
        let pump = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                // No venue listening right now (all restarting) is fine.
                let _ = out.send(msg);
            }
        });
        tracing::info!(
            venue = VENUE,
            tokens = tokens.len(),
            "shared market feed connected"
        );
        Ok(SharedFeed {
            ws_url: cfg.ws_url.clone(),
            clob_url: cfg.clob_url.clone(),
            tokens,
            tx,
            books,
            _stream: guard,
            pump,
        })
    }

    fn covers(&self, cfg: &PolymarketConfig) -> bool {
        self.ws_url == cfg.ws_url
            && self.clob_url == cfg.clob_url
            && cfg.tokens.iter().all(|t| self.tokens.contains(t))
    }

    /// A subscription for a venue trading `tokens`, starting with their
    /// current books.
    pub(super) fn subscribe(self: &Arc<Self>, tokens: &[String]) -> Subscription {
        Subscription::new(
            Some(self.clone()),
            self.books.clone(),
            self.tx.subscribe(),
            tokens,
        )
    }
}

/// One venue's end of a shared feed.
pub(super) struct Subscription {
    /// Keeps the feed open while a venue streams from it.
    _feed: Option<Arc<SharedFeed>>,
    books: BookCache,
    tokens: Vec<String>,
    rx: broadcast::Receiver<StreamMessage>,
    pending: VecDeque<StreamMessage>,
}

impl Subscription {
    fn new(
        feed: Option<Arc<SharedFeed>>,
        books: BookCache,
        rx: broadcast::Receiver<StreamMessage>,
        tokens: &[String],
    ) -> Self {
        let mut sub = Subscription {
            _feed: feed,
            books,
            tokens: tokens.to_vec(),
            rx,
            pending: VecDeque::new(),
        };
        sub.reseed();
        sub
    }

    /// Queues the feed's current book of every token as a backfill; the
    /// tokens it has no book of.
    fn reseed(&mut self) -> Vec<String> {
        let mut missing = Vec::new();
        for token in &self.tokens {
            match self.books.get(token) {
                Some(book) => self.pending.push_back(StreamMessage::Book {
                    book,
                    source: BookSource::Backfill,
                }),
                None => missing.push(token.clone()),
            }
        }
        missing
    }

    /// The next message; `None` once the feed has ended.
    pub(super) async fn recv(&mut self) -> Option<StreamMessage> {
        loop {
            if let Some(msg) = self.pending.pop_front() {
                return Some(msg);
            }
            match self.rx.recv().await {
                Ok(msg) => return Some(msg),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Told as a disconnect and a reconnect with fresh books.
                    self.pending.push_back(StreamMessage::Disconnected {
                        reason: format!("fell {missed} messages behind the shared market feed"),
                    });
                    let failed = self.reseed();
                    self.pending
                        .push_back(StreamMessage::Reconnected { attempt: 0, failed });
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_venue_that_falls_behind_is_told_and_goes_on_with_the_feed() {
        let (tx, rx) = broadcast::channel(4);
        let tokens = ["1001".to_string()];
        let mut sub = Subscription::new(None, BookCache::default(), rx, &tokens);
        for attempt in 0..10 {
            tx.send(StreamMessage::Connected { attempt }).expect("send");
        }
        match sub.recv().await {
            Some(StreamMessage::Disconnected { reason }) => {
                assert!(reason.contains("fell 6 messages behind"), "{reason}");
            }
            other => panic!("expected the lag first, got {other:?}"),
        }
        match sub.recv().await {
            Some(StreamMessage::Reconnected { failed, .. }) => {
                assert_eq!(failed, tokens, "no book cached for the token");
            }
            other => panic!("expected the catch-up, got {other:?}"),
        }
        // Then the messages still in the channel, in order.
        let mut next = Vec::new();
        for _ in 0..4 {
            match sub.recv().await {
                Some(StreamMessage::Connected { attempt }) => next.push(attempt),
                other => panic!("expected a feed message, got {other:?}"),
            }
        }
        assert_eq!(next, [6, 7, 8, 9]);
        drop(tx);
        assert!(sub.recv().await.is_none(), "the feed ended");
    }
}

/// The shared feeds of a host, by endpoints and tokens.
#[derive(Default)]
pub struct Feeds {
    open: Mutex<Vec<Arc<SharedFeed>>>,
}

impl Feeds {
    pub fn new() -> Arc<Feeds> {
        Arc::new(Feeds::default())
    }

    fn covering(&self, cfg: &PolymarketConfig) -> Option<Arc<SharedFeed>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|f| f.covers(cfg))
            .cloned()
    }

    /// Opens one feed for every token of `configs` on the same endpoints
    /// (at host start, so strategies share it from the first event).
    ///
    /// # Errors
    /// A feed that cannot connect.
    pub async fn open_for(&self, configs: &[&PolymarketConfig]) -> Result<(), VenueError> {
        let mut groups: Vec<(PolymarketConfig, Vec<String>)> = Vec::new();
        for cfg in configs {
            match groups
                .iter_mut()
                .find(|(g, _)| g.ws_url == cfg.ws_url && g.clob_url == cfg.clob_url)
            {
                Some((_, tokens)) => {
                    for t in &cfg.tokens {
                        if !tokens.contains(t) {
                            tokens.push(t.clone());
                        }
                    }
                }
                None => groups.push(((*cfg).clone(), cfg.tokens.clone())),
            }
        }
        for (cfg, tokens) in groups {
            let feed = Arc::new(SharedFeed::open(&cfg, tokens).await?);
            self.open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(feed);
        }
        Ok(())
    }

    /// A feed streaming every token of `cfg`: an open one that covers them,
    /// or a new one for them (a strategy added by a reload).
    ///
    /// # Errors
    /// A new feed that cannot connect.
    pub async fn feed_for(&self, cfg: &PolymarketConfig) -> Result<Arc<SharedFeed>, VenueError> {
        if let Some(feed) = self.covering(cfg) {
            return Ok(feed);
        }
        self.open_for(&[cfg]).await?;
        self.covering(cfg)
            .ok_or_else(|| VenueError::unavailable(VENUE, "market WebSocket: no feed"))
    }

    /// How many feeds are open.
    pub fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
