//! The control plane: an HTTP API over the fleet's registry and store, the
//! Prometheus endpoint and the web dashboard, served by `serve`.
//!
//! Owns the HTTP server, its routes, authentication (a bearer token, see
//! [`auth`]) and the JSON shape of its errors. Reads the registry and the
//! store; changes strategies only through their control handles
//! ([`crate::fleet::Control`]). Never runs strategies, never writes the
//! journal, checkpoints or orders, and never logs the token.
//!
//! Routes (all but `/healthz`, `/readyz`, `/metrics` and the dashboard's
//! static page need `Authorization: Bearer <token>`):
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/healthz` | the process answers |
//! | GET | `/readyz` | every strategy settled and none waiting past `stuck_after`; 503 with reasons when not |
//! | GET | `/metrics` | Prometheus text ([`crate::metrics`]) |
//! | GET | `/` | the dashboard |
//! | GET | `/api/strategies`, `/api/strategies/{name}` | the registry's views (the list as serialized at most 250 ms ago, see [`views`]) |
//! | GET | `/api/strategies/{name}/orders\|trades\|events\|checkpoints` | from the store |
//! | GET | `/api/events` | the host's newest system events, newest first |
//! | GET | `/api/stream` | server-sent events: the registry's views every second, system events when they change; takes the token as `?token=` too (browsers' `EventSource` sends no headers) |
//! | POST | `/api/strategies/{name}/pause\|resume\|restart` | control handles |
//! | POST | `/api/strategies/{name}/swap` | a module upload (`?mode=`) or `{"path", "mode"}`; see [`crate::supervisor::SwapMode`] |
//! | POST | `/api/strategies/{name}/promote\|discard` | the strategy's shadow |
//! | POST | `/api/halt` | pause every strategy |

pub mod auth;
mod dashboard;
mod routes;
mod swap;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

pub use auth::{Token, TokenError};

use crate::fleet::Registry;
use crate::store::StateStore;

/// The default address of the control plane.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8686";

/// Request bodies larger than this are refused (413).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Module uploads (`POST /api/strategies/{name}/swap`) larger than this are
/// refused (413).
pub const MODULE_LIMIT: usize = 32 * 1024 * 1024;

/// `[http]` of a fleet file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Where the API listens (`--http` overrides it).
    pub addr: String,
    /// Whether to serve it at all (`--no-http` turns it off).
    pub enabled: bool,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            addr: DEFAULT_ADDR.to_string(),
            enabled: true,
        }
    }
}

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<Registry>,
    pub store: Arc<dyn StateStore>,
    /// True while the store is in an outage (writes go to the backlog).
    pub store_outage: watch::Receiver<bool>,
    pub token: Arc<Token>,
    /// When the server started (for `polybot_uptime_seconds`).
    pub started: std::time::Instant,
    /// `[health] stuck_after`: a running strategy with events waiting this
    /// long is not ready.
    pub stuck_after: std::time::Duration,
    /// Loads and checks modules to swap in.
    pub sandbox: Arc<crate::sandbox::Sandbox>,
    /// The host's data directory (uploaded modules go to `modules/`).
    pub data_dir: std::path::PathBuf,
    /// `/api/strategies`, kept serialized by [`serve`] (see [`views`]).
    pub views: Arc<views::Views>,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("[http] addr `{addr}`: not an address (expected IP:PORT, e.g. {DEFAULT_ADDR})")]
    BadAddr { addr: String },
    #[error(
        "[http] addr {addr}: not a loopback address, and no token was given: set POLYBOT_API_TOKEN to serve the API beyond this machine"
    )]
    OpenWithoutToken { addr: SocketAddr },
    #[error("[http] addr {addr}: cannot listen: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Parses an address.
///
/// # Errors
/// [`ApiError::BadAddr`].
pub fn parse_addr(addr: &str) -> Result<SocketAddr, ApiError> {
    addr.parse().map_err(|_| ApiError::BadAddr {
        addr: addr.to_string(),
    })
}

/// Binds the listener; a non-loopback address needs an explicit token.
///
/// # Errors
/// [`ApiError::OpenWithoutToken`] or [`ApiError::Bind`].
pub async fn bind(
    addr: SocketAddr,
    explicit_token: bool,
) -> Result<tokio::net::TcpListener, ApiError> {
    if !addr.ip().is_loopback() && !explicit_token {
        return Err(ApiError::OpenWithoutToken { addr });
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })
}

/// The router with every route, the auth layer and the body cap.
pub fn router(state: ApiState) -> axum::Router {
    routes::router(state)
}

/// Serves until the task is dropped; a failing server is logged and
/// recorded as a system event (the strategies go on without it).
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState) {
    let store = state.store.clone();
    state.views.refresh(&state.registry);
    let refresh = tokio::spawn(state.views.clone().keep_current(state.registry.clone()));
    let served = axum::serve(listener, router(state)).await;
    refresh.abort();
    if let Err(e) = served {
        tracing::error!("the HTTP API stopped: {e}");
        crate::fleet::health::record(store.as_ref(), "http-stopped", e.to_string()).await;
    }
}

/// An error as the API answers it: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        HttpError::new(StatusCode::NOT_FOUND, format!("{what}: not found"))
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<crate::store::StoreError> for HttpError {
    fn from(e: crate::store::StoreError) -> Self {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}
