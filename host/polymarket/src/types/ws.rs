//! Market WebSocket frames: one event object or an array of them, each tagged by `event_type`.
//!
//! Owns the event shapes and their wire JSON (the local server emits them through the same
//! types). An `event_type` this code does not know becomes [`MarketEvent::Unknown`] so a venue
//! that adds an event never breaks the stream; a *known* event with a broken field is an error.
//!
//! Does not own: keepalive text frames (`PING`/`PONG` are not JSON; the `ws` client filters
//! them before parsing) or applying deltas to a book.

use serde_json::{Value, json};

use super::{Obj, OrderBook, ParseError, Side, fmt_decimal, parse_json};

/// One level change inside a `price_change` event.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceChangeEntry {
    pub asset_id: String,
    pub price: f64,
    /// New total size at `price`; 0 removes the level.
    pub size: f64,
    pub side: Side,
    pub hash: Option<String>,
    pub best_bid: Option<f64>,
    pub best_ask: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PriceChange {
    pub market: String,
    pub timestamp_ms: u64,
    pub changes: Vec<PriceChangeEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LastTrade {
    pub asset_id: String,
    pub market: String,
    pub price: f64,
    pub size: f64,
    pub side: Option<Side>,
    pub fee_rate_bps: Option<f64>,
    pub timestamp_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TickSizeChange {
    pub asset_id: String,
    pub market: String,
    pub old_tick_size: f64,
    pub new_tick_size: f64,
    pub timestamp_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BestBidAsk {
    pub asset_id: String,
    pub market: String,
    pub best_bid: Option<f64>,
    pub best_ask: Option<f64>,
    pub spread: Option<f64>,
    pub timestamp_ms: u64,
}

/// One event of the market channel.
#[derive(Debug, Clone, PartialEq)]
pub enum MarketEvent {
    Book(OrderBook),
    PriceChange(PriceChange),
    LastTradePrice(LastTrade),
    TickSizeChange(TickSizeChange),
    BestBidAsk(BestBidAsk),
    /// An event type this version does not know, kept whole.
    Unknown {
        event_type: String,
        raw: Value,
    },
}

const WHAT: &str = "ws frame";

/// Parses one text frame into its events (an object frame yields one, an array frame many).
pub fn parse_ws_frame(text: &str) -> Result<Vec<MarketEvent>, ParseError> {
    let v = parse_json(WHAT, text.as_bytes())?;
    match &v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| event(item, format!("[{i}]")))
            .collect(),
        _ => Ok(vec![event(&v, String::new())?]),
    }
}

fn event(v: &Value, path: String) -> Result<MarketEvent, ParseError> {
    let o = Obj::new(WHAT, path, v)?;
    let event_type = o.string("event_type")?;
    Ok(match event_type.as_str() {
        "book" => MarketEvent::Book(OrderBook::from_obj(&o)?),
        "price_change" => {
            let changes = o
                .array("price_changes")?
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let c = Obj::new(WHAT, o.path_of(&format!("price_changes[{i}]")), c)?;
                    Ok(PriceChangeEntry {
                        asset_id: c.string("asset_id")?,
                        price: c.num("price")?,
                        size: c.num("size")?,
                        side: c.side("side")?,
                        hash: c.opt_string("hash")?,
                        best_bid: c.opt_num("best_bid")?,
                        best_ask: c.opt_num("best_ask")?,
                    })
                })
                .collect::<Result<Vec<_>, ParseError>>()?;
            MarketEvent::PriceChange(PriceChange {
                market: o.opt_string("market")?.unwrap_or_default(),
                timestamp_ms: o.opt_uint("timestamp")?.unwrap_or(0),
                changes,
            })
        }
        "last_trade_price" => MarketEvent::LastTradePrice(LastTrade {
            asset_id: o.string("asset_id")?,
            market: o.opt_string("market")?.unwrap_or_default(),
            price: o.num("price")?,
            size: o.opt_num("size")?.unwrap_or(0.0),
            side: o.opt_side("side")?,
            fee_rate_bps: o.opt_num("fee_rate_bps")?,
            timestamp_ms: o.opt_uint("timestamp")?.unwrap_or(0),
        }),
        "tick_size_change" => MarketEvent::TickSizeChange(TickSizeChange {
            asset_id: o.string("asset_id")?,
            market: o.opt_string("market")?.unwrap_or_default(),
            old_tick_size: o.num("old_tick_size")?,
            new_tick_size: o.num("new_tick_size")?,
            timestamp_ms: o.opt_uint("timestamp")?.unwrap_or(0),
        }),
        "best_bid_ask" => MarketEvent::BestBidAsk(BestBidAsk {
            asset_id: o.string("asset_id")?,
            market: o.opt_string("market")?.unwrap_or_default(),
            best_bid: o.opt_num("best_bid")?,
            best_ask: o.opt_num("best_ask")?,
            spread: o.opt_num("spread")?,
            timestamp_ms: o.opt_uint("timestamp")?.unwrap_or(0),
        }),
        _ => MarketEvent::Unknown {
            event_type,
            raw: v.clone(),
        },
    })
}

impl MarketEvent {
    /// The wire JSON of this event, as the market channel sends it.
    pub fn to_wire(&self) -> Value {
        match self {
            MarketEvent::Book(b) => {
                let mut v = b.to_wire();
                if let Value::Object(m) = &mut v {
                    m.insert("event_type".into(), "book".into());
                }
                v
            }
            MarketEvent::PriceChange(pc) => json!({
                "event_type": "price_change",
                "market": pc.market,
                "timestamp": pc.timestamp_ms.to_string(),
                "price_changes": pc.changes.iter().map(|c| json!({
                    "asset_id": c.asset_id,
                    "price": fmt_decimal(c.price),
                    "size": fmt_decimal(c.size),
                    "side": c.side.as_str(),
                    "hash": c.hash.clone().unwrap_or_default(),
                    "best_bid": c.best_bid.map(fmt_decimal).unwrap_or_default(),
                    "best_ask": c.best_ask.map(fmt_decimal).unwrap_or_default(),
                })).collect::<Vec<_>>(),
            }),
            MarketEvent::LastTradePrice(t) => json!({
                "event_type": "last_trade_price",
                "asset_id": t.asset_id,
                "market": t.market,
                "fee_rate_bps": fmt_decimal(t.fee_rate_bps.unwrap_or(0.0)),
                "price": fmt_decimal(t.price),
                "side": t.side.map(Side::as_str).unwrap_or(""),
                "size": fmt_decimal(t.size),
                "timestamp": t.timestamp_ms.to_string(),
            }),
            MarketEvent::TickSizeChange(t) => json!({
                "event_type": "tick_size_change",
                "asset_id": t.asset_id,
                "market": t.market,
                "old_tick_size": fmt_decimal(t.old_tick_size),
                "new_tick_size": fmt_decimal(t.new_tick_size),
                "timestamp": t.timestamp_ms.to_string(),
            }),
            MarketEvent::BestBidAsk(b) => json!({
                "event_type": "best_bid_ask",
                "asset_id": b.asset_id,
                "market": b.market,
                "best_bid": b.best_bid.map(fmt_decimal).unwrap_or_default(),
                "best_ask": b.best_ask.map(fmt_decimal).unwrap_or_default(),
                "spread": b.spread.map(fmt_decimal).unwrap_or_default(),
                "timestamp": b.timestamp_ms.to_string(),
            }),
            MarketEvent::Unknown { raw, .. } => raw.clone(),
        }
    }

    /// Asset ids this event concerns (a `price_change` may touch several).
    pub fn asset_ids(&self) -> Vec<&str> {
        match self {
            MarketEvent::Book(b) => vec![b.asset_id.as_str()],
            MarketEvent::PriceChange(pc) => {
                pc.changes.iter().map(|c| c.asset_id.as_str()).collect()
            }
            MarketEvent::LastTradePrice(t) => vec![t.asset_id.as_str()],
            MarketEvent::TickSizeChange(t) => vec![t.asset_id.as_str()],
            MarketEvent::BestBidAsk(b) => vec![b.asset_id.as_str()],
            MarketEvent::Unknown { raw, .. } => raw
                .get("asset_id")
                .and_then(Value::as_str)
                .into_iter()
                .collect(),
        }
    }
}
