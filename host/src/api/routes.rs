//! The API's routes and handlers: views of the registry, reads of the store,
//! control requests through the strategies' handles.
//!
//! Owns the request and response shapes; never changes a strategy other
//! than through [`Control`] or the durable halt ([`crate::exec::halt`]),
//! never writes to the store otherwise.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiState, BODY_LIMIT, HttpError, MODULE_LIMIT, auth, dashboard, swap};
use crate::fleet::{Control, StrategyState};

type Answer = Result<Response, HttpError>;

pub(super) fn router(state: ApiState) -> axum::Router {
    let guarded = axum::Router::new()
        .route("/api/strategies", get(strategies))
        .route("/api/strategies/{name}", get(strategy))
        .route("/api/strategies/{name}/orders", get(orders))
        .route("/api/strategies/{name}/trades", get(trades))
        .route("/api/strategies/{name}/events", get(events))
        .route("/api/strategies/{name}/checkpoints", get(checkpoints))
        .route(
            "/api/strategies/{name}/swap",
            post(swap::swap).layer(DefaultBodyLimit::max(MODULE_LIMIT)),
        )
        .route("/api/strategies/{name}/promote", post(swap::promote))
        .route("/api/strategies/{name}/discard", post(swap::discard))
        .route("/api/strategies/{name}/{action}", post(control))
        .route("/api/halt", post(halt))
        .route("/api/events", get(system_events))
        .route("/api/stream", get(stream))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .route("/dashboard.js", get(script))
        .merge(guarded)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn not_found() -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when every strategy runs or was stopped on purpose (paused,
/// stopped, fatal) and no running one has had events waiting for
/// `[health] stuck_after` with none handled.
async fn readyz(State(state): State<ApiState>) -> Response {
    let views = state.registry.snapshot();
    let mut reasons = Vec::new();
    if views.is_empty() {
        reasons.push("no strategies".to_string());
    }
    let stuck_ms = u64::try_from(state.stuck_after.as_millis()).unwrap_or(u64::MAX);
    for v in &views {
        match v.state {
            StrategyState::Running => {
                if let Some(waiting) = v.waiting_ms.filter(|&w| w >= stuck_ms) {
                    reasons.push(format!(
                        "{}: events waiting for {waiting} ms with none handled",
                        v.name
                    ));
                }
            }
            StrategyState::Paused | StrategyState::Stopped | StrategyState::Fatal => {}
            other => reasons.push(format!("{}: {other}", v.name)),
        }
    }
    let outage = *state.store_outage.borrow();
    let body = json!({
        "ready": reasons.is_empty(),
        "reasons": reasons,
        "store": if outage { "backlogging" } else { "reachable" },
        "strategies": views.len(),
    });
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let strategies: Vec<_> = state
        .registry
        .slots()
        .iter()
        .map(|s| (s.view(), s.handle_seconds()))
        .collect();
    let text = crate::metrics::render(
        &strategies,
        *state.store_outage.borrow(),
        state.started.elapsed(),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn index() -> Html<&'static str> {
    Html(dashboard::HTML)
}

async fn script() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        dashboard::SCRIPT,
    )
        .into_response()
}

/// Every strategy's view, as serialized at most [`super::views::REFRESH`] ago.
async fn strategies(State(state): State<ApiState>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        state.views.body(),
    )
        .into_response()
}

pub(super) fn known(
    state: &ApiState,
    name: &str,
) -> Result<std::sync::Arc<crate::fleet::Slot>, HttpError> {
    state
        .registry
        .get(name)
        .ok_or_else(|| HttpError::not_found(format!("strategy `{name}`")))
}

async fn strategy(State(state): State<ApiState>, Path(name): Path<String>) -> Answer {
    Ok(Json(known(&state, &name)?.view()).into_response())
}

/// `?limit=N` of list routes: the newest N (default 100, at most 10000).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<usize>,
}

const MAX_LIMIT: usize = 10_000;

fn limit(query: Result<Query<Page>, QueryRejection>) -> Result<usize, HttpError> {
    let Query(page) = query.map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    match page.limit {
        None => Ok(100),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!("limit: between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// The newest `n` of a list kept oldest first.
fn newest<T>(mut list: Vec<T>, n: usize) -> Vec<T> {
    let skip = list.len().saturating_sub(n);
    list.drain(..skip);
    list
}

/// The records `/orders` and `/trades` list.
#[derive(Clone, Copy)]
enum Records {
    Orders,
    Trades,
}

/// The strategy's newest `?limit=` records of one kind (oldest first), as
/// `{"strategy", "orders" | "trades"}`.
async fn records(
    state: &ApiState,
    name: String,
    query: Result<Query<Page>, QueryRejection>,
    kind: Records,
) -> Answer {
    let n = limit(query)?;
    known(state, &name)?;
    let body = match kind {
        Records::Orders => {
            json!({ "strategy": name, "orders": newest(state.store.orders(&name).await?, n) })
        }
        Records::Trades => {
            json!({ "strategy": name, "trades": newest(state.store.trades(&name).await?, n) })
        }
    };
    Ok(Json(body).into_response())
}

async fn orders(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<Page>, QueryRejection>,
) -> Answer {
    records(&state, name, query, Records::Orders).await
}

async fn trades(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<Page>, QueryRejection>,
) -> Answer {
    records(&state, name, query, Records::Trades).await
}

/// The strategy's system events (those whose component names it), newest
/// first, among the host's newest [`MAX_LIMIT`] system events.
async fn events(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<Page>, QueryRejection>,
) -> Answer {
    let n = limit(query)?;
    known(&state, &name)?;
    let suffix = format!("/{name}");
    // The store gives the newest events oldest first.
    let events: Vec<_> = state
        .store
        .system_events(MAX_LIMIT)
        .await?
        .into_iter()
        .rev()
        .filter(|e| e.component.ends_with(&suffix))
        .take(n)
        .collect();
    Ok(Json(json!({ "strategy": name, "events": events })).into_response())
}

async fn checkpoints(State(state): State<ApiState>, Path(name): Path<String>) -> Answer {
    known(&state, &name)?;
    let list: Vec<Value> = state
        .store
        .checkpoints(&name)
        .await?
        .iter()
        .map(|c| {
            json!({
                "seq": c.seq,
                "event_time_ms": c.event_time_ms,
                "state_version": c.state_version,
                "module_digest": c.module_digest,
                "bytes": c.state.len(),
                "intact": c.is_intact(),
                "created_at_ms": c.created_at_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "strategy": name, "checkpoints": list })).into_response())
}

/// The optional JSON body of a control request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ControlBody {
    /// Why (recorded with a restart or a halt).
    reason: Option<String>,
    /// How long a restart lets the event in hand finish [default 5000].
    grace_ms: Option<u64>,
}

pub(super) fn control_body(body: Result<Bytes, BytesRejection>) -> Result<ControlBody, HttpError> {
    let bytes = body.map_err(|e| HttpError::new(e.status(), e.body_text()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(ControlBody::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            format!("body: not a control request ({{\"reason\", \"grace_ms\"}}): {e}"),
        )
    })
}

async fn control(
    State(state): State<ApiState>,
    Path((name, action)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = control_body(body)?;
    let slot = known(&state, &name)?;
    let reason = body.reason.clone().unwrap_or_default();
    let request = match action.as_str() {
        "pause" => Control::Pause,
        "resume" => {
            // Resume lifts a halt too: the strategy places orders again.
            if crate::exec::halt::is_halted(state.store.as_ref(), &name).await? {
                crate::exec::halt::set(state.store.as_ref(), &name, false, &reason, "api").await?;
            }
            Control::Resume
        }
        "halt" => {
            crate::exec::halt::set(state.store.as_ref(), &name, true, &reason, "api").await?;
            tracing::warn!(strategy = %name, "halt requested over the API");
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "strategy": name, "requested": "halt", "state": slot.state() })),
            )
                .into_response());
        }
        "restart" => Control::Restart {
            reason: body
                .reason
                .map(|r| format!("restart requested over the API: {r}"))
                .unwrap_or_else(|| "restart requested over the API".into()),
            grace: Duration::from_millis(body.grace_ms.unwrap_or(5_000)),
        },
        other => {
            return Err(HttpError::not_found(format!(
                "action `{other}` (pause, resume, halt, restart, swap, promote or discard)"
            )));
        }
    };
    let before = slot.state();
    if !slot.send(request) {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            format!("strategy `{name}` has ended"),
        ));
    }
    tracing::info!(strategy = %name, "{action} requested over the API");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "strategy": name, "requested": action, "state": before })),
    )
        .into_response())
}

/// Halts placement of every strategy, durably (a restart stays halted):
/// new orders are refused and resting ones cancelled while the strategies
/// keep running; `resume` lifts it strategy by strategy.
async fn halt(State(state): State<ApiState>, body: Result<Bytes, BytesRejection>) -> Answer {
    let body = control_body(body)?;
    let reason = body.reason.unwrap_or_else(|| "no reason given".into());
    let mut halted = Vec::new();
    for slot in state.registry.slots() {
        crate::exec::halt::set(state.store.as_ref(), &slot.name, true, &reason, "api").await?;
        halted.push(slot.name.clone());
    }
    tracing::warn!(
        "halt requested over the API ({reason}): {} strategies",
        halted.len()
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "requested": "halt", "halted": halted })),
    )
        .into_response())
}

/// The host's newest system events (every component), newest first.
async fn system_events(
    State(state): State<ApiState>,
    query: Result<Query<Page>, QueryRejection>,
) -> Answer {
    let n = limit(query)?;
    let mut events = state.store.system_events(n).await?;
    events.reverse();
    Ok(Json(json!({ "events": events })).into_response())
}

/// System events the stream sends with each change.
const STREAM_EVENTS: usize = 50;

/// Every how many strategy updates the stream looks for new system events.
const EVENTS_EVERY: u64 = 3;

/// What the stream carries from one message to the next.
struct Streaming {
    state: ApiState,
    every: tokio::time::Interval,
    ticks: u64,
    /// The system events last sent (an unchanged list is not resent).
    sent: Option<String>,
}

/// Server-sent events: `strategies` (the registry's views) every second,
/// and `events` (the newest system events, newest first) when they change,
/// looked at every few seconds. A store that cannot be read is sent as an
/// `error` event, and the stream goes on.
async fn stream(State(state): State<ApiState>) -> impl IntoResponse {
    let start = Streaming {
        state,
        every: tokio::time::interval(Duration::from_secs(1)),
        ticks: 0,
        sent: None,
    };
    let events = futures_util::stream::unfold(start, |mut s| async move {
        let event = next_message(&mut s).await;
        Some((Ok::<_, std::convert::Infallible>(event), s))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn next_message(s: &mut Streaming) -> Event {
    s.ticks += 1;
    if s.ticks % EVENTS_EVERY == 1 {
        match s.state.store.system_events(STREAM_EVENTS).await {
            Ok(mut events) => {
                events.reverse();
                let data = serde_json::to_string(&events).unwrap_or_default();
                if s.sent.as_ref() != Some(&data) {
                    s.sent = Some(data.clone());
                    return Event::default().event("events").data(data);
                }
            }
            Err(e) => {
                let data = json!({ "error": e.to_string() }).to_string();
                return Event::default().event("error").data(data);
            }
        }
    }
    s.every.tick().await;
    let data = serde_json::to_string(&s.state.registry.snapshot()).unwrap_or_default();
    Event::default().event("strategies").data(data)
}
