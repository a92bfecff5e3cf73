//! `ClobClient`: the CLOB V2 REST API (and Gamma `/markets`) over reqwest.
//!
//! Owns: building each request (URL, query, L2 headers over the exact body bytes), sending it
//! once, and turning the outcome into a typed value or a classified [`ClobError`] that names the
//! endpoint. Paginated listings are followed to the end marker.
//!
//! Does not own: retries, backoff, rate limiting or circuit breaking — the client sends each
//! request exactly once and says what happened; the host's execution layer decides what to do
//! (design: "venue never retries or breaks circuits itself"). Nor order construction (`order`).

mod error;

pub use error::{ClobError, RejectCode, TransportKind};

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::auth::Credentials;
use crate::order::SignedOrder;
use crate::types::{
    self, CancelResponse, ClobMarket, FIRST_CURSOR, GammaMarket, HeartbeatResponse, MarketsPage,
    OpenOrder, OrderBook, Page, ParseError, PostOrderResponse, PricePoint, Side, Trade,
};

/// Production CLOB endpoint. Tests never use it: they point the client at the local server.
pub const CLOB_URL: &str = "https://clob.polymarket.com";
/// Production Gamma endpoint.
pub const GAMMA_URL: &str = "https://gamma-api.polymarket.com";

/// Where to send requests and how long to wait.
#[derive(Debug, Clone)]
pub struct ClobConfig {
    /// CLOB base URL without a trailing slash.
    pub base_url: String,
    /// Gamma base URL without a trailing slash (`/markets` is appended).
    pub gamma_url: String,
    /// Whole-request timeout (connect + send + full body).
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl ClobConfig {
    pub fn new(base_url: impl Into<String>, gamma_url: impl Into<String>) -> Self {
        ClobConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            gamma_url: gamma_url.into().trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Optional filters of `/prices-history`.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub start_ts: Option<u64>,
    pub end_ts: Option<u64>,
    /// `max`, `all`, `1m`, `1w`, `1d`, `6h`, `1h`.
    pub interval: Option<String>,
    pub fidelity: Option<u32>,
}

/// Upper bound on pages followed in one listing, so a server that never sends the end
/// marker cannot keep the caller looping.
const MAX_PAGES: usize = 10_000;

/// A CLOB REST client. Cheap to clone (the connection pool is shared).
#[derive(Clone, Debug)]
pub struct ClobClient {
    http: reqwest::Client,
    cfg: Arc<ClobConfig>,
    creds: Option<Arc<Credentials>>,
    /// Responses that carried `Poly-RateLimit-Warning: true` (shared by clones).
    rate_warnings: Arc<std::sync::atomic::AtomicU64>,
}

/// The header the venue sets while a per-signer bucket is over its limit
/// (warning mode: the request was still served).
pub const RATE_LIMIT_WARNING: &str = "poly-ratelimit-warning";

/// A request's parts; built by each method, sent by [`ClobClient::send`].
struct Req<'a> {
    endpoint: &'static str,
    method: Method,
    path: &'a str,
    query: Vec<(&'static str, String)>,
    body: Option<String>,
    auth: bool,
    gamma: bool,
}

impl<'a> Req<'a> {
    fn get(endpoint: &'static str, path: &'a str) -> Self {
        Req {
            endpoint,
            method: Method::GET,
            path,
            query: Vec::new(),
            body: None,
            auth: false,
            gamma: false,
        }
    }

    fn with(mut self, method: Method, body: String) -> Self {
        self.method = method;
        self.body = Some(body);
        self
    }

    fn q(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.query.push((k, v.into()));
        self
    }

    fn authed(mut self) -> Self {
        self.auth = true;
        self
    }
}

impl ClobClient {
    /// A client without credentials (market data only).
    ///
    /// # Errors
    /// [`ClobError::Transport`] if the TLS backend cannot be initialised.
    pub fn new(cfg: ClobConfig) -> Result<Self, ClobError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .build()
            .map_err(|e| ClobError::from_reqwest("client setup", &e))?;
        Ok(ClobClient {
            http,
            cfg: Arc::new(cfg),
            creds: None,
            rate_warnings: Arc::default(),
        })
    }

    /// Adds L2 credentials for the trading endpoints.
    pub fn with_credentials(mut self, creds: Credentials) -> Self {
        self.creds = Some(Arc::new(creds));
        self
    }

    /// How many responses so far carried `Poly-RateLimit-Warning: true`.
    pub fn rate_limit_warnings(&self) -> u64 {
        self.rate_warnings
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn config(&self) -> &ClobConfig {
        &self.cfg
    }

    /// Sends one request once and returns the body of a 2xx response.
    async fn send(&self, req: Req<'_>) -> Result<bytes::Bytes, ClobError> {
        let endpoint = req.endpoint;
        let base = if req.gamma {
            &self.cfg.gamma_url
        } else {
            &self.cfg.base_url
        };
        let mut rb = self
            .http
            .request(req.method.clone(), format!("{base}{}", req.path))
            .query(&req.query);
        let body = req.body.unwrap_or_default();
        if req.auth {
            let creds = self
                .creds
                .as_ref()
                .ok_or(ClobError::NoCredentials { endpoint })?;
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let headers = creds
                .l2_headers(ts, req.method.as_str(), req.path, &body)
                .map_err(|source| ClobError::Auth { endpoint, source })?;
            for (name, value) in headers.pairs() {
                rb = rb.header(name, value);
            }
        }
        if !body.is_empty() {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| ClobError::from_reqwest(endpoint, &e))?;
        let status = resp.status().as_u16();
        if resp
            .headers()
            .get(RATE_LIMIT_WARNING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        {
            self.rate_warnings
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClobError::from_reqwest(endpoint, &e))?;
        if (200..300).contains(&status) {
            Ok(bytes)
        } else {
            Err(ClobError::from_status(
                endpoint,
                status,
                retry_after.as_deref(),
                &bytes,
            ))
        }
    }

    /// Sends and parses, mapping a parse failure to [`ClobError::Malformed`].
    async fn call<T>(
        &self,
        req: Req<'_>,
        parse: impl FnOnce(&[u8]) -> Result<T, ParseError>,
    ) -> Result<T, ClobError> {
        let endpoint = req.endpoint;
        let bytes = self.send(req).await?;
        parse(&bytes).map_err(|source| ClobError::Malformed { endpoint, source })
    }

    /// `GET /ok`: the venue is up.
    pub async fn ok(&self) -> Result<(), ClobError> {
        self.send(Req::get("GET /ok", "/ok")).await.map(drop)
    }

    /// `GET /time`: server unix time in seconds.
    pub async fn server_time(&self) -> Result<u64, ClobError> {
        self.call(Req::get("GET /time", "/time"), types::parse_server_time)
            .await
    }

    /// `GET /book`: one token's book, best levels first.
    pub async fn book(&self, token_id: &str) -> Result<OrderBook, ClobError> {
        self.call(
            Req::get("GET /book", "/book").q("token_id", token_id),
            types::parse_book,
        )
        .await
    }

    /// `POST /books`: several books in one request.
    pub async fn books(&self, token_ids: &[String]) -> Result<Vec<OrderBook>, ClobError> {
        let body: Vec<_> = token_ids.iter().map(|t| json!({ "token_id": t })).collect();
        let req = Req::get("POST /books", "/books").with(Method::POST, json!(body).to_string());
        self.call(req, types::parse_books).await
    }

    /// `GET /midpoint` (either response shape).
    pub async fn midpoint(&self, token_id: &str) -> Result<f64, ClobError> {
        self.call(
            Req::get("GET /midpoint", "/midpoint").q("token_id", token_id),
            types::parse_midpoint,
        )
        .await
    }

    /// `GET /price` for one side.
    pub async fn price(&self, token_id: &str, side: Side) -> Result<f64, ClobError> {
        let req = Req::get("GET /price", "/price")
            .q("token_id", token_id)
            .q("side", side.as_str());
        self.call(req, types::parse_price).await
    }

    /// `GET /spread`.
    pub async fn spread(&self, token_id: &str) -> Result<f64, ClobError> {
        self.call(
            Req::get("GET /spread", "/spread").q("token_id", token_id),
            types::parse_spread,
        )
        .await
    }

    /// `GET /last-trade-price`: price and, when known, the taker side.
    pub async fn last_trade_price(&self, token_id: &str) -> Result<(f64, Option<Side>), ClobError> {
        let req = Req::get("GET /last-trade-price", "/last-trade-price").q("token_id", token_id);
        self.call(req, types::parse_last_trade_price).await
    }

    /// `GET /prices-history`.
    pub async fn prices_history(
        &self,
        token_id: &str,
        q: &HistoryQuery,
    ) -> Result<Vec<PricePoint>, ClobError> {
        let mut req = Req::get("GET /prices-history", "/prices-history").q("market", token_id);
        if let Some(v) = q.start_ts {
            req = req.q("startTs", v.to_string());
        }
        if let Some(v) = q.end_ts {
            req = req.q("endTs", v.to_string());
        }
        if let Some(v) = &q.interval {
            req = req.q("interval", v.clone());
        }
        if let Some(v) = q.fidelity {
            req = req.q("fidelity", v.to_string());
        }
        self.call(req, types::parse_prices_history).await
    }

    /// `GET /tick-size`.
    pub async fn tick_size(&self, token_id: &str) -> Result<f64, ClobError> {
        self.call(
            Req::get("GET /tick-size", "/tick-size").q("token_id", token_id),
            types::parse_tick_size,
        )
        .await
    }

    /// `GET /markets`: one page (`cursor` = `"MA=="` for the first).
    pub async fn markets_page(&self, cursor: &str) -> Result<MarketsPage, ClobError> {
        self.call(
            Req::get("GET /markets", "/markets").q("next_cursor", cursor),
            types::parse_markets_page,
        )
        .await
    }

    /// `GET /markets`, following `next_cursor` until the end marker.
    ///
    /// # Errors
    /// The first failing page's error; [`ClobError::Malformed`] if the server repeats a cursor.
    pub async fn markets(&self) -> Result<Vec<ClobMarket>, ClobError> {
        let mut cursor = FIRST_CURSOR.to_string();
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self.markets_page(&cursor).await?;
            out.extend(page.data.iter().cloned());
            if page.is_last() {
                return Ok(out);
            }
            if page.next_cursor == cursor {
                return Err(repeated_cursor("GET /markets", &cursor));
            }
            cursor = page.next_cursor;
        }
        Err(repeated_cursor("GET /markets", &cursor))
    }

    /// Gamma `GET /markets` with the given query parameters (e.g. `("closed", "false")`).
    pub async fn gamma_markets(
        &self,
        params: &[(&'static str, &str)],
    ) -> Result<Vec<GammaMarket>, ClobError> {
        let mut req = Req::get("GET gamma /markets", "/markets");
        req.gamma = true;
        for (k, v) in params {
            req = req.q(k, *v);
        }
        self.call(req, types::parse_gamma_markets).await
    }

    /// `POST /order` with the signed order's exact bytes.
    ///
    /// # Errors
    /// [`ClobError::Rejected`] when the venue refuses it (with HTTP 4xx, or `success: false`);
    /// `is_duplicate()` is true when this exact order already exists. A
    /// [`TransportKind::Interrupted`] failure means the order may have been placed: look it
    /// up with [`ClobClient::get_order`] before sending the same bytes again.
    pub async fn post_order(&self, order: &SignedOrder) -> Result<PostOrderResponse, ClobError> {
        const EP: &str = "POST /order";
        let req = Req::get(EP, "/order")
            .with(Method::POST, order.body.clone())
            .authed();
        let resp = self.call(req, types::parse_post_order_response).await?;
        if !resp.success {
            return Err(ClobError::Rejected {
                endpoint: EP,
                status: 200,
                code: RejectCode::find(&resp.error_msg),
                message: resp.error_msg,
            });
        }
        Ok(resp)
    }

    /// `DELETE /order` for one order hash.
    pub async fn cancel_order(&self, order_id: &str) -> Result<CancelResponse, ClobError> {
        let req = Req::get("DELETE /order", "/order")
            .with(Method::DELETE, json!({ "orderID": order_id }).to_string())
            .authed();
        self.call(req, types::parse_cancel_response).await
    }

    /// `DELETE /orders` for several order hashes.
    pub async fn cancel_orders(&self, order_ids: &[String]) -> Result<CancelResponse, ClobError> {
        let req = Req::get("DELETE /orders", "/orders")
            .with(Method::DELETE, json!(order_ids).to_string())
            .authed();
        self.call(req, types::parse_cancel_response).await
    }

    /// `DELETE /cancel-all`.
    pub async fn cancel_all(&self) -> Result<CancelResponse, ClobError> {
        let req = Req::get("DELETE /cancel-all", "/cancel-all").authed();
        let req = Req {
            method: Method::DELETE,
            ..req
        };
        self.call(req, types::parse_cancel_response).await
    }

    /// `DELETE /cancel-market-orders` for a market and/or one of its assets.
    pub async fn cancel_market_orders(
        &self,
        market: Option<&str>,
        asset_id: Option<&str>,
    ) -> Result<CancelResponse, ClobError> {
        let body = json!({ "market": market.unwrap_or(""), "asset_id": asset_id.unwrap_or("") });
        let req = Req::get("DELETE /cancel-market-orders", "/cancel-market-orders")
            .with(Method::DELETE, body.to_string())
            .authed();
        self.call(req, types::parse_cancel_response).await
    }

    /// `GET /data/orders`: all open orders, following pagination.
    pub async fn open_orders(
        &self,
        market: Option<&str>,
        asset_id: Option<&str>,
    ) -> Result<Vec<OpenOrder>, ClobError> {
        const EP: &str = "GET /data/orders";
        self.paged(EP, "/data/orders", types::parse_open_orders, |mut req| {
            if let Some(m) = market {
                req = req.q("market", m);
            }
            if let Some(a) = asset_id {
                req = req.q("asset_id", a);
            }
            req
        })
        .await
    }

    /// `GET /data/order/{hash}`: `None` when the venue does not know the order (404 or `null`).
    pub async fn get_order(&self, order_hash: &str) -> Result<Option<OpenOrder>, ClobError> {
        let path = format!("/data/order/{order_hash}");
        let req = Req::get("GET /data/order", &path).authed();
        match self.call(req, types::parse_open_order).await {
            Err(ClobError::Rejected { status: 404, .. }) => Ok(None),
            other => other,
        }
    }

    /// `GET /data/trades`: all trades, following pagination.
    pub async fn trades(&self) -> Result<Vec<Trade>, ClobError> {
        self.paged(
            "GET /data/trades",
            "/data/trades",
            types::parse_trades,
            |r| r,
        )
        .await
    }

    /// `POST /v1/heartbeats`: keeps the dead-man switch from cancelling open orders. Pass the
    /// id from the previous response (empty for the first).
    pub async fn heartbeat(&self, heartbeat_id: &str) -> Result<HeartbeatResponse, ClobError> {
        let req = Req::get("POST /v1/heartbeats", "/v1/heartbeats")
            .with(
                Method::POST,
                json!({ "heartbeat_id": heartbeat_id }).to_string(),
            )
            .authed();
        self.call(req, types::parse_heartbeat).await
    }

    async fn paged<T>(
        &self,
        endpoint: &'static str,
        path: &str,
        parse: fn(&[u8]) -> Result<Page<T>, ParseError>,
        filters: impl Fn(Req<'_>) -> Req<'_>,
    ) -> Result<Vec<T>, ClobError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut req = filters(Req::get(endpoint, path).authed());
            if let Some(c) = &cursor {
                req = req.q("next_cursor", c.clone());
            }
            let page = self.call(req, parse).await?;
            out.extend(page.data);
            match page.next_cursor {
                None => return Ok(out),
                Some(next) if Some(&next) == cursor.as_ref() => {
                    return Err(repeated_cursor(endpoint, &next));
                }
                Some(next) => cursor = Some(next),
            }
        }
        Err(repeated_cursor(endpoint, cursor.as_deref().unwrap_or("")))
    }
}

fn repeated_cursor(endpoint: &'static str, cursor: &str) -> ClobError {
    ClobError::Malformed {
        endpoint,
        source: ParseError::Field {
            what: "page",
            field: "next_cursor".into(),
            reason: format!("pagination does not advance (cursor {cursor:?})"),
        },
    }
}
