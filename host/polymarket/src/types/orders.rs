//! Trading responses: `POST /order`, the cancel family, `/data/orders`, `/data/order/{hash}`,
//! `/data/trades`, `/v1/heartbeats`, and the `{"error": ".."}` body every endpoint may send.
//!
//! Owns the shapes only. Whether a response means success, a retryable failure or a rejection
//! is decided by `rest`, which also looks at the HTTP status.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Obj, ParseError, Side, parse_json};

/// Status the venue reports for a posted or looked-up order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderStatus {
    Live,
    Matched,
    Delayed,
    Unmatched,
    Canceled,
    /// Anything else, kept verbatim (the venue adds statuses without notice).
    Other(String),
}

impl OrderStatus {
    pub fn parse(s: &str) -> OrderStatus {
        match s.to_ascii_lowercase().as_str() {
            "live" | "order_status_live" => OrderStatus::Live,
            "matched" | "order_status_matched" => OrderStatus::Matched,
            "delayed" | "order_status_delayed" => OrderStatus::Delayed,
            "unmatched" | "order_status_unmatched" => OrderStatus::Unmatched,
            "canceled" | "cancelled" | "order_status_canceled" => OrderStatus::Canceled,
            _ => OrderStatus::Other(s.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            OrderStatus::Live => "live",
            OrderStatus::Matched => "matched",
            OrderStatus::Delayed => "delayed",
            OrderStatus::Unmatched => "unmatched",
            OrderStatus::Canceled => "canceled",
            OrderStatus::Other(s) => s,
        }
    }
}

/// `POST /order` response.
#[derive(Debug, Clone, PartialEq)]
pub struct PostOrderResponse {
    pub success: bool,
    pub error_msg: String,
    pub order_id: String,
    pub status: Option<OrderStatus>,
    pub making_amount: Option<f64>,
    pub taking_amount: Option<f64>,
    pub transactions_hashes: Vec<String>,
    pub trade_ids: Vec<String>,
}

const POST: &str = "post order response";

pub fn parse_post_order_response(bytes: &[u8]) -> Result<PostOrderResponse, ParseError> {
    let v = parse_json(POST, bytes)?;
    let o = Obj::new(POST, "", &v)?;
    Ok(PostOrderResponse {
        success: o.opt_bool("success")?.unwrap_or(false),
        error_msg: o.opt_string("errorMsg")?.unwrap_or_default(),
        order_id: o.opt_string("orderID")?.unwrap_or_default(),
        status: o
            .opt_string("status")?
            .filter(|s| !s.is_empty())
            .map(|s| OrderStatus::parse(&s)),
        making_amount: o.opt_num("makingAmount")?,
        taking_amount: o.opt_num("takingAmount")?,
        transactions_hashes: string_list(&o, "transactionsHashes")?,
        trade_ids: string_list(&o, "tradeIDs")?,
    })
}

fn string_list(o: &Obj<'_>, field: &str) -> Result<Vec<String>, ParseError> {
    let Some(arr) = o.opt_array(field)? else {
        return Ok(Vec::new());
    };
    arr.iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(ParseError::field(
                o.what,
                o.path_of(&format!("{field}[{i}]")),
                "expected a string",
            )),
        })
        .collect()
}

/// Response of every cancel endpoint.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CancelResponse {
    pub canceled: Vec<String>,
    /// Order id → reason it was not canceled.
    pub not_canceled: BTreeMap<String, String>,
}

const CANCEL: &str = "cancel response";

pub fn parse_cancel_response(bytes: &[u8]) -> Result<CancelResponse, ParseError> {
    let v = parse_json(CANCEL, bytes)?;
    let o = Obj::new(CANCEL, "", &v)?;
    let canceled = string_list(&o, "canceled")?;
    let mut not_canceled = BTreeMap::new();
    if let Some(nc) = o.get("not_canceled") {
        let nc = Obj::new(CANCEL, "not_canceled", nc)?;
        for (id, reason) in nc.map {
            let reason = match reason {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            not_canceled.insert(id.clone(), reason);
        }
    }
    Ok(CancelResponse {
        canceled,
        not_canceled,
    })
}

/// An order as `/data/orders` and `/data/order/{hash}` report it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenOrder {
    pub id: String,
    pub status: OrderStatus,
    pub market: String,
    pub asset_id: String,
    pub side: Side,
    pub original_size: f64,
    pub size_matched: f64,
    pub price: f64,
    pub created_at: Option<u64>,
    pub expiration: Option<u64>,
    pub order_type: Option<String>,
}

const ORDER: &str = "order";

fn open_order(o: &Obj<'_>) -> Result<OpenOrder, ParseError> {
    Ok(OpenOrder {
        id: o.string("id")?,
        status: OrderStatus::parse(&o.opt_string("status")?.unwrap_or_default()),
        market: o.opt_string("market")?.unwrap_or_default(),
        asset_id: o.string("asset_id")?,
        side: o.side("side")?,
        original_size: o.num("original_size")?,
        size_matched: o.opt_num("size_matched")?.unwrap_or(0.0),
        price: o.num("price")?,
        created_at: o.opt_uint("created_at")?,
        expiration: o.opt_uint("expiration")?,
        order_type: o.opt_string("order_type")?,
    })
}

/// `GET /data/order/{hash}` body; `null` or `{}` means "no such order".
pub fn parse_open_order(bytes: &[u8]) -> Result<Option<OpenOrder>, ParseError> {
    let v = parse_json(ORDER, bytes)?;
    match &v {
        Value::Null => Ok(None),
        Value::Object(m) if m.is_empty() => Ok(None),
        _ => open_order(&Obj::new(ORDER, "", &v)?).map(Some),
    }
}

/// A list endpoint's page: items plus the cursor of the next page (`None` when last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Accepts a bare array or a `{data, next_cursor}` page, so both deployments work.
fn page<T>(
    what: &'static str,
    bytes: &[u8],
    item: impl Fn(&Obj<'_>) -> Result<T, ParseError>,
) -> Result<Page<T>, ParseError> {
    let v = parse_json(what, bytes)?;
    let (arr, prefix, next_cursor) = match &v {
        Value::Array(arr) => (arr, "", None),
        _ => {
            let o = Obj::new(what, "", &v)?;
            let next = o
                .opt_string("next_cursor")?
                .filter(|c| !c.is_empty() && c != super::END_CURSOR);
            (o.array("data")?, "data", next)
        }
    };
    let data = arr
        .iter()
        .enumerate()
        .map(|(i, it)| item(&Obj::new(what, format!("{prefix}[{i}]"), it)?))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page { data, next_cursor })
}

/// `GET /data/orders` body.
pub fn parse_open_orders(bytes: &[u8]) -> Result<Page<OpenOrder>, ParseError> {
    page("open orders", bytes, open_order)
}

/// One maker order a trade filled against.
#[derive(Debug, Clone, PartialEq)]
pub struct MakerFill {
    pub order_id: String,
    pub matched_amount: Option<f64>,
    pub price: Option<f64>,
}

/// A trade as `/data/trades` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    pub id: String,
    pub taker_order_id: Option<String>,
    pub market: String,
    pub asset_id: String,
    pub side: Side,
    pub size: f64,
    pub price: f64,
    pub status: Option<String>,
    pub match_time: Option<u64>,
    pub maker_orders: Vec<MakerFill>,
}

fn trade(o: &Obj<'_>) -> Result<Trade, ParseError> {
    let maker_orders = match o.opt_array("maker_orders")? {
        None => Vec::new(),
        Some(arr) => arr
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let m = Obj::new(o.what, o.path_of(&format!("maker_orders[{i}]")), m)?;
                Ok(MakerFill {
                    order_id: m.string("order_id")?,
                    matched_amount: m.opt_num("matched_amount")?,
                    price: m.opt_num("price")?,
                })
            })
            .collect::<Result<Vec<_>, ParseError>>()?,
    };
    Ok(Trade {
        id: o.string("id")?,
        taker_order_id: o.opt_string("taker_order_id")?,
        market: o.opt_string("market")?.unwrap_or_default(),
        asset_id: o.string("asset_id")?,
        side: o.side("side")?,
        size: o.num("size")?,
        price: o.num("price")?,
        status: o.opt_string("status")?,
        match_time: o.opt_uint("match_time")?,
        maker_orders,
    })
}

/// `GET /data/trades` body.
pub fn parse_trades(bytes: &[u8]) -> Result<Page<Trade>, ParseError> {
    page("trades", bytes, trade)
}

/// `POST /v1/heartbeats` response.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatResponse {
    pub heartbeat_id: String,
}

pub fn parse_heartbeat(bytes: &[u8]) -> Result<HeartbeatResponse, ParseError> {
    let v = parse_json("heartbeat", bytes)?;
    let o = Obj::new("heartbeat", "", &v)?;
    Ok(HeartbeatResponse {
        heartbeat_id: o.opt_string("heartbeat_id")?.unwrap_or_default(),
    })
}

/// The message of an error body: `{"error": ".."}`, or `errorMsg` of a failed post.
/// `None` when the body is not such an object (an HTML page, say).
pub fn parse_error_body(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let o = v.as_object()?;
    ["error", "errorMsg", "message"]
        .iter()
        .find_map(|k| match o.get(*k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
}
