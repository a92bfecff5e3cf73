//! Order books and the single-number market-data responses (`/midpoint`, `/price`, `/spread`,
//! `/last-trade-price`, `/prices-history`, `/tick-size`, `/time`).
//!
//! Owns the one normalisation that matters: on the wire bids are ascending and asks descending
//! (the best level is the *last* element); an [`OrderBook`] always holds both sides best-first.
//! It sorts rather than reverses so a source that already sends best-first is handled too.
//!
//! Does not own: keeping a book current from deltas over time (the `ws` client does that using
//! [`OrderBook::apply_level`]).

use serde_json::{Value, json};

use super::{Obj, ParseError, Side, fmt_decimal, parse_json};

/// One price level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    pub price: f64,
    pub size: f64,
}

/// A full order book for one outcome token, both sides best-first.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderBook {
    /// Condition id of the market (`0x…`).
    pub market: String,
    /// Outcome token id (decimal uint256 string).
    pub asset_id: String,
    /// Venue timestamp of the snapshot, ms since the epoch.
    pub timestamp_ms: u64,
    /// Highest price first.
    pub bids: Vec<Level>,
    /// Lowest price first.
    pub asks: Vec<Level>,
    pub min_order_size: Option<f64>,
    pub tick_size: Option<f64>,
    pub neg_risk: Option<bool>,
    pub hash: Option<String>,
    pub last_trade_price: Option<f64>,
}

/// Two prices closer than this are the same level (prices have at most 4 decimals).
const PRICE_EPS: f64 = 1e-9;

impl OrderBook {
    pub fn best_bid(&self) -> Option<Level> {
        self.bids.first().copied()
    }

    pub fn best_ask(&self) -> Option<Level> {
        self.asks.first().copied()
    }

    /// Midpoint of best bid and best ask; `None` when either side is empty.
    pub fn midpoint(&self) -> Option<f64> {
        Some((self.best_bid()?.price + self.best_ask()?.price) / 2.0)
    }

    pub fn spread(&self) -> Option<f64> {
        Some(self.best_ask()?.price - self.best_bid()?.price)
    }

    /// Sets the size resting at `price` on `side` (a `price_change` entry): size 0 removes the
    /// level, otherwise it is inserted or replaced, keeping the side best-first.
    pub fn apply_level(&mut self, side: Side, price: f64, size: f64) {
        let levels = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        levels.retain(|l| (l.price - price).abs() > PRICE_EPS);
        if size > 0.0 {
            levels.push(Level { price, size });
        }
        sort_levels(side, levels);
    }

    /// The wire JSON of this book as `GET /book` sends it (best level last, decimals as strings).
    pub fn to_wire(&self) -> Value {
        let wire_side = |levels: &[Level]| -> Vec<Value> {
            levels
                .iter()
                .rev()
                .map(|l| json!({"price": fmt_decimal(l.price), "size": fmt_decimal(l.size)}))
                .collect()
        };
        let mut v = json!({
            "market": self.market,
            "asset_id": self.asset_id,
            "timestamp": self.timestamp_ms.to_string(),
            "bids": wire_side(&self.bids),
            "asks": wire_side(&self.asks),
            "hash": self.hash.clone().unwrap_or_default(),
        });
        if let Value::Object(map) = &mut v {
            if let Some(x) = self.min_order_size {
                map.insert("min_order_size".into(), fmt_decimal(x).into());
            }
            if let Some(x) = self.tick_size {
                map.insert("tick_size".into(), fmt_decimal(x).into());
            }
            if let Some(b) = self.neg_risk {
                map.insert("neg_risk".into(), b.into());
            }
            if let Some(x) = self.last_trade_price {
                map.insert("last_trade_price".into(), fmt_decimal(x).into());
            }
        }
        v
    }

    /// Reads a book object (REST `/book`, an item of `/books`, or a WS `book` event).
    pub(crate) fn from_obj(o: &Obj<'_>) -> Result<OrderBook, ParseError> {
        let mut bids = levels(o, "bids")?;
        let mut asks = levels(o, "asks")?;
        sort_levels(Side::Buy, &mut bids);
        sort_levels(Side::Sell, &mut asks);
        Ok(OrderBook {
            market: o.opt_string("market")?.unwrap_or_default(),
            asset_id: o.string("asset_id")?,
            timestamp_ms: o.opt_uint("timestamp")?.unwrap_or(0),
            bids,
            asks,
            min_order_size: o.opt_num("min_order_size")?,
            tick_size: o.opt_num("tick_size")?,
            neg_risk: o.opt_bool("neg_risk")?,
            hash: o.opt_string("hash")?,
            last_trade_price: o.opt_num("last_trade_price")?,
        })
    }
}

/// Bids highest first, asks lowest first.
fn sort_levels(side: Side, levels: &mut [Level]) {
    match side {
        Side::Buy => levels.sort_by(|a, b| b.price.total_cmp(&a.price)),
        Side::Sell => levels.sort_by(|a, b| a.price.total_cmp(&b.price)),
    }
}

fn levels(o: &Obj<'_>, field: &str) -> Result<Vec<Level>, ParseError> {
    let arr = o.array(field)?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, item) in arr.iter().enumerate() {
        let l = Obj::new(o.what, o.path_of(&format!("{field}[{i}]")), item)?;
        let price = l.num("price")?;
        let size = l.num("size")?;
        if !(0.0..=1.0).contains(&price) {
            return Err(ParseError::field(
                o.what,
                l.path_of("price"),
                format!("price {price} outside [0, 1]"),
            ));
        }
        if size < 0.0 {
            return Err(ParseError::field(
                o.what,
                l.path_of("size"),
                format!("negative size {size}"),
            ));
        }
        out.push(Level { price, size });
    }
    Ok(out)
}

/// `GET /book` body.
pub fn parse_book(bytes: &[u8]) -> Result<OrderBook, ParseError> {
    let v = parse_json("book", bytes)?;
    OrderBook::from_obj(&Obj::new("book", "", &v)?)
}

/// `POST /books` body: an array of books.
pub fn parse_books(bytes: &[u8]) -> Result<Vec<OrderBook>, ParseError> {
    let v = parse_json("books", bytes)?;
    let arr = v
        .as_array()
        .ok_or_else(|| ParseError::field("books", "<root>", "expected an array"))?;
    arr.iter()
        .enumerate()
        .map(|(i, item)| OrderBook::from_obj(&Obj::new("books", format!("[{i}]"), item)?))
        .collect()
}

/// Serialises books as `POST /books` answers.
pub fn books_to_wire(books: &[OrderBook]) -> Value {
    Value::Array(books.iter().map(OrderBook::to_wire).collect())
}

/// `GET /midpoint` body: `{"mid": ".."}` (official SDK) or `{"mid_price": ".."}` (docs).
pub fn parse_midpoint(bytes: &[u8]) -> Result<f64, ParseError> {
    let v = parse_json("midpoint", bytes)?;
    let o = Obj::new("midpoint", "", &v)?;
    if o.get("mid").is_some() {
        o.num("mid")
    } else if o.get("mid_price").is_some() {
        o.num("mid_price")
    } else {
        Err(ParseError::field("midpoint", "mid|mid_price", "missing"))
    }
}

/// `GET /price` body: `{"price": ".."}`.
pub fn parse_price(bytes: &[u8]) -> Result<f64, ParseError> {
    let v = parse_json("price", bytes)?;
    Obj::new("price", "", &v)?.num("price")
}

/// `GET /spread` body: `{"spread": ".."}`.
pub fn parse_spread(bytes: &[u8]) -> Result<f64, ParseError> {
    let v = parse_json("spread", bytes)?;
    Obj::new("spread", "", &v)?.num("spread")
}

/// `GET /last-trade-price` body: `{"price": "..", "side": "BUY"}`; side may be empty.
pub fn parse_last_trade_price(bytes: &[u8]) -> Result<(f64, Option<Side>), ParseError> {
    let v = parse_json("last-trade-price", bytes)?;
    let o = Obj::new("last-trade-price", "", &v)?;
    Ok((o.num("price")?, o.opt_side("side")?))
}

/// One point of `/prices-history`: unix seconds and price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PricePoint {
    pub t: u64,
    pub p: f64,
}

/// `GET /prices-history` body: `{"history":[{"t":1700000000,"p":0.51}]}`.
pub fn parse_prices_history(bytes: &[u8]) -> Result<Vec<PricePoint>, ParseError> {
    let v = parse_json("prices-history", bytes)?;
    let o = Obj::new("prices-history", "", &v)?;
    o.array("history")?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let p = Obj::new("prices-history", format!("history[{i}]"), item)?;
            Ok(PricePoint {
                t: p.uint("t")?,
                p: p.num("p")?,
            })
        })
        .collect()
}

/// `GET /tick-size` body: `{"minimum_tick_size": 0.01}`; must be in (0, 1).
pub fn parse_tick_size(bytes: &[u8]) -> Result<f64, ParseError> {
    let v = parse_json("tick-size", bytes)?;
    let tick = Obj::new("tick-size", "", &v)?.num("minimum_tick_size")?;
    if tick > 0.0 && tick < 1.0 {
        Ok(tick)
    } else {
        Err(ParseError::field(
            "tick-size",
            "minimum_tick_size",
            format!("{tick} is not in (0, 1)"),
        ))
    }
}

/// `GET /time` body: unix seconds as a bare number (or a string, or `{"time": n}`).
pub fn parse_server_time(bytes: &[u8]) -> Result<u64, ParseError> {
    let v = parse_json("time", bytes)?;
    match &v {
        Value::Object(_) => Obj::new("time", "", &v)?.uint("time"),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| ParseError::field("time", "<root>", format!("not a unix time: {n}"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| ParseError::field("time", "<root>", format!("not a unix time: {s:?}"))),
        _ => Err(ParseError::field("time", "<root>", "expected a number")),
    }
}
