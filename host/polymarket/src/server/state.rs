//! The local server's venue state: public books, the caller's orders and trades, price history,
//! the dead-man switch, and a toy matching engine.
//!
//! Owns every state change and the market-channel events each change causes; events are
//! produced while the state lock is held so a WebSocket that snapshots books and subscribes
//! under the same lock can never miss or double-apply one.
//!
//! Does not own: HTTP or WebSocket framing, authentication or fault injection.
//!
//! Simplifications (this is a test double, not an exchange): the caller's resting orders are
//! tracked but not shown in the public book; a marketable order takes liquidity from the
//! published book only; orders resting when a new book crosses them are not filled.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::order::{OrderType, PostOrderBody};
use crate::types::{
    Level, MarketEvent, OrderBook, OrderStatus, PriceChange, PriceChangeEntry, PricePoint, Side,
    fmt_decimal,
};

/// A market-channel frame ready to send, with the assets it concerns (for filtering).
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub assets: Vec<String>,
    pub text: String,
}

impl Frame {
    /// One object for a single event, a JSON array for several (both occur on the real feed).
    pub(crate) fn of(events: &[MarketEvent]) -> Frame {
        let assets = events
            .iter()
            .flat_map(|e| e.asset_ids().into_iter().map(str::to_string))
            .collect();
        let text = match events {
            [one] => one.to_wire().to_string(),
            many => Value::Array(many.iter().map(MarketEvent::to_wire).collect()).to_string(),
        };
        Frame { assets, text }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SimOrder {
    pub id: String,
    pub asset_id: String,
    pub market: String,
    pub side: Side,
    pub price: f64,
    pub original_size: f64,
    pub size_matched: f64,
    pub status: OrderStatus,
    pub created_at: u64,
    pub expiration: u64,
    pub order_type: OrderType,
}

impl SimOrder {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "status": self.status.as_str().to_ascii_uppercase(),
            "market": self.market,
            "asset_id": self.asset_id,
            "side": self.side.as_str(),
            "original_size": fmt_decimal(self.original_size),
            "size_matched": fmt_decimal(self.size_matched),
            "price": fmt_decimal(self.price),
            "created_at": self.created_at,
            "expiration": self.expiration.to_string(),
            "order_type": serde_json::to_value(self.order_type).unwrap_or(Value::Null),
        })
    }

    fn is_live(&self) -> bool {
        self.status == OrderStatus::Live
    }
}

/// Why the engine refused an order: the message is the venue's error code plus detail.
#[derive(Debug)]
pub(crate) struct Reject(pub String);

#[derive(Debug)]
pub(crate) struct Heartbeat {
    pub id: String,
    pub last: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct SimState {
    pub books: BTreeMap<String, OrderBook>,
    /// Condition id → token ids, in publication order.
    pub markets: Vec<(String, Vec<String>)>,
    pub history: HashMap<String, Vec<PricePoint>>,
    pub orders: HashMap<String, SimOrder>,
    /// Order ids in arrival order, for stable listings.
    pub order_ids: Vec<String>,
    pub trades: Vec<Value>,
    pub heartbeat: Option<Heartbeat>,
    pub heartbeat_seq: u64,
    /// The minutes after a matching-engine restart: only orders that rest
    /// (GTC/GTD) are accepted.
    pub post_only: bool,
    book_seq: u64,
    trade_seq: u64,
}

const EPS: f64 = 1e-9;

impl SimState {
    fn register(&mut self, market: &str, token: &str) {
        match self.markets.iter_mut().find(|(m, _)| m == market) {
            Some((_, tokens)) => {
                if !tokens.iter().any(|t| t == token) {
                    tokens.push(token.to_string());
                }
            }
            None => self
                .markets
                .push((market.to_string(), vec![token.to_string()])),
        }
    }

    fn record_mid(&mut self, token: &str, ts_ms: u64) {
        if let Some(mid) = self.books.get(token).and_then(OrderBook::midpoint) {
            self.history
                .entry(token.to_string())
                .or_default()
                .push(PricePoint {
                    t: ts_ms / 1000,
                    p: (mid * 1e6).round() / 1e6,
                });
        }
    }

    /// Replaces a token's public book. The first book of a token (or `force_snapshot`) goes
    /// out as a `book` event; later ones as one `price_change` carrying the level differences.
    pub(crate) fn publish_book(
        &mut self,
        mut book: OrderBook,
        force_snapshot: bool,
    ) -> Option<Frame> {
        self.book_seq += 1;
        book.hash = Some(format!("{:016x}", self.book_seq));
        let old = self.books.get(&book.asset_id).cloned();
        if let Some(old) = &old {
            // Keep metadata the caller did not restate.
            book.tick_size = book.tick_size.or(old.tick_size);
            book.min_order_size = book.min_order_size.or(old.min_order_size);
            book.neg_risk = book.neg_risk.or(old.neg_risk);
            book.last_trade_price = book.last_trade_price.or(old.last_trade_price);
        }
        self.register(&book.market, &book.asset_id);
        let token = book.asset_id.clone();
        let ts = book.timestamp_ms;
        let event = match old {
            Some(old) if !force_snapshot => {
                let changes = diff(&old, &book);
                if changes.is_empty() {
                    None
                } else {
                    Some(MarketEvent::PriceChange(PriceChange {
                        market: book.market.clone(),
                        timestamp_ms: ts,
                        changes,
                    }))
                }
            }
            _ => Some(MarketEvent::Book(book.clone())),
        };
        self.books.insert(token.clone(), book);
        self.record_mid(&token, ts);
        event.map(|e| Frame::of(&[e]))
    }

    /// A trade by others in the public market: updates the last trade price and history.
    pub(crate) fn publish_trade(
        &mut self,
        token: &str,
        side: Side,
        price: f64,
        size: f64,
        ts_ms: u64,
    ) -> Frame {
        let market = match self.books.get_mut(token) {
            Some(b) => {
                b.last_trade_price = Some(price);
                b.market.clone()
            }
            None => String::new(),
        };
        self.history
            .entry(token.to_string())
            .or_default()
            .push(PricePoint {
                t: ts_ms / 1000,
                p: price,
            });
        Frame::of(&[MarketEvent::LastTradePrice(crate::types::LastTrade {
            asset_id: token.to_string(),
            market,
            price,
            size,
            side: Some(side),
            fee_rate_bps: Some(0.0),
            timestamp_ms: ts_ms,
        })])
    }

    /// Accepts, matches and rests an order already authenticated and signature-checked.
    /// Returns the response JSON and the frame for the market channel, if liquidity was taken.
    pub(crate) fn place(
        &mut self,
        id: String,
        body: &PostOrderBody,
        now_ms: u64,
    ) -> Result<(Value, Option<Frame>), Reject> {
        if self.orders.contains_key(&id) {
            return Err(Reject(format!(
                "INVALID_ORDER_DUPLICATED: order {id} already exists"
            )));
        }
        let o = &body.order;
        let maker: u64 = o
            .maker_amount
            .parse()
            .map_err(|_| Reject("invalid makerAmount".into()))?;
        let taker: u64 = o
            .taker_amount
            .parse()
            .map_err(|_| Reject("invalid takerAmount".into()))?;
        let (usdc, shares) = match o.side {
            Side::Buy => (maker, taker),
            Side::Sell => (taker, maker),
        };
        if shares == 0 {
            return Err(Reject("INVALID_ORDER_MIN_SIZE: size is zero".into()));
        }
        let price = usdc as f64 / shares as f64;
        let size = shares as f64 / 1e6;
        let book = self.books.get(&o.token_id);
        let tick = book.and_then(|b| b.tick_size).unwrap_or(0.01);
        let ticks = price / tick;
        if (ticks - ticks.round()).abs() > 1e-6 || price <= 0.0 || price >= 1.0 {
            return Err(Reject(format!(
                "INVALID_ORDER_MIN_TICK_SIZE: price {price} is not a multiple of tick {tick}"
            )));
        }
        let min_size = book.and_then(|b| b.min_order_size).unwrap_or(0.0);
        if size + EPS < min_size {
            return Err(Reject(format!(
                "INVALID_ORDER_MIN_SIZE: size {size} below {min_size}"
            )));
        }
        let market = book.map(|b| b.market.clone()).unwrap_or_default();

        // Liquidity available at or better than the limit price, best first.
        let crosses = |l: &Level| match o.side {
            Side::Buy => l.price <= price + EPS,
            Side::Sell => l.price + EPS >= price,
        };
        let opposite: Vec<Level> = book
            .map(|b| match o.side {
                Side::Buy => b.asks.clone(),
                Side::Sell => b.bids.clone(),
            })
            .unwrap_or_default();
        let available: f64 = opposite
            .iter()
            .take_while(|l| crosses(l))
            .map(|l| l.size)
            .sum();
        if body.post_only && available > EPS {
            return Err(Reject(
                "INVALID_POST_ONLY_ORDER: order crosses the book".into(),
            ));
        }
        if body.order_type == OrderType::Fok && available + EPS < size {
            return Err(Reject(format!(
                "FOK_ORDER_NOT_FILLED_ERROR: {available} available, {size} required"
            )));
        }

        let mut remaining = size;
        let mut fills = Vec::new();
        for l in opposite.iter().take_while(|l| crosses(l)) {
            if remaining <= EPS {
                break;
            }
            let q = remaining.min(l.size);
            fills.push(Level {
                price: l.price,
                size: q,
            });
            remaining -= q;
        }
        let matched = size - remaining.max(0.0);
        let mut frame = None;
        let mut trade_ids = Vec::new();
        let (mut making, mut taking) = (0.0, 0.0);
        if !fills.is_empty() {
            let mut changes = Vec::new();
            let mut events = Vec::new();
            if let Some(b) = self.books.get_mut(&o.token_id) {
                let book_side = match o.side {
                    Side::Buy => Side::Sell,
                    Side::Sell => Side::Buy,
                };
                for f in &fills {
                    let left = match book_side {
                        Side::Buy => &b.bids,
                        Side::Sell => &b.asks,
                    }
                    .iter()
                    .find(|l| (l.price - f.price).abs() < EPS)
                    .map_or(0.0, |l| l.size - f.size);
                    let left = if left < EPS { 0.0 } else { left };
                    b.apply_level(book_side, f.price, left);
                    changes.push((book_side, f.price, left));
                }
                b.timestamp_ms = now_ms;
                let last = fills.last().map_or(price, |f| f.price);
                b.last_trade_price = Some(last);
                let (bb, ba) = (b.best_bid().map(|l| l.price), b.best_ask().map(|l| l.price));
                events.push(MarketEvent::LastTradePrice(crate::types::LastTrade {
                    asset_id: o.token_id.clone(),
                    market: market.clone(),
                    price: last,
                    size: matched,
                    side: Some(o.side),
                    fee_rate_bps: Some(0.0),
                    timestamp_ms: now_ms,
                }));
                events.push(MarketEvent::PriceChange(PriceChange {
                    market: market.clone(),
                    timestamp_ms: now_ms,
                    changes: changes
                        .iter()
                        .map(|(side, price, size)| PriceChangeEntry {
                            asset_id: o.token_id.clone(),
                            price: *price,
                            size: *size,
                            side: *side,
                            hash: None,
                            best_bid: bb,
                            best_ask: ba,
                        })
                        .collect(),
                }));
            }
            // A trade executes one array frame: last trade plus the book change.
            frame = Some(Frame::of(&events));
            for f in &fills {
                self.trade_seq += 1;
                let tid = format!("trade-{}", self.trade_seq);
                let usdc = f.price * f.size;
                match o.side {
                    Side::Buy => {
                        making += usdc;
                        taking += f.size;
                    }
                    Side::Sell => {
                        making += f.size;
                        taking += usdc;
                    }
                }
                self.trades.push(json!({
                    "id": tid,
                    "taker_order_id": id,
                    "market": market,
                    "asset_id": o.token_id,
                    "side": o.side.as_str(),
                    "size": fmt_decimal(f.size),
                    "price": fmt_decimal(f.price),
                    "status": "MATCHED",
                    "match_time": (now_ms / 1000).to_string(),
                    "maker_orders": [],
                }));
                trade_ids.push(tid);
            }
            self.history
                .entry(o.token_id.clone())
                .or_default()
                .push(PricePoint {
                    t: now_ms / 1000,
                    p: fills.last().map_or(price, |f| f.price),
                });
        }

        let rests = matches!(body.order_type, OrderType::Gtc | OrderType::Gtd) && remaining > EPS;
        let status = if remaining <= EPS {
            OrderStatus::Matched
        } else if rests {
            OrderStatus::Live
        } else if matched > EPS {
            // FAK: the unfilled rest is cancelled.
            OrderStatus::Matched
        } else {
            OrderStatus::Unmatched
        };
        let order = SimOrder {
            id: id.clone(),
            asset_id: o.token_id.clone(),
            market,
            side: o.side,
            price,
            original_size: size,
            size_matched: matched,
            status: if rests || remaining <= EPS {
                status.clone()
            } else {
                OrderStatus::Canceled
            },
            created_at: now_ms / 1000,
            expiration: o.expiration.parse().unwrap_or(0),
            order_type: body.order_type,
        };
        self.orders.insert(id.clone(), order);
        self.order_ids.push(id.clone());
        let amount = |x: f64| {
            if x > 0.0 {
                fmt_decimal(x)
            } else {
                String::new()
            }
        };
        let resp = json!({
            "success": true,
            "errorMsg": "",
            "orderID": id,
            "status": status.as_str(),
            "makingAmount": amount(making),
            "takingAmount": amount(taking),
            "transactionsHashes": [],
            "tradeIDs": trade_ids,
        });
        Ok((resp, frame))
    }

    /// Cancels the given orders; unknown or finished ones land in `not_canceled`.
    /// Someone else's order takes `size` of the resting order `id` at its
    /// price: the order's matched size grows (`MATCHED` once full) and a trade
    /// naming it as maker is recorded. Returns the trade id, or `None` when
    /// the order is not live.
    pub(crate) fn fill_resting(&mut self, id: &str, size: f64, now_ms: u64) -> Option<String> {
        let o = self.orders.get_mut(id).filter(|o| o.is_live())?;
        let size = size.min(o.original_size - o.size_matched);
        if size <= EPS {
            return None;
        }
        o.size_matched += size;
        if o.original_size - o.size_matched <= EPS {
            o.status = OrderStatus::Matched;
        }
        let (market, asset, side, price) = (o.market.clone(), o.asset_id.clone(), o.side, o.price);
        self.trade_seq += 1;
        let tid = format!("trade-{}", self.trade_seq);
        let taker_side = match side {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        };
        self.trades.push(json!({
            "id": tid,
            "taker_order_id": format!("external-{}", self.trade_seq),
            "market": market,
            "asset_id": asset,
            "side": taker_side.as_str(),
            "size": fmt_decimal(size),
            "price": fmt_decimal(price),
            "status": "MATCHED",
            "match_time": (now_ms / 1000).to_string(),
            "maker_orders": [{
                "order_id": id,
                "matched_amount": fmt_decimal(size),
                "price": fmt_decimal(price),
            }],
        }));
        Some(tid)
    }

    pub(crate) fn cancel<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) -> Value {
        let mut canceled = Vec::new();
        let mut not_canceled = serde_json::Map::new();
        for id in ids {
            match self.orders.get_mut(id) {
                Some(o) if o.is_live() => {
                    o.status = OrderStatus::Canceled;
                    canceled.push(id.to_string());
                }
                Some(_) => {
                    not_canceled.insert(
                        id.into(),
                        "order can't be canceled: already matched or canceled".into(),
                    );
                }
                None => {
                    not_canceled.insert(id.into(), "order not found".into());
                }
            }
        }
        json!({ "canceled": canceled, "not_canceled": not_canceled })
    }

    /// Ids of live orders, optionally restricted to a market and/or asset.
    pub(crate) fn live_ids(&self, market: Option<&str>, asset: Option<&str>) -> Vec<String> {
        self.order_ids
            .iter()
            .filter_map(|id| self.orders.get(id))
            .filter(|o| o.is_live())
            .filter(|o| market.is_none_or(|m| o.market == m))
            .filter(|o| asset.is_none_or(|a| o.asset_id == a))
            .map(|o| o.id.clone())
            .collect()
    }
}

/// Level differences from `old` to `new` as `price_change` entries (size 0 = level removed).
fn diff(old: &OrderBook, new: &OrderBook) -> Vec<PriceChangeEntry> {
    let bb = new.best_bid().map(|l| l.price);
    let ba = new.best_ask().map(|l| l.price);
    let mut out = Vec::new();
    for (side, before, after) in [
        (Side::Buy, &old.bids, &new.bids),
        (Side::Sell, &old.asks, &new.asks),
    ] {
        let key = |p: f64| (p * 1e6).round() as i64;
        let mut levels: BTreeMap<i64, (f64, f64, f64)> = BTreeMap::new();
        for l in before {
            levels.entry(key(l.price)).or_insert((l.price, 0.0, 0.0)).1 = l.size;
        }
        for l in after {
            levels.entry(key(l.price)).or_insert((l.price, 0.0, 0.0)).2 = l.size;
        }
        for (price, was, is) in levels.into_values() {
            if (was - is).abs() > EPS {
                out.push(PriceChangeEntry {
                    asset_id: new.asset_id.clone(),
                    price,
                    size: is,
                    side,
                    hash: new.hash.clone(),
                    best_bid: bb,
                    best_ask: ba,
                });
            }
        }
    }
    out
}
