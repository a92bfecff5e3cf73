//! Market listings: CLOB `/markets` pages and Gamma `/markets` arrays.
//!
//! Owns the two quirks of these shapes: CLOB pages are walked by an opaque base64 cursor
//! (first `"MA=="`, end `"LTE="`), and Gamma sends `outcomes`, `outcomePrices` and
//! `clobTokenIds` as JSON *encoded inside strings*, except v2 markets which carry a real
//! `positionIds` array instead.
//!
//! Does not own: following the cursor (the `rest` client does that).

use serde_json::Value;

use super::{Obj, ParseError, as_f64, parse_json};

/// Cursor of the first `/markets` page (base64 of `"0"`).
pub const FIRST_CURSOR: &str = "MA==";
/// `next_cursor` value meaning "no more pages" (base64 of `"-1"`).
pub const END_CURSOR: &str = "LTE=";

/// One outcome token of a CLOB market.
#[derive(Debug, Clone, PartialEq)]
pub struct ClobToken {
    pub token_id: String,
    pub outcome: Option<String>,
    pub price: Option<f64>,
}

/// One item of a CLOB `/markets` page (the fields the host uses; the rest stay in `raw`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClobMarket {
    pub condition_id: String,
    pub question: Option<String>,
    pub market_slug: Option<String>,
    pub tokens: Vec<ClobToken>,
    pub active: Option<bool>,
    pub closed: Option<bool>,
    pub accepting_orders: Option<bool>,
    pub neg_risk: Option<bool>,
    pub minimum_tick_size: Option<f64>,
    pub minimum_order_size: Option<f64>,
    pub raw: Value,
}

/// One page of CLOB `/markets`.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketsPage {
    pub limit: Option<u64>,
    pub count: Option<u64>,
    pub next_cursor: String,
    pub data: Vec<ClobMarket>,
}

impl MarketsPage {
    /// True when this page is the last one.
    pub fn is_last(&self) -> bool {
        self.next_cursor.is_empty() || self.next_cursor == END_CURSOR
    }
}

const PAGE: &str = "markets page";

/// `GET /markets` body.
pub fn parse_markets_page(bytes: &[u8]) -> Result<MarketsPage, ParseError> {
    let v = parse_json(PAGE, bytes)?;
    let o = Obj::new(PAGE, "", &v)?;
    let data = o
        .array("data")?
        .iter()
        .enumerate()
        .map(|(i, item)| clob_market(&Obj::new(PAGE, format!("data[{i}]"), item)?, item))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(MarketsPage {
        limit: o.opt_uint("limit")?,
        count: o.opt_uint("count")?,
        next_cursor: o.opt_string("next_cursor")?.unwrap_or_default(),
        data,
    })
}

fn clob_market(o: &Obj<'_>, raw: &Value) -> Result<ClobMarket, ParseError> {
    let tokens = match o.opt_array("tokens")? {
        None => Vec::new(),
        Some(arr) => arr
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let t = Obj::new(PAGE, o.path_of(&format!("tokens[{i}]")), t)?;
                Ok(ClobToken {
                    token_id: t.string("token_id")?,
                    outcome: t.opt_string("outcome")?,
                    price: t.opt_num("price")?,
                })
            })
            .collect::<Result<Vec<_>, ParseError>>()?,
    };
    Ok(ClobMarket {
        condition_id: o.string("condition_id")?,
        question: o.opt_string("question")?,
        market_slug: o.opt_string("market_slug")?,
        tokens,
        active: o.opt_bool("active")?,
        closed: o.opt_bool("closed")?,
        accepting_orders: o.opt_bool("accepting_orders")?,
        neg_risk: o.opt_bool("neg_risk")?,
        minimum_tick_size: o.opt_num("minimum_tick_size")?,
        minimum_order_size: o.opt_num("minimum_order_size")?,
        raw: raw.clone(),
    })
}

/// One Gamma market, with the string-encoded arrays decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct GammaMarket {
    pub id: String,
    pub question: Option<String>,
    pub condition_id: Option<String>,
    pub slug: Option<String>,
    pub outcomes: Vec<String>,
    pub outcome_prices: Vec<f64>,
    /// From `clobTokenIds`, or from `positionIds` on v2 markets.
    pub token_ids: Vec<String>,
    pub enable_order_book: Option<bool>,
    pub order_price_min_tick_size: Option<f64>,
    pub order_min_size: Option<f64>,
    pub neg_risk: Option<bool>,
    pub active: Option<bool>,
    pub closed: Option<bool>,
    pub accepting_orders: Option<bool>,
    pub best_bid: Option<f64>,
    pub best_ask: Option<f64>,
    pub end_date: Option<String>,
    pub version: Option<String>,
}

const GAMMA: &str = "gamma markets";

/// Gamma `GET /markets` body: a bare array.
pub fn parse_gamma_markets(bytes: &[u8]) -> Result<Vec<GammaMarket>, ParseError> {
    let v = parse_json(GAMMA, bytes)?;
    let arr = v
        .as_array()
        .ok_or_else(|| ParseError::field(GAMMA, "<root>", "expected an array"))?;
    arr.iter()
        .enumerate()
        .map(|(i, item)| gamma_market(&Obj::new(GAMMA, format!("[{i}]"), item)?))
        .collect()
}

fn gamma_market(o: &Obj<'_>) -> Result<GammaMarket, ParseError> {
    let mut token_ids = encoded_array(o, "clobTokenIds")?
        .iter()
        .map(|v| plain_string(o, "clobTokenIds", v))
        .collect::<Result<Vec<_>, _>>()?;
    if token_ids.is_empty() {
        token_ids = encoded_array(o, "positionIds")?
            .iter()
            .map(|v| plain_string(o, "positionIds", v))
            .collect::<Result<Vec<_>, _>>()?;
    }
    let outcomes = encoded_array(o, "outcomes")?
        .iter()
        .map(|v| plain_string(o, "outcomes", v))
        .collect::<Result<Vec<_>, _>>()?;
    let outcome_prices = encoded_array(o, "outcomePrices")?
        .iter()
        .map(|v| as_f64(v).map_err(|r| ParseError::field(GAMMA, o.path_of("outcomePrices"), r)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GammaMarket {
        id: o.string("id")?,
        question: o.opt_string("question")?,
        condition_id: o.opt_string("conditionId")?,
        slug: o.opt_string("slug")?,
        outcomes,
        outcome_prices,
        token_ids,
        enable_order_book: o.opt_bool("enableOrderBook")?,
        order_price_min_tick_size: o.opt_num("orderPriceMinTickSize")?,
        order_min_size: o.opt_num("orderMinSize")?,
        neg_risk: o.opt_bool("negRisk")?,
        active: o.opt_bool("active")?,
        closed: o.opt_bool("closed")?,
        accepting_orders: o.opt_bool("acceptingOrders")?,
        best_bid: o.opt_num("bestBid")?,
        best_ask: o.opt_num("bestAsk")?,
        end_date: o.opt_string("endDate")?,
        version: o.opt_string("version")?,
    })
}

/// An array that is either real JSON or JSON encoded in a string; absent or `""` is empty.
fn encoded_array(o: &Obj<'_>, field: &str) -> Result<Vec<Value>, ParseError> {
    match o.get(field) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a.clone()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(a)) => Ok(a),
            Ok(_) => Err(ParseError::field(
                GAMMA,
                o.path_of(field),
                "encoded value is not an array",
            )),
            Err(e) => Err(ParseError::field(
                GAMMA,
                o.path_of(field),
                format!("encoded array is not valid JSON: {e}"),
            )),
        },
        Some(_) => Err(ParseError::field(
            GAMMA,
            o.path_of(field),
            "expected an array or a JSON-encoded array string",
        )),
    }
}

fn plain_string(o: &Obj<'_>, field: &str, v: &Value) -> Result<String, ParseError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(ParseError::field(
            GAMMA,
            o.path_of(field),
            "expected string items",
        )),
    }
}
