//! REST routes of the local server: market data, Gamma markets, trading, heartbeats, admin.
//!
//! Owns request validation and response shapes, including the venue's error bodies
//! (`{"error": ".."}`, 400 `Invalid token id`, 404 `No orderbook exists…`) and L2 header checks
//! with the same HMAC the client computes. State changes go through `state`.
//!
//! Does not own: fault injection (a middleware layered over these routes, except `/admin`
//! and the socket, so the plan can always be changed) or the WebSocket (see `ws`).
//!
//! `/price?side=BUY` answers the best bid and `side=SELL` the best ask (the side of the book).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::state::{Heartbeat, SimState};
use super::{FaultPlan, MidpointShape, Shared, faults};
use crate::order::{OrderType, PostOrderBody};
use crate::types::{END_CURSOR, OrderBook, Side, fmt_decimal};

/// An error answered as the venue does: a status and `{"error": message}`.
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type Res = Result<Response, ApiError>;
type Q = Query<HashMap<String, String>>;

fn ok(v: Value) -> Res {
    Ok(Json(v).into_response())
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/ok", get(|| async { Json(json!("OK")) }))
        .route("/time", get(|| async { Json(json!(now_ms() / 1000)) }))
        .route("/book", get(book))
        .route("/books", post(books))
        .route("/midpoint", get(midpoint))
        .route("/price", get(price))
        .route("/spread", get(spread))
        .route("/last-trade-price", get(last_trade_price))
        .route("/prices-history", get(prices_history))
        .route("/tick-size", get(tick_size))
        .route("/markets", get(markets))
        .route("/gamma/markets", get(gamma_markets))
        .route("/order", post(post_order).delete(cancel_order))
        .route("/orders", delete(cancel_orders))
        .route("/cancel-all", delete(cancel_all))
        .route("/cancel-market-orders", delete(cancel_market_orders))
        .route("/data/orders", get(open_orders))
        .route("/data/order/{hash}", get(get_order))
        .route("/data/trades", get(trades))
        .route("/v1/heartbeats", post(heartbeat))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            faults::middleware,
        ));
    Router::new()
        .merge(api)
        .route("/ws/market", get(super::ws::upgrade))
        .route(
            "/admin/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .with_state(shared)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn token_param(q: &HashMap<String, String>, key: &str) -> Result<String, ApiError> {
    match q.get(key) {
        Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => Ok(t.clone()),
        _ => Err(ApiError::bad("Invalid token id")),
    }
}

fn find_book(st: &SimState, token: &str) -> Result<OrderBook, ApiError> {
    st.books.get(token).cloned().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "No orderbook exists for the requested token id".into(),
        )
    })
}

fn book_of(shared: &Shared, q: &HashMap<String, String>) -> Result<OrderBook, ApiError> {
    let token = token_param(q, "token_id")?;
    find_book(&shared.state(), &token)
}

async fn book(State(s): State<Arc<Shared>>, Query(q): Q) -> Res {
    ok(book_of(&s, &q)?.to_wire())
}

async fn books(State(s): State<Arc<Shared>>, body: Bytes) -> Res {
    let req: Vec<HashMap<String, String>> =
        serde_json::from_slice(&body).map_err(|_| ApiError::bad("Invalid payload"))?;
    let st = s.state();
    let mut out = Vec::new();
    for item in &req {
        let token = token_param(item, "token_id")?;
        if let Some(b) = st.books.get(&token) {
            out.push(b.to_wire());
        }
    }
    ok(Value::Array(out))
}

fn no_quote() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "No orderbook exists for the requested token id".into(),
    )
}

async fn midpoint(State(s): State<Arc<Shared>>, Query(q): Q) -> Res {
    let mid = book_of(&s, &q)?.midpoint().ok_or_else(no_quote)?;
    let key = match s.opts.midpoint_shape {
        MidpointShape::Mid => "mid",
        MidpointShape::MidPrice => "mid_price",
    };
    ok(json!({ key: fmt_decimal(mid) }))
}

async fn price(State(s): State<Arc<Shared>>, Query(q): Q) -> Res {
    let b = book_of(&s, &q)?;
    let side = q
        .get("side")
        .and_then(|x| Side::parse(x))
        .ok_or_else(|| ApiError::bad("Invalid side"))?;
    let level = match side {
        Side::Buy => b.best_bid(),
        Side::Sell => b.best_ask(),
    };
    ok(json!({ "price": fmt_decimal(level.ok_or_else(no_quote)?.price) }))
}

async fn spread(State(s): State<Arc<Shared>>, Query(q): Q) -> Res {
    let spread = book_of(&s, &q)?.spread().ok_or_else(no_quote)?;
    ok(json!({ "spread": fmt_decimal(spread) }))
}

async fn last_trade_price(State(s): State<Arc<Shared>>, Query(q): Q) -> Res {
    let b = book_of(&s, &q)?;
    ok(json!({ "price": fmt_decimal(b.last_trade_price.unwrap_or(0.5)), "side": "" }))
}

async fn prices_history(State(s): State<Arc<Shared>>, Query(q): Q) -> Res {
    let token = token_param(&q, "market")?;
    let parse = |k: &str| q.get(k).and_then(|v| v.parse::<u64>().ok());
    let (start, end) = (
        parse("startTs").unwrap_or(0),
        parse("endTs").unwrap_or(u64::MAX),
    );
    let st = s.state();
    let history: Vec<Value> = st
        .history
        .get(&token)
        .map(|h| {
            h.iter()
                .filter(|p| p.t >= start && p.t <= end)
                .map(|p| json!({ "t": p.t, "p": p.p }))
                .collect()
        })
        .unwrap_or_default();
    ok(json!({ "history": history }))
}

async fn tick_size(State(s): State<Arc<Shared>>, Query(q): Q) -> Res {
    let b = book_of(&s, &q)?;
    ok(json!({ "minimum_tick_size": b.tick_size.unwrap_or(0.01) }))
}

/// Cursor = base64 of the decimal offset, as the venue does (`"MA=="` is 0, `"LTE="` is -1).
fn paginate(items: Vec<Value>, cursor: Option<&String>, limit: usize) -> Result<Value, ApiError> {
    let offset = match cursor.map(String::as_str) {
        None | Some("") => 0,
        Some(END_CURSOR) => items.len(),
        Some(c) => STANDARD
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| ApiError::bad("Invalid next_cursor"))?,
    };
    let limit = limit.max(1);
    let page: Vec<Value> = items.iter().skip(offset).take(limit).cloned().collect();
    let next = offset + page.len();
    let next_cursor = if next >= items.len() {
        END_CURSOR.to_string()
    } else {
        STANDARD.encode(next.to_string())
    };
    Ok(json!({ "limit": limit, "count": page.len(), "next_cursor": next_cursor, "data": page }))
}

fn outcome_names(n: usize) -> Vec<String> {
    if n == 2 {
        vec!["Yes".into(), "No".into()]
    } else {
        (1..=n).map(|i| format!("Outcome {i}")).collect()
    }
}

async fn markets(State(s): State<Arc<Shared>>, Query(q): Q) -> Res {
    let st = s.state();
    let items = st
        .markets
        .iter()
        .map(|(cond, tokens)| {
            let first = tokens.first().and_then(|t| st.books.get(t));
            let names = outcome_names(tokens.len());
            json!({
                "condition_id": cond,
                "question": format!("Local market {cond}?"),
                "market_slug": format!("local-{cond}"),
                "active": true,
                "closed": false,
                "accepting_orders": true,
                "neg_risk": first.and_then(|b| b.neg_risk).unwrap_or(false),
                "minimum_tick_size": first.and_then(|b| b.tick_size).unwrap_or(0.01),
                "minimum_order_size": first.and_then(|b| b.min_order_size).unwrap_or(1.0),
                "tokens": tokens.iter().zip(names).map(|(t, name)| json!({
                    "token_id": t,
                    "outcome": name,
                    "price": st.books.get(t).and_then(OrderBook::midpoint).unwrap_or(0.5),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    ok(paginate(items, q.get("next_cursor"), s.opts.page_size)?)
}

async fn gamma_markets(State(s): State<Arc<Shared>>, Query(q): Q) -> Res {
    let num = |k: &str, d: usize| q.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (limit, offset) = (num("limit", 100), num("offset", 0));
    let st = s.state();
    let enc = |v: Vec<String>| serde_json::to_string(&v).unwrap_or_else(|_| "[]".into());
    let items: Vec<Value> = st
        .markets
        .iter()
        .enumerate()
        .skip(offset)
        .take(limit)
        .map(|(i, (cond, tokens))| {
            let first = tokens.first().and_then(|t| st.books.get(t));
            let prices = tokens
                .iter()
                .map(|t| fmt_decimal(st.books.get(t).and_then(OrderBook::midpoint).unwrap_or(0.5)))
                .collect();
            json!({
                "id": (i + 1).to_string(),
                "question": format!("Local market {cond}?"),
                "conditionId": cond,
                "slug": format!("local-{cond}"),
                "outcomes": enc(outcome_names(tokens.len())),
                "outcomePrices": enc(prices),
                "clobTokenIds": enc(tokens.clone()),
                "enableOrderBook": true,
                "orderPriceMinTickSize": first.and_then(|b| b.tick_size).unwrap_or(0.01),
                "orderMinSize": first.and_then(|b| b.min_order_size).unwrap_or(1.0),
                "negRisk": first.and_then(|b| b.neg_risk).unwrap_or(false),
                "active": true,
                "closed": false,
                "acceptingOrders": true,
                "bestBid": first.and_then(|b| b.best_bid()).map(|l| l.price),
                "bestAsk": first.and_then(|b| b.best_ask()).map(|l| l.price),
                "endDate": "2099-12-31T00:00:00Z",
            })
        })
        .collect();
    ok(Value::Array(items))
}

/// Largest request body the server reads (an order is well under 2 KiB).
const MAX_BODY: usize = 1 << 20;

/// The body of a request whose L2 headers checked out. It consumes the body,
/// so it comes last among a handler's arguments.
struct Authenticated(Bytes);

impl FromRequest<Arc<Shared>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &Arc<Shared>) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|e| ApiError::bad(format!("Invalid payload: {e}")))?;
        authenticate(s, &parts.method, &parts.uri, &parts.headers, &body)?;
        Ok(Self(body))
    }
}

/// Checks the five L2 headers against the configured credential and recomputes the HMAC.
fn authenticate(
    s: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let unauthorized = |why: &str| {
        ApiError(
            StatusCode::UNAUTHORIZED,
            format!("Unauthorized/Invalid api key: {why}"),
        )
    };
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized(&format!("missing header {name}")))
    };
    let creds = &s.opts.credentials;
    let (_address, signature, timestamp) = (
        h("POLY_ADDRESS")?,
        h("POLY_SIGNATURE")?,
        h("POLY_TIMESTAMP")?,
    );
    if h("POLY_API_KEY")? != creds.api_key || h("POLY_PASSPHRASE")? != creds.passphrase {
        return Err(unauthorized("unknown api key or passphrase"));
    }
    let body = std::str::from_utf8(body).map_err(|_| ApiError::bad("body is not UTF-8"))?;
    let expected =
        crate::auth::l2_signature(&creds.secret, timestamp, method.as_str(), uri.path(), body)
            .map_err(|_| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server secret misconfigured".into(),
                )
            })?;
    if expected != signature {
        return Err(unauthorized("bad signature"));
    }
    Ok(())
}

async fn post_order(State(s): State<Arc<Shared>>, Authenticated(body): Authenticated) -> Res {
    let req: PostOrderBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("Invalid order payload: {e}")))?;
    if req.owner != s.opts.credentials.api_key {
        return Err(ApiError::bad(
            "the order owner has to be the owner of the API KEY",
        ));
    }
    let neg_risk = s
        .state()
        .books
        .get(&req.order.token_id)
        .and_then(|b| b.neg_risk)
        .unwrap_or(false);
    let hash = req
        .order
        .hash(neg_risk)
        .map_err(|e| ApiError::bad(format!("Invalid order payload: {e}")))?;
    if s.opts.verify_signatures {
        let recovered = req
            .order
            .recover_signer(neg_risk)
            .map_err(|e| ApiError::bad(format!("INVALID_SIGNATURE: {e}")))?;
        if !recovered
            .to_checksum(None)
            .eq_ignore_ascii_case(&req.order.signer)
        {
            return Err(ApiError::bad(
                "INVALID_SIGNATURE: signature does not match signer",
            ));
        }
    }
    let mut st = s.state();
    if st.post_only && matches!(req.order_type, OrderType::Fok | OrderType::Fak) {
        return Err(ApiError::bad(
            "INVALID_POST_ONLY_ORDER: the market is in post-only mode after a matching-engine restart",
        ));
    }
    match st.place(hash.to_string(), &req, now_ms()) {
        Ok((resp, frame)) => {
            s.broadcast(frame);
            ok(resp)
        }
        Err(r) => Err(ApiError::bad(r.0)),
    }
}

async fn cancel_order(State(s): State<Arc<Shared>>, Authenticated(body): Authenticated) -> Res {
    let req: HashMap<String, String> =
        serde_json::from_slice(&body).map_err(|_| ApiError::bad("Invalid payload"))?;
    let id = req
        .get("orderID")
        .ok_or_else(|| ApiError::bad("Invalid payload: orderID missing"))?;
    let resp = s.state().cancel([id.as_str()]);
    ok(resp)
}

async fn cancel_orders(State(s): State<Arc<Shared>>, Authenticated(body): Authenticated) -> Res {
    let ids: Vec<String> =
        serde_json::from_slice(&body).map_err(|_| ApiError::bad("Invalid payload"))?;
    let resp = s.state().cancel(ids.iter().map(String::as_str));
    ok(resp)
}

async fn cancel_all(State(s): State<Arc<Shared>>, _: Authenticated) -> Res {
    let mut st = s.state();
    let ids = st.live_ids(None, None);
    let resp = st.cancel(ids.iter().map(String::as_str));
    ok(resp)
}

async fn cancel_market_orders(
    State(s): State<Arc<Shared>>,
    Authenticated(body): Authenticated,
) -> Res {
    let req: HashMap<String, String> =
        serde_json::from_slice(&body).map_err(|_| ApiError::bad("Invalid payload"))?;
    let nonempty = |k: &str| req.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let mut st = s.state();
    let ids = st.live_ids(nonempty("market"), nonempty("asset_id"));
    let resp = st.cancel(ids.iter().map(String::as_str));
    ok(resp)
}

async fn open_orders(State(s): State<Arc<Shared>>, Query(q): Q, _: Authenticated) -> Res {
    let nonempty = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let st = s.state();
    let items = st
        .live_ids(nonempty("market"), nonempty("asset_id"))
        .iter()
        .filter_map(|id| st.orders.get(id))
        .filter(|o| nonempty("id").is_none_or(|id| o.id == id))
        .map(|o| o.to_json())
        .collect();
    ok(paginate(items, q.get("next_cursor"), s.opts.page_size)?)
}

async fn get_order(
    State(s): State<Arc<Shared>>,
    Path(hash): Path<String>,
    _: Authenticated,
) -> Res {
    let st = s.state();
    match st.orders.get(&hash) {
        Some(o) => ok(o.to_json()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("order {hash} not found"),
        )),
    }
}

async fn trades(State(s): State<Arc<Shared>>, Query(q): Q, _: Authenticated) -> Res {
    let items = s.state().trades.clone();
    ok(paginate(items, q.get("next_cursor"), s.opts.page_size)?)
}

async fn heartbeat(State(s): State<Arc<Shared>>, _: Authenticated) -> Res {
    let mut st = s.state();
    let id = match &st.heartbeat {
        Some(hb) => hb.id.clone(),
        None => {
            st.heartbeat_seq += 1;
            format!("hb-{}", st.heartbeat_seq)
        }
    };
    st.heartbeat = Some(Heartbeat {
        id: id.clone(),
        last: tokio::time::Instant::now(),
    });
    ok(json!({ "heartbeat_id": id }))
}

async fn get_faults(State(s): State<Arc<Shared>>) -> Res {
    ok(serde_json::to_value(s.faults().plan()).unwrap_or(Value::Null))
}

async fn set_faults(State(s): State<Arc<Shared>>, body: Bytes) -> Res {
    let plan: FaultPlan = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("Invalid fault plan: {e}")))?;
    *s.faults() = faults::FaultEngine::new(plan);
    ok(json!({ "ok": true }))
}

async fn clear_faults(State(s): State<Arc<Shared>>) -> Res {
    *s.faults() = faults::FaultEngine::new(FaultPlan::default());
    ok(json!({ "ok": true }))
}
