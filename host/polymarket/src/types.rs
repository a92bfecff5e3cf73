//! Typed shapes of everything the CLOB V2 and Gamma APIs send, and their parsers.
//!
//! Owns: turning response bytes into typed values (and, for the shapes the local server emits,
//! typed values back into the exact wire JSON), with a [`ParseError`] that names the shape and the
//! field that was wrong. Every parser takes untrusted bytes and returns an error rather than
//! panicking, whatever the input.
//!
//! Does not own: HTTP status handling (see `rest`), order signing (see `order`) or any I/O.
//!
//! Parsing goes through `serde_json::Value` and the small `Obj` accessor instead of derived
//! `Deserialize` impls because the venue is loose about types (decimals as strings in one place,
//! as numbers in another, two names for the midpoint) and because an error has to say *which*
//! field broke, which serde's positional messages do not.

mod book;
mod markets;
mod orders;
mod ws;

pub use book::{
    Level, OrderBook, PricePoint, books_to_wire, parse_book, parse_books, parse_last_trade_price,
    parse_midpoint, parse_price, parse_prices_history, parse_server_time, parse_spread,
    parse_tick_size,
};
pub use markets::{
    ClobMarket, ClobToken, END_CURSOR, FIRST_CURSOR, GammaMarket, MarketsPage, parse_gamma_markets,
    parse_markets_page,
};
pub use orders::{
    CancelResponse, HeartbeatResponse, MakerFill, OpenOrder, OrderStatus, Page, PostOrderResponse,
    Trade, parse_cancel_response, parse_error_body, parse_heartbeat, parse_open_order,
    parse_open_orders, parse_post_order_response, parse_trades,
};
pub use ws::{
    BestBidAsk, LastTrade, MarketEvent, PriceChange, PriceChangeEntry, TickSizeChange,
    parse_ws_frame,
};

use serde_json::{Map, Value};

/// Why a payload could not be turned into its typed shape. `what` names the shape
/// (`"book"`, `"midpoint"`, `"ws frame"`, ...), `field` the JSON path inside it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// The bytes are not JSON at all: empty, truncated, or an HTML error page from a proxy.
    #[error("{what}: body is not valid JSON ({reason}); starts with {snippet:?}")]
    NotJson {
        what: &'static str,
        reason: String,
        snippet: String,
    },
    /// The JSON is well formed but a field is missing or has the wrong type or value.
    #[error("{what}: field `{field}`: {reason}")]
    Field {
        what: &'static str,
        field: String,
        reason: String,
    },
}

impl ParseError {
    pub(crate) fn field(
        what: &'static str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ParseError::Field {
            what,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Which side of the book an order, level or trade is on. `"BUY"`/`"SELL"` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }

    /// Accepts any case: the docs and the clients disagree on it.
    pub fn parse(s: &str) -> Option<Side> {
        if s.eq_ignore_ascii_case("BUY") {
            Some(Side::Buy)
        } else if s.eq_ignore_ascii_case("SELL") {
            Some(Side::Sell)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses bytes into a JSON value, turning any failure into [`ParseError::NotJson`].
pub(crate) fn parse_json(what: &'static str, bytes: &[u8]) -> Result<Value, ParseError> {
    serde_json::from_slice(bytes).map_err(|e| ParseError::NotJson {
        what,
        reason: e.to_string(),
        snippet: snippet(bytes),
    })
}

/// The first characters of a body, for error messages (lossy: the body may not be UTF-8).
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]);
    text.into_owned()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON object being read field by field; every error carries the shape name and the path.
pub(crate) struct Obj<'a> {
    what: &'static str,
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    /// Views `v` as an object; `path` is where it sits in the payload (`""` for the root).
    pub(crate) fn new(
        what: &'static str,
        path: impl Into<String>,
        v: &'a Value,
    ) -> Result<Self, ParseError> {
        let path = path.into();
        match v {
            Value::Object(map) => Ok(Obj { what, path, map }),
            other => Err(ParseError::field(
                what,
                if path.is_empty() {
                    "<root>".into()
                } else {
                    path
                },
                format!("expected an object, got {}", type_name(other)),
            )),
        }
    }

    pub(crate) fn path_of(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    fn err(&self, field: &str, reason: impl Into<String>) -> ParseError {
        ParseError::field(self.what, self.path_of(field), reason)
    }

    /// The value of a field, treating JSON `null` as absent.
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    pub(crate) fn req(&self, field: &str) -> Result<&'a Value, ParseError> {
        self.get(field).ok_or_else(|| self.err(field, "missing"))
    }

    pub(crate) fn string(&self, field: &str) -> Result<String, ParseError> {
        let v = self.req(field)?;
        as_string(v)
            .ok_or_else(|| self.err(field, format!("expected a string, got {}", type_name(v))))
    }

    pub(crate) fn opt_string(&self, field: &str) -> Result<Option<String>, ParseError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => as_string(v)
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a string, got {}", type_name(v)))),
        }
    }

    /// A decimal that may arrive as a JSON string (`"0.45"`) or number (`0.45`); must be finite.
    pub(crate) fn num(&self, field: &str) -> Result<f64, ParseError> {
        let v = self.req(field)?;
        as_f64(v).map_err(|reason| self.err(field, reason))
    }

    pub(crate) fn opt_num(&self, field: &str) -> Result<Option<f64>, ParseError> {
        match self.get(field) {
            None => Ok(None),
            // Empty strings appear for "no value" in several responses (`makingAmount: ""`).
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(v) => as_f64(v)
                .map(Some)
                .map_err(|reason| self.err(field, reason)),
        }
    }

    /// A non-negative integer sent as a number or a decimal string (timestamps, counts).
    pub(crate) fn uint(&self, field: &str) -> Result<u64, ParseError> {
        let v = self.req(field)?;
        as_u64(v).map_err(|reason| self.err(field, reason))
    }

    pub(crate) fn opt_uint(&self, field: &str) -> Result<Option<u64>, ParseError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(v) => as_u64(v)
                .map(Some)
                .map_err(|reason| self.err(field, reason)),
        }
    }

    pub(crate) fn opt_bool(&self, field: &str) -> Result<Option<bool>, ParseError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // Some Gamma deployments send booleans as strings.
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(v) => Err(self.err(field, format!("expected a boolean, got {}", type_name(v)))),
        }
    }

    pub(crate) fn array(&self, field: &str) -> Result<&'a Vec<Value>, ParseError> {
        let v = self.req(field)?;
        v.as_array()
            .ok_or_else(|| self.err(field, format!("expected an array, got {}", type_name(v))))
    }

    pub(crate) fn opt_array(&self, field: &str) -> Result<Option<&'a Vec<Value>>, ParseError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected an array, got {}", type_name(v)))),
        }
    }

    pub(crate) fn side(&self, field: &str) -> Result<Side, ParseError> {
        let s = self.string(field)?;
        Side::parse(&s).ok_or_else(|| self.err(field, format!("expected BUY or SELL, got {s:?}")))
    }

    pub(crate) fn opt_side(&self, field: &str) -> Result<Option<Side>, ParseError> {
        match self.opt_string(field)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => Side::parse(&s)
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected BUY or SELL, got {s:?}"))),
        }
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        // Ids occasionally arrive as numbers (Gamma `id`); keep their text.
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn as_f64(v: &Value) -> Result<f64, String> {
    let x = match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("number {n} is not representable"))?,
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("expected a decimal, got {s:?}"))?,
        other => return Err(format!("expected a decimal, got {}", type_name(other))),
    };
    if x.is_finite() {
        Ok(x)
    } else {
        Err(format!("decimal {x} is not finite"))
    }
}

fn as_u64(v: &Value) -> Result<u64, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("expected a non-negative integer, got {n}")),
        Value::String(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("expected a non-negative integer, got {s:?}")),
        other => Err(format!("expected an integer, got {}", type_name(other))),
    }
}

/// Formats a decimal the way the venue does on the wire: shortest form, no exponent, no
/// trailing zeros (`0.5`, `25`, `0.001`).
pub fn fmt_decimal(x: f64) -> String {
    // 6 decimals is the venue's precision (USDC and share amounts); rounding there also hides
    // binary floating-point noise such as 0.30000000000000004.
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests;
